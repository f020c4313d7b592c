"""Notebook 2 of the muP^2 series: does the joint optimum (lr, rho) of SAM transfer across widths?

Haas et al. (NeurIPS 2024, arXiv 2411.00075, Fig. 1) train a 3-layer MLP on CIFAR-10 over an (lr, rho) grid at
several widths: under SP with naive rho the optimum drifts with width, under muP^2 (muP plus layerwise rho and
Algorithm 1's gradient-norm weights) it stays put.  This module runs the same sweep at any size: SP-SAM and
muP^2-SAM share the model, the data order and the initial draws, and differ only in the factor table of
:func:`lionsnb.mup2.scaling_table` (all factors are 1 at the base width, so there the two are the same run).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.mup2.model import WidthMLP, layerwise_step_error, make_sam
from lionsnb.mup2.scaling import LAYERS, mup2_rho_factors, scaling_table, table_rows  # noqa: F401  (re-exported)
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label  # noqa: F401  (re-exported for the notebook)
from lionsnb.sam.data import DATASETS, cached_split, resolve_dataset  # noqa: F401
from lionsnb.sam.steps import sam_step
from lionsnb.training import fit, sgd_step
from lionsnb.widgets import explore  # noqa: F401

#: the two parameterisations compared: notebook label -> (scaling_table name, WidthMLP init)
SCHEMES = {"SP-SAM": ("sp", "sp"), "muP2-SAM": ("mup2", "mup")}

SPEC = MethodSpec(
    name="mup2.transfer",
    title="muP^2 2: transfer of the joint optimum (lr, rho) across widths, SP-SAM vs muP^2-SAM",
    profiles={
        "smoke": dict(n_train=500, widths=(32, 128), base_width=32, lrs=(0.1, 0.4, 1.6), rhos=(0.0, 0.1),
                      epochs=1, batch_size=128, seeds=(0,)),
        "teach": dict(n_train=None, widths=(32, 128, 512), base_width=32, lrs=(0.1, 0.2, 0.4, 0.8, 1.6),
                      rhos=(0.0, 0.05, 0.1, 0.2, 0.4), epochs=5, batch_size=128, seeds=(0,)),
        "full": dict(n_train=None, widths=(256, 1024, 4096), base_width=256,
                     lrs=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6), rhos=(0.0, 0.025, 0.05, 0.1, 0.2, 0.4),
                     epochs=10, batch_size=128, seeds=(0, 1)),
    },
    knobs={
        "dataset": Knob("auto", "auto (MNIST-1D; CIFAR-10 in the full profile when present), mnist1d, digits or "
                        "cifar10", str, choices=DATASETS),
        "momentum": Knob(0.0, "SGD momentum of the base optimiser (the paper's MLPs use 0)", float, low=0.0,
                         high=1.0, high_open=True),
        "contour": Knob(0.01, "accuracy drop below the optimum outlined in the heat maps", float, low=0.0,
                        high=0.5, low_open=True),
    },
    datasets=(),
)
setup = setup_for(SPEC)


# ----------------------------------------------------------------------------- training

def train_point(data, scheme: str, width: int, lr: float, rho: float, *, base_width: int, epochs: int,
                batch_size: int, seed: int = 0, momentum: float = 0.0, device="cpu") -> dict:
    """Train one width-``width`` MLP with SAM under ``scheme`` (a key of :data:`SCHEMES`) and return its
    final test accuracy, final training loss and whether training diverged.

    The model is initialised from ``torch.manual_seed(seed)`` and the data order from ``seed``, so two schemes
    with the same seed start from the same draws.  rho = 0 is SGD: SAM with a zero perturbation gives the same
    update, so that case uses one gradient per step instead of two.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if lr <= 0 or rho < 0:
        raise ValueError(f"need lr > 0 and rho >= 0, got lr={lr}, rho={rho}")
    table_name, init = SCHEMES[scheme]
    d_in = int(np.prod(tuple(data.x_train.shape[1:])))
    torch.manual_seed(seed)
    model = WidthMLP(d_in, width, data.n_classes, init, base_width).to(device)
    table = scaling_table(table_name, width=width, base_width=base_width)
    opt = make_sam(model, table, lr=lr, rho=rho, momentum=momentum)
    step = sam_step if rho > 0 else (lambda mdl, o, x, y, loss_fn: sgd_step(mdl, o.base_optimizer, x, y, loss_fn))
    start = time.perf_counter()
    hist = fit(model, data.x_train, data.y_train, epochs=epochs, optimizer=opt, step=step, loss_fn=F.cross_entropy,
               batch_size=batch_size, x_test=data.x_test, y_test=data.y_test, seed=seed, progress=False)
    loss = hist.train_loss[-1]
    diverged = not math.isfinite(loss)
    # a diverged network's NaN logits give an arbitrary argmax: count it as chance
    acc = 1.0 / data.n_classes if diverged else float(hist.test_acc[-1])
    return {"acc": acc, "train_loss": loss if not diverged else float("inf"), "diverged": diverged,
            "seconds": time.perf_counter() - start}


