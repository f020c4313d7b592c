"""Notebook 4 of the inference-optimisation series: speculative decoding.

Leviathan, Kalman, Matias, "Fast Inference from Transformers via Speculative Decoding", ICML 2023
(arXiv 2211.17192), Algorithm 1; Chen et al., "Accelerating Large Language Model Decoding with Speculative
Sampling" (arXiv 2302.01318). The technique lives in :mod:`lionsnb.inference.speculative`; this module holds
the notebook's experiments on SmolLM2-135M-Instruct (offline) and Shakespeare:

* exactness of the one-step sampler (chi-square against p, the classic bug fails) and of whole sequences
  (bigram models with exact joint laws);
* how good an early-exit self-draft (the target's first k layers, its own final norm and LM head) is, per k:
  greedy agreement and acceptance sum_x min(p, q), teacher-forced on held-out text, and its cost ratio c(k);
* what one target call costs for 1..gamma+1 tokens on this device (the hidden assumption of the theory);
* greedy speculative decoding over a gamma x draft sweep on two prompts (a verse continuation and a copy
  task): identical output, acceptance, tokens per target call, wall-clock speed-up against plain cached
  decoding measured in the same run.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence

import numpy as np  # the notebook reaches NumPy as m.np (one import per notebook)
import torch
from tqdm.auto import tqdm

from lionsnb.context import setup_for
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.inference.llama import LlamaRunner, generate
from lionsnb.inference.speculative import (  # noqa: F401  (re-exported for the notebook)
    BigramLM,
    ModelDraft,
    PromptLookupDraft,
    SpeculativeResult,
    acceptance_from_counts,
    acceptance_probability,
    chi_square_test,
    copy_prompt,
    expected_speedup,
    expected_tokens_per_call,
    greedy_accept,
    load_target,
    noisy_bigram,
    one_step_draws,
    random_bigram,
    residual_distribution,
    sample_from,
    speculative_accept,
    speculative_generate,
    total_variation,
    verse_prompt,
)
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label  # noqa: F401  (re-exported for the notebook)
from lionsnb.widgets import explore  # noqa: F401  (re-exported for the notebook)

SPEC = MethodSpec(
    name="inference.decoding",
    title="Inference 4: speculative decoding",
    profiles={
        # new_tokens: tokens generated per run of the sweep (layer_tokens for the slow layer draft, timed against
        # the first layer_tokens steps of the same plain run); gammas: draft lengths swept; eval_tokens: held-out
        # tokens for the teacher-forced draft quality; ks: draft depths evaluated; cost_repeats: repeats of each
        # timed forward (median); verify_ts: token counts of the timed target calls; chi_draws: one-step draws
        # per sampler; seq_draws / seq_len / seq_vocab: the bigram sequence test; sample_tokens: tokens of the
        # sampled runs on the model
            "smoke": dict(new_tokens=10, layer_tokens=6, gammas=(1, 3), eval_tokens=64, ks=(2, 8, 16, 24),
                      cost_repeats=3, verify_ts=(1, 2, 4), chi_draws=40_000, seq_draws=1000, seq_len=4, seq_vocab=4,
                      sample_tokens=8),
        "teach": dict(new_tokens=16, layer_tokens=8, gammas=(1, 2, 3, 4, 5, 6), eval_tokens=128,
                      ks=(2, 4, 8, 12, 16, 20, 24, 28), cost_repeats=4, verify_ts=(1, 2, 3, 4, 5, 6, 7),
                      chi_draws=100_000, seq_draws=3000, seq_len=4, seq_vocab=4, sample_tokens=16),
        "full": dict(new_tokens=128, layer_tokens=64, gammas=(1, 2, 3, 4, 5, 6, 8), eval_tokens=1024,
                     ks=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28), cost_repeats=15,
                     verify_ts=(1, 2, 3, 4, 5, 6, 7, 9), chi_draws=400_000, seq_draws=40_000, seq_len=4, seq_vocab=4,
                     sample_tokens=64),
    },
    knobs={
        "model": Knob("smollm2", "smollm2 (offline SmolLM2-135M-Instruct) or a hub id / local folder of a "
                      "Llama-style causal LM", str),
        "draft_layers": Knob(8, "k, the layers kept by the early-exit self-draft (1 to the target depth minus 1)",
                             int, low=1, high=63),
        "ngram": Knob(3, "longest n-gram the prompt-lookup draft matches (1 to 6)", int, low=1, high=6),
        "gamma": Knob(4, "draft length the explorer starts at (one of the swept values)", int, low=1, high=8),
        "draft": Knob("lookup", "draft the explorer starts at: layers or lookup", str, choices=("layers", "lookup")),
        "temperature": Knob(1.0, "temperature of the sampled run on the real model (> 0)", float, low=0.0,
                            low_open=True, high=2.0),
    },
)
setup = setup_for(SPEC)

DRAFTS = ("layers", "lookup")
PROMPTS = ("verse", "copy")


def load_models(model: str = "smollm2", draft_layers: int = 8, ngram: int = 3):
    """(hf model, tokenizer, target runner, {"layers": ModelDraft, "lookup": PromptLookupDraft})."""
    hf, tokenizer, target = load_target(model)
    if not 1 <= draft_layers < target.n_layers:
        raise ValueError(f"DRAFT_LAYERS = {draft_layers}: the target has {target.n_layers} layers; use 1 to "
                         f"{target.n_layers - 1}")
    drafts = {"layers": ModelDraft(LlamaRunner(hf, n_layers=draft_layers)),
              "lookup": PromptLookupDraft(ngram, min(2, ngram))}
    return hf, tokenizer, target, drafts


def prompts(tokenizer) -> dict[str, list[int]]:
    """The two prompts: ``verse`` (continue a Hamlet soliloquy) and ``copy`` (repeat a passage, chat format)."""
    return {"verse": verse_prompt(tokenizer), "copy": copy_prompt(tokenizer)}


def load_average() -> float:
    """The 1-minute load average (NaN where the OS does not say)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")


