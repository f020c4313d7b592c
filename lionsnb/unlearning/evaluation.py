"""TOFU's evaluation of a model (``evaluate_util.py`` + ``utils.py``) on the generated benchmark, and MUSE's PrivLeak.

For each evaluation set (forget, retain, real authors, world facts) and each item: the per-token losses of the original
answer (``gt``), of the base answer (``para``: the paraphrase for forget/retain, the original answer otherwise) and of
the perturbed answers (``pert``, ``[N, K]``), and the ROUGE-L recall of the greedy answer. From these,
:func:`tofu_numbers` gives Probability, ROUGE and Truth Ratio per set, the Model Utility (harmonic mean of the nine
retain / real-author / world-fact numbers) and the forget set's per-item truth ratios for Forget Quality.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lionsnb.unlearning.data import Benchmark, QAItem, eval_subset
from lionsnb.unlearning.finetune import per_token_losses
from lionsnb.unlearning.metrics import (
    forget_quality,
    ks_statistic,
    mia_auc,
    min_k_score,
    model_utility,
    probability,
    rouge_l_recall,
    truth_ratio,
)
from lionsnb.unlearning.models import greedy_generate, output_ids
from lionsnb.unlearning.text import Encoded, encode_pairs, encode_prompts

SETS = ("forget", "retain", "real_authors", "world_facts")
UTILITY_SETS = ("retain", "real_authors", "world_facts")
#: short labels of the nine numbers of Model Utility
MU_PARTS = tuple(f"{s} {m}" for s in UTILITY_SETS for m in ("Probability", "ROUGE", "Truth Ratio"))


@dataclass
class EvalSet:
    """One evaluation set, encoded: original, base and perturbed answers, prompts for generation, references."""

    name: str
    items: list[QAItem]
    gt: Encoded
    para: Encoded
    pert: list[Encoded]  # K encodings, one per perturbed answer
    prompts: list[list[int]]
    references: list[str]


def make_eval_set(tokenizer, name: str, items: Sequence[QAItem]) -> EvalSet:
    items = list(items)
    if not items:
        raise ValueError(f"evaluation set {name!r} is empty")
    k = min(len(it.perturbed) for it in items)
    qs = [it.question for it in items]
    gt = encode_pairs(tokenizer, qs, [it.answer for it in items])
    para = encode_pairs(tokenizer, qs, [it.paraphrased for it in items])
    pert = [encode_pairs(tokenizer, qs, [it.perturbed[j] for it in items]) for j in range(k)]
    prompts, _ = encode_prompts(tokenizer, qs)
    return EvalSet(name, items, gt, para, pert, prompts, [it.answer for it in items])


def make_eval_sets(tokenizer, bench: Benchmark, forget_pct: float, n_eval: int | None = None,
                   seed: int = 0) -> dict[str, EvalSet]:
    """The four TOFU sets: every forget item, a seeded sample of ``n_eval`` retain items and of each utility set."""
    forget, retain = bench.split(forget_pct)
    return {"forget": make_eval_set(tokenizer, "forget", forget),
            "retain": make_eval_set(tokenizer, "retain", eval_subset(retain, n_eval, seed)),
            "real_authors": make_eval_set(tokenizer, "real_authors", eval_subset(bench.real_authors, n_eval, seed)),
            "world_facts": make_eval_set(tokenizer, "world_facts", eval_subset(bench.world_facts, n_eval, seed))}


@torch.no_grad()
def answer_greedy(model: nn.Module, tokenizer, es: EvalSet, max_new_tokens: int) -> list[str]:
    """Greedy answers of the set's questions, decoded without special tokens."""
    new = greedy_generate(model, es.prompts, max_new_tokens, tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new]


@torch.no_grad()
def evaluate_set(model: nn.Module, tokenizer, es: EvalSet, rouge: bool = True, max_new_tokens: int = 16) -> dict:
    """Per-item losses (``gt`` [N], ``para`` [N], ``pert`` [N, K]) and ROUGE-L recall (``rouge`` [N], NaN if off)."""
    out = {"gt": per_token_losses(model, es.gt).numpy(), "para": per_token_losses(model, es.para).numpy(),
           "pert": torch.stack([per_token_losses(model, e) for e in es.pert], dim=1).numpy()}
    if rouge:
        answers = answer_greedy(model, tokenizer, es, max_new_tokens)
        out["rouge"] = rouge_l_recall(es.references, answers)
        out["answers"] = answers
    else:
        out["rouge"] = np.full(len(es.items), np.nan)
    return out


def tofu_numbers(per_set: dict[str, dict]) -> dict[str, float]:
    """TOFU's summary numbers (``get_model_utility``) from :func:`evaluate_set` results of the four sets.

    Probability: mean exp(-gt) for forget/retain, the normalised form for real authors / world facts. ROUGE: mean
    recall. Truth Ratio (arithmetic mean of the perturbed answers): ``true_better`` for retain / RA / WF,
    ``closer_to_1_better`` for forget. Model Utility: harmonic mean of the nine non-forget numbers.
    """
    out: dict[str, float] = {}
    for name in SETS:
        r = per_set[name]
        normalised = name in ("real_authors", "world_facts")
        out[f"{name} Probability"] = probability(r["gt"], r["pert"] if normalised else None)
        out[f"{name} ROUGE"] = float(np.mean(r["rouge"]))
        mode = "closer_to_1_better" if name == "forget" else "true_better"
        out[f"{name} Truth Ratio"] = truth_ratio(r["para"], r["pert"], mode=mode, perturbed_mean="arithmetic")
    parts = [out[k] for k in MU_PARTS]
    out["Model Utility"] = model_utility(parts) if all(np.isfinite(parts)) else float("nan")
    return out


