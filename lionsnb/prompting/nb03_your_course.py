"""Backs ``notebooks/prompting/03_your_course.ipynb``: your course. Load your own questions, run an assistant, read
the pass rates.

Borges et al., "Could ChatGPT get an engineering degree?", PNAS 121(49) e2414955121 (2024), arXiv 2408.11841,
graded GPT-4's answers course by course and asked which courses, and which share of each degree program, it would
pass. This module serves the notebook in which a teacher does the same with their own file:

* load and validate a teacher's CSV/JSON (:func:`lionsnb.prompting.bank.load_teacher_file`), listing every problem
  with its row and column, and a deliberately broken copy of the example to show what those messages look like;
* run the study (:func:`lionsnb.prompting.study.run_study`) against an endpoint, the local model or the scripted
  stand-in, with a response cache under the notebook's cache folder, and show that an interrupted run resumes
  without repeating a finished call (``cached_calls`` of each row);
* course scores and program pass rates against a threshold, for the three ways of combining the strategies
  (mean, majority vote, any-strategy), as curves and as a threshold slider with a program dropdown; when the
  assistant scored nothing, the notebook says so and shows its replies instead of empty curves;
* the same analysis on the project's whole bank with the scripted stand-in at several accuracies (synthetic, to
  show what mean, majority and any-strategy do to pass rates when the assistant is competent).
"""
from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.prompting.assistant import (
    assistant_knobs,
    decoding_settings,
    generation_note,
    make_backend,
    mark_truncated,
    response_dir,
    run_caps,
    settings_rows,
    tokenizer_for,
)
from lionsnb.prompting.backends import ResponseCache
from lionsnb.prompting.bank import DATA_DIR, KINDS, TEACHER_COLUMNS, Bank, load_bank, load_teacher_file, validate_bank
from lionsnb.prompting.strategies import STRATEGIES, majority_vote
from lionsnb.prompting.study import (
    course_scores,
    pass_rates,
    program_pass_rates,
    question_scores,
    run_study,
    strategy_summary,
    summary,
)
from lionsnb.prompting.synthetic import SCRIPTED_ACCURACIES, scripted_study
from lionsnb.prompting.views import figure_or_replies, nothing_to_show, replies_table
from lionsnb.widgets import explore

EXAMPLE_FILE = DATA_DIR / "example_teacher.csv"
GRADERS = ("checker", "llm")
AGGREGATIONS = ("mean", "majority", "any")
#: the thresholds of the precomputed pass-rate curves (the slider's positions)
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))
#: accuracies of the scripted stand-in in the synthetic comparison
ACCURACIES = SCRIPTED_ACCURACIES
ALL_PROGRAMS = "all programs"

SPEC = MethodSpec(
    name="prompting.nb03_your_course",
    title="Prompting 3: your course: load your questions, run an assistant, read the pass rates",
    profiles={
        # n_questions: questions of the file that are run (0 = all); strategies: those run on them;
        # direct_tokens / reasoning_tokens: the local model's reply caps (direct answers / strategies that reason
        # first; a reply that finishes earlier stops there); endpoint_max_tokens: reply cap sent to an endpoint;
        # batch_size: prompts per generate; padded_tokens: at most this many padded prompt tokens per generate;
        # synthetic_questions: questions of the project bank in the scripted comparison (0 = all 260)
        "smoke": dict(n_questions=2, strategies=("zero_shot", "cot_zero_shot"), direct_tokens=64,
                      reasoning_tokens=160, endpoint_max_tokens=256, batch_size=8, padded_tokens=2048,
                      synthetic_questions=52),
        "teach": dict(n_questions=0, strategies=("zero_shot", "one_shot", "cot_zero_shot", "tree_of_thought"),
                      direct_tokens=96, reasoning_tokens=256, endpoint_max_tokens=1024, batch_size=8,
                      padded_tokens=2048, synthetic_questions=0),
        "full": dict(n_questions=0, strategies=STRATEGIES, direct_tokens=256, reasoning_tokens=1024,
                     endpoint_max_tokens=2048, batch_size=8, padded_tokens=8192, synthetic_questions=0),
    },
    knobs={
        "course_file": Knob("", "your questions: a .csv or .json path; empty for the shipped example "
                            "data/prompting/example_teacher.csv", str),
        **assistant_knobs(),
        "grader": Knob("checker", "how open answers are graded: checker (numeric gold answers only; other open "
                       "answers stay ungraded) or llm (the same backend grades every open answer)", str,
                       choices=GRADERS),
        "threshold": Knob(0.5, "the pass threshold on a course score, 0.3 to 0.9", float, low=0.3, high=0.9),
    },
)
setup = setup_for(SPEC)

