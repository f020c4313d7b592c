"""Figures of the start-here notebook.  Each ``draw_*`` function draws one point of a
precomputed sweep into a figure, so the same code makes the static figure and the
widget frames (see :mod:`lionsnb.widgets`)."""
from __future__ import annotations

import math

import torch

from lionsnb.plotting import colors, label
from lionsnb.sharpness.surfaces import TwoBasinSurface

OUTCOME_TEXT = {
    "sharp": "converged to the SHARP minimum",
    "flat": "converged to the FLAT minimum",
    "oscillating": "bounces inside a basin without converging",
    "plateau": "stalled on the plateau",
    "wandering": "was thrown out of the basins",
}


def _contours(ax, surface: TwoBasinSurface, n: int = 121, Z: torch.Tensor | None = None):
    X, Y, L = surface.grid(n)
    Z = L if Z is None else Z
    cs = ax.contourf(X.numpy(), Y.numpy(), Z.numpy(), levels=30, cmap="viridis")
    for which, marker in (("sharp", "*"), ("flat", "o")):
        m = surface.minimum(which)
        ax.plot(m[0], m[1], marker, color="white", ms=11, mec="black", label=f"{which} minimum")
    label(ax, "$w_1$", "$w_2$")
    return cs


def draw_lr_run(fig, *, lr: float, runs: dict, surface: TwoBasinSurface, grid_points: int = 121) -> None:
    """Left: the GD trajectory for ``lr`` on the contour plot.  Right: its loss per step."""
    run = runs[lr]
    ax1, ax2 = fig.subplots(1, 2)
    _contours(ax1, surface, grid_points)
    path = run["path"].numpy()
    ax1.plot(path[:, 0], path[:, 1], ".-", color="tab:red", lw=0.8, ms=3, label="GD iterates")
    ax1.set_xlim(-2.5, 4.0)
    ax1.set_ylim(-3.0, 3.0)
    ax1.legend(loc="lower right", fontsize=7)
    ax1.set_title(f"lr = {lr:g}: {OUTCOME_TEXT[run['outcome']]}", fontsize=9)
    ax2.plot(run["loss"].numpy(), color="tab:red")
    label(ax2, "step", "loss L(w)", f"final sharpness {run['final_sharpness']:.2f}; lr x sharpness = "
                                     f"{lr * run['final_sharpness']:.2f}")
    ax2.title.set_fontsize(9)


def draw_stability(fig, *, runs: dict, sharp_lambda: float) -> None:
    """lr x lambda_max at the end of every run, with the stability line lr x lambda = 2."""
    ax = fig.subplots()
    styles = {"sharp": ("*", "tab:blue"), "flat": ("o", "tab:green"), "oscillating": ("x", "tab:orange"),
              "plateau": ("s", "tab:gray"), "wandering": ("v", "tab:gray")}
    seen = set()
    for lr, run in runs.items():
        marker, color = styles[run["outcome"]]
        ax.plot(lr, lr * sharp_lambda, marker, color=color, ms=9,
                label=None if run["outcome"] in seen else run["outcome"])
        seen.add(run["outcome"])
    ax.axhline(2.0, color="black", ls="--", lw=1, label="lr x lambda = 2")
    ax.axvline(2 / sharp_lambda, color="black", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    label(ax, "learning rate", "lr x sharpness of the sharp minimum",
          "Where GD ends, by learning rate (start: next to the sharp minimum)")


def draw_sam(fig, *, rho: float, landscapes: dict, curves: dict, surface: TwoBasinSurface,
             grid_points: int = 121) -> None:
    """Left: SAM's worst-case landscape L_rho.  Right: worst-case loss at both minima vs rho."""
    ax1, ax2 = fig.subplots(1, 2)
    cs = _contours(ax1, surface, grid_points, landscapes[rho])
    fig.colorbar(cs, ax=ax1, label="worst-case loss")
    ax1.set_title(f"$L_\\rho(w)=\\max_{{\\|e\\|\\leq\\rho}} L(w+e)$, rho = {rho:g}", fontsize=9)
    for which, color in (("sharp", "tab:blue"), ("flat", "tab:green")):
        ax2.plot(curves["rho"], curves[which], color=color, label=f"{which}: measured")
        ax2.plot(curves["rho"], curves[which + "_quadratic"], color=color, ls="--",
                 label=f"{which}: $L^* + \\lambda\\rho^2/2$")
    ax2.axvline(rho, color="black", lw=1)
    ax2.set_ylim(min(curves["sharp"]) - 0.05, 1.05)
    ax2.legend(fontsize=7)
    label(ax2, "perturbation radius rho", "worst-case loss at the minimum")


def draw_mlp_runs(fig, *, mlp_runs: dict) -> None:
    """Sharpness during full-batch GD for each learning rate (with its 2/lr line), and test accuracy."""
    ax1, ax2 = fig.subplots(1, 2)
    for (lr, run), color in zip(sorted(mlp_runs.items()), colors(len(mlp_runs))):
        label_ = f"lr = {lr:g}" + (" (diverged)" if run["diverged"] else "")
        ax1.plot(run["step"], run["sharpness"], color=color, label=label_)
        ax1.axhline(2 / lr, color=color, ls="--", lw=0.8)
        ax2.plot(run["step"], run["test_acc"], color=color, label=f"lr = {lr:g}")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    label(ax1, "GD step", "sharpness $\\lambda_{max}$ (dashed: 2 / lr)", "Sharpness of the MLP during training")
    label(ax2, "GD step", "test accuracy", "Test accuracy")
    ax2.legend(fontsize=8)


def draw_slices(fig, *, rho: float, slices: dict) -> None:
    """Training loss along the top Hessian eigenvector around each trained MLP, within |t| <= rho."""
    ax1, ax2 = fig.subplots(1, 2)
    for (lr, sl), color in zip(sorted(slices.items()), ("tab:blue", "tab:green", "tab:orange", "tab:red")):
        t, loss = sl["t"].numpy(), sl["along_top_eigenvector"].numpy()
        keep = abs(t) <= rho + 1e-12 if rho > 0 else abs(t) <= t.max() / 20
        ax1.plot(t[keep], loss[keep] - sl["base_loss"], color=color,
                 label=f"lr = {lr:g} (sharpness {sl['sharpness']:.2f})")
        ax2.plot(sl["rho"], sl["sam_increase"], "o-", color=color, label=f"lr = {lr:g}")
    ax2.axvline(rho, color="black", lw=1)
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    label(ax1, "t (step along the top eigenvector)", "L(w + t v) - L(w)", f"Loss slice, |t| <= {rho:g}")
    label(ax2, "rho", "L(w + rho g/||g||) - L(w)", "SAM's first-order worst-case increase")


def finite_or(value: float, default: float = -1.0) -> float:
    """Metrics must be finite: map inf/nan to ``default`` (documented in the notebook)."""
    return value if math.isfinite(value) else default
