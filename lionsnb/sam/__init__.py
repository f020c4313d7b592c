"""The SAM series: sharpness-aware minimisation (SAM, ASAM), SAMPa and BiSAM.

* SAM: Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021 (arXiv 2010.01412).
* SAMPa: Xie, Pethick, Cevher, "SAMPa: Sharpness-aware minimization parallelized", NeurIPS 2024
  (arXiv 2410.10683).
* BiSAM: Xie, Latorre, Antonakopoulos, Pethick, Cevher, "Improving SAM requires rethinking its
  optimization formulation", ICML 2024 (arXiv 2407.12993).
"""
from __future__ import annotations

from lionsnb.sam.losses import GAMMA, bisam_loss, phi_log, phi_tanh, smooth_cross_entropy, zero_one_loss  # noqa: F401
from lionsnb.sam.optim import (  # noqa: F401
                                SAM,
                                GradientPair,
                                SAMPa,
                                SequentialPair,
                                disable_running_stats,
                                enable_running_stats,
                                gradient_at,
)
from lionsnb.sam.parallel import ConcurrentPair, DistributedPair, VmapPair, run_distributed_sampa  # noqa: F401,E402
from lionsnb.sam.steps import SEQUENTIAL_GRADIENTS, bisam_step, make_optimizer, sam_step, sampa_step  # noqa: F401,E402
