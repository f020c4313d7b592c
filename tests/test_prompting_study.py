"""run_study (lockstep batching, caching, resume without repeated calls, grading, key hygiene) and the aggregation
functions (identities on synthetic rows, hand counts)."""
from __future__ import annotations

import json
import random
import uuid

import pytest

from lionsnb.prompting.backends import (
    PAPER_DECODING,
    Backend,
    EndpointUnreachableError,
    HTTPStatusError,
    OpenAICompatibleBackend,
    ResponseCache,
    ScriptedBackend,
)
from lionsnb.prompting.bank import load_bank
from lionsnb.prompting.grading import GRADE_LABELS
from lionsnb.prompting.strategies import CALLS, STRATEGIES
from lionsnb.prompting.study import (
    ROW_KEYS,
    accuracy_by_strategy,
    breakdown,
    course_scores,
    pass_rates,
    question_scores,
    run_study,
    summary,
    unparseable_rate,
)

SPEC_KEYS = {"question_id", "course_id", "program", "year", "language", "question_type", "multiple", "bloom",
             "difficulty", "strategy", "raw_answer", "parsed", "parseable", "grade", "grade_label", "numeric_ok",
             "calls", "cached_calls"}


@pytest.fixture(scope="module")
def bank():
    return load_bank()


@pytest.fixture(scope="module")
def questions(bank):
    """One question of each kind: MCQ-1, MCQ-n, numeric open, other open (English), and a French MCQ-1."""
    def first(pred):
        return next(q for q in bank.questions if pred(q))

    english = lambda q: bank.language_of(q) == "English"  # noqa: E731
    return [first(lambda q: english(q) and q.question_type == "mcq" and not q.multiple_correct_answers),
            first(lambda q: english(q) and q.question_type == "mcq" and q.multiple_correct_answers),
            first(lambda q: english(q) and q.question_type == "open_answer" and q.numeric_answer is not None),
            first(lambda q: english(q) and q.question_type == "open_answer" and q.numeric_answer is None),
            first(lambda q: not english(q) and q.question_type == "mcq" and not q.multiple_correct_answers)]


def _expected_calls(q, strategy):
    return CALLS[strategy][0 if q.question_type == "mcq" else 1]


class Recording(Backend):
    """Wraps a backend and records the size of every chat_batch call."""

    def __init__(self, inner, batch_size=1000):
        self.inner, self.batch_size, self.batches = inner, batch_size, []
        self.name, self.model = inner.name, inner.model

    def identity(self):
        return self.inner.identity()

    def chat_batch(self, batch, **decoding):
        self.batches.append(len(batch))
        return self.inner.chat_batch(batch, **decoding)


# --------------------------------------------------------------------------- run_study with the scripted backend

def test_rows_calls_and_a_second_run_served_from_the_cache(bank, questions, tmp_path):
    backend = ScriptedBackend.from_bank(bank, seed=1)
    rows = run_study(questions, STRATEGIES, backend, tmp_path, bank=bank, progress=False)
    assert len(rows) == len(questions) * len(STRATEGIES)
    assert [(r["question_id"], r["strategy"]) for r in rows] == [(q.question_id, s) for q in questions
                                                                 for s in STRATEGIES]
    for r in rows:
        assert SPEC_KEYS <= set(r) and set(r) == set(ROW_KEYS)
        q = next(q for q in questions if q.question_id == r["question_id"])
        assert r["calls"] == _expected_calls(q, r["strategy"]) and r["cached_calls"] == 0
        assert r["language"] == bank.language_of(q) and r["program"] == bank.course_of(q).course_program
        if r["question_type"] == "mcq":
            assert r["grade"] in (0.0, 1.0) and r["parseable"] == (r["parsed"] is not None)
    sent = backend.calls
    assert sent == sum(r["calls"] for r in rows) == len(ResponseCache(tmp_path))
    again = run_study(questions, STRATEGIES, backend, tmp_path, bank=bank, progress=False)
    assert backend.calls == sent  # nothing sent twice
    assert all(r["cached_calls"] == r["calls"] for r in again)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "cached_calls"} for r in rs]  # noqa: E731
    assert strip(again) == strip(rows)


