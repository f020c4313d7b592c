"""Backs ``notebooks/sam/01_sam.ipynb``: SAM as a minimax problem, sharpness against rho, loss landscapes, ASAM.

The method lives in the core modules of :mod:`lionsnb.sam` (the optimizer in :mod:`.optim`, the training step in
:mod:`.steps`, the runs in :mod:`.experiments`); this module arranges them for the notebook, which imports it as
``m``: the spec, cached wrappers, tables, figures and exercise checks.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress
from lionsnb.runtime import load_average
from lionsnb.sam.data import DATASETS, build_model, cached_split, model_kind, resolve_dataset
from lionsnb.sam.experiments import (
    ascent_increase,
    filter_normalized_direction,
    load_run_model,
    loss_surface,
    rescale_relu_mlp,
    summarise,
    train_run,
)
from lionsnb.sam.optim import SAM, disable_running_stats, enable_running_stats
from lionsnb.sam.steps import sam_step
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="sam.nb01_sam",
    title="SAM 1: sharpness-aware minimisation, sharpness vs rho, landscapes, ASAM",
    profiles={
        "smoke": dict(n_train=1000, model="mlp", width=128, epochs=4, lr=0.05, batch_size=128,
                      rhos=(0.0, 0.1), asam_rho=1.0, seeds=(0,), power_iters=10, grid=9, points=21),
        "teach": dict(n_train=None, model="mlp", width=256, epochs=30, lr=0.05, batch_size=128,
                      rhos=(0.0, 0.05, 0.1, 0.2), asam_rho=1.0, seeds=(0, 1, 2), power_iters=20, grid=17,
                      points=41),
        "full": dict(n_train=None, model="resnet20", width=256, epochs=50, lr=0.1, batch_size=128,
                     rhos=(0.0, 0.02, 0.05, 0.1, 0.2), asam_rho=1.0, seeds=(0, 1, 2), power_iters=20, grid=25,
                     points=51),
    },
    knobs={
        "rho": Knob(0.1, "SAM perturbation radius shown first (added to the sweep)", float, low=0.0, high=2.0),
        "dataset": Knob("auto", "auto (MNIST-1D; CIFAR-10 in the full profile when present), mnist1d, digits or "
                        "cifar10", str, choices=DATASETS),
    },
    datasets=(),
)
setup = setup_for(SPEC)

#: reference test accuracies on MNIST-1D (4000 training, 1000 test examples), from the dataset's README
#: (github.com/greydanus/mnist1d; Greydanus 2020, arXiv:2011.14439)
MNIST1D_REFERENCE = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91, "human expert": 0.96}
#: rescalings of the ReLU MLP in Experiment 3: powers of two, by which floating-point products are exact
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
#: a rescaling that is not a power of two (its products are rounded)
ODD_SCALE = 3.0

#: model answers of the think exercises (for teachers; `lionsnb answers sam_basics` prints them)
MODEL_ANSWERS = {
    3: "Sharpness usually keeps falling as rho grows (the worst case over a larger ball punishes curvature more), "
       "but test accuracy does not follow for ever: at rho = 0.5 the first-order perturbation leaves the region "
       "where L(w + e) ~ L(w) + e.g holds, so the gradient taken at w + e no longer says much about the "
       "neighbourhood of w, training loss stays high (SAM minimises max over the ball, which a too-large ball makes "
       "pessimistic), and accuracy drops below the best radius, sometimes below SGD. Too large a ball means "
       "underfitting: the method trades training loss for flatness, and past some radius that trade is bad. In "
       "the notebook, RHO = 0.5 adds a point to the sharpness-vs-rho figure; what to expect there is a sharpness "
       "at or below the value at 0.2 and a test accuracy below the best radius of the sweep. If the accuracy does not "
       "drop, the ball is not yet too large for this network: try 1.0 (the knob allows up to 2).",
}


# ----------------------------------------------------------------------------- Experiment 1: runs

def train_runs(split, rhos: list[float], seeds: list[int], asam_rho: float, model_kind: str, width: int,
               epochs: int, lr: float, batch_size: int, power_iters: int, device: str = "cpu") -> dict:
    """SGD (rho = 0), SAM for every other radius and ASAM (``asam_rho``), once per seed, with the reference code's
    recipe (momentum 0.9, weight decay 5e-4, smoothed cross-entropy). Keys ``"<rho>/<seed>"`` and ``"asam/<seed>"``.
    """
    settings = dict(model_kind=model_kind, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
                    power_iters=power_iters, device=device, progress=False)
    jobs = [(f"{rho}/{seed}", "sgd" if rho == 0 else "sam", rho, seed) for seed in seeds for rho in rhos]
    jobs += [(f"asam/{seed}", "asam", asam_rho, seed) for seed in seeds]
    return {key: train_run(split, method, rho=rho, seed=seed, **settings)
            for key, method, rho, seed in progress(jobs, desc="training runs", unit="run")}


def runs_table(runs: dict):
    """One row per run: method, radius, seed, sharpness, final test accuracy and wall time."""
    return table([{"method": r["method"].upper(), "rho": r["rho"], "seed": r["seed"], "sharpness": r["sharpness"],
                   "test accuracy": r["test_acc"][-1], "seconds": r["seconds"]} for r in runs.values()],
                 title="Every run: top Hessian eigenvalue of the training loss and final test accuracy")


def flatness_summary(runs: dict, seeds: list[int], rho: float) -> dict:
    """SGD against SAM at ``rho`` (paired by seed): mean sharpness, share of seeds where SAM is flatter, mean gain in
    test accuracy."""
    sgd = [runs[f"0.0/{s}"] for s in seeds]
    sam = [runs[f"{float(rho)}/{s}"] for s in seeds]
    return {"sharpness_sgd": float(np.mean([r["sharpness"] for r in sgd])),
            "sharpness_sam": float(np.mean([r["sharpness"] for r in sam])),
            "seeds_sam_flatter": float(np.mean([a["sharpness"] > b["sharpness"] for a, b in zip(sgd, sam)])),
            "acc_sgd": float(np.mean([r["test_acc"][-1] for r in sgd])),
            "acc_sam": float(np.mean([r["test_acc"][-1] for r in sam])),
            "acc_gain_sam_vs_sgd": float(np.mean([b["test_acc"][-1] - a["test_acc"][-1] for a, b in zip(sgd, sam)]))}


def accuracy_reference_table(flat: dict, rho: float, asam: dict | None = None):
    """The measured test accuracies next to the reference levels of the MNIST-1D README."""
    rows = [{"model": "this notebook: MLP, SGD (mean over seeds)", "test accuracy": flat["acc_sgd"]},
            {"model": f"this notebook: MLP, SAM rho {rho:g}", "test accuracy": flat["acc_sam"]}]
    if asam is not None:
        rows.append({"model": f"this notebook: MLP, ASAM rho {asam['rho']:g}", "test accuracy": asam["acc"]})
    rows += [{"model": f"MNIST-1D README: {name}", "test accuracy": acc} for name, acc in MNIST1D_REFERENCE.items()]
    return table(rows, title="Test accuracy on MNIST-1D against the dataset's reference levels (chance: 0.1)")


def asam_summary(runs: dict) -> dict:
    group = [r for r in runs.values() if r["method"] == "asam"]
    return {"rho": group[0]["rho"], "acc": float(np.mean([r["test_acc"][-1] for r in group])),
            "sharpness": float(np.mean([r["sharpness"] for r in group])), "seeds": len(group)}


def draw_sharpness_vs_rho(fig, *, runs: dict, rho: float | None = None) -> None:
    """Sharpness and test accuracy against rho (mean and spread over seeds, SGD and SAM runs)."""
    ax1, ax2 = fig.subplots(1, 2)
    runs = {k: r for k, r in runs.items() if r["method"] != "asam"}
    rhos = sorted({r["rho"] for r in runs.values()})
    for ax, key, ylabel in ((ax1, "sharpness", "sharpness $\\lambda_{max}$ (train CE)"),
                            (ax2, "acc", "final test accuracy")):
        def value(run: dict) -> float:
            return run["sharpness"] if key == "sharpness" else run["test_acc"][-1]

        means, stds = [], []
        for r in rhos:
            group = [run for run in runs.values() if run["rho"] == r]
            mean, std = summarise(group, value)
            means.append(mean)
            stds.append(std)
            ax.plot([r] * len(group), [value(run) for run in group], ".", color="gray", alpha=0.6)
        ax.errorbar(rhos, means, yerr=stds, marker="o", capsize=3, color="tab:blue", label="mean ± std over seeds")
        if rho is not None:
            ax.axvline(rho, color="black", lw=1)
        label(ax, "rho (0 = SGD)", ylabel)
        ax.legend(fontsize=8)


# ----------------------------------------------------------------------------- Experiment 2: landscapes

def landscapes(runs: dict, split, rhos: list[float], seed: int, model_kind: str, width: int, grid: int,
               points: int) -> dict:
    """For the run of every radius with ``seed``: the training loss along one filter-normalised direction (1-D,
    ``points`` values of alpha in [-1, 1]) and on a plane of two (``grid`` x ``grid``)."""
    coords = np.linspace(-1, 1, grid).tolist()
    coords_1d = np.linspace(-1, 1, points).tolist()
    out = {"coords": coords}
    for rho in rhos:
        model = load_run_model(runs[f"{rho}/{seed}"], split, model_kind, width)
        gen = torch.Generator().manual_seed(seed)
        d1, d2 = filter_normalized_direction(model, gen), filter_normalized_direction(model, gen)
        out[rho] = {"coords_1d": coords_1d, "line": loss_surface(model, split, [d1], coords_1d),
                    "plane": loss_surface(model, split, [d1, d2], coords)}
    return out


def landscape_rise(surfaces: dict) -> dict[float, float]:
    """max - min of the training loss along each run's 1-D slice."""
    return {r: float(s["line"].max() - s["line"].min()) for r, s in surfaces.items() if r != "coords"}


