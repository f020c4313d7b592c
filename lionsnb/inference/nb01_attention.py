"""Backs ``notebooks/inference/01_attention.ipynb``: fast and memory-efficient attention.

The technique lives in the core module :mod:`lionsnb.inference.attention` (:func:`flash_attention`, the tiled
online-softmax forward pass). This module holds what the notebook needs around it: the correctness sweep against
PyTorch's ``scaled_dot_product_attention`` (SDPA) over random shapes, the ``is_causal`` alignment pitfall, the
peak-memory and block-size sweeps, the IO (HBM access) counts of FlashAttention's Theorem 2, the GPU timing cell,
the check on SmolLM2-135M-Instruct, the tables, figures and exercise checks.

Sources: Dao, Fu, Ermon, Rudra, Re, "FlashAttention: Fast and Memory-Efficient Exact Attention with
IO-Awareness", NeurIPS 2022 (arXiv 2205.14135), Algorithms 0 and 1, Theorem 2; Dao, "FlashAttention-2",
arXiv 2307.08691; Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867; the
KDD 2024 tutorial "Inference optimization of foundation models on AI accelerators" (arXiv 2407.09111).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.display import show, show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.inference.attention import (
    MASKED,
    SKIPPED,
    attention_memory_benchmark,
    flash_attention,
    flash_block_sizes,
    hbm_accesses_flash,
    hbm_accesses_standard,
    online_softmax,
    online_update,
    peak_memory,
    reference_attention,
    tile_schedule,
    time_call,
)
from lionsnb.inference.corpus import passage_ids
from lionsnb.inference.llama import LlamaRunner, causal_mask, load_model, naive_attention, sdpa_attention
from lionsnb.lm import model_knob
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.runtime import load_average
from lionsnb.widgets import explore

#: block sizes of the block-size sweep (and the values the BLOCK_SIZE knob may take)
BLOCKS = (16, 32, 64, 128, 256)

SPEC = MethodSpec(
    name="inference.nb01_attention",
    title="Inference 1: fast and memory-efficient attention",
    profiles={
        # n_shapes: random shapes of the correctness sweep (after 8 fixed edge cases), lengths up to max_len;
        # memory_ns: sequence lengths of the peak-memory sweep (one head, d = head_dim); sweep_n: sequence
        # length of the block-size sweep (causal), sweep_repeats: timed calls per point (fastest counts);
        # model_tokens: tokens of the Shakespeare passage fed to the real model; gpu_ns: lengths of the GPU cell
        "smoke": dict(n_shapes=12, max_len=96, memory_ns=[512, 1024, 2048, 4096], head_dim=64, sweep_n=512,
                      sweep_repeats=1, model_tokens=48, gpu_ns=[1024, 4096]),
        "teach": dict(n_shapes=40, max_len=160, memory_ns=[256, 512, 1024, 2048, 4096], head_dim=64,
                      sweep_n=1024, sweep_repeats=3, model_tokens=128, gpu_ns=[1024, 4096, 8192]),
        "full": dict(n_shapes=200, max_len=400, memory_ns=[256, 512, 1024, 2048, 4096, 8192], head_dim=64,
                     sweep_n=2048, sweep_repeats=3, model_tokens=512, gpu_ns=[1024, 4096, 8192, 16384]),
    },
    knobs={
        "block_size": Knob(64, "tile size of the memory sweep, where the block-size explorer starts (16 to 256)",
                           int, choices=BLOCKS),
        "sram_kib": Knob(192, "on-chip SRAM per streaming multiprocessor in KiB for the HBM-access counts "
                         "(A100 about 192, H100 about 228)", int, low=16, high=4096),
        "model": model_knob("the Llama-style model the tiled kernel runs inside"),
    },
)
setup = setup_for(SPEC)

#: the passage the real model reads (Hamlet, Act III, Scene I)
PASSAGE_START = "To be, or not to be"

#: model answers of the exercises without code (for teachers; `lionsnb answers inference_attention` prints them)
MODEL_ANSWERS = {
    4: "With BLOCK_SIZE = 16 the tiled kernel's workspace beyond the output (the last column of the memory table) "
       "shrinks about five-fold, from about 130 KiB to about 26 KiB: it holds a few (block x block) score tiles and "
       "(block x d) query and output tiles. The output itself (N d floats) does not change, so at the largest N, "
       "where the output dominates the peak, the naive / tiled ratio rises only a little (about 115 to about 125 "
       "at N = 4096), while at N = 512, where the workspace is a large share of the peak, it rises from about 8 "
       "to about 14. The rerun is much slower: 16 times more tiles, each a dozen Python-issued torch calls. With "
       "SRAM_KIB = 228 the key tiles of FA1 grow from B_c = ceil(M / 4d) = 384 to 456 (d = 64, M = 228 x 512 "
       "fp16 elements), the outer loop makes 9 instead of 11 passes over Q and O at N = 4096, and standard / flash "
       "rises from 7.1 to 8.5 there: the saving grows with M, towards M / (3 d^2) at large N.",
}


def sizes_table(sizes) -> object:
    """What this profile runs, as one table."""
    return table({"correctness: random shapes (after 8 edge cases)": sizes.n_shapes,
                  "correctness: longest sequence": sizes.max_len,
                  "memory sweep: sequence lengths N": list(sizes.memory_ns),
                  "block-size sweep: N (causal)": sizes.sweep_n,
                  "real model: passage tokens": sizes.model_tokens},
                 title="What this profile runs")


# ----------------------------------------------------------------------------- correctness over shapes

#: fixed edge cases checked first: (name, batch, heads, kv_heads, L, S, d, causal, block)
EDGE_CASES = (
    ("decode step L = 1 (GQA 9/3)", 1, 9, 3, 1, 77, 64, True, 16),
    ("chunk L < S (bottom-right)", 2, 4, 2, 5, 37, 32, True, 16),
    ("odd L = S", 1, 2, 2, 67, 67, 16, True, 16),
    ("L = S, multiple of the block", 1, 3, 1, 128, 128, 32, True, 32),
    ("MQA (1 KV head)", 2, 6, 1, 33, 50, 16, False, 16),
    ("L > S, no mask", 1, 2, 1, 40, 9, 8, False, 16),
    ("one tile for everything", 1, 2, 1, 20, 30, 8, True, 64),
    ("tile of 1", 1, 2, 2, 9, 13, 8, True, 1),
)


def random_shapes(n: int, max_len: int, seed: int = 0) -> list[dict]:
    """The edge cases, then ``n`` random shapes: odd lengths, causal or not, GQA groups, L != S, odd tiles."""
    shapes = [dict(zip(("name", "batch", "heads", "kv_heads", "L", "S", "d", "causal", "block"), case))
              for case in EDGE_CASES]
    rng = np.random.default_rng(seed)
    for i in range(n):
        kv = int(rng.choice([1, 2, 3]))
        heads = kv * int(rng.choice([1, 2, 3]))
        causal = bool(rng.random() < 0.6)
        S = int(rng.integers(1, max_len + 1))
        L = 1 if rng.random() < 0.15 else int(rng.integers(1, (S if causal else max_len) + 1))
        shapes.append(dict(name=f"random {i}", batch=int(rng.integers(1, 3)), heads=heads, kv_heads=kv, L=L, S=S,
                           d=int(rng.choice([8, 16, 32, 64])), causal=causal, block=int(rng.choice([7, 16, 32, 64]))))
    return shapes


def check_shape(shape: dict, seed: int = 0) -> dict:
    """Tiled attention on one shape against SDPA (explicit bottom-right mask, enable_gqa), the naive version
    and torch.logsumexp of the explicit scores; max absolute differences (float32)."""
    gen = torch.Generator().manual_seed(seed)
    b, h, g, L, S, d = (shape[k] for k in ("batch", "heads", "kv_heads", "L", "S", "d"))
    q = torch.randn(b, h, L, d, generator=gen)
    k = torch.randn(b, g, S, d, generator=gen)
    v = torch.randn(b, g, S, d, generator=gen)
    out, lse = flash_attention(q, k, v, causal=shape["causal"], block_size=shape["block"], return_lse=True)
    scores = q @ k.repeat_interleave(h // g, dim=1).transpose(-1, -2) / math.sqrt(d)
    if shape["causal"]:
        scores = scores.masked_fill(~causal_mask(L, S), -math.inf)
    return dict(shape, error_sdpa=float((out - reference_attention(q, k, v, shape["causal"])).abs().max()),
                error_naive=float((out - naive_attention(q, k, v, shape["causal"])).abs().max()),
                error_lse=float((lse - torch.logsumexp(scores, dim=-1)).abs().max()))


def correctness_sweep(shapes: Sequence[dict], seed: int = 0, progress: bool = True) -> list[dict]:
    """:func:`check_shape` on every shape (seeded per shape)."""
    return [check_shape(s, seed + i) for i, s in enumerate(progress_bar(shapes, desc="shapes", unit="shape",
                                                                         disable=not progress))]


def correctness_table(checks: Sequence[dict], first: int = 8) -> object:
    """The first ``first`` checked shapes (the edge cases) with their errors."""
    return table([{"shape": r["name"], "B": r["batch"], "H": r["heads"], "G": r["kv_heads"], "L": r["L"],
                   "S": r["S"], "d": r["d"], "causal": r["causal"], "tile": r["block"],
                   "max |tiled - SDPA|": r["error_sdpa"], "logsumexp error": r["error_lse"]}
                  for r in checks[:first]], title=f"The {first} edge cases (all {len(checks)} shapes in the figure)")


def fully_masked_rows_check(seed: int = 0) -> dict:
    """Causal with L = 10 > S = 4: the first 6 queries see no key. The tiled kernel gives output 0 and
    logsumexp -inf there (no NaN); the naive softmax over a row of -inf gives NaN."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, 10, 8, generator=gen)
    k, v = torch.randn(1, 1, 4, 8, generator=gen), torch.randn(1, 1, 4, 8, generator=gen)
    out, lse = flash_attention(q, k, v, causal=True, block_size=4, return_lse=True)
    ref = reference_attention(q, k, v, causal=True)
    naive = naive_attention(q, k, v, causal=True)
    return {"masked_rows": 6, "tiled_output_abs_max": float(out[:, :, :6].abs().max()),
            "tiled_lse_all_minus_inf": bool(torch.isneginf(lse[:, :, :6]).all()),
            "tiled_has_nan": bool(torch.isnan(out).any()),
            "sdpa_masked_rows_abs_max": float(torch.nan_to_num(ref[:, :, :6], nan=math.inf).abs().max()),
            "naive_nan_rows": int(torch.isnan(naive[0, 0, :, 0]).sum()),
            "other_rows_error": float((out[:, :, 6:] - ref[:, :, 6:]).abs().max())}