def test_each_round_is_one_batch_per_backend(bank, questions, tmp_path):
    backend = Recording(ScriptedBackend.from_bank(bank))
    grader = Recording(ScriptedBackend(accuracy=0.5, malformed_rate=0.5))
    rows = run_study(questions, STRATEGIES, backend, tmp_path, bank=bank, grader=grader, progress=False)
    most = max(r["calls"] for r in rows)
    assert backend.batches[0] == len(rows)  # round 1: every pair's first call in ONE chat_batch
    assert len(backend.batches) == most and sum(backend.batches) == sum(r["calls"] for r in rows)
    assert len(grader.batches) <= 2  # the grades, then the retries of unreadable grades
    small = Recording(ScriptedBackend.from_bank(bank), batch_size=7)
    run_study(questions, STRATEGIES, small, tmp_path / "b", bank=bank, progress=False)
    assert max(small.batches) == 7 and small.batches[0] == 7  # groups of batch_size, each cached on return


def test_perfect_scripted_model_gets_full_marks_and_malformed_gets_none(bank, questions, tmp_path):
    perfect = ScriptedBackend.from_bank(bank, accuracy=1.0, malformed_rate=0.0)
    grader = ScriptedBackend(accuracy=1.0, malformed_rate=0.0)
    rows = run_study(questions, STRATEGIES, perfect, tmp_path / "a", bank=bank, grader=grader, progress=False)
    for r in rows:
        assert r["grade"] == 1.0, (r["strategy"], r["question_id"], r["raw_answer"])
        if r["question_type"] == "mcq":
            assert r["parseable"]
        else:
            assert r["grade_label"] == "correct" and r["grader_calls"] == 1
        q = next(q for q in questions if q.question_id == r["question_id"])
        assert r["numeric_ok"] is (True if q.numeric_answer is not None else None)
    broken = ScriptedBackend.from_bank(bank, accuracy=1.0, malformed_rate=1.0)
    rows = run_study(questions, STRATEGIES, broken, tmp_path / "b", bank=bank, progress=False)
    mcq = [r for r in rows if r["question_type"] == "mcq"]
    assert all(not r["parseable"] and r["parsed"] is None and r["grade"] == 0.0 for r in mcq)
    assert set(unparseable_rate(rows).values()) == {1.0}
    no_grader = [r for r in rows if r["question_type"] == "open_answer"]
    for r in no_grader:  # numeric: graded by the checker (no number = wrong); other open answers: ungraded
        q = next(q for q in questions if q.question_id == r["question_id"])
        assert r["grade"] == (0.0 if q.numeric_answer is not None else None)


def test_grader_retry_and_custom_points(bank, questions, tmp_path):
    class Stubborn(Backend):
        name, model = "stubborn", "stubborn"

        def chat(self, messages, **decoding):
            return "almost correct" if messages[-1]["role"] == "user" and len(messages) > 2 else "hmm, hard to say"

    open_q = [q for q in questions if q.question_type == "open_answer"]
    points = {"correct": 1.0, "almost_correct": 0.5, "mostly_incorrect": 0.2, "wrong": 0.0}
    rows = run_study(open_q, ["zero_shot"], ScriptedBackend.from_bank(bank), tmp_path, bank=bank, grader=Stubborn(),
                     points=points, progress=False)
    for r in rows:
        assert r["grade_label"] == "almost_correct" and r["grade"] == 0.5 and r["grader_calls"] == 2
    assert set(GRADE_LABELS) == set(points)


