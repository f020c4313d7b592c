"""Backs ``notebooks/vlmia/03_auc_study.ipynb``: AUC against training epochs, the metric x slice heatmap, entropy
traces of a member and a non-member, and the same pipeline on transformers' LLaVA.

The method lives in the core modules of :mod:`lionsnb.vlmia`; this module arranges it for the notebook.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure
from lionsnb.vlmia.evaluation import roc_metrics
from lionsnb.vlmia.experiments import (
    ALPHA_LABELS,
    HEATMAP_ROWS,
    K_PERCENTS,
    auc_table,
    aug_kl_attack,
    epoch_sweep,
    example_traces,
    metric_key,
    tiny_setup,
    train_target,
)
from lionsnb.vlmia.metrics import aggregate, max_renyi_k, min_k_prob, position_quantities
from lionsnb.vlmia.pipeline import (
    LLAVA_HUB_ID,
    LLAVA_INSTRUCTION,
    load_llava,
    run_pipeline,
    sequence_traces,
    tiny_random_llava,
)
from lionsnb.vlmia.plots import draw_auc_vs_epochs, draw_heatmap, draw_histograms, draw_trace, heatmap_table
from lionsnb.vlmia.profiles import tiny_profiles
from lionsnb.vlmia.slicing import SLICE_NAMES
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="vlmia.nb03_auc_study",
    title="VL-MIA 3: AUC against training epochs, the metric x slice heatmap, entropy traces",
    profiles=tiny_profiles(
        smoke=dict(hub_model="tiny-random-llava", hub_images=4),
        teach=dict(hub_model="tiny-random-llava", hub_images=8),
        full=dict(hub_model=LLAVA_HUB_ID, hub_images=600),
    ),
    knobs={
        "alpha": Knob("0.5", "Rényi order α of the traces and of the AUC-against-epochs lines", str,
                      choices=tuple(ALPHA_LABELS)),
        "k_percent": Knob(10, "K of MaxRényi-K% in percent", int, choices=K_PERCENTS),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "The instruction slice is the same text for every image, so a lower perplexity there does not come from "
       "remembering the text; it measures how the image embeddings steer the model's reading of the fixed "
       "instruction. Instruction tuning only puts loss on the caption, and for a member image the model has "
       "learnt to be ready for a very specific caption; the rows of the instruction can become less certain about "
       "the template tokens after a familiar image (attention moves to the image, the hidden state is pulled "
       "toward the memorised description), so the perplexity of the instruction can be higher for members and the "
       "'lower = member' rule gives an AUC below 0.5, as the paper measures for LLaVA-1.5 (0.34 on DALL-E, 0.38 on "
       "Flickr). The tiny VLM stays near 0.5 on inst: its instruction rows are never trained in the instruction "
       "tuning and barely move. An AUC of 0.35 is a usable signal with the sign flipped, but the sign is not known "
       "without labelled data, which is the catch; the paper's target-free MaxRényi-K% at small alpha points the "
       "right way on the instruction slice.",
}


# ----------------------------------------------------------------------------- computations for the notebook

def batched_vs_loop(seed: int = 0) -> dict[str, float]:
    """The batched aggregation (sorts and cumulative sums over a batch of sequences of different lengths) against
    a loop over sequences with :func:`max_renyi_k`: the largest absolute difference over every K and α."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    lengths = [1, 2, 7, 12, 31, 90]
    logits = torch.randn(len(lengths), max(lengths) + 1, 50, generator=gen, dtype=torch.float64) * 3
    q = position_quantities(logits[:, :-1], None)
    agg = aggregate(q, lengths)
    worst = 0.0
    for b, n in enumerate(lengths):
        for a in ("05", "1", "2", "inf"):
            values = q[f"renyi_{a}"][b, :n].numpy()
            for k in K_PERCENTS:
                ratio = {0: 0, 100: 1}.get(k, k / 100)
                key = metric_key("MaxRényi-K%", {"05": "0.5"}.get(a, a), k)
                worst = max(worst, abs(float(agg[key][b]) - max_renyi_k(values, ratio)))
    return {"sequences": len(lengths), "largest difference": worst}


