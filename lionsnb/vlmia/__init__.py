"""The VL-MIA series: membership inference against vision-language models, MaxRényi-K%.

Li, Wu, Chen, Tonin, Abad Rocamora, Cevher, "Membership Inference Attacks against Large Vision-Language Models",
NeurIPS 2024 (arXiv 2411.02902); official code LIONS-EPFL/VL-MIA@859bc99.

* the scores: :func:`scores` (the 112 official sequence scores of one slice, the reference's alignment, clamp and
  k rule), :func:`batch_scores` (a batch of slices at once), the text-only scores, Aug-KL and Min-K%++;
* the evaluation: :func:`roc_metrics` (AUC, accuracy, TPR@5%FPR as ``eval.py``), TPR at any FPR;
* the slice rule :func:`slices`, and the pipeline :func:`run_pipeline` (describe, one forward pass, slice, score)
  with a :class:`TinyVLMAdapter` for the package's tiny LLaVA-style VLM or a :class:`HFLlavaAdapter` for
  transformers' ``LlavaForConditionalGeneration``;
* the generated image-caption pairs, the tiny VLM and its training, the hub loaders, the text MIA on a causal LM.
"""
from __future__ import annotations

from lionsnb.vlmia.augment import augment_images
from lionsnb.vlmia.data import WordTokenizer, make_pairs, make_tokenizer
from lionsnb.vlmia.evaluation import mann_whitney_auc, roc_metrics, roc_points, roc_summary, tpr_at_fpr
from lionsnb.vlmia.hub import load_vlmia_images, load_vlmia_texts
from lionsnb.vlmia.metrics import (
    aggregate,
    aug_kl,
    batch_scores,
    k_of,
    max_renyi_k,
    min_k_plus_plus,
    min_k_prob,
    perplexity,
    position_quantities,
    score_keys,
    scores,
    text_scores,
)
from lionsnb.vlmia.model import TinyVLM, TinyVLMConfig, build_tiny_vlm, train_tiny_vlm
from lionsnb.vlmia.pipeline import (
    HFLlavaAdapter,
    TinyVLMAdapter,
    aug_kl_scores,
    build_sequence,
    describe,
    load_llava,
    run_pipeline,
    score_texts,
    tiny_random_llava,
)
from lionsnb.vlmia.slicing import SLICE_NAMES, slices
from lionsnb.vlmia.textmia import SplitLM, shakespeare_passages, text_mia

__all__ = [
    "scores", "roc_metrics", "slices", "batch_scores", "aggregate", "position_quantities", "score_keys", "k_of",
    "max_renyi_k", "min_k_prob", "perplexity", "text_scores", "aug_kl", "min_k_plus_plus", "roc_points",
    "roc_summary", "tpr_at_fpr", "mann_whitney_auc", "SLICE_NAMES", "run_pipeline", "describe", "build_sequence",
    "score_texts", "TinyVLMAdapter", "HFLlavaAdapter", "load_llava", "tiny_random_llava", "TinyVLM",
    "TinyVLMConfig", "build_tiny_vlm", "train_tiny_vlm", "make_pairs", "make_tokenizer", "WordTokenizer",
    "load_vlmia_images", "load_vlmia_texts", "text_mia", "shakespeare_passages", "SplitLM", "aug_kl_scores",
    "augment_images",
]