#: model answers of the exercises without code (for teachers; `lionsnb answers prompting_your_course` prints them)
MODEL_ANSWERS = {
    4: "Pick the threshold from the course's own rules, not from the curves: a course that passes at 4 on a 1-6 "
       "scale with a linear grading scheme needs 60 % of the points, so theta = 0.6 on the mean score. Then read "
       "three numbers at that theta: the mean (what a student gets who asks once, with a random prompt), the "
       "majority vote (a student who asks the eight ways and keeps the most frequent answer, a strategy that "
       "needs no knowledge of the right answer) and any strategy (an upper bound that needs the right answer to "
       "be recognised). A course whose majority score is above theta is vulnerable in practice; one that passes "
       "only under any strategy is vulnerable only to a student who can already tell the right answer, which the "
       "course tests anyway. With few questions per course the scores move in steps of 1/n, so a course near "
       "theta can flip with one question: say so when reporting.",
}


# ============================================================================= the teacher's file


def resolve_course_file(value: str) -> Path:
    """``""`` -> the shipped example; else the path (``~`` expanded). A clear error when the file does not exist."""
    if not value:
        return EXAMPLE_FILE
    path = Path(value).expanduser()
    if not path.is_file():
        where = "it is a folder, not a file" if path.is_dir() else "no such file"
        raise FileNotFoundError(
            f"COURSE_FILE = {value!r}: {where} (resolved to {path.resolve()}). Give the path of your .csv (columns: "
            f"{', '.join(TEACHER_COLUMNS)}) or .json, or leave COURSE_FILE empty for the example {EXAMPLE_FILE}.")
    return path


def problem_lines(message: str) -> list[str]:
    """The individual problems of a loader's ``ValueError`` message ("path: n problem(s):\\n  a\\n  b")."""
    _, _, rest = message.partition(":\n")
    if rest:
        return [line.strip() for line in rest.split("\n") if line.strip()]
    return [message.strip()]


def load_course(path: str | os.PathLike) -> tuple[Bank | None, list[str]]:
    """(bank, problems): the teacher's file and every problem found (empty when it is sound; bank None when it
    could not be read). A missing file raises ``FileNotFoundError``."""
    try:
        bank = load_teacher_file(path)
    except ValueError as err:
        return None, problem_lines(str(err))
    return bank, validate_bank(bank)


def require_sound(bank: Bank | None, problems: Sequence[str], path: str | os.PathLike) -> Bank:
    """``bank`` when there is no problem; otherwise a ``ValueError`` listing them (fix the file and rerun)."""
    if bank is None or problems:
        raise ValueError(f"{path}: {len(problems)} problem(s); fix them in the file and run the notebook again:\n  "
                         + "\n  ".join(problems))
    return bank


