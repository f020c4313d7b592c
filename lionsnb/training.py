"""A small, explicit training loop that every series can reuse.

The per-batch update is a function ``step(model, optimizer, x, y, loss_fn) -> loss``,
so methods that need two passes per batch (SAM and friends) plug in their own step
and keep the rest: seeded shuffling, evaluation, history and a progress bar.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepFn = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor, LossFn], float]


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             loss_fn: LossFn) -> float:
    """One plain update: zero grads, forward, backward, optimizer step; returns the batch loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y).mean()  # per-sample losses are averaged
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn = F.cross_entropy,
             batch_size: int = 2048) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on (x, y), in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        total_loss += float(loss_fn(logits, yb).mean()) * len(xb)
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


@dataclass
class History:
    """Per-epoch records of a training run."""

    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, *, epochs: int,
        optimizer: torch.optim.Optimizer, batch_size: int | None = 64, x_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None, loss_fn: LossFn = F.cross_entropy, step: StepFn = sgd_step,
        seed: int = 0, progress: bool = True, desc: str = "training") -> History:
    """Train ``model`` for ``epochs`` passes over (x_train, y_train) and evaluate after each epoch.

    ``batch_size=None`` means full-batch gradient descent.  Shuffling uses its own
    generator seeded with ``seed``, so two calls with the same arguments train identically.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    from lionsnb.progress import progress as progress_bar

    device = next(model.parameters()).device
    x_train, y_train = x_train.to(device), y_train.to(device)
    n = len(x_train)
    bs = n if batch_size is None else batch_size
    generator = torch.Generator().manual_seed(seed)
    history = History()
    bar = progress_bar(range(epochs), desc=desc, unit="epoch", disable=not progress)
    model.train()
    for _ in bar:
        order = torch.randperm(n, generator=generator).to(device) if bs < n else torch.arange(n, device=device)
        losses = []
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            losses.append(step(model, optimizer, x_train[idx], y_train[idx], loss_fn))
        history.train_loss.append(sum(losses) / len(losses))
        if x_test is not None and y_test is not None:
            loss, acc = evaluate(model, x_test, y_test, loss_fn)
            history.test_loss.append(loss)
            history.test_acc.append(acc)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", test_acc=f"{acc:.3f}")
    bar.close()
    return history
