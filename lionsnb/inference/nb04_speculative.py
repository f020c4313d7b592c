"""Backs ``notebooks/inference/04_speculative.ipynb``: speculative decoding.

Leviathan, Kalman, Matias, "Fast Inference from Transformers via Speculative Decoding", ICML 2023
(arXiv 2211.17192), Algorithm 1; Chen et al., "Accelerating Large Language Model Decoding with Speculative
Sampling" (arXiv 2302.01318). The technique lives in the core module :mod:`lionsnb.inference.speculative`; this
module holds the notebook's experiments on SmolLM2-135M-Instruct (offline) and Shakespeare:

* exactness of the one-step sampler (chi-square against p, the classic bug fails) and of whole sequences
  (bigram models with exact joint laws);
* how good an early-exit self-draft (the target's first k layers, its own final norm and LM head) is, per k:
  greedy agreement and acceptance sum_x min(p, q), teacher-forced on held-out text, and its cost ratio c(k);
* what one target call costs for 1..gamma+1 tokens on this device (the hidden assumption of the theory);
* greedy speculative decoding over a gamma x draft sweep on two prompts (a verse continuation and a copy
  task): identical output, acceptance, tokens per call, wall-clock speed-up against plain cached decoding
  measured in the same run.

One metric name throughout: **tokens per call** is the number of new tokens per verification call of the target
(the first token, which the prefill emits as in plain decoding, is not counted), the quantity the geometric theory
predicts (:func:`lionsnb.inference.speculative.expected_tokens_per_call`); plain decoding has 1. The computations
the notebook caches take the model's name and load it with :func:`lionsnb.inference.llama.load_model`.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show, show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.inference.corpus import passage_ids
from lionsnb.inference.llama import LlamaRunner, generate, load_model
from lionsnb.inference.speculative import (
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
    noisy_bigram,
    one_step_draws,
    random_bigram,
    residual_distribution,
    speculative_accept,
    speculative_generate,
    total_variation,
    verse_prompt,
)
from lionsnb.lm import model_knob
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.runtime import load_average
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="inference.nb04_speculative",
    title="Inference 4: speculative decoding",
    profiles={
        # new_tokens: tokens generated per run of the sweep, enough for the answer to copy the passage and leave
        # it, so that acceptance and tokens per call are set by the text, not by the budget (layer_tokens for the
        # slow layer draft, timed against the first layer_tokens steps of the same plain run); gammas: draft
        # lengths swept; eval_tokens: held-out tokens for the teacher-forced draft quality; ks: draft depths
        # evaluated; cost_repeats: repeats of each timed forward (median); verify_ts: token counts of the timed
        # target calls; chi_draws: one-step draws per sampler; seq_draws / seq_len / seq_vocab: the bigram
        # sequence test; sample_tokens: tokens of the sampled runs on the model
        "smoke": dict(new_tokens=24, layer_tokens=8, gammas=(1, 3), eval_tokens=64, ks=(2, 8, 16, 24),
                      cost_repeats=3, verify_ts=(1, 2, 4), chi_draws=40_000, seq_draws=1000, seq_len=4, seq_vocab=4,
                      sample_tokens=8),
        "teach": dict(new_tokens=96, layer_tokens=32, gammas=(1, 2, 4, 6, 8), eval_tokens=128,
                      ks=(2, 4, 8, 12, 16, 20, 24, 28), cost_repeats=4, verify_ts=(1, 2, 3, 5, 7, 9),
                      chi_draws=100_000, seq_draws=3000, seq_len=4, seq_vocab=4, sample_tokens=48),
        "full": dict(new_tokens=256, layer_tokens=96, gammas=(1, 2, 3, 4, 5, 6, 8), eval_tokens=1024,
                     ks=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28), cost_repeats=15,
                     verify_ts=(1, 2, 3, 4, 5, 6, 7, 9), chi_draws=400_000, seq_draws=40_000, seq_len=4, seq_vocab=4,
                     sample_tokens=128),
    },
    knobs={
        "model": model_knob("the target model of speculative decoding (a Llama-style causal LM)"),
        "draft_layers": Knob(8, "k, the layers kept by the early-exit self-draft (1 to the target depth minus 1)",
                             int, low=1, high=63),
        "ngram": Knob(3, "longest n-gram the prompt-lookup draft matches (1 to 6)", int, low=1, high=6),
        "gamma": Knob(4, "draft length the explorer starts at (the nearest swept value)", int, low=1, high=8),
        "draft": Knob("lookup", "draft the explorer starts at: layers or lookup", str, choices=("layers", "lookup")),
        "temperature": Knob(1.0, "temperature of the sampled run on the real model (> 0)", float, low=0.0,
                            low_open=True, high=2.0),
    },
)
setup = setup_for(SPEC)

DRAFTS = ("layers", "lookup")
PROMPTS = ("verse", "copy")

#: model answers of the exercises without code (for teachers; `lionsnb answers inference_speculative` prints them)
MODEL_ANSWERS = {
    4: "NGRAM = 1 lets prompt lookup match a single token, so it proposes in many more calls (at gamma = 4 on the "
       "copy prompt in 28 of 39 verification calls instead of 12 of 35), but most one-token matches are followed "
       "by something else: the acceptance drops (copy 0.86 to 0.55, verse 0.78 to 0.61). Tokens per call change "
       "little (copy 1.9 to 1.7, verse 1.5 to 1.6), while every extra proposal lengthens its verification call "
       "(r(gamma + 1) > 1 on a CPU), so the speed-up does not improve. The term: alpha in the numerator "
       "(1 - alpha^(gamma+1)) / (1 - alpha), and r in the denominator. DRAFT_LAYERS = 24 makes the early exit agree "
       "with the target more often (greedy agreement about 0.2 instead of 0.05 at k = 8, see the draft-quality "
       "table), but each draft step now costs most of a target step (c about 0.8 with the LM head): at gamma = 1 "
       "the expected tokens per call 1 + alpha = 1.2 are bought for gamma c + r(2) = about 2 decode steps, so the "
       "layer draft still slows decoding down. The term: c in the denominator gamma c + r(gamma + 1).",
}


def load_models(model: str = "smollm2", draft_layers: int = 8, ngram: int = 3):
    """(hf model, tokenizer, target runner, {"layers": ModelDraft, "lookup": PromptLookupDraft})."""
    hf, tokenizer, target = load_model(model)
    if not 1 <= draft_layers < target.n_layers:
        raise ValueError(f"DRAFT_LAYERS = {draft_layers}: the target has {target.n_layers} layers; use 1 to "
                         f"{target.n_layers - 1}")
    drafts = {"layers": ModelDraft(LlamaRunner(hf, n_layers=draft_layers)),
              "lookup": PromptLookupDraft(ngram, min(2, ngram))}
    return hf, tokenizer, target, drafts


def prompts(tokenizer) -> dict[str, list[int]]:
    """The two prompts: ``verse`` (continue a Hamlet soliloquy) and ``copy`` (repeat a passage, chat format)."""
    return {"verse": verse_prompt(tokenizer), "copy": copy_prompt(tokenizer)}


def models_table(hf, target: LlamaRunner, drafts: dict, prompts_: dict, tokenizer) -> object:
    """The target, the drafts and the end of each prompt."""
    cfg = hf.config
    rows = [{"what": "target", "is": f"{target.n_layers} layers, {cfg.num_attention_heads} query heads, "
                                     f"{cfg.num_key_value_heads} KV heads, hidden {cfg.hidden_size}, vocabulary "
                                     f"{cfg.vocab_size}, {sum(p.numel() for p in hf.parameters()) / 1e6:.0f}M "
                                     "parameters"}]
    rows += [{"what": f"draft {key!r}", "is": d.name} for key, d in drafts.items()]
    rows += [{"what": f"prompt {name!r} ({len(ids)} tokens), its end", "is": tokenizer.decode(ids)[-230:]}
             for name, ids in prompts_.items()]
    return table(rows, title="The models and the prompts")


# ----------------------------------------------------------------------------- tables

def theory_table(cases: Sequence[tuple[float, int]] = ((0.6, 3), (0.8, 3), (0.8, 5), (0.9, 5)),
                 cost_ratios: Sequence[float] = (0.05, 0.3)) -> object:
    """Expected tokens per call and speed-up (with r = 1) for a few acceptance rates, draft lengths and costs."""
    return table([{"alpha": a, "gamma": g, "tokens per call": expected_tokens_per_call(a, g),
                   **{f"speed-up, c = {c:g}": expected_speedup(a, g, c) for c in cost_ratios}} for a, g in cases],
                 title="The geometric theory (Leviathan et al., Section 3)")


def pq_table(p: torch.Tensor, q: torch.Tensor) -> object:
    """The example p, q, the residual and the identity min(p, q) + (1 - beta) residual = p."""
    residual = residual_distribution(p, q)
    beta = float(acceptance_probability(p, q))
    rows = [{"distribution": name, **{f"token {i}": float(v) for i, v in enumerate(vec)}}
            for name, vec in (("target p", p), ("draft q", q), ("residual norm(max(0, p - q))", residual))]
    identity = float((torch.minimum(p, q) + (1 - beta) * residual - p).abs().max())
    return table(rows, digits=3, title=f"beta = sum min(p, q) = {beta:.4f} = 1 - TV(p, q); "
                                       f"max |min(p, q) + (1 - beta) residual - p| = {identity:.1e}")


def one_step_table(study: dict, p: torch.Tensor) -> object:
    """Chi-square test and TV distance of the first emitted token, correct and buggy sampler."""
    buggy_tv = 0.5 * float((study["buggy_law"] - p).abs().sum())
    rows = [{"sampler": "correct (residual)", "draws": study["draws"]},
            {"sampler": "bug: resample from p", "draws": study.get("buggy_draws", study["draws"])}]
    for row, key in zip(rows, ("correct", "buggy")):
        r = study[key]
        row.update({"chi2": r["chi2"], "df": r["df"], "p-value": r["pvalue"], "TV to p": r["tv"],
                    "first draft accepted": r["acceptance"]})
    return table(rows, title=f"First emitted token against p: theory says acceptance {study['acceptance_theory']:.4f}, "
                             f"TV(buggy law, p) = {buggy_tv:.4f}")


def sequence_table(seq: dict, vocab: int) -> object:
    """TV and chi-square p-value of whole generated sequences against the exact joint law, per sampler."""
    return table([{"sampler": name, "TV to the exact law": t["tv"], "chi2 p-value": t["pvalue"]}
                  for name, t in seq["tests"].items()],
                 title=f"{seq['draws']:,} sequences of {seq['length']} tokens, V = {vocab} ({vocab ** seq['length']} "
                       f"bins); draft acceptance {seq['acceptance_bigram']:.3f}, {seq['tokens_per_call']:.2f} tokens "
                       "per call")


def quality_table(quality: dict, costs: dict, chosen: int) -> object:
    """Per draft depth k: greedy agreement, sum min(p, q) and the cost ratio c(k)."""
    return table([{"k": k, "greedy agreement": a, "sum min(p, q), T = 1": b, "cost ratio c(k)": c,
                   "": "<- DRAFT_LAYERS" if k == chosen else ""}
                  for k, a, b, c in zip(quality["k"], quality["greedy"], quality["alpha"], costs["cost_ratio"])],
                 title=f"The early-exit draft, teacher-forced on {quality['tokens']} tokens; one target decode step "
                       f"{1e3 * costs['target']:.1f} ms (load average {costs['load']:.1f}; only ratios matter)")


def verify_table(costs: dict) -> object:
    """r(T): a T-token target call in decode steps."""
    return table([{"tokens T in one call": t, "ms": 1e3 * v, "decode steps r(T)": r}
                  for t, v, r in zip(costs["verify_t"], costs["verify"], costs["verify_ratio"])],
                 title="What a verification call costs on this device")


def sampled_table(sampled: dict, alpha_teacher_forced: float, draft_layers: int) -> object:
    """Acceptance and tokens per call of speculative sampling on the model."""
    rows = [{"prompt / draft": key, "acceptance": r["acceptance"], "tokens per call": r["tokens_per_call"]}
            for key, r in sampled.items()]
    return table(rows, title=f"Speculative sampling; teacher-forced sum min(p, q) of the {draft_layers}-layer draft "
                             f"at temperature 1: {alpha_teacher_forced:.3f}")


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
    calls = {"speculative": 0, "buggy": 0}  # verification calls (the prefill is not one)
    for i in progress_bar(range(draws), desc="bigram sequences", unit="draw", disable=not progress):
        seq = generate_plain_bigram(P, 0, length, torch.Generator().manual_seed(10**6 * (seed + 1) + i))
        counts["plain"][int((torch.tensor(seq) * weights).sum())] += 1
        for name in ("speculative", "buggy"):
            out = speculative_generate(target, draft, [0], length, gamma, temperature=1.0,
                                       seed=2 * i + (name == "buggy") + 10**7 * (seed + 1), buggy=name == "buggy")
            counts[name][int((torch.tensor(out.tokens) * weights).sum())] += 1
            calls[name] += len(out.accepted)
    tests = {name: {**chi_square_test(c, exact), "tv": total_variation(c, exact)} for name, c in counts.items()}
    return {"P": P, "Q": Q, "exact": exact, "counts": counts, "tests": tests, "gamma": gamma, "length": length,
            "draws": draws, "tokens_per_call": draws * (length - 1) / max(calls["speculative"], 1),
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
    return passage_ids(tokenizer, n, "hamlet", "What a piece of work is a man")


def measure_draft_quality(model: str, ids: Sequence[int], ks: Sequence[int]) -> dict:
    """:func:`draft_quality` on the model named ``model``."""
    return draft_quality(load_model(model)[0], ids, ks)


def measure_step_costs(model: str, prompt: Sequence[int], ks: Sequence[int], verify_ts: Sequence[int],
                       repeats: int) -> dict:
    """:func:`step_costs` on the model named ``model``."""
    return step_costs(load_model(model)[0], prompt, ks, verify_ts, repeats)


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
    for k in progress_bar(list(ks), desc="draft depths", unit="depth", disable=not progress):
        logits = LlamaRunner(hf_model, n_layers=k)(x)[0].float()
        q = torch.softmax(logits / temperature, -1)
        out["k"].append(int(k))
        out["greedy"].append(float((logits.argmax(-1) == best).double().mean()))
        out["alpha"].append(float(acceptance_probability(p, q).mean()))
    out["n_layers"] = len(hf_model.model.layers)
    out["tokens"] = len(ids)
    return out


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

    for _ in progress_bar(range(repeats), desc="timing forward calls", unit="round", disable=not progress):
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
            "target": one_step, "n_layers": target.n_layers, "load": load_average().one}


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


def summarise(result: SpeculativeResult, reference: Sequence[int], baseline_seconds: float,
              decode_only: bool = False) -> dict:
    """Plain numbers of one speculative run, compared with the plain greedy tokens and time
    (``decode_only``: ``baseline_seconds`` leaves the prefill out, and so does the speculative time)."""
    seconds = result.seconds - (result.prefill_seconds if decode_only else 0.0)
    return {"equal": list(result.tokens) == list(reference), "tokens_per_call": result.tokens_per_call,
            "acceptance": result.acceptance_rate,
            "calls": result.target_calls, "proposing_calls": sum(1 for g in result.proposed if g > 0),
            "seconds": seconds, "draft_seconds": result.draft_seconds,
            "target_seconds": result.target_seconds, "speedup": baseline_seconds / seconds,
            "accepted": list(result.accepted), "proposed": list(result.proposed), "tokens": list(result.tokens)}


def run_sweep(model: str, draft_layers: int, ngram: int, prompt_ids: dict, new_tokens: int, gammas: Sequence[int],
              layer_tokens: int, stop_at_eos: bool = True) -> dict:
    """:func:`decoding_sweep` with the model named ``model``, its two drafts (``draft_layers``, ``ngram``) and the
    prompts ``{name: token ids}``; every run ends at the tokenizer's end-of-sequence token when ``stop_at_eos``."""
    _, tokenizer, target, drafts = load_models(model, draft_layers, ngram)
    eos = tokenizer.eos_token_id if stop_at_eos else None
    return decoding_sweep(target, drafts, prompt_ids, new_tokens, gammas, layer_tokens, eos_id=eos)


