"""Backs ``notebooks/mup2/02_transfer.ipynb``: does the optimal (lr, rho) of SAM transfer across widths?

Haas et al. (NeurIPS 2024, arXiv 2411.00075, Fig. 1) train a 3-layer MLP on CIFAR-10 over an (lr, rho) grid at
several widths: under SP with naive rho the optimum drifts with width, under muP^2 (muP plus layerwise rho and
Algorithm 1's gradient-norm weights) it stays put. The notebook measures it the way muTransfer does (Yang et al.,
Tensor Programs V): the **training loss after a fixed budget**, against the base learning rate, one curve per width,
over seeds. The training runs live in :mod:`lionsnb.mup2.sweep` (all grid points and seeds of one width trained as
one batch of networks); this module holds the spec, the checks, tables, figures and exercise checks.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.datasets import Split
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.mup2.model import WidthMLP, layerwise_step_error, make_sam
from lionsnb.mup2.scaling import LAYERS, mup2_rho_factors, scaling_table, table_rows
from lionsnb.mup2.sweep import (
    TRANSFER_SCHEMES,
    lr_optima,
    mean_loss,
    optimum,
    rho_response,
    train_grid,
    transfer_summary,
    transfer_sweep,
)
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.runtime import load_average
from lionsnb.sam.data import DATASETS, cached_split, resolve_dataset
from lionsnb.sam.steps import sam_step
from lionsnb.training import fit, sgd_step
from lionsnb.widgets import explore

#: base learning rates of the teach grid: powers of sqrt(2) from 2^-3.5 to 2^0.5
TEACH_LRS = tuple(round(2.0 ** (k / 2), 6) for k in range(-7, 2))

SPEC = MethodSpec(
    name="mup2.nb02_transfer",
    title="muP^2 2: transfer of the joint optimum (lr, rho) across widths, SP-SAM vs muP^2-SAM",
    profiles={
        "smoke": dict(n_train=None, widths=(16, 64), base_width=16, lrs=(0.125, 0.25, 0.5, 1.0), rhos=(0.0, 0.1),
                      epochs=1, batch_size=64, seeds=(0,)),
        "teach": dict(n_train=None, widths=(16, 32, 64, 128, 256, 512), base_width=16, lrs=TEACH_LRS,
                      rhos=(0.0, 0.05, 0.1, 0.2), epochs=2, batch_size=64, seeds=(0, 1, 2)),
        "full": dict(n_train=None, widths=(64, 128, 256, 512, 1024, 2048, 4096), base_width=64,
                     lrs=tuple(round(2.0 ** (k / 2), 6) for k in range(-11, 3)),
                     rhos=(0.0, 0.025, 0.05, 0.1, 0.2, 0.4), epochs=10, batch_size=64, seeds=(0, 1, 2)),
    },
    knobs={
        "rho": Knob(0.05, "base radius of the learning-rate curves (added to the grid; 0 = SGD)", float, low=0.0,
                    high=2.0),
        "dataset": Knob("auto", "auto (MNIST-1D; CIFAR-10 in the full profile when present), mnist1d, digits or "
                        "cifar10", str, choices=DATASETS),
        "momentum": Knob(0.0, "SGD momentum of the base optimiser (the paper's MLPs use 0)", float, low=0.0,
                         high=1.0, high_open=True),
    },
    datasets=(),
)
setup = setup_for(SPEC)

SCHEME_NAMES = tuple(TRANSFER_SCHEMES)

#: model answers of the think exercises (for teachers; `lionsnb answers mup2_transfer` prints them)
MODEL_ANSWERS = {
    3: "With momentum beta the steady-state step of SGD is about lr / (1 - beta), ten times larger for beta = 0.9, "
       "so every curve moves to smaller base learning rates by about log2(10) = 3.3 grid units of 2x (6.6 of the "
       "sqrt(2) steps used here): the optima of the teach grid would sit at or beyond its lower edge, and the "
       "transfer measurement would be meaningless until the grid is extended downwards (add lrs down to about "
       "2^-7). Momentum multiplies every layer's effective learning rate by the same factor, so it does not change "
       "the width exponents: under muP^2 the optimum should still stay put across widths and under SP it should "
       "still drift, by the same amount in log2 units, once the grid covers it. The perturbation is unchanged by "
       "momentum (SAM's ascent step uses the raw gradient), so the rho axis keeps its meaning; only its interplay "
       "with the larger effective step changes where the joint optimum sits.",
}


# ----------------------------------------------------------------------------- checks

def table_rho_factors(ratio: float, base_width: int = 64) -> tuple[float, float, float]:
    """muP^2's rho factors (input, hidden, output) read from the package's table at width ratio ``ratio``."""
    table_ = scaling_table("mup2", width=round(ratio * base_width), base_width=base_width)
    return tuple(table_["layers"][name].rho for name in LAYERS)


def factor_error(base_width: int, ratios=(0.5, 1.0, 4.0, 16.0)) -> float:
    """Largest difference between the table's rho factors and r^-(d + d_l) from the exponents alone."""
    return max(abs(a - b) for r in ratios for a, b in zip(table_rho_factors(r, base_width), mup2_rho_factors(r)))


