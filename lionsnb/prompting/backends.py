"""Chat backends behind one interface, the decoding presets, and the on-disk response cache.

Every backend answers ``chat(messages, **decoding) -> str`` (and ``chat_batch`` for many prompts at once) and
describes itself with ``identity()``, the dictionary that the response cache key uses. ``identity()`` never contains
an API key.

* :class:`LocalHFBackend`: a local Hugging Face causal LM (None = SmolLM2-135M-Instruct, offline, through
  :func:`lionsnb.lm.load_causal_lm`): chat template, LEFT-padded batches, ``model.generate``; greedy at temperature 0,
  otherwise seeded sampling with top-p. HF has no OpenAI frequency/presence penalties (its ``repetition_penalty``
  divides logits by a factor and ignores counts), so :class:`OpenAIPenaltyProcessor` implements the OpenAI rule
  ``logit[j] -= frequency_penalty * count[j] + presence_penalty * [count[j] > 0]``, counts over the generated tokens.
  The processors run in the OpenAI order: penalties, then temperature, then top-p.
* :class:`OpenAICompatibleBackend`: any ``/chat/completions`` endpoint over plain ``urllib`` (no extra dependency);
  key read from an environment variable at each request (never stored on the object), retries with seeded
  exponential backoff on timeouts, connection errors, 429 and 5xx, no retry on other 4xx.
* :class:`ScriptedBackend`: offline, instant and deterministic; answers in the label style that the prompt uses,
  right with probability ``accuracy`` when it is given the answer key, malformed with probability
  ``malformed_rate``. For tests and as a smoke fallback.
* :class:`ResponseCache`: one JSON file per call, written atomically; the key is the sha256 of the canonical JSON of
  (backend identity, strategy, decoding, question id, messages).

Cross-backend caveat: the local model's decoding is not like for like with an API model's (different samplers,
penalties implemented here by us, a 135M model versus GPT-4); compare numbers within a backend.
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lionsnb.files import atomic_write_text

Messages = list[dict[str, str]]

#: the paper's sampling settings for every strategy (and for its GPT-4 grader)
PAPER_DECODING = {"temperature": 0.8, "top_p": 1.0, "frequency_penalty": 0.8, "presence_penalty": 0.5}
#: greedy decoding (reproducible; the default of :func:`lionsnb.prompting.study.run_study`)
DETERMINISTIC = {"temperature": 0.0}

_DECODING_DEFAULTS = {"temperature": 0.0, "top_p": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}
DECODING_KEYS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "max_tokens")


class BackendError(RuntimeError):
    """A backend could not produce a reply (the message says why; it never contains an API key)."""


class MissingAPIKeyError(BackendError):
    """The environment variable that should hold the API key is unset or empty."""


class EndpointUnreachableError(BackendError):
    """The endpoint did not answer (connection error, timeout, 429 or 5xx) even after the retries."""


class HTTPStatusError(BackendError):
    """The endpoint refused the request with a client error (4xx other than 429); not retried."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def normalize_decoding(decoding: dict | None = None, **more) -> dict:
    """The full decoding settings with defaults filled in (the form that cache keys use).

    Keys: temperature (0 = greedy), top_p, frequency_penalty, presence_penalty and optionally max_tokens.
    Unknown keys raise ``ValueError`` (a typo would otherwise silently change nothing).
    """
    given = {**(decoding or {}), **more}
    unknown = sorted(set(given) - set(DECODING_KEYS))
    if unknown:
        raise ValueError(f"unknown decoding settings {unknown}; known: {', '.join(DECODING_KEYS)}")
    out = {k: float(given.get(k, v)) for k, v in _DECODING_DEFAULTS.items()}
    if out["temperature"] < 0:
        raise ValueError("temperature must be >= 0 (0 = greedy)")
    if not 0 < out["top_p"] <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if given.get("max_tokens") is not None:
        out["max_tokens"] = int(given["max_tokens"])
    return out


