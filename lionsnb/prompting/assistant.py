"""Which assistant a prompting notebook asks, with which settings, and where its replies are kept.

One home for what the three notebooks of the series share about their assistant:

* :func:`assistant_knobs`: the knobs every notebook has (``BACKEND``, ``MODEL``, ``DECODING``, ``BASE_URL``,
  ``ENDPOINT_MODEL``, ``API_KEY_ENV``);
* :func:`make_backend`: the backend those knobs ask for (the local model with padding-aware batches, the scripted
  stand-in, or an OpenAI-compatible endpoint whose key is read from an environment variable, never stored);
* :func:`reply_caps`: how many tokens each strategy's replies may have on the local model (reasoning strategies get
  more room, :func:`~lionsnb.prompting.strategies.reply_token_caps`);
* :func:`response_dir`: the folder of the response cache (a fresh temporary one under ``LIONSNB_NO_CACHE=1``);
* :func:`mark_truncated`: which replies stopped at their cap instead of finishing.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lionsnb.lm import DEFAULT_MODEL, model_knob
from lionsnb.params import Knob
from lionsnb.prompting.backends import (
    DETERMINISTIC,
    PAPER_DECODING,
    Backend,
    LocalHFBackend,
    OpenAICompatibleBackend,
    ScriptedBackend,
    repeating_tail,
)
from lionsnb.prompting.strategies import reply_token_caps

#: who answers: the local model, the scripted stand-in, an OpenAI-compatible endpoint
BACKENDS = ("local", "scripted", "endpoint")
#: greedy decoding, or the paper's sampling settings
DECODINGS = ("deterministic", "paper")
#: the scripted stand-in of BACKEND "scripted": it knows the answer key and is right with this probability ...
SCRIPTED_ACCURACY = 0.6
#: ... and gives no usable answer with this probability
SCRIPTED_MALFORMED = 0.1


def assistant_knobs() -> dict[str, Knob]:
    """The knobs of the assistant, the same in every notebook of the series (lower-case names; the notebooks'
    parameters are their upper-case versions)."""
    return {
        "backend": Knob("local", "who answers: local (a causal LM on this machine, MODEL), scripted (an instant "
                        "synthetic stand-in) or endpoint (an OpenAI-compatible HTTP server)", str, choices=BACKENDS),
        "model": model_knob("the local assistant of BACKEND local"),
        "decoding": Knob("deterministic", "deterministic (greedy, temperature 0) or paper (temperature 0.8, "
                         "frequency penalty 0.8, presence penalty 0.5)", str, choices=DECODINGS),
        "base_url": Knob("http://127.0.0.1:8000/v1", "the endpoint's base URL (BACKEND endpoint only)", str),
        "endpoint_model": Knob("gpt-4o-mini", "the model name sent to the endpoint", str),
        "api_key_env": Knob("OPENAI_API_KEY", "the NAME of the environment variable that holds the API key; empty "
                            "for a server without authentication", str),
    }


def decoding_settings(name: str) -> dict[str, float]:
    """``deterministic`` -> greedy (temperature 0); ``paper`` -> the paper's sampling settings."""
    if name not in DECODINGS:
        raise ValueError(f"DECODING = {name!r}: use one of {', '.join(DECODINGS)}")
    return dict(DETERMINISTIC if name == "deterministic" else PAPER_DECODING)


def reply_caps(sizes: Any) -> dict[str, int]:
    """Per strategy, the most tokens the local model may generate for one reply (the profile's ``direct_tokens``
    for the strategies that ask for the answer alone, ``reasoning_tokens`` for those that reason first)."""
    return reply_token_caps(int(sizes.direct_tokens), int(sizes.reasoning_tokens))


def run_caps(ctx) -> dict[str, int] | None:
    """The ``max_tokens`` of :func:`~lionsnb.prompting.study.run_study` for this notebook's backend: the local
    model's per-strategy caps; None for an endpoint (its own ``endpoint_max_tokens``) or the scripted stand-in."""
    return reply_caps(ctx.sizes) if ctx.knobs.backend == "local" else None


def make_backend(ctx, bank) -> Backend:
    """The backend the notebook's knobs ask for.

    * ``local``: :class:`~lionsnb.prompting.backends.LocalHFBackend` with ``MODEL`` (``smollm2``: SmolLM2-135M-
      Instruct offline), loaded on its first call (a run whose replies are all cached never loads it); replies of
      at most the largest of :func:`reply_caps` tokens (each strategy's own cap goes with its calls), batches of the
      profile's ``batch_size`` split so that no ``generate`` pads more than ``padded_tokens`` prompt tokens;
    * ``scripted``: :class:`~lionsnb.prompting.backends.ScriptedBackend` that knows ``bank``'s answers (right with
      probability :data:`SCRIPTED_ACCURACY`, malformed with :data:`SCRIPTED_MALFORMED`); instant, synthetic;
    * ``endpoint``: :class:`~lionsnb.prompting.backends.OpenAICompatibleBackend` at ``BASE_URL`` with
      ``ENDPOINT_MODEL``, replies of at most ``endpoint_max_tokens``; the key is read from the environment variable
      NAMED ``API_KEY_ENV`` (empty: no key) at each request, never stored or printed.
    """
    k, s = ctx.knobs, ctx.sizes
    if k.backend == "local":
        device = "cuda" if ctx.device.type == "cuda" else "cpu"
        model = None if k.model == DEFAULT_MODEL else k.model
        return LocalHFBackend(model, max_new_tokens=max(reply_caps(s).values()), batch_size=int(s.batch_size),
                              padded_tokens=int(s.padded_tokens), device=device, seed=ctx.seed)
    if k.backend == "scripted":
        return ScriptedBackend.from_bank(bank, seed=ctx.seed, accuracy=SCRIPTED_ACCURACY,
                                         malformed_rate=SCRIPTED_MALFORMED)
    if k.backend == "endpoint":
        return OpenAICompatibleBackend(k.base_url, k.endpoint_model, k.api_key_env or None,
                                       max_tokens=int(s.endpoint_max_tokens), concurrency=min(8, int(s.batch_size)),
                                       seed=ctx.seed)
    raise ValueError(f"BACKEND = {k.backend!r}: use one of {', '.join(BACKENDS)}")