def draw_landscape(fig, *, rho: float, surfaces: dict) -> None:
    """1-D and 2-D filter-normalised loss landscapes around the SGD and the SAM (rho) solutions."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    coords = surfaces["coords"]
    for r, color in ((0.0, "tab:red"), (rho, "tab:blue")):
        name = "SGD" if r == 0 else f"SAM rho={r:g}"
        ax1.plot(surfaces[r]["coords_1d"], surfaces[r]["line"], color=color, label=name)
    label(ax1, "alpha (filter-normalised direction)", "train cross-entropy", "1-D slice")
    ax1.legend(fontsize=8)
    planes = [surfaces[0.0]["plane"], surfaces[rho]["plane"]]
    levels = torch.linspace(float(min(p.min() for p in planes)), float(max(p.max() for p in planes)), 16).tolist()
    for ax, r in ((ax2, 0.0), (ax3, rho)):
        cs = ax.contour(coords, coords, surfaces[r]["plane"].numpy(), levels=levels, cmap="viridis")
        ax.clabel(cs, fontsize=6)
        label(ax, "alpha", "beta", ("SGD" if r == 0 else f"SAM rho = {r:g}") + " (same contour levels)")


# ----------------------------------------------------------------------------- Experiment 3: ASAM

def scale_invariance(model, split, sam_rho: float, asam_rho: float, scales=SCALES) -> dict:
    """SAM's and ASAM's first-order worst-case increase L(w + e) - L(w) on ``model`` rescaled by every c in
    ``scales`` (the same function), their relative spread (max - min) / mean over ``scales``, and the relative
    difference between c = 3 (:data:`ODD_SCALE`, not a power of two) and c = 1."""
    out = {}
    for name, rho, adaptive in (("SAM", sam_rho, False), ("ASAM", asam_rho, True)):
        values = [ascent_increase(rescale_relu_mlp(model, c), split, rho, adaptive) for c in scales]
        odd = ascent_increase(rescale_relu_mlp(model, ODD_SCALE), split, rho, adaptive)
        base = ascent_increase(model, split, rho, adaptive)
        out[name] = {"rho": rho, "increase": values,
                     "spread": (max(values) - min(values)) / abs(float(np.mean(values))),
                     "odd": odd, "odd_vs_1": abs(odd - base) / abs(base)}
    return out


def scale_test_model(runs: dict, split, model_kind: str, width: int, seed: int):
    """The trained SGD MLP of ``seed``; for other models (ResNet-20 in the full profile) a small ReLU MLP trained for
    one epoch, since the rescaling argument needs two consecutive linear layers around a ReLU."""
    if model_kind == "mlp":
        return load_run_model(runs[f"0.0/{seed}"], split, "mlp", width)
    return load_run_model(train_run(split, "sgd", epochs=1, width=64, seed=seed, progress=False), split, "mlp", 64)


def scale_table(inv: dict, scales=SCALES):
    rows = [{"method": f"{name} (rho {v['rho']:g})", **{f"c = {c:g}": x for c, x in zip(scales, v["increase"])},
             "relative spread (powers of 2)": v["spread"], f"c = {ODD_SCALE:g}": v["odd"],
             f"relative difference c = {ODD_SCALE:g} vs 1": v["odd_vs_1"]} for name, v in inv.items()]
    return table(rows, title="Worst-case increase L(w + e) - L(w) of the same function under rescaling by c",
                 digits=6)


def draw_scale_invariance(fig, *, inv: dict, scales=SCALES) -> None:
    ax = fig.subplots()
    for name, v in inv.items():
        ax.plot(scales, v["increase"], "o-", label=f"{name} (rho {v['rho']:g})")
    ax.set_xscale("log", base=2)
    ax.legend()
    label(ax, "rescaling c (same function)", "L(w + e) - L(w)", "Worst-case increase under rescaling")


# ----------------------------------------------------------------------------- Implementation check

def first_step_check(split, rho: float, seed: int = 0) -> dict:
    """One SAM first step on a tiny ReLU network against e = rho g / ||g|| written out by hand: the largest
    difference, and ||e|| (which must equal rho)."""
    torch.manual_seed(seed)
    tiny = torch.nn.Sequential(torch.nn.Linear(split.x_train.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    opt = SAM(tiny.parameters(), torch.optim.SGD, rho=rho, lr=0.1, momentum=0.9)
    x, y = split.x_train[:64], split.y_train[:64]
    torch.nn.functional.cross_entropy(tiny(x), y).backward()
    grads = [p.grad.clone() for p in tiny.parameters()]
    before = [p.detach().clone() for p in tiny.parameters()]
    opt.first_step(zero_grad=True)
    by_hand = sam_perturbation_reference(grads, rho)
    error = max(float((p.detach() - w - e).abs().max()) for p, w, e in zip(tiny.parameters(), before, by_hand))
    moved = torch.linalg.vector_norm(torch.stack([(p.detach() - w).norm() for p, w in zip(tiny.parameters(),
                                                                                          before)]))
    return {"first_step_error": error, "norm_of_e": float(moved), "rho": rho}


# ----------------------------------------------------------------------------- exercises

def sam_perturbation_reference(grads: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """e = rho g / (||g||_2 + 1e-12), with the norm over ALL parameters (a list of per-parameter gradients)."""
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    return [rho * g / (norm + 1e-12) for g in grads]


def asam_perturbation_reference(grads: list[torch.Tensor], weights: list[torch.Tensor], rho: float
                                ) -> list[torch.Tensor]:
    """ASAM without offset: e = rho T^2 g / (||T g|| + 1e-12), T = |w| elementwise."""
    tg = [w.abs() * g for g, w in zip(grads, weights)]
    norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in tg]))
    return [rho * w.abs() * t / (norm + 1e-12) for t, w in zip(tg, weights)]


def _cases():
    gen = torch.Generator().manual_seed(3)
    g = [torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)]
    w = [torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)]
    return g, w


def check_exercise_sam(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: SAM's perturbation for a list of per-parameter gradients (one norm over all of them)."""
    g, _ = _cases()
    return check_exercise("SAM perturbation over all parameters", attempt, sam_perturbation_reference,
                          [(g, 0.05), ([torch.tensor([3.0, 4.0])], 1.0)],
                          hint="one norm over all parameters together: sqrt(sum of squared norms).", ctx=ctx)


def check_exercise_asam(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: ASAM's perturbation rho T^2 g / ||T g|| with T = |w|."""
    g, w = _cases()
    return check_exercise("ASAM perturbation", attempt, asam_perturbation_reference, [(g, w, 0.5)],
                          hint="scale the gradient by |w| inside the norm, and by |w|^2 in the numerator.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "MNIST1D_REFERENCE", "SCALES", "ODD_SCALE", "SAM", "sam_step",
    "disable_running_stats", "enable_running_stats", "build_model", "cached_split", "model_kind", "resolve_dataset",
    "train_run", "train_runs", "runs_table", "flatness_summary", "accuracy_reference_table", "asam_summary",
    "draw_sharpness_vs_rho", "landscapes", "landscape_rise", "draw_landscape", "scale_invariance", "scale_table",
    "draw_scale_invariance", "scale_test_model", "load_run_model", "first_step_check", "check_exercise_sam",
    "check_exercise_asam", "figure", "label", "explore", "show_source", "table", "load_average",
]
