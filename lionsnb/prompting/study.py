"""Run the study (every question x every strategy through one backend, cached) and aggregate its rows.

:func:`run_study` drives the :func:`~lionsnb.prompting.strategies.strategy_plan` generators of all
(question, strategy) pairs in lockstep. In each round it collects the call that every unfinished plan is waiting for,
answers the calls found in the :class:`~lionsnb.prompting.backends.ResponseCache` from disk, and sends the others to
the backend through ``chat_batch`` in groups of ``backend.batch_size`` (one left-padded ``generate`` per group for
the local model), longest prompts together. Each group's replies are cached as soon as the group returns, so an
interrupted run loses at most one group and a rerun repeats no finished call. Once every answer is in, open answers
are graded by the LLM grader (when one is given) in one more round (plus one round of retries), also cached.

Grades (one row per question x strategy):

* MCQ: ``extract_mcq`` with the strategy's label style (or the strategy's own decision, e.g. the expert majority
  vote), then ``grade_mcq`` (exact set match; ``partial=True`` for Jaccard credit). An unparseable answer scores 0
  and is counted in the unparseable rate.
* open answers: ``numeric_ok`` from ``check_numeric`` when the question has a numeric gold answer; with a ``grader``
  backend, the grade is ``points[label]`` of the grader's label (one retry asking for the bare label when the first
  reply has none; no label = grade None). Without a grader, numeric questions score ``numeric_ok`` (no number found
  counts as wrong) and the other open questions stay ungraded (grade None).

Aggregation (pure functions over rows; rows with grade None are left out): per-strategy accuracy, per-question scores
over strategies by ``mean``, ``any`` (the oracle: max over strategies) or ``majority`` (the most frequent parsed MCQ
answer across strategies, graded once; for open answers the most frequent grade; ties go to the answer of the
strategy that comes first in :data:`~lionsnb.prompting.strategies.STRATEGIES`; questions whose MCQ answers are all
unparseable score 0), breakdowns, course scores and program pass rates against a threshold.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from lionsnb.prompting.backends import DETERMINISTIC, Backend, ResponseCache, normalize_decoding
from lionsnb.prompting.grading import (
    DEFAULT_POINTS,
    check_numeric,
    extract_grade_label,
    extract_mcq,
    grade_mcq,
    grader_messages,
    grader_retry_messages,
)
from lionsnb.prompting.strategies import LABEL_STYLE, STRATEGIES, demonstrations, strategy_plan

#: how many demonstrations each strategy uses (the others use none)
DEMO_COUNTS = {"one_shot": 1, "cot_four_shot": 4}
#: relative tolerance of the numeric checker when a question sets none
DEFAULT_NUMERIC_TOLERANCE = 0.01
ROW_KEYS = ("question_id", "course_id", "program", "year", "language", "question_type", "multiple", "bloom",
            "difficulty", "strategy", "raw_answer", "parsed", "parseable", "grade", "grade_label", "numeric_ok",
            "calls", "cached_calls", "grader_calls", "cached_grader_calls", "grader_reply")


def _courses_for(questions, bank):
    """``course_id -> Course`` from the bank, from ``questions`` when it is a Bank, else from the project's bank."""
    for source in (bank, questions):
        if source is not None and hasattr(source, "courses"):
            return source.courses
    from lionsnb.prompting.bank import load_bank

    return load_bank().courses


