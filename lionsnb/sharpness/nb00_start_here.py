"""Backs ``notebooks/sharpness/00_start_here.ipynb``: its spec (sizes, knobs), tables, figures and exercise checks.

The algorithms live in the core modules of :mod:`lionsnb.sharpness`; this module only arranges them for the
notebook, which imports it as ``m``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from lionsnb.context import setup_for
from lionsnb.datasets import load_digits
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure
from lionsnb.sharpness import (
    TwoBasinSurface,
    ascent_vs_random,
    flip_radius,
    hessian_vector_product,
    load_mlp,
    power_iteration,
    power_iteration_check,
    predicted_flip_radius,
    sam_landscapes,
    sam_perturbation,
    slices_of_runs,
    stability_summary,
    summarise_mlp_runs,
    surface_lr_sweep,
    top_eigenvalue,
    train_mlp_runs,
    worst_case_curves,
    worst_case_loss,
)
from lionsnb.sharpness.plots import OUTCOME_TEXT, draw_lr_run, draw_mlp_runs, draw_sam, draw_slices, draw_stability
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="sharpness.nb00_start_here",
    title="Start here: gradient descent and sharpness",
    profiles={
        "smoke": dict(surface_steps=200, surface_lrs=(0.02, 0.05, 0.075, 0.085, 0.12, 0.5, 2.0, 3.0),
                      grid_points=61, rhos=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3), rho_curve_points=31,
                      n_train=600, hidden=32, mlp_steps=300, mlp_lrs=(0.1, 0.8), eval_every=50,
                      power_iters=15, slice_points=41),
        "teach": dict(surface_steps=500,
                      surface_lrs=(0.01, 0.02, 0.05, 0.07, 0.075, 0.08, 0.085, 0.09, 0.12, 0.2, 0.5, 1.0, 2.0, 3.0),
                      grid_points=121, rhos=(0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5), rho_curve_points=101,
                      n_train=None, hidden=64, mlp_steps=1500, mlp_lrs=(0.05, 0.2, 0.8, 1.2), eval_every=50,
                      power_iters=30, slice_points=81),
        "full": dict(surface_steps=1000,
                     surface_lrs=(0.01, 0.02, 0.05, 0.07, 0.075, 0.078, 0.08, 0.082, 0.085, 0.09, 0.12, 0.2, 0.5,
                                  1.0, 2.0, 3.0),
                     grid_points=161, rhos=(0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5), rho_curve_points=201,
                     n_train=None, hidden=128, mlp_steps=4000, mlp_lrs=(0.02, 0.05, 0.2, 0.8, 1.2), eval_every=50,
                     power_iters=40, slice_points=121),
    },
    knobs={
        "lr": Knob(0.5, "learning rate of the highlighted 2-D gradient-descent run", float, low=0.0, low_open=True,
                   high=10.0),
        "rho": Knob(0.15, "perturbation radius rho of SAM's worst-case loss", float, low=0.0, high=1.0),
    },
    datasets=("digits",),
)
setup = setup_for(SPEC)

#: model answers of the exercises without code (for teachers; `lionsnb answers start_here` prints them)
MODEL_ANSWERS = {
    3: "Flatter, in the usual measurements: mini-batch noise adds a random walk whose size grows with lr / batch "
       "size, and a sharp minimum amplifies it along its steep directions, so SGD is expelled from minima that "
       "full-batch GD could still reach (the 2 / lr bound becomes a stricter, noise-dependent one). In a copy of "
       "the notebook, replace the full-batch step of train_full_batch_gd by steps on random batches of 32 and 128 "
       "at the same learning rate: the final sharpness is typically lower for the smaller batch, and the "
       "sharpness curve stays further below 2 / lr (Keskar et al. 2017; Jastrzebski et al. 2018). The gap depends "
       "on the learning rate and the number of steps, so compare runs after the same number of epochs.",
}


# ----------------------------------------------------------------------------- model solutions (for teachers)

def _solution_top_eigenvalue(A, iters=100):
    """Power iteration from a random unit vector; the Rayleigh quotient at the end."""
    v = torch.randn(A.shape[0], dtype=A.dtype)
    v = v / v.norm()
    for _ in range(iters):
        v = A @ v
        v = v / v.norm()
    return float(v @ (A @ v))


def _solution_sam_perturbation(grad, rho):
    """rho g / (||g|| + 1e-12)."""
    norm = grad.norm() + 1e-12
    return rho * grad / norm


#: the exercises' model solutions, as a student would write them (`lionsnb assignments` puts them in the solution
#: regions of the nbgrader source version)
SOLUTIONS = {"my_top_eigenvalue": _solution_top_eigenvalue, "my_sam_perturbation": _solution_sam_perturbation}


# ----------------------------------------------------------------------------- tables

def minima_table(surface: TwoBasinSurface):
    """Position, loss and Hessian eigenvalues of the surface's two minima."""
    rows = []
    for which in ("sharp", "flat"):
        w = surface.minimum(which)
        eig = surface.hessian_eigenvalues(w)
        rows.append({"minimum": which, "w": [round(float(x), 3) for x in w], "loss": float(surface.loss(w)),
                     "eigenvalues of H": [round(float(x), 2) for x in eig], "2 / sharpness": 2 / float(eig[-1])})
    return table(rows, title="The two minima of the surface")


