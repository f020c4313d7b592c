"""Exact brute-force verification under the Levenshtein distance (the BruteF baseline, done exactly).

The space is the model's encoded strings (lowercased, out-of-alphabet characters dropped); the
tokenizer is 1-Lipschitz for d_Lev, so robustness of the encoded string at distance k covers every
raw string within k. A sentence is robust at k iff it is correctly classified and every string Q with
d_Lev(P, Q) <= k has a strictly positive margin g_yt(Q) = f_y(Q) - f_t(Q) for every t != y.

Two engines evaluate the unique distance-1 neighbours (:func:`lionsnb.lipslev.levenshtein.neighbour_edits`):

* ``full``: batched forward passes of every neighbour (any depth);
* ``incremental`` (one conv layer, sum pooling): an edit at position j changes only the conv windows
  j..j+q-1, so the pooled features of a neighbour are z(P) + sum ReLU(new windows) - sum ReLU(old windows),
  with the per-tap products W_i e_c precomputed for every character c. Cost O(|N_1| q^2 h) instead of
  O(|N_1| n q h d).

Distance 2 enumerates the deduplicated ball (:func:`lionsnb.lipslev.levenshtein.ball`) and runs the full engine:
only for short strings over small alphabets (|N_<=2| grows like |N_1|^2 / 2).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lionsnb.lipslev.certify import as_float64, logits_of_ids
from lionsnb.lipslev.levenshtein import Edit, apply_edit, ball, neighbour_edits
from lionsnb.lipslev.model import LipsLevCNN
from lionsnb.progress import progress as progress_bar

ENGINES = ("incremental", "full")
_SHIFT = {"sub": 0, "del": 1, "ins": -1}


class IncrementalEngine:
    """Pooled features and logits of every distance-1 neighbour of one sentence, window by window."""

    def __init__(self, model: LipsLevCNN, seq: Sequence[int]):
        if model.layers != 1:
            raise ValueError("the incremental engine needs a one-layer model; use engine='full' for deeper ones")
        model = as_float64(model)
        emb, (kernel,), head = model.effective_weights()
        self.q = kernel.shape[-1]
        self.head = head.detach()
        # per_char[c, i] = W_i e_c  (torch conv1d is a cross-correlation: tap i meets input t + i - (q - 1))
        self.per_char = torch.einsum("hdi,cd->cih", kernel.detach(), emb.detach())
        self.seq = torch.as_tensor(list(seq), dtype=torch.long)
        q = self.q
        padded = torch.cat([torch.zeros(q - 1, dtype=torch.long), self.seq, torch.zeros(q - 1, dtype=torch.long)])
        relu = torch.relu(self._pre_activations(padded))
        self.z0 = relu.sum(0)
        self.relu_cumsum = torch.cat([torch.zeros(1, relu.shape[1], dtype=relu.dtype), relu.cumsum(0)])

    def _pre_activations(self, padded: torch.Tensor) -> torch.Tensor:
        """u_t = sum_i W_i x_{t+i-q+1} for every output position t of a zero-padded sequence."""
        q = self.q
        count = len(padded) - q + 1
        out = torch.zeros(count, self.per_char.shape[-1], dtype=self.per_char.dtype)
        for i in range(q):
            out += self.per_char[padded[i:i + count], i]
        return out

    def _source(self, positions: torch.Tensor) -> torch.Tensor:
        """Characters of P at ``positions`` (0 outside 0..n-1)."""
        n = len(self.seq)
        inside = (positions >= 0) & (positions < n)
        return torch.where(inside, self.seq[positions.clamp(0, max(n - 1, 0))] if n else positions * 0, 0)

    def features(self, edits: Sequence[Edit], chunk: int = 4096) -> torch.Tensor:
        """Pooled features z(Q) (E, h) of the strings Q = apply_edit(P, e) for every edit e."""
        q, out = self.q, []
        offsets = torch.arange(-(q - 1), q)  # new positions j-q+1 .. j+q-1
        total = self.relu_cumsum.shape[0] - 1
        for start in range(0, len(edits), chunk):
            part = edits[start:start + chunk]
            kinds = [e[0] for e in part]
            j = torch.tensor([e[1] for e in part])
            c = torch.tensor([e[2] for e in part])
            is_sub = torch.tensor([k == "sub" for k in kinds])
            is_del = torch.tensor([k == "del" for k in kinds])
            is_ins = torch.tensor([k == "ins" for k in kinds])
            m = j[:, None] + offsets[None, :]  # positions in the new string
            src = torch.where(is_del[:, None] & (m >= j[:, None]), m + 1,
                              torch.where(is_ins[:, None] & (m > j[:, None]), m - 1, m))
            local = self._source(src)
            at_j = (m == j[:, None]) & (is_sub | is_ins)[:, None]
            local = torch.where(at_j, c[:, None].expand_as(local), local)
            new = torch.zeros(len(part), q, self.per_char.shape[-1], dtype=self.per_char.dtype)
            for i in range(q):
                new += self.per_char[local[:, i:i + q], i]
            shift = torch.tensor([_SHIFT[k] for k in kinds])
            lo, hi = j.clamp(max=total), (j + q + shift).clamp(max=total)  # old windows j .. j+q-1+shift
            removed = self.relu_cumsum[hi] - self.relu_cumsum[lo]
            out.append(self.z0 + torch.relu(new).sum(1) - removed)
        return torch.cat(out) if out else torch.zeros(0, self.z0.shape[0], dtype=self.z0.dtype)

    def logits(self, edits: Sequence[Edit]) -> torch.Tensor:
        return self.features(edits) @ self.head.T


def full_logits(model: LipsLevCNN, seqs: Sequence[Sequence[int]], batch_size: int = 512) -> torch.Tensor:
    """Logits of many strings by plain batched forward passes (float64)."""
    return logits_of_ids(as_float64(model), seqs, batch_size)


@dataclass
class BruteForceResult:
    """Exact verification of one sentence at distance <= k."""

    label: int
    k: int
    correct: bool
    robust: bool                 # correct and every string within k keeps a strictly positive margin
    min_margin: float            # min over the ball (P included) of min_t g_yt
    max_change: np.ndarray       # (K,): max over the ball of |g_yt(Q) - g_yt(P)| / d(P, Q)  (0 at t = y)
    neighbours: int              # unique strings at distance 1..k
    seconds: float
    worst: tuple = field(default=())  # the string with the smallest margin


def _summarise(label: int, k: int, base: torch.Tensor, logits: torch.Tensor, dist: torch.Tensor,
               string_at: Callable[[int], tuple], seconds: float) -> BruteForceResult:
    classes = base.shape[0]
    others = [t for t in range(classes) if t != label]
    g0 = base[label] - base[others]
    g = logits[:, label, None] - logits[:, others]
    change = np.zeros(classes)
    if len(logits):
        change[others] = ((g - g0).abs() / dist[:, None]).amax(0).numpy()
    margins = torch.cat([g0[None], g]).amin(1)
    worst = int(margins.argmin())
    correct = bool(g0.min() > 0)
    return BruteForceResult(label, k, correct, bool(margins.min() > 0), float(margins.min()), change, len(logits),
                            seconds, tuple(string_at(worst - 1)) if worst > 0 else ())


def brute_force_ids(model: LipsLevCNN, seq: Sequence[int], label: int, k: int = 1, *, engine: str = "incremental",
                    symbols: Sequence[int] | None = None) -> BruteForceResult:
    """Exact robustness of an encoded string at distance <= k (k = 1: either engine; k >= 2: full engine)."""
    if engine not in ENGINES:
        raise ValueError(f"engine = {engine!r}: use one of {ENGINES}")
    if k < 1:
        raise ValueError("k must be >= 1")
    model = as_float64(model)
    symbols = list(range(1, model.alphabet.size + 1)) if symbols is None else list(symbols)
    seq = tuple(int(c) for c in seq)
    start = time.perf_counter()
    base = full_logits(model, [seq])[0]
    margin0 = float((base[label] - torch.cat([base[:label], base[label + 1:]])).min())
    if margin0 <= 0:  # misclassified: not robust, nothing to enumerate
        return BruteForceResult(label, k, False, False, margin0, np.zeros(model.num_classes), 0,
                                time.perf_counter() - start)
    if k == 1:
        edits = neighbour_edits(seq, symbols)
        if engine == "incremental":
            logits = IncrementalEngine(model, seq).logits(edits)
        else:
            logits = full_logits(model, [apply_edit(seq, e) for e in edits])
        dist = torch.ones(len(edits), dtype=torch.float64)
        return _summarise(label, k, base, logits, dist, lambda i: apply_edit(seq, edits[i]),
                          time.perf_counter() - start)
    within = ball(seq, symbols, k)
    strings = [s for s, d in within.items() if d > 0]
    dist = torch.tensor([float(within[s]) for s in strings], dtype=torch.float64)
    logits = full_logits(model, strings)
    return _summarise(label, k, base, logits, dist, strings.__getitem__, time.perf_counter() - start)


def brute_force(model: LipsLevCNN, text: str, label: int, k: int = 1, *,
                engine: str = "incremental") -> BruteForceResult:
    """Exact robustness of one sentence at Levenshtein distance <= k (after encoding)."""
    return brute_force_ids(model, model.alphabet.encode(text), label, k, engine=engine)


def brute_force_many(model: LipsLevCNN, texts: Sequence[str], labels: Sequence[int], k: int = 1, *,
                     engine: str = "incremental", progress: bool = True) -> list[BruteForceResult]:
    """:func:`brute_force` on every sentence (a misclassified sentence is reported without enumeration)."""
    model = as_float64(model)
    out = []
    for text, label in progress_bar(list(zip(texts, labels)), desc=f"brute force k={k}", unit="sentence",
                                    disable=not progress):
        out.append(brute_force(model, text, int(label), k, engine=engine))
    return out


def shortest_rows(radii: Sequence[int], lengths: Sequence[int], n_certified: int, n_uncertified: int, *,
                  top_up: bool = False) -> tuple[list[int], list[int]]:
    """The rows an exact check takes, ``(certified, uncertified)``: the ``n_certified`` shortest rows certified at
    k >= 1 and the ``n_uncertified`` shortest correct rows with radius 0, each list shortest first (ties by row).

    Short rows keep brute force cheap; the two groups put both verdicts of the certificate to the test (brute force
    must confirm every certified row, and says which uncertified ones are robust anyway). Misclassified rows
    (radius -1) are never taken: they are not robust and brute force has nothing to enumerate. ``top_up=True``
    makes up a group that runs short with rows of the other, so that ``n_certified + n_uncertified`` rows are
    taken whenever there are that many correct ones.
    """
    radii, lengths = np.asarray(radii), np.asarray(lengths)
    if radii.shape != lengths.shape:
        raise ValueError(f"{len(radii)} radii but {len(lengths)} lengths")
    if n_certified < 0 or n_uncertified < 0:
        raise ValueError("the numbers of rows must be >= 0")
    by_length = np.argsort(lengths, kind="stable")
    certified = [int(i) for i in by_length if radii[i] >= 1]
    uncertified = [int(i) for i in by_length if radii[i] == 0]
    take_c, take_u = min(len(certified), n_certified), min(len(uncertified), n_uncertified)
    if top_up:
        total = n_certified + n_uncertified
        take_c = min(len(certified), total - take_u)
        take_u = min(len(uncertified), total - take_c)
    return certified[:take_c], uncertified[:take_u]