def sweep(data, *, widths, lrs, rhos, base_width: int, epochs: int, batch_size: int, seeds=(0,),
          momentum: float = 0.0, schemes=tuple(SCHEMES), device="cpu", share_base: bool = False,
          progress: bool = True) -> dict:
    """Test accuracy on the grid schemes x widths x lrs x rhos (mean over ``seeds``).

    ``share_base=True`` trains the base width once and copies it to the other schemes: every factor is 1 there,
    so the runs are identical (:func:`base_identity_gap` checks it on one point; the tests on a whole grid).
    Returns plain lists (cacheable): ``acc[s][w][i][j]`` for scheme s, width w, lr i, rho j, the per-seed
    values, the divergence counts and the seconds per run.
    """
    from tqdm.auto import tqdm

    if not widths or not lrs or not rhos or not seeds:
        raise ValueError("widths, lrs, rhos and seeds must each hold at least one value")
    if min(lrs) <= 0 or min(rhos) < 0:
        raise ValueError(f"lrs must be > 0 and rhos >= 0, got {lrs}, {rhos}")
    shape = (len(schemes), len(widths), len(lrs), len(rhos))
    acc = np.zeros(shape + (len(seeds),))
    diverged = np.zeros(shape, dtype=int)
    seconds = np.zeros(shape)
    shared = share_base and base_width in widths and len(schemes) > 1
    total = int(np.prod(shape)) * len(seeds) - (len(schemes) - 1) * len(lrs) * len(rhos) * len(seeds) * shared
    bar = tqdm(total=total, desc="(lr, rho) grid", disable=not progress)
    for s, scheme in enumerate(schemes):
        for w, width in enumerate(widths):
            if shared and s > 0 and width == base_width:
                acc[s, w], diverged[s, w] = acc[0, w], diverged[0, w]
                continue
            for i, lr in enumerate(lrs):
                for j, rho in enumerate(rhos):
                    for k, seed in enumerate(seeds):
                        run = train_point(data, scheme, width, lr, rho, base_width=base_width, epochs=epochs,
                                          batch_size=batch_size, seed=seed, momentum=momentum, device=device)
                        acc[s, w, i, j, k] = run["acc"]
                        diverged[s, w, i, j] += run["diverged"]
                        seconds[s, w, i, j] += run["seconds"]
                        bar.update()
                    bar.set_postfix(scheme=scheme, width=width)
    bar.close()
    return {"schemes": list(schemes), "widths": list(widths), "lrs": list(lrs), "rhos": list(rhos),
            "seeds": list(seeds), "acc": acc.mean(-1).tolist(), "acc_seeds": acc.tolist(),
            "diverged": diverged.tolist(), "seconds": seconds.tolist()}


# ----------------------------------------------------------------------------- analysis

def grid_argmax_reference(grid) -> tuple[int, int]:
    """(row, column) of the largest entry of a 2-D grid; ties go to the first in row-major order."""
    arr = np.asarray(grid, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"need a non-empty 2-D grid, got shape {arr.shape}")
    i, j = np.unravel_index(int(np.argmax(arr)), arr.shape)
    return int(i), int(j)


def optima(result: dict) -> dict:
    """Per scheme: the optimal lr, rho and accuracy at every width, and the grid indices."""
    out = {}
    for s, scheme in enumerate(result["schemes"]):
        rows = []
        for w, width in enumerate(result["widths"]):
            i, j = grid_argmax_reference(result["acc"][s][w])
            rows.append({"width": width, "i": i, "j": j, "lr": result["lrs"][i], "rho": result["rhos"][j],
                         "acc": result["acc"][s][w][i][j],
                         "lr_at_edge": i in (0, len(result["lrs"]) - 1),
                         "rho_at_edge": j == len(result["rhos"]) - 1})
        out[scheme] = rows
    return out


