"""Speculative decoding (lionsnb.inference.speculative) and its notebook module (lionsnb.inference.nb04_speculative).

Exactness is tested where it can fail: greedy speculative output equals plain greedy decoding token for token
(tiny_llama_f64 random Llama models with a truncated draft and prompt lookup, and the real SmolLM2 when present); the
one-step sampler and whole sampled sequences follow the target law (chi-square), while the classic bug
(resampling from p instead of the residual) fails the same tests.
"""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from lionsnb.inference.llama import LlamaRunner, generate  # noqa: E402
from lionsnb.inference.speculative import (  # noqa: E402
    BigramLM,
    ModelDraft,
    PromptLookupDraft,
    acceptance_from_counts,
    acceptance_probability,
    chi_square_test,
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
)


def _pq(vocab=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(1.5 * torch.randn(vocab, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(1.5 * torch.randn(vocab, generator=g, dtype=torch.float64), 0)
    return p, q


# ----------------------------------------------------------------------------- the acceptance rule

def test_residual_and_acceptance_identities():
    p, q = _pq()
    r = residual_distribution(p, q)
    assert torch.isclose(r.sum(), torch.tensor(1.0, dtype=torch.float64)) and (r >= 0).all()
    assert (r[p <= q] == 0).all()
    beta = acceptance_probability(p, q)
    # Pr[x] = min(p, q)(x) + (1 - beta) residual(x) = p(x): the exactness identity of Algorithm 1
    assert torch.allclose(torch.minimum(p, q) + (1 - beta) * r, p, atol=1e-12)
    assert math.isclose(float(beta), 1 - 0.5 * float((p - q).abs().sum()), rel_tol=1e-12)
    assert torch.equal(residual_distribution(p, p), p)  # no residual mass: falls back to p (never sampled)


def test_one_step_sampler_follows_p_and_the_bug_does_not():
    p, q = _pq()
    correct = one_step_draws(p, q, 100_000, seed=1)
    assert correct["pvalue"] > 1e-3, correct
    assert abs(correct["acceptance"] - float(acceptance_probability(p, q))) < 0.01
    buggy = one_step_draws(p, q, 10_000, seed=2, buggy=True)
    assert buggy["pvalue"] < 1e-6 and buggy["tv"] > 5 * correct["tv"]


def test_deterministic_draft_one_hot_q():
    """q = None (one-hot at the draft token): accepted with probability p(x), residual = p without x."""
    p, _ = _pq(6, seed=3)
    g = torch.Generator().manual_seed(4)
    counts, accepted = torch.zeros(6, dtype=torch.float64), 0
    for _ in range(20_000):
        emitted, n = speculative_accept(torch.stack([p, p]), None, [2], g)
        counts[emitted[0]] += 1
        accepted += n
    assert chi_square_test(counts, p)["pvalue"] > 1e-3
    assert abs(accepted / 20_000 - float(p[2])) < 0.015


def test_bonus_token_and_shapes():
    p = torch.zeros(3, 4, dtype=torch.float64)
    p[0, 1] = p[1, 2] = p[2, 3] = 1.0
    q = torch.zeros(2, 4, dtype=torch.float64)
    q[0, 0] = q[0, 1] = 0.5
    q[1, 2] = 1.0
    assert speculative_accept(p, q, [1, 2]) == ([1, 2, 3], 2)  # both accepted surely, bonus from p_3
    assert speculative_accept(p, q, [0, 2]) == ([1], 0)        # p_1(0) = 0: rejected; residual = token 1
    with pytest.raises(ValueError, match="gamma"):
        speculative_accept(p[:2], q, [1, 2])


def test_greedy_accept():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    assert greedy_accept(logits, [1, 0]) == ([1, 0, 2], 2)
    assert greedy_accept(logits, [1, 2]) == ([1, 0], 1)
    assert greedy_accept(logits, [2, 0]) == ([1], 0)
    assert greedy_accept(logits[:1], []) == ([1], 0)


# ----------------------------------------------------------------------------- theory and statistics

def test_expected_tokens_and_speedup():
    for a, g in ((0.8, 3), (0.6, 3), (0.9, 5), (0.3, 0)):
        assert math.isclose(expected_tokens_per_call(a, g), sum(a ** i for i in range(g + 1)), rel_tol=1e-12)
    assert math.isclose(expected_tokens_per_call(0.8, 3), 2.952, rel_tol=1e-9)  # method note: (0.8, 3) -> 2.95
    assert expected_tokens_per_call(1.0, 4) == 5
    assert math.isclose(expected_speedup(0.8, 3, 0.0), 2.952)
    assert math.isclose(expected_speedup(0.8, 3, 0.1, verify_cost=2.0), 2.952 / 2.3)
    with pytest.raises(ValueError):
        expected_tokens_per_call(1.2, 3)


def test_acceptance_from_counts_is_the_geometric_mle():
    # call 1: 2 of 4 accepted (3 checked); call 2: all 3 of 3 (3 checked); call 3: nothing proposed
    assert math.isclose(acceptance_from_counts([2, 3, 0], [4, 3, 0]), 5 / 6)
    assert math.isnan(acceptance_from_counts([0], [0]))
    g = torch.Generator().manual_seed(0)
    accepted = []
    for _ in range(4000):  # i.i.d. acceptance 0.7, gamma 4: the estimate recovers it
        n = 0
        while n < 4 and float(torch.rand((), generator=g)) < 0.7:
            n += 1
        accepted.append(n)
    assert abs(acceptance_from_counts(accepted, [4] * 4000) - 0.7) < 0.02


def test_chi_square_pvalue_and_tv():
    # df = 2: the upper tail is exp(-x / 2)
    res = chi_square_test([30, 50, 20], [1 / 3, 1 / 3, 1 / 3])
    assert res["df"] == 2 and math.isclose(res["pvalue"], math.exp(-res["chi2"] / 2), rel_tol=1e-9)
    assert total_variation([1, 1, 2], [0.25, 0.25, 0.5]) == 0
    pooled = chi_square_test([100, 0, 1], [0.98, 0.01, 0.01])  # two small bins pooled into one
    assert pooled["df"] == 1


# ----------------------------------------------------------------------------- drafts

def test_prompt_lookup_most_recent_match_and_fallback():
    d = PromptLookupDraft(ngram=3, min_ngram=1)
    seq = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert d.lookup(seq, 3) == [7, 8, 5]              # most recent earlier "1 2 3" is followed by 7 8 5
    assert d.lookup([4, 5, 6, 5, 6], 2) == [5, 6]       # "5 6" at 3..4 is the suffix; the earlier one at 1..2
    assert d.lookup([1, 2, 3, 4], 3) == []              # nothing repeats
    assert d.lookup([7, 1, 8, 1], 2) == [8, 1]          # falls back to a 1-gram
    assert PromptLookupDraft(3, 2).lookup([7, 1, 8, 1], 2) == []
    with pytest.raises(ValueError):
        PromptLookupDraft(ngram=2, min_ngram=3)


@pytest.mark.parametrize("gamma", [1, 2, 4])
def test_greedy_speculative_equals_target_greedy_on_a_tiny_llama(tiny_llama_f64, gamma):
    target = LlamaRunner(tiny_llama_f64)
    prompt = [5, 17, 3, 88, 42, 9, 5, 17, 3, 88, 42, 9, 5, 17]
    reference = generate(target, prompt, 24).tokens
    for draft in (ModelDraft(LlamaRunner(tiny_llama_f64, n_layers=1)),
                  ModelDraft(LlamaRunner(tiny_llama_f64, n_layers=2)),
                  PromptLookupDraft(3, 1)):
        out = speculative_generate(target, draft, prompt, 24, gamma)
        assert out.tokens == reference, draft.name
        assert out.target_calls == 1 + len(out.accepted)
        assert len(out.tokens) == 24 == 1 + sum(n + 1 for n in out.accepted)
        assert all(0 <= n <= p <= gamma for n, p in zip(out.accepted, out.proposed))


def test_rejections_roll_the_caches_back(tiny_llama_f64):
    """A draft that is wrong at every step forces a rollback at every call; the output must not change."""
    target = LlamaRunner(tiny_llama_f64)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    reference = generate(target, prompt, 16).tokens

    class Wrong(ModelDraft):
        def propose(self, sequence, gamma, temperature=0.0, generator=None):
            tokens, q = super().propose(sequence, gamma, temperature, generator)
            return [(t + 1) % 128 for t in tokens], q

    out = speculative_generate(target, Wrong(LlamaRunner(tiny_llama_f64, n_layers=2)), prompt, 16, 3)
    assert out.tokens == reference
    wrong_first = sum(n == 0 for n in out.accepted)
    assert wrong_first >= len(out.accepted) - 2


def test_target_as_its_own_draft_accepts_everything(tiny_llama_f64):
    target = LlamaRunner(tiny_llama_f64)
    prompt = [7, 8, 9, 10]
    out = speculative_generate(target, ModelDraft(LlamaRunner(tiny_llama_f64)), prompt, 21, 4)
    assert out.tokens == generate(target, prompt, 21).tokens
    assert out.acceptance_rate == 1.0
    assert out.target_calls == 1 + 4  # prefill emits 1, then 4 calls of gamma + 1 = 5 tokens
    assert out.tokens_per_call == 5.0 == expected_tokens_per_call(1.0, 4)  # per verification call, as the theory


def test_tokens_per_call_leaves_the_prefill_out():
    from lionsnb.inference.speculative import SpeculativeResult

    res = SpeculativeResult([1, 2, 3, 4, 5, 6], target_calls=3, proposed=[4, 4], accepted=[3, 0])
    assert res.tokens_per_call == 2.5          # 5 tokens after the prefill's first, in 2 verification calls
    assert math.isclose(res.acceptance_rate, 3 / 5)
    assert math.isnan(SpeculativeResult([7], target_calls=1).tokens_per_call)


def test_sampled_sequences_follow_the_target_law_on_bigrams():
    """Whole sequences (4 tokens, V = 4, gamma = 3) from speculative_generate with a bigram target and a noisy
    bigram draft: chi-square against the exact joint law passes; with the classic bug it fails."""
    g = torch.Generator().manual_seed(0)
    P = random_bigram(4, g)
    Q = noisy_bigram(P, 0.7, g)
    target, draft = BigramLM(P), ModelDraft(BigramLM(Q))
    exact = target.joint(0, 4)
    assert math.isclose(float(exact.sum()), 1.0, rel_tol=1e-12)
    weights = torch.tensor([64, 16, 4, 1])
    counts = {False: torch.zeros(256), True: torch.zeros(256)}
    n = 3000
    for i in range(n):
        for buggy in (False, True):
            out = speculative_generate(target, draft, [0], 4, 3, temperature=1.0, seed=2 * i + buggy, buggy=buggy)
            counts[buggy][int((torch.tensor(out.tokens) * weights).sum())] += 1
    assert chi_square_test(counts[False], exact)["pvalue"] > 1e-3
    assert chi_square_test(counts[True], exact)["pvalue"] < 1e-6


# ----------------------------------------------------------------------------- notebook module

def test_notebook_module_helpers():
    import lionsnb.inference.nb04_speculative as m

    assert m.call_chunks([1, 2, 3, 4, 5, 6], [2, 0, 1]) == [[1], [2, 3, 4], [5], [6]]
    costs = {"k": [2, 8], "cost_ratio": [0.2, 0.4], "n_layers": 30, "verify_t": [1, 2, 4],
             "verify_ratio": [1.0, 1.5, 2.0]}
    assert math.isclose(m.interpolate_cost_ratio(costs, 5), 0.3)
    assert math.isclose(m.interpolate_cost_ratio(costs, 30), 1.0)
    assert math.isclose(m.verify_ratio(costs, 2), 1.75)
    assert math.isclose(m.verify_ratio(costs, 5), 2.5)  # extrapolated along the last slope
    def residual(p, q):
        r = (p - q).clamp_min(0)
        return r / r.sum()

    for checker, attempt in ((m.check_exercise_residual, residual),
                             (m.check_exercise_acceptance, lambda p, q: float(torch.minimum(p, q).sum())),
                             (m.check_exercise_tokens, lambda a, g: sum(a ** i for i in range(g + 1)))):
        assert checker(attempt).status == "solved"
    assert m.check_exercise_residual(lambda p, q: p).status == "incorrect"
    assert m.check_exercise_tokens(lambda a, g: (1 - a ** g) / (1 - a) if a < 1 else g).status == "incorrect"


def test_figures_are_labelled():
    import lionsnb.inference.nb04_speculative as m
    from lionsnb.plotting import unlabelled_axes

    p, q = _pq()
    study = m.one_step_study(p, q, 3000)
    sweep = {"gammas": [1, 2], "load_before": 1.0, "load_after": 1.0, "prompts": {
        name: {"rows": {d: [{"acceptance": 0.5, "tokens_per_call": 1.4 + g / 10, "speedup": 0.9, "accepted": [0, 1, g],
                             "proposed": [g, g, g]} for g in (1, 2)] for d in m.DRAFTS}} for name in m.PROMPTS}}
    fig = m.figure(12, 4)
    m.draw_one_step(fig, study=study)
    assert unlabelled_axes(fig) == []
    fig = m.figure(12, 4)
    m.draw_explore(fig, sweep=sweep, gamma=2, draft="lookup")
    assert unlabelled_axes(fig) == []
    fig = m.figure(12, 4)
    m.draw_theory(fig)
    assert unlabelled_axes(fig) == []
    fig = m.figure(15, 4)
    m.draw_sweep(fig, sweep=sweep)
    assert unlabelled_axes(fig) == []
    # one colour per draft and prompt, so the four curves can be told apart
    colours = [line.get_color() for line in fig.axes[1].get_lines()[:8:2]]
    assert len(set(m.SERIES[k]["color"] for k in m.SERIES)) == 4 and len(set(colours)) == 4


# ----------------------------------------------------------------------------- the real model

@pytest.mark.llm
def test_greedy_speculative_equals_target_greedy_on_smollm2(smollm2):
    import lionsnb.inference.nb04_speculative as m

    _, tokenizer, target, drafts = m.load_models("smollm2", 8, 3)
    prompts = m.prompts(tokenizer)
    for name, gamma, draft in (("copy", 5, "lookup"), ("verse", 3, "layers")):
        reference = generate(target, prompts[name], 10).tokens
        out = speculative_generate(target, drafts[draft], prompts[name], 10, gamma)
        assert out.tokens == reference, (name, gamma, draft)
        if (name, draft) == ("copy", "lookup"):
            assert out.tokens_per_call >= 2.0  # the copy task is where prompt lookup shines
