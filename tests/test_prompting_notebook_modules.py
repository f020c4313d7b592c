"""The helpers of the prompting notebooks 1 (strategies) and 3 (your course): fast, no real model."""
from __future__ import annotations

import dataclasses
import html
import random
from types import SimpleNamespace

import pytest

import lionsnb.prompting.explore_strategies as es
import lionsnb.prompting.your_course as yc
from lionsnb.plotting import unlabelled_axes
from lionsnb.prompting.backends import LocalHFBackend, MissingAPIKeyError, OpenAICompatibleBackend, ScriptedBackend
from lionsnb.prompting.grading import check_numeric, extract_mcq
from lionsnb.prompting.strategies import LABEL_STYLE, STRATEGIES
from lionsnb.prompting.study import pass_rates, question_scores


@pytest.fixture(scope="module")
def bank():
    return es.project_bank()


@pytest.fixture(scope="module")
def mcq(bank):
    return bank.question("ME-251-01")


@pytest.fixture(scope="module")
def open_q(bank):
    return next(q for q in bank if not q.is_mcq and q.numeric_answer is None)


@pytest.fixture(scope="module")
def teacher():
    bank, problems = yc.load_course(yc.EXAMPLE_FILE)
    assert problems == []
    return bank


@pytest.fixture(scope="module")
def synthetic_06(bank):
    return yc.synthetic_rows(bank, 0.6, seed=0, n_questions=40)


def fake_ctx(tmp_path, enabled=True):
    store = {}

    def cached(name, fn, **key):
        k = (name, repr(sorted(key.items())))
        if k not in store:
            store[k] = fn()
        return store[k]

    return SimpleNamespace(cache=SimpleNamespace(root=tmp_path, enabled=enabled),
                           method=SimpleNamespace(name="prompting.test"), cached=cached, store=store, exercises={})


# ============================================================================ notebook 1: messages and calls


def test_spec_profiles_and_knobs():
    for spec in (es.SPEC, yc.SPEC):
        assert spec.validate_knobs({})  # defaults are valid
        for profile in ("smoke", "teach", "full"):
            sizes = spec.sizes(profile)
            strategies = sizes.run_strategies if spec is es.SPEC else sizes.strategies
            assert set(strategies) <= set(STRATEGIES)
    assert len(es.SPEC.sizes("teach").run_strategies) == 8
    assert es.SPEC.sizes("smoke").max_new_tokens <= 32 and yc.SPEC.sizes("smoke").max_new_tokens <= 32


def test_plan_calls_counts_and_self_refine_resends_its_conversation(bank, mcq, open_q):
    course = bank.course_of(mcq)
    counts = {s: len(es.plan_calls(s, mcq, course, es.demos_for(bank, mcq, s))) for s in STRATEGIES}
    assert counts == {s: 1 for s in STRATEGIES} | {"self_refine": 3, "expert_prompting": 4}
    assert len(es.plan_calls("expert_prompting", open_q, bank.course_of(open_q))) == 5
    calls = es.plan_calls("self_refine", mcq, course)
    assert calls[0] == calls[1][:2] and calls[1] == calls[2][:4]
    assert calls[1][2] == {"role": "assistant", "content": es.placeholder_reply("self_refine", 1)}


def test_calls_html_shows_roles_escapes_text_and_only_new_messages(bank, mcq):
    course = bank.course_of(mcq)
    text = es.calls_html(es.plan_calls("self_refine", mcq, course))
    assert text.count("<pre") == 6  # 2 + 2 new + 2 new, not 2 + 4 + 6
    for role in ("system", "user", "assistant"):
        assert f">{role}</b>" in text
    evil = dataclasses.replace(mcq, question_body="Is <script>alert(1)</script> safe?")
    shown = es.calls_html([es.build_messages("zero_shot", evil, course)])
    assert "<script>" not in shown and html.escape("<script>") in shown


