"""Backs ``notebooks/unlearning/01_geometry.ipynb``: unlearning as two tasks, the geometry of GA, GradDiff and NGDiff.

The direction, the cone and the 2-D picture live in :mod:`lionsnb.unlearning.geometry`; the measured gradients of
the tiny GPT in :mod:`lionsnb.unlearning.experiments`. This module arranges them for the notebook.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure
from lionsnb.unlearning.experiments import gradient_pairs, run_unlearning
from lionsnb.unlearning.geometry import (
    cone_products,
    first_order_changes,
    max_forget_weight,
    ngdiff_direction,
    ngdiff_weights,
    plane_sweep,
    unit_vector,
)
from lionsnb.unlearning.pipeline import build_pipeline
from lionsnb.unlearning.plots import draw_gradient_scatter, draw_plane, draw_plane_sweep
from lionsnb.widgets import explore

_TINY = dict(model="tiny", n_perturbed=5, forget_pct=10, n_layer=2, n_head=2, n_embd=64, n_positions=48)

SPEC = MethodSpec(
    name="unlearning.nb01_geometry",
    title="Unlearning 1: two tasks, one step (GA, GradDiff and NGDiff's cone)",
    profiles={
        # pipeline: the tiny GPT's benchmark and training; n_pairs: measured gradient pairs per model;
        # ga_steps / ga_lr: the GA run whose end point shows the forget-gradient-dominated regime;
        # sweep_points: resolution of the (angle, ratio) plane; angles / ratios: the explorer's grid
        "smoke": dict(pipeline=dict(_TINY, n_authors=10, facts_per_author=3, n_eval=6, base_epochs=15, ft_epochs=12),
                      n_pairs=6, batch=6, ga_steps=6, ga_lr=3e-3, sweep_points=25,
                      angles=(30, 60, 90, 135), ratios=(0.5, 1.0, 3.0)),
        "teach": dict(pipeline=dict(_TINY, n_authors=20, facts_per_author=5, n_eval=20, base_epochs=50, ft_epochs=35),
                      n_pairs=30, batch=8, ga_steps=20, ga_lr=2e-3, sweep_points=91,
                      angles=(15, 30, 45, 60, 75, 90, 120, 150), ratios=(0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 5.0)),
        "full": dict(pipeline=dict(_TINY, n_authors=50, facts_per_author=10, n_eval=40, base_epochs=60,
                                   ft_epochs=40, n_layer=6, n_embd=256, n_head=4),
                     n_pairs=100, batch=16, ga_steps=40, ga_lr=1e-3, sweep_points=181,
                     angles=(15, 30, 45, 60, 75, 90, 120, 150), ratios=(0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 5.0)),
    },
    knobs={
        "angle": Knob(60.0, "angle between g_R and g_F in degrees, for the highlighted picture", float, low=0.0,
                      high=180.0),
        "ratio": Knob(3.0, "norm ratio ||g_F|| / ||g_R|| for the highlighted picture", float, low=0.0, low_open=True,
                      high=100.0),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    3: "No. The cone is a statement about the vector d handed to the optimiser: <d, g_R> >= 0 and <d, g_F> <= 0. "
       "SGD steps along -lr d, so the first-order guarantee holds for the actual step. AdamW steps along "
       "-lr m_hat / (sqrt(v_hat) + eps), a coordinate-wise rescaling of a running average of past d's; a diagonal "
       "positive rescaling P of d keeps <P d, g> of the same sign only in special cases (e.g. when d and g are "
       "aligned coordinate by coordinate), and momentum mixes in old directions. So with AdamW the guarantee is "
       "approximate: NGDiff still fixes the ratio of the two task weights (c_R / c_F = ||g_F|| / ||g_R||), which is "
       "what matters for a scale-free optimiser, but a step can raise the retain loss. You can measure it: run "
       "NGDiff with optimizer='adamw', and compare the retain loss before and after each step on the same batch.",
}


# ----------------------------------------------------------------------------- implementation checks

def direction_checks(seed: int = 0) -> dict:
    """The NGDiff direction on cases with a known answer, and on random float64 pairs against the formula."""
    rows = []
    cases = {
        "orthogonal, ratio 2": (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0])),
        "parallel, ratio 3": (torch.tensor([2.0, 0.0]), torch.tensor([6.0, 0.0]), torch.tensor([0.0, 0.0])),
        "anti-parallel": (torch.tensor([0.0, 1.0]), torch.tensor([0.0, -5.0]), torch.tensor([0.0, 2.0])),
        "g_F = 0": (torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.6, 0.8])),
        "both 0": (torch.zeros(2), torch.zeros(2), torch.zeros(2)),
    }
    for name, (g_r, g_f, want) in cases.items():
        d = ngdiff_direction(g_r, g_f)
        rows.append({"case": name, "g_R": g_r.tolist(), "g_F": g_f.tolist(), "d": [round(float(x), 6) for x in d],
                     "expected": want.tolist(), "error": float((d - want).abs().max())})
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(50):
        g_r = torch.randn(1000, generator=gen, dtype=torch.float64) * 10 ** float(torch.empty(1).uniform_(-4, 4,
                                                                                                   generator=gen))
        g_f = torch.randn(1000, generator=gen, dtype=torch.float64) * 10 ** float(torch.empty(1).uniform_(-4, 4,
                                                                                                   generator=gen))
        want = g_r / g_r.norm() - g_f / g_f.norm()
        worst = max(worst, float((ngdiff_direction(g_r, g_f) - want).abs().max()))
    return {"rows": rows, "max_error": max(worst, max(r["error"] for r in rows))}


def first_order_table(angle: float, ratio: float):
    """First-order change of both losses for the step -d of each method, at one (angle, ratio)."""
    ch = first_order_changes(angle, ratio)
    return table([{"method": k, "change of L_R": v[0], "change of L_F": v[1],
                   "both tasks improve": v[0] <= 1e-12 and v[1] >= -1e-12} for k, v in ch.items()],
                 title=f"Steps -d at angle {angle:g} deg and ||g_F||/||g_R|| = {ratio:g} (first order, unit lr)")


def sweep_plane(points: int) -> dict:
    """:func:`plane_sweep` on ``points`` angles in [0, 180] and ``points`` log-spaced ratios in [0.1, 10]."""
    return plane_sweep(np.linspace(0, 180, points).tolist(), np.logspace(-1, 1, points).tolist())


def plane_summary(sweep: dict) -> dict:
    """Share of the (angle, ratio) grid where each method's step raises the retain loss / lowers the forget loss."""
    out = {}
    for name in ("GA", "GradDiff", "NGDiff"):
        out[name] = {"share: retain loss rises": float(np.mean(np.asarray(sweep[name]) > 1e-12)),
                     "share: forget loss falls": float(np.mean(np.asarray(sweep[f"{name}_forget"]) < -1e-12))}
    return out