def transfer_summary(result: dict) -> dict:
    """Numbers that say whether the optimum moves with width, per scheme.

    * ``spread_log2_lr``, ``spread_rho``: max - min over widths of log2(optimal lr) and of the optimal rho;
    * ``best_acc``: the best accuracy at each width;
    * ``regret``: at the largest width, best accuracy minus the accuracy at the smallest width's optimum
      (what you lose by tuning small and training large; 0 = perfect transfer).
    """
    opt = optima(result)
    out = {}
    for s, scheme in enumerate(result["schemes"]):
        rows = opt[scheme]
        log2_lr = [math.log2(r["lr"]) for r in rows]
        small, large = rows[0], rows[-1]
        transferred = result["acc"][s][len(rows) - 1][small["i"]][small["j"]]
        out[scheme] = {"spread_log2_lr": max(log2_lr) - min(log2_lr),
                       "spread_rho": max(r["rho"] for r in rows) - min(r["rho"] for r in rows),
                       "best_acc": [r["acc"] for r in rows], "regret": large["acc"] - transferred,
                       "lr_at_edge": sum(r["lr_at_edge"] for r in rows), "rho_at_edge": sum(r["rho_at_edge"] for r in rows)}
    return out


def base_identity_gap(data, lr: float, rho: float, *, base_width: int, epochs: int = 1, batch_size: int = 128,
                      seed: int = 0, device="cpu") -> float:
    """|final training loss of SP-SAM - of muP^2-SAM| at the base width for one (lr, rho): 0 when wired right."""
    runs = [train_point(data, scheme, base_width, lr, rho, base_width=base_width, epochs=epochs,
                        batch_size=batch_size, seed=seed, device=device) for scheme in SCHEMES]
    return abs(runs[0]["train_loss"] - runs[1]["train_loss"])


def base_width_gap(result: dict, base_width: int) -> float:
    """max |acc_SP - acc_muP2| over the grid at the base width (0: every factor is 1 there)."""
    if base_width not in result["widths"]:
        raise ValueError(f"the base width {base_width} is not among the widths {result['widths']}")
    w = result["widths"].index(base_width)
    a = np.asarray(result["acc"])
    return float(np.abs(a[0, w] - a[1, w]).max())


# ----------------------------------------------------------------------------- figures

def _heatmap(ax, result: dict, s: int, w: int, contour: float, vmin: float, vmax: float):
    acc = np.asarray(result["acc"][s][w])
    lrs, rhos = result["lrs"], result["rhos"]
    im = ax.imshow(acc, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    i, j = grid_argmax_reference(acc)
    if acc.shape[0] > 1 and acc.shape[1] > 1 and contour > 0:
        ax.contour(np.arange(len(rhos)), np.arange(len(lrs)), acc, levels=[acc[i, j] - contour], colors="white",
                   linewidths=1.2)
    for (a, b), v in np.ndenumerate(acc):
        ax.text(b, a - 0.22, f"{v:.3f}", ha="center", va="center", fontsize=6,
                color="black" if v > (vmin + vmax) / 2 else "white")
    ax.plot(j, i + 0.08, marker="*", color="red", markersize=13, markeredgecolor="white")
    ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos], fontsize=7)
    ax.set_yticks(range(len(lrs)), [f"{x:g}" for x in lrs], fontsize=7)
    return im


def _limits(result: dict) -> tuple[float, float]:
    a = np.asarray(result["acc"])
    return float(a.min()), float(a.max())


def draw_heatmaps(fig, *, result: dict, contour: float = 0.01) -> None:
    """One row per scheme, one column per width: test accuracy over (lr, rho), optimum starred, and the
    contour ``contour`` below the optimum in white."""
    n_s, n_w = len(result["schemes"]), len(result["widths"])
    axes = np.asarray(fig.subplots(n_s, n_w, squeeze=False))
    vmin, vmax = _limits(result)
    for s, scheme in enumerate(result["schemes"]):
        for w, width in enumerate(result["widths"]):
            im = _heatmap(axes[s, w], result, s, w, contour, vmin, vmax)
            label(axes[s, w], "rho (base radius)", "lr (base learning rate)", f"{scheme}, width {width}")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="test accuracy", shrink=0.8)