def first_step_error(width: int = 256, base_width: int = 64, rho: float = 0.1, seed: int = 0) -> float:
    """max |optimizer's perturbation - Algorithm 1 by hand| for muP^2 (float64; see ``layerwise_step_error``)."""
    return layerwise_step_error(width, base_width, rho, seed)["max_error"]


def toy_split(seed: int = 0, d_in: int = 12, n: int = 240, classes: int = 3) -> Split:
    """A small separable problem for the float64 checks."""
    gen = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(classes, d_in, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    x = centers[y] + torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    split = 2 * n // 3
    return Split(x[:split], y[:split], x[split:], y[split:], classes, "toy")


def batched_vs_optimizer(width: int = 64, base_width: int = 16, momentum: float = 0.0, seed: int = 0) -> float:
    """Largest weight difference (float64, relative to the weights' scale when it exceeds 1) between networks
    trained by :func:`train_grid` (batched) and the same networks trained one at a time by the SAM optimizer with
    per-layer groups (``make_sam``, ``sam_step``, ``fit``), for both schemes and a few (lr, rho, seed) points
    including rho = 0."""
    data = toy_split(seed)
    points = [(0.2, 0.1, seed), (0.05, 0.3, seed), (0.2, 0.0, seed + 1), (0.4, 0.2, seed + 2)]
    worst = 0.0
    for scheme, (table_name, init) in TRANSFER_SCHEMES.items():
        run = train_grid(data, scheme, width, [p[0] for p in points], [p[1] for p in points], [p[2] for p in points],
                         base_width=base_width, epochs=2, batch_size=32, momentum=momentum, dtype=torch.float64,
                         return_weights=True)
        for k, (lr, rho, s) in enumerate(points):
            torch.manual_seed(s)
            model = WidthMLP(data.x_train.shape[1], width, data.n_classes, init, base_width).double()
            opt = make_sam(model, scaling_table(table_name, width=width, base_width=base_width), lr=lr, rho=rho,
                           momentum=momentum)
            step = sam_step if rho > 0 else _sgd_step
            fit(model, data.x_train, data.y_train, epochs=2, optimizer=opt, step=step, batch_size=32, seed=s,
                loss_fn=F.cross_entropy, progress=False)
            with torch.no_grad():
                for i, name in enumerate(LAYERS):
                    ref = getattr(model, name).weight
                    scale = max(1.0, float(ref.abs().max()))  # a diverging run's weights grow large
                    worst = max(worst, float((ref - run["weights"][i][k]).abs().max()) / scale)
    return worst


def _sgd_step(model, optimizer, x, y, loss_fn):
    """rho = 0: SGD with the SAM optimizer's base optimiser (one gradient per step)."""
    return sgd_step(model, optimizer.base_optimizer, x, y, loss_fn)


def base_identity_gap(base_width: int = 16, seed: int = 0) -> float:
    """Largest weight difference between SP-SAM and muP^2-SAM trained at the base width: 0 by construction (every
    factor is 1 there), so anything else means the tables are wired wrongly."""
    data = toy_split(seed)
    runs = [train_grid(data, scheme, base_width, [0.2, 0.4], [0.1, 0.0], [seed, seed], base_width=base_width,
                       epochs=1, batch_size=32, dtype=torch.float64, return_weights=True) for scheme in SCHEME_NAMES]
    return max(float((a - b).abs().max()) for a, b in zip(runs[0]["weights"], runs[1]["weights"]))


def checks_table(checks: dict):
    """The implementation checks with what each compares."""
    what = {"factor_error": "rho factors: table vs r^-(d + d_l)",
            "first_step_error": "one muP^2 perturbation: optimizer vs Algorithm 1 by hand",
            "batched_error": "batched training vs one network at a time with the SAM optimizer (weights, relative)",
            "base_identity_gap": "SP-SAM vs muP^2-SAM at the base width (weights; 0 by construction)"}
    return table([{"check": what[k], "largest |difference| (float64)": v} for k, v in checks.items()],
                 title="Implementation checks with known answers")


# ----------------------------------------------------------------------------- tables

def factor_rows(widths, base_width: int):
    """The per-layer multipliers of both schemes at every width, as one table."""
    rows = []
    for name, (table_name, _) in TRANSFER_SCHEMES.items():
        for width in widths:
            for row in table_rows(scaling_table(table_name, width=width, base_width=base_width)):
                rows.append({"scheme": name, "width": width, "layer": row["layer"], "init std x": row["init_std"],
                             "lr x": row["lr"], "rho x": row["rho"], "grad-norm weight s_l": row["gradnorm"]})
    return table(rows, title=f"Per-layer factors on the base values (base width {base_width}: every factor 1)")


def optima_table(result: dict, rho_index: int):
    """Per scheme and width: the best base lr of the seed-mean curve, each seed's best lr, and the loss there."""
    opt = lr_optima(result, rho_index)
    mean = mean_loss(result)[..., rho_index]
    a = np.asarray(result["train_loss"], dtype=float)[..., rho_index, :]
    rows = []
    for s, scheme in enumerate(result["schemes"]):
        o = opt[scheme]
        for w, width in enumerate(result["widths"]):
            i = int(np.argmin(mean[s, w]))
            rows.append({"scheme": scheme, "width": width, "best lr": result["lrs"][i],
                         "log2 best lr": o["log2_lr"][w],
                         "log2 best lr per seed": o["log2_lr_seeds"][w],
                         "training loss there (mean)": o["loss"][w],
                         "std over seeds": float(np.std(a[s, w, i])) if np.isfinite(a[s, w, i]).all() else math.inf,
                         "at the grid's edge": o["at_edge"][w]})
    rho = result["rhos"][rho_index]
    return table(rows, title=f"Best base learning rate per width at rho {rho:g}: training loss after "
                             f"{result['epochs']} epochs (mean of {len(result['seeds'])} seeds)")


def summary_table(summary: dict):
    """The transfer numbers of both schemes side by side."""
    names = {"shift_log2_lr": "log2 best lr: largest width - smallest", "spread_log2_lr": "log2 best lr: max - min",
             "seed_spread_log2_lr": "seed-to-seed std of log2 best lr (largest over widths)",
             "regret": "loss lost at the largest width with the smallest width's best lr",
             "nested": "share of (lr, width pair) where the wider network is better",
             "wider_is_better": "share of width pairs whose best loss falls", "lr_at_edge": "optima at the grid edge"}
    return table([{"quantity": text, **{scheme: summary[scheme][key] for scheme in summary}}
                  for key, text in names.items()], title="Does the optimum move with width?")


def summary_by_rho(result: dict) -> list[dict]:
    """The transfer numbers of both schemes at every radius of the grid (is a result robust to the choice of rho?)."""
    rows = []
    for j, rho in enumerate(result["rhos"]):
        summary = transfer_summary(result, j)
        for scheme, v in summary.items():
            rows.append({"rho": rho, "scheme": scheme, "shift_log2_lr": v["shift_log2_lr"],
                         "seed_spread_log2_lr": v["seed_spread_log2_lr"], "regret": v["regret"],
                         "nested": v["nested"]})
    return rows


def by_rho_table(rows: list[dict]):
    names = {"shift_log2_lr": "log2 best lr: largest - smallest width",
             "seed_spread_log2_lr": "seed-to-seed std of log2 best lr", "regret": "regret (training loss)",
             "nested": "nested (wider better at the same lr)"}
    return table([{"rho": r["rho"], "scheme": r["scheme"], **{text: r[k] for k, text in names.items()}}
                  for r in rows], title="The same numbers at every base radius of the grid")


def joint_optima(result: dict) -> dict[str, list[dict]]:
    """Per scheme and width: the (lr, rho) grid point with the lowest mean training loss, and its test accuracy."""
    mean = mean_loss(result)
    acc = np.asarray(result["test_acc"], dtype=float).mean(-1)
    out = {}
    for s, scheme in enumerate(result["schemes"]):
        rows = []
        for w, width in enumerate(result["widths"]):
            i, j = optimum(mean[s, w])
            rows.append({"width": width, "lr": result["lrs"][i], "rho": result["rhos"][j],
                         "loss": float(mean[s, w, i, j]), "test_acc": float(acc[s, w, i, j]),
                         "best_test_acc": float(acc[s, w].max())})
        out[scheme] = rows
    return out


def joint_table(joint: dict):
    """The joint optimum of every scheme and width."""
    return table([{"scheme": scheme, "width": r["width"], "best lr": r["lr"], "best rho": r["rho"],
                   "training loss": r["loss"], "test accuracy there": r["test_acc"],
                   "best test accuracy on the grid": r["best_test_acc"]}
                  for scheme, rows in joint.items() for r in rows],
                 title="Joint optimum (lowest mean training loss over the (lr, rho) grid) per width")


def rho_response_table(result: dict):
    """Training loss at each width's best lr (for SGD) for every rho, minus the loss at rho = 0."""
    resp = rho_response(result)
    rows = []
    for scheme, grid in resp.items():
        for w, width in enumerate(result["widths"]):
            rows.append({"scheme": scheme, "width": width,
                         **{f"rho {r:g}": float(grid[w, j]) for j, r in enumerate(result["rhos"]) if r > 0}})
    return table(rows, title="What a base radius does: training loss at rho minus at rho = 0 (each width's best lr)")


# ----------------------------------------------------------------------------- figures

def _width_colors(widths):
    import matplotlib.pyplot as plt

    return plt.cm.viridis(np.linspace(0.0, 0.9, len(widths)))


def draw_lr_curves(fig, *, result: dict, rho: float) -> None:
    """The muTransfer figure: training loss after the budget against the base lr, one curve per width (mean over
    seeds, band = min to max over seeds), the best lr of each curve marked; SP-SAM left, muP^2-SAM right."""
    j = result["rhos"].index(rho)
    axes = fig.subplots(1, len(result["schemes"]), sharey=True)
    a = np.asarray(result["train_loss"], dtype=float)[..., j, :]
    mean = mean_loss(result)[..., j]
    lrs = np.asarray(result["lrs"])
    finite = a[np.isfinite(a)]
    top = min(float(np.log(10) * 1.1), float(finite.max())) if finite.size else 2.5
    for s, (ax, scheme) in enumerate(zip(np.atleast_1d(axes), result["schemes"])):
        for w, (width, color) in enumerate(zip(result["widths"], _width_colors(result["widths"]))):
            ok = np.isfinite(mean[s, w])
            lo = np.where(np.isfinite(a[s, w]), a[s, w], np.nan).min(-1)
            hi = np.where(np.isfinite(a[s, w]), a[s, w], np.nan).max(-1)
            ax.fill_between(lrs[ok], lo[ok], hi[ok], color=color, alpha=0.2, lw=0)
            ax.plot(lrs[ok], mean[s, w][ok], "o-", color=color, ms=3, lw=1.5, label=f"width {width}")
            i = int(np.argmin(mean[s, w]))
            ax.plot(lrs[i], mean[s, w, i], "*", color=color, ms=13, mec="black", mew=0.6)
        ax.set_xscale("log", base=2)
        ax.set_ylim(float(finite.min()) * 0.97 if finite.size else 0, top)
        label(ax, "base learning rate eta (log2 axis)", "training loss after the budget" if s == 0 else "(same scale)",
              f"{scheme}, rho = {rho:g}")
        ax.legend(fontsize=8, title="star: best lr", title_fontsize=8)


def _heatmap(ax, grid: np.ndarray, lrs, rhos, vmin: float, vmax: float, fmt: str = "{:.2f}", cmap: str = "viridis_r",
             best: tuple[int, int] | None = None):
    import matplotlib.pyplot as plt

    shown = np.ma.masked_invalid(np.where(np.isfinite(grid), grid, np.nan))
    colormap = plt.get_cmap(cmap).copy()
    colormap.set_bad("lightgray")
    im = ax.imshow(shown, origin="lower", aspect="auto", cmap=colormap, vmin=vmin, vmax=vmax)
    for (i, j), v in np.ndenumerate(grid):
        if not np.isfinite(v):
            ax.text(j, i, "div.", ha="center", va="center", fontsize=8, color="black")
            continue
        shade = (v - vmin) / max(vmax - vmin, 1e-12)
        dark = shade > 0.5 if cmap.endswith("_r") else shade < 0.5
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if best is not None:
        ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos], fontsize=9)
    ax.set_yticks(range(len(lrs)), [f"{x:.3g}" for x in lrs], fontsize=9)
    ax.grid(False)
    return im