def gqa_memory_check(key_len: int = 4096, heads: int = 9, kv_heads: int = 3, d: int = 64, block_size: int = 64,
                     seed: int = 0) -> dict:
    """A decode step (L = 1) of a GQA layer against ``key_len`` cached keys: peak extra memory of the tiled
    kernel (head groups share K/V tiles), of the naive version (``repeat_interleave`` of K and V to every
    query head) and of SDPA with ``enable_gqa``, next to the bytes of K and V themselves."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, 1, d, generator=gen)
    k, v = (torch.randn(1, kv_heads, key_len, d, generator=gen) for _ in range(2))
    out = {"kv_bytes": 2 * kv_heads * key_len * d * 4, "repeated_kv_bytes": 2 * heads * key_len * d * 4}
    results = {}
    for name, fn in (("tiled", lambda: flash_attention(q, k, v, causal=True, block_size=block_size)),
                     ("naive", lambda: naive_attention(q, k, v, causal=True)),
                     ("sdpa", lambda: sdpa_attention(q, k, v, causal=True))):
        results[name], out[f"{name}_bytes"] = peak_memory(fn)
    out["error"] = float((results["tiled"] - results["sdpa"]).abs().max())
    return out


# ----------------------------------------------------------------------------- the is_causal pitfall

def top_left_mask(query_len: int, key_len: int) -> torch.Tensor:
    """The mask SDPA builds for ``is_causal=True``: ones(L, S).tril(0), aligned top-left."""
    return torch.ones(query_len, key_len, dtype=torch.bool).tril(0)


def is_causal_pitfall(key_len: int = 40, chunk: int = 4, heads: int = 9, kv_heads: int = 3, d: int = 64,
                      seed: int = 0) -> dict:
    """Max |SDPA(is_causal=True) - correct| for a decode step (L = 1) and a chunk (L = ``chunk``) against a cache
    of ``key_len`` keys; correct = the tiled kernel with its bottom-right mask (= SDPA with that explicit mask).

    For L = 1, ``is_causal=True`` keeps only key 0, so its output is exactly the value of the first token."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(1, kv_heads, key_len, d, generator=gen)
    v = torch.randn(1, kv_heads, key_len, d, generator=gen)
    out = {}
    for name, length in (("decode", 1), ("chunk", chunk)):
        q = torch.randn(1, heads, length, d, generator=gen)
        right = flash_attention(q, k, v, causal=True)
        explicit = reference_attention(q, k, v, causal=True)
        wrong = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out[f"{name}_error"] = float((wrong - right).abs().max())
        out[f"{name}_explicit_mask_error"] = float((explicit - right).abs().max())
        if length == 1:
            first = v[:, :, :1].repeat_interleave(heads // kv_heads, dim=1)
            out["decode_wrong_equals_first_value"] = float((wrong - first).abs().max())
    return out


# ----------------------------------------------------------------------------- sweeps

def memory_sweep(ns: Sequence[int], d: int = 64, block_size: int = 64, seed: int = 0,
                 progress: bool = True) -> list[dict]:
    """Peak extra memory of naive, tiled and SDPA attention (one head, float32, no mask) at every length."""
    return [attention_memory_benchmark(int(n), d, 1, block_size, seed=seed, timing=False)
            for n in progress_bar(list(ns), desc="memory sweep", unit="length", disable=not progress)]


def memory_table(sweep: Sequence[dict]) -> object:
    """Peak extra memory per sequence length (MiB), the naive / tiled ratio and the tiled workspace (KiB)."""
    return table([{"N": r["n"], "naive MiB": r["naive_bytes"] / 2**20, "tiled MiB": r["tiled_bytes"] / 2**20,
                   "SDPA MiB": r["sdpa_bytes"] / 2**20, "naive / tiled": r["ratio_naive_over_tiled"],
                   "tiled workspace beyond the output, KiB": (r["tiled_bytes"] - r["output_bytes"]) / 1024}
                  for r in sweep], title="Peak extra memory of one attention call (one head, d = 64, float32)")


def loglog_slope(x: Sequence[float], y: Sequence[float], last: int = 3) -> float:
    """Slope of log y against log x over the ``last`` largest x (the asymptotic exponent)."""
    order = np.argsort(np.asarray(x, float))[-last:]
    lx, ly = np.log(np.asarray(x, float)[order]), np.log(np.asarray(y, float)[order])
    return float(np.polyfit(lx, ly, 1)[0])


def block_sweep(n: int, d: int = 64, blocks: Sequence[int] = BLOCKS, repeats: int = 2, causal: bool = True,
                seed: int = 0, progress: bool = True) -> dict:
    """Time, peak memory, error vs SDPA and tile counts of the tiled kernel for each block size at length n,
    with naive attention and SDPA measured in the same run (one head, float32)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 1, n, d, generator=gen) for _ in range(3))
    ref = reference_attention(q, k, v, causal)
    rows = []
    for b in progress_bar(list(blocks), desc="block sizes", unit="block size", disable=not progress):
        fn = lambda b=b: flash_attention(q, k, v, causal=causal, block_size=b)  # noqa: E731
        out, peak = peak_memory(fn)
        sched = tile_schedule(n, n, b, causal)
        rows.append({"block": int(b), "seconds": time_call(fn, repeats), "peak_bytes": int(peak),
                     "error": float((out - ref).abs().max()), "tiles_total": int(sched.numel()),
                     "tiles_computed": int((sched != SKIPPED).sum()), "tiles_masked": int((sched == MASKED).sum())})
    baselines = {}
    for name, fn in (("naive", lambda: naive_attention(q, k, v, causal)),
                     ("sdpa", lambda: sdpa_attention(q, k, v, causal))):
        baselines[f"{name}_peak_bytes"] = int(peak_memory(fn)[1])
        baselines[f"{name}_seconds"] = time_call(fn, repeats)
    return {"n": n, "d": d, "causal": causal, "rows": rows, "load": load_average().one, **baselines}


def block_table(sweep: dict) -> object:
    """One row per block size: time (and in units of SDPA), peak memory, tiles run, error."""
    rows = [{"block": r["block"], "ms": 1e3 * r["seconds"], "x SDPA time": r["seconds"] / sweep["sdpa_seconds"],
             "peak KiB": r["peak_bytes"] / 1024, "tiles run": f"{r['tiles_computed']} of {r['tiles_total']}",
             "max |error|": r["error"]} for r in sweep["rows"]]
    rows += [{"block": name, "ms": 1e3 * sweep[f"{key}_seconds"], "x SDPA time": sweep[f"{key}_seconds"]
              / sweep["sdpa_seconds"], "peak KiB": sweep[f"{key}_peak_bytes"] / 1024}
             for name, key in (("naive", "naive"), ("SDPA", "sdpa"))]
    return table(rows, title=f"N = {sweep['n']}, causal, one head (load average {sweep.get('load', float('nan')):.1f}"
                             " while timing)")


def sweep_row(sweep: dict, block: int) -> dict:
    """The row of :func:`block_sweep` for one block size (a clear error for one that was not swept)."""
    for row in sweep["rows"]:
        if row["block"] == block:
            return row
    raise ValueError(f"block size {block} was not swept; swept: {[r['block'] for r in sweep['rows']]}")


def hbm_rows(ns: Sequence[int], d: int, sram_kib: float, bytes_per_element: int = 2) -> list[dict]:
    """HBM accesses (elements) of standard attention and FA1 for each N at one head dim and SRAM size."""
    sram = int(sram_kib * 1024 // bytes_per_element)
    b_r, b_c = flash_block_sizes(d, sram)
    return [{"N": int(n), "d": d, "M": sram, "B_r": b_r, "B_c": b_c, "standard": hbm_accesses_standard(n, d),
             "flash": hbm_accesses_flash(n, d, sram),
             "ratio": hbm_accesses_standard(n, d) / hbm_accesses_flash(n, d, sram)} for n in ns]


# ----------------------------------------------------------------------------- GPU timing (only with a GPU)

def gpu_sdpa_timing(ns: Sequence[int], heads: int = 16, d: int = 64, repeats: int = 5, tiled_max_n: int = 4096,
                    device: str = "cuda") -> list[dict] | None:
    """On a CUDA GPU: time and peak memory of SDPA's flash backend vs its math backend (fp16, causal,
    batch 1), and of this notebook's tiled torch loop up to ``tiled_max_n``. None without a GPU.
    (``device="cpu"`` runs the same code on the CPU, for tests.)"""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    for n in ns:
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(1, heads, n, d, device=device, dtype=torch.float16, generator=gen) for _ in range(3))
        row = {"N": int(n)}
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
            def fn(backend=backend, q=q, k=k, v=v):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            try:
                row[f"{name}_bytes"] = peak_memory(fn)[1]
                row[f"{name}_seconds"] = time_call(fn, repeats)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # backend unavailable or out of memory
                row[f"{name}_error"] = (str(err).splitlines() or [type(err).__name__])[0][:120]
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        if n <= tiled_max_n:
            fn = lambda q=q, k=k, v=v: flash_attention(q, k, v, causal=True, block_size=128)  # noqa: E731
            row["tiled_bytes"] = peak_memory(fn)[1]
            row["tiled_seconds"] = time_call(fn, max(1, repeats // 2))
        rows.append(row)
    return rows


def gpu_timing(ns: Sequence[int], gpu: str) -> list[dict]:
    """:func:`gpu_sdpa_timing` on the CUDA device named ``gpu`` (the name is part of a cached result's key)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    if name != gpu:
        raise RuntimeError(f"asked for a timing on {gpu!r}, but this machine has {name!r}")
    return gpu_sdpa_timing(list(ns))


def gpu_table(rows: Sequence[dict]) -> object:
    """Milliseconds and peak MiB per sequence length and kernel of the GPU cell."""
    out = []
    for r in rows:
        row = {"N": r["N"]}
        for key, name in (("flash", "SDPA flash"), ("math", "SDPA math"), ("tiled", "tiled loop")):
            if f"{key}_seconds" in r:
                row[f"{name} ms"] = 1e3 * r[f"{key}_seconds"]
                row[f"{name} MiB"] = r[f"{key}_bytes"] / 2**20
            elif f"{key}_error" in r:
                row[f"{name} ms"] = r[f"{key}_error"]
        out.append(row)
    return table(out, title="GPU, fp16, causal, 16 heads, d = 64")


# ----------------------------------------------------------------------------- the real model

def passage(model: str, n_tokens: int) -> tuple[list[int], str]:
    """(token ids, the text they cover) of the first ``n_tokens`` tokens of "To be, or not to be"."""
    _, tokenizer, _ = load_model(model)
    ids = passage_ids(tokenizer, n_tokens, "hamlet", PASSAGE_START)
    return ids, tokenizer.decode(ids)


def model_table(hf_model) -> object:
    """The shape of the loaded model, read from its config."""
    c = hf_model.config
    return table({"layers": c.num_hidden_layers, "query heads": c.num_attention_heads,
                  "KV heads": c.num_key_value_heads, "head dim": getattr(c, "head_dim", None)
                  or c.hidden_size // c.num_attention_heads, "hidden size": c.hidden_size},
                 title="The model, from its config")


def real_model_check(model: str, ids: Sequence[int], repeats: int = 1) -> dict:
    """Logits of the from-scratch runner with tiled ("flash"), SDPA and naive attention, and of HF's own
    forward pass, on the same tokens (``model``: its name, see :func:`lionsnb.inference.llama.load_model`);
    max |differences| per position, agreement of next-token predictions, and the time of one forward pass each
    (same run)."""
    model, _, _ = load_model(model)
    ids = torch.tensor([list(ids)])
    runners = {name: LlamaRunner(model, attention=name) for name in ("sdpa", "flash", "naive")}
    logits = {name: r(ids) for name, r in runners.items()}
    with torch.no_grad():
        hf = model(ids).logits
    seconds = {name: time_call(lambda r=r: r(ids), repeats) for name, r in runners.items()}
    ref = logits["sdpa"]
    out = {"tokens": int(ids.shape[1]), "layers": runners["flash"].n_layers,
           "flash_vs_sdpa": float((logits["flash"] - ref).abs().max()),
           "naive_vs_sdpa": float((logits["naive"] - ref).abs().max()),
           "flash_vs_hf": float((logits["flash"] - hf).abs().max()),
           "per_position_flash": (logits["flash"] - ref).abs().amax(-1)[0].tolist(),
           "per_position_naive": (logits["naive"] - ref).abs().amax(-1)[0].tolist(),
           "same_argmax": bool((logits["flash"].argmax(-1) == ref.argmax(-1)).all()),
           "same_argmax_hf": bool((logits["flash"].argmax(-1) == hf.argmax(-1)).all()),
           "logit_scale": float(ref.abs().max()),
           "argmax_flash": logits["flash"].argmax(-1)[0].tolist(),
           **{f"{name}_seconds": s for name, s in seconds.items()}}
    return out


# ----------------------------------------------------------------------------- tables

def trace_table(trace: Sequence[dict]) -> object:
    """The running maximum and sum after every block of the online softmax."""
    return table([{"after block": t["block"], "keys": f"{t['keys'][0]}..{t['keys'][1] - 1}", "running max m": t["m"],
                   "running sum l": t["l"]} for t in trace], title="The online softmax, block by block")


def gqa_table(gqa: dict) -> object:
    """Peak extra memory of one GQA decode step per implementation, next to the size of K and V."""
    rows = [{"what": "K and V of the cache (3 KV heads)", "MiB": gqa["kv_bytes"] / 2**20},
            {"what": "K and V repeated to the 9 query heads", "MiB": gqa["repeated_kv_bytes"] / 2**20}]
    rows += [{"what": f"{name}: peak extra memory of the step", "MiB": gqa[f"{key}_bytes"] / 2**20}
             for name, key in (("naive (repeat_interleave)", "naive"), ("tiled", "tiled"), ("SDPA", "sdpa"))]
    return table(rows, title=f"A GQA decode step against 4096 cached keys (|tiled - SDPA| = {gqa['error']:.1e})")


def masked_rows_table(masked: dict) -> object:
    """Causal attention with L > S: what each implementation returns on the rows that see no key."""
    return table({"rows that see no key": masked["masked_rows"],
                  "tiled: max |output| on them": masked["tiled_output_abs_max"],
                  "tiled: logsumexp all -inf": masked["tiled_lse_all_minus_inf"],
                  "tiled: any NaN": masked["tiled_has_nan"],
                  "SDPA: max |output| on them": masked["sdpa_masked_rows_abs_max"],
                  "naive softmax: NaN rows": masked["naive_nan_rows"],
                  "other rows: max |tiled - SDPA|": masked["other_rows_error"]},
                 title="Causal, L = 10 queries, S = 4 keys")


def pitfall_table(pitfall: dict) -> object:
    """The is_causal=True error in a decode step and a chunk, and the explicit mask's."""
    wrong, right = "max |SDPA(is_causal=True) - correct|", "with the explicit bottom-right mask"
    return table([{"case": "decode step, L = 1, S = 40", wrong: pitfall["decode_error"],
                   right: pitfall["decode_explicit_mask_error"]},
                  {"case": "chunk, L = 4, S = 40", wrong: pitfall["chunk_error"],
                   right: pitfall["chunk_explicit_mask_error"]}],
                 title="SDPA's is_causal against the bottom-right mask (in the decode step it returns the first "
                       f"value vector: max difference {pitfall['decode_wrong_equals_first_value']:.1e})")


def hbm_table(rows: Sequence[dict], sram_kib: float) -> object:
    """HBM element accesses of standard attention and FA1 per N."""
    first = rows[0]
    return table([{"N": r["N"], "standard": r["standard"], "flash": r["flash"], "standard / flash": r["ratio"]}
                  for r in rows],
                 title=f"SRAM {sram_kib:g} KiB = M = {first['M']:,} fp16 elements; d = {first['d']}: tiles "
                       f"B_r = {first['B_r']}, B_c = {first['B_c']}")


def real_model_table(real: dict) -> object:
    """The tiled kernel inside the real model against SDPA, the naive version and Hugging Face."""
    return table([{"comparison": "flash vs SDPA", "max |logit difference|": real["flash_vs_sdpa"],
                   "same next token everywhere": real["same_argmax"], "seconds per forward": real["flash_seconds"]},
                  {"comparison": "naive vs SDPA", "max |logit difference|": real["naive_vs_sdpa"],
                   "seconds per forward": real["naive_seconds"]},
                  {"comparison": "flash vs Hugging Face", "max |logit difference|": real["flash_vs_hf"],
                   "same next token everywhere": real["same_argmax_hf"]},
                  {"comparison": "SDPA (reference)", "seconds per forward": real["sdpa_seconds"]}],
                 title=f"{real['layers']} layers, {real['tokens']} tokens, logits up to {real['logit_scale']:.1f}")


# ----------------------------------------------------------------------------- figures

def draw_online_softmax(fig, *, x: Sequence[float], trace: list[dict], block_size: int) -> None:
    """Scores of one row with the block boundaries and the running maximum, and the running sum l."""
    ax1, ax2 = fig.subplots(1, 2)
    x = np.asarray(x, float)
    ax1.bar(np.arange(len(x)), x, color="tab:blue", alpha=0.7, label="scores s_j")
    for t in trace:
        lo, hi = t["keys"]
        ax1.hlines(t["m"], lo - 0.5, hi - 0.5, color="tab:red", lw=2)
        ax1.axvline(lo - 0.5, color="0.6", lw=0.8, ls="--")
    ax1.plot([], [], color="tab:red", lw=2, label="running max m after each block")
    ax1.legend(fontsize=8)
    label(ax1, "key index j (dashed: block boundaries)", "score", f"One row, blocks of {block_size}")
    blocks = [t["block"] for t in trace]
    ax2.plot(blocks, [t["l"] for t in trace], marker="o", label="running l (relative to the running m)")
    ax2.axhline(float(np.exp(x - x.max()).sum()), color="black", ls="--", label="sum exp(s - max s), all at once")
    ax2.legend(fontsize=8)
    label(ax2, "blocks read", "l", "The running sum converges to the softmax denominator")


def draw_masks(fig, *, query_len: int, key_len: int) -> None:
    """SDPA's is_causal mask (top-left) vs the bottom-right mask autoregressive decoding needs, for a chunk and
    for a decode step."""
    axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [query_len, max(query_len / 2, 1)]})
    for row, length in enumerate((query_len, 1)):
        for col, (name, mask) in enumerate((("is_causal=True (top-left)", top_left_mask(length, key_len)),
                                            ("bottom-right (correct)", causal_mask(length, key_len)))):
            ax = axes[row, col]
            ax.imshow(mask.numpy(), cmap="Blues", vmin=0, vmax=1.3, aspect="auto",
                      extent=(-0.5, key_len - 0.5, length - 0.5, -0.5))
            ax.set_yticks(range(length), [f"new {i}" for i in range(length)], fontsize=7)
            ax.grid(False)
            label(ax, "key position (cache + new tokens)", "query",
                  f"{name}, L = {length}, S = {key_len}: {int(mask.sum())} visible")


