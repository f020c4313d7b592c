"""Start here: gradient descent, sharpness and the worst-case loss that SAM minimises.

The primer of the suite (notebooks/00_start_here).  It teaches the ideas the SAM
series builds on:

* a minimum's *sharpness* is the top eigenvalue lambda_max of the loss Hessian,
  measured by power iteration on Hessian-vector products (:mod:`.hessian`);
* gradient descent with step size eta can only converge to minima with
  lambda_max < 2 / eta (linear stability), so large steps select flat minima
  (:mod:`.surfaces`, :mod:`.experiments`);
* SAM's objective max_{||e|| <= rho} L(w + e) ~ L(w) + rho ||grad L|| (first order),
  and ~ L(w*) + rho^2 lambda_max / 2 at a minimum, so it prefers flat minima once rho
  is large enough.
"""
from __future__ import annotations

import torch

from lionsnb.params import Knob, MethodSpec

SPEC = MethodSpec(
    name="sharpness",
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

from lionsnb.context import setup_for  # noqa: E402
from lionsnb.datasets import load_digits  # noqa: E402
from lionsnb.plotting import figure  # noqa: E402
from lionsnb.widgets import explore  # noqa: E402
from lionsnb.sharpness.analysis import (ascent_vs_random, check_exercise_sam_perturbation,  # noqa: E402
                                        check_exercise_top_eigenvalue, summarise_mlp_runs)
from lionsnb.sharpness.experiments import (flip_radius, load_mlp, loss_slices, power_iteration_check,  # noqa: E402
                                           predicted_flip_radius, sam_landscape, stability_summary,
                                           surface_lr_sweep, train_full_batch_gd, worst_case_curves)
from lionsnb.sharpness.hessian import (exact_hessian, hessian_vector_product, power_iteration,  # noqa: E402
                                       top_hessian_eigenvalue)
from lionsnb.sharpness.plots import (OUTCOME_TEXT, draw_lr_run, draw_mlp_runs, draw_sam, draw_slices,  # noqa: E402
                                     draw_stability)
from lionsnb.sharpness.surfaces import (TwoBasinSurface, gradient_descent, quadratic_worst_case,  # noqa: E402
                                        worst_case_loss)

setup = setup_for(SPEC)

def sam_perturbation(grad: torch.Tensor, rho: float) -> torch.Tensor:
    """SAM's first-order worst-case perturbation e = rho g / ||g||_2 (Foret et al. 2021, Eq. 2)."""
    return rho * grad / (grad.norm() + 1e-12)

def top_eigenvalue(A: torch.Tensor, iters: int = 100) -> float:
    """Largest-magnitude eigenvalue of a symmetric matrix by power iteration (reference for the exercise)."""
    return power_iteration(lambda v: A @ v, A.shape[0], iters=iters, generator=torch.Generator().manual_seed(0),
                           dtype=A.dtype)[0]

__all__ = [
    "SPEC", "setup", "sam_perturbation", "top_eigenvalue", "TwoBasinSurface", "gradient_descent",
    "worst_case_loss", "quadratic_worst_case", "power_iteration", "hessian_vector_product",
    "top_hessian_eigenvalue", "exact_hessian", "surface_lr_sweep", "stability_summary", "worst_case_curves",
    "flip_radius", "predicted_flip_radius", "sam_landscape", "train_full_batch_gd", "load_mlp", "loss_slices",
    "power_iteration_check", "load_digits", "figure", "explore", "summarise_mlp_runs", "ascent_vs_random",
    "check_exercise_top_eigenvalue", "check_exercise_sam_perturbation", "OUTCOME_TEXT", "draw_lr_run",
    "draw_mlp_runs", "draw_sam", "draw_slices", "draw_stability",
]