def draw_heatmaps(fig, *, result: dict, widths: list[int] | None = None) -> None:
    """Training loss after the budget over (lr, rho), mean over seeds: one row per scheme, one column per width of
    ``widths`` (default: smallest, middle, largest); the lowest cell outlined in red, diverged cells grey."""
    widths = widths or sorted({result["widths"][0], result["widths"][len(result["widths"]) // 2],
                               result["widths"][-1]})
    mean = mean_loss(result)
    cols = [result["widths"].index(w) for w in widths]
    finite = mean[:, cols][np.isfinite(mean[:, cols])]
    vmin, vmax = float(finite.min()), float(min(finite.max(), np.log(10)))
    axes = np.asarray(fig.subplots(len(result["schemes"]), len(cols), squeeze=False))
    for s, scheme in enumerate(result["schemes"]):
        for c, w in enumerate(cols):
            im = _heatmap(axes[s, c], mean[s, w], result["lrs"], result["rhos"], vmin, vmax,
                          best=optimum(mean[s, w]))
            label(axes[s, c], "base radius rho", "base learning rate eta",
                  f"{scheme}, width {result['widths'][w]}")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="training loss (mean over seeds)", shrink=0.8)


def draw_width(fig, *, result: dict, width: int, scheme: str) -> None:
    """Explorer view of one width and scheme: the training-loss heat map and the test-accuracy heat map."""
    s, w = result["schemes"].index(scheme), result["widths"].index(width)
    mean = mean_loss(result)
    acc = np.asarray(result["test_acc"], dtype=float).mean(-1)
    finite = mean[np.isfinite(mean)]
    ax1, ax2 = fig.subplots(1, 2)
    im1 = _heatmap(ax1, mean[s, w], result["lrs"], result["rhos"], float(finite.min()),
                   float(min(finite.max(), np.log(10))), best=optimum(mean[s, w]))
    fig.colorbar(im1, ax=ax1, label="training loss")
    label(ax1, "base radius rho", "base learning rate eta", f"{scheme}, width {width}: training loss")
    im2 = _heatmap(ax2, acc[s, w], result["lrs"], result["rhos"], float(acc.min()), float(acc.max()),
                   fmt="{:.3f}", cmap="viridis", best=np.unravel_index(int(np.argmax(acc[s, w])), acc[s, w].shape))
    fig.colorbar(im2, ax=ax2, label="test accuracy")
    label(ax2, "base radius rho", "base learning rate eta", f"{scheme}, width {width}: test accuracy")


