"""Two-dimensional loss surfaces with a sharp and a flat minimum, and gradient descent on them.

The surface is one minus two Gaussian wells,

    L(w) = 1 - d_s exp(-1/2 (w - c_s)^T S_s^{-2} (w - c_s)) - d_f exp(-1/2 (w - c_f)^T S_f^{-2} (w - c_f)),

with diagonal widths S.  Near the centre of a well (ignoring the other well) the
Hessian is d S^{-2}, so a narrow well is a *sharp* minimum (large top eigenvalue)
and a wide one is *flat*.  Everything is float64 and exact up to round-off.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TwoBasinSurface:
    """A deeper sharp well and a shallower flat well (defaults chosen so both are clearly minima)."""

    sharp_center: tuple[float, float] = (-1.0, 0.0)
    sharp_width: tuple[float, float] = (0.2, 0.4)
    sharp_depth: float = 1.0
    flat_center: tuple[float, float] = (1.5, 0.0)
    flat_width: tuple[float, float] = (1.0, 1.5)
    flat_depth: float = 0.8

    def _well(self, w: torch.Tensor, center, width, depth) -> torch.Tensor:
        c = torch.tensor(center, dtype=w.dtype)
        s = torch.tensor(width, dtype=w.dtype)
        z = (w - c) / s
        return depth * torch.exp(-0.5 * (z * z).sum(-1))

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """L(w) for points ``w`` of shape (..., 2)."""
        w = torch.as_tensor(w, dtype=torch.float64)
        return 1.0 - self._well(w, self.sharp_center, self.sharp_width, self.sharp_depth) \
            - self._well(w, self.flat_center, self.flat_width, self.flat_depth)

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        """The gradient of L at points ``w`` of shape (..., 2), in closed form:

        dL/dw = sum over wells of d exp(-|z|^2 / 2) (w - c) / s^2, with z = (w - c) / s.
        """
        w = torch.as_tensor(w, dtype=torch.float64)
        total = torch.zeros_like(w)
        for center, width, depth in ((self.sharp_center, self.sharp_width, self.sharp_depth),
                                     (self.flat_center, self.flat_width, self.flat_depth)):
            c = torch.tensor(center, dtype=w.dtype)
            s = torch.tensor(width, dtype=w.dtype)
            total = total + self._well(w, center, width, depth)[..., None] * (w - c) / s ** 2
        return total

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        """The 2x2 Hessian of L at ``w``."""
        return torch.func.hessian(self.loss)(torch.as_tensor(w, dtype=torch.float64))

    def hessian_eigenvalues(self, w: torch.Tensor) -> torch.Tensor:
        """Both eigenvalues of the Hessian at ``w``, ascending (exact, by eigvalsh)."""
        return torch.linalg.eigvalsh(self.hessian(w))

    def sharpness(self, w: torch.Tensor) -> float:
        """lambda_max of the Hessian at ``w``."""
        return float(self.hessian_eigenvalues(w)[-1])

    def minimum(self, which: str) -> torch.Tensor:
        """The exact minimiser of the ``"sharp"`` or ``"flat"`` well (Newton's method from its centre)."""
        if which not in ("sharp", "flat"):
            raise ValueError(f"which must be 'sharp' or 'flat', got {which!r}")
        return _newton_minimum(self, which).clone()

    def basin(self, w: torch.Tensor) -> str:
        """Which minimum ``w`` is closest to: ``"sharp"``, ``"flat"`` or ``"none"`` (far from both)."""
        d_s = float((w - self.minimum("sharp")).norm())
        d_f = float((w - self.minimum("flat")).norm())
        if min(d_s, d_f) > 0.5:
            return "none"
        return "sharp" if d_s < d_f else "flat"

    def grid(self, n: int = 121, lim: tuple[float, float, float, float] = (-2.5, 4.0, -3.0, 3.0)):
        """(X, Y, L) on an n x n grid over (xmin, xmax, ymin, ymax), for contour plots."""
        xs = torch.linspace(lim[0], lim[1], n, dtype=torch.float64)
        ys = torch.linspace(lim[2], lim[3], n, dtype=torch.float64)
        X, Y = torch.meshgrid(xs, ys, indexing="xy")
        return X, Y, self.loss(torch.stack([X, Y], -1))


@functools.lru_cache(maxsize=32)
def _newton_minimum(surface: TwoBasinSurface, which: str) -> torch.Tensor:
    w = torch.tensor(surface.sharp_center if which == "sharp" else surface.flat_center, dtype=torch.float64)
    for _ in range(50):
        w = w - torch.linalg.solve(surface.hessian(w), surface.grad(w))
    return w


def gradient_descent(surface: TwoBasinSurface, w0, lr: float | Sequence[float], steps: int) -> torch.Tensor:
    """Plain gradient descent w <- w - lr * grad L(w) from ``w0``.

    ``lr`` may be one learning rate (trajectory of shape (steps + 1, 2)) or several,
    run side by side (shape (steps + 1, n_lr, 2)).  A run that leaves the region
    |w| < 1e3 is frozen where it left.
    """
    single = isinstance(lr, (int, float))
    lrs = torch.as_tensor([lr] if single else list(lr), dtype=torch.float64)
    w = torch.as_tensor(w0, dtype=torch.float64).expand(len(lrs), 2).clone()
    path = [w.clone()]
    for _ in range(steps):
        new = w - lrs[:, None] * surface.grad(w)
        ok = torch.isfinite(new).all(-1) & (new.abs().amax(-1) < 1e3)
        w = torch.where(ok[:, None], new, w)
        path.append(w.clone())
    out = torch.stack(path)
    return out[:, 0] if single else out


def worst_case_loss(surface: TwoBasinSurface, w, rho: float, n_angles: int = 128, n_radii: int = 16) -> float:
    """max over ||e|| <= rho of L(w + e), by dense search over the disc (exact enough in 2-D).

    This is SAM's inner maximisation, L^SAM_rho(w) = max_{||e||_2 <= rho} L(w + e).
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    w = torch.as_tensor(w, dtype=torch.float64)
    if rho == 0:
        return float(surface.loss(w))
    angles = torch.linspace(0, 2 * math.pi, n_angles + 1, dtype=torch.float64)[:-1]
    radii = torch.linspace(0, rho, n_radii + 1, dtype=torch.float64)
    e = radii[:, None, None] * torch.stack([angles.cos(), angles.sin()], -1)[None]
    return float(surface.loss(w + e).max())


def quadratic_worst_case(loss_at_min: float, sharpness: float, rho: float) -> float:
    """Second-order prediction of the worst-case loss at a minimum: L(w*) + 1/2 lambda_max rho^2."""
    return loss_at_min + 0.5 * sharpness * rho ** 2


def sam_perturbation(grad: torch.Tensor, rho: float) -> torch.Tensor:
    """SAM's first-order worst-case perturbation e = rho g / ||g||_2 (Foret et al. 2021, Eq. 2); 0 for g = 0."""
    return rho * grad / (grad.norm() + 1e-12)
