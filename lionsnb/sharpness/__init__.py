"""Start here: gradient descent, sharpness and the worst-case loss that SAM minimises (the suite's primer).

The core the primer notebook (``notebooks/sharpness/00_start_here.ipynb``, module :mod:`.nb00_start_here`) teaches
and the SAM series reuses:

* a minimum's *sharpness* is the top eigenvalue lambda_max of the loss Hessian, measured by power iteration on
  Hessian-vector products (:mod:`.hessian`);
* gradient descent with step size eta can only converge to minima with lambda_max < 2 / eta (linear stability), so
  large steps select flat minima (:mod:`.surfaces`, :mod:`.experiments`);
* SAM's objective max_{||e|| <= rho} L(w + e) ~ L(w) + rho ||grad L|| (first order), and ~ L(w*) + rho^2 lambda_max
  / 2 at a minimum, so it prefers flat minima once rho is large enough.
"""
from __future__ import annotations

from lionsnb.sharpness.analysis import ascent_vs_random, summarise_mlp_runs
from lionsnb.sharpness.experiments import (
    flip_radius,
    load_mlp,
    loss_slices,
    power_iteration_check,
    predicted_flip_radius,
    sam_landscape,
    sam_landscapes,
    slices_of_runs,
    stability_summary,
    surface_lr_sweep,
    train_full_batch_gd,
    train_mlp_runs,
    worst_case_curves,
)
from lionsnb.sharpness.hessian import (
    exact_hessian,
    hessian_vector_product,
    power_iteration,
    top_eigenvalue,
    top_hessian_eigenvalue,
)
from lionsnb.sharpness.surfaces import (
    TwoBasinSurface,
    gradient_descent,
    quadratic_worst_case,
    sam_perturbation,
    worst_case_loss,
)

__all__ = [
    "TwoBasinSurface", "gradient_descent", "worst_case_loss", "quadratic_worst_case", "sam_perturbation",
    "hessian_vector_product", "power_iteration", "top_hessian_eigenvalue", "top_eigenvalue", "exact_hessian",
    "surface_lr_sweep", "stability_summary", "worst_case_curves", "flip_radius", "predicted_flip_radius",
    "sam_landscape", "sam_landscapes", "train_full_batch_gd", "train_mlp_runs", "load_mlp", "loss_slices",
    "slices_of_runs", "power_iteration_check", "summarise_mlp_runs", "ascent_vs_random",
]
