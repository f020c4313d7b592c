"""Backs ``notebooks/mup2/01_widths.ipynb``: how far SAM's perturbation reaches into each layer as width grows.

The method lives in the core modules of :mod:`lionsnb.mup2` (the width exponents in :mod:`.scaling`, the width MLP,
the per-layer SAM groups and the perturbation effects in :mod:`.model`); this module arranges them for the notebook:
the spec, cached sweeps, tables, figures and exercise checks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.mup2.model import (
    EXPECTED_SLOPES,
    SCHEMES,
    WidthMLP,
    batch,
    fit_slope,
    layerwise_step_error,
    make_sam,
    param_groups,
    perturbation_curves,
    perturbation_slopes,
)
from lionsnb.mup2.scaling import CONVENTION, LAYERS, mup2_rho_factors, scaling_table, table_rows
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress
from lionsnb.sam.optim import SAM
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="mup2.nb01_widths",
    title="muP^2 1: SAM's perturbation against width, layer by layer",
    profiles={
        "smoke": dict(widths=(128, 256, 512, 1024), seeds=(0,), feature_widths=(128, 256, 512, 1024)),
        "teach": dict(widths=(128, 256, 512, 1024, 2048, 4096), seeds=(0, 1, 2),
                      feature_widths=(128, 256, 512, 1024, 2048)),
        "full": dict(widths=(128, 256, 512, 1024, 2048, 4096, 8192), seeds=(0, 1, 2, 3, 4),
                     feature_widths=(128, 256, 512, 1024, 2048, 4096)),
    },
    knobs={
        "scheme": Knob("mup2", "the SAM scaling shown first", str, choices=tuple(SCHEMES)),
        "width": Knob(1024, "width of the factor table", int, low=1, high=65536),
        "base_width": Knob(64, "base width n0 (every factor is 1 there)", int, low=1, high=65536),
    },
)
setup = setup_for(SPEC)

TITLES = {
    "sp_naive": "SP, same rho everywhere", "mup_naive": "muP, same rho everywhere",
    "mup_global": "muP, global rho n^-1/2", "mup2": "muP^2 (layerwise rho)",
    "mup2_independent": "muP^2, independent grad norms", "asam_elementwise": "ASAM elementwise, rho n^+1/2",
    "asam_elementwise_bcd": "ASAM elementwise, rho n^-1/2", "asam_layerwise": "ASAM layerwise",
}
COLORS = {"input": "tab:blue", "hidden": "tab:green", "output": "tab:red"}
#: the rows of the factor table: label -> (parameterisation, rho scaling, base optimiser)
TABLE_SCHEMES = {"SP": ("sp", None, "sgd"), "muP, naive rho": ("mup", None, "sgd"),
                 "muP, global rho": ("mup", "global", "sgd"), "muP^2": ("mup2", None, "sgd"),
                 "muP^2, Adam (derived)": ("mup2", None, "adam")}

#: model answers of the think exercises (for teachers; `lionsnb answers mup2_widths` prints them)
MODEL_ANSWERS = {
    3: "Because a parameterisation is a choice of coordinates, and SAM's ball is Euclidean in the stored "
       "coordinates. The mup package stores the same network differently: its readout multiplies the output by "
       "1/width_mult in the forward pass (mup/layer.py, MuReadout), and MuSGD rescales the learning rates of "
       "vector-like parameters (mup/optim.py). The functions and the training dynamics are the same as in the "
       "multiplier-free bcd form used here, but the gradients of the stored weights differ by those multipliers, "
       "and so does which layer dominates ||g|| and how much a perturbation of a given norm changes each layer's "
       "output. A perturbation of the stored readout weights is multiplied by 1/width_mult before it reaches the "
       "logits, so in that convention naive SAM's readout effect shrinks like 1/n instead of growing, and the "
       "hidden layers are the ones left effectively perturbed. Both statements are about naive (and global) SAM in "
       "their own coordinates; the paper's 'only the last layer' refers to the multiplier-free bcd form. muP^2's "
       "point survives the change of coordinates: scaling each layer's radius (in the mup convention, by the lr "
       "multiplier MuSGD gives that layer) makes every layer effectively perturbed in either form.",
}


def width_ticks(ax, widths) -> None:
    """Label a log-scaled width axis with the widths themselves (no overlapping minor labels)."""
    ax.set_xticks(list(widths), [str(w) for w in widths], fontsize=7)
    ax.minorticks_off()


def factor_tables(width: int, base_width: int) -> dict[str, dict]:
    """The factor table of every row of :data:`TABLE_SCHEMES` at ``width`` (base ``base_width``)."""
    return {name: scaling_table(p, optimizer=opt, width=width, base_width=base_width, rho_scaling=rs)
            for name, (p, rs, opt) in TABLE_SCHEMES.items()}


def factor_table(tables: dict[str, dict], width: int, base_width: int):
    """Per-layer multipliers of init std, lr, rho and gradient-norm weight for several schemes, as one table."""
    names = {"init_std": "init std x", "lr": "lr x", "rho": "rho x", "gradnorm": "grad-norm weight s_l"}
    rows = [{"scheme": name, "layer": row["layer"], **{names[k]: row[k] for k in names}}
            for name, t in tables.items() for row in table_rows(t)]
    return table(rows,
                 title=f"Width {width}, base width {base_width} (r = {width / base_width:g}); {CONVENTION}")


def all_curves(schemes, widths, seeds) -> dict:
    """Per-layer RMS and logit effects for each scheme, width and seed (mean over seeds is what is plotted)."""
    out = {}
    for scheme in progress(list(schemes), desc="schemes", unit="scheme"):
        runs = [perturbation_curves(scheme, widths, seed=s) for s in seeds]
        out[scheme] = {metric: {layer: torch.tensor([r[metric][layer] for r in runs]).mean(0)
                                for layer in LAYERS} for metric in ("rms", "logits")}
    return out


def slopes_of(curves: dict, widths, metric: str = "rms") -> dict[str, dict[str, float]]:
    """Log-log slope against width of every layer's effect, per scheme."""
    return {scheme: {layer: fit_slope(widths, c[metric][layer].tolist()) for layer in LAYERS}
            for scheme, c in curves.items()}


