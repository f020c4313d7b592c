"""Figures of the unlearning series (matplotlib; every ``draw_*`` fills a given figure or sub-figure)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lionsnb.plotting import label
from lionsnb.unlearning.geometry import first_order_changes, plane_directions

METHOD_COLORS = {"GA": "tab:red", "GradDiff": "tab:orange", "KL": "tab:brown", "NPO": "tab:purple",
                 "NPO+GD": "tab:pink", "NPO+KL": "tab:gray", "NGDiff": "tab:green", "NGDiff+AutoLR": "tab:olive",
                 "target": "black", "retain": "tab:blue"}


def color(name: str) -> str:
    return METHOD_COLORS.get(name.split(" ")[0], "tab:cyan")


def draw_plane(fig, *, angle: float, ratio: float) -> None:
    """Left: g_R, g_F, their span and the cone of steps that lower L_R and raise L_F, with the steps -d of GA,
    GradDiff and NGDiff (all scaled to unit length for the picture). Right: each step's first-order change of the
    two losses."""
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    dirs = plane_directions(angle, ratio)
    g_r, g_f = dirs["g_R"], dirs["g_F"]
    # the cone of steps s with <s, g_R> <= 0 (retain loss does not rise) and <s, g_F> >= 0 (forget loss does not fall)
    theta = np.linspace(0, 2 * np.pi, 721)[:-1]
    pts = np.stack([np.cos(theta), np.sin(theta)], 1)
    ok = (pts @ g_r <= 1e-12) & (pts @ g_f >= -1e-12)
    if ok.any() and not ok.all():
        start = int(np.argmin(ok))  # roll so that the (convex, hence contiguous) arc does not wrap around
        arc = np.roll(theta, -start)[np.roll(ok, -start)]
        xs = np.concatenate([[0.0], 1.6 * np.cos(arc), [0.0]])
        ys = np.concatenate([[0.0], 1.6 * np.sin(arc), [0.0]])
        ax.fill(xs, ys, color="tab:green", alpha=0.15, lw=0, label="cone: L_R down, L_F up")
        ax.legend(fontsize=7, loc="lower left")
    scale = 1.4 / max(np.linalg.norm(g_r), np.linalg.norm(g_f))
    for vec, name, col in ((g_r, "g_R", "tab:blue"), (g_f, "g_F", "tab:red")):
        ax.annotate("", xy=vec * scale, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color=col, lw=1.5))
        ax.text(*(vec * scale * 1.08), name, color=col, fontsize=9)
    for name in ("GA", "GradDiff", "NGDiff"):
        step = -dirs[name]
        n = np.linalg.norm(step)
        if n > 0:
            step = step / n
            ax.annotate("", xy=step, xytext=(0, 0),
                        arrowprops=dict(arrowstyle="-|>", color=color(name), lw=2.2, ls="--" if name == "GA" else "-"))
            ax.text(*(step * 1.12), name, color=color(name), fontsize=9, ha="center")
    ax.set_xlim(-1.8, 1.8)
    ax.set_ylim(-1.8, 1.8)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.5)
    ax.axvline(0, color="0.85", lw=0.5)
    label(ax, "direction of g_R", "orthogonal direction", f"angle {angle:g} deg, ||g_F||/||g_R|| = {ratio:g}")
    ax.title.set_fontsize(9)
    ch = first_order_changes(angle, ratio)
    names = list(ch)
    x = np.arange(len(names))
    bx.bar(x - 0.2, [ch[n][0] for n in names], 0.4, color="tab:blue", label="change of L_R")
    bx.bar(x + 0.2, [ch[n][1] for n in names], 0.4, color="tab:red", label="change of L_F")
    bx.axhline(0, color="black", lw=0.6)
    bx.set_xticks(x, names)
    label(bx, "method (step -d, first order)", "loss change per unit step", "green cone: L_R down and L_F up")
    bx.title.set_fontsize(9)
    bx.legend(fontsize=7)


def draw_plane_sweep(fig, *, sweep: Mapping[str, Any]) -> None:
    """Where each method's step raises the retain loss to first order, over (angle, ||g_F||/||g_R||)."""
    angles, ratios = np.asarray(sweep["angles"]), np.asarray(sweep["ratios"])
    axes = fig.subplots(1, 2, sharey=True)
    for ax, name in zip(axes, ("GradDiff", "NGDiff")):
        dl = np.asarray(sweep[name])
        im = ax.pcolormesh(angles, ratios, (dl > 1e-12).T.astype(float), cmap="RdYlGn_r", vmin=0, vmax=1,
                           shading="auto")
        ax.set_yscale("log")
        a = np.linspace(0, 89.9, 200)
        ax.plot(a, 1 / np.cos(np.radians(a)), "k--", lw=1, label="||g_F|| cos = ||g_R||")
        ax.set_ylim(ratios.min(), ratios.max())
        label(ax, "angle between g_R and g_F (deg)", "||g_F|| / ||g_R||" if name == "GradDiff" else "",
              f"{name}: red = retain loss rises")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="lower left")
    fig.colorbar(im, ax=axes, shrink=0.7, label="retain loss rises (1) or not (0)")


def draw_gradient_scatter(fig, *, pairs: Mapping[str, Mapping[str, Any]]) -> None:
    """Measured (cos(g_R, g_F), ||g_F|| / ||g_R||) of batch pairs, per model, with GradDiff's boundary ratio cos = 1."""
    ax = fig.subplots()
    for name, p in pairs.items():
        ax.scatter(np.asarray(p["cos"]), np.asarray(p["norm_ratio"]), s=16, label=name, alpha=0.8)
    ratios = np.concatenate([np.asarray(p["norm_ratio"], dtype=float) for p in pairs.values()])
    lo, hi = ratios.min() / 1.5, max(ratios.max() * 1.5, 3.0)
    c = np.linspace(1 / hi, 1, 100)
    ax.plot(c, 1 / c, "k--", lw=1, label="GradDiff boundary: ratio x cos = 1")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xlim(-1, 1)
    label(ax, "cos(g_R, g_F)", "||g_F|| / ||g_R||", "real gradients of the tiny GPT, one point per batch pair")
    ax.legend(fontsize=7)


def draw_curves(fig, *, runs: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = ("loss_forget", "loss_retain"),
                titles: Sequence[str] | None = None, log: Sequence[bool] | None = None, ylabels=None) -> None:
    """One panel per log key, one line per run (a run is an ``as_dict()`` of the trainer's result)."""
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for i, (ax, key) in enumerate(zip(axes, keys)):
        for name, run in runs.items():
            y = np.asarray(run["logs"][key], dtype=float)
            ax.plot(np.arange(len(y)), y, color=color(name), label=name, lw=1.4)
            if run.get("diverged_step", -1) >= 0:
                ax.plot(len(y) - 1, y[-1], "x", color=color(name), ms=8)
        if log is not None and log[i]:
            ax.set_yscale("log")
        label(ax, "unlearning step", ylabels[i] if ylabels else key, titles[i] if titles else None)
        if ax.get_title():
            ax.title.set_fontsize(9)
    axes[0].legend(fontsize=7)
