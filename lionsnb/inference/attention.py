"""Tiled attention with the online softmax (the FlashAttention forward pass), written in plain torch.

Standard attention ``O = softmax(Q K^T / sqrt(d) + mask) V`` materialises the (L, S) score matrix and its
softmax: Theta(L S) extra memory. FlashAttention (Dao et al. 2022, Algorithm 1; the loop order and the
deferred normalisation of FlashAttention-2, Dao 2023, Algorithm 1) never forms it. Queries are cut into tiles
of ``block_size`` rows and keys/values into tiles of ``block_size`` columns; each query tile walks over the key
tiles and keeps three running quantities per row, the online softmax of Milakov & Gimelshein (2018):

    S_ij = Q_i K_j^T / sqrt(d)  (+ mask)
    m'   = max(m, rowmax(S_ij))
    P~   = exp(S_ij - m')
    l    = exp(m - m') l + rowsum(P~)
    O~   = exp(m - m') O~ + P~ V_j
    m    = m'
    finally O_i = O~ / l, and the logsumexp m + log l (what a backward pass keeps).

Extra memory is one (rows, block_size) tile plus O(rows) statistics per query tile, so O(L) overall instead of
O(L S). Here the query tiles run one after another; on a GPU each is a thread block and they run in parallel.

Conventions of :func:`flash_attention`:

* ``q`` is (B, H, L, d); ``k`` and ``v`` are (B, G, S, d) with G dividing H (grouped-query attention: query
  head h reads KV head h // (H / G)). The H / G query heads of one group are stacked into the rows of one
  query tile, so every key/value tile is read once per group and K/V are never repeated or copied.
* ``causal=True`` aligns the mask **bottom-right**: query i (0-based, of L) sees keys 0 .. S - L + i, as in
  a decode step (L = 1 sees every key) or a chunk appended to a cache. Key tiles entirely above that diagonal
  are skipped; only tiles that straddle it are masked.
* A row that sees no key at all (causal with L > S: the first L - S queries) gets output 0 and
  logsumexp -inf, as PyTorch's ``scaled_dot_product_attention`` does in recent versions (a plain
  ``softmax`` over a row of -inf gives NaN).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lionsnb.inference.llama import causal_mask, naive_attention, sdpa_attention

#: tile states of :func:`tile_schedule`
SKIPPED, FULL, MASKED = 0, 1, 2


def key_tile_range(q_start: int, q_end: int, key_len: int, query_len: int, block_size: int,
                   causal: bool) -> range:
    """Start indices of the key tiles that the query rows [q_start, q_end) must visit.

    Without a mask, all of them. With the bottom-right causal mask, the last visible key of row i is
    S - L + i, so tiles that start after S - L + q_end - 1 lie entirely above the diagonal and are skipped.
    """
    if not causal:
        return range(0, key_len, block_size)
    last_key = key_len - query_len + q_end - 1
    return range(0, max(0, min(key_len, last_key + 1)), block_size)


def tile_needs_mask(q_start: int, k_end: int, key_len: int, query_len: int, causal: bool) -> bool:
    """True when some key of the tile [.., k_end) is hidden from some row of a query tile starting at q_start."""
    return causal and k_end - 1 > key_len - query_len + q_start


def tile_schedule(query_len: int, key_len: int, block_size: int, causal: bool) -> torch.Tensor:
    """(query tiles, key tiles) int tensor: SKIPPED (0), FULL (1, no mask) or MASKED (2) per tile.

    The same rule :func:`flash_attention` follows, for pictures and counts.
    """
    rows, cols = math.ceil(query_len / block_size), math.ceil(key_len / block_size)
    out = torch.full((rows, cols), SKIPPED, dtype=torch.int64)
    for a, i0 in enumerate(range(0, query_len, block_size)):
        i1 = min(i0 + block_size, query_len)
        for j0 in key_tile_range(i0, i1, key_len, query_len, block_size, causal):
            j1 = min(j0 + block_size, key_len)
            out[a, j0 // block_size] = MASKED if tile_needs_mask(i0, j1, key_len, query_len, causal) else FULL
    return out


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (batch, heads, length, head_dim); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must share batch and head_dim")
    heads, kv_heads = q.shape[1], k.shape[1]
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} KV heads: the number of KV heads must "
                         "divide the number of query heads")
    return heads, kv_heads


def online_update(m: torch.Tensor, ell: torch.Tensor, acc: torch.Tensor, s: torch.Tensor,
                  v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One online-softmax step for a tile of scores ``s`` (..., rows, cols) and its values ``v`` (..., cols, d).

    ``m`` and ``ell`` (the paper's l, (..., rows, 1)) are the running row maximum and the running sum of
    exp(score - m); ``acc`` (..., rows, d) the unnormalised output. Returns the updated (m, ell, acc):
    m' = max(m, rowmax s), ell' = e^(m - m') ell + rowsum e^(s - m'), acc' = e^(m - m') acc + e^(s - m') v.
    A row whose scores are all -inf so far (masked) keeps m = -inf, ell = 0, acc = 0 (no NaN).
    """
    m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
    # guard: where m' = -inf, exp(-inf - (-inf)) would be NaN; subtracting 0 instead gives exp(-inf) = 0
    m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
    p = torch.exp(s - m_safe)
    alpha = torch.exp(m - m_safe)  # rescales what was accumulated under the old maximum
    return m_new, alpha * ell + p.sum(dim=-1, keepdim=True), alpha * acc + p @ v


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    block_size: int = 64, *, scale: float | None = None,
                    return_lse: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + mask) v by tiles and the online softmax (FlashAttention forward pass).

    q (B, H, L, d), k and v (B, G, S, d) with G | H; returns (B, H, L, d) in q's dtype, and with
    ``return_lse`` also the logsumexp of every row's scaled, masked scores, (B, H, L), in float32 (or
    float64 for float64 inputs). ``scale`` defaults to 1 / sqrt(d). See the module docstring for the
    bottom-right causal alignment and the fully masked rows.
    """
    heads, kv_heads = _check_shapes(q, k, v)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size = {block_size!r}: use a positive integer (e.g. 64)")
    batch, _, length, dim = q.shape
    keys = k.shape[2]
    group = heads // kv_heads
    scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    # (B, G, r, L, d): query head h = g * r + j reads KV head g; a view, no copy
    q5 = q.reshape(batch, kv_heads, group, length, dim)
    out = torch.empty(batch, kv_heads, group, length, dim, dtype=q.dtype, device=q.device)
    lse = torch.empty(batch, kv_heads, group, length, dtype=acc_dtype, device=q.device) if return_lse else None
    offset = keys - length  # bottom-right: row i sees keys 0 .. offset + i
    for i0 in range(0, length, block_size):
        i1 = min(i0 + block_size, length)
        rows = i1 - i0
        # the query tile: the r heads of each group stacked, (B, G, r * rows, d)
        qi = q5[:, :, :, i0:i1].reshape(batch, kv_heads, group * rows, dim).to(acc_dtype) * scale
        m = torch.full((batch, kv_heads, group * rows, 1), -math.inf, dtype=acc_dtype, device=q.device)
        ell = torch.zeros_like(m)
        acc = torch.zeros(batch, kv_heads, group * rows, dim, dtype=acc_dtype, device=q.device)
        for j0 in key_tile_range(i0, i1, keys, length, block_size, causal):
            j1 = min(j0 + block_size, keys)
            kj = k[:, :, j0:j1].to(acc_dtype)  # (B, G, cols, d): a view of this tile (a copy only to upcast)
            vj = v[:, :, j0:j1].to(acc_dtype)
            s = qi @ kj.transpose(-1, -2)  # (B, G, r * rows, cols)
            if tile_needs_mask(i0, j1, keys, length, causal):
                visible = (torch.arange(j0, j1, device=q.device)[None, :]
                           <= offset + torch.arange(i0, i1, device=q.device)[:, None])  # (rows, cols)
                s = s.masked_fill(~visible.repeat(group, 1), -math.inf)
            m, ell, acc = online_update(m, ell, acc, s, vj)
        # rows that saw no key (ell = 0) have acc = 0: output 0, logsumexp -inf
        o = acc / torch.where(ell > 0, ell, torch.ones_like(ell))
        out[:, :, :, i0:i1] = o.reshape(batch, kv_heads, group, rows, dim).to(q.dtype)
        if lse is not None:
            lse[:, :, :, i0:i1] = (m + torch.log(ell)).reshape(batch, kv_heads, group, rows)
    out = out.reshape(batch, heads, length, dim)
    if return_lse:
        return out, lse.reshape(batch, heads, length)
    return out


# --------------------------------------------------------------------------- the online softmax on one row

def online_softmax_step(m: float, ell: float, block: torch.Tensor) -> tuple[float, float]:
    """One step of the recurrence on a 1-D block of scores: (m, l) -> (max(m, max block), rescaled sum)."""
    m_new = max(m, float(block.max())) if block.numel() else m
    if m_new == -math.inf:
        return m, ell
    return m_new, math.exp(m - m_new) * ell + float(torch.exp(block - m_new).sum())


def online_softmax(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, list[dict]]:
    """softmax of a 1-D tensor read block by block: (probabilities, trace of (m, l) after every block).

    The probabilities use only the final (m, l), so they equal ``torch.softmax(x, 0)``.
    """
    m, ell = -math.inf, 0.0
    trace = []
    for j0 in range(0, x.numel(), block_size):
        block = x[j0:j0 + block_size]
        m, ell = online_softmax_step(m, ell, block)
        trace.append({"block": j0 // block_size, "keys": (j0, j0 + block.numel()), "m": m, "l": ell})
    return torch.exp(x - m) / ell, trace


# --------------------------------------------------------------------------- IO complexity (FA1 Theorem 2)

def hbm_accesses_standard(n: int, d: int) -> int:
    """HBM element reads + writes of standard attention (FA1 Algorithm 0) for N queries and N keys:
    read Q, K, write S (2Nd + N^2); read S, write P (2N^2); read P, V, write O (N^2 + 2Nd): 4Nd + 4N^2."""
    return 4 * n * d + 4 * n * n


def flash_block_sizes(d: int, sram_elements: int) -> tuple[int, int]:
    """FA1's tile sizes (B_r, B_c) = (min(ceil(M / 4d), d), ceil(M / 4d)) for an SRAM of M elements."""
    b_c = math.ceil(sram_elements / (4 * d))
    return min(b_c, d), b_c


