"""Adapter between ``prune_moe`` and transformers' ``MixtralForCausalLM`` (the fused-expert layout).

Written for transformers 5.x, where ``MixtralSparseMoeBlock`` holds

* ``gate``: ``MixtralTopKRouter`` with ``weight`` [E, H] (no bias): softmax over E, top-k, renormalised;
* ``experts``: ``MixtralExperts`` with fused tensors ``gate_up_proj`` [E, 2I, H] (the gate rows first, then the up
  rows) and ``down_proj`` [E, H, I]; the forward dispatches through ``config._experts_implementation``
  (``"grouped_mm"`` by default, ``"eager"`` loops over the experts).

An expert comes out as a SwiGLU expert dict ``{"gate.weight": [I, H], "up.weight": [I, H], "down.weight": [H, I]}``
(computing ``down(silu(gate x) * up x)``), so the components align and merge it like the tiny model's experts;
:func:`set_experts` writes a list of such dicts back as fused tensors (exact round trip).

After pruning:

* frequency-drop and the mean-row router leave a plain ``MixtralForCausalLM`` with E/r experts
  (``config.num_local_experts`` updated; ``save_pretrained`` / ``from_pretrained`` work);
* slot binding and the logsumexp router replace ``gate`` by a router that keeps the E rows
  (:class:`SlotBoundRouter`, :class:`LogsumexpRouter`, subclasses of ``MixtralTopKRouter``); the model runs and
  generates, but is no longer a standard checkpoint, and its load-balancing loss is not meaningful (the pruning is
  post-training).

Models that share the layout (``mlp.gate`` a top-k router with ``weight`` [E, H], ``mlp.experts`` with fused
``gate_up_proj`` / ``down_proj``), such as ``OlmoeForCausalLM``, go through the same code; the new routers are
derived from the model's own router class, so its options (e.g. OLMoE's ``norm_topk_prob = False``) are kept.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lionsnb.uncurl.components import merge_experts
from lionsnb.uncurl.model import collapse_index, collapse_logsumexp


def _classes():
    try:
        from transformers.models.mixtral import modeling_mixtral as mm
    except ImportError as err:  # pragma: no cover - transformers is a dependency
        raise ImportError("the Mixtral adapter needs transformers >= 5 (pip install transformers)") from err
    return mm


def _base(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", None)
    return inner if inner is not None and hasattr(inner, "layers") else model


def moe_blocks(model: nn.Module) -> list[nn.Module]:
    """The sparse MoE block of every decoder layer that has one (``mlp.gate`` + fused ``mlp.experts``)."""
    layers = getattr(_base(model), "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no decoder layers (model.model.layers): not a supported MoE")
    blocks = []
    for layer in layers:
        mlp = getattr(layer, "mlp", None)
        experts = getattr(mlp, "experts", None)
        if mlp is None or not hasattr(mlp, "gate") or experts is None:
            continue
        if not hasattr(experts, "gate_up_proj") or not hasattr(experts, "down_proj"):
            raise TypeError("this MoE has no fused expert tensors (gate_up_proj, down_proj): the adapter targets "
                            "the transformers >= 5 layout; upgrade transformers or convert the checkpoint")
        blocks.append(mlp)
    if not blocks:
        raise TypeError(f"{type(model).__name__} has no sparse MoE blocks (mlp.gate and mlp.experts)")
    return blocks


def is_mixtral(model: Any) -> bool:
    """True for a transformers MoE with the Mixtral layout: ``MixtralForCausalLM``, and models that share it
    (a top-k router ``mlp.gate.weight`` [E, H], fused ``mlp.experts.gate_up_proj`` / ``down_proj``, e.g. OLMoE)."""
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        return False
    try:
        moe_blocks(model)
    except TypeError:
        return False
    return True


def n_router_outputs(block: nn.Module) -> int:
    return int(block.gate.weight.shape[0])


def get_experts(block: nn.Module) -> list[dict]:
    """The experts of one block as SwiGLU dicts (copies): gate = first I rows of gate_up_proj, up = the rest."""
    ex = block.experts
    if getattr(ex, "is_transposed", False) or not getattr(ex, "is_concatenated", True):
        raise TypeError("unsupported expert layout (transposed or interleaved gate/up)")
    if ex.gate_up_proj.shape[0] != n_router_outputs(block) or hasattr(block.gate, "slot_map") \
            or hasattr(block.gate, "groups"):
        raise ValueError("this Mixtral block was already pruned: prune the original model instead")
    return get_experts_unchecked(block)


def get_experts_unchecked(block: nn.Module) -> list[dict]:
    """The experts of a (possibly pruned) block as SwiGLU dicts, whatever the router."""
    ex = block.experts
    inter = ex.down_proj.shape[-1]
    return [{"gate.weight": ex.gate_up_proj[e, :inter].detach().clone(),
             "up.weight": ex.gate_up_proj[e, inter:].detach().clone(),
             "down.weight": ex.down_proj[e].detach().clone()} for e in range(ex.gate_up_proj.shape[0])]


def set_experts(block: nn.Module, experts: list[dict]) -> None:
    """Write SwiGLU expert dicts back into the block's fused tensors (their number may change)."""
    ex = block.experts
    ref = ex.gate_up_proj
    gate_up = torch.stack([torch.cat([e["gate.weight"], e["up.weight"]], dim=0) for e in experts])
    down = torch.stack([e["down.weight"] for e in experts])
    ex.gate_up_proj = nn.Parameter(gate_up.to(device=ref.device, dtype=ref.dtype), requires_grad=ref.requires_grad)
    ex.down_proj = nn.Parameter(down.to(device=ref.device, dtype=ref.dtype), requires_grad=ref.requires_grad)
    ex.num_experts = len(experts)