def test_a_plain_list_draws_the_demonstrations_from_the_project_bank(bank, questions, tmp_path):
    """Issue 11: run_study(questions, strategies, backend, cache_dir) with a plain list and one_shot/cot_four_shot."""
    backend = ScriptedBackend.from_bank(bank, seed=2)
    plain = run_study(list(questions), ["one_shot", "cot_four_shot"], backend, tmp_path / "a", progress=False)
    given = run_study(list(questions), ["one_shot", "cot_four_shot"], backend, tmp_path / "b", bank=bank,
                      progress=False)
    assert plain == given  # the same demonstrations (and so the same messages, replies and rows) as with bank=...
    four_shot = ResponseCache(tmp_path / "a")
    demos = [r for r in (four_shot.get(k) for k in four_shot.keys()) if r["strategy"] == "cot_four_shot"]
    assert len(demos) == len(questions)


def test_max_tokens_per_strategy_is_in_the_decoding_and_the_rows(bank, questions, tmp_path):
    backend = Recording(ScriptedBackend.from_bank(bank), batch_size=100)
    caps = {"zero_shot": 64, "cot_zero_shot": 256}
    rows = run_study(questions, ["zero_shot", "cot_zero_shot"], backend, tmp_path, bank=bank, max_tokens=caps,
                     progress=False)
    assert {r["strategy"]: r["max_tokens"] for r in rows} == caps
    assert len(backend.batches) == 2  # one batch per decoding: the caps are not mixed in one generate call
    cache = ResponseCache(tmp_path)
    assert {cache.get(k)["decoding"]["max_tokens"] for k in cache.keys()} == {64, 256}
    again = run_study(questions, ["zero_shot"], backend, tmp_path, bank=bank, max_tokens=64, progress=False)
    assert all(r["cached_calls"] == r["calls"] for r in again)
    with pytest.raises(ValueError, match="no cap"):
        run_study(questions, ["metacog"], backend, tmp_path, bank=bank, max_tokens=caps, progress=False)


def test_clear_errors(bank, questions, tmp_path):
    backend = ScriptedBackend()
    with pytest.raises(ValueError, match="unknown strateg"):
        run_study(questions, ["zero_shot", "chain_of_ducks"], backend, tmp_path, bank=bank, progress=False)
    rows = run_study(questions[:1], ["zero_shot"], backend, tmp_path, progress=False)  # courses: project bank
    assert rows[0]["course_id"] == questions[0].course_id
    sub = bank.select(course_ids=[questions[0].course_id])
    assert len(run_study(sub, ["one_shot"], backend, tmp_path, progress=False)) == len(sub)  # a Bank is its own


def test_decoding_is_part_of_the_key(bank, questions, tmp_path):
    backend = ScriptedBackend.from_bank(bank)
    run_study(questions[:2], ["zero_shot"], backend, tmp_path, bank=bank, progress=False)
    rows = run_study(questions[:2], ["zero_shot"], backend, tmp_path, bank=bank, decoding=PAPER_DECODING,
                     progress=False)
    assert all(r["cached_calls"] == 0 for r in rows) and len(ResponseCache(tmp_path)) == 4


# --------------------------------------------------------------------------- against a loopback HTTP stub

@pytest.fixture
def stub(bank, chat_stub):
    """The loopback server of tests/conftest.py, answering like the scripted stand-in."""
    scripted = ScriptedBackend.from_bank(bank, seed=3)
    chat_stub.reply_fn = scripted.chat
    return chat_stub


@pytest.fixture
def key(monkeypatch):
    value = f"sk-unique-{uuid.uuid4().hex}"
    monkeypatch.setenv("LIONSNB_STUDY_KEY", value)
    return value


def _http(stub, **kw):
    backend = OpenAICompatibleBackend(stub.base_url, "stub", api_key_env="LIONSNB_STUDY_KEY", max_retries=1, **kw)
    backend.sleep = lambda seconds: None
    return backend


