"""Certified Levenshtein radius in one forward pass (LipsLev Sec. 4.3; official ``verification.py``).

For a correctly classified sentence P with label y,

    r(P) = min_{t != y} max{k integer : g_yt(P) > k * L_yt(P)},    g_yt = f_y - f_t,

where L_yt(P) = ||c_y - c_t||_r prod M(K) M(E, P) is the local Lipschitz constant of the margin (for a
1-Lipschitz model L_yt <= 1). The inequality is STRICT: a margin exactly equal to k L does not certify
k, because a neighbour could then tie. (The official code uses floor(g / L), which certifies k on such
ties; the two agree except on measure-zero float ties.) r = -1 marks a misclassified sentence.
Sentences are never truncated: sum pooling makes the logits independent of the padding length.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lionsnb.lipslev.model import LipsLevCNN, conv_constant, dual, pairwise_distances


def as_float64(model: LipsLevCNN) -> LipsLevCNN:
    """The model in float64 on the CPU in eval mode for exact evaluation: itself when it already is, else a copy
    (the original model is never modified)."""
    param = next(model.parameters())
    if param.dtype == torch.float64 and param.device.type == "cpu" and not model.training:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()


def pad_batch(seqs: Sequence[Sequence[int]], extra: int = 0) -> torch.Tensor:
    """Right-pad id sequences with 0 to a common length (+ ``extra``) as a LongTensor (B, n)."""
    width = max([len(s) for s in seqs] + [1]) + extra
    out = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


@torch.no_grad()
def logits_of_ids(model: LipsLevCNN, seqs: Sequence[Sequence[int]], batch_size: int = 256,
                  weights: tuple | None = None) -> torch.Tensor:
    """Logits (N, K) of encoded sequences, batched by similar length; in the model's dtype/device.

    ``weights``: the model's ``effective_weights()`` when the caller already has them (saves the SVDs).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = torch.empty(len(seqs), model.num_classes, dtype=dtype)
    weights = model.effective_weights() if weights is None else weights
    for start in range(0, len(seqs), batch_size):
        idx = order[start:start + batch_size]
        ids = pad_batch([seqs[i] for i in idx]).to(device)
        out[torch.as_tensor(idx)] = (model.features(ids, weights) @ weights[2].T).cpu()
    return out


def encode_all(model: LipsLevCNN, texts: Sequence[str]) -> list[list[int]]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string")
    return [model.alphabet.encode(t) for t in texts]


def predict(model: LipsLevCNN, texts: Sequence[str]) -> list[int]:
    """The predicted class of each text (argmax of the logits)."""
    return logits_of_ids(model, encode_all(model, texts)).argmax(1).tolist()


@dataclass
class Certificate:
    """Per-sentence certification results (arrays over sentences)."""

    logits: np.ndarray        # (N, K)
    predictions: np.ndarray   # (N,)
    labels: np.ndarray        # (N,)
    margins: np.ndarray       # (N, K): g_yt = f_y - f_t (inf at t = y)
    lipschitz: np.ndarray     # (N, K): L_yt(P) (nan at t = y)
    radii: np.ndarray         # (N,): certified radius, -1 where wrong
    lengths: np.ndarray       # (N,): encoded lengths

    @property
    def min_margin(self) -> np.ndarray:
        """min_t g_yt (negative where the prediction is wrong)."""
        return self.margins.min(1)

    @property
    def binding_lipschitz(self) -> np.ndarray:
        """L_yt of the class t that determines the radius (min of g/L)."""
        ratio = self.margins / np.where(np.isnan(self.lipschitz), 1.0, self.lipschitz)
        t = ratio.argmin(1)
        return self.lipschitz[np.arange(len(t)), t]


def strict_radius(margin: float, lipschitz: float) -> int:
    """max{k >= 0 : margin > k * lipschitz} (margin > 0 assumed), -1 if margin <= 0."""
    if margin <= 0:
        return -1
    if lipschitz <= 0:
        return np.iinfo(np.int64).max
    ratio = margin / lipschitz
    k = math.floor(ratio)
    return k - 1 if k == ratio else k


def certificate(model: LipsLevCNN, texts: Sequence[str], labels: Sequence[int], *, local: bool = True,
                batch_size: int = 32) -> Certificate:
    """Logits, margins, Lipschitz constants and radii for every sentence, in float64, one forward pass each."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not one string")
    labels = np.asarray([int(y) for y in labels])
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= model.num_classes):
        raise ValueError(f"labels must be class indices 0..{model.num_classes - 1}")
    m64 = as_float64(model)
    seqs = encode_all(m64, texts)
    with torch.no_grad():
        weights = m64.effective_weights()
        logits = logits_of_ids(m64, seqs, batch_size, weights).numpy()
        emb, kernels, head = weights
        row_max = pairwise_distances(emb, emb, m64.p).max(1).values.numpy()  # max_j ||e_i - e_j|| per row i
        # prod M(K) of the weights the forward uses; for a 1-Lipschitz model each K/M(K) has M = 1 exactly
        # (a norm is absolutely homogeneous), so the SVDs are not repeated
        m_k = 1.0 if m64.lipschitz else float(np.prod([conv_constant(k, m64.p).item() for k in kernels]))
        head_pairs = pairwise_distances(head, head, dual(m64.p)).numpy()
    n, classes = len(seqs), m64.num_classes
    margins = np.full((n, classes), np.inf)
    lips = np.full((n, classes), np.nan)
    radii = np.full(n, -1, dtype=np.int64)
    preds = logits.argmax(1)
    for i, s in enumerate(seqs):
        m_e = row_max[[0, *set(s)]].max() if local else row_max.max()
        y = labels[i]
        others = [t for t in range(classes) if t != y]
        margins[i, others] = logits[i, y] - logits[i, others]
        lips[i, others] = head_pairs[y, others] * m_k * m_e
        if margins[i, others].min() > 0:
            radii[i] = min(strict_radius(margins[i, t], lips[i, t]) for t in others)
    return Certificate(logits, preds, labels, margins, lips, radii, np.array([len(s) for s in seqs]))


def certify(model: LipsLevCNN, texts: Sequence[str], labels: Sequence[int], *, local: bool = True) -> list[int]:
    """The certified Levenshtein radius of each sentence (-1 where the prediction is wrong).

    Every string within distance r of a sentence (after encoding) is classified like it.
    """
    return certificate(model, texts, labels, local=local).radii.tolist()


def certified_accuracy(radii: Sequence[int], k: int) -> float:
    """Fraction of sentences correct and certified at distance ``k`` (k = 0: clean accuracy)."""
    radii = np.asarray(radii)
    if radii.size == 0:
        raise ValueError("no radii given")
    return float((radii >= k).mean())
