"""Backs ``notebooks/vlmia/02_explorer.ipynb``: ROC evaluation and the metric explorer (α, K, slice, metric family,
training epochs), all looked up from precomputed scores.

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
from lionsnb.vlmia.evaluation import mann_whitney_auc, roc_metrics, roc_summary, tpr_at_fpr
from lionsnb.vlmia.experiments import (
    ALPHA_LABELS,
    FAMILIES,
    K_PERCENTS,
    TARGET_BASED,
    auc_table,
    epoch_sweep,
    metric_key,
    roc_table,
    tiny_setup,
    train_target,
)
from lionsnb.vlmia.plots import draw_auc_vs_k, draw_explorer, draw_rocs
from lionsnb.vlmia.profiles import tiny_profiles
from lionsnb.vlmia.slicing import SLICE_NAMES
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="vlmia.nb02_explorer",
    title="VL-MIA 2: ROC evaluation and the metric explorer",
    profiles=tiny_profiles(),
    knobs={
        "slice_name": Knob("desp", "slice of the explorer's start", str, choices=SLICE_NAMES),
        "family": Knob("MaxRényi-K%", "metric family of the explorer's start", str, choices=FAMILIES),
        "alpha": Knob("0.5", "Rényi order α", str, choices=tuple(ALPHA_LABELS)),
        "k_percent": Knob(10, "K in percent of the scored positions", int, choices=K_PERCENTS),
        "epochs": Knob(-1, "instruction-tuning epochs of the explorer's start (-1 = the last checkpoint)", int,
                       low=-1),
    },
)
setup = setup_for(SPEC)

#: the K values the explorer offers
EXPLORER_K = (0, 5, 10, 20, 50, 100)
ROC_KEYS = ("ppl", "Min_10.0% Prob", "Max_Prob_Gap", "Min_10.0%++", "Max_10.0% renyi_05", "Max_10.0% renyi_1",
            "Max_10.0% renyi_inf", "Max_100% renyi_05")

MODEL_ANSWERS = {
    2: "Useful only for some purposes. An AUC of 0.8 says that a random member scores lower than a random "
       "non-member 80 % of the time: on average the attack separates them. TPR at 1 % FPR = 0.02 says that when the "
       "attacker may wrongly accuse only 1 non-member in 100, it catches 2 members in 100. An auditor who wants to "
       "claim 'this image was in the training set' about a specific image needs the low-FPR regime (Carlini et al. "
       "2022, 'Membership inference attacks from first principles'), and there such an attack is almost useless; a "
       "statistic over many images (is this dataset, as a whole, in the training data?) can still use the AUC. "
       "That is why the explorer draws ROC curves on log-log axes: the left end is where a confident claim lives, "
       "and AUC hides it.",
}


# ----------------------------------------------------------------------------- computations for the notebook

def known_roc_cases() -> list[dict[str, Any]]:
    """``roc_metrics`` on cases with known answers (lower score = member)."""
    rows = []
    sep = roc_metrics([0.1, 0.2, 0.3, 1.1, 1.2, 1.3], [1, 1, 1, 0, 0, 0])
    rows.append({"case": "members score lower than every non-member", "expected": (1.0, 1.0, 1.0), "measured": sep})
    flipped = roc_metrics([1.1, 1.2, 1.3, 0.1, 0.2, 0.3], [1, 1, 1, 0, 0, 0])
    rows.append({"case": "members score higher (the sign matters)", "expected": (0.0, 0.5, 0.0),
                 "measured": flipped})
    ties = roc_metrics([0.5] * 6, [1, 1, 1, 0, 0, 0])
    rows.append({"case": "every score equal", "expected": (0.5, 0.5, 0.0), "measured": ties})
    member = [0.0, 0.1, 1.0, 1.1, 3.0]
    non = [0.5] + [5.0 + i for i in range(19)]
    strict = roc_metrics(member + non, [1] * 5 + [0] * 20)
    rows.append({"case": "a ROC point exactly at FPR = 5 % (1 of 20 non-members) is excluded",
                 "expected": (strict[0], strict[1], 0.4), "measured": strict})
    return rows


def known_roc_error(rows: list[dict[str, Any]]) -> float:
    return max(abs(float(a) - float(b)) for r in rows for a, b in zip(r["measured"], r["expected"]))


def last_epoch_result(sweep: Mapping[str, Any]) -> Mapping[str, Any]:
    return sweep["results"][str(sweep["epochs"][-1])]


def nearest_epoch(epochs: int, available: list[int]) -> int:
    """The precomputed checkpoint closest to ``epochs`` (-1 = the last one)."""
    return available[-1] if epochs < 0 else min(available, key=lambda e: (abs(e - epochs), e))


def family_table(result: Mapping[str, Any]) -> Any:
    """Best AUC of each metric family on each slice (over α and K), N/A for target-based families on img."""
    labels = np.asarray(result["labels"])
    rows = []
    for fam in FAMILIES:
        row: dict[str, Any] = {"family": fam + (" *" if TARGET_BASED[fam] else "")}
        for s in SLICE_NAMES:
            if s == "img" and TARGET_BASED[fam]:
                row[s] = None
                continue
            keys = {metric_key(fam, a, k) for a in ALPHA_LABELS for k in K_PERCENTS}
            row[s] = max(roc_metrics(np.asarray(result["scores"][s][k]), labels)[0] for k in keys)
        rows.append(row)
    return table(rows, title="Best AUC of each family over α and K (final epoch; * = target-based, - = N/A)")


def renyi_vs_ppl(result: Mapping[str, Any], slice_name: str = "desp") -> dict[str, float]:
    """The issue's comparison: best MaxRényi-K% with α in {0.5, 1} and K <= 10 % against perplexity."""
    labels = np.asarray(result["labels"])
    best = max(roc_metrics(np.asarray(result["scores"][slice_name][metric_key("MaxRényi-K%", a, k)]), labels)[0]
               for a in ("0.5", "1") for k in (0, 5, 10))
    ppl = roc_metrics(np.asarray(result["scores"][slice_name]["ppl"]), labels)[0]
    return {"maxrenyi": best, "ppl": ppl, "difference": best - ppl}


