"""The five UNCURL building blocks, with the exact behaviour of the public MC-SMoE reference code.

UNCURL (Sarkar et al., "Revisiting SMoE Language Models by Evaluating Inefficiencies with Task Specific Expert
Pruning", arXiv 2409.01483) reduces the experts of each MoE layer offline, for one task, in three steps:
spectral clustering of the experts on router-logit similarity measured on task data, permutation alignment of
the members of each cluster, and a usage-frequency-weighted merge of each cluster.  No UNCURL code is public; the
components below follow MC-SMoE (``UNITES-Lab/MC-SMoE`` @ 4a195b1, MIT), which has exactly these steps:

* :func:`usage_frequency`  - ``mcsmoe/merging/grouping_fsgpt.py`` ``compute_all_usages`` (L243-266);
* :func:`expert_similarity` - ``grouping.py`` L47-50 (cosine mapped to [0, 1]) and ``grouping_fsgpt.py`` L292-316;
* :func:`cluster_experts`  - ``grouping.py`` L377-411 (``SpectralClustering(affinity="precomputed")``);
* :func:`align_expert`     - ``permutation.py`` L182-240 (weight matching with the fc2 term, linear assignment);
* :func:`merge_experts`    - ``grouping_fsgpt.py`` L329-369 (frequency-weighted average, eps = 1e-3).

An *expert* is a dict of tensors.  The dense GELU expert of the spec (MC-SMoE's fsgpt expert) has
``fc1.weight`` [h, d], ``fc1.bias`` [h], ``fc2.weight`` [d, h], ``fc2.bias`` [d] and computes
``fc2(gelu(fc1(x)))``; a SwiGLU expert (Mixtral) has ``gate.weight`` [h, d], ``up.weight`` [h, d],
``down.weight`` [d, h] and computes ``down(silu(gate(x)) * up(x))``.  Every function returns new tensors and
leaves its inputs unchanged (MC-SMoE works in place on modules).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

#: MC-SMoE's ``BF16_EPS`` (``mcsmoe/utils/constants.py``), the eps of its fsgpt frequency-weighted merge.
MERGE_EPS = 1e-3
#: The eps of ``torch.nn.functional.cosine_similarity`` in MC-SMoE's similarity mapping (``FP32_EPS``).
COSINE_EPS = 1e-7

Expert = dict  # name -> tensor

GELU_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
SWIGLU_KEYS = ("gate.weight", "up.weight", "down.weight")


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64 (or the default dtype is), else the default dtype."""
    if any(t.dtype == torch.float64 for t in tensors) or torch.get_default_dtype() == torch.float64:
        return torch.float64
    return torch.get_default_dtype()


