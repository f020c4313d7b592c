"""Backs ``notebooks/ssda/03_last_mile.ipynb``: the last mile. mIoU against the number of labelled target images
for source only, target only, UDA-style and SSDA with the fully supervised line; widgets over the label budget,
lambda and gamma, and the pseudo-label threshold, all from precomputed runs; pseudo-label accuracy against
confidence.

The algorithms live in the core modules of :mod:`lionsnb.ssda`; this module arranges them for the notebook.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.ssda.data import IGNORE_INDEX, DomainData
from lionsnb.ssda.experiments import (
    BENCHMARK_CHOICES,
    SETTING_NAMES,
    baseline_runs,
    closed_gap,
    notebook_recipe,
    notebook_task,
    predictions,
    pseudo_quality,
    run_grid,
    self_training_sweep,
    summary_row,
)
from lionsnb.ssda.plots import (
    colourise,
    draw_iou_bars,
    draw_label_curves,
    draw_pseudo_quality,
    overlay,
    show_image,
)
from lionsnb.ssda.train import Recipe, load_student, pseudo_label, self_train, train
from lionsnb.widgets import explore

BUDGETS = (0, 5, 10, 25, 50)
_COMMON = dict(batch_size=4, lr=0.05, pc_max_samples=256, pc_max_views=16)
#: thresholds of the pseudo-label quality curve (inference only, cheap)
CURVE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995)

SPEC = MethodSpec(
    name="ssda.nb03_last_mile",
    title="SSDA 3: the last mile (mIoU against target labels; lambda, gamma and threshold widgets)",
    profiles={
        "smoke": dict(size=24, n_source=80, n_target=100, n_val=32, steps=30, widths=(8, 16), ema_alpha=0.99,
                      budgets=(0, 5, 10), lams=(0.0, 1.0), gammas=(0.0, 0.1), thresholds=(0.9,), **_COMMON),
        "teach": dict(size=24, n_source=1000, n_target=1000, n_val=200, steps=300, widths=(8, 16), ema_alpha=0.995,
                      budgets=BUDGETS, lams=(0.0, 1.0, 3.0), gammas=(0.0, 0.1, 1.0), thresholds=(0.7, 0.9, 0.97),
                      **_COMMON),
        "full": dict(size=64, n_source=3000, n_target=2975, n_val=500, steps=4000, widths=(16, 32, 64),
                     ema_alpha=0.995, budgets=BUDGETS, lams=(0.0, 0.3, 1.0, 3.0), gammas=(0.0, 0.1, 0.3, 1.0),
                     thresholds=(0.7, 0.8, 0.9, 0.95, 0.97), **{**_COMMON, "batch_size": 8}),
    },
    knobs={
        "n_labels": Knob(10, "labelled target images of the lambda, gamma and threshold sweeps", int,
                         choices=(5, 10, 25, 50)),
        "lam": Knob(1.0, "lambda, the weight of the consistency loss (paper: 1)", float, low=0.0, high=10.0),
        "gamma": Knob(0.1, "gamma, the weight of the pixel contrast (paper: 0.1)", float, low=0.0, high=10.0),
        "threshold": Knob(0.9, "pseudo-label confidence threshold of self-training (paper: 0.9)", float, low=0.0,
                          high=1.0, high_open=True),
        "benchmark": Knob("auto", "auto (ShapesDA; GTA5 to Cityscapes in full when its folders exist), shapes, or a "
                          "real pair from local folders", str, choices=BENCHMARK_CHOICES),
    },
    datasets=(),
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "Coverage falls and precision rises with the threshold. A low threshold keeps many wrong pseudo-labels (they "
       "are trained on as if true, the student learns its own mistakes, confirmation bias); a very high one keeps "
       "only the easy pixels, mostly background and object centres, so the second round learns little that the "
       "first did not know and the rare, hard pixels (object borders, the confusable classes) stay unlabelled. "
       "The best threshold balances the two: on ShapesDA the accuracy of the kept pixels is already high at 0.9, "
       "which is why the paper's 0.9 is a reasonable default; at 0.97 the kept pixels are almost only object "
       "centres (the background far from objects is dropped), the second round has hardly any background to learn "
       "from and its mIoU collapses. Whether a confidence of 0.9 means 90 % accuracy is a calibration question: "
       "the calibration bars compare the accuracy in each confidence bin with the diagonal; for this student "
       "they sit close to it at high confidence, so the threshold can be read as an accuracy there, which is not "
       "true of every network.",
}


# ------------------------------------------------------------------------------------------------- the task

#: the profile's task (ShapesDA unless BENCHMARK names a real pair) and recipe, shared by the series' notebooks
task = notebook_task
recipe = notebook_recipe


def grids(ctx) -> dict[str, list]:
    """The swept values: the profile's grids plus the notebook's knobs."""
    k, s = ctx.knobs, ctx.sizes
    return {"budgets": sorted(set(s.budgets) | {k.n_labels}), "lams": sorted(set(s.lams) | {k.lam}),
            "gammas": sorted(set(s.gammas) | {k.gamma}), "thresholds": sorted(set(s.thresholds) | {k.threshold})}


# ----------------------------------------------------------------------------------------------- the sweeps

def label_sweep(data: DomainData, recipe: Recipe, budgets: list[int], n_labels: int, seed: int = 0,
                device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Source only, fully supervised, target only and SSDA at every budget (SSDA with 0 labels is the UDA-style
    model: source CE + consistency), and the SSL-style model (no source) at ``n_labels``."""
    runs = baseline_runs(data, recipe, [b for b in budgets if b > 0], seed, device)
    points = [{"name": f"ssda_{b}", "setting": "ssda", "n_labels": int(b)} for b in budgets]
    points.append({"name": f"ssl_{n_labels}", "setting": "ssl", "n_labels": int(n_labels)})
    runs.update(run_grid(data, points, recipe, seed, device))
    return runs


