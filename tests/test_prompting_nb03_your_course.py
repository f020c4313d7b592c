"""The helpers of notebook 3 of the prompting series (lionsnb.prompting.nb03_your_course): the teacher's file, the
resumable study, pass rates, the synthetic comparison, figures that say when they have nothing to show, exercises."""
from __future__ import annotations

import random

import pytest

import lionsnb.prompting.nb03_your_course as m
from lionsnb.plotting import unlabelled_axes
from lionsnb.prompting.backends import ScriptedBackend
from lionsnb.prompting.bank import load_bank
from lionsnb.prompting.strategies import STRATEGIES
from lionsnb.prompting.study import pass_rates, question_scores
from lionsnb.prompting.synthetic import scripted_rows


@pytest.fixture(scope="module")
def bank():
    return load_bank()


@pytest.fixture(scope="module")
def teacher():
    bank, problems = m.load_course(m.EXAMPLE_FILE)
    assert problems == []
    return bank


@pytest.fixture(scope="module")
def synthetic_06(bank):
    return scripted_rows(bank, 0.6, seed=0, n_questions=40)


def test_spec_profiles_and_knobs():
    assert m.SPEC.name == "prompting.nb03_your_course" and m.SPEC.validate_knobs({})
    for profile in ("smoke", "teach", "full"):
        sizes = m.SPEC.sizes(profile)
        assert set(sizes.strategies) <= set(STRATEGIES)
        assert sizes.reasoning_tokens >= 2 * sizes.direct_tokens >= 128


def test_resolve_course_file(tmp_path):
    assert m.resolve_course_file("") == m.EXAMPLE_FILE
    with pytest.raises(FileNotFoundError, match="no such file"):
        m.resolve_course_file(str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match="folder"):
        m.resolve_course_file(str(tmp_path))


def test_example_loads_and_broken_copy_reports_every_mistake(teacher, tmp_path):
    assert len(teacher) == 6 and len(teacher.courses) == 2
    rows = m.course_rows(teacher)
    assert sum(r["MCQ-1"] + r["MCQ-n"] + r["open"] for r in rows) == 6
    path = m.broken_example(tmp_path)
    bank, problems = m.load_course(path)
    assert bank is None and len(problems) == 4
    joined = "\n".join(problems)
    for column in ("correct_options", "numeric_tolerance", "question_answer", "difficulty"):
        assert f"'{column}'" in joined
    assert all(p.startswith("row ") for p in problems)
    with pytest.raises(ValueError, match="4 problem"):
        m.require_sound(bank, problems, path)
    text, again = m.broken_example_problems()
    assert len(again) == 4 and "trivial" in text
    assert m.broken_example(tmp_path) != path  # a new file each time, nothing overwritten


def test_problem_lines():
    assert m.problem_lines("f.csv: 2 problem(s):\n  row 2, a\n  row 3, b") == ["row 2, a", "row 3, b"]
    assert m.problem_lines("f.csv, row 1 (header): missing column(s)") == ["f.csv, row 1 (header): missing column(s)"]


# ============================================================================ notebook 3: resuming


def test_resumed_study_repeats_no_finished_call(teacher, tmp_path):
    backend = ScriptedBackend.from_bank(teacher, seed=0, accuracy=0.6, malformed_rate=0.1)
    strategies = ["zero_shot", "one_shot", "self_refine"]
    study = m.resumed_study(backend, teacher, strategies, tmp_path, bank=teacher, decoding={"temperature": 0.0},
                             grader=backend, progress=False)
    p1, p2 = study["phase1"], study["phase2"]
    assert len(p1["questions"]) == 3 and len(p2["questions"]) == 6
    assert study["repeated"] == 0 and study["phase1_calls_served"] == study["phase1_calls"] == p1["calls"] > 0
    assert p2["cached"] == p1["calls"] and backend.calls == p1["new"] + p2["new"] == p2["calls"]
    assert any(r["grader_calls"] for r in study["rows"])  # the grader's calls are cached and counted too
    rerun = m.resumed_study(backend, teacher, strategies, tmp_path, bank=teacher, decoding={"temperature": 0.0},
                             grader=backend, progress=False)
    assert rerun["phase1"]["new"] == rerun["phase2"]["new"] == 0


def test_resumed_study_counts_repeats_without_a_cache(teacher, tmp_path, monkeypatch):
    """If the cache were lost between the two phases, the finished calls would be counted as repeated."""
    backend = ScriptedBackend.from_bank(teacher, seed=0)
    real = m.run_study
    folders = iter([tmp_path / "a", tmp_path / "b"])
    monkeypatch.setattr(m, "run_study", lambda *a, **k: real(a[0], a[1], a[2], next(folders), **k))
    study = m.resumed_study(backend, teacher, ["zero_shot"], tmp_path, bank=teacher, decoding={}, progress=False)
    assert study["repeated"] == study["phase1_calls"] == 3


