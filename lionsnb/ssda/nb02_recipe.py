"""Backs ``notebooks/ssda/02_recipe.ipynb``: the SSDA recipe piece by piece. The weak and strong views and CutMix,
the EMA teacher's ramp, pixel anchors and the contrastive loss on a batch, and an ablation of consistency, pixel
contrast and self-training over seeds.

The algorithms live in the core modules of :mod:`lionsnb.ssda`; this module arranges them for the notebook.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.ssda.augment import SMALL_IMAGE_AUG, crop_flip, cutmix, cutmix_masks, strong_view
from lionsnb.ssda.data import DomainData
from lionsnb.ssda.experiments import (
    BENCHMARK_CHOICES,
    SETTING_NAMES,
    mean_std,
    notebook_recipe,
    notebook_task,
    predictions,
    run_setting,
    step_progress,
)
from lionsnb.ssda.losses import consistency_loss, pixel_contrast_loss, sample_anchors
from lionsnb.ssda.plots import (
    draw_anchors,
    draw_iou_bars,
    draw_ramp,
    draw_training,
    draw_views,
    overlay,
    show_image,
)
from lionsnb.ssda.teacher import ema_alpha, ema_update
from lionsnb.ssda.train import Recipe, cutmix_views, load_student, recipe_for, self_train
from lionsnb.widgets import explore

BUDGETS = (5, 10, 25, 50)
#: the ablation: supervised CE on both domains, then each component, then the full recipe and self-training
ABLATION = ("s+t", "s+t+cr", "s+t+pc", "ssda", "ssda+st")
_COMMON = dict(batch_size=4, lr=0.05, pc_max_samples=256, pc_max_views=16, threshold=0.9)

SPEC = MethodSpec(
    name="ssda.nb02_recipe",
    title="SSDA 2: the recipe piece by piece (views, CutMix, EMA teacher, pixel contrast, self-training, ablation)",
    profiles={
        "smoke": dict(size=24, n_source=80, n_target=100, n_val=32, steps=30, widths=(8, 16), seeds=(0,),
                      ema_alpha=0.99, **_COMMON),
        "teach": dict(size=24, n_source=1000, n_target=1000, n_val=200, steps=300, widths=(8, 16), seeds=(0, 1),
                      ema_alpha=0.995, **_COMMON),
        "full": dict(size=64, n_source=3000, n_target=2975, n_val=500, steps=4000, widths=(16, 32, 64),
                     seeds=(0, 1, 2), ema_alpha=0.995, **{**_COMMON, "batch_size": 8}),
    },
    knobs={
        "n_labels": Knob(10, "labelled target images of the ablation", int, choices=BUDGETS),
        "benchmark": Knob("auto", "auto (ShapesDA; GTA5 to Cityscapes in full when its folders exist), shapes, or a "
                          "real pair from local folders", str, choices=BENCHMARK_CHOICES),
    },
    datasets=(),
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    3: "The teacher's output is the target, so it must be as reliable as possible: the weak view is the image as it "
       "is, and the EMA weights average out the noise of single steps. The student gets the hard problem, the "
       "strong view, and is pulled towards the reliable answer: it must become invariant to colour, contrast, blur "
       "and to the pasted CutMix box. Reversed, the target would be computed on distorted images whose predictions "
       "are worse, and the student would be asked to reproduce those mistakes on clean images; consistency would "
       "then teach the wrong labels. On ShapesDA the strong view's colour operations also attack exactly the cue "
       "whose meaning changed, so the student learns to rely on the texture.",
}


# ------------------------------------------------------------------------------------------------- the task

#: the profile's task (ShapesDA unless BENCHMARK names a real pair) and recipe, shared by the series' notebooks
task = notebook_task
recipe = notebook_recipe


# ----------------------------------------------------------------------------------- views, CutMix, checks

def consistency_checks(num_classes: int = 4) -> dict[str, float]:
    """Known answers: a uniform student against any teacher gives log C; identical confident logits give the
    teacher's entropy; with a threshold above every teacher's confidence the loss is 0."""
    gen = torch.Generator().manual_seed(0)
    teacher = 3 * torch.randn(2, num_classes, 5, 5, generator=gen, dtype=torch.float64)
    uniform = torch.zeros_like(teacher)
    p = torch.softmax(teacher, 1)
    entropy = float(-(p * torch.log(p)).sum(1).mean())
    return {"uniform student: loss - log C": float(consistency_loss(uniform, teacher)) - float(np.log(num_classes)),
            "student = teacher: loss - teacher entropy": float(consistency_loss(teacher, teacher)) - entropy,
            "threshold 1.0 (no pixel kept): loss": float(consistency_loss(teacher, teacher, threshold=1.0))}


def views_demo(data: DomainData, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weak and strong views of ``n`` unlabelled target images, CutMix masks, the student input, and the target of
    a perfect teacher (logits 10 x one-hot of the ground truth) mixed with the same masks."""
    gen = torch.Generator().manual_seed(seed)
    idx = data.unlabelled_index(0)[:n]
    weak, truth = crop_flip(data.target_train.images[idx], data.target_train.labels[idx], None, gen)
    strong = strong_view(weak, SMALL_IMAGE_AUG, gen)
    masks = cutmix_masks(n, *weak.shape[-2:], generator=gen)
    teacher = _OneHotTeacher(truth, data.num_classes)
    student_in, t_logits = cutmix_views(teacher, weak, strong, masks)
    return {"weak": weak, "strong": strong, "masks": masks, "student_input": student_in,
            "truth": truth, "teacher_target": t_logits.argmax(1),
            "mixed_truth": cutmix(truth[:, None].double(), masks)[:, 0].long()}


