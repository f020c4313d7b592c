"""LipsLev notebook 1 (distance): DP script, neighbour counts, exact ball counting, tokenizer, ERP, exercises."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest

import lionsnb.lipslev.nb01_levenshtein as m
from lionsnb.lipslev import ball_size
from lionsnb.plotting import unlabelled_axes

matplotlib.use("Agg")


# ----------------------------------------------------------------------------- DP table and script

def test_script_reproduces_the_target_at_the_distance():
    script = m.edit_script("kitten", "sitting")
    assert "".join(m.apply_script("kitten", script)) == "sitting"
    counts = m.script_counts(script)
    assert counts["sub"] + counts["del"] + counts["ins"] == m.levenshtein("kitten", "sitting") == 3
    lines = m.format_alignment(script).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    assert m.script_check(300, 9, 5, seed=1)["mismatches"] == 0


def test_apply_script_rejects_a_script_of_another_source():
    with pytest.raises(ValueError):
        m.apply_script("kitchen", m.edit_script("kitten", "sitting"))


def test_metric_check_passes_and_catches_a_non_metric(monkeypatch):
    assert m.metric_check(400, 8, 4, seed=2)["violations"] == 0
    # the squared distance is not a metric (a b c with d = 1, 1, 2: 4 > 1 + 1): the check must notice
    real = m.levenshtein
    monkeypatch.setattr(m, "levenshtein", lambda a, b: real(a, b) ** 2)
    assert m.metric_check(400, 8, 4, seed=2)["triangle_violations"] > 0


def test_check_pair_limits_the_figure():
    assert m.check_pair("a", "b") == ("a", "b")
    for bad in ("", "x" * (m.MAX_FIGURE_LEN + 1)):
        with pytest.raises(ValueError, match="1 to"):
            m.check_pair(bad, "abc")


# ----------------------------------------------------------------------------- the distance-1 neighbourhood

def test_brute_force_counts_per_kind_match_the_canonical_rules():
    gen = np.random.default_rng(3)
    for seq, sigma in m.random_strings(gen, 60, 9, 5):
        symbols = list(range(1, sigma + 1))
        counts = m.brute_force_counts(seq, symbols)
        n = len(seq)
        assert counts["sub"] == (n * (sigma - 1), n * (sigma - 1))
        assert counts["del"][1] == m.runs(seq)
        assert counts["ins"][1] == (n + 1) * (sigma - 1) + 1
        assert sum(u for _, u in counts.values()) == m.neighbour_count(n, sigma, m.runs(seq))


def test_duplicate_groups_of_aab():
    groups = m.duplicate_groups("aab", "ab")
    assert groups[("a", "b")] == [("del", 0, None), ("del", 1, None)]
    assert [e[1] for e in groups[("a", "a", "a", "b")]] == [0, 1, 2]  # insert 'a' before 0, 1 or 2
    assert [e[1] for e in groups[("a", "a", "b", "b")]] == [2, 3]
    assert len(groups) == 3


def test_formula_check_is_clean():
    result = m.formula_check(200, 9, 6, seed=4, distance_checks=20)
    assert result["strings_checked"] == 200
    for key in ("formula_mismatches", "canonical_duplicates", "canonical_set_mismatches", "distance_violations"):
        assert result[key] == 0, key


# ----------------------------------------------------------------------------- counting the ball

def test_count_ball_equals_breadth_first_enumeration():
    gen = np.random.default_rng(5)
    for _ in range(150):
        sigma = int(gen.integers(1, 5))
        n = int(gen.integers(0, 8))
        k = int(gen.integers(0, 4))
        x = tuple(int(c) for c in gen.integers(1, sigma + 1, size=n))
        enum = np.bincount(list(m.ball(x, list(range(1, sigma + 1)), k).values()), minlength=k + 1).tolist()
        assert m.count_ball(x, sigma, k) == enum, (x, sigma, k)


def test_count_ball_closed_forms():
    # around the empty string the ball is every string of length <= k: sigma^d at distance d
    assert m.count_ball((), 5, 3) == [1, 5, 25, 125]
    # at k = 1 the count is the neighbour formula, also for long strings (no enumeration)
    gen = np.random.default_rng(6)
    for n, sigma in ((100, 56), (300, 7), (57, 2)):
        x = gen.integers(1, sigma + 1, size=n).tolist()
        assert m.count_ball(x, sigma, 1) == [1, m.neighbour_count(n, sigma, m.runs(x))]
    # characters work as symbols, and the unused ones of the alphabet count too
    assert ball_size("ab", 2, 1) == 1 + m.neighbour_count(2, 2, 2)


def test_count_ball_rejects_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        m.count_ball((1, 2, 3), 2, 1)
    with pytest.raises(ValueError, match="radius"):
        m.count_ball((1,), 2, -1)


def test_estimate_is_close_for_long_strings_and_the_growth_slope_is_k():
    gen = np.random.default_rng(7)
    x = gen.integers(1, 21, size=120).tolist()
    hist = m.count_ball(x, 20, 2)
    assert 0.9 < hist[2] / m.estimate_exactly_k(hist[1], 2) < 1.1
    table = m.growth_table((16, 32, 64, 128), (8,), 2, seed=0)
    assert [row[1] for row in table["sizes"][0]] == [1 + v for v in table["n1"][0]]
    slopes = m.growth_slopes(table, 8)
    assert abs(slopes[1] - 1) < 0.15 and abs(slopes[2] - 2) < 0.25


def test_bfs_vs_count_respects_the_limit():
    result = m.bfs_vs_count((2, 5), (2, 3), 3, limit=500, seed=0)
    assert result["mismatches"] == 0
    assert result["largest_ball"] <= 500 * 1.5
    assert all(r["k"] >= 1 for r in result["records"])


def test_ag_news_neighbourhoods_are_consistent():
    data = m.ag_news_strings(30)
    ag = m.ag_news_neighbourhoods(data["seqs"], data["sigma"], 2, 1, source=data["source"])
    assert ag["sigma"] == 56 and len(ag["lengths"]) == 30 and ag["source"] == data["source"]
    for sizes, n1 in zip(ag["ball_exact"], ag["exact_n1"]):
        assert sizes == [1.0, 1.0 + n1]
    assert all(raw >= n1 for raw, n1 in zip(ag["raw"], ag["n1"]))


def test_forward_throughput_is_positive():
    out = m.forward_throughput(6, 20, 4, 1)
    assert out["strings_per_s"] > 0 and out["batch"] == 4


# ----------------------------------------------------------------------------- tokenizer

def test_tokenizer_never_increases_the_distance():
    alphabet = m.Alphabet(tuple(m.AG_NEWS_CHARS))
    result = m.tokenizer_check(alphabet, list(m.FALLBACK_TEXTS), 400, seed=8)
    assert result["violations"] == 0 and sum(result["hist"].values()) == 400
    # case changes and characters outside the alphabet are invisible: some single edits cost 0 after encoding
    assert 0 < result["invisible_single_edits"] < 1
    rows = m.tokenizer_examples(alphabet, m.FALLBACK_TEXTS[0][:30])
    assert all(r["encoded_distance"] <= r["raw_distance"] == 1 for r in rows)
    assert rows[0]["encoded_distance"] == 0  # lower-casing one letter


# ----------------------------------------------------------------------------- ERP

def test_erp_checks_and_helpers():
    result = m.erp_checks(120, 6, 4, seed=9)
    assert result["s4_max_abs_gap"] == 0.0 and result["erp1_indel_gap"] == 0.0  # sums of ones: exact
    for key in ("erp2_weighted_gap", "naive_gap", "padding_gap"):  # sums of sqrt(2) and norms: rounding only
        assert result[key] < 1e-12, key
    assert result["embedding_ratio_max"] <= 1 + 1e-12
    assert 1 - 1e-12 <= result["erp2_over_lev_min"] <= result["erp2_over_lev_max"] <= math.sqrt(2) + 1e-12
    assert m.weighted_levenshtein("kitten", "sitting", 1, 1) == 3
    assert m.weighted_levenshtein("ab", "ba", 10, 1) == 2
    assert m.lcs_length("abcbdab", "bdcaba") == 4


def test_erp_p2_is_not_sqrt2_times_levenshtein():
    """One substitution costs sqrt(2) at p = 2, but two substitutions can be cheaper as moves: measured, not assumed."""
    oh = lambda s: m.one_hot(s, 3)  # noqa: E731
    assert math.isclose(m.erp_distance(oh([1]), oh([2]), 2), math.sqrt(2))
    # a shift: 'abab' -> 'baba' has d_Lev 2 (delete + insert), ERP_2 = 2 < 2 sqrt(2)
    assert m.levenshtein([1, 2, 1, 2], [2, 1, 2, 1]) == 2
    assert math.isclose(m.erp_distance(oh([1, 2, 1, 2]), oh([2, 1, 2, 1]), 2), 2.0)


# ----------------------------------------------------------------------------- figures and exercises

def test_figures_have_labelled_axes():
    import matplotlib.pyplot as plt

    table = m.growth_table((4, 8, 16), (2, 4), 2)
    bfs = m.bfs_vs_count((2, 4), (2,), 2, 1000)
    data = m.ag_news_strings(20)
    ag = m.ag_news_neighbourhoods(data["seqs"][:20], data["sigma"], 2, 2)
    draws = [(m.draw_table, dict(source="kitten", target="sitting")),
             (m.draw_formula, dict(result=m.formula_check(40, 6, 4))),
             (m.draw_growth_overview, dict(table=table, bfs=bfs, sigma=4, n=8)),
             (m.draw_growth, dict(table=table, k=2, sigma=4, ag=ag)),
             (m.draw_ag_news, dict(ag=ag)),
             (m.draw_tokenizer, dict(result=m.tokenizer_check(m.Alphabet(tuple(m.AG_NEWS_CHARS)),
                                                             list(m.FALLBACK_TEXTS), 50))),
             (m.draw_erp, dict(result=m.erp_checks(20, 5, 3)))]
    for draw, kwargs in draws:
        fig = m.figure(10, 4)
        draw(fig, **kwargs)
        assert not unlabelled_axes(fig), draw.__name__
        plt.close(fig)


def test_tables_show_the_checks():
    script = m.edit_script("sitting", "strings")
    assert m.script_table(script, "sitting", "strings").column("value")[-2:] == [3, "strings"]
    checks = m.checks_table(m.script_check(20, 5, 3), m.metric_check(20, 5, 3))
    assert checks.column("violations") == [0, 0, 0, 0] and checks.column("cases") == [20, 20, 20, 20]
    assert m.duplicates_table("aab", "ab").column("distinct strings") == [3, 2, 5]
    assert m.formula_table(m.formula_check(30, 5, 3), 5, 3).column("violations") == [0, 0, 0, 0]
    assert len(m.bfs_table(m.bfs_vs_count((2, 4), (2,), 2, 1000), last=2)) == 2
    erp = m.erp_checks(10, 4, 3)
    assert len(m.erp_table(erp)) == 5 and len(m.erp_ratio_table(erp)) == 4
    assert "lower-case one letter" in repr(m.tokenizer_table(m.Alphabet(tuple(m.AG_NEWS_CHARS)), "Abc def"))


def test_think_exercise_has_a_model_answer():
    assert set(m.MODEL_ANSWERS) == {4} and "sqrt(2)" in m.MODEL_ANSWERS[4]


@pytest.mark.parametrize("checker, good, wrong", [
    (m.check_exercise_levenshtein, m.levenshtein, lambda a, b: abs(len(a) - len(b))),
    (m.check_exercise_runs, m.runs, lambda s: len(set(s))),
    (m.check_exercise_neighbour_count, lambda s, sigma: m.neighbour_count(len(s), sigma, m.runs(s)),
     lambda s, sigma: 2 * len(s) * sigma + sigma),
])
def test_exercise_checkers(checker, good, wrong, capsys):
    assert checker(good).status == "solved"
    assert checker(wrong).status == "incorrect"

    def stub(*args):
        raise NotImplementedError

    result = checker(stub)
    assert result.status == "not attempted"
    assert result.fn is not stub
