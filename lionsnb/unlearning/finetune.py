"""Fine-tuning on question-answer pairs (the TOFU pipeline's first two stages) and batched forward passes.

TOFU's pipeline: fine-tune the base model on every author (the **target**, the model to unlearn) and, separately, on
the retain authors only (the **retain model**, the oracle of Forget Quality); then unlearn the target. The loss is
:func:`~lionsnb.unlearning.lm_loss` on the answer tokens + EOS (questions masked), AdamW as in TOFU.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lionsnb.unlearning.losses import lm_loss, sequence_nll
from lionsnb.unlearning.models import output_ids, trainable_parameters
from lionsnb.unlearning.text import Encoded


def model_logits(model: nn.Module, batch: Encoded) -> torch.Tensor:
    """``model(input_ids, attention_mask).logits`` on the model's device."""
    dev = next(model.parameters()).device
    return model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev)).logits


def batch_lm_loss(model: nn.Module, batch: Encoded) -> torch.Tensor:
    """:func:`lm_loss` of one batch (labels mapped to the model's output ids)."""
    logits = model_logits(model, batch)
    return lm_loss(logits, output_ids(model, batch.labels.to(logits.device)))


@torch.no_grad()
def per_token_losses(model: nn.Module, enc: Encoded, batch_size: int = 64) -> torch.Tensor:
    """TOFU's per-answer loss: :func:`sequence_nll` / number of labelled tokens, one per row, float64 ``[N]``."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(enc), batch_size):
            b = enc.rows(range(start, min(start + batch_size, len(enc))))
            logits = model_logits(model, b)
            s = sequence_nll(logits.double(), output_ids(model, b.labels.to(logits.device)))
            out.append(s.cpu() / b.n_labels.double())
    finally:
        model.train(was_training)
    return torch.cat(out)


def finetune(model: nn.Module, data: Encoded, *, epochs: int, lr: float, batch_size: int = 16,
             weight_decay: float = 0.01, seed: int = 0, warmup_frac: float = 0.1,
             progress: Callable | None = None) -> list[float]:
    """AdamW on :func:`lm_loss` over shuffled mini-batches (linear warm-up, then constant lr); returns the mean loss of
    every epoch. Only the trainable parameters move. ``progress``: an optional wrapper of the epoch iterator."""
    if epochs < 1 or len(data) == 0:
        raise ValueError(f"finetune needs epochs >= 1 and data (got epochs={epochs}, {len(data)} rows)")
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameter")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = int(np.ceil(len(data) / batch_size))
    total = epochs * steps_per_epoch
    warm = max(1, int(warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    epochs_iter: Sequence[int] | object = range(epochs)
    if progress is not None:
        epochs_iter = progress(epochs_iter)
    for _ in epochs_iter:
        order = torch.randperm(len(data), generator=gen)
        losses = []
        for start in range(0, len(data), batch_size):
            batch = data.rows(order[start:start + batch_size])
            loss = batch_lm_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
    model.eval()
    return history