def draw_tiles(fig, *, cases: Sequence[tuple[str, int, int, int]]) -> None:
    """Tile maps (skipped / computed without mask / masked) for (title, L, S, block) cases, causal."""
    from matplotlib.colors import ListedColormap

    axes = np.atleast_1d(fig.subplots(1, len(cases)))
    cmap = ListedColormap(["0.92", "tab:blue", "tab:orange"])
    for ax, (title, L, S, b) in zip(axes, cases):
        sched = tile_schedule(L, S, b, True).numpy()
        ax.imshow(sched, cmap=cmap, vmin=0, vmax=2, aspect="auto",
                  extent=(0, sched.shape[1] * b, sched.shape[0] * b, 0))
        # the diagonal: query i sees keys up to S - L + i
        ax.plot([S - L + 1, S + 1], [0, L], color="black", lw=1)
        for edge in range(b, S, b):  # tile boundaries
            ax.axvline(edge, color="white", lw=0.6)
        for edge in range(b, L, b):
            ax.axhline(edge, color="white", lw=0.6)
        ax.set_xlim(0, S)
        ax.set_ylim(L, 0)
        if L <= 4:
            ax.set_yticks(np.arange(L) + 0.5, [str(i) for i in range(L)])
        ax.grid(False)
        computed = int((sched != SKIPPED).sum())
        label(ax, "key position", "query position",
              f"{title}\n{computed} of {sched.size} tiles computed, {int((sched == MASKED).sum())} masked")
    axes[0].plot([], [], "s", color="tab:blue", label="computed, no mask")
    axes[0].plot([], [], "s", color="tab:orange", label="computed, masked (diagonal)")
    axes[0].plot([], [], "s", color="0.85", label="skipped (above the diagonal)")
    axes[0].legend(fontsize=7, loc="upper right", facecolor="white", frameon=True)