def describe_backend(backend: Backend) -> str:
    """One line naming the backend (from its identity, which never holds a key)."""
    ident = {k: v for k, v in backend.identity().items() if k != "answer_key"}
    return ", ".join(f"{k}={v}" for k, v in ident.items())


def response_dir(ctx) -> Path:
    """Where the notebook's :class:`~lionsnb.prompting.backends.ResponseCache` lives: ``<cache>/<method>/responses``
    (the folder the banner names); a fresh temporary folder when caching is off (``LIONSNB_NO_CACHE=1``)."""
    if not getattr(ctx.cache, "enabled", True):
        return Path(tempfile.mkdtemp(prefix="lionsnb-responses-"))
    path = Path(ctx.cache.root) / ctx.method.name / "responses"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_rows(backend: Backend, decoding: dict, caps: dict[str, int] | None, strategies: Sequence[str]
                  ) -> dict[str, Any]:
    """What a run uses, as ``{setting: value}`` for a table: backend, decoding, reply caps, strategies."""
    out: dict[str, Any] = {"backend": describe_backend(backend),
                           "decoding": ", ".join(f"{k} {v:g}" for k, v in decoding.items())}
    if caps:
        direct = sorted({caps[s] for s in strategies if s in caps and caps[s] == min(caps.values())})
        out["reply cap, direct answers (tokens)"] = direct[0] if direct else "-"
        out["reply cap, reasoning strategies (tokens)"] = max(caps.values())
    else:
        out["reply cap (tokens)"] = getattr(backend, "max_tokens", None) or "the backend's own"
    out["strategies"] = ", ".join(strategies)
    return out


def generation_note(backend: Backend) -> str:
    """One line about the local model's generation in this session; says so when nothing was generated."""
    stats = getattr(backend, "stats", None)
    if not isinstance(backend, LocalHFBackend) or not stats or not stats.get("prompts"):
        return "no generation in this run (every reply came from the cache, or the backend is not local)"
    line = (f"local model: {stats['prompts']} prompts in {stats['batches']} generate call(s), "
            f"{stats['generated_tokens']} tokens generated in {stats['seconds']:.1f} s "
            f"({backend.tokens_per_second():.1f} tokens/s, prefill included)")
    if stats.get("padded_prompt_tokens"):
        line += f"; prompt tokens {stats['prompt_tokens']}, with padding {stats['padded_prompt_tokens']}"
    return line


def tokenizer_for(backend: Backend):
    """The local backend's tokenizer, without loading the model when it is not loaded yet; None for other backends
    (or when the tokenizer cannot be read)."""
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


def mark_truncated(rows: Iterable[dict], tokenizer) -> list[dict]:
    """Copies of ``rows`` with ``reply_tokens`` (the final answer re-tokenised), ``truncated`` (the reply has about
    its row's ``max_tokens`` tokens, i.e. it stopped at the cap before the model finished; None without a tokenizer
    or a cap) and ``looped`` (it ends in a verbatim loop, where the local backend stops it:
    :func:`~lionsnb.prompting.backends.repeating_tail`). Approximate: decoding and re-encoding may differ by a
    token, hence a margin of one."""
    out = []
    for r in rows:
        r = dict(r)
        cap = r.get("max_tokens")
        if tokenizer is None:
            r["reply_tokens"], r["truncated"], r["looped"] = None, None, None
        else:
            ids = tokenizer(r.get("raw_answer") or "", add_special_tokens=False)["input_ids"]
            r["reply_tokens"] = len(ids)
            r["truncated"] = None if not cap else bool(len(ids) >= int(cap) - 1)
            r["looped"] = bool(repeating_tail(ids))
        out.append(r)
    return out


def finite_or(value: Any, default: float = 0.0) -> float:
    """``value`` as a float, or ``default`` when it is NaN/None (a measure with nothing to measure in this run)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


__all__ = [
    "BACKENDS", "DECODINGS", "SCRIPTED_ACCURACY", "SCRIPTED_MALFORMED", "assistant_knobs", "decoding_settings",
    "reply_caps", "run_caps", "make_backend", "describe_backend", "response_dir", "settings_rows", "generation_note",
    "tokenizer_for", "mark_truncated", "finite_or",
]
