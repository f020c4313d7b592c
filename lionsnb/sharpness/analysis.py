"""Summaries and exercise checks of the start-here notebook."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from lionsnb.datasets import Split
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.models import flat_parameters


def summarise_mlp_runs(mlp_runs: dict) -> dict:
    """Metrics of the full-batch GD runs: sharpness and accuracy at the smallest/largest stable lr.

    ``flatness_ratio`` = final sharpness at the smallest lr / at the largest stable lr;
    ``max_final_sharpness_times_lr`` = max over stable runs of lr x final sharpness (the
    stability bound says < 2).  Diverged runs are counted, not used.
    """
    stable = sorted(lr for lr, run in mlp_runs.items() if not run["diverged"])
    if not stable:
        raise RuntimeError("every GD run diverged: lower the learning rates of this profile")
    lo, hi = mlp_runs[stable[0]], mlp_runs[stable[-1]]
    metrics = {
        "sharpness_smallest_lr": lo["sharpness"][-1],
        "sharpness_largest_lr": hi["sharpness"][-1],
        "flatness_ratio": lo["sharpness"][-1] / hi["sharpness"][-1],
        "max_final_sharpness_times_lr": max(lr * mlp_runs[lr]["sharpness"][-1] for lr in stable),
        "test_acc_smallest_lr": lo["test_acc"][-1],
        "test_acc_largest_lr": hi["test_acc"][-1],
        "diverged_runs": len(mlp_runs) - len(stable),
    }
    return {"stable_lrs": stable, "metrics": metrics}


def _reference_top_eigenvalue(A: torch.Tensor, iters: int = 100) -> float:
    from lionsnb.sharpness import top_eigenvalue

    return top_eigenvalue(A, iters)


def check_exercise_top_eigenvalue(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: power iteration on explicit symmetric matrices with a clear top eigenvalue."""
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    cases = [
        (torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)), 200),
        (q @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.0], dtype=torch.float64)) @ q.T, 200),
    ]
    return check_exercise("power iteration", attempt, _reference_top_eigenvalue, cases,
                          compare=lambda got, exp: abs(float(got) - exp) <= 1e-3 * abs(exp),
                          hint="normalise v after every product and return float(v @ (A @ v)).", ctx=ctx)


def check_exercise_sam_perturbation(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: e = rho g / (||g|| + 1e-12)."""
    from lionsnb.sharpness import sam_perturbation

    gen = torch.Generator().manual_seed(2)
    cases = [(torch.tensor([3.0, 4.0]), 0.5), (torch.randn(50, generator=gen), 0.05), (torch.zeros(4), 0.1)]
    return check_exercise("SAM perturbation", attempt, sam_perturbation, cases,
                          hint="divide the gradient by its L2 norm plus 1e-12, then scale by rho.", ctx=ctx)


@torch.no_grad()
def _loss_at(model, split: Split, w: torch.Tensor) -> float:
    torch.nn.utils.vector_to_parameters(w, model.parameters())
    return float(F.cross_entropy(model(split.x_train), split.y_train))


def ascent_vs_random(model, split: Split, perturb: Callable[[torch.Tensor, float], torch.Tensor], rho: float,
                     seed: int = 0, n_random: int = 20) -> dict:
    """Loss increase at w + perturb(g, rho) versus the best of ``n_random`` random directions of norm rho."""
    params = list(model.parameters())
    loss = F.cross_entropy(model(split.x_train), split.y_train)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params)])
    w0 = flat_parameters(model)
    base = _loss_at(model, split, w0)
    sam = _loss_at(model, split, w0 + perturb(g, rho)) - base
    gen = torch.Generator().manual_seed(seed)
    best = -float("inf")
    for _ in range(n_random):
        d = torch.randn(w0.shape, generator=gen)
        best = max(best, _loss_at(model, split, w0 + rho * d / d.norm()) - base)
    torch.nn.utils.vector_to_parameters(w0, model.parameters())
    return {"sam": sam, "random_best": best, "n_random": n_random}
