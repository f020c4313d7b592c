"""Backs ``notebooks/prompting/02_study.ipynb``: the study ("Could an AI assistant pass the degree?").

Borges et al., "Could ChatGPT get an engineering degree? Evaluating higher education vulnerability to AI
assistants", PNAS 121(49) e2414955121 (2024), arXiv 2408.11841. The paper's design: textual assessment questions of
50 EPFL courses, GPT-3.5 and GPT-4, eight prompting strategies; GPT-4 answers 65.8 % correctly on average over the
strategies and 85.1 % under at least one strategy (abstract). Those are the paper's numbers, not ours.

Here every strategy of :mod:`lionsnb.prompting.strategies` runs on a subset of the project's question bank with the
local model (or the scripted stand-in, or an OpenAI-compatible endpoint), through
:func:`lionsnb.prompting.study.run_study` (batched generation, cached replies, reasoning strategies with more room to
finish). This module adds what the notebook needs around it: :func:`choose_questions` (CPU profiles: kind by kind,
the questions with the shortest prompts; otherwise a stratified sample), :func:`run_local_study` (the study with the
same backend as grader; calls made vs served from the cache; which replies stopped at their cap),
:func:`primary_rows` (our grading rule, see below), :func:`grader_agreement` (Cohen's kappa between the LLM grader
and the numeric checker, with its degenerate cases), :func:`chance_level`, the synthetic comparison
(:func:`scripted_study`), pass-rate curves, the identities as counts, tables, figures and the exercises.

Grading rule of this notebook (``grade`` of :func:`primary_rows`): MCQ by answer extraction (exact set match);
open answers with a numeric gold answer by the deterministic numeric checker (an answer that states no number counts
as wrong); other open answers by the LLM grader's label through the points mapping (ungraded when the grader gives no
label). The paper graded every open answer with GPT-4; a 135M grader cannot do that reliably, so the LLM grader's
verdicts are kept next to the checker's (``llm_grade``) and compared with it, not trusted.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
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
    finite_or,
    generation_note,
    make_backend,
    mark_truncated,
    response_dir,
    run_caps,
    settings_rows,
    tokenizer_for,
)
from lionsnb.prompting.backends import Backend, split_by_padding
from lionsnb.prompting.bank import Bank, Question, load_bank
from lionsnb.prompting.grading import cohen_kappa
from lionsnb.prompting.strategies import STRATEGIES, build_messages, demonstrations, majority_vote
from lionsnb.prompting.study import (
    DEMO_COUNTS,
    breakdown,
    course_scores,
    pass_rates,
    program_pass_rates,
    question_scores,
    run_study,
    strategy_summary,
    summary,
    truncated_rate,
    unparseable_rate,
)
from lionsnb.prompting.synthetic import SCRIPTED_ACCURACIES
from lionsnb.prompting.synthetic import scripted_study as scripted_rows_by_accuracy
from lionsnb.prompting.views import figure_or_replies, nothing_to_show, replies_table
from lionsnb.runtime import load_average
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="prompting.nb02_study",
    title="Prompting 2: the study (eight strategies, grading, aggregates and pass rates)",
    profiles={
        # n_questions: questions of the bank in the local study (None = the whole bank); pick: "shortest" = by
        # kind in turn (MCQ-1, numeric open, MCQ-n), the question with the shortest prompts (cheap on a CPU),
        # "stratified" = Bank.select(n, seed);
        # direct_tokens / reasoning_tokens: reply caps of the answer calls (direct answers / strategies that reason
        # first; a reply that finishes earlier stops there); grader_tokens: reply cap of the grader calls;
        # endpoint_max_tokens: reply cap sent to an endpoint; batch_size: conversations per generate;
        # padded_tokens: at most this many (padded) prompt tokens per generate call (longer prompts go alone);
        # scripted_accuracies: the synthetic comparison over the whole bank
        "smoke": dict(n_questions=2, pick="shortest", direct_tokens=32, reasoning_tokens=64, grader_tokens=24,
                      endpoint_max_tokens=256, batch_size=8, padded_tokens=1536,
                      scripted_accuracies=SCRIPTED_ACCURACIES),
        "teach": dict(n_questions=3, pick="shortest", direct_tokens=96, reasoning_tokens=192, grader_tokens=64,
                      endpoint_max_tokens=1024, batch_size=8, padded_tokens=1536,
                      scripted_accuracies=SCRIPTED_ACCURACIES),
        "full": dict(n_questions=None, pick="stratified", direct_tokens=256, reasoning_tokens=1024,
                     grader_tokens=512, endpoint_max_tokens=2048, batch_size=32, padded_tokens=32768,
                     scripted_accuracies=SCRIPTED_ACCURACIES),
    },
    knobs={
        **assistant_knobs(),
        "n_questions": Knob(0, "questions in the study (0: the profile's number; else a stratified sample)", int,
                            low=0, high=260),
        "threshold": Knob(0.5, "course pass threshold theta the pass-rate explorer starts at (0.4 to 0.8)", float,
                          low=0.4, high=0.8),
        "aggregation": Knob("mean", "how the explorer combines the strategies per question", str,
                            choices=("mean", "majority", "any")),
    },
)
setup = setup_for(SPEC)

#: model answers of the exercises without code (for teachers; `lionsnb answers prompting_study` prints them)
MODEL_ANSWERS = {
    4: "With the local 135M model the paper's sampling (temperature 0.8, frequency penalty 0.8, presence penalty "
       "0.5) mostly makes the replies more varied, not better: the MCQ accuracy stays near the chance level and "
       "moves by a question or two between the two settings, which on three questions is noise (each question is "
       "one third of the score). What changes visibly is the form: sampled replies repeat themselves less (the "
       "penalties), so fewer of them run to the reply cap, and the unparseable rate moves accordingly. Sampled "
       "replies are cached separately (the decoding is part of the cache key), so switching back is free. With a "
       "capable model behind an endpoint the unparseable rate drops close to zero under both settings, and the "
       "differences between strategies become measurable only over many questions (the full profile).",
}


#: the paper's headline numbers (abstract; GPT-4), shown as the paper's, never as ours
PAPER = {"courses": 50, "strategies": 8, "gpt4_mean": 0.658, "gpt4_any": 0.851}
AGGREGATIONS = ("mean", "majority", "any")
#: thresholds of the pass-rate curves (fine) and of the explorer's slider (coarse)
THETA_CURVE = tuple(round(x, 3) for x in np.linspace(0.0, 1.0, 101))
THETA_SLIDER = tuple(round(0.4 + 0.05 * i, 2) for i in range(9))
#: the breakdowns (row fields): MCQ-1 / MCQ-n / open, course language, Bloom level, difficulty
BREAKDOWNS = ("kind", "language", "bloom", "difficulty")


# ----------------------------------------------------------------------------- which questions

def prompt_chars(bank: Bank, q: Question) -> int:
    """Characters of the first call's messages over the eight strategies (demonstrations included)."""
    course = bank.course_of(q)
    total = 0
    for strategy in STRATEGIES:
        demos = demonstrations(bank, q, DEMO_COUNTS[strategy]) if strategy in DEMO_COUNTS else ()
        total += sum(len(m["content"]) for m in build_messages(strategy, q, course, demos))
    return total


