"""Summaries of the start-here experiments: the MLP runs' metrics and SAM's ascent against random directions."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lionsnb.datasets import Split
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