def decoding_sweep(target, drafts: dict, prompts_: dict, new_tokens: int, gammas: Sequence[int],
                   layer_tokens: int | None = None, progress: bool = True, eos_id: int | None = None) -> dict:
    """Greedy speculative decoding for every prompt x gamma x draft, each timed against plain cached decoding
    (``generate``) of the same prompt run next to it.

    One round per (prompt, gamma): prompt lookup, plain decoding, the layer draft (other drafts after the plain
    run too). Pairing each run with the plain run next to it in time keeps slow drifts of the load on a shared
    machine out of the ratio. Speed-ups compare the DECODING phase: the prompt's prefill, identical in both
    (one target call that emits the first token), is left out; with a few dozen new tokens it would otherwise
    dominate the times. The layer draft (slow: every call runs gamma draft steps) generates ``layer_tokens``
    tokens and is compared with the time the same plain run took for its first ``layer_tokens`` tokens, read
    from its per-step times. With ``eos_id`` every run (plain and speculative) ends after that token, as a chat
    answer does; ``new_tokens`` is then a cap.
    """
    layer_tokens = new_tokens if layer_tokens is None else min(layer_tokens, new_tokens)
    out = {"gammas": list(gammas), "new_tokens": new_tokens, "layer_tokens": layer_tokens, "eos_id": eos_id,
           "load_before": load_average().one, "prompts": {}}
    order = sorted(drafts, key=lambda d: d != "lookup")  # the free draft first, right before the plain run
    bar = progress_bar(total=len(prompts_) * len(gammas) * (1 + len(drafts)), desc="speculative sweep",
                       unit="run", disable=not progress)
    for name, prompt in prompts_.items():
        rows = {d: [] for d in drafts}
        baselines, prefill, reference = [], [], None
        for g in gammas:
            runs = {}
            for i, d in enumerate(order):
                n = layer_tokens if d == "layers" else new_tokens
                if i == 1:
                    plain = _timed_plain(target, prompt, new_tokens, eos_id)
                    bar.update()
                runs[d] = speculative_generate(target, drafts[d], prompt, n, g, eos_id=eos_id)
                bar.update()
            if len(order) < 2:
                plain = _timed_plain(target, prompt, new_tokens, eos_id)
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
    out["load_after"] = load_average().one
    return out