#: the kinds the "shortest" rule draws, in turn: MCQ-1, open with a numeric gold answer, MCQ-n, ...
SHORTEST_CYCLE = ("mcq_single", "open_numeric", "mcq_multiple")


def _kind(q: Question) -> str:
    if q.question_type == "open_answer":
        return "open_numeric" if q.numeric_answer is not None else "open_text"
    return q.kind


def shortest_questions(bank: Bank, n: int = 2) -> list[Question]:
    """``n`` questions with short prompts, for the CPU profiles: the kinds of :data:`SHORTEST_CYCLE` in turn (MCQ-1,
    numeric open, MCQ-n, MCQ-1, ...), each time the question of that kind with the fewest prompt characters over
    the eight strategies (:func:`prompt_chars`), preferring a course not used yet. Deterministic. Short prompts are
    cheap to prefill on a CPU; they are not a random sample (likely easier questions than the bank's average)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    by_kind: dict[str, list[Question]] = defaultdict(list)
    for q in bank.questions:
        by_kind[_kind(q)].append(q)
    cycle = [k for k in SHORTEST_CYCLE if by_kind.get(k)]
    if not cycle:
        raise ValueError("the bank has no MCQ and no numeric open question")
    length = {q.question_id: prompt_chars(bank, q) for k in cycle for q in by_kind[k]}
    chosen: list[Question] = []
    for i in range(n):
        kind = cycle[i % len(cycle)]
        left = [q for q in by_kind[kind] if q not in chosen]
        if not left:
            continue
        used = {q.course_id for q in chosen}
        chosen.append(min(left, key=lambda q: (q.course_id in used, length[q.question_id], q.question_id)))
    return chosen


def choose_questions(bank: Bank, n: int | None, pick: str = "stratified", seed: int = 0) -> Bank:
    """The questions of the study as a sub-bank (bank order): ``pick="shortest"`` (:func:`shortest_questions`) or a
    stratified sample of ``n`` (``Bank.select``; None or >= the bank size = the whole bank)."""
    if pick == "shortest":
        chosen = shortest_questions(bank, int(n if n is not None else 2))
        ids = {q.question_id for q in chosen}
        qs = [q for q in bank.questions if q.question_id in ids]
        courses = {cid: c for cid, c in bank.courses.items() if cid in {q.course_id for q in qs}}
        return Bank(courses, qs, bank.source + f" | the {len(qs)} questions with the shortest prompts, by kind",
                    list(bank.notes))
    if pick != "stratified":
        raise ValueError(f"pick = {pick!r}: use shortest or stratified")
    if n is None or n >= len(bank):
        return bank
    return bank.select(n=int(n), seed=seed)


def questions_for(ctx, bank: Bank) -> Bank:
    """The knobs' choice: N_QUESTIONS > 0 overrides the profile (stratified), else the profile's rule."""
    if ctx.knobs.n_questions > 0:
        return choose_questions(bank, ctx.knobs.n_questions, "stratified", ctx.seed)
    return choose_questions(bank, ctx.sizes.n_questions, ctx.sizes.pick, ctx.seed)


def calls_per_question(questions: Iterable[Question], with_grader: bool = True) -> dict[str, int]:
    """Model calls the study will make (answers; grader first tries; grader retries at most)."""
    from lionsnb.prompting.strategies import CALLS

    qs = list(questions)
    answers = sum(CALLS[s][0 if q.is_mcq else 1] for q in qs for s in STRATEGIES)
    n_open = sum(not q.is_mcq for q in qs)
    return {"answer_calls": answers, "grader_calls": len(STRATEGIES) * n_open if with_grader else 0,
            "grader_retries_at_most": len(STRATEGIES) * n_open if with_grader else 0}


# ----------------------------------------------------------------------------- running the study

def primary_rows(rows: Sequence[dict], questions: Iterable[Question]) -> list[dict]:
    """Rows with this notebook's grading rule (module docstring): numeric open answers graded by the checker, the
    LLM grader's grade kept as ``llm_grade``; adds ``numeric_gold`` and ``grade_source``."""
    numeric = {q.question_id: q.numeric_answer is not None for q in questions}
    out = []
    for r in rows:
        r = dict(r)
        is_open = r["question_type"] != "mcq"
        r["numeric_gold"] = bool(is_open and numeric.get(r["question_id"], False))
        r["llm_grade"] = r.get("grade") if is_open else None
        r["kind"] = ("mcq_multiple" if r.get("multiple") else "mcq_single") if not is_open else "open_answer"
        if not is_open:
            r["grade_source"] = "mcq"
        elif r["numeric_gold"]:
            r["grade"] = 1.0 if r.get("numeric_ok") else 0.0
            r["grade_source"] = "checker"
        else:
            r["grade_source"] = "llm" if r.get("grade") is not None else "ungraded"
        out.append(r)
    return out


