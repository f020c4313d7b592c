"""The geometry of the two-task problem: the NGDiff direction, the cone, and the static scalarisations.

Bu et al. (arXiv 2410.22086), §3 / Fig. 2: with g_R the retain-loss gradient and g_F the forget-loss gradient,

    d = g_R / ||g_R|| - g_F / ||g_F||          (global L2 norms over all trainable parameters)

and the model descends along d. Exactly, <d, g_R> = ||g_R|| (1 - cos) >= 0 and <d, g_F> = ||g_F|| (cos - 1) <= 0, so
to first order a step never raises the retain loss and never lowers the forget loss, whatever ||g_F|| / ||g_R|| (the
"cone"). The static scalarisation c_R g_R - c_F g_F (GA: (0, 1), GradDiff: (1, 1)) has no such guarantee.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch


def unit_vector(g: torch.Tensor) -> torch.Tensor:
    """g / ||g||, and 0 for g = 0 (finite). Rescaled by max |g| first so that tiny or huge norms neither underflow
    nor overflow; no epsilon, so the result is g / ||g|| to rounding for every non-zero g."""
    m = g.abs().max()
    scaled = g / torch.where(m > 0, m, torch.ones_like(m))
    n = scaled.norm()
    return scaled / torch.where(n > 0, n, torch.ones_like(n))


def _flat(g: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(g, torch.Tensor):
        if g.dim() != 1:
            raise ValueError("pass a flat 1-D gradient (or a list of per-parameter tensors), got shape "
                             f"{tuple(g.shape)}")
        return g
    parts = [t.reshape(-1) for t in g]
    if not parts:
        raise ValueError("empty list of gradients")
    return torch.cat(parts)


def ngdiff_direction(g_retain: torch.Tensor | Sequence[torch.Tensor],
                     g_forget: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """NGDiff's update direction d = g_R/||g_R|| - g_F/||g_F|| (paper Eq. 7, dynamic scalarisation).

    Inputs: flat 1-D gradients of the same length (the concatenation of all trainable parameters, so the norms are
    global), or lists of per-parameter tensors (concatenated here). A zero gradient's term vanishes (lionsnb's
    convention, spec §3): g_F = 0 gives g_R/||g_R||, g_R = 0 gives -g_F/||g_F||, both zero give 0 (finite, never NaN);
    see :func:`unit_vector`.
    The inputs are not modified. Descending along d ascends the forget loss.
    """
    gr, gf = _flat(g_retain), _flat(g_forget)
    if gr.shape != gf.shape:
        raise ValueError(f"g_retain and g_forget must have the same length, got {gr.numel()} and {gf.numel()}")
    return unit_vector(gr) - unit_vector(gf)


def scalarised_direction(g_retain: torch.Tensor, g_forget: torch.Tensor, c_retain: float,
                         c_forget: float) -> torch.Tensor:
    """The static scalarisation c_R g_R - c_F g_F (GA: (0, 1); GradDiff: (1, 1))."""
    return c_retain * g_retain - c_forget * g_forget


def cone_products(d: torch.Tensor, g_retain: torch.Tensor, g_forget: torch.Tensor) -> dict[str, float]:
    """<d, g_R>, <d, g_F>, their values relative to ||d|| ||g||, cos(g_R, g_F) and ||g_F|| / ||g_R||.

    The cone holds when ``dot_retain >= 0`` (retain loss does not rise to first order) and ``dot_forget <= 0``
    (forget loss does not fall).
    """
    d64, r64, f64 = d.double(), g_retain.double(), g_forget.double()
    nd, nr, nf = d64.norm().item(), r64.norm().item(), f64.norm().item()
    dot_r, dot_f = torch.dot(d64, r64).item(), torch.dot(d64, f64).item()
    cos = torch.dot(r64, f64).item() / (nr * nf) if nr > 0 and nf > 0 else float("nan")
    return dict(dot_retain=dot_r, dot_forget=dot_f,
                rel_retain=dot_r / (nd * nr) if nd * nr > 0 else 0.0,
                rel_forget=dot_f / (nd * nf) if nd * nf > 0 else 0.0,
                cos=cos, norm_ratio=nf / nr if nr > 0 else float("inf"),
                norm_retain=nr, norm_forget=nf, norm_d=nd)


def in_cone(d: torch.Tensor, g_retain: torch.Tensor, g_forget: torch.Tensor, tol: float = 1e-6) -> bool:
    """True when <d, g_R> >= -tol ||d|| ||g_R|| and <d, g_F> <= tol ||d|| ||g_F|| (method note §9, outcome 1)."""
    c = cone_products(d, g_retain, g_forget)
    return c["rel_retain"] >= -tol and c["rel_forget"] <= tol


# --------------------------------------------------------------------------- the 2-D picture (explorer)


def plane_gradients(angle_deg: float, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Two gradients in the plane they span: g_R = (1, 0), g_F at ``angle_deg`` from it with ||g_F|| = ratio."""
    if ratio < 0:
        raise ValueError(f"ratio = ||g_F|| / ||g_R|| must be >= 0, got {ratio}")
    a = math.radians(angle_deg)
    return np.array([1.0, 0.0]), ratio * np.array([math.cos(a), math.sin(a)])


