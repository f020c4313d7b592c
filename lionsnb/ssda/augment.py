"""Views of the unlabelled target images and CutMix (``utils/transforms.py``, ``utils/blur.py``,
``utils/cutmix.py`` of ``Morales97/ssda``), in torch, batched, on images in [0, 1].

* Crop and flip are applied **once**, before the views are made, so weak and strong views are pixel-aligned
  (:func:`crop_flip`).
* Weak view: identity.
* Strong view (:func:`strong_view`), in this order: (1) RandAugment, 2 ops drawn from {Brightness, Color,
  Contrast, Sharpness, Solarize}, each applied with p = 0.5 at magnitude v ~ U{1..9} (enhance factor
  0.05 + 0.09 v; solarize threshold (256 - floor(25.6 v)) / 255); (2) with p = 0.5, Gaussian blur twice
  (kernel from ``blur_kernels``, sigma ~ U(``blur_sigma``)); (3) with p = 0.8, ColorJitter(0.4, 0.4, 0.4,
  0.1) with its four factors in random order.
* CutMix (:func:`cutmix_masks`, :func:`cutmix`): the batch is split in halves; one box per pair covering
  25 % of the area (random aspect ratio, inside the image) pastes image 2 into image 1 and image 1 into
  image 2. The **same** masks mix the teacher's logits.

The paper's blur (kernels 5/7/9, sigma up to 2) is meant for 512-pixel crops; :class:`StrongAug` keeps it as
the default and the teaching profiles pass a blur scaled to their 32-pixel images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPS = ("brightness", "color", "contrast", "sharpness", "solarize")


@dataclass(frozen=True)
class StrongAug:
    """Settings of the strong view (paper defaults)."""

    n_ops: int = 2
    op_prob: float = 0.5
    blur_prob: float = 0.5
    blur_kernels: tuple[int, ...] = (5, 7, 9)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    jitter_prob: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)


#: a blur scaled to 32-pixel images (the paper's kernels span 1-2 % of a 512 crop)
SMALL_IMAGE_AUG = StrongAug(blur_kernels=(3,), blur_sigma=(0.1, 0.6))


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (PIL's 'L') of ``[..., 3, H, W]``, shape ``[..., 1, H, W]``."""
    return 0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :]


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def _degenerate(x: torch.Tensor, op: str) -> torch.Tensor:
    """The image PIL's ImageEnhance blends with, for a batch ``[B, 3, H, W]``."""
    if op == "brightness":
        return torch.zeros_like(x)
    if op == "color":
        return _grey(x).expand_as(x)
    if op == "contrast":
        return _grey(x).mean(dim=(-3, -2, -1), keepdim=True).expand_as(x)
    if op == "sharpness":
        b, c, h, w = x.shape
        k = _SMOOTH.to(dtype=x.dtype, device=x.device)[None, None]
        smooth = F.conv2d(x.reshape(b * c, 1, h, w), k, padding=1).reshape(b, c, h, w)
        out = x.clone()
        out[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]
        return out
    raise ValueError(f"unknown enhance op {op!r}: use one of brightness, color, contrast, sharpness")