def power_table(rows: dict[str, dict]):
    """Power iteration against the exact eigenvalue, one row per test case."""
    return table([{"case": name, **row} for name, row in rows.items()],
                 title="Power iteration against the exact top eigenvalue")


def lr_sweep_table(runs: dict, sharp_lambda: float):
    """One row per learning rate of the 2-D sweep: lr x sharpness and where GD ended."""
    return table([{"lr": lr, "lr x sharpness (sharp minimum)": lr * sharp_lambda,
                   "outcome": OUTCOME_TEXT[run["outcome"]]} for lr, run in runs.items()],
                 title="Gradient descent started next to the sharp minimum")


def mlp_runs_table(mlp_runs: dict):
    """One row per learning rate of the full-batch MLP runs."""
    return table([{"lr": lr, "2 / lr": 2 / lr, "max sharpness": max(run["sharpness"]),
                   "final sharpness": run["sharpness"][-1], "final train loss": run["train_loss"][-1],
                   "test accuracy": run["test_acc"][-1], "diverged": run["diverged"]}
                  for lr, run in mlp_runs.items()], title="Full-batch GD on the digits MLP")


def suite_table(ctx) -> object:
    """What the run used of the suite's machinery: cache hits and misses, exercise statuses."""
    return table({"cache directory": str(ctx.cache.root), "cache hits": ctx.cache.hits,
                  "cache misses": ctx.cache.misses,
                  **{f"exercise: {name}": status for name, status in ctx.exercises.items()}},
                 title="The suite in this run")


# ----------------------------------------------------------------------------- exercises

def check_exercise_top_eigenvalue(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: power iteration on explicit symmetric matrices with a clear top eigenvalue."""
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    cases = [
        (torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)), 200),
        (q @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.0], dtype=torch.float64)) @ q.T, 200),
    ]
    return check_exercise("power iteration", attempt, top_eigenvalue, cases,
                          compare=lambda got, exp: abs(float(got) - exp) <= 1e-3 * abs(exp),
                          hint="normalise v after every product and return float(v @ (A @ v)).", ctx=ctx)


def check_exercise_sam_perturbation(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: e = rho g / (||g|| + 1e-12)."""
    gen = torch.Generator().manual_seed(2)
    cases = [(torch.tensor([3.0, 4.0]), 0.5), (torch.randn(50, generator=gen), 0.05), (torch.zeros(4), 0.1)]
    return check_exercise("SAM perturbation", attempt, sam_perturbation, cases,
                          hint="divide the gradient by its L2 norm plus 1e-12, then scale by rho.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "TwoBasinSurface", "power_iteration", "hessian_vector_product",
    "worst_case_loss", "surface_lr_sweep", "stability_summary", "worst_case_curves", "flip_radius",
    "predicted_flip_radius", "sam_landscapes", "train_mlp_runs", "slices_of_runs", "load_mlp",
    "power_iteration_check", "summarise_mlp_runs", "ascent_vs_random", "load_digits", "figure", "explore",
    "show_source", "table", "draw_lr_run", "draw_mlp_runs", "draw_sam", "draw_slices", "draw_stability",
    "minima_table", "power_table", "lr_sweep_table", "mlp_runs_table", "suite_table",
    "check_exercise_top_eigenvalue", "check_exercise_sam_perturbation",
]