def draw_errors(fig, *, rows: Sequence[dict]) -> None:
    """Max |tiled - SDPA| and |logsumexp error| per checked shape (log scale) with the 1e-5 line."""
    ax = fig.subplots()
    x = np.arange(len(rows))
    for key, marker, name in (("error_sdpa", "o", "output vs SDPA (explicit mask)"),
                              ("error_naive", "x", "output vs naive"),
                              ("error_lse", ".", "logsumexp vs torch.logsumexp")):
        ax.scatter(x, [max(r[key], 1e-10) for r in rows], marker=marker, s=18, label=name)
    causal = [i for i, r in enumerate(rows) if r["causal"]]
    ax.scatter(causal, [2e-10] * len(causal), marker="|", color="0.5", label="causal shapes")
    ax.axhline(1e-5, color="tab:red", ls="--", label="tolerance 1e-5")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    label(ax, "shape (first 8: edge cases)", "max absolute difference (float32)", "Tiled attention vs references")


def draw_memory(fig, *, sweep: Sequence[dict]) -> None:
    """Peak extra memory against N on log-log axes, with N^2 and N guide lines; the naive / tiled ratio."""
    ax1, ax2 = fig.subplots(1, 2)
    ns = np.array([r["n"] for r in sweep], float)
    for key, name, color in (("naive_bytes", "naive (scores + softmax)", "tab:red"),
                             ("tiled_bytes", "tiled (this notebook)", "tab:blue"),
                             ("sdpa_bytes", "SDPA (PyTorch CPU kernel)", "tab:green")):
        ax1.plot(ns, [r[key] / 2**20 for r in sweep], marker="o", color=color, label=name)
    ax1.plot(ns, [r["score_matrix_bytes"] / 2**20 for r in sweep], ls=":", color="tab:red",
             label="one N x N float32 matrix")
    top, bottom = sweep[-1]["naive_bytes"] / 2**20, sweep[-1]["tiled_bytes"] / 2**20
    ax1.plot(ns, top * (ns / ns[-1]) ** 2, color="0.6", lw=0.8, ls="--", label="slope 2 (N^2)")
    ax1.plot(ns, bottom * (ns / ns[-1]), color="0.3", lw=0.8, ls="--", label="slope 1 (N)")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    label(ax1, "sequence length N (log)", "peak extra memory, MiB (log)", "Peak memory of one attention call")
    ax2.plot(ns, [r["naive_bytes"] / r["tiled_bytes"] for r in sweep], marker="o", color="tab:purple")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    label(ax2, "sequence length N (log)", "naive / tiled peak memory (log)", "The saving grows with N")