def _count_files(directory: Path) -> int:
    return sum(1 for _ in directory.glob("*.json")) if directory.is_dir() else 0


def run_local_study(backend: Backend, questions: Bank, bank: Bank, cache_dir: str | os.PathLike, *,
                    decoding: dict, max_tokens: dict[str, int] | None = None, grader: Backend | None = None,
                    grader_decoding: dict | None = None, progress: bool = True) -> dict:
    """Run every strategy on ``questions`` with ``backend`` (reply caps ``max_tokens`` per strategy, and ``grader``
    for open answers), replies cached in ``cache_dir``. Returns the primary rows (with ``reply_tokens`` and
    ``truncated`` for the local model), the seconds, and the calls: asked by the rows, served from the cache, and
    newly generated (files added to the cache)."""
    before = _count_files(Path(cache_dir))
    start = time.perf_counter()
    raw = run_study(questions, STRATEGIES, backend, cache_dir, bank=bank, decoding=decoding, max_tokens=max_tokens,
                    grader=grader, grader_decoding=grader_decoding, progress=progress)
    seconds = time.perf_counter() - start
    rows = mark_truncated(primary_rows(raw, questions.questions), tokenizer_for(backend))
    asked = sum(r["calls"] + r["grader_calls"] for r in rows)
    cached = sum(r["cached_calls"] + r["cached_grader_calls"] for r in rows)
    return {"rows": rows, "seconds": seconds, "calls": asked, "cached": cached,
            "generated": _count_files(Path(cache_dir)) - before}


def study_table(result: dict, backend: Backend) -> object:
    """The run in numbers: pairs, calls (generated now / served from the cache), seconds, the machine's load."""
    rows = result["rows"]
    return table({"(question, strategy) pairs": len(rows), "model calls": result["calls"],
                  "generated now": result["generated"], "served from the response cache": result["cached"],
                  "seconds": result["seconds"], "generation": generation_note(backend),
                  "machine": str(load_average())}, title="The study's run")


def questions_table(bank: Bank, questions: Bank) -> object:
    """The questions of this run: id, kind, language, Bloom level, difficulty and the start of the body."""
    return table([{"question": q.question_id, "kind": q.kind, "language": bank.language_of(q),
                   "Bloom level": q.blooms_rating, "difficulty": q.question_difficulty,
                   "body": q.question_body[:90] + ("…" if len(q.question_body) > 90 else "")}
                  for q in questions.questions],
                 title=f"This run: {len(questions)} questions ({questions.source.split(' | ', 1)[-1]})")


def scripted_study(bank: Bank, accuracies: Sequence[float], seed: int = 0) -> dict[float, list[dict]]:
    """The synthetic comparison (:func:`lionsnb.prompting.synthetic.scripted_study`: the scripted stand-in, right
    with probability ``accuracy``, on the WHOLE bank with every strategy, grading itself), with this notebook's
    grading rule (:func:`primary_rows`). Synthetic: its mistakes and grader labels are random draws."""
    runs = scripted_rows_by_accuracy(bank, accuracies, seed=seed)
    return {acc: primary_rows(rows, bank.questions) for acc, rows in runs.items()}


