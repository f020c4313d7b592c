"""The unlearning series: NGDiff (normalized gradient difference) with an automatic learning rate, on a TOFU-shaped
benchmark.

Bu, Jin, Vinzamuri, Ramakrishna, Chang, Cevher, Hong, "Unlearning as multi-task optimization: a normalized gradient
difference approach with an adaptive learning rate", arXiv 2410.22086 (NAACL 2025). Unlearning is a two-task problem
(keep the retain loss low, push the forget loss up); NGDiff steps along d = g_R/||g_R|| - g_F/||g_F||, which to first
order never raises the retain loss and never lowers the forget loss whatever the gradient ratio; GeN's parabola fit
picks the learning rate. Baselines (GA, GradDiff, KL, NPO, NPO+GD, NPO+KL) and metrics follow TOFU (Maini et al.
2024), the NPO code (Zhang et al. 2024) and MUSE (Shi et al. 2024); see ``unlearning_spec.md``.

Modules: :mod:`~lionsnb.unlearning.losses` (token-level losses), :mod:`~lionsnb.unlearning.geometry` (NGDiff direction,
cone), :mod:`~lionsnb.unlearning.metrics` (TOFU and MUSE metrics, ROUGE-L), :mod:`~lionsnb.unlearning.autolr` (GeN),
:mod:`~lionsnb.unlearning.trainer`, :mod:`~lionsnb.unlearning.data` (generated benchmark, real TOFU loader),
:mod:`~lionsnb.unlearning.models`, :mod:`~lionsnb.unlearning.pipeline` (target / retain models) and
:mod:`~lionsnb.unlearning.evaluation`.
"""
from __future__ import annotations

from lionsnb.unlearning.autolr import AutoLR, gen_closed_form, gen_fit, gen_lr_update, lr_parabola
from lionsnb.unlearning.data import Benchmark, QAItem, load_tofu, make_benchmark
from lionsnb.unlearning.evaluation import evaluate_model, knowmem, membership_auc, tofu_numbers, verbmem
from lionsnb.unlearning.geometry import cone_products, ngdiff_direction
from lionsnb.unlearning.losses import METHODS, kl_retain, lm_loss, method_loss, npo_loss, npo_muse_logits, sequence_nll
from lionsnb.unlearning.metrics import (
                                        forget_quality,
                                        mia_auc,
                                        min_k_score,
                                        model_utility,
                                        privleak,
                                        probability,
                                        rouge_l_f1,
                                        rouge_l_recall,
                                        truth_ratio,
)
from lionsnb.unlearning.models import TopLayersLM, tiny_gpt
from lionsnb.unlearning.pipeline import Pipeline, build_pipeline
from lionsnb.unlearning.trainer import UnlearnConfig, UnlearningTrainer, UnlearnResult, unlearn

__all__ = [
    # losses (spec §2)
    "sequence_nll", "lm_loss", "npo_loss", "kl_retain", "npo_muse_logits", "method_loss", "METHODS",
    # NGDiff direction (spec §3)
    "ngdiff_direction", "cone_products",
    # TOFU / MUSE metrics (spec §4, method note §6-7)
    "truth_ratio", "probability", "forget_quality", "model_utility", "rouge_l_recall", "rouge_l_f1", "min_k_score",
    "mia_auc", "privleak", "knowmem", "verbmem", "membership_auc",
    # GeN automatic learning rate (method note §3)
    "lr_parabola", "gen_closed_form", "gen_fit", "gen_lr_update", "AutoLR",
    # trainer
    "UnlearningTrainer", "UnlearnConfig", "UnlearnResult", "unlearn",
    # data, models, pipeline, evaluation
    "make_benchmark", "load_tofu", "Benchmark", "QAItem", "tiny_gpt", "TopLayersLM", "build_pipeline", "Pipeline",
    "evaluate_model", "tofu_numbers",
]