# ============================================================================ notebook 3: pass rates


def hand_rows():
    rows = []
    grades = {("A", "q1"): [1, 0, 1], ("A", "q2"): [0, 0, 1], ("B", "q3"): [1, 1, 1], ("C", "q4"): [0, 0, 0]}
    program = {"A": "P", "B": "P", "C": "Q"}
    for (course, qid), gs in grades.items():
        for strategy, g in zip(STRATEGIES, gs):
            rows.append({"question_id": qid, "course_id": course, "program": program[course], "strategy": strategy,
                         "question_type": "mcq", "grade": float(g), "parsed": [0] if g else [1]})
    return rows


def test_pass_rate_view_on_hand_made_rows():
    view = m.pass_rate_view(hand_rows(), thresholds=(0.3, 0.5, 0.9))
    # course A: q1 mean 2/3, q2 mean 1/3 -> 0.5; any: 1; B: 1; C: 0
    assert view["scores"]["mean"] == pytest.approx({"A": 0.5, "B": 1.0, "C": 0.0})
    assert view["scores"]["any"] == pytest.approx({"A": 1.0, "B": 1.0, "C": 0.0})
    assert view["curves"]["mean"]["P"] == [1.0, 1.0, 0.5] and view["curves"]["mean"]["Q"] == [0.0, 0.0, 0.0]
    assert view["curves"]["mean"][m.ALL_PROGRAMS] == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert view["programs"] == {"P": ["A", "B"], "Q": ["C"], m.ALL_PROGRAMS: ["A", "B", "C"]}
    assert m.rate_at(view, "any", "P", 0.9) == 1.0
    assert all(m.identities(hand_rows(), view).values())
    broken = dict(view, curves={**view["curves"], "mean": {"P": [0.5, 1.0, 1.0]}})
    assert not m.identities(hand_rows(), broken)["pass_rates_monotone"]


def test_identities_and_consistency_on_a_synthetic_study(synthetic_06, bank):
    assert len({r["question_id"] for r in synthetic_06}) == 40
    view = m.pass_rate_view(synthetic_06)
    assert all(m.identities(synthetic_06, view).values())
    for how in m.AGGREGATIONS:  # the per-program curves are the package's pass_rates
        reference = pass_rates(synthetic_06, m.THRESHOLDS, how)
        assert {p: v for p, v in view["curves"][how].items() if p != m.ALL_PROGRAMS} == reference
    program_of = {r["course_id"]: r["program"] for r in synthetic_06}
    for theta in (0.4, 0.55, 0.7):  # the exercise reference agrees with the package
        i = m.THRESHOLDS.index(theta)
        mine = m.program_pass_rates(view["scores"]["mean"], program_of, theta)
        assert mine == pytest.approx({p: v[i] for p, v in pass_rates(synthetic_06, m.THRESHOLDS).items()})


def test_majority_reference_matches_the_study(synthetic_06):
    majority = question_scores(synthetic_06, "majority")
    checked = 0
    for qid in majority:
        mine = m.rows_of_question(synthetic_06, qid)
        if mine[0]["question_type"] != "mcq":
            continue
        parsed = [tuple(r["parsed"]) if r["parsed"] is not None else None for r in mine]
        assert m.majority_score(parsed, [r["grade"] for r in mine]) == majority[qid], qid
        checked += 1
    assert checked >= 20


def test_scripted_accuracy_orders_the_scores(bank):
    low = question_scores(scripted_rows(bank, 0.3, n_questions=40), "mean")
    high = question_scores(scripted_rows(bank, 0.9, n_questions=40), "mean")
    assert sum(high.values()) / len(high) > sum(low.values()) / len(low) + 0.3


def test_synthetic_study_is_cached_by_ctx_cached_on_its_arguments(bank, tmp_path):
    from lionsnb.cache import ArtifactCache

    cache = ArtifactCache(tmp_path, method="prompting.nb03_your_course", profile="smoke")
    args = dict(bank=bank, accuracies=[0.6], seed=0, n_questions=13, strategies=list(STRATEGIES))
    first = cache.call("synthetic_study", m.scripted_study, **args)
    second = cache.call("synthetic_study", m.scripted_study, **args)
    assert cache.misses == 1 and cache.hits == 1 and second[0.6] == first[0.6]
    cache.call("synthetic_study", m.scripted_study, **dict(args, seed=1))
    assert cache.misses == 2


