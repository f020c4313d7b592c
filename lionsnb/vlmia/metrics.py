"""VL-MIA sequence scores: MaxRényi-K%, Min-K% Prob, perplexity, ModRényi, modified entropy, max-prob gap.

Li, Wu, Chen, Tonin, Abad Rocamora, Cevher, "Membership Inference Attacks against Large Vision-Language
Models", NeurIPS 2024 (arXiv 2411.02902), Section 4 (MaxRényi-K%, Eq. for H_α and the K % rule); the
reference is ``LIONS-EPFL/VL-MIA@859bc99``, ``metric_util.py`` (``get_meta_metrics``, ``get_img_metric``).

Everything is vectorised over the vocabulary, the positions *and* a batch of sequences of different lengths:
:func:`batch_scores` takes logits ``[B, T, V]`` with per-sequence lengths and returns one array per key, so
scoring costs a few elementwise passes over the logits (a small fraction of the forward pass that produced
them). :func:`scores` is the one-sequence form with the authors' exact key names.

Alignment (``compat="vlmia"``, the official one): a slice of T rows has n = T - 1 scored positions; position i
uses the distribution of row i and the target ``ids[i + 1]`` (``ids[0]`` and the last row are never used).
``ids=None`` gives the image-slice pseudo-targets: each scored row is compared with its own most probable token.
``compat="standard"`` is lionsnb's causal alignment: the caller passes the rows *before* each token (row t
predicts ``ids[t]``), all T tokens are scored, n = T.

Lower score = predicted member, for every key.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["CLAMP", "MIN_PROB_RATIOS", "RENYI_RATIOS", "ALPHAS", "score_keys", "k_of", "position_quantities",
           "chunked_quantities", "aggregate", "batch_scores", "scores", "perplexity", "max_renyi_k", "min_k_prob",
           "text_scores", "aug_kl", "min_k_plus_plus", "COMPAT_MODES", "QUANTITIES"]

#: p̃ = clamp(p, CLAMP, 1 - CLAMP) in the Rényi entropies, ModRényi and modified entropy (metric_util.py#L159).
CLAMP = 1e-10
#: K of Min-K% Prob (K = 1 is not in the official list).
MIN_PROB_RATIOS: tuple[float, ...] = (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: K of MaxRényi-K% and MinRényi-K%; 0 and 1 are ints so that the key names read ``0%`` and ``100%``.
RENYI_RATIOS: tuple[float, ...] = (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)
#: Rényi orders, by their key suffix: 0.5, 1 (Shannon), 2, ∞.
ALPHAS: tuple[str, ...] = ("05", "1", "2", "inf")
COMPAT_MODES = ("vlmia", "standard")


def _pct(ratio: float) -> str:
    """The official key fragment ``f"{ratio*100}%"`` (``0%``, ``5.0%``, ..., ``90.0%``, ``100%``)."""
    return f"{ratio * 100}%"


def score_keys() -> list[str]:
    """The 112 official keys of :func:`scores`, in the reference code's insertion order (vlmia_spec §4.2)."""
    keys = ["ppl"] + [f"Min_{_pct(r)} Prob" for r in MIN_PROB_RATIOS]
    keys += ["Modified_entropy", "Modified_renyi_05", "Modified_renyi_2", "Max_Prob_Gap"]
    for side in ("Max", "Min"):
        keys += [f"{side}_{_pct(r)} renyi_{a}" for r in RENYI_RATIOS for a in ALPHAS]
    return keys


def k_of(n: int, ratio: float) -> int:
    """The official k rule: ``int(n * K)`` in double precision with the Python float K, at least 1.

    Not always the exact floor: ``k_of(90, 0.7) == 62`` because ``90 * 0.7 == 62.99999999999999``.
    """
    return max(1, int(n * ratio))


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat={compat!r} is not known: use 'vlmia' (the authors' alignment: row i scored against "
                         f"ids[i+1], n = T-1) or 'standard' (row t already predicts ids[t], n = T)")