def broken_example(folder: str | os.PathLike) -> Path:
    """A copy of the example file with four mistakes a teacher could make, written as a new file in ``folder``:
    an option number that does not exist, an open question without its gold answer, a numeric answer without a
    tolerance, a difficulty that is not easy/medium/hard."""
    text = EXAMPLE_FILE.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    by_kind = {"mcq": None, "open_text": None, "numeric": None}
    for row in rows:
        if row["question_type"] == "mcq" and by_kind["mcq"] is None:
            by_kind["mcq"] = row
        elif row["question_type"] == "open_answer" and not row["numeric_answer"] and by_kind["open_text"] is None:
            by_kind["open_text"] = row
        elif row["numeric_answer"] and by_kind["numeric"] is None:
            by_kind["numeric"] = row
    n_options = len(by_kind["mcq"]["question_options"].split("||"))
    by_kind["mcq"]["correct_options"] = str(n_options + 2)
    by_kind["open_text"]["question_answer"] = ""
    by_kind["numeric"]["numeric_tolerance"] = ""
    rows[-1]["difficulty"] = "trivial"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=reader.fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkstemp(prefix="broken_example_", suffix=".csv", dir=folder)[1])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def broken_example_problems() -> tuple[str, list[str]]:
    """Write :func:`broken_example` into a temporary folder, load it, delete it; (its CSV text, the problems)."""
    with tempfile.TemporaryDirectory(prefix="lionsnb-your-course-") as folder:
        path = broken_example(folder)
        text = path.read_text(encoding="utf-8")
        _, problems = load_course(path)
    return text, [p.replace(str(path), path.name) for p in problems]


def course_rows(bank: Bank) -> list[dict[str, Any]]:
    """One row per course of ``bank``: name, program, language, year and its questions by kind."""
    out = []
    for cid, questions in bank.by_course().items():
        c = bank.courses[cid]
        kinds = {k: sum(q.kind == k for q in questions) for k in KINDS}
        numeric = sum(q.numeric_answer is not None for q in questions)
        out.append({"course": cid, "name": c.course_name, "program": c.course_program,
                    "language": c.course_language, "year": c.course_year, "MCQ-1": kinds["mcq_single"],
                    "MCQ-n": kinds["mcq_multiple"], "open": kinds["open_answer"], "of which numeric": numeric})
    return out


# ============================================================================= the study and resuming it


def _call_counts(rows: Sequence[dict]) -> tuple[int, int]:
    calls = sum(int(r["calls"]) + int(r["grader_calls"]) for r in rows)
    cached = sum(int(r["cached_calls"]) + int(r["cached_grader_calls"]) for r in rows)
    return calls, cached


def run_phase(backend, questions: Sequence, strategies: Sequence[str], cache_dir, *, bank: Bank, decoding: dict,
              max_tokens: dict[str, int] | None = None, grader=None, progress: bool = True) -> dict[str, Any]:
    """One ``run_study``: rows, seconds, calls (answers + grader), and how many came from the cache."""
    start = time.perf_counter()
    rows = run_study(list(questions), list(strategies), backend, cache_dir, bank=bank, decoding=decoding,
                     max_tokens=max_tokens, grader=grader, progress=progress)
    calls, cached = _call_counts(rows)
    return {"rows": rows, "seconds": time.perf_counter() - start, "calls": calls, "cached": cached,
            "new": calls - cached, "questions": [q.question_id for q in questions]}


