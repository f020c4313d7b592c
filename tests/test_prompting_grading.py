"""Grading: MCQ extraction on a table of tricky outputs (never guessing), MCQ scores, the four-level grader's
messages and label extraction, the numeric checker and Cohen's kappa."""
from __future__ import annotations

import math
import random

import pytest

from lionsnb.prompting.bank import Course, Question
from lionsnb.prompting.grading import (
    DEFAULT_POINTS,
    GRADE_LABELS,
    check_numeric,
    cohen_kappa,
    extract_grade_label,
    extract_mcq,
    grade_mcq,
    grader_messages,
    grader_retry_messages,
    label_points,
    parse_numbers,
)
from lionsnb.prompting.strategies import LABEL_STYLE, STRATEGIES, closing_phrase, format_options

OPTS = ("Paris", "London", "Rome", "Berlin")
# option texts that start with a letter that is also a label ("A stack" under the label A, "I/O-bound", "B-tree")
DS = ("A stack", "A FIFO queue", "A heap", "A binary tree")
IO = ("CPU-bound", "I/O-bound", "Idle", "Interrupted")
LOW = ("a stack", "a queue", "a heap", "a tree")
BT = ("B-tree", "Bloom filter", "AVL tree", "Binary heap")
FR = ("Au plus une solution", "Aucune solution", "Une infinité de solutions", "Exactement une solution")
AT = ("À chaque itération", "Au début", "À la fin", "Jamais")
SWAPPED = ("B", "A", "C", "D")   # option texts that are themselves letters, in another order than the labels

# (reply, style, multiple, expected[, option texts]): expected None means "unparseable": the extractor must not guess
TRICKY = [
    # plain labels in each style
    ("B", "letter", False, (1,)),
    ("B)", "letter", False, (1,)),
    ("(B)", "letter", False, (1,)),
    ("**B**", "letter", False, (1,)),
    ("b) London", "letter", False, (1,)),
    ("B: London", "letter", False, (1,)),
    ("Option B", "letter", False, (1,)),
    ("[B]", "bracket", False, (1,)),
    ("[2]", "number", False, (1,)),
    ("2", "number", False, (1,)),
    ("2. London", "number", False, (1,)),
    # answer phrases
    ("The answer is B", "letter", False, (1,)),
    ("The answer is B because A is wrong.", "letter", False, (1,)),
    ("The correct option is C, not A.", "letter", False, (2,)),
    ("The answer is the letter D.", "letter", False, (3,)),
    ("The answer is option (C)", "letter", False, (2,)),
    ("The answer is B) London", "letter", False, (1,)),
    ("Final answer: B. London", "letter", False, (1,)),
    ("I choose C.", "letter", False, (2,)),
    ("Answer: 1 and 3", "number", True, (0, 2)),
    ("Answer:\n1. Paris\n3. Rome", "number", True, (0, 2)),
    ("Final answer: [A, C]", "bracket", True, (0, 2)),
    ("The final answers are [A] and [C]", "bracket", True, (0, 2)),
    ("My final answers are [B, D].", "bracket", True, (1, 3)),
    ("Final answer: after checking twice, [D]", "bracket", False, (3,)),
    # French
    ("La réponse finale est [C]", "bracket", False, (2,)),
    ("Les réponses finales sont [A, D]", "bracket", True, (0, 3)),
    ("Réponse : B", "letter", False, (1,)),
    ("La bonne réponse est 3.", "number", False, (2,)),
    ("Je choisis la réponse C.", "letter", False, (2,)),
    ("A et C", "letter", True, (0, 2)),
    # several labels in the reasoning, one final answer: the final phrase / the last bracket wins
    ("Expert 1 thinks [A]. Expert 2 says [B]. My final answer is [C].", "bracket", False, (2,)),
    ("Expert 1 thinks [A]. Expert 2 says [B], then all agree on [C].", "bracket", False, (2,)),
    ("The answer is B.\nActually, wait. The final answer is [D].", "bracket", False, (3,)),
    ("A is tempting and so is B, but the answer is C.", "letter", False, (2,)),
    # several options for MCQ-n
    ("A, C and D", "letter", True, (0, 2, 3)),
    ("The answers are A and C.\nB is wrong because London is in England.", "letter", True, (0, 2)),
    ("Final answers:\nA: Paris\nC: Rome\nB: this one is a trap", "letter", True, (0, 2)),
    ("A: Paris\nC: Rome", "letter", True, (0, 2)),
    ("1. Paris\n3. Rome", "number", True, (0, 2)),
    # option texts that look like labels
    ("Answer:\n2. 3", "number", False, (1,), ("2", "3", "4", "6")),
    ("2. 3", "number", False, (1,), ("2", "3", "4", "6")),
    ("1. 2\n3. 4", "number", True, (0, 2), ("2", "3", "4", "6")),
    ("D: [x, p] = iħ\nThis follows from the commutator.", "letter", False, (3,),
     ("[x, p] = ħ", "[x, p] = 0", "[x, p] = −iħ/2", "[x, p] = iħ")),
    ("So [x, p] = iħ, hence [D].", "bracket", False, (3,), ()),
    # the option text alone
    ("London", "number", False, (1,)),
    ("Rome", "letter", False, (2,)),
    ("paris; rome", "letter", True, (0, 2)),
    ("The answer is Berlin.", "number", False, (3,)),
    # never guess: ambiguous or unreadable -> None
    ("Final answer: [A, C]", "bracket", False, None),          # two answers to a one-answer question
    ("A or C", "letter", False, None),
    ("The answer is A or C", "letter", False, None),
    ("I have no idea.", "letter", False, None),
    ("", "letter", False, None),
    ("asdf qwer zxcv", "number", False, None),
    ("The answer is E", "letter", False, None),                 # out of range
    ("The answer is [F]", "bracket", False, None),
    ("5", "number", False, None),
    ("The answer is 2.5", "number", False, None),                # a number, not a label
    ("The answer is 3 m/s", "number", False, None),
    ("1. First, we recall the capitals.\n2. Then we pick.", "number", False, None),  # reasoning steps
    ("the answer is b", "letter", False, None),                 # lower-case bare "b" may be a word
    ("A wave travels", "letter", False, None),
    ("so a[i] holds", "bracket", False, None),
    ("The answer is B", "number", False, None),                 # letters are not labels of the number style
    ("[A]: Paris\n[B]: London", "bracket", False, None),        # the options echoed back
    ("3. Berlin", "number", False, None),                       # label 3 but the text of option 4: which one?
    ("The answer is 3. Berlin", "number", False, None),
    ("The answer is C: Berlin", "letter", False, None),
]