def _check_messages(messages: Messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or \
                not isinstance(m.get("content"), str):
            raise ValueError(f"bad message {m!r}: need role system|user|assistant and a string content")


class Backend:
    """Base class: ``chat`` for one conversation, ``chat_batch`` for many, ``identity`` for the cache key."""

    name: str = "backend"
    model: str = ""
    #: how many conversations :func:`~lionsnb.prompting.study.run_study` hands to ``chat_batch`` at once
    batch_size: int = 1

    def chat(self, messages: Messages, **decoding) -> str:
        raise NotImplementedError

    def chat_batch(self, batch: Sequence[Messages], **decoding) -> list[str]:
        """Replies for several conversations (default: one ``chat`` after another)."""
        return [self.chat(messages, **decoding) for messages in batch]

    def identity(self) -> dict:
        """What the cache key uses: kind, model and the settings that change replies; NEVER an API key."""
        return {"kind": self.name, "model": self.model}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.identity().items() if k != 'kind')})"


# --------------------------------------------------------------------------- local Hugging Face model


@functools.cache
def _penalty_processor_class():
    from transformers import LogitsProcessor

    class _OpenAIPenaltyProcessor(LogitsProcessor):
        """OpenAI frequency/presence penalties as a HF logits processor.

        ``scores[b, j] -= frequency_penalty * c[b, j] + presence_penalty * (c[b, j] > 0)`` where ``c[b, j]`` counts
        token ``j`` among the tokens row ``b`` has generated so far (positions ``>= prompt_length``; the prompt is
        not counted). With left padding every row's prompt ends at the same position.
        """

        def __init__(self, prompt_length: int, frequency_penalty: float = 0.0, presence_penalty: float = 0.0):
            self.prompt_length = int(prompt_length)
            self.frequency_penalty = float(frequency_penalty)
            self.presence_penalty = float(presence_penalty)

        def __call__(self, input_ids, scores):
            import torch

            generated = input_ids[:, self.prompt_length:]
            if generated.shape[1] == 0 or (self.frequency_penalty == 0 and self.presence_penalty == 0):
                return scores
            counts = torch.zeros(scores.shape, dtype=scores.dtype, device=scores.device)
            counts.scatter_add_(1, generated, torch.ones(generated.shape, dtype=scores.dtype, device=scores.device))
            return scores - self.frequency_penalty * counts - self.presence_penalty * (counts > 0).to(scores.dtype)

    return _OpenAIPenaltyProcessor


def OpenAIPenaltyProcessor(prompt_length: int, frequency_penalty: float = 0.0, presence_penalty: float = 0.0):
    """A ``transformers.LogitsProcessor`` with the OpenAI penalty semantics (see the module docstring)."""
    return _penalty_processor_class()(prompt_length, frequency_penalty, presence_penalty)


#: a local reply stops once it ends in LOOP_REPEATS or more verbatim copies of one span of at most LOOP_MAX_PERIOD
#: tokens, the copies covering at least LOOP_SPAN tokens (greedy decoding of a small model often loops for ever)
LOOP_REPEATS = 3
LOOP_SPAN = 30
LOOP_MAX_PERIOD = 40