def slopes_table(slopes: dict, logit_slopes: dict | None = None):
    """Measured slopes per scheme and layer next to the expected ones (when derived)."""
    rows = []
    for scheme, s in slopes.items():
        expected = EXPECTED_SLOPES.get(scheme)
        row = {"scheme": TITLES[scheme], **{f"{k} (RMS)": v for k, v in s.items()},
               "expected (input, hidden, output)": list(expected) if expected else "no prediction"}
        if logit_slopes is not None:
            row.update({f"{k} (logits)": v for k, v in logit_slopes[scheme].items()})
        rows.append(row)
    return table(rows, title="Log-log slopes of each layer's effective perturbation against width", digits=3)


def output_share(curves: dict, widths, scheme: str = "mup_global") -> dict[int, float]:
    """The output layer's share of the summed logit changes (one layer perturbed at a time), per width."""
    c = curves[scheme]["logits"]
    return {w: c["output"][i].item() / sum(c[k][i].item() for k in LAYERS) for i, w in enumerate(widths)}


def cnn_slopes(schemes, widths, seed: int = 0) -> dict[str, dict[str, float]]:
    """RMS slopes of the small 1-D CNN for each scheme."""
    return {s: perturbation_slopes(s, widths, seed=seed, model="cnn") for s in schemes}


def feature_slopes(widths, seed: int = 0) -> dict:
    """After one SGD step: RMS of Delta W^l x^{l-1} per layer and width, and its slope, for SP and muP."""
    features = {p: feature_updates(p, widths, seed=seed) for p in ("sp", "mup")}
    return {"features": features,
            "slopes": {p: {k: fit_slope(widths, v) for k, v in f.items()} for p, f in features.items()}}


def draw_features(fig, *, feats: dict, widths) -> None:
    """RMS of Delta W^l x^{l-1} after one SGD step against width, SP and muP side by side."""
    axes = fig.subplots(1, 2, sharey=True)
    for ax, p in zip(axes, ("sp", "mup")):
        for k in LAYERS:
            ax.loglog(widths, feats["features"][p][k], "o-", color=COLORS[k],
                      label=f"{k} ({feats['slopes'][p][k]:+.2f})")
        ax.legend(fontsize=8)
        width_ticks(ax, widths)
        label(ax, "width n", "RMS of $\\Delta W^l x^{l-1}$ after one step" if p == "sp" else "(same scale)",
              "SP (same lr)" if p == "sp" else "muP")


