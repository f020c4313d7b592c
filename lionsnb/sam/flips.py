"""What a perturbation does to a classifier: the points it flips from right to wrong.

BiSAM (Xie et al., ICML 2024) argues that SAM's maximiser should raise the 0-1 loss, and diagnoses a perturbation
by the training points it *flips*: classified correctly at w, misclassified at w + e. These helpers compute SAM's
first step for any per-sample loss (:func:`perturbation`), apply it temporarily (:func:`perturbed`), and count
flips batch by batch as SAM does during training (:func:`count_flips`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from lionsnb.sam.optim import EPS


def perturbation(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, rho: float
                 ) -> list[torch.Tensor]:
    """SAM's first step for an arbitrary loss: e = rho g / (||g|| + 1e-12), g = grad of the mean loss at w.

    With ``loss_fn`` = the training loss this is SAM's perturbation; with BiSAM's Q it is BiSAM's.
    One tensor per parameter; the model is not changed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model(x), y).mean(), params)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return [g * (rho / (norm + EPS)) for g in grads]


@contextlib.contextmanager
def perturbed(model: nn.Module, e: Sequence[torch.Tensor]) -> Iterator[nn.Module]:
    """Inside the block the model's parameters are w + e; afterwards w is restored by copy."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, ei in zip(params, e):
                p.add_(ei)
        yield model
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The predicted class of every row of ``x``."""
    return model(x).argmax(-1)


def flips_from_predictions(clean: torch.Tensor, perturbed_pred: torch.Tensor, y: torch.Tensor) -> dict:
    """Counts: errors at w, errors at w + e, flips (right at w, wrong at w + e) and fixes (the reverse)."""
    wrong_clean, wrong_pert = clean != y, perturbed_pred != y
    return {"clean_errors": int(wrong_clean.sum()), "errors": int(wrong_pert.sum()),
            "flips": int((wrong_pert & ~wrong_clean).sum()), "fixed": int((wrong_clean & ~wrong_pert).sum())}


def count_flips(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, rhos: Sequence[float],
                batch_size: int | None = None, seed: int = 0) -> dict:
    """For each rho: how many points the perturbation of ``loss_fn`` misclassifies, per batch as in training.

    The points are split into batches (a seeded permutation; ``None`` = one batch); for each batch
    e is computed from that batch's gradient, as SAM and BiSAM do, and the batch is classified
    at w + e.  Returns ``{rho: flips_from_predictions(...)}``.
    """
    clean = predict(model, x)
    n = len(x)
    bs = n if batch_size is None else batch_size
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if bs < n else torch.arange(n)
    pert = {float(r): torch.empty_like(y) for r in rhos}
    for i in range(0, n, bs):
        idx = order[i:i + bs]
        unit = perturbation(model, loss_fn, x[idx], y[idx], 1.0)
        for rho in pert:
            with perturbed(model, [rho * u for u in unit]):
                pert[rho][idx] = predict(model, x[idx])
    return {rho: flips_from_predictions(clean, p, y) for rho, p in pert.items()}


def misclassified_weight_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> float:
    """Share of the per-sample gradient mass (L1 norm of d loss_i / d logits_i) carried by misclassified points.

    The perturbation is J^T of these vectors: a share near 1 means it mainly pushes points that are
    already wrong further, which cannot raise the 0-1 loss.
    """
    logits = model(x).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), logits)
    mass = grad.abs().sum(-1)
    wrong = logits.detach().argmax(-1) != y
    return float(mass[wrong].sum() / mass.sum().clamp_min(1e-30))
