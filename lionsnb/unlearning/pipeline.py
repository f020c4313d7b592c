"""The TOFU pipeline on the generated benchmark: base model -> target (fine-tuned on every author) and retain model
(fine-tuned on the retain authors only) -> unlearning of the target, with the evaluation sets.

Model families, one code path:

* ``"tiny"``: a GPT-2 of ~0.15M parameters trained from scratch with a word-level tokenizer. Its "base" stage learns
  the world facts and real-author facts (what TOFU's base model knows from pre-training); the fine-tuning stages
  replay them, since a model this small otherwise forgets them within a few epochs.
* ``"smollm2"`` (or any hub id / local folder of a Llama-family causal LM): the pre-trained model with its last
  ``n_trainable`` layers trainable (:class:`~lionsnb.unlearning.models.TopLayersLM`); the base is the pre-trained
  model itself.

Both fine-tune on the original *and* the paraphrased answer of every fact: TOFU's truth ratio compares the paraphrase
with perturbed answers in the paraphrase's template, and a small model (or a few trainable layers) does not transfer
a fact from one phrasing to the other the way a 7B model does.

Everything is keyed by plain arguments (``sizes``, ``seed``, weights), so ``ctx.cached`` can store each stage:
``build_pipeline(cached=ctx.cached, seed=SEED, **sizes)``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lionsnb.unlearning.data import Benchmark, QAItem, make_benchmark
from lionsnb.unlearning.evaluation import EvalSet, evaluate_model, make_eval_sets
from lionsnb.unlearning.finetune import finetune
from lionsnb.unlearning.models import TopLayersLM, tiny_gpt
from lionsnb.unlearning.text import Encoded, encode_pairs, format_prompt, word_tokenizer

#: default sizes of the pipeline (a notebook's profile overrides them)
DEFAULTS: dict[str, Any] = dict(
    model="tiny", n_authors=20, facts_per_author=10, n_perturbed=5, forget_pct=10, n_eval=40, n_holdout_authors=2,
    # tiny GPT
    n_layer=2, n_head=2, n_embd=64, n_positions=48, base_epochs=60, base_lr=3e-3,
    # pre-trained models (SmolLM2 or a hub id)
    n_trainable=1, restrict_vocab=True,
    # fine-tuning (both families)
    ft_epochs=40, ft_lr=3e-3, ft_batch=32, replay=True,
    max_new_tokens=16,
)
STAGES = ("base", "target", "retain")


def pipeline_sizes(**overrides: Any) -> dict[str, Any]:
    """:data:`DEFAULTS` updated with ``overrides`` (unknown names are an error)."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pipeline sizes {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    return dict(DEFAULTS) | overrides


def encode_items(tokenizer, items: list[QAItem], phrasings: tuple[str, ...] = ("answer",)) -> Encoded:
    """Encode each item once per phrasing (``answer``, ``paraphrased``)."""
    qs, ans = [], []
    for ph in phrasings:
        qs += [it.question for it in items]
        ans += [getattr(it, ph) for it in items]
    return encode_pairs(tokenizer, qs, ans)


def concat(a: Encoded, b: Encoded) -> Encoded:
    """The rows of ``a`` then ``b`` (right-padded to the longer width)."""
    width = max(a.input_ids.shape[1], b.input_ids.shape[1])

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return Encoded(torch.cat([pad(a.input_ids, 0), pad(b.input_ids, 0)]),
                   torch.cat([pad(a.attention_mask, 0), pad(b.attention_mask, 0)]),
                   torch.cat([pad(a.labels, -100), pad(b.labels, -100)]),
                   torch.cat([a.n_labels, b.n_labels]), torch.cat([a.lengths, b.lengths]))


def benchmark_vocab(tokenizer, bench: Benchmark) -> list[int]:
    """Every token id of the benchmark's prompts and answers, plus EOS (the restricted output layer)."""
    ids: set[int] = {tokenizer.eos_token_id}
    for text in bench.texts():
        ids.update(tokenizer(" " + text, add_special_tokens=False)["input_ids"])
        ids.update(tokenizer(format_prompt(text), add_special_tokens=False)["input_ids"])
    return sorted(ids)


@dataclass
class Pipeline:
    """Everything an experiment needs: the benchmark, the tokenizer, the training and evaluation sets, and the
    weights of the base, target and retain models (``states``); :meth:`model` builds a fresh model with any of them."""

    sizes: dict
    seed: int
    bench: Benchmark
    tokenizer: Any
    make_model: Callable[[], nn.Module]
    forget_items: list[QAItem]
    retain_items: list[QAItem]
    forget_train: Encoded
    retain_train: Encoded
    replay: Encoded | None
    sets: dict[str, EvalSet]
    holdout: Encoded
    states: dict[str, dict] = field(default_factory=dict)
    histories: dict[str, list[float]] = field(default_factory=dict)

    def model(self, which: str = "target", state: dict | None = None) -> nn.Module:
        """A fresh model with the ``which`` weights (``base``, ``target``, ``retain``) or ``state``, in eval mode."""
        if state is None:
            if which not in self.states:
                raise KeyError(f"no {which!r} weights: have {', '.join(self.states) or 'none'}; build the pipeline "
                               "with build_pipeline(...)")
            state = self.states[which]
        m = self.make_model()
        m.load_state_dict(state, strict=False)
        return m.eval()

    def evaluate(self, model: nn.Module, rouge: bool = True, retain_ratios: np.ndarray | None = None) -> dict:
        """TOFU's evaluation of ``model`` on the four sets (see :func:`~lionsnb.unlearning.evaluate_model`)."""
        return evaluate_model(model, self.tokenizer, self.sets, rouge=rouge,
                              max_new_tokens=self.sizes["max_new_tokens"], retain_ratios=retain_ratios)


