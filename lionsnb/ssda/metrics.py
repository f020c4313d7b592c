"""Segmentation metrics as the authors evaluate: a confusion matrix over the labelled pixels, per-class IoU and
mIoU as the **nan-mean** over classes (a class absent from both the ground truth and the prediction has no
IoU and is skipped; ``evaluation/metrics.py`` of ``Morales97/ssda``).

Convention: rows are ground truth, columns are predictions (as ``sklearn.metrics.confusion_matrix``).
Note that torchmetrics' ``MulticlassJaccardIndex`` scores absent classes differently (0 or 1, not skipped).
"""
from __future__ import annotations

import numpy as np
import torch

from lionsnb.ssda.data import IGNORE_INDEX


def confusion_matrix(predictions: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts: entry (i, j) = pixels of true class i predicted as j.

    Pixels whose target is ``ignore_index`` (or outside ``[0, num_classes)``) are not counted.
    """
    predictions = torch.as_tensor(predictions).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long()
    if predictions.shape != target.shape:
        raise ValueError(f"predictions ({predictions.numel()} pixels) and target ({target.numel()}) differ in size.")
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    if bool(((predictions[keep] < 0) | (predictions[keep] >= num_classes)).any()):
        raise ValueError(f"predictions must lie in [0, {num_classes}).")
    index = target[keep] * num_classes + predictions[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def iou_per_class(cm: torch.Tensor) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN) per class; NaN for a class absent from both ground truth and prediction."""
    cm = torch.as_tensor(cm).to(torch.float64)
    tp = torch.diagonal(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return iou.numpy()


def mean_iou(cm: torch.Tensor) -> float:
    """mIoU = nan-mean of :func:`iou_per_class` (NaN only if the matrix is empty)."""
    iou = iou_per_class(cm)
    if np.all(np.isnan(iou)):
        return float("nan")
    return float(np.nanmean(iou))


def pixel_accuracy(cm: torch.Tensor) -> float:
    cm = torch.as_tensor(cm).to(torch.float64)
    return float(torch.diagonal(cm).sum() / cm.sum().clamp(min=1))
