"""Experiments shared by the SSDA notebooks: the task of a profile, training runs and sweeps over settings, label
budgets and weights, pseudo-label quality, summaries. Every function here is module-level and takes plain
arguments, so notebooks cache it with ``ctx.cached(name, fn, **kwargs)``."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from lionsnb.progress import progress
from lionsnb.ssda.data import (
    BENCHMARKS,
    DomainData,
    benchmark_problem,
    load_real_domains,
    make_shapes_da,
)
from lionsnb.ssda.model import predict_proba
from lionsnb.ssda.train import (
    Recipe,
    ensemble_evaluate,
    load_student,
    pseudo_label_quality,
    recipe_for,
    self_train,
    train,
)

#: benchmark pairs of the paper (source -> target)
PAIRS = {"gta5_cityscapes": ("gta5", "cityscapes"), "synthia_cityscapes": ("synthia", "cityscapes"),
         "gta5_bdd": ("gta5", "bdd"), "synthia_bdd": ("synthia", "bdd")}
BENCHMARK_CHOICES = ("auto", "shapes", *PAIRS)
#: display names of the settings
SETTING_NAMES = {"source_only": "source only", "target_only": "target only", "supervised": "fully supervised",
                 "s+t": "S+T (CE on both)", "s+t+cr": "S+T + CR", "s+t+pc": "S+T + PC", "uda": "UDA-style (S + CR)",
                 "ssl": "SSL-style (T + CR + PC)", "ssda": "SSDA (S+T + CR + PC)", "ssda+st": "SSDA + self-training"}


def resolve_benchmark(benchmark: str, profile: str) -> str:
    """``auto`` is ShapesDA except in the full profile, where GTA5 -> Cityscapes is used when both folders exist
    (a message says why not otherwise)."""
    if benchmark not in BENCHMARK_CHOICES:
        raise ValueError(f"BENCHMARK = {benchmark!r}: use one of {', '.join(BENCHMARK_CHOICES)}.")
    if benchmark != "auto":
        return benchmark
    if profile != "full":
        return "shapes"
    problems = [p for p in (benchmark_problem("gta5"), benchmark_problem("cityscapes")) if p]
    if not problems:
        return "gta5_cityscapes"
    print(f"full profile: GTA5 -> Cityscapes is not available ({problems[0]}) Using ShapesDA instead.")
    return "shapes"


def load_task(benchmark: str, n_source: int, n_target: int, n_val: int, size: int, seed: int = 0) -> DomainData:
    """The source/target task of a notebook: ShapesDA (``benchmark='shapes'``) or a real pair of the paper from
    local folders (images resized to ``size`` x 2 ``size``; a clear error when a folder is missing)."""
    if benchmark == "shapes":
        return make_shapes_da(n_source, n_target, n_val, size, seed)
    if benchmark not in PAIRS:
        raise ValueError(f"unknown benchmark {benchmark!r}: use shapes or one of {', '.join(PAIRS)}.")
    src, tgt = PAIRS[benchmark]
    assert src in BENCHMARKS and tgt in BENCHMARKS
    return load_real_domains(src, tgt, size=(size, 2 * size), n_source=n_source or None,
                             n_target=n_target or None, n_val=n_val or None, seed=seed)


def step_progress(desc: str) -> Callable[[Iterable[int]], Iterable[int]]:
    """A progress-bar wrapper for the steps of one training run (one summary line in headless runs)."""
    return lambda steps: progress(steps, desc=desc, unit="step")


def run_setting(data: DomainData, setting: str, n_labels: int, recipe: Recipe, seed: int = 0,
                device: str = "cpu", **changes: Any) -> dict[str, Any]:
    """Train one setting of :data:`~lionsnb.ssda.train.BASELINES` (``supervised`` uses every target label;
    ``ssda+st`` adds one self-training round at ``recipe``'s defaults, threshold in ``changes['threshold']``)."""
    threshold = changes.pop("threshold", 0.9)
    st = setting.endswith("+st")
    base = setting[:-3] if st else setting
    rec = recipe_for(base, recipe, **changes)
    desc = f"{SETTING_NAMES.get(base, base)}, {n_labels} labels"
    result = train(data, n_labels, rec, seed, all_labels=(base == "supervised"), device=device,
                   progress=step_progress(desc))
    if st:
        result = self_train(data, n_labels, result, rec, seed, threshold=threshold, device=device,
                            progress=step_progress(desc + f", self-training tau {threshold:g}"))
    result["setting"] = setting
    return result


def run_grid(data: DomainData, points: Sequence[dict[str, Any]], recipe: Recipe, seed: int = 0,
             device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Train a list of points ``{"name": ..., "setting": ..., "n_labels": ..., **recipe changes}``; returns
    ``{name: result}``. Results without a model state are cheaper to keep: the state is kept for overlays."""
    out = {}
    for p in points:
        p = dict(p)
        name = p.pop("name")
        out[name] = run_setting(data, p.pop("setting"), p.pop("n_labels"), recipe, p.pop("seed", seed), device, **p)
    return out


def self_training_sweep(data: DomainData, n_labels: int, base: dict[str, Any], recipe: Recipe,
                        thresholds: Sequence[float], seed: int = 0, device: str = "cpu") -> dict[float, dict]:
    """One self-training round from ``base`` (an SSDA result) at every pseudo-label threshold."""
    rec = recipe_for("ssda", recipe)
    return {float(t): self_train(data, n_labels, base, rec, seed, threshold=float(t), device=device,
                                 progress=step_progress(f"self-training, tau {t:g}")) for t in thresholds}


def pseudo_quality(data: DomainData, n_labels: int, result: dict[str, Any], recipe: Recipe,
                   thresholds: Sequence[float]) -> dict[str, Any]:
    """Coverage and accuracy of the student's hard pseudo-labels on the unlabelled target images per threshold,
    overall and per class (of the pseudo-label)."""
    model = load_student(result, recipe, data.num_classes)
    idx = data.unlabelled_index(n_labels)
    probs = predict_proba(model, data.target_train.images[idx])
    truth = data.target_train.labels[idx]
    out = pseudo_label_quality(probs, truth, thresholds)
    conf, pred = probs.max(1)
    per_class = []
    for c in range(data.num_classes):
        row = []
        for t in thresholds:
            keep = (conf > t) & (pred == c)
            row.append(float((truth[keep] == c).float().mean()) if bool(keep.any()) else float("nan"))
        per_class.append(row)
    out["per_class_accuracy"] = per_class
    # calibration: accuracy per confidence bin
    edges = np.linspace(1.0 / data.num_classes, 1.0, 11)
    centres, accs, shares = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        keep = (conf > lo) & (conf <= hi)
        if bool(keep.any()):
            centres.append(float((lo + hi) / 2))
            accs.append(float((pred[keep] == truth[keep]).float().mean()))
            shares.append(float(keep.float().mean()))
    out["bins"] = {"confidence": centres, "accuracy": accs, "share": shares}
    return out


def ensemble(data: DomainData, results: Sequence[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """The softmax ensemble of several students on the target validation set (the paper's r2 + r3 ensemble)."""
    return ensemble_evaluate(list(results), recipe, data.target_val, data.num_classes)


def predictions(data: DomainData, result: dict[str, Any], recipe: Recipe, images: torch.Tensor) -> torch.Tensor:
    """Argmax predictions of a trained student on ``images``."""
    return predict_proba(load_student(result, recipe, data.num_classes), images).argmax(1)


def closed_gap(miou: float, source_only: float, supervised: float) -> float:
    """Share of the gap between source only and the fully supervised model that ``miou`` closes."""
    gap = supervised - source_only
    return (miou - source_only) / gap if gap > 0 else float("nan")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def summary_row(name: str, result: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """A table row: setting, mIoU, per-class IoU, training time."""
    row = {"setting": name, "mIoU": float(result["miou"])}
    row.update({f"IoU {c}": float(v) for c, v in zip(class_names, result["iou"].tolist())})
    row["train s"] = float(result["seconds"])
    return row


def recipe_from(sizes: Any) -> Recipe:
    """The :class:`Recipe` of a profile's sizes (``steps``, ``batch_size``, ``lr``, ``widths``, ``ema_alpha``,
    ``pc_max_samples``, ``pc_max_views``); the rest are the paper's values."""
    return Recipe(steps=int(sizes["steps"]), batch_size=int(sizes["batch_size"]), lr=float(sizes["lr"]),
                  widths=tuple(sizes["widths"]), ema_alpha=float(sizes["ema_alpha"]),
                  pc_max_samples=int(sizes["pc_max_samples"]), pc_max_views=int(sizes["pc_max_views"]))


def notebook_task(ctx: Any) -> DomainData:
    """A notebook run's task: ShapesDA unless the ``benchmark`` knob names a real pair, sized by the profile."""
    s = ctx.sizes
    bench = resolve_benchmark(ctx.knobs.benchmark, ctx.profile)
    return load_task(bench, s.n_source, s.n_target, s.n_val, s.size, seed=ctx.seed)


def notebook_recipe(ctx: Any) -> Recipe:
    """A notebook run's :class:`Recipe`, from the profile's sizes."""
    return recipe_from(ctx.sizes)


def baseline_runs(data: DomainData, recipe: Recipe, budgets: Sequence[int], seed: int = 0,
                  device: str = "cpu") -> dict[str, dict[str, Any]]:
    """Source only, fully supervised, and target only at every budget: ``{"source_only": ..., "supervised": ...,
    "target_only_<n>": ...}``."""
    points = [{"name": "source_only", "setting": "source_only", "n_labels": 0},
              {"name": "supervised", "setting": "supervised", "n_labels": 0}]
    points += [{"name": f"target_only_{n}", "setting": "target_only", "n_labels": int(n)} for n in budgets if n > 0]
    return run_grid(data, points, recipe, seed, device)
