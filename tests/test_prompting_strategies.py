"""The eight prompting strategies: message structure (roles, turns, option labels, answer format, language),
the multi-call plans driven with canned replies, and the TF-IDF demonstration rule."""
from __future__ import annotations

import re

import numpy as np
import pytest

from lionsnb.prompting.bank import Bank, Course, Question
from lionsnb.prompting.strategies import (
    CALLS,
    LABEL_STYLE,
    STRATEGIES,
    Answer,
    build_messages,
    closing_phrase,
    demonstrations,
    format_options,
    language_code,
    majority_vote,
    parse_experts,
    question_kind,
    run_plan,
    strategy_plan,
    tfidf_matrix,
)

EN = Course("cs101", "Algorithms", "Computer Science", "English", "bachelor")
FR = Course("phy201", "Thermodynamique", "Physics", "French", "master")
COURSES = {"en": EN, "fr": FR}

BODIES = {
    "en": {"mcq_1": "Which sorting algorithm has a worst-case running time in O(n log n)?",
           "mcq_n": "Which of these data structures give O(1) average lookup by key?",
           "open": "How many comparisons does binary search need at most on 1000 sorted keys?"},
    "fr": {"mcq_1": "Quelle grandeur reste constante lors d'une transformation isotherme d'un gaz parfait ?",
           "mcq_n": "Parmi ces grandeurs, lesquelles sont des fonctions d'état ?",
           "open": "Calculez le rendement d'un cycle de Carnot entre 300 K et 600 K."},
}
OPTIONS = {"en": ("Quicksort", "Merge sort", "Insertion sort", "Bubble sort"),
           "fr": ("La température", "La pression", "Le volume", "La chaleur échangée")}


def make_question(kind: str, lang: str, qid: str | None = None, body: str | None = None,
                  explanation: str = "") -> Question:
    course = COURSES[lang]
    if kind == "open":
        return Question(question_id=qid or f"{lang}-open", course_id=course.course_id, question_type="open_answer",
                        question_body=body or BODIES[lang]["open"], question_options=(), mcq_answer_index=(),
                        multiple_correct_answers=False, question_answer="10" if lang == "en" else "0,5",
                        question_explanation=explanation)
    gold = (1,) if kind == "mcq_1" else (0, 2)
    opts = OPTIONS[lang]
    return Question(question_id=qid or f"{lang}-{kind}", course_id=course.course_id, question_type="mcq",
                    question_body=body or BODIES[lang][kind], question_options=opts, mcq_answer_index=gold,
                    multiple_correct_answers=(kind == "mcq_n"), question_answer="; ".join(opts[i] for i in gold),
                    question_explanation=explanation)


def demo_set(kind: str, lang: str, n: int = 4) -> list[Question]:
    return [make_question(kind, lang, qid=f"demo{i}-{lang}-{kind}", body=f"Demo question number {i} ({kind})",
                          explanation=f"Because of reason {i}.") for i in range(n)]


KINDS = ("mcq_1", "mcq_n", "open")
LANGS = ("en", "fr")
WITH_SYSTEM = {"cot_zero_shot", "cot_four_shot", "tree_of_thought", "metacog", "self_refine", "expert_prompting"}
N_DEMOS = {"one_shot": 1, "cot_four_shot": 4}
STYLE_LINE = {"number": r"^\d+\. \S", "letter": r"^[A-Z]: \S", "bracket": r"^\[[A-Z]\]: \S"}
#: answer-format words each style's instruction must contain, by language
FORMAT_WORDS = {"number": {"en": "number", "fr": "numéro"}, "letter": {"en": "letter", "fr": "lettre"}}
ENGLISH_WORDS = (" the ", " your ", " answer", "Reply", "Question:", "Options:")
FRENCH_WORDS = ("réponse", "Répondez", "Question :", "Vous ", "vous")


def option_lines(text: str, style: str) -> list[str]:
    """The lines of ``text`` that are options in ``style`` (a leading "Options:" field label removed)."""
    lines = [re.sub(r"^Options ?: ", "", ln) for ln in text.split("\n")]
    return [ln for ln in lines if re.match(STYLE_LINE[style], ln)]


CASES = [(s, k, lang) for s in STRATEGIES for k in KINDS for lang in LANGS]


