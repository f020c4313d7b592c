"""The SSDA training recipe as the authors' code runs it (``main_SSDA.py`` of ``Morales97/ssda``), at teaching
scale, and its baselines.

One step draws a source batch (x_s, y_s), a labelled target batch (x_tl, y_tl) and an unlabelled target batch
x_tu, and minimises::

    L = CE_{w_s}(f(x_s), y_s) + CE_{w_t}(f(x_tl), y_tl) + lambda L_CR + gamma L_PC 1[t >= warm-up]

* each CE is its own class-weighted mean (:func:`~lionsnb.ssda.losses.weighted_cross_entropy`), summed;
  w_s from the source labels, w_t from the labelled target labels (:func:`~lionsnb.ssda.losses.class_weights`);
* L_CR: the EMA teacher sees the weak view of x_tu, the student the strong view; both CutMixed with the same
  masks (images for the student, logits for the teacher); soft-target CE without threshold;
* L_PC: supervised pixel contrast on the target-labelled pixels only, anchors sampled hard/easy from the
  student's argmax, after a warm-up of 2.5 % of the steps (1,000 of 40,000 in the paper);
* SGD with Nesterov momentum 0.9, weight decay 5e-4, gradient-norm clip 10, lr x 0.1 at 75 % of the steps;
* EMA teacher (separately initialised) updated after every step with alpha_t = min(alpha, (t+1)/(t+10));
* self-training (:func:`pseudo_label` + ``pseudo_labels=...``): hard student pseudo-labels where the max
  probability exceeds tau (0.9), ignored elsewhere, plus the ground truth of the labelled images; the next
  round restarts from initialisation with the same loss, the "target labelled" set covering all target
  training images, and CR still on the unlabelled subset.

Baselines are recipes with components switched off (:data:`BASELINES`): source only, target only (the labelled
budget), UDA-style (source + CR, no target labels), SSL-style (target labels + CR + PC, no source) and the fully
supervised target model (all target training labels).

Differences from the paper, forced by the scale and said in the notebooks: a small U-Net trained from scratch
(not an ImageNet DeepLabV2), so a larger learning rate; a few hundred steps, so the EMA cap and the warm-up are
reached early; batches of a few images per branch; a blur scaled to 32-pixel images.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lionsnb.ssda.augment import SMALL_IMAGE_AUG, StrongAug, crop_flip, cutmix, cutmix_masks, strong_view
from lionsnb.ssda.data import IGNORE_INDEX, DomainData, SegSet
from lionsnb.ssda.losses import (
    class_weights,
    consistency_loss,
    pixel_contrast_loss,
    sample_anchors,
    weighted_cross_entropy,
)
from lionsnb.ssda.metrics import confusion_matrix, iou_per_class, mean_iou
from lionsnb.ssda.model import SegNet, build_segnet, has_batchnorm, predict_proba
from lionsnb.ssda.teacher import ema_update


@dataclass(frozen=True)
class Recipe:
    """Everything a training run depends on besides the data, the budget and the seed."""

    steps: int = 300
    batch_size: int = 4                  # per branch (paper: 2 + 2 + 2)
    lr: float = 0.05                     # paper: 1e-3 on an ImageNet DeepLabV2; a from-scratch net needs more
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: float = 10.0
    lr_drop: float = 0.75                # lr x 0.1 at this fraction of the steps
    source: bool = True                  # source CE
    target: bool = True                  # target CE on the labelled budget
    consistency: bool = True             # L_CR
    lam: float = 1.0                     # lambda
    cr_threshold: float | None = None    # None: the paper's ce; a float: the ce_th ablation
    cutmix: bool = True
    contrast: bool = True                # L_PC
    gamma: float = 0.1
    warmup: float = 0.025                # fraction of the steps before L_PC starts
    pc_max_samples: int = 256            # paper: 1024 anchors of 512x512 crops
    pc_max_views: int = 16               # paper: 100
    temperature: float = 0.1
    base_temperature: float = 0.07
    class_weighting: bool = True
    ema_alpha: float = 0.995
    teacher_bn: str = "eval"             # BatchNorm models only: "eval" (clean) or "train" (paper-faithful)
    widths: tuple[int, ...] = (8, 16)
    proj_dim: int = 16
    norm: str = "batch"
    aug: StrongAug = SMALL_IMAGE_AUG
    threads: int = 1                     # torch CPU threads during training (tiny models: 1 is fastest)
    fused: bool = False                  # one forward over the concatenated branches (BatchNorm: mixed-batch
    #                                      statistics); False: one forward per branch, as the authors' code

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    def key(self) -> dict[str, Any]:
        """A cache key (plain values only)."""
        out = dataclasses.asdict(self)
        out["aug"] = dataclasses.asdict(self.aug)
        return out


#: the baselines and the method as component switches of :class:`Recipe`
BASELINES: dict[str, dict[str, Any]] = {
    "source_only": dict(source=True, target=False, consistency=False, contrast=False),
    "target_only": dict(source=False, target=True, consistency=False, contrast=False),
    "supervised": dict(source=False, target=True, consistency=False, contrast=False),   # with every label
    "s+t": dict(source=True, target=True, consistency=False, contrast=False),
    "s+t+cr": dict(source=True, target=True, consistency=True, contrast=False),
    "s+t+pc": dict(source=True, target=True, consistency=False, contrast=True),
    "uda": dict(source=True, target=False, consistency=True, contrast=False),
    "ssl": dict(source=False, target=True, consistency=True, contrast=True),
    "ssda": dict(source=True, target=True, consistency=True, contrast=True),
}


def recipe_for(setting: str, base: Recipe | None = None, **changes: Any) -> Recipe:
    """The :class:`Recipe` of a named setting (a key of :data:`BASELINES`), with further changes."""
    if setting not in BASELINES:
        raise ValueError(f"unknown setting {setting!r}: use one of {', '.join(BASELINES)}.")
    return (base or Recipe()).replace(**BASELINES[setting], **changes)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set the number of torch CPU threads."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class NesterovSGD:
    """SGD with Nesterov momentum and L2 weight decay, as ``torch.optim.SGD(nesterov=True)`` computes it
    (d = g + wd p; b = mu b + d; p -= lr (d + mu b)), in a few foreach operations. (Written out because the first
    ``torch.optim`` optimizer of a process imports torch's compiler stack, several seconds on a small CPU.)"""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr}]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers: dict[int, torch.Tensor] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        old = [i for i, p in enumerate(params) if id(p) in self.buffers]
        if old:      # parameters without a gradient in a step are skipped, buffers included (as torch does)
            bufs = [self.buffers[id(params[i])] for i in old]
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, [grads[i] for i in old])
        for i, p in enumerate(params):
            if id(p) not in self.buffers:
                self.buffers[id(p)] = grads[i].clone()
        update = torch._foreach_add(grads, [self.buffers[id(p)] for p in params], alpha=self.momentum)
        torch._foreach_add_(params, update, alpha=-self.param_groups[0]["lr"])


