"""Backs ``notebooks/vlmia/01_pipeline.ipynb``: the cross-modal pipeline, its slices and the scores on one example.

The method lives in the core modules of :mod:`lionsnb.vlmia`; this module arranges it for the notebook, which
imports it as ``m``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure
from lionsnb.vlmia.data import INSTRUCTION, make_pairs
from lionsnb.vlmia.experiments import (
    K_PERCENTS,
    attack_members,
    auc_table,
    example_traces,
    metric_key,
    tail_recall,
    tiny_setup,
    train_target,
)
from lionsnb.vlmia.metrics import aggregate, k_of, max_renyi_k, position_quantities, score_keys, scores
from lionsnb.vlmia.pipeline import build_sequence, run_pipeline, sequence_quantities, slice_rows
from lionsnb.vlmia.plots import draw_trace, draw_training
from lionsnb.vlmia.profiles import tiny_profiles
from lionsnb.vlmia.slicing import SLICE_NAMES, slices
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="vlmia.nb01_pipeline",
    title="VL-MIA 1: the cross-modal pipeline, its slices and its scores on one example",
    profiles=tiny_profiles(),
    knobs={
        "alpha": Knob("0.5", "Rényi order α of the entropy traces", str, choices=("0.5", "1", "2", "inf")),
        "k_percent": Knob(10, "K of MaxRényi-K%, in percent of the scored positions", int, choices=K_PERCENTS),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    3: "On the image slice the reference gives position p the pseudo-target argmax(logits[p - 1]), so every scored "
       "row is compared with its own most probable token: log p(target) = max_j log p_j = -H_inf. Then the loss is "
       "H_inf at every position, perplexity = exp(mean H_inf) = exp(MaxRényi-100%, alpha = inf), and the k lowest "
       "target log-probabilities are the k largest H_inf, so Min-K% Prob = MaxRényi-K%(alpha = inf) score for "
       "score. A target-based metric on image positions therefore measures nothing the target-free H_inf does not; "
       "the paper reports them as N/A there. Only the target-free families (MaxRényi at alpha < inf, "
       "Max-Prob-Gap, Aug-KL) say something new about image tokens. On the description the same identity holds "
       "because the description is the model's own greedy output (up to re-tokenisation, which a word-level "
       "tokenizer does not do), so 'MaxRényi beats perplexity' is a statement about alpha < inf.",
}


# ----------------------------------------------------------------------------- computations for the notebook

def known_answer_checks() -> list[dict[str, Any]]:
    """Scores on hand-built logits whose values are known in closed form."""
    rows = []
    v = 64
    uniform = scores(torch.zeros(5, v, dtype=torch.float64), torch.arange(5))
    rows.append({"case": f"uniform rows, V = {v}", "score": "Max_100% renyi_05, _1, _2, _inf",
                 "expected": math.log(v),
                 "measured": [uniform[f"Max_100% renyi_{a}"] for a in ("05", "1", "2", "inf")]})
    rows.append({"case": f"uniform rows, V = {v}", "score": "ppl", "expected": float(v), "measured": uniform["ppl"]})
    peaked = torch.zeros(3, 32000, dtype=torch.float64)
    peaked[:, 0] = 200.0
    out = scores(peaked, torch.zeros(3, dtype=torch.long))
    rows.append({"case": "one-hot rows, V = 32000 (p_y = 1)", "score": "Max_100% renyi_05 (the clamp floor)",
                 "expected": 2 * math.log(math.sqrt(1 - 1e-10) + 31999 * math.sqrt(1e-10)),
                 "measured": out["Max_100% renyi_05"]})
    rows.append({"case": "one-hot rows, V = 32000 (p_y = 1)", "score": "Max_100% renyi_1 (unclamped)",
                 "expected": 0.0, "measured": out["Max_100% renyi_1"]})
    rows.append({"case": "n = 90 positions", "score": "k of K = 70 %", "expected": 62, "measured": k_of(90, 0.7)})
    rows.append({"case": "T = 1 row", "score": "every key NaN",
                 "expected": True, "measured": all(math.isnan(x) for x in scores(peaked[:1], None).values())})
    return rows


def known_answer_error(rows: list[dict[str, Any]]) -> float:
    """Largest absolute deviation of the numeric known-answer checks."""
    worst = 0.0
    for r in rows:
        got = r["measured"] if isinstance(r["measured"], list) else [r["measured"]]
        for g in got:
            worst = max(worst, abs(float(g) - float(r["expected"])))
    return worst


def trace_table(trace: Mapping[str, Any], alpha: str = "0.5") -> Any:
    """The scored rows of the instruction and description: which token each row predicts, its target (the real id
    or, on image rows, the pseudo-target) and its entropies."""
    q = trace["quantities"]
    sl = {k: slice(*v) for k, v in trace["slices"].items()}
    rows = []
    for t in range(sl["img"].stop - 2, len(trace["tokens"]) - 1):
        where = next((s for s in ("inst", "desp") if sl[s].start <= t < sl[s].stop), "img")
        in_slice = t < sl[where].stop - 1
        nxt = trace["tokens"][t + 1]
        pseudo = t < sl["img"].stop - 1   # rows that predict an image position use their own argmax
        rows.append({"row t": t, "slice": where,
                     "predicts token t+1": nxt + (" (pseudo-target: the row's argmax)" if pseudo else ""),
                     "scored in its slice": in_slice, "log p(token)": q["target_logprob"][t],
                     "H_0.5": q["renyi_05"][t], "H_1": q["renyi_1"][t], "H_inf": q["renyi_inf"][t]})
    return table(rows, title="Rows of the inference forward pass (row t is scored against token t+1, inside a slice)")


def identity_report(result: Mapping[str, Any]) -> dict[str, float]:
    """Largest relative deviation from the greedy identities over every example: on ``img`` and ``desp``,
    ppl = exp(MaxRényi-100%, α = ∞) and Min-K% Prob = MaxRényi-K%(α = ∞) for every K of the Min list."""
    out = {}
    for s in ("img", "desp"):
        sc = result["scores"][s]
        devs = [np.abs(np.asarray(sc["ppl"]) / np.exp(np.asarray(sc["Max_100% renyi_inf"])) - 1)]
        for k in (0, 5, 10, 20, 50, 90):
            a, b = np.asarray(sc[metric_key("Min-K% Prob", "1", k)]), np.asarray(sc[metric_key("MaxRényi-K%", "inf",
                                                                                                 k)])
            devs.append(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))
        out[s] = float(np.nanmax(np.concatenate(devs)))
    return out


def identity_table(report: Mapping[str, float]) -> Any:
    return table([{"slice": s, "largest relative deviation": v,
                   "identities": "ppl = exp(Max_100% renyi_inf); Min_K% Prob = Max_K% renyi_inf"}
                  for s, v in report.items()], title="The greedy identities, over every member and non-member")


def alignment_table(trace: Mapping[str, Any]) -> Any:
    """The description slice of one example scored with the reference's alignment and with the causal one."""
    logits = trace["logits"]
    ids = torch.tensor(trace["ids"])
    d = slice(*trace["slices"]["desp"])
    official = scores(logits[d], ids[d])
    causal = scores(logits[d.start - 1:d.stop - 1], ids[d], compat="standard")
    keys = ["ppl", "Min_10.0% Prob", "Max_10.0% renyi_05", "Max_100% renyi_1", "Max_Prob_Gap"]
    rows = [{"score": k, "reference (row i vs token i+1 inside the slice)": official[k],
             "causal (every description token)": causal[k]} for k in keys]
    rows.append({"score": "positions scored", "reference (row i vs token i+1 inside the slice)": d.stop - d.start - 1,
                 "causal (every description token)": d.stop - d.start})
    return table(rows, title="Description slice of the member, two alignments")