# ----------------------------------------------------------------------------- exactness


def example_distributions(vocab: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A target p and a draft q over a small vocabulary that disagree a lot (TV around 0.3-0.6)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(1.5 * torch.randn(vocab, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(1.5 * torch.randn(vocab, generator=g, dtype=torch.float64), 0)
    return p, q


def one_step_study(p: torch.Tensor, q: torch.Tensor, draws: int, seed: int = 0) -> dict:
    """:func:`one_step_draws` with the correct and the buggy sampler on the same p, q (gamma = 1)."""
    correct = one_step_draws(p, q, draws, seed=seed)
    buggy = one_step_draws(p, q, max(draws // 4, 1000), seed=seed + 1, buggy=True)  # fails with far fewer draws
    buggy_law = torch.minimum(p, q) + (1 - acceptance_probability(p, q)) * p
    return {"p": p, "q": q, "draws": draws, "buggy_draws": max(draws // 4, 1000), "correct": correct, "buggy": buggy,
            "buggy_law": buggy_law,
            "acceptance_theory": float(acceptance_probability(p, q))}


def sequence_study(vocab: int, length: int, draws: int, gamma: int = 3, noise: float = 0.7, seed: int = 0,
                   progress: bool = True) -> dict:
    """Whole sequences from :func:`speculative_generate` with bigram target and draft, against the exact joint
    law of the ``length`` generated tokens; plain target sampling as the reference, the buggy sampler too."""
    g = torch.Generator().manual_seed(seed)
    P = random_bigram(vocab, g)
    Q = noisy_bigram(P, noise, g)
    target, draft = BigramLM(P), ModelDraft(BigramLM(Q))
    exact = target.joint(0, length)
    counts = {name: torch.zeros(vocab ** length, dtype=torch.float64) for name in ("plain", "speculative", "buggy")}
    weights = vocab ** torch.arange(length - 1, -1, -1)
    calls = {"speculative": 0, "buggy": 0}
    for i in tqdm(range(draws), desc="bigram sequences", disable=not progress, leave=False):
        seq = generate_plain_bigram(P, 0, length, torch.Generator().manual_seed(10**6 * (seed + 1) + i))
        counts["plain"][int((torch.tensor(seq) * weights).sum())] += 1
        for name in ("speculative", "buggy"):
            out = speculative_generate(target, draft, [0], length, gamma, temperature=1.0,
                                       seed=2 * i + (name == "buggy") + 10**7 * (seed + 1), buggy=name == "buggy")
            counts[name][int((torch.tensor(out.tokens) * weights).sum())] += 1
            calls[name] += out.target_calls
    tests = {name: {**chi_square_test(c, exact), "tv": total_variation(c, exact)} for name, c in counts.items()}
    return {"P": P, "Q": Q, "exact": exact, "counts": counts, "tests": tests, "gamma": gamma, "length": length,
            "draws": draws, "tokens_per_call": draws * length / calls["speculative"],
            "acceptance_bigram": float(acceptance_probability(P, Q).mean())}


def generate_plain_bigram(P: torch.Tensor, first: int, length: int, generator: torch.Generator) -> list[int]:
    """Plain ancestral sampling of ``length`` tokens after ``first`` from the bigram P (the reference sampler)."""
    out, last = [], first
    for _ in range(length):
        last = int(torch.multinomial(P[last], 1, generator=generator))
        out.append(last)
    return out


# ----------------------------------------------------------------------------- the draft and the device


def eval_tokens(tokenizer, n: int) -> list[int]:
    """``n`` held-out Hamlet tokens (Act 2, from "What a piece of work is a man") for teacher-forced scoring."""
    from lionsnb.lm import shakespeare

    text = shakespeare("hamlet")
    start = text.index("What a piece of work is a man")
    ids = tokenizer(text[start:start + 12 * n])["input_ids"]
    if len(ids) < n:
        raise ValueError(f"only {len(ids)} evaluation tokens available, {n} requested")
    return ids[:n]


@torch.no_grad()
def draft_quality(hf_model, ids: Sequence[int], ks: Sequence[int], temperature: float = 1.0,
                  progress: bool = True) -> dict:
    """Teacher-forced quality of the early-exit draft with k layers, for every k in ``ks``.

    On the same tokens, the full target gives p_t and the k-layer draft q_t at every position t. Returns per k
    the greedy agreement mean_t [argmax q_t = argmax p_t] (the acceptance rate of greedy speculative decoding)
    and the sampling acceptance mean_t sum_x min(p_t, q_t) at ``temperature`` (Leviathan et al.'s alpha).
    """
    x = torch.tensor([list(ids)])
    full = LlamaRunner(hf_model)(x)[0].float()
    p = torch.softmax(full / temperature, -1)
    best = full.argmax(-1)
    out = {"k": [], "greedy": [], "alpha": []}
    for k in tqdm(list(ks), desc="draft depths", disable=not progress, leave=False):
        logits = LlamaRunner(hf_model, n_layers=k)(x)[0].float()
        q = torch.softmax(logits / temperature, -1)
        out["k"].append(int(k))
        out["greedy"].append(float((logits.argmax(-1) == best).double().mean()))
        out["alpha"].append(float(acceptance_probability(p, q).mean()))
    out["n_layers"] = len(hf_model.model.layers)
    out["tokens"] = len(ids)
    return out


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def step_costs(hf_model, prompt: Sequence[int], ks: Sequence[int], verify_ts: Sequence[int], repeats: int = 5,
               progress: bool = True) -> dict:
    """Seconds of one forward call after ``prompt`` (prefilled into a KV cache), median of ``repeats``.

    * ``draft``: one token through the first k layers (+ final norm and LM head), for every k in ``ks``, and
      ``target``: one token through the whole model; the cost ratio is c(k) = draft / target;
    * ``verify``: T tokens at once through the whole model, for T in ``verify_ts``; r(T) = verify(T) / verify(1)
      is what a verification of gamma = T - 1 draft tokens costs in target steps (1 on an idealised
      accelerator, where a decode step is memory-bound).
    The measurements are interleaved (one round over every case, ``repeats`` rounds) so that a change of load
    on a shared machine hits every case alike.
    """
    target = LlamaRunner(hf_model)
    prompt = list(prompt)
    runners = {k: LlamaRunner(hf_model, n_layers=k) for k in ks}
    caches = {k: r.new_cache(len(prompt) + 16) for k, r in runners.items()}
    tcache = target.new_cache(len(prompt) + 16)
    for k, r in runners.items():
        r(torch.tensor([prompt]), caches[k])
    target(torch.tensor([prompt]), tcache)
    base = len(prompt)
    draft_t = {k: [] for k in ks}
    verify_t = {t: [] for t in verify_ts}
    one = torch.tensor([[prompt[-1]]])

    def run(runner, cache, ids):
        runner(ids, cache)
        cache.truncate(base)

    for _ in tqdm(range(repeats), desc="timing forward calls", disable=not progress, leave=False):
        for k in ks:
            start = time.perf_counter()
            run(runners[k], caches[k], one)
            draft_t[k].append(time.perf_counter() - start)
        for t in verify_ts:
            ids = torch.tensor([prompt[-t:]])
            start = time.perf_counter()
            run(target, tcache, ids)
            verify_t[t].append(time.perf_counter() - start)
    draft = [statistics.median(draft_t[k]) for k in ks]
    verify = [statistics.median(verify_t[t]) for t in verify_ts]
    one_step = verify[list(verify_ts).index(1)] if 1 in verify_ts else float("nan")
    return {"k": list(ks), "draft": draft, "cost_ratio": [d / one_step for d in draft],
            "verify_t": list(verify_ts), "verify": verify, "verify_ratio": [v / one_step for v in verify],
            "target": one_step, "n_layers": target.n_layers, "load": load_average()}


def interpolate_cost_ratio(costs: dict, k: int) -> float:
    """c(k) from the measured depths (linear interpolation; the depth itself when it was measured)."""
    ks, cs = costs["k"], costs["cost_ratio"]
    return float(np.interp(k, ks + [costs["n_layers"]], cs + [1.0]))


def verify_ratio(costs: dict, gamma: int) -> float:
    """r(gamma + 1) from the measured token counts (linear interpolation / extrapolation by the last slope)."""
    ts, rs = costs["verify_t"], costs["verify_ratio"]
    t = gamma + 1
    if t <= ts[-1]:
        return float(np.interp(t, ts, rs))
    slope = (rs[-1] - rs[-2]) / (ts[-1] - ts[-2]) if len(ts) > 1 else 0.0
    return float(rs[-1] + slope * (t - ts[-1]))


def theory_by_depth(quality: dict, costs: dict, gammas: Sequence[int], use_verify_cost: bool) -> dict:
    """Predicted speed-up of the k-layer draft per k (best gamma) from the measured alpha (greedy agreement)
    and c(k); with the measured verification cost r(gamma + 1) or the paper's r = 1."""
    best, best_gamma = [], []
    for k, a in zip(quality["k"], quality["greedy"]):
        c = interpolate_cost_ratio(costs, k)
        values = [expected_speedup(min(a, 1 - 1e-12), g, c, verify_ratio(costs, g) if use_verify_cost else 1.0)
                  for g in gammas]
        i = int(np.argmax(values))
        best.append(values[i])
        best_gamma.append(int(gammas[i]))
    return {"k": list(quality["k"]), "speedup": best, "gamma": best_gamma}


# ----------------------------------------------------------------------------- the sweep on the real model


def timed_plain(target, prompt: Sequence[int], new_tokens: int) -> tuple[list[int], float]:
    """Plain cached greedy decoding (``generate``): tokens and wall seconds (prefill included)."""
    start = time.perf_counter()
    out = generate(target, list(prompt), new_tokens)
    return out.tokens, time.perf_counter() - start


def summarise(result: SpeculativeResult, reference: Sequence[int], baseline_seconds: float,
              decode_only: bool = False) -> dict:
    """Plain numbers of one speculative run, compared with the plain greedy tokens and time
    (``decode_only``: ``baseline_seconds`` leaves the prefill out, and so does the speculative time)."""
    seconds = result.seconds - (result.prefill_seconds if decode_only else 0.0)
    return {"equal": list(result.tokens) == list(reference), "tokens_per_call": result.tokens_per_call,
            "tokens_per_verification": result.tokens_per_verification,
            "acceptance": result.acceptance_rate, "accepted_fraction": result.accepted_fraction,
            "calls": result.target_calls, "seconds": seconds, "draft_seconds": result.draft_seconds,
            "target_seconds": result.target_seconds, "speedup": baseline_seconds / seconds,
            "accepted": list(result.accepted), "proposed": list(result.proposed), "tokens": list(result.tokens)}


def decoding_sweep(target, drafts: dict, prompts_: dict, new_tokens: int, gammas: Sequence[int],
                   layer_tokens: int | None = None, progress: bool = True) -> dict:
    """Greedy speculative decoding for every prompt x gamma x draft, each timed against plain cached decoding
    (``generate``) of the same prompt run next to it.

    One round per (prompt, gamma): prompt lookup, plain decoding, the layer draft (other drafts after the plain
    run too). Pairing each run with the plain run next to it in time keeps slow drifts of the load on a shared
    machine out of the ratio. Speed-ups compare the DECODING phase: the prompt's prefill, identical in both
    (one target call that emits the first token), is left out; with a few dozen new tokens it would otherwise
    dominate the times. The layer draft (slow: every call runs gamma draft steps) generates ``layer_tokens``
    tokens and is compared with the time the same plain run took for its first ``layer_tokens`` tokens, read
    from its per-step times.
    """
    layer_tokens = new_tokens if layer_tokens is None else min(layer_tokens, new_tokens)
    out = {"gammas": list(gammas), "new_tokens": new_tokens, "layer_tokens": layer_tokens,
           "load_before": load_average(), "prompts": {}}
    order = sorted(drafts, key=lambda d: d != "lookup")  # the free draft first, right before the plain run
    bar = tqdm(total=len(prompts_) * len(gammas) * (1 + len(drafts)), desc="speculative sweep",
               disable=not progress, leave=False)
    for name, prompt in prompts_.items():
        rows = {d: [] for d in drafts}
        baselines, prefill, reference = [], [], None
        for g in gammas:
            runs = {}
            for i, d in enumerate(order):
                n = layer_tokens if d == "layers" else new_tokens
                if i == 1:
                    plain = _timed_plain(target, prompt, new_tokens)
                    bar.update()
                runs[d] = speculative_generate(target, drafts[d], prompt, n, g)
                bar.update()
            if len(order) < 2:
                plain = _timed_plain(target, prompt, new_tokens)
                bar.update()
            tokens, wall, steps = plain
            if reference is None:
                reference = tokens
            elif tokens != reference:
                raise RuntimeError("plain greedy decoding is not deterministic: two runs gave different tokens")
            baselines.append(wall)
            prefill.append(steps[0] / float(np.median(steps[1:])) if len(steps) > 1 else float("nan"))
            for d in drafts:
                res = runs[d]
                n = len(res.tokens)
                # the plain run's decoding phase for its first n tokens: steps 1..n-1, scaled to its wall time
                share = sum(steps[1:n]) / max(sum(steps), 1e-12)
                row = summarise(res, reference[:n], wall * share, decode_only=True)
                row["baseline_seconds"] = wall * share
                rows[d].append(row)
        out["prompts"][name] = {"reference": reference, "baseline_all": baselines, "rows": rows,
                                "prompt_tokens": len(prompt), "prefill_steps": float(np.median(prefill))}
    bar.close()
    out["load_after"] = load_average()
    return out


def _timed_plain(target, prompt, new_tokens):
    start = time.perf_counter()
    plain = generate(target, list(prompt), new_tokens)
    return plain.tokens, time.perf_counter() - start, list(plain.step_seconds)


def sweep_table(sweep: dict) -> list[dict]:
    """One row per prompt x draft x gamma: the numbers the notebook prints."""
    rows = []
    for name, block in sweep["prompts"].items():
        for d, results in block["rows"].items():
            for g, r in zip(sweep["gammas"], results):
                keys = ("equal", "acceptance", "tokens_per_call", "tokens_per_verification", "speedup", "calls",
                        "seconds", "draft_seconds", "target_seconds", "baseline_seconds")
                rows.append({"prompt": name, "draft": d, "gamma": g, "new_tokens": len(r["tokens"]),
                             **{k: r[k] for k in keys}})
    return rows


def best_row(sweep: dict, draft: str | None = None) -> dict:
    """The sweep row with the highest measured speed-up (optionally for one draft)."""
    rows = [r for r in sweep_table(sweep) if draft is None or r["draft"] == draft]
    return max(rows, key=lambda r: r["speedup"])


def pooled_acceptance(sweep: dict, draft: str, prompt: str | None = None) -> float:
    """Per-token acceptance of one draft pooled over gammas (and prompts unless one is named)."""
    acc, prop = [], []
    for name, block in sweep["prompts"].items():
        if prompt is not None and name != prompt:
            continue
        for r in block["rows"][draft]:
            acc += r["accepted"]
            prop += r["proposed"]
    return acceptance_from_counts(acc, prop)


def predicted_tokens_per_verification(alpha: float, proposed: Sequence[int], expected=None) -> float:
    """The geometric theory for the calls actually made: mean over calls of E[tokens] at that call's proposal
    length (prompt lookup proposes fewer than gamma tokens, or none, and the last call is cut to the budget).
    ``expected(alpha, gamma)`` defaults to :func:`expected_tokens_per_call`."""
    expected = expected or expected_tokens_per_call
    if not proposed or not math.isfinite(alpha):
        return float("nan")
    return float(np.mean([expected(min(max(alpha, 0.0), 1.0), int(g)) for g in proposed]))


def or_zero(value: float) -> float:
    """``value``, or 0 when it is NaN (an acceptance rate with nothing proposed counts as 0 in the record)."""
    return float(value) if math.isfinite(value) else 0.0


def call_chunks(tokens: Sequence[int], accepted: Sequence[int]) -> list[list[int]]:
    """The new tokens split by target call: the first from the prefill, then accepted + 1 per call."""
    chunks, i = [list(tokens[:1])], 1
    for n in accepted:
        chunks.append(list(tokens[i:i + n + 1]))
        i += n + 1
    return [c for c in chunks if c]


def show_chunks(tokenizer, tokens: Sequence[int], accepted: Sequence[int], limit: int = 400) -> str:
    """The generated text with each target call's output in brackets: [accepted draft tokens + 1 target token]."""
    text = "".join("[" + tokenizer.decode(c) + "]" for c in call_chunks(tokens, accepted))
    return text if len(text) <= limit else text[:limit] + " ..."


# ----------------------------------------------------------------------------- sampled run on the model


def sampled_runs(target, drafts: dict, prompts_: dict, new_tokens: int, gamma: int, temperature: float,
                 seed: int = 0, pairs: Sequence[tuple[str, str]] = (("verse", "layers"), ("copy", "lookup"))) -> dict:
    """Speculative SAMPLING (temperature > 0) on the model for the (prompt, draft) ``pairs``: acceptance and tokens
    per call (the output is a sample of the target's distribution; there is nothing to compare token for token)."""
    out = {}
    for name, d in pairs:
        prompt, draft = prompts_[name], drafts[d]
        r = speculative_generate(target, draft, prompt, new_tokens, gamma, temperature=temperature, seed=seed)
        out[f"{name}/{d}"] = {"acceptance": r.acceptance_rate, "tokens_per_call": r.tokens_per_call,
                              "tokens": list(r.tokens), "accepted": list(r.accepted)}
    return out


# ----------------------------------------------------------------------------- figures

COLORS = {"layers": "tab:blue", "lookup": "tab:orange"}
STYLES = {"verse": "-", "copy": "--"}


def draw_one_step(fig, *, study: dict) -> None:
    """The target p, the draft q and the empirical laws of the first emitted token (correct and buggy)."""
    ax1, ax2 = fig.subplots(1, 2)
    p, q = study["p"].numpy(), study["q"].numpy()
    n = {"correct": study["draws"], "buggy": study.get("buggy_draws", study["draws"])}
    x = np.arange(len(p))
    w = 0.2
    ax1.bar(x - 1.5 * w, p, w, label="target p", color="black")
    ax1.bar(x - 0.5 * w, q, w, label="draft q", color="0.7")
    ax1.bar(x + 0.5 * w, study["correct"]["counts"].numpy() / n["correct"], w,
            label=f"speculative (correct), {n['correct']:,} draws", color="tab:green")
    ax1.bar(x + 1.5 * w, study["buggy"]["counts"].numpy() / n["buggy"], w,
            label=f"bug: resample from p, {n['buggy']:,} draws", color="tab:red")
    ax1.set_xticks(x)
    ax1.legend(fontsize=8)
    label(ax1, "token", "probability", "First emitted token")
    for key, color in (("correct", "tab:green"), ("buggy", "tab:red")):
        se = np.sqrt(p * (1 - p) / n[key])
        z = (study[key]["counts"].numpy() / n[key] - p) / se
        ax2.plot(x, z, marker="o", color=color, label=f"{key}: chi2 p-value {study[key]['pvalue']:.2g}")
    ax2.axhspan(-3, 3, color="0.9", label="|z| < 3")
    ax2.set_xticks(x)
    ax2.set_yscale("symlog", linthresh=3)
    ax2.legend(fontsize=8)
    label(ax2, "token", "(empirical - p) / standard error", "Deviation from the target, in standard errors")


def draw_sequences(fig, *, study: dict) -> None:
    """TV distance and chi-square p-value of the joint law of whole generated sequences, per sampler."""
    ax1, ax2 = fig.subplots(1, 2)
    names = list(study["tests"])
    colors = {"plain": "0.5", "speculative": "tab:green", "buggy": "tab:red"}
    tv = [study["tests"][k]["tv"] for k in names]
    bars = ax1.bar(names, tv, color=[colors[k] for k in names])
    for b, v in zip(bars, tv):
        ax1.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    label(ax1, "sampler", "TV to the exact joint law",
          f"{study['draws']:,} sequences of {study['length']} tokens (V = {study['P'].shape[0]})")
    pv = [max(study["tests"][k]["pvalue"], 1e-300) for k in names]
    ax2.bar(names, pv, color=[colors[k] for k in names])
    ax2.set_yscale("log")
    ax2.axhline(1e-3, color="black", ls="--", lw=0.8, label="0.001")
    ax2.legend(fontsize=8)
    label(ax2, "sampler", "chi-square p-value (log)", "Test against the exact joint law")


def draw_theory(fig, *, alphas: Sequence[float] = (0.3, 0.5, 0.7, 0.8, 0.9), gammas: Sequence[int] = range(0, 11),
                cost_ratios: Sequence[float] = (0.0, 0.05, 0.2, 0.5), alpha_for_speedup: float = 0.8) -> None:
    """Expected tokens per target call against gamma for a few alpha; expected speed-up for a few c."""
    ax1, ax2 = fig.subplots(1, 2)
    gs = list(gammas)
    for a in alphas:
        ax1.plot(gs, [expected_tokens_per_call(a, g) for g in gs], marker=".", label=f"alpha = {a:g}")
    ax1.plot(gs, [g + 1 for g in gs], color="0.6", ls=":", label="gamma + 1 (alpha = 1)")
    ax1.legend(fontsize=8)
    label(ax1, "draft length gamma", "expected tokens per target call", "(1 - a^(g+1)) / (1 - a)")
    for c in cost_ratios:
        ax2.plot(gs, [expected_speedup(alpha_for_speedup, g, c) for g in gs], marker=".", label=f"c = {c:g}")
    ax2.axhline(1, color="black", lw=0.8)
    ax2.legend(fontsize=8)
    label(ax2, "draft length gamma", "expected speed-up",
          f"alpha = {alpha_for_speedup:g}: E[tokens] / (gamma c + 1)")


def draw_draft_quality(fig, *, quality: dict, costs: dict, theory_ideal: dict, theory_cpu: dict,
                       chosen: int) -> None:
    """Acceptance of the k-layer draft against k, its cost ratio, and the speed-up the theory predicts."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(quality["k"], quality["greedy"], marker="o", label="greedy agreement (temperature 0)")
    ax1.plot(quality["k"], quality["alpha"], marker="s", label="sum min(p, q) (temperature 1)")
    ax1.axvline(chosen, color="0.5", ls=":", label=f"k = {chosen}")
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=8)
    label(ax1, "draft depth k (layers kept)", "acceptance rate alpha", f"Early-exit draft, {quality['tokens']} tokens")
    ax2.plot(costs["k"], costs["cost_ratio"], marker="o", color="tab:purple", label="measured c(k)")
    n = costs["n_layers"]
    ax2.plot([0, n], [0, 1], color="0.6", ls=":", label="k / depth (no LM head)")
    ax2.axvline(chosen, color="0.5", ls=":")
    ax2.legend(fontsize=8)
    label(ax2, "draft depth k", "cost ratio c = draft step / target step", "What a draft step costs")
    ax3.plot(theory_ideal["k"], theory_ideal["speedup"], marker="o", color="tab:green",
             label="r = 1 (verification as cheap as one step)")
    ax3.plot(theory_cpu["k"], theory_cpu["speedup"], marker="s", color="tab:red", label="measured r(gamma + 1)")
    ax3.axhline(1, color="black", lw=0.8)
    ax3.axvline(chosen, color="0.5", ls=":")
    ax3.legend(fontsize=8)
    label(ax3, "draft depth k", "predicted speed-up (best gamma)", "Theory with the measured alpha and c")


def draw_verify_cost(fig, *, costs: dict) -> None:
    """r(T): a T-token target call in units of a 1-token call, against the ideal (1) and the linear (T) cost."""
    ax = fig.subplots()
    ts = costs["verify_t"]
    ax.plot(ts, costs["verify_ratio"], marker="o", label="measured on this device")
    ax.plot(ts, [1] * len(ts), color="tab:green", ls="--", label="memory-bound ideal: 1")
    ax.plot(ts, ts, color="0.6", ls=":", label="compute-bound worst case: T")
    ax.legend(fontsize=8)
    label(ax, "tokens T in one target call (gamma + 1)", "time / time of a 1-token call",
          f"Cost of a verification call (load {costs['load']:.1f})")


def predicted_speedup(row: dict, costs: dict, cost_ratio: float) -> float:
    """Decoding-phase speed-up predicted for one sweep run from the calls it made and the measured costs:
    plain decoding takes one step per token after the first; speculative decoding pays, per verification
    call proposing g tokens, r(g + 1) steps for the target and g c for the draft (c = 0: no model call)."""
    proposed = row["proposed"]
    if not proposed:
        return float("nan")
    cost = sum(verify_ratio(costs, int(g)) + int(g) * cost_ratio for g in proposed)
    return (len(row["tokens"]) - 1) / cost


def draw_sweep(fig, *, sweep: dict, costs: dict | None = None, cost_ratio: float = 0.0) -> None:
    """Measured acceptance, tokens per verification call (thick: the geometric theory at the measured
    acceptance) and speed-up (thick: predicted from tokens per call and the measured costs) against gamma."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    gammas = sweep["gammas"]
    for name, block in sweep["prompts"].items():
        for d, rows in block["rows"].items():
            style = dict(color=COLORS[d], ls=STYLES[name])
            ax1.plot(gammas, [r["acceptance"] for r in rows], marker="o", label=f"{d}, {name}", **style)
            ax2.plot(gammas, [r["tokens_per_verification"] for r in rows], marker="o", label=f"{d}, {name}", **style)
            a = pooled_acceptance(sweep, d, name)
            if math.isfinite(a):
                ax2.plot(gammas, [predicted_tokens_per_verification(a, r["proposed"]) for r in rows],
                         color=COLORS[d], ls=STYLES[name], alpha=0.35, lw=3)
            ax3.plot(gammas, [r["speedup"] for r in rows], marker="o", label=f"{d}, {name}", **style)
            if costs is not None:
                c = cost_ratio if d == "layers" else 0.0
                ax3.plot(gammas, [predicted_speedup(r, costs, c) for r in rows],
                         color=COLORS[d], ls=STYLES[name], alpha=0.35, lw=3)
    ax1.set_ylim(0, 1.05)
    ax1.legend(fontsize=7)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(gammas)
    label(ax1, "draft length gamma", "acceptance rate (per checked token)", "Acceptance")
    label(ax2, "draft length gamma", "new tokens per verification call", "Tokens per call (thick: theory)")
    ax3.axhline(1, color="black", lw=0.8)
    label(ax3, "draft length gamma", "speed-up vs plain cached decoding",
          f"Wall clock (thick: predicted), load {sweep['load_before']:.1f}-{sweep['load_after']:.1f}")


def accepted_law(alpha: float, proposed: Sequence[int], gamma: int) -> np.ndarray:
    """Law of the number of accepted drafts per call under i.i.d. acceptance ``alpha``, averaged over the calls
    actually made (a call proposing g tokens accepts n < g with prob. (1 - a) a^n and all g with prob. a^g)."""
    a = alpha if math.isfinite(alpha) else 0.0
    law = np.zeros(gamma + 1)
    for g in proposed:
        g = int(g)
        law[:g] += [(1 - a) * a ** n for n in range(g)]
        law[g] += a ** g
    return law / max(len(proposed), 1)


def draw_explore(fig, *, sweep: dict, gamma: int, draft: str) -> None:
    """Explorer frame for one (gamma, draft): accepted tokens per call against the geometric law, and where
    this point sits on the tokens-per-call and speed-up curves of both prompts."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    gi = sweep["gammas"].index(gamma)
    width = 0.4
    for j, (name, block) in enumerate(sweep["prompts"].items()):
        r = block["rows"][draft][gi]
        counts = np.bincount(np.asarray(r["accepted"], dtype=int), minlength=gamma + 1)[:gamma + 1]
        total = max(counts.sum(), 1)
        law = accepted_law(r["acceptance"], r["proposed"], gamma)
        xs = np.arange(gamma + 1) + (j - 0.5) * width
        ax1.bar(xs, counts / total, width, color=COLORS[draft], alpha=0.5 + 0.4 * j,
                label=f"{name}: measured ({len(r['accepted'])} calls)")
        ax1.plot(xs, law, "k.", ms=8)
    ax1.plot([], [], "k.", label="geometric law at the measured alpha")
    ax1.set_xticks(range(gamma + 1))
    ax1.legend(fontsize=7)
    label(ax1, "draft tokens accepted in a call", "fraction of calls", f"{draft} draft, gamma = {gamma}")
    for name, block in sweep["prompts"].items():
        for d, rows in block["rows"].items():
            faint = d != draft
            style = dict(color=COLORS[d], ls=STYLES[name], alpha=0.25 if faint else 1.0)
            ax2.plot(sweep["gammas"], [x["tokens_per_call"] for x in rows], marker=".", label=f"{d}, {name}", **style)
            ax3.plot(sweep["gammas"], [x["speedup"] for x in rows], marker=".", label=f"{d}, {name}", **style)
        r = block["rows"][draft][gi]
        ax2.plot([gamma], [r["tokens_per_call"]], "o", ms=11, mfc="none", color="black")
        ax3.plot([gamma], [r["speedup"]], "o", ms=11, mfc="none", color="black")
        ax3.annotate(f"{r['speedup']:.2f}x", (gamma, r["speedup"]), textcoords="offset points", xytext=(8, 4),
                     fontsize=8)
        ax2.annotate(f"{r['tokens_per_call']:.2f}", (gamma, r["tokens_per_call"]), textcoords="offset points",
                     xytext=(8, 4), fontsize=8)
    ax2.legend(fontsize=7)
    ax2.set_xticks(sweep["gammas"])
    ax3.set_xticks(sweep["gammas"])
    label(ax2, "draft length gamma", "new tokens per target call", "Hardware-independent gain")
    ax3.axhline(1, color="black", lw=0.8)
    label(ax3, "draft length gamma", "speed-up vs plain decoding", "Wall-clock gain on this device")


# ----------------------------------------------------------------------------- exercises


def residual_reference(p, q):
    """norm(max(0, p - q))."""
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    return residual_distribution(p, q)


def _pq_cases():
    g = torch.Generator().manual_seed(5)
    cases = [(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)),
             (torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64), torch.tensor([0.7, 0.1, 0.2], dtype=torch.float64))]
    for v in (5, 12):
        cases.append(tuple(torch.softmax(torch.randn(v, generator=g, dtype=torch.float64), 0) for _ in range(2)))
    return cases


def check_exercise_residual(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("residual distribution", attempt, residual_reference, _pq_cases(),
                          hint="subtract, clamp the negative entries to 0 (torch.clamp_min), divide by the sum.",
                          ctx=ctx)


def _tokens_cases():
    return [(0.8, 3), (0.6, 3), (0.9, 5), (0.0, 4), (0.5, 0), (0.999, 10)]


def check_exercise_tokens(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("expected tokens per target call", attempt, expected_tokens_per_call, _tokens_cases(),
                          hint="token i + 1 of the call is emitted iff the first i drafts were accepted "
                               "(probability a^i), for i = 0..gamma: sum a^i, a geometric series.", ctx=ctx)


def acceptance_reference(p, q) -> float:
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    return float(acceptance_probability(p, q))


def check_exercise_acceptance(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("acceptance probability", attempt, acceptance_reference, _pq_cases(),
                          hint="sum over x of q(x) min(1, p(x) / q(x)) = sum over x of min(p(x), q(x)).", ctx=ctx)


# ----------------------------------------------------------------------------- GPU (optional)


def gpu_timing(model: str, prompts_: dict, draft_layers: int, ngram: int, new_tokens: int,
               gammas: Sequence[int], repeats: int = 3) -> dict:
    """On a CUDA device: plain cached greedy decoding against speculative decoding (both drafts, every prompt
    and gamma), fastest of ``repeats`` with synchronisation; speed-up, tokens per call and equality."""
    if not torch.cuda.is_available():
        raise RuntimeError("gpu_timing needs a CUDA device")
    from lionsnb.lm import load_causal_lm

    hf, _ = load_causal_lm(None if model == "smollm2" else model, device="cuda", progress=False)
    target = LlamaRunner(hf)
    drafts = {"layers": ModelDraft(LlamaRunner(hf, n_layers=draft_layers)),
              "lookup": PromptLookupDraft(ngram, min(2, ngram))}

    def timed(fn):
        best, out = math.inf, None
        for _ in range(repeats):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best, out

    rows = []
    for name, prompt in prompts_.items():
        base, plain = timed(lambda prompt=prompt: generate(target, prompt, new_tokens))
        for d, draft in drafts.items():
            for g in gammas:
                seconds, res = timed(lambda draft=draft, prompt=prompt, g=g:
                                     speculative_generate(target, draft, prompt, new_tokens, g))
                rows.append({"prompt": name, "draft": d, "gamma": g, "speedup": base / seconds,
                             "tokens_per_call": res.tokens_per_call, "equal": res.tokens == plain.tokens})
    return {"device": torch.cuda.get_device_name(0), "rows": rows}