def _pair_plan(question, course, strategy: str, demos, *, grader: Backend | None, points: dict, partial: bool):
    """One (question, strategy): yields ("answer"|"grader", messages), receives replies, returns the row."""
    plan = strategy_plan(strategy, question, course, demos)
    stats = {"calls": 0, "grader_calls": 0}
    try:
        messages = next(plan)
        while True:
            reply = yield "answer", messages
            stats["calls"] += 1
            messages = plan.send(reply)
    except StopIteration as stop:
        answer = stop.value
    if answer is None:
        raise RuntimeError(f"strategy_plan({strategy!r}) returned no Answer for {question.question_id}")
    text = answer.text or ""
    row: dict[str, Any] = {
        "question_id": question.question_id, "course_id": question.course_id, "program": course.course_program,
        "year": course.course_year, "language": course.course_language, "question_type": question.question_type,
        "multiple": bool(question.multiple_correct_answers), "bloom": question.blooms_rating,
        "difficulty": question.question_difficulty, "strategy": strategy, "raw_answer": text, "parsed": None,
        "parseable": False, "grade": None, "grade_label": None, "numeric_ok": None, "calls": stats["calls"],
        "cached_calls": 0, "grader_calls": 0, "cached_grader_calls": 0, "grader_reply": None}
    if question.question_type == "mcq":
        selected = answer.selected
        if selected is None:
            selected = extract_mcq(text, len(question.question_options), LABEL_STYLE[strategy],
                                   bool(question.multiple_correct_answers), options=question.question_options)
        if selected is not None:
            row["parsed"] = sorted(int(i) for i in selected)
            row["parseable"] = True
            row["grade"] = float(grade_mcq(tuple(row["parsed"]), tuple(question.mcq_answer_index), partial=partial))
        else:
            row["grade"] = 0.0
        return row
    row["parseable"] = bool(text.strip())
    if question.numeric_answer is not None:
        tol = question.numeric_tolerance if question.numeric_tolerance is not None else DEFAULT_NUMERIC_TOLERANCE
        # French courses write decimals with a comma ("7,004" is 7.004 there, 7004 in English)
        french = getattr(course, "course_language", "") == "French"
        row["numeric_ok"] = check_numeric(text, float(question.numeric_answer), float(tol),
                                          decimal_comma=True if french else None)
    if grader is not None:
        messages = grader_messages(question, course, text)
        reply = yield "grader", messages
        stats["grader_calls"] += 1
        label = extract_grade_label(reply)
        if label is None:
            messages = grader_retry_messages(messages, reply)
            reply = yield "grader", messages
            stats["grader_calls"] += 1
            label = extract_grade_label(reply)
        row["grader_reply"] = reply
        row["grader_calls"] = stats["grader_calls"]
        if label is not None:
            row["grade_label"] = label
            row["grade"] = float(points[label])
    elif question.numeric_answer is not None:
        row["grade"] = 1.0 if row["numeric_ok"] else 0.0
    return row