_PREPARED: dict[str, Pipeline] = {}
_BASES: dict[str, tuple[nn.Module, Any]] = {}


def _pretrained(model: str) -> tuple[nn.Module, Any]:
    """A pre-trained causal LM and its tokenizer, loaded once per process (``smollm2`` = offline SmolLM2)."""
    if model not in _BASES:
        from lionsnb.lm import load_causal_lm

        _BASES[model] = load_causal_lm(model, progress=False)
    return _BASES[model]


def prepare(sizes: dict, seed: int = 0) -> Pipeline:
    """The benchmark, tokenizer, model factory and encoded sets for ``sizes`` (no weights yet); built once per process
    for each (sizes, seed)."""
    sz = pipeline_sizes(**sizes)
    key = json.dumps({"sizes": sz, "seed": seed}, sort_keys=True, default=str)
    if key in _PREPARED:
        return _PREPARED[key]
    bench = make_benchmark(sz["n_authors"], sz["facts_per_author"], sz["n_perturbed"], sz["n_holdout_authors"],
                           seed=seed)
    forget, retain = bench.split(sz["forget_pct"])
    if sz["model"] == "tiny":
        tokenizer = word_tokenizer(bench.texts())

        def make_model() -> nn.Module:
            return tiny_gpt(len(tokenizer), sz["n_layer"], sz["n_head"], sz["n_embd"], sz["n_positions"], seed=seed,
                            eos_token_id=tokenizer.eos_token_id)
    else:
        base, tokenizer = _pretrained(sz["model"])
        vocab_ids = benchmark_vocab(tokenizer, bench) if sz["restrict_vocab"] else None
        template = TopLayersLM(base, n_trainable=sz["n_trainable"], vocab_ids=vocab_ids)

        def make_model() -> nn.Module:
            return copy.deepcopy(template)
    phr = ("answer", "paraphrased")
    pipe = Pipeline(sizes=sz, seed=seed, bench=bench, tokenizer=tokenizer, make_model=make_model,
                    forget_items=forget, retain_items=retain, forget_train=encode_items(tokenizer, forget, phr),
                    retain_train=encode_items(tokenizer, retain, phr),
                    replay=encode_items(tokenizer, bench.world_facts + bench.real_authors) if sz["replay"] else None,
                    sets=make_eval_sets(tokenizer, bench, sz["forget_pct"], sz["n_eval"], seed),
                    holdout=encode_items(tokenizer, bench.holdout))
    _PREPARED[key] = pipe
    return pipe


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_stage(stage: str, sizes: dict, seed: int = 0, base_state: dict | None = None) -> dict:
    """Train one stage of the pipeline and return ``{"state": weights, "history": loss per epoch}``.

    ``base``: the tiny GPT learns the world facts and real-author facts (a pre-trained model is its own base: no
    training). ``target``: the base fine-tuned on every author (+ replay of the base facts if ``replay``).
    ``retain``: the same on the retain authors only. Module-level and keyed by its arguments, for ``ctx.cached``.
    """
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: choose one of {', '.join(STAGES)}")
    from lionsnb.progress import progress

    pipe = prepare(sizes, seed)
    sz = pipe.sizes
    model = pipe.make_model()
    history: list[float] = []

    def bar(it):
        return progress(it, desc=f"{stage} model", unit="epoch")

    if stage == "base":
        if sz["model"] == "tiny":
            data = encode_items(pipe.tokenizer, pipe.bench.world_facts + pipe.bench.real_authors)
            history = finetune(model, data, epochs=sz["base_epochs"], lr=sz["base_lr"], batch_size=sz["ft_batch"],
                               seed=seed, progress=bar)
        return {"state": _state(model), "history": history}
    if base_state is None:
        raise ValueError(f"the {stage} stage starts from the base weights: pass base_state")
    model.load_state_dict(base_state, strict=False)
    data = concat(pipe.retain_train, pipe.forget_train) if stage == "target" else pipe.retain_train
    if pipe.replay is not None:
        data = concat(data, pipe.replay)
    history = finetune(model, data, epochs=sz["ft_epochs"], lr=sz["ft_lr"], batch_size=sz["ft_batch"],
                       seed=seed + STAGES.index(stage), progress=bar)
    return {"state": _state(model), "history": history}


def _call(name: str, fn: Callable, **kwargs: Any) -> Any:
    return fn(**kwargs)


def build_pipeline(cached: Callable[..., Any] | None = None, seed: int = 0, stages: tuple[str, ...] = STAGES,
                   **sizes: Any) -> Pipeline:
    """Prepare the benchmark and train (or load through ``cached``, e.g. ``ctx.cached``) the base, target and retain
    models; ``stages`` may leave the retain model out."""
    cached = cached or _call
    pipe = dataclasses.replace(prepare(sizes, seed), states={}, histories={})
    sz = pipe.sizes
    base = cached("unlearning_base", train_stage, stage="base", sizes=sz, seed=seed)
    pipe.states["base"], pipe.histories["base"] = base["state"], list(base["history"])
    for stage in stages:
        if stage == "base":
            continue
        out = cached(f"unlearning_{stage}", train_stage, stage=stage, sizes=sz, seed=seed, base_state=base["state"])
        pipe.states[stage], pipe.histories[stage] = out["state"], list(out["history"])
    return pipe
