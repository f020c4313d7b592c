"""Baselines around the certificate: interval bound propagation (sound, looser) and a Charmer-style attack.

* IBP at distance 1 (after Huang et al. 2019, as adapted in the LipsLev paper): enumerate every unique
  distance-1 neighbour up to the pooled features z, take the elementwise box [min z, max z] over the
  neighbourhood (P included), and bound each margin (c_y - c_t)^T z over the box with interval
  arithmetic. Certified iff every lower bound is > 0. Sound (the box contains every neighbour) and never
  tighter than exact brute force; no early exit.
* Charmer-style greedy attack (Abad Rocamora et al., ICML 2024), an upper bound on robust accuracy:
  at each of k steps, rank positions by a proxy (put a space at every character slot and every gap),
  keep the ``top_positions`` most damaging ones, try every character there plus deletion, and apply the
  edit with the smallest margin; success as soon as the prediction changes.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lionsnb.lipslev.bruteforce import IncrementalEngine, full_logits
from lionsnb.lipslev.certify import as_float64
from lionsnb.lipslev.levenshtein import Edit, apply_edit, neighbour_edits
from lionsnb.lipslev.model import LipsLevCNN
from lionsnb.progress import progress as progress_bar


@dataclass
class IBPResult:
    correct: bool
    certified: bool
    lower_bounds: np.ndarray  # (K,): lower bound of g_yt over the distance-1 ball (inf at t = y)
    seconds: float


def ibp_certify_ids(model: LipsLevCNN, seq: Sequence[int], label: int) -> IBPResult:
    """IBP verification of an encoded string at distance 1 (one-layer models: incremental features)."""
    model = as_float64(model)
    start = time.perf_counter()
    seq = tuple(int(c) for c in seq)
    engine = IncrementalEngine(model, seq)
    z0 = engine.z0
    base = z0 @ engine.head.T
    others = [t for t in range(model.num_classes) if t != label]
    correct = bool((base[label] - base[others]).min() > 0)
    bounds = np.full(model.num_classes, np.inf)
    if not correct:
        return IBPResult(False, False, bounds, time.perf_counter() - start)
    z = torch.cat([z0[None], engine.features(neighbour_edits(seq, range(1, model.alphabet.size + 1)))])
    lo, hi = z.amin(0), z.amax(0)
    w = engine.head[label][None] - engine.head[others]  # (K-1, h)
    bounds[others] = torch.minimum(w * lo, w * hi).sum(1).numpy()
    return IBPResult(True, bool(bounds[others].min() > 0), bounds, time.perf_counter() - start)


def ibp_certify(model: LipsLevCNN, texts: Sequence[str], labels: Sequence[int],
                progress: bool = True) -> list[IBPResult]:
    """:func:`ibp_certify_ids` on every sentence (distance 1)."""
    model = as_float64(model)
    return [ibp_certify_ids(model, model.alphabet.encode(t), int(y))
            for t, y in progress_bar(list(zip(texts, labels)), desc="IBP k=1", unit="sentence",
                                     disable=not progress)]


@dataclass
class AttackResult:
    correct: bool
    success: bool              # the prediction changed within k edits
    edits_used: int
    adversarial: tuple         # the final encoded string
    margin: float              # min_t g_yt of the final string
    queries: int
    seconds: float


def _margin(logits: torch.Tensor, label: int) -> torch.Tensor:
    others = torch.cat([logits[:, :label], logits[:, label + 1:]], 1)
    return logits[:, label] - others.amax(1)


def charmer_attack_ids(model: LipsLevCNN, seq: Sequence[int], label: int, k: int = 1, *,
                       top_positions: int = 20, space: int | None = None) -> AttackResult:
    """Greedy Charmer-style attack on an encoded string, at most ``k`` character edits."""
    model = as_float64(model)
    start = time.perf_counter()
    symbols = list(range(1, model.alphabet.size + 1))
    if space is None:
        space = model.alphabet.char_to_id.get(" ", symbols[0])
    current = tuple(int(c) for c in seq)
    margin = float(_margin(full_logits(model, [current]), label)[0])
    queries = 1
    if margin <= 0:
        return AttackResult(False, True, 0, current, margin, queries, time.perf_counter() - start)
    for step in range(1, k + 1):
        n = len(current)
        if model.layers == 1:  # every candidate is one edit away from `current`: evaluate incrementally
            engine = IncrementalEngine(model, current)
            evaluate = lambda edits: engine.logits(edits)  # noqa: E731
        else:
            evaluate = lambda edits: full_logits(model, [apply_edit(current, e) for e in edits])  # noqa: E731
        # position proxy: a space at every character slot (substitution) and every gap (insertion)
        slots: list[Edit] = [("sub", j, space) for j in range(n)] + [("ins", j, space) for j in range(n + 1)]
        proxy = _margin(evaluate(slots), label)
        queries += len(slots)
        chosen = [slots[i] for i in proxy.argsort()[:top_positions].tolist()]
        candidates: list[Edit] = []
        for kind, j, _ in chosen:
            candidates.extend((kind, j, c) for c in symbols if not (kind == "sub" and c == current[j]))
            if kind == "sub":
                candidates.append(("del", j, 0))
        margins = _margin(evaluate(candidates), label)
        queries += len(candidates)
        best = int(margins.argmin())
        current, margin = apply_edit(current, candidates[best]), float(margins[best])
        if margin <= 0:
            return AttackResult(True, True, step, current, margin, queries, time.perf_counter() - start)
    return AttackResult(True, False, k, current, margin, queries, time.perf_counter() - start)


def charmer_attack(model: LipsLevCNN, texts: Sequence[str], labels: Sequence[int], k: int = 1, *,
                   top_positions: int = 20, progress: bool = True) -> list[AttackResult]:
    """:func:`charmer_attack_ids` on every sentence."""
    model = as_float64(model)
    return [charmer_attack_ids(model, model.alphabet.encode(t), int(y), k, top_positions=top_positions)
            for t, y in progress_bar(list(zip(texts, labels)), desc=f"Charmer k={k}", unit="sentence",
                                     disable=not progress)]


def robust_accuracy(results: Sequence[AttackResult]) -> float:
    """Fraction correct and not broken by the attack (an upper bound on the true robust accuracy)."""
    return float(np.mean([r.correct and not r.success for r in results]))
