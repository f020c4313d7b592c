"""Backends of lionsnb.prompting: the OpenAI-compatible client against a loopback stub server (retries, backoff,
timeouts, 4xx, unreachable endpoint, key hygiene), the response cache, the scripted backend, the OpenAI penalty
logits processor and the local HF backend (left-padded batches equal one-at-a-time decoding)."""
from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from lionsnb.prompting.backends import (
    DETERMINISTIC,
    PAPER_DECODING,
    EndpointUnreachableError,
    HTTPStatusError,
    LocalHFBackend,
    MissingAPIKeyError,
    OpenAICompatibleBackend,
    ResponseCache,
    ScriptedBackend,
    normalize_decoding,
    repeating_tail,
    split_by_padding,
)
from lionsnb.prompting.grading import extract_grade_label, extract_mcq

# --------------------------------------------------------------------------- loopback stub server (tests/conftest.py)

@pytest.fixture
def stub(chat_stub):
    return chat_stub


@pytest.fixture
def key(monkeypatch):
    value = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("LIONSNB_TEST_KEY", value)
    return value


def _client(stub, **kw):
    backend = OpenAICompatibleBackend(stub.base_url, "stub-model", api_key_env="LIONSNB_TEST_KEY", **kw)
    backend.sleeps = []
    backend.sleep = backend.sleeps.append  # record the backoff instead of waiting
    return backend


MSG = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]


# --------------------------------------------------------------------------- HTTP backend

def test_request_carries_model_messages_decoding_and_bearer_key(stub, key):
    backend = _client(stub, max_tokens=32)
    assert backend.chat(MSG, **PAPER_DECODING) == "canned reply"
    body = stub.bodies[-1]
    assert body["model"] == "stub-model" and body["messages"] == MSG
    for name, value in PAPER_DECODING.items():
        assert body[name] == value
    assert body["max_tokens"] == 32
    assert stub.auth[-1] == f"Bearer {key}"
    backend.chat(MSG, max_tokens=5)
    assert stub.bodies[-1]["max_tokens"] == 5 and stub.bodies[-1]["temperature"] == 0.0


def test_retries_5xx_with_exponential_backoff_then_succeeds(stub, key):
    stub.fail_first = 3
    backend = _client(stub, max_retries=4, backoff=0.5)
    assert backend.chat(MSG) == "canned reply"
    assert stub.hits == 4
    assert len(backend.sleeps) == 3
    for attempt, delay in enumerate(backend.sleeps):  # backoff * 2**attempt * (1 + jitter in [0, 0.25))
        assert 0.5 * 2 ** attempt <= delay < 0.5 * 2 ** attempt * 1.25


def test_backoff_jitter_is_seeded(stub, key):
    delays = []
    for _ in range(2):
        stub.hits, stub.fail_first = 0, 2
        backend = _client(stub, backoff=1.0, seed=7)
        backend.chat(MSG)
        delays.append(backend.sleeps)
    assert delays[0] == delays[1]


def test_429_is_retried_and_retry_after_is_honoured(stub, key):
    stub.fail_first, stub.fail_status, stub.retry_after = 1, 429, "3"
    backend = _client(stub, backoff=0.1)
    assert backend.chat(MSG) == "canned reply"
    assert stub.hits == 2 and backend.sleeps == [3.0]


def test_gives_up_after_the_retries_with_a_clear_error(stub, key):
    stub.fail_first = 100
    backend = _client(stub, max_retries=2)
    with pytest.raises(EndpointUnreachableError, match=r"after 3 attempt\(s\).*HTTP 500"):
        backend.chat(MSG)
    assert stub.hits == 3 and len(backend.sleeps) == 2


def test_timeout_raises_a_clear_error_after_retries(stub, key):
    stub.delay = 0.6
    backend = _client(stub, timeout=0.15, max_retries=1)
    start = time.perf_counter()
    with pytest.raises(EndpointUnreachableError, match="timed out after 0.15 s") as info:
        backend.chat(MSG)
    assert time.perf_counter() - start < 1.2  # two attempts of 0.15 s, not two full server delays
    assert "2 attempt" in str(info.value)
    assert key not in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried_and_never_show_the_key(stub, key, status):
    stub.status = status
    stub.error_message = f"invalid api key {key} for this model"  # a server that echoes the key
    backend = _client(stub)
    with pytest.raises(HTTPStatusError) as info:
        backend.chat(MSG)
    assert stub.hits == 1 and backend.sleeps == []
    message = str(info.value)
    assert info.value.status == status and f"HTTP {status}" in message
    assert "invalid api key [redacted] for this model" in message and key not in message
    if status in (401, 403):
        assert "LIONSNB_TEST_KEY" in message


