"""A small segmentation network for the teaching scale: a three-level U-Net with a projection head for pixel
contrast.

The paper uses DeepLabV2 (ResNet-101, ImageNet init, ASPP head) with a projection head on the layer-4
features: Conv1x1 -> BN -> ReLU -> Conv1x1 to 256-d, L2-normalised over channels, then bilinearly upsampled to
the input size. :class:`SegNet` keeps that head (on its bottleneck, at 1/4 resolution) and shrinks the rest:

    encoder  [conv3x3-norm-ReLU] x 2 at widths w1 (1/1), w2 (1/2), w3 (1/4, the bottleneck)
    decoder  upsample x2, concatenate the skip, [conv3x3-norm-ReLU] x 2, twice; 1x1 classifier
    head     Conv1x1(w3, w3) -> norm -> ReLU -> Conv1x1(w3, D), L2-normalised, upsampled to the input

Normalisation is GroupNorm by default (per image, so one forward over a concatenated source + target +
unlabelled batch equals three separate forwards, as the authors run them) or BatchNorm (``norm="batch"``; the
trainer then runs the branches separately and the teacher's BN mode becomes a choice, see ``train.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        groups = 4 if channels % 4 == 0 else 1
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm={kind!r}: use 'group' or 'batch'.")


def _block(cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """U-Net segmenter with a pixel-contrast projection head; ``len(widths)`` levels (2 or 3), the last one
    being the bottleneck at 1/2^(levels-1) resolution.

    ``forward(x)`` returns logits ``[B, num_classes, H, W]``; ``forward(x, with_embedding=True)`` returns
    ``(logits, z)`` with unit-norm embeddings computed on the bottleneck and bilinearly upsampled to
    ``[B, proj_dim, H, W]`` (so slightly below unit norm between grid points, as in the paper).
    H and W must be multiples of 2^(levels-1).
    """

    def __init__(self, num_classes: int = 4, widths: tuple[int, ...] = (8, 16, 32), proj_dim: int = 16,
                 norm: str = "group", in_channels: int = 3):
        super().__init__()
        if len(widths) not in (2, 3):
            raise ValueError(f"widths={widths}: give 2 or 3 widths (one per level).")
        self.num_classes, self.widths, self.proj_dim, self.norm = num_classes, tuple(widths), proj_dim, norm
        self.factor = 2 ** (len(widths) - 1)
        chans = (in_channels,) + tuple(widths)
        self.encoders = nn.ModuleList(_block(chans[i], chans[i + 1], norm) for i in range(len(widths)))
        self.decoders = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i], norm)
                                      for i in reversed(range(len(widths) - 1)))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        w = widths[-1]
        self.projection = nn.Sequential(nn.Conv2d(w, w, 1, bias=False), _norm(norm, w), nn.ReLU(inplace=True),
                                        nn.Conv2d(w, proj_dim, 1, bias=False))

    def forward(self, x: torch.Tensor, with_embedding: bool = False):
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"SegNet needs H and W divisible by {self.factor}, got {tuple(x.shape[-2:])}.")
        skips = []
        h = x
        for i, enc in enumerate(self.encoders):
            h = enc(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        bottleneck = h
        for dec, skip in zip(self.decoders, reversed(skips[:-1])):
            h = dec(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), skip], 1))
        logits = self.classifier(h)
        if not with_embedding:
            return logits
        z = F.normalize(self.projection(bottleneck), dim=1)
        z = F.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, z


def build_segnet(num_classes: int = 4, widths: tuple[int, ...] = (8, 16, 32), proj_dim: int = 16,
                 norm: str = "group", seed: int = 0) -> SegNet:
    """A freshly initialised :class:`SegNet`, deterministic from ``seed``."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return SegNet(num_classes, tuple(widths), proj_dim, norm)
    finally:
        torch.random.set_rng_state(state)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Softmax probabilities ``[N, C, H, W]`` in eval mode (restores the mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [torch.softmax(model(images[i:i + batch_size].to(device)), 1).cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)
