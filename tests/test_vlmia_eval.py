"""ROC metrics against a direct computation (ties, drop_intermediate, strict < at 5 % FPR) and the slice rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lionsnb.vlmia import roc_metrics, slices
from lionsnb.vlmia.evaluation import roc_summary, tpr_at_fpr
from lionsnb.vlmia.slicing import sequence_length


def direct_roc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, float]:
    """ROC of "lower score = member" from scratch: one point per distinct threshold, collinear points dropped as
    sklearn's drop_intermediate does; returns (auc, accuracy, tpr@5 % strict, Mann-Whitney AUC)."""
    s = -np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    thresholds = np.unique(s)[::-1]
    tps = np.array([0] + [int(((s >= t) & y).sum()) for t in thresholds])
    fps = np.array([0] + [int(((s >= t) & ~y).sum()) for t in thresholds])
    keep = [0]
    for i in range(1, len(tps) - 1):  # a point is dropped when it lies on the line through its neighbours' steps
        if (fps[i + 1] - fps[i]) != (fps[i] - fps[i - 1]) or (tps[i + 1] - tps[i]) != (tps[i] - tps[i - 1]):
            keep.append(i)
    keep.append(len(tps) - 1)
    fpr, tpr = fps[keep] / (~y).sum(), tps[keep] / y.sum()
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    acc = float(np.max(1 - (fpr + 1 - tpr) / 2))
    t5 = float(tpr[[i for i in range(len(fpr)) if fpr[i] < 0.05][-1]])
    pos, neg = s[y], s[~y]
    mw = float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))
    return area, acc, t5, mw


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_metrics_match_direct_computation_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 120
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(0, 1, n) - 0.6 * labels, 1)  # rounding makes many ties
    auc, acc, t5 = roc_metrics(scores, labels)
    d_auc, d_acc, d_t5, mw = direct_roc(scores, labels)
    assert auc == pytest.approx(d_auc, abs=1e-12) and auc == pytest.approx(mw, abs=1e-12)
    assert acc == pytest.approx(d_acc, abs=1e-12)
    assert t5 == pytest.approx(d_t5, abs=1e-12)
    assert auc > 0.5  # lower score = member: members were shifted down
    # lists, arrays and tensors are all accepted
    assert roc_metrics(list(scores), list(labels)) == (auc, acc, t5)
    assert roc_metrics(torch.tensor(scores), torch.tensor(labels)) == (auc, acc, t5)


def test_tpr_at_5_fpr_is_strict_and_uses_dropped_points() -> None:
    # 20 non-members: one non-member above the threshold is an fpr of exactly 0.05, which must be excluded
    member = np.array([0.0, 0.1, 1.0, 1.1, 3.0])
    non = np.array([0.5] + [5.0 + i for i in range(19)])
    scores = np.r_[member, non]
    labels = np.r_[np.ones(5), np.zeros(20)]
    auc, acc, t5 = roc_metrics(scores, labels)
    assert t5 == pytest.approx(2 / 5)  # the point (0.05, 1.0) is not counted
    assert tpr_at_fpr(scores, labels, 0.051) == pytest.approx(1.0)
    # a diagonal run of tied member/non-member pairs: its inner points are dropped, which lowers TPR@5%FPR
    m = 100
    member = np.r_[[-10.0, -9.0], np.arange(10.0), 100 + np.arange(m - 12.0)]
    non = np.r_[np.arange(10.0), 200 + np.arange(m - 10.0)]
    labels = np.r_[np.ones(m), np.zeros(m)]
    _, _, t5 = roc_metrics(np.r_[member, non], labels)
    assert t5 == pytest.approx(0.02)           # not 0.06, the value on the undropped diagonal at fpr 0.04
    assert direct_roc(np.r_[member, non], labels)[2] == pytest.approx(0.02)


def test_roc_summary_and_errors() -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(200), np.zeros(200)]
    scores = rng.normal(0, 1, 400) - labels
    out = roc_summary(scores, labels)
    assert set(out) == {"auc", "accuracy", "tpr_at_5_fpr", "tpr_at_1_fpr"}
    assert out["tpr_at_1_fpr"] <= out["tpr_at_5_fpr"]
    assert roc_metrics(-scores, labels)[0] == pytest.approx(1 - out["auc"])  # the sign convention matters
    with pytest.raises(ValueError, match="NaN"):
        roc_metrics([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="same length"):
        roc_metrics([0.1, 0.2], [1])


def layout(c0: int, n_image: int, n_inst: int, n_desc: int) -> tuple[list[str], list[int]]:
    """A synthetic sequence: chunk 0 = BOS + (c0 - 1) prefix tokens; N image positions; the last chunk = BOS +
    instruction + description, whose BOS is dropped in the sequence. Returns labels per position and chunk lengths."""
    seq = ["bos"] + ["prefix"] * (c0 - 1) + ["image"] * n_image + ["inst"] * n_inst + ["desc"] * n_desc
    return seq, [c0, 1 + n_inst + n_desc]


@pytest.mark.parametrize("c0,n_image,n_inst,n_desc", [(2, 16, 5, 12), (35, 576, 9, 31), (1, 4, 1, 0), (3, 32, 2, 1)])
def test_slices_on_synthetic_layouts(c0: int, n_image: int, n_inst: int, n_desc: int) -> None:
    seq, chunks = layout(c0, n_image, n_inst, n_desc)
    out = slices(chunks, n_image, n_desc)
    assert sequence_length(chunks, n_image) == len(seq) == c0 + n_image + chunks[1] - 1
    assert set(seq[out["img"]]) == {"image"} and len(seq[out["img"]]) == n_image
    assert seq[out["inst"]] == ["inst"] * n_inst
    assert seq[out["desp"]] == ["desc"] * n_desc
    assert seq[out["inst_desp"]] == ["inst"] * n_inst + ["desc"] * n_desc
    assert out["inst_desp"].stop == len(seq)


def test_slices_without_image_and_errors() -> None:
    out = slices([4, 8], 0, 3)
    assert "img" not in out and out["desp"] == slice(8, 11) and out["inst"] == slice(4, 8)
    with pytest.raises(ValueError, match="exactly 2 chunks"):
        slices([3, 4, 5], 16, 2)
    with pytest.raises(ValueError, match="fit in the last chunk"):
        slices([3, 4], 16, 4)
