"""A from-scratch forward pass and decode loop for Llama-style causal LMs, with an explicit KV cache.

:class:`LlamaRunner` reads the weights of a loaded Hugging Face ``LlamaForCausalLM`` (no copy) and
recomputes its forward pass in plain torch: token embedding, per layer RMSNorm -> attention with rotary
position embeddings and grouped-query attention (H query heads share G key/value heads; head h reads
KV head h // (H/G)) -> residual -> RMSNorm -> SwiGLU MLP -> residual, final RMSNorm, tied LM head.

:class:`KVCache` keeps the keys and values of every layer for the tokens seen so far, so that a decode
step feeds ONE new token and attends to the cached ones (prefill fills it with the prompt). Its size is

    bytes = 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_element,

and with GQA it is H/G times smaller than with one KV head per query head (MHA). ``truncate`` rolls the
cache back (used by speculative decoding when draft tokens are rejected).

:func:`load_model` loads the model the series runs on (SmolLM2-135M-Instruct offline by default) once per process
and returns it with its tokenizer and runner; :func:`decode_speed` summarises the step times of two decodes.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

ATTENTION_KINDS = ("sdpa", "naive", "flash")


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   bytes_per_element: int = 4) -> int:
    """2 * layers * kv_heads * head_dim * seq * batch * bytes (keys and values)."""
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_element


def causal_mask(query_len: int, key_len: int, device=None) -> torch.Tensor:
    """Boolean (L, S) mask aligned bottom-right: query i (of the last L positions) sees keys 0 .. S - L + i."""
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(key_len - query_len)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with the full (L, S) score matrix; GQA by repeating K/V heads."""
    groups = q.shape[-3] // k.shape[-3]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """PyTorch's fused attention; an explicit bottom-right mask when L != S (its ``is_causal`` is top-left)."""
    length, keys = q.shape[-2], k.shape[-2]
    gqa = q.shape[-3] != k.shape[-3]
    if not causal or length == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    if length == keys:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(length, keys, q.device), enable_gqa=gqa)


def _flash(q, k, v, causal=False):
    from lionsnb.inference.attention import flash_attention

    return flash_attention(q, k, v, causal=causal)


ATTENTION: dict[str, Callable] = {"sdpa": sdpa_attention, "naive": naive_attention, "flash": _flash}