@pytest.mark.parametrize("strategy,kind,lang", CASES, ids=[f"{s}-{k}-{lang}" for s, k, lang in CASES])
def test_first_call_structure(strategy, kind, lang):
    q = make_question(kind, lang)
    demos = demo_set(kind, lang)
    msgs = build_messages(strategy, q, COURSES[lang], demos)
    roles = [m["role"] for m in msgs]
    # roles: a system turn exactly for the persona strategies, then alternating user/assistant, ending on user
    assert (roles[0] == "system") == (strategy in WITH_SYSTEM)
    assert roles.count("system") == (1 if strategy in WITH_SYSTEM else 0)
    turns = roles[1:] if roles[0] == "system" else roles
    assert turns == ["user", "assistant"] * N_DEMOS.get(strategy, 0) + ["user"]
    assert all(m["content"].strip() for m in msgs)
    last = msgs[-1]["content"]
    assert q.question_body in last
    if strategy in WITH_SYSTEM and strategy != "expert_prompting":
        assert COURSES[lang].course_name in msgs[0]["content"]
    # option labelling: every option once, in the strategy's style (the naming call of expert prompting and all
    # its expert calls use numbers), and no line in another style
    style = LABEL_STYLE[strategy]
    if kind == "open":
        assert not option_lines(last, "letter") and not option_lines(last, "bracket")
        assert "Options" not in last
    else:
        lines = option_lines(last, style)
        assert [ln.split(" ", 1)[1] for ln in lines] == list(q.question_options)
        for other in set(STYLE_LINE) - {style}:
            assert not option_lines(last, other) or (style == "bracket" and other == "number")
    # the answer-format instruction for the style
    if kind != "open" and strategy != "expert_prompting":
        if style == "bracket":
            head = closing_phrase(kind, lang).split("[")[0]
            assert head in last and "[" in last
            if kind == "mcq_n":
                assert re.search(r"\[X, Y\]", last)
        else:
            assert FORMAT_WORDS[style][lang] in last.lower()
    if kind == "open" and strategy in ("tree_of_thought", "metacog"):
        assert closing_phrase("open", lang).strip() in last
    # language: French courses get French instructions and persona, English courses English ones
    instructions = "\n".join(m["content"] for m in msgs if m["role"] != "assistant")
    instructions = instructions.replace(q.question_body, "")
    for o in q.question_options:
        instructions = instructions.replace(o, "")
    if lang == "fr":
        assert any(w in instructions for w in FRENCH_WORDS)
        assert not any(w in instructions for w in ENGLISH_WORDS), instructions
    else:
        assert not any(w in instructions for w in FRENCH_WORDS)


@pytest.mark.parametrize("lang", LANGS)
def test_instructions_differ_by_question_type(lang):
    for strategy in STRATEGIES:
        firsts = {k: build_messages(strategy, make_question(k, lang), COURSES[lang])[-1]["content"].split("\n")[0]
                  for k in KINDS}
        if strategy == "expert_prompting":  # the naming call is the same for every type; the expert calls differ
            continue
        assert len(set(firsts.values())) == 3, (strategy, firsts)


def test_mcq_n_instructions_ask_for_every_correct_option():
    for lang, words in (("en", ("one or more", "several", "every", "all")),
                        ("fr", ("plusieurs", "chaque", "toutes"))):
        for strategy in ("zero_shot", "cot_zero_shot", "tree_of_thought", "metacog", "self_refine"):
            text = build_messages(strategy, make_question("mcq_n", lang), COURSES[lang])[-1]["content"].lower()
            assert any(w in text for w in words), (strategy, lang)


def test_cot_options_field_starts_on_the_same_line():
    for strategy in ("cot_zero_shot", "cot_four_shot", "self_refine"):
        text = build_messages(strategy, make_question("mcq_1", "en"), EN)[-1]["content"]
        assert "\nOptions: A: Quicksort\nB: Merge sort" in text
        assert "\nQuestion: " in text


def test_tree_of_thought_puts_the_question_last_and_has_three_experts():
    for lang, three in (("en", "three experts"), ("fr", "trois experts")):
        text = build_messages("tree_of_thought", make_question("mcq_1", lang), COURSES[lang])[-1]["content"]
        assert three in text
        assert text.index(closing_phrase("mcq_1", lang)) < text.index(BODIES[lang]["mcq_1"])
        assert text.rstrip().endswith(OPTIONS[lang][-1])


