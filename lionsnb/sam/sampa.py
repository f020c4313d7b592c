"""Notebook 2 of the SAM series: SAMPa, SAM's two gradients computed in parallel.

Xie, Pethick, Cevher, "SAMPa: Sharpness-aware minimization parallelized", NeurIPS 2024
(arXiv 2410.10683), Eq. 3:

    x~_t    = x_t + rho grad f(y_t) / ||grad f(y_t)||
    y_{t+1} = x_t - eta grad f(y_t)
    x_{t+1} = x_t - eta (1 - lam) grad f(x~_t) - eta lam grad f(y_{t+1})

grad f(x~_t) and grad f(y_{t+1}) depend only on x_t and y_t, so they can be computed at the
same time: one sequential gradient per step instead of SAM's two.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import colors, figure, label  # noqa: F401  (re-exported for the notebook)
from lionsnb.sam.basics import model_kind  # noqa: F401
from lionsnb.sam.benchmark import time_methods  # noqa: F401  (re-exported for the notebook)
from lionsnb.sam.data import DATASETS, build_model, cached_split, resolve_dataset  # noqa: F401
from lionsnb.sam.experiments import summarise, train_run  # noqa: F401
from lionsnb.sam.losses import smooth_cross_entropy
from lionsnb.sam.optim import SAMPa, flat, gradient_at
from lionsnb.widgets import explore  # noqa: F401

SPEC = MethodSpec(
    name="sam.sampa",
    title="SAMPa: sharpness-aware minimisation parallelised",
    profiles={
        "smoke": dict(n_train=1000, model="mlp", width=128, epochs=4, lr=0.05, batch_size=128, seeds=(0,),
                      quad_steps=600, etas=(0.1, 0.03, 0.01), rhos=(0.05, 0.1), lams=(0.0, 0.2, 0.5),
                      cos_every=4, timing_steps=4, timing_width=256),
        "teach": dict(n_train=None, model="mlp", width=256, epochs=30, lr=0.05, batch_size=128, seeds=(0, 1, 2),
                      quad_steps=3000, etas=(0.1, 0.05, 0.03, 0.01), rhos=(0.05, 0.1, 0.2), lams=(0.0, 0.2, 0.5),
                      cos_every=10, timing_steps=20, timing_width=512),
        "full": dict(n_train=None, model="resnet20", width=256, epochs=50, lr=0.1, batch_size=128,
                     seeds=(0, 1, 2), quad_steps=5000, etas=(0.1, 0.05, 0.03, 0.01), rhos=(0.05, 0.1, 0.2),
                     lams=(0.0, 0.2, 0.5), cos_every=20, timing_steps=50, timing_width=1024),
    },
    knobs={
        "rho": Knob(0.1, "perturbation radius of SAM and SAMPa", float, low=0.0, low_open=True, high=2.0),
        "lam": Knob(0.2, "SAMPa weight lambda of grad f(y_{t+1})", float, low=0.0, high=1.0),
        "eta": Knob(0.03, "learning rate of the quadratic demo", float, low=0.0, low_open=True, high=0.4),
        "dataset": Knob("auto", "auto (MNIST-1D; CIFAR-10 in the full profile when present), mnist1d, digits or "
                        "cifar10", str, choices=DATASETS),
    },
)
setup = setup_for(SPEC)

QUAD_METHODS = ("SAM", "SAMPa", "stale")


# ----------------------------------------------------------------------------- the quadratic

def quadratic_runs(etas, rhos, lams, steps: int, x0=(1.0, -0.5)) -> dict:
    """Deterministic runs on f(x) = ||x||^2 in R^2 (grad f = 2x) for every (eta, rho, lam), vectorised.

    * SAM:   x <- x - eta grad f(x + rho grad f(x)/||grad f(x)||)
    * SAMPa: the paper's update (Eq. 3) with weight lam
    * stale: a naive parallel SAM that perturbs along the previous perturbed gradient,
             x~_t = x_t + rho g_{t-1}/||g_{t-1}||, g_t = grad f(x~_t), x_{t+1} = x_t - eta g_t
    Returns ||grad f(x_t)||^2 per step for each method, keyed by (eta, rho, lam) (lam only matters for SAMPa).
    """
    combos = [(e, r, l) for e in etas for r in rhos for l in lams]
    eta = np.array([c[0] for c in combos])[:, None]
    rho = np.array([c[1] for c in combos])[:, None]
    lam = np.array([c[2] for c in combos])[:, None]
    grad = lambda z: 2.0 * z  # noqa: E731
    unit = lambda g: g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    start = np.tile(np.array(x0, dtype=np.float64), (len(combos), 1))
    x_sam, x_pa, y_pa, x_st = start.copy(), start.copy(), start.copy(), start.copy()
    g_stale = grad(start)
    hist = {m: np.empty((steps + 1, len(combos))) for m in QUAD_METHODS}
    for t in range(steps + 1):
        for name, x in (("SAM", x_sam), ("SAMPa", x_pa), ("stale", x_st)):
            hist[name][t] = (grad(x) ** 2).sum(1)
        if t == steps:
            break
        x_sam = x_sam - eta * grad(x_sam + rho * unit(grad(x_sam)))
        gy = grad(y_pa)
        x_tilde = x_pa + rho * unit(gy)
        y_next = x_pa - eta * gy
        x_pa, y_pa = x_pa - eta * (1 - lam) * grad(x_tilde) - eta * lam * grad(y_next), y_next
        g_stale = grad(x_st + rho * unit(g_stale))
        x_st = x_st - eta * g_stale
    return {"combos": combos, "steps": steps, **{m: torch.from_numpy(h) for m, h in hist.items()}}


def plateau(runs: dict, method: str, eta: float, rho: float, lam: float, tail: int = 100) -> float:
    """Mean ||grad f||^2 over the last ``tail`` steps of one run (where it has settled)."""
    i = runs["combos"].index((eta, rho, lam))
    return float(runs[method][-tail:, i].mean())


def sam_plateau_theory(eta: float, rho: float) -> float:
    """[derived] SAM with fixed rho on ||x||^2: x <- x (1 - 2 eta) - 2 eta rho x/||x|| settles on a period-2
    orbit with ||x|| = eta rho / (1 - eta), so ||grad f||^2 = 4 eta^2 rho^2 / (1 - eta)^2."""
    return 4 * eta ** 2 * rho ** 2 / (1 - eta) ** 2


def draw_quadratic(fig, *, runs: dict, eta: float, rho: float, lam: float) -> None:
    """||grad f||^2 per step for SAM, SAMPa-lam and the stale variant at (eta, rho, lam)."""
    ax1, ax2 = fig.subplots(1, 2)
    i = runs["combos"].index((eta, rho, lam))
    for name, color in reversed(list(zip(QUAD_METHODS, ("tab:blue", "tab:green", "tab:red")))):  # SAM on top
        tag = f"SAMPa-{lam:g}" if name == "SAMPa" else name
        ax1.plot(runs[name][:, i].numpy(), color=color, label=tag, lw=1)
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    label(ax1, "step", "$\\|\\nabla f(x_t)\\|^2$", f"f(x) = ||x||^2, eta = {eta:g}, rho = {rho:g}")
    etas = sorted({c[0] for c in runs["combos"]})
    for name, color in zip(QUAD_METHODS, ("tab:blue", "tab:green", "tab:red")):
        ax2.plot(etas, [plateau(runs, name, e, rho, lam) for e in etas], "o-", color=color,
                 label=f"SAMPa-{lam:g}" if name == "SAMPa" else name)
    ax2.axhline(4 * rho ** 2, color="tab:red", ls=":", lw=1, label="4 rho^2")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    label(ax2, "learning rate eta", "final $\\|\\nabla f\\|^2$ (mean of last 100 steps)", "Where each method settles")


# ----------------------------------------------------------------------------- timeline

def draw_timeline(fig, steps: int = 3) -> None:
    """The critical path: SAM's two gradients in sequence, SAMPa's two side by side on two devices."""
    ax = fig.subplots()
    rows = {"SAM (1 device)": 2.0, "SAMPa device 1": 1.0, "SAMPa device 2": 0.0}
    for t in range(steps):
        ax.barh(rows["SAM (1 device)"], 1, left=2 * t, color="tab:blue", edgecolor="white")
        ax.text(2 * t + 0.5, 2.0, f"$\\nabla f(x_{t})$", ha="center", va="center", color="white", fontsize=8)
        ax.barh(rows["SAM (1 device)"], 1, left=2 * t + 1, color="tab:orange", edgecolor="white")
        ax.text(2 * t + 1.5, 2.0, f"$\\nabla f(x_{t}+\\epsilon)$", ha="center", va="center", color="white",
                fontsize=8)
        ax.barh(rows["SAMPa device 1"], 1, left=t, color="tab:orange", edgecolor="white")
        ax.text(t + 0.5, 1.0, f"$\\nabla f(\\tilde x_{t})$", ha="center", va="center", color="white", fontsize=8)
        ax.barh(rows["SAMPa device 2"], 1, left=t, color="tab:green", edgecolor="white")
        ax.text(t + 0.5, 0.0, f"$\\nabla f(y_{t + 1})$", ha="center", va="center", color="white", fontsize=8)
    ax.set_yticks(list(rows.values()), list(rows.keys()))
    ax.grid(False)
    label(ax, "time (in units of one gradient evaluation)", "",
          f"{steps} steps: SAM needs {2 * steps} sequential gradients, SAMPa {steps}")


# ----------------------------------------------------------------------------- training

def draw_accuracy_vs_cost(fig, *, runs: dict) -> None:
    """Test accuracy against sequential gradient evaluations (mean over seeds) per method."""
    ax = fig.subplots()
    groups: dict[str, list] = {}
    for run in runs.values():
        groups.setdefault(run_label(run), []).append(run)
    for (name, group), color in zip(sorted(groups.items()), colors(len(groups))):
        cost = group[0]["sequential_gradients"]
        acc = np.mean([g["test_acc"] for g in group], axis=0)
        ax.plot(cost, acc, "-", color=color, label=f"{name} ({len(group)} seeds)")
        ax.plot(cost[-1:], acc[-1:], "o", color=color)  # end points (SGD's curve is the first half of SGD 2x's)
    ax.legend(fontsize=8)
    label(ax, "sequential gradient evaluations", "test accuracy (mean over seeds)",
          "Accuracy against the critical path")


def run_label(run: dict) -> str:
    if run["method"] == "sampa":
        return f"SAMPa-{run['lam']:g}"
    return run["method"].upper() + (" (2x epochs)" if run.get("double") else "")


def cosine_trace(data, *, rho: float, lam: float, lr: float, width: int, model: str, steps: int, every: int,
                 batch_size: int = 128, seed: int = 0) -> dict:
    """During SAMPa training: cos(grad f(x_t), grad f(y_t)) on the same batch B_{t-1}, every ``every`` steps.

    SAMPa replaces SAM's unavailable grad f(x_t) by grad f(y_t); the paper reports a cosine
    above 0.99 on ResNet-56.  grad f(x_t) is computed on a scratch copy, so training is unchanged.
    """
    torch.manual_seed(seed)
    net = build_model(model, data, width)
    opt = SAMPa(net, smooth_cross_entropy, lr=lr, rho=rho, lam=lam, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    out = {"step": [], "cosine": []}
    n = len(data.x_train)
    order = torch.randperm(n, generator=gen)
    for t in range(steps):
        lo = (t * batch_size) % n
        if lo + batch_size > n:
            order = torch.randperm(n, generator=gen)
            lo = 0
        idx = order[lo:lo + batch_size]
        if t > 1 and t % every == 0:
            scratch = copy.deepcopy(net)
            params = [p for p in scratch.parameters() if p.requires_grad]
            gx, _ = gradient_at(scratch, params, flat(params).detach(), opt.loss_fn, opt.prev_batch)
            out["step"].append(t)
            out["cosine"].append(float(torch.nn.functional.cosine_similarity(gx, opt.gy, dim=0)))
        opt.step(data.x_train[idx], data.y_train[idx])
    return out


# ----------------------------------------------------------------------------- exercises

def extrapolation_reference(x: torch.Tensor, gy: torch.Tensor, eta: float) -> torch.Tensor:
    """y_{t+1} = x_t - eta grad f(y_t) (no momentum)."""
    return x - eta * gy


def perturbed_point_reference(x: torch.Tensor, gy: torch.Tensor, rho: float) -> torch.Tensor:
    """x~_t = x_t + rho grad f(y_t) / (||grad f(y_t)|| + 1e-12): SAM's perturbation along grad f(y_t)."""
    from lionsnb.sharpness import sam_perturbation

    return x + sam_perturbation(gy, rho)