def test_unreachable_endpoint(key):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", "m", api_key_env="LIONSNB_TEST_KEY",
                                      max_retries=2, timeout=2)
    backend.sleeps = []
    backend.sleep = backend.sleeps.append
    with pytest.raises(EndpointUnreachableError, match=r"no reply from http://127.0.0.1:\d+/v1/chat/completions "
                                                       r"after 3 attempt\(s\): connection failed"):
        backend.chat(MSG)
    assert len(backend.sleeps) == 2


def test_missing_key_names_the_variable_and_none_means_no_auth(stub, monkeypatch):
    monkeypatch.delenv("LIONSNB_NOT_SET", raising=False)
    with pytest.raises(MissingAPIKeyError, match="LIONSNB_NOT_SET"):
        OpenAICompatibleBackend(stub.base_url, "m", api_key_env="LIONSNB_NOT_SET")
    backend = OpenAICompatibleBackend(stub.base_url, "m", api_key_env=None)
    assert backend.chat(MSG) == "canned reply" and stub.auth[-1] is None


def test_key_absent_from_repr_identity_state_and_replies(stub, key):
    backend = _client(stub)
    stub.echo_auth = True
    reply = backend.chat(MSG)
    assert "[redacted]" in reply and key not in reply
    assert key not in repr(backend) and key not in json.dumps(backend.identity())
    assert all(key not in repr(v) for v in vars(backend).values())
    assert "LIONSNB_TEST_KEY" in repr(backend)


def test_base_url_secrets_are_not_part_of_the_identity(key):
    backend = OpenAICompatibleBackend("https://user:pw@api.example.org/v1/?token=abc", "m",
                                      api_key_env="LIONSNB_TEST_KEY")
    ident = json.dumps(backend.identity())
    assert "pw" not in ident and "abc" not in ident and "api.example.org/v1" in ident
    assert "pw@" not in repr(backend)
    assert backend.url == "https://user:pw@api.example.org/v1/chat/completions?token=abc"


def test_concurrent_chat_batch_keeps_order(stub, key):
    stub.reply_fn = lambda messages: messages[-1]["content"].upper()
    backend = _client(stub, concurrency=4)
    batch = [[{"role": "user", "content": f"q{i}"}] for i in range(10)]
    assert backend.chat_batch(batch) == [f"Q{i}" for i in range(10)]
    assert backend.batch_size == 4


# --------------------------------------------------------------------------- decoding, cache

def test_normalize_decoding():
    assert normalize_decoding(DETERMINISTIC) == {"temperature": 0.0, "top_p": 1.0, "frequency_penalty": 0.0,
                                                 "presence_penalty": 0.0}
    assert normalize_decoding(PAPER_DECODING, max_tokens=7)["max_tokens"] == 7
    with pytest.raises(ValueError, match="unknown decoding"):
        normalize_decoding(temprature=0.3)
    with pytest.raises(ValueError):
        normalize_decoding(top_p=0)


def test_response_cache_key_and_atomic_records(tmp_path):
    args = ({"kind": "k", "model": "m"}, "zero_shot", DETERMINISTIC, "q1", MSG)
    key = ResponseCache.key(*args)
    assert key == ResponseCache.key(*args) and len(key) == 64
    assert ResponseCache.key(args[0], "zero_shot", {"temperature": 0}, "q1", MSG) == key  # canonical decoding
    variants = [({"kind": "k", "model": "m2"}, *args[1:]), (args[0], "one_shot", *args[2:]),
                (*args[:2], PAPER_DECODING, *args[3:]), (*args[:3], "q2", MSG),
                (*args[:4], MSG[:1] + [{"role": "user", "content": "Say hi!"}])]
    assert len({ResponseCache.key(*v) for v in variants} | {key}) == 6
    cache = ResponseCache(tmp_path / "c")
    assert cache.get(key) is None and key not in cache
    cache.put(key, {"reply": "hello", "identity": args[0], "strategy": "zero_shot", "question_id": "q1"})
    record = cache.get(key)
    assert record["reply"] == "hello" and record["question_id"] == "q1" and record["created"]
    assert key in cache and len(cache) == 1 and cache.keys() == [key]
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.json"]  # no temporary files left
    cache.path(key).write_text("{not json")
    assert cache.get(key) is None
    with pytest.raises(ValueError):
        cache.path("../../etc/passwd")


