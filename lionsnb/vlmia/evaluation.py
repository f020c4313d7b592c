"""ROC evaluation of membership scores, as the authors evaluate them (``eval.py#L22-L48`` of LIONS-EPFL/VL-MIA@859bc99).

Scores follow the convention of :mod:`lionsnb.vlmia.metrics`: **lower = member**, so the ROC is that of
``-score`` with label 1 = member. The ROC points are scikit-learn's ``roc_curve`` with its default
``drop_intermediate=True``; AUC is the trapezoidal area, accuracy the best balanced accuracy over the ROC
points, and TPR@5%FPR the tpr at the *last* point with fpr strictly below 0.05.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["roc_metrics", "roc_points", "tpr_at_fpr", "roc_summary", "mann_whitney_auc"]


def _arrays(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    def as_np(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        return np.asarray(x)

    s = as_np(scores).astype(np.float64).ravel()
    y = as_np(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.size} and {y.size}")
    if s.size == 0:
        raise ValueError("roc_metrics needs at least one score")
    if not np.isin(y, (0, 1, True, False)).all():
        raise ValueError("labels must be 1 (member) or 0 (non-member)")
    if np.isnan(s).any():
        raise ValueError(f"{int(np.isnan(s).sum())} scores are NaN (e.g. a slice with a single row); drop them or "
                         "score a longer slice")
    return s, y.astype(bool)


def roc_points(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of ``sklearn.metrics.roc_curve(labels, -scores)`` (default ``drop_intermediate=True``)."""
    from sklearn.metrics import roc_curve

    s, y = _arrays(scores, labels)
    fpr, tpr, _ = roc_curve(y, -s)
    return fpr, tpr


def tpr_at_fpr(scores: Any, labels: Any, max_fpr: float = 0.05) -> float:
    """TPR at the last ROC point whose fpr is strictly below ``max_fpr`` (the official rule at 0.05)."""
    fpr, tpr = roc_points(scores, labels)
    return float(tpr[np.where(fpr < max_fpr)[0][-1]])


def roc_metrics(scores: Sequence[float] | Any, labels: Sequence[int] | Any) -> tuple[float, float, float]:
    """``(auc, accuracy, tpr_at_5_fpr)`` exactly as ``eval.do_plot`` (lower score = member, label 1 = member).

    auc = trapezoidal area under ``roc_curve(labels, -scores)``; accuracy = max over the ROC points of
    1 - (fpr + 1 - tpr)/2; tpr_at_5_fpr = tpr at the last point with fpr < 0.05 (strict).
    """
    from sklearn.metrics import auc as area

    fpr, tpr = roc_points(scores, labels)
    acc = float(np.max(1 - (fpr + (1 - tpr)) / 2))
    return float(area(fpr, tpr)), acc, float(tpr[np.where(fpr < 0.05)[0][-1]])


def roc_summary(scores: Any, labels: Any) -> dict[str, float]:
    """``auc``, ``accuracy``, ``tpr_at_5_fpr`` (official) and ``tpr_at_1_fpr`` (same strict rule at 1 %)."""
    auc, acc, t5 = roc_metrics(scores, labels)
    return {"auc": auc, "accuracy": acc, "tpr_at_5_fpr": t5, "tpr_at_1_fpr": tpr_at_fpr(scores, labels, 0.01)}


def mann_whitney_auc(scores: Any, labels: Any) -> float:
    """AUC as the probability that a random member scores lower than a random non-member (ties count 1/2): the
    Mann-Whitney statistic, equal to the trapezoidal area under the ROC of ``-score``."""
    s, y = _arrays(scores, labels)
    members, others = s[y], s[~y]
    if members.size == 0 or others.size == 0:
        raise ValueError("the AUC needs at least one member and one non-member")
    less = (members[:, None] < others[None, :]).mean()
    ties = (members[:, None] == others[None, :]).mean()
    return float(less + 0.5 * ties)