def resumed_study(backend, questions: Bank, strategies: Sequence[str], cache_dir, *, bank: Bank, decoding: dict,
                  max_tokens: dict[str, int] | None = None, grader=None, progress: bool = True) -> dict[str, Any]:
    """Run the study as if it had been interrupted: phase 1 on the first half of the questions, phase 2 on all.

    Returns both phases and ``repeated``: the calls phase 2 made again for (question, strategy) pairs that phase 1
    had finished. With the response cache that number is 0: each reply is stored as soon as its batch returns, and
    a finished call is read back from disk (``cached_calls``), whatever stopped the first run.
    """
    qs = list(getattr(questions, "questions", questions))
    half = max(1, math.ceil(len(qs) / 2))
    phase1 = run_phase(backend, qs[:half], strategies, cache_dir, bank=bank, decoding=decoding,
                       max_tokens=max_tokens, grader=grader, progress=progress)
    phase2 = run_phase(backend, qs, strategies, cache_dir, bank=bank, decoding=decoding, max_tokens=max_tokens,
                       grader=grader, progress=progress)
    done = {(r["question_id"], r["strategy"]) for r in phase1["rows"]}
    again = [r for r in phase2["rows"] if (r["question_id"], r["strategy"]) in done]
    calls_again, cached_again = _call_counts(again)
    rows = mark_truncated(phase2["rows"], tokenizer_for(backend))
    return {"phase1": phase1, "phase2": phase2, "rows": rows, "repeated": calls_again - cached_again,
            "phase1_pairs": len(done), "phase1_calls_served": cached_again,
            "phase1_calls": phase1["calls"]}


def resume_table(study: dict[str, Any]) -> object:
    """The interrupted and the resumed run in numbers, and what resuming repeated."""
    rows = []
    for name, phase in (("interrupted run (first half)", study["phase1"]), ("resumed run (all)", study["phase2"])):
        rows.append({"run": name, "questions": len(phase["questions"]), "calls": phase["calls"],
                     "made now": phase["new"], "from the cache": phase["cached"], "seconds": phase["seconds"]})
    return table(rows, title=f"Resuming: of the {study['phase1_calls']} calls of the {study['phase1_pairs']} pairs "
                             f"finished in the first run, {study['phase1_calls_served']} were served from the cache "
                             f"and {study['repeated']} repeated")


def strategy_table(rows: Sequence[dict], summary_: dict, grader) -> object:
    """Per strategy: answers, graded answers, accuracy, MCQ unparseable rate; the question scores in the title."""
    ungraded = sum(r["grade"] is None for r in rows)
    note = (f"; {ungraded} of {len(rows)} answers ungraded (open answers without a numeric gold answer: set GRADER to "
            f"llm to grade them)" if ungraded and grader is None else "")
    shown = [{k: r[k] for k in ("strategy", "answers", "graded", "accuracy", "unparseable")}
             for r in strategy_summary(rows)]
    return table(shown, title=f"Over {summary_['n_questions']} graded question(s): mean {summary_['mean']:.3f}, "
                              f"majority {summary_['majority']:.3f}, any strategy {summary_['any']:.3f}{note}")


# ============================================================================= pass rates


