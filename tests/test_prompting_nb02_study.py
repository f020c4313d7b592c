"""Tests of notebook 2 of the prompting series (lionsnb.prompting.nb02_study): question choice, the grading rule,
grader agreement and its degenerate cases, chance levels, identities, tables, figures and exercises."""
from __future__ import annotations

import math

import matplotlib
import pytest

matplotlib.use("Agg")

import lionsnb.prompting.nb02_study as s
from lionsnb.plotting import unlabelled_axes
from lionsnb.prompting.backends import ScriptedBackend
from lionsnb.prompting.bank import load_bank
from lionsnb.prompting.grading import cohen_kappa
from lionsnb.prompting.strategies import CALLS, STRATEGIES


@pytest.fixture(scope="module")
def bank():
    return load_bank()


@pytest.fixture(scope="module")
def small(bank):
    """A 12-question stratified sample (all three kinds, several courses)."""
    return bank.select(n=12, seed=1)


@pytest.fixture(scope="module")
def scripted_rows(bank, small):
    """Primary rows of two scripted runs (accuracy 0.2 and 0.9) on the small sample."""
    return s.scripted_study(small, (0.2, 0.9), seed=0)


# ----------------------------------------------------------------------------- questions and calls

def test_shortest_questions_cycle_kinds_distinct_courses_and_are_shortest(bank):
    chosen = s.shortest_questions(bank, 3)
    assert [s._kind(q) for q in chosen] == list(s.SHORTEST_CYCLE)
    assert len({q.course_id for q in chosen}) == 3
    two = s.shortest_questions(bank, 2)
    first_mcq = min((q for q in bank.questions if q.kind == "mcq_single"),
                    key=lambda q: (s.prompt_chars(bank, q), q.question_id))
    assert two[0] == first_mcq and two[1].numeric_answer is not None
    assert s.shortest_questions(bank, 2) == two  # deterministic
    sub = s.choose_questions(bank, 3, "shortest")
    assert {q.question_id for q in sub.questions} == {q.question_id for q in chosen}
    assert set(sub.courses) == {q.course_id for q in chosen}


def test_choose_questions_stratified_and_whole_bank(bank):
    assert s.choose_questions(bank, None) is bank and s.choose_questions(bank, 10_000) is bank
    sample = s.choose_questions(bank, 10, "stratified", seed=3)
    assert len(sample) == 10 and sample.questions == s.choose_questions(bank, 10, "stratified", seed=3).questions
    with pytest.raises(ValueError):
        s.choose_questions(bank, 3, "random")


def test_calls_per_question_matches_the_strategy_table(bank):
    qs = s.shortest_questions(bank, 3)
    plan = s.calls_per_question(qs)
    assert plan["answer_calls"] == sum(CALLS[st][0 if q.is_mcq else 1] for q in qs for st in STRATEGIES)
    assert plan["grader_calls"] == 8 * sum(not q.is_mcq for q in qs)


# ----------------------------------------------------------------------------- running and grading

def test_run_local_study_counts_calls_and_resumes_from_the_cache(bank, tmp_path):
    qs = s.choose_questions(bank, 3, "shortest")
    backend = ScriptedBackend.from_bank(bank, accuracy=0.7, malformed_rate=0.2, seed=1)
    first = s.run_local_study(backend, qs, bank, tmp_path, decoding=s.decoding_settings("deterministic"),
                              grader=backend, progress=False)
    assert len(first["rows"]) == 3 * len(STRATEGIES)
    assert first["cached"] == 0 and first["generated"] == first["calls"] > 0
    calls_before = backend.calls
    again = s.run_local_study(backend, qs, bank, tmp_path, decoding=s.decoding_settings("deterministic"),
                              grader=backend, progress=False)
    assert again["generated"] == 0 and again["cached"] == again["calls"] == first["calls"]
    assert backend.calls == calls_before  # nothing asked twice
    assert [r["grade"] for r in again["rows"]] == [r["grade"] for r in first["rows"]]