def weight_sweep(data: DomainData, recipe: Recipe, n_labels: int, lams: list[float], gammas: list[float],
                 lam: float, gamma: float, base: dict[str, Any], seed: int = 0, device: str = "cpu"
                 ) -> dict[tuple[float, float], dict[str, Any]]:
    """SSDA at ``n_labels`` for every lambda at gamma = ``gamma`` and every gamma at lambda = ``lam`` (a cross
    through the default, not the full grid); ``base`` is the run at (lam, gamma)."""
    out = {(lam, gamma): base}
    points = [(a, gamma) for a in lams if a != lam] + [(lam, g) for g in gammas if g != gamma]
    for a, g in points:
        out[(a, g)] = run_grid(data, [{"name": "x", "setting": "ssda", "n_labels": n_labels, "lam": a,
                                       "gamma": g}], recipe, seed, device)["x"]
    return out


def threshold_sweep(data: DomainData, recipe: Recipe, n_labels: int, base: dict[str, Any], thresholds: list[float],
                    seed: int = 0, device: str = "cpu") -> dict[float, dict[str, Any]]:
    """One self-training round from ``base`` at every pseudo-label threshold."""
    return self_training_sweep(data, n_labels, base, recipe, thresholds, seed, device)


def quality_curve(data: DomainData, n_labels: int, base: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    return pseudo_quality(data, n_labels, base, recipe, CURVE_THRESHOLDS)


# ------------------------------------------------------------------------------------------ tables, figures

def curves(runs: dict, budgets: list[int]) -> dict[str, list[float]]:
    pos = [b for b in budgets if b > 0]
    return {"target_only": [runs[f"target_only_{b}"]["miou"] for b in pos],
            "ssda": [runs[f"ssda_{b}"]["miou"] for b in budgets]}


def label_table(runs: dict, budgets: list[int], n_labels: int):
    src, sup = runs["source_only"]["miou"], runs["supervised"]["miou"]
    rows = []
    for b in budgets:
        row = {"labelled target images": b, "target only": runs[f"target_only_{b}"]["miou"] if b else None,
               "SSDA (0 labels: UDA-style)": runs[f"ssda_{b}"]["miou"]}
        row["SSDA gap closed"] = closed_gap(row["SSDA (0 labels: UDA-style)"], src, sup)
        row["SSDA - target only"] = row["SSDA (0 labels: UDA-style)"] - row["target only"] if b else None
        rows.append(row)
    rows.append({"labelled target images": n_labels, "target only": None,
                 "SSDA (0 labels: UDA-style)": None, "SSDA gap closed": None, "SSDA - target only": None,
                 "SSL-style (no source)": runs[f"ssl_{n_labels}"]["miou"]})
    return table(rows, title=f"mIoU on the target validation set (source only {src:.3f}, fully supervised "
                             f"{sup:.3f})")


def draw_curves(fig, runs: dict, budgets: list[int], n_labels: int) -> None:
    ax = fig.subplots()
    c = curves(runs, budgets)
    pos = [b for b in budgets if b > 0]
    ax.plot(pos, c["target_only"], "o-", color="#1f77b4", label="target only")
    ax.plot(budgets, c["ssda"], "o-", color="#d62728", label="SSDA (0 labels: UDA-style)")
    ax.plot([0], [runs["ssda_0"]["miou"]], "D", color="#9467bd", ms=9, label="UDA-style (source + CR)")
    ax.plot([n_labels], [runs[f"ssl_{n_labels}"]["miou"]], "s", color="#8c564b", ms=8, label="SSL-style (no source)")
    ax.axhline(runs["supervised"]["miou"], ls="--", color="black", label="fully supervised")
    ax.axhline(runs["source_only"]["miou"], ls=":", color="grey", label="source only")
    ax.set_xscale("symlog", linthresh=5)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_ylim(0, 1)
    label(ax, "labelled target images", "mIoU on the target validation set", "The last mile")
    ax.legend(fontsize=8, loc="lower right")


def draw_budget(fig, n_labels: int, runs: dict, data: DomainData, budgets: list[int], preds: dict) -> None:
    """Explorer frame: the curve with the budget marked, per-class IoU at that budget, two overlays."""
    gs = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    ax = fig.add_subplot(gs[0, :2])
    c = curves(runs, budgets)
    draw_label_curves(ax, budgets, {"target_only": c["target_only"], "ssda": c["ssda"]},
                      {"supervised": runs["supervised"]["miou"], "source_only": runs["source_only"]["miou"]},
                      "mIoU against labels", highlight=n_labels)
    ax2 = fig.add_subplot(gs[0, 2:])
    rows = {"source_only": runs["source_only"]["iou"].tolist()}
    if n_labels:
        rows["target_only"] = runs[f"target_only_{n_labels}"]["iou"].tolist()
    rows["ssda"] = runs[f"ssda_{n_labels}"]["iou"].tolist()
    draw_iou_bars(ax2, rows, data.class_names, f"{n_labels} labelled target images")
    for i in range(2):
        for j, key in enumerate(("target_only", "ssda")):
            axi = fig.add_subplot(gs[1, 2 * i + j])
            if key == "target_only" and not n_labels:
                key = "source_only"
            p = preds[(key, n_labels)][i]
            show_image(axi, overlay(data.target_val.images[i], p, data.num_classes),
                       f"{SETTING_NAMES[key] if key != 'ssda' else 'SSDA'}", ylabel=f"image {i + 1}" if j == 0 else " ")


def budget_predictions(data: DomainData, runs: dict, recipe: Recipe, budgets: list[int], n: int = 2) -> dict:
    images = data.target_val.images[:n]
    out = {}
    for b in budgets:
        out[("ssda", b)] = predictions(data, runs[f"ssda_{b}"], recipe, images)
        key = f"target_only_{b}" if b else "source_only"
        out[("target_only" if b else "source_only", b)] = predictions(data, runs[key], recipe, images)
    return out


def weight_table(wruns: dict, class_names):
    return table([{"lambda": a, "gamma": g, **summary_row("", r, class_names)} for (a, g), r in sorted(wruns.items())],
                 columns=["lambda", "gamma", "mIoU", *[f"IoU {c}" for c in class_names], "train s"],
                 title="SSDA with other weights (a cross through the paper's lambda = 1, gamma = 0.1)")


def draw_weights(fig, lam: float, gamma: float, wruns: dict, default: tuple[float, float], data: DomainData,
                 preds: dict) -> None:
    """Explorer frame for (lambda, gamma); combinations off the swept cross say so."""
    if (lam, gamma) not in wruns:
        ax = fig.subplots()
        ax.text(0.5, 0.5, f"lambda = {lam:g}, gamma = {gamma:g} was not trained:\nthe sweep is a cross through "
                f"lambda = {default[0]:g}, gamma = {default[1]:g}.\nMove one control at a time.", ha="center",
                va="center", fontsize=11, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        label(ax, " ", " ", "Not precomputed")
        return
    gs = fig.add_gridspec(2, 3, height_ratios=[1.2, 1])
    ax = fig.add_subplot(gs[0, :])
    r = wruns[(lam, gamma)]
    draw_iou_bars(ax, {f"ssda (lambda {default[0]:g}, gamma {default[1]:g})": wruns[default]["iou"].tolist(),
                       f"lambda {lam:g}, gamma {gamma:g}": r["iou"].tolist()}, data.class_names,
                  f"lambda = {lam:g}, gamma = {gamma:g}: mIoU {r['miou']:.3f}")
    for i in range(3):
        axi = fig.add_subplot(gs[1, i])
        show_image(axi, overlay(data.target_val.images[i], preds[(lam, gamma)][i], data.num_classes),
                   f"validation image {i + 1}", ylabel="prediction" if i == 0 else " ")


def weight_predictions(data: DomainData, wruns: dict, recipe: Recipe, n: int = 3) -> dict:
    images = data.target_val.images[:n]
    return {k: predictions(data, r, recipe, images) for k, r in wruns.items()}


def threshold_table(truns: dict, base: dict, class_names):
    rows = [{"threshold": "none (SSDA)", **summary_row("", base, class_names)}]
    for t, r in sorted(truns.items()):
        rows.append({"threshold": t, **summary_row("", r, class_names), "pseudo-label coverage":
                     r["pseudo"]["coverage"], "pseudo-label accuracy": r["pseudo"]["accuracy"]})
    return table(rows, columns=["threshold", "mIoU", *[f"IoU {c}" for c in class_names], "pseudo-label coverage",
                                "pseudo-label accuracy"], title="One self-training round per threshold")


def pseudo_maps(data: DomainData, base: dict, recipe: Recipe, thresholds: list[float], n_labels: int, n: int = 3
                ) -> dict[str, Any]:
    """Pseudo-labels of the first unlabelled target images at every threshold."""
    model = load_student(base, recipe, data.num_classes)
    idx = data.unlabelled_index(n_labels)[:n]
    images = data.target_train.images[idx]
    return {"images": images, "truth": data.target_train.labels[idx],
            "maps": {t: pseudo_label(model, images, t) for t in thresholds}}


def draw_threshold(fig, threshold: float, truns: dict, base: dict, maps: dict, data: DomainData) -> None:
    """Explorer frame: pseudo-labels at the threshold (grey = ignored) and the self-trained model's IoU."""
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 1.1])
    for i in range(3):
        ax = fig.add_subplot(gs[0, i])
        pl = maps["maps"][threshold][i]
        kept = pl != IGNORE_INDEX
        acc = float((pl[kept] == maps["truth"][i][kept]).float().mean()) if bool(kept.any()) else float("nan")
        show_image(ax, colourise(pl, data.num_classes), f"kept {float(kept.float().mean()):.0%}, right {acc:.0%}",
                   ylabel="pseudo-labels" if i == 0 else " ")
    ax = fig.add_subplot(gs[1, :])
    r = truns[threshold]
    draw_iou_bars(ax, {"ssda": base["iou"].tolist(), f"ssda+st (tau {threshold:g})": r["iou"].tolist()},
                  data.class_names, f"After one self-training round at tau = {threshold:g}: mIoU {r['miou']:.3f} "
                  f"(before {base['miou']:.3f})")