def _block_panels(ax1, ax2, sweep: dict, block_size: int | None = None) -> None:
    """Time and peak memory of the tiled kernel against the block size, naive and SDPA as lines."""
    rows = sweep["rows"]
    blocks = [r["block"] for r in rows]
    ax1.plot(blocks, [1e3 * r["seconds"] for r in rows], marker="o", label="tiled (Python loop over tiles)")
    ax1.axhline(1e3 * sweep["naive_seconds"], color="tab:red", ls="--", label="naive")
    ax1.axhline(1e3 * sweep["sdpa_seconds"], color="tab:green", ls="--", label="SDPA")
    ax2.plot(blocks, [r["peak_bytes"] / 2**20 for r in rows], marker="o", label="tiled")
    ax2.axhline(sweep["naive_peak_bytes"] / 2**20, color="tab:red", ls="--", label="naive")
    ax2.axhline(sweep["sdpa_peak_bytes"] / 2**20, color="tab:green", ls="--", label="SDPA")
    if block_size is not None:
        row = sweep_row(sweep, block_size)
        ax1.plot([block_size], [1e3 * row["seconds"]], marker="o", ms=12, color="tab:blue", alpha=0.5)
        ax2.plot([block_size], [row["peak_bytes"] / 2**20], marker="o", ms=12, color="tab:blue", alpha=0.5)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(blocks, [str(b) for b in blocks])
        ax.legend(fontsize=7)
    label(ax1, "block size (log)", "ms per call (log, this CPU)", f"N = {sweep['n']}, causal: time")
    label(ax2, "block size (log)", "peak extra memory, MiB (log)", "Peak memory")