def plane_directions(angle_deg: float, ratio: float) -> dict[str, np.ndarray]:
    """The update directions (the step is -eta * d, drawn here as the step -d) of GA, GradDiff and NGDiff in 2-D,
    with first-order changes of both losses: dL_R = -<d, g_R>, dL_F = -<d, g_F> per unit step."""
    g_r, g_f = plane_gradients(angle_deg, ratio)
    tr, tf = torch.tensor(g_r), torch.tensor(g_f)
    dirs = {"GA": scalarised_direction(tr, tf, 0.0, 1.0), "GradDiff": scalarised_direction(tr, tf, 1.0, 1.0),
            "NGDiff": ngdiff_direction(tr, tf)}
    return {k: v.numpy() for k, v in dirs.items()} | {"g_R": g_r, "g_F": g_f}


def first_order_changes(angle_deg: float, ratio: float) -> dict[str, tuple[float, float]]:
    """Per method, (change of L_R, change of L_F) for the step -d, to first order: (-<d, g_R>, -<d, g_F>)."""
    dirs = plane_directions(angle_deg, ratio)
    g_r, g_f = dirs["g_R"], dirs["g_F"]
    return {k: (-float(dirs[k] @ g_r), -float(dirs[k] @ g_f)) for k in ("GA", "GradDiff", "NGDiff")}


def graddiff_leaves_cone(angle_deg: float, ratio: float) -> bool:
    """GradDiff's step raises the retain loss to first order iff ||g_F|| cos > ||g_R|| (method note §2)."""
    return ratio * math.cos(math.radians(angle_deg)) > 1.0


def flat_grad(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The concatenation of the ``.grad`` of ``params`` (zeros where a gradient is None)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def assign_flat_grad(params: Sequence[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat vector into the ``.grad`` of ``params`` (the inverse of :func:`flat_grad`)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone().to(p.dtype)
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, the parameters {offset}")


def ngdiff_weights(g_retain: torch.Tensor, g_forget: torch.Tensor) -> tuple[float, float]:
    """NGDiff's dynamic scalarisation weights (c_R, c_F) = (1/||g_R||, 1/||g_F||), with 0 for a zero gradient."""
    nr, nf = float(g_retain.double().norm()), float(g_forget.double().norm())
    return (1.0 / nr if nr > 0 else 0.0), (1.0 / nf if nf > 0 else 0.0)


def max_forget_weight(cos: float, ratio: float) -> float:
    """The largest c_F for which g_R - c_F g_F does not raise the retain loss to first order:
    <g_R - c g_F, g_R> >= 0  <=>  c ||g_F|| cos <= ||g_R||, i.e. c <= 1 / (ratio cos) when cos > 0 (else any c)."""
    if cos <= 0 or ratio == 0:
        return math.inf
    return 1.0 / (ratio * cos)


def plane_sweep(angles: Sequence[float], ratios: Sequence[float]) -> dict[str, np.ndarray]:
    """First-order change of the retain loss for the steps of GA, GradDiff and NGDiff over a grid of (angle, ratio):
    arrays ``[len(angles), len(ratios)]`` (positive = the retain loss rises)."""
    out = {name: np.zeros((len(angles), len(ratios))) for name in ("GA", "GradDiff", "NGDiff")}
    forget = {name: np.zeros((len(angles), len(ratios))) for name in ("GA", "GradDiff", "NGDiff")}
    for i, a in enumerate(angles):
        for j, r in enumerate(ratios):
            for name, (d_r, d_f) in first_order_changes(a, r).items():
                out[name][i, j] = d_r
                forget[name][i, j] = d_f
    return {"angles": np.asarray(angles, float), "ratios": np.asarray(ratios, float), **out,
            **{f"{k}_forget": v for k, v in forget.items()}}