class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` tokens: (layers, batch, kv_heads, max_len, d)."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, max_len: int,
                 dtype=torch.float32, device="cpu"):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.max_len = max_len

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value tensors."""
        return self.keys.nelement() * self.keys.element_size() + self.values.nelement() * self.values.element_size()

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write positions start.. of one layer; return that layer's keys and values up to the new end."""
        end = start + k.shape[-2]
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} tokens; {end} needed: build it with a larger max_len")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def truncate(self, length: int) -> None:
        """Forget every position >= length (the stored values are simply overwritten later)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.length = length


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight (Llama's RMSNorm, computed in float32)."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    mlp_norm: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor


class LlamaRunner:
    """The forward pass of a (loaded) Llama-style HF model, written out; ``n_layers`` keeps only the first layers."""

    def __init__(self, hf_model, *, attention: str = "sdpa", n_layers: int | None = None):
        if attention not in ATTENTION:
            raise ValueError(f"attention = {attention!r}: use one of {ATTENTION_KINDS}")
        config = hf_model.config
        inner = hf_model.model
        self.config = config
        self.attention = attention
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.eps = config.rms_norm_eps
        total = len(inner.layers)
        self.n_layers = total if n_layers is None else n_layers
        if not 1 <= self.n_layers <= total:
            raise ValueError(f"n_layers = {n_layers}: the model has {total} layers")
        self.embed = inner.embed_tokens.weight
        self.final_norm = inner.norm.weight
        self.lm_head = hf_model.lm_head.weight
        self.inv_freq = inner.rotary_emb.inv_freq
        self.rope_scale = float(getattr(inner.rotary_emb, "attention_scaling", 1.0))
        self.layers = []
        for layer in inner.layers[: self.n_layers]:
            attn, mlp = layer.self_attn, layer.mlp
            if any(getattr(m, "bias", None) is not None for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)):
                raise ValueError("attention projections with biases are not supported by this runner")
            self.layers.append(LayerWeights(layer.input_layernorm.weight, attn.q_proj.weight, attn.k_proj.weight,
                                            attn.v_proj.weight, attn.o_proj.weight,
                                            layer.post_attention_layernorm.weight, mlp.gate_proj.weight,
                                            mlp.up_proj.weight, mlp.down_proj.weight))

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        return KVCache(self.n_layers, batch, self.n_kv_heads, self.head_dim, max_len, self.dtype, self.device)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[:, None].float() * self.inv_freq[None, :].float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.rope_scale).to(self.dtype), (emb.sin() * self.rope_scale).to(self.dtype)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, start: int | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T) placed at positions start..start+T-1.

        With a cache, ``start`` defaults to ``cache.length``: keys/values of the new tokens are stored and the
        queries attend to every cached position (bottom-right causal mask); afterwards ``cache.length`` is
        start + T. Without a cache the T tokens are the whole sequence (start must be 0).
        """
        if ids.dim() == 1:
            ids = ids[None]
        batch, length = ids.shape
        start = (cache.length if cache is not None else 0) if start is None else start
        if cache is None and start != 0:
            raise ValueError("without a cache the tokens must be the whole sequence (start = 0)")
        attend = ATTENTION[self.attention]
        cos, sin = self._rope(torch.arange(start, start + length, device=ids.device))
        x = F.embedding(ids, self.embed)
        heads, kv_heads, d = self.n_heads, self.n_kv_heads, self.head_dim
        for i, w in enumerate(self.layers):
            h = rms_norm(x, w.attn_norm, self.eps)
            q = (h @ w.wq.T).view(batch, length, heads, d).transpose(1, 2)
            k = (h @ w.wk.T).view(batch, length, kv_heads, d).transpose(1, 2)
            v = (h @ w.wv.T).view(batch, length, kv_heads, d).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if cache is not None:
                k, v = cache.store(i, start, k, v)
            o = attend(q, k, v, causal=True)
            x = x + o.transpose(1, 2).reshape(batch, length, heads * d) @ w.wo.T
            h = rms_norm(x, w.mlp_norm, self.eps)
            x = x + (F.silu(h @ w.gate.T) * (h @ w.up.T)) @ w.down.T
        if cache is not None:
            cache.length = start + length
        return rms_norm(x, self.final_norm, self.eps) @ self.lm_head.T

    __call__ = forward


@dataclass
class Generation:
    """Tokens generated after the prompt, with the wall time of every step (prefill = step 0)."""

    tokens: list[int]
    step_seconds: list[float] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(self.step_seconds))


def next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """Greedy (temperature 0) or a sample from softmax(logits / temperature)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(runner: LlamaRunner, prompt: Sequence[int], max_new_tokens: int, *, use_cache: bool = True,
             temperature: float = 0.0, seed: int = 0, eos_id: int | None = None,
             keep_logits: bool = False) -> Generation:
    """Decode ``max_new_tokens`` tokens after ``prompt`` (token ids), with or without the KV cache.

    Without a cache every step runs the whole sequence through the model (cost grows with its length);
    with a cache, the prompt is prefilled once and each step feeds only the newest token.
    """
    if max_new_tokens < 0 or not prompt:
        raise ValueError("need a non-empty prompt and max_new_tokens >= 0")
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    sequence = list(prompt)
    out = Generation([])
    cache = runner.new_cache(len(prompt) + max_new_tokens) if use_cache else None
    feed = torch.tensor([sequence], device=runner.device)
    for _ in range(max_new_tokens):
        start_time = time.perf_counter()
        if use_cache:
            logits = runner(feed, cache)[0, -1]
        else:
            logits = runner(torch.tensor([sequence], device=runner.device))[0, -1]
        token = next_token(logits, temperature, generator)
        out.step_seconds.append(time.perf_counter() - start_time)
        if keep_logits:
            out.logits.append(logits.detach().cpu())
        out.tokens.append(token)
        sequence.append(token)
        feed = torch.tensor([[token]], device=runner.device)
        if eos_id is not None and token == eos_id:
            break
    return out


def decode_speed(cached_seconds: Sequence[float], uncached_seconds: Sequence[float]) -> dict:
    """Time per decode step (step 0, the prefill, left out) with and without the cache and their ratio; how much
    slower the last quarter of steps is than the first quarter (growth with the context length)."""
    def as_list(x) -> list:
        return x.tolist() if isinstance(x, (torch.Tensor, np.ndarray)) else list(x)

    c, u = np.asarray(as_list(cached_seconds))[1:], np.asarray(as_list(uncached_seconds))[1:]
    q = max(1, len(c) // 4)
    return {"cached_s_per_token": float(c.mean()), "uncached_s_per_token": float(u.mean()),
            "speedup": float(u.mean() / c.mean()),
            "cached_growth": float(np.median(c[-q:]) / np.median(c[:q])),
            "uncached_growth": float(np.median(u[-q:]) / np.median(u[:q])),
            "prefill_s": float(as_list(cached_seconds)[0])}


@functools.lru_cache(maxsize=2)
def load_model(name: str = "smollm2", device: str = "cpu"):
    """``(Hugging Face model, tokenizer, LlamaRunner)`` of ``name``, loaded once per process and device.

    ``smollm2`` is the offline SmolLM2-135M-Instruct (:func:`lionsnb.lm.load_causal_lm`); any other string is a hub
    id (network) or a local folder of a Llama-style causal LM. The notebooks' cached computations take the model's
    NAME as an argument and call this function, so that the cache key holds what the result depends on; the
    loaded model is shared, and nothing here ever changes its weights (quantisation works on copies).
    """
    from lionsnb.lm import load_causal_lm

    model, tokenizer = load_causal_lm(name, device=str(device))
    return model, tokenizer, LlamaRunner(model)