# ----------------------------------------------------------------------------- measures

def chance_level(questions: Iterable[Question]) -> dict:
    """Expected MCQ accuracy of a uniform guesser: 1/n for MCQ-1 (n options), 1/(2^n - 1) for MCQ-n graded by exact
    set match (a uniform guess among the non-empty subsets, since the number of correct options is not told).
    Returns the mean over the MCQs, and per kind."""
    per: dict[str, list[float]] = defaultdict(list)
    for q in questions:
        if not q.is_mcq:
            continue
        n = len(q.question_options)
        per[q.kind].append(1.0 / (2 ** n - 1) if q.multiple_correct_answers else 1.0 / n)
    values = [v for vs in per.values() for v in vs]
    return {"mcq": float(np.mean(values)) if values else float("nan"),
            **{kind: float(np.mean(vs)) for kind, vs in per.items()}}


def oracle_chance_level(questions: Iterable[Question], k: int = len(STRATEGIES)) -> float:
    """Expected any-strategy MCQ accuracy of a guesser making ``k`` independent uniform guesses per question:
    the mean over the MCQs of 1 - (1 - p)^k, p the chance of one guess (:func:`chance_level`). With 4 options and
    8 strategies it is 1 - 0.75^8 = 0.90: the oracle rewards guessing."""
    values = []
    for q in questions:
        if q.is_mcq:
            n = len(q.question_options)
            p = 1.0 / (2 ** n - 1) if q.multiple_correct_answers else 1.0 / n
            values.append(1.0 - (1.0 - p) ** k)
    return float(np.mean(values)) if values else float("nan")


def toy_rows() -> list[dict]:
    """Six hand-made rows (two MCQ-1 questions x three strategies) whose aggregates are known (Implementation).

    Q1 (gold option 0): zero_shot picks 0 (right), one_shot 1, cot_zero_shot 1 -> mean 1/3, any 1, majority:
    option 1 twice, graded 0. Q2 (gold 2): zero_shot 2 (right), one_shot unparseable, cot_zero_shot 3 -> mean 1/3,
    any 1, majority: a 1-1 tie, the first strategy's answer (2) wins, graded 1.
    """
    def row(qid, course, strategy, parsed, gold):
        return {"question_id": qid, "course_id": course, "program": "Toy", "year": "bachelor",
                "language": "English", "question_type": "mcq", "multiple": False, "kind": "mcq_single",
                "bloom": "remember", "difficulty": "easy", "strategy": strategy, "raw_answer": "",
                "parsed": parsed, "parseable": parsed is not None,
                "grade": float(parsed is not None and set(parsed) == set(gold)), "grade_label": None,
                "numeric_ok": None}
    return [row("Q1", "T-1", "zero_shot", [0], (0,)), row("Q1", "T-1", "one_shot", [1], (0,)),
            row("Q1", "T-1", "cot_zero_shot", [1], (0,)), row("Q2", "T-2", "zero_shot", [2], (2,)),
            row("Q2", "T-2", "one_shot", None, (2,)), row("Q2", "T-2", "cot_zero_shot", [3], (2,))]


#: the aggregates of :func:`toy_rows`, computed by hand (question-averaged)
TOY_EXPECTED = {"mean": 1 / 3, "majority": 0.5, "any": 1.0}


def strategy_stats_table(rows: Sequence[dict], chance: float) -> object:
    """:func:`~lionsnb.prompting.study.strategy_summary` of the eight strategies as a table, with the MCQ chance
    level and the ungraded count in its title."""
    ungraded = sum(r["grade"] is None for r in rows)
    return table(strategy_summary(rows), title=f"Per strategy (MCQ chance level of these questions {chance:.3f}; "
                                               f"{ungraded} of {len(rows)} answers ungraded)")


def aggregates(rows: Sequence[dict]) -> dict[str, float]:
    """Question-averaged score over strategies by mean, majority vote and any-strategy (the oracle)."""
    s = summary(rows)
    return {how: float(s[how]) for how in AGGREGATIONS}


def breakdowns(rows: Sequence[dict], how: str = "mean") -> dict[str, dict]:
    """Mean question score per kind (MCQ-1, MCQ-n, open), language, Bloom level and difficulty, with the question
    counts: {field: {value: (score, n_questions)}}."""
    scores = question_scores(rows, how)
    out = {}
    for by in BREAKDOWNS:
        values = breakdown(rows, by, how)
        first = {}
        for r in rows:
            first.setdefault(r["question_id"], r.get(by))
        counts = Counter(first[q] for q in scores)
        out[by] = {v: (values[v], counts[v]) for v in values}
    return out