class _Batches:
    """Endless shuffled passes over ``n`` items (a reshuffle at each pass, as a DataLoader with shuffle).
    ``on_pass()`` is called at the start of every pass (used to draw the views of a whole pass at once)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, on_pass: Callable[[], None] | None = None):
        self.n, self.batch_size, self.gen, self.on_pass = n, batch_size, generator, on_pass
        self.pos = n

    def next(self) -> torch.Tensor:
        out = []
        need = min(self.batch_size, self.n)
        while need:
            if self.pos >= self.n:
                self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
                if self.on_pass is not None:
                    self.on_pass()
            take = self.order[self.pos:self.pos + need]
            out.append(take)
            self.pos += len(take)
            need -= len(take)
        return torch.cat(out)


class _UnlabelledViews:
    """Weak and strong views of the unlabelled pool. Each pass over the pool draws, for every image, a fresh
    flip (shared by both views, so they stay pixel-aligned) and a fresh strong view, in one batched call: the
    same distribution as drawing them when the image is sampled, at a fraction of the per-call overhead."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, aug: StrongAug, generator: torch.Generator):
        self.images, self.labels, self.aug, self.gen = images, labels, aug, generator
        self.weak = self.strong = self.truth = None

    def redraw(self) -> None:
        self.weak, self.truth = crop_flip(self.images, self.labels, None, self.gen)
        self.strong = strong_view(self.weak, self.aug, self.gen)