def position_quantities(rows: torch.Tensor, targets: torch.Tensor | None, *, extras: bool = True
                        ) -> dict[str, torch.Tensor]:
    """Per-position quantities of vlmia_spec §3 for rows of logits ``[..., n, V]`` and ``targets`` ``[..., n]``.

    ``targets=None`` (or a negative target) uses the row's own most probable index, the image-slice
    pseudo-target. Returns float64 tensors ``[..., n]``: ``renyi_05`` and ``renyi_2`` (on the clamped p̃),
    ``renyi_1`` (Shannon, unclamped), ``renyi_inf`` (-max log p), ``gap`` (max log p minus the largest log p
    strictly below it; NaN for a row whose logits are all equal, where the reference raises),
    ``target_logprob``, ``modified_entropy``, ``modified_renyi_05``, ``modified_renyi_2`` and, with ``extras``,
    ``minkpp`` (the Min-K%++ z-score (log p_y - μ)/σ).

    Vectorised over everything, in float64, with one exp, one square root and one log per logit and no scatter:
    sqrt(p) comes from the same exp as p (h = exp((x - max)/2), p = h²/Σh²), and every sum over j != y is the
    sum over all j minus the y term (equal to the reference's sums to rounding, ~1e-16 absolute).
    """
    x = rows.detach().to(torch.float64)
    top, argmax = x.max(dim=-1, keepdim=True)
    h = torch.exp((x - top) * 0.5)                     # sqrt of the unnormalised softmax
    e = h * h
    total = e.sum(-1, keepdim=True)
    p = e / total                                      # softmax (p is not recomputed as exp(log p): near-certain
    lse = top + torch.log(total)                       # rows make log(1 - p) sensitive to its last bit)
    lp = x - lse                                       # log-softmax
    max_lp = (top - lse).squeeze(-1)
    if targets is None:
        yi = argmax
    else:
        t = targets.to(device=x.device, dtype=torch.long)
        if t.shape != x.shape[:-1]:
            raise ValueError(f"targets have shape {tuple(t.shape)} but the rows need {tuple(x.shape[:-1])}")
        yi = torch.where(t < 0, argmax.squeeze(-1), t).unsqueeze(-1)
    pc = p.clamp(CLAMP, 1 - CLAMP)
    lp_y = lp.gather(-1, yi).squeeze(-1)
    pc_y = pc.gather(-1, yi).squeeze(-1)
    out: dict[str, torch.Tensor] = {}
    plp = p * lp
    h1 = -plp.sum(-1)
    out["renyi_1"] = h1
    sqrt_pc = (h * torch.rsqrt(total)).clamp_(_SQRT_LOW, _SQRT_HIGH)   # = sqrt(p̃)
    out["renyi_05"] = 2.0 * torch.log(sqrt_pc.sum(-1))
    sum_sq = (pc * pc).sum(-1)
    out["renyi_2"] = -torch.log(sum_sq)
    out["renyi_inf"] = -max_lp
    at_max = lp >= max_lp.unsqueeze(-1)
    below = lp.masked_fill(at_max, -math.inf).max(dim=-1).values
    out["gap"] = torch.where(at_max.all(-1), torch.full_like(below, math.nan), max_lp - below)
    out["target_logprob"] = lp_y
    q = 1 - pc                                         # exact near p̃ = 1 (Sterbenz), so log(q) is accurate there
    q_y = 1 - pc_y
    # modified entropy (Song & Mittal) as the reference computes it: sum over all j with unclamped weights p_j,
    # then the j = y term added back with the clamped p̃_y
    out["modified_entropy"] = -q_y * torch.log(pc_y) - (p * torch.log(q)).sum(-1) + pc_y * torch.log(q_y)
    # ModRényi (clamped p̃ for weights and bases): a = 0.5 and a = 1, the sums over j != y
    sum_not_y = pc.sum(-1) - pc_y
    rest05 = (pc * q.sqrt()).sum(-1) - pc_y * q_y.sqrt() - sum_not_y
    out["modified_renyi_05"] = -2.0 * (q_y * pc_y.sqrt() - q_y + rest05)
    rest2 = -(sum_sq - pc_y * pc_y)                    # Σ_{j≠y} p̃_j(1 - p̃_j) - Σ_{j≠y} p̃_j
    out["modified_renyi_2"] = -(q_y * pc_y - q_y + rest2)
    if extras:
        mu = -h1
        var = (plp * lp).sum(-1) - mu * mu
        out["minkpp"] = (lp_y - mu) / var.clamp_min(0).sqrt().clamp_min(1e-6)
    return out


_SQRT_LOW, _SQRT_HIGH = math.sqrt(CLAMP), math.sqrt(1 - CLAMP)


