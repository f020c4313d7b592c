"""Backs ``notebooks/sam/02_sampa.ipynb``: SAMPa, SAM's two gradients computed in parallel.

Xie, Pethick, Cevher, "SAMPa: Sharpness-aware minimization parallelized", NeurIPS 2024
(arXiv 2410.10683), Eq. 3:

    x~_t    = x_t + rho grad f(y_t) / ||grad f(y_t)||
    y_{t+1} = x_t - eta grad f(y_t)
    x_{t+1} = x_t - eta (1 - lam) grad f(x~_t) - eta lam grad f(y_{t+1})

grad f(x~_t) and grad f(y_{t+1}) depend only on x_t and y_t, so they can be computed at the
same time: one sequential gradient per step instead of SAM's two. The optimizer lives in
:mod:`lionsnb.sam.optim`, its parallel backends in :mod:`lionsnb.sam.parallel`; this module holds the notebook's
spec, the fixed-rho quadratic, cached wrappers, tables, figures and exercise checks.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import colors, figure, label
from lionsnb.progress import progress
from lionsnb.runtime import load_average
from lionsnb.sam.benchmark import time_methods
from lionsnb.sam.data import DATASETS, build_model, cached_split, model_kind, resolve_dataset
from lionsnb.sam.experiments import train_run
from lionsnb.sam.losses import smooth_cross_entropy
from lionsnb.sam.optim import SAMPa, SequentialPair, flat, gradient_at
from lionsnb.sam.parallel import ConcurrentPair
from lionsnb.sharpness import sam_perturbation
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="sam.nb02_sampa",
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

#: model answers of the think exercises (for teachers; `lionsnb answers sam_sampa` prints them)
MODEL_ANSWERS = {
    3: "The official script all-reduces one vector per step, (1 - lam) grad f(x~) + lam grad f(y), each rank "
       "contributing its own term, and rank 1 recovers grad f(y) for the next step's perturbation by dividing its "
       "share by lam. With lam = 0 that share is 0 (and the division is 0/0 or skipped), so the next perturbation "
       "direction is lost: grad f(y) is never known, x~ = x, and the update is plain SGD on the previous batch. "
       "To avoid it, the all-reduce must carry both gradients separately: a vector of 2P numbers for P parameters "
       "(rank 0 fills the first half with grad f(x~) and zeros, rank 1 the second half with grad f(y)), or two "
       "all-reduces of P numbers. DistributedPair sends the 2P-vector in one all-reduce, so SAMPa-0 works; the cost "
       "is twice the communicated volume, which is small next to a gradient's compute for the models here.",
}


# ----------------------------------------------------------------------------- the quadratic

def quadratic_runs(etas, rhos, lams, steps: int, x0=(1.0, -0.5)) -> dict:
    """Deterministic runs on f(x) = ||x||^2 in R^2 (grad f = 2x) for every (eta, rho, lam), vectorised.

    * SAM:   x <- x - eta grad f(x + rho grad f(x)/||grad f(x)||)
    * SAMPa: the paper's update (Eq. 3) with weight lam
    * stale: a naive parallel SAM that perturbs along the previous perturbed gradient,
             x~_t = x_t + rho g_{t-1}/||g_{t-1}||, g_t = grad f(x~_t), x_{t+1} = x_t - eta g_t
    Returns ||grad f(x_t)||^2 per step for each method, keyed by (eta, rho, lam) (lam only matters for SAMPa).
    """
    combos = [(e, r, lm) for e in etas for r in rhos for lm in lams]
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


def plateau_table(runs: dict, etas, rho: float, lam: float):
    """Where each method settles on f(x) = ||x||^2: the mean of ||grad f(x_t)||^2 over the last 100 steps, per
    learning rate, next to SAM's derived value 4 eta^2 rho^2 / (1 - eta)^2 and the stale variant's 4 rho^2."""
    rows = []
    for eta in etas:
        rows.append({"eta": eta, "SAM": plateau(runs, "SAM", eta, rho, lam),
                     "SAM, derived": sam_plateau_theory(eta, rho),
                     f"SAMPa-{lam:g}": plateau(runs, "SAMPa", eta, rho, lam),
                     "stale": plateau(runs, "stale", eta, rho, lam), "4 rho^2": 4 * rho ** 2})
    return table(rows, title=f"Plateau: mean of ||grad f(x_t)||^2 over the last 100 steps (rho = {rho:g})")


def plateau_summary(runs: dict, etas, rho: float, lam: float, eta: float) -> dict:
    """How the plateaus scale with eta: ratios between the largest and the smallest learning rate."""
    return {"sam_plateau_ratio": plateau(runs, "SAM", max(etas), rho, lam) / plateau(runs, "SAM", min(etas), rho, lam),
            "sampa_plateau_ratio": plateau(runs, "SAMPa", max(etas), rho, lam)
            / plateau(runs, "SAMPa", min(etas), rho, lam),
            "stale_plateau_over_4rho2": plateau(runs, "stale", min(etas), rho, lam) / (4 * rho ** 2),
            "sam_plateau_vs_theory": plateau(runs, "SAM", eta, rho, lam) / sam_plateau_theory(eta, rho)}


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
    label(ax2, "learning rate eta", "plateau: mean $\\|\\nabla f\\|^2$ over the last 100 steps",
          "Where each method settles")


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


def training_plan(rho: float, lam: float) -> list[list]:
    """The runs of Experiment 2 as [method, rho, lam, epoch multiplier]: SGD, SGD with 2x the epochs, SAM,
    SAMPa-0 and SAMPa-lam (when lam != 0)."""
    plan = [["sgd", 0.0, 0.0, 1], ["sgd", 0.0, 0.0, 2], ["sam", rho, 0.0, 1], ["sampa", rho, 0.0, 1]]
    return plan + ([["sampa", rho, lam, 1]] if lam != 0 else [])


def train_plan(split, plan: list[list], seeds: list[int], epochs: int, model_kind: str, width: int, lr: float,
               batch_size: int, device: str = "cpu") -> dict:
    """Every run of ``plan`` (see :func:`training_plan`) for every seed; keys ``"method/lam/multiplier/seed"``.
    The sharpness of the final weights is measured with 5 power iterations (only the accuracies are used here)."""
    runs = {}
    jobs = [(method, rho, lam, mult, seed) for seed in seeds for method, rho, lam, mult in plan]
    for method, rho, lam, mult, seed in progress(jobs, desc="training runs", unit="run"):
        run = train_run(split, method, rho=rho, lam=lam, seed=seed, epochs=mult * epochs, model_kind=model_kind,
                        width=width, lr=lr, batch_size=batch_size, power_iters=5, device=device, progress=False)
        run["double"] = mult == 2
        runs[f"{method}/{lam}/{mult}/{seed}"] = run
    return runs


def runs_table(runs: dict):
    """One row per run: method, seed, final test accuracy, sequential gradient evaluations and wall time."""
    return table([{"method": run_label(r), "seed": r["seed"], "test accuracy": r["test_acc"][-1],
                   "sequential gradients": r["sequential_gradients"][-1], "seconds": r["seconds"]}
                  for r in runs.values()], title="Every run of Experiment 2")


def accuracy_summary(runs: dict, lam: float) -> dict:
    """Mean final test accuracy per method over seeds."""
    return {"sgd": mean_over_seeds(runs, "sgd"), "sgd_2x": mean_over_seeds(runs, "sgd", None, True),
            "sam": mean_over_seeds(runs, "sam"), "sampa0": mean_over_seeds(runs, "sampa", 0.0),
            "sampa": mean_over_seeds(runs, "sampa", lam)}


def accuracy_table(acc: dict, lam: float, runs: dict):
    """Mean test accuracy and sequential gradients per method, with MNIST-1D's reference levels."""
    cost = {}
    for r in runs.values():
        cost.setdefault(run_label(r), r["sequential_gradients"][-1])
    names = {"sgd": "SGD", "sgd_2x": "SGD (2x epochs)", "sam": "SAM", "sampa0": "SAMPa-0", "sampa": f"SAMPa-{lam:g}"}
    rows = [{"method": name, "test accuracy (mean over seeds)": acc[key],
             "sequential gradients per run": cost.get(name)} for key, name in names.items()
            if not math.isnan(acc[key])]
    rows += [{"method": "MNIST-1D README: logistic regression / MLP / CNN", "test accuracy (mean over seeds)":
              [0.32, 0.68, 0.94], "sequential gradients per run": None}]
    return table(rows, title="Accuracy against the critical path")


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
    return x + sam_perturbation(gy, rho)


