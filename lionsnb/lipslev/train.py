"""1-Lipschitz training of the LipsLev CNN (Eq. 7; official ``train.py``) and the regularised baseline.

* 1-Lipschitz by construction: the model divides each layer by its own constant inside ``forward``
  (``LipsLevCNN(lipschitz=True)``), gradients flow through the normalisers, and the loss is plain
  cross-entropy. Official settings: SGD, momentum 0.9, lr 100 (the normalised function is scale-invariant
  in the weights, so the raw weights need large steps), one triangular cyclic schedule over the run
  (from 0 up to lr and back), stepped per batch; batch 128; no clipping; 30 epochs.
* Regularised baseline (paper Table 3, ``ConvModel``): raw weights (``lipschitz=False``) trained with
  CE + lambda * M(C) prod M(K) M(E), the global Lipschitz bound of the margins up to the head pairs.

Training may truncate sentences to ``max_len`` to save time (the official scripts pad/truncate to 1000);
certification never truncates.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.lipslev.certify import pad_batch
from lionsnb.lipslev.data import TextSplit
from lionsnb.lipslev.model import LipsLevCNN, dual, pairwise_distances
from lionsnb.progress import progress as progress_bar

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cyclic", "constant")


def triangle(step: int, total: int) -> float:
    """The one-cycle triangular factor: 0 at the start, 1 in the middle, back to 0 at the end."""
    if total <= 1:
        return 1.0
    return max(0.0, 1.0 - abs(2.0 * step / (total - 1) - 1.0))


def lipschitz_penalty(model: LipsLevCNN) -> torch.Tensor:
    """M(C) prod M(K) M(E) of the raw weights (the regulariser of the baseline)."""
    constants = model.constants()
    return torch.stack(list(constants.values())).prod()


@torch.no_grad()
def head_spread(model: LipsLevCNN) -> float:
    """(max - min) / max of the pairwise head distances ||c_i - c_j||_r: 0 for an exact regular simplex."""
    _, _, head = model.effective_weights()
    d = pairwise_distances(head, head, dual(model.p))
    off = d[~torch.eye(len(d), dtype=torch.bool)]
    return float((off.max() - off.min()) / off.max())


@torch.no_grad()
def accuracy(model: LipsLevCNN, seqs: Sequence[Sequence[int]], labels: Sequence[int], batch_size: int = 256,
             device: str | torch.device = "cpu") -> float:
    model.eval()
    correct = 0
    for start in range(0, len(seqs), batch_size):
        ids = pad_batch(seqs[start:start + batch_size]).to(device)
        pred = model(ids).argmax(1).cpu()
        correct += int((pred == torch.as_tensor(labels[start:start + batch_size])).sum())
    return correct / max(len(seqs), 1)


def train(model: LipsLevCNN, data: TextSplit, *, epochs: int = 5, batch_size: int = 128, lr: float = 100.0,
          momentum: float = 0.9, optimizer: str = "sgd", schedule: str = "cyclic", max_len: int | None = None,
          reg_lambda: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
          eval_data: TextSplit | None = None, progress: bool = True) -> dict:
    """Train in place; returns the history (per epoch: loss, accuracies, M(E), M(K), M(C), head spread, lr)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer = {optimizer!r}: use one of {OPTIMIZERS}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule = {schedule!r}: use one of {SCHEDULES}")
    if reg_lambda and model.lipschitz:
        raise ValueError("reg_lambda is for the regularised baseline: build the model with lipschitz=False")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("need epochs >= 1, batch_size >= 1 and lr > 0")
    model.to(device)
    seqs = [model.alphabet.encode(t)[:max_len] if max_len else model.alphabet.encode(t) for t in data.texts]
    labels = torch.as_tensor(data.labels)
    eval_seqs = [model.alphabet.encode(t) for t in eval_data.texts] if eval_data is not None else None
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(seqs) / batch_size)
    total = epochs * steps_per_epoch
    factor = (lambda s: triangle(s, total)) if schedule == "cyclic" else (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list] = {k: [] for k in ("epoch", "loss", "train_acc", "eval_acc", "M(E)", "M(K)", "M(C)",
                                                 "head_spread", "lr", "seconds")}
    start = time.perf_counter()
    bar = progress_bar(range(epochs), desc="training", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(seqs), generator=generator)
        losses, hits = [], 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            ids = pad_batch([seqs[i] for i in idx]).to(device)
            y = labels[idx].to(device)
            logits = model(ids)
            loss = F.cross_entropy(logits, y)
            if reg_lambda:
                loss = loss + reg_lambda * lipschitz_penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            hits += int((logits.argmax(1) == y).sum())
        with torch.no_grad():
            constants = {k: float(v) for k, v in model.constants().items()}
        history["epoch"].append(epoch + 1)
        history["loss"].append(float(np.mean(losses)))
        history["train_acc"].append(hits / len(seqs))
        history["eval_acc"].append(accuracy(model, eval_seqs, eval_data.labels, device=device)
                                   if eval_seqs is not None else float("nan"))
        history["M(E)"].append(constants["M(E)"])
        history["M(K)"].append(float(np.prod([v for k, v in constants.items() if k.startswith("M(K")])))
        history["M(C)"].append(constants["M(C)"])
        history["head_spread"].append(head_spread(model))
        history["lr"].append(opt.param_groups[0]["lr"])
        history["seconds"].append(time.perf_counter() - start)
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", acc=f"{history['train_acc'][-1]:.3f}")
    model.eval()
    return history
