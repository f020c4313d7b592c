"""The helpers of notebook 1 of the prompting series (lionsnb.prompting.nb01_strategies): messages and calls of every
strategy, the French comparison, the run on one question, extraction and grading demos, exercises. No real model."""
from __future__ import annotations

import dataclasses
import html

import pytest

import lionsnb.prompting.nb01_strategies as m
from lionsnb.plotting import unlabelled_axes
from lionsnb.prompting.backends import ScriptedBackend
from lionsnb.prompting.grading import check_numeric, extract_mcq
from lionsnb.prompting.strategies import LABEL_STYLE, STRATEGIES


@pytest.fixture(scope="module")
def bank():
    return m.project_bank()


@pytest.fixture(scope="module")
def mcq(bank):
    return bank.question("ME-251-01")


@pytest.fixture(scope="module")
def open_q(bank):
    return next(q for q in bank if not q.is_mcq and q.numeric_answer is None)


def test_plan_calls_counts_and_self_refine_resends_its_conversation(bank, mcq, open_q):
    course = bank.course_of(mcq)
    counts = {s: len(m.plan_calls(s, mcq, course, m.demos_for(bank, mcq, s))) for s in STRATEGIES}
    assert counts == {s: 1 for s in STRATEGIES} | {"self_refine": 3, "expert_prompting": 4}
    assert len(m.plan_calls("expert_prompting", open_q, bank.course_of(open_q))) == 5
    calls = m.plan_calls("self_refine", mcq, course)
    assert calls[0] == calls[1][:2] and calls[1] == calls[2][:4]
    assert calls[1][2] == {"role": "assistant", "content": m.placeholder_reply("self_refine", 1)}


def test_calls_html_shows_roles_escapes_text_and_only_new_messages(bank, mcq):
    course = bank.course_of(mcq)
    text = m.calls_html(m.plan_calls("self_refine", mcq, course))
    assert text.count("<pre") == 6  # 2 + 2 new + 2 new, not 2 + 4 + 6
    for role in ("system", "user", "assistant"):
        assert f">{role}</b>" in text
    evil = dataclasses.replace(mcq, question_body="Is <script>alert(1)</script> safe?")
    shown = m.calls_html([m.build_messages("zero_shot", evil, course)])
    assert "<script>" not in shown and html.escape("<script>") in shown


def test_strategy_table_is_read_off_the_messages(bank, mcq):
    table = {r["strategy"]: r for r in m.strategy_table(bank, mcq)}
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
        fc = m.french_comparison(bank, mcq, strategy)
        assert fc["differs"] and fc["same_roles"] and fc["body_unchanged"]
        assert fc["instruction_own"] != fc["instruction_french"]
    assert "expert" in m.french_comparison(bank, mcq, "cot_zero_shot")["persona_french"].lower()


def test_message_explorer_updates_without_a_model(bank, mcq):
    explorer = m.MessageExplorer(bank, mcq.question_id, "zero_shot")
    first = explorer.html()
    assert ">system</b>" not in first
    assert ">system</b>" in explorer.update(strategy="metacog")
    other = next(q for q in bank if q.course_id != mcq.course_id)
    assert other.question_body.split()[0] in explorer.update(question_id=other.question_id)
    with pytest.raises(ValueError):
        explorer.update(strategy="chain_of_verification")
    live = m.MessageExplorer(bank, mcq.question_id, "zero_shot")
    live.build_controls()
    live.update(strategy="cot_four_shot")
    assert live.view.value == live.html() and live.view.value.count("<pre") == 10


def test_unknown_question_id_names_close_ids(bank):
    with pytest.raises(ValueError, match="ME-251-1"):
        m.get_question(bank, "ME-251-1O")


def test_prompt_costs_over_the_bank(bank):
    costs = m.prompt_costs(bank)
    assert set(costs["self_refine"]["calls"].tolist()) == {3}
    assert set(costs["expert_prompting"]["calls"].tolist()) == {4, 5}
    assert (costs["cot_four_shot"]["total_chars"] > costs["cot_zero_shot"]["total_chars"]).all()
    assert (costs["expert_prompting"]["calls"][costs["expert_prompting"]["kind"] == "open_answer"] == 5).all()


# ============================================================================ notebook 1: backends and the run


def test_run_question_then_rerun_is_served_from_the_cache(bank, mcq, tmp_path):
    backend = ScriptedBackend.from_bank(bank, seed=1, accuracy=0.6, malformed_rate=0.1)
    caps = m.reply_caps(m.SPEC.sizes("teach"))
    first = m.run_question(backend, bank, mcq, STRATEGIES, tmp_path, {"temperature": 0.0}, caps, progress=False)
    assert first["calls"] == 13 and first["cached_calls"] == 0 and backend.calls == 13
    assert {r["strategy"]: r["max_tokens"] for r in first["rows"]} == caps
    again = m.run_question(backend, bank, mcq, STRATEGIES, tmp_path, {"temperature": 0.0}, caps, progress=False)
    assert again["cached_calls"] == 13 and again["new_calls"] == 0 and backend.calls == 13
    assert [r["raw_answer"] for r in again["rows"]] == [r["raw_answer"] for r in first["rows"]]
    shown = m.replies_table(first["rows"], [mcq])
    for gold, parsed, raw in zip(shown.column("gold"), shown.column("read as"), first["rows"]):
        style = LABEL_STYLE[raw["strategy"]]
        assert gold == {"number": "2", "letter": "B", "bracket": "[B]"}[style]
        assert parsed == m.labels_of(raw["parsed"], style)
    assert len(m.run_table(first, again)) == 2
    fig = m.figure(10, 3)
    m.draw_run(fig, rows=first["rows"], question=mcq)
    assert unlabelled_axes(fig) == []
    assert m.run_figure(first["rows"], mcq) is None  # an MCQ figure always shows which options were read


