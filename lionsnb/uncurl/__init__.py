"""The UNCURL series: task-aware offline pruning of mixture-of-experts layers, and the threshold pruning factor.

Sarkar, Lausen, Cevher, Zha, Brox, Karypis, "Revisiting SMoE Language Models by Evaluating Inefficiencies with
Task Specific Expert Pruning", arXiv 2409.01483 (NeurIPS 2024 ENLSP workshop, PMLR 262:165-181).  No official
code is public; the components reproduce MC-SMoE (``UNITES-Lab/MC-SMoE`` @ 4a195b1, MIT), the public code with
exactly UNCURL's steps: router-logit similarity, spectral clustering, permutation alignment and
usage-frequency-weighted merging.

    from lionsnb.uncurl import prune_moe
    small = prune_moe(model, 2, calibration_batches, method="uncurl", router="slot")
"""
from __future__ import annotations

from lionsnb.uncurl.components import align_expert, cluster_experts, expert_similarity, merge_experts, usage_frequency
from lionsnb.uncurl.model import MoEConfig, TinyMoE
from lionsnb.uncurl.prune import collect_router_statistics, prune_moe

__all__ = [
                                       "MoEConfig",
                                       "TinyMoE",
                                       "align_expert",
                                       "cluster_experts",
                                       "collect_router_statistics",
                                       "expert_similarity",
                                       "merge_experts",
                                       "prune_moe",
                                       "usage_frequency",
]