PREVIEW_KEYS = ("ppl", "Min_10.0% Prob", "Max_Prob_Gap", "Max_10.0% renyi_05", "Max_10.0% renyi_1",
                "Max_10.0% renyi_inf", "Max_100% renyi_05")


def preview_table(result: Mapping[str, Any]) -> Any:
    """AUC per slice of a few metrics (target-based ones are N/A on img)."""
    aucs = auc_table(result, PREVIEW_KEYS)
    rows = []
    for key in PREVIEW_KEYS:
        target_based = key == "ppl" or key.endswith("Prob")
        rows.append({"metric": key, **{s: (None if (s == "img" and target_based) else aucs[s][key])
                                       for s in SLICE_NAMES}})
    return table(rows, title="AUC of the attack (members against IID non-members), final epoch; - = N/A")


def timing_table(result: Mapping[str, Any]) -> Any:
    return table({"greedy generation (s)": result["generate_s"], "inference forward passes (s)": result["forward_s"],
                  "scoring every metric of every slice (s)": result["scoring_s"],
                  "scoring / forward": result["scoring_s"] / max(result["forward_s"], 1e-12)},
                 title="Where the attack's time goes")


# ----------------------------------------------------------------------------- exercises

def _slices_as_tuples(c0: int, n_image: int, c_last: int, desc_len: int) -> dict[str, tuple[int, int]]:
    return {k: (v.start, v.stop) for k, v in slices([c0, c_last], n_image, desc_len).items()}


