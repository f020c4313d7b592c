"""Backs ``notebooks/vlmia/04_confound_text.ipynb``: the distribution-shift confound, and a text MIA on SmolLM2.

The method lives in the core modules of :mod:`lionsnb.vlmia`; this module arranges it for the notebook.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.lm import load_causal_lm, model_knob
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure
from lionsnb.vlmia.data import SHIFTED_BACKGROUNDS, make_pairs
from lionsnb.vlmia.evaluation import roc_metrics, roc_summary
from lionsnb.vlmia.experiments import auc_table, confound_study, pretrain, setup_data, tiny_setup
from lionsnb.vlmia.metrics import text_scores
from lionsnb.vlmia.plots import draw_confound, draw_images, draw_text_mia
from lionsnb.vlmia.profiles import tiny_profiles
from lionsnb.vlmia.slicing import SLICE_NAMES
from lionsnb.vlmia.textmia import DEFAULT_PLAYS, SplitLM, shakespeare_passages, text_mia
from lionsnb.widgets import explore

#: shares of shifted images among the non-members that the explorer offers
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)

SPEC = MethodSpec(
    name="vlmia.nb04_confound_text",
    title="VL-MIA 4: the distribution-shift confound, and a text MIA on SmolLM2",
    profiles=tiny_profiles(
        smoke=dict(text_members=10, text_nonmembers=10, text_tokens=32, text_epochs=3, text_lr=5e-4),
        teach=dict(text_members=24, text_nonmembers=24, text_tokens=48, text_epochs=4, text_lr=5e-4),
        full=dict(text_members=256, text_nonmembers=256, text_tokens=64, text_epochs=4, text_lr=2e-4),
    ),
    knobs={
        "model": model_knob("the language model of the text MIA"),
        "train_layers": Knob(2, "decoder layers fine-tuned on the member passages (the last ones)", int, low=1,
                             high=8),
        "fraction": Knob(1.0, "share of shifted images among the non-members at the explorer's start", float,
                         choices=FRACTIONS),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "Run a 'blind' attack that never queries the target model: train a small classifier (or use a simple "
       "statistic such as the image's mean colour, or for text the date or the vocabulary) to separate the claimed "
       "members from the claimed non-members. If it reaches a high AUC, the two sets differ in distribution and any "
       "membership AUC on them is suspect (Das, Zhang and Tramèr 2024 do this for text benchmarks; Zhu et al. 2025 "
       "measure the shift of VLM benchmarks with a sliced-Wasserstein distance). "
       "A second check uses a reference model trained on the same distribution without the members: here the "
       "pre-trained tiny VLM, which gives AUC well above 0.5 against shifted non-members although it never saw a "
       "member. The fix is an evaluation set whose non-members are drawn from the same distribution as the "
       "members (an IID split, e.g. held-out pairs of the same source and period), or, when that is impossible, "
       "reporting the blind baseline next to the attack.",
}


# ----------------------------------------------------------------------------- the confound

def base_model(setup) -> dict[str, Any]:
    """The pre-trained tiny VLM (stage 1 only): it has seen the pool, drawn like the members, never a member."""
    data = setup_data(setup)
    return pretrain(data["pool"], setup.config, setup.pretrain_epochs, seed=setup.seed, lr=setup.lr,
                    batch_size=setup.batch_size, device=setup.device)


def mixtures(study: Mapping[str, Any], fractions=FRACTIONS, seed: int = 0) -> dict[str, Any]:
    """Non-member sets with a share of shifted images: ``fraction`` of the IID non-members replaced by shifted ones
    (same count), members unchanged; scores looked up from the two attacks, nothing recomputed."""
    iid, shifted = study["iid"], study["shifted"]
    n_mem = int(np.sum(np.asarray(iid["labels"]) == 1))
    n_non = len(iid["labels"]) - n_mem
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_non)
    out = {}
    for f in fractions:
        n_shift = int(round(f * n_non))
        pick_shift = np.sort(order[:n_shift])
        pick_iid = np.sort(order[n_shift:])
        scores = {s: {k: np.concatenate([np.asarray(iid["scores"][s][k])[:n_mem],
                                         np.asarray(iid["scores"][s][k])[n_mem + pick_iid],
                                         np.asarray(shifted["scores"][s][k])[n_mem + pick_shift]])
                      for k in iid["scores"][s]} for s in SLICE_NAMES}
        out[f"{f:g}"] = {"scores": scores, "labels": np.r_[np.ones(n_mem, dtype=np.int64),
                                                            np.zeros(n_non, dtype=np.int64)]}
    return {"mixes": out}


CONFOUND_KEYS = ("ppl", "Max_10.0% renyi_05", "Max_100% renyi_1", "Max_Prob_Gap", "Min_10.0%++")


def confound_table(study: Mapping[str, Any]) -> Any:
    rows = []
    for split in ("iid", "shifted"):
        aucs = auc_table(study[split], CONFOUND_KEYS)
        for key in CONFOUND_KEYS:
            rows.append({"non-members": "IID" if split == "iid" else "shifted", "metric": key,
                         **{s: aucs[s][key] for s in SLICE_NAMES}})
    return table(rows, title="A model never trained on the members: AUC per slice")


def confound_summary(study: Mapping[str, Any], key: str = "Max_10.0% renyi_05") -> dict[str, float]:
    """AUC on ``desp`` and the largest over the slices, IID against shifted non-members."""
    out = {}
    for split in ("iid", "shifted"):
        aucs = auc_table(study[split], [key])
        out[f"{split}_desp"] = aucs["desp"][key]
        out[f"{split}_max"] = max(aucs[s][key] for s in SLICE_NAMES)
        out[f"{split}_max_dev"] = max(abs(aucs[s][key] - 0.5) for s in SLICE_NAMES)
    return out


# ----------------------------------------------------------------------------- the text MIA

def run_text_mia(model_name: str, n_members: int, n_nonmembers: int, n_tokens: int, epochs: int,
                 train_layers: int, lr: float, seed: int) -> dict[str, Any]:
    """Load the LM (offline SmolLM2 by default), cut member and non-member passages of the same plays, score
    them, fine-tune the last ``train_layers`` layers on the members, score again."""
    import torch

    torch.manual_seed(seed)
    model, tokenizer = load_causal_lm(model_name, progress=False)
    passages = shakespeare_passages(tokenizer, n_members, n_nonmembers, n_tokens, seed=seed)
    check = split_check(model, passages.ids[:2], train_layers)
    out = text_mia(model, tokenizer, passages, epochs=epochs, n_train_layers=train_layers, lr=lr, seed=seed)
    out["texts"] = passages.texts[:2]
    out["plays"] = sorted(set(passages.plays))
    out["n_layers"] = len(model.model.layers)
    out["split_check"] = check
    return out


def split_check(model: Any, ids: Any, train_layers: int) -> float:
    """Largest |logit difference| between the split model (lower layers, then top layers) and the full model."""
    import torch

    split = SplitLM(model, train_layers)
    with torch.no_grad():
        full = model(ids).logits
        parts = split.top(split.lower(ids))
    for p in split.trainable:
        p.requires_grad_(False)
    return float((full - parts).abs().max())


TEXT_KEYS = ("ppl", "ppl/zlib", "ppl/lowercase_ppl", "Min_20.0% Prob", "Min_20.0%++", "Modified_renyi_05",
             "Max_Prob_Gap", "Max_10.0% renyi_05", "Max_10.0% renyi_1", "Max_100% renyi_1")


def text_table(result: Mapping[str, Any]) -> Any:
    labels = np.asarray(result["labels"])
    rows = []
    for key in TEXT_KEYS:
        before = roc_metrics(np.asarray(result["before"][key]), labels)
        after = roc_summary(np.asarray(result["after"][key]), labels)
        rows.append({"metric": key, "AUC before": before[0], "AUC after": after["auc"],
                     "TPR@5%FPR after": after["tpr_at_5_fpr"], "TPR@1%FPR after": after["tpr_at_1_fpr"]})
    return table(rows, title="Text MIA on the LM: members fine-tuned on, non-members held out (same plays)")


def text_timing(result: Mapping[str, Any]) -> dict[str, float]:
    sec = result["seconds"]
    n_scorings = 2  # before and after
    forward = sec["lower_layers"] + sec["top_forward"] / 2   # one full forward pass over every passage ...
    scoring = sec["scoring"] / n_scorings                     # ... and one scoring of its logits
    return {"tokens": result["tokens"], "full forward pass (s)": forward, "scoring every metric (s)": scoring,
            "scoring / forward": scoring / max(forward, 1e-12), "fine-tuning (s)": sec["training"]}


# ----------------------------------------------------------------------------- exercises

def _zlib_ratio(ppl: float, text: str) -> float:
    return text_scores(ppl, text)["ppl/zlib"]


def check_exercise_zlib(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: the zlib ratio."""
    cases = [(12.5, "To be, or not to be, that is the question"), (3.0, "a a a a a a a a a a a a a a a a"),
             (math.e, "Now is the winter of our discontent")]
    return check_exercise("zlib ratio", attempt, _zlib_ratio, cases,
                          compare=lambda g, e: g is not None and abs(float(g) - e) <= 1e-12,
                          hint="log(ppl) / len(zlib.compress(text.encode('utf-8'))).", ctx=ctx)


def _solution_zlib_ratio(ppl, text):
    """Model solution of exercise 1."""
    import zlib

    compressed = zlib.compress(text.encode("utf-8"))
    return math.log(ppl) / len(compressed)


#: model solutions of the code exercises (``lionsnb assignments``)
SOLUTIONS = {"my_zlib_ratio": _solution_zlib_ratio}

__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "FRACTIONS", "SLICE_NAMES", "SHIFTED_BACKGROUNDS", "DEFAULT_PLAYS",
    "CONFOUND_KEYS", "TEXT_KEYS", "make_pairs", "tiny_setup", "base_model", "confound_study", "mixtures",
    "confound_table", "confound_summary", "run_text_mia", "text_table", "text_timing", "text_scores", "text_mia",
    "SplitLM", "shakespeare_passages", "roc_metrics", "roc_summary", "auc_table", "draw_confound", "draw_text_mia",
    "draw_images", "split_check",
    "figure", "explore", "show_source", "table", "check_exercise_zlib",
]