def draw_quality(fig, quality: dict, threshold: float, class_names) -> None:
    axes = fig.subplots(1, 2)
    draw_pseudo_quality(axes[0], quality, threshold, class_names)
    bins = quality["bins"]
    axes[1].bar(bins["confidence"], bins["accuracy"], width=0.06, color="#d62728", alpha=0.7,
                label="accuracy in the bin")
    axes[1].plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axes[1].plot(bins["confidence"], bins["share"], "s:", color="#1f77b4", label="share of pixels in the bin")
    axes[1].set_xlim(0.2, 1.0)
    axes[1].set_ylim(0, 1.02)
    label(axes[1], "max softmax probability (bin centre)", "fraction", "Calibration of the student")
    axes[1].legend(fontsize=8, loc="upper left")


def pseudo_check() -> dict[str, Any]:
    """pseudo_label on a model with fixed logits: kept exactly where the max probability is above tau."""

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            # pixel 0: p = 0.98; pixel 1: two classes tied, p = 0.5 exactly; pixel 2: uniform, p = 0.25
            self.logits = torch.tensor([[[[5.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, -np.inf, 0.0]],
                                         [[0.0, -np.inf, 0.0]]]], dtype=torch.float64)

        def forward(self, x):
            return self.logits

    probs = torch.softmax(Fixed().logits, 1).max(1).values[0, 0]
    images = torch.zeros(1, 3, 1, 3)
    rows = [{"threshold": t, "pseudo-labels": pseudo_label(Fixed(), images, threshold=t)[0, 0].tolist()}
            for t in (0.2, 0.25, 0.5, 0.9, 0.99)]
    return {"max probabilities": [round(float(p), 4) for p in probs], "rows": rows}