# a label followed by ":" / ")" / "." / a closing bracket and then text is ONE label, even when that text starts with
# a capital that could be a label ("B: A FIFO queue", "(B) I/O-bound"); several labels need a list separator
# ("A and C", "A, C", "[A, C]") or the same bracket form side by side ("[A] [C]", "(A) (C)")
LABEL_LIKE_TEXTS = [
    ("Answer: B: A FIFO queue", "letter", False, (1,), DS),
    ("Réponse :\nB: A FIFO queue", "letter", True, (1,), DS),
    ("Réponse :\nB: A FIFO queue", "letter", False, (1,), DS),
    ("1. A stack", "number", False, (0,), DS),
    ("Answer: 3. A heap", "number", False, (2,), DS),
    ("1. A stack\n3. A heap", "number", True, (0, 2), DS),
    ("[A]: A stack", "bracket", False, (0,), DS),
    ("Final answer: [C]: A heap", "bracket", False, (2,), DS),
    ("Final answer: [B] A FIFO queue", "bracket", True, (1,), DS),
    ("A: A stack", "letter", False, (0,), DS),
    ("A: A stack\nC: A heap", "letter", True, (0, 2), DS),
    ("(D) A binary tree", "letter", False, (3,), DS),
    ("The answer is (B) A FIFO queue", "letter", True, (1,), DS),
    ("Answer: B) A FIFO queue", "letter", True, (1,), DS),
    ("Answer: A FIFO queue", "letter", False, (1,), DS),            # the text of option B, not the label A
    ("Answer: B, A FIFO queue", "letter", True, (1,), DS),
    ("La réponse finale est [B] : A FIFO queue", "bracket", False, (1,), DS),
    ("Answer: (B) I/O-bound", "letter", False, (1,), IO),
    ("Answer: I/O-bound", "letter", False, (1,), IO),
    ("Réponse finale : C) Idle", "letter", False, (2,), IO),
    ("Final answer: [D] Interrupted", "bracket", False, (3,), IO),
    ("b) a queue", "letter", False, (1,), LOW),
    ("Réponse : (c) a heap", "letter", True, (2,), LOW),
    ("Answer: a heap", "letter", False, (2,), LOW),
    ("Answer: C: AVL tree", "letter", False, (2,), BT),
    ("Answer: A: B-tree", "letter", False, (0,), BT),
    ("Answer: (D) Binary heap", "letter", True, (3,), BT),
    ("Answer: B-tree", "letter", False, (0,), BT),                  # option A's text, not the label B
    ("The answer is Bloom filter", "letter", False, (1,), BT),
    ("Réponse finale : B) Aucune solution", "letter", False, (1,), FR),
    ("Réponses :\nA: Au plus une solution\nD: Exactement une solution", "letter", True, (0, 3), FR),
    ("La bonne réponse est Aucune solution", "letter", False, (1,), FR),
    ("Ma réponse finale est [C] : À la fin", "bracket", False, (2,), AT),
    # lists of labels are still lists
    ("Answer: A and C", "letter", True, (0, 2), DS),
    ("Answer: A, C", "letter", True, (0, 2), DS),
    ("Final answer: [A, C]", "bracket", True, (0, 2), DS),
    ("Answer: (A) (C)", "letter", True, (0, 2), DS),
    ("Final answers: [A] [C]", "bracket", True, (0, 2), DS),
    ("Les réponses finales sont [A] et [C]", "bracket", True, (0, 2), AT),
    ("Answer: (B) A FIFO queue and (C) A heap", "letter", True, (1, 2), DS),
    # label or text? options that are letters themselves: never guess when the two readings disagree
    ("Answer: A", "letter", False, None, SWAPPED),
    ("Answer: B", "letter", False, None, SWAPPED),
    ("Answer: C", "letter", False, (2,), SWAPPED),
    # after a label's own option text, a list separator may bring the next label; "or" is still a hedge
    ("Answer: A: Paris, C: Rome", "letter", True, (0, 2)),
    ("Answer: B: A FIFO queue, C: A heap", "letter", False, None, DS),   # two answers, one allowed
    ("Answer: (B) A FIFO queue or (C) A heap", "letter", True, None, DS),
]
TRICKY += LABEL_LIKE_TEXTS