_ROUTER_CLASSES: dict[type, tuple[type, type]] = {}


def _router_classes(base_cls: type) -> tuple[type, type]:
    """Slot-binding and logsumexp router classes derived from the model's own router class (so that transformers'
    output recorders still find them)."""
    if base_cls in _ROUTER_CLASSES:
        return _ROUTER_CLASSES[base_cls]

    def _copy(self, base: nn.Module) -> None:
        nn.Module.__init__(self)
        for name, value in vars(base).items():
            if not name.startswith("_") and not isinstance(value, (nn.Module, torch.Tensor)):
                setattr(self, name, value)
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=base.weight.requires_grad)

    def slot_init(self, base: nn.Module, slot_map: torch.Tensor) -> None:
        _copy(self, base)
        self.register_buffer("slot_map", slot_map.to(base.weight.device), persistent=True)

    def slot_forward(self, hidden_states):
        logits, scores, indices = base_cls.forward(self, hidden_states)
        return logits, scores, self.slot_map[indices]

    def lse_init(self, base: nn.Module, groups: torch.Tensor) -> None:
        _copy(self, base)
        self.num_experts = int(groups.max()) + 1
        self.top_k = min(self.top_k, self.num_experts)
        self.register_buffer("groups", groups.to(base.weight.device), persistent=True)
        self._collapse = collapse_index(groups)

    def lse_forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.weight.shape[1])
        logits = collapse_logsumexp(nn.functional.linear(hidden_states, self.weight), self.groups, self._collapse)
        probs = torch.softmax(logits.float(), dim=-1)
        top_value, top_index = torch.topk(probs, self.top_k, dim=-1)
        if getattr(self, "norm_topk_prob", True):
            top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        return logits, top_value.to(logits.dtype), top_index

    slot_cls = type(f"SlotBound{base_cls.__name__}", (base_cls,), {
        "__init__": slot_init, "forward": slot_forward,
        "__doc__": "Slot binding: softmax and top-k over the E original router rows, then each chosen slot is "
                   "mapped to its cluster's merged expert (two chosen slots of one cluster apply it with both "
                   "weights)."})
    lse_cls = type(f"Logsumexp{base_cls.__name__}", (base_cls,), {
        "__init__": lse_init, "forward": lse_forward,
        "__doc__": "Collapsed router: the E rows stay, merged expert c gets logsumexp of its members' logits, "
                   "then softmax, top-k (and renormalisation when the model normalises) over the E/r experts."})
    _ROUTER_CLASSES[base_cls] = (slot_cls, lse_cls)
    return slot_cls, lse_cls


def SlotBoundRouter(base: nn.Module, slot_map: torch.Tensor) -> nn.Module:  # noqa: N802 - a class factory
    """A slot-binding router built from ``base`` (the model's top-k router) and the cluster of each slot."""
    return _router_classes(type(base))[0](base, slot_map)


def LogsumexpRouter(base: nn.Module, groups: torch.Tensor) -> nn.Module:  # noqa: N802 - a class factory
    """A logsumexp-collapsed router built from ``base`` and the cluster of each router row."""
    return _router_classes(type(base))[1](base, groups)


def _shrink_plain_router(block: nn.Module, weight: torch.Tensor) -> None:
    gate = block.gate
    gate.weight = nn.Parameter(weight.to(device=gate.weight.device, dtype=gate.weight.dtype),
                               requires_grad=gate.weight.requires_grad)
    gate.num_experts = weight.shape[0]
    gate.top_k = min(gate.top_k, gate.num_experts)
    block.top_k = gate.top_k