def test_metacog_prescribes_four_stages_after_the_question():
    for lang in LANGS:
        text = build_messages("metacog", make_question("mcq_n", lang), COURSES[lang])[-1]["content"]
        after = text[text.index(OPTIONS[lang][-1]):]
        stages = re.findall(r"^([1-9])\. ", after, flags=re.M)
        assert stages == ["1", "2", "3", "4"]


def test_one_shot_demo_is_the_gold_answer_as_numbered_lines():
    for kind in ("mcq_1", "mcq_n"):
        q, demos = make_question(kind, "en"), demo_set(kind, "en")
        msgs = build_messages("one_shot", q, EN, demos)
        assert demos[0].question_body in msgs[0]["content"]
        gold = [f"{i + 1}. {demos[0].question_options[i]}" for i in demos[0].mcq_answer_index]
        assert msgs[1]["content"].split("\n") == gold
        # the demo is framed exactly like the question (same instruction line)
        assert msgs[0]["content"].split("\n")[0] == msgs[2]["content"].split("\n")[0]
    q, demos = make_question("open", "en"), demo_set("open", "en")
    assert build_messages("one_shot", q, EN, demos)[1]["content"] == demos[0].question_answer


def test_four_shot_demos_give_the_explanation_then_the_gold_answer():
    q, demos = make_question("mcq_n", "fr"), demo_set("mcq_n", "fr")
    msgs = build_messages("cot_four_shot", q, FR, demos)
    assistants = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert len(assistants) == 4
    for d, text in zip(demos, assistants):
        lines = text.split("\n")
        assert lines[0] == d.question_explanation
        assert lines[1:] == [f"{'ABCD'[i]}: {d.question_options[i]}" for i in d.mcq_answer_index]
    users = [m["content"] for m in msgs if m["role"] == "user"]
    assert [d.question_body in u for d, u in zip(demos, users)] == [True] * 4


def test_missing_demos_fall_back_to_the_zero_demo_structure():
    q = make_question("mcq_1", "en")
    assert build_messages("one_shot", q, EN) == build_messages("zero_shot", q, EN)
    assert build_messages("cot_four_shot", q, EN) == build_messages("cot_zero_shot", q, EN)
    two = build_messages("cot_four_shot", q, EN, demo_set("mcq_1", "en", n=2))
    assert [m["role"] for m in two] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert len(build_messages("one_shot", q, EN, demo_set("mcq_1", "en", n=3))) == 3


def test_builders_are_pure_and_reject_unknown_strategies():
    q = make_question("mcq_1", "fr")
    for s in STRATEGIES:
        assert build_messages(s, q, FR, demo_set("mcq_1", "fr")) == build_messages(s, q, FR, demo_set("mcq_1", "fr"))
    with pytest.raises(ValueError, match="unknown strategy"):
        build_messages("chain_of_thought", q, FR)


def test_format_options_styles():
    opts = ("x", "y", "z")
    assert format_options(opts, "number") == "1. x\n2. y\n3. z"
    assert format_options(opts, "letter") == "A: x\nB: y\nC: z"
    assert format_options(opts, "bracket") == "[A]: x\n[B]: y\n[C]: z"
    with pytest.raises(ValueError):
        format_options(opts, "roman")
    with pytest.raises(ValueError):
        format_options([str(i) for i in range(27)], "letter")
    assert set(LABEL_STYLE) == set(STRATEGIES) and set(LABEL_STYLE.values()) == {"number", "letter", "bracket"}


def test_kind_and_language_helpers():
    assert [question_kind(make_question(k, "en")) for k in KINDS] == list(KINDS)
    assert language_code(FR) == "fr" and language_code(EN) == "en" and language_code(None) == "en"


# ----------------------------------------------------------------------------- plans driven with canned replies