def _timed_plain(target, prompt, new_tokens, eos_id=None):
    start = time.perf_counter()
    plain = generate(target, list(prompt), new_tokens, eos_id=eos_id)
    return plain.tokens, time.perf_counter() - start, list(plain.step_seconds)


def sweep_rows(sweep: dict) -> list[dict]:
    """One row per prompt x draft x gamma: the numbers of one speculative run."""
    rows = []
    for name, block in sweep["prompts"].items():
        for d, results in block["rows"].items():
            for g, r in zip(sweep["gammas"], results):
                keys = ("equal", "acceptance", "tokens_per_call", "speedup", "calls", "proposing_calls", "seconds",
                        "draft_seconds", "target_seconds", "baseline_seconds")
                row = {"prompt": name, "draft": d, "gamma": g, "new_tokens": len(r["tokens"]),
                       **{k: r.get(k) for k in keys}}
                if row["proposing_calls"] is None:
                    row["proposing_calls"] = sum(1 for p in r["proposed"] if p > 0)
                rows.append(row)
    return rows


def best_row(sweep: dict, draft: str | None = None) -> dict:
    """The sweep row with the highest measured speed-up (optionally for one draft)."""
    rows = [r for r in sweep_rows(sweep) if draft is None or r["draft"] == draft]
    return max(rows, key=lambda r: r["speedup"])