def _hflip(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    flip = torch.rand(len(x), generator=gen) < 0.5
    x, y = x.clone(), y.clone()
    x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
    return x, y


def cutmix_views(teacher: nn.Module, weak: torch.Tensor, strong: torch.Tensor, masks: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two inputs of the consistency loss: the student's strong view CutMixed with ``masks``, and the
    teacher's logits on the **weak** view (no gradient) CutMixed with the **same** masks.

    Returns:
        ``(student_input, teacher_logits)``.
    """
    with torch.no_grad():
        t_logits = teacher(weak)
    if masks is None:
        return strong, t_logits
    return cutmix(strong, masks), cutmix(t_logits, masks)


@torch.no_grad()
def pseudo_label(model: nn.Module, images: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """Hard pseudo-labels of the student: argmax where the max softmax probability is **strictly** above
    ``threshold``, ``IGNORE_INDEX`` elsewhere (``generate_pseudolabels.py``)."""
    probs = predict_proba(model, images)
    conf, pred = probs.max(1)
    return torch.where(conf > threshold, pred, torch.full_like(pred, IGNORE_INDEX))


def pseudo_label_quality(probs: torch.Tensor, truth: torch.Tensor, thresholds: Iterable[float]
                         ) -> dict[str, list[float]]:
    """Coverage (fraction of pixels kept) and accuracy (of the kept pixels) of hard pseudo-labels at each
    confidence threshold."""
    conf, pred = probs.max(1)
    out = {"threshold": [], "coverage": [], "accuracy": []}
    for t in thresholds:
        keep = conf > t
        out["threshold"].append(float(t))
        out["coverage"].append(float(keep.float().mean()))
        out["accuracy"].append(float((pred[keep] == truth[keep]).float().mean()) if bool(keep.any()) else float("nan"))
    return out


def evaluate(model: nn.Module, data: SegSet, num_classes: int) -> dict[str, Any]:
    """Confusion matrix, per-class IoU and mIoU of ``model`` on ``data`` (eval mode)."""
    pred = predict_proba(model, data.images).argmax(1)
    cm = confusion_matrix(pred, data.labels, num_classes)
    return {"cm": cm, "iou": torch.from_numpy(iou_per_class(cm)), "miou": mean_iou(cm)}


def train(data: DomainData, n_labels: int, recipe: Recipe = Recipe(), seed: int = 0,
          pseudo_labels: torch.Tensor | None = None, all_labels: bool = False, device: str | torch.device = "cpu",
          progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train one segmenter with ``recipe`` on ``data`` and evaluate it on the target validation set.

    Args:
        data: source, target training and validation sets (:class:`~lionsnb.ssda.data.DomainData`).
        n_labels: labelled target images (the first ``n_labels`` of ``data.order``); the rest are unlabelled.
        recipe: the loss components and sizes (:class:`Recipe`; see :func:`recipe_for`).
        seed: seeds the initialisation (student; the teacher gets ``seed + 1000``), the batches and the views.
        pseudo_labels: ``[N_target, H, W]`` labels of a self-training round (``IGNORE_INDEX`` where not
            confident): the labelled target set becomes every target training image, with the ground truth
            on the ``n_labels`` labelled ones and these pseudo-labels elsewhere; CR stays on the unlabelled ones.
        all_labels: use the ground truth of every target training image (the fully supervised model).
        progress: wraps the step range (a progress bar).
        callback: called as ``callback(step, logs)`` after every step.
    Returns:
        a dict (cache-friendly): ``state`` (student state dict), ``cm``, ``iou``, ``miou`` (target val),
        ``history`` (per-step losses, alpha, teacher confidence), ``seconds``, ``n_labels``.
    """
    device = torch.device(device)
    r = recipe
    if r.target and n_labels == 0 and pseudo_labels is None and not all_labels:
        r = r.replace(target=False, contrast=False)      # no target labels: no target CE, no pixel contrast
    if not (r.source or r.target or r.consistency):
        raise ValueError("the recipe trains nothing: switch on the source CE, the target CE or consistency.")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tt = data.target_train
    lab_idx = data.labelled_index(n_labels)
    unl_idx = data.unlabelled_index(n_labels)
    if all_labels:
        lab_idx = torch.arange(len(tt))
    tl_images, tl_labels = tt.images[lab_idx], tt.labels[lab_idx]
    if pseudo_labels is not None:
        if pseudo_labels.shape != tt.labels.shape:
            raise ValueError(f"pseudo_labels must be {tuple(tt.labels.shape)}, got {tuple(pseudo_labels.shape)}.")
        merged = pseudo_labels.clone()
        merged[lab_idx] = tt.labels[lab_idx]
        tl_images, tl_labels = tt.images, merged
    if r.consistency and len(unl_idx) < 2:
        raise ValueError("consistency needs at least 2 unlabelled target images; lower n_labels.")
    c = data.num_classes
    w_s = class_weights(data.source.labels, c) if (r.class_weighting and r.source) else None
    w_t = class_weights(tl_labels, c) if (r.class_weighting and r.target) else None
    with torch_threads(r.threads if device.type == "cpu" else None):
        student = build_segnet(c, r.widths, r.proj_dim, r.norm, seed=seed).to(device)
        teacher = build_segnet(c, r.widths, r.proj_dim, r.norm, seed=seed + 1000).to(device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        fused = r.fused or not has_batchnorm(student)
        opt = NesterovSGD(student.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
        bs = r.batch_size + (r.batch_size % 2 if r.consistency and r.cutmix else 0)
        src_b = _Batches(len(data.source), r.batch_size, gen)
        tl_b = _Batches(len(tl_images), r.batch_size, gen) if r.target else None
        views = _UnlabelledViews(tt.images[unl_idx], tt.labels[unl_idx], r.aug, gen) if r.consistency else None
        tu_b = _Batches(len(unl_idx), bs, gen, views.redraw) if r.consistency else None
        warm = int(round(r.warmup * r.steps))
        drop = int(np.floor(r.lr_drop * r.steps))
        names = ("loss", "ce_source", "ce_target", "cr", "pc", "alpha", "teacher_conf", "teacher_acc")
        hist: dict[str, list[float]] = {k: [] for k in names}
        steps: Iterable[int] = range(r.steps)
        if progress is not None:
            steps = progress(steps)
        start = time.perf_counter()
        student.train()
        for step in steps:
            logs = dict.fromkeys(names, float("nan"))
            inputs, parts = [], []
            if r.source:
                i = src_b.next()
                xs, ys = _hflip(data.source.images[i], data.source.labels[i], gen)
                inputs.append(xs)
                parts.append("s")
            if r.target:
                i = tl_b.next()
                xt, yt = _hflip(tl_images[i], tl_labels[i], gen)
                inputs.append(xt)
                parts.append("t")
            if r.consistency:
                i = tu_b.next()
                weak, truth_u, strong = views.weak[i], views.truth[i], views.strong[i]
                masks = cutmix_masks(len(weak), *weak.shape[-2:], generator=gen) if r.cutmix else None
                teacher.train(r.teacher_bn == "train")
                student_in, mixed_t = cutmix_views(teacher, weak.to(device), strong.to(device), masks)
                inputs.append(student_in)
                parts.append("u")
            sizes = [len(x) for x in inputs]
            want_emb = r.contrast and r.target and step >= warm
            if fused:
                out = student(torch.cat(inputs).to(device), with_embedding=want_emb)
                logits_all, emb_all = out if want_emb else (out, None)
                chunks = dict(zip(parts, torch.split(logits_all, sizes)))
                embs = dict(zip(parts, torch.split(emb_all, sizes))) if want_emb else {}
            else:
                chunks, embs = {}, {}
                for p, x in zip(parts, inputs):
                    out = student(x.to(device), with_embedding=want_emb and p == "t")
                    if want_emb and p == "t":
                        chunks[p], embs[p] = out
                    else:
                        chunks[p] = out
            loss = torch.zeros((), device=device)
            if r.source:
                ce_s = weighted_cross_entropy(chunks["s"], ys.to(device), w_s)
                loss = loss + ce_s
                logs["ce_source"] = float(ce_s.detach())
            if r.target:
                ce_t = weighted_cross_entropy(chunks["t"], yt.to(device), w_t)
                loss = loss + ce_t
                logs["ce_target"] = float(ce_t.detach())
            if r.consistency:
                with torch.no_grad():
                    truth_mix = truth_u.to(device)
                    if masks is not None:
                        truth_mix = cutmix(truth_mix[:, None].double(), masks)[:, 0].long()
                    conf, t_pred = torch.softmax(mixed_t, 1).max(1)
                    sure = conf > 0.9
                    logs["teacher_conf"] = float(sure.float().mean())
                    if bool(sure.any()):
                        logs["teacher_acc"] = float((t_pred[sure] == truth_mix[sure]).float().mean())
                cr = consistency_loss(chunks["u"], mixed_t, r.cr_threshold)
                loss = loss + r.lam * cr
                logs["cr"] = float(cr.detach())
            if want_emb:
                pred_t = chunks["t"].detach().argmax(1)
                anchors, a_lab = sample_anchors(embs["t"], yt.to(device), pred_t, r.pc_max_samples,
                                                r.pc_max_views, generator=gen)
                if anchors is not None and len(torch.unique(a_lab)) > 1:
                    pc = pixel_contrast_loss(anchors, a_lab, r.temperature, r.base_temperature)
                    loss = loss + r.gamma * pc
                    logs["pc"] = float(pc.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), r.clip_norm)
            opt.step()
            logs["alpha"] = ema_update(teacher, student, step, r.ema_alpha)
            logs["loss"] = float(loss.detach())
            if step + 1 == drop:
                for g in opt.param_groups:
                    g["lr"] *= 0.1
            for k in names:
                hist[k].append(logs[k])
            if callback is not None:
                callback(step, logs)
        seconds = time.perf_counter() - start
        result = evaluate(student, data.target_val, c)
        if r.consistency:
            result["teacher_miou"] = evaluate(teacher, data.target_val, c)["miou"]
    result.update(state={k: v.detach().cpu() for k, v in student.state_dict().items()},
                  history={k: torch.tensor(v) for k, v in hist.items()}, seconds=seconds, n_labels=n_labels)
    return result


def load_student(result: dict[str, Any], recipe: Recipe, num_classes: int = 4) -> SegNet:
    """Rebuild the trained student of a :func:`train` result."""
    model = SegNet(num_classes, recipe.widths, recipe.proj_dim, recipe.norm)
    model.load_state_dict(result["state"])
    return model.eval()


def self_train(data: DomainData, n_labels: int, result: dict[str, Any], recipe: Recipe = Recipe(), seed: int = 0,
               threshold: float = 0.9, rounds: int = 1, **kwargs: Any) -> dict[str, Any]:
    """Self-training rounds after a :func:`train` run: pseudo-label the target training images with the
    current student (max prob > ``threshold``), restart from initialisation and retrain with the same recipe.
    Returns the last round's result, with ``pseudo`` (coverage and accuracy of the last pseudo-labels
    on the unlabelled images)."""
    c = data.num_classes
    unl = data.unlabelled_index(n_labels)
    for _ in range(rounds):
        model = load_student(result, recipe, c)
        pl = pseudo_label(model, data.target_train.images, threshold)
        keep = pl[unl] != IGNORE_INDEX
        truth = data.target_train.labels[unl]
        quality = {"coverage": float(keep.float().mean()),
                   "accuracy": float((pl[unl][keep] == truth[keep]).float().mean()) if bool(keep.any())
                   else float("nan")}
        result = train(data, n_labels, recipe, seed, pseudo_labels=pl, **kwargs)
        result["pseudo"] = quality
    return result


def ensemble_evaluate(results: list[dict[str, Any]], recipe: Recipe, data: SegSet, num_classes: int
                      ) -> dict[str, Any]:
    """Average the softmax outputs of several trained students (the paper's r2 + r3 ensemble) and evaluate."""
    probs = sum(predict_proba(load_student(r, recipe, num_classes), data.images) for r in results) / len(results)
    cm = confusion_matrix(probs.argmax(1), data.labels, num_classes)
    return {"cm": cm, "iou": torch.from_numpy(iou_per_class(cm)), "miou": mean_iou(cm)}


__all__ = ["Recipe", "BASELINES", "recipe_for", "train", "self_train", "pseudo_label", "pseudo_label_quality",
           "evaluate", "ensemble_evaluate", "cutmix_views", "load_student", "torch_threads"]
