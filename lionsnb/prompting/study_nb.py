"""Notebook 2 of the prompting series: the study ("Could an AI assistant pass the degree?").

Borges et al., "Could ChatGPT get an engineering degree? Evaluating higher education vulnerability to AI
assistants", PNAS 121(49) e2414955121 (2024), arXiv 2408.11841. The paper's design: textual assessment questions of
50 EPFL courses, GPT-3.5 and GPT-4, eight prompting strategies; GPT-4 answers 65.8 % correctly on average over the
strategies and 85.1 % under at least one strategy (abstract). Those are the paper's numbers, not ours.

Here every strategy of :mod:`lionsnb.prompting.strategies` runs on a subset of the project's question bank with the
local SmolLM2-135M-Instruct (or a scripted stand-in, or an OpenAI-compatible endpoint), through
:func:`lionsnb.prompting.study.run_study` (batched generation, cached replies). This module adds what the notebook
needs around it:

* :class:`PaddingAwareLocalBackend`: the local backend, with each batch split so that no ``generate`` call pads more
  than a budget of prompt tokens (a four-shot prompt of 900 tokens batched with seven of 200 would otherwise make
  the CPU prefill 8 x 900 tokens). Same identity as :class:`~lionsnb.prompting.backends.LocalHFBackend`, so both
  share cached replies.
* :func:`choose_questions` (CPU profiles: kind by kind, the questions with the shortest prompts; otherwise a
  stratified sample), :func:`run_local_study` (the study with the same backend as grader, calls made vs served from
  the cache, the replies cut at ``max_new_tokens``), :func:`primary_rows` (our grading rule, see below),
  :func:`grader_agreement` (Cohen's kappa between the LLM grader and the numeric checker, with its degenerate cases),
  :func:`chance_level`, tables, :func:`scripted_study` (the synthetic comparison over the whole bank),
  pass-rate curves, the identities as counts, figures and the exercises.

Grading rule of this notebook (``grade`` of :func:`primary_rows`): MCQ by answer extraction (exact set match);
open answers with a numeric gold answer by the deterministic numeric checker (an answer that states no number counts
as wrong); other open answers by the LLM grader's label through the points mapping (ungraded when the grader gives no
label). The paper graded every open answer with GPT-4; a 135M grader cannot do that reliably, so the LLM grader's
verdicts are kept next to the checker's (``llm_grade``) and compared with it, not trusted.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np  # the notebook reaches NumPy as m.np (one import per notebook)

from lionsnb.context import setup_for
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label  # noqa: F401  (re-exported for the notebook)
from lionsnb.prompting.backends import (
    DETERMINISTIC,
    PAPER_DECODING,
    Backend,
    LocalHFBackend,
    OpenAICompatibleBackend,
    ScriptedBackend,
)
from lionsnb.prompting.bank import Bank, Question, load_bank  # noqa: F401  (load_bank: for the notebook)
from lionsnb.prompting.grading import cohen_kappa
from lionsnb.prompting.strategies import STRATEGIES, build_messages, demonstrations
from lionsnb.prompting.study import (
    DEMO_COUNTS,
    accuracy_by_strategy,
    breakdown,
    course_scores,
    pass_rates,
    question_scores,
    run_study,
    summary,
    unparseable_rate,
)
from lionsnb.widgets import explore  # noqa: F401  (re-exported for the notebook)

SPEC = MethodSpec(
    name="prompting.study_nb",
    title="Prompting 2: the study (eight strategies, grading, aggregates and pass rates)",
    profiles={
        # n_questions: questions of the bank in the local study (None = the whole bank); pick: "shortest" = by
        # kind in turn (MCQ-1, numeric open, MCQ-n), the question with the shortest prompts (cheap on a CPU),
        # "stratified" = Bank.select(n, seed);
        # max_new_tokens: reply cap of the answer calls; grader_max_tokens: reply cap of the grader calls;
        # batch_size: conversations per generate;
        # padded_tokens: at most this many (padded) prompt tokens per generate call (longer prompts go alone);
        # scripted_accuracies: the synthetic comparison over the whole bank
        "smoke": dict(n_questions=2, pick="shortest", max_new_tokens=16, grader_max_tokens=8, batch_size=8,
                      padded_tokens=1536, scripted_accuracies=(0.3, 0.6, 0.9)),
        "teach": dict(n_questions=3, pick="shortest", max_new_tokens=24, grader_max_tokens=16, batch_size=8,
                      padded_tokens=1536, scripted_accuracies=(0.3, 0.6, 0.9)),
        "full": dict(n_questions=None, pick="stratified", max_new_tokens=256, grader_max_tokens=256, batch_size=32,
                     padded_tokens=32768, scripted_accuracies=(0.3, 0.6, 0.9)),
    },
    knobs={
        "backend": Knob("local", "who answers: local (SmolLM2-135M offline), scripted (a synthetic stand-in), or "
                        "endpoint (an OpenAI-compatible server)", str, choices=("local", "scripted", "endpoint")),
        "base_url": Knob("http://127.0.0.1:8000/v1", "base URL of the OpenAI-compatible endpoint", str),
        "endpoint_model": Knob("gpt-4o-mini", "model name sent to the endpoint", str),
        "api_key_env": Knob("OPENAI_API_KEY", "NAME of the environment variable that holds the API key (empty: no "
                            "key, for local servers)", str),
        "decoding": Knob("deterministic", "deterministic (greedy) or paper (temperature 0.8, frequency penalty 0.8, "
                         "presence penalty 0.5)", str, choices=("deterministic", "paper")),
        "n_questions": Knob(0, "questions in the study (0: the profile's number; else a stratified sample)", int,
                            low=0, high=260),
        "threshold": Knob(0.5, "course pass threshold theta the pass-rate explorer starts at (0.4 to 0.8)", float,
                          low=0.4, high=0.8),
        "aggregation": Knob("mean", "how the explorer combines the strategies per question", str,
                            choices=("mean", "majority", "any")),
    },
)
setup = setup_for(SPEC)

#: the paper's headline numbers (abstract; GPT-4), shown as the paper's, never as ours
PAPER = {"courses": 50, "strategies": 8, "gpt4_mean": 0.658, "gpt4_any": 0.851}
AGGREGATIONS = ("mean", "majority", "any")
#: thresholds of the pass-rate curves (fine) and of the explorer's slider (coarse)
THETA_CURVE = tuple(round(x, 3) for x in np.linspace(0.0, 1.0, 101))
THETA_SLIDER = tuple(round(0.4 + 0.05 * i, 2) for i in range(9))
#: the breakdowns (row fields): MCQ-1 / MCQ-n / open, course language, Bloom level, difficulty
BREAKDOWNS = ("kind", "language", "bloom", "difficulty")
#: the scripted stand-in's rate of malformed replies (no usable answer)
SCRIPTED_MALFORMED = 0.1


# ----------------------------------------------------------------------------- backends

class PaddingAwareLocalBackend(LocalHFBackend):
    """:class:`~lionsnb.prompting.backends.LocalHFBackend` that splits each batch by padded prompt length.

    ``chat_batch`` sorts the conversations by prompt length (tokens) and fills sub-batches, longest first, while
    ``size x longest <= padded_tokens`` and ``size <= batch_size``; a prompt longer than the budget goes alone.
    Each sub-batch is one left-padded ``generate``. On a CPU the prefill of padding is as costly as that of real
    tokens, so one long four-shot prompt no longer makes seven short prompts pay for its length. The identity (and
    so the response cache) is the parent's; ``stats['generate_calls']`` counts the sub-batches.
    """

    def __init__(self, model_id_or_path=None, *, padded_tokens: int = 2048, **kwargs):
        super().__init__(model_id_or_path, **kwargs)
        if int(padded_tokens) < 1:
            raise ValueError("padded_tokens must be a positive number of tokens")
        self.padded_tokens = int(padded_tokens)
        self.stats["generate_calls"] = 0
        self.stats["prompt_tokens"] = 0
        self.stats["padded_prompt_tokens"] = 0

    def prompt_lengths(self, batch: Sequence[list]) -> list[int]:
        """Prompt tokens of each conversation (chat template included)."""
        tokenizer = self.tokenizer
        return [len(tokenizer(self.prompt_text(m), add_special_tokens=False)["input_ids"]) for m in batch]

    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices of the sub-batches for prompts of these lengths (see the class docstring)."""
        return split_by_padding(lengths, self.batch_size, self.padded_tokens)

    def chat_batch(self, batch, **decoding) -> list[str]:
        batch = list(batch)
        if not batch:
            return []
        lengths = self.prompt_lengths(batch)
        out: list[str | None] = [None] * len(batch)
        for group in self.plan_batches(lengths):
            replies = LocalHFBackend.chat_batch(self, [batch[i] for i in group], **decoding)
            for i, reply in zip(group, replies):
                out[i] = reply
            self.stats["generate_calls"] += 1
            self.stats["prompt_tokens"] += sum(lengths[i] for i in group)
            self.stats["padded_prompt_tokens"] += len(group) * max(lengths[i] for i in group)
        return [r if r is not None else "" for r in out]