# SmolLM2-135M-Instruct's own replies (greedy, as the notebooks run it) to ME-251-01, "What is the maximum efficiency of
# a heat engine operating between reservoirs at 600 K and 300 K?" (options 25 %, 50 %, 67 %, 100 %), one per strategy
HEAT = ("25 %", "50 %", "67 %", "100 %")
_SAYS = "The maximum efficiency of a heat engine operating between reservoirs at 600 K and 300 K is "
SMOLLM2_REPLIES = [
    ("1. 25 %\n2. 50 %\n3. 67 %\n4. 100 %", "number", False, None, HEAT),          # zero-shot: the options copied
    ("1. 25%", "number", False, (0,), HEAT),                                        # one-shot: "25%" is "25 %"
    (_SAYS + "67%.", "letter", False, (2,), HEAT),                                  # chain of thought: a statement
    (_SAYS + "25%.\nC: 67%\nD: 100%", "letter", False, None, HEAT),                # four-shot: more option lines follow
    ("[C]: 67 %\n\n" + _SAYS + "67%.", "bracket", False, (2,), HEAT),               # tree of thought
    (_SAYS + "25%.", "bracket", False, (0,), HEAT),                                 # metacognitive prompting
    (_SAYS + "100%.", "letter", False, (3,), HEAT),                                 # self-refine
    ("1. 25 %\n2. 50 %\n3. 67 %\n4. 100 %\n\nThe answer is 3. 67 %\n\nThe answer is 3. 67 %\n\nThe answer is 3. 67",
     "number", False, (2,), HEAT),                                                 # stopped in a loop, "3. 67"
]
# the space before a unit or a percent sign, and non-breaking or thin spaces, do not matter when texts are compared
SPACING = [
    ("Answer: 25\u00a0%", "number", False, (0,), HEAT),
    ("2. 50\u202f%", "number", False, (1,), HEAT),
    ("B: 50%", "letter", False, (1,), HEAT),
    ("The answer is 67%.", "number", False, (2,), HEAT),
    ("La réponse est 50 %.", "letter", False, (1,), HEAT),
    ("Final answer: [B] 50%", "bracket", False, (1,), HEAT),
    ("The boiling point of water at sea level is 373K.", "letter", False, (1,), ("273 K", "373 K", "100 K", "0 K")),
    ("3. 9.81m/s²", "number", False, (2,), ("1 m/s²", "3.7 m/s²", "9.81 m/s²", "24.8 m/s²")),
    # a statement counts only when it ends the reply with exactly one option's text
    ("The efficiency is 50%, as 1 - 300/600 = 0.5.", "letter", False, None, HEAT),
    ("It is 50 % or 67 %.", "letter", False, None, HEAT),
    ("The efficiency is 67%. Or is it 25%? Hard to say.", "letter", False, None, HEAT),
    ("The answers are 25 % and 67 %", "letter", True, (0, 2), HEAT),
]
TRICKY += SMOLLM2_REPLIES + SPACING