def grader_agreement(rows: Sequence[dict]) -> dict:
    """Agreement of the LLM grader with the numeric checker on the open answers with a numeric gold answer.

    The LLM's verdict is "right" for the labels correct and almost correct; the checker's is "right" when the
    stated number matches (no number = wrong). Returns the answers checked, how many the grader labelled, the
    observed agreement, Cohen's kappa, and ``kappa_defined`` with the reason when it is not: no labelled answer,
    or one grader giving the same verdict to every answer. In that last case p_o = p_e, so kappa is 0 (or 0/0)
    whatever the agreement: it measures nothing, and we report it as undefined (NaN) with the raw agreement.
    """
    numeric = [r for r in rows if r.get("numeric_gold")]
    pairs = [(r["grade_label"] in ("correct", "almost_correct"), bool(r.get("numeric_ok")))
             for r in numeric if r.get("grade_label") is not None]
    out = {"numeric_answers": len(numeric), "labelled": len(pairs),
           "label_rate": len(pairs) / len(numeric) if numeric else float("nan"),
           "agreement": float("nan"), "kappa": float("nan"), "kappa_defined": False, "reason": ""}
    if not numeric:
        out["reason"] = "no open answer with a numeric gold answer in this run"
        return out
    if not pairs:
        out["reason"] = "the LLM grader gave no grade label at all (even after the retry)"
        return out
    llm, checker = [p[0] for p in pairs], [p[1] for p in pairs]
    out["agreement"] = float(np.mean([a == b for a, b in pairs]))
    constant = [name for name, v in (("the LLM grader", llm), ("the numeric checker", checker)) if len(set(v)) < 2]
    if constant:
        out["reason"] = (f"{' and '.join(constant)} gave the same verdict to every answer: kappa is 0 or 0/0 by "
                         f"construction (p_o = p_e), so it is undefined here")
        return out
    out["kappa"] = float(cohen_kappa(llm, checker))
    out["kappa_defined"] = True
    return out


def llm_label_rate(rows: Sequence[dict]) -> float:
    """Fraction of the open answers to which the LLM grader gave a grade label."""
    open_rows = [r for r in rows if r["question_type"] != "mcq"]
    return float(np.mean([r.get("grade_label") is not None for r in open_rows])) if open_rows else float("nan")


def pass_curves(rows: Sequence[dict], thetas: Sequence[float] = THETA_CURVE) -> dict[str, dict[str, list[float]]]:
    """{aggregation: {program: pass rate at each theta}} (``study.pass_rates`` for mean, majority, any)."""
    return {how: pass_rates(rows, list(thetas), how) for how in AGGREGATIONS}


def identity_checks(rows: Sequence[dict], curves: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, int]:
    """The identities, counted (0 = they hold): per question mean <= any and majority <= any; per aggregation
    and program, pass rates non-increasing in theta."""
    mean, anyq, major = (question_scores(rows, h) for h in ("mean", "any", "majority"))
    return {"mean_above_any": sum(mean[q] > anyq[q] + 1e-12 for q in mean),
            "majority_above_any": sum(major[q] > anyq[q] + 1e-12 for q in major),
            "pass_rate_increases": sum(int(b > a + 1e-12) for per in curves.values() for rates in per.values()
                                       for a, b in zip(rates, rates[1:]))}


def rate_at(curve: Sequence[float], theta: float, thetas: Sequence[float] = THETA_CURVE) -> float:
    """The curve's value at the grid point closest to ``theta``."""
    i = int(np.argmin(np.abs(np.asarray(thetas) - theta)))
    return float(curve[i])


def overall_pass_rate(rows: Sequence[dict], theta: float, how: str = "mean") -> float:
    """Fraction of all courses (every program together) whose score is >= theta."""
    scores = course_scores(rows, how)
    return float(np.mean([s >= theta - 1e-12 for s in scores.values()])) if scores else float("nan")


# ----------------------------------------------------------------------------- figures

_COLORS = {"mean": "C0", "majority": "C1", "any": "C2"}


def draw_strategies(fig, *, rows: Sequence[dict], chance: float, title: str = "") -> None:
    """Left: accuracy per strategy (all graded rows) and MCQ accuracy with the MCQ chance level. Right: the MCQ
    unparseable rate and the truncated rate per strategy."""
    stats = {r["strategy"]: r for r in strategy_summary(rows)}
    stats = [stats.get(st, dict(accuracy=np.nan, mcq_accuracy=np.nan, unparseable=np.nan, truncated=np.nan))
             for st in STRATEGIES]
    x = np.arange(len(STRATEGIES))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(x - 0.2, [t["accuracy"] for t in stats], 0.4, label="all graded answers")
    ax1.bar(x + 0.2, [t["mcq_accuracy"] for t in stats], 0.4, label="MCQ only")
    ax1.axhline(chance, color="k", ls="--", lw=1, label=f"MCQ chance ({chance:.2f})")
    ax1.set_xticks(x, STRATEGIES, rotation=40, ha="right")
    ax1.set_ylim(0, 1.3)
    ax1.set_yticks(np.linspace(0, 1, 6))
    label(ax1, "strategy", "accuracy", f"accuracy per strategy{title}")
    ax1.legend(ncol=2, loc="upper left", fontsize=8)
    ax2.bar(x - 0.2, [t["unparseable"] for t in stats], 0.4, color="C3", label="MCQ answer unparseable")
    ax2.bar(x + 0.2, [0 if math.isnan(t["truncated"]) else t["truncated"] for t in stats], 0.4, color="C7",
            label="reply cut at its cap")
    ax2.set_xticks(x, STRATEGIES, rotation=40, ha="right")
    ax2.set_ylim(0, 1.3)
    ax2.set_yticks(np.linspace(0, 1, 6))
    label(ax2, "strategy", "fraction of answers", "unparseable (reported separately) and truncated")
    ax2.legend(ncol=2, loc="upper left", fontsize=8)


