"""The eight prompting strategies of Borges et al. (PNAS 2024), written in our own words with the paper's structure.

Each strategy is a *plan*: a generator that yields the chat messages of each model call, receives each reply through
``.send(reply)`` and finally returns an :class:`Answer`. A driver (:func:`run_plan`, or the batched
:func:`lionsnb.prompting.study.run_study`) feeds it the replies::

    plan = strategy_plan("self_refine", question, course)
    messages = next(plan)                       # first call
    while True:
        try:
            messages = plan.send(chat(messages))
        except StopIteration as stop:
            answer = stop.value                 # Answer(text, selected, calls, transcript)
            break

What each strategy sends (options labelled as in :data:`LABEL_STYLE`; French courses get every instruction and
persona in French):

=================  =========================================================================================  =====
strategy           messages                                                                                    calls
=================  =========================================================================================  =====
zero_shot          user: instruction by type (MCQ-1 / MCQ-n / open), newline, body, numbered options            1
one_shot           as zero_shot, preceded by one demo exchange (user: demo question, assistant: its gold         1
                   answer, as "k. option" lines for MCQ)
cot_zero_shot      system: expert in the course; user: step-by-step instruction, "Question:" body,              1
                   "Options:" lettered options
cot_four_shot      as cot_zero_shot, preceded by four demo exchanges (assistant: explanation, then gold)        1
tree_of_thought    system: expert; user: three experts reason step by step and drop out on errors, then a       1
                   fixed closing sentence with the answer in square brackets; the question comes last
metacog            system: expert; user: the task type, the question, a four-stage self-monitoring procedure,   1
                   the same closing sentence
self_refine        system: expert; (1) reason then answer; (2) feedback on that answer; (3) refined answer      3
expert_prompting   (1) the course professor names three experts as JSON; (2-4) each expert (system persona)     4 / 5
                   answers with the zero-shot instruction; MCQ: majority vote, open: (5) pick the best expert
=================  =========================================================================================  =====

Expert prompting, details (ours): the vote counts the three parsed expert answers (unparseable ones do not vote) and
a tie goes to the earliest expert among the tied answers (:func:`majority_vote`); a naming reply that is not a JSON
object of three titles is completed with generic titles built from the course (:func:`parse_experts`); an
unreadable choice in the combining call keeps expert 1's answer.

Differences from the public release, on purpose: self-refine makes the three designed calls (the release only makes
the first) and also handles open answers; the demonstrations are chosen by a documented TF-IDF rule (the release's
similarity lists and validated chain-of-thought files are not public, see :func:`demonstrations`).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lionsnb.prompting.grading import LETTERS, extract_mcq

if TYPE_CHECKING:  # pragma: no cover
    from lionsnb.prompting.bank import Bank, Course, Question

__all__ = [
    "STRATEGIES", "LABEL_STYLE", "CALLS", "Messages", "Answer", "demonstrations", "strategy_plan", "build_messages",
    "format_options", "run_plan", "question_kind", "language_code", "closing_phrase", "parse_experts",
    "majority_vote", "tfidf_matrix", "DEMO_CHAR_BUDGET", "REASONING", "reply_token_caps",
]

Messages = list[dict[str, str]]

STRATEGIES = ("zero_shot", "one_shot", "cot_zero_shot", "cot_four_shot", "tree_of_thought", "metacog",
              "self_refine", "expert_prompting")

#: how each strategy labels the options (the extractor must read the same style)
LABEL_STYLE = {
    "zero_shot": "number", "one_shot": "number", "cot_zero_shot": "letter", "cot_four_shot": "letter",
    "tree_of_thought": "bracket", "metacog": "bracket", "self_refine": "letter", "expert_prompting": "number",
}

#: model calls per question: (MCQ, open answer)
CALLS = {s: (1, 1) for s in STRATEGIES} | {"self_refine": (3, 3), "expert_prompting": (4, 5)}

#: strategies whose prompts ask the model to reason before it answers (chain of thought, three experts, four stages,
#: answer-feedback-refine): their replies need several times more tokens than a direct answer
REASONING = ("cot_zero_shot", "cot_four_shot", "tree_of_thought", "metacog", "self_refine")


def reply_token_caps(direct: int, reasoning: int) -> dict[str, int]:
    """Per strategy, the most tokens a reply may have: ``reasoning`` for :data:`REASONING`, ``direct`` for the
    others (zero-shot, one-shot and the expert calls, which ask for the answer alone)."""
    if int(direct) < 1 or int(reasoning) < 1:
        raise ValueError("reply token caps must be positive")
    return {s: int(reasoning if s in REASONING else direct) for s in STRATEGIES}

#: four-shot prompts drop their least similar demonstrations until the demo turns fit in this many characters
#: (about 4,000 tokens; the release drops demos past its context cap in the same spirit)
DEMO_CHAR_BUDGET = 16000


@dataclass
class Answer:
    """What a strategy returns: the final answer text, and how it got there."""

    text: str                                   # the final answer text to be parsed / graded
    selected: tuple[int, ...] | None = None     # set only when the strategy itself decided (expert majority vote)
    calls: int = 1
    transcript: list[tuple[Messages, str]] = field(default_factory=list)


# ============================================================================= small helpers

def language_code(course: Course | None) -> str:
    """"fr" for a French course, else "en"."""
    lang = (getattr(course, "course_language", "") or "").strip().lower()
    return "fr" if lang.startswith("fr") else "en"


def question_kind(question: Question) -> str:
    """"open" (open answer), "mcq_n" (several correct options may be chosen) or "mcq_1"."""
    if question.question_type != "mcq" or not question.question_options:
        return "open"
    return "mcq_n" if question.multiple_correct_answers else "mcq_1"


def format_options(options: Sequence[str], style: str) -> str:
    """The options one per line: "1. text" (number), "A: text" (letter) or "[A]: text" (bracket)."""
    if style not in ("number", "letter", "bracket"):
        raise ValueError(f"unknown label style {style!r}: expected 'number', 'letter' or 'bracket'")
    if style != "number" and len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} options cannot be lettered (at most {len(LETTERS)})")
    lines = []
    for i, text in enumerate(options):
        if style == "number":
            lines.append(f"{i + 1}. {text}")
        elif style == "letter":
            lines.append(f"{LETTERS[i]}: {text}")
        else:
            lines.append(f"[{LETTERS[i]}]: {text}")
    return "\n".join(lines)


def _gold_lines(question: Question, style: str) -> str:
    """The gold answer as a demonstration reply: the correct option lines for MCQ, the answer text otherwise."""
    if question_kind(question) == "open":
        return question.question_answer
    opts = question.question_options
    return "\n".join(format_options(opts, style).split("\n")[i] for i in sorted(question.mcq_answer_index))


def _course_name(course: Course | None) -> str:
    return (getattr(course, "course_name", "") or "").strip() or "this course"


def _sys(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


# ============================================================================= the wording (ours), by language

_FIELDS = {"en": {"question": "Question:", "options": "Options:"},
           "fr": {"question": "Question :", "options": "Options :"}}

_EXPERT_PERSONA = {"en": "You are an expert in {course}.", "fr": "Vous êtes un expert en {course}."}

_ZERO_SHOT = {
    "en": {
        "mcq_1": "Exactly one of the numbered answers below is right. Reply with the number and the text of that "
                 "answer.",
        "mcq_n": "One or more of the numbered answers below may be right. Reply with the number and the text of "
                 "every right answer, one per line.",
        "open": "Work out the following problem and give your answer.",
    },
    "fr": {
        "mcq_1": "Une seule des réponses numérotées ci-dessous est juste. Répondez avec le numéro et le texte de "
                 "cette réponse.",
        "mcq_n": "Une ou plusieurs des réponses numérotées ci-dessous peuvent être justes. Répondez avec le "
                 "numéro et le texte de chaque réponse juste, une par ligne.",
        "open": "Résolvez le problème suivant et donnez votre réponse.",
    },
}

_COT = {
    "en": {
        "mcq_1": "Reason about the question step by step first. Then give the one correct option as its letter "
                 "followed by its text.",
        "mcq_n": "Reason about the question step by step first. Several options may be correct: then give every "
                 "correct option, each as its letter followed by its text.",
        "open": "Reason about the question step by step first. Then give the correct answer.",
    },
    "fr": {
        "mcq_1": "Raisonnez d'abord pas à pas sur la question. Donnez ensuite la seule option correcte, sous la "
                 "forme de sa lettre suivie de son texte.",
        "mcq_n": "Raisonnez d'abord pas à pas sur la question. Plusieurs options peuvent être correctes : donnez "
                 "ensuite chaque option correcte, sous la forme de sa lettre suivie de son texte.",
        "open": "Raisonnez d'abord pas à pas sur la question. Donnez ensuite la réponse correcte.",
    },
}

_CLOSING = {
    "en": {"mcq_1": ("My final answer is [X]", ", where X is the letter of the correct option"),
           "mcq_n": ("My final answers are [X, Y]",
                     ", with the letters of all the correct options inside the brackets"),
           "open": ("My final answer is: ", ", followed by your answer")},
    "fr": {"mcq_1": ("Ma réponse finale est [X]", ", où X est la lettre de l'option correcte"),
           "mcq_n": ("Mes réponses finales sont [X, Y]",
                     ", avec entre les crochets les lettres de toutes les options correctes"),
           "open": ("Ma réponse finale est : ", ", suivie de votre réponse")},
}

_TOT = {
    "en": ("Picture three experts who work on the question below together. In each round, every expert writes "
           "down one step of their reasoning and shares it with the others, and then all of them move on to the "
           "next step. An expert who notices a mistake in their own reasoning leaves the discussion. Each expert "
           "also says how likely they think their current claim is to be right. The discussion goes on until the "
           "remaining experts agree on one answer. End your reply with the sentence \"{closing}\"{hint}."),
    "fr": ("Imaginez trois experts qui travaillent ensemble sur la question ci-dessous. À chaque tour, chaque "
           "expert écrit une étape de son raisonnement et la partage avec les autres, puis tous passent à l'étape "
           "suivante. Un expert qui remarque une erreur dans son propre raisonnement quitte la discussion. Chaque "
           "expert indique aussi à quel point il juge probable que son affirmation du moment soit juste. La "
           "discussion continue jusqu'à ce que les experts restants s'accordent sur une réponse. Terminez votre "
           "réponse par la phrase « {closing} »{hint}."),
}

_METACOG_TASK = {
    "en": {"mcq_1": "Below is a multiple-choice question in which exactly one option is correct.",
           "mcq_n": "Below is a multiple-choice question in which one or more options may be correct.",
           "open": "Below is an open question."},
    "fr": {"mcq_1": "Voici une question à choix multiple dont exactement une option est correcte.",
           "mcq_n": "Voici une question à choix multiple dont une ou plusieurs options peuvent être correctes.",
           "open": "Voici une question ouverte."},
}

_METACOG_STAGES = {
    "en": ("Work through the following four stages and label each one.\n"
           "1. Put the question in your own words to make sure you understand what is asked.\n"
           "2. Name the concepts and methods that apply, and propose a first answer.\n"
           "3. Examine that first analysis critically; where you have doubts, think again.\n"
           "4. Commit to a final answer and explain briefly why you trust it.\n"
           "End your reply with the sentence \"{closing}\"{hint}."),
    "fr": ("Suivez les quatre étapes ci-dessous en les numérotant.\n"
           "1. Reformulez la question avec vos mots pour vous assurer de bien comprendre ce qui est demandé.\n"
           "2. Nommez les notions et les méthodes utiles, et proposez une première réponse.\n"
           "3. Examinez cette première analyse d'un œil critique ; en cas de doute, reprenez-la.\n"
           "4. Arrêtez une réponse finale et expliquez brièvement pourquoi vous vous y fiez.\n"
           "Terminez votre réponse par la phrase « {closing} »{hint}."),
}

_REFINE_ANSWER = {
    "en": {"mcq_1": "Explain your reasoning first, then state the correct option as its letter followed by its "
                    "text.",
           "mcq_n": "Explain your reasoning first, then state every correct option (there may be several), each "
                    "as its letter followed by its text.",
           "open": "Explain your reasoning first, then state the correct answer."},
    "fr": {"mcq_1": "Expliquez d'abord votre raisonnement, puis indiquez l'option correcte sous la forme de sa "
                    "lettre suivie de son texte.",
           "mcq_n": "Expliquez d'abord votre raisonnement, puis indiquez chaque option correcte (il peut y en "
                    "avoir plusieurs), sous la forme de sa lettre suivie de son texte.",
           "open": "Expliquez d'abord votre raisonnement, puis indiquez la réponse correcte."},
}

_REFINE_FEEDBACK = {
    "en": ("Now review the answer you just gave as a demanding examiner would. Point out every mistake or gap in "
           "the reasoning, and say whether the answer should change and why. Give feedback only: do not write a "
           "new answer yet."),
    "fr": ("Relisez maintenant la réponse que vous venez de donner comme le ferait un examinateur exigeant. "
           "Signalez chaque erreur ou lacune du raisonnement, et dites si la réponse doit changer et pourquoi. "
           "Donnez seulement ce retour : n'écrivez pas encore de nouvelle réponse."),
}

_REFINE_IMPROVE = {
    "en": "Taking this feedback into account, write an improved answer to the question. {instruction}",
    "fr": "En tenant compte de ce retour, rédigez une meilleure réponse à la question. {instruction}",
}

_PROFESSOR = {"en": "You are a professor who teaches {course}.", "fr": "Vous êtes professeur du cours {course}."}

_NAME_EXPERTS = {
    "en": ("Which three experts would be best placed to answer the question below? Reply only with a JSON object "
           "that maps 1, 2 and 3 to the experts' titles, such as {\"1\": \"...\", \"2\": \"...\", \"3\": "
           "\"...\"}, and add no explanation."),
    "fr": ("Quels sont les trois experts les mieux placés pour répondre à la question ci-dessous ? Répondez "
           "uniquement par un objet JSON qui associe 1, 2 et 3 aux titres des experts, par exemple {\"1\": "
           "\"...\", \"2\": \"...\", \"3\": \"...\"}, sans aucune explication."),
}

_AS_EXPERT = {"en": "You are answering as the following expert: {expert}.",
              "fr": "Vous répondez en tant qu'expert : {expert}."}

#: used when the expert-naming reply is not a usable JSON object (or names fewer than three experts)
_GENERIC_EXPERTS = {
    "en": ("an expert in {course}", "a researcher in {program}", "an experienced teacher of {course}"),
    "fr": ("un expert en {course}", "un chercheur en {program}", "un enseignant expérimenté du cours {course}"),
}

_CHOOSE_EXPERT = {
    "en": {"intro": "Three experts answered the question below.", "expert": "Expert {k} ({name}):",
           "ask": "Which expert gave the best answer? Reply with that expert's number (1, 2 or 3) only."},
    "fr": {"intro": "Trois experts ont répondu à la question ci-dessous.", "expert": "Expert {k} ({name}) :",
           "ask": "Quel expert a donné la meilleure réponse ? Répondez uniquement par son numéro (1, 2 ou 3)."},
}


def closing_phrase(kind: str, lang: str) -> str:
    """The fixed closing sentence that tree_of_thought and metacog ask for (answer in square brackets for MCQ)."""
    return _CLOSING[lang][kind][0]


# ============================================================================= prompt bodies

def _zero_shot_prompt(q: Question, lang: str) -> str:
    kind = question_kind(q)
    text = f"{_ZERO_SHOT[lang][kind]}\n{q.question_body}"
    if kind != "open":
        text += "\n" + format_options(q.question_options, "number")
    return text


def _question_fields(q: Question, lang: str, style: str, *, options_on_new_line: bool = False) -> str:
    """'Question: body' then 'Options: A: ...' (the first option right after the field label, as in the paper)."""
    f = _FIELDS[lang]
    text = f"{f['question']} {q.question_body}"
    if question_kind(q) != "open":
        sep = "\n" if options_on_new_line else " "
        text += f"\n{f['options']}{sep}{format_options(q.question_options, style)}"
    return text


def _cot_prompt(q: Question, lang: str) -> str:
    return f"{_COT[lang][question_kind(q)]}\n{_question_fields(q, lang, 'letter')}"


def _tot_prompt(q: Question, lang: str) -> str:
    closing, hint = _CLOSING[lang][question_kind(q)]
    head = _TOT[lang].format(closing=closing.rstrip(), hint=hint)
    return f"{head}\n{_question_fields(q, lang, 'bracket', options_on_new_line=True)}"


def _metacog_prompt(q: Question, lang: str) -> str:
    kind = question_kind(q)
    closing, hint = _CLOSING[lang][kind]
    return (f"{_METACOG_TASK[lang][kind]}\n{_question_fields(q, lang, 'bracket', options_on_new_line=True)}\n"
            f"{_METACOG_STAGES[lang].format(closing=closing.rstrip(), hint=hint)}")


def _refine_prompt(q: Question, lang: str) -> str:
    return f"{_REFINE_ANSWER[lang][question_kind(q)]}\n{_question_fields(q, lang, 'letter')}"


def _persona(course: Course | None, lang: str) -> dict[str, str]:
    return _sys(_EXPERT_PERSONA[lang].format(course=_course_name(course)))


# ============================================================================= demonstrations (TF-IDF)

_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def tfidf_matrix(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised TF-IDF rows (raw term counts x smooth idf = ln((1 + n) / (1 + df)) + 1), in numpy.

    Tokens are lower-cased runs of word characters (accents included). Rows of texts without tokens are zero.
    """
    docs = [_TOKEN_RE.findall((t or "").lower()) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
    counts = np.zeros((len(docs), max(len(vocab), 1)))
    for r, d in enumerate(docs):
        for w in d:
            counts[r, vocab[w]] += 1.0
    df = (counts > 0).sum(axis=0)
    idf = np.log((1.0 + len(docs)) / (1.0 + df)) + 1.0
    x = counts * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def demonstrations(bank: Bank, question: Question, k: int) -> list[Question]:
    """Up to ``k`` demonstration questions for ``question``, most useful first.

    Rule (ours; the release's similarity lists are not public): candidates are the other questions of the same
    course (never the question itself, matched by id); those of the same ``question_type`` come first; within
    each group, the higher the TF-IDF cosine similarity of the bodies (fitted on the course's questions), the
    earlier; ties keep the bank order. Deterministic.
    """
    if k <= 0:
        return []
    same_course = [c for c in bank.questions if c.course_id == question.course_id]
    candidates = [c for c in same_course if c.question_id != question.question_id and c is not question]
    if not candidates:
        return []
    x = tfidf_matrix([question.question_body] + [c.question_body for c in candidates])
    sims = x[1:] @ x[0]
    order = sorted(range(len(candidates)),
                   key=lambda i: (candidates[i].question_type != question.question_type, -round(float(sims[i]), 12),
                                  i))
    return [candidates[i] for i in order[:k]]


# ============================================================================= expert prompting helpers

def _json_object(text: str) -> dict | None:
    """The first JSON object in ``text`` (the expert list may come wrapped in prose), or None."""
    text = text[:20000]
    start = text.find("{")
    while start >= 0:
        depth = 0
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        obj = json.loads(text[start:i + 1])
                    except ValueError:
                        break
                    return obj if isinstance(obj, dict) else None
        start = text.find("{", start + 1)
    return None


def parse_experts(reply: str, course: Course | None, lang: str = "en") -> tuple[list[str], bool]:
    """The three expert titles named in ``reply`` and whether any generic title had to be used.

    Reads the first JSON object of the reply (values in the order of their numeric keys, else in order); if that
    fails, lines such as ``"1": "a physicist"``. Missing, empty or overlong (> 200 characters) names are replaced
    by generic titles built from the course (an expert in the course, a researcher in its program, an experienced
    teacher of the course), so a malformed reply never stops the strategy.
    """
    names: list[str] = []
    obj = _json_object(reply or "")
    if obj:
        items = list(obj.items())
        if all(re.fullmatch(r"\s*\d+\s*", str(key)) for key, _ in items):
            items.sort(key=lambda kv: int(str(kv[0]).strip()))
        names = [str(v).strip() for _, v in items if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    if not names:
        found = re.findall(r"""["']?([1-3])["']?\s*[:=.)-]\s*["']([^"'\n]{1,200})["']""", reply or "")
        names = [n.strip() for _, n in sorted(found, key=lambda t: int(t[0]))]
    names = [n for n in names if n and len(n) <= 200][:3]
    used_fallback = len(names) < 3
    program = (getattr(course, "course_program", "") or "").strip() or _course_name(course)
    generic = [g.format(course=_course_name(course), program=program) for g in _GENERIC_EXPERTS[lang]]
    for g in generic:
        if len(names) >= 3:
            break
        if g not in names:
            names.append(g)
    return names[:3], used_fallback


def majority_vote(parsed: Sequence[tuple[int, ...] | None]) -> tuple[tuple[int, ...] | None, int | None]:
    """(winning selection, index of the first voter who gave it); unparseable votes (None) do not count.

    Ties between selections go to the one given by the earliest voter (so with three different answers the
    first expert's answer wins, and with the first expert unparseable, the second's). All None -> (None, None).
    """
    votes = [p for p in parsed if p is not None]
    if not votes:
        return None, None
    counts = Counter(votes)
    top = max(counts.values())
    for i, p in enumerate(parsed):
        if p is not None and counts[p] == top:
            return p, i
    raise AssertionError("unreachable")


def _choose_expert_prompt(q: Question, lang: str, experts: Sequence[str], answers: Sequence[str]) -> str:
    w = _CHOOSE_EXPERT[lang]
    parts = [w["intro"], _question_fields(q, lang, "number", options_on_new_line=True)]
    for k, (name, ans) in enumerate(zip(experts, answers), start=1):
        parts.append(f"{w['expert'].format(k=k, name=name)}\n{ans}")
    parts.append(w["ask"])
    return "\n\n".join(parts)


def _chosen_expert(reply: str) -> int | None:
    """0-based expert picked by the combining call: the first standalone 1, 2 or 3 in the reply."""
    m = re.search(r"(?<![\d.,])([123])(?![\d.,]\d)", reply or "")
    return int(m.group(1)) - 1 if m else None


# ============================================================================= the plans

def _check(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def _single_call(messages: Messages) -> Generator[Messages, str, Answer]:
    reply = yield messages
    return Answer(text=reply, calls=1, transcript=[(messages, reply)])


def _four_shot_messages(q: Question, course: Course | None, lang: str, demos: Sequence[Question]) -> Messages:
    shots: list[Messages] = []
    for d in list(demos)[:4]:
        explanation = (getattr(d, "question_explanation", "") or "").strip()
        gold = _gold_lines(d, "letter")
        shots.append([_user(_cot_prompt(d, lang)), _assistant(f"{explanation}\n{gold}" if explanation else gold)])
    while shots and sum(len(m["content"]) for s in shots for m in s) > DEMO_CHAR_BUDGET:
        shots.pop()  # the least similar demo goes first
    return [_persona(course, lang)] + [m for s in shots for m in s] + [_user(_cot_prompt(q, lang))]


def strategy_plan(strategy: str, question: Question, course: Course | None,
                  demos: Sequence[Question] = ()) -> Generator[Messages, str, Answer]:
    """The generator of ``strategy``'s model calls for one question (see the module docstring).

    ``demos``: one_shot uses ``demos[:1]`` and cot_four_shot ``demos[:4]`` (with fewer demos the prompt simply has
    fewer demonstration exchanges; none gives the zero-shot structure); the other strategies ignore them.
    """
    _check(strategy)
    lang = language_code(course)
    q = question
    if strategy == "zero_shot":
        return _single_call([_user(_zero_shot_prompt(q, lang))])
    if strategy == "one_shot":
        msgs: Messages = []
        for d in list(demos)[:1]:
            msgs += [_user(_zero_shot_prompt(d, lang)), _assistant(_gold_lines(d, "number"))]
        return _single_call(msgs + [_user(_zero_shot_prompt(q, lang))])
    if strategy == "cot_zero_shot":
        return _single_call([_persona(course, lang), _user(_cot_prompt(q, lang))])
    if strategy == "cot_four_shot":
        return _single_call(_four_shot_messages(q, course, lang, demos))
    if strategy == "tree_of_thought":
        return _single_call([_persona(course, lang), _user(_tot_prompt(q, lang))])
    if strategy == "metacog":
        return _single_call([_persona(course, lang), _user(_metacog_prompt(q, lang))])
    if strategy == "self_refine":
        return _self_refine(q, course, lang)
    return _expert_prompting(q, course, lang)


def _self_refine(q: Question, course: Course | None, lang: str) -> Generator[Messages, str, Answer]:
    """Answer, feedback on that answer, refined answer (Madaan et al. 2023): one conversation, three calls."""
    transcript = []
    first = [_persona(course, lang), _user(_refine_prompt(q, lang))]
    answer = yield first
    transcript.append((first, answer))
    second = first + [_assistant(answer), _user(_REFINE_FEEDBACK[lang])]
    feedback = yield second
    transcript.append((second, feedback))
    improve = _REFINE_IMPROVE[lang].format(instruction=_REFINE_ANSWER[lang][question_kind(q)])
    third = second + [_assistant(feedback), _user(improve)]
    refined = yield third
    transcript.append((third, refined))
    return Answer(text=refined, calls=3, transcript=transcript)


def _expert_prompting(q: Question, course: Course | None, lang: str) -> Generator[Messages, str, Answer]:
    """Name three experts (JSON), let each answer, combine: majority vote (MCQ) or a choosing call (open)."""
    transcript = []
    naming = [_sys(_PROFESSOR[lang].format(course=_course_name(course))),
              _user(f"{_NAME_EXPERTS[lang]}\n{_question_fields(q, lang, 'number', options_on_new_line=True)}")]
    reply = yield naming
    transcript.append((naming, reply))
    experts, _ = parse_experts(reply, course, lang)
    answers = []
    for name in experts:
        msgs = [_sys(_AS_EXPERT[lang].format(expert=name)), _user(_zero_shot_prompt(q, lang))]
        ans = yield msgs
        transcript.append((msgs, ans))
        answers.append(ans)
    kind = question_kind(q)
    if kind != "open":
        n = len(q.question_options)
        parsed = [extract_mcq(a, n, "number", kind == "mcq_n", options=q.question_options) for a in answers]
        selected, who = majority_vote(parsed)
        text = answers[who] if who is not None else answers[0]
        return Answer(text=text, selected=selected, calls=4, transcript=transcript)
    choose = [_sys(_PROFESSOR[lang].format(course=_course_name(course))),
              _user(_choose_expert_prompt(q, lang, experts, answers))]
    verdict = yield choose
    transcript.append((choose, verdict))
    pick = _chosen_expert(verdict)
    return Answer(text=answers[pick if pick is not None else 0], calls=5, transcript=transcript)


def build_messages(strategy: str, question: Question, course: Course | None,
                   demos: Sequence[Question] = ()) -> Messages:
    """The messages of the strategy's FIRST model call (what a notebook cell displays)."""
    return next(strategy_plan(strategy, question, course, demos))


def run_plan(plan: Generator[Messages, str, Answer], chat: Callable[[Messages], str]) -> Answer:
    """Drive a plan one call at a time with ``chat(messages) -> reply`` (the study batches instead)."""
    messages = next(plan)
    while True:
        try:
            messages = plan.send(chat(messages))
        except StopIteration as stop:
            return stop.value
