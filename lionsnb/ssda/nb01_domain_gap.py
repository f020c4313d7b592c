"""Backs ``notebooks/ssda/01_domain_gap.ipynb``: the domain gap. Source only, target only with a few labels and
the fully supervised target model on ShapesDA (or a real benchmark pair in ``full``), predictions overlaid on
images, the source model's confusions, and scikit-image photographs for a qualitative look.

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
from lionsnb.ssda.data import PALETTE, PALETTE_NAMES, SOURCE, TARGET, DomainData, make_domain, photographs
from lionsnb.ssda.experiments import (
    BENCHMARK_CHOICES,
    baseline_runs,
    closed_gap,
    notebook_recipe,
    notebook_task,
    predictions,
    summary_row,
)
from lionsnb.ssda.losses import class_weights, weighted_cross_entropy
from lionsnb.ssda.metrics import confusion_matrix, iou_per_class, mean_iou
from lionsnb.ssda.plots import draw_domains, draw_iou_bars, draw_predictions, overlay, show_image
from lionsnb.ssda.train import Recipe, evaluate, load_student
from lionsnb.widgets import explore

BUDGETS = (5, 10, 25, 50)
_COMMON = dict(batch_size=4, lr=0.05, ema_alpha=0.995, pc_max_samples=256, pc_max_views=16)

SPEC = MethodSpec(
    name="ssda.nb01_domain_gap",
    title="SSDA 1: the domain gap (source only, a few target labels, full supervision)",
    profiles={
        "smoke": dict(size=24, n_source=80, n_target=100, n_val=32, steps=30, widths=(8, 16), budgets=(5, 10),
                      photo_size=48, **_COMMON),
        "teach": dict(size=24, n_source=1000, n_target=1000, n_val=200, steps=300, widths=(8, 16), budgets=BUDGETS,
                      photo_size=64, **_COMMON),
        "full": dict(size=64, n_source=3000, n_target=2975, n_val=500, steps=4000, widths=(16, 32, 64),
                     budgets=BUDGETS, photo_size=128, **{**_COMMON, "batch_size": 8}),
    },
    knobs={
        "n_labels": Knob(10, "labelled target images of the highlighted target-only model", int, choices=BUDGETS),
        "benchmark": Knob("auto", "auto (ShapesDA; GTA5 to Cityscapes in full when its folders exist), shapes, or a "
                          "real pair from local folders", str, choices=BENCHMARK_CHOICES),
    },
    datasets=(),
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "Change one factor of the target style at a time and measure the source-only model on each variant: "
       "make_domain with dataclasses.replace(TARGET, cue=SOURCE.cue) (colour keeps its source meaning), "
       "replace(TARGET, textured=False, illumination=0, gamma=(1, 1), contrast=(1, 1), noise=0.02, blur=0) (only "
       "the colour shift left), and so on, evaluating with m.evaluate on each set. On ShapesDA the colour shift "
       "costs most for the object classes: the source model's confusion matrix puts the target's red triangles "
       "into the disk row's column and its green disks into squares, exactly the permutation of the cue; the "
       "textured background mostly costs background IoU (stripes and blotches read as objects). A real-data "
       "analogue is a texture or lighting change that keeps the classes but changes what the network relied on.",
}


# ------------------------------------------------------------------------------------------------ the task

#: the profile's task (ShapesDA unless BENCHMARK names a real pair) and recipe, shared by the series' notebooks
task = notebook_task
recipe = notebook_recipe


def budgets(ctx) -> list[int]:
    """The label budgets of the run: the profile's plus N_LABELS."""
    return sorted(set(ctx.sizes.budgets) | {ctx.knobs.n_labels})


def colour_table(data: DomainData):
    """Per domain and class: the share of pixels whose nearest palette colour is each hue (the colour cue)."""
    rows = []
    for name, s in (("source", data.source), ("target", data.target_train)):
        img = s.images.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
        lab = s.labels.reshape(-1).numpy()
        for c in range(1, data.num_classes):
            px = img[lab == c]
            nearest = np.argmin(((px[:, None, :] - PALETTE[None]) ** 2).sum(-1), 1)
            share = np.bincount(nearest, minlength=len(PALETTE)) / max(1, len(px))
            rows.append({"domain": name, "class": data.class_names[c],
                         **{hue: float(v) for hue, v in zip(PALETTE_NAMES, share)}})
    return table(rows, title="Nearest palette colour of the object pixels (share per class): the colour cue",
                 digits=2)


