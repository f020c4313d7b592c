"""NGDiff direction and cone (spec §3), TOFU metrics (spec §4), ROUGE-L and the MUSE helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp

from lionsnb.unlearning import (
    forget_quality,
    mia_auc,
    min_k_score,
    model_utility,
    ngdiff_direction,
    privleak,
    probability,
    rouge_l_f1,
    rouge_l_recall,
    truth_ratio,
)
from lionsnb.unlearning.geometry import (
    cone_products,
    first_order_changes,
    graddiff_leaves_cone,
    plane_directions,
    unit_vector,
)

# --------------------------------------------------------------------------------------------- NGDiff direction


def _pairs():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 17, 1000):
        for scale_r, scale_f in ((1.0, 1.0), (1e-6, 1e6), (1e5, 1e-5), (1e-20, 3.0)):
            a = torch.randn(n, generator=g, dtype=torch.float64) * scale_r
            b = torch.randn(n, generator=g, dtype=torch.float64) * scale_f
            yield a, b                                   # independent
            yield a, a * 2.5 + 1e-6 * b.norm() * b / b.norm() * a.norm()  # nearly aligned
            yield a, 3.0 * a                             # exactly parallel
            yield a, -0.2 * a                            # anti-parallel
            if n >= 2:
                o = b - (b @ a) / (a @ a) * a           # orthogonal
                yield a, o


def test_ngdiff_formula_and_cone_on_every_kind_of_pair():
    count = 0
    for g_r, g_f in _pairs():
        keep = (g_r.clone(), g_f.clone())
        d = ngdiff_direction(g_r, g_f)
        want = g_r / g_r.norm() - g_f / g_f.norm()
        assert torch.allclose(d, want, rtol=0, atol=1e-7)
        assert d @ g_r >= -1e-7 * g_r.norm()
        assert d @ g_f <= 1e-7 * g_f.norm()
        assert torch.equal(g_r, keep[0]) and torch.equal(g_f, keep[1])
        count += 1
    assert count > 80


def test_ngdiff_cone_identities_and_random_batches_float32():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        g_r = torch.randn(500, generator=g)
        g_f = 0.3 * g_r + torch.randn(500, generator=g) * float(torch.rand(1, generator=g)) * 10
        d = ngdiff_direction(g_r, g_f)
        c = cone_products(d, g_r, g_f)
        assert c["rel_retain"] >= -1e-6 and c["rel_forget"] <= 1e-6
        # <d, g_R> = ||g_R|| (1 - cos),  <d, g_F> = ||g_F|| (cos - 1)
        assert c["dot_retain"] == pytest.approx(c["norm_retain"] * (1 - c["cos"]), rel=1e-4, abs=1e-4)
        assert c["dot_forget"] == pytest.approx(c["norm_forget"] * (c["cos"] - 1), rel=1e-4, abs=1e-4)


def test_ngdiff_zero_gradients_are_finite():
    v = torch.tensor([3.0, 4.0])
    z = torch.zeros(2)
    assert torch.allclose(ngdiff_direction(v, z), v / 5)
    assert torch.allclose(ngdiff_direction(z, v), -v / 5)
    assert torch.equal(ngdiff_direction(z, z), z)
    assert torch.isfinite(unit_vector(torch.full((4,), 1e-40))).all()  # denormal entries: still a unit vector
    assert float(unit_vector(torch.full((4,), 1e-40)).norm()) == pytest.approx(1.0, rel=1e-6)


def test_ngdiff_accepts_lists_of_parameter_gradients():
    parts_r = [torch.ones(2, 3), torch.arange(4.0)]
    parts_f = [torch.full((2, 3), -1.0), torch.ones(4)]
    flat = ngdiff_direction(torch.cat([p.reshape(-1) for p in parts_r]), torch.cat([p.reshape(-1) for p in parts_f]))
    assert torch.allclose(ngdiff_direction(parts_r, parts_f), flat)
    with pytest.raises(ValueError, match="same length"):
        ngdiff_direction(torch.ones(3), torch.ones(4))


def test_graddiff_leaves_the_cone_when_forget_gradient_dominates_ngdiff_never():
    for angle in range(0, 181, 15):
        for ratio in (0.1, 0.5, 1.0, 2.0, 10.0, 100.0):
            ch = first_order_changes(angle, ratio)
            assert ch["NGDiff"][0] <= 1e-12 and ch["NGDiff"][1] >= -1e-12   # retain never up, forget never down
            if abs(ratio * math.cos(math.radians(angle)) - 1) > 1e-9:  # off the boundary ||g_F|| cos = ||g_R||
                assert (ch["GradDiff"][0] > 0) == graddiff_leaves_cone(angle, ratio)
            assert ch["GA"][1] >= -1e-12                                     # GA always raises the forget loss
    d = plane_directions(30, 5.0)
    assert d["GradDiff"] @ d["g_R"] < 0 < d["NGDiff"] @ d["g_R"]


# --------------------------------------------------------------------------------------------- TOFU metrics

CORRECT = np.array([0.5, 2.0, 1.2, 0.1])
PERTURBED = np.array([[1.0, 3.0, 0.2], [0.5, 4.0, 2.5], [1.2, 1.2, 1.2], [5.0, 6.0, 0.05]])


def test_truth_ratio_arithmetic_and_geometric_forms():
    arith = truth_ratio(CORRECT, PERTURBED, perturbed_mean="arithmetic")
    geo = truth_ratio(CORRECT, PERTURBED, perturbed_mean="geometric")
    for i in range(len(CORRECT)):
        want_a = np.mean([math.exp(-p) for p in PERTURBED[i]]) / math.exp(-CORRECT[i])
        want_g = math.exp(CORRECT[i] - np.mean(PERTURBED[i]))
        assert arith[i] == pytest.approx(want_a, rel=1e-12)
        assert geo[i] == pytest.approx(want_g, rel=1e-12)
    assert not np.allclose(arith, geo)  # they differ with K > 1 ...
    one = PERTURBED[:, :1]
    np.testing.assert_allclose(truth_ratio(CORRECT, one), truth_ratio(CORRECT, one, perturbed_mean="geometric"),
                               rtol=1e-12)  # ... and coincide with K = 1


def test_truth_ratio_modes():
    r = truth_ratio(CORRECT, PERTURBED)
    assert truth_ratio(CORRECT, PERTURBED, "closer_to_1_better") == pytest.approx(np.mean(np.minimum(r, 1 / r)))
    assert truth_ratio(CORRECT, PERTURBED, "true_better") == pytest.approx(np.mean(np.maximum(0, 1 - r)))
    assert truth_ratio([0.0, 0.0], [[0.0], [-1.0]], "true_better") == 0.0  # every R >= 1 -> 0
    with pytest.raises(ValueError, match="mode"):
        truth_ratio(CORRECT, PERTURBED, "best")
    with pytest.raises(ValueError, match="perturbed_mean"):
        truth_ratio(CORRECT, PERTURBED, perturbed_mean="harmonic")


def test_truth_ratio_has_no_epsilon_guard():
    # per-token losses ~40: P(correct) ~ 4e-18; open-unlearning's 1e-10 guards would change the result completely
    r = truth_ratio([40.0], [[41.0, 39.5]])
    assert r[0] == pytest.approx((math.exp(-41) + math.exp(-39.5)) / 2 / math.exp(-40), rel=1e-12)


def test_probability_plain_and_normalised_with_true_answer_in_denominator():
    assert probability(CORRECT) == pytest.approx(np.mean(np.exp(-CORRECT)), rel=1e-14)
    p, q = np.exp(-CORRECT), np.exp(-PERTURBED)
    assert probability(CORRECT, PERTURBED) == pytest.approx(np.mean(p / (p + q.sum(1))), rel=1e-14)
    torch_in = probability(torch.tensor(CORRECT), torch.tensor(PERTURBED))
    assert torch_in == pytest.approx(probability(CORRECT, PERTURBED), rel=1e-14)


def test_forget_quality_is_the_ks_pvalue_and_one_for_identical_samples():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 1, 40), rng.lognormal(0.8, 1, 25)
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue, rel=1e-12)
    assert forget_quality(a, a) == 1.0                                         # retain model against itself
    assert forget_quality(1 / a, 1 / b) == pytest.approx(forget_quality(a, b), rel=1e-12)  # orientation-free
    far = forget_quality(np.arange(300.0), np.arange(300.0) + 1000)
    assert 0 < far < 1e-60 and far == pytest.approx(ks_2samp(np.arange(300.0), np.arange(300.0) + 1000).pvalue,
                                                    rel=1e-9)


def test_forget_quality_uses_raw_not_folded_ratios():
    r_unl = np.array([0.5, 0.6, 0.7, 2.0, 1.7, 1.4])
    r_ret = np.array([0.5, 0.6, 0.7, 0.5, 0.6, 0.7])
    folded = np.minimum(r_unl, 1 / r_unl)
    assert forget_quality(r_unl, r_ret) != pytest.approx(forget_quality(folded, r_ret))


def test_model_utility_harmonic_mean_and_zero():
    vals = [0.9, 0.4, 0.7, 0.55, 0.3, 0.8, 0.65, 0.5, 0.45]
    assert model_utility(vals) == pytest.approx(hmean(vals), rel=1e-14)
    assert model_utility(vals) == pytest.approx(9 / sum(1 / v for v in vals), rel=1e-14)
    assert model_utility([0.37] * 9) == pytest.approx(0.37, rel=1e-14)  # identical numbers -> that number
    assert model_utility(vals[:-1] + [0.0]) == 0.0                      # a collapsed part -> 0, no error
    assert model_utility(vals) < np.mean(vals)


# --------------------------------------------------------------------------------------------- ROUGE-L


def _lcs(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def test_rouge_l_recall_is_lcs_over_reference_length_with_stemming():
    from rouge_score import rouge_scorer

    ref = "The father of Kai Dorn was a carpenter."
    pred = "Kai Dorn's father worked as carpenters"
    # rouge_score: lower case, non-alphanumerics -> spaces, Porter stemmer on tokens longer than 3 characters
    assert rouge_l_recall(ref, pred) == pytest.approx(
        rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"].recall)
    r_tokens = ["the", "father", "of", "kai", "dorn", "was", "a", "carpent"]
    p_tokens = ["kai", "dorn", "s", "father", "work", "as", "carpent"]
    assert rouge_l_recall(ref, pred) == pytest.approx(_lcs(r_tokens, p_tokens) / len(r_tokens))
    assert rouge_l_recall(ref, ref) == 1.0 and rouge_l_recall(ref, "") == 0.0
    np.testing.assert_allclose(rouge_l_recall([ref, ref], [pred, ref]), [rouge_l_recall(ref, pred), 1.0])


def test_rouge_l_f1_has_no_stemmer():
    ref, pred = "carpenters build houses", "carpenter builds houses"
    assert rouge_l_f1(ref, pred) == pytest.approx(1 / 3)          # only "houses" matches without stemming
    assert rouge_l_recall(ref, pred) == pytest.approx(1.0)        # everything matches with it


# --------------------------------------------------------------------------------------------- MUSE helpers


def test_min_k_auc_and_privleak():
    lp = np.log([0.9, 0.5, 0.01, 0.2, 0.8])
    assert min_k_score(lp, 0.4) == pytest.approx(-np.mean(np.log([0.01, 0.2])))
    assert min_k_score(lp[:1], 0.4) == pytest.approx(-lp[0])      # at least one token
    assert mia_auc([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]) == 0.0       # members score low: perfectly separable
    assert mia_auc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(0.5)
    assert privleak(0.4772, 0.4772) == 0.0
    assert privleak(0.0, 0.5) == -100.0