def test_interrupted_run_resumes_without_repeating_a_finished_call(bank, questions, stub, key, tmp_path):
    strategies = ["zero_shot", "cot_zero_shot", "self_refine", "expert_prompting"]
    total = sum(_expected_calls(q, s) for q in questions for s in strategies)
    stub.die_after = 13
    with pytest.raises(EndpointUnreachableError):
        run_study(questions, strategies, _http(stub), tmp_path / "cache", bank=bank, progress=False)
    assert len(ResponseCache(tmp_path / "cache")) == 13  # every finished call was cached
    stub.die_after, before = None, stub.ok
    rows = run_study(questions, strategies, _http(stub), tmp_path / "cache", bank=bank, progress=False)
    assert stub.ok - before == total - 13  # the rest, and nothing twice
    assert sum(r["cached_calls"] for r in rows) == 13 and sum(r["calls"] for r in rows) == total
    before = stub.hits
    again = run_study(questions, strategies, _http(stub), tmp_path / "cache", bank=bank, progress=False)
    assert stub.hits == before
    fresh = run_study(questions, strategies, _http(stub), tmp_path / "fresh", bank=bank, progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "cached_calls"} for r in rs]  # noqa: E731
    assert strip(rows) == strip(again) == strip(fresh)  # resumed = uninterrupted