def split_by_padding(lengths: Sequence[int], batch_size: int, padded_tokens: int) -> list[list[int]]:
    """Sub-batches (lists of indices) of prompts with these lengths: longest first, a group grows while
    ``len(group) x longest <= padded_tokens`` and ``len(group) <= batch_size``. Every index appears once."""
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and ((len(current) + 1) * int(lengths[current[0]]) > padded_tokens or len(current) >= batch_size):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def make_backend(ctx, bank: Bank) -> Backend:
    """The backend the knobs ask for: the local model (padding-aware batches), the scripted stand-in (it knows the
    bank's answer key, accuracy 0.6), or an OpenAI-compatible endpoint (key read from the variable API_KEY_ENV)."""
    k, s = ctx.knobs, ctx.sizes
    if k.backend == "local":
        device = "cuda" if ctx.device.type == "cuda" else "cpu"
        return PaddingAwareLocalBackend(None, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                                        padded_tokens=s.padded_tokens, device=device, seed=ctx.seed)
    if k.backend == "scripted":
        return ScriptedBackend.from_bank(bank, accuracy=0.6, malformed_rate=SCRIPTED_MALFORMED, seed=ctx.seed)
    return OpenAICompatibleBackend(k.base_url, k.endpoint_model, api_key_env=k.api_key_env or None,
                                   max_tokens=s.max_new_tokens, concurrency=min(8, s.batch_size), seed=ctx.seed)