# ----------------------------------------------------------------------------- real gradients

def measure_gradients(pipe_sizes: dict, seed: int, target_state: dict, n_pairs: int, batch: int, ga_steps: int,
                      ga_lr: float) -> dict:
    """Gradient pairs at the target model and at the end of a short GA run from it (where forgetting has begun)."""
    at_target = gradient_pairs(pipe_sizes, seed, target_state, n_pairs=n_pairs, batch=batch, run_seed=seed)
    ga = run_unlearning(pipe_sizes, seed, target_state, method="GA", lr=ga_lr, steps=ga_steps, eval_rouge=False,
                        keep_state=True, run_seed=seed)
    after = gradient_pairs(pipe_sizes, seed, ga["state"], n_pairs=n_pairs, batch=batch, run_seed=seed + 1)
    return {"target": at_target, f"after {ga_steps} GA steps": after,
            "ga_forget_loss": ga["logs"]["loss_forget"], "ga_retain_loss": ga["logs"]["loss_retain"]}


def gradient_table(measured: dict):
    """Per model: mean cos, median norm ratio, NGDiff's cone violations and GradDiff's share of steps out of it."""
    rows = []
    for name, p in measured.items():
        if not isinstance(p, dict):
            continue
        cos, ratio = np.asarray(p["cos"]), np.asarray(p["norm_ratio"])
        rows.append({"model": name, "batch pairs": len(cos), "mean cos(g_R, g_F)": float(cos.mean()),
                     "median ||g_F||/||g_R||": float(np.median(ratio)),
                     "NGDiff cone violations": int(np.sum((np.asarray(p["ngdiff_rel_retain"]) < -1e-6)
                                                          | (np.asarray(p["ngdiff_rel_forget"]) > 1e-6))),
                     "GradDiff raises L_R (share)": float(np.mean(np.asarray(p["graddiff_rel_retain"]) < 0))})
    return table(rows, title="Measured gradients of the tiny GPT")


def gradient_metrics(measured: dict) -> dict:
    pairs = [p for p in measured.values() if isinstance(p, dict)]
    viol = sum(int(np.sum((np.asarray(p["ngdiff_rel_retain"]) < -1e-6) | (np.asarray(p["ngdiff_rel_forget"]) > 1e-6)))
               for p in pairs)
    all_cos = np.concatenate([np.asarray(p["cos"]) for p in pairs])
    all_ratio = np.concatenate([np.asarray(p["norm_ratio"]) for p in pairs])
    gd = np.concatenate([np.asarray(p["graddiff_rel_retain"]) < 0 for p in pairs])
    predicted = all_ratio * all_cos > 1
    return {"real_ngdiff_cone_violations": viol, "real_graddiff_out_of_cone_share": float(gd.mean()),
            "real_graddiff_prediction_agreement": float(np.mean(gd == predicted)),
            "real_cos_mean": float(all_cos.mean()), "real_norm_ratio_median": float(np.median(all_ratio))}


# ----------------------------------------------------------------------------- exercises

def check_exercise_ngdiff_weights(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: (c_R, c_F) = (1/||g_R||, 1/||g_F||), 0 for a zero gradient."""
    gen = torch.Generator().manual_seed(3)
    cases = [(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])),
             (torch.randn(100, generator=gen), torch.randn(100, generator=gen) * 7),
             (torch.tensor([1.0, 1.0]), torch.zeros(2))]
    return check_exercise("NGDiff weights", attempt, ngdiff_weights, cases,
                          hint="c = 1 / g.norm() when the norm is positive, else 0.0; return a tuple (c_R, c_F).",
                          ctx=ctx)


def check_exercise_max_forget_weight(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: the largest c_F keeping g_R - c_F g_F out of the retain-loss-raising half space."""
    cases = [(0.5, 2.0), (1.0, 1.0), (0.1, 30.0), (-0.3, 5.0), (0.0, 2.0)]
    return check_exercise("largest safe forget weight", attempt, max_forget_weight, cases,
                          hint="<g_R - c g_F, g_R> = ||g_R||^2 (1 - c ratio cos); return math.inf when cos <= 0.",
                          ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "show_source", "table", "figure", "explore", "ngdiff_direction", "unit_vector",
    "cone_products", "direction_checks", "first_order_table", "sweep_plane", "plane_summary", "draw_plane",
    "draw_plane_sweep", "build_pipeline", "measure_gradients", "gradient_table", "gradient_metrics",
    "draw_gradient_scatter", "check_exercise_ngdiff_weights", "check_exercise_max_forget_weight",
]