def apply_plans(model: nn.Module, plans: list, router: str, align: str, eps: float) -> None:
    """Prune every block of ``model`` in place according to ``plans`` (see :func:`lionsnb.uncurl.prune_moe`)."""
    from lionsnb.uncurl.prune import align_clusters, merged_router_rows

    blocks = moe_blocks(model)
    n_after = plans[0].n_after
    top_k = None
    for block, plan in zip(blocks, plans):
        experts = get_experts(block)
        if plan.method == "frequency":
            set_experts(block, [experts[i] for i in plan.kept])
            _shrink_plain_router(block, block.gate.weight.detach()[plan.kept].clone())
        else:
            aligned = align_clusters(experts, plan.labels, plan.frequencies, align)
            dtype = block.experts.gate_up_proj.dtype
            merged = merge_experts([{k: v.to(torch.float64 if dtype == torch.float64 else torch.float32)
                                     for k, v in e.items()} for e in aligned], plan.frequencies, plan.labels, eps=eps)
            set_experts(block, merged)
            if router == "slot":
                block.gate = SlotBoundRouter(block.gate, plan.labels.clone())
            elif router == "logsumexp":
                block.gate = LogsumexpRouter(block.gate, plan.labels.clone())
                block.top_k = block.gate.top_k
            else:
                _shrink_plain_router(block, merged_router_rows(block.gate.weight, plan.labels, plan.frequencies))
        top_k = block.gate.top_k
    cfg = model.config
    for name in ("num_local_experts", "num_experts"):
        if isinstance(getattr(cfg, name, None), int):
            setattr(cfg, name, n_after)
    if router == "mean" or plans[0].method == "frequency":
        cfg.num_experts_per_tok = top_k
    if hasattr(model, "num_experts"):
        model.num_experts = n_after
        model.num_experts_per_tok = cfg.num_experts_per_tok


@torch.no_grad()
def router_statistics(model: nn.Module, batches: Iterable[Any]) -> list[dict[str, torch.Tensor]]:
    """Router logits [T, E] and top-k indices [T, k] of every attended token, per block (forward hooks on gate).

    A batch is a LongTensor of input ids [B, L] or a dict with ``input_ids`` (and ``attention_mask``).
    """
    blocks = moe_blocks(model)
    logits: list[list[torch.Tensor]] = [[] for _ in blocks]
    topk: list[list[torch.Tensor]] = [[] for _ in blocks]
    current: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(i):
        def fn(module, args, output):
            current[i] = (output[0].detach().float().cpu(), output[2].detach().cpu())
        return fn

    handles = [b.gate.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            if isinstance(batch, dict):
                ids = batch["input_ids"]
                mask = batch.get("attention_mask")
            else:
                ids, mask = torch.as_tensor(batch), None
            mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
            model(input_ids=ids.to(device), attention_mask=mask.long().to(device), use_cache=False)
            keep = mask.reshape(-1).cpu()
            for i in range(len(blocks)):
                lg, tk = current.pop(i)
                logits[i].append(lg[keep])
                topk[i].append(tk[keep])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return [{"logits": torch.cat(lg), "topk": torch.cat(tk)} for lg, tk in zip(logits, topk)]


def tiny_olmoe(n_experts: int = 4, hidden: int = 32, intermediate: int = 48, layers: int = 2, vocab: int = 64,
               top_k: int = 2, seed: int = 0) -> nn.Module:
    """A tiny randomly initialised ``OlmoeForCausalLM`` (same fused layout, no top-k renormalisation)."""
    from transformers import OlmoeConfig, OlmoeForCausalLM

    cfg = OlmoeConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, num_experts=n_experts,
                      num_experts_per_tok=top_k, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2)
    torch.manual_seed(seed)
    model = OlmoeForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return model.eval()


def tiny_mixtral(n_experts: int = 4, hidden: int = 32, intermediate: int = 48, layers: int = 2, vocab: int = 64,
                 top_k: int = 2, seed: int = 0, experts_implementation: str | None = None) -> nn.Module:
    """A tiny randomly initialised ``MixtralForCausalLM`` (offline; for tests and the adapter demo)."""
    mm = _classes()
    from transformers import MixtralConfig

    cfg = MixtralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        num_local_experts=n_experts, num_experts_per_tok=top_k, max_position_embeddings=128,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if experts_implementation is not None:
        cfg._experts_implementation = experts_implementation
    torch.manual_seed(seed)
    model = mm.MixtralForCausalLM(cfg)
    with torch.no_grad():  # random, clearly non-degenerate weights (the default init std is 0.02)
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    return model.eval()


def load_hub_moe(model_id: str, dtype: torch.dtype = torch.bfloat16, device: str = "auto") -> nn.Module:
    """Load a hub Mixtral-layout MoE (``full`` profile, needs network or a local copy); a clear error offline."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, device_map=device)
    except OSError as err:
        raise OSError(f"could not load {model_id!r}: it needs network access to the hub or a local folder with the "
                      f"checkpoint. Offline, use lionsnb.uncurl.mixtral.tiny_mixtral() instead.") from err
    if not is_mixtral(model):
        raise TypeError(f"{model_id!r} loads as {type(model).__name__}; the adapter supports MixtralForCausalLM")
    return model
