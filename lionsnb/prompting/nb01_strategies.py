"""Backs ``notebooks/prompting/01_strategies.ipynb``: the eight strategies, message by message, and how answers are
read and graded.

Borges et al., "Could ChatGPT get an engineering degree?", PNAS 121(49) e2414955121 (2024), arXiv 2408.11841,
asked GPT-3.5 and GPT-4 their course questions with eight prompting strategies. The notebook takes **one** question
of the project's bank and shows

* the exact chat messages each strategy sends (roles, demonstrations, option labels, closing format), built by the
  pure functions of :mod:`lionsnb.prompting.strategies`, so the question/strategy dropdowns need no model;
* every call of the multi-call strategies (self-refine, expert prompting), with placeholders for the model's replies;
* the same question asked in a French course (instructions and persona switch language, the body does not);
* the assistant's answers (the local model, the scripted stand-in or an OpenAI-compatible endpoint) through
  :func:`lionsnb.prompting.study.run_study`, with room to finish (reasoning strategies get more tokens), cached;
* the MCQ answer extractor on tricky outputs (the local model's real replies among them), and the open-answer
  grading: the four grader labels, the label -> points mapping (ours: the release does not contain it) and the
  numeric checker.

The algorithms live in the core modules of :mod:`lionsnb.prompting`; this module arranges them for the notebook.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lionsnb.context import setup_for
from lionsnb.display import show_html, show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.prompting.assistant import (
    assistant_knobs,
    decoding_settings,
    generation_note,
    make_backend,
    mark_truncated,
    reply_caps,
    response_dir,
    run_caps,
    settings_rows,
    tokenizer_for,
)
from lionsnb.prompting.bank import Bank, Course, Question, load_bank
from lionsnb.prompting.grading import (
    DEFAULT_POINTS,
    GRADE_LABELS,
    LETTERS,
    check_numeric,
    extract_grade_label,
    extract_mcq,
    grader_messages,
    label_points,
    parse_numbers,
)
from lionsnb.prompting.strategies import (
    LABEL_STYLE,
    STRATEGIES,
    build_messages,
    closing_phrase,
    demonstrations,
    format_options,
    language_code,
    question_kind,
    strategy_plan,
)
from lionsnb.prompting.study import DEMO_COUNTS, run_study
from lionsnb.prompting.views import figure_or_replies, labels_of, replies_table
from lionsnb.widgets import explore, is_headless

Messages = list[dict[str, str]]

SPEC = MethodSpec(
    name="prompting.nb01_strategies",
    title="Prompting 1: the eight strategies, message by message, and how answers are read and graded",
    profiles={
        # run_strategies: the strategies the assistant answers the chosen question with; direct_tokens /
        # reasoning_tokens: the local model's reply caps for direct answers and for the strategies that reason first
        # (replies that finish earlier stop there); endpoint_max_tokens: reply cap sent to an endpoint;
        # batch_size: prompts per generate; padded_tokens: at most this many padded prompt tokens per generate
        "smoke": dict(run_strategies=("zero_shot", "tree_of_thought"), direct_tokens=64, reasoning_tokens=160,
                      endpoint_max_tokens=256, batch_size=8, padded_tokens=2048),
        "teach": dict(run_strategies=STRATEGIES, direct_tokens=96, reasoning_tokens=256, endpoint_max_tokens=1024,
                      batch_size=8, padded_tokens=2048),
        "full": dict(run_strategies=STRATEGIES, direct_tokens=256, reasoning_tokens=1024, endpoint_max_tokens=2048,
                     batch_size=8, padded_tokens=8192),
    },
    knobs={
        "question_id": Knob("ME-251-01", "the question shown and run: an id of the project bank, e.g. CS-101-02",
                            str),
        "strategy": Knob("cot_zero_shot", "the strategy whose messages are shown first", str, choices=STRATEGIES),
        **assistant_knobs(),
    },
)
setup = setup_for(SPEC)

#: model answers of the exercises without code (for teachers; `lionsnb answers prompting_strategies` prints them)
MODEL_ANSWERS = {
    4: "Reading the run's table: the reasoning strategies (chain of thought, tree of thought, metacognitive "
       "prompting, self-refine) write several times more tokens than zero-shot before they commit, which is why "
       "they get a larger reply cap; a reply marked 'cut' stopped at that cap and may not have reached its answer "
       "yet, so its 'unparseable' says more about the cap than about the model. A small model also tends to end a "
       "chain of thought with a sentence that restates an option's text ('... is 67%.') instead of the requested "
       "label; the extractor reads such a closing statement (rule 4), but not an option list copied back, which "
       "stays unparseable. With a larger model behind an endpoint the replies follow the requested formats and the "
       "cap is rarely reached.",
}


# ============================================================================= the bank and one question


@functools.lru_cache(maxsize=1)
def project_bank() -> Bank:
    """The project's question bank (``data/prompting``), loaded once."""
    return load_bank()