def pooled_acceptance(sweep: dict, draft: str, prompt: str | None = None) -> float:
    """Per-token acceptance of one draft pooled over gammas (and prompts unless one is named); NaN when nothing was
    proposed."""
    acc, prop = [], []
    for name, block in sweep["prompts"].items():
        if prompt is not None and name != prompt:
            continue
        for r in block["rows"][draft]:
            acc += r["accepted"]
            prop += r["proposed"]
    return acceptance_from_counts(acc, prop)


def sweep_table(sweep: dict) -> object:
    """The sweep as one table: per prompt, draft and gamma, equality, acceptance, tokens per call, speed-up."""
    return table([{"prompt": r["prompt"], "draft": r["draft"], "gamma": r["gamma"], "new tokens": r["new_tokens"],
                   "same as plain": r["equal"], "acceptance": r["acceptance"], "tokens per call": r["tokens_per_call"],
                   "verification calls": r["calls"] - 1, "... with a proposal": r.get("proposing_calls"),
                   "speed-up": r["speedup"]} for r in sweep_rows(sweep)],
                 title=f"At most {sweep['new_tokens']} new tokens per run ({sweep['layer_tokens']} for the layer draft)"
                       f"{', up to the end of the answer' if sweep.get('eos_id') is not None else ''}; load average "
                       f"{sweep['load_before']:.1f} before, {sweep['load_after']:.1f} after")