def quality_at(quality: dict, t: float) -> tuple[float, float]:
    i = int(np.argmin([abs(x - t) for x in quality["threshold"]]))
    return quality["coverage"][i], quality["accuracy"][i]


def increasing_share(values: list[float]) -> float:
    """Share of consecutive budgets where the curve goes up."""
    steps = [b > a for a, b in zip(values[:-1], values[1:])]
    return float(np.mean(steps)) if steps else float("nan")


# ------------------------------------------------------------------------------------------------ exercises

def closed_gap_reference(miou: float, source_only: float, supervised: float) -> float:
    return closed_gap(miou, source_only, supervised)


def check_exercise_closed_gap(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: the share of the source-to-supervised gap that a model closes."""
    cases = [(0.5, 0.3, 0.7), (0.3, 0.3, 0.7), (0.8, 0.3, 0.7), (0.2, 0.3, 0.7)]
    return check_exercise("gap closed", attempt, closed_gap_reference, cases,
                          compare=lambda g, e: abs(float(g) - e) < 1e-9,
                          hint="(miou - source_only) / (supervised - source_only); it can exceed 1 or go below 0.",
                          ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "BUDGETS", "CURVE_THRESHOLDS", "task", "recipe", "grids", "label_sweep",
    "weight_sweep", "threshold_sweep", "quality_curve", "curves", "label_table", "draw_curves", "draw_budget",
    "budget_predictions", "weight_table", "draw_weights", "weight_predictions", "threshold_table", "pseudo_maps",
    "draw_threshold", "draw_quality", "quality_at", "increasing_share", "check_exercise_closed_gap", "closed_gap",
    "pseudo_label", "self_train", "train", "figure", "table", "show_source", "explore", "pseudo_check",
]