def check_exercise_slices(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: the slice rule from c0, N, cL and Ld."""
    cases = [(2, 16, 18, 12), (35, 576, 40, 31), (1, 4, 3, 1), (3, 32, 2, 0)]

    def compare(got, exp):
        try:
            return {k: (int(got[k][0]), int(got[k][1])) for k in exp} == exp
        except (KeyError, TypeError, IndexError):
            return False

    return check_exercise("slice rule", attempt, _slices_as_tuples, cases, compare=compare,
                          hint="S = c0 + N + cL - 1 (the last chunk's BOS is dropped); desp is the last Ld positions.",
                          ctx=ctx)


def check_exercise_max_renyi_k(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: MaxRényi-K% of one sequence with the official k rule."""
    rng = np.random.default_rng(0)
    cases = [(rng.random(12).tolist(), 0.1), (rng.random(90).tolist(), 0.7), (rng.random(5).tolist(), 0.0),
             (rng.random(7).tolist(), 1.0), ([0.3, 0.1, 0.2], 0.5)]
    return check_exercise("MaxRényi-K%", attempt, max_renyi_k, cases,
                          compare=lambda g, e: g is not None and abs(float(g) - e) <= 1e-12 * max(1.0, abs(e)),
                          hint="k = max(1, int(n * K)) with the float product (int(90 * 0.7) is 62); average the k "
                               "largest values.", ctx=ctx)


def _solution_slices(c0, n_image, c_last, desc_len):
    """Model solution of exercise 1, as a student would write it."""
    s = c0 + n_image + c_last - 1
    return {"img": (c0, c0 + n_image), "inst": (c0 + n_image, s - desc_len), "desp": (s - desc_len, s),
            "inst_desp": (c0 + n_image, s)}


def _solution_max_renyi_k(entropies, ratio):
    """Model solution of exercise 2."""
    k = max(1, int(len(entropies) * ratio))
    return float(np.mean(sorted(entropies)[-k:]))


#: model solutions of the code exercises (``lionsnb assignments`` puts them in the nbgrader solution regions)
SOLUTIONS = {"my_slices": _solution_slices, "my_max_renyi_k": _solution_max_renyi_k}

__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "INSTRUCTION", "make_pairs", "build_sequence", "run_pipeline",
    "sequence_quantities", "slice_rows", "position_quantities", "aggregate", "scores", "score_keys", "k_of",
    "train_target", "tiny_setup", "example_traces", "attack_members", "tail_recall", "auc_table", "metric_key",
    "known_answer_checks", "known_answer_error", "trace_table", "identity_report", "identity_table",
    "alignment_table", "preview_table", "timing_table", "draw_trace", "draw_training", "figure", "explore",
    "show_source", "table", "check_exercise_slices", "check_exercise_max_renyi_k", "K_PERCENTS",
]