def get_question(bank: Bank, question_id: str) -> Question:
    """The question ``question_id`` of ``bank``; a ``ValueError`` with close ids when there is none."""
    try:
        return bank.question(question_id)
    except KeyError:
        import difflib

        ids = [q.question_id for q in bank]
        close = difflib.get_close_matches(question_id, ids, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"QUESTION_ID = {question_id!r} is not in the bank ({len(ids)} questions, ids such as "
                         f"{ids[0]}, {ids[-1]}).{hint} Fix it in the parameters cell.") from None


def demos_for(bank: Bank, question: Question, strategy: str) -> list[Question]:
    """The demonstrations ``strategy`` uses for ``question`` (one-shot 1, four-shot 4, others none), as the study."""
    k = DEMO_COUNTS.get(strategy, 0)
    return list(demonstrations(bank, question, k)) if k else []


def as_french(course: Course) -> Course:
    """The same course taught in French (only the language changes): the builders then write French prompts."""
    return dataclasses.replace(course, course_language="French")


def question_table(bank: Bank, question: Question):
    """The question as a table: course, kind, difficulty, body, options (the correct ones marked) or gold answer."""
    c = bank.course_of(question)
    rows: dict[str, Any] = {
        "question": question.question_id,
        "course": f"{c.course_name} ({c.course_program}, {c.course_year}, {c.course_language})",
        "kind": question.kind, "difficulty": question.question_difficulty, "Bloom level": question.blooms_rating,
        "body": question.question_body}
    for i, option in enumerate(question.question_options):
        rows[f"option {i + 1}"] = option + ("   (correct)" if i in question.mcq_answer_index else "")
    if not question.is_mcq:
        rows["gold answer"] = question.question_answer
        if question.numeric_answer is not None:
            rows["numeric gold"] = f"{question.numeric_answer:g} (relative tolerance {question.numeric_tolerance:g})"
    return table(rows, title=f"The question of this notebook (one of the bank's {len(bank)} questions in "
                             f"{len(bank.courses)} courses)")


# ============================================================================= every call of a plan


def placeholder_reply(strategy: str, call: int) -> str:
    """What stands for the model's reply to call ``call`` (1-based) when the calls are shown without a model.

    Expert prompting's first call asks for a JSON object of three experts, so its placeholder is such an object.
    """
    if strategy == "expert_prompting" and call == 1:
        return '{"1": "⟨expert 1 named by the model⟩", "2": "⟨expert 2⟩", "3": "⟨expert 3⟩"}'
    return f"⟨the model's reply to call {call}⟩"


def plan_calls(strategy: str, question: Question, course: Course | None,
               demos: Sequence[Question] = (),
               reply: Callable[[str, int], str] = placeholder_reply) -> list[Messages]:
    """The messages of every call ``strategy`` makes for ``question``, the replies being ``reply(strategy, k)``.

    Pure: no model is involved. Self-refine makes 3 calls; expert prompting 4 (MCQ, majority vote) or 5 (open:
    a last call picks the best expert); the others 1.
    """
    plan = strategy_plan(strategy, question, course, demos)
    calls: list[Messages] = []
    messages = next(plan)
    while True:
        calls.append([dict(m) for m in messages])
        try:
            messages = plan.send(reply(strategy, len(calls)))
        except StopIteration:
            return calls


_ROLE_COLOURS = {"system": "#8e44ad", "user": "#2471a3", "assistant": "#1e8449"}


def _message_block(message: dict[str, str]) -> str:
    role = message["role"]
    colour = _ROLE_COLOURS.get(role, "#555")
    content = html.escape(message["content"])
    return (f"<div style='margin:3px 0;padding:3px 8px;border-left:4px solid {colour};background:#f8f9f9'>"
            f"<b style='color:{colour}'>{role}</b> <span style='color:#888;font-size:85%'>"
            f"({len(message['content'])} characters)</span>"
            f"<pre style='white-space:pre-wrap;margin:2px 0;font-size:90%'>{content}</pre></div>")


def calls_html(calls: Sequence[Messages], title: str = "") -> str:
    """HTML of a plan's calls: call 1 in full; a later call that resends the earlier conversation shows only its
    new messages (and says how many earlier ones are sent again)."""
    parts = ["<div style='font-family:sans-serif'>" + (f"<h4 style='margin:4px 0'>{html.escape(title)}</h4>"
                                                         if title else "")]
    previous: Messages = []
    for k, messages in enumerate(calls, start=1):
        shared = 0
        if previous and messages[:len(previous)] == previous:
            shared = len(previous)
        head = f"call {k} of {len(calls)}: {len(messages)} message(s)"
        if shared:
            head += f", the {shared} message(s) of call {k - 1} sent again, then:"
        parts.append(f"<div style='margin-top:6px;color:#444'><i>{head}</i></div>")
        parts.extend(_message_block(m) for m in messages[shared:])
        previous = messages  # a follow-up call (self-refine) resends this conversation, then adds to it
    parts.append("</div>")
    return "".join(parts)


