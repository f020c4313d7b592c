"""``prune_moe``: reduce every MoE layer from E to E/r experts, for one task, from router statistics on task data.

Methods (``method=``):

* ``"uncurl"`` - UNCURL: router-logit similarity -> spectral clustering into E/r clusters -> permutation
  alignment of each cluster's members -> usage-frequency-weighted merge (:mod:`lionsnb.uncurl.components`);
* ``"frequency"`` - the paper's naive baseline: keep the E/r most used experts, drop the rest (their router rows
  too), so the top-k weights are renormalised among the kept experts;
* ``"random"`` - random grouping (every group non-empty, MC-SMoE ``group_experts_randomly``), then the same
  alignment and merge as UNCURL.

Router handling after a merge (``router=``, uncurl.md section 2 step 6):

* ``"slot"`` (default, MC-SMoE's behaviour) - the router keeps its E outputs and every member slot is bound to its
  cluster's merged expert: memory shrinks, routing width and the per-slot dispatch do not;
* ``"logsumexp"`` - E/r experts; the router keeps its E rows and a merged expert gets the logit
  ``logsumexp`` of its members' logits: exactly the summed routing probability of its members (before top-k);
* ``"mean"`` - E/r experts and an E/r-row linear router whose rows are the frequency-weighted means of the
  members' rows (``sum f_e w_e / sum f_e``; the plain mean for a cluster never used).

The last two physically shrink the layer.  Frequency-drop always shrinks it (``router`` does not apply).
``prune_moe`` works on :class:`lionsnb.uncurl.model.TinyMoE` and, through :mod:`lionsnb.uncurl.mixtral`, on
transformers' ``MixtralForCausalLM`` (fused expert tensors).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lionsnb.uncurl.components import (
    MERGE_EPS,
    align_expert,
    canonical_labels,
    cluster_experts,
    cluster_members,
    expert_similarity,
    merge_experts,
    random_group_labels,
    usage_frequency,
)

METHODS = ("uncurl", "frequency", "random")
ROUTERS = ("slot", "logsumexp", "mean")
#: Alignment reference inside a cluster: its lowest-index member (MC-SMoE's merge-with-permutation path), expert 0
#: of the layer (MC-SMoE's fsgpt pipeline), its most used member (our option), or no alignment.
ALIGNMENTS = ("first", "expert0", "most_used", "none")


@dataclass
class LayerPlan:
    """What pruning decided for one MoE layer (kept for the notebooks' figures)."""

    n_experts: int
    n_after: int
    method: str
    frequencies: torch.Tensor                 # [E] usage shares on the calibration data
    labels: torch.Tensor                      # [E] cluster of each expert (canonical), -1 for a dropped expert
    similarity: torch.Tensor | None = None    # [E, E] router-logit similarity (uncurl)
    kept: list[int] = field(default_factory=list)  # frequency-drop: the kept experts, in index order

    @property
    def clusters(self) -> list[list[int]]:
        """The members of each merged (or kept) expert, in the order of the pruned layer."""
        return cluster_members(self.labels[self.labels >= 0]) if self.method != "frequency" else \
            [[k] for k in self.kept]


def check_factor(n_experts: int, factor: int) -> int:
    """E / r as an int; an error unless r is a positive divisor of E."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or n_experts % factor:
        raise ValueError(f"the pruning factor r must be a positive divisor of the number of experts E = {n_experts} "
                         f"(r in {[r for r in range(1, n_experts + 1) if n_experts % r == 0]}), got {factor!r}")
    return n_experts // factor


def plan_layer(logits: torch.Tensor, topk: torch.Tensor, n_experts: int, factor: int, method: str = "uncurl",
               seed: int = 0, generator: torch.Generator | None = None) -> LayerPlan:
    """The grouping (or kept set) of one layer from its calibration router logits [T, E] and top-k indices.

    ``seed`` is the spectral clustering's ``random_state`` (official: 0); ``generator`` draws random groups.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n_after = check_factor(n_experts, factor)
    freqs = usage_frequency(topk, n_experts)
    if method == "frequency":
        order = sorted(range(n_experts), key=lambda e: (-float(freqs[e]), e))
        kept = sorted(order[:n_after])
        labels = torch.full((n_experts,), -1, dtype=torch.long)
        labels[kept] = torch.arange(n_after)
        return LayerPlan(n_experts, n_after, method, freqs, labels, kept=kept)
    sim = None
    if method == "uncurl":
        sim = expert_similarity(logits)
        if n_after == n_experts:  # every expert its own cluster: the only partition into E groups
            labels = torch.arange(n_experts)
        elif n_after == 1:
            labels = torch.zeros(n_experts, dtype=torch.long)
        else:
            labels = cluster_experts(sim, n_after, seed=seed)
    else:
        labels = random_group_labels(n_experts, n_after, generator or torch.Generator().manual_seed(seed))
    return LayerPlan(n_experts, n_after, method, freqs, canonical_labels(labels), similarity=sim)


def align_clusters(experts: list[dict], labels: torch.Tensor, frequencies: torch.Tensor,
                   align: str = "first") -> list[dict]:
    """Experts with the members of every cluster permutation-aligned to the cluster's reference (new dicts)."""
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    out = list(experts)
    if align == "none":
        return out
    if align == "expert0":
        return [experts[0]] + [align_expert(experts[0], e) for e in experts[1:]]
    for members in cluster_members(labels):
        if len(members) < 2:
            continue
        ref = members[0] if align == "first" else max(members, key=lambda e: (float(frequencies[e]), -e))
        for e in members:
            if e != ref:
                out[e] = align_expert(experts[ref], experts[e])
    return out


def merged_router_rows(weight: torch.Tensor, labels: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """The mean-row router: row c = ``sum_{e in c} f_e w_e / sum_{e in c} f_e`` (plain mean if never used)."""
    rows = []
    for members in cluster_members(labels):
        f = frequencies[members].to(torch.float64)
        coef = f / f.sum() if float(f.sum()) > 0 else torch.full_like(f, 1.0 / len(members))
        acc = None
        for c, m in zip(coef.tolist(), members):
            term = weight[m].detach() * c
            acc = term if acc is None else acc + term
        rows.append(acc)
    return torch.stack(rows)


# ----------------------------------------------------------------------------------------- the tiny MoE adapter
def _tiny_experts(layer) -> list[dict]:
    if layer.groups is not None or len(layer.unique_experts()) != len(layer.experts) \
            or layer.router.out_features != len(layer.experts):
        raise ValueError("this MoE layer was already pruned: prune the original model instead")
    return [{k: v.detach().clone() for k, v in e.state_dict().items()} for e in layer.experts]


def apply_layer_plan(layer, plan: LayerPlan, experts: list[dict], router: str, align: str, eps: float) -> None:
    """Rebuild one MoE layer of the tiny model in place: keep (frequency-drop) or align, merge and re-route."""
    from lionsnb.uncurl.model import expert_from_dict

    dtype = layer.router.weight.dtype
    device = layer.router.weight.device
    if plan.method == "frequency":
        keep = plan.kept
        layer.experts = nn.ModuleList(layer.experts[i] for i in keep)
        new = nn.Linear(layer.router.in_features, len(keep), bias=False).to(device=device, dtype=dtype)
        new.weight.data.copy_(layer.router.weight.detach()[keep])
        layer.router = new
        return
    aligned = align_clusters(experts, plan.labels, plan.frequencies, align)
    merged = merge_experts(aligned, plan.frequencies, plan.labels, eps=eps)
    modules = [expert_from_dict(m).to(device=device, dtype=dtype) for m in merged]
    if router == "slot":
        layer.experts = nn.ModuleList(modules[int(c)] for c in plan.labels)
    elif router == "logsumexp":
        layer.experts = nn.ModuleList(modules)
        layer.groups = plan.labels.clone().to(device)
    else:
        rows = merged_router_rows(layer.router.weight, plan.labels, plan.frequencies)
        new = nn.Linear(layer.router.in_features, plan.n_after, bias=False).to(device=device, dtype=dtype)
        new.weight.data.copy_(rows.to(dtype))
        layer.router = new
        layer.experts = nn.ModuleList(modules)


def _is_tiny(model: nn.Module) -> bool:
    from lionsnb.uncurl.model import TinyMoE

    return isinstance(model, TinyMoE)


def collect_router_statistics(model: nn.Module, calibration_batches: Iterable[Any]) -> list[dict[str, torch.Tensor]]:
    """Per MoE layer of ``model``: router ``logits`` [T, E] and ``topk`` indices [T, k] over the calibration tokens."""
    batches = list(calibration_batches)
    if not batches:
        raise ValueError("calibration_batches is empty: pass at least one batch of task data")
    if _is_tiny(model):
        from lionsnb.uncurl.model import router_statistics

        return router_statistics(model, batches)
    from lionsnb.uncurl import mixtral

    if mixtral.is_mixtral(model):
        return mixtral.router_statistics(model, batches)
    raise TypeError(f"prune_moe supports lionsnb.uncurl.TinyMoE and transformers' MixtralForCausalLM, "
                    f"got {type(model).__name__}")


def prune_moe(model: nn.Module, factor: int, calibration_batches: Iterable[Any], method: str = "uncurl",
              router: str = "slot", *, align: str = "first", eps: float = MERGE_EPS, seed: int = 0,
              statistics: list[dict[str, torch.Tensor]] | None = None) -> nn.Module:
    """Reduce every MoE layer of ``model`` from E to E/r experts for the task of ``calibration_batches``.

    ``factor`` r must divide E.  ``method``: ``"uncurl"``, ``"frequency"`` (keep the most used experts) or
    ``"random"`` (random groups, merged like UNCURL).  ``router``: ``"slot"`` (bind member slots to the merged
    expert), ``"logsumexp"`` or ``"mean"`` (see the module docstring).  ``align``: the alignment reference inside a
    cluster (``"first"`` member, default; ``"expert0"``; ``"most_used"``; ``"none"``).  ``eps``: the merge's eps
    (MC-SMoE's 1e-3; 0 makes r = 1 the identity).  ``statistics``: reuse router statistics collected before with
    :func:`collect_router_statistics` on the same model and data.

    Returns a pruned deep copy (the input is not changed) with ``prune_plans``, one :class:`LayerPlan` per layer.
    At r = 1 with ``eps=0`` (or with frequency-drop) its outputs are bit-identical to the input model's.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    stats = statistics if statistics is not None else collect_router_statistics(model, calibration_batches)
    if _is_tiny(model):
        layers = model.moe_layers
        n_experts = [layer.router.out_features for layer in layers]
    else:
        from lionsnb.uncurl import mixtral

        if not mixtral.is_mixtral(model):
            raise TypeError(f"prune_moe supports lionsnb.uncurl.TinyMoE and transformers' MixtralForCausalLM, "
                            f"got {type(model).__name__}")
        layers = mixtral.moe_blocks(model)
        n_experts = [mixtral.n_router_outputs(block) for block in layers]
    if len(stats) != len(layers):
        raise ValueError(f"statistics cover {len(stats)} layers, the model has {len(layers)} MoE layers")
    plans = []
    gen = torch.Generator().manual_seed(seed)
    for i, (s, e) in enumerate(zip(stats, n_experts)):
        if s["logits"].shape[1] != e:
            raise ValueError(f"layer {i}: statistics have {s['logits'].shape[1]} router outputs, the layer has {e}")
        plans.append(plan_layer(s["logits"], s["topk"], e, factor, method, seed=seed, generator=gen))
    return apply_plans(model, plans, router=router, align=align, eps=eps)


def apply_plans(model: nn.Module, plans: list[LayerPlan], router: str = "slot", align: str = "first",
                eps: float = MERGE_EPS) -> nn.Module:
    """A pruned copy of ``model`` built from per-layer plans (:func:`plan_layer`); ``prune_moe`` without the
    statistics and the planning, so that one plan serves several router handlings."""
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
    if _is_tiny(model):
        model.clear_aux()
        pruned = copy.deepcopy(model)
        if len(plans) != len(pruned.moe_layers):
            raise ValueError(f"{len(plans)} plans for {len(pruned.moe_layers)} MoE layers")
        for layer, plan in zip(pruned.moe_layers, plans):
            apply_layer_plan(layer, plan, _tiny_experts(layer), router, align, eps)
    else:
        from lionsnb.uncurl import mixtral

        pruned = copy.deepcopy(model)
        mixtral.apply_plans(pruned, plans, router=router, align=align, eps=eps)
    pruned.prune_plans = plans
    return pruned