def decoding_settings(name: str) -> dict:
    """The decoding preset of the DECODING knob."""
    if name == "deterministic":
        return dict(DETERMINISTIC)
    if name == "paper":
        return dict(PAPER_DECODING)
    raise ValueError(f"DECODING = {name!r}: use deterministic or paper")


def response_dir(ctx) -> Path:
    """Where the study's replies are cached: a folder of the notebook's cache (one JSON file per call)."""
    return Path(ctx.cache.root) / SPEC.name / "responses"


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
                    decoding: dict, grader: Backend | None = None, grader_decoding: dict | None = None,
                    progress: bool = True) -> dict:
    """Run every strategy on ``questions`` with ``backend`` (and ``grader`` for open answers), replies cached in
    ``cache_dir``. Returns the primary rows, the seconds, and the calls: asked by the rows, served from the cache,
    and newly generated (files added to the cache)."""
    before = _count_files(Path(cache_dir))
    start = time.perf_counter()
    raw = run_study(questions, STRATEGIES, backend, cache_dir, bank=bank, decoding=decoding, grader=grader,
                    grader_decoding=grader_decoding, progress=progress)
    seconds = time.perf_counter() - start
    rows = primary_rows(raw, questions.questions)
    asked = sum(r["calls"] + r["grader_calls"] for r in rows)
    cached = sum(r["cached_calls"] + r["cached_grader_calls"] for r in rows)
    return {"rows": rows, "seconds": seconds, "calls": asked, "cached": cached,
            "generated": _count_files(Path(cache_dir)) - before}


def tokenizer_for(backend: Backend):
    """The local backend's tokenizer without loading the model when it is not loaded yet (None otherwise)."""
    if not isinstance(backend, LocalHFBackend):
        return None
    if backend._lm is not None:
        return backend._lm[1]
    try:
        import transformers

        from lionsnb.lm import CONVERTED_NAME, models_dir

        source = models_dir() / CONVERTED_NAME if backend.model_id_or_path is None else backend.model_id_or_path
        return transformers.AutoTokenizer.from_pretrained(source)
    except Exception:  # noqa: BLE001 - truncation is a diagnostic; without a tokenizer it is not reported
        return None


def mark_truncated(rows: Sequence[dict], tokenizer, max_new_tokens: int) -> list[dict]:
    """Adds ``truncated``: the final answer has about ``max_new_tokens`` tokens (re-tokenised), i.e. it was cut
    before the model finished (None without a tokenizer). Approximate: decoding and re-encoding may differ by a
    token, hence the margin of one token."""
    out = []
    for r in rows:
        r = dict(r)
        if tokenizer is None:
            r["truncated"] = None
        else:
            n = len(tokenizer(r.get("raw_answer") or "", add_special_tokens=False)["input_ids"])
            r["truncated"] = bool(n >= max_new_tokens - 1)
        out.append(r)
    return out


