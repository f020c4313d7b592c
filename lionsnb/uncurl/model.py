"""A tiny decoder-only sparse mixture-of-experts transformer (pure torch), its training loop and evaluation.

Each block is pre-LayerNorm causal self-attention followed by an MoE layer: a bias-free linear router, top-k
routing with the top-k softmax probabilities renormalised to sum to 1, and GELU experts ``fc2(gelu(fc1 x))``
(the dense expert of MC-SMoE's fsgpt model, so the experts are the dicts of :mod:`lionsnb.uncurl.components`).
Training adds the Switch-Transformer load-balancing loss ``E * sum_e f_e P_e`` (f_e: share of the top-k
assignments, P_e: mean router probability) with coefficient 0.01.

The MoE layer also carries what pruning leaves behind (:mod:`lionsnb.uncurl.prune`):

* ``experts`` is a list of *slots*; after slot binding several slots hold the same module (MC-SMoE's behaviour):
  the layer still loops over every router slot, so it saves memory but not routing width;
* ``groups`` (logsumexp router): the router keeps its E rows and a merged expert c gets the logit
  ``logsumexp_{e in c} z_e``, so the softmax gives it exactly the summed probability of its members.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lionsnb.uncurl import data as D


@dataclass(frozen=True)
class MoEConfig:
    """Sizes of the tiny MoE decoder."""

    n_experts: int = 8
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    expert_hidden: int = 64
    top_k: int = 2
    vocab_size: int = D.VOCAB_SIZE
    max_len: int = D.SEQ_LEN
    aux_coef: float = 0.01

    def __post_init__(self) -> None:
        if self.n_experts < 1 or self.top_k < 1:
            raise ValueError(f"n_experts and top_k must be >= 1, got {self.n_experts}, {self.top_k}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")


class Expert(nn.Module):
    """The dense GELU expert ``fc2(gelu(fc1 x))``; its state dict is an expert dict of the components."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


_EXPERT_KEYS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def expert_from_dict(state: dict, dtype: torch.dtype | None = None) -> Expert:
    """An :class:`Expert` module holding copies of the tensors of an expert dict (no random initialisation)."""
    d_model, hidden = state["fc1.weight"].shape[1], state["fc1.weight"].shape[0]
    module = Expert(d_model, hidden).to(state["fc1.weight"].dtype)
    module.load_state_dict({k: state[k] for k in _EXPERT_KEYS})
    if dtype is not None:
        module.to(dtype)
    return module


class MoELayer(nn.Module):
    """Top-k routed mixture of experts over a list of router slots (see the module docstring)."""

    def __init__(self, d_model: int, hidden: int, n_experts: int, top_k: int):
        super().__init__()
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(d_model, hidden) for _ in range(n_experts))
        self.top_k = top_k
        self._groups: torch.Tensor | None = None  # logsumexp router: cluster label of each router row
        self._collapse: tuple[torch.Tensor, torch.Tensor] | None = None
        self.record = False
        self.last_logits: torch.Tensor | None = None
        self.last_topk: torch.Tensor | None = None
        self.aux_loss: torch.Tensor | None = None

    @property
    def groups(self) -> torch.Tensor | None:
        """Logsumexp router: the merged expert (cluster) of each router row; None for a plain router."""
        return self._groups

    @groups.setter
    def groups(self, value: torch.Tensor | None) -> None:
        self._groups = None if value is None else torch.as_tensor(value, dtype=torch.long)
        self._collapse = None if value is None else collapse_index(self._groups)

    @property
    def n_slots(self) -> int:
        """Router outputs the top-k choice is made over (merged experts for a logsumexp router)."""
        return self.router.out_features if self.groups is None else int(self.groups.max()) + 1

    def unique_experts(self) -> list[Expert]:
        """The distinct expert modules (slot binding shares one module between several slots)."""
        seen, out = set(), []
        for e in self.experts:
            if id(e) not in seen:
                seen.add(id(e))
                out.append(e)
        return out

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits [N, R], routing probabilities [N, n_slots], top-k weights [N, k] (renormalised to sum
        to 1) and top-k slot indices [N, k]."""
        logits = self.router(x)
        scores = logits
        if self.groups is not None:
            scores = collapse_logsumexp(logits, self._groups, self._collapse)
        probs = torch.softmax(scores, dim=-1)
        k = min(self.top_k, probs.shape[-1])
        top_w, top_i = torch.topk(probs, k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return logits, probs, top_w, top_i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits, probs, top_w, top_i = self.route(x)
        if self.record:
            self.last_logits, self.last_topk = logits.detach(), top_i.detach()
        if self.training:
            n = probs.shape[-1]
            share = torch.bincount(top_i.reshape(-1), minlength=n).to(probs.dtype) / top_i.numel()
            self.aux_loss = n * torch.sum(share * probs.mean(dim=0))
        out = torch.zeros_like(x)
        for slot, expert in enumerate(self.experts):
            rows, col = torch.nonzero(top_i == slot, as_tuple=True)
            if rows.numel() == 0:
                continue
            y = expert(x[rows]) * top_w[rows, col, None]
            out.index_add_(0, rows, y)
        return out.reshape(shape)


def collapse_index(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For clusters 0..M-1 in ``groups``: member indices [M, w] (padded) and the padding mask [M, w]."""
    groups = torch.as_tensor(groups, dtype=torch.long)
    n_groups = int(groups.max()) + 1
    members = [torch.nonzero(groups == c).flatten() for c in range(n_groups)]
    if any(len(m) == 0 for m in members):
        raise ValueError(f"groups must use every label 0..{n_groups - 1}, got {groups.tolist()}")
    width = max(len(m) for m in members)
    index = torch.zeros(n_groups, width, dtype=torch.long, device=groups.device)
    pad = torch.ones(n_groups, width, dtype=torch.bool, device=groups.device)
    for c, m in enumerate(members):
        index[c, :len(m)] = m
        pad[c, :len(m)] = False
    return index, pad