def test_primary_rows_grade_numeric_answers_with_the_checker(bank):
    numeric = next(q for q in bank.questions if q.numeric_answer is not None)
    text = next(q for q in bank.questions if q.question_type == "open_answer" and q.numeric_answer is None)
    mcq = next(q for q in bank.questions if q.kind == "mcq_multiple")
    base = {"course_id": "X", "program": "P", "year": "bachelor", "language": "English", "bloom": None,
            "difficulty": None, "strategy": "zero_shot", "raw_answer": "", "parsed": None, "parseable": True}
    rows = [dict(base, question_id=numeric.question_id, question_type="open_answer", multiple=False,
                 grade=0.25, grade_label="mostly_incorrect", numeric_ok=True),
            dict(base, question_id=numeric.question_id, question_type="open_answer", multiple=False,
                 grade=1.0, grade_label="correct", numeric_ok=None),
            dict(base, question_id=text.question_id, question_type="open_answer", multiple=False,
                 grade=None, grade_label=None, numeric_ok=None),
            dict(base, question_id=mcq.question_id, question_type="mcq", multiple=True, grade=1.0, grade_label=None,
                 numeric_ok=None, parsed=[0, 1])]
    out = s.primary_rows(rows, bank.questions)
    assert [r["grade"] for r in out] == [1.0, 0.0, None, 1.0]       # checker wins; no number = wrong
    assert [r["llm_grade"] for r in out] == [0.25, 1.0, None, None]  # the LLM grade is kept
    assert [r["grade_source"] for r in out] == ["checker", "checker", "ungraded", "mcq"]
    assert [r["kind"] for r in out] == ["open_answer", "open_answer", "open_answer", "mcq_multiple"]
    assert rows[0]["grade"] == 0.25  # the input rows are not modified


def _num_row(label, ok):
    return {"question_type": "open_answer", "numeric_gold": True, "grade_label": label, "numeric_ok": ok}


def test_grader_agreement_cases():
    assert s.grader_agreement([])["reason"].startswith("no open answer")
    none = s.grader_agreement([_num_row(None, True), _num_row(None, False)])
    assert not none["kappa_defined"] and none["labelled"] == 0 and math.isnan(none["kappa"])
    assert "no grade label" in none["reason"]
    # one grader constant: kappa would be 0 whatever the agreement -> reported as undefined, agreement kept
    const = s.grader_agreement([_num_row("correct", True), _num_row("correct", False), _num_row("correct", True)])
    assert not const["kappa_defined"] and math.isnan(const["kappa"]) and const["agreement"] == pytest.approx(2 / 3)
    assert "LLM grader" in const["reason"]
    assert cohen_kappa([1, 1, 1], [1, 0, 1]) == 0.0  # ... which is what the formula gives
    rows = [_num_row("correct", True), _num_row("almost_correct", True), _num_row("wrong", False),
            _num_row("mostly_incorrect", True), _num_row("correct", None), _num_row(None, True)]
    got = s.grader_agreement(rows)
    llm, checker = [1, 1, 0, 0, 1], [1, 1, 0, 1, 0]
    assert got["kappa_defined"] and got["labelled"] == 5 and got["numeric_answers"] == 6
    assert got["kappa"] == pytest.approx(cohen_kappa(llm, checker))
    assert got["agreement"] == pytest.approx(3 / 5) and got["label_rate"] == pytest.approx(5 / 6)


# ----------------------------------------------------------------------------- measures and identities

def test_chance_levels(bank):
    single = next(q for q in bank.questions if q.kind == "mcq_single" and len(q.question_options) == 4)
    multi = next(q for q in bank.questions if q.kind == "mcq_multiple" and len(q.question_options) == 4)
    assert s.chance_level([single])["mcq"] == pytest.approx(0.25)
    assert s.chance_level([multi])["mcq"] == pytest.approx(1 / 15)
    assert s.chance_level([single, multi])["mcq"] == pytest.approx((0.25 + 1 / 15) / 2)
    assert s.oracle_chance_level([single]) == pytest.approx(1 - 0.75 ** 8)
    assert s.oracle_chance_level([single], k=1) == pytest.approx(0.25)
    assert math.isnan(s.chance_level([q for q in bank.questions if not q.is_mcq][:3])["mcq"])


def test_toy_rows_match_the_hand_values():
    rows = s.toy_rows()
    for how, expected in s.TOY_EXPECTED.items():
        got = list(s.question_scores(rows, how).values())
        assert sum(got) / len(got) == pytest.approx(expected)
    assert s.aggregates(rows) == pytest.approx(s.TOY_EXPECTED)