# ----------------------------------------------------------------------------- exercises

def mup2_rho_factors_reference(ratio: float) -> tuple[float, float, float]:
    """The exercise's reference: muP^2's (input, hidden, output) rho multipliers, (r, 1, 1/r)."""
    return mup2_rho_factors(ratio)


def grid_argmin_reference(grid) -> tuple[int, int]:
    """(row, column) of the smallest finite entry of a 2-D grid (inf = diverged); ties: first in row-major order."""
    return optimum(grid)


def _grid_cases():
    gen = np.random.default_rng(7)
    return [(gen.random((4, 3)),), ([[0.5, 0.1], [0.1, 0.2]],), ([[0.3]],), ([[math.inf, 0.4], [0.2, math.inf]],),
            (gen.random((2, 5)),)]


def check_exercise_rho_factors(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: muP^2's per-layer rho multipliers (input, hidden, output) at width ratio r."""
    return check_exercise("muP^2 per-layer rho factors", attempt, mup2_rho_factors_reference,
                          [(1.0,), (4.0,), (16.0,), (0.5,)],
                          hint="rho_l = r^{-(d + d_l)} with d = -1/2 and d_l = (-1/2, 1/2, 3/2).", ctx=ctx)


def check_exercise_argmin(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: the (row, column) of the lowest finite loss of an (lr, rho) grid."""
    return check_exercise("argmin of an (lr, rho) grid", attempt, grid_argmin_reference, _grid_cases(),
                          compare=lambda got, exp: tuple(int(v) for v in got) == tuple(exp),
                          hint="replace non-finite entries by inf (np.where(np.isfinite(g), g, np.inf)); np.argmin "
                               "flattens the grid; np.unravel_index turns the flat index back into (row, column).",
                          ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SCHEME_NAMES", "TRANSFER_SCHEMES", "train_grid", "transfer_sweep",
    "transfer_summary", "lr_optima", "mean_loss", "optimum", "factor_error", "first_step_error",
    "batched_vs_optimizer", "base_identity_gap", "checks_table", "factor_rows", "optima_table", "summary_table",
    "summary_by_rho", "by_rho_table", "joint_optima", "joint_table", "rho_response_table", "draw_lr_curves",
    "draw_heatmaps", "draw_width", "check_exercise_rho_factors", "check_exercise_argmin", "cached_split",
    "resolve_dataset", "figure", "label", "explore", "show_source", "table", "load_average",
]
