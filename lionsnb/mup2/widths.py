"""Notebook 1 of the muP^2 series: how far SAM's perturbation reaches into each layer as width grows."""
from __future__ import annotations

import html

import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.mup2.model import (  # noqa: F401
    EXPECTED_SLOPES,
    SCHEMES,
    WidthMLP,
    batch,
    fit_slope,
    layerwise_step_error,
    perturbation_curves,
    perturbation_slopes,
)
from lionsnb.mup2.scaling import LAYERS, mup2_rho_factors, scaling_table, table_rows
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label  # noqa: F401  (re-exported for the notebook)
from lionsnb.widgets import explore  # noqa: F401

SPEC = MethodSpec(
    name="mup2.widths",
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


def width_ticks(ax, widths) -> None:
    """Label a log-scaled width axis with the widths themselves (no overlapping minor labels)."""
    ax.set_xticks(list(widths), [str(w) for w in widths], fontsize=7)
    ax.minorticks_off()


def table_html(tables: dict[str, dict]) -> str:
    """An HTML table of per-layer factors for several (name -> scaling_table) entries."""
    head = "<tr><th>scheme</th><th>layer</th><th>init std</th><th>lr</th><th>rho</th><th>grad-norm weight</th></tr>"
    rows = []
    for name, table in tables.items():
        for row in table_rows(table):
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{row['layer']}</td><td>{row['init_std']:.4g}</td>"
                        f"<td>{row['lr']:.4g}</td><td>{row['rho']:.4g}</td><td>{row['gradnorm']:.4g}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def all_curves(schemes, widths, seeds) -> dict:
    """Per-layer RMS and logit effects for each scheme, width and seed (mean over seeds is what is plotted)."""
    from tqdm.auto import tqdm

    out = {}
    for scheme in tqdm(list(schemes), desc="schemes", leave=False):
        runs = [perturbation_curves(scheme, widths, seed=s) for s in seeds]
        out[scheme] = {metric: {layer: torch.tensor([r[metric][layer] for r in runs]).mean(0)
                                for layer in LAYERS} for metric in ("rms", "logits")}
    return out


def slopes_of(curves: dict, widths, metric: str = "rms") -> dict[str, dict[str, float]]:
    return {scheme: {layer: fit_slope(widths, c[metric][layer].tolist()) for layer in LAYERS}
            for scheme, c in curves.items()}


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
    cases = [(layer, r) for layer in LAYERS for r in (1.0, 4.0, 16.0)]
    return check_exercise("muP^2 rho factors", attempt, rho_factor_reference, cases,
                          hint="compare with m.scaling_table('mup2', width=r * 64, base_width=64).", ctx=ctx)


def check_exercise_slope(attempt, ctx=None) -> ExerciseResult:
    cases = [([1.0, 2.0, 4.0, 8.0], [5.0, 2.5, 1.25, 0.625]), ([128, 256, 512], [1.0, 1.41, 2.0])]
    return check_exercise("log-log slope", attempt, fit_slope, cases,
                          compare=lambda got, exp: abs(float(got) - exp) < 1e-6,
                          hint="fit a straight line to (log n, log value): numpy.polyfit(..., 1)[0].", ctx=ctx)


__all__ = ["SPEC", "setup", "EXPECTED_SLOPES", "SCHEMES", "TITLES", "table_html", "all_curves", "slopes_of",
           "draw_scheme", "draw_comparison", "width_ticks", "layerwise_step_error", "feature_updates", "check_exercise_rho_factor", "check_exercise_slope",
           "scaling_table", "fit_slope", "perturbation_slopes", "figure", "label", "explore", "LAYERS"]