def draw_aggregates(fig, *, local: Mapping[str, float], scripted: Mapping[float, Mapping[str, float]],
                    local_name: str = "this run") -> None:
    """Mean / majority / any-strategy for the local run and the synthetic scripted runs; the paper's GPT-4 mean and
    any-strategy as reference lines."""
    ax = fig.subplots()
    sources = [(local_name, local)] + [(f"scripted acc {a:g}\n(synthetic)", v) for a, v in scripted.items()]
    x = np.arange(len(sources))
    for j, how in enumerate(AGGREGATIONS):
        ax.bar(x + (j - 1) * 0.26, [v[how] for _, v in sources], 0.26, color=_COLORS[how],
               label={"mean": "mean over strategies", "majority": "majority vote", "any": "any strategy (oracle)"}[how])
    ax.axhline(PAPER["gpt4_mean"], color=_COLORS["mean"], ls=":", lw=1.5, label="paper, GPT-4 mean (65.8 %)")
    ax.axhline(PAPER["gpt4_any"], color=_COLORS["any"], ls=":", lw=1.5, label="paper, GPT-4 any (85.1 %)")
    ax.set_xticks(x, [name for name, _ in sources])
    ax.set_ylim(0, 1.05)
    label(ax, "who answers", "question score, averaged over questions", "aggregating the eight strategies")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)


