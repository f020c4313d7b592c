"""What the prompting notebooks show of a study's rows: the replies as a table, answers in each strategy's labels,
and the rule for figures with nothing to show (say so, and show the raw replies instead)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lionsnb.display import Table, table
from lionsnb.plotting import figure
from lionsnb.prompting.bank import Question
from lionsnb.prompting.grading import LETTERS
from lionsnb.prompting.strategies import LABEL_STYLE


def labels_of(indices: Sequence[int] | None, style: str) -> str:
    """Option indices written in a strategy's labels ("2", "B", "[B]"); "-" for none (unparseable)."""
    if indices is None:
        return "-"
    if style == "number":
        return ", ".join(str(i + 1) for i in indices)
    text = ", ".join(LETTERS[i] for i in indices)
    return f"[{text}]" if style == "bracket" else text


def _questions(questions: Mapping[str, Question] | Iterable[Question] | None) -> dict[str, Question]:
    if questions is None:
        return {}
    if isinstance(questions, Mapping):
        return dict(questions)
    return {q.question_id: q for q in getattr(questions, "questions", questions)}


def read_as(row: dict) -> str:
    """What was read from a row's reply: the option label(s) in its strategy's style, the numeric checker's verdict,
    the grader's label, or "-" when nothing could be read."""
    if row.get("question_type") == "mcq":
        return labels_of(row.get("parsed"), LABEL_STYLE.get(row["strategy"], "number"))
    parts = []
    if row.get("numeric_ok") is not None:
        parts.append(f"number {'right' if row['numeric_ok'] else 'wrong'}")
    if row.get("grade_label"):
        parts.append(f"grader: {row['grade_label'].replace('_', ' ')}")
    return "; ".join(parts) or "-"


def tokens_of(row: dict) -> str:
    """"37 of 256" (tokens of the final answer and its cap), with "cut" when it stopped at the cap and "stopped: loop"
    when the local backend ended a verbatim loop; "-" when unknown."""
    n, cap = row.get("reply_tokens"), row.get("max_tokens")
    if n is None:
        return "-"
    text = f"{n} of {cap}" if cap else str(n)
    return text + (" (cut)" if row.get("truncated") else " (stopped: loop)" if row.get("looped") else "")


def reply_rows(rows: Iterable[dict], questions: Mapping[str, Question] | Iterable[Question] | None = None, *,
               width: int = 400) -> list[dict[str, Any]]:
    """One display row per (question, strategy): the reply (whitespace collapsed, at most ``width`` characters),
    what was read from it, the gold answer in the strategy's labels (when ``questions`` are given), the grade
    (None: ungraded) and the reply's tokens against its cap (when known)."""
    by_id = _questions(questions)
    out = []
    for r in rows:
        text = " ".join((r.get("raw_answer") or "").split())
        row = {"question": r["question_id"], "strategy": r["strategy"],
               "reply": text if len(text) <= width else text[:width - 1] + "…", "read as": read_as(r)}
        q = by_id.get(r["question_id"])
        if q is not None:
            row["gold"] = (labels_of(sorted(q.mcq_answer_index), LABEL_STYLE.get(r["strategy"], "number"))
                           if q.is_mcq else q.question_answer)
        row["grade"] = r.get("grade")
        if r.get("reply_tokens") is not None:
            row["tokens"] = tokens_of(r)
        out.append(row)
    return out


def replies_table(rows: Iterable[dict], questions: Mapping[str, Question] | Iterable[Question] | None = None, *,
                  title: str = "The replies", width: int = 400) -> Table:
    """:func:`reply_rows` as a table."""
    return table(reply_rows(rows, questions, width=width), title=title, max_chars=width)


def nothing_to_show(rows: Sequence[dict]) -> str:
    """Why a figure of these rows' grades would be empty ('' when it would not): no row, no graded row, or every
    graded answer scored 0."""
    rows = list(rows)
    if not rows:
        return "this run has no answer"
    graded = [r for r in rows if r.get("grade") is not None]
    if not graded:
        return f"none of the {len(rows)} answers could be graded"
    if all(float(r["grade"]) == 0.0 for r in graded):
        return f"all {len(graded)} graded answers scored 0"
    return ""


def figure_or_replies(draw: Callable[..., None], size: tuple[float, float], *, replies: Sequence[dict],
                      questions: Mapping[str, Question] | Iterable[Question] | None = None, reason: str | None = None,
                      **kwargs: Any) -> Table | None:
    """``draw(fig, **kwargs)`` into a new figure of ``size``; but when the rows behind it have nothing to show
    (:func:`nothing_to_show` of ``replies``, or ``reason``), say so and return the raw replies as a table instead
    (end a cell with the call: the figure, or the note and the table, is what the cell shows)."""
    why = nothing_to_show(replies) if reason is None else reason
    if why:
        print(f"Nothing to plot: {why}, so this figure would be empty. The raw replies instead:")
        return replies_table(replies, questions, title="The replies behind the empty figure")
    fig = figure(*size)
    draw(fig, **kwargs)
    return None


__all__ = ["labels_of", "read_as", "tokens_of", "reply_rows", "replies_table", "nothing_to_show",
           "figure_or_replies"]
