"""Training runs, sharpness and loss landscapes shared by the SAM-series notebooks."""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lionsnb.datasets import Split
from lionsnb.sam.data import build_model
from lionsnb.sam.losses import smooth_cross_entropy
from lionsnb.sam.steps import SEQUENTIAL_GRADIENTS, make_optimizer
from lionsnb.sharpness import top_hessian_eigenvalue
from lionsnb.training import evaluate, fit


def sharpness(model: nn.Module, data: Split, n: int = 1000, iters: int = 20, seed: int = 0) -> float:
    """lambda_max of the cross-entropy Hessian on the first ``n`` training points (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x, y = data.x_train[:n].to(device), data.y_train[:n].to(device)
    value = top_hessian_eigenvalue(model, F.cross_entropy, x, y, iters=iters, seed=seed)
    model.train(was_training)
    return value


def train_run(data: Split, method: str, *, rho: float = 0.0, lam: float = 0.2, model_kind: str = "mlp",
              width: int = 256, epochs: int = 10, lr: float = 0.05, batch_size: int = 128, seed: int = 0,
              power_iters: int = 20, device: torch.device | str = "cpu", smoothing: float = 0.1,
              progress: bool = True) -> dict:
    """Train one model with ``method`` (sgd | sam | asam | bisam_log | bisam_tanh | sampa) and measure it.

    Returns per-epoch test accuracy and loss, the sequential gradient evaluations after each
    epoch (the critical path: SGD 1, SAM 2, SAMPa 1 per step), final sharpness, wall time and
    the final weights.  Momentum 0.9, weight decay 5e-4 and smoothed cross-entropy as in the
    reference code.
    """
    torch.manual_seed(seed)
    model = build_model(model_kind, data, width).to(device)
    loss_fn = functools.partial(smooth_cross_entropy, smoothing=smoothing)
    opt, step = make_optimizer(method, model, loss_fn, lr=lr, rho=rho, lam=lam)
    start = time.perf_counter()
    hist = fit(model, data.x_train, data.y_train, epochs=epochs, optimizer=opt, step=step, loss_fn=loss_fn,
               batch_size=batch_size, x_test=data.x_test, y_test=data.y_test, seed=seed, progress=progress,
               desc=f"{method} rho={rho:g}" + (f" lam={lam:g}" if method == "sampa" else "") + f" seed={seed}")
    seconds = time.perf_counter() - start
    steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
    seq = SEQUENTIAL_GRADIENTS["bisam" if method.startswith("bisam") else "sam" if method == "asam" else method]
    return {
        "method": method, "rho": rho, "lam": lam, "seed": seed, "test_acc": hist.test_acc,
        "test_loss": hist.test_loss, "train_loss": hist.train_loss,
        "sequential_gradients": [seq * steps_per_epoch * (e + 1) for e in range(epochs)],
        "sharpness": sharpness(model, data, iters=power_iters, seed=seed), "seconds": seconds,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def load_run_model(run: dict, data: Split, model_kind: str = "mlp", width: int = 256) -> nn.Module:
    model = build_model(model_kind, data, width)
    model.load_state_dict(run["state"])
    return model.eval()


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction with filter normalisation (Li et al., NeurIPS 2018): every filter (row of a
    weight matrix, output channel of a convolution) is scaled to the norm of the same filter of the
    weights; biases and BatchNorm parameters get 0."""
    direction = []
    for p in model.parameters():
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        w_norm = p.detach().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1)
        scale = (w_norm / (d_norm + 1e-10)).view(-1, *([1] * (p.dim() - 1)))
        direction.append(d * scale)
    return direction


@torch.no_grad()
def loss_surface(model: nn.Module, data: Split, directions: Sequence[list[torch.Tensor]],
                 coords: Sequence[float], n: int = 2000) -> torch.Tensor:
    """Training cross-entropy at w + a d1 (1 direction: shape (len,)) or w + a d1 + b d2 (2: (len, len))."""
    model.eval()
    x, y = data.x_train[:n], data.y_train[:n]
    base = [p.detach().clone() for p in model.parameters()]
    coords = list(coords)

    def loss_at(shift: Callable[[int], torch.Tensor]) -> float:
        for i, (p, w) in enumerate(zip(model.parameters(), base)):
            p.copy_(w + shift(i))
        return float(F.cross_entropy(model(x), y))

    if len(directions) == 1:
        (d1,) = directions
        out = torch.tensor([loss_at(lambda i: a * d1[i]) for a in coords])
    else:
        d1, d2 = directions
        out = torch.tensor([[loss_at(lambda i: a * d1[i] + b * d2[i]) for a in coords] for b in coords])
    for p, w in zip(model.parameters(), base):
        p.copy_(w)
    return out


def ascent_increase(model: nn.Module, data: Split, rho: float, adaptive: bool, n: int = 2000) -> float:
    """L(w + e) - L(w) for SAM's (adaptive=False) or ASAM's (True) first-order perturbation e."""
    from lionsnb.sam.optim import SAM

    model.eval()
    x, y = data.x_train[:n], data.y_train[:n]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=0.0)
    opt.zero_grad()
    base = F.cross_entropy(model(x), y)
    base.backward()
    opt.first_step(zero_grad=True)
    with torch.no_grad():
        perturbed = float(F.cross_entropy(model(x), y))
    for p in model.parameters():  # restore w exactly
        if "w" in opt.state[p]:
            with torch.no_grad():
                p.copy_(opt.state[p].pop("w"))
    return perturbed - float(base.detach())


def rescale_relu_mlp(model: nn.Module, c: float) -> nn.Module:
    """A copy of a ReLU MLP (without BatchNorm) with layer 1 (weights and bias) times c and layer 2's
    weights divided by c: the same function (ReLU is positively homogeneous), other weights."""
    import copy

    new = copy.deepcopy(model)
    linears = [m for m in new.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linears[0].weight.mul_(c)
        linears[0].bias.mul_(c)
        linears[1].weight.div_(c)
    return new


def summarise(runs: dict, key: Callable[[dict], float]) -> tuple[float, float]:
    """Mean and standard deviation of ``key(run)`` over runs."""
    values = torch.tensor([key(r) for r in runs], dtype=torch.float64)
    return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0


__all__ = ["sharpness", "train_run", "load_run_model", "filter_normalized_direction", "loss_surface",
           "ascent_increase", "rescale_relu_mlp", "summarise", "evaluate"]