class _OneHotTeacher(torch.nn.Module):
    """A perfect teacher for the drawing: logits 10 x one-hot of the ground truth of the weak images."""

    def __init__(self, truth: torch.Tensor, num_classes: int):
        super().__init__()
        self.logits = 10.0 * F.one_hot(truth, num_classes).permute(0, 3, 1, 2).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def views_table(demo: dict[str, torch.Tensor]) -> tuple[Any, dict[str, float]]:
    h, w = demo["weak"].shape[-2:]
    areas = demo["masks"].sum(dim=(1, 2, 3)) / (h * w)
    checks = {"CutMix box area / image area (mean)": float(areas.mean()),
              "largest deviation from 0.25": float((areas - 0.25).abs().max()),
              "teacher target = labels mixed with the student's box (pixels that differ)":
                  float((demo["teacher_target"] != demo["mixed_truth"]).sum()),
              "weak and strong views: mean absolute difference": float((demo["weak"] - demo["strong"]).abs().mean())}
    return table(checks, title="Views and CutMix"), checks


def draw_demo(fig, demo: dict[str, torch.Tensor], num_classes: int) -> None:
    draw_views(fig, demo["weak"], demo["strong"], demo["masks"], demo["student_input"], demo["truth"],
               demo["teacher_target"], num_classes)


def ramp_table(steps: int, alpha: float):
    rows = [{"step t": t, "alpha_t (SSDA ramp)": ema_alpha(t, alpha), "mean-teacher ramp 1 - 1/(t+1)":
             min(alpha, 1 - 1 / (t + 1)), "weight of the current student": 1 - ema_alpha(t, alpha)}
            for t in (0, 1, 9, 99, steps - 1, 1789, 1790)]
    return table(rows, title=f"The EMA ramp (alpha = {alpha})")


