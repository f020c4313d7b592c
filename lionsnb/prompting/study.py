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
from collections.abc import Iterable, Mapping, Sequence
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
from lionsnb.prompting.strategies import LABEL_STYLE, STRATEGIES, demonstrations, majority_vote, strategy_plan

#: how many demonstrations each strategy uses (the others use none)
DEMO_COUNTS = {"one_shot": 1, "cot_four_shot": 4}
#: relative tolerance of the numeric checker when a question sets none
DEFAULT_NUMERIC_TOLERANCE = 0.01
ROW_KEYS = ("question_id", "course_id", "program", "year", "language", "question_type", "multiple", "bloom",
            "difficulty", "strategy", "raw_answer", "parsed", "parseable", "grade", "grade_label", "numeric_ok",
            "calls", "cached_calls", "grader_calls", "cached_grader_calls", "grader_reply", "max_tokens")


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
              progress: bool = True, grader_decoding: dict | None = None, partial: bool = False,
              max_tokens: int | Mapping[str, int] | None = None, sync: bool = True) -> list[dict]:
    """One row per (question, strategy), in question-major order (see the module docstring).

    ``questions``: a Bank or a plain sequence of Questions. ``bank`` supplies the courses and the demonstrations of
    ``one_shot``/``cot_four_shot``; it defaults to ``questions`` when that is a Bank, else to the project's bank
    (:func:`~lionsnb.prompting.bank.load_bank`), from which the other strategies' courses come too. When
    ``questions`` is a sample of a bank, pass the whole bank as ``bank`` so that the demonstrations are drawn from
    all of a course's questions; a course the demonstrations' bank does not hold gets none (the prompt then has
    fewer demonstration exchanges).
    ``decoding``: the answer calls' settings (:data:`~lionsnb.prompting.backends.DETERMINISTIC` or
    :data:`~lionsnb.prompting.backends.PAPER_DECODING`); ``grader_decoding`` defaults to ``decoding``.
    ``max_tokens``: the reply cap of the answer calls, one number or one per strategy
    (:func:`~lionsnb.prompting.strategies.reply_token_caps`: reasoning strategies need more room); it becomes part
    of that strategy's decoding settings, hence of the cache key, and of each row (``max_tokens``). ``points`` maps
    grade labels to scores. ``partial``: Jaccard credit for MCQ-n instead of exact set match. ``sync=False`` stores
    the replies without a per-file ``fsync`` (:meth:`~lionsnb.prompting.backends.ResponseCache.put`).
    """
    from lionsnb.progress import progress as progress_bar

    strategies = list(strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    if bank is None and hasattr(questions, "questions") and hasattr(questions, "courses"):
        bank = questions
    question_list = list(getattr(questions, "questions", questions))
    if bank is None and any(s in DEMO_COUNTS for s in strategies):
        from lionsnb.prompting.bank import load_bank

        bank = load_bank()  # demonstrations come from the project's bank, as the courses do
    courses = _courses_for(questions, bank)
    missing = sorted({q.course_id for q in question_list} - set(courses))
    if missing:
        raise ValueError(f"no course record for {missing}: pass bank=... with these courses")
    missing_points = [label for label in ("correct", "almost_correct", "mostly_incorrect", "wrong")
                      if label not in points]
    if grader is not None and missing_points:
        raise ValueError(f"points has no score for {missing_points}")
    caps = _caps(max_tokens, strategies)
    decoding = normalize_decoding(decoding)
    answer_decoding = {st: normalize_decoding(decoding, max_tokens=caps[st]) if caps[st] else decoding
                       for st in strategies}
    grader_decoding = normalize_decoding(grader_decoding if grader_decoding is not None else decoding)
    cache = ResponseCache(cache_dir)
    targets = {"answer": backend, "grader": grader}

    def route(role: str, strategy: str) -> tuple[dict, str]:
        """(decoding, cache-key prefix) of a call."""
        return (answer_decoding[strategy], "") if role == "answer" else (grader_decoding, "grader:")

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
            row["max_tokens"] = caps[state["strategy"]]
            state["row"] = row
            bar.update(1)

    sent = hits = 0
    identities = {role: target.identity() for role, target in targets.items() if target is not None}
    with progress_bar(total=len(states), desc="study", unit="pair", disable=not progress) as bar:
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
            to_send: dict[tuple, list] = defaultdict(list)  # (role, decoding) -> [(key, messages, state)]
            queued: set[str] = set()
            keys = []
            for state in waiting:
                role, messages = state["pending"]
                dec, prefix = route(role, state["strategy"])
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
                    to_send[role, json.dumps(dec, sort_keys=True)].append((key, messages, state, dec, prefix))
            for (role, _), items in to_send.items():
                target = targets[role]
                items.sort(key=lambda item: -sum(len(m["content"]) for m in item[1]))  # similar lengths together
                size = max(1, int(getattr(target, "batch_size", 1) or 1))
                for start in range(0, len(items), size):
                    group = items[start:start + size]
                    dec = group[0][3]
                    got = target.chat_batch([messages for _, messages, _, _, _ in group], **dec)
                    if len(got) != len(group):
                        raise RuntimeError(f"{type(target).__name__}.chat_batch returned {len(got)} replies for "
                                           f"{len(group)} conversations")
                    for (key, _, state, _, prefix), reply in zip(group, got):
                        reply = reply if isinstance(reply, str) else str(reply)
                        cache.put(key, {"reply": reply, "identity": identities[role],
                                        "strategy": prefix + state["strategy"],
                                        "question_id": state["q"].question_id, "decoding": dec}, sync=sync)
                        replies[key] = reply
                    sent += len(group)
                    bar.set_postfix(round=rounds, sent=sent, cached=hits)
            for state, key in zip(waiting, keys):
                advance(state, replies[key])
    return [state["row"] for state in states]


def _caps(max_tokens: int | Mapping[str, int] | None, strategies: Sequence[str]) -> dict[str, int | None]:
    """The reply cap of each strategy's answer calls (None: the backend's own)."""
    if max_tokens is None:
        return {st: None for st in strategies}
    if isinstance(max_tokens, Mapping):
        missing = [st for st in strategies if st not in max_tokens]
        if missing:
            raise ValueError(f"max_tokens has no cap for {missing}")
        caps = {st: int(max_tokens[st]) for st in strategies}
    else:
        caps = {st: int(max_tokens) for st in strategies}
    if any(c < 1 for c in caps.values()):
        raise ValueError("max_tokens must be positive")
    return caps


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
    """The majority-vote score of one question's rows: the grade of the most frequent answer (MCQ: the parsed
    option set, unparseable answers do not vote, no vote scores 0; open answers: the grade itself), ties to the
    strategy listed first (:func:`~lionsnb.prompting.strategies.majority_vote`)."""
    ordered = sorted(question_rows, key=lambda r: _strategy_rank(r["strategy"]))
    if ordered[0].get("question_type") == "mcq":
        answers = [tuple(sorted(r["parsed"])) if r.get("parsed") is not None else None for r in ordered]
    else:
        answers = [float(r["grade"]) for r in ordered]
    _, who = majority_vote(answers)
    return 0.0 if who is None else float(ordered[who]["grade"])


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


def truncated_rate(rows: Iterable[dict]) -> dict[str, float]:
    """Per strategy, the fraction of final answers that stopped at their reply cap (the rows' ``truncated`` flag,
    set by :func:`lionsnb.prompting.assistant.mark_truncated`); rows without the flag are skipped."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r.get("truncated") is not None:
            groups[r["strategy"]].append(bool(r["truncated"]))
    return {s: _mean([float(x) for x in groups[s]]) for s in sorted(groups, key=_strategy_rank)}


def strategy_summary(rows: Sequence[dict]) -> list[dict]:
    """One line per strategy present in ``rows`` (in :data:`STRATEGIES` order): answers, graded answers, accuracy
    over the graded ones, MCQ accuracy, MCQ unparseable rate and truncated rate (NaN where there is nothing)."""
    rows = list(rows)
    acc = accuracy_by_strategy(rows)
    mcq = accuracy_by_strategy([r for r in rows if r.get("question_type") == "mcq"])
    unp, cut = unparseable_rate(rows), truncated_rate(rows)
    nan = float("nan")
    out = []
    for s in sorted({r["strategy"] for r in rows}, key=_strategy_rank):
        mine = [r for r in rows if r["strategy"] == s]
        out.append({"strategy": s, "answers": len(mine), "graded": sum(r.get("grade") is not None for r in mine),
                    "accuracy": acc.get(s, nan), "mcq_accuracy": mcq.get(s, nan), "unparseable": unp.get(s, nan),
                    "truncated": cut.get(s, nan)})
    return out


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


def program_pass_rates(course_scores: Mapping[str, float], program_of: Mapping[str, Any], theta: float
                       ) -> dict[Any, float]:
    """Per program, the fraction of its courses whose score is >= ``theta`` (a score equal to theta passes; a
    rounding margin of 1e-12 keeps a score that equals theta up to float error)."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for cid, score in course_scores.items():
        groups[program_of[cid]].append(score)
    return {program: sum(s >= theta - 1e-12 for s in values) / len(values)
            for program, values in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def pass_rates(rows: Sequence[dict], thresholds: Sequence[float], how: str = "mean", *,
               mcq_weight: float | None = None) -> dict[str, list[float]]:
    """Per program, for each threshold θ, the fraction of the program's courses whose score is >= θ."""
    rows = list(rows)
    scores = course_scores(rows, how, mcq_weight=mcq_weight)
    program_of: dict[str, Any] = {}
    for r in rows:
        program_of.setdefault(r["course_id"], r.get("program"))
    per_theta = [program_pass_rates(scores, program_of, theta) for theta in thresholds]
    programs = per_theta[0] if per_theta else program_pass_rates(scores, program_of, 0.0)
    return {program: [rates[program] for rates in per_theta] for program in programs}