def enhance(img: torch.Tensor, op: str, factor: float | torch.Tensor) -> torch.Tensor:
    """PIL-style ImageEnhance on an image ``[3, H, W]`` or a batch ``[B, 3, H, W]`` (``factor`` a number or one
    per image): ``degenerate + factor * (img - degenerate)``, clipped to [0, 1].

    brightness: degenerate = black; color: the grey image; contrast: the mean grey level; sharpness: the image
    smoothed by PIL's SMOOTH kernel (border pixels kept).
    """
    x = img[None] if img.dim() == 3 else img
    f = torch.as_tensor(factor, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    d = _degenerate(x, op)
    out = (d + f * (x - d)).clamp(0, 1)
    return out[0] if img.dim() == 3 else out


def solarize(img: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Invert pixels at or above ``threshold`` (in [0, 1]; a number or one per image of a batch)."""
    t = torch.as_tensor(threshold, dtype=img.dtype, device=img.device)
    if img.dim() == 4:
        t = t.reshape(-1, 1, 1, 1)
    return torch.where(img >= t, 1.0 - img, img)


def _apply(x: torch.Tensor, chosen: torch.Tensor, fn) -> torch.Tensor:
    """``fn(x)`` on the images where ``chosen`` [B] is True, ``x`` elsewhere."""
    if not bool(chosen.any()):
        return x
    return torch.where(chosen.reshape(-1, 1, 1, 1), fn(x), x)


def rand_augment(images: torch.Tensor, cfg: StrongAug = StrongAug(), generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """RandAugment step of the strong view on a batch ``[B, 3, H, W]``: per image, ``n_ops`` ops drawn with
    replacement from :data:`OPS`, each applied with probability ``op_prob`` at a magnitude v ~ U{1..9}
    (enhance factor 0.05 + 0.09 v; solarize threshold (256 - floor(25.6 v)) / 255)."""
    x = images
    b = x.shape[0]
    for _ in range(cfg.n_ops):
        op = torch.randint(len(OPS), (b,), generator=generator)
        v = torch.randint(1, 10, (b,), generator=generator).to(x.dtype)
        on = torch.rand(b, generator=generator) < cfg.op_prob
        for k, name in enumerate(OPS):
            chosen = on & (op == k)
            if name == "solarize":
                thr = (256 - torch.floor(25.6 * v)) / 255.0
                x = _apply(x, chosen, lambda y: solarize(y, thr))
            else:
                x = _apply(x, chosen, lambda y, name=name: enhance(y, name, 0.05 + 0.09 * v))
    return x


def _gaussian_kernels(sizes: torch.Tensor, sigmas: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, width] 1-D Gaussian kernels of odd ``sizes`` (zero-padded, centred in ``width``)."""
    x = torch.arange(width, dtype=dtype) - (width - 1) / 2
    k = torch.exp(-0.5 * (x[None] / sigmas[:, None].to(dtype)) ** 2)
    k = k * (x[None].abs() <= (sizes[:, None] - 1) / 2)
    return k / k.sum(1, keepdim=True)


def gaussian_blur(images: torch.Tensor, kernel: int | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding of an image ``[3, H, W]`` or a batch ``[B, 3, H, W]`` (odd
    ``kernel`` sizes and ``sigma`` a number or one per image)."""
    x = images[None] if images.dim() == 3 else images
    b, c, h, w = x.shape
    sizes = torch.as_tensor(kernel).reshape(-1).expand(b)
    sigmas = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(b)
    width = int(sizes.max())
    k = _gaussian_kernels(sizes, sigmas, width, x.dtype).to(x.device)
    k = k.repeat_interleave(c, 0)                                   # [B*C, width]
    pad = width // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    y = y.reshape(b, c, h, w)
    return y[0] if images.dim() == 3 else y


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(-3)
    maxc, _ = img.max(-3)
    minc, _ = img.min(-3)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    dc = delta.clamp(min=1e-12)
    h = torch.where(maxc == r, ((g - b) / dc) % 6, torch.where(maxc == g, (b - r) / dc + 2, (r - g) / dc + 4))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, v], -3)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = (i.long() % 6)[None]
    r = torch.stack([v, q, p, p, t, v]).gather(0, i)[0]
    g = torch.stack([t, v, v, q, p, p]).gather(0, i)[0]
    b = torch.stack([p, p, t, v, v, q]).gather(0, i)[0]
    return torch.stack([r, g, b], -3)


def shift_hue(img: torch.Tensor, shift: float | torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` of a full turn (a number or one per image of a batch)."""
    hsv = _rgb_to_hsv(img)
    s = torch.as_tensor(shift, dtype=img.dtype, device=img.device)
    if img.dim() == 4:
        s = s.reshape(-1, 1, 1)
    h = (hsv[..., 0, :, :] + s) % 1.0
    return _hsv_to_rgb(torch.stack([h, hsv[..., 1, :, :], hsv[..., 2, :, :]], -3)).clamp(0, 1)


def color_jitter(images: torch.Tensor, strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
                 generator: torch.Generator | None = None, apply: torch.Tensor | None = None) -> torch.Tensor:
    """ColorJitter(brightness, contrast, saturation, hue) on a batch ``[B, 3, H, W]``: per image, the four
    transforms in a random order (as torchvision), factors ~ U(1 - s, 1 + s), hue shift ~ U(-h, h) of a turn.
    ``apply`` [B] (default all) selects the images that are jittered."""
    x = images
    b = x.shape[0]
    apply = torch.ones(b, dtype=torch.bool) if apply is None else apply
    order = torch.argsort(torch.rand(b, 4, generator=generator), dim=1)       # a random permutation per image
    u = 2 * torch.rand(b, 4, generator=generator, dtype=x.dtype) - 1
    bri, con, sat, hue = strength
    factor = 1 + torch.tensor([bri, con, sat, 0.0], dtype=x.dtype) * u
    shift = hue * u[:, 3]
    fns = (lambda y: enhance(y, "brightness", factor[:, 0]), lambda y: enhance(y, "contrast", factor[:, 1]),
           lambda y: enhance(y, "color", factor[:, 2]), lambda y: shift_hue(y, shift))
    for pos in range(4):
        for k in range(4):
            if strength[k] > 0:
                x = _apply(x, apply & (order[:, pos] == k), fns[k])
    return x


def strong_view(images: torch.Tensor, cfg: StrongAug = StrongAug(), generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """The strong view of a batch ``[B, 3, H, W]`` (each image its own random draw); CutMix comes after."""
    x = rand_augment(images, cfg, generator)
    b = x.shape[0]
    blur_on = torch.rand(b, generator=generator) < cfg.blur_prob
    kernels = torch.tensor(cfg.blur_kernels)
    for _ in range(2):
        size = kernels[torch.randint(len(kernels), (b,), generator=generator)]
        lo, hi = cfg.blur_sigma
        sigma = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=x.dtype)
        if bool(blur_on.any()):
            x = torch.where(blur_on.reshape(-1, 1, 1, 1), gaussian_blur(x, size, sigma), x)
    jitter_on = torch.rand(b, generator=generator) < cfg.jitter_prob
    return color_jitter(x, cfg.jitter, generator, apply=jitter_on)


def crop_flip(images: torch.Tensor, labels: torch.Tensor | None = None, crop: int | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random crop (``crop`` pixels square, None: no crop) and horizontal flip with p = 0.5, per image; the
    same geometry for the image and its label map. Applied once, before the weak and strong views."""
    xs, ys = [], []
    for i in range(len(images)):
        x = images[i]
        y = labels[i] if labels is not None else None
        if crop is not None:
            h, w = x.shape[-2:]
            top = int(torch.randint(h - crop + 1, (), generator=generator))
            left = int(torch.randint(w - crop + 1, (), generator=generator))
            x = x[:, top:top + crop, left:left + crop]
            y = y[top:top + crop, left:left + crop] if y is not None else None
        if _rand(generator) < 0.5:
            x = x.flip(-1)
            y = y.flip(-1) if y is not None else None
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), (torch.stack(ys) if labels is not None else None)


def cutmix_masks(batch_size: int, height: int, width: int, area: float = 0.25,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One box mask per pair of the batch split in halves: ``[batch_size // 2, 1, H, W]`` with 1 inside a box
    of ``area`` * H * W pixels (up to rounding), random aspect ratio in [0.5, 2], inside the image."""
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"CutMix pairs the two halves of the batch: batch_size={batch_size} must be even.")
    masks = torch.zeros(batch_size // 2, 1, height, width)
    target = area * height * width
    for i in range(batch_size // 2):
        ratio = math.exp(math.log(0.5) + (math.log(2.0) - math.log(0.5)) * _rand(generator))
        bh = min(height, max(1, round(math.sqrt(target * ratio))))
        bw = min(width, max(1, round(target / bh)))
        top = int(torch.randint(height - bh + 1, (), generator=generator))
        left = int(torch.randint(width - bw + 1, (), generator=generator))
        masks[i, :, top:top + bh, left:left + bw] = 1.0
    return masks


def cutmix(tensor: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mix the two halves of a batch ``[B, ...]`` with ``masks`` ``[B/2, 1, H, W]``: inside the box, image i
    gets its partner i + B/2 and vice versa; outside, each keeps itself. Works for images and logits alike
    (the teacher's logits are mixed with the student's masks)."""
    half = tensor.shape[0] // 2
    if masks.shape[0] != half or tensor.shape[0] != 2 * half:
        raise ValueError(f"{tensor.shape[0]} items cannot be mixed by {masks.shape[0]} masks (need B = 2 x masks).")
    m = masks.to(tensor.dtype).to(tensor.device)
    first, second = tensor[:half], tensor[half:]
    return torch.cat([first * (1 - m) + second * m, second * (1 - m) + first * m])