def test_the_api_key_appears_in_no_written_file_and_no_error(bank, questions, stub, key, tmp_path):
    stub.echo_auth = True  # a server that echoes the Authorization header into its replies
    http = _http(stub)
    rows = run_study(questions, ["zero_shot", "self_refine"], http, tmp_path / "cache", bank=bank, grader=http,
                     progress=False)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    blobs = [p.read_bytes() for p in files]
    assert not any(key.encode() in b for b in blobs)
    assert any(b"[redacted]" in b for b in blobs)  # the echo happened and was scrubbed
    stub.status = 401
    with pytest.raises(HTTPStatusError) as info:
        run_study(questions, ["metacog"], http, tmp_path / "cache", bank=bank, progress=False)
    assert key not in str(info.value) and "401" in str(info.value) and "LIONSNB_STUDY_KEY" in str(info.value)
    assert not any(key.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- aggregation

def synthetic_rows(seed=0, n_questions=40, strategies=STRATEGIES, open_share=0.3):
    rng = random.Random(seed)
    programs = ["CS", "Physics", "Math"]
    rows = []
    for i in range(n_questions):
        course = f"C{i % 7}"
        program = programs[(i % 7) % 3]
        kind = "open_answer" if rng.random() < open_share else "mcq"
        gold = [rng.randrange(4)]
        p = rng.random()
        for s in strategies:
            row = {"question_id": f"q{i}", "course_id": course, "program": program, "year": "bachelor",
                   "language": "English" if i % 4 else "French", "question_type": kind, "multiple": False,
                   "bloom": ["remember", "apply", None][i % 3], "difficulty": ["easy", "hard"][i % 2],
                   "strategy": s, "raw_answer": "", "grade_label": None, "numeric_ok": None, "calls": 1,
                   "cached_calls": 0}
            if kind == "mcq":
                if rng.random() < 0.1:
                    row.update(parsed=None, parseable=False, grade=0.0)
                else:
                    parsed = gold if rng.random() < p else [rng.choice([k for k in range(4) if k != gold[0]])]
                    row.update(parsed=parsed, parseable=True, grade=float(parsed == gold))
            else:
                grade = rng.choice([0.0, 0.25, 0.75, 1.0, None])
                row.update(parsed=None, parseable=True, grade=grade)
            rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_aggregation_identities(seed):
    rows = synthetic_rows(seed)
    mean, anyq, major = (question_scores(rows, how) for how in ("mean", "any", "majority"))
    assert set(mean) == set(anyq) == set(major)
    for q in mean:
        assert mean[q] <= anyq[q] + 1e-12
        assert major[q] <= anyq[q] + 1e-12  # majority picks one of the strategies' grades
    binary = [r for r in rows if r["question_type"] == "mcq"]
    for q, v in question_scores(binary, "majority").items():
        assert v in (0.0, 1.0)
    s = summary(rows)
    assert s["mean"] <= s["any"] and s["majority"] <= s["any"]
    thresholds = [i / 20 for i in range(21)]
    for how in ("mean", "any", "majority"):
        for program, rates in pass_rates(rows, thresholds, how).items():
            assert all(a >= b for a, b in zip(rates, rates[1:])), (how, program)
            assert all(0 <= x <= 1 for x in rates)
    assert set(pass_rates(rows, [0.5])) == {"CS", "Physics", "Math"}
    hand = {}
    for r in rows:
        if r["grade"] is not None:
            hand.setdefault(r["strategy"], []).append(r["grade"])
    acc = accuracy_by_strategy(rows)
    assert list(acc) == list(STRATEGIES)
    for strategy, grades in hand.items():
        assert acc[strategy] == pytest.approx(sum(grades) / len(grades))


def test_majority_vote_and_ties_by_strategy_order():
    def row(strategy, parsed, grade, q="q"):
        return {"question_id": q, "course_id": "C", "program": "P", "question_type": "mcq", "strategy": strategy,
                "parsed": parsed, "parseable": parsed is not None, "grade": grade}

    rows = [row("zero_shot", [1], 0.0), row("one_shot", [2], 1.0), row("metacog", [2], 1.0),
            row("cot_zero_shot", None, 0.0)]
    assert question_scores(rows, "majority") == {"q": 1.0}  # [2] twice beats [1] once; unparseable ignored
    tie = [row("metacog", [2], 1.0), row("zero_shot", [1], 0.0)]  # 1-1: zero_shot comes first in STRATEGIES
    assert question_scores(tie, "majority") == {"q": 0.0}
    tie = [row("zero_shot", [2], 1.0), row("metacog", [1], 0.0)]
    assert question_scores(tie, "majority") == {"q": 1.0}
    assert question_scores([row("zero_shot", None, 0.0)], "majority") == {"q": 0.0}
    assert question_scores(rows, "mean") == {"q": 0.5} and question_scores(rows, "any") == {"q": 1.0}
    with pytest.raises(ValueError):
        question_scores(rows, "median")


def test_breakdowns_course_scores_and_pass_rates_by_hand():
    def row(q, course, program, kind, strategy, grade, parseable=True):
        return {"question_id": q, "course_id": course, "program": program, "question_type": kind,
                "language": "English", "bloom": None, "difficulty": "easy", "strategy": strategy, "grade": grade,
                "parsed": [0] if parseable else None, "parseable": parseable}

    rows = [row("a", "C1", "P", "mcq", "zero_shot", 1.0), row("a", "C1", "P", "mcq", "metacog", 0.0, False),
            row("b", "C1", "P", "open_answer", "zero_shot", 0.75), row("b", "C1", "P", "open_answer", "metacog", 0.25),
            row("c", "C2", "P", "mcq", "zero_shot", 0.0), row("c", "C2", "P", "mcq", "metacog", 0.0),
            row("d", "C3", "Q", "open_answer", "zero_shot", None)]
    assert question_scores(rows) == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert breakdown(rows, "question_type") == {"mcq": 0.25, "open_answer": 0.5}
    assert breakdown(rows, "question_type", how="any") == {"mcq": 0.5, "open_answer": 0.75}
    assert breakdown(rows, "bloom") == {None: pytest.approx(1 / 3)}
    assert breakdown(rows, "strategy") == accuracy_by_strategy(rows) == {"zero_shot": pytest.approx(1.75 / 3),
                                                                         "metacog": pytest.approx(0.25 / 3)}
    assert course_scores(rows) == {"C1": 0.5, "C2": 0.0}  # C3 has no graded row
    assert course_scores(rows, "any", mcq_weight=0.8) == {"C1": pytest.approx(0.8 * 1.0 + 0.2 * 0.75), "C2": 0.0}
    assert pass_rates(rows, [0.0, 0.5, 0.51]) == {"P": [1.0, 0.5, 0.0]}
    assert unparseable_rate(rows) == {"zero_shot": 0.0, "metacog": 0.5}
    s = summary(rows)
    assert s["mean"] == pytest.approx(1 / 3) and s["any"] == pytest.approx((1 + 0.75 + 0) / 3)
    assert s["n_questions"] == 3 and s["n_rows"] == 7 and s["n_graded"] == 6