class Canned:
    """A chat function that answers from a list and records every call's messages."""

    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def __call__(self, messages):
        self.seen.append(messages)
        return self.replies[len(self.seen) - 1]


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if CALLS[s] == (1, 1)])
@pytest.mark.parametrize("kind", KINDS)
def test_single_call_plans(strategy, kind):
    q = make_question(kind, "en")
    chat = Canned(["My final answer is [B]"])
    ans = run_plan(strategy_plan(strategy, q, EN, demo_set(kind, "en")), chat)
    assert isinstance(ans, Answer)
    assert ans.calls == 1 and len(chat.seen) == 1 and ans.text == "My final answer is [B]"
    assert ans.selected is None and ans.transcript == [(chat.seen[0], "My final answer is [B]")]
    assert chat.seen[0] == build_messages(strategy, q, EN, demo_set(kind, "en"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lang", LANGS)
def test_self_refine_makes_three_calls(kind, lang):
    q = make_question(kind, lang)
    chat = Canned(["first draft: A", "the draft is wrong about X", "refined: B: Merge sort"])
    ans = run_plan(strategy_plan("self_refine", q, COURSES[lang]), chat)
    assert ans.calls == 3 and len(chat.seen) == 3 and len(ans.transcript) == 3
    assert ans.text == "refined: B: Merge sort"
    first, second, third = chat.seen
    assert second[:len(first)] == first and third[:len(second)] == second  # one growing conversation
    assert second[len(first)] == {"role": "assistant", "content": "first draft: A"}
    assert third[len(second)] == {"role": "assistant", "content": "the draft is wrong about X"}
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    feedback_request, refine_request = second[-1]["content"], third[-1]["content"]
    assert feedback_request != refine_request
    if kind != "open":  # the refine request repeats the answer-format instruction
        assert FORMAT_WORDS["letter"][lang] in refine_request.lower()


EXPERTS_JSON = '{"1": "a complexity theorist", "2": "a compiler engineer", "3": "a database researcher"}'


@pytest.mark.parametrize("replies,selected,winner", [
    (["2. Merge sort", "1. Quicksort", "2. Merge sort"], (1,), 0),     # 2 of 3 agree
    (["1. Quicksort", "2. Merge sort", "2. Merge sort"], (1,), 1),     # majority beats the first expert
    (["1. Quicksort", "2. Merge sort", "3. Insertion sort"], (0,), 0),  # three-way tie: the first expert
    (["no idea", "2. Merge sort", "3. Insertion sort"], (1,), 1),       # first unparseable: next in order
    (["no idea", "hmm", "3. Insertion sort"], (2,), 2),
    (["no idea", "hmm", "???"], None, 0),                               # nothing parseable: no selection
])
def test_expert_prompting_mcq_majority_vote(replies, selected, winner):
    q = make_question("mcq_1", "en")
    chat = Canned([EXPERTS_JSON] + replies)
    ans = run_plan(strategy_plan("expert_prompting", q, EN), chat)
    assert ans.calls == 4 and len(chat.seen) == 4 and len(ans.transcript) == 4
    assert ans.selected == selected
    assert ans.text == replies[winner]
    naming = chat.seen[0]
    assert [m["role"] for m in naming] == ["system", "user"] and "Algorithms" in naming[0]["content"]
    assert "JSON" in naming[1]["content"] and option_lines(naming[1]["content"], "number")
    for call, name in zip(chat.seen[1:], ["a complexity theorist", "a compiler engineer", "a database researcher"]):
        assert [m["role"] for m in call] == ["system", "user"]
        assert name in call[0]["content"]
        assert call[1] == build_messages("zero_shot", q, EN)[0]  # each expert gets the zero-shot instruction


def test_expert_prompting_mcq_n_votes_on_option_sets():
    q = make_question("mcq_n", "en")
    chat = Canned([EXPERTS_JSON, "1. Quicksort\n3. Insertion sort", "1. Quicksort", "1. Quicksort\n3. Insertion sort"])
    ans = run_plan(strategy_plan("expert_prompting", q, EN), chat)
    assert ans.selected == (0, 2) and ans.calls == 4


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("choice,picked", [("Expert 3", 2), ("2", 1), ("I cannot decide", 0)])
def test_expert_prompting_open_has_a_choosing_call(lang, choice, picked):
    q = make_question("open", lang)
    answers = ["about 10", "exactly 10 comparisons", "1000"]
    chat = Canned([EXPERTS_JSON] + answers + [choice])
    ans = run_plan(strategy_plan("expert_prompting", q, COURSES[lang]), chat)
    assert ans.calls == 5 and len(chat.seen) == 5 and ans.selected is None
    assert ans.text == answers[picked]
    combine = chat.seen[4][-1]["content"]
    assert q.question_body in combine and all(a in combine for a in answers)
    assert all(n in combine for n in ("a complexity theorist", "a compiler engineer", "a database researcher"))


@pytest.mark.parametrize("reply", ["", "I would ask a physicist.", '{"1": "only one expert"', "[1, 2, 3]",
                                   '{"1": "", "2": ""}'])
def test_expert_prompting_survives_malformed_expert_lists(reply):
    for lang in LANGS:
        q = make_question("mcq_1", lang)
        opts = OPTIONS[lang]
        chat = Canned([reply, f"2. {opts[1]}", f"2. {opts[1]}", f"1. {opts[0]}"])
        ans = run_plan(strategy_plan("expert_prompting", q, COURSES[lang]), chat)
        assert ans.calls == 4 and ans.selected == (1,)
        personas = [c[0]["content"] for c in chat.seen[1:]]
        assert len(set(personas)) == 3
        generic = [p for p in personas if COURSES[lang].course_name in p or COURSES[lang].course_program in p]
        assert len(generic) >= 2  # the missing experts are replaced by generic titles built from the course


def test_parse_experts():
    course = EN
    names, fallback = parse_experts('Sure! {"2": "B person", "1": "A person", "3": "C person"} Hope it helps', course)
    assert names == ["A person", "B person", "C person"] and not fallback
    names, fallback = parse_experts('{"1": "A person", "2": "B person"}', course)
    assert names[:2] == ["A person", "B person"] and fallback and "Algorithms" in names[2]
    names, fallback = parse_experts('"1": "A person"\n"2": "B person"\n"3": "C person"', course)
    assert names == ["A person", "B person", "C person"] and not fallback
    names, fallback = parse_experts("garbage", FR, "fr")
    assert fallback and len(names) == 3 and all(n.startswith("un") for n in names)


def test_majority_vote_rules():
    assert majority_vote([(1,), (2,), (2,)]) == ((2,), 1)
    assert majority_vote([(0, 2), (0,), (0, 2)]) == ((0, 2), 0)
    assert majority_vote([None, None, None]) == (None, None)
    assert majority_vote([(3,), (1,), (2,)]) == ((3,), 0)


def test_calls_table_matches_the_plans():
    for s in STRATEGIES:
        for kind, expected in zip(("mcq_1", "open"), CALLS[s]):
            chat = Canned([EXPERTS_JSON, "1. Quicksort", "1. Quicksort", "1. Quicksort", "1"])
            ans = run_plan(strategy_plan(s, make_question(kind, "en"), EN, demo_set(kind, "en")), chat)
            assert ans.calls == expected == len(chat.seen), (s, kind)


# ----------------------------------------------------------------------------- demonstrations

def toy_bank() -> Bank:
    qs = [
        make_question("mcq_1", "en", qid="target", body="binary search tree insertion cost in the worst case"),
        make_question("mcq_1", "en", qid="near", body="worst case cost of insertion into a binary search tree"),
        make_question("mcq_1", "en", qid="mid", body="binary heap insertion cost"),
        make_question("mcq_1", "en", qid="far", body="define a regular language"),
        make_question("open", "en", qid="open_near", body="binary search tree insertion cost in the worst case, "
                                                          "explain"),
        make_question("mcq_1", "fr", qid="other_course", body="binary search tree insertion cost in the worst case"),
    ]
    return Bank(courses={"cs101": EN, "phy201": FR}, questions=qs, source="test")


def test_demonstrations_same_course_same_type_most_similar_first():
    bank = toy_bank()
    target = bank.questions[0]
    demos = demonstrations(bank, target, 4)
    ids = [d.question_id for d in demos]
    assert ids == ["near", "mid", "far", "open_near"]  # same type first, even before a more similar open question
    assert "target" not in ids and "other_course" not in ids
    assert demonstrations(bank, target, 10) == demos  # only 4 candidates
    assert demonstrations(bank, target, 1) == demos[:1]
    assert demonstrations(bank, target, 0) == []
    assert [d.question_id for d in demonstrations(bank, target, 4)] == ids  # deterministic
    lone = Bank(courses={"cs101": EN}, questions=[target], source="test")
    assert demonstrations(lone, target, 4) == []


def test_tfidf_matches_sklearn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [q.question_body for q in toy_bank().questions] + ["Énergie interne d'un gaz parfait", ""]
    ours = tfidf_matrix(texts)
    ref = TfidfVectorizer(token_pattern=r"(?u)\w+").fit_transform(texts).toarray()
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ours[:-1], axis=1), 1.0)
    assert not ours[-1].any()