def test_scripted_study_mechanics(scripted_rows, small):
    low, high = scripted_rows[0.2], scripted_rows[0.9]
    assert len(low) == len(high) == len(small) * len(STRATEGIES)
    a_low, a_high = s.aggregates(low), s.aggregates(high)
    assert a_low["mean"] < a_high["mean"]
    assert a_high["majority"] >= a_high["mean"] - 1e-9   # votes concentrate on the right answer
    for rows in (low, high):
        curves = s.pass_curves(rows)
        assert s.identity_checks(rows, curves) == {"mean_above_any": 0, "majority_above_any": 0,
                                                   "pass_rate_increases": 0}
        for per in curves.values():
            for rates in per.values():
                assert rates[0] == 1.0 and len(rates) == len(s.THETA_CURVE)
    table = s.strategy_summary(high)
    assert [t["strategy"] for t in table] == list(STRATEGIES)
    assert all(0 <= t["unparseable"] <= 1 for t in table)
    assert len(s.strategy_stats_table(high, 0.25)) == len(STRATEGIES)


def test_identity_checks_count_violations():
    rows = s.toy_rows()
    bad = {"mean": {"Toy": [1.0, 0.5, 0.75, 0.0]}, "majority": {"Toy": [1.0, 1.0]}, "any": {"Toy": [0.0, 0.5]}}
    assert s.identity_checks(rows, bad)["pass_rate_increases"] == 2


def test_overall_pass_rate_and_rate_at():
    rows = s.toy_rows()  # two courses, each with one question: mean 1/3 and 1/3, any 1 and 1
    assert s.overall_pass_rate(rows, 0.3, "mean") == 1.0 and s.overall_pass_rate(rows, 0.4, "mean") == 0.0
    assert s.overall_pass_rate(rows, 1.0, "any") == 1.0
    curve = s.pass_curves(rows)["mean"]["Toy"]
    assert s.rate_at(curve, 0.33) == 1.0 and s.rate_at(curve, 0.34) == 0.0


def test_breakdowns_count_questions(scripted_rows, small):
    parts = s.breakdowns(scripted_rows[0.9])
    assert set(parts) == set(s.BREAKDOWNS)
    assert sum(n for _, n in parts["kind"].values()) == len(small)
    kinds = {q.kind for q in small.questions}
    assert set(parts["kind"]) == kinds


def test_scripted_study_is_cached_on_its_arguments(bank, small, tmp_path):
    """ctx.cached keys the synthetic study on the bank, the accuracies and the seed (no lambda, nothing captured)."""
    from lionsnb.cache import ArtifactCache

    cache = ArtifactCache(tmp_path, method="prompting.nb02_study", profile="smoke")
    first = cache.call("scripted_study", s.scripted_study, bank=small, accuracies=[0.9], seed=0)
    again = cache.call("scripted_study", s.scripted_study, bank=small, accuracies=[0.9], seed=0)
    assert cache.misses == 1 and cache.hits == 1 and again[0.9] == first[0.9]
    cache.call("scripted_study", s.scripted_study, bank=small, accuracies=[0.9], seed=1)
    cache.call("scripted_study", s.scripted_study, bank=bank.select(n=13, seed=2), accuracies=[0.9], seed=0)
    assert cache.misses == 3  # another seed or another bank is another entry


def test_tables_of_the_notebook(scripted_rows, small):
    rows = scripted_rows[0.9]
    agreement = s.grader_agreement(rows)
    assert len(s.grader_table(agreement, s.llm_label_rate(rows))) == 5
    assert len(s.grader_replies(rows, n=3)) == 3
    assert "no grader call" in repr(s.grader_replies([dict(r, grader_reply=None) for r in rows]))
    agg = s.aggregates_table({"scripted 0.9": s.aggregates(rows)})
    assert agg.column("who answers")[-1].startswith("the paper") and len(agg) == 2
    parts = {"scripted": s.breakdowns(rows)}
    assert len(s.breakdowns_table(parts)) == sum(len(v) for v in parts["scripted"].values())
    curves = s.pass_curves(rows)
    checks = {"scripted": s.identity_checks(rows, curves)}
    rates = {"scripted": {how: s.overall_pass_rate(rows, 0.5, how) for how in s.AGGREGATIONS}}
    assert s.identity_table(checks, rates, 0.5).column("questions with mean > any") == [0]
    assert len(s.questions_table(small, small)) == len(small)


# ----------------------------------------------------------------------------- figures and exercises