def check_exercise_extrapolation(attempt, ctx=None) -> ExerciseResult:
    gen = torch.Generator().manual_seed(4)
    x, g = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    return check_exercise("SAMPa extrapolation y", attempt, extrapolation_reference, [(x, g, 0.1), (x, g * 0, 0.5)],
                          hint="an ordinary gradient step from x, with the gradient taken at y_t.", ctx=ctx)


def check_exercise_perturbation(attempt, ctx=None) -> ExerciseResult:
    gen = torch.Generator().manual_seed(5)
    x, g = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    return check_exercise("SAMPa perturbed point", attempt, perturbed_point_reference,
                          [(x, g, 0.1), (x, torch.zeros(5), 0.1)],
                          hint="SAM's perturbation, but along grad f(y_t) instead of grad f(x_t).", ctx=ctx)


def mean_over_seeds(runs: dict, method: str, lam: float | None = None, double: bool = False) -> float:
    """Mean final test accuracy of the runs of one method (and lam, for SAMPa)."""
    group = [r for r in runs.values() if r["method"] == method and (lam is None or r["lam"] == lam)
             and bool(r.get("double")) == double]
    return float(np.mean([r["test_acc"][-1] for r in group])) if group else math.nan


# ----------------------------------------------------------------------------- backends and timing