def draw_breakdowns(fig, *, parts: Mapping[str, Mapping[str, Mapping[Any, tuple]]]) -> None:
    """One panel per breakdown field, bars per source (e.g. this run and a scripted run), n questions on the bars."""
    fields = BREAKDOWNS
    axes = fig.subplots(1, len(fields))
    names = list(parts)
    for ax, by in zip(axes, fields):
        values = sorted({v for name in names for v in parts[name][by]}, key=lambda v: (v is None, str(v)))
        x = np.arange(len(values))
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            got = parts[name][by]
            heights = [got[v][0] if v in got else 0.0 for v in values]
            bars = ax.bar(x + (j - (len(names) - 1) / 2) * width, heights, width, label=name)
            for b, v in zip(bars, values):
                if v in got:
                    ax.annotate(f"{got[v][1]}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                                va="bottom", fontsize=7)
        ax.set_xticks(x, [str(v) for v in values], rotation=40, ha="right")
        ax.set_ylim(0, 1.1)
        label(ax, by.replace("_", " "), "mean question score", f"by {by.replace('_', ' ')}")
    axes[0].legend(fontsize=7)


def draw_pass_explorer(fig, *, curves: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
                       scores: Mapping[str, Mapping[str, Mapping[str, float]]], programs: Mapping[str, str],
                       theta: float, how: str, source: str) -> None:
    """Left: program pass rates against the threshold theta (one curve per program) for one source and
    aggregation, with theta marked. Right: the course scores against theta (passed courses in colour)."""
    ax1, ax2 = fig.subplots(1, 2)
    per = curves[source][how]
    for i, (program, rates) in enumerate(per.items()):
        ax1.plot(THETA_CURVE, rates, color=f"C{i}", label=program, drawstyle="steps-post")
        ax1.plot([theta], [rate_at(rates, theta)], "o", color=f"C{i}")
    ax1.axvline(theta, color="k", ls="--", lw=1)
    ax1.set_ylim(-0.03, 1.03)
    synthetic = "(synthetic) " if source.startswith("scripted") else ""
    label(ax1, "course pass threshold theta", "fraction of the program's courses passed",
          f"{synthetic}{source}, {how}")
    ax1.legend(fontsize=7, loc="lower left")
    cs = scores[source][how]
    ids = sorted(cs, key=lambda c: (programs.get(c, ""), c))
    order = {p: i for i, p in enumerate(per)}
    colors = [f"C{order.get(programs.get(c), 0)}" if cs[c] >= theta - 1e-12 else "lightgrey" for c in ids]
    ax2.bar(np.arange(len(ids)), [cs[c] for c in ids], color=colors)
    ax2.axhline(theta, color="k", ls="--", lw=1, label=f"theta = {theta:.2f}")
    ax2.set_xticks(np.arange(len(ids)), ids, rotation=60, ha="right", fontsize=7)
    ax2.set_ylim(0, 1.05)
    passed = sum(cs[c] >= theta - 1e-12 for c in ids)
    label(ax2, "course", "course score", f"{passed} of {len(ids)} courses passed (grey: failed)")
    ax2.legend(fontsize=8)


def draw_pass_overview(fig, *, scores: Mapping[str, Mapping[str, Mapping[str, float]]],
                       theta: float) -> None:
    """One panel per source (this run, each scripted accuracy): the share of all courses passed against the
    threshold theta, for the mean, the majority vote and any strategy (theta dashed)."""
    names = list(scores)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for ax, name in zip(axes, names):
        for how in AGGREGATIONS:
            values = list(scores[name][how].values())
            rates = [np.mean([v >= t - 1e-12 for v in values]) if values else np.nan for t in THETA_CURVE]
            ax.plot(THETA_CURVE, rates, color=_COLORS[how], drawstyle="steps-post", lw=2,
                    label={"mean": "mean", "majority": "majority vote", "any": "any strategy"}[how])
        ax.axvline(theta, color="k", ls="--", lw=1)
        ax.set_ylim(-0.03, 1.03)
        n = len(scores[name]["mean"])
        synthetic = " (synthetic)" if name.startswith("scripted") else ""
        label(ax, "course pass threshold theta", "share of all courses passed", f"{name}{synthetic}, {n} courses")
    axes[0].legend(fontsize=8, loc="lower left")


def grader_table(agreement: dict, label_rate: float) -> object:
    """The LLM grader against the numeric checker, in numbers (kappa with the reason when it is undefined)."""
    return table({"open answers labelled by the LLM grader": label_rate,
                  "numeric open answers": agreement["numeric_answers"],
                  "of which labelled by the LLM grader": agreement["labelled"],
                  "observed agreement with the checker": agreement["agreement"],
                  "Cohen's kappa": agreement["kappa"] if agreement["kappa_defined"] else
                  f"undefined: {agreement['reason']}"}, title="LLM grader against the numeric checker")


def grader_replies(rows: Sequence[dict], n: int = 4) -> object:
    """The first ``n`` grader replies of the run (what the grader wrote, the label read from it)."""
    shown = [{"question": r["question_id"], "strategy": r["strategy"],
              "grader reply": " ".join((r.get("grader_reply") or "").split())[:400],
              "label read": r.get("grade_label")} for r in rows if r.get("grader_reply")][:n]
    if not shown:
        return table([{"grader reply": "(no grader call in this run: no open answer, or no grader)"}],
                     title="Grader replies")
    return table(shown, title=f"The LLM grader's replies (first {len(shown)})")


def aggregates_table(sources: Mapping[str, Mapping[str, float]]) -> object:
    """Mean, majority vote and any strategy per source, with the paper's GPT-4 numbers as a reference row."""
    rows = [{"who answers": name, **{how: agg[how] for how in AGGREGATIONS}} for name, agg in sources.items()]
    rows.append({"who answers": "the paper, GPT-4 (abstract)", "mean": PAPER["gpt4_mean"], "majority": None,
                 "any": PAPER["gpt4_any"]})
    return table(rows, title="Question score averaged over questions")


def breakdowns_table(parts: Mapping[str, Mapping[str, Mapping[Any, tuple]]]) -> object:
    """Every breakdown of every source: score and question count per value."""
    rows = []
    for name, fields in parts.items():
        for by, values in fields.items():
            for value, (score, n) in values.items():
                rows.append({"source": name, "by": by, "value": value, "mean question score": score,
                             "questions": n})
    return table(rows, title="Breakdowns (mean over strategies)")


def identity_table(checks: Mapping[str, Mapping[str, int]], rates: Mapping[str, Mapping[str, float]],
                   theta: float) -> object:
    """Per source: the identity counts (0 = they hold) and the share of courses passed at theta."""
    return table([{"source": name, "questions with mean > any": c["mean_above_any"],
                   "questions with majority > any": c["majority_above_any"],
                   "pass-rate increases along theta": c["pass_rate_increases"],
                   **{f"passed at theta {theta:g}, {how}": rates[name][how] for how in AGGREGATIONS}}
                  for name, c in checks.items()], title="Identities and pass rates")


# ----------------------------------------------------------------------------- exercises

def any_strategy_accuracy(grades: Sequence[Sequence[float]]) -> float:
    """Reference: ``grades[q][s]`` is question q's grade under strategy s; the mean over questions of the best
    grade over strategies (the any-strategy accuracy)."""
    return float(np.mean([max(g) for g in grades]))


def majority_vote_grade(answers: Sequence[tuple | None], gold: tuple) -> float:
    """Reference: the grade (exact set match, 0/1) of the most frequent parsed answer among ``answers`` (one per
    strategy, in strategy order; None = unparseable, not a vote); ties go to the answer given first; no vote = 0.
    The vote is the package's :func:`~lionsnb.prompting.strategies.majority_vote` (answers compared as sets)."""
    winner, _ = majority_vote([tuple(sorted(a)) if a is not None else None for a in answers])
    return 0.0 if winner is None else float(set(winner) == set(gold))


def _grade_tables():
    rng = np.random.default_rng(3)
    return [([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]],),
            ([[0.25, 0.75], [0.0, 0.5]],),
            ([list(rng.integers(0, 2, 8).astype(float)) for _ in range(6)],)]


