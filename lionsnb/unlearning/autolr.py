"""The automatic learning rate of NGDiff: GeN's parabola fit along the update direction (method note §3).

GeN (Bu & Xu, "Gradient descent with generalized Newton's method", ICLR; ``gen-optim`` 0.1.1, ``GeN/GeN.py``
``lr_parabola``) fits L(theta - x u) - L(theta) ~ 1/2 A x^2 - B x (A = u'Hu, B = G'u) from the losses at
x = r * lr for the ratios r of ``lr_factor`` (default -1, 0, 1), where lr * u is the step the base optimiser would take.
The optimum is x* = B / A. With the default three points the fit interpolates, and in closed form, with
y+- = L(w - /+ lr u) - L(w):

    A = (y+ + y-) / lr^2,   B = (y- - y+) / (2 lr),   x* = lr (y- - y+) / (2 (y+ + y-)).

The update is accepted only if A > 0, B > 0 and R^2 > 0.99; then, per parameter group,

    lr <- clip(x*, lr/2, 2 lr) * (1 - smooth) * scale + smooth * lr        (smooth = 0.9 in GeN)

and otherwise lr is unchanged; a failed fit (non-finite losses) halves lr. So one update at smooth = 0.9 moves lr by a
factor in [0.95, 1.10] (at scale 1). :func:`lr_parabola` reproduces GeN's probe exactly: it calls the optimiser's
``step()`` once (AdamW's moments advance inside the probe, as in GeN), evaluates the losses with the same in-place
arithmetic, and leaves the parameters exactly at w_t; the caller then steps with the new lr.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

GEN_SMOOTH = 0.9
GEN_R2_MIN = 0.99


@dataclass
class ParabolaFit:
    """The fitted 1/2 A x^2 - B x: ``A`` (curvature u'Hu), ``B`` (slope G'u), ``x_opt`` = B/A and the fit's R^2."""

    A: float
    B: float
    r2: float

    @property
    def x_opt(self) -> float:
        return self.B / self.A if self.A != 0 else math.inf

    @property
    def valid(self) -> bool:
        """GeN's acceptance test: A > 0, B > 0 and R^2 > 0.99."""
        return self.A > 0 and self.B > 0 and self.r2 > GEN_R2_MIN


def gen_closed_form(lr: float, y_plus: float, y_minus: float) -> ParabolaFit:
    """The exact 3-point fit (ratios -1, 0, 1): y+ = L(w - lr u) - L(w) (after the real step),
    y- = L(w + lr u) - L(w)."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    A = (y_plus + y_minus) / lr ** 2
    B = (y_minus - y_plus) / (2 * lr)
    return ParabolaFit(A=A, B=B, r2=1.0)


def gen_optimum(lr: float, y_plus: float, y_minus: float) -> float:
    """x* = B / A of the 3-point fit: lr (y- - y+) / (2 (y+ + y-)) (inf when the parabola is flat)."""
    return gen_closed_form(lr, y_plus, y_minus).x_opt


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    """sklearn's ``r2_score`` (force_finite): 1 - SS_res / SS_tot; a constant y gives 1 if fitted exactly, else 0."""
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot


def gen_fit(lr: float, ratios: Sequence[float], losses: Sequence[float]) -> ParabolaFit:
    """Least-squares fit of 1/2 A x^2 - B x to (x = r lr, L(r) - L(0)) over the probed ratios (one of them 0).

    The model is linear in (A, B), so this is the least-squares solution GeN's ``curve_fit`` converges to; with three
    points it interpolates (R^2 = 1) and equals :func:`gen_closed_form`.
    """
    r = np.asarray(ratios, dtype=np.float64)
    L = np.asarray(losses, dtype=np.float64)
    if r.shape != L.shape or r.ndim != 1:
        raise ValueError("ratios and losses must be 1-D of the same length")
    if np.count_nonzero(r == 0) != 1:
        raise ValueError("ratios must contain exactly one 0 (the current point)")
    if not np.all(np.isfinite(L)):
        raise FloatingPointError(f"non-finite loss in the GeN probe: {L.tolist()}")
    x = r * lr
    y = L - L[r == 0][0]
    design = np.stack([0.5 * x ** 2, -x], axis=1)
    (A, B), *_ = np.linalg.lstsq(design, y, rcond=None)
    return ParabolaFit(A=float(A), B=float(B), r2=_r2(y, design @ np.array([A, B])))


def gen_lr_update(lr: float, fit: ParabolaFit, smooth: float = GEN_SMOOTH, scale: float = 1.0) -> float:
    """GeN's new lr: clip(x*, lr/2, 2 lr) (1 - smooth) scale + smooth lr if the fit is valid, else lr unchanged."""
    if not 0 <= smooth <= 1:
        raise ValueError(f"smooth must be in [0, 1], got {smooth}")
    if not fit.valid:
        return lr
    return max(min(fit.x_opt, lr * 2), lr / 2) * (1 - smooth) * scale + smooth * lr