def pass_rate_view(rows: Sequence[dict], thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """Everything the pass-rate figures look up: per aggregation (mean, majority, any), the course scores and,
    per program (plus ``"all programs"``), the pass rate at each threshold; the courses of each program."""
    rows = [r for r in rows]
    program_of: dict[str, str] = {}
    for r in rows:
        program_of.setdefault(r["course_id"], r["program"])
    scores = {how: course_scores(rows, how) for how in AGGREGATIONS}
    curves: dict[str, dict[str, list[float]]] = {}
    for how in AGGREGATIONS:
        curves[how] = pass_rates(rows, thresholds, how)
        values = list(scores[how].values())
        curves[how][ALL_PROGRAMS] = [sum(s >= t - 1e-12 for s in values) / len(values) if values else float("nan")
                                     for t in thresholds]
    programs: dict[str, list[str]] = defaultdict(list)
    for cid in sorted(scores["mean"]):
        programs[program_of[cid]].append(cid)
    programs = dict(sorted(programs.items()))
    programs[ALL_PROGRAMS] = sorted(scores["mean"])
    return {"thresholds": list(thresholds), "curves": curves, "scores": scores, "programs": programs,
            "question_scores": {how: question_scores(rows, how) for how in AGGREGATIONS}}


def nearest_threshold(value: float, thresholds: Sequence[float] = THRESHOLDS) -> float:
    """The precomputed threshold closest to ``value`` (the slider's positions)."""
    return min(thresholds, key=lambda t: abs(t - value))


def rate_at(view: dict, how: str, program: str, threshold: float) -> float:
    """The pass rate of ``program`` under ``how`` at a precomputed ``threshold``."""
    i = min(range(len(view["thresholds"])), key=lambda k: abs(view["thresholds"][k] - threshold))
    return float(view["curves"][how][program][i])


_AGG_STYLE = {"mean": ("#2471a3", "-", "mean over strategies"),
              "majority": ("#e67e22", "--", "majority vote"),
              "any": ("#c0392b", ":", "any strategy (oracle)")}


def _legend(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False)


def draw_pass_rates(fig, *, view: dict, program: str, threshold: float, title: str = "") -> None:
    """Left: the program's pass rate against the threshold for mean, majority and any-strategy (the chosen
    threshold dashed, its rates in the title). Right: the program's course scores with the threshold line."""
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    t = view["thresholds"]
    notes = []
    for how in AGGREGATIONS:
        colour, style, name = _AGG_STYLE[how]
        ax1.step(t, view["curves"][how][program], where="post", color=colour, linestyle=style, label=name,
                 linewidth=2)
        notes.append(f"{how} {rate_at(view, how, program, threshold):.2f}")
    ax1.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold θ")
    ax1.set_ylim(-0.04, 1.04)
    n_courses = len(view["programs"][program])
    label(ax1, "pass threshold θ on the course score", f"share of the {n_courses} course(s) passed",
          (title + ": " if title else "") + f"{program}\npassed at θ = {threshold:g}: " + ", ".join(notes))
    courses = view["programs"][program]
    x = np.arange(len(courses))
    width = 0.8 / len(AGGREGATIONS)
    for k, how in enumerate(AGGREGATIONS):
        colour, _, name = _AGG_STYLE[how]
        ax2.bar(x + (k - 1) * width, [view["scores"][how][c] for c in courses], width, color=colour, alpha=0.85)
    ax2.axhline(threshold, color="k", linestyle="--", linewidth=1)
    ax2.set_xticks(x, courses, rotation=45 if len(courses) > 4 else 0, ha="right" if len(courses) > 4 else "center")
    ax2.set_ylim(0, 1.05)
    label(ax2, "course", "course score (mean question score)", "course scores (bars: mean, majority, any)")
    _legend(fig, ax1)


def draw_synthetic_overview(fig, *, views: Mapping[float, dict], threshold: float) -> None:
    """One panel per scripted accuracy: the share of all courses passed against the threshold, for mean,
    majority and any-strategy, with the question-level averages in the title."""
    axes = np.atleast_1d(fig.subplots(1, len(views), sharey=True))
    for ax, (acc, view) in zip(axes, sorted(views.items())):
        for how in AGGREGATIONS:
            colour, style, name = _AGG_STYLE[how]
            ax.step(view["thresholds"], view["curves"][how][ALL_PROGRAMS], where="post", color=colour,
                    linestyle=style, label=name, linewidth=2)
        ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold θ")
        means = {how: float(np.mean(list(view["question_scores"][how].values()))) for how in AGGREGATIONS}
        label(ax, "pass threshold θ", "share of all courses passed",
              f"scripted, accuracy {acc:g}\nquestion score: mean {means['mean']:.2f}, majority "
              f"{means['majority']:.2f}, any {means['any']:.2f}")
        ax.set_ylim(-0.04, 1.04)
    _legend(fig, axes[0])


def identities(rows: Sequence[dict], view: dict) -> dict[str, bool]:
    """The aggregation identities on these rows: mean <= any per question; majority <= any per question (0/1
    MCQ grades: always; open answers: the majority grade is one of the grades); every pass-rate curve
    non-increasing in the threshold."""
    qs = view["question_scores"]
    mean_le_any = all(qs["mean"][q] <= qs["any"][q] + 1e-12 for q in qs["mean"])
    majority_le_any = all(qs["majority"][q] <= qs["any"][q] + 1e-12 for q in qs["majority"])
    monotone = all(all(a >= b - 1e-12 for a, b in zip(ys, ys[1:])) for how in AGGREGATIONS
                   for ys in view["curves"][how].values())
    return {"mean_le_any": mean_le_any, "majority_le_any": majority_le_any, "pass_rates_monotone": monotone}


# ============================================================================= the synthetic comparison


def score_or_flag(value: float) -> float:
    """``value``, or -1.0 when it is NaN (nothing could be graded), so that it can be recorded."""
    return -1.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


# ============================================================================= exercises


PASS_CASES = [
    ({"A": 0.7, "B": 0.4, "C": 0.55}, {"A": "CS", "B": "CS", "C": "Physics"}, 0.5),
    ({"A": 0.7, "B": 0.4, "C": 0.55}, {"A": "CS", "B": "CS", "C": "Physics"}, 0.6),
    ({"A": 0.5, "B": 0.5}, {"A": "Maths", "B": "Maths"}, 0.5),
    ({"A": 0.2, "B": 0.9, "C": 0.6, "D": 0.59}, {"A": "X", "B": "X", "C": "Y", "D": "Y"}, 0.6),
]


def _same_dict(got, expected) -> bool:
    return (isinstance(got, Mapping) and set(got) == set(expected)
            and all(abs(float(got[k]) - float(expected[k])) < 1e-9 for k in expected))


def check_exercise_pass_rates(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: program pass rates from course scores and a threshold."""
    return check_exercise("program pass rates", attempt, program_pass_rates, PASS_CASES, compare=_same_dict,
                          ctx=ctx, hint="group the course scores by program; a course passes when its score is "
                                        ">= theta (a score equal to theta passes)")


def score_over_strategies(grades: Sequence[float], how: str) -> float:
    """Reference: one question's score over its strategies' grades: ``mean`` or ``any`` (the maximum)."""
    if how == "mean":
        return float(sum(grades) / len(grades))
    if how == "any":
        return float(max(grades))
    raise ValueError(f"how must be 'mean' or 'any', not {how!r}")


SCORE_CASES = [([1, 0, 0, 1], "mean"), ([1, 0, 0, 1], "any"), ([0, 0, 0], "any"), ([0.75, 0.25, 1.0], "mean"),
               ([0.25, 0.75], "any"), ([1, 1, 1, 1, 1, 1, 1, 0], "mean")]


def check_exercise_scores(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: mean and any-strategy scores of one question."""
    return check_exercise("mean vs any-strategy", attempt, score_over_strategies, SCORE_CASES, ctx=ctx,
                          hint="mean: the average of the grades; any: the best grade (the question counts as "
                               "solved if one strategy solved it)")


def majority_score(parsed: Sequence[tuple | None], grades: Sequence[float]) -> float:
    """Reference: the majority vote over strategies (in strategy order) for an MCQ: the grade of the most frequent
    parsed answer (unparseable answers, None, do not vote; a tie goes to the answer given first); 0 when none can be
    read. The vote is the package's :func:`~lionsnb.prompting.strategies.majority_vote`."""
    _, who = majority_vote([tuple(p) if p is not None else None for p in parsed])
    return 0.0 if who is None else float(grades[who])


MAJORITY_CASES = [
    ([(1,), (1,), (2,), None], [1.0, 1.0, 0.0, 0.0]),
    ([(2,), (1,), (1,), (2,)], [0.0, 1.0, 1.0, 0.0]),
    ([None, None], [0.0, 0.0]),
    ([None, (0, 2), (0, 2), (0,)], [0.0, 1.0, 1.0, 0.0]),
    ([(3,), (0,), (1,)], [0.0, 0.0, 1.0]),
    ([(1,), (2,), None], [1.0, 0.0, 0.0]),
]


def check_exercise_majority(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 3: majority vote over strategies."""
    return check_exercise("majority vote", attempt, majority_score, MAJORITY_CASES, ctx=ctx,
                          hint="count each readable answer; among the most frequent, take the one that appears "
                               "first and return its grade; no readable answer scores 0")


def disputed_question(rows: Sequence[dict], mcq_only: bool = False) -> str:
    """The question whose strategies disagree most: most distinct parsed answers (MCQ), then the widest spread
    of grades; ties go to the first question. Used to pick an instructive example."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["grade"] is not None and (not mcq_only or r["question_type"] == "mcq"):
            groups[r["question_id"]].append(r)
    if not groups:
        raise ValueError("no graded question" + (" of MCQ type" if mcq_only else ""))

    def spread(qid: str) -> tuple:
        group = groups[qid]
        answers = {tuple(r["parsed"]) if r["parsed"] is not None else None for r in group}
        grades = [float(r["grade"]) for r in group]
        return (len(answers), max(grades) - min(grades))

    return max(groups, key=spread)


def rows_of_question(rows: Sequence[dict], question_id: str) -> list[dict]:
    """The rows of one question, in strategy order."""
    mine = [r for r in rows if r["question_id"] == question_id]
    return sorted(mine, key=lambda r: STRATEGIES.index(r["strategy"]))




# ============================================================================= tables, figures and explorers


def course_table(bank: Bank) -> object:
    """:func:`course_rows` as a table."""
    return table(course_rows(bank), title=f"Your file: {len(bank)} questions in {len(bank.courses)} course(s)")


def problems_table(problems: Sequence[str], title: str) -> object:
    """The validator's problems, one per row (row and column first)."""
    return table([{"problem": p} for p in problems] or [{"problem": "(none)"}], title=title)


def file_scores_table(view: dict, theta: float, checks: Mapping[str, bool]) -> object:
    """Per aggregation: each course's score and the share of courses passed at theta; the identities in the title."""
    rows = [{"aggregation": how, **{f"score {c}": v for c, v in view["scores"][how].items()},
             f"passed at theta {theta:g}": rate_at(view, how, ALL_PROGRAMS, theta)} for how in AGGREGATIONS]
    held = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in checks.items())
    return table(rows, title=f"Course scores and pass rates of your file (identities: {held})")


def file_figure(view: dict, rows: Sequence[dict], bank: Bank, theta: float):
    """The file's pass rates against theta and its course scores (:func:`draw_pass_rates`); when every answer scored
    0 or none could be graded, the note and the raw replies instead of empty curves."""
    return figure_or_replies(draw_pass_rates, (12, 4), replies=rows, questions=bank, view=view,
                             program=ALL_PROGRAMS, threshold=theta, title="your file")


def file_explorer(view: dict, rows: Sequence[dict], threshold: float):
    """The threshold slider and program dropdown over the file's precomputed curves: small multiples over its
    programs first (the all-programs figure is above). Nothing but a note when the file's answers scored nothing
    (the replies are shown above)."""
    why = nothing_to_show(rows)
    if why:
        print(f"No explorer: {why}, so every pass rate is 0 at every threshold (the replies are shown above).")
        return None
    programs = list(view["programs"])
    panels = [p for p in programs if p != ALL_PROGRAMS] or programs
    return explore(draw_pass_rates, {"program": programs, "threshold": list(THRESHOLDS)}, program=ALL_PROGRAMS,
                   threshold=threshold, panels=panels[:4], view=view, title="your file", figsize=(12, 4))


def draw_bank_pass_rates(fig, *, views: Mapping[float, dict], accuracy: float, program: str, threshold: float) -> None:
    """:func:`draw_pass_rates` of the synthetic study at one accuracy of the scripted stand-in."""
    draw_pass_rates(fig, view=views[accuracy], program=program, threshold=threshold,
                    title=f"scripted, accuracy {accuracy:g} (synthetic)")


def bank_explorer(views: Mapping[float, dict], threshold: float, accuracy: float = 0.6):
    """Program, accuracy and threshold controls over the synthetic study: small multiples over the programs at
    ``accuracy`` (the all-programs curves per accuracy are in the overview figure above)."""
    programs = list(views[accuracy]["programs"])
    panels = [p for p in programs if p != ALL_PROGRAMS][:4]
    return explore(draw_bank_pass_rates, {"program": programs, "accuracy": list(views),
                                          "threshold": list(THRESHOLDS)},
                   program=ALL_PROGRAMS, accuracy=accuracy, threshold=threshold, panels=panels, views=views,
                   figsize=(12, 4))


def synthetic_table(synthetic: Mapping[float, Sequence[dict]], views: Mapping[float, dict], theta: float) -> object:
    """Per accuracy of the stand-in: questions, question scores (mean, majority, any) and courses passed at theta."""
    rows = []
    for acc, r in synthetic.items():
        s = summary(r)
        rows.append({"accuracy (synthetic)": acc, "questions": s["n_questions"], "mean": s["mean"],
                     "majority": s["majority"], "any": s["any"],
                     **{f"passed at theta {theta:g}, {how}": rate_at(views[acc], how, ALL_PROGRAMS, theta)
                        for how in AGGREGATIONS}})
    return table(rows, title="The scripted stand-in on the project bank (synthetic)")


def summary_table(*, path: Path, bank: Bank, problems: Sequence[str], broken_problems: Sequence[str], study: dict,
                  model: str, file_summary: dict, view: dict, theta: float, mid_view: dict, checks: Mapping[str, bool],
                  synthetic_ok: bool) -> object:
    """What the run measured, recomputed from its results."""
    mid = {how: float(np.mean(list(mid_view["question_scores"][how].values()))) for how in AGGREGATIONS}
    return table({
        "file": f"{path.name}: {len(bank)} questions in {len(bank.courses)} course(s), {len(problems)} problem(s)",
        "the broken copy": f"{len(broken_problems)} problems found",
        "resuming": f"{study['phase1_calls_served']} of {study['phase1_calls']} finished calls served from the cache, "
                    f"{study['repeated']} repeated",
        f"{model}: mean / majority / any": [file_summary["mean"], file_summary["majority"], file_summary["any"]],
        f"courses passed at theta {theta:g}: mean / any": [rate_at(view, "mean", ALL_PROGRAMS, theta),
                                                          rate_at(view, "any", ALL_PROGRAMS, theta)],
        "synthetic, accuracy 0.6: mean / majority / any": [mid["mean"], mid["majority"], mid["any"]],
        "identities hold on your file / on the synthetic study": [all(checks.values()), synthetic_ok],
    }, title="What this run measured")


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "EXAMPLE_FILE", "THRESHOLDS", "ACCURACIES", "AGGREGATIONS", "ALL_PROGRAMS",
    "resolve_course_file", "problem_lines", "load_course", "require_sound", "broken_example",
    "broken_example_problems", "course_rows", "course_table", "problems_table", "score_or_flag", "run_phase",
    "resumed_study", "resume_table", "strategy_table", "replies_table", "pass_rate_view", "nearest_threshold",
    "rate_at", "draw_pass_rates", "draw_synthetic_overview", "identities", "file_scores_table", "file_figure",
    "file_explorer", "draw_bank_pass_rates", "bank_explorer", "synthetic_table", "scripted_study",
    "program_pass_rates", "check_exercise_pass_rates", "score_over_strategies", "check_exercise_scores",
    "majority_score", "check_exercise_majority", "rows_of_question", "disputed_question", "make_backend",
    "generation_note", "decoding_settings", "response_dir", "run_caps", "settings_rows", "summary",
    "question_scores", "course_scores", "pass_rates", "load_bank", "figure", "label", "explore", "show_source",
    "table", "summary_table", "STRATEGIES", "ResponseCache",
]
