"""A tiny LLaVA-style VLM: a patch projector feeding image embeddings through ``inputs_embeds`` into a small GPT-2.

Like LLaVA-1.5 (Liu et al., "Improved Baselines with Visual Instruction Tuning", 2023): the image becomes N
embeddings (here N = (size/patch)² patch vectors through a two-layer MLP projector instead of CLIP features
through one), spliced into the token embeddings of [BOS USER:][image][instruction ASSISTANT:][caption][EOS], and
the decoder is trained with the next-token loss on the caption tokens (and EOS) only, as in visual instruction
tuning. Training epochs control how much the model memorises its training pairs (the members).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lionsnb.vlmia.data import INSTRUCTION, Pairs, WordTokenizer, make_tokenizer, patchify

__all__ = ["TinyVLMConfig", "TinyVLM", "build_tiny_vlm", "caption_batch", "train_tiny_vlm", "TrainResult",
           "PREFIX", "caption_loss"]

#: the text before the image (chunk 0 without BOS)
PREFIX = "USER:"


@dataclass(frozen=True)
class TinyVLMConfig:
    """Sizes of the tiny VLM (vocabulary size comes from the tokenizer)."""

    image_size: int = 16
    patch: int = 4
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_positions: int = 64

    @property
    def n_image(self) -> int:
        return (self.image_size // self.patch) ** 2


class TinyVLM(nn.Module):
    """Patch projector + ``GPT2LMHeadModel``; ``forward(images, prefix_ids, suffix_ids)`` returns logits
    ``[B, len(prefix) + N + L, V]`` for the sequence [prefix][N image embeddings][suffix]."""

    def __init__(self, config: TinyVLMConfig, tokenizer: WordTokenizer):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.config, self.tokenizer = config, tokenizer
        d = config.n_embd
        self.projector = nn.Sequential(nn.Linear(3 * config.patch ** 2, d), nn.GELU(), nn.Linear(d, d))
        gcfg = GPT2Config(vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=d,
                          n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
        self.lm = GPT2LMHeadModel(gcfg)

    @property
    def n_image(self) -> int:
        return self.config.n_image

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, N, d]``."""
        return self.projector(patchify(images, self.config.patch))

    def embed(self, images: torch.Tensor, prefix_ids: torch.Tensor, suffix_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds of [prefix][image][suffix]; ``prefix_ids`` ``[c0]`` or ``[B, c0]``, ``suffix_ids``
        ``[B, L]``."""
        wte = self.lm.get_input_embeddings()
        b = images.shape[0]
        prefix = prefix_ids.expand(b, -1) if prefix_ids.dim() == 1 else prefix_ids
        return torch.cat([wte(prefix), self.image_embeddings(images), wte(suffix_ids)], dim=1)

    def forward(self, images: torch.Tensor, prefix_ids: torch.Tensor, suffix_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(images, prefix_ids, suffix_ids)
        if emb.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence of {emb.shape[1]} positions exceeds n_positions={self.config.n_positions}")
        return self.lm(inputs_embeds=emb, attention_mask=attention_mask).logits

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, prefix_ids: torch.Tensor, suffix_ids: torch.Tensor,
               max_new_tokens: int, min_new_tokens: int = 0) -> list[list[int]]:
        """Greedy continuation (KV cache) of [prefix][image][suffix] for each image, stopping at EOS (not kept).

        Every prompt must have the same length (true for one instruction). Special tokens other than EOS (pad,
        BOS, image, role markers) are never generated, and EOS not among the first ``min_new_tokens`` tokens."""
        eos = self.tokenizer.eos_token_id
        suppress = [i for i in self.tokenizer.special_ids if i != eos]

        def pick(logits: torch.Tensor, step: int) -> torch.Tensor:
            logits = logits.clone()
            logits[:, suppress] = -math.inf
            if step < min_new_tokens:
                logits[:, eos] = -math.inf
            return logits.argmax(-1)

        emb = self.embed(images, prefix_ids, suffix_ids)
        out = self.lm(inputs_embeds=emb, use_cache=True)
        past, nxt = _cache_of(out), pick(out.logits[:, -1], 0)
        tokens = [nxt]
        for step in range(1, max_new_tokens):
            if emb.shape[1] + len(tokens) > self.config.n_positions:
                break
            out = self.lm(inputs_embeds=self.lm.get_input_embeddings()(nxt[:, None]), use_cache=True,
                          **{_cache_argument(self.lm): past})
            past, nxt = _cache_of(out), pick(out.logits[:, -1], step)
            tokens.append(nxt)
        seqs = torch.stack(tokens, 1).tolist()
        return [s[:s.index(eos)] if eos in s else s for s in seqs]


def _cache_argument(lm: nn.Module) -> str:
    """The KV-cache keyword of the model's forward: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def _cache_of(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def build_tiny_vlm(config: TinyVLMConfig | None = None, seed: int = 0,
                   tokenizer: WordTokenizer | None = None) -> TinyVLM:
    """A freshly initialised tiny VLM (seeded)."""
    torch.manual_seed(seed)
    return TinyVLM(config or TinyVLMConfig(), tokenizer or make_tokenizer()).eval()