def test_draw_functions_label_their_axes(synthetic_06):
    view = m.pass_rate_view(synthetic_06)
    fig = m.figure(12, 4)
    m.draw_pass_rates(fig, view=view, program=m.ALL_PROGRAMS, threshold=0.5)
    assert unlabelled_axes(fig) == []
    fig = m.figure(14, 4)
    m.draw_synthetic_overview(fig, views={0.3: view, 0.6: view}, threshold=0.6)
    assert unlabelled_axes(fig) == []
    fig = m.figure(12, 4)
    m.draw_bank_pass_rates(fig, views={0.6: view}, accuracy=0.6, program=m.ALL_PROGRAMS, threshold=0.5)
    assert unlabelled_axes(fig) == []


def test_an_empty_file_figure_says_so_and_shows_the_replies(teacher, capsys):
    """Issue 17: the teacher's pass-rate figure was empty twice; now it says why and shows the raw replies."""
    rows = [dict(r, grade=0.0 if r["question_type"] == "mcq" else None) for r in _teacher_rows(teacher)]
    view = m.pass_rate_view(rows)
    shown = m.file_figure(view, rows, teacher, 0.5)
    assert shown is not None and len(shown) == len(rows) and "reply" in shown.columns
    assert "Nothing to plot" in capsys.readouterr().out
    assert m.file_explorer(view, rows, 0.5) is None and "No explorer" in capsys.readouterr().out
    good = [dict(r, grade=1.0) for r in rows]
    assert m.file_figure(m.pass_rate_view(good), good, teacher, 0.5) is None  # a figure this time
    import matplotlib.pyplot as plt

    plt.close("all")


def _teacher_rows(teacher):
    return [{"question_id": q.question_id, "course_id": q.course_id, "program": teacher.course_of(q).course_program,
             "strategy": "zero_shot", "question_type": q.question_type, "parsed": None, "raw_answer": "no idea",
             "grade": None, "numeric_ok": None, "grade_label": None} for q in teacher]


def test_tables_of_the_notebook(teacher, synthetic_06):
    rows = _teacher_rows(teacher)
    assert len(m.course_table(teacher)) == 2
    assert m.problems_table([], "none").column("problem") == ["(none)"]
    view = m.pass_rate_view(synthetic_06)
    assert len(m.file_scores_table(view, 0.5, m.identities(synthetic_06, view))) == 3
    assert len(m.synthetic_table({0.6: synthetic_06}, {0.6: view}, 0.5)) == 1
    assert len(m.strategy_table(rows, m.summary([dict(r, grade=0.0) for r in rows]), None)) == 1


def test_nearest_threshold_and_score_flag():
    assert m.nearest_threshold(0.52) == 0.5 and m.nearest_threshold(0.9) == 0.9
    assert m.score_or_flag(float("nan")) == -1.0 and m.score_or_flag(0.25) == 0.25


def test_disputed_question_has_disagreeing_strategies(synthetic_06):
    qid = m.disputed_question(synthetic_06, mcq_only=True)
    answers = {tuple(r["parsed"]) if r["parsed"] is not None else None for r in m.rows_of_question(synthetic_06, qid)}
    assert len(answers) >= 2


def test_exercise_checkers_of_notebook_3():
    assert m.check_exercise_pass_rates(m.program_pass_rates).status == "solved"
    strict = lambda scores, program_of, theta: m.program_pass_rates(scores, program_of, theta + 1e-9)  # noqa: E731
    assert m.check_exercise_pass_rates(strict).status == "incorrect"  # a score equal to theta must pass
    assert m.check_exercise_scores(m.score_over_strategies).status == "solved"
    assert m.check_exercise_scores(lambda grades, how: min(grades)).status == "incorrect"

    def last_wins(parsed, grades):
        votes = [(p, g) for p, g in zip(parsed, grades) if p is not None]
        if not votes:
            return 0.0
        counts = {p: sum(q == p for q, _ in votes) for p, _ in votes}
        best = max(counts.values())
        return float([g for p, g in votes if counts[p] == best][-1])

    assert m.check_exercise_majority(m.majority_score).status == "solved"
    assert m.check_exercise_majority(last_wins).status == "incorrect"  # ties go to the first answer


def test_random_scores_respect_mean_le_any():
    rng = random.Random(0)
    for _ in range(100):
        grades = [rng.choice([0.0, 0.25, 0.75, 1.0]) for _ in range(rng.randint(1, 8))]
        assert m.score_over_strategies(grades, "mean") <= m.score_over_strategies(grades, "any")
