"""Per-batch update functions for :func:`lionsnb.training.fit`: SGD, SAM/ASAM, BiSAM and SAMPa.

Each has the signature ``step(model, optimizer, x, y, loss_fn) -> loss`` and counts the
*sequential* gradient evaluations it needs (the critical path): SGD 1, SAM and BiSAM 2,
SAMPa 1 when its two independent gradients run in parallel.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lionsnb.sam.losses import bisam_loss
from lionsnb.sam.optim import SAM, SAMPa, disable_running_stats, enable_running_stats
from lionsnb.training import sgd_step

#: sequential gradient evaluations per update (two devices for SAMPa)
SEQUENTIAL_GRADIENTS = {"sgd": 1, "sam": 2, "bisam": 2, "sampa": 1}


def sam_step(model: nn.Module, optimizer: SAM, x: torch.Tensor, y: torch.Tensor,
             loss_fn: Callable, perturbation_loss: Callable | None = None) -> float:
    """One SAM update on one batch (both passes on the same batch).

    Pass 1 (BN running statistics updated) differentiates ``perturbation_loss`` (default:
    the training loss) at w; pass 2 (running statistics frozen) differentiates the training
    loss at w + e; the base optimizer steps with that gradient at the restored w.
    Returns the training loss at w + e (SAM's objective on this batch).
    """
    enable_running_stats(model)
    (perturbation_loss or loss_fn)(model(x), y).mean().backward()
    optimizer.first_step(zero_grad=True)
    disable_running_stats(model)
    perturbed = loss_fn(model(x), y).mean()
    perturbed.backward()
    optimizer.second_step(zero_grad=True)
    enable_running_stats(model)
    return float(perturbed.detach())


def bisam_step(kind: str = "log", mu: float = 1.0, alpha: float = 0.1) -> Callable:
    """A SAM step whose first pass differentiates BiSAM's lower bound (``kind`` "log" or "tanh")."""
    def step(model, optimizer, x, y, loss_fn):
        return sam_step(model, optimizer, x, y, loss_fn,
                        perturbation_loss=lambda logits, t: bisam_loss(logits, t, kind, mu, alpha))

    return step


def sampa_step(model: nn.Module, optimizer: SAMPa, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> float:
    """One SAMPa update (the optimizer holds its model and loss)."""
    return optimizer.step(x, y)


def make_optimizer(name: str, model: nn.Module, loss_fn: Callable, lr: float, rho: float = 0.05,
                   lam: float = 0.2, momentum: float = 0.9, weight_decay: float = 5e-4, adaptive: bool = False,
                   mu: float = 1.0, alpha: float = 0.1):
    """(optimizer, step function) for ``name`` in sgd | sam | asam | bisam_log | bisam_tanh | sampa.

    ``mu`` and ``alpha`` are BiSAM's surrogate parameters; ``lam`` is SAMPa's weight.
    """
    sgd_kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), **sgd_kwargs), sgd_step
    if name in ("sam", "asam"):
        return SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive or name == "asam",
                   **sgd_kwargs), sam_step
    if name in ("bisam_log", "bisam_tanh"):
        return (SAM(model.parameters(), torch.optim.SGD, rho=rho, **sgd_kwargs),
                bisam_step(name.split("_")[1], mu, alpha))
    if name == "sampa":
        return SAMPa(model, loss_fn, rho=rho, lam=lam, **sgd_kwargs), sampa_step
    raise ValueError(f"unknown optimizer {name!r}: use sgd, sam, asam, bisam_log, bisam_tanh or sampa")
