"""Models of the series: a tiny GPT-2 trained from scratch (smoke), SmolLM2-135M-Instruct with its last layers
trainable (teach), or any causal LM of transformers (full).

Every model here is used through one interface, ``model(input_ids=..., attention_mask=...).logits`` plus
``parameters()``, so the fine-tuning, the unlearning trainer and the evaluation are the same code for all of them.

:class:`TopLayersLM` makes SmolLM2 affordable on a CPU: the first ``L - k`` decoder layers are frozen, so their output
for a given sequence never changes and is computed once per distinct sequence (kept in memory); only the last ``k``
layers, the final norm and the output layer run at every step. Optionally the output layer is restricted to the
benchmark's token ids (a smaller softmax: the loss is then the NLL within that vocabulary), which cuts the cost of the
49152-way output layer; greedy generation respects the same restriction. Both are CPU devices, stated where used.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def tiny_gpt(vocab_size: int, n_layer: int = 2, n_head: int = 2, n_embd: int = 64, n_positions: int = 48,
             seed: int = 0, eos_token_id: int = 2):
    """A GPT-2 (``GPT2LMHeadModel``) of about 0.15M parameters at the defaults, dropout off, seeded init."""
    from transformers import GPT2Config, GPT2LMHeadModel

    # no pad_token_id in the config: every call passes an attention mask (and generate gets the pad id explicitly)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=None,
                     bos_token_id=eos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    return model.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (the ones the unlearning methods move), in a fixed order."""
    return [p for p in model.parameters() if p.requires_grad]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class _Output:
    """What ``model(...)`` returns here: an object with ``.logits`` (like a transformers ``CausalLMOutput``)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class TopLayersLM(nn.Module):
    """A Llama-family causal LM (SmolLM2, Llama, Qwen, Mistral...) whose first layers are frozen and cached.

    ``top`` holds the trainable copies of the last ``n_trainable`` decoder layers and the final norm; the frozen
    trunk (embeddings + first layers) stays in the original model, shared by every copy of this module (a deepcopy
    copies only ``top``). ``vocab_ids`` (optional) restricts the output layer to those token ids: logits are then
    ``[B, T, len(vocab_ids)]`` in the order of ``vocab_ids`` and generation maps back to real ids.
    """

    def __init__(self, base, n_trainable: int = 1, vocab_ids: Sequence[int] | None = None,
                 train_norm: bool = True):
        super().__init__()
        inner = getattr(base, "model", None)
        if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
            raise TypeError("TopLayersLM needs a Llama-family model (model.model.layers, model.model.rotary_emb); "
                            "for other models train them directly")
        n_layers = len(inner.layers)
        if not 1 <= n_trainable <= n_layers:
            raise ValueError(f"n_trainable must be in 1..{n_layers}, got {n_trainable}")
        for p in base.parameters():
            p.requires_grad_(False)
        self._shared = {"base": base, "trunk_cache": {}}  # not a submodule: shared, never deep-copied
        self.split = n_layers - n_trainable
        self.config = base.config
        self.layers = nn.ModuleList(copy.deepcopy(layer) for layer in inner.layers[self.split:])
        self.norm = copy.deepcopy(inner.norm)
        for p in self.layers.parameters():
            p.requires_grad_(True)
        for p in self.norm.parameters():
            p.requires_grad_(train_norm)
        head = base.get_output_embeddings().weight.detach()
        if vocab_ids is not None:
            ids = torch.as_tensor(list(vocab_ids), dtype=torch.long)
            if ids.unique().numel() != ids.numel():
                raise ValueError("vocab_ids must be distinct")
            self.register_buffer("vocab_ids", ids, persistent=False)
            self.register_buffer("head", head[ids].clone(), persistent=False)
            inverse = torch.full((head.shape[0],), -1, dtype=torch.long)
            inverse[ids] = torch.arange(len(ids))
            self.register_buffer("inverse_ids", inverse, persistent=False)
        else:
            self.vocab_ids = None
            self.register_buffer("head", head, persistent=False)
            self.inverse_ids = None

    def __deepcopy__(self, memo):
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == "_shared" else copy.deepcopy(value, memo)
        return new

    # ------------------------------------------------------------------ trunk (frozen, cached per sequence)
    @property
    def base(self):
        return self._shared["base"]

    def _rope_and_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None):
        from transformers.masking_utils import create_causal_mask

        inner = self.base.model
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=None, position_ids=position_ids)
        return inner.rotary_emb(hidden, position_ids=position_ids), mask, position_ids

    @torch.no_grad()
    def trunk_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states after the frozen layers, ``[B, T, H]``; each distinct (unpadded) row is computed once."""
        cache: dict = self._shared["trunk_cache"]
        lengths = (attention_mask.sum(1) if attention_mask is not None
                   else torch.full((input_ids.shape[0],), input_ids.shape[1]))
        keys = [tuple(input_ids[i, :int(lengths[i])].tolist()) for i in range(input_ids.shape[0])]
        missing = sorted({k for k in keys if k not in cache}, key=len)
        if missing:
            self._fill(missing)
        H = self.config.hidden_size
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1], H, dtype=self.head.dtype, device=input_ids.device)
        for i, k in enumerate(keys):
            out[i, :len(k)] = cache[k]
        return out

    def _fill(self, rows: list[tuple[int, ...]], batch_size: int = 64) -> None:
        cache: dict = self._shared["trunk_cache"]
        inner = self.base.model
        device = self.head.device
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(r) for r in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            mask = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            for i, r in enumerate(chunk):
                ids[i, :len(r)] = torch.tensor(r)
                mask[i, :len(r)] = 1
            hidden = inner.embed_tokens(ids)
            rope, causal, pos = self._rope_and_mask(hidden, mask)
            for layer in inner.layers[:self.split]:
                hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=pos)
            for i, r in enumerate(chunk):
                cache[r] = hidden[i, :len(r)].detach().clone()

    def cache_size(self) -> int:
        return len(self._shared["trunk_cache"])

    # ------------------------------------------------------------------ trainable top
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> _Output:
        hidden = self.trunk_states(input_ids, attention_mask)
        rope, causal, pos = self._rope_and_mask(hidden, attention_mask)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, position_ids=pos)
        hidden = self.norm(hidden)
        return _Output(hidden @ self.head.T)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """``generate`` of the underlying HF model with this module's top layers and norm swapped in (KV cache as
        usual) and, with ``vocab_ids``, the argmax restricted to them (the other logits set to -inf)."""
        from transformers import LogitsProcessor, LogitsProcessorList

        inner = self.base.model
        old_layers, old_norm = inner.layers, inner.norm
        inner.layers = nn.ModuleList(list(old_layers[:self.split]) + list(self.layers))
        inner.norm = self.norm
        processors = LogitsProcessorList(kwargs.pop("logits_processor", []) or [])
        if self.vocab_ids is not None:
            allowed = self.vocab_ids

            class _Restrict(LogitsProcessor):
                def __call__(self, ids, scores):
                    keep = torch.full_like(scores, float("-inf"))
                    keep[:, allowed] = 0
                    return scores + keep

            processors.append(_Restrict())
        was_training = self.training
        self.eval()
        try:
            return self.base.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      logits_processor=processors, **kwargs)
        finally:
            inner.layers, inner.norm = old_layers, old_norm
            self.train(was_training)

    def to_model_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Real token ids -> positions in the restricted output layer (labels for the losses); -100 stays -100."""
        if self.inverse_ids is None:
            return ids
        out = torch.where(ids >= 0, self.inverse_ids[ids.clamp(min=0)], ids)
        if ((ids >= 0) & (out < 0)).any():
            raise ValueError("a label token is outside vocab_ids: build vocab_ids from every text of the benchmark")
        return out


def output_ids(model: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Labels in the model's output index space (identity except for a restricted :class:`TopLayersLM`)."""
    return model.to_model_ids(labels) if isinstance(model, TopLayersLM) else labels


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int,
                    pad_token_id: int = 0, batch_size: int = 32) -> list[list[int]]:
    """Greedy decoding (``do_sample=False``, as TOFU) of every prompt until EOS or ``max_new_tokens``; returns the new
    token ids without the EOS. Prompts of equal length are batched together, so no padding is ever needed."""
    out: list[list[int] | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    dev = next(model.parameters()).device
    for _, rows in sorted(by_len.items()):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids = torch.tensor([list(prompts[i]) for i in chunk], dtype=torch.long, device=dev)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
            for i, row in zip(chunk, gen[:, ids.shape[1]:].tolist()):
                cut = row.index(eos_token_id) if eos_token_id in row else len(row)
                out[i] = row[:cut]
    return out  # type: ignore[return-value]