def hbm_accesses_flash(n: int, d: int, sram_elements: int) -> int:
    """HBM element reads + writes of FA1 Algorithm 1 for N queries and N keys, SRAM of M elements.

    Initialise O, l, m in HBM (Nd + 2N); the outer loop reads every K_j, V_j once (2Nd); for each of the
    T_c = ceil(N / B_c) outer steps, the inner loop reads Q_i, O_i, l_i, m_i and writes O_i, l_i, m_i back
    for every query tile (3Nd + 4N per outer step). Total Theta(N^2 d^2 / M) since T_c ~ 4Nd / M.
    """
    _, b_c = flash_block_sizes(d, sram_elements)
    outer = math.ceil(n / b_c)
    return (n * d + 2 * n) + 2 * n * d + outer * (3 * n * d + 4 * n)


# --------------------------------------------------------------------------- measuring peak memory

def _allocation_events(prof) -> list[tuple[int, int]]:
    """(time in ns, bytes; negative = free) of every allocator event recorded by a torch profiler run."""
    from torch._C._profiler import _EventType

    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
        stack.extend(node.children)
    events.sort()
    return events


class _QuietStderr:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines) for the duration of a block."""

    def __enter__(self):
        import os
        import sys

        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            self._null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(self._null, 2)
        except OSError:
            self._saved = None
        return self

    def __exit__(self, *exc):
        import os

        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            os.close(self._null)
        return False


def peak_memory(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn()`` and return (its result, peak bytes allocated during the call on top of what existed).

    CUDA: ``torch.cuda.max_memory_allocated`` around the call. CPU: a ``torch.profiler`` run with
    ``profile_memory=True``; every allocation and free of torch's CPU allocator is an event with its size,
    and the peak is the maximum of their running sum. Both count every tensor the call creates (its output
    included, kernel-internal buffers included), nothing that existed before.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        if torch.cuda.max_memory_allocated() > base:
            return result, int(torch.cuda.max_memory_allocated() - base)
        # nothing on the GPU: fall through to the CPU measurement
    from torch.profiler import ProfilerActivity, profile

    with _QuietStderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    running = peak = 0
    for _, size in _allocation_events(prof):
        running += size
        peak = max(peak, running)
    return result, peak


def time_call(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` calls of ``fn`` (seconds), after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(max(1, repeats)):
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def attention_memory_benchmark(n: int = 4096, d: int = 64, heads: int = 1, block_size: int = 64, *,
                               causal: bool = False, seed: int = 0, repeats: int = 1, timing: bool = True,
                               device: str | torch.device = "cpu") -> dict:
    """Peak extra memory (and time) of naive, tiled and SDPA attention at sequence length ``n``.

    Self-attention with L = S = n, ``heads`` query and KV heads, head_dim ``d``, float32, on ``device``.
    Memory: :func:`peak_memory` (profiler allocation events on CPU; CUDA peak stats on a GPU): the peak of
    the bytes allocated during one call, output included, inputs excluded. Naive attention holds the
    (n, n) scores and their softmax (~ 2 n^2 * 4 bytes per head); the tiled kernel a few (block, block)
    tiles and the output. Time: fastest of ``repeats`` calls after a warm-up, without the profiler.
    Returns bytes, seconds (when ``timing``), and ``ratio_naive_over_tiled`` (of the peak memory).
    """
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, heads, n, d, generator=gen).to(device) for _ in range(3))
    fns = {"naive": lambda: naive_attention(q, k, v, causal=causal),
           "tiled": lambda: flash_attention(q, k, v, causal=causal, block_size=block_size),
           "sdpa": lambda: sdpa_attention(q, k, v, causal=causal)}
    out: dict = {"n": n, "d": d, "heads": heads, "block_size": block_size, "causal": causal,
                 "device": str(q.device), "score_matrix_bytes": heads * n * n * 4, "output_bytes": heads * n * d * 4}
    results = {}
    for name, fn in fns.items():
        results[name], out[f"{name}_bytes"] = peak_memory(fn)
    for name, fn in fns.items():
        if timing:
            out[f"{name}_seconds"] = time_call(fn, repeats)
    out["tiled_max_abs_error_vs_sdpa"] = float((results["tiled"] - results["sdpa"]).abs().max())
    out["ratio_naive_over_tiled"] = out["naive_bytes"] / max(out["tiled_bytes"], 1)
    out["ratio_naive_over_sdpa"] = out["naive_bytes"] / max(out["sdpa_bytes"], 1)
    return out


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """PyTorch's ``scaled_dot_product_attention`` with an explicit bottom-right boolean mask (any L, S) and
    ``enable_gqa``: the reference :func:`flash_attention` is checked against."""
    mask = causal_mask(q.shape[-2], k.shape[-2], q.device) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