def draw_scheme(fig, *, curves: dict, widths, scheme: str, width: int | None = None, metric: str = "rms") -> None:
    """Log-log effect against width per layer for one scheme, fitted slopes in the legend."""
    ax1, ax2 = fig.subplots(1, 2)
    for layer in LAYERS:
        values = curves[scheme][metric][layer].tolist()
        slope = fit_slope(widths, values)
        ax1.loglog(widths, values, "o-", color=COLORS[layer], label=f"{layer}: slope {slope:+.2f}")
    width_ticks(ax1, widths)
    if width is not None:
        ax1.axvline(width, color="black", lw=1)
    ax1.legend(fontsize=8)
    what = "RMS of $\\epsilon^l x^{l-1}$" if metric == "rms" else "RMS change of the logits"
    label(ax1, "width n", what, TITLES[scheme])
    i = widths.index(width) if width in widths else len(widths) - 1
    values = [curves[scheme][metric][layer][i].item() for layer in LAYERS]
    ax2.bar(LAYERS, values, color=[COLORS[k] for k in LAYERS])
    ax2.set_yscale("log")
    label(ax2, "layer", what, f"at width {widths[i]}")


def draw_comparison(fig, *, curves: dict, widths, schemes=("sp_naive", "mup_global", "mup2"), metric="rms") -> None:
    """One log-log panel per scheme: the three layers' effects against width."""
    axes = fig.subplots(1, len(schemes), sharey=True)
    for ax, scheme in zip(axes, schemes):
        for layer in LAYERS:
            values = curves[scheme][metric][layer].tolist()
            ax.loglog(widths, values, "o-", color=COLORS[layer],
                      label=f"{layer} ({fit_slope(widths, values):+.2f})")
        ax.legend(fontsize=8)
        width_ticks(ax, widths)
        label(ax, "width n", "RMS of $\\epsilon^l x^{l-1}$" if ax is axes[0] else "", TITLES[scheme])
        if ax is not axes[0]:
            ax.set_ylabel("(same scale)")


def feature_updates(parameterization: str, widths, lr: float = 0.1, base_width: int = 64, seed: int = 0
                    ) -> dict[str, list[float]]:
    """After one SGD step with the parameterisation's per-layer lr: RMS of Delta W^l x^{l-1} per layer
    (how much each layer's features move), for a fresh MLP at each width."""
    x, y = batch(seed=seed)
    out = {layer: [] for layer in LAYERS}
    for width in widths:
        torch.manual_seed(seed)
        model = WidthMLP(x.shape[1], width, int(y.max()) + 1, "mup" if parameterization != "sp" else "sp",
                         base_width).double()
        table = scaling_table(parameterization, width=width, base_width=base_width)
        xd = x.double()
        acts = model.activations(xd)
        grads = torch.autograd.grad(F.cross_entropy(model(xd), y),
                                    [getattr(model, k).weight for k in LAYERS])
        for layer, g in zip(LAYERS, grads):
            delta = -lr * table["layers"][layer].lr * g
            out[layer].append(float((acts[layer].detach() @ delta.T).pow(2).mean().sqrt()))
    return out


def rho_factor_reference(layer: str, ratio: float) -> float:
    """muP^2's rho multiplier of a layer for width ratio r = n / n0 (SGD): input r, hidden 1, output 1/r."""
    return mup2_rho_factors(ratio)[LAYERS.index(layer)]


def check_exercise_rho_factor(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: muP^2's rho multiplier of one layer at width ratio r."""
    cases = [(layer, r) for layer in LAYERS for r in (1.0, 4.0, 16.0)]
    return check_exercise("muP^2 rho factors", attempt, rho_factor_reference, cases,
                          hint="compare with m.scaling_table('mup2', width=r * 64, base_width=64).", ctx=ctx)


def check_exercise_slope(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: the least-squares slope of log(values) against log(widths)."""
    cases = [([1.0, 2.0, 4.0, 8.0], [5.0, 2.5, 1.25, 0.625]), ([128, 256, 512], [1.0, 1.41, 2.0])]
    return check_exercise("log-log slope", attempt, fit_slope, cases,
                          compare=lambda got, exp: abs(float(got) - exp) < 1e-6,
                          hint="fit a straight line to (log n, log value): numpy.polyfit(..., 1)[0].", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "EXPECTED_SLOPES", "SCHEMES", "TITLES", "COLORS", "TABLE_SCHEMES",
    "factor_tables", "factor_table", "all_curves", "slopes_of", "slopes_table", "output_share", "cnn_slopes",
    "feature_slopes", "draw_features", "draw_scheme", "draw_comparison", "width_ticks", "layerwise_step_error",
    "feature_updates", "check_exercise_rho_factor", "check_exercise_slope", "scaling_table", "param_groups",
    "make_sam", "SAM", "perturbation_slopes", "figure", "label", "explore", "show_source", "table", "LAYERS",
]

