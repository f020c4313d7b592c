"""TOFU's evaluation metrics (Maini et al. 2024; ``locuslab/tofu`` ``utils.py`` / ``evaluate_util.py``) and ROUGE-L.

Inputs are *per-token average* NLLs of answers, one per answer (spec §4.1): ``correct_nll`` ``[N]`` (the "base" answer:
paraphrased for retain/forget, original for real authors / world facts) and ``perturbed_nll`` ``[N, K]`` (the K wrong
answers). Everything is computed in float64 NumPy, in the same order of operations as TOFU, without epsilons.

* :func:`truth_ratio`: R_i = P(wrong)/P(correct), arithmetic (Model Utility) or geometric (Forget Quality) mean of the
  perturbed answers; modes ``raw``, ``closer_to_1_better`` (forget), ``true_better`` (retain / RA / WF).
* :func:`probability`: mean exp(-L), or the normalised p_true / (p_true + sum p_wrong) for RA / WF.
* :func:`forget_quality`: the two-sample KS p-value against the retain model's truth ratios.
* :func:`model_utility`: the harmonic mean of the nine numbers (0 if any is 0).
* :func:`rouge_l_recall` (TOFU: recall, Porter stemmer) and :func:`rouge_l_f1` (MUSE: F1, no stemmer), through the
  ``rouge_score`` package the reference code uses.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

TRUTH_RATIO_MODES = ("raw", "closer_to_1_better", "true_better")
PERTURBED_MEANS = ("arithmetic", "geometric")


def _as_array(x, name: str, ndim: int) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.array(x, dtype=np.float64)  # a copy: inputs are never modified
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def truth_ratio(correct_nll, perturbed_nll, mode: str = "raw", perturbed_mean: str = "arithmetic"):
    """TOFU's truth ratio, perturbed over correct (spec §4.2).

    ``perturbed_mean="arithmetic"``: R_i = mean_j exp(-perturbed_ij) / exp(-correct_i) (TOFU paper; Model Utility,
    ``utils.py`` ``get_model_utility``). ``"geometric"``: R_i = exp(correct_i - mean_j perturbed_ij) (Forget Quality,
    TOFU's stored ``truth_ratio``, NPO repo, open-unlearning). ``mode``: ``"raw"`` returns R ``[N]``;
    ``"closer_to_1_better"`` mean_i min(R_i, 1/R_i) (Forget Truth Ratio); ``"true_better"`` mean_i max(0, 1 - R_i)
    (the Truth Ratio inside Model Utility). No epsilon (TOFU divides exactly).
    """
    if mode not in TRUTH_RATIO_MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(TRUTH_RATIO_MODES)}")
    if perturbed_mean not in PERTURBED_MEANS:
        raise ValueError(f"perturbed_mean {perturbed_mean!r}: use one of {', '.join(PERTURBED_MEANS)}")
    correct = _as_array(correct_nll, "correct_nll", 1)
    perturbed = _as_array(perturbed_nll, "perturbed_nll", 2)
    if perturbed.shape[0] != correct.shape[0]:
        raise ValueError(f"perturbed_nll has {perturbed.shape[0]} rows, correct_nll {correct.shape[0]} items")
    if perturbed_mean == "arithmetic":
        ratio = np.exp(-1 * perturbed).mean(-1) / np.exp(-1 * correct)
    else:
        ratio = np.exp(correct - perturbed.mean(axis=-1))
    if mode == "raw":
        return ratio
    if mode == "closer_to_1_better":
        return float(np.mean(np.minimum(ratio, 1 / ratio)))
    return float(np.mean(np.maximum(0, 1 - ratio)))


def probability(correct_nll, perturbed_nll=None) -> float:
    """TOFU's "Probability" (spec §4.3).

    Without ``perturbed_nll``: mean_i exp(-correct_i) (retain and forget sets, from ``avg_gt_loss``). With it
    (``[N, K]``): mean_i p_i / (p_i + sum_j q_ij), p = exp(-correct), q = exp(-perturbed) (real authors, world facts);
    the true answer's probability is in the denominator. No epsilon.
    """
    correct = _as_array(correct_nll, "correct_nll", 1)
    p_true = np.exp(-1 * correct)
    if perturbed_nll is None:
        return float(np.mean(p_true))
    perturbed = _as_array(perturbed_nll, "perturbed_nll", 2)
    if perturbed.shape[0] != correct.shape[0]:
        raise ValueError(f"perturbed_nll has {perturbed.shape[0]} rows, correct_nll {correct.shape[0]} items")
    p_false = np.exp(-1 * perturbed)
    p_all = np.concatenate([np.expand_dims(p_true, axis=-1), p_false], axis=1).sum(-1)
    return float(np.mean(p_true / p_all))


def forget_quality(unlearned_truth_ratios, retain_truth_ratios) -> float:
    """Forget Quality: the two-sided two-sample KS p-value (``scipy.stats.ks_2samp``, defaults) between the per-item
    forget-set truth ratios of the unlearned model and of the retain model (spec §4.4; TOFU ``get_forget_quality``).

    Pass the raw per-item ratios with ``perturbed_mean="geometric"`` (either orientation: KS is invariant to a
    monotone map of both samples). Identical samples give 1.
    """
    from scipy.stats import ks_2samp

    a = _as_array(unlearned_truth_ratios, "unlearned_truth_ratios", 1)
    b = _as_array(retain_truth_ratios, "retain_truth_ratios", 1)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget_quality needs at least one truth ratio in each sample")
    return float(ks_2samp(a, b).pvalue)


def ks_statistic(unlearned_truth_ratios, retain_truth_ratios) -> float:
    """The KS statistic (max distance between the two empirical CDFs) behind :func:`forget_quality`."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(_as_array(unlearned_truth_ratios, "a", 1), _as_array(retain_truth_ratios, "b", 1)).statistic)


def model_utility(values: Iterable[float]) -> float:
    """TOFU's Model Utility: the harmonic mean n / sum(1/x) of its numbers (``scipy.stats.hmean``), 0 if any is 0.

    For TOFU, the nine numbers {Probability, ROUGE, Truth Ratio} x {retain, real authors, world facts} (spec §4.5).
    """
    from scipy.stats import hmean

    arr = _as_array(list(values), "values", 1)
    if arr.size == 0:
        raise ValueError("model_utility needs at least one number")
    if np.any(arr < 0) or np.any(~np.isfinite(arr)):
        raise ValueError(f"model_utility is the harmonic mean of non-negative finite numbers, got {arr.tolist()}")
    if np.any(arr == 0):
        return 0.0
    return float(hmean(arr))


# --------------------------------------------------------------------------- ROUGE-L


@lru_cache(maxsize=4)
def _scorer(use_stemmer: bool):
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("ROUGE-L needs the rouge_score package: pip install rouge_score") from err
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(reference: str, prediction: str, use_stemmer: bool = True):
    """ROUGE-L (precision, recall, fmeasure) of ``prediction`` against ``reference``, as ``rouge_score`` computes it
    (``scorer.score(target=reference, prediction=prediction)``)."""
    return _scorer(bool(use_stemmer)).score(reference, prediction)["rougeL"]


def rouge_l_recall(references: Sequence[str] | str, predictions: Sequence[str] | str) -> np.ndarray | float:
    """TOFU's ROUGE: ROUGE-L **recall** with the Porter stemmer (``evaluate_util.py`` ``eval_rouge_recall``):
    LCS(reference, prediction) / number of reference tokens. Strings in, a float out; lists in, an array out."""
    if isinstance(references, str) and isinstance(predictions, str):
        return float(rouge_l(references, predictions, use_stemmer=True).recall)
    refs, preds = list(references), list(predictions)
    if len(refs) != len(preds):
        raise ValueError(f"{len(refs)} references and {len(preds)} predictions")
    return np.array([rouge_l(r, p, use_stemmer=True).recall for r, p in zip(refs, preds)], dtype=np.float64)


def rouge_l_f1(references: Sequence[str] | str, predictions: Sequence[str] | str) -> np.ndarray | float:
    """MUSE's ROUGE: ROUGE-L **F1** without stemming (``muse_bench`` VerbMem / KnowMem)."""
    if isinstance(references, str) and isinstance(predictions, str):
        return float(rouge_l(references, predictions, use_stemmer=False).fmeasure)
    refs, preds = list(references), list(predictions)
    if len(refs) != len(preds):
        raise ValueError(f"{len(refs)} references and {len(preds)} predictions")
    return np.array([rouge_l(r, p, use_stemmer=False).fmeasure for r, p in zip(refs, preds)], dtype=np.float64)


# --------------------------------------------------------------------------- MUSE (method note §7)


def min_k_score(token_logprobs, k: float = 0.4) -> float:
    """MUSE's Min-K% Prob score of one text: -mean of the lowest ``k`` fraction of its token log-probs
    (at least one token). Higher = less likely = looks like a non-member."""
    lp = np.sort(_as_array(token_logprobs, "token_logprobs", 1))
    if lp.size == 0:
        raise ValueError("min_k_score needs at least one token log-probability")
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    n = max(1, int(len(lp) * k))
    return float(-np.mean(lp[:n]))


def mia_auc(forget_scores, holdout_scores) -> float:
    """AUC of the membership test as MUSE computes it: ``roc_curve(y, -score)`` with forget = label 0, holdout = 1.

    0.5 = forget texts look like never-seen texts; near 0 = the model still remembers them (members score low)."""
    from sklearn.metrics import auc, roc_curve

    f = _as_array(forget_scores, "forget_scores", 1)
    h = _as_array(holdout_scores, "holdout_scores", 1)
    y = np.concatenate([np.zeros(len(f)), np.ones(len(h))])
    scores = np.concatenate([f, h])
    fpr, tpr, _ = roc_curve(y, -scores)
    return float(auc(fpr, tpr))


def privleak(auc_value: float, auc_retrain: float) -> float:
    """MUSE's PrivLeak in percent: (AUC - AUC_retrain) / AUC_retrain * 100 (near 0 good; strongly negative =
    under-unlearning; positive = over-unlearning)."""
    if auc_retrain <= 0:
        raise ValueError(f"auc_retrain must be > 0, got {auc_retrain}")
    return float((auc_value - auc_retrain) / auc_retrain * 100)