def scripted_study(bank: Bank, accuracies: Sequence[float], seed: int = 0, progress: bool = False) -> dict:
    """The scripted stand-in (it knows the answer key; right with probability ``accuracy``, malformed 10 % of the
    time) on the WHOLE bank with every strategy, grading itself as the LLM grader. Synthetic: its wrong answers and
    its grader labels are random draws, not a model's mistakes. Returns {accuracy: primary rows}.

    Replies are cached in a temporary folder in memory (``/dev/shm`` when present) and dropped: the scripted
    backend is deterministic and instant, and the cache's per-file ``fsync`` would dominate its run time.
    """
    out = {}
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    for acc in accuracies:
        backend = ScriptedBackend.from_bank(bank, accuracy=float(acc), malformed_rate=SCRIPTED_MALFORMED, seed=seed)
        with tempfile.TemporaryDirectory(prefix="lionsnb_scripted_", dir=shm) as tmp:
            rows = run_study(bank, STRATEGIES, backend, tmp, grader=backend, progress=progress)
        out[float(acc)] = primary_rows(rows, bank.questions)
    return out


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


def bank_digest(bank: Bank) -> str:
    """A short digest of the bank's questions and courses (a cache key for results computed on the whole bank)."""
    import hashlib
    import json

    blob = json.dumps([[q.to_dict() for q in bank.questions], sorted(map(str, bank.courses.values()))],
                      sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def mcq_accuracy_by_strategy(rows: Iterable[dict]) -> dict[str, float]:
    """Per strategy, the accuracy over its MCQ rows only (comparable with the chance level)."""
    return accuracy_by_strategy([r for r in rows if r["question_type"] == "mcq"])


def truncated_rate(rows: Iterable[dict]) -> dict[str, float]:
    """Per strategy, the fraction of final answers cut at ``max_new_tokens`` (rows without the flag are skipped)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if r.get("truncated") is not None:
            groups[r["strategy"]].append(bool(r["truncated"]))
    return {s: float(np.mean(groups[s])) for s in STRATEGIES if s in groups}


def strategy_table(rows: Sequence[dict]) -> list[dict]:
    """One line per strategy: graded rows, accuracy, MCQ accuracy, MCQ unparseable rate, truncated rate."""
    acc, mcq, unp, cut = (accuracy_by_strategy(rows), mcq_accuracy_by_strategy(rows), unparseable_rate(rows),
                          truncated_rate(rows))
    graded = Counter(r["strategy"] for r in rows if r.get("grade") is not None)
    return [{"strategy": s, "graded": graded[s], "accuracy": acc.get(s, float("nan")),
             "mcq_accuracy": mcq.get(s, float("nan")), "unparseable": unp.get(s, float("nan")),
             "truncated": cut.get(s, float("nan"))} for s in STRATEGIES]


def aggregates(rows: Sequence[dict]) -> dict[str, float]:
    """Question-averaged score over strategies by mean, majority vote and any-strategy (the oracle)."""
    s = summary(rows)
    return {how: float(s[how]) for how in AGGREGATIONS}


def breakdowns(rows: Sequence[dict], how: str = "mean") -> dict[str, dict]:
    """Mean question score per kind (MCQ-1, MCQ-n, open), language, Bloom level and difficulty, with the question counts:
    {field: {value: (score, n_questions)}}."""
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


def load_average() -> str:
    """The 1-minute load average and the CPU count (timings on a shared machine depend on it)."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except (OSError, AttributeError):
        return "unknown"


def generation_report(backend: Backend) -> str:
    """One line about the local model's generation in this run (nothing when every reply came from the cache)."""
    stats = getattr(backend, "stats", None)
    if not isinstance(backend, LocalHFBackend) or not stats or not stats.get("prompts"):
        return "no generation in this run (every reply came from the cache, or the backend is not local)"
    line = (f"local model: {stats['prompts']} prompts in {stats.get('generate_calls', stats['batches'])} generate "
            f"calls, {stats['generated_tokens']} tokens generated in {stats['seconds']:.1f} s "
            f"({backend.tokens_per_second():.1f} tokens/s, prefill included)")
    if stats.get("padded_prompt_tokens"):
        line += (f"; prompt tokens {stats['prompt_tokens']}, with padding {stats['padded_prompt_tokens']}")
    return line


def finite_or(value: Any, default: float = 0.0) -> float:
    """``value`` as a float, or ``default`` when it is NaN/None (a measure with nothing to measure in this run)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


# ----------------------------------------------------------------------------- tables

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "  n/a" if math.isnan(v) else f"{v:5.3f}"
    return str(v)


def show_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` (dicts) as an aligned text table."""
    rows = list(rows)
    if not rows:
        print("(empty)")
        return
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def show_answers(rows: Sequence[dict], width: int = 70) -> None:
    """One line per (question, strategy): parsed answer, grade, and the start of the raw reply."""
    for r in rows:
        text = " ".join((r.get("raw_answer") or "").split())
        text = text[:width] + ("..." if len(text) > width else "")
        parsed = r["parsed"] if r["question_type"] == "mcq" else (
            f"num={r['numeric_ok']}" if r.get("numeric_gold") else f"llm={r.get('grade_label')}")
        grade = "-" if r.get("grade") is None else f"{r['grade']:.2f}"
        print(f"{r['question_id']:>10s} {r['strategy']:>16s} {parsed!s:>12s} {grade:>5s} | {text}")


# ----------------------------------------------------------------------------- figures

_COLORS = {"mean": "C0", "majority": "C1", "any": "C2"}


def draw_strategies(fig, *, rows: Sequence[dict], chance: float, title: str = "") -> None:
    """Left: accuracy per strategy (all graded rows) and MCQ accuracy with the MCQ chance level. Right: the MCQ
    unparseable rate and the truncated rate per strategy."""
    table = strategy_table(rows)
    x = np.arange(len(STRATEGIES))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(x - 0.2, [t["accuracy"] for t in table], 0.4, label="all graded answers")
    ax1.bar(x + 0.2, [t["mcq_accuracy"] for t in table], 0.4, label="MCQ only")
    ax1.axhline(chance, color="k", ls="--", lw=1, label=f"MCQ chance ({chance:.2f})")
    ax1.set_xticks(x, STRATEGIES, rotation=40, ha="right")
    ax1.set_ylim(0, 1.3)
    ax1.set_yticks(np.linspace(0, 1, 6))
    label(ax1, "strategy", "accuracy", f"accuracy per strategy{title}")
    ax1.legend(ncol=2, loc="upper left", fontsize=8)
    ax2.bar(x - 0.2, [t["unparseable"] for t in table], 0.4, color="C3", label="MCQ answer unparseable")
    ax2.bar(x + 0.2, [0 if math.isnan(t["truncated"]) else t["truncated"] for t in table], 0.4, color="C7",
            label="reply cut at max_new_tokens")
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


# ----------------------------------------------------------------------------- exercises

def any_strategy_accuracy(grades: Sequence[Sequence[float]]) -> float:
    """Reference: ``grades[q][s]`` is question q's grade under strategy s; the mean over questions of the best
    grade over strategies (the any-strategy accuracy)."""
    return float(np.mean([max(g) for g in grades]))


def majority_vote_grade(answers: Sequence[tuple | None], gold: tuple) -> float:
    """Reference: the grade (exact set match, 0/1) of the most frequent parsed answer among ``answers`` (one per
    strategy, in strategy order; None = unparseable, not a vote); ties go to the answer given first; no vote = 0."""
    votes = [tuple(sorted(a)) for a in answers if a is not None]
    if not votes:
        return 0.0
    counts = Counter(votes)
    top = max(counts.values())
    winner = next(v for v in votes if counts[v] == top)
    return float(set(winner) == set(gold))


def pass_rate_at(course_scores_: Mapping[str, float], program_of: Mapping[str, str], theta: float) -> dict:
    """Reference: per program, the fraction of its courses whose score is >= theta."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for course, score in course_scores_.items():
        groups[program_of[course]].append(score >= theta)
    return {p: float(np.mean(v)) for p, v in sorted(groups.items())}


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
    return check_exercise("pass rate at a threshold", attempt, pass_rate_at, _pass_cases(), ctx=ctx,
                          compare=lambda got, exp: isinstance(got, Mapping) and set(got) == set(exp) and all(
                              abs(float(got[k]) - exp[k]) < 1e-9 for k in exp),
                          hint="a course passes when its score is >= theta (a score equal to theta passes); "
                               "return {program: fraction}")