def _align(logits: torch.Tensor, ids: torch.Tensor | None, compat: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows and targets of the scored positions (``[..., n, V]``, ``[..., n]``)."""
    _check_compat(compat)
    if compat == "vlmia":
        return logits[..., :-1, :], None if ids is None else ids[..., 1:]
    return logits, ids


def _mean_k(values: torch.Tensor, lengths: torch.Tensor, ratios: Sequence[float], largest: bool) -> torch.Tensor:
    """Mean of the k(K) largest (or smallest) valid values: ``values`` ``[B, A, n]`` -> ``[B, A, len(ratios)]``.

    Row b has ``lengths[b]`` valid values (the rest is padding); k = max(1, int(lengths * K)) in float64, as
    the reference. A NaN counts as larger than everything (numpy's sort puts it last): the k largest include it
    for any k, the k smallest only once k exceeds the number of non-NaN values.
    """
    bsz, groups, n = values.shape
    pos = torch.arange(n)
    valid = (pos.view(1, 1, n) < lengths.view(bsz, 1, 1))
    isnan = torch.isnan(values) & valid
    n_nan = isnan.sum(-1)                                                   # [B, A]
    clean = values.masked_fill(~valid | isnan, -math.inf if largest else math.inf)
    ordered = torch.sort(clean, dim=-1, descending=largest).values
    ordered = ordered.masked_fill(pos.view(1, 1, n) >= (lengths.view(bsz, 1) - n_nan).unsqueeze(-1), 0.0)
    csum = ordered.cumsum(-1) if n else ordered.new_zeros(bsz, groups, 1)
    ratio_t = torch.tensor([float(r) for r in ratios], dtype=torch.float64)
    k = torch.floor(lengths.to(torch.float64).view(bsz, 1) * ratio_t.view(1, -1)).long().clamp_min(1)  # [B, R]
    idx = (k - 1).clamp(0, max(n - 1, 0)).unsqueeze(1).expand(bsz, groups, -1)
    mean = csum.gather(-1, idx) / k.unsqueeze(1)
    if largest:
        bad = (n_nan > 0).unsqueeze(-1).expand_as(mean)
    else:
        bad = k.unsqueeze(1) > (lengths.view(bsz, 1) - n_nan).unsqueeze(-1)
    bad = bad | (lengths == 0).view(bsz, 1, 1)
    return mean.masked_fill(bad, math.nan)


def _nanmean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    ok = valid & ~torch.isnan(values)
    return torch.where(ok, values, torch.zeros_like(values)).sum(-1) / ok.sum(-1)  # 0/0 -> NaN for empty rows


def aggregate(quantities: dict[str, torch.Tensor], lengths: Sequence[int] | torch.Tensor, *, extras: bool = False
              ) -> dict[str, np.ndarray]:
    """The sequence scores (vlmia_spec §4) from per-position quantities ``[B, n]`` with ``lengths[b]`` valid
    positions each: the 112 official keys, plus ``Min_{K}%++`` (Min-K%++) with ``extras``."""
    q = quantities
    bsz, n = q["target_logprob"].shape
    n_len = torch.as_tensor(lengths, dtype=torch.long).cpu().view(bsz)
    valid = torch.arange(n).view(1, n) < n_len.view(bsz, 1)
    out: dict[str, torch.Tensor] = {}
    out["ppl"] = torch.exp(_nanmean(-q["target_logprob"], valid))
    low = _mean_k(q["target_logprob"].unsqueeze(1), n_len, MIN_PROB_RATIOS, largest=False)[:, 0]
    for j, r in enumerate(MIN_PROB_RATIOS):
        out[f"Min_{_pct(r)} Prob"] = -low[:, j]
    out["Modified_entropy"] = _nanmean(q["modified_entropy"], valid)
    out["Modified_renyi_05"] = _nanmean(q["modified_renyi_05"], valid)
    out["Modified_renyi_2"] = _nanmean(q["modified_renyi_2"], valid)
    out["Max_Prob_Gap"] = -(torch.where(valid, q["gap"], torch.zeros_like(q["gap"])).sum(-1) / valid.sum(-1))
    stacked = torch.stack([q[f"renyi_{a}"] for a in ALPHAS], 1)          # [B, 4, n]
    for side, largest in (("Max", True), ("Min", False)):
        m = _mean_k(stacked, n_len, RENYI_RATIOS, largest)
        for j, r in enumerate(RENYI_RATIOS):
            for i, a in enumerate(ALPHAS):
                out[f"{side}_{_pct(r)} renyi_{a}"] = m[:, i, j]
    if extras:
        ratios = MIN_PROB_RATIOS + (1,)
        z = _mean_k(q["minkpp"].unsqueeze(1), n_len, ratios, largest=False)[:, 0]
        for j, r in enumerate(ratios):
            out[f"Min_{_pct(r)}++"] = -z[:, j]
    empty = n_len == 0
    return {k: v.masked_fill(empty, math.nan).numpy() for k, v in out.items()}


def batch_scores(logits: torch.Tensor, ids: torch.Tensor | None = None, lengths: Sequence[int] | torch.Tensor | None
                 = None, compat: str = "vlmia", *, extras: bool = False, chunk_elements: int | None = None
                 ) -> dict[str, np.ndarray]:
    """All 112 official scores for a batch of slices at once: ``logits`` ``[B, T, V]``, ``ids`` ``[B, T]``.

    ``lengths[b]`` is the number of rows of sequence b (the rest is padding, ignored); default all T.
    ``ids=None`` selects the image-slice pseudo-targets. With ``extras=True`` the Min-K%++ scores
    (``Min_{K}%++``, Zhang et al. 2024, not in the official code) are added. Returns ``{key: array [B]}``.
    Positions are processed in chunks of at most ``chunk_elements`` logits (default: cache-sized on a CPU, large on
    a GPU) to bound memory on large vocabularies.
    """
    if logits.dim() != 3:
        raise ValueError(f"batch_scores needs logits [B, T, V], got shape {tuple(logits.shape)}; use scores() for "
                         "one sequence [T, V]")
    bsz, t_len, vocab = logits.shape
    if ids is not None and tuple(ids.shape) != (bsz, t_len):
        raise ValueError(f"ids must have shape {(bsz, t_len)} (one id per logits row), got {tuple(ids.shape)}")
    lengths_t = (torch.full((bsz,), t_len, dtype=torch.long) if lengths is None
                 else torch.as_tensor(lengths, dtype=torch.long).cpu())
    if lengths_t.shape != (bsz,) or bool((lengths_t < 0).any()) or bool((lengths_t > t_len).any()):
        raise ValueError(f"lengths must be {bsz} integers in [0, {t_len}], got {lengths_t.tolist()}")
    rows, targets = _align(logits, ids, compat)
    n_len = (lengths_t - 1).clamp_min(0) if compat == "vlmia" else lengths_t
    return aggregate(chunked_quantities(rows, targets, extras=extras, chunk_elements=chunk_elements), n_len,
                     extras=extras)


def chunked_quantities(rows: torch.Tensor, targets: torch.Tensor | None, *, extras: bool = False,
                       chunk_elements: int | None = None) -> dict[str, torch.Tensor]:
    """:func:`position_quantities` of ``rows`` ``[B, n, V]`` in chunks of positions (bounded memory); the results
    come back to the CPU. ``chunk_elements`` defaults to 2**17 logits on a CPU (the temporaries stay in cache) and
    2**26 on a GPU."""
    bsz, n, vocab = rows.shape
    if chunk_elements is None:
        chunk_elements = 1 << 26 if rows.is_cuda else 1 << 17
    step = max(1, chunk_elements // max(1, bsz * vocab))
    parts = []
    for start in range(0, n, step):
        tgt = None if targets is None else targets[:, start:start + step]
        parts.append({k: v.cpu() for k, v in position_quantities(rows[:, start:start + step], tgt,
                                                                 extras=extras).items()})
    if not parts:
        names = QUANTITIES + (("minkpp",) if extras else ())
        return {k: torch.zeros(bsz, 0, dtype=torch.float64) for k in names}
    return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}


#: the names of :func:`position_quantities` (besides ``minkpp``)
QUANTITIES = ("renyi_05", "renyi_1", "renyi_2", "renyi_inf", "gap", "target_logprob", "modified_entropy",
              "modified_renyi_05", "modified_renyi_2")


def scores(logits: torch.Tensor, ids: torch.Tensor | None, compat: str = "vlmia") -> dict[str, float]:
    """Every sequence score of the authors' code for one slice, under their exact 112 key names (vlmia_spec §4).

    ``logits`` ``[T, V]``: the rows of the slice as the model outputs them (no shift); ``ids`` ``[T]``: the token
    ids at the same positions (``ids[0]`` is never used), or None for the image-slice pseudo-targets (each row
    against its own argmax). ``compat="vlmia"`` scores row i against ``ids[i+1]`` (n = T - 1; T = 1 gives NaN
    everywhere); ``compat="standard"`` scores row t against ``ids[t]`` (the caller shifts). Lower = member.
    """
    _check_compat(compat)
    if logits.dim() != 2:
        raise ValueError(f"scores needs the logits of one slice [T, V], got shape {tuple(logits.shape)}")
    if ids is not None:
        ids = torch.as_tensor(ids)
        if ids.shape != logits.shape[:1]:
            raise ValueError(f"ids must have one id per row: {logits.shape[0]} rows but ids has shape "
                             f"{tuple(ids.shape)}")
        ids = ids.unsqueeze(0)
    batch = batch_scores(logits.unsqueeze(0), ids, compat=compat)
    return {k: float(v[0]) for k, v in batch.items()}


def max_renyi_k(values: Sequence[float] | np.ndarray, ratio: float, largest: bool = True) -> float:
    """MaxRényi-K% of one sequence from its per-position entropies: the mean of the k = max(1, int(n K)) largest
    values (``largest=False``: the smallest, MinRényi-K%); NaN for an empty sequence. The loop-free batched form is
    :func:`aggregate`."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return math.nan
    k = k_of(v.size, ratio)
    return float(np.mean(v[-k:] if largest else v[:k]))


def min_k_prob(logprobs: Sequence[float] | np.ndarray, ratio: float) -> float:
    """Min-K% Prob of one sequence (Shi et al. 2024, as the reference computes it): minus the mean of the
    k = max(1, int(n K)) smallest target log-probabilities; NaN for an empty sequence."""
    v = np.sort(np.asarray(logprobs, dtype=np.float64))
    if v.size == 0:
        return math.nan
    return float(-np.mean(v[:k_of(v.size, ratio)]))


def perplexity(logits: torch.Tensor, ids: torch.Tensor, lengths: Sequence[int] | torch.Tensor | None = None,
               compat: str = "vlmia", *, chunk_elements: int = 1 << 20) -> np.ndarray:
    """Only the ``ppl`` key of :func:`batch_scores` (same alignment), for ``[B, T, V]`` logits: one exp pass over
    the vocabulary instead of all the scores (used for the lower-cased text of ``ppl/lowercase_ppl``)."""
    bsz, t_len, vocab = logits.shape
    rows, targets = _align(logits, ids, compat)
    n = rows.shape[1]
    lengths_t = (torch.full((bsz,), t_len, dtype=torch.long) if lengths is None
                 else torch.as_tensor(lengths, dtype=torch.long).cpu())
    n_len = (lengths_t - 1).clamp_min(0) if compat == "vlmia" else lengths_t
    step = max(1, chunk_elements // max(1, bsz * vocab))
    parts = []
    for start in range(0, n, step):
        x = rows[:, start:start + step].detach().to(torch.float64)
        y = targets[:, start:start + step].to(x.device).unsqueeze(-1)
        parts.append((x.gather(-1, y).squeeze(-1) - torch.logsumexp(x, -1)).cpu())
    lp_y = torch.cat(parts, 1) if parts else torch.zeros(bsz, 0, dtype=torch.float64)
    valid = torch.arange(n).view(1, n) < n_len.view(bsz, 1)
    return torch.exp(_nanmean(-lp_y, valid)).numpy()


# --------------------------------------------------------------------------- scores outside the 112 keys

def text_scores(ppl: float, text: str, lowercase_ppl: float | None = None) -> dict[str, float]:
    """The text-only scores (metric_util.py#L13-L17): ``ppl/zlib`` = ln ppl / len(zlib.compress(text)) and, when the
    perplexity of the lower-cased text is given, ``ppl/lowercase_ppl`` = -ln(lowercase ppl) / ln ppl."""
    out = {"ppl/zlib": math.log(ppl) / len(zlib.compress(text.encode("utf-8")))}
    if lowercase_ppl is not None:
        out["ppl/lowercase_ppl"] = -math.log(lowercase_ppl) / math.log(ppl)
    return out


def aug_kl(logits: torch.Tensor, augmented: Sequence[torch.Tensor]) -> float:
    """``aug_kl`` (image only, metric_util.py#L64-L76): -mean over augmented views of KL(p_orig || p_aug), each KL
    summed over all positions and the vocabulary. ``logits`` ``[T, V]`` and each view ``[T, V]`` (same slice)."""
    if len(augmented) == 0:
        raise ValueError("aug_kl needs at least one augmented view")
    lp = torch.log_softmax(logits.detach().double(), -1)
    kls = [(lp.exp() * (lp - torch.log_softmax(a.detach().double(), -1))).sum() for a in augmented]
    return float(-torch.stack(kls).mean())


def min_k_plus_plus(logits: torch.Tensor, ids: torch.Tensor | None, ratio: float = 0.2, compat: str = "vlmia"
                    ) -> float:
    """Min-K%++ (Zhang et al. 2024): -mean of the k lowest z = (log p_y - μ)/σ, μ = Σ p log p,
    σ² = Σ p (log p)² - μ² (σ at least 1e-6), with the same alignment and k rule as :func:`scores`."""
    rows, targets = _align(logits.unsqueeze(0), None if ids is None else torch.as_tensor(ids).unsqueeze(0), compat)
    z = position_quantities(rows, targets)["minkpp"]
    return float(-_mean_k(z.unsqueeze(1), torch.tensor([z.shape[1]]), (ratio,), largest=False)[0, 0, 0])
