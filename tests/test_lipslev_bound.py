"""Helpers of notebook 2 of the LipsLev series (the Lipschitz bound, layer by layer)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lionsnb.lipslev.nb02_bound as m
from lionsnb.lipslev.levenshtein import Alphabet, neighbour_count, runs
from lionsnb.lipslev.model import LipsLevCNN, conv_constant, embedding_constant

NORMS = (1.0, 2.0, math.inf)


def hand_model(emb_rows=(2.0, 0.5), kernel=1.0, head=((1.0,), (0.0,))) -> LipsLevCNN:
    """d = h = q = 1, raw weights, float64: g_01 = sum_i relu(kernel * e_{x_i})."""
    model = LipsLevCNN(Alphabet(tuple("ab")), 2, embed_dim=1, hidden=1, kernel_size=1, p=2.0, lipschitz=False)
    with torch.no_grad():
        model.emb.weight.copy_(torch.tensor([[0.0], *[[v] for v in emb_rows]]))
        model.conv0.weight.fill_(kernel)
        model.C.weight.copy_(torch.tensor(head))
    return m.as_float64(model)


def test_sweep_has_no_violation_and_counts_every_check():
    sweep = m.soundness_sweep(36, seed=3, max_len=4, radius=2, progress=False)
    assert sweep["violations"] == 0
    assert 0 < sweep["max_ratio"] <= 1 + 1e-9
    assert sweep["models"] == 36 and sweep["neighbours"] > 36
    assert sum(sum(h) for h in sweep["hist"].values()) == sweep["pair_checks"]
    for row in sweep["rows"]:  # local constant <= global constant, so its ratio is never smaller
        assert row["max_local"] >= row["max_global"] - 1e-12


def test_ball_ratios_is_tight_on_a_hand_model_and_catches_a_smaller_constant(monkeypatch):
    model = hand_model()
    res = m.ball_ratios(model, [1], 1)  # P = "a": deleting a moves g by 2 = M(E, P) * |c_0 - c_1| * |k|
    assert res["local"]["violations"] == 0 and res["global"]["violations"] == 0
    assert res["local"]["ratios"].max() == pytest.approx(1.0, abs=1e-12)
    original = model.lipschitz_constants
    monkeypatch.setattr(model, "lipschitz_constants", lambda ids=None: 0.99 * original(ids))
    assert m.ball_ratios(model, [1], 1)["local"]["violations"] > 0


def test_local_constant_needs_the_pad_row_on_the_p_side():
    emb = np.array([[0.0], [1.0], [10.0]])
    assert m.local_embedding_constant(emb, [1], 2.0) == pytest.approx(10.0)
    assert m.local_embedding_constant(emb, [1], 2.0, include_pad=False) == pytest.approx(9.0)
    gen = torch.Generator().manual_seed(0)
    w = torch.cat([torch.zeros(1, 3), torch.randn(5, 3, generator=gen)]).double()
    for p in NORMS:
        for ids in ([1], [2, 3, 3], [], [5, 1]):
            assert m.local_embedding_constant(w, ids, p) == pytest.approx(float(embedding_constant(w, p, ids)))
        assert m.local_embedding_constant(w, [1, 2, 3, 4, 5], p) == pytest.approx(float(embedding_constant(w, p)))


def test_pad_free_constant_fails_only_at_insertions():
    res = m.pad_free_search(300, seed=0, max_len=6, progress=False)
    assert res["violations_correct"] == 0
    assert res["violations_wrong"] > 0 and res["models_wrong"] > 0
    assert res["wrong_by_kind"]["sub"] == 0 and res["wrong_by_kind"]["del"] == 0
    assert res["example"]["edit"][0] == "ins"
    assert res["example"]["dg"] > res["example"]["wrong_constant"]
    assert res["example"]["dg"] <= res["example"]["correct_constant"] * (1 + 1e-9) + 1e-9


@pytest.mark.parametrize("q", [1, 2, 3, 5])
def test_one_substitution_changes_exactly_q_windows(q):
    model = m.demo_model(q, p=2.0, kernel_size=q)
    seq = [1, 2, 3, 4, 5, 6, 7]
    for position in (0, 3, len(seq) - 1):
        new = 8 if seq[position] != 8 else 1
        w = m.substitution_windows(model, seq, position, new)
        assert w["changed"] == list(range(position, position + q)) == w["expected"]
        assert w["change"].shape[1] == len(seq) + q - 1
        assert w["prediction_error"] < 1e-12
        assert w["norms"].sum() <= w["m_k"] * w["delta_norm"] * (1 + 1e-12)
        assert (w["norms"] <= w["bounds"] * (1 + 1e-12) + 1e-15).all()
    assert w["m_k"] == pytest.approx(float(conv_constant(model.conv0.weight.detach().double(), 2.0)))


def test_holder_direction_attains_the_dual_norm():
    rng = np.random.default_rng(1)
    for p in NORMS:
        r = m.dual(p)
        for _ in range(20):
            v = rng.normal(size=int(rng.integers(1, 7)))
            u = m.holder_direction(v, p)
            assert np.linalg.norm(u, ord=p) == pytest.approx(1.0)
            assert v @ u == pytest.approx(np.linalg.norm(v, ord=r))
            other = rng.normal(size=v.shape)
            other /= np.linalg.norm(other, ord=p)
            assert v @ other <= np.linalg.norm(v, ord=r) + 1e-12


def test_holder_check_and_the_sqrt2_route():
    head = m.random_head(2)
    for p in NORMS:
        res = m.holder_check(head, p)
        assert res["max_gap"] < 1e-12 and len(res["rows"]) == 6
    res = m.holder_check(head, 2.0)
    assert res["min_vector_over_pairwise"] >= 1.0
    # a centred regular simplex: the sqrt(2) route gives exactly the pairwise distance
    simplex = torch.eye(3, dtype=torch.float64) - 1.0 / 3
    assert m.holder_check(simplex, 2.0)["min_vector_over_pairwise"] == pytest.approx(1.0)


def test_sum_pooling_ignores_padding_and_mean_pooling_does_not():
    model = m.demo_model(0, p=2.0, kernel_size=3)
    diffs = m.padding_differences(model, [[1, 2, 3], [4, 4, 5, 6, 7], [8]], extras=(1, 7))
    assert diffs["sum"] < 1e-12
    assert diffs["mean"] > 1e-3


def test_stages_follow_the_forward_pass():
    model = m.random_tiny_model(5, p=2.0, layers=2, kernel_size=3, embed_dim=2, hidden=3, sigma=4)
    seq = [1, 2, 3, 4, 1]
    st = m.stages(model, seq)
    assert st["embedding"].shape == (5, 2)
    assert st["conv0"].shape == (5 + 2, 3) and st["relu1"].shape == (5 + 4, 3)
    np.testing.assert_allclose(st["relu1"].sum(0), st["pooled"], atol=1e-12)
    np.testing.assert_allclose(st["logits"], model(m.pad_batch([seq]))[0].detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("lipschitz", [False, True])
def test_constant_formula_matches_the_model(lipschitz):
    for p in NORMS:
        model = m.random_tiny_model(11, p=p, lipschitz=lipschitz, layers=2)
        assert m.constant_formula_error(model, None) < 1e-12
        assert m.constant_formula_error(model, [1, 2]) < 1e-12


def test_tight_search_finds_ratio_one():
    res = m.tight_search(40, seed=0, max_len=4, progress=False)
    assert 1 - 1e-9 <= res["best"]["ratio"] <= 1 + 1e-9
    details = m.tight_details(res["best"])
    assert details["ratio"] == pytest.approx(res["best"]["ratio"], abs=1e-12)
    assert details["distance"] == 1


def test_layerwise_statement_fails_but_end_to_end_holds():
    for seed in range(5):
        res = m.layerwise_counterexample(seed, 1e-3, n=4, d=2, h=2, q=3, p=2.0)
        assert res["erp_in"] <= 1e-3 + 1e-15
        assert res["erp_ratio"] > 10
        assert res["end_to_end_ratio"] <= 1 + 1e-12
    search = m.layerwise_search(6, seed=1, eps_values=(1e-1, 1e-3), progress=False)
    assert max(search["erp_ratio"][1]) > 10 * max(search["erp_ratio"][0]) > 0  # grows like 1/eps


def test_neighbourhood_looseness_on_a_random_model():
    model = m.reference_model(None, seed=0)
    text = "abc123def45"
    seq = model.alphabet.encode(text)
    for label in (0, 1):
        res = m.neighbourhood_looseness(model, text, label)
        assert res["total"] == res["neighbours"] == neighbour_count(len(seq), model.alphabet.size, runs(seq))
        assert 0 < res["ratio"] <= 1 + 1e-5  # float32 logits
    sub = m.neighbourhood_looseness(model, text, 0, sample=50, seed=1)
    assert sub["neighbours"] == 50 and sub["sampled"] and sub["total"] == res["total"]
    full = m.neighbourhood_looseness(model, text, 0)
    assert sub["ratio"] <= full["ratio"] + 1e-12


def test_local_global_ratios_match_the_model_constants():
    model = m.reference_model(None, seed=1)
    texts = ["abc", "zz99", "hello world 42"]
    ratios = m.local_global_ratios(model, texts)
    emb = model.effective_weights()[0].detach().double()
    for t, r in zip(texts, ratios):
        expected = embedding_constant(emb, 2.0, model.alphabet.encode(t)) / embedding_constant(emb, 2.0)
        assert r == pytest.approx(float(expected))
    assert m.row_max_ratios(model).max() == pytest.approx(1.0)


def test_exercise_checkers_accept_the_reference_and_reject_common_mistakes():
    def conv_max_over_taps(weight):  # max instead of sum over taps
        return float(np.abs(weight).sum(0).max(0).max())

    def conv_right(weight):
        return float(np.abs(weight).sum(0).max(0).sum())

    def head_primal_norm(head, p):  # p instead of the dual r
        return np.linalg.norm(head[:, None] - head[None], ord=p, axis=-1)

    def local_without_pad(emb, ids, p):
        rows = sorted(set(ids))
        return max((np.linalg.norm(emb[i] - emb[j], ord=p) for i in rows for j in range(len(emb))), default=0.0)

    assert m.check_exercise_conv_p1(conv_right).status == "solved"
    assert m.check_exercise_conv_p1(conv_max_over_taps).status == "incorrect"
    assert m.check_exercise_head_pairs(m.head_pairs).status == "solved"
    assert m.check_exercise_head_pairs(head_primal_norm).status == "incorrect"
    assert m.check_exercise_local_constant(m.local_constant_reference).status == "solved"
    assert m.check_exercise_local_constant(local_without_pad).status == "incorrect"


def test_official_paths_reports_a_missing_folder(tmp_path, capsys):
    assert m.official_paths(tmp_path) is None
    assert "missing" in capsys.readouterr().out
    assert m.norm_of("inf") == math.inf and m.norm_name(math.inf) == "inf"
    with pytest.raises(ValueError):
        m.norm_of("3")


def test_looseness_runs_take_the_shortest_correct_sentences():
    model = m.reference_model(None, seed=0)
    texts, labels, _ = m.reference_texts(None, n=30, seed=0)
    runs_ = m.looseness_runs(model, texts, labels, count=2, sample=40, seed=0)
    cert = m.certificate(model, texts, labels)
    assert len(runs_) == 2 and all(cert.radii[r["row"]] >= 0 for r in runs_)
    correct = [len(model.alphabet.encode(t)) for t, r in zip(texts, cert.radii) if r >= 0]
    assert runs_[0]["n"] <= sorted(correct)[len(correct) // 2]
    assert all(r["neighbours"] == 40 and r["text"] == texts[r["row"]] for r in runs_)


def test_display_order_groups_letters_digits_and_the_rest():
    alphabet = Alphabet(tuple("b1 a.2"))
    order, starts = m.display_order(alphabet)
    assert [(["pad"] + list(alphabet.chars))[i] for i in order] == ["pad", "a", "b", "1", "2", " ", "."]
    assert starts == [1, 3, 5]


def test_tables_of_the_notebook():
    sweep = m.soundness_sweep(12, seed=0, max_len=3, radius=1, progress=False)
    assert len(m.sweep_table(sweep)) == 2 and len(m.group_max_table(sweep)) == 6
    rounding = m.rounding_table(sweep)
    assert rounding.column("value")[-1] == 0 and float(rounding.column("value")[0]) == sweep["max_ratio"]
    tight = m.tight_search(8, seed=0, max_len=3, progress=False)
    assert "largest ratio found" in repr(m.tight_table(tight, m.tight_details(tight["best"])))
    pad_free = m.pad_free_search(30, seed=0, max_len=3, progress=False)
    assert m.pad_free_table(pad_free).column("violated (neighbour, class pair) checks")[0] == 0
    holder, gap = m.holder_table({"random": m.random_head(0)})
    assert len(holder) == 3 and gap < 1e-12
    layerwise = m.layerwise_search(3, seed=0, progress=False)
    assert len(m.layerwise_table(layerwise)) == 3 and "worst case" in m.worst_case_text(layerwise)