def baseline_table(sweep: dict) -> object:
    """Plain decoding of each prompt, one run per round, and the cost of its prefill."""
    return table([{"prompt": name, "prompt tokens": block["prompt_tokens"],
                   "plain decoding, seconds per round": [round(float(x), 2) for x in block["baseline_all"]],
                   "prefill, in decode steps": block["prefill_steps"]} for name, block in sweep["prompts"].items()],
                 title="The plain runs each speculative run is compared with")


def predicted_tokens_per_call(alpha: float, proposed: Sequence[int], expected=None) -> float:
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


def run_sampled(model: str, draft_layers: int, ngram: int, prompt_ids: dict, new_tokens: int, gamma: int,
                temperature: float, seed: int = 0, stop_at_eos: bool = True) -> dict:
    """:func:`sampled_runs` with the model named ``model``, its two drafts and the prompts ``{name: token ids}``,
    ending at the end-of-sequence token when ``stop_at_eos``."""
    _, tokenizer, target, drafts = load_models(model, draft_layers, ngram)
    eos = tokenizer.eos_token_id if stop_at_eos else None
    return sampled_runs(target, drafts, prompt_ids, new_tokens, gamma, temperature, seed, eos_id=eos)


def sampled_runs(target, drafts: dict, prompts_: dict, new_tokens: int, gamma: int, temperature: float,
                 seed: int = 0, pairs: Sequence[tuple[str, str]] = (("verse", "layers"), ("copy", "lookup")),
                 eos_id: int | None = None) -> dict:
    """Speculative SAMPLING (temperature > 0) on the model for the (prompt, draft) ``pairs``: acceptance and tokens
    per call (the output is a sample of the target's distribution; there is nothing to compare token for token)."""
    out = {}
    for name, d in pairs:
        prompt, draft = prompts_[name], drafts[d]
        r = speculative_generate(target, draft, prompt, new_tokens, gamma, temperature=temperature, seed=seed,
                                 eos_id=eos_id)
        out[f"{name}/{d}"] = {"acceptance": r.acceptance_rate, "tokens_per_call": r.tokens_per_call,
                              "tokens": list(r.tokens), "accepted": list(r.accepted)}
    return out