def ema_bn_demo(seed: int = 0, steps: int = 3) -> dict[str, float]:
    """EMA steps on a BatchNorm layer whose statistics move: the teacher's running mean follows the closed form
    alpha_t * teacher + (1 - alpha_t) * student (averaged, not copied) and num_batches_tracked is untouched."""
    gen = torch.Generator().manual_seed(seed)
    student, teacher = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    expected = teacher.running_mean.clone()
    for step in range(steps):
        student(torch.randn(8, 2, 4, 4, generator=gen) + 3.0)
        a = ema_update(teacher, student, step)
        expected = a * expected + (1 - a) * student.running_mean
    return {"teacher running mean - closed form": float((teacher.running_mean - expected).abs().max()),
            "teacher running mean - student running mean": float((teacher.running_mean
                                                                  - student.running_mean).abs().max()),
            "teacher num_batches_tracked": int(teacher.num_batches_tracked),
            "student num_batches_tracked": int(student.num_batches_tracked)}


# ------------------------------------------------------------------------------------------------- ablation

def ablation(data: DomainData, recipe: Recipe, n_labels: int, seeds: list[int], threshold: float = 0.9,
             device: str = "cpu") -> dict[str, dict[int, dict[str, Any]]]:
    """Every setting of :data:`ABLATION` for every seed: ``{setting: {seed: result}}``. The self-training round
    starts from that seed's SSDA model (pseudo-labels above ``threshold``, restart from initialisation)."""
    out: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in ABLATION}
    for seed in seeds:
        for setting in ABLATION[:-1]:
            out[setting][seed] = run_setting(data, setting, n_labels, recipe, seed, device)
        st = self_train(data, n_labels, out["ssda"][seed], recipe_for("ssda", recipe), seed, threshold=threshold,
                        device=device, progress=step_progress(f"self-training, {n_labels} labels, tau {threshold:g}"))
        st["setting"] = "ssda+st"
        out["ssda+st"][seed] = st
    return out


def ablation_summary(runs: dict, class_names) -> tuple[Any, dict[str, float]]:
    """Table of mean and standard deviation over seeds, with the gain of each component."""
    rows, means = [], {}
    for setting, by_seed in runs.items():
        vals = [r["miou"] for r in by_seed.values()]
        mu, sd = mean_std(vals)
        means[setting] = mu
        row = {"setting": SETTING_NAMES[setting], "mIoU mean": mu, "std": sd, "seeds": len(vals),
               "per seed": [round(v, 3) for v in vals]}
        iou = np.nanmean(np.stack([r["iou"].numpy() for r in by_seed.values()]), 0)
        row.update({f"IoU {c}": float(v) for c, v in zip(class_names, iou)})
        rows.append(row)
    gains = {"gain of CR (S+T+CR - S+T)": means["s+t+cr"] - means["s+t"],
             "gain of PC alone (S+T+PC - S+T)": means["s+t+pc"] - means["s+t"],
             "gain of PC on top of CR (SSDA - S+T+CR)": means["ssda"] - means["s+t+cr"],
             "gain of self-training (SSDA+ST - SSDA)": means["ssda+st"] - means["ssda"]}
    return table(rows, title="Ablation on the target validation set (mean over seeds)"), {**means, **gains}


def seed_gains(runs: dict) -> dict[str, list[float]]:
    """Per seed: the gain of each component (to count how often it helps)."""
    seeds = list(runs["ssda"])
    return {"cr": [runs["s+t+cr"][s]["miou"] - runs["s+t"][s]["miou"] for s in seeds],
            "pc": [runs["ssda"][s]["miou"] - runs["s+t+cr"][s]["miou"] for s in seeds],
            "st": [runs["ssda+st"][s]["miou"] - runs["ssda"][s]["miou"] for s in seeds]}


def draw_ablation(fig, runs: dict) -> None:
    ax = fig.subplots()
    names = list(runs)
    for i, setting in enumerate(names):
        vals = [r["miou"] for r in runs[setting].values()]
        ax.bar(i, np.mean(vals), color="#dddddd", edgecolor="black")
        ax.scatter([i] * len(vals), vals, color="black", zorder=3, s=14, label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(names)), [SETTING_NAMES[n].replace(" (", "\n(") for n in names], fontsize=8)
    lo = min(r["miou"] for by in runs.values() for r in by.values())
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    label(ax, "setting", "mIoU on the target validation set", "Ablation: bars are means over seeds")
    ax.legend(fontsize=8)