@pytest.mark.parametrize("case", TRICKY, ids=[repr(t[0])[:40] for t in TRICKY])
def test_extract_mcq_tricky_outputs(case):
    reply, style, multiple, expected = case[:4]
    options = (case[4] or None) if len(case) > 4 else OPTS  # a 5th entry: other option texts (() = not given)
    assert extract_mcq(reply, 4, style, multiple, options=options) == expected


def test_tricky_table_is_large_and_covers_every_style():
    assert len(TRICKY) >= 40 and len(SMOLLM2_REPLIES) >= 8
    assert {t[1] for t in TRICKY} == {"number", "letter", "bracket"}
    assert sum(t[3] is None for t in TRICKY) >= 15
    # option texts starting with a label-like letter, in every label style, in English and French
    starts = [t for t in LABEL_LIKE_TEXTS if any(o[:1] in "AaBIÀ" for o in (t[4] if len(t) > 4 else OPTS))]
    assert len(starts) >= 10
    assert {t[1] for t in starts} == {"number", "letter", "bracket"}
    assert any("Réponse" in t[0] or "réponse" in t[0] for t in starts)


def test_option_texts_matter_only_when_given():
    # numeric option texts: the option text wins over a label reading
    assert extract_mcq("Final answer: 3 m/s", 2, "number", False, options=["3 m/s", "10 m/s"]) == (0,)
    # without the option texts a text-only answer cannot be read, and "k. text" lines are taken at face value
    assert extract_mcq("London", 4, "number", False) is None
    assert extract_mcq("2. Paris", 4, "number", False) == (1,)
    assert extract_mcq("2. Paris", 4, "number", False, options=OPTS) is None  # text of option 1 under label 2
    # options of the wrong length are ignored rather than trusted
    assert extract_mcq("London", 4, "number", False, options=OPTS[:2]) is None


def test_extract_mcq_arguments():
    with pytest.raises(ValueError):
        extract_mcq("A", 4, "roman", False)
    assert extract_mcq(None, 4, "letter", False) is None
    assert extract_mcq("A", 0, "letter", False) is None


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("gold", [(1,), (0, 2)])
def test_well_formed_replies_in_each_strategys_format_round_trip(strategy, lang, gold):
    """A reply written exactly as each strategy asks is read back as the intended options."""
    style, multiple = LABEL_STYLE[strategy], len(gold) > 1
    kind = "mcq_n" if multiple else "mcq_1"
    if style == "bracket":
        letters = ", ".join("ABCD"[i] for i in gold)
        closing = closing_phrase(kind, lang)
        reply = "Some reasoning about [A] first.\n" + closing[:closing.index("[")] + f"[{letters}]."
    else:
        lines = format_options(OPTS, style).split("\n")
        reply = "\n".join(lines[i] for i in gold)
    assert extract_mcq(reply, 4, style, multiple, options=OPTS) == gold


def test_grade_mcq():
    assert grade_mcq((1,), (1,)) == 1.0
    assert grade_mcq((0, 2), (2, 0)) == 1.0
    assert grade_mcq((0,), (0, 2)) == 0.0
    assert grade_mcq(None, (0,)) == 0.0
    assert grade_mcq((0,), (0, 2), partial=True) == 0.5
    assert grade_mcq((0, 1), (0, 2), partial=True) == pytest.approx(1 / 3)
    assert grade_mcq((3,), (0, 2), partial=True) == 0.0
    assert grade_mcq(None, (0, 2), partial=True) == 0.0