def forget_truth_ratios(per_set: dict[str, dict]) -> np.ndarray:
    """The per-item forget-set truth ratios of Forget Quality (geometric mean of the perturbed answers, raw)."""
    r = per_set["forget"]
    return truth_ratio(r["para"], r["pert"], mode="raw", perturbed_mean="geometric")


def evaluate_model(model: nn.Module, tokenizer, sets: dict[str, EvalSet], rouge: bool = True,
                   max_new_tokens: int = 16, retain_ratios: np.ndarray | None = None) -> dict:
    """Evaluate one model on the four sets: ``per_set`` (per-item numbers), ``numbers`` (TOFU summary), the forget
    ``truth_ratios`` and, when ``retain_ratios`` (the retain model's) are given, ``forget_quality`` and ``ks_stat``."""
    per_set = {name: evaluate_set(model, tokenizer, es, rouge=rouge, max_new_tokens=max_new_tokens)
               for name, es in sets.items()}
    res = {"per_set": per_set, "numbers": tofu_numbers(per_set), "truth_ratios": forget_truth_ratios(per_set)}
    res["model_utility"] = res["numbers"]["Model Utility"]
    if retain_ratios is not None:
        res["forget_quality"] = forget_quality(res["truth_ratios"], retain_ratios)
        res["ks_stat"] = ks_statistic(res["truth_ratios"], retain_ratios)
    return res


# --------------------------------------------------------------------------- MUSE-style membership test (PrivLeak)


@torch.no_grad()
def token_logprobs(model: nn.Module, enc: Encoded, batch_size: int = 64) -> list[np.ndarray]:
    """The log-probabilities of every labelled token of each row (answer + EOS), a list of 1-D arrays."""
    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(enc), batch_size):
            b = enc.rows(range(start, min(start + batch_size, len(enc))))
            dev = next(model.parameters()).device
            logits = model(input_ids=b.input_ids.to(dev), attention_mask=b.attention_mask.to(dev)).logits.double()
            labels = output_ids(model, b.labels.to(dev))[:, 1:]
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            mask = labels != -100
            picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            for i in range(picked.shape[0]):
                out.append(picked[i][mask[i]].cpu().numpy())
    finally:
        model.train(was_training)
    return out


def min_k_scores(model: nn.Module, enc: Encoded, k: float = 0.4) -> np.ndarray:
    """Min-K% (MUSE's PrivLeak score, K = 40 %) of every row's answer."""
    return np.array([min_k_score(lp, k) for lp in token_logprobs(model, enc)])


def membership_auc(model: nn.Module, forget: Encoded, holdout: Encoded, k: float = 0.4) -> float:
    """AUC of the Min-K% membership test, forget (members, label 0) against hold-out authors (label 1)."""
    return mia_auc(min_k_scores(model, forget, k), min_k_scores(model, holdout, k))


# --------------------------------------------------------------------------- MUSE's VerbMem and KnowMem


def _cut_answer(text: str) -> str:
    """MUSE's KnowMem post-processing: keep the generation up to the first "\\n\\n", "\\nQuestion" or "Question:"."""
    for stop in ("\n\n", "\nQuestion", "Question:", "Question :"):
        i = text.find(stop)
        if i >= 0:
            text = text[:i]
    return text.strip()


@torch.no_grad()
def knowmem(model: nn.Module, tokenizer, questions: Sequence[str], answers: Sequence[str],
            icl: Sequence[tuple[str, str]] = (), max_new_tokens: int = 32) -> float:
    """MUSE's KnowMem: a few-shot prompt of "Question: q\\nAnswer: a\\n\\n" blocks (``icl``) followed by
    "Question: q\\nAnswer:", greedy generation of ``max_new_tokens``, cut at the next question, scored by ROUGE-L F1
    (no stemmer) against the answer; the mean x 100."""
    from lionsnb.unlearning.metrics import rouge_l_f1

    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    prompts = [list(tokenizer(shots + f"Question: {q}\nAnswer:", add_special_tokens=False)["input_ids"])
               for q in questions]
    new = greedy_generate(model, prompts, max_new_tokens, tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    preds = [_cut_answer(tokenizer.decode(ids, skip_special_tokens=True)) for ids in new]
    return float(np.mean(rouge_l_f1(list(answers), preds)) * 100)


@torch.no_grad()
def verbmem(model: nn.Module, tokenizer, texts: Sequence[str], prefix_tokens: int = 32,
            max_new_tokens: int = 128) -> float:
    """MUSE's VerbMem: the first ``prefix_tokens`` tokens of each text as the prompt, greedy generation of
    ``max_new_tokens``, ROUGE-L F1 (no stemmer) against the true continuation of the same length; the mean x 100."""
    from lionsnb.unlearning.metrics import rouge_l_f1

    prompts, refs = [], []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) <= prefix_tokens:
            raise ValueError(f"a text has {len(ids)} tokens, not more than prefix_tokens = {prefix_tokens}")
        prompts.append(ids[:prefix_tokens])
        refs.append(tokenizer.decode(ids[prefix_tokens:prefix_tokens + max_new_tokens], skip_special_tokens=True))
    new = greedy_generate(model, prompts, max_new_tokens, tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    preds = [tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
    return float(np.mean(rouge_l_f1(refs, preds)) * 100)