def draw_curves(fig, runs: dict, seed: int) -> None:
    axes = fig.subplots(1, 3)
    draw_training(axes, {name: runs[name][seed]["history"] for name in ("s+t+cr", "ssda")})


def teacher_table(runs: dict):
    rows = []
    for setting in ("s+t+cr", "ssda"):
        for seed, r in runs[setting].items():
            rows.append({"setting": SETTING_NAMES[setting], "seed": seed, "student mIoU": r["miou"],
                         "EMA teacher mIoU": r.get("teacher_miou", float("nan"))})
    return table(rows, title="Student and EMA teacher at the end of training")


# ---------------------------------------------------------------------------------------- anchors, contrast

def anchor_demo(data: DomainData, result: dict[str, Any], recipe: Recipe, n_labels: int, n: int = 3,
                seed: int = 0) -> dict[str, Any]:
    """Sample anchors on ``n`` labelled target images with the trained student's predictions; positions are
    recovered by sampling a coordinate map (the sampler returns feature vectors unchanged)."""
    model = load_student(result, recipe, data.num_classes)
    idx = data.labelled_index(n_labels)[:n]
    images, labels = data.target_train.images[idx], data.target_train.labels[idx]
    with torch.no_grad():
        logits, z = model(images, with_embedding=True)
    preds = logits.argmax(1)
    b, _, h, w = images.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([yy, xx]).float()[None].repeat(b, 1, 1, 1)
    image_id = torch.arange(b).float()[:, None, None, None].expand(b, 1, h, w)
    feats = torch.cat([coords, image_id], 1)
    gen = torch.Generator().manual_seed(seed)
    anchors, a_lab = sample_anchors(feats, labels, preds, recipe.pc_max_samples, recipe.pc_max_views, generator=gen)
    picked = []
    for row, c in zip(anchors, a_lab.tolist()):
        ys, xs, im = row[:, 0].long(), row[:, 1].long(), int(row[0, 2])
        hard = (preds[im, ys, xs] != c).numpy()
        picked.append({"image": im, "class": c, "y": ys.numpy(), "x": xs.numpy(), "hard": hard})
    return {"images": images, "labels": labels, "preds": preds, "picked": picked, "embeddings": z}


def anchor_table(demo: dict[str, Any], class_names):
    rows = [{"image": p["image"], "class": class_names[p["class"]], "anchors": len(p["hard"]),
             "hard (mispredicted)": int(p["hard"].sum()), "easy": int((~p["hard"]).sum())} for p in demo["picked"]]
    return table(rows, title="Anchors per (image, class): half hard, half easy when both pools allow")


def contrast_on_batch(data: DomainData, results: dict[str, dict[str, Any]], recipe: Recipe, n_labels: int,
                      seed: int = 0) -> list[dict[str, Any]]:
    """The pixel-contrast loss and the intra/inter-class cosine ratio of the embeddings of the labelled target
    images, for an untrained network and for trained students with and without pixel contrast."""
    from lionsnb.ssda.model import build_segnet

    idx = data.labelled_index(n_labels)[: min(n_labels, 8)]
    images, labels = data.target_train.images[idx], data.target_train.labels[idx]
    models = {"untrained": build_segnet(data.num_classes, recipe.widths, recipe.proj_dim, recipe.norm, seed=seed)}
    models.update({name: load_student(r, recipe, data.num_classes) for name, r in results.items()})
    rows = []
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            logits, z = model(images, with_embedding=True)
        gen = torch.Generator().manual_seed(seed)
        anchors, a_lab = sample_anchors(z, labels, logits.argmax(1), recipe.pc_max_samples, recipe.pc_max_views,
                                        generator=gen)
        loss = float(pixel_contrast_loss(anchors, a_lab, recipe.temperature, recipe.base_temperature))
        zn = F.normalize(anchors.reshape(-1, anchors.shape[-1]), dim=1)
        y = a_lab.repeat_interleave(anchors.shape[1])
        cos = zn @ zn.T
        same = y[:, None] == y[None]
        eye = torch.eye(len(y), dtype=torch.bool)
        intra, inter = float(cos[same & ~eye].mean()), float(cos[~same].mean())
        rows.append({"embeddings of": name, "pixel-contrast loss": loss, "mean cosine, same class": intra,
                     "mean cosine, other classes": inter, "inter / intra distance ratio":
                     (1 - inter) / max(1e-9, 1 - intra)})
    return rows


