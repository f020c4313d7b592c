"""Experiment runners of the series: module-level functions of plain arguments, so that ``ctx.cached`` can key and
store their results (dicts of numbers, lists and tensors).

* :func:`run_unlearning`: one method on the pipeline's target model, with per-step logs and evaluations
  (TOFU numbers, Forget Quality against the retain model) before, during and after.
* :func:`gradient_pairs`: g_R and g_F of a model on many batch pairs: their cosine, norm ratio and the cone
  products of NGDiff and GradDiff (the geometry measured on real gradients).
* :func:`summarise_eval`: the numbers of an evaluation a notebook plots (MU, FQ, mean losses, truth ratios).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lionsnb.unlearning.evaluation import membership_auc
from lionsnb.unlearning.finetune import model_logits
from lionsnb.unlearning.geometry import cone_products, ngdiff_direction
from lionsnb.unlearning.losses import lm_loss
from lionsnb.unlearning.metrics import forget_quality, ks_statistic
from lionsnb.unlearning.models import output_ids, trainable_parameters
from lionsnb.unlearning.pipeline import prepare
from lionsnb.unlearning.trainer import UnlearnConfig, UnlearningTrainer


def summarise_eval(res: dict) -> dict[str, Any]:
    """The plotted numbers of one evaluation: Model Utility (if ROUGE ran), Forget Quality (if the retain model's
    ratios were given), the mean per-token NLL of each set, the nine parts and the forget truth ratios."""
    per = res["per_set"]
    out: dict[str, Any] = {
        "forget_nll": float(np.mean(per["forget"]["gt"])), "retain_nll": float(np.mean(per["retain"]["gt"])),
        "world_nll": float(np.mean(per["world_facts"]["gt"])), "real_nll": float(np.mean(per["real_authors"]["gt"])),
        "truth_ratios": torch.as_tensor(res["truth_ratios"], dtype=torch.float64),
        "numbers": {k: float(v) for k, v in res["numbers"].items()},
    }
    out["mu"] = float(res["numbers"]["Model Utility"])
    if "forget_quality" in res:
        out["fq"] = float(res["forget_quality"])
        out["ks_stat"] = float(res["ks_stat"])
    return out


def retain_reference(sizes: dict, seed: int, retain_state: dict, rouge: bool = True) -> dict[str, Any]:
    """The retain model's evaluation (the oracle of Forget Quality): its summary, with FQ = 1 against itself."""
    pipe = prepare(sizes, seed)
    res = pipe.evaluate(pipe.model(state=retain_state), rouge=rouge)
    res["forget_quality"] = forget_quality(res["truth_ratios"], res["truth_ratios"])
    res["ks_stat"] = ks_statistic(res["truth_ratios"], res["truth_ratios"])
    return summarise_eval(res)


def run_unlearning(sizes: dict, seed: int, target_state: dict, method: str, lr: float, steps: int,
                   optimizer: str = "adamw", forget_batch: int = 8, retain_batch: int = 8, beta: float = 0.1,
                   auto_lr: bool = False, lazy_freq: int = 4, smooth: float = 0.9, eval_every: int = 0,
                   eval_rouge: bool = True, retain_ratios: Any = None, privleak: bool = False,
                   keep_state: bool = False, run_seed: int = 0) -> dict[str, Any]:
    """Unlearn the target with ``method`` and return the trainer's logs, GeN probes and the evaluations.

    ``evals``: a list of :func:`summarise_eval` dicts with their ``step`` (before the first step, every
    ``eval_every`` steps, after the last). ``retain_ratios``: the retain model's forget truth ratios (gives FQ).
    ``privleak``: also the Min-K% membership AUC of forget against hold-out authors at the end. ``keep_state``:
    also return the unlearned weights.
    """
    pipe = prepare(sizes, seed)
    model = pipe.model(state=target_state)
    ratios = None if retain_ratios is None else np.asarray(retain_ratios, dtype=np.float64)

    def eval_fn(m):
        return summarise_eval(pipe.evaluate(m, rouge=eval_rouge, retain_ratios=ratios))

    cfg = UnlearnConfig(method=method, optimizer=optimizer, lr=lr, steps=steps, forget_batch=forget_batch,
                        retain_batch=retain_batch, beta=beta, auto_lr=auto_lr, lazy_freq=lazy_freq, smooth=smooth,
                        eval_every=eval_every, seed=run_seed)
    trainer = UnlearningTrainer(model, pipe.forget_train, pipe.retain_train, cfg, eval_fn=eval_fn)
    out = trainer.train().as_dict()
    if privleak:
        out["mia_auc"] = membership_auc(model, pipe.sets["forget"].gt, pipe.holdout)
    if keep_state:
        out["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


def gradient_pairs(sizes: dict, seed: int, state: dict, n_pairs: int = 20, batch: int = 8,
                   run_seed: int = 0) -> dict[str, Any]:
    """For ``n_pairs`` random (forget, retain) batch pairs at the model ``state``: cos(g_R, g_F), ||g_F|| / ||g_R||,
    and the cone products of NGDiff's d and of GradDiff's g_R - g_F (relative to ||d|| ||g||)."""
    pipe = prepare(sizes, seed)
    model = pipe.model(state=state).train()
    params = trainable_parameters(model)
    gen = torch.Generator().manual_seed(run_seed)
    rows: dict[str, list[float]] = {}

    def grad(data) -> torch.Tensor:
        idx = torch.randperm(len(data), generator=gen)[:batch]
        b = data.rows(idx)
        logits = model_logits(model, b)
        loss = lm_loss(logits, output_ids(model, b.labels.to(logits.device)))
        grads = torch.autograd.grad(loss, params)
        return torch.cat([g.reshape(-1) for g in grads]).detach()

    for _ in range(n_pairs):
        g_f, g_r = grad(pipe.forget_train), grad(pipe.retain_train)
        ng = cone_products(ngdiff_direction(g_r, g_f), g_r, g_f)
        gd = cone_products(g_r - g_f, g_r, g_f)
        for k, v in (("cos", ng["cos"]), ("norm_ratio", ng["norm_ratio"]), ("ngdiff_rel_retain", ng["rel_retain"]),
                     ("ngdiff_rel_forget", ng["rel_forget"]), ("graddiff_rel_retain", gd["rel_retain"]),
                     ("graddiff_rel_forget", gd["rel_forget"])):
            rows.setdefault(k, []).append(float(v))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in rows.items()}