@dataclass
class ProbeResult:
    """One GeN update: the lr before and after, the probed ratios and losses, the fit and whether it was accepted."""

    step: int
    lr_before: float
    lr_after: float
    ratios: list[float]
    losses: list[float]
    A: float = math.nan
    B: float = math.nan
    r2: float = math.nan
    accepted: bool = False
    failed: bool = False

    @property
    def x_opt(self) -> float:
        return self.B / self.A if self.A not in (0.0,) and math.isfinite(self.A) else math.nan


def lr_parabola(params: Sequence[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                loss_fn: Callable[[], float | torch.Tensor], *, lr_factor: Sequence[float] = (-1, 0, 1),
                smooth: float = GEN_SMOOTH, scale: float = 1.0, step: int = 0) -> ProbeResult:
    """GeN's probe and lr update (``GeN.lr_parabola``), for any loss closure.

    ``params``: the trainable parameters (their ``.grad`` holds the direction the optimiser will use); ``loss_fn()``:
    the loss on the *next* batch at the current parameters (called under ``no_grad``, once per ratio). Calls
    ``optimizer.step()`` once with the current lr (so Delta = w_t - w_{t+1} = lr u, and AdamW's moments advance once,
    as in GeN), evaluates w_t - r Delta for each ratio with 0 last, leaves the parameters exactly at w_t, and sets the
    lr of every parameter group. ``smooth`` = 0.9 is GeN's hard-coded value (0 jumps to the clipped optimum).
    """
    factors = [float(f) for f in lr_factor]  # a fresh list: GeN's default argument is mutated in place
    if factors.count(0.0) != 1:
        raise ValueError("lr_factor must contain exactly one 0")
    factors.append(factors.pop(factors.index(0.0)))  # 0 last: the parameters end at w_t
    params = [p for p in params if p.requires_grad]
    existing_lr = optimizer.param_groups[0]["lr"]
    previous = [p.data.clone() for p in params]
    optimizer.step()
    losses = np.zeros(len(factors), dtype=np.float64)
    with torch.no_grad():
        for j, ratio in enumerate(factors):
            for p, prev in zip(params, previous):
                p.data.mul_(ratio).add_(prev, alpha=(1.0 - ratio))  # w_t - ratio * Delta, in GeN's arithmetic
            value = loss_fn()
            losses[j] += float(value.item() if isinstance(value, torch.Tensor) else value)
            for p, prev in zip(params, previous):
                if ratio != 0:
                    p.data.sub_(prev, alpha=(1.0 - ratio)).div_(ratio)  # back to w_{t+1}
    result = ProbeResult(step=step, lr_before=existing_lr, lr_after=existing_lr, ratios=factors,
                         losses=losses.tolist())
    try:
        fit = gen_fit(existing_lr, factors, losses)
    except (FloatingPointError, np.linalg.LinAlgError):
        for g in optimizer.param_groups:
            g["lr"] = g["lr"] / 2
        result.failed = True
        result.lr_after = optimizer.param_groups[0]["lr"]
        return result
    result.A, result.B, result.r2, result.accepted = fit.A, fit.B, fit.r2, fit.valid
    for g in optimizer.param_groups:
        g["lr"] = gen_lr_update(g["lr"], fit, smooth=smooth, scale=scale)
    result.lr_after = optimizer.param_groups[0]["lr"]
    return result


@dataclass
class AutoLR:
    """GeN as NGDiff uses it: every ``lazy_freq`` steps, probe the retain loss along the update and refit the lr.

    ``smooth`` 0.9 (GeN) or 0 (jump to the clipped optimum); ``decay``: if True, ``scale`` = 1 - t/T (GeN's
    horizon-aware option), else 1. ``history`` collects every :class:`ProbeResult`.
    """

    lazy_freq: int = 4
    smooth: float = GEN_SMOOTH
    decay: bool = False
    lr_factor: tuple[float, ...] = (-1.0, 0.0, 1.0)
    history: list[ProbeResult] = field(default_factory=list)

    def __post_init__(self):
        if self.lazy_freq < 1:
            raise ValueError(f"lazy_freq must be >= 1, got {self.lazy_freq}")
        if not 0 <= self.smooth <= 1:
            raise ValueError(f"smooth must be in [0, 1], got {self.smooth}")

    def due(self, step: int) -> bool:
        """GeN's schedule: update when (step + 1) % lazy_freq == 0 (step counted from 0)."""
        return (step + 1) % self.lazy_freq == 0

    def update(self, params, optimizer, loss_fn, step: int, total_steps: int) -> ProbeResult:
        scale = 1.0 - step / total_steps if self.decay else 1.0
        res = lr_parabola(params, optimizer, loss_fn, lr_factor=self.lr_factor, smooth=self.smooth, scale=scale,
                          step=step)
        self.history.append(res)
        return res