def test_strategy_table_is_read_off_the_messages(bank, mcq):
    table = {r["strategy"]: r for r in es.strategy_table(bank, mcq)}
    assert [r for r in table] == list(STRATEGIES)
    assert not table["zero_shot"]["system_persona"] and not table["one_shot"]["system_persona"]
    assert all(table[s]["system_persona"] for s in STRATEGIES[2:])
    assert table["one_shot"]["demo_exchanges"] == 1 and table["cot_four_shot"]["demo_exchanges"] == 4
    assert sum(r["demo_exchanges"] for r in table.values()) == 5
    for s, r in table.items():
        assert r["label_style"] == LABEL_STYLE[s]
        assert (r["total_chars"] == r["first_call_chars"]) == (r["calls"] == 1)
    assert "[X]" in table["tree_of_thought"]["answer_format"]


def test_french_course_changes_the_wording_not_the_question(bank, mcq):
    for strategy in ("zero_shot", "cot_zero_shot", "metacog"):
        fc = es.french_comparison(bank, mcq, strategy)
        assert fc["differs"] and fc["same_roles"] and fc["body_unchanged"]
        assert fc["instruction_own"] != fc["instruction_french"]
    assert "expert" in es.french_comparison(bank, mcq, "cot_zero_shot")["persona_french"].lower()


def test_message_explorer_updates_without_a_model(bank, mcq):
    explorer = es.MessageExplorer(bank, mcq.question_id, "zero_shot")
    first = explorer.html()
    assert ">system</b>" not in first
    assert ">system</b>" in explorer.update(strategy="metacog")
    other = next(q for q in bank if q.course_id != mcq.course_id)
    assert other.question_body.split()[0] in explorer.update(question_id=other.question_id)
    with pytest.raises(ValueError):
        explorer.update(strategy="chain_of_verification")
    live = es.MessageExplorer(bank, mcq.question_id, "zero_shot")
    live.build_controls()
    live.update(strategy="cot_four_shot")
    assert live.view.value == live.html() and live.view.value.count("<pre") == 10


def test_unknown_question_id_names_close_ids(bank):
    with pytest.raises(ValueError, match="ME-251-1"):
        es.get_question(bank, "ME-251-1O")


def test_prompt_costs_over_the_bank(bank):
    costs = es.prompt_costs(bank)
    assert set(costs["self_refine"]["calls"].tolist()) == {3}
    assert set(costs["expert_prompting"]["calls"].tolist()) == {4, 5}
    assert (costs["cot_four_shot"]["total_chars"] > costs["cot_zero_shot"]["total_chars"]).all()
    assert (costs["expert_prompting"]["calls"][costs["expert_prompting"]["kind"] == "open_answer"] == 5).all()


# ============================================================================ notebook 1: backends and the run