def repeating_tail(tokens: Sequence[int], *, repeats: int = LOOP_REPEATS, span: int = LOOP_SPAN,
                   max_period: int = LOOP_MAX_PERIOD) -> int:
    """The period ``p`` of the verbatim loop that ``tokens`` end in, else 0: the last ``k`` spans of ``p`` tokens
    are equal, with ``k >= repeats`` and ``k * p >= span`` (so a run of one token needs ``span`` copies, and a
    sentence of 12 tokens three)."""
    tokens = list(tokens)
    n = len(tokens)
    for p in range(1, max_period + 1):
        k = max(repeats, -(-span // p))
        if k * p > n:
            continue
        tail = tokens[n - p:]
        if all(tokens[n - (j + 1) * p:n - j * p] == tail for j in range(1, k)):
            return p
    return 0


@functools.cache
def _loop_stop_class():
    from transformers import StoppingCriteria

    class _LoopStop(StoppingCriteria):
        """Stops each row whose generated tokens end in a verbatim loop (:func:`repeating_tail`)."""

        def __init__(self, prompt_length: int):
            self.prompt_length = int(prompt_length)

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            generated = input_ids[:, self.prompt_length:]
            done = [False] * input_ids.shape[0]
            if generated.shape[1] >= LOOP_SPAN:
                window = LOOP_MAX_PERIOD * LOOP_REPEATS + LOOP_SPAN
                done = [bool(repeating_tail(row)) for row in generated[:, -window:].tolist()]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return _LoopStop


def _stable_int(*parts: Any) -> int:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


class LocalHFBackend(Backend):
    """A local causal LM through ``transformers`` (None = SmolLM2-135M-Instruct offline; loaded on first use).

    ``chat_batch`` splits the conversations into batches of ``batch_size``, left-pads each batch and calls
    ``model.generate`` once per batch (batching is what makes a CPU study affordable). Temperature 0 is greedy;
    otherwise sampling with top-p, seeded from ``seed`` and the batch's prompts (reproducible, and the global torch
    RNG is left untouched; a sampled reply depends on the batch it was generated in, and left padding may change
    a greedy reply in rare near-ties, which is one more reason to cache replies). ``max_tokens`` in the decoding
    settings caps ``max_new_tokens``.
    ``model_and_tokenizer`` (optional) injects an already loaded pair, e.g. a tiny test model.

    ``padded_tokens`` (optional) splits each batch by padded prompt length: the conversations are sorted by prompt
    tokens and sub-batches filled, longest first, while ``size x longest <= padded_tokens`` and ``size <=
    batch_size`` (a longer prompt goes alone; :func:`split_by_padding`). On a CPU the prefill of padding costs as
    much as that of real tokens, so one long four-shot prompt no longer makes seven short ones pay for its length.
    The split does not change the identity (nor, for greedy decoding, the replies up to rare near-ties).

    ``stop_loops`` (default on) ends a reply once it repeats one span of tokens verbatim (three copies or more,
    covering at least 30 tokens: :func:`repeating_tail`). Greedy decoding of a small model often falls into such a
    loop and would otherwise run to the cap, and the whole batch with it; the copies cut off would only have
    repeated the same text. It is part of the identity (replies made without it are cached apart).

    ``stats`` accumulates prompts, ``generate`` calls, prompt tokens (with padding), generated tokens and generation
    seconds (tokens/s = tokens / seconds).
    """

    name = "local_hf"

    def __init__(self, model_id_or_path: str | os.PathLike | None = None, *, max_new_tokens: int = 256,
                 batch_size: int = 8, device: Any = "cpu", seed: int = 0, model_and_tokenizer=None,
                 progress: bool = False, padded_tokens: int | None = None, stop_loops: bool = True):
        self.model_id_or_path = model_id_or_path
        self.stop_loops = bool(stop_loops)
        self.model = str(model_id_or_path) if model_id_or_path is not None else "SmolLM2-135M-Instruct (offline)"
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        if padded_tokens is not None and int(padded_tokens) < 1:
            raise ValueError("padded_tokens must be a positive number of tokens (or None: no split)")
        self.padded_tokens = None if padded_tokens is None else int(padded_tokens)
        self.device = device
        self.seed = int(seed)
        self.progress = progress
        self._lm = model_and_tokenizer
        self.stats = {"prompts": 0, "batches": 0, "generated_tokens": 0, "seconds": 0.0, "prompt_tokens": 0,
                      "padded_prompt_tokens": 0}

    def identity(self) -> dict:
        return {"kind": self.name, "model": self.model, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "stop_loops": self.stop_loops}

    def _load(self):
        if self._lm is None:
            from lionsnb.lm import load_causal_lm

            self._lm = load_causal_lm(self.model_id_or_path, device=self.device, progress=self.progress)
        model, tokenizer = self._lm
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    @property
    def tokenizer(self):
        return self._load()[1]

    def prompt_text(self, messages: Messages) -> str:
        """The chat-templated prompt (with the assistant header appended) that the model continues."""
        _check_messages(messages)
        _, tokenizer = self._load()
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def chat(self, messages: Messages, **decoding) -> str:
        return self.chat_batch([messages], **decoding)[0]

    def prompt_lengths(self, batch: Sequence[Messages]) -> list[int]:
        """Prompt tokens of each conversation (chat template included)."""
        tokenizer = self.tokenizer
        return [len(tokenizer(self.prompt_text(m), add_special_tokens=False)["input_ids"]) for m in batch]

    def plan_batches(self, batch: Sequence[Messages]) -> list[list[int]]:
        """Indices of the ``generate`` calls for ``batch``: chunks of ``batch_size`` in order, or, with
        ``padded_tokens``, the padding-aware split of :func:`split_by_padding`."""
        if self.padded_tokens is None:
            return [list(range(i, min(i + self.batch_size, len(batch)))) for i in range(0, len(batch),
                                                                                      self.batch_size)]
        return split_by_padding(self.prompt_lengths(batch), self.batch_size, self.padded_tokens)

    def chat_batch(self, batch: Sequence[Messages], **decoding) -> list[str]:
        settings = normalize_decoding(decoding)
        batch = list(batch)
        out: list[str | None] = [None] * len(batch)
        for group in self.plan_batches(batch):
            for i, reply in zip(group, self._generate([batch[i] for i in group], settings)):
                out[i] = reply
        return [r if r is not None else "" for r in out]

    def _generate(self, batch: list[Messages], settings: dict) -> list[str]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList, TemperatureLogitsWarper, TopPLogitsWarper

        model, tokenizer = self._load()
        texts = [self.prompt_text(m) for m in batch]
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tokenizer.padding_side = side
        input_ids = enc["input_ids"].to(model.device)
        attention_mask = enc["attention_mask"].to(model.device)
        prompt_length = input_ids.shape[1]
        self.stats["prompt_tokens"] += int(attention_mask.sum())
        self.stats["padded_prompt_tokens"] += int(attention_mask.numel())
        max_new = self.max_new_tokens if "max_tokens" not in settings else min(self.max_new_tokens,
                                                                               settings["max_tokens"])
        processors = LogitsProcessorList()
        if settings["frequency_penalty"] or settings["presence_penalty"]:
            processors.append(OpenAIPenaltyProcessor(prompt_length, settings["frequency_penalty"],
                                                     settings["presence_penalty"]))
        sample = settings["temperature"] > 0
        if sample:  # our own warpers after the penalties (HF would put its own warpers before custom processors)
            processors.append(TemperatureLogitsWarper(settings["temperature"]))
            if settings["top_p"] < 1.0:
                processors.append(TopPLogitsWarper(settings["top_p"]))
        eos = tokenizer.eos_token_id
        kwargs = dict(attention_mask=attention_mask, max_new_tokens=max_new, logits_processor=processors,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        if self.stop_loops:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_loop_stop_class()(prompt_length)])
        if sample:
            kwargs.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False)
        start = time.perf_counter()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(_stable_int(self.seed, texts, settings) % (2 ** 63))
            output = model.generate(input_ids, **kwargs)
        seconds = time.perf_counter() - start
        new = output[:, prompt_length:]
        replies, n_tokens = [], 0
        ends = {t for t in (eos, tokenizer.pad_token_id) if t is not None}
        for row in new.tolist():
            end = next((i for i, t in enumerate(row) if t in ends), None)  # after EOS (or a stop) come pad tokens
            if end is not None:
                row = row[:end + 1]
            n_tokens += len(row)
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
        self.stats["prompts"] += len(batch)
        self.stats["batches"] += 1
        self.stats["generated_tokens"] += n_tokens
        self.stats["seconds"] += seconds
        return replies

    def tokens_per_second(self) -> float:
        """Generated tokens per second of generation so far (``stats``)."""
        return self.stats["generated_tokens"] / self.stats["seconds"] if self.stats["seconds"] else float("nan")


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