def test_labels_of():
    assert m.labels_of((0, 2), "number") == "1, 3"
    assert m.labels_of((1,), "letter") == "B"
    assert m.labels_of((0, 3), "bracket") == "[A, D]"
    assert m.labels_of(None, "letter") == "-"


# ============================================================================ notebook 1: extraction and grading


def test_tricky_outputs_read_as_documented():
    rows = m.extraction_demo()
    assert len(rows) == len(m.TRICKY_OUTPUTS) >= 15
    assert f"{len(rows)} of {len(rows)} read as the rules say" in m.extraction_table(rows).title
    assert all(r["agree"] for r in rows), [r for r in rows if not r["agree"]]
    assert any(r["expected"] == "-" for r in rows) and any(r["select all"] for r in rows)


def test_grader_labels_and_points():
    rows = m.grade_label_demo()
    assert all(r["agree"] for r in rows)
    assert {r["label"] for r in rows} >= {"correct", "almost_correct", "mostly_incorrect", "wrong", None}


def test_numeric_cases_hold_for_every_numeric_question(bank):
    numeric = [q for q in bank if q.numeric_answer is not None]
    assert len(numeric) >= 40
    for q in numeric:
        for text, expected in m.numeric_cases(q):
            assert check_numeric(text, q.numeric_answer, q.numeric_tolerance) == expected, (q.question_id, text)


def test_open_example_prefers_the_course(bank, mcq):
    numeric = m.open_example(bank, mcq, numeric=True)
    text = m.open_example(bank, mcq, numeric=False)
    assert numeric.course_id == text.course_id == mcq.course_id
    assert numeric.numeric_answer is not None and text.numeric_answer is None and not text.is_mcq
    assert m.open_example(bank, numeric, numeric=True) is numeric


# ============================================================================ notebook 1: exercises


def test_bracket_reference_and_checker():
    assert m.bracket_answer("My final answers are [C, A]", 4) == (0, 2)
    assert m.bracket_answer("[A] at first... My final answer is [D]", 4) == (3,)
    assert m.bracket_answer("My final answer is [E]", 4) == ()
    assert m.bracket_answer("no answer", 4) == ()
    for text, n in m.BRACKET_CASES:  # agrees with the package's extractor whenever the reply is a closing sentence
        if text.startswith("My final"):
            assert m.bracket_answer(text, n) == (extract_mcq(text, n, "bracket", True) or ())

    def first_group(text, n):
        import re
        g = re.findall(r"\[([A-Z, ]+)\]", text)
        return tuple(sorted("ABCDE".index(x) for x in g[0] if x.isalpha())) if g else ()

    assert m.check_exercise_bracket(first_group).status == "incorrect"
    assert m.check_exercise_bracket(m.bracket_answer).status == "solved"


def test_points_reference_and_checker():
    assert m.points_from_label("Almost Correct", m.DEFAULT_POINTS) == 0.75
    assert m.points_from_label("mostly correct", m.STRICT_POINTS) == 0.5
    with pytest.raises(ValueError):
        m.points_from_label("no idea", m.DEFAULT_POINTS)
    naive = lambda label, points: points.get(label.lower(), 0.0)  # noqa: E731
    assert m.check_exercise_points(naive).status == "incorrect"
    assert m.check_exercise_points(m.points_from_label).status == "solved"


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

    assert m.check_exercise_zero_shot(mine, bank).status == "solved"
    assert m.check_exercise_zero_shot(mine).status == "solved"  # as an autograder calls it: the project's bank
    for wrong in (with_system, lettered, no_instruction):
        assert m.check_exercise_zero_shot(wrong, bank).status == "incorrect", wrong.__name__


def test_spec_profiles_give_room_to_finish():
    assert m.SPEC.validate_knobs({})  # defaults are valid
    assert len(m.SPEC.sizes("teach").run_strategies) == 8
    for profile in ("smoke", "teach", "full"):
        sizes = m.SPEC.sizes(profile)
        assert set(sizes.run_strategies) <= set(STRATEGIES)
        caps = m.reply_caps(sizes)
        assert caps["cot_zero_shot"] >= 2 * caps["zero_shot"] >= 128  # issue 17: a chain of thought needs room


def test_question_and_french_tables(bank, mcq):
    shown = m.question_table(bank, mcq)
    assert "(correct)" in shown.column("value")[shown.column("quantity").index("option 2")]
    fc = m.french_comparison(bank, mcq, "cot_zero_shot")
    assert len(m.french_table(fc)) == 3