def collapse_logsumexp(logits: torch.Tensor, groups: torch.Tensor,
                       index: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Merged-expert logits ``logsumexp_{e in c} z_e`` for each cluster c (labels 0..M-1 in ``groups``).

    ``softmax`` of the result gives each cluster exactly the summed softmax probability of its members.  A
    one-member cluster keeps its logit exactly (``z + log(1)``).  ``index``: :func:`collapse_index` of ``groups``,
    precomputed.
    """
    idx, pad = index if index is not None else collapse_index(groups)
    gathered = logits[:, idx.to(logits.device)]  # [N, M, width]
    gathered = gathered.masked_fill(pad.to(logits.device), float("-inf"))
    return torch.logsumexp(gathered, dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.moe = MoELayer(cfg.d_model, cfg.expert_hidden, cfg.n_experts, cfg.top_k)
        self.n_heads = cfg.n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.moe(self.ln2(x))


class TinyMoE(nn.Module):
    """Decoder-only MoE language model over the task mixture's vocabulary; ``forward(tokens) -> logits``."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    @property
    def moe_layers(self) -> list[MoELayer]:
        return [b.moe for b in self.blocks]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_len {self.cfg.max_len}")
        x = self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    def train(self, mode: bool = True) -> TinyMoE:
        """Switching to eval mode also drops the stored load-balancing losses (graph tensors cannot be deep-copied)."""
        if not mode:
            self.clear_aux()
        return super().train(mode)

    def clear_aux(self) -> None:
        for layer in self.moe_layers:
            layer.aux_loss = None

    def aux_loss(self) -> torch.Tensor:
        """Sum of the layers' load-balancing losses of the last training forward."""
        return sum(layer.aux_loss for layer in self.moe_layers if layer.aux_loss is not None)


def count_parameters(model: nn.Module, experts_only: bool = False) -> int:
    """Distinct parameters (a module bound to several slots counts once); optionally only the experts'."""
    seen, total = set(), 0
    for name, p in model.named_parameters():  # named_parameters already skips shared duplicates
        if experts_only and ".experts." not in name and "experts." not in name:
            continue
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def parameter_bytes(model: nn.Module, experts_only: bool = False) -> int:
    """Memory of the distinct parameters in bytes."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if experts_only and "experts." not in name:
            continue
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


@dataclass
class TrainResult:
    """A trained model with its loss history (state dict + config, so it caches and reloads)."""

    config: dict
    state: dict
    losses: list[float] = field(default_factory=list)
    aux: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0

    def model(self, device: torch.device | str = "cpu") -> TinyMoE:
        return load_model(asdict(self), device)

    def to_dict(self) -> dict:
        """Tensors, numbers and lists only (what the suite's cache stores)."""
        return asdict(self)


def load_model(trained: dict | TrainResult, device: torch.device | str = "cpu",
               state: dict | None = None) -> TinyMoE:
    """The :class:`TinyMoE` of a training result (a :class:`TrainResult` or its dict), optionally with other
    weights of the same architecture (``state``, e.g. a task fine-tune), in eval mode."""
    if isinstance(trained, TrainResult):
        trained = asdict(trained)
    m = TinyMoE(MoEConfig(**trained["config"]))
    m.load_state_dict(state if state is not None else trained["state"])
    return m.to(device).eval()


def masked_loss(logits: torch.Tensor, batch: D.Batch) -> torch.Tensor:
    """Cross-entropy over each example's answer tokens, averaged per example, then over the batch.

    Averaging per example gives every task the same weight, whatever the length of its answers (the one-digit
    answers of ``add`` would otherwise carry a tenth of the loss).
    """
    mask = batch.mask.to(logits.dtype)
    ce = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
    return ((ce * mask).sum(1) / mask.sum(1)).mean()


def train_moe(cfg: MoEConfig, tasks: tuple[str, ...], steps: int, batch_size: int = 64, lr: float = 3e-3,
              seed: int = 0, device: str | torch.device = "cpu", warmup: int = 50, progress: bool = False,
              desc: str = "train", task_weights: tuple[float, ...] | None = None) -> TrainResult:
    """Train a :class:`TinyMoE` on fresh batches of the task mixture (AdamW, warm-up then cosine decay).

    The loss is the answer-token cross-entropy plus ``aux_coef`` times the load-balancing loss.  Every step draws
    a new seeded batch, so two runs with the same arguments give the same model.  ``task_weights``: sampling
    weights of the tasks in a batch (default: uniform).
    """
    torch.manual_seed(seed)
    model = TinyMoE(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * 0.95 + 0.05

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses, auxes = [], []
    iterator = range(steps)
    if progress:
        try:
            from lionsnb.progress import progress as bar
        except ImportError:  # older plumbing
            bar = None
        if bar is not None:
            iterator = bar(iterator, desc=desc)
    start = time.perf_counter()
    model.train()
    for step in iterator:
        batch = D.make_batch(tasks, n=batch_size, seed=seed * 1_000_003 + step,
                             task_weights=list(task_weights) if task_weights is not None else None).to(device)
        logits = model(batch.inputs)
        loss = masked_loss(logits, batch)
        aux = model.aux_loss()
        opt.zero_grad(set_to_none=True)
        (loss + cfg.aux_coef * aux).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        auxes.append(float(aux.detach()))
    model.eval()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(asdict(cfg), state, losses, auxes, time.perf_counter() - start, steps)


@torch.no_grad()
def evaluate(model: nn.Module, batch: D.Batch, batch_size: int = 512) -> dict[str, dict[str, float]]:
    """Per-task exact-match accuracy and answer NLL of ``model`` on ``batch``.

    Exact match: every answer token (and the final eos) is the argmax given the correct prefix, which is the same
    as greedy decoding producing exactly the answer.  NLL: mean cross-entropy per answer token.
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros(len(batch), dtype=torch.bool)
    nll = torch.zeros(len(batch))
    for i in range(0, len(batch), batch_size):
        tok = batch.tokens[i:i + batch_size].to(device)
        mask = batch.answer_mask[i:i + batch_size, :-1].to(device)
        logits = model(tok[:, :-1]).float()
        tgt = tok[:, 1:]
        ok = (logits.argmax(-1) == tgt) | ~mask
        correct[i:i + batch_size] = ok.all(dim=1).cpu()
        ce = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
        nll[i:i + batch_size] = ((ce * mask).sum(1) / mask.sum(1)).cpu()
    model.train(was)
    out = {}
    for t, name in enumerate(batch.tasks):
        sel = batch.task == t
        if bool(sel.any()):
            out[name] = {"acc": float(correct[sel].float().mean()), "nll": float(nll[sel].mean())}
    return out


@torch.no_grad()
def router_statistics(model: TinyMoE, batches: list[D.Batch]) -> list[dict[str, torch.Tensor]]:
    """Per MoE layer: router logits [T, R] and top-k slot indices [T, k] of every real token of ``batches``."""
    layers = model.moe_layers
    logits: list[list[torch.Tensor]] = [[] for _ in layers]
    topk: list[list[torch.Tensor]] = [[] for _ in layers]
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        for layer in layers:
            layer.record = True
        for batch in batches:
            tokens = batch.inputs if isinstance(batch, D.Batch) else torch.as_tensor(batch)
            valid = (tokens != D.PAD).reshape(-1)
            model(tokens.to(device))
            for i, layer in enumerate(layers):
                logits[i].append(layer.last_logits.cpu()[valid])
                topk[i].append(layer.last_topk.cpu()[valid])
    finally:
        for layer in layers:
            layer.record = False
            layer.last_logits = layer.last_topk = None
        model.train(was)
    return [{"logits": torch.cat(lg), "topk": torch.cat(tk)} for lg, tk in zip(logits, topk)]
