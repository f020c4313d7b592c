"""Figures of the SSDA notebooks: images with label overlays, per-class IoU bars, curves against the label budget,
views and CutMix, the EMA ramp, pixel anchors, pseudo-label quality. Every axis is labelled."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lionsnb.plotting import label
from lionsnb.ssda.data import CLASS_COLOURS, IGNORE_COLOUR, IGNORE_INDEX

#: line colours of the settings (curves and bars)
SETTING_COLOURS = {"source_only": "#888888", "target_only": "#1f77b4", "supervised": "#000000", "uda": "#9467bd",
                   "ssl": "#8c564b", "s+t": "#17becf", "s+t+cr": "#2ca02c", "s+t+pc": "#bcbd22",
                   "ssda": "#d62728", "ssda+st": "#ff7f0e"}


def class_colours(num_classes: int) -> np.ndarray:
    if num_classes <= len(CLASS_COLOURS):
        return CLASS_COLOURS[:num_classes]
    import matplotlib

    return np.asarray(matplotlib.colormaps["tab20"](np.arange(num_classes) % 20))[:, :3]


def colourise(labels: torch.Tensor | np.ndarray, num_classes: int = 4) -> np.ndarray:
    """An RGB image ``[H, W, 3]`` of a label map (ignored pixels grey)."""
    lab = np.asarray(labels).astype(np.int64)
    colours = class_colours(num_classes)
    out = np.empty(lab.shape + (3,))
    ignored = (lab == IGNORE_INDEX) | (lab < 0) | (lab >= num_classes)
    out[~ignored] = colours[lab[~ignored]]
    out[ignored] = IGNORE_COLOUR
    return out


def overlay(image: torch.Tensor, labels: torch.Tensor | np.ndarray, num_classes: int = 4, alpha: float = 0.8
            ) -> np.ndarray:
    """The image ``[3, H, W]`` with the label colours blended (weight ``alpha``) over every non-background pixel
    and the background darkened, so that the labels stand out from the image's own colours."""
    img = image.permute(1, 2, 0).numpy().astype(np.float64)
    lab = np.asarray(labels)
    col = colourise(lab, num_classes)
    mask = (lab != 0)[..., None]
    return np.clip(np.where(mask, (1 - alpha) * img + alpha * col, 0.45 * img), 0, 1)


def show_image(ax, image: np.ndarray, title: str = "", xlabel: str = "x (pixel)", ylabel: str = "y (pixel)") -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    label(ax, xlabel, ylabel, title)


def legend_patches(class_names: Sequence[str]):
    from matplotlib.patches import Patch

    colours = class_colours(len(class_names))
    return [Patch(color=colours[i], label=n) for i, n in enumerate(class_names)]


def draw_domains(fig, source, target, n: int = 5, class_names: Sequence[str] = ()) -> None:
    """Rows: source images, source labels, target images, target labels."""
    axes = fig.subplots(4, n)
    k = len(class_names) or 4
    for i in range(n):
        show_image(axes[0, i], source.images[i].permute(1, 2, 0).numpy(), "source" if i == 0 else "",
                   ylabel="image" if i == 0 else "")
        show_image(axes[1, i], colourise(source.labels[i], k), ylabel="labels" if i == 0 else "")
        show_image(axes[2, i], target.images[i].permute(1, 2, 0).numpy(), "target" if i == 0 else "",
                   ylabel="image" if i == 0 else "")
        show_image(axes[3, i], colourise(target.labels[i], k), ylabel="labels" if i == 0 else "")
    for ax in axes.flat:
        if not ax.get_ylabel():
            ax.set_ylabel(" ")
        ax.set_xlabel(" ")
    if class_names:
        fig.legend(handles=legend_patches(class_names), loc="lower center", ncol=len(class_names), fontsize=8)


def draw_iou_bars(ax, rows: dict[str, Sequence[float]], class_names: Sequence[str], title: str = "") -> None:
    """Grouped bars: per-class IoU (and mIoU last) of several named results ``{name: iou per class}``."""
    names = list(rows)
    groups = list(class_names) + ["mIoU"]
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    for j, name in enumerate(names):
        iou = np.asarray(rows[name], dtype=float)
        vals = np.append(iou, np.nanmean(iou))
        colour = SETTING_COLOURS.get(name.split(" ")[0], None)
        ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, label=name, color=colour)
    ax.set_xticks(x, groups, rotation=30 if len(groups) > 6 else 0)
    ax.set_ylim(0, 1.22)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    label(ax, "class", "IoU on the target validation set", title)
    ax.legend(fontsize=7, loc="upper center", ncol=min(4, len(names)))


