"""The SAM series: sharpness-aware minimisation (SAM, ASAM), SAMPa and BiSAM.

* SAM: Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021 (arXiv 2010.01412); ASAM: Kwon et al., ICML 2021.
* SAMPa: Xie, Pethick, Cevher, "SAMPa: Sharpness-aware minimization parallelized", NeurIPS 2024
  (arXiv 2410.10683).
* BiSAM: Xie, Latorre, Antonakopoulos, Pethick, Cevher, "Improving SAM requires rethinking its
  optimization formulation", ICML 2024 (arXiv 2407.12993).

Core modules: :mod:`.optim` (the SAM and SAMPa optimizers, BatchNorm handling), :mod:`.parallel` (SAMPa's
parallel backends), :mod:`.losses` (smoothed cross-entropy, BiSAM's bounds), :mod:`.steps` (training steps),
:mod:`.flips` (what a perturbation does to a classifier), :mod:`.experiments` (runs, sharpness, landscapes),
:mod:`.data` (datasets and models), :mod:`.benchmark` (per-step timing). The notebook modules ``nb01_sam``,
``nb02_sampa`` and ``nb03_bisam`` back the three notebooks of ``notebooks/sam/``.
"""
from __future__ import annotations

from lionsnb.sam.benchmark import time_methods
from lionsnb.sam.data import build_model, load_data, model_kind, resolve_dataset
from lionsnb.sam.experiments import (
    ascent_increase,
    filter_normalized_direction,
    loss_surface,
    rescale_relu_mlp,
    sharpness,
    train_run,
)
from lionsnb.sam.flips import count_flips, perturbation, perturbed
from lionsnb.sam.losses import (
    GAMMA,
    bisam_loss,
    ce_upper_bound,
    phi_log,
    phi_tanh,
    q_lower_bound,
    smooth_cross_entropy,
    zero_one_loss,
)
from lionsnb.sam.optim import (
    SAM,
    GradientPair,
    SAMPa,
    SequentialPair,
    disable_running_stats,
    enable_running_stats,
    gradient_at,
)
from lionsnb.sam.parallel import ConcurrentPair, DistributedPair, VmapPair, run_distributed_sampa
from lionsnb.sam.steps import SEQUENTIAL_GRADIENTS, bisam_step, make_optimizer, sam_step, sampa_step

__all__ = [
    "SAM", "SAMPa", "GradientPair", "SequentialPair", "ConcurrentPair", "DistributedPair", "VmapPair",
    "run_distributed_sampa", "gradient_at", "disable_running_stats", "enable_running_stats",
    "smooth_cross_entropy", "bisam_loss", "phi_log", "phi_tanh", "GAMMA", "zero_one_loss", "q_lower_bound",
    "ce_upper_bound", "sam_step", "bisam_step", "sampa_step", "make_optimizer", "SEQUENTIAL_GRADIENTS",
    "train_run", "sharpness", "filter_normalized_direction", "loss_surface", "ascent_increase", "rescale_relu_mlp",
    "perturbation", "perturbed", "count_flips", "load_data", "build_model", "resolve_dataset", "model_kind",
    "time_methods",
]