def untrained_aucs(sweep: Mapping[str, Any]) -> np.ndarray:
    """Every AUC (all keys, all slices) of the untrained model."""
    return np.array([v for per in auc_table(sweep["untrained"]).values() for v in per.values()])


def draw_untrained(fig, *, aucs: np.ndarray) -> None:
    from lionsnb.plotting import label

    ax = fig.subplots()
    ax.hist(aucs, bins=np.linspace(0.3, 0.7, 33), color="tab:gray")
    ax.axvspan(0.35, 0.65, color="tab:green", alpha=0.1, label="[0.35, 0.65]")
    ax.axvline(0.5, color="black", lw=1)
    label(ax, "AUC", "number of (metric, slice) pairs", f"untrained model, {len(aucs)} AUCs")
    ax.legend()


EPOCH_KEYS = ("ppl", "Min_10.0% Prob", "Max_Prob_Gap", "Min_10.0%++")


def epoch_keys(alpha: str, k: int) -> list[str]:
    """The metrics of the AUC-against-epochs figure: the baselines and MaxRényi-K% at (α, K) and at α = ∞."""
    keys = list(EPOCH_KEYS) + [metric_key("MaxRényi-K%", alpha, k)]
    if alpha != "inf":
        keys.append(metric_key("MaxRényi-K%", "inf", k))
    return keys


def epoch_table(sweep: Mapping[str, Any], keys: list[str], slice_name: str = "desp") -> Any:
    rows = []
    for e in sweep["epochs"]:
        res = sweep["results"][str(e)]
        rows.append({"epochs": e, **{k: roc_metrics(np.asarray(res["scores"][slice_name][k]),
                                                    np.asarray(res["labels"]))[0] for k in keys}})
    return table(rows, title=f"AUC on the {slice_name} slice against the instruction-tuning epochs")


def growth(sweep: Mapping[str, Any], key: str, slice_name: str = "desp") -> float:
    """AUC at the last checkpoint minus AUC at epoch 0 (the pre-trained base)."""
    e0, e1 = sweep["epochs"][0], sweep["epochs"][-1]
    labels = np.asarray(sweep["results"][str(e0)]["labels"])
    a0 = roc_metrics(np.asarray(sweep["results"][str(e0)]["scores"][slice_name][key]), labels)[0]
    a1 = roc_metrics(np.asarray(sweep["results"][str(e1)]["scores"][slice_name][key]), labels)[0]
    return a1 - a0


def traces_over_epochs(setup, run: Mapping[str, Any]) -> dict[str, Any]:
    """The traces of the first member and the first non-member under every checkpoint (keys: epochs as strings)."""
    return {str(e): example_traces(setup, run["states"][str(e)], {"member": 0, "non-member": 0})
            for e in setup.sweep_epochs}


def draw_trace_epoch(fig, *, epoch: int, alpha: str, traces: Mapping[str, Any], k: int = 10) -> None:
    """:func:`draw_trace` for the checkpoint ``epoch``."""
    draw_trace(fig, alpha=alpha, k=k, traces=traces[str(epoch)])


def aug_kl_table(result: Mapping[str, Any], reference: Mapping[str, Any]) -> Any:
    """AUC of Aug-KL per slice, next to MaxRényi-10% (α = 0.5) from the same checkpoint."""
    labels = np.asarray(result["labels"])
    rows = [{"metric": "Aug-KL (4 augmented views)",
             **{s: roc_metrics(np.asarray(result["scores"][s]["aug_kl"]), labels)[0] for s in SLICE_NAMES}},
            {"metric": "MaxRényi-10%, α = 0.5",
             **{s: roc_metrics(np.asarray(reference["scores"][s]["Max_10.0% renyi_05"]), labels)[0]
                for s in SLICE_NAMES}}]
    return table(rows, title="Aug-KL at the last checkpoint (lower = member: the prediction moves more)")