def draw_anchor_demo(fig, demo: dict[str, Any], num_classes: int) -> None:
    draw_anchors(fig, demo["images"], demo["labels"], demo["preds"], demo["picked"], num_classes)


# ------------------------------------------------------------------------------------------------- explore

def explorer_predictions(data: DomainData, runs: dict, recipe: Recipe, n: int = 3) -> dict:
    images = data.target_val.images[:n]
    return {(setting, seed): predictions(data, r, recipe, images) for setting, by in runs.items()
            for seed, r in by.items()}


def draw_setting(fig, setting: str, seed: int, runs: dict, data: DomainData, preds: dict) -> None:
    """Explorer frame: per-class IoU of one setting and seed against S+T, and its predictions."""
    gs = fig.add_gridspec(2, 3, height_ratios=[1.2, 1])
    ax = fig.add_subplot(gs[0, :])
    r = runs[setting][seed]
    draw_iou_bars(ax, {"s+t": runs["s+t"][seed]["iou"].tolist(), setting: r["iou"].tolist()}, data.class_names,
                  f"{SETTING_NAMES[setting]}, seed {seed}: mIoU {r['miou']:.3f}")
    for i in range(3):
        axi = fig.add_subplot(gs[1, i])
        show_image(axi, overlay(data.target_val.images[i], preds[(setting, seed)][i], data.num_classes),
                   f"validation image {i + 1}", ylabel="prediction" if i == 0 else " ")


# ------------------------------------------------------------------------------------------------ exercises

def check_exercise_ema_alpha(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: the ramp alpha_t = min(alpha, (t+1)/(t+10))."""
    cases = [(0, 0.995), (1, 0.995), (9, 0.995), (1789, 0.995), (1790, 0.995), (50, 0.9), (10 ** 6, 0.99)]
    return check_exercise("EMA ramp", attempt, ema_alpha, cases,
                          compare=lambda g, e: abs(float(g) - e) < 1e-12,
                          hint="(t + 1) / (t + 10), capped at alpha; t counts from 0.", ctx=ctx)


def check_exercise_cutmix(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: mixing the two halves of a batch with one box per pair."""
    gen = torch.Generator().manual_seed(5)
    cases = []
    for b, c in ((2, 3), (4, 4), (6, 1)):
        masks = cutmix_masks(b, 8, 8, generator=gen)
        cases.append((torch.randn(b, c, 8, 8, generator=gen), masks))
    return check_exercise("CutMix", attempt, cutmix, cases,
                          hint="first, second = x[:B/2], x[B/2:]; inside the box each takes its partner.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "ABLATION", "task", "recipe", "consistency_checks", "views_demo", "views_table",
    "draw_demo", "ramp_table", "ema_bn_demo", "ablation", "ablation_summary", "seed_gains", "draw_ablation",
    "draw_curves", "teacher_table", "anchor_demo", "anchor_table", "contrast_on_batch", "draw_anchor_demo",
    "explorer_predictions", "draw_setting", "check_exercise_ema_alpha", "check_exercise_cutmix",
    "consistency_loss", "ema_update", "sample_anchors", "pixel_contrast_loss", "cutmix_views", "draw_ramp",
    "figure", "table", "show_source", "explore", "SETTING_NAMES",
]