def draw_predictions(fig, images: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor],
                     num_classes: int = 4, n: int = 4) -> None:
    """Columns: target validation images; rows: the image, its ground truth, then each model's prediction."""
    rows = 2 + len(preds)
    axes = fig.subplots(rows, n, squeeze=False)
    for i in range(n):
        show_image(axes[0, i], images[i].permute(1, 2, 0).numpy(), ylabel="image" if i == 0 else " ")
        show_image(axes[1, i], overlay(images[i], truth[i], num_classes), ylabel="ground truth" if i == 0 else " ")
        for r, (name, p) in enumerate(preds.items()):
            acc = float((p[i] == truth[i]).float().mean())
            show_image(axes[2 + r, i], overlay(images[i], p[i], num_classes), f"{acc:.0%} pixels right",
                       ylabel=name if i == 0 else " ")


def draw_label_curves(ax, budgets: Sequence[int], curves: dict[str, Sequence[float]], lines: dict[str, float],
                      title: str = "", highlight: int | None = None) -> None:
    """mIoU against the number of labelled target images, one curve per setting; horizontal reference lines."""
    for name, ys in curves.items():
        ax.plot(budgets[:len(ys)] if len(ys) == len(budgets) else budgets[-len(ys):], ys, "o-", label=name,
                color=SETTING_COLOURS.get(name.split(" ")[0]))
    styles = {"supervised": ("--", "black"), "source_only": (":", "grey")}
    for name, y in lines.items():
        ls, col = styles.get(name.split(" ")[0], ("-.", "grey"))
        ax.axhline(y, ls=ls, color=col, label=name)
    if highlight is not None:
        ax.axvline(highlight, color="#d62728", alpha=0.25, lw=6)
    ax.set_xscale("symlog", linthresh=5)
    ax.set_xticks(list(budgets), [str(b) for b in budgets])
    ax.set_ylim(0, 1)
    label(ax, "labelled target images", "mIoU on the target validation set", title)
    ax.legend(fontsize=8, loc="lower right")


def draw_views(fig, weak: torch.Tensor, strong: torch.Tensor, masks: torch.Tensor, mixed: torch.Tensor,
               weak_labels: torch.Tensor, mixed_labels: torch.Tensor, num_classes: int = 4) -> None:
    """Columns per unlabelled image: the weak view, the strong view, the CutMix box, the mixed student input and the
    teacher's target mixed with the same box (shown as a label map)."""
    b = weak.shape[0]
    axes = fig.subplots(b, 5, squeeze=False)
    titles = ("weak view (teacher)", "strong view", "CutMix box", "student input", "teacher target, mixed")
    for i in range(b):
        m = masks[i % masks.shape[0], 0].numpy()
        items = (weak[i].permute(1, 2, 0).numpy(), strong[i].permute(1, 2, 0).numpy(), m,
                 mixed[i].permute(1, 2, 0).numpy(), colourise(mixed_labels[i], num_classes))
        for j, img in enumerate(items):
            ax = axes[i, j]
            if j == 2:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                label(ax, " ", " ", titles[j] if i == 0 else "")
            else:
                show_image(ax, img, titles[j] if i == 0 else "", xlabel=" ",
                           ylabel=(f"pair {i % (b // 2) + 1}, image {1 + i // (b // 2)}" if j == 0 else " "))