def test_make_backend_kinds(bank, monkeypatch):
    sizes = es.SPEC.sizes("smoke")
    local = es.make_backend("local", bank=bank, sizes=sizes)
    assert isinstance(local, LocalHFBackend) and local.max_new_tokens == sizes.max_new_tokens and local._lm is None
    assert isinstance(es.make_backend("scripted", bank=bank, sizes=sizes), ScriptedBackend)
    monkeypatch.delenv("LIONSNB_TEST_NO_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="LIONSNB_TEST_NO_KEY"):
        es.make_backend("endpoint", bank=bank, sizes=sizes, base_url="http://127.0.0.1:9/v1", endpoint_model="m",
                        api_key_env="LIONSNB_TEST_NO_KEY")
    monkeypatch.setenv("LIONSNB_TEST_KEY", "sk-secret-value")
    remote = es.make_backend("endpoint", bank=bank, sizes=sizes, base_url="http://127.0.0.1:9/v1",
                             endpoint_model="m", api_key_env="LIONSNB_TEST_KEY")
    assert isinstance(remote, OpenAICompatibleBackend) and remote.max_tokens == sizes.endpoint_max_tokens
    assert "sk-secret-value" not in es.describe_backend(remote) + repr(remote)
    keyless = es.make_backend("endpoint", bank=bank, sizes=sizes, base_url="http://127.0.0.1:9/v1",
                              endpoint_model="m", api_key_env="")
    assert keyless.api_key_env is None
    with pytest.raises(ValueError):
        es.make_backend("gpt", bank=bank, sizes=sizes)
    assert es.decoding_settings("paper")["temperature"] == 0.8 and es.decoding_settings("deterministic") == {
        "temperature": 0.0}


def test_response_dir_lives_in_the_notebook_cache(tmp_path):
    path = es.response_dir(fake_ctx(tmp_path))
    assert path == tmp_path / "prompting.test" / "responses" and path.is_dir()
    off = es.response_dir(fake_ctx(tmp_path, enabled=False))
    assert tmp_path not in off.parents


def test_run_question_then_rerun_is_served_from_the_cache(bank, mcq, tmp_path):
    backend = ScriptedBackend.from_bank(bank, seed=1, accuracy=0.6, malformed_rate=0.1)
    first = es.run_question(backend, bank, mcq, STRATEGIES, tmp_path, {"temperature": 0.0}, progress=False)
    assert first["calls"] == 13 and first["cached_calls"] == 0 and backend.calls == 13
    again = es.run_question(backend, bank, mcq, STRATEGIES, tmp_path, {"temperature": 0.0}, progress=False)
    assert again["cached_calls"] == 13 and again["new_calls"] == 0 and backend.calls == 13
    assert [r["raw_answer"] for r in again["rows"]] == [r["raw_answer"] for r in first["rows"]]
    shown = es.result_rows(first["rows"], mcq)
    for row, raw in zip(shown, first["rows"]):
        style = LABEL_STYLE[raw["strategy"]]
        assert row["gold"] == {"number": "2", "letter": "B", "bracket": "[B]"}[style]
        assert row["parsed"] == es.labels_of(raw["parsed"], style)
    fig = es.figure(10, 3)
    es.draw_run(fig, rows=first["rows"], question=mcq)
    assert unlabelled_axes(fig) == []


def test_labels_of():
    assert es.labels_of((0, 2), "number") == "1, 3"
    assert es.labels_of((1,), "letter") == "B"
    assert es.labels_of((0, 3), "bracket") == "[A, D]"
    assert es.labels_of(None, "letter") == "-"


# ============================================================================ notebook 1: extraction and grading


def test_tricky_outputs_read_as_documented():
    rows = es.extraction_demo()
    assert len(rows) == len(es.TRICKY_OUTPUTS) >= 15
    assert all(r["agree"] for r in rows), [r for r in rows if not r["agree"]]
    assert any(r["expected"] == "-" for r in rows) and any(r["select all"] for r in rows)


def test_grader_labels_and_points():
    rows = es.grade_label_demo()
    assert all(r["agree"] for r in rows)
    assert {r["label"] for r in rows} >= {"correct", "almost_correct", "mostly_incorrect", "wrong", None}


def test_numeric_cases_hold_for_every_numeric_question(bank):
    numeric = [q for q in bank if q.numeric_answer is not None]
    assert len(numeric) >= 40
    for q in numeric:
        for text, expected in es.numeric_cases(q):
            assert check_numeric(text, q.numeric_answer, q.numeric_tolerance) == expected, (q.question_id, text)


def test_open_example_prefers_the_course(bank, mcq):
    numeric = es.open_example(bank, mcq, numeric=True)
    text = es.open_example(bank, mcq, numeric=False)
    assert numeric.course_id == text.course_id == mcq.course_id
    assert numeric.numeric_answer is not None and text.numeric_answer is None and not text.is_mcq
    assert es.open_example(bank, numeric, numeric=True) is numeric


# ============================================================================ notebook 1: exercises


def test_bracket_reference_and_checker(ctx_free=None):
    assert es.bracket_answer("My final answers are [C, A]", 4) == (0, 2)
    assert es.bracket_answer("[A] at first... My final answer is [D]", 4) == (3,)
    assert es.bracket_answer("My final answer is [E]", 4) == ()
    assert es.bracket_answer("no answer", 4) == ()
    for text, n in es.BRACKET_CASES:  # agrees with the package's extractor whenever the reply is a closing sentence
        if text.startswith("My final"):
            assert es.bracket_answer(text, n) == (extract_mcq(text, n, "bracket", True) or ())

    def first_group(text, n):
        import re
        g = re.findall(r"\[([A-Z, ]+)\]", text)
        return tuple(sorted("ABCDE".index(x) for x in g[0] if x.isalpha())) if g else ()

    assert es.check_exercise_bracket(first_group).status == "incorrect"
    assert es.check_exercise_bracket(es.bracket_answer).status == "solved"


def test_points_reference_and_checker():
    assert es.points_from_label("Almost Correct", es.DEFAULT_POINTS) == 0.75
    assert es.points_from_label("mostly correct", es.STRICT_POINTS) == 0.5
    with pytest.raises(ValueError):
        es.points_from_label("no idea", es.DEFAULT_POINTS)
    naive = lambda label, points: points.get(label.lower(), 0.0)  # noqa: E731
    assert es.check_exercise_points(naive).status == "incorrect"
    assert es.check_exercise_points(es.points_from_label).status == "solved"


def test_zero_shot_check_compares_structure_not_wording(bank):
    def mine(question):
        text = "Pick the right answer(s) below."  # other wording, same structure
        text += "\n" + question.question_body
        for i, option in enumerate(question.question_options):
            text += f"\n{i + 1}. {option}"
        return [{"role": "user", "content": text}]

    def with_system(question):
        return [{"role": "system", "content": "You are a student."}] + mine(question)

    def lettered(question):
        msgs = mine(question)
        for i, option in enumerate(question.question_options):
            msgs[0]["content"] = msgs[0]["content"].replace(f"\n{i + 1}. {option}", f"\n{'ABCDE'[i]}: {option}")
        return msgs

    def no_instruction(question):
        return [{"role": "user", "content": mine(question)[0]["content"].split("\n", 1)[1]}]

    assert es.check_exercise_zero_shot(mine, bank).status == "solved"
    for wrong in (with_system, lettered, no_instruction):
        assert es.check_exercise_zero_shot(wrong, bank).status == "incorrect", wrong.__name__


# ============================================================================ notebook 3: the teacher's file


def test_resolve_course_file(tmp_path):
    assert yc.resolve_course_file("") == yc.EXAMPLE_FILE
    with pytest.raises(FileNotFoundError, match="no such file"):
        yc.resolve_course_file(str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match="folder"):
        yc.resolve_course_file(str(tmp_path))


def test_example_loads_and_broken_copy_reports_every_mistake(teacher, tmp_path):
    assert len(teacher) == 6 and len(teacher.courses) == 2
    rows = yc.course_rows(teacher)
    assert sum(r["MCQ-1"] + r["MCQ-n"] + r["open"] for r in rows) == 6
    path = yc.broken_example(tmp_path)
    bank, problems = yc.load_course(path)
    assert bank is None and len(problems) == 4
    joined = "\n".join(problems)
    for column in ("correct_options", "numeric_tolerance", "question_answer", "difficulty"):
        assert f"'{column}'" in joined
    assert all(p.startswith("row ") for p in problems)
    with pytest.raises(ValueError, match="4 problem"):
        yc.require_sound(bank, problems, path)
    text, again = yc.broken_example_problems()
    assert len(again) == 4 and "trivial" in text
    assert yc.broken_example(tmp_path) != path  # a new file each time, nothing overwritten


def test_problem_lines():
    assert yc.problem_lines("f.csv: 2 problem(s):\n  row 2, a\n  row 3, b") == ["row 2, a", "row 3, b"]
    assert yc.problem_lines("f.csv, row 1 (header): missing column(s)") == ["f.csv, row 1 (header): missing column(s)"]


def test_select_questions(teacher):
    assert yc.select_questions(teacher, 0) is teacher
    two = yc.select_questions(teacher, 2, seed=0)
    assert len(two) == 2 and {q.question_id for q in two} <= {q.question_id for q in teacher}


# ============================================================================ notebook 3: resuming


def test_resumed_study_repeats_no_finished_call(teacher, tmp_path):
    backend = ScriptedBackend.from_bank(teacher, seed=0, accuracy=0.6, malformed_rate=0.1)
    strategies = ["zero_shot", "one_shot", "self_refine"]
    study = yc.resumed_study(backend, teacher, strategies, tmp_path, bank=teacher, decoding={"temperature": 0.0},
                             grader=backend, progress=False)
    p1, p2 = study["phase1"], study["phase2"]
    assert len(p1["questions"]) == 3 and len(p2["questions"]) == 6
    assert study["repeated"] == 0 and study["phase1_calls_served"] == study["phase1_calls"] == p1["calls"] > 0
    assert p2["cached"] == p1["calls"] and backend.calls == p1["new"] + p2["new"] == p2["calls"]
    assert any(r["grader_calls"] for r in study["rows"])  # the grader's calls are cached and counted too
    rerun = yc.resumed_study(backend, teacher, strategies, tmp_path, bank=teacher, decoding={"temperature": 0.0},
                             grader=backend, progress=False)
    assert rerun["phase1"]["new"] == rerun["phase2"]["new"] == 0


def test_resumed_study_counts_repeats_without_a_cache(teacher, tmp_path, monkeypatch):
    """If the cache were lost between the two phases, the finished calls would be counted as repeated."""
    backend = ScriptedBackend.from_bank(teacher, seed=0)
    real = yc.run_study
    folders = iter([tmp_path / "a", tmp_path / "b"])
    monkeypatch.setattr(yc, "run_study", lambda *a, **k: real(a[0], a[1], a[2], next(folders), **k))
    study = yc.resumed_study(backend, teacher, ["zero_shot"], tmp_path, bank=teacher, decoding={}, progress=False)
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
    view = yc.pass_rate_view(hand_rows(), thresholds=(0.3, 0.5, 0.9))
    # course A: q1 mean 2/3, q2 mean 1/3 -> 0.5; any: 1; B: 1; C: 0
    assert view["scores"]["mean"] == pytest.approx({"A": 0.5, "B": 1.0, "C": 0.0})
    assert view["scores"]["any"] == pytest.approx({"A": 1.0, "B": 1.0, "C": 0.0})
    assert view["curves"]["mean"]["P"] == [1.0, 1.0, 0.5] and view["curves"]["mean"]["Q"] == [0.0, 0.0, 0.0]
    assert view["curves"]["mean"][yc.ALL_PROGRAMS] == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert view["programs"] == {"P": ["A", "B"], "Q": ["C"], yc.ALL_PROGRAMS: ["A", "B", "C"]}
    assert yc.rate_at(view, "any", "P", 0.9) == 1.0
    assert all(yc.identities(hand_rows(), view).values())
    broken = dict(view, curves={**view["curves"], "mean": {"P": [0.5, 1.0, 1.0]}})
    assert not yc.identities(hand_rows(), broken)["pass_rates_monotone"]


def test_identities_and_consistency_on_a_synthetic_study(synthetic_06, bank):
    assert len({r["question_id"] for r in synthetic_06}) == 40
    view = yc.pass_rate_view(synthetic_06)
    assert all(yc.identities(synthetic_06, view).values())
    for how in yc.AGGREGATIONS:  # the per-program curves are the package's pass_rates
        reference = pass_rates(synthetic_06, yc.THRESHOLDS, how)
        assert {p: v for p, v in view["curves"][how].items() if p != yc.ALL_PROGRAMS} == reference
    program_of = {r["course_id"]: r["program"] for r in synthetic_06}
    for theta in (0.4, 0.55, 0.7):  # the exercise reference agrees with the package
        i = yc.THRESHOLDS.index(theta)
        mine = yc.program_pass_rates(view["scores"]["mean"], program_of, theta)
        assert mine == pytest.approx({p: v[i] for p, v in pass_rates(synthetic_06, yc.THRESHOLDS).items()})


def test_majority_reference_matches_the_study(synthetic_06):
    majority = question_scores(synthetic_06, "majority")
    checked = 0
    for qid in majority:
        mine = yc.rows_of_question(synthetic_06, qid)
        if mine[0]["question_type"] != "mcq":
            continue
        parsed = [tuple(r["parsed"]) if r["parsed"] is not None else None for r in mine]
        assert yc.majority_score(parsed, [r["grade"] for r in mine]) == majority[qid], qid
        checked += 1
    assert checked >= 20


def test_scripted_accuracy_orders_the_scores(bank):
    low = question_scores(yc.synthetic_rows(bank, 0.3, n_questions=40), "mean")
    high = question_scores(yc.synthetic_rows(bank, 0.9, n_questions=40), "mean")
    assert sum(high.values()) / len(high) > sum(low.values()) / len(low) + 0.3


def test_synthetic_study_is_cached(bank, tmp_path):
    ctx = fake_ctx(tmp_path)
    first = yc.synthetic_study(ctx, bank, (0.6,), n_questions=13, seed=0)
    assert len(ctx.store) == 1
    second = yc.synthetic_study(ctx, bank, (0.6,), n_questions=13, seed=0)
    assert second[0.6] is first[0.6] and len(ctx.store) == 1
    yc.synthetic_study(ctx, bank, (0.6,), n_questions=13, seed=1)
    assert len(ctx.store) == 2


def test_draw_functions_label_their_axes(synthetic_06):
    view = yc.pass_rate_view(synthetic_06)
    fig = yc.figure(12, 4)
    yc.draw_pass_rates(fig, view=view, program=yc.ALL_PROGRAMS, threshold=0.5)
    assert unlabelled_axes(fig) == []
    fig = yc.figure(14, 4)
    yc.draw_synthetic_overview(fig, views={0.3: view, 0.6: view}, threshold=0.6)
    assert unlabelled_axes(fig) == []


def test_nearest_threshold_and_score_flag():
    assert yc.nearest_threshold(0.52) == 0.5 and yc.nearest_threshold(0.9) == 0.9
    assert yc.score_or_flag(float("nan")) == -1.0 and yc.score_or_flag(0.25) == 0.25


def test_disputed_question_has_disagreeing_strategies(synthetic_06):
    qid = yc.disputed_question(synthetic_06, mcq_only=True)
    answers = {tuple(r["parsed"]) if r["parsed"] is not None else None for r in yc.rows_of_question(synthetic_06, qid)}
    assert len(answers) >= 2


def test_exercise_checkers_of_notebook_3():
    assert yc.check_exercise_pass_rates(yc.program_pass_rates).status == "solved"
    strict = lambda scores, program_of, theta: yc.program_pass_rates(scores, program_of, theta + 1e-9)  # noqa: E731
    assert yc.check_exercise_pass_rates(strict).status == "incorrect"  # a score equal to theta must pass
    assert yc.check_exercise_scores(yc.score_over_strategies).status == "solved"
    assert yc.check_exercise_scores(lambda grades, how: min(grades)).status == "incorrect"

    def last_wins(parsed, grades):
        votes = [(p, g) for p, g in zip(parsed, grades) if p is not None]
        if not votes:
            return 0.0
        counts = {p: sum(q == p for q, _ in votes) for p, _ in votes}
        best = max(counts.values())
        return float([g for p, g in votes if counts[p] == best][-1])

    assert yc.check_exercise_majority(yc.majority_score).status == "solved"
    assert yc.check_exercise_majority(last_wins).status == "incorrect"  # ties go to the first answer


def test_random_scores_respect_mean_le_any():
    rng = random.Random(0)
    for _ in range(100):
        grades = [rng.choice([0.0, 0.25, 0.75, 1.0]) for _ in range(rng.randint(1, 8))]
        assert yc.score_over_strategies(grades, "mean") <= yc.score_over_strategies(grades, "any")