def weights_check(data: DomainData):
    """class_weights against numpy's median formula on the source labels, and the weighted CE of a uniform
    prediction (which must be log C whatever the weights)."""
    w = class_weights(data.source.labels, data.num_classes)
    counts = np.bincount(data.source.labels.reshape(-1).numpy(), minlength=data.num_classes)
    f = counts / counts.sum()
    ref = np.sqrt(np.median(f) / f)
    uniform = torch.zeros(2, data.num_classes, 4, 4, dtype=torch.float64)
    ce = weighted_cross_entropy(uniform, data.source.labels[:2, :4, :4], w)
    rows = [{"class": n, "pixel share": float(fi), "weight (lionsnb)": float(wi), "weight (numpy formula)": float(r)}
            for n, fi, wi, r in zip(data.class_names, f, w, ref)]
    return rows, float(np.abs(w.numpy() - ref).max()), abs(float(ce) - np.log(data.num_classes))


def metric_check(num_classes: int = 4, seed: int = 0) -> dict[str, float]:
    """The confusion matrix and IoU against a direct NumPy count on random label maps with ignored pixels (the unit
    tests compare with scikit-learn)."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, (4, 16, 16))
    pred = rng.integers(0, num_classes, (4, 16, 16))
    target[rng.random(target.shape) < 0.1] = 250
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), num_classes)
    keep = target != 250
    direct = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(direct, (target[keep], pred[keep]), 1)
    iou = iou_per_class(cm)
    ref = [np.sum((target == c) & (pred == c)) / np.sum(keep & ((target == c) | (pred == c)))
           for c in range(num_classes)]
    return {"confusion matrix: largest difference to a direct count": float(np.abs(cm.numpy() - direct).max()),
            "IoU: largest difference to TP / union": float(np.abs(iou - np.asarray(ref)).max()),
            "mIoU": mean_iou(cm)}


# ------------------------------------------------------------------------------------------- experiments

def train_baselines(data: DomainData, recipe: Recipe, budgets: list[int], seed: int = 0, device: str = "cpu"):
    """Source only, fully supervised and target only at every budget (cached by the notebook)."""
    return baseline_runs(data, recipe, budgets, seed, device)


def baseline_table(runs: dict, data: DomainData):
    rows = [summary_row("source only", runs["source_only"], data.class_names)]
    rows += [summary_row(f"target only, {k.split('_')[-1]} labels", r, data.class_names)
             for k, r in runs.items() if k.startswith("target_only")]
    rows.append(summary_row(f"fully supervised ({len(data.target_train)} labels)", runs["supervised"],
                            data.class_names))
    src, sup = runs["source_only"]["miou"], runs["supervised"]["miou"]
    for r in rows:
        r["gap closed"] = closed_gap(r["mIoU"], src, sup)
    return table(rows, title="mIoU and per-class IoU on the target validation set")


def draw_bars(fig, runs: dict, data: DomainData, n_labels: int) -> None:
    ax = fig.subplots()
    draw_iou_bars(ax, {"source_only": runs["source_only"]["iou"].tolist(),
                       f"target_only ({n_labels} labels)": runs[f"target_only_{n_labels}"]["iou"].tolist(),
                       "supervised": runs["supervised"]["iou"].tolist()}, data.class_names,
                  "Per-class IoU on the target")


def model_predictions(data: DomainData, runs: dict, recipe: Recipe, names: dict[str, str], n: int = 4):
    """``{display name: argmax predictions on the first n target validation images}``."""
    images = data.target_val.images[:n]
    return {label_: predictions(data, runs[key], recipe, images) for label_, key in names.items()}


def draw_overlays(fig, data: DomainData, preds: dict[str, torch.Tensor], n: int = 4) -> None:
    draw_predictions(fig, data.target_val.images[:n], data.target_val.labels[:n], preds, data.num_classes, n)


def source_confusion(data: DomainData, runs: dict, recipe: Recipe) -> np.ndarray:
    """Row-normalised confusion matrix of the source-only model on the target validation set."""
    pred = predictions(data, runs["source_only"], recipe, data.target_val.images)
    cm = confusion_matrix(pred, data.target_val.labels, data.num_classes).numpy().astype(float)
    return cm / cm.sum(1, keepdims=True).clip(min=1)


def draw_confusion(fig, cm: np.ndarray, class_names) -> None:
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", color="white" if cm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.grid(False)
    label(ax, "predicted class", "true class", "Source-only model on the target (rows sum to 1)")
    fig.colorbar(im, ax=ax, label="share of the true class")


def photo_predictions(runs: dict, recipe: Recipe, num_classes: int, size: int) -> dict[str, Any]:
    """Predictions of the source-only and the fully supervised target model on scikit-image photographs."""
    photos = photographs(size)
    out = {"photos": photos, "preds": {}}
    for key in ("source_only", "supervised"):
        model = load_student(runs[key], recipe, num_classes)
        with torch.no_grad():
            out["preds"][key] = {name: model(img[None]).argmax(1)[0] for name, img in photos.items()}
    return out


def draw_photos(fig, photo_out: dict[str, Any], num_classes: int) -> None:
    photos = photo_out["photos"]
    names = list(photos)
    axes = fig.subplots(3, len(names), squeeze=False)
    for j, name in enumerate(names):
        show_image(axes[0, j], photos[name].permute(1, 2, 0).numpy(), name, ylabel="photograph" if j == 0 else " ")
        for r, key in enumerate(("source_only", "supervised")):
            pred = photo_out["preds"][key][name]
            share = {c: float((pred == c).float().mean()) for c in range(1, num_classes)}
            show_image(axes[1 + r, j], overlay(photos[name], pred, num_classes),
                       f"objects: {sum(share.values()):.0%} of pixels",
                       ylabel=("source only" if r == 0 else "target, supervised") if j == 0 else " ")


def draw_budget(fig, n_labels: int, runs: dict, data: DomainData, preds: dict) -> None:
    """Explorer frame: per-class IoU of target only at ``n_labels`` against source only and full supervision, and
    its predictions on three validation images."""
    gs = fig.add_gridspec(2, 3, height_ratios=[1.2, 1])
    ax = fig.add_subplot(gs[0, :])
    draw_iou_bars(ax, {"source_only": runs["source_only"]["iou"].tolist(),
                       f"target_only ({n_labels} labels)": runs[f"target_only_{n_labels}"]["iou"].tolist(),
                       "supervised": runs["supervised"]["iou"].tolist()}, data.class_names,
                  f"Target only with {n_labels} labelled images: mIoU {runs[f'target_only_{n_labels}']['miou']:.3f}")
    for i in range(3):
        axi = fig.add_subplot(gs[1, i])
        img = data.target_val.images[i]
        show_image(axi, overlay(img, preds[n_labels][i], data.num_classes), f"validation image {i + 1}",
                   ylabel="prediction" if i == 0 else " ")


def budget_predictions(data: DomainData, runs: dict, recipe: Recipe, budgets: list[int], n: int = 3):
    images = data.target_val.images[:n]
    return {b: predictions(data, runs[f"target_only_{b}"], recipe, images) for b in budgets}


def cue_confusion_excess(cm: np.ndarray) -> float:
    """How much more the object classes are confused along the colour permutation than along the other direction:
    :func:`cue_confusion` minus the mean share of each object class predicted as the remaining object class."""
    if cm.shape != (4, 4):
        return float("nan")
    other = []
    for c in (1, 2, 3):
        cue = SOURCE.cue.index(TARGET.cue[c - 1]) + 1
        rest = [k for k in (1, 2, 3) if k not in (c, cue)]
        other.append(cm[c, rest[0]])
    return cue_confusion(cm) - float(np.mean(other))


def cue_confusion(cm: np.ndarray) -> float:
    """Mean share of each object class predicted as the class whose *source* colour it wears in the target (the
    permutation of the colour cue). For a real benchmark (not 4 x 4) there is no known permutation: the mean over
    classes of the largest off-diagonal share instead."""
    if cm.shape != (4, 4):
        off = cm - np.diag(np.diag(cm))
        return float(off.max(1).mean())
    shares = []
    for c in (1, 2, 3):
        colour = TARGET.cue[c - 1]
        shares.append(cm[c, SOURCE.cue.index(colour) + 1])
    return float(np.mean(shares))


# ---------------------------------------------------------------------------------------------- exercises

def check_exercise_iou(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: per-class IoU from a confusion matrix, NaN for classes absent from truth and prediction."""
    rng = np.random.default_rng(3)
    cm1 = torch.from_numpy(rng.integers(0, 20, (4, 4)))
    cm2 = torch.tensor([[5, 1, 0, 0], [2, 7, 0, 0], [0, 0, 0, 0], [1, 0, 0, 3]])     # class 2 absent
    cm3 = torch.tensor([[0, 4], [0, 0]])                                               # class 0 never predicted

    def same(got, exp):
        got = np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got, dtype=float)
        return got.shape == exp.shape and np.allclose(got, exp, equal_nan=True)

    return check_exercise("IoU per class", attempt, iou_per_class, [(cm1,), (cm2,), (cm3,)], compare=same,
                          hint="TP is the diagonal; the union is row sum + column sum - TP; 0/0 gives NaN.",
                          ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "BUDGETS", "task", "recipe", "budgets", "colour_table", "weights_check",
    "metric_check", "train_baselines", "baseline_table", "draw_bars", "model_predictions", "draw_overlays",
    "source_confusion", "draw_confusion", "photo_predictions", "draw_photos", "draw_budget", "budget_predictions",
    "cue_confusion", "cue_confusion_excess", "check_exercise_iou", "SOURCE", "TARGET", "make_domain", "evaluate",
    "draw_domains", "figure", "table", "show_source", "explore",
    "weighted_cross_entropy", "class_weights", "confusion_matrix", "mean_iou", "closed_gap",
]
