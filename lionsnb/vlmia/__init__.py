"""The VL-MIA series: membership inference against vision-language models, MaxRényi-K%.

Li, Wu, Chen, Tonin, Abad Rocamora, Cevher, "Membership Inference Attacks against Large Vision-Language Models",
NeurIPS 2024 (arXiv 2411.02902); official code LIONS-EPFL/VL-MIA@859bc99.

Public API: :func:`scores` (the 112 official sequence scores of one slice), :func:`roc_metrics` (AUC, accuracy,
TPR@5%FPR as the authors evaluate), :func:`slices` (the official slice rule), the cross-modal pipeline
(:func:`run_pipeline` with a :class:`TinyVLMAdapter` or :class:`HFLlavaAdapter`), the tiny VLM and its data.
"""
from __future__ import annotations

from lionsnb.vlmia.evaluation import roc_metrics, roc_points, roc_summary, tpr_at_fpr
from lionsnb.vlmia.metrics import (aggregate, aug_kl, batch_scores, k_of, min_k_plus_plus, position_quantities,
                                   score_keys, scores, text_scores)
from lionsnb.vlmia.slicing import SLICE_NAMES, slices

__all__ = ["scores", "roc_metrics", "slices", "batch_scores", "aggregate", "position_quantities", "score_keys",
           "k_of", "text_scores", "aug_kl", "min_k_plus_plus", "roc_points", "roc_summary", "tpr_at_fpr",
           "SLICE_NAMES"]