def check_exercise_any(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("any-strategy accuracy", attempt, any_strategy_accuracy, _grade_tables(), ctx=ctx,
                          hint="take the best grade of each question (max over its strategies), then average "
                               "over questions")


def _vote_cases():
    return [([(1,), (2,), (1,), None], (1,)),
            ([(2,), (1,), (1,), (2,)], (1,)),          # tie 2-2: the answer given first wins, (2,), graded 0
            ([(2,), None, (1,)], (1,)),                # tie 1-1: (2,) came first, graded 0
            ([None, None, None], (0,)),                # no vote at all: 0
            ([(0, 2), (2, 0), (1,)], (0, 2)),          # (0, 2) and (2, 0) are the same set
            ([None, (3,), (3,), (0,)], (3,))]


def check_exercise_majority(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("majority vote", attempt, majority_vote_grade, _vote_cases(), ctx=ctx,
                          hint="skip None, compare answers as sets (sorted tuples), break ties by the first answer "
                               "given, and return 0 when nothing is left")


def _pass_cases():
    programs = {"A1": "A", "A2": "A", "A3": "A", "B1": "B", "B2": "B"}
    scores = {"A1": 0.5, "A2": 0.72, "A3": 0.3, "B1": 0.6, "B2": 0.61}
    return [(scores, programs, 0.5), (scores, programs, 0.6), (scores, programs, 0.61), (scores, programs, 0.9)]


def check_exercise_pass_rate(attempt, ctx=None) -> ExerciseResult:
    return check_exercise("pass rate at a threshold", attempt, program_pass_rates, _pass_cases(), ctx=ctx,
                          compare=lambda got, exp: isinstance(got, Mapping) and set(got) == set(exp) and all(
                              abs(float(got[k]) - exp[k]) < 1e-9 for k in exp),
                          hint="a course passes when its score is >= theta (a score equal to theta passes); "
                               "return {program: fraction}")


# ----------------------------------------------------------------------------- summary

def summary_table(*, n_questions: int, model: str, rows: Sequence[dict], chance: float, local_agg: Mapping[str, float],
                  label_rate: float, agreement: dict, scripted_agg: Mapping[float, Mapping[str, float]],
                  violations: Mapping[str, int]) -> object:
    """What the run measured, recomputed from its results."""
    mcq = [r["grade"] for r in rows if r["question_type"] == "mcq"]
    cut = truncated_rate(rows)
    return table({
        "questions x strategies": f"{n_questions} x {len(STRATEGIES)} with {model}",
        "MCQ accuracy": float(np.mean(mcq)) if mcq else None, "MCQ chance level": chance,
        "mean / majority / any strategy": [local_agg["mean"], local_agg["majority"], local_agg["any"]],
        "the paper, GPT-4: mean / any": [PAPER["gpt4_mean"], PAPER["gpt4_any"]],
        "MCQ answers unparseable (mean over strategies)": float(np.mean(list(unparseable_rate(rows).values())))
        if mcq else None,
        "final answers cut at their cap (mean over strategies)": float(np.mean(list(cut.values()))) if cut else None,
        "LLM grader: open answers labelled": label_rate,
        "LLM grader: kappa with the checker": agreement["kappa"] if agreement["kappa_defined"] else "undefined",
        **{f"scripted {a:g} (synthetic): mean / any": [v["mean"], v["any"]] for a, v in scripted_agg.items()},
        "identity violations (mean > any, majority > any, rising pass rates)":
            [violations["mean_above_any"], violations["majority_above_any"], violations["pass_rate_increases"]],
    }, title="What this run measured")


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "PAPER", "AGGREGATIONS", "THETA_CURVE", "THETA_SLIDER", "BREAKDOWNS",
    "load_bank", "questions_for", "choose_questions", "shortest_questions", "prompt_chars", "calls_per_question",
    "questions_table", "toy_rows", "TOY_EXPECTED", "question_scores", "unparseable_rate", "chance_level",
    "oracle_chance_level", "split_by_padding", "make_backend", "decoding_settings", "response_dir", "run_caps",
    "settings_rows", "run_local_study", "study_table", "primary_rows", "replies_table", "strategy_summary",
    "strategy_stats_table", "draw_strategies", "figure_or_replies", "nothing_to_show", "grader_agreement",
    "llm_label_rate", "grader_table", "grader_replies", "scripted_study", "aggregates", "aggregates_table",
    "draw_aggregates", "breakdowns", "breakdowns_table", "draw_breakdowns", "pass_curves", "course_scores",
    "identity_checks", "overall_pass_rate", "identity_table", "draw_pass_overview", "draw_pass_explorer", "rate_at",
    "any_strategy_accuracy", "check_exercise_any", "majority_vote_grade", "check_exercise_majority",
    "check_exercise_pass_rate", "program_pass_rates", "truncated_rate", "finite_or", "summary_table", "summary",
    "figure", "label", "explore", "show_source", "table", "run_study", "STRATEGIES", "load_average",
]