# ----------------------------------------------------------------------------- figures

#: one colour per draft and prompt (the layer draft blue and green, prompt lookup orange and red), a line style per
#: prompt and a marker per draft, so that the four curves of the sweep can be told apart in print too
SERIES = {("layers", "verse"): dict(color="tab:blue", ls="-", marker="o"),
          ("layers", "copy"): dict(color="tab:green", ls="--", marker="o"),
          ("lookup", "verse"): dict(color="tab:orange", ls="-", marker="s"),
          ("lookup", "copy"): dict(color="tab:red", ls="--", marker="s")}
DRAFT_NAMES = {"layers": "layer draft", "lookup": "prompt lookup"}


def series_label(draft: str, prompt: str) -> str:
    return f"{DRAFT_NAMES.get(draft, draft)}, {prompt}"


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
    """Expected tokens per call against gamma for a few alpha; expected speed-up for a few c."""
    ax1, ax2 = fig.subplots(1, 2)
    gs = list(gammas)
    for a in alphas:
        ax1.plot(gs, [expected_tokens_per_call(a, g) for g in gs], marker=".", label=f"alpha = {a:g}")
    ax1.plot(gs, [g + 1 for g in gs], color="0.6", ls=":", label="gamma + 1 (alpha = 1)")
    ax1.legend(fontsize=8)
    label(ax1, "draft length gamma", "expected tokens per call", "(1 - a^(g+1)) / (1 - a)")
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
    """Measured acceptance, tokens per call (dotted: the geometric theory at the measured acceptance) and speed-up
    (dotted: predicted from the calls made and the measured costs) against gamma, one colour per draft and prompt."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    gammas = sweep["gammas"]
    for name, block in sweep["prompts"].items():
        for d, rows in block["rows"].items():
            style, tag = SERIES[(d, name)], series_label(d, name)
            ax1.plot(gammas, [r["acceptance"] for r in rows], label=tag, **style)
            ax2.plot(gammas, [r["tokens_per_call"] for r in rows], label=tag, **style)
            a = pooled_acceptance(sweep, d, name)
            if math.isfinite(a):
                ax2.plot(gammas, [predicted_tokens_per_call(a, r["proposed"]) for r in rows],
                         color=style["color"], ls=":", lw=1.5)
            ax3.plot(gammas, [r["speedup"] for r in rows], label=tag, **style)
            if costs is not None:
                c = cost_ratio if d == "layers" else 0.0
                ax3.plot(gammas, [predicted_speedup(r, costs, c) for r in rows], color=style["color"], ls=":", lw=1.5)
    ax2.plot(gammas, [g + 1 for g in gammas], color="0.6", lw=1, label="gamma + 1 (every draft accepted)")
    ax2.plot([], [], color="0.3", ls=":", lw=1.5, label="theory at the measured acceptance")
    ax3.plot([], [], color="0.3", ls=":", lw=1.5, label="predicted from the calls and costs")
    ax1.set_ylim(-0.03, 1.05)
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    ax3.legend(fontsize=7)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(gammas)
    label(ax1, "draft length gamma", "acceptance rate (per checked token)", "Acceptance")
    label(ax2, "draft length gamma", "tokens per call (new tokens per verification)", "Tokens per call")
    ax3.axhline(1, color="black", lw=0.8)
    label(ax3, "draft length gamma", "speed-up vs plain cached decoding",
          f"Wall clock, load {sweep['load_before']:.1f}-{sweep['load_after']:.1f}")


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
        ax1.bar(xs, counts / total, width, color=SERIES[(draft, name)]["color"], alpha=0.8,
                label=f"{name}: measured ({len(r['accepted'])} calls)")
        ax1.plot(xs, law, "k.", ms=8)
    ax1.plot([], [], "k.", label="geometric law at the measured acceptance")
    ax1.set_xticks(range(gamma + 1))
    ax1.legend(fontsize=7)
    label(ax1, "draft tokens accepted in a call", "fraction of calls", f"{DRAFT_NAMES[draft]}, gamma = {gamma}")
    for name, block in sweep["prompts"].items():
        for d, rows in block["rows"].items():
            style = dict(SERIES[(d, name)], alpha=0.25 if d != draft else 1.0)
            ax2.plot(sweep["gammas"], [x["tokens_per_call"] for x in rows], label=series_label(d, name), **style)
            ax3.plot(sweep["gammas"], [x["speedup"] for x in rows], label=series_label(d, name), **style)
        r = block["rows"][draft][gi]
        ax2.plot([gamma], [r["tokens_per_call"]], "o", ms=13, mfc="none", color="black")
        ax3.plot([gamma], [r["speedup"]], "o", ms=13, mfc="none", color="black")
        ax3.annotate(f"{r['speedup']:.2f}x", (gamma, r["speedup"]), textcoords="offset points", xytext=(8, 4),
                     fontsize=8)
        ax2.annotate(f"{r['tokens_per_call']:.2f}", (gamma, r["tokens_per_call"]), textcoords="offset points",
                     xytext=(8, 4), fontsize=8)
    ax2.legend(fontsize=7)
    ax2.set_xticks(sweep["gammas"])
    ax3.set_xticks(sweep["gammas"])
    label(ax2, "draft length gamma", "tokens per call (new tokens per verification)", "Hardware-independent gain")
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
    """Exercise 1: the residual distribution norm(max(0, p - q))."""
    return check_exercise("residual distribution", attempt, residual_reference, _pq_cases(),
                          hint="subtract, clamp the negative entries to 0 (torch.clamp_min), divide by the sum.",
                          ctx=ctx)


def _tokens_cases():
    return [(0.8, 3), (0.6, 3), (0.9, 5), (0.0, 4), (0.5, 0), (0.999, 10)]


def check_exercise_tokens(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: expected tokens per call under i.i.d. acceptance."""
    return check_exercise("expected tokens per call", attempt, expected_tokens_per_call, _tokens_cases(),
                          hint="token i + 1 of the call is emitted iff the first i drafts were accepted "
                               "(probability a^i), for i = 0..gamma: sum a^i, a geometric series.", ctx=ctx)


