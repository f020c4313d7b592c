"""The prompting series' shared notebook plumbing: the assistant knobs and make_backend (one version for the three
notebooks), the response-cache folder (LIONSNB_NO_CACHE honoured), reply caps and cut/looped replies, the synthetic
comparison (written without a per-file sync), and the views (replies table, figures with nothing to show)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from lionsnb.prompting import assistant as a
from lionsnb.prompting import synthetic, views
from lionsnb.prompting.backends import LocalHFBackend, MissingAPIKeyError, OpenAICompatibleBackend, ScriptedBackend
from lionsnb.prompting.bank import load_bank
from lionsnb.prompting.strategies import REASONING, STRATEGIES


@pytest.fixture(scope="module")
def bank():
    return load_bank()


def ctx_for(tmp_path, enabled=True, **knobs):
    values = {"backend": "local", "model": "smollm2", "decoding": "deterministic", "base_url": "http://127.0.0.1:9/v1",
              "endpoint_model": "m", "api_key_env": "OPENAI_API_KEY", **knobs}
    sizes = SimpleNamespace(direct_tokens=64, reasoning_tokens=200, batch_size=4, padded_tokens=512,
                            endpoint_max_tokens=300)
    return SimpleNamespace(knobs=SimpleNamespace(**values), sizes=sizes, seed=3, device=SimpleNamespace(type="cpu"),
                           cache=SimpleNamespace(root=tmp_path, enabled=enabled),
                           method=SimpleNamespace(name="prompting.test"))


def test_the_three_notebooks_share_one_set_of_assistant_knobs():
    from lionsnb.prompting import nb01_strategies, nb02_study, nb03_your_course

    names = set(a.assistant_knobs())
    assert names == {"backend", "model", "decoding", "base_url", "endpoint_model", "api_key_env"}
    for module in (nb01_strategies, nb02_study, nb03_your_course):
        assert names <= set(module.SPEC.knobs)
        assert all(module.SPEC.knobs[k] == a.assistant_knobs()[k] for k in names)


def test_make_backend_kinds(bank, tmp_path, monkeypatch):
    local = a.make_backend(ctx_for(tmp_path), bank)
    assert isinstance(local, LocalHFBackend) and local._lm is None  # the model loads on its first call
    assert local.max_new_tokens == 200 and local.batch_size == 4 and local.padded_tokens == 512 and local.seed == 3
    assert local.model_id_or_path is None  # "smollm2": the offline SmolLM2
    other = a.make_backend(ctx_for(tmp_path, model="HuggingFaceTB/SmolLM2-360M-Instruct"), bank)
    assert other.model_id_or_path == "HuggingFaceTB/SmolLM2-360M-Instruct"
    scripted = a.make_backend(ctx_for(tmp_path, backend="scripted"), bank)
    assert isinstance(scripted, ScriptedBackend) and scripted.accuracy == a.SCRIPTED_ACCURACY
    monkeypatch.delenv("LIONSNB_TEST_NO_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="LIONSNB_TEST_NO_KEY"):
        a.make_backend(ctx_for(tmp_path, backend="endpoint", api_key_env="LIONSNB_TEST_NO_KEY"), bank)
    monkeypatch.setenv("LIONSNB_TEST_KEY", "sk-secret-value")
    remote = a.make_backend(ctx_for(tmp_path, backend="endpoint", api_key_env="LIONSNB_TEST_KEY"), bank)
    assert isinstance(remote, OpenAICompatibleBackend) and remote.max_tokens == 300
    assert "sk-secret-value" not in a.describe_backend(remote) + repr(remote)
    keyless = a.make_backend(ctx_for(tmp_path, backend="endpoint", api_key_env=""), bank)
    assert keyless.api_key_env is None
    with pytest.raises(ValueError, match="BACKEND"):
        a.make_backend(ctx_for(tmp_path, backend="gpt"), bank)
    assert a.decoding_settings("paper")["temperature"] == 0.8
    assert a.decoding_settings("deterministic") == {"temperature": 0.0}
    with pytest.raises(ValueError):
        a.decoding_settings("greedy")


def test_reply_caps_give_the_reasoning_strategies_room(tmp_path):
    caps = a.reply_caps(ctx_for(tmp_path).sizes)
    assert set(caps) == set(STRATEGIES)
    assert all(caps[s] == (200 if s in REASONING else 64) for s in STRATEGIES)
    assert a.run_caps(ctx_for(tmp_path)) == caps
    assert a.run_caps(ctx_for(tmp_path, backend="endpoint")) is None  # an endpoint keeps its own cap
    rows = a.settings_rows(ScriptedBackend(), {"temperature": 0.0}, caps, STRATEGIES)
    assert rows["reply cap, direct answers (tokens)"] == 64 and rows["reply cap, reasoning strategies (tokens)"] == 200


@pytest.mark.parametrize("enabled", [True, False])
def test_response_dir_honours_lionsnb_no_cache(tmp_path, enabled):
    """Issue 11: one make_backend/response_dir for every notebook, and the one that honours LIONSNB_NO_CACHE."""
    path = a.response_dir(ctx_for(tmp_path, enabled=enabled))
    assert path.is_dir()
    if enabled:
        assert path == tmp_path / "prompting.test" / "responses"
    else:
        assert tmp_path not in path.parents  # a fresh temporary folder: nothing read from or left in the cache
        assert a.response_dir(ctx_for(tmp_path, enabled=False)) != path


def test_the_real_setup_gives_a_notebook_folder(tmp_path, monkeypatch):
    import lionsnb.prompting.nb02_study as m

    monkeypatch.setenv("LIONSNB_CACHE", str(tmp_path))
    ctx = m.setup("smoke")
    assert a.response_dir(ctx).parts[-2:] == ("prompting.nb02_study", "responses")
    monkeypatch.setenv("LIONSNB_NO_CACHE", "1")
    assert tmp_path not in a.response_dir(m.setup("smoke")).parents


class Words:
    """A tokenizer that counts words (enough for the cut and loop flags)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_mark_truncated_and_the_loop_flag():
    rows = [{"raw_answer": "a b c d", "max_tokens": 4}, {"raw_answer": "a b", "max_tokens": 4},
            {"raw_answer": "", "max_tokens": 4}, {"raw_answer": "go on " * 20, "max_tokens": 100},
            {"raw_answer": "a b", "max_tokens": None}]
    marked = a.mark_truncated(rows, Words())
    assert [r["truncated"] for r in marked] == [True, False, False, False, None]
    assert [r["looped"] for r in marked] == [False, False, False, True, False]
    assert [r["reply_tokens"] for r in marked] == [4, 2, 0, 40, 2]
    assert [views.tokens_of(r) for r in marked[:4]] == ["4 of 4 (cut)", "2 of 4", "0 of 4", "40 of 100 (stopped: loop)"]
    assert all(r["truncated"] is None for r in a.mark_truncated(rows, None))
    assert "raw_answer" in rows[0] and "truncated" not in rows[0]  # copies, the input rows are unchanged