def test_figures_have_labelled_axes(scripted_rows, small):
    import matplotlib.pyplot as plt

    rows = scripted_rows[0.9]
    fig = plt.figure(figsize=(12, 4))
    s.draw_strategies(fig, rows=rows, chance=0.25)
    assert unlabelled_axes(fig) == []
    fig2 = plt.figure(figsize=(12, 4))
    s.draw_aggregates(fig2, local=s.aggregates(scripted_rows[0.2]), scripted={0.9: s.aggregates(rows)})
    assert unlabelled_axes(fig2) == []
    fig3 = plt.figure(figsize=(14, 4))
    s.draw_breakdowns(fig3, parts={"a": s.breakdowns(rows)})
    assert unlabelled_axes(fig3) == []
    curves = {"scripted 0.9": s.pass_curves(rows)}
    scores = {"scripted 0.9": {h: s.course_scores(rows, h) for h in s.AGGREGATIONS}}
    fig4 = plt.figure(figsize=(12, 4))
    s.draw_pass_explorer(fig4, curves=curves, scores=scores, programs={c: v.course_program for c, v in
                                                                       small.courses.items()},
                         theta=0.6, how="any", source="scripted 0.9")
    assert unlabelled_axes(fig4) == []
    fig5 = plt.figure(figsize=(12, 4))
    s.draw_pass_overview(fig5, scores={"this run": scores["scripted 0.9"], "scripted 0.9": scores["scripted 0.9"]},
                         theta=0.5)
    assert unlabelled_axes(fig5) == [] and len(fig5.axes) == 2
    plt.close("all")


def test_exercise_references():
    assert s.any_strategy_accuracy([[0, 1, 0], [0, 0, 0]]) == 0.5
    assert s.majority_vote_grade([(2,), (1,), (1,), (2,)], (1,)) == 0.0   # tie: the first answer given wins
    assert s.majority_vote_grade([(2, 0), (0, 2), (1,)], (0, 2)) == 1.0  # sets, not order
    assert s.majority_vote_grade([None, None], (0,)) == 0.0
    rates = s.program_pass_rates({"a": 0.5, "b": 0.49, "c": 0.9}, {"a": "X", "b": "X", "c": "Y"}, 0.5)
    assert rates == {"X": 0.5, "Y": 1.0}


def test_exercise_checkers_accept_right_and_reject_wrong_answers():
    import numpy as np

    assert s.check_exercise_any(lambda g: float(np.mean([max(r) for r in g]))).status == "solved"
    assert s.check_exercise_any(lambda g: float(np.mean(g))).status == "incorrect"       # the mean, not the oracle
    assert s.check_exercise_majority(s.majority_vote_grade).status == "solved"

    def last_wins(answers, gold):  # breaks ties by the LAST answer: wrong on the tie case
        votes = [tuple(sorted(a)) for a in answers if a is not None]
        if not votes:
            return 0.0
        best = max(votes.count(v) for v in votes)
        return float(set([v for v in votes if votes.count(v) == best][-1]) == set(gold))

    assert s.check_exercise_majority(last_wins).status == "incorrect"
    assert s.check_exercise_pass_rate(s.program_pass_rates).status == "solved"

    def strict(sc, prog, t):
        return {p: float(np.mean([sc[c] > t for c in sc if prog[c] == p])) for p in sorted(set(prog.values()))}

    assert s.check_exercise_pass_rate(strict).status == "incorrect"                      # score == theta passes

    def stub(*args):
        raise NotImplementedError

    assert s.check_exercise_pass_rate(stub).status == "not attempted"


def test_spec_profiles_and_knobs():
    assert s.SPEC.name == "prompting.nb02_study"
    assert s.SPEC.profiles["smoke"]["n_questions"] == 2 and s.SPEC.profiles["full"]["n_questions"] is None
    assert set(s.SPEC.knobs) >= {"backend", "model", "base_url", "endpoint_model", "api_key_env", "decoding",
                                 "n_questions"}
    for profile in ("smoke", "teach", "full"):  # reasoning strategies get at least twice the direct cap
        sizes = s.SPEC.sizes(profile)
        assert sizes.reasoning_tokens >= 2 * sizes.direct_tokens and sizes.grader_tokens >= 16
    for profile in ("teach", "full"):  # room to finish where truncation is asserted (smoke only reports it)
        sizes = s.SPEC.sizes(profile)
        assert sizes.reasoning_tokens >= 2 * sizes.direct_tokens >= 192 and sizes.grader_tokens >= 64
    from lionsnb.params import ParameterError

    with pytest.raises(ParameterError):
        s.setup("smoke", backend="gpt4")