def acceptance_reference(p, q) -> float:
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    return float(acceptance_probability(p, q))


def check_exercise_acceptance(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: the probability that a drafted token is accepted."""
    return check_exercise("acceptance probability", attempt, acceptance_reference, _pq_cases(),
                          hint="sum over x of q(x) min(1, p(x) / q(x)) = sum over x of min(p(x), q(x)).", ctx=ctx)


# ----------------------------------------------------------------------------- GPU (optional)


def gpu_timing(model: str, prompt_ids: dict, draft_layers: int, ngram: int, new_tokens: int,
               gammas: Sequence[int], repeats: int = 3) -> dict:
    """On a CUDA device: plain cached greedy decoding against speculative decoding (both drafts, every prompt
    and gamma), fastest of ``repeats`` with synchronisation; speed-up, tokens per call and equality."""
    if not torch.cuda.is_available():
        raise RuntimeError("gpu_timing needs a CUDA device")
    hf, _, target = load_model(model, "cuda")
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
    for name, prompt in prompt_ids.items():
        base, plain = timed(lambda prompt=prompt: generate(target, prompt, new_tokens))
        for d, draft in drafts.items():
            for g in gammas:
                seconds, res = timed(lambda draft=draft, prompt=prompt, g=g:
                                     speculative_generate(target, draft, prompt, new_tokens, g))
                rows.append({"prompt": name, "draft": d, "gamma": g, "speedup": base / seconds,
                             "tokens_per_call": res.tokens_per_call, "equal": res.tokens == plain.tokens})
    return {"device": torch.cuda.get_device_name(0), "rows": rows}


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "DRAFTS", "PROMPTS", "SERIES",
    # the package's code the notebook shows and runs
    "speculative_accept", "speculative_generate", "greedy_accept", "residual_distribution", "acceptance_probability",
    "expected_tokens_per_call", "expected_speedup", "generate", "ModelDraft", "PromptLookupDraft", "BigramLM",
    "SpeculativeResult",
    # the notebook's experiments
    "load_models", "prompts", "example_distributions", "one_step_study", "sequence_study",
    "eval_tokens", "measure_draft_quality", "draft_quality", "measure_step_costs", "step_costs",
    "interpolate_cost_ratio", "verify_ratio", "theory_by_depth", "run_sweep", "decoding_sweep", "sweep_rows",
    "best_row", "pooled_acceptance", "predicted_tokens_per_call", "predicted_speedup", "or_zero", "call_chunks",
    "show_chunks", "run_sampled", "sampled_runs", "gpu_timing",
    # tables and figures
    "show", "show_source", "table", "figure", "explore", "models_table", "theory_table", "pq_table", "one_step_table",
    "sequence_table", "quality_table", "verify_table", "sweep_table", "baseline_table", "sampled_table",
    "draw_theory", "draw_one_step", "draw_sequences", "draw_draft_quality", "draw_verify_cost", "draw_sweep",
    "draw_explore",
    # exercises
    "check_exercise_residual", "check_exercise_tokens", "check_exercise_acceptance",
]