def usage_frequency(topk_indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Share of all N*k top-k assignments routed to each expert: ``count[e] / (N * k)``.

    ``topk_indices`` [N, k] holds the experts each of N tokens is routed to (columns in any order).
    Experts never chosen get 0, trailing ones included; the result has length ``n_experts`` and sums to 1
    (MC-SMoE ``compute_all_usages``: +1 per top-2 expert, divided by the total count; here for any k).
    """
    idx = torch.as_tensor(topk_indices)
    if idx.dim() == 1:
        idx = idx[:, None]
    if idx.dim() != 2:
        raise ValueError(f"topk_indices must be [N_tokens, k], got shape {tuple(idx.shape)}")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError("topk_indices must be an integer tensor (expert indices), e.g. torch.topk(...).indices")
    if idx.numel() == 0:
        raise ValueError("topk_indices is empty: pass the routing of at least one calibration token")
    n_experts = int(n_experts)
    if int(idx.min()) < 0 or int(idx.max()) >= n_experts:
        raise ValueError(f"expert indices must lie in [0, {n_experts}); got {int(idx.min())}..{int(idx.max())}")
    counts = torch.bincount(idx.reshape(-1).long().cpu(), minlength=n_experts)
    return counts.to(torch.get_default_dtype()) / idx.numel()


def expert_similarity(router_logits: torch.Tensor) -> torch.Tensor:
    """Router-logit similarity of experts: ``S_ij = (cos(Z[:, i], Z[:, j]) + 1) / 2``, diagonal set to 1.

    ``router_logits`` Z [N_tokens, E] are the pre-softmax logits of every calibration token.  The cosine is the
    uncentred one between columns (one column per expert, over all tokens), with torch's eps = 1e-7 on the norms,
    mapped into [0, 1] (MC-SMoE ``SIMILARITY_MAPPING_FUNCTION["cosine"]``); the matrix starts as the identity and
    is filled symmetrically, so its diagonal is exactly 1.
    """
    z = torch.as_tensor(router_logits)
    if z.dim() != 2:
        raise ValueError(f"router_logits must be [N_tokens, E], got shape {tuple(z.shape)}")
    if not z.dtype.is_floating_point:
        raise ValueError("router_logits must be a float tensor of pre-softmax logits")
    z = z.detach().to(_float_dtype(z))
    norms = torch.linalg.vector_norm(z, dim=0).clamp_min(COSINE_EPS)
    unit = z / norms
    cos = unit.T @ unit
    sim = (cos + 1) / 2
    sim = (sim + sim.T) / 2  # exactly symmetric
    sim.fill_diagonal_(1.0)
    return sim


def cluster_experts(similarity: torch.Tensor, n_clusters: int, seed: int = 0) -> torch.Tensor:
    """Spectral clustering of experts on the precomputed similarity, exactly as scikit-learn does it.

    ``SpectralClustering(n_clusters, affinity="precomputed", assign_labels="kmeans", random_state=seed)`` fit on a
    numpy copy of S (MC-SMoE ``grouping.py`` L395-400 hard-codes ``random_state=0``; the default seed is 0).
    Returns the labels [E] as a LongTensor; label names are arbitrary (a partition).
    """
    from sklearn.cluster import SpectralClustering

    s = torch.as_tensor(similarity).detach().cpu()
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square [E, E] matrix, got shape {tuple(s.shape)}")
    n_experts = s.shape[0]
    n_clusters = int(n_clusters)
    if not 1 <= n_clusters <= n_experts:
        raise ValueError(f"n_clusters must be between 1 and the number of experts {n_experts}, got {n_clusters}")
    model = SpectralClustering(n_clusters=n_clusters, affinity="precomputed", assign_labels="kmeans",
                               random_state=int(seed))
    labels = model.fit(np.array(s.numpy(), dtype=np.float64)).labels_
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)


def expert_kind(expert: Mapping[str, torch.Tensor]) -> str:
    """``"gelu"`` for an fc1/fc2 expert, ``"swiglu"`` for a gate/up/down expert; an error otherwise."""
    if all(k in expert for k in GELU_KEYS):
        return "gelu"
    if all(k in expert for k in SWIGLU_KEYS):
        return "swiglu"
    raise ValueError(f"an expert is a dict with keys {GELU_KEYS} (GELU) or {SWIGLU_KEYS} (SwiGLU); "
                     f"got {sorted(expert)}")


def matching_permutation(reference: Mapping[str, torch.Tensor], expert: Mapping[str, torch.Tensor],
                         include_fc2: bool = True) -> torch.Tensor:
    """The hidden-unit matching of weight matching: ``perm[i]`` is the expert's unit matched to reference unit i.

    Maximises the trace of the score ``M = fc1_ref fc1^T + fc2_ref^T fc2`` (SwiGLU: ``Wg_ref Wg^T + Wu_ref Wu^T +
    Wd_ref^T Wd``) with ``scipy.optimize.linear_sum_assignment(M, maximize=True)`` (MC-SMoE ``permutation.py``
    L215-240, ``include_wo=True``).
    """
    from scipy.optimize import linear_sum_assignment

    kind = expert_kind(reference)
    if expert_kind(expert) != kind:
        raise ValueError("reference and expert must be the same kind of expert (both GELU or both SwiGLU)")
    with torch.no_grad():
        if kind == "gelu":
            dtype = _float_dtype(reference["fc1.weight"], expert["fc1.weight"])
            score = reference["fc1.weight"].to(dtype) @ expert["fc1.weight"].to(dtype).T
            if include_fc2:
                score = score + reference["fc2.weight"].to(dtype).T @ expert["fc2.weight"].to(dtype)
        else:
            dtype = _float_dtype(reference["gate.weight"], expert["gate.weight"])
            score = (reference["gate.weight"].to(dtype) @ expert["gate.weight"].to(dtype).T
                     + reference["up.weight"].to(dtype) @ expert["up.weight"].to(dtype).T)
            if include_fc2:
                score = score + reference["down.weight"].to(dtype).T @ expert["down.weight"].to(dtype)
    if score.shape[0] != score.shape[1]:
        raise ValueError(f"reference and expert need the same hidden width, got score {tuple(score.shape)}")
    _, perm = linear_sum_assignment(score.detach().cpu().numpy(), maximize=True)
    return torch.as_tensor(perm, dtype=torch.long)


def permute_expert(expert: Mapping[str, torch.Tensor], perm: torch.Tensor) -> Expert:
    """A new expert with its hidden units reordered by ``perm``: the same function.

    GELU: ``fc1.weight[perm, :]``, ``fc1.bias[perm]``, ``fc2.weight[:, perm]``, ``fc2.bias`` unchanged
    (MC-SMoE ``permute_fsgpt_ffn_dense_expert_``).  SwiGLU: gate and up rows, down columns.
    """
    kind = expert_kind(expert)
    perm = torch.as_tensor(perm, dtype=torch.long)
    width = expert["fc1.weight" if kind == "gelu" else "gate.weight"].shape[0]
    if perm.shape != (width,) or not torch.equal(torch.sort(perm).values, torch.arange(width)):
        raise ValueError(f"perm must be a permutation of range({width}), got shape {tuple(perm.shape)}")
    out = {k: v.detach().clone() for k, v in expert.items()}
    if kind == "gelu":
        out["fc1.weight"] = expert["fc1.weight"].detach()[perm, :].clone()
        out["fc1.bias"] = expert["fc1.bias"].detach()[perm].clone()
        out["fc2.weight"] = expert["fc2.weight"].detach()[:, perm].clone()
    else:
        out["gate.weight"] = expert["gate.weight"].detach()[perm, :].clone()
        out["up.weight"] = expert["up.weight"].detach()[perm, :].clone()
        out["down.weight"] = expert["down.weight"].detach()[:, perm].clone()
        for name in ("gate.bias", "up.bias"):
            if name in expert:
                out[name] = expert[name].detach()[perm].clone()
    return out


def align_expert(reference: Mapping[str, torch.Tensor], expert: Mapping[str, torch.Tensor],
                 include_fc2: bool = True) -> Expert:
    """Permute ``expert``'s hidden units to match ``reference`` by weight matching; returns a new expert.

    The score is ``M = fc1_ref fc1^T + fc2_ref^T fc2`` (the fc2 term is MC-SMoE's ``include_wo=True``, the
    default); the linear assignment maximising it gives ``perm`` and the result is
    ``fc1.weight[perm]``, ``fc1.bias[perm]``, ``fc2.weight[:, perm]``, ``fc2.bias``.  The aligned expert computes
    exactly the same function as ``expert``; ``reference`` is not changed.
    """
    return permute_expert(expert, matching_permutation(reference, expert, include_fc2=include_fc2))


def merge_experts(experts: Sequence[Mapping[str, torch.Tensor]], frequencies: torch.Tensor,
                  labels: torch.Tensor, eps: float = MERGE_EPS) -> list[Expert]:
    """Frequency-weighted merge of each cluster: ``W_c = sum_{e in c} f_e W_e / (sum_{e in c} f_e + eps)``.

    Applied to every tensor of the experts (weights and biases alike), with no alignment inside (align first).
    One merged expert per cluster, in the order of the sorted distinct labels (``torch.unique``).  The default
    ``eps = 1e-3`` is MC-SMoE's ``BF16_EPS``: a one-expert cluster comes out as ``f / (f + eps)`` times the expert
    and a cluster whose frequencies sum to 0 merges to zeros.  With ``eps = 0`` a one-expert cluster is returned
    exactly (the coefficient ``f / f`` is exactly 1); there a cluster of total frequency 0 (0/0) gets the plain
    mean of its members instead.
    """
    if len(experts) == 0:
        raise ValueError("merge_experts needs at least one expert")
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dim() != 1 or len(labels) != len(experts):
        raise ValueError(f"labels must be an integer tensor with one label per expert ({len(experts)}), "
                         f"got {tuple(labels.shape)} {labels.dtype}")
    freqs = torch.as_tensor(frequencies)
    if freqs.dim() != 1 or len(freqs) != len(experts):
        raise ValueError(f"frequencies must have one value per expert ({len(experts)}), got {tuple(freqs.shape)}")
    if bool((freqs < 0).any()):
        raise ValueError("frequencies must be non-negative (usage shares)")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    keys = list(experts[0])
    for e in experts[1:]:
        if list(e) != keys and set(e) != set(keys):
            raise ValueError(f"all experts must have the same tensors; got {sorted(keys)} and {sorted(e)}")
    out: list[Expert] = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten().tolist()
        ref = experts[members[0]][keys[0]]
        dtype = _float_dtype(ref, freqs) if ref.dtype.is_floating_point else ref.dtype
        f = freqs[members].detach().cpu().to(torch.float64 if dtype == torch.float64 else freqs.dtype)
        total = f.sum()
        if eps == 0 and float(total) == 0.0:
            coef = torch.full((len(members),), 1.0 / len(members), dtype=f.dtype)
        else:
            coef = f / (total + eps)
        merged: Expert = {}
        for key in keys:
            acc = None
            for c, m in zip(coef.tolist(), members):
                term = experts[m][key].detach().to(dtype) * c
                acc = term if acc is None else acc + term
            merged[key] = acc
        out.append(merged)
    return out


def random_group_labels(n_experts: int, n_groups: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random grouping with every group non-empty (MC-SMoE ``generate_random_group_labels``).

    Groups 0..n_groups-1 get one expert each, the others a uniformly random group, then the labels are shuffled.
    """
    if not 1 <= n_groups <= n_experts:
        raise ValueError(f"n_groups must be between 1 and n_experts = {n_experts}, got {n_groups}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    labels = torch.empty(n_experts, dtype=torch.long)
    labels[:n_groups] = torch.arange(n_groups)
    if n_experts > n_groups:
        labels[n_groups:] = torch.randint(0, n_groups, (n_experts - n_groups,), generator=gen)
    return labels[torch.randperm(n_experts, generator=gen)]


def canonical_labels(labels: torch.Tensor) -> torch.Tensor:
    """Relabel a partition so that clusters are numbered in the order of their lowest-index member.

    ``[2, 0, 2, 1] -> [0, 1, 0, 2]``: the same partition; merging then emits clusters in expert order, so that
    r = 1 keeps every expert in its place.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    mapping: dict[int, int] = {}
    for value in labels.tolist():
        mapping.setdefault(value, len(mapping))
    return torch.tensor([mapping[v] for v in labels.tolist()], dtype=torch.long)


def cluster_members(labels: torch.Tensor) -> list[list[int]]:
    """The members of each cluster, in the order of the sorted distinct labels (the order of merge_experts)."""
    labels = torch.as_tensor(labels)
    return [torch.nonzero(labels == v).flatten().tolist() for v in torch.unique(labels)]


def expert_forward(expert: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply one expert (dict form) to ``x`` [..., d]: GELU ``fc2(gelu(fc1 x))`` or SwiGLU."""
    import torch.nn.functional as F

    if expert_kind(expert) == "gelu":
        h = F.gelu(F.linear(x, expert["fc1.weight"], expert["fc1.bias"]))
        return F.linear(h, expert["fc2.weight"], expert["fc2.bias"])
    h = F.silu(F.linear(x, expert["gate.weight"], expert.get("gate.bias"))) * F.linear(
        x, expert["up.weight"], expert.get("up.bias"))
    return F.linear(h, expert["down.weight"], expert.get("down.bias"))