@pytest.mark.parametrize("sync", [True, False])
def test_response_cache_put_can_skip_the_per_file_sync(tmp_path, monkeypatch, sync):
    """Issue 11: the scripted stand-in's thousands of records need no fsync (they are instant to regenerate)."""
    import os

    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    cache = ResponseCache(tmp_path / "c")
    key = ResponseCache.key({"kind": "k"}, "zero_shot", DETERMINISTIC, "q1", MSG)
    cache.put(key, {"reply": "hi"}, sync=sync)
    assert cache.get(key)["reply"] == "hi" and len(calls) == int(sync)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.json"]  # still written atomically


# --------------------------------------------------------------------------- scripted backend

def _mcq(style, body="Which planet is largest?", options=("Mars", "Jupiter", "Venus", "Mercury"), french=False):
    if style == "number":
        listed = "\n".join(f"{i + 1}. {o}" for i, o in enumerate(options))
    elif style == "letter":
        listed = "\n".join(f"{chr(65 + i)}: {o}" for i, o in enumerate(options))
    else:
        listed = "\n".join(f"[{chr(65 + i)}]: {o}" for i, o in enumerate(options))
    lead = "Choisissez la réponse correcte à la question suivante, une seule est juste." if french else \
        "Pick the one correct option."
    return [{"role": "user", "content": f"{lead}\nQuestion: {body}\nOptions: {listed}"}]


def test_scripted_is_deterministic_per_seed_and_messages():
    a, b = ScriptedBackend(seed=3), ScriptedBackend(seed=3)
    prompts = [_mcq("letter", body=f"Question number {i}?") for i in range(30)]
    assert [a.chat(p) for p in prompts] == [b.chat(p) for p in prompts]
    assert a.chat_batch(prompts) == [a.chat(p) for p in prompts]
    other = ScriptedBackend(seed=4)
    assert [other.chat(p) for p in prompts] != [a.chat(p) for p in prompts]


@pytest.mark.parametrize("style", ["number", "letter", "bracket"])
@pytest.mark.parametrize("french", [False, True])
def test_scripted_answers_in_the_prompt_style(style, french):
    body = "Which planet is largest?"
    right = ScriptedBackend(accuracy=1.0, malformed_rate=0.0, answer_key={body: (1,)})
    wrong = ScriptedBackend(accuracy=0.0, malformed_rate=0.0, answer_key={body: (1,)})
    broken = ScriptedBackend(accuracy=1.0, malformed_rate=1.0, answer_key={body: (1,)})
    for seed in range(5):
        right.seed = wrong.seed = broken.seed = seed
        prompt = _mcq(style, body, french=french)
        assert extract_mcq(right.chat(prompt), 4, style, False) == (1,)
        got = extract_mcq(wrong.chat(prompt), 4, style, False)
        assert got is not None and got != (1,)
        assert extract_mcq(broken.chat(prompt), 4, style, False) is None
    if style == "bracket":
        assert ("La réponse finale est [B]" if french else "The final answer is [B]") in right.chat(prompt)


def test_scripted_multiple_answers_and_rates():
    body = "Which numbers are prime?"
    options = ("2", "9", "11", "15")
    backend = ScriptedBackend(accuracy=1.0, malformed_rate=0.0, answer_key={body: (0, 2)})
    assert extract_mcq(backend.chat(_mcq("bracket", body, options)), 4, "bracket", True) == (0, 2)
    backend = ScriptedBackend(seed=1, accuracy=0.6, malformed_rate=0.1)
    bodies = {f"Question {i}?": (i % 4,) for i in range(400)}
    backend.answer_key = bodies
    outcomes = [extract_mcq(backend.chat(_mcq("letter", b)), 4, "letter", False) for b in bodies]
    malformed = sum(o is None for o in outcomes) / len(outcomes)
    correct = sum(o == bodies[b] for o, b in zip(outcomes, bodies)) / len(outcomes)
    assert 0.05 < malformed < 0.15 and 0.47 < correct < 0.63  # 0.9 * 0.6 = 0.54 expected


