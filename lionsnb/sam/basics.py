"""Notebook 1 of the SAM series: SAM as a minimax problem, sharpness vs rho, loss landscapes, ASAM."""
from __future__ import annotations

import torch

from lionsnb.context import setup_for
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import colors, figure, label  # noqa: F401  (re-exported for the notebook)
from lionsnb.sam.data import DATASETS, cached_split, load_data, resolve_dataset  # noqa: F401
from lionsnb.sam.experiments import (  # noqa: F401
    ascent_increase,
    filter_normalized_direction,
    load_run_model,
    loss_surface,
    rescale_relu_mlp,
    summarise,
    train_run,
)
from lionsnb.sam.optim import SAM  # noqa: F401
from lionsnb.widgets import explore  # noqa: F401

SPEC = MethodSpec(
    name="sam.basics",
    title="SAM: sharpness-aware minimisation, sharpness vs rho, landscapes, ASAM",
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


def model_kind(sizes, dataset: str) -> str:
    """ResNet-20 only makes sense on CIFAR-10; elsewhere the profile's MLP."""
    return "resnet20" if dataset == "cifar10" else ("mlp" if sizes.model == "resnet20" else sizes.model)


def draw_sharpness_vs_rho(fig, *, runs: dict, rho: float | None = None) -> None:
    """Sharpness and test accuracy against rho (mean and spread over seeds)."""
    ax1, ax2 = fig.subplots(1, 2)
    rhos = sorted({r["rho"] for r in runs.values()})
    for ax, key, ylabel in ((ax1, "sharpness", "sharpness $\\lambda_{max}$ (train CE)"),
                            (ax2, "acc", "final test accuracy")):
        means, stds = [], []
        for r in rhos:
            group = [run for run in runs.values() if run["rho"] == r]
            m, s = summarise(group, (lambda run: run["sharpness"]) if key == "sharpness"
                             else (lambda run: run["test_acc"][-1]))
            means.append(m)
            stds.append(s)
            ax.plot([r] * len(group), [run["sharpness"] if key == "sharpness" else run["test_acc"][-1]
                                       for run in group], ".", color="gray", alpha=0.6)
        ax.errorbar(rhos, means, yerr=stds, marker="o", capsize=3, color="tab:blue", label="mean ± std over seeds")
        if rho is not None:
            ax.axvline(rho, color="black", lw=1)
        label(ax, "rho (0 = SGD)", ylabel)
        ax.legend(fontsize=8)


def draw_landscape(fig, *, rho: float, surfaces: dict, coords: list[float]) -> None:
    """1-D and 2-D filter-normalised loss landscapes around the SGD and the SAM (rho) solutions."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
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


def check_exercise_sam(attempt, ctx=None) -> ExerciseResult:
    g, _ = _cases()
    return check_exercise("SAM perturbation over all parameters", attempt, sam_perturbation_reference,
                          [(g, 0.05), ([torch.tensor([3.0, 4.0])], 1.0)],
                          hint="one norm over all parameters together: sqrt(sum of squared norms).", ctx=ctx)


def check_exercise_asam(attempt, ctx=None) -> ExerciseResult:
    g, w = _cases()
    return check_exercise("ASAM perturbation", attempt, asam_perturbation_reference, [(g, w, 0.5)],
                          hint="scale the gradient by |w| inside the norm, and by |w|^2 in the numerator.", ctx=ctx)
