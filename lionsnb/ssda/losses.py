"""The losses of the SSDA framework (Morales-Brotons, Chrysos, Tzoumas, Cevher, arXiv 2411.18728), as the
authors' code runs them (``Morales97/ssda``; the pixel contrast follows Wang et al., ICCV 2021).

Total loss of one step (paper Sec. 3; ``main_SSDA.py``)::

    L = CE_{w_s}(f(x_s), y_s) + CE_{w_t}(f(x_tl), y_tl) + lambda * L_CR + gamma * L_PC * 1[t >= warm-up]

* :func:`weighted_cross_entropy`: each supervised term is its own class-weighted mean (never pooled);
* :func:`class_weights`: w_c = sqrt(median_k f_k / f_c) with numpy's median;
* :func:`consistency_loss`: soft-target cross-entropy between the EMA teacher (weak view) and the student
  (strong view), no threshold in the paper's runs;
* :func:`sample_anchors` and :func:`pixel_contrast_loss`: supervised pixel contrast with hard/easy anchors.

Everything keeps the input dtype (float64 works) and is differentiable where the reference is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lionsnb.ssda.data import IGNORE_INDEX


def _check_logits(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be [B, C, H, W] logits, got shape {tuple(x.shape)}.")


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     threshold: float | None = None) -> torch.Tensor:
    """Consistency regularisation L_CR (the ``ce`` loss of ``loss/consistency.py``).

    p = softmax(teacher_logits) is **detached** (no gradient reaches the teacher); per pixel
    l_i = -sum_c p_ic log softmax(student_logits)_ic.

    * ``threshold=None`` (the paper's runs): the plain mean of l_i over all B*H*W pixels; no temperature,
      no mask, no ignore index, no class weights.
    * ``threshold=tau`` (the ``ce_th`` ablation): keep pixels whose teacher max-probability is **strictly**
      greater than tau and average over the kept pixels only; if none is kept, return 0 (a zero scalar that is
      still connected to the student's graph, so ``backward`` works and gives zero gradients).

    Args:
        student_logits: ``[B, C, H, W]``, the student on the strong (CutMixed) view.
        teacher_logits: ``[B, C, H, W]``, the (EMA) teacher on the weak view, CutMixed with the same mask.
        threshold: None, or the confidence threshold of the ablation.
    Returns:
        a scalar tensor.
    """
    _check_logits("student_logits", student_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}.")
    probs = torch.softmax(teacher_logits.detach(), dim=1)
    per_pixel = -(probs * torch.log_softmax(student_logits, dim=1)).sum(dim=1)   # [B, H, W]
    if threshold is None:
        return per_pixel.mean()
    keep = probs.max(dim=1).values > threshold
    n = int(keep.sum())
    if n == 0:
        return student_logits.sum() * 0.0
    return per_pixel[keep].sum() / n


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Class-weighted cross-entropy (``loss/cross_entropy.py``): sum_i w_{y_i} nll_i / sum_i w_{y_i} over the
    pixels whose target is not ``ignore_index``; ``class_weights=None`` gives the plain mean.

    Weights of classes absent from the batch have no effect; with one class present they cancel.

    Choices where the reference is undefined: **every pixel ignored** returns 0 (a zero scalar connected to
    the graph) instead of the reference's 0/0 = NaN, so a batch of fully ignored pseudo-labels does not poison
    training. Logits whose height *and* width differ from the target's are bilinearly upsampled with
    ``align_corners=True`` (the reference's resize quirk); at the same size nothing is resized.

    Args:
        logits: ``[B, C, H, W]``.
        target: integer ``[B, H, W]``.
        class_weights: ``[C]`` or None.
        ignore_index: label of pixels to drop (250 in the authors' code).
    Returns:
        a scalar tensor.
    """
    _check_logits("logits", logits)
    if target.dim() != 3 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be [B, H, W] with B={logits.shape[0]}, got {tuple(target.shape)}.")
    if logits.shape[2] != target.shape[1] and logits.shape[3] != target.shape[2]:
        logits = F.interpolate(logits, size=target.shape[1:], mode="bilinear", align_corners=True)
    elif logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape[2:])} and target {tuple(target.shape[1:])} differ in size.")
    target = target.long()
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    if class_weights is not None:
        class_weights = class_weights.to(dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index, reduction="mean")


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class weights w_c = sqrt(median_k f_k / f_c) (``utils/class_balance.py``), where f_c is the pixel
    frequency of class c among the labels in ``[0, num_classes)`` (other values, e.g. 250, are not counted)
    and the median over all ``num_classes`` frequencies follows **numpy's** convention (mean of the two middle
    values for an even count; ``torch.median`` would take the lower one).

    Choices where the reference is undefined: a class **absent** from the labels gets weight 0 (reference:
    sqrt(m/0) = inf); it never occurs among those labels, so its weight never matters for them. If more than
    half of the classes are absent, the median frequency is 0 (reference: weights 0 and NaN); the median is then
    taken over the present classes. No labelled pixel at all raises ValueError.

    Returns:
        float64 tensor ``[num_classes]``.
    """
    labels = torch.as_tensor(labels).reshape(-1).long()
    labels = labels[(labels >= 0) & (labels < num_classes)]
    if labels.numel() == 0:
        raise ValueError("class_weights: no labelled pixel in [0, num_classes); pass the labelled target maps.")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    freq = counts / counts.sum()
    median = torch.quantile(freq, 0.5)            # linear interpolation = numpy's median
    if median == 0:
        median = torch.quantile(freq[freq > 0], 0.5)
    weights = torch.zeros(num_classes, dtype=torch.float64)
    present = freq > 0
    weights[present] = torch.sqrt(median / freq[present])
    return weights


def sample_anchors(features: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                   max_samples: int = 1024, max_views: int = 100, ignore_index: int = IGNORE_INDEX,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Hard/easy anchor sampling of the supervised pixel contrast (``_hard_anchor_sampling``).

    1. Qualifying (image, class) pairs: per image, each class c != ignore with **strictly more than**
       ``max_views`` pixels; rows are ordered image-major, then by ascending class id.
    2. n_view = min(max_samples // #pairs, max_views), the same for every row.
    3. Per pair, hard pixels have label c and prediction != c, easy ones label c and prediction = c. With
       h hard and e easy: if h >= n_view/2 and e >= n_view/2, take floor(n_view/2) hard and the rest easy;
       elif h >= n_view/2, all e easy and n_view - e hard; else all h hard and n_view - h easy.
    4. Each pool is sampled without replacement, uniformly (fresh randomness on every call, or ``generator``).

    Args:
        features: ``[B, D, H, W]`` embeddings (used as they are: no normalisation).
        labels: ``[B, H, W]`` ground truth at the feature size (resizing is the caller's job).
        predictions: ``[B, H, W]`` the student's argmax.
    Returns:
        ``(anchors [A, n_view, D], anchor_labels [A])``, or ``(None, None)`` when no pair qualifies.
    """
    if features.dim() != 4 or labels.shape != predictions.shape or labels.shape != (features.shape[0],
                                                                                      *features.shape[2:]):
        raise ValueError(f"features [B, D, H, W] {tuple(features.shape)}, labels {tuple(labels.shape)} and "
                         f"predictions {tuple(predictions.shape)} must share B, H, W (resize labels first).")
    b, d = features.shape[:2]
    flat = features.reshape(b, d, -1).transpose(1, 2)          # [B, HW, D], pixel p = h*W + w
    lab = labels.reshape(b, -1).long()
    pred = predictions.reshape(b, -1).long()
    valid = (lab != ignore_index) & (lab >= 0)
    if not bool(valid.any()):
        return None, None
    n_cls = int(lab[valid].max()) + 1
    counts = torch.zeros(b, n_cls, dtype=torch.long, device=lab.device)
    counts.scatter_add_(1, torch.where(valid, lab, 0), valid.long())
    img_idx, cls_idx = torch.nonzero(counts > max_views, as_tuple=True)   # image-major, ascending class
    n_pairs = img_idx.numel()
    if n_pairs == 0:
        return None, None
    n_view = min(max_samples // n_pairs, max_views)
    if n_view < 1:
        return None, None
    is_c = lab[img_idx] == cls_idx[:, None]                       # [P, HW]
    correct = pred[img_idx] == cls_idx[:, None]
    hard, easy = is_c & ~correct, is_c & correct
    h, e = hard.sum(1), easy.sum(1)
    half = n_view / 2
    both = (h >= half) & (e >= half)
    hard_only = ~both & (h >= half)
    n_hard = torch.where(both, torch.full_like(h, n_view // 2), torch.where(hard_only, n_view - e, h))
    # a uniformly random order within each pool: sort random keys, pool members first
    keys = torch.rand(hard.shape, generator=generator, device=hard.device) if generator is None or \
        generator.device == hard.device else torch.rand(hard.shape, generator=generator).to(hard.device)
    hard_order = torch.argsort(torch.where(hard, keys, keys + 2.0), dim=1)[:, :n_view]
    easy_order = torch.argsort(torch.where(easy, keys, keys + 2.0), dim=1)[:, :n_view]
    j = torch.arange(n_view, device=hard.device)[None]
    take_hard = j < n_hard[:, None]
    easy_pos = (j - n_hard[:, None]).clamp(min=0)
    pixel = torch.where(take_hard, hard_order, easy_order.gather(1, easy_pos))
    anchors = flat[img_idx[:, None], pixel]                        # [P, n_view, D]
    return anchors, cls_idx


def pixel_contrast_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
                        base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised pixel contrast L_PC (``loss/pixel_contrast.py`` ``_contrastive``; Wang et al. 2021)::

        s_kj = z_k . z_j / tau
        l_k  = -(tau / tau_b) * mean_{p in P(k)} [ s_kp - log( exp(s_kp) + sum_{n in N(k)} exp(s_kn) ) ]
        L_PC = mean_k l_k

    over the N = A * n_view samples: positives P(k) are the other samples with k's label (self excluded),
    negatives N(k) the samples of any other label. Each denominator holds **one** positive plus all
    negatives (not SupCon's sum over all non-self samples). No normalisation inside; computed with a row-max
    shift, so large logits do not overflow. A single class (no negatives) gives 0.

    Args:
        features: ``[A, n_view, D]`` sampled embeddings.
        labels: ``[A]`` class of each row.
    Returns:
        a scalar tensor.
    """
    if features.dim() != 3 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be [A, n_view, D] and labels [A], got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}.")
    a, n_view, d = features.shape
    z = features.transpose(0, 1).reshape(a * n_view, d)         # view-major stacking, as the reference
    y = labels.repeat(n_view)
    n = z.shape[0]
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    same = y[:, None] == y[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    positive = same & ~eye
    negative = ~same
    # log( exp(s_kp) + sum_n exp(s_kn) ) for every pair (k, p), stably
    neg_logits = logits.masked_fill(~negative, float("-inf"))
    neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)          # -inf when k has no negative
    log_denominator = torch.logaddexp(logits, neg_lse.expand_as(logits))
    log_prob = logits - log_denominator
    n_pos = positive.sum(dim=1)
    mean_log_prob = (log_prob * positive).sum(dim=1) / n_pos.to(z.dtype)
    return -(temperature / base_temperature) * mean_log_prob.mean()
