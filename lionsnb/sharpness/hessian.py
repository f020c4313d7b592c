"""Sharpness of a minimum: the Hessian's top eigenvalue by power iteration on Hessian-vector products."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def hessian_vector_product(loss: torch.Tensor, params: list[torch.Tensor], v: list[torch.Tensor]
                           ) -> list[torch.Tensor]:
    """H v for the Hessian H of ``loss`` w.r.t. ``params`` (Pearlmutter's trick: d/dw (g(w) . v)).

    ``loss`` must have been computed with a graph (``create_graph`` is used on the first derivative).
    """
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(grads, v))
    return list(torch.autograd.grad(dot, params, retain_graph=True))


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, iters: int = 20,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", tol: float = 0.0) -> tuple[float, torch.Tensor]:
    """Largest-magnitude eigenvalue of a symmetric operator and its unit eigenvector.

    Repeats v <- A v / ||A v|| from a random start; the Rayleigh quotient v.A v is the
    estimate.  For a Hessian near a minimum the top eigenvalue is positive and dominant,
    so this is its largest eigenvalue, the *sharpness* lambda_max.  Stops early when the
    estimate changes by less than ``tol`` (relative).
    """
    v = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    v = v / v.norm()
    estimate = 0.0
    for _ in range(iters):
        av = matvec(v)
        new = float(v @ av)
        norm = av.norm()
        if norm == 0:
            return 0.0, v
        v = av / norm
        if tol > 0 and abs(new - estimate) <= tol * abs(new):
            estimate = new
            break
        estimate = new
    return estimate, v


def top_hessian_eigenvalue(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           x: torch.Tensor, y: torch.Tensor, iters: int = 20, seed: int = 0,
                           tol: float = 1e-3) -> float:
    """lambda_max of the Hessian of the loss of ``model`` on (x, y) w.r.t. all trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def matvec(flat: torch.Tensor) -> torch.Tensor:
        parts = [c.view(s) for c, s in zip(torch.split(flat, sizes), shapes)]
        dot = sum((g * vi).sum() for g, vi in zip(grads, parts))
        hv = torch.autograd.grad(dot, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    gen = torch.Generator().manual_seed(seed)
    value, _ = power_iteration(matvec, sum(sizes), iters=iters, generator=gen,
                               dtype=params[0].dtype, device=params[0].device, tol=tol)
    return value


def exact_hessian(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The full Hessian (P x P) of the loss w.r.t. all trainable parameters; only for tiny models."""
    from torch.func import functional_call

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])

    def f(flat: torch.Tensor) -> torch.Tensor:
        tensors = {n: c.view(s) for n, c, s in zip(names, torch.split(flat, sizes), shapes)}
        return loss_fn(functional_call(model, tensors, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0)


def top_eigenvalue(A: torch.Tensor, iters: int = 100) -> float:
    """Largest-magnitude eigenvalue of a symmetric matrix by power iteration (the start-here exercise's reference)."""
    return power_iteration(lambda v: A @ v, A.shape[0], iters=iters, generator=torch.Generator().manual_seed(0),
                           dtype=A.dtype)[0]