def check_exercise_extrapolation(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: y_{t+1} = x_t - eta grad f(y_t)."""
    gen = torch.Generator().manual_seed(4)
    x, g = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    return check_exercise("SAMPa extrapolation y", attempt, extrapolation_reference, [(x, g, 0.1), (x, g * 0, 0.5)],
                          hint="an ordinary gradient step from x, with the gradient taken at y_t.", ctx=ctx)


def check_exercise_perturbation(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: x~_t = x_t + rho grad f(y_t) / (||grad f(y_t)|| + 1e-12)."""
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


def backend_table(agreement: dict[str, float]):
    """The largest difference of each parallel backend to the sequential reference."""
    what = {"concurrent": "ConcurrentPair (2 replicas, 2 threads or CUDA streams)",
            "distributed": "DistributedPair, rank 0 (2 processes, 1 all-reduce per step)",
            "distributed_rank1": "DistributedPair, rank 1"}
    return table([{"backend": what.get(k, k), "largest |difference| to SequentialPair": v}
                  for k, v in agreement.items()],
                 title="Parameters and BatchNorm buffers after 4 SAMPa steps, float64")


def timing_reading(ratio: float, sequential_ratio: float | None = None) -> str:
    """What a measured SAMPa (concurrent) / SAM step-time ratio says (two ideal devices: 0.5; no overlap: about 1).

    ``sequential_ratio`` is SAMPa's sequential backend over SAM: the same two gradients one after the other, so it
    should be close to 1; far from it (or a ratio below the ideal 0.5) the machine's load changed during the
    measurement and the ratios say nothing about the method.
    """
    if ratio < 0.45 or (sequential_ratio is not None and not 0.8 <= sequential_ratio <= 1.25):
        seq = f"SAMPa's sequential backend, which does SAM's work, took {sequential_ratio:.2f} of SAM's time; " \
            if sequential_ratio is not None else ""
        return (f"not reliable in this run: {seq}the load of the machine changed during the measurement. Rerun "
                "the timing cell on an idle machine")
    if ratio < 0.9:
        return "the two gradients overlapped: SAMPa's step is shorter than SAM's on this machine"
    if ratio <= 1.1:
        return "no measurable overlap: SAMPa's step takes about as long as SAM's here"
    return "slower than SAM: the second thread only added copies and synchronisation on this machine"


def timing_table(timing: dict[str, float], device) -> object:
    """Median ms per step of each method and its ratio to SAM's, measured in one run."""
    rows = [{"method": name, "ms per step (median)": ms, "time / SAM's": ms / timing["sam"]}
            for name, ms in timing.items()]
    return table(rows, title=f"Wall clock per step on {device} ({load_average()})")


def timing_summary(timing: dict[str, float]) -> object:
    """The SAMPa (concurrent) / SAM ratio and what it says on this machine."""
    ratio = timing["sampa-concurrent"] / timing["sam"]
    sequential = timing["sampa-sequential"] / timing["sam"]
    return table({"SAMPa (concurrent backend) / SAM, per step": ratio,
                  "SAMPa (sequential backend) / SAM: the same work, should be about 1": sequential,
                  "two ideal devices would give": 0.5, "reading": timing_reading(ratio, sequential),
                  "machine load": str(load_average())}, title="What the timing says")


def backend_agreement(steps: int = 4, lam: float = 0.2, rho: float = 0.1, seed: int = 0,
                      distributed: bool = True) -> dict[str, float]:
    """Largest difference (parameters and BatchNorm buffers, float64) of each parallel backend to the
    sequential reference after ``steps`` SAMPa steps with momentum 0.9 and weight decay 5e-4."""
    import functools

    from lionsnb.sam.parallel import run_distributed_sampa

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


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "QUAD_METHODS", "SAMPa", "SequentialPair", "ConcurrentPair", "gradient_at",
    "quadratic_runs", "plateau", "plateau_table", "plateau_summary", "sam_plateau_theory", "draw_quadratic",
    "draw_timeline", "training_plan", "train_plan", "runs_table", "accuracy_summary", "accuracy_table",
    "draw_accuracy_vs_cost", "run_label", "cosine_trace", "mean_over_seeds", "backend_agreement", "backend_table",
    "time_methods", "timing_table", "timing_summary", "timing_reading", "check_exercise_extrapolation",
    "check_exercise_perturbation", "cached_split", "model_kind", "resolve_dataset", "figure", "label", "explore",
    "show_source", "table", "load_average",
]