def run_study(questions, strategies: Sequence[str], backend: Backend, cache_dir: str | os.PathLike, *, bank=None,
              decoding: dict = DETERMINISTIC, grader: Backend | None = None, points: dict = DEFAULT_POINTS,
              progress: bool = True, grader_decoding: dict | None = None, partial: bool = False) -> list[dict]:
    """One row per (question, strategy), in question-major order (see the module docstring).

    ``questions``: a Bank or a sequence of Questions. ``bank`` supplies the courses and the demonstrations of
    ``one_shot``/``cot_four_shot`` (required for those; defaults to ``questions`` when that is a Bank; for other
    strategies the courses fall back to the project's bank). When ``questions`` is a sample of a bank, pass the
    whole bank as ``bank`` so that the demonstrations are drawn from all of a course's questions.
    ``decoding``: the answer calls' settings (:data:`~lionsnb.prompting.backends.DETERMINISTIC` or
    :data:`~lionsnb.prompting.backends.PAPER_DECODING`); ``grader_decoding`` defaults to ``decoding``. ``points``
    maps grade labels to scores. ``partial``: Jaccard credit for MCQ-n instead of exact set match.
    """
    from tqdm.auto import tqdm

    strategies = list(strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    if bank is None and hasattr(questions, "questions") and hasattr(questions, "courses"):
        bank = questions
    question_list = list(getattr(questions, "questions", questions))
    needs_demos = sorted({s for s in strategies if s in DEMO_COUNTS})
    if needs_demos and bank is None:
        raise ValueError(f"strategies {needs_demos} need demonstrations: pass bank=... (the bank the demonstrations "
                         f"are drawn from, e.g. load_bank())")
    courses = _courses_for(questions, bank)
    missing = sorted({q.course_id for q in question_list} - set(courses))
    if missing:
        raise ValueError(f"no course record for {missing}: pass bank=... with these courses")
    missing_points = [label for label in ("correct", "almost_correct", "mostly_incorrect", "wrong")
                      if label not in points]
    if grader is not None and missing_points:
        raise ValueError(f"points has no score for {missing_points}")
    decoding = normalize_decoding(decoding)
    grader_decoding = normalize_decoding(grader_decoding if grader_decoding is not None else decoding)
    cache = ResponseCache(cache_dir)
    route = {"answer": (backend, decoding, ""), "grader": (grader, grader_decoding, "grader:")}

    demo_memo: dict[tuple[str, int], list] = {}

    def demos_for(q, strategy):
        k = DEMO_COUNTS.get(strategy, 0)
        if k == 0:
            return ()
        if (q.question_id, k) not in demo_memo:
            demo_memo[q.question_id, k] = list(demonstrations(bank, q, k))
        return demo_memo[q.question_id, k]

    states = []  # [generator, pending (role, messages) | None, row | None, cached counts]
    for q in question_list:
        for strategy in strategies:
            gen = _pair_plan(q, courses[q.course_id], strategy, demos_for(q, strategy), grader=grader, points=points,
                             partial=partial)
            states.append({"gen": gen, "q": q, "strategy": strategy, "pending": None, "row": None,
                           "cached": Counter()})

    def advance(state, reply=None, first=False):
        try:
            state["pending"] = next(state["gen"]) if first else state["gen"].send(reply)
        except StopIteration as stop:
            state["pending"] = None
            row = stop.value
            row["cached_calls"] = state["cached"]["answer"]
            row["cached_grader_calls"] = state["cached"]["grader"]
            state["row"] = row
            bar.update(1)

    sent = hits = 0
    with tqdm(total=len(states), desc="study", unit="pair", disable=not progress) as bar:
        for state in states:
            advance(state, first=True)
        rounds = 0
        while True:
            waiting = [s for s in states if s["pending"] is not None]
            if not waiting:
                break
            if any(s["pending"][0] == "answer" for s in waiting):  # grading waits until every answer is in,
                waiting = [s for s in waiting if s["pending"][0] == "answer"]  # so the grader gets full batches
            rounds += 1
            replies: dict[str, str] = {}
            to_send: dict[str, list] = defaultdict(list)  # role -> [(key, messages, state)]
            queued: set[str] = set()
            keys = []
            identities = {role: target.identity() for role, (target, _, _) in route.items() if target is not None}
            for state in waiting:
                role, messages = state["pending"]
                target, dec, prefix = route[role]
                key = ResponseCache.key(identities[role], prefix + state["strategy"], dec, state["q"].question_id,
                                        messages)
                keys.append(key)
                if key in replies:
                    continue
                record = cache.get(key)
                if record is not None:
                    replies[key] = record["reply"]
                    state["cached"][role] += 1
                    hits += 1
                elif key not in queued:
                    queued.add(key)
                    to_send[role].append((key, messages, state))
            for role, items in to_send.items():
                target, dec, prefix = route[role]
                items.sort(key=lambda item: -sum(len(m["content"]) for m in item[1]))  # similar lengths together
                size = max(1, int(getattr(target, "batch_size", 1) or 1))
                for start in range(0, len(items), size):
                    group = items[start:start + size]
                    got = target.chat_batch([messages for _, messages, _ in group], **dec)
                    if len(got) != len(group):
                        raise RuntimeError(f"{type(target).__name__}.chat_batch returned {len(got)} replies for "
                                           f"{len(group)} conversations")
                    for (key, _, state), reply in zip(group, got):
                        reply = reply if isinstance(reply, str) else str(reply)
                        cache.put(key, {"reply": reply, "identity": identities[role],
                                        "strategy": prefix + state["strategy"],
                                        "question_id": state["q"].question_id, "decoding": dec})
                        replies[key] = reply
                    sent += len(group)
                    bar.set_postfix(round=rounds, sent=sent, cached=hits)
            for state, key in zip(waiting, keys):
                advance(state, replies[key])
    return [state["row"] for state in states]


# --------------------------------------------------------------------------- aggregation


def _graded(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if r.get("grade") is not None and not (isinstance(r["grade"], float) and
                                                                    math.isnan(r["grade"]))]


def _strategy_rank(strategy: str) -> tuple[int, str]:
    return (STRATEGIES.index(strategy), "") if strategy in STRATEGIES else (len(STRATEGIES), str(strategy))


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def accuracy_by_strategy(rows: Iterable[dict]) -> dict[str, float]:
    """Mean grade of each strategy over its graded rows, in :data:`STRATEGIES` order."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in _graded(rows):
        groups[r["strategy"]].append(float(r["grade"]))
    return {s: _mean(groups[s]) for s in sorted(groups, key=_strategy_rank)}


def _majority(question_rows: list[dict]) -> float:
    ordered = sorted(question_rows, key=lambda r: _strategy_rank(r["strategy"]))
    if ordered[0].get("question_type") == "mcq":
        votes = [r for r in ordered if r.get("parsed") is not None]
        if not votes:
            return 0.0
        answer = lambda r: tuple(sorted(r["parsed"]))  # noqa: E731
    else:
        votes = ordered
        answer = lambda r: float(r["grade"])  # noqa: E731
    counts = Counter(answer(r) for r in votes)
    best = max(counts.values())
    for r in votes:  # first in strategy order among the most frequent answers
        if counts[answer(r)] == best:
            return float(r["grade"])
    raise AssertionError("unreachable")


def question_scores(rows: Iterable[dict], how: str = "mean") -> dict[str, float]:
    """Per question, its score over strategies: ``mean``, ``any`` (max; the oracle) or ``majority`` (see module)."""
    if how not in ("mean", "any", "majority"):
        raise ValueError(f"how must be 'mean', 'any' or 'majority', not {how!r}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in _graded(rows):
        groups[r["question_id"]].append(r)
    out = {}
    for qid, group in groups.items():
        grades = [float(r["grade"]) for r in group]
        out[qid] = _mean(grades) if how == "mean" else max(grades) if how == "any" else _majority(group)
    return out


def _first_values(rows: Iterable[dict], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        out.setdefault(r["question_id"], r.get(key))
    return out


def unparseable_rate(rows: Iterable[dict]) -> dict[str, float]:
    """Per strategy, the fraction of its MCQ rows whose answer could not be parsed (strategies without MCQ: none)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r.get("question_type") == "mcq":
            groups[r["strategy"]].append(not r.get("parseable"))
    return {s: _mean([float(x) for x in groups[s]]) for s in sorted(groups, key=_strategy_rank)}


def summary(rows: Sequence[dict]) -> dict:
    """Headline numbers: question-averaged ``mean`` over strategies, ``any``-strategy and ``majority`` vote, the
    per-strategy accuracy and the per-strategy unparseable rate (MCQ rows), with the counts behind them."""
    rows = list(rows)
    out: dict[str, Any] = {}
    for how in ("mean", "any", "majority"):
        scores = question_scores(rows, how)
        out[how] = _mean(list(scores.values()))
    graded = _graded(rows)
    out.update({"n_rows": len(rows), "n_graded": len(graded), "n_questions": len({r["question_id"] for r in graded}),
                "accuracy_by_strategy": accuracy_by_strategy(rows), "unparseable_rate": unparseable_rate(rows)})
    return out


def breakdown(rows: Sequence[dict], by: str, how: str = "mean") -> dict[Any, float]:
    """Mean question score (over strategies by ``how``) per value of a row field: ``question_type``, ``language``,
    ``bloom``, ``difficulty``, ``program``, ``year``, ``course_id``, ``multiple``... (``strategy``: per-strategy
    accuracy). Missing values are grouped under None."""
    rows = list(rows)
    if by == "strategy":
        return accuracy_by_strategy(rows)
    scores = question_scores(rows, how)
    values = _first_values(rows, by)
    groups: dict[Any, list[float]] = defaultdict(list)
    for qid, score in scores.items():
        groups[values.get(qid)].append(score)
    return {value: _mean(groups[value]) for value in sorted(groups, key=lambda v: (v is None, str(v)))}


def course_scores(rows: Sequence[dict], how: str = "mean", *, mcq_weight: float | None = None) -> dict[str, float]:
    """Per course, the mean of its question scores. ``mcq_weight`` (optional, in [0, 1]) weighs the MCQ mean against
    the open-answer mean (used only when the course has both kinds)."""
    rows = list(rows)
    scores = question_scores(rows, how)
    course = _first_values(rows, "course_id")
    kind = _first_values(rows, "question_type")
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for qid, score in scores.items():
        groups[course[qid]][kind[qid]].append(score)
    out = {}
    for cid in sorted(groups):
        parts = groups[cid]
        if mcq_weight is not None and parts.get("mcq") and parts.get("open_answer"):
            out[cid] = mcq_weight * _mean(parts["mcq"]) + (1 - mcq_weight) * _mean(parts["open_answer"])
        else:
            out[cid] = _mean([s for values in parts.values() for s in values])
    return out


def pass_rates(rows: Sequence[dict], thresholds: Sequence[float], how: str = "mean", *,
               mcq_weight: float | None = None) -> dict[str, list[float]]:
    """Per program, for each threshold θ, the fraction of the program's courses whose score is >= θ."""
    rows = list(rows)
    scores = course_scores(rows, how, mcq_weight=mcq_weight)
    program_of: dict[str, Any] = {}
    for r in rows:
        program_of.setdefault(r["course_id"], r.get("program"))
    programs: dict[Any, list[float]] = defaultdict(list)
    for cid, score in scores.items():
        programs[program_of[cid]].append(score)
    return {program: [sum(s >= theta - 1e-12 for s in values) / len(values) for theta in thresholds]
            for program, values in sorted(programs.items(), key=lambda kv: str(kv[0]))}


def rows_to_json(rows: Sequence[dict]) -> str:
    """The rows as JSON text (e.g. to save a study next to its cache)."""
    return json.dumps(list(rows), ensure_ascii=False, indent=1)
