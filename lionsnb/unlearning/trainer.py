"""The unlearning trainer: GA, GradDiff, KL, NPO, NPO+GD, NPO+KL and NGDiff (optionally with GeN's automatic lr) on
any causal LM whose ``model(input_ids=..., attention_mask=...)`` returns ``.logits``.

One step (method note §2, spec §2.6): draw a forget batch and a retain batch; compute, by separate backward passes,
g_F = grad lm_loss(forget) and g_R = grad lm_loss(retain) (always: they give the step's geometry, cos(g_R, g_F) and
||g_F|| / ||g_R||, for every method), and the gradient of the method's own terms when they differ (NPO's forget term,
KL's retain term); form the direction d the optimiser descends along:

    GA: -g_F      GradDiff: g_R - g_F      KL: -g_F + grad KL      NPO: grad NPO      NPO+GD: grad NPO + g_R
    NPO+KL: grad NPO + grad KL             NGDiff: g_R/||g_R|| - g_F/||g_F||   (global norms)

write it into ``.grad`` and step the base optimiser (SGD or AdamW). With ``auto_lr`` GeN probes the loss along the
update every ``lazy_freq`` steps (NGDiff: the retain loss on the next retain batch; the other methods: their own loss
on the next batches) and refits the lr (:mod:`lionsnb.unlearning.autolr`). Every step logs the losses, the lr, the
geometry and <d, g_R>, <d, g_F> (the cone). The reference model of KL / NPO is a frozen copy made before the first
step (or the one passed in), never modified.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lionsnb.unlearning.autolr import AutoLR
from lionsnb.unlearning.geometry import assign_flat_grad, cone_products, ngdiff_direction
from lionsnb.unlearning.losses import METHODS, NEEDS, kl_retain, lm_loss, npo_loss
from lionsnb.unlearning.models import output_ids, trainable_parameters
from lionsnb.unlearning.text import Encoded

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class UnlearnConfig:
    """Settings of one unlearning run (defaults: TOFU's batch shape at a small scale)."""

    method: str = "NGDiff"
    optimizer: str = "adamw"
    lr: float = 1e-3
    steps: int = 40
    forget_batch: int = 8
    retain_batch: int = 8
    beta: float = 0.1  # NPO
    weight_decay: float = 0.0
    momentum: float = 0.0  # SGD
    auto_lr: bool = False
    lazy_freq: int = 4
    smooth: float = 0.9
    decay: bool = False
    eval_every: int = 0  # 0: evaluate only before the first and after the last step (when eval_fn is given)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0 or self.steps < 1 or self.forget_batch < 1 or self.retain_batch < 1:
            raise ValueError("lr must be > 0, steps and batch sizes >= 1")


class _Batches:
    """Endless seeded reshuffled mini-batches of an :class:`Encoded` set."""

    def __init__(self, data: Encoded, batch_size: int, seed: int):
        self.data, self.batch_size = data, min(batch_size, len(data))
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> Encoded:
        if len(self.order) < self.batch_size:
            self.order += torch.randperm(len(self.data), generator=self.gen).tolist()
        rows, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
        return self.data.rows(rows)


def _default_progress():
    from lionsnb.progress import progress  # the suite's progress bars (one summary line in headless runs)

    return progress


@dataclass
class UnlearnResult:
    """Per-step logs (dict of lists), GeN probes, evaluations (``step`` + the eval function's dict), wall time.

    A run stops early when its direction or objective stops being finite (the collapse of GA at a large lr);
    ``diverged_step`` says where."""

    config: dict
    logs: dict[str, list]
    probes: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    diverged_step: int = -1  # the step whose direction was not finite (training stopped there), -1 if none

    def as_dict(self) -> dict:
        """Plain types only (for ``ctx.cached``)."""
        return {"config": dict(self.config), "logs": {k: list(v) for k, v in self.logs.items()},
                "probes": [dict(p) for p in self.probes], "evals": [dict(e) for e in self.evals],
                "seconds": float(self.seconds), "diverged_step": int(self.diverged_step)}


class UnlearningTrainer:
    """Runs one unlearning method on ``model`` (modified in place; only its trainable parameters move).

    ``forget`` / ``retain``: encoded QA sets (:func:`~lionsnb.unlearning.text.encode_pairs`). ``ref_model``: the
    frozen reference of KL / NPO (default: a copy of ``model`` taken now). ``eval_fn(model) -> dict``: called before
    the first step, every ``eval_every`` steps and after the last. ``progress``: an iterator wrapper (default: the
    suite's progress bar; ``False`` for none).
    """

    def __init__(self, model: nn.Module, forget: Encoded, retain: Encoded, config: UnlearnConfig,
                 ref_model: nn.Module | None = None, eval_fn: Callable[[nn.Module], dict] | None = None,
                 progress: Callable | None | bool = None):
        self.model, self.cfg = model, config
        self.params = trainable_parameters(model)
        if not self.params:
            raise ValueError("the model has no trainable parameter (requires_grad): nothing to unlearn")
        self.needs = NEEDS[config.method]
        self.ref_model = None
        if self.needs["ref_forget"] or self.needs["ref_retain"]:
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        self.forget_batches = _Batches(forget, config.forget_batch, config.seed)
        self.retain_batches = _Batches(retain, config.retain_batch, config.seed + 1)
        # GeN's "next batch" comes from its own iterators, so probing never changes the training batches
        self.probe_forget = _Batches(forget, config.forget_batch, config.seed + 2)
        self.probe_retain = _Batches(retain, config.retain_batch, config.seed + 3)
        self.eval_fn = eval_fn
        self.progress = _default_progress() if progress is None else (progress or None)
        self.autolr = AutoLR(config.lazy_freq, config.smooth, config.decay) if config.auto_lr else None
        if config.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                       weight_decay=config.weight_decay)
        else:
            self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)

    # ------------------------------------------------------------------ pieces
    def _logits(self, model: nn.Module, batch: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.params[0].device
        logits = model(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev)).logits
        return logits, output_ids(model, batch.labels.to(dev))

    def _grad(self, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        grads = torch.autograd.grad(loss, self.params, retain_graph=retain_graph, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                          for g, p in zip(grads, self.params)])

    def _ref_logits(self, batch: Encoded) -> torch.Tensor:
        with torch.no_grad():
            return self._logits(self.ref_model, batch)[0]

    def method_loss_value(self, fb: Encoded, rb: Encoded) -> float:
        """The method's scalar objective on (fb, rb) without gradients (NGDiff: the retain loss, GeN's probe)."""
        m = self.cfg.method
        with torch.no_grad():
            if m == "NGDiff":
                return lm_loss(*self._logits(self.model, rb)).item()
            lf, yf = self._logits(self.model, fb)
            total = (npo_loss(lf, yf, self._ref_logits(fb), beta=self.cfg.beta) if m.startswith("NPO")
                     else -lm_loss(lf, yf))
            if m in ("GradDiff", "NPO+GD"):
                total = total + lm_loss(*self._logits(self.model, rb))
            elif m in ("KL", "NPO+KL"):
                total = total + kl_retain(self._logits(self.model, rb)[0], self._ref_logits(rb))
            return total.item()

    def direction(self, fb: Encoded, rb: Encoded) -> tuple[torch.Tensor, dict[str, Any]]:
        """The update direction d of the method on one (forget, retain) batch pair, and the step's log entries."""
        m = self.cfg.method
        lf, yf = self._logits(self.model, fb)
        lr_, yr = self._logits(self.model, rb)
        loss_f, loss_r = lm_loss(lf, yf), lm_loss(lr_, yr)
        npo = kl = None
        if self.needs["ref_forget"]:
            npo = npo_loss(lf, yf, self._ref_logits(fb), beta=self.cfg.beta)
        if self.needs["ref_retain"]:
            kl = kl_retain(lr_, self._ref_logits(rb))
        g_f = self._grad(loss_f, retain_graph=npo is not None)
        g_r = self._grad(loss_r, retain_graph=kl is not None)
        g_npo = self._grad(npo) if npo is not None else None
        g_kl = self._grad(kl) if kl is not None else None
        if m == "NGDiff":
            d = ngdiff_direction(g_r, g_f)
        elif m == "GA":
            d = -g_f
        elif m == "GradDiff":
            d = g_r - g_f
        elif m == "KL":
            d = -g_f + g_kl
        elif m == "NPO":
            d = g_npo
        elif m == "NPO+GD":
            d = g_npo + g_r
        else:  # NPO+KL
            d = g_npo + g_kl
        cone = cone_products(d, g_r, g_f)
        objective = {"GA": -loss_f, "GradDiff": loss_r - loss_f, "NGDiff": loss_r}.get(m)
        if objective is None:
            objective = (npo if npo is not None else -loss_f) + (kl if kl is not None else
                                                                  (loss_r if m == "NPO+GD" else 0.0))
        if isinstance(objective, torch.Tensor):
            objective = objective.item()
        log = {"loss_forget": loss_f.item(), "loss_retain": loss_r.item(), "objective": float(objective),
               "npo": npo.item() if npo is not None else float("nan"),
               "kl": kl.item() if kl is not None else float("nan"), **cone}
        return d, log

    # ------------------------------------------------------------------ the loop
    def _evaluate(self, step: int, evals: list[dict]) -> None:
        if self.eval_fn is not None:
            res = dict(self.eval_fn(self.model))
            res["step"] = step
            evals.append(res)

    def train(self) -> UnlearnResult:
        cfg = self.cfg
        logs: dict[str, list] = {}
        probes: list[dict] = []
        evals: list[dict] = []
        diverged = -1
        start = time.perf_counter()
        self.model.train()
        self._evaluate(0, evals)
        steps = range(cfg.steps)
        if self.progress is not None:
            steps = self.progress(steps, desc=f"{cfg.method}{' + AutoLR' if cfg.auto_lr else ''}", total=cfg.steps,
                                  unit="step")
        for step in steps:
            fb, rb = self.forget_batches.next(), self.retain_batches.next()
            d, log = self.direction(fb, rb)
            if not bool(torch.isfinite(d).all()) or not np.isfinite(log["objective"]):
                diverged = step  # stop: the parameters stay at the last finite point
                break
            log["step"] = step
            log["lr"] = self.opt.param_groups[0]["lr"]
            assign_flat_grad(self.params, d)
            if self.autolr is not None and self.autolr.due(step):
                pf, pr = self.probe_forget.next(), self.probe_retain.next()
                res = self.autolr.update(self.params, self.opt, lambda: self.method_loss_value(pf, pr), step,
                                         cfg.steps)
                probes.append(asdict(res) | {"x_opt": res.x_opt})
            log["lr_used"] = self.opt.param_groups[0]["lr"]
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            for k, v in log.items():
                logs.setdefault(k, []).append(float(v))
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                self._evaluate(step + 1, evals)
        self._evaluate(cfg.steps, evals)
        self.model.eval()
        return UnlearnResult(config=asdict(cfg), logs=logs, probes=probes, evals=evals,
                             seconds=time.perf_counter() - start, diverged_step=diverged)


def unlearn(model: nn.Module, forget: Encoded, retain: Encoded, ref_model: nn.Module | None = None,
            eval_fn: Callable[[nn.Module], dict] | None = None, progress: Callable | None | bool = None,
            **config: Any) -> UnlearnResult:
    """Run one method on ``model`` in place: ``unlearn(model, forget, retain, method="NGDiff", lr=1e-3, steps=40)``
    (keywords of :class:`UnlearnConfig`); returns the :class:`UnlearnResult`."""
    return UnlearningTrainer(model, forget, retain, UnlearnConfig(**config), ref_model=ref_model, eval_fn=eval_fn,
                             progress=progress).train()


def logs_array(result: UnlearnResult | dict, key: str) -> np.ndarray:
    """One per-step log as an array (works on a result or its cached ``as_dict()``)."""
    logs = result.logs if isinstance(result, UnlearnResult) else result["logs"]
    return np.asarray(logs[key], dtype=np.float64)