def draw_ramp(ax, steps: int, alpha: float, paper_steps: int = 40_000) -> None:
    """alpha_t = min(alpha, (t+1)/(t+10)) against the mean-teacher ramp 1 - 1/(t+1), over the paper's and our
    step counts."""
    t = np.arange(paper_steps)
    ax.plot(t + 1, np.minimum(alpha, (t + 1) / (t + 10)), label=f"SSDA: min({alpha}, (t+1)/(t+10))", color="#d62728")
    ax.plot(t + 1, np.minimum(alpha, 1 - 1 / (t + 1)), "--", label="mean teacher: 1 - 1/(t+1)", color="grey")
    ax.axvline(steps, color="#1f77b4", ls=":", label=f"our run: {steps} steps")
    ax.axvline(1790, color="black", ls=":", alpha=0.5, label="cap reached (t = 1790)")
    ax.set_xscale("log")
    label(ax, "optimizer step t + 1", "EMA weight alpha_t of the teacher", "The teacher's EMA ramp")
    ax.legend(fontsize=8, loc="lower right")


def draw_anchors(fig, images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, picked: list[dict[str, Any]],
                 num_classes: int = 4) -> None:
    """Each labelled image with its sampled anchors: circles for easy (predicted right), crosses for hard."""
    n = images.shape[0]
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        show_image(axes[0, i], overlay(images[i], labels[i], num_classes), "ground truth + anchors" if i == 0 else "",
                   ylabel="anchors" if i == 0 else " ")
        show_image(axes[1, i], overlay(images[i], preds[i], num_classes), "student prediction" if i == 0 else "",
                   ylabel="prediction" if i == 0 else " ")
        for p in picked:
            if p["image"] != i:
                continue
            ys, xs = p["y"], p["x"]
            hard = p["hard"]
            axes[0, i].scatter(xs[~hard], ys[~hard], s=16, facecolors="none", edgecolors="white", linewidths=1.0)
            axes[0, i].scatter(xs[hard], ys[hard], s=22, marker="x", color="#ff3030", linewidths=1.5)


def draw_training(axes, histories: dict[str, dict[str, torch.Tensor]], window: int = 20) -> None:
    """Loss components and the teacher's confident fraction during training."""
    def smooth(v):
        v = np.asarray(v, dtype=float)
        ok = ~np.isnan(v)
        if not ok.any():
            return v
        out = np.full_like(v, np.nan)
        idx = np.flatnonzero(ok)
        csum = np.concatenate([[0.0], np.cumsum(v[ok])])
        k = np.arange(1, len(idx) + 1)
        lo = np.maximum(0, k - window)
        out[idx] = (csum[k] - csum[lo]) / (k - lo)          # trailing mean over the last `window` values
        return out

    for name, h in histories.items():
        col = SETTING_COLOURS.get(name.split(" ")[0])
        axes[0].plot(smooth(h["ce_target"]), label=f"{name}: target CE", color=col)
        axes[0].plot(smooth(h["cr"]), ls="--", label=f"{name}: consistency", color=col)
        axes[1].plot(smooth(h["pc"]), label=name, color=col)
        axes[2].plot(smooth(h["teacher_conf"]), label=f"{name}: share > 0.9", color=col)
        axes[2].plot(smooth(h["teacher_acc"]), ls=":", label=f"{name}: accuracy there", color=col)
    label(axes[0], "step", "loss", "Supervised and consistency terms")
    label(axes[1], "step", "pixel-contrast loss", "Pixel contrast (after the warm-up)")
    label(axes[2], "step", "fraction", "Teacher on the unlabelled batch")
    for ax in axes:
        ax.legend(fontsize=7)


def draw_pseudo_quality(ax, quality: dict[str, Any], threshold: float, class_names: Sequence[str] = ()) -> None:
    """Coverage and accuracy of pseudo-labels against the confidence threshold (the chosen one marked)."""
    t = quality["threshold"]
    ax.plot(t, quality["accuracy"], "o-", color="#d62728", label="accuracy of kept pixels")
    ax.plot(t, quality["coverage"], "s--", color="#1f77b4", label="coverage (kept pixels)")
    if class_names:
        colours = class_colours(len(class_names))
        for c, row in enumerate(quality["per_class_accuracy"]):
            ax.plot(t, row, ":", color=colours[c], alpha=0.8, label=f"accuracy, {class_names[c]}")
    ax.axvline(threshold, color="black", ls=":", label=f"threshold {threshold:g}")
    ax.set_ylim(0, 1.02)
    label(ax, "confidence threshold tau (max softmax)", "fraction", "Pseudo-labels of the unlabelled target images")
    ax.legend(fontsize=7, loc="lower left")