def test_generation_note(tmp_path):
    assert a.generation_note(ScriptedBackend()).startswith("no generation")
    local = LocalHFBackend("tiny")
    assert a.generation_note(local).startswith("no generation")
    local.stats.update(prompts=3, batches=2, generated_tokens=30, seconds=2.0, prompt_tokens=10,
                       padded_prompt_tokens=12)
    assert "3 prompts in 2 generate call(s)" in a.generation_note(local) and "15.0 tokens/s" in a.generation_note(local)


def test_synthetic_rows_need_no_per_file_sync(bank, monkeypatch):
    """The scripted stand-in's replies are cached without an fsync each (the /dev/shm workaround is gone)."""
    import os

    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    rows = synthetic.scripted_rows(bank, 0.6, n_questions=13, strategies=["zero_shot", "self_refine"])
    assert len(rows) == 26 and calls == []
    study = synthetic.scripted_study(bank, (0.3, 0.9), n_questions=13, strategies=["zero_shot"])
    assert list(study) == [0.3, 0.9] and all(len(r) == 13 for r in study.values())


def _row(grade, question_type="mcq", parsed=None, strategy="zero_shot"):
    return {"question_id": "ME-251-01", "strategy": strategy, "question_type": question_type, "parsed": parsed,
            "raw_answer": "1. 25%\nmore", "grade": grade, "numeric_ok": None, "grade_label": None}


def test_nothing_to_show_and_the_replies_instead(bank, capsys):
    import matplotlib.pyplot as plt

    q = bank.question("ME-251-01")
    assert views.nothing_to_show([]) == "this run has no answer"
    assert "could be graded" in views.nothing_to_show([_row(None, "open_answer")])
    assert "scored 0" in views.nothing_to_show([_row(0.0), _row(0.0)])
    assert views.nothing_to_show([_row(0.0), _row(1.0, parsed=[1])]) == ""
    drawn = []
    shown = views.figure_or_replies(lambda fig, **kw: drawn.append(kw), (4, 3), replies=[_row(0.0, parsed=[0])],
                                    questions=[q], extra=1)
    assert drawn == [] and "Nothing to plot" in capsys.readouterr().out
    assert shown.column("reply") == ["1. 25% more"] and shown.column("read as") == ["1"]
    assert shown.column("gold") == ["2"]  # in the strategy's labels
    assert views.figure_or_replies(lambda fig, **kw: drawn.append(kw), (4, 3), replies=[_row(1.0, parsed=[1])],
                                   extra=1) is None
    assert drawn == [{"extra": 1}]
    assert views.figure_or_replies(lambda fig, **kw: drawn.append(kw), (4, 3), replies=[_row(0.0)], reason="") is None
    plt.close("all")


def test_labels_and_read_as():
    assert views.labels_of((0, 2), "number") == "1, 3"
    assert views.labels_of((1,), "letter") == "B"
    assert views.labels_of((0, 3), "bracket") == "[A, D]"
    assert views.labels_of(None, "letter") == "-"
    assert views.read_as(_row(1.0, parsed=[1], strategy="tree_of_thought")) == "[B]"
    open_row = dict(_row(0.75, "open_answer"), numeric_ok=False, grade_label="almost_correct")
    assert views.read_as(open_row) == "number wrong; grader: almost correct"


@pytest.mark.llm
def test_tokenizer_for_the_offline_model_without_loading_it(monkeypatch, smollm2_models_dir):
    from lionsnb.lm import CONVERTED_NAME

    monkeypatch.setenv("LIONSNB_MODELS", str(smollm2_models_dir))
    if not (smollm2_models_dir / CONVERTED_NAME).is_dir():
        pytest.skip("the converted SmolLM2 copy is not there yet")
    backend = LocalHFBackend(None, max_new_tokens=4)
    tok = a.tokenizer_for(backend)
    assert tok is not None and backend._lm is None
    assert len(tok("The answer is 3.", add_special_tokens=False)["input_ids"]) > 2