# ----------------------------------------------------------------------------- the LLM grader

COURSE = Course("c1", "Signal Processing", "Electrical Engineering", "English", "master")
OPEN_Q = Question("q1", "c1", "open_answer", "What is the Nyquist rate of a signal band-limited to 4 kHz?", (), (),
                  False, "8 kHz", numeric_answer=8.0, numeric_tolerance=0.01)


def test_grader_messages_structure():
    msgs = grader_messages(OPEN_Q, COURSE, "It is 8 kHz.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Signal Processing" in msgs[0]["content"]
    user = msgs[1]["content"]
    for part in (OPEN_Q.question_body, OPEN_Q.question_answer, "It is 8 kHz.", "correct", "almost correct",
                 "mostly incorrect", "wrong answer", "JSON", "accuracy", "completeness", "grade"):
        assert part in user, part
    assert user.index(OPEN_Q.question_body) < user.index("It is 8 kHz.")
    generic = grader_messages(OPEN_Q, None, "x")[0]["content"]
    assert "Signal" not in generic and "grad" in generic
    assert grader_messages(OPEN_Q, Course("c", "", "", "English", "online"), "x")[0]["content"] == generic
    retry = grader_retry_messages(msgs, "hmm")
    assert retry[:2] == msgs and [m["role"] for m in retry[2:]] == ["assistant", "user"]
    assert retry[2]["content"] == "hmm" and "grade" in retry[3]["content"]


@pytest.mark.parametrize("text,label", [
    ("correct", "correct"),
    ("Correct", "correct"),
    ("  CORRECT ", "correct"),
    ("Almost Correct", "almost_correct"),
    ("almost_correct", "almost_correct"),
    ("almostcorrect", "almost_correct"),
    ("Mostly correct", "almost_correct"),
    ("mostly  incorrect", "mostly_incorrect"),
    ("Mostly-Incorrect", "mostly_incorrect"),
    ("Wrong answer", "wrong"),
    ("wrong", "wrong"),
    ('{"accuracy": "the value is correct", "completeness": "correct", "grade": "almost correct"}', "almost_correct"),
    ('The student is correct about X but not Y.\n{"accuracy": "partly", "grade": "Mostly Incorrect"}',
     "mostly_incorrect"),
    ("The reasoning is almost correct but the result is wrong. Grade: wrong answer", "wrong"),
    ("Grade = correct", "correct"),
    ("correct or almost correct, hard to say", None),
    ("I cannot grade this.", None),
    ("", None),
])
def test_extract_grade_label(text, label):
    assert extract_grade_label(text) == label


def test_points_mapping():
    assert GRADE_LABELS == ("correct", "almost_correct", "mostly_incorrect", "wrong")
    assert [label_points(lab) for lab in GRADE_LABELS] == [1.0, 0.75, 0.25, 0.0]
    assert set(DEFAULT_POINTS) == set(GRADE_LABELS)
    strict = {"correct": 1.0, "almost_correct": 0.0, "mostly_incorrect": 0.0, "wrong": 0.0}
    assert label_points("almost_correct", strict) == 0.0 and label_points(None) is None


# ----------------------------------------------------------------------------- numeric checker

@pytest.mark.parametrize("text,gold,tol,ok", [
    ("The final answer is 3.14", 3.14, 0.01, True),
    ("La réponse est 3,14", 3.14, 0.01, True),
    ("Answer: 1.5e-3 s", 1.5e-3, 0.01, True),
    ("t = 1.5 × 10^-3 s", 1.5e-3, 0.01, True),
    ("E = 2.0\\times10^{4} J", 2.0e4, 0.01, True),
    ("The energy is 12,345 J", 12345, 0.001, True),
    ("L'énergie vaut 12 345 J", 12345, 0.001, True),
    ("Réponse finale : 1 234,5 kJ", 1234.5, 0.001, True),
    ("g = 9.81 m/s^2", 9.81, 0.01, True),                       # the unit's exponent is not the answer
    ("Final answer: 12 m^2", 12, 0.01, True),
    ("Answer: 42 (that is 6 × 7)", 42, 0.01, True),             # the number the answer phrase introduces
    ("x = 2 + 3 = 5", 5, 0.01, True),
    ("We first get 10, then 20 after correcting.", 20, 0.01, True),  # no phrase: the last number
    ("v ≈ −3.5 m/s", -3.5, 0.01, True),
    ("The speed is 3.2 m/s", 3.14, 0.01, False),
    ("The speed is 3.2 m/s", 3.14, 0.05, True),
    ("The net force is 0 N", 0.0, 0.01, True),
    ("Answer: 0.5", 0.0, 0.01, False),
    ("Answer: 8 kHz", 8.0, 0.01, True),
    ("η = 0,5", 0.5, 0.01, True),
    ("H2O has a molar mass of 18 g/mol", 18, 0.01, True),
])
def test_check_numeric(text, gold, tol, ok):
    assert check_numeric(text, gold, tol) is ok


@pytest.mark.parametrize("text,gold,tol,ok", [
    # scientific notation: "e"/"E" + ASCII digits right after the mantissa; sub/superscripts are not digits
    ("⟨E⟩ = 2.5 E₁", 2.5, 0.001, True),
    ("⟨E⟩ = 2.5 E₁", 25, 0.01, False),
    ("The final answer is 2.5 e-3", 2.5, 0.01, True),           # a space: not scientific notation
    ("The final answer is 2.5E1", 25, 0.01, True),
    ("w₁ = 0.6", 0.6, 0.001, True),
    ("CO₂ has a molar mass of 44 g/mol", 44, 0.01, True),
    ("Final answer: 12 m²", 12, 0.01, True),
    ("t = 1.5 × 10⁻³ s", 1.5e-3, 0.01, True),                  # a superscript exponent is a power
    ("Answer: 10⁻³ s", 1e-3, 0.01, True),
    ("c = 3·10⁸ m/s", 3e8, 0.01, True),
    ("E₁ = 13.6 eV, so ⟨E⟩ = 2.5 E₁ = 34 eV", 34, 0.01, True),
    # the opening statement of the answer: later clauses qualify it
    ("25, atteinte en x = y = 5", 25, 0.001, True),
    ("Ma réponse finale est : 25, atteinte en x = y = 5", 25, 0.001, True),
    ("My final answer is: 42 N, reached at x = 5", 42, 0.01, True),
    ("Answer: 42 N, since F = m a = 6 × 7", 42, 0.01, True),
    ("Final answer: 42. This is because F = ma = 6 × 7", 42, 0.01, True),
    ("The answer is 42\nExplanation: F = ma with m = 6", 42, 0.01, True),
    ("... so the final answer is 42 N", 42, 0.01, True),
    ("Final answer: about 42 N.", 42, 0.01, True),
    ("Answer: 2 + 3 = 5", 5, 0.01, True),                       # an equation chain: its value
    ("27/5 = 5,4", 5.4, 0.01, True),
    # ... but a reasoning that starts with a number is read by its conclusion
    ("3 forces act on the block, so the net force is 12 N", 12, 0.01, True),
    ("1. Compute the area: A = 2 m^2\n2. Multiply: F = 42 N", 42, 0.01, True),
    ("My final answer is:\n1. v = 3 m/s\n2. E = 9 J", 9, 0.01, True),
    # "final answer" outranks "answer"/"result"
    ("The answer seemed to be 7 at first. Final answer: 42", 42, 0.01, True),
    ("Final answer: 42 N; as an answer in kN that is 0.042", 42, 0.01, True),
    # parenthesised restatements and asides never override the number outside them
    ("About 0.167 (1/6)", 1 / 6, 0.01, True),
    ("About 25465 Pa (25.5 kPa)", 25464.8, 0.01, True),
    ("About 98696 N/m (≈ 98.7 kN/m)", 98696, 0.01, True),
    ("About 5033 Hz (≈ 5.03 kHz)", 5032.92, 0.01, True),
    ("Réponse finale : environ 98 696 N/m (≈ 98,7 kN/m)", 98696, 0.01, True),
    ("So the result is 12 N (we used g = 9.81 m/s^2)", 12, 0.01, True),
    ("The frequency (f = 1/(2π√(LC))) is 5033 Hz", 5033, 0.01, True),
    ("F1 = 0.727 (precision 0.8, recall 0.667)", 0.727273, 0.01, True),
    ("π (≈ 3,1416)", 3.14159, 0.005, True),                    # only parenthesised numbers: they count
    # fractions are numbers
    ("x = 1/6", 1 / 6, 0.01, True),
    ("1/3 (≈ 0,333)", 1 / 3, 0.01, True),
    ("p = 5/36 (about 0.139)", 5 / 36, 0.01, True),
])
def test_check_numeric_rules(text, gold, tol, ok):
    assert check_numeric(text, gold, tol) is ok


def test_check_numeric_reads_every_gold_answer_of_the_bank():
    """The checker must accept the bank's own gold texts: each states its numeric answer."""
    from lionsnb.prompting.bank import load_bank

    numeric = [q for q in load_bank().questions if q.numeric_answer is not None]
    assert len(numeric) >= 20
    wrong = [(q.question_id, q.question_answer, q.numeric_answer) for q in numeric
             if check_numeric(q.question_answer, q.numeric_answer, q.numeric_tolerance) is not True]
    assert not wrong, wrong


def test_parse_numbers_superscripts_subscripts_fractions():
    assert [v for _, v in parse_numbers("E₁ H₂O C₅ m²")] == []
    assert [v for _, v in parse_numbers("10⁻³ and 2³")] == [pytest.approx(1e-3), 8.0]
    assert [v for _, v in parse_numbers("2.5 E1")] == [2.5]                  # "E1" is a name, not an exponent
    assert [v for _, v in parse_numbers("2.5e1 and 2.5E-1")] == [25.0, 0.25]
    assert [v for _, v in parse_numbers("1/4 and 27 / 5")] == [0.25, 5.4]
    assert [v for _, v in parse_numbers("½")] == [0.5]
    assert [v for _, v in parse_numbers("L/2, m/s^2")] == []                 # a denominator or an exponent
    assert [v for _, v in parse_numbers("on 12/05/2024")] == [12.0]          # a date is not a fraction
    assert [v for _, v in parse_numbers("10^3 J")] == [1000.0]
    assert parse_numbers("1/0") == []


def test_check_numeric_without_a_number_and_comma_rules():
    assert check_numeric("I do not know.", 3.0, 0.01) is None
    assert check_numeric("", 3.0, 0.01) is None
    assert [v for _, v in parse_numbers("1,234")] == [1234.0]
    assert [v for _, v in parse_numbers("1,234", decimal_comma=True)] == [1.234]
    assert [v for _, v in parse_numbers("0,125 and 3,14")] == [0.125, 3.14]
    assert [v for _, v in parse_numbers("1,234,567.5")] == [1234567.5]
    assert [v for _, v in parse_numbers("6.02e23")] == [pytest.approx(6.02e23)]
    assert check_numeric("Answer: 2.5", 2.5, None) is True  # default tolerance 1 %


# ----------------------------------------------------------------------------- Cohen's kappa

def test_cohen_kappa_hand_computed():
    a = [1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    b = [1, 0, 0, 0, 1, 1, 1, 1, 0, 1]
    # p_o = 8/10; both raters say 1 six times in ten: p_e = 0.6*0.6 + 0.4*0.4 = 0.52; kappa = 0.28/0.48 = 7/12
    assert cohen_kappa(a, b) == pytest.approx(7 / 12)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert cohen_kappa(["x"] * 5, ["x"] * 5) == 1.0
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError):
        cohen_kappa([], [])


def test_cohen_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(0)
    for trial in range(20):
        n = rng.randint(5, 60)
        a = [rng.choice(GRADE_LABELS) for _ in range(n)]
        b = [x if rng.random() < 0.6 else rng.choice(GRADE_LABELS) for x in a]
        ref = cohen_kappa_score(a, b)
        assert math.isclose(cohen_kappa(a, b), ref, abs_tol=1e-12), trial


def test_numeric_option_texts_make_a_bare_number_ambiguous():
    """Options "0".."3": a bare "3" may be label 3 or the option reading "3" -> None; "k. text" stays readable."""
    options = ("0", "1", "2", "3")
    assert extract_mcq("The answer is 3", 4, "number", False, options=options) is None
    assert extract_mcq("3. 2", 4, "number", False, options=options) == (2,)
    assert extract_mcq("Answer: 4. 3", 4, "number", False, options=options) == (3,)
    assert extract_mcq("The answer is 3", 4, "number", False, options=("a", "b", "c", "d")) == (2,)