def draw_optima(fig, *, result: dict) -> None:
    """The transfer summary: optimal lr and optimal rho against width, per scheme."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    opt = optima(result)
    # the second scheme dashed with smaller markers, so that coinciding optima stay visible
    for (scheme, rows), (marker, ls, size) in zip(opt.items(), (("o", "-", 9), ("s", "--", 5))):
        widths = [r["width"] for r in rows]
        style = dict(marker=marker, ls=ls, markersize=size, label=scheme)
        ax1.plot(widths, [r["lr"] for r in rows], **style)
        ax2.plot(widths, [r["rho"] for r in rows], **style)
        ax3.plot(widths, [r["acc"] for r in rows], **style)
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
    ax1.set_yscale("log", base=2)
    ax1.set_ylim(min(result["lrs"]) / 1.5, max(result["lrs"]) * 1.5)
    ax2.set_ylim(-0.05 * max(result["rhos"]) - 1e-3, max(result["rhos"]) * 1.1 + 1e-3)
    label(ax1, "width n", "optimal lr (grid: dashed edges)", "Optimal learning rate")
    label(ax2, "width n", "optimal rho", "Optimal perturbation radius")
    label(ax3, "width n", "best test accuracy", "Best accuracy per width")
    for y in (min(result["lrs"]), max(result["lrs"])):
        ax1.axhline(y, color="gray", ls="--", lw=0.8)


def draw_width(fig, *, result: dict, width: int, scheme: str, contour: float = 0.01) -> None:
    """Explorer view: one heat map, and accuracy against lr at the optimal rho for every width of the scheme."""
    ax1, ax2 = fig.subplots(1, 2)
    s, w = result["schemes"].index(scheme), result["widths"].index(width)
    vmin, vmax = _limits(result)
    im = _heatmap(ax1, result, s, w, contour, vmin, vmax)
    fig.colorbar(im, ax=ax1, label="test accuracy", pad=0.02)
    label(ax1, "rho (base radius)", "lr (base learning rate)", f"{scheme}, width {width}")
    acc = np.asarray(result["acc"][s])
    for k, n in enumerate(result["widths"]):
        _, j = grid_argmax_reference(acc[k])
        ax2.plot(result["lrs"], acc[k][:, j], marker="o", lw=2.5 if n == width else 1,
                 label=f"width {n} (rho {result['rhos'][j]:g})")
    ax2.set_xscale("log", base=2)
    ax2.legend(fontsize=8)
    label(ax2, "lr (base learning rate)", "test accuracy", f"{scheme}: lr slice at each width's best rho")


# ----------------------------------------------------------------------------- checks and exercises

def mup2_rho_factors_reference(ratio: float) -> tuple[float, float, float]:
    """The exercise's reference: muP^2's (input, hidden, output) rho multipliers, (r, 1, 1/r)."""
    return mup2_rho_factors(ratio)


def table_rho_factors(ratio: float, base_width: int = 64) -> tuple[float, float, float]:
    """The same factors read from the package's table (for the check in the notebook)."""
    table = scaling_table("mup2", width=round(ratio * base_width), base_width=base_width)
    return tuple(table["layers"][name].rho for name in LAYERS)


def first_step_error(width: int = 256, base_width: int = 64, rho: float = 0.1, seed: int = 0) -> float:
    """max |optimizer's perturbation - Algorithm 1 by hand| for muP^2 (float64; see ``layerwise_step_error``)."""
    return layerwise_step_error(width, base_width, rho, seed)["max_error"]


def _grid_cases():
    gen = np.random.default_rng(7)
    return [(gen.random((4, 3)),), ([[0.1, 0.5], [0.5, 0.2]],), ([[0.3]],), (gen.random((2, 5)),)]


def check_exercise_rho_factors(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("muP^2 per-layer rho factors", attempt, mup2_rho_factors_reference,
                          [(1.0,), (4.0,), (16.0,), (0.5,)],
                          hint="rho_l = r^{-(d + d_l)} with d = -1/2 and d_l = (-1/2, 1/2, 3/2).", ctx=ctx)


def check_exercise_argmax(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("argmax of an (lr, rho) grid", attempt, grid_argmax_reference, _grid_cases(),
                          compare=lambda got, exp: tuple(int(v) for v in got) == tuple(exp),
                          hint="np.argmax flattens the grid; np.unravel_index turns the flat index back into "
                               "(row, column). Ties: the first in row-major order.", ctx=ctx)