def strategy_html(bank: Bank, question_id: str, strategy: str, course: Course | None = None) -> str:
    """The HTML view of every call of ``strategy`` on ``question_id`` (the course's language unless ``course``)."""
    q = get_question(bank, question_id)
    course = course if course is not None else bank.course_of(q)
    calls = plan_calls(strategy, q, course, demos_for(bank, q, strategy))
    title = (f"{strategy} on {q.question_id} ({q.kind}, {course.course_language}); options labelled "
             f"'{LABEL_STYLE[strategy]}'")
    return calls_html(calls, title)


def roles(messages: Messages) -> list[str]:
    return [m["role"] for m in messages]


# ============================================================================= the dropdown view


class MessageExplorer:
    """Question and strategy dropdowns over :func:`strategy_html` (pure, so a change redraws at once)."""

    def __init__(self, bank: Bank, question_id: str, strategy: str):
        get_question(bank, question_id)
        if strategy not in STRATEGIES:
            raise ValueError(f"STRATEGY = {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        self.bank, self.question_id, self.strategy = bank, question_id, strategy
        self.view = None
        self.last_ms: float | None = None

    def html(self) -> str:
        return strategy_html(self.bank, self.question_id, self.strategy)

    def update(self, question_id: str | None = None, strategy: str | None = None) -> str:
        """Move to another question and/or strategy; returns (and, live, shows) the new HTML."""
        start = time.perf_counter()
        if question_id is not None:
            get_question(self.bank, question_id)
            self.question_id = question_id
        if strategy is not None:
            if strategy not in STRATEGIES:
                raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
            self.strategy = strategy
        text = self.html()
        if self.view is not None:
            self.view.value = text
        self.last_ms = 1e3 * (time.perf_counter() - start)
        return text

    def build_controls(self):
        import ipywidgets as w

        options = [(f"{q.question_id} | {q.kind} | {q.question_body[:60]}", q.question_id) for q in self.bank]
        question = w.Dropdown(options=options, value=self.question_id, description="question",
                              layout=w.Layout(width="640px"))
        strategy = w.Dropdown(options=list(STRATEGIES), value=self.strategy, description="strategy")
        self.view = w.HTML(value=self.html())
        question.observe(lambda change: self.update(question_id=change["new"]), names="value")
        strategy.observe(lambda change: self.update(strategy=change["new"]), names="value")
        return w.VBox([w.HBox([question, strategy]), self.view])


def message_explorer(bank: Bank, question_id: str, strategy: str, *, interactive: bool | None = None
                     ) -> MessageExplorer:
    """Show the messages of (``question_id``, ``strategy``) as static HTML; in a live frontend, add dropdowns."""
    explorer = MessageExplorer(bank, question_id, strategy)
    show_html(explorer.html())
    live = (not is_headless()) if interactive is None else interactive
    if live:
        from IPython.display import display

        display(explorer.build_controls())
    else:
        print("(static view of the knob values; in JupyterLab, question and strategy dropdowns appear here)")
    return explorer


# ============================================================================= the table of the eight strategies


def _answer_format(strategy: str, question: Question, lang: str) -> str:
    kind = question_kind(question)
    style = LABEL_STYLE[strategy]
    example = format_options(["<option text>"] * 2, style).split("\n")[1] if kind != "open" else ""
    if strategy == "expert_prompting":
        tail = "majority vote of the 3 experts" if kind != "open" else "a 5th call picks the best expert"
        return f"3 experts answer like zero-shot ({example or 'free text'}); {tail}"
    if style == "bracket":
        return f"closing sentence: {closing_phrase(kind, lang)}"
    if kind == "open":
        return "reasoning, then the answer" if style == "letter" else "free text"
    what = "option line(s)" if style == "number" else "reasoning + option line(s)"
    return f"{what} like '{example}'"


def strategy_table(bank: Bank, question: Question, course: Course | None = None) -> list[dict[str, Any]]:
    """One row per strategy for ``question``: calls, system persona, demonstration exchanges, label style,
    answer format, messages and characters of the first call, characters over all calls (placeholder replies).

    Every entry is read off the messages the builders produce (nothing is typed in by hand).
    """
    course = course if course is not None else bank.course_of(question)
    lang = language_code(course)
    rows = []
    for strategy in STRATEGIES:
        calls = plan_calls(strategy, question, course, demos_for(bank, question, strategy))
        first = calls[0]
        rows.append({
            "strategy": strategy,
            "calls": len(calls),
            "system_persona": first[0]["role"] == "system",
            "persona": first[0]["content"] if first[0]["role"] == "system" else "",
            "demo_exchanges": sum(m["role"] == "assistant" for m in first),
            "label_style": LABEL_STYLE[strategy],
            "answer_format": _answer_format(strategy, question, lang),
            "first_call_messages": len(first),
            "first_call_chars": sum(len(m["content"]) for m in first),
            "total_chars": sum(len(m["content"]) for call in calls for m in call),
        })
    return rows


def first_user_line(messages: Messages) -> str:
    """The first line of the last user turn (the instruction line of most strategies)."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1].split("\n", 1)[0] if users else ""


def french_comparison(bank: Bank, question: Question, strategy: str) -> dict[str, Any]:
    """The first call of ``strategy`` for ``question`` in its own course and in the same course taught in French.

    Returns both message lists and what differs: instruction line, persona, whether the body is unchanged.
    """
    course = bank.course_of(question)
    french = as_french(course)
    demos = demos_for(bank, question, strategy)
    en = build_messages(strategy, question, course, demos)
    fr = build_messages(strategy, question, french, demos)
    body_in_both = all(question.question_body in m[-1]["content"] for m in (en, fr))
    return {"own": en, "french": fr, "own_language": course.course_language,
            "instruction_own": first_user_line(en), "instruction_french": first_user_line(fr),
            "persona_own": en[0]["content"] if en[0]["role"] == "system" else "",
            "persona_french": fr[0]["content"] if fr[0]["role"] == "system" else "",
            "same_roles": roles(en) == roles(fr), "body_unchanged": body_in_both, "differs": en != fr}


def french_table(fc: dict[str, Any]):
    """The first call in the course's own language and in French, side by side: what changes, what does not."""
    rows = [{"": "instruction (first line)", fc["own_language"]: fc["instruction_own"],
             "French": fc["instruction_french"]}]
    if fc["persona_own"]:
        rows.append({"": "system persona", fc["own_language"]: fc["persona_own"], "French": fc["persona_french"]})
    rows.append({"": "same roles, body unchanged, messages differ", fc["own_language"]: "",
                 "French": f"{fc['same_roles']}, {fc['body_unchanged']}, {fc['differs']}"})
    return table(rows, title="The same question in a French course")


def prompt_costs(bank: Bank) -> dict[str, dict[str, np.ndarray]]:
    """Per strategy, over every question of the bank: calls, characters of the first call, characters sent over
    all calls (placeholder replies), and the question kind. Pure; about a second for the whole bank."""
    out: dict[str, dict[str, list]] = {s: {"calls": [], "first_chars": [], "total_chars": [], "kind": []}
                                       for s in STRATEGIES}
    for q in bank:
        course = bank.course_of(q)
        for s in STRATEGIES:
            calls = plan_calls(s, q, course, demos_for(bank, q, s))
            out[s]["calls"].append(len(calls))
            out[s]["first_chars"].append(sum(len(m["content"]) for m in calls[0]))
            out[s]["total_chars"].append(sum(len(m["content"]) for c in calls for m in c))
            out[s]["kind"].append(q.kind)
    return {s: {k: np.asarray(v) for k, v in d.items()} for s, d in out.items()}


_KIND_COLOURS = {"mcq_single": "#2471a3", "mcq_multiple": "#e67e22", "open_answer": "#1e8449"}


def draw_prompt_cost(fig, *, costs: dict[str, dict[str, np.ndarray]], strategy: str) -> None:
    """Left: median characters sent per question for each strategy (the chosen one highlighted, calls noted).
    Right: the chosen strategy's characters per question over the bank, by question kind."""
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    names = list(STRATEGIES)
    med = [float(np.median(costs[s]["total_chars"])) for s in names]
    colours = ["#c0392b" if s == strategy else "#95a5a6" for s in names]
    ax1.barh(range(len(names)), med, color=colours)
    for i, s in enumerate(names):
        calls = sorted(set(costs[s]["calls"].tolist()))
        ax1.text(med[i], i, f" {'/'.join(map(str, calls))} call(s)", va="center", fontsize=8)
    ax1.set_yticks(range(len(names)), names)
    ax1.invert_yaxis()
    ax1.set_xlim(0, max(med) * 1.35)
    label(ax1, "characters sent per question (median over the bank, all calls)", "strategy",
          "prompt cost by strategy")
    data = costs[strategy]
    top = max(float(costs[s]["total_chars"].max()) for s in names)  # one scale for every strategy
    bins = np.linspace(0, max(top, 1.0), 40)
    for kind, colour in _KIND_COLOURS.items():
        sel = data["kind"] == kind
        if sel.any():
            ax2.hist(data["total_chars"][sel], bins=bins, alpha=0.6, color=colour, label=f"{kind} ({sel.sum()})")
    ax2.legend()
    label(ax2, "characters sent for one question (all calls)", "questions", f"{strategy}: over the bank")


# ============================================================================= backends and the run


def run_question(backend, bank: Bank, question: Question, strategies: Sequence[str], cache_dir, decoding: dict,
                 max_tokens: dict[str, int] | None = None, *, progress: bool = True) -> dict[str, Any]:
    """``run_study`` on one question with ``strategies`` (reply caps ``max_tokens`` per strategy): the rows, wall
    seconds, calls made and calls served from the cache (``cached_calls``); the rows carry ``reply_tokens`` and
    ``truncated`` (stopped at the cap) when the backend is the local model."""
    start = time.perf_counter()
    rows = run_study([question], list(strategies), backend, cache_dir, bank=bank, decoding=decoding,
                     max_tokens=max_tokens, progress=progress)
    seconds = time.perf_counter() - start
    rows = mark_truncated(rows, tokenizer_for(backend))
    calls = sum(int(r["calls"]) for r in rows)
    cached = sum(int(r["cached_calls"]) for r in rows)
    return {"rows": rows, "seconds": seconds, "calls": calls, "cached_calls": cached, "new_calls": calls - cached}


def run_table(run: dict[str, Any], rerun: dict[str, Any] | None = None):
    """Calls, how many were generated and how many read from the cache, and the time: the run and its rerun."""
    rows = [{"run": "first run", "calls": run["calls"], "generated now": run["new_calls"],
             "read from the cache": run["cached_calls"], "seconds": run["seconds"]}]
    if rerun is not None:
        rows.append({"run": "the same run again", "calls": rerun["calls"], "generated now": rerun["new_calls"],
                     "read from the cache": rerun["cached_calls"], "seconds": rerun["seconds"]})
    return table(rows, title="Model calls of the run")


def draw_run(fig, *, rows: Sequence[dict], question: Question) -> None:
    """Left: what each strategy answered (MCQ: the option read from its reply, gold options shaded, 'none' for an
    unreadable reply; open: its grade). Right: the reply's tokens against its cap (red: cut at the cap)."""
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    names = [r["strategy"] for r in rows]
    y = np.arange(len(names))
    if question.is_mcq:
        n = len(question.question_options)
        for g in question.mcq_answer_index:
            ax1.axvspan(g - 0.4, g + 0.4, color="#1e8449", alpha=0.18, lw=0)
        for i, r in enumerate(rows):
            picked = r.get("parsed")
            if picked is None:
                ax1.plot([n], [i], "x", color="#c0392b", ms=10, mew=2)
            else:
                right = set(picked) == set(question.mcq_answer_index)
                ax1.plot(list(picked), [i] * len(picked), "o", color="#1e8449" if right else "#2471a3", ms=10)
        ax1.set_xticks(list(range(n + 1)), [f"{k + 1}. {question.question_options[k][:14]}" for k in range(n)]
                      + ["none\n(unreadable)"], fontsize=8)
        ax1.set_xlim(-0.6, n + 0.6)
        label(ax1, "option read from the reply (shaded: the correct one; numbered as in zero-shot)", "strategy",
              f"{question.question_id}: what each strategy answered")
    else:
        grades = [np.nan if r["grade"] is None else float(r["grade"]) for r in rows]
        ax1.barh(y, [0 if np.isnan(g) else max(g, 0.02) for g in grades], color="#2471a3")
        for i, g in enumerate(grades):
            ax1.text(0.03 if np.isnan(g) else max(g, 0.02) + 0.02, i, "ungraded" if np.isnan(g) else f"{g:g}",
                     va="center", fontsize=8)
        ax1.set_xlim(0, 1.3)
        label(ax1, "grade (0 = wrong, 1 = right)", "strategy", f"{question.question_id}: grade per strategy")
    ax1.set_yticks(y, names)
    ax1.set_ylim(-0.6, len(names) - 0.4)
    ax1.invert_yaxis()
    tokens = [r.get("reply_tokens") for r in rows]
    if all(t is not None for t in tokens):
        caps = [r.get("max_tokens") or 0 for r in rows]
        ax2.barh(y, tokens, color=["#c0392b" if r.get("truncated") else "#7f8c8d" for r in rows])
        ax2.plot(caps, y, "|", color="k", ms=14, mew=2, label="reply cap")
        ax2.legend(loc="lower right", fontsize=8)
        label(ax2, "tokens in the final answer (red: cut at the cap)", "strategy", "room to finish")
    else:
        ax2.barh(y, [len(r["raw_answer"]) for r in rows], color="#7f8c8d")
        label(ax2, "characters in the final answer", "strategy", "reply length")
    ax2.set_yticks(y, names)
    ax2.set_ylim(-0.6, len(names) - 0.4)
    ax2.invert_yaxis()


def run_figure(rows: Sequence[dict], question: Question):
    """The run's figure (:func:`draw_run`); for an open question whose answers all scored 0 or could not be graded,
    the note and the raw replies instead (an MCQ figure always shows which options were read)."""
    reason = None if not question.is_mcq else ""
    return figure_or_replies(draw_run, (12, 3.9), replies=rows, questions=[question], reason=reason, rows=rows,
                             question=question)


# ============================================================================= extraction and grading demos

#: options of the demo MCQ (a heat engine between 600 K and 300 K: its maximum efficiency); option 2 is right
DEMO_OPTIONS = ("25 %", "50 %", "67 %", "100 %")

#: tricky replies and what the documented extraction rules should read: (label style, several answers allowed,
#: reply, expected 0-based indices or None = unparseable, why)
TRICKY_OUTPUTS = (
    ("number", False, "2. 50 %", (1,), "a numbered option line"),
    ("number", False, "The answer is 2.", (1,), "an answer phrase, then a label"),
    ("number", False, "1. First, compute T_C/T_H = 300/600 = 0.5.\n2. Then the efficiency is 1 - 0.5.\n"
                      "Final answer: 2. 50 %", (1,), "numbered reasoning steps are not choices"),
    ("number", False, "1. 25 %\n2. 50 %\n3. 67 %\n4. 100 %", None, "all options repeated: no choice"),
    ("number", False, "50 %", (1,), "only the text of an option"),
    ("number", True, "1. 25 %\n3. 67 %", (0, 2), "several lines for a select-all question"),
    ("number", False, "Answer: I think it is 3", None, "'I' is the pronoun; the 3 is not labelled"),
    ("letter", False, "The correct option is (B).", (1,), "a letter in parentheses"),
    ("letter", False, "B: 50 %\nThe Carnot efficiency is 1 - 300/600.", (1,), "the option line, then reasoning"),
    ("letter", False, "B: 67 %", None, "label B with the text of C: contradictory"),
    ("letter", False, "The answer is A or C, depending on the losses.", None, "'A or C' is no answer"),
    ("letter", False, "Answer: B and D", None, "two answers to a one-answer question"),
    ("letter", False, "the answer is b", None, "a lower-case letter is a word, not a label"),
    ("bracket", False, "Expert 1: [A] looks likely at first.\nExpert 2: no, 1 - 300/600 = 0.5.\n"
                       "My final answer is [B]", (1,), "the closing sentence wins over earlier brackets"),
    ("bracket", True, "My final answers are [A, C]", (0, 2), "a bracketed list"),
    ("bracket", False, "Ma réponse finale est [B]", (1,), "the French closing sentence"),
    ("bracket", False, "The efficiency is 1 - T_C/T_H = 0.5, so [B]", (1,), "the last bracketed label"),
    ("letter", False, "A wave of heat... hard to say without the losses.", None,
     "'A' starts a sentence; no answer given"),
    # the local model's own replies to this question (SmolLM2-135M-Instruct, greedy)
    ("number", False, "1. 25%", (0,), "the model's one-shot reply: '25%' is the option '25 %'"),
    ("letter", False, "The maximum efficiency of a heat engine operating between reservoirs at 600 K and 300 K is "
                      "67%.", (2,), "the model's chain-of-thought reply ends by stating an option's text"),
    ("letter", False, "The maximum efficiency of a heat engine operating between reservoirs at 600 K and 300 K is "
                      "25%.\nC: 67%\nD: 100%", None, "a statement, then more option lines: no conclusion"),
)


def extraction_demo(cases: Sequence[tuple] = TRICKY_OUTPUTS, options: Sequence[str] = DEMO_OPTIONS
                    ) -> list[dict[str, Any]]:
    """``extract_mcq`` on each tricky reply; rows with the reading the rules call for and whether they agree."""
    rows = []
    for style, multiple, text, expected, why in cases:
        got = extract_mcq(text, len(options), style, multiple, options=options)
        rows.append({"style": style, "select all": multiple, "reply": text, "extracted": labels_of(got, style),
                     "expected": labels_of(expected, style), "agree": got == (tuple(expected) if expected else None),
                     "why": why})
    return rows


def extraction_table(rows: Sequence[dict[str, Any]]):
    """:func:`extraction_demo` as a table, with the agreement in its title."""
    agree = sum(r["agree"] for r in rows)
    return table(rows, title=f"extract_mcq on tricky replies: {agree} of {len(rows)} read as the rules say")


#: grader replies and the label they carry (None: no single label)
GRADER_REPLIES = (
    ('{"accuracy": "high", "completeness": "partial", "grade": "almost correct"}', "almost_correct"),
    ("Grade: Mostly Correct", "almost_correct"),
    ("WRONG ANSWER", "wrong"),
    ("grade = mostly_incorrect", "mostly_incorrect"),
    ("The student answer is correct.", "correct"),
    ("The answer is correct, or almost correct.", None),
    ("I would say it is fine.", None),
)


def grade_label_demo(points: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """``extract_grade_label`` on grader replies, with the points each label earns under ``points``."""
    rows = []
    for reply, expected in GRADER_REPLIES:
        got = extract_grade_label(reply)
        rows.append({"grader reply": reply, "label": got, "expected": expected, "agree": got == expected,
                     "points": label_points(got, points)})
    return rows


def numeric_cases(question: Question) -> list[tuple[str, bool | None]]:
    """Answers to a numeric question and whether the checker should accept them (built from its gold value)."""
    gold = float(question.numeric_answer)
    tol = question.numeric_tolerance or 0.01
    near = gold * (1 + tol / 4)
    far = gold * (1 + 5 * tol) if gold else 1.0
    mantissa, exponent = f"{gold:.4e}".split("e")
    for digits in (2, 4, 5, 6):  # never 3 decimals: "7,004" reads as seven thousand and four (see check_numeric)
        french = f"{gold:.{digits}f}"
        if abs(float(french) - gold) <= tol * abs(gold) / 2:
            break
    return [
        (f"Working it out, the result is {gold:g}.", True),
        (f"Final answer: {near:.6g}", True),
        (f"Final answer: {float(mantissa):g} × 10^{int(exponent)}", True),
        (f"Réponse finale : {french.replace('.', ',')}", True),
        (f"Final answer: {far:.6g}", False),
        ("I cannot work this out without more data.", None),
    ]


def numeric_demo(question: Question) -> list[dict[str, Any]]:
    """``check_numeric`` on :func:`numeric_cases` of ``question``."""
    rows = []
    for text, expected in numeric_cases(question):
        got = check_numeric(text, float(question.numeric_answer), question.numeric_tolerance)
        rows.append({"answer": text, "checker": got, "expected": expected, "agree": got == expected})
    return rows


def open_example(bank: Bank, question: Question, numeric: bool) -> Question:
    """``question`` when it is an open answer of the wanted sort, else the first such question of its course
    (of the bank when its course has none)."""
    def ok(q: Question) -> bool:
        return (not q.is_mcq) and ((q.numeric_answer is not None) == numeric)

    if ok(question):
        return question
    for pool in ([q for q in bank if q.course_id == question.course_id], list(bank)):
        for q in pool:
            if ok(q):
                return q
    raise ValueError("the bank has no open question of that sort")


# ============================================================================= exercises


def bracket_answer(text: str, n_options: int) -> tuple[int, ...]:
    """Reference: the options in the LAST bracketed group of capital letters ("[B]", "[A, C]"), as sorted 0-based
    indices; the empty tuple when there is no such group or a letter is not an option (unparseable)."""
    groups = re.findall(r"\[\s*([A-Z](?:\s*,\s*[A-Z])*)\s*\]", text or "")
    if not groups:
        return ()
    idx = sorted({LETTERS.index(x) for x in re.findall(r"[A-Z]", groups[-1])})
    return tuple(idx) if idx and idx[-1] < n_options else ()


BRACKET_CASES = [
    ("My final answer is [B]", 4), ("My final answers are [A, C]", 4), ("No brackets at all.", 4),
    ("Expert 2 thinks [A].\nMy final answer is [D]", 4), ("My final answer is [E]", 4),
    ("Final answers: [C,A]", 5), ("[b] is lower case", 4),
]


def check_exercise_bracket(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: read the closing sentence's bracketed answer."""
    return check_exercise("bracket extractor", attempt, bracket_answer, BRACKET_CASES, ctx=ctx,
                          hint="find every [..] group of capital letters, keep the last, map A->0, B->1, ..., "
                               "sort, and return None when there is none or a letter is past the options")


def points_from_label(grader_label: str, points: dict[str, float]) -> float:
    """Reference: the points a grader's label earns under ``points``; spelling-tolerant ("Almost Correct",
    "almost_correct", "mostly correct" = almost correct, "wrong answer" = wrong). The text is one label."""
    label_ = extract_grade_label(grader_label)
    if label_ is None:
        raise ValueError(f"{grader_label!r} is not one of the four grade labels")
    return float(points[label_])


STRICT_POINTS = {"correct": 1.0, "almost_correct": 0.5, "mostly_incorrect": 0.0, "wrong": 0.0}
POINTS_CASES = [
    ("correct", DEFAULT_POINTS), ("Almost Correct", DEFAULT_POINTS), ("almost_correct", STRICT_POINTS),
    ("mostly correct", STRICT_POINTS), ("Mostly incorrect", DEFAULT_POINTS), ("wrong answer", DEFAULT_POINTS),
    ("WRONG", STRICT_POINTS),
]


def check_exercise_points(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: from a grader's label to points."""
    return check_exercise("label to points", attempt, points_from_label, POINTS_CASES, ctx=ctx,
                          hint="lower-case the label and drop spaces, '_' and '-', map 'mostlycorrect' to "
                               "'almost_correct' and 'wronganswer' to 'wrong', then look the label up in points")


def zero_shot_reference(question: Question) -> Messages:
    """Reference: the zero-shot messages of an English course (the package's builder)."""
    return build_messages("zero_shot", question, Course("X", "a course", "a program", "English", "bachelor"))


def zero_shot_structure(messages: Any) -> tuple | None:
    """What the zero-shot check compares: the roles; whether the first line is an instruction (non-empty, not an
    option line); the body (the lines between the instruction and the options); the option lines "k. text" in
    order (none for an open question). None for something that is not a list of role/content dicts."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and {"role", "content"} <= set(m)
                                                 for m in messages):
        return None
    kinds = tuple(m["role"] for m in messages)
    if len(messages) != 1:
        return (kinds,)
    lines = [line.strip() for line in str(messages[0]["content"]).split("\n") if line.strip()]
    if not lines:
        return (kinds, False, "", ())
    is_option = [bool(re.match(r"\d+\.\s", line)) for line in lines]
    options = tuple(line for line, opt in zip(lines[1:], is_option[1:]) if opt)
    body = "\n".join(line for line, opt in zip(lines[1:], is_option[1:]) if not opt)
    return (kinds, not is_option[0], body, options)


def zero_shot_cases(bank: Bank) -> list[tuple[Question]]:
    """An MCQ-1, an MCQ-n and an open question of an English course, for the zero-shot exercise."""
    english = [q for q in bank if bank.course_of(q).course_language == "English"]
    return [(next(q for q in english if q.kind == kind),) for kind in ("mcq_single", "mcq_multiple", "open_answer")]


def check_exercise_zero_shot(attempt: Callable, bank: Bank | None = None, ctx=None) -> ExerciseResult:
    """Exercise 3: build the zero-shot message list. Your wording of the instruction is free; the check compares
    the structure (:func:`zero_shot_structure`): one user turn, an instruction line, the body, then the options as
    "k. text" lines in order. The cases come from ``bank`` (default: the project's bank)."""
    bank = bank if bank is not None else project_bank()
    return check_exercise("zero-shot messages", attempt, zero_shot_reference, zero_shot_cases(bank),
                          compare=lambda got, expected: zero_shot_structure(got) == zero_shot_structure(expected),
                          ctx=ctx, hint="one user message: an instruction line, a newline, the body, then one line "
                                        "'k. option' per option (k from 1); no system message")




# ============================================================================= summary


def summary_table(table_rows: Sequence[dict], run: dict[str, Any], rerun: dict[str, Any], question: Question,
                  agreements: dict[str, float]):
    """What the run measured, recomputed from its results."""
    rows = run["rows"]
    graded = [r["grade"] for r in rows if r["grade"] is not None]
    cut = [r for r in rows if r.get("truncated")]
    return table({
        "question": f"{question.question_id} ({question.kind})",
        "strategies built without a model": len(table_rows),
        "calls per question, all 8 strategies": sum(r["calls"] for r in table_rows),
        "first calls with a system persona": sum(r["system_persona"] for r in table_rows),
        "strategies run": len(rows),
        "readable answers": sum(r["parseable"] for r in rows),
        "replies cut at their cap": len(cut) if any(r.get("reply_tokens") is not None for r in rows) else "-",
        "mean grade (one question: an anecdote)": sum(graded) / len(graded) if graded else None,
        "rerun: calls served from the cache": f"{rerun['cached_calls']} of {rerun['calls']}",
        **{f"agreement: {k}": v for k, v in agreements.items()},
    }, title="What this run measured")


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "project_bank", "get_question", "demos_for", "as_french", "question_table",
    "placeholder_reply", "plan_calls", "calls_html", "strategy_html", "show_html", "MessageExplorer",
    "message_explorer", "strategy_table", "french_comparison", "french_table", "prompt_costs", "draw_prompt_cost",
    "decoding_settings", "make_backend", "reply_caps", "run_caps", "response_dir", "settings_rows", "run_question",
    "run_table", "generation_note", "labels_of", "replies_table", "draw_run", "run_figure", "DEMO_OPTIONS",
    "TRICKY_OUTPUTS", "extraction_demo", "extraction_table", "GRADER_REPLIES", "grade_label_demo", "numeric_cases",
    "numeric_demo", "open_example", "bracket_answer", "check_exercise_bracket", "points_from_label",
    "check_exercise_points", "zero_shot_reference", "zero_shot_structure", "check_exercise_zero_shot",
    "summary_table", "figure", "label", "explore", "show_source", "table", "STRATEGIES", "LABEL_STYLE",
    "DEFAULT_POINTS", "GRADE_LABELS", "grader_messages", "build_messages", "strategy_plan", "extract_mcq",
    "parse_numbers",
]