def test_scripted_answers_the_auxiliary_calls():
    backend = ScriptedBackend(accuracy=1.0, malformed_rate=0.0)
    experts = json.loads(backend.chat([{"role": "user", "content": "Name the three experts best placed to answer, "
                                                                    "as JSON {\"1\": name, ...}."}]))
    assert sorted(experts) == ["1", "2", "3"]
    grade = backend.chat([{"role": "user", "content": "Grade it: correct, almost correct, mostly incorrect, wrong "
                                                      "answer. Question: x. Student answer: y."}])
    assert extract_grade_label(grade) == "correct"
    question = {"role": "user", "content": "Pick one.\nA: red\nB: blue"}
    review = [question, {"role": "assistant", "content": "A: red"},
              {"role": "user", "content": "Give feedback on the answer above."}]
    assert backend.chat(review).startswith("Feedback:")
    refine = review + [{"role": "assistant", "content": backend.chat(review)},
                       {"role": "user", "content": "Using this feedback, write an improved answer."}]
    assert extract_mcq(backend.chat(refine), 2, "letter", False) is not None  # answers, no second feedback
    assert not backend.chat([{"role": "user", "content": "A negative feedback loop is...?\nA: stable\nB: unstable"}]
                            ).startswith("Feedback")  # the word alone in a question does not trigger a review
    open_key = ScriptedBackend(accuracy=1.0, malformed_rate=0.0, answer_key={"How fast?": "12 m/s"})
    assert "12 m/s" in open_key.chat([{"role": "user", "content": "Solve: How fast?"}])


# --------------------------------------------------------------------------- penalties and the local model

def test_openai_penalty_processor_matches_a_hand_computation():
    torch = pytest.importorskip("torch")
    from lionsnb.prompting.backends import OpenAIPenaltyProcessor

    proc = OpenAIPenaltyProcessor(prompt_length=3, frequency_penalty=0.8, presence_penalty=0.5)
    ids = torch.tensor([[4, 4, 9, 5, 5, 7], [1, 2, 3, 0, 5, 0]])  # prompt tokens (first 3) are not counted
    scores = torch.arange(20, dtype=torch.float32).reshape(2, 10)
    out = proc(ids, scores.clone())
    expected = scores.clone()
    expected[0, 5] -= 0.8 * 2 + 0.5
    expected[0, 7] -= 0.8 * 1 + 0.5
    expected[1, 0] -= 0.8 * 2 + 0.5
    expected[1, 5] -= 0.8 * 1 + 0.5
    assert torch.allclose(out, expected)
    assert torch.equal(OpenAIPenaltyProcessor(6, 0.8, 0.5)(ids, scores.clone()), scores)  # nothing generated yet