def caption_batch(tokenizer: WordTokenizer, captions: Sequence[str], instruction: str = INSTRUCTION,
                  with_eos: bool = True, loss_on: str = "caption") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prefix_ids [c0], suffix_ids [B, L], loss_mask [B, L])`` for training or scoring given captions.

    suffix = instruction + ``ASSISTANT:`` + caption (+ EOS), right-padded; ``loss_mask`` marks the tokens whose
    prediction the training loss uses: the caption tokens and EOS (``loss_on="caption"``, visual instruction
    tuning) or every suffix token (``loss_on="text"``, the pre-training stage)."""
    if loss_on not in ("caption", "text"):
        raise ValueError(f"loss_on={loss_on!r}: use 'caption' (instruction tuning) or 'text' (pre-training)")
    prefix = torch.tensor(tokenizer.encode(PREFIX))
    head = tokenizer.encode(f"{instruction} ASSISTANT:", add_special_tokens=False)
    rows, masks = [], []
    for c in captions:
        cap = tokenizer.encode(c, add_special_tokens=False) + ([tokenizer.eos_token_id] if with_eos else [])
        rows.append(head + cap)
        masks.append([loss_on == "text"] * len(head) + [True] * len(cap))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, m) in enumerate(zip(rows, masks)):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(m)] = torch.tensor(m)
    return prefix, ids, mask


def caption_loss(model: TinyVLM, images: torch.Tensor, prefix: torch.Tensor, suffix: torch.Tensor,
                 mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy on the caption tokens only (LLaVA's instruction-tuning loss)."""
    logits = model(images, prefix, suffix)  # right padding: causal attention never looks at the pads
    start = prefix.shape[-1] + model.n_image
    pred = logits[:, start - 1:-1]  # row t predicts token t + 1
    ce = nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), suffix.reshape(-1), reduction="none")
    ce = ce.view(suffix.shape) * mask
    if reduction == "none":
        return ce.sum(1) / mask.sum(1)
    return ce.sum() / mask.sum()


@dataclass
class TrainResult:
    """Checkpoints (state dicts) at the requested epochs, the loss per epoch and the wall time."""

    states: dict[int, dict[str, torch.Tensor]]
    losses: list[float]
    seconds: float
    config: dict


def train_tiny_vlm(pairs: Pairs, epochs: int, *, config: TinyVLMConfig | None = None, seed: int = 0,
                   lr: float = 3e-3, batch_size: int = 32, weight_decay: float = 0.0,
                   checkpoints: Sequence[int] = (), init_state: dict[str, torch.Tensor] | None = None,
                   loss_on: str = "caption", progress: Callable | None = None,
                   device: str | torch.device = "cpu") -> TrainResult:
    """Train a tiny VLM on ``pairs`` for ``epochs`` epochs with AdamW and a warm-up + cosine schedule.

    Returns state dicts at every epoch in ``checkpoints`` (0 = the start) and at ``epochs``. ``loss_on="caption"``
    (the default) is LLaVA's instruction-tuning loss on the caption tokens only; ``"text"`` puts the loss on every
    token after the image (the pre-training stage). ``init_state`` starts from a given model (the pre-trained one).
    The states are returned on the CPU whatever ``device`` trained them.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    cfg = config or TinyVLMConfig(image_size=pairs.images.shape[-1])
    model = build_tiny_vlm(cfg, seed=seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    prefix, suffix, mask = (t.to(device) for t in caption_batch(model.tokenizer, pairs.captions, loss_on=loss_on))
    images = pairs.images.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    n = len(pairs)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed + 1)
    wanted = set(int(c) for c in checkpoints) | {epochs}
    states: dict[int, dict[str, torch.Tensor]] = {}
    if 0 in wanted:
        states[0] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    losses: list[float] = []
    start = time.perf_counter()
    epoch_iter = progress(range(1, epochs + 1), desc="training the tiny VLM") if progress else range(1, epochs + 1)
    for epoch in epoch_iter:
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss = caption_loss(model, images[idx], prefix, suffix[idx], mask[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        losses.append(total_loss / n)
        if epoch in wanted:
            states[epoch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.cpu().eval()
    return TrainResult(states, losses, time.perf_counter() - start, asdict(cfg))