# --------------------------------------------------------------------------- OpenAI-compatible HTTP endpoint


def _public_url(url: str) -> str:
    """``url`` without user info, query or fragment (so that no secret placed there reaches a key or a message)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class OpenAICompatibleBackend(Backend):
    """POST ``{base_url}/chat/completions`` (OpenAI wire format) with ``urllib``.

    * ``api_key_env``: the name of the environment variable holding the key, read at every request and sent as
      ``Authorization: Bearer ...``; ``None`` for local servers without authentication. The key is never stored on
      the object, never part of ``identity()``/``repr``, and redacted from error messages and replies.
    * ``timeout`` seconds per request; ``max_retries`` retries after the first attempt on timeouts, connection
      errors, HTTP 429 and 5xx, sleeping ``backoff * 2**attempt * (1 + jitter)`` (jitter in [0, 0.25), seeded by
      ``seed``; a numeric ``Retry-After`` header is honoured when longer, up to 60 s). Other 4xx raise
      :class:`HTTPStatusError` at once with the status and the server's message.
    * ``max_tokens``: default cap on the reply length (decoding ``max_tokens`` overrides it).
    * ``concurrency``: requests in flight at once inside ``chat_batch`` (threads); also the ``batch_size`` that
      ``run_study`` uses, so each finished group of requests is cached before the next one starts.
    * ``sleep``: the function used to wait between retries (tests replace it).
    """

    name = "openai_compatible"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", *, timeout: float = 60,
                 max_retries: int = 4, backoff: float = 1.0, max_tokens: int | None = None, concurrency: int = 1,
                 seed: int = 0):
        if not base_url or "://" not in base_url:
            raise ValueError(f"base_url must look like http(s)://host[:port]/v1, got {_public_url(str(base_url))!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_tokens = max_tokens
        self.concurrency = max(1, int(concurrency))
        self.batch_size = self.concurrency
        self.sleep = time.sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests_sent = 0
        self._api_key()  # fail early, with the variable's name, when the key is missing

    @property
    def url(self) -> str:
        """``{base_url}/chat/completions`` (a query string of the base URL, e.g. ``?api-version=...``, is kept)."""
        parts = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/chat/completions",
                                        parts.query, ""))

    def identity(self) -> dict:
        return {"kind": self.name, "base_url": _public_url(self.base_url), "model": self.model,
                "max_tokens": self.max_tokens}

    def __repr__(self) -> str:
        return (f"OpenAICompatibleBackend(base_url={_public_url(self.base_url)!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key.strip():
            raise MissingAPIKeyError(f"the environment variable {self.api_key_env} is not set (or empty): set it to "
                                     f"your API key before creating the backend, or pass api_key_env=None for a "
                                     f"local server without authentication")
        return key.strip()

    def _redact(self, text: str, key: str | None) -> str:
        if key:
            text = text.replace(key, "[redacted]")
        return text

    def payload(self, messages: Messages, **decoding) -> dict:
        """The JSON body sent for ``messages`` (no key in it)."""
        _check_messages(messages)
        settings = normalize_decoding(decoding)
        body = {"model": self.model, "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                **{k: settings[k] for k in _DECODING_DEFAULTS}}
        max_tokens = settings.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            body["max_tokens"] = int(max_tokens)
        return body

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        with self._lock:
            jitter = self._rng.random() * 0.25
        delay = self.backoff * (2 ** attempt) * (1 + jitter)
        try:
            if retry_after is not None:
                delay = max(delay, min(60.0, float(retry_after)))
        except ValueError:
            pass
        return delay

    def chat(self, messages: Messages, **decoding) -> str:
        body = json.dumps(self.payload(messages, **decoding)).encode("utf-8")
        key = self._api_key()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        where = _public_url(self.url)
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                with self._lock:
                    self.requests_sent += 1
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return self._parse(raw, key)
            except urllib.error.HTTPError as err:
                detail = self._redact(self._server_message(err), key)
                status = err.code
                err.close()
                if status == 429 or status >= 500:
                    last = f"HTTP {status}: {detail}"
                    retry_after = err.headers.get("Retry-After") if err.headers else None
                else:
                    hint = " (check the API key in $" + self.api_key_env + ")" if status in (401, 403) and \
                        self.api_key_env else ""
                    raise HTTPStatusError(f"{where} refused the request with HTTP {status}: {detail}{hint}",
                                          status) from None
            except TimeoutError:
                last = f"timed out after {self.timeout:g} s"
            except urllib.error.URLError as err:
                reason = err.reason
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    last = f"timed out after {self.timeout:g} s"
                else:
                    last = f"connection failed ({self._redact(str(reason), key)})"
            except (ConnectionError, OSError, http.client.HTTPException) as err:  # reset, refused, cut short...
                last = f"connection failed ({type(err).__name__}: {self._redact(str(err), key)})"
            if attempt + 1 < attempts:
                self.sleep(self._delay(attempt, retry_after))
        raise EndpointUnreachableError(f"no reply from {where} after {attempts} attempt(s): {last}. Is the server "
                                       f"running and the base URL right?")

    @staticmethod
    def _server_message(err: urllib.error.HTTPError) -> str:
        try:
            raw = err.read().decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the body is only a hint
            return err.reason if isinstance(err.reason, str) else ""
        try:
            data = json.loads(raw)
            msg = data.get("error", data) if isinstance(data, dict) else data
            if isinstance(msg, dict):
                msg = msg.get("message") or json.dumps(msg)
            return str(msg)[:500]
        except ValueError:
            return raw.strip()[:500] or str(err.reason)

    def _parse(self, raw: bytes, key: str | None) -> str:
        try:
            data = json.loads(raw.decode("utf-8"))
            content = data["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            snippet = self._redact(raw[:300].decode("utf-8", "replace"), key)
            raise BackendError(f"unexpected reply from {_public_url(self.url)} (no choices[0].message.content): "
                               f"{snippet!r}") from None
        return self._redact(content or "", key)

    def chat_batch(self, batch: Sequence[Messages], **decoding) -> list[str]:
        if self.concurrency == 1 or len(batch) <= 1:
            return [self.chat(m, **decoding) for m in batch]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda m: self.chat(m, **decoding), batch))


# --------------------------------------------------------------------------- scripted backend

_BRACKET = re.compile(r"(?:^|:)[ \t]*\[([A-Z])\]\s*:", re.M)
_LETTER = re.compile(r"(?:^|[\s:])([A-Z]):\s", re.M)
_NUMBER = re.compile(r"(?:^|:)[ \t]*(\d{1,2})\.\s+(?=\S)", re.M)
_FRENCH = re.compile(r"\b(?:réponses?|les|des|une|est|vous|votre|quel(?:le)?s?|laquelle|étapes?|ci-dessous|"
                     r"suivante)\b", re.I)
_GRADER = re.compile(r"mostly[\s_-]*incorrect|almost[\s_-]*correct|plutôt\s+incorrect|presque\s+correct", re.I)
_EXPERTS = re.compile(r"\bjson\b", re.I)
_FEEDBACK = re.compile(r"\bfeedback\b|\bcritique\b|\bretour\b|\bcommentaires?\b", re.I)
_BEST_EXPERT = re.compile(r"\bbest\b.*\bexpert|\bexpert\b.*\bbest\b|meilleure?\b.*\bexpert|\bexpert\b.*\bmeilleure?\b",
                          re.I | re.S)
_IMPROVE = re.compile(r"\bimprove|\bbetter\b|\brefine|\brevise|\bmeilleure?\b|\baméliorée?\b|\bcorrigée?\b", re.I)
_FEEDBACK_REPLY = ("Feedback:", "Retour :")


def _labels(style: str, n: int) -> list[str]:
    return [str(i + 1) for i in range(n)] if style == "number" else [chr(ord("A") + i) for i in range(n)]


def _options_in(text: str) -> tuple[str, list[str]] | None:
    """(style, option texts) of the options listed in ``text``, or None when there are none.

    Labels are accepted in sequence (A, B, C... or 1, 2, 3...); a label-like token inside an option's text that is
    not the next expected label ("Q_H / W: heat") is skipped. At least two options are needed.
    """
    for style, pattern in (("bracket", _BRACKET), ("letter", _LETTER), ("number", _NUMBER)):
        accepted = []
        for m in pattern.finditer(text):
            if m.group(1) == _labels(style, len(accepted) + 1)[-1]:
                accepted.append(m)
        if len(accepted) >= 2:
            options = []
            for i, m in enumerate(accepted):
                end = accepted[i + 1].start() if i + 1 < len(accepted) else len(text)
                chunk = text[m.end():end].strip()
                options.append(chunk.splitlines()[0].strip() if chunk else "")
            return style, options
    return None


class ScriptedBackend(Backend):
    """An offline, instant, deterministic stand-in for a model (tests, smoke runs).

    The reply depends only on (seed, messages) through a hash. It reads the label style of the options in the latest
    user turn that lists options (``1. text``, ``A: text`` or ``[A]: text``) and answers in that style (option lines
    for the number and letter styles, the bracketed "final answer" phrase for the bracket style; in French when the
    prompt is French). With ``answer_key`` (question body -> gold option indices for MCQ; a number or the gold text
    for open questions; :meth:`from_bank` builds it) it answers correctly with probability ``accuracy``; without it,
    it picks an option at random. With probability ``malformed_rate`` it replies with no usable answer. It also
    answers the expert-naming JSON call, a follow-up turn asking for feedback on its previous answer (self-refine),
    the "which expert was best" call and the grader prompt (a JSON object with a grade label).
    """

    name = "scripted"
    model = "scripted"
    batch_size = 64

    def __init__(self, seed: int = 0, accuracy: float = 0.6, malformed_rate: float = 0.1, *,
                 answer_key: dict[str, Any] | None = None):
        if not (0 <= accuracy <= 1 and 0 <= malformed_rate <= 1):
            raise ValueError("accuracy and malformed_rate must be probabilities")
        self.seed, self.accuracy, self.malformed_rate = int(seed), float(accuracy), float(malformed_rate)
        self.answer_key = dict(answer_key or {})
        self.calls = 0

    @property
    def answer_key(self) -> dict[str, Any]:
        return self._answer_key

    @answer_key.setter
    def answer_key(self, key: dict[str, Any] | None) -> None:
        self._answer_key = dict(key or {})
        blob = json.dumps(sorted((k, list(v) if isinstance(v, tuple) else v) for k, v in self._answer_key.items()),
                          ensure_ascii=False, default=str)
        self._key_digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16] if self._answer_key else None
        self._bodies = sorted(self._answer_key, key=len, reverse=True)  # longest first: the most specific match

    @classmethod
    def from_bank(cls, bank, **kwargs) -> ScriptedBackend:
        """A scripted backend that knows the gold answers of ``bank`` (or of a list of questions): option indices
        for MCQ, the numeric answer for numeric open questions, the gold text for the other open questions."""
        questions = getattr(bank, "questions", bank)
        key: dict[str, Any] = {}
        for q in questions:
            if q.question_type == "mcq":
                key[q.question_body] = tuple(q.mcq_answer_index)
            elif q.numeric_answer is not None:
                key[q.question_body] = float(q.numeric_answer)
            else:
                key[q.question_body] = q.question_answer
        return cls(answer_key=key, **kwargs)

    def identity(self) -> dict:
        return {"kind": self.name, "model": self.model, "seed": self.seed, "accuracy": self.accuracy,
                "malformed_rate": self.malformed_rate, "answer_key": self._key_digest}

    def _gold(self, text: str):
        for body in self._bodies:
            if body and body in text:
                return self._answer_key[body]
        return None

    def chat(self, messages: Messages, **decoding) -> str:
        _check_messages(messages)
        normalize_decoding(decoding)
        self.calls += 1
        rng = random.Random(_stable_int("scripted", self.seed, [[m["role"], m["content"]] for m in messages]))
        users = [m["content"] for m in messages if m["role"] == "user"]
        text = users[-1] if users else messages[-1]["content"]
        everything = "\n".join(m["content"] for m in messages)
        french = len(_FRENCH.findall(text + "\n" + (users[0] if users else ""))) >= 3
        malformed = rng.random() < self.malformed_rate
        right = rng.random() < self.accuracy
        if _GRADER.search(text):
            if malformed:
                return "The student answer is hard to assess."
            labels = ("almost_correct", "mostly_incorrect", "wrong")
            label = "correct" if right else rng.choice(labels)
            shown = {"correct": "correct", "almost_correct": "almost correct", "mostly_incorrect": "mostly incorrect",
                     "wrong": "wrong answer"}[label]
            return json.dumps({"accuracy": "checked against the gold answer", "completeness": "as required",
                               "grade": shown})
        if _EXPERTS.search(text) and re.search(r"expert", text, re.I):
            names = ["Professor of the course", "Teaching assistant of the course", "Researcher in the field"]
            rng.shuffle(names)
            return json.dumps({str(i + 1): name for i, name in enumerate(names)})
        previous = next((m["content"] for m in reversed(messages[:-1]) if m["role"] == "assistant"), None) \
            if messages[-1]["role"] == "user" else None
        asks_feedback = (previous is not None and _FEEDBACK.search(text) and not _IMPROVE.search(text)
                         and not previous.startswith(_FEEDBACK_REPLY) and _options_in(text) is None
                         and not _BEST_EXPERT.search(text))
        if asks_feedback:  # a follow-up turn asking to review the previous answer (self-refine, call 2)
            if french:
                return "Retour : le raisonnement est plausible, mais vérifiez chaque option une à une."
            return "Feedback: the reasoning is plausible; check each option once more before committing."
        if _BEST_EXPERT.search(text):
            return f"Expert {rng.randint(1, 3)}"
        if malformed:
            return rng.choice(["hmm, this one is hard to say without more context.",
                               "sorry, not sure; maybe it depends on the setting.",
                               "je ne suis pas certain de la bonne réponse." if french else "no idea, honestly."])
        found, where = None, text
        for candidate in reversed(users or [text]):  # the latest user turn that lists options (demos come first)
            found = _options_in(candidate)
            if found is not None:
                where = candidate
                break
        gold = self._gold(where) if self.answer_key else None
        if gold is None and self.answer_key:
            gold = self._gold(everything)
        if found is None or isinstance(gold, (str, float, int)):  # open answer (numbered instructions are no options)
            if isinstance(gold, (float, int)) and right:
                return ("Réponse finale : " if french else "Final answer: ") + f"{gold:g}"
            if isinstance(gold, str) and right:
                return ("Voici ma réponse : " if french else "Here is my answer: ") + gold
            return "Je pense que la réponse est 42." if french else "I think the answer is 42, by a short argument."
        style, options = found
        n = len(options)
        if isinstance(gold, (tuple, list)) and gold and all(0 <= g < n for g in gold):
            gold_set = tuple(sorted({int(g) for g in gold}))
            if right:
                chosen = gold_set
            else:
                others = [i for i in range(n) if i not in gold_set]
                if len(gold_set) == 1 and others:
                    chosen = (rng.choice(others),)
                elif others:
                    chosen = tuple(sorted(set(gold_set[1:]) | {rng.choice(others)}))
                else:
                    chosen = gold_set[:-1] or (0,)
        else:
            chosen = (rng.randrange(n),)
        return self._format(style, chosen, options, french)

    @staticmethod
    def _format(style: str, chosen: Sequence[int], options: Sequence[str], french: bool) -> str:
        labels = _labels(style, len(options))
        if style == "number":
            lines = "\n".join(f"{labels[i]}. {options[i]}" for i in chosen)
            return ("Réponse :\n" if french else "Answer:\n") + lines
        if style == "letter":  # the option lines first, then a word of (scripted) reasoning
            picked = "\n".join(f"{labels[i]}: {options[i]}" for i in chosen)
            return picked + ("\nCela découle des définitions du cours." if french else
                             "\nThis follows from the definitions of the course.")
        inside = ", ".join(labels[i] for i in chosen)
        if french:
            phrase = "Les réponses finales sont" if len(chosen) > 1 else "La réponse finale est"
        else:
            phrase = "The final answers are" if len(chosen) > 1 else "The final answer is"
        return f"{phrase} [{inside}]"


# --------------------------------------------------------------------------- response cache


class ResponseCache:
    """One JSON file per call under ``directory`` (``<key>.json``), written atomically.

    A record holds ``reply, identity, strategy, question_id, decoding, created``; never an API key (identities do
    not contain one). Unreadable files count as misses.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(identity: dict, strategy: str, decoding: dict, question_id: str, messages: Messages) -> str:
        """sha256 of the canonical JSON of the call (sorted keys, no whitespace)."""
        blob = json.dumps({"identity": identity, "strategy": strategy, "decoding": normalize_decoding(decoding),
                           "question_id": question_id,
                           "messages": [{"role": m["role"], "content": m["content"]} for m in messages]},
                          sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("reply"), str) else None

    def put(self, key: str, record: dict, *, sync: bool = True) -> Path:
        """Store ``record`` (it needs a string ``reply``) as ``<key>.json``, atomically.

        ``sync=False`` skips the per-file ``fsync``: a reader still never sees half a file, but a power cut may lose
        the latest records. Use it for replies that are instant to regenerate (the scripted stand-in's thousands of
        calls), where the sync would dominate the run time; keep it for a model or a paid endpoint.
        """
        if not isinstance(record.get("reply"), str):
            raise ValueError("a cache record needs a string 'reply'")
        created = record.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {**record, "created": created}
        return atomic_write_text(self.path(key), json.dumps(record, ensure_ascii=False, indent=1, sort_keys=True),
                                 sync=sync)

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def __len__(self) -> int:
        return len(self.keys())

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"
