"""The TOFU pipeline on the generated benchmark: base model -> target (fine-tuned on every author) and retain model
(fine-tuned on the retain authors only) -> unlearning of the target, with the evaluation sets.

Two model families, one code path:

* ``"tiny"``: a GPT-2 of ~0.15M parameters trained from scratch with a word-level tokenizer. Its "base" stage learns
  the world facts and real-author facts (what TOFU's base model knows from pre-training); the fine-tuning stages
  replay them, since a model this small otherwise forgets them within a few epochs.
* ``"smollm2"``: SmolLM2-135M-Instruct (offline, :func:`lionsnb.lm.load_causal_lm`) with its last layers trainable
  (:class:`~lionsnb.unlearning.models.TopLayersLM`); the base is the pre-trained model itself.

Both fine-tune on the original *and* the paraphrased answer of every fact: TOFU's truth ratio compares the paraphrase
with perturbed answers in the paraphrase's template, and a small model (or a few trainable layers) does not transfer
a fact from one phrasing to the other the way a 7B model does. ``cached(name, fn, **key)`` (e.g. ``ctx.cached``)
stores the trained weights, so a notebook trains each model once.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from lionsnb.unlearning.data import Benchmark, QAItem, make_benchmark
from lionsnb.unlearning.evaluation import EvalSet, evaluate_model, make_eval_set, make_eval_sets
from lionsnb.unlearning.finetune import finetune
from lionsnb.unlearning.models import TopLayersLM, tiny_gpt
from lionsnb.unlearning.text import Encoded, encode_pairs, word_tokenizer

MODEL_KINDS = ("tiny", "smollm2")

#: default sizes of the pipeline (a notebook's profile overrides them)
DEFAULTS: dict[str, Any] = dict(
    model="tiny", n_authors=20, facts_per_author=10, n_perturbed=5, forget_pct=10, n_eval=40, n_holdout_authors=2,
    # tiny GPT
    n_layer=2, n_head=2, n_embd=64, n_positions=48, base_epochs=60, base_lr=3e-3,
    # SmolLM2
    n_trainable=1, restrict_vocab=True,
    # fine-tuning (both families)
    ft_epochs=40, ft_lr=3e-3, ft_batch=32, replay=True,
    max_new_tokens=16,
)


def _plain_cached(name: str, fn: Callable[[], Any], **key: Any) -> Any:
    return fn()


def encode_items(tokenizer, items: list[QAItem], phrasings: tuple[str, ...] = ("answer",)) -> Encoded:
    """Encode each item once per phrasing (``answer``, ``paraphrased``)."""
    qs, ans = [], []
    for ph in phrasings:
        qs += [it.question for it in items]
        ans += [getattr(it, ph) for it in items]
    return encode_pairs(tokenizer, qs, ans)


@dataclass
class Pipeline:
    """Everything an experiment needs: the benchmark, the tokenizer, the training and evaluation sets, and the
    weights of the base, target and retain models (``states``); :meth:`model` builds a fresh model with any of them."""

    sizes: dict
    bench: Benchmark
    tokenizer: Any
    make_model: Callable[[], nn.Module]
    forget_items: list[QAItem]
    retain_items: list[QAItem]
    forget_train: Encoded
    retain_train: Encoded
    sets: dict[str, EvalSet]
    holdout: Encoded
    states: dict[str, dict] = field(default_factory=dict)
    histories: dict[str, list[float]] = field(default_factory=dict)

    def model(self, which: str = "target") -> nn.Module:
        """A fresh model with the ``which`` weights (``base``, ``target`` or ``retain``), in eval mode."""
        if which not in self.states:
            raise KeyError(f"no {which!r} weights: have {', '.join(self.states)}")
        m = self.make_model()
        m.load_state_dict(self.states[which], strict=False)
        return m.eval()

    def evaluate(self, model: nn.Module, rouge: bool = True, retain_ratios: np.ndarray | None = None) -> dict:
        return evaluate_model(model, self.tokenizer, self.sets, rouge=rouge,
                              max_new_tokens=self.sizes["max_new_tokens"], retain_ratios=retain_ratios)


def _trainable_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_pipeline(cached: Callable[..., Any] | None = None, seed: int = 0, progress: Callable | None = None,
                   **overrides: Any) -> Pipeline:
    """Generate the benchmark, build (or load from ``cached``) the base, target and retain models."""
    cached = cached or _plain_cached
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pipeline sizes {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    sz = dict(DEFAULTS) | overrides
    if sz["model"] not in MODEL_KINDS:
        raise ValueError(f"model {sz['model']!r}: choose one of {', '.join(MODEL_KINDS)}")
    bench = make_benchmark(sz["n_authors"], sz["facts_per_author"], sz["n_perturbed"], sz["n_holdout_authors"],
                           seed=seed)
    forget, retain = bench.split(sz["forget_pct"])
    utility = bench.world_facts + bench.real_authors
    if sz["model"] == "tiny":
        tokenizer = word_tokenizer(bench.texts())

        def make_model() -> nn.Module:
            return tiny_gpt(len(tokenizer), sz["n_layer"], sz["n_head"], sz["n_embd"], sz["n_positions"], seed=seed,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    else:
        from lionsnb.lm import load_causal_lm

        base, tokenizer = load_causal_lm(progress=False)
        vocab_ids = None
        if sz["restrict_vocab"]:
            vocab_ids = benchmark_vocab(tokenizer, bench)
        shared = TopLayersLM(base, n_trainable=sz["n_trainable"], vocab_ids=vocab_ids)

        def make_model() -> nn.Module:
            return copy.deepcopy(shared)

    phr = ("answer", "paraphrased")
    forget_train = encode_items(tokenizer, forget, phr)
    retain_train = encode_items(tokenizer, retain, phr)
    sets = make_eval_sets(tokenizer, bench, sz["forget_pct"], sz["n_eval"], seed)
    holdout = encode_items(tokenizer, bench.holdout)
    key = {k: v for k, v in sz.items() if k not in ("n_eval", "max_new_tokens")} | {"seed": seed}
    pipe = Pipeline(sizes=sz, bench=bench, tokenizer=tokenizer, make_model=make_model, forget_items=forget,
                    retain_items=retain, forget_train=forget_train, retain_train=retain_train, sets=sets,
                    holdout=holdout)
    replay = encode_items(tokenizer, utility) if sz["replay"] else None

    def train_base() -> dict:
        m = make_model()
        hist: list[float] = []
        if sz["model"] == "tiny":
            hist = finetune(m, encode_items(tokenizer, utility), epochs=sz["base_epochs"], lr=sz["base_lr"],
                            batch_size=sz["ft_batch"], seed=seed, progress=progress)
        return {"state": _trainable_state(m), "history": hist}

    base_out = cached("unlearning_base", train_base, **key)
    pipe.states["base"] = base_out["state"]
    pipe.histories["base"] = list(base_out["history"])

    def train_on(items_enc: Encoded, tag: int) -> Callable[[], dict]:
        def run() -> dict:
            m = make_model()
            m.load_state_dict(pipe.states["base"], strict=False)
            data = items_enc if replay is None else _concat(items_enc, replay)
            hist = finetune(m, data, epochs=sz["ft_epochs"], lr=sz["ft_lr"], batch_size=sz["ft_batch"],
                            seed=seed + tag, progress=progress)
            return {"state": _trainable_state(m), "history": hist}
        return run

    for name, enc, tag in (("target", _concat(retain_train, forget_train), 1), ("retain", retain_train, 2)):
        out = cached(f"unlearning_{name}", train_on(enc, tag), **key)
        pipe.states[name] = out["state"]
        pipe.histories[name] = list(out["history"])
    return pipe


def _concat(a: Encoded, b: Encoded) -> Encoded:
    width = max(a.input_ids.shape[1], b.input_ids.shape[1])

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return Encoded(torch.cat([pad(a.input_ids, 0), pad(b.input_ids, 0)]),
                   torch.cat([pad(a.attention_mask, 0), pad(b.attention_mask, 0)]),
                   torch.cat([pad(a.labels, -100), pad(b.labels, -100)]),
                   torch.cat([a.n_labels, b.n_labels]), torch.cat([a.lengths, b.lengths]))


def benchmark_vocab(tokenizer, bench: Benchmark) -> list[int]:
    """Every token id of the benchmark's prompts and answers, plus EOS (the restricted output layer of SmolLM2)."""
    from lionsnb.unlearning.text import format_prompt

    ids: set[int] = {tokenizer.eos_token_id}
    for text in bench.texts():
        ids.update(tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        ids.update(tokenizer(format_prompt(text), add_special_tokens=False)["input_ids"])
    return sorted(ids)