def draw_block_sweep(fig, *, sweep: dict) -> None:
    """Experiment 4: time and peak memory of the tiled kernel against the block size."""
    ax1, ax2 = fig.subplots(1, 2)
    _block_panels(ax1, ax2, sweep)


def draw_block(fig, *, sweep: dict, block_size: int) -> None:
    """Explorer frame: time and peak memory against block size (the chosen one highlighted), and the tile map
    at the chosen block size."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    _block_panels(ax1, ax2, sweep, block_size)
    row = sweep_row(sweep, block_size)
    ax2.set_title(f"block {block_size}: {row['peak_bytes'] / 2**20:.2f} MiB, error {row['error']:.1e}")
    n, b = sweep["n"], block_size
    from matplotlib.colors import ListedColormap

    sched = tile_schedule(n, n, b, sweep["causal"]).numpy()
    ax3.imshow(sched, cmap=ListedColormap(["0.92", "tab:blue", "tab:orange"]), vmin=0, vmax=2,
               extent=(0, sched.shape[1] * b, sched.shape[0] * b, 0))
    ax3.grid(False)
    label(ax3, "key position", "query position",
          f"{row['tiles_computed']} of {row['tiles_total']} tiles computed ({row['tiles_masked']} masked)")


def draw_hbm(fig, *, rows: Sequence[dict], d: int, sram_kib: float, n_fixed: int = 4096) -> None:
    """HBM accesses of standard attention and FA1 against N (at the chosen SRAM), and their ratio against
    the SRAM size at N = n_fixed for d = 64 and 128."""
    ax1, ax2 = fig.subplots(1, 2)
    ns = [r["N"] for r in rows]
    ax1.plot(ns, [r["standard"] for r in rows], marker="o", color="tab:red", label="standard: 4Nd + 4N^2")
    ax1.plot(ns, [r["flash"] for r in rows], marker="o", color="tab:blue", label="FlashAttention (FA1 Alg. 1)")
    ax1.plot(ns, [4 * n * d for n in ns], ls=":", color="0.4", label="read Q, K, V and write O once: 4Nd")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    label(ax1, "sequence length N (log)", "HBM element accesses (log)", f"d = {d}, SRAM {sram_kib:g} KiB (fp16)")
    sizes = np.array([16, 32, 64, 100, 128, 192, 228, 256, 512, 1024], float)
    for dd, color in ((64, "tab:blue"), (128, "tab:purple")):
        ratios = [hbm_accesses_standard(n_fixed, dd) / hbm_accesses_flash(n_fixed, dd, int(s * 512)) for s in sizes]
        ax2.plot(sizes, ratios, marker="o", color=color, label=f"d = {dd}")
    ax2.axvline(sram_kib, color="0.5", ls="--", label=f"{sram_kib:g} KiB")
    ax2.set_xscale("log", base=2)
    ax2.legend(fontsize=7)
    label(ax2, "SRAM per SM, KiB (log; fp16 elements = KiB x 512)", "standard / flash HBM accesses",
          f"N = {n_fixed}: more SRAM, fewer passes over Q and O")


def draw_real_model(fig, *, result: dict) -> None:
    """Max |logit difference| to the SDPA runner at every position, for the tiled and the naive attention."""
    ax = fig.subplots()
    pos = np.arange(result["tokens"])
    floor = 1e-8  # position 0 attends to one key only: the three versions agree exactly there
    ax.plot(pos, np.maximum(result["per_position_flash"], floor), marker=".", label="tiled (flash) vs SDPA")
    ax.plot(pos, np.maximum(result["per_position_naive"], floor), marker=".", alpha=0.6, label="naive vs SDPA")
    ax.axhline(1e-3, color="tab:red", ls="--", label="1e-3")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    label(ax, "token position in the passage", "max |logit difference| over the vocabulary (log)",
          f"Forward pass through {result['layers']} layers (logits up to {result['logit_scale']:.0f} in size)")


def draw_gpu(fig, *, rows: Sequence[dict]) -> None:
    """GPU: milliseconds and peak memory of SDPA flash vs math backends (and the tiled loop) against N."""
    ax1, ax2 = fig.subplots(1, 2)
    for key, name, color in (("flash", "SDPA flash backend", "tab:blue"), ("math", "SDPA math backend", "tab:red"),
                             ("tiled", "tiled torch loop (this notebook)", "tab:gray")):
        pts = [(r["N"], r[f"{key}_seconds"], r[f"{key}_bytes"]) for r in rows if f"{key}_seconds" in r]
        if pts:
            ax1.plot([p[0] for p in pts], [1e3 * p[1] for p in pts], marker="o", color=color, label=name)
            ax2.plot([p[0] for p in pts], [p[2] / 2**20 for p in pts], marker="o", color=color, label=name)
    for ax, ylabel in ((ax1, "ms per call (log)"), (ax2, "peak extra memory, MiB (log)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        label(ax, "sequence length N (log)", ylabel, "GPU, fp16, causal, 16 heads, d = 64")


# ----------------------------------------------------------------------------- exercises

def _update_cases():
    gen = torch.Generator().manual_seed(11)
    cases = []
    for rows, cols, d in ((3, 4, 2), (5, 7, 3), (1, 1, 4)):
        m = torch.randn(rows, 1, generator=gen)
        ell = torch.rand(rows, 1, generator=gen) + 0.5
        acc = torch.randn(rows, d, generator=gen)
        cases.append((m, ell, acc, 3 * torch.randn(rows, cols, generator=gen), torch.randn(cols, d, generator=gen)))
    s = torch.randn(2, 3, generator=gen)  # a first block: nothing accumulated yet
    cases.append((torch.full((2, 1), -math.inf), torch.zeros(2, 1), torch.zeros(2, 2), s,
                  torch.randn(3, 2, generator=gen)))
    s = torch.tensor([[0.5, 2.0, 9.0], [-1.0, 0.0, 1.0]])  # a large new maximum: the old sums shrink
    cases.append((torch.tensor([[1.0], [4.0]]), torch.tensor([[2.0], [1.5]]), torch.ones(2, 2), s,
                  torch.randn(3, 2, generator=gen)))
    return cases


def check_exercise_update(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: one online-softmax step on tiles (first tiles with m = -inf, a tile with a new maximum)."""
    return check_exercise("online softmax update", attempt, online_update, _update_cases(),
                          hint="m' = max(m, rowmax s); both l and acc are multiplied by exp(m - m') before "
                               "adding rowsum exp(s - m') and exp(s - m') @ v; return (m', l', acc').", ctx=ctx)