def best_renyi_vs_ppl(result: Mapping[str, Any], slice_name: str = "inst_desp") -> dict[str, Any]:
    """The best MaxRényi-K% over every α and K against perplexity on one slice."""
    labels = np.asarray(result["labels"])
    best = max((roc_metrics(np.asarray(result["scores"][slice_name][metric_key("MaxRényi-K%", a, k)]), labels)[0],
                 a, k) for a in ALPHA_LABELS for k in K_PERCENTS)
    ppl = roc_metrics(np.asarray(result["scores"][slice_name]["ppl"]), labels)[0]
    return {"best MaxRényi-K%": best[0], "at α": best[1], "at K (%)": best[2], "perplexity": ppl,
            "difference": best[0] - ppl}


def untrained_deviation(sweep: Mapping[str, Any]) -> float:
    """Largest |AUC - 0.5| of the untrained model over every key and slice."""
    aucs = auc_table(sweep["untrained"])
    return max(abs(v - 0.5) for per in aucs.values() for v in per.values())


# ----------------------------------------------------------------------------- exercises

def check_exercise_auc(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: AUC as a probability (Mann-Whitney), with ties."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    cases = [(np.round(rng.normal(0, 1, 60) - 0.7 * labels, 1), labels),
             (np.array([0.1, 0.2, 0.2, 0.9]), np.array([1, 1, 0, 0])),
             (np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 1, 0]))]
    return check_exercise("AUC as a probability", attempt, mann_whitney_auc, cases,
                          compare=lambda g, e: g is not None and abs(float(g) - e) <= 1e-9,
                          hint="compare every member with every non-member: 1 if the member's score is lower, "
                               "1/2 on a tie; average.", ctx=ctx)


def _solution_auc(scores, labels):
    """Model solution of exercise 1."""
    members = scores[labels == 1]
    others = scores[labels == 0]
    return float(np.mean((members[:, None] < others[None, :]) + 0.5 * (members[:, None] == others[None, :])))


#: model solutions of the code exercises (``lionsnb assignments``)
SOLUTIONS = {"my_auc": _solution_auc}

__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "EXPLORER_K", "ROC_KEYS", "FAMILIES", "K_PERCENTS", "ALPHA_LABELS",
    "SLICE_NAMES", "roc_metrics", "roc_summary", "tpr_at_fpr", "mann_whitney_auc", "auc_table", "roc_table",
    "metric_key", "tiny_setup", "train_target", "epoch_sweep", "known_roc_cases", "known_roc_error",
    "last_epoch_result", "nearest_epoch", "family_table", "renyi_vs_ppl", "best_renyi_vs_ppl", "untrained_deviation",
    "draw_rocs", "draw_auc_vs_k", "draw_explorer", "figure", "explore", "show_source", "table", "check_exercise_auc",
]