def test_local_backend_left_padded_batches_equal_one_at_a_time(tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    backend = LocalHFBackend("tiny", max_new_tokens=8, batch_size=3, model_and_tokenizer=(model, tokenizer))
    prompts = [[{"role": "user", "content": "hi"}],
               [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a much longer question?"}],
               [{"role": "user", "content": "mid length one"}],
               [{"role": "user", "content": "x"}]]
    batched = backend.chat_batch(prompts)
    assert backend.stats["batches"] == 2 and backend.stats["prompts"] == 4  # batches of 3 + 1
    single = [backend.chat(p) for p in prompts]
    assert batched == single
    assert tokenizer.padding_side == "right"  # restored after the left-padded batch
    sampled = backend.chat_batch(prompts, **PAPER_DECODING)
    assert sampled == backend.chat_batch(prompts, **PAPER_DECODING)  # seeded
    assert backend.identity() == {"kind": "local_hf", "model": "tiny", "max_new_tokens": 8, "seed": 0,
                                  "stop_loops": True}
    assert len(backend.chat(prompts[0], max_tokens=2)) <= 2 * 8


@pytest.mark.parametrize("lengths,batch,budget", [([893, 598, 251, 229, 218, 196, 174, 172], 8, 1536),
                                                  ([10] * 20, 8, 10_000), ([5000, 10, 10], 8, 100),
                                                  ([3, 9, 1, 7, 7, 2], 2, 20)])
def test_split_by_padding_covers_every_prompt_within_the_budget(lengths, batch, budget):
    groups = split_by_padding(lengths, batch, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) <= batch
        longest = max(lengths[i] for i in g)
        assert lengths[g[0]] == longest                         # longest first
        assert len(g) == 1 or len(g) * longest <= budget        # only a lone prompt may exceed the budget
    for a, b in zip(groups, groups[1:]):  # greedy: the next group's first prompt did not fit into the previous one
        assert len(a) == batch or (len(a) + 1) * lengths[a[0]] > budget


def test_split_by_padding_example_saves_padding():
    lengths = [893, 598, 251, 229, 218, 196, 174, 172]
    groups = split_by_padding(lengths, 8, 1536)
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    assert padded < 0.5 * len(lengths) * max(lengths)


def test_padded_batches_keep_order_and_equal_one_at_a_time(tiny_chat_lm):
    model, tokenizer = tiny_chat_lm
    prompts = [[{"role": "user", "content": "x" * n}] for n in (3, 40, 5, 60, 4)]
    backend = LocalHFBackend("tiny", max_new_tokens=6, batch_size=4, padded_tokens=80,
                             model_and_tokenizer=(model, tokenizer))
    lengths = backend.prompt_lengths(prompts)
    assert backend.plan_batches(prompts) == split_by_padding(lengths, 4, 80)
    replies = backend.chat_batch(prompts)
    assert replies == [backend.chat(p) for p in prompts]  # the split changes no greedy reply, nor their order
    assert backend.stats["padded_prompt_tokens"] >= backend.stats["prompt_tokens"] > 0
    plain = LocalHFBackend("tiny", max_new_tokens=6, batch_size=4, model_and_tokenizer=(model, tokenizer))
    assert plain.identity() == backend.identity()  # the split is not part of the cache key
    with pytest.raises(ValueError, match="padded_tokens"):
        LocalHFBackend("tiny", padded_tokens=0)


@pytest.mark.parametrize("tokens,period", [
    ([1, 2, 3] * 10, 3), (list(range(12)) * 3, 12), ([5] * 30, 1), ([5] * 29, 0), ([1, 2] * 15, 2),
    ([1, 2] * 14, 0), (list(range(100)), 0), ([9, 9] + list(range(11)) * 3, 11), (list(range(41)) * 3, 0), ([], 0),
])
def test_repeating_tail_finds_verbatim_loops_only(tokens, period):
    assert repeating_tail(tokens) == period


def test_local_backend_stops_a_looping_reply(tiny_chat_lm):
    """A reply that repeats a span verbatim stops there (the rest would only repeat it), a row at a time."""
    import torch

    from lionsnb.prompting.backends import LOOP_SPAN, _loop_stop_class

    stop = _loop_stop_class()(prompt_length=2)
    loop = [0, 0] + [7, 8, 9] * 12
    fresh = [0, 0] + list(range(10, 46))
    done = stop(torch.tensor([loop, fresh]), None)
    assert done.tolist() == [True, False]
    short = stop(torch.tensor([[0, 0] + [7] * (LOOP_SPAN - 1)]), None)
    assert short.tolist() == [False]
    model, tokenizer = tiny_chat_lm
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "abc " * 5}]]
    on = LocalHFBackend("tiny", max_new_tokens=120, model_and_tokenizer=(model, tokenizer))
    off = LocalHFBackend("tiny", max_new_tokens=120, model_and_tokenizer=(model, tokenizer), stop_loops=False)
    for a, b in zip(on.chat_batch(prompts), off.chat_batch(prompts)):
        assert b.startswith(a)  # stopping only cuts a reply short, it never changes what came before
        ids = tokenizer(a, add_special_tokens=False)["input_ids"]
        assert len(a) == len(b) or repeating_tail(ids) or repeating_tail(ids[:-1])
    assert on.identity()["stop_loops"] and not off.identity()["stop_loops"]


@pytest.mark.llm
def test_offline_smollm2_backend_answers(monkeypatch, smollm2_models_dir):
    import os

    if os.environ.get("LIONSNB_MODELS") is None:  # reuse the shell's converted copy instead of the test's cache
        monkeypatch.setenv("LIONSNB_MODELS", str(smollm2_models_dir))
    backend = LocalHFBackend(max_new_tokens=4, batch_size=2)
    replies = backend.chat_batch([[{"role": "user", "content": "What is 2 + 2?"}],
                                  [{"role": "user", "content": "Name a colour."}]])
    assert len(replies) == 2 and all(isinstance(r, str) and r for r in replies)
    assert backend.stats["generated_tokens"] > 0