def _mask_cases():
    return [(1, 1), (1, 6), (3, 3), (3, 8), (5, 12), (6, 4)]


def check_exercise_mask(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: the bottom-right causal mask for L queries against S keys."""
    return check_exercise("bottom-right causal mask", attempt, causal_mask, _mask_cases(),
                          compare=lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.equal(got.bool(), exp),
                          hint="query i of the last L positions sits at position S - L + i and sees keys "
                               "0 .. S - L + i; tril with a diagonal offset does it in one line.", ctx=ctx)


def _hbm_cases():
    return [(1024, 64, 98304), (4096, 64, 98304), (4096, 128, 98304), (2048, 64, 16384), (1000, 80, 50000),
            (64, 64, 1 << 20)]


def check_exercise_hbm(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: HBM element accesses of FA1 Algorithm 1."""
    return check_exercise("FlashAttention HBM accesses", attempt, hbm_accesses_flash, _hbm_cases(),
                          compare=lambda got, exp: int(got) == int(exp),
                          hint="B_c = ceil(M / 4d); O, l, m are written once at the start (Nd + 2N); K and V are "
                               "read once (2Nd); each of the ceil(N / B_c) outer steps reads Q, O, l, m and "
                               "writes O, l, m for all N rows (3Nd + 4N).", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "BLOCKS", "PASSAGE_START",
    # the package's code the notebook shows and runs
    "naive_attention", "sdpa_attention", "flash_attention", "online_softmax", "peak_memory", "causal_mask",
    "hbm_accesses_standard", "hbm_accesses_flash", "load_model",
    # the notebook's experiments
    "random_shapes", "check_shape", "correctness_sweep", "fully_masked_rows_check", "gqa_memory_check",
    "top_left_mask", "is_causal_pitfall", "memory_sweep", "loglog_slope", "block_sweep", "sweep_row", "hbm_rows",
    "gpu_sdpa_timing", "gpu_timing", "passage", "real_model_check",
    # tables and figures
    "show", "show_source", "table", "figure", "explore", "sizes_table", "trace_table", "gqa_table",
    "correctness_table", "masked_rows_table", "pitfall_table", "memory_table", "block_table", "hbm_table",
    "gpu_table", "model_table", "real_model_table", "draw_online_softmax", "draw_masks", "draw_tiles",
    "draw_errors", "draw_memory", "draw_block_sweep", "draw_block", "draw_hbm", "draw_real_model", "draw_gpu",
    # exercises
    "check_exercise_update", "check_exercise_mask", "check_exercise_hbm",
]