def _agreement_model(seed: int, width: int = 16) -> torch.nn.Module:
    """A float64 MLP with BatchNorm (module level, so the distributed ranks can rebuild it)."""
    from lionsnb.models import MLP

    torch.manual_seed(seed)
    return MLP(40, [width, width], 10, batch_norm=True).double()


def _max_state_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def backend_agreement(steps: int = 4, lam: float = 0.2, rho: float = 0.1, seed: int = 0,
                      distributed: bool = True) -> dict[str, float]:
    """Largest difference (parameters and BatchNorm buffers, float64) of each parallel backend to the
    sequential reference after ``steps`` SAMPa steps with momentum 0.9 and weight decay 5e-4."""
    import functools

    from lionsnb.sam.parallel import ConcurrentPair, run_distributed_sampa

    gen = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(32, 40, generator=gen, dtype=torch.float64), torch.randint(0, 10, (32,), generator=gen))
               for _ in range(steps)]
    kwargs = dict(lr=0.1, rho=rho, lam=lam, momentum=0.9, weight_decay=5e-4)
    build = functools.partial(_agreement_model, seed)
    initial = build().state_dict()
    finals = {}
    for name, backend in (("sequential", None), ("concurrent", ConcurrentPair())):
        model = build()
        model.load_state_dict(initial)
        opt = SAMPa(model, smooth_cross_entropy, backend=backend, **kwargs)
        for x, y in batches:
            opt.step(x, y)
        finals[name] = model.state_dict()
        if hasattr(backend, "close"):
            backend.close()
    out = {"concurrent": _max_state_diff(finals["sequential"], finals["concurrent"])}
    if distributed:
        run = run_distributed_sampa(build, batches, initial_state=initial, **kwargs)
        out["distributed"] = _max_state_diff(finals["sequential"], run.state_dict)
        out["distributed_rank1"] = _max_state_diff(finals["sequential"], run.rank1_state_dict)
    return out
