"""Image augmentations for the Aug-KL score (``run_with_img.py#L166-L176`` of LIONS-EPFL/VL-MIA@859bc99).

The reference applies torchvision's RandomResizedCrop, RandomRotation(45), RandomAffine(30°, translate 0.1,
scale 0.75-1.25) and ColorJitter(0.5, 0.5, 0.5, 0.5), unseeded. These are the same four kinds written with torch
only (``affine_grid``/``grid_sample``, no torchvision), on float images ``[B, 3, H, W]`` in [0, 1], **seeded** so
that a notebook's numbers are reproducible; the hue jitter is a rotation of the chroma plane (YIQ), a linear
stand-in for torchvision's HSV hue shift.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_images", "AUGMENTATIONS"]

AUGMENTATIONS = ("resized_crop", "rotation", "affine", "color_jitter")


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], -2)


def _resized_crop(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = images.shape[0]
    area = torch.empty(b).uniform_(0.08, 1.0, generator=gen)
    log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([w, zero, cx], -1), torch.stack([zero, h, cy], -1)], -2)
    return _warp(images, theta)


def _color_jitter(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = images.shape[0]

    def factor() -> torch.Tensor:
        return torch.empty(b, 1, 1, 1).uniform_(0.5, 1.5, generator=gen)

    x = images * factor()                                                   # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean                                        # contrast
    grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
    x = (x - grey) * factor() + grey                                        # saturation
    hue = torch.empty(b).uniform_(-0.5, 0.5, generator=gen) * 2 * math.pi  # hue: rotate the I-Q plane
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = torch.cos(hue), torch.sin(hue)
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    mix = torch.linalg.inv(to_yiq) @ rot @ to_yiq                           # [B, 3, 3]
    x = torch.einsum("bij,bjhw->bihw", mix, x)
    return x.clamp(0, 1)


def augment_images(images: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """The four augmented views (resized crop, rotation up to 45°, affine, colour jitter) of every image."""
    x = images.detach().float().cpu()
    gen = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    views = [_resized_crop(x, gen)]
    angle = torch.empty(b).uniform_(-45, 45, generator=gen) * math.pi / 180
    views.append(_warp(x, _affine(angle, torch.ones(b), torch.zeros(b), torch.zeros(b))))
    angle = torch.empty(b).uniform_(-30, 30, generator=gen) * math.pi / 180
    scale = torch.empty(b).uniform_(0.75, 1.25, generator=gen)
    tx = torch.empty(b).uniform_(-0.2, 0.2, generator=gen)   # translate 0.1 of the size = 0.2 in [-1, 1] units
    ty = torch.empty(b).uniform_(-0.2, 0.2, generator=gen)
    views.append(_warp(x, _affine(angle, scale, tx, ty)))
    views.append(_color_jitter(x, gen))
    return [v.to(images.device, images.dtype) for v in views]