def hub_attack(hub_model: str, n_images: int, seed: int) -> dict[str, Any]:
    """The unchanged pipeline on a transformers ``LlavaForConditionalGeneration``.

    ``tiny-random-llava``: a randomly initialised model built in memory, on generated images (offline; no
    membership to find). Otherwise a hub id (e.g. ``llava-hf/llava-1.5-7b-hf``) on VL-MIA/Flickr (network, GPU)."""
    if hub_model == "tiny-random-llava":
        from lionsnb.vlmia.data import make_pairs

        adapter = tiny_random_llava(seed)
        images = make_pairs(n_images, seed).images
        labels = np.r_[np.ones(n_images // 2, dtype=np.int64), np.zeros(n_images - n_images // 2, dtype=np.int64)]
        instruction, max_new = "Say.", 6
    else:
        from lionsnb.vlmia.hub import load_vlmia_images

        adapter = load_llava(hub_model)
        all_images, all_labels = load_vlmia_images("img_Flickr")
        images, labels = all_images[:n_images], all_labels[:n_images]
        instruction, max_new = LLAVA_INSTRUCTION, 32
    res = run_pipeline(adapter, images, instruction, max_new_tokens=max_new, batch_size=8)
    return {"scores": res.scores, "labels": labels, "descriptions": res.descriptions, "model": hub_model,
            "n_image_tokens": adapter.n_image, "forward_s": res.forward_seconds, "scoring_s": res.scoring_seconds,
            "generate_s": res.generate_seconds}


def hub_table(result: Mapping[str, Any]) -> Any:
    keys = ("ppl", "Max_Prob_Gap", "Max_10.0% renyi_05", "Max_10.0% renyi_1", "Max_100% renyi_inf")
    labels = np.asarray(result["labels"])
    rows = [{"metric": k, **{s: roc_metrics(np.asarray(result["scores"][s][k]), labels)[0] for s in SLICE_NAMES}}
            for k in keys]
    return table(rows, title=f"{result['model']}: AUC per slice ({len(labels)} images, N = {result['n_image_tokens']} "
                             f"image embeddings)")


# ----------------------------------------------------------------------------- exercises

def check_exercise_min_k_prob(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: Min-K% Prob of one sequence from its target log-probabilities."""
    rng = np.random.default_rng(1)
    cases = [((-rng.exponential(2, 20)).tolist(), 0.2), ((-rng.exponential(1, 90)).tolist(), 0.7),
             ([-0.1, -3.0, -0.5], 0.0), ([-1.0, -2.0], 0.9)]
    return check_exercise("Min-K% Prob", attempt, min_k_prob, cases,
                          compare=lambda g, e: g is not None and abs(float(g) - e) <= 1e-12 * max(1.0, abs(e)),
                          hint="k = max(1, int(n * K)); average the k smallest log-probabilities and negate.",
                          ctx=ctx)


def _solution_min_k_prob(logprobs, ratio):
    """Model solution of exercise 1."""
    k = max(1, int(len(logprobs) * ratio))
    smallest = sorted(logprobs)[:k]
    return -float(np.mean(smallest))


#: model solutions of the code exercises (``lionsnb assignments``)
SOLUTIONS = {"my_min_k_prob": _solution_min_k_prob}

__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "HEATMAP_ROWS", "K_PERCENTS", "ALPHA_LABELS", "SLICE_NAMES",
    "EPOCH_KEYS",
    "aggregate", "position_quantities", "sequence_traces", "roc_metrics", "auc_table", "metric_key", "tiny_setup",
    "train_target", "epoch_sweep", "batched_vs_loop", "untrained_aucs", "draw_untrained", "epoch_keys",
    "epoch_table", "growth", "heatmap_table", "traces_over_epochs", "aug_kl_attack", "aug_kl_table",
    "draw_trace_epoch", "hub_attack", "hub_table",
    "draw_auc_vs_epochs", "draw_heatmap", "draw_histograms", "draw_trace", "figure", "explore", "show_source",
    "table", "check_exercise_min_k_prob",
]
