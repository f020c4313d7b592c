"""SAM / ASAM and SAMPa optimizers, and BatchNorm handling for two-pass updates.

SAM (Foret et al., ICLR 2021, Eq. 2 and Alg. 1), with ASAM (Kwon et al., ICML 2021) without
its offset as the ``adaptive`` option:

    e = rho * T^2 g / (||T g||_2 + 1e-12),   T = |w| (adaptive) or 1,

the norm taken over all parameters of all groups; the gradient at w + e is handed to
the base optimizer (which owns momentum and weight decay) after the weights are restored
by copy.  Both passes use the same batch.

SAMPa (Xie, Pethick, Cevher, NeurIPS 2024, Eq. 3):

    x~_t    = x_t + rho grad f(y_t) / ||grad f(y_t)||
    y_{t+1} = x_t - eta grad f(y_t)
    x_{t+1} = x_t - eta (1 - lam) grad f(x~_t) - eta lam grad f(y_{t+1})

with the conventions of the official code (see :class:`SAMPa`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

EPS = 1e-12


# ----------------------------------------------------------------------------- BatchNorm

def disable_running_stats(model: nn.Module) -> None:
    """Before SAM's second (perturbed) pass: BN layers normalise with batch statistics but do
    not update their running statistics (momentum 0, every ``_BatchNorm``).

    As in the reference code, ``num_batches_tracked`` still counts the pass; for layers with
    ``momentum=None`` (cumulative averages, which use that counter) it is restored by
    :func:`enable_running_stats`, so their averages stay exact.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not hasattr(module, "_sam_backup"):
            count = None if module.num_batches_tracked is None else module.num_batches_tracked.clone()
            module._sam_backup = (module.momentum, count)
            module.momentum = 0.0


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats` (call before the next unperturbed pass)."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and hasattr(module, "_sam_backup"):
            momentum, count = module._sam_backup
            module.momentum = momentum
            if momentum is None and count is not None:
                module.num_batches_tracked.copy_(count)
            del module._sam_backup


# ----------------------------------------------------------------------------- SAM

class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around any base optimizer.

    Use it as two explicit steps::

        loss_fn(model(x), y).mean().backward(); opt.first_step(zero_grad=True)    # w -> w + e
        loss_fn(model(x), y).mean().backward(); opt.second_step(zero_grad=True)   # restore w, base step

    or ``opt.step(closure)`` where ``closure`` zeroes nothing, computes the loss and calls backward.
    ``rho`` is the perturbation radius (per group allowed; the norm is always global).
    Groups may also set ``gradnorm_scale`` (a factor on their share of the norm, muP^2's
    layerwise decoupling), ``perturb=False`` (not perturbed, e.g. SAM-ON perturbs only
    normalisation layers) and ``adaptive="layerwise"`` (T = ||W||_F per tensor).
    """

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, **base_kwargs):
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @staticmethod
    def _scale(p: torch.Tensor, adaptive) -> torch.Tensor | float:
        """T: |w| elementwise (ASAM), ||W||_F per tensor ("layerwise" ASAM), or 1."""
        if adaptive == "layerwise":
            return p.detach().norm()
        return p.detach().abs() if adaptive else 1.0

    def _scaled_grads(self) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
        """(parameter, T * g, group) for every parameter with a gradient."""
        out = []
        for group in self.param_groups:
            if not group.get("perturb", True):
                continue
            for p in group["params"]:
                if p.grad is not None:
                    out.append((p, p.grad * self._scale(p, group["adaptive"]), group))
        return out

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """||(s_l T g_l)_l||_2 over all perturbed parameters (T = |w| when adaptive; s_l is a group's
        ``gradnorm_scale``, 1 by default, the layerwise decoupling of muP^2's Algorithm 1)."""
        scaled = self._scaled_grads()
        if not scaled:
            return torch.tensor(0.0)
        device = scaled[0][0].device
        return torch.linalg.vector_norm(torch.stack(
            [group.get("gradnorm_scale", 1.0) * torch.linalg.vector_norm(tg).to(device) for _, tg, group in scaled]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w and move to w + e, e = rho T^2 g / (||T g|| + 1e-12) (per-group rho)."""
        norm = self.grad_norm()
        for p, tg, group in self._scaled_grads():
            self.state[p]["w"] = p.detach().clone()
            e = tg * self._scale(p, group["adaptive"]) if group["adaptive"] else tg  # T^2 g = T (T g)
            p.add_(e * (group["rho"] / (norm + EPS)))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w (by copy) and let the base optimizer step with the gradient taken at w + e."""
        for group in self.param_groups:
            for p in group["params"]:
                if "w" in self.state[p]:
                    p.copy_(self.state[p].pop("w"))
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Full SAM step; ``closure`` computes the loss and calls ``backward`` (it is called twice)."""
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls backward()")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups


# ----------------------------------------------------------------------------- SAMPa

def flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _assign(params: list[torch.Tensor], vector: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(vector[offset:offset + n].view_as(p))
        offset += n


class SAMPa:
    """SAMPa (Xie et al., NeurIPS 2024) with the official code's conventions:

    * grad f(y_t) and the perturbed gradient grad f(x~_t) are both taken on the PREVIOUS
      batch B_{t-1}; the lam-term grad f(y_{t+1}) on the current batch B_t (B_{-1} = B_0);
    * the y-extrapolation includes the base SGD's momentum and weight decay:
      y_{t+1} = x_t - lr (grad f(y_t) + wd x_t + mu buf_t) from step 2 on (once the
      momentum buffer exists; step 1 uses x_t - lr grad f(y_t));
    * step 1 is plain SGD (grad f(y_0) is stored as 0, so there is no perturbation);
    * BN running statistics come from the x~ pass; the y pass runs on a scratch copy.

    Unlike the official script, grad f(y) is kept separately, so ``lam = 0`` (SAMPa-0) works
    as the paper intends instead of degenerating to SGD on the previous batch.  The two
    gradients of a step are independent; ``backend`` computes them (see
    :mod:`lionsnb.sam.parallel`), the default runs them one after the other.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 lr: float = 0.1, rho: float = 0.1, lam: float = 0.2, momentum: float = 0.0,
                 weight_decay: float = 0.0, backend: GradientPair | None = None):
        if rho < 0 or not 0.0 <= lam <= 1.0 or lr <= 0:
            raise ValueError(f"need rho >= 0, 0 <= lam <= 1 and lr > 0; got rho={rho}, lam={lam}, lr={lr}")
        self.model, self.loss_fn = model, loss_fn
        self.rho, self.lam = rho, lam
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.base = torch.optim.SGD(self.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.gy = torch.zeros_like(flat(self.params))
        self.prev_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.backend = backend or SequentialPair()
        self.steps = 0

    @property
    def lr(self) -> float:
        return self.base.param_groups[0]["lr"]

    @torch.no_grad()
    def extrapolation(self, x: torch.Tensor) -> torch.Tensor:
        """y_{t+1} = x_t - lr (grad f(y_t) + wd x_t + momentum buf_t); at step 1 (no buffer yet)
        x_t - lr grad f(y_t)."""
        group = self.base.param_groups[0]
        direction = self.gy.clone()
        if self.steps > 0:
            if group["weight_decay"]:
                direction += group["weight_decay"] * x
            if group["momentum"]:
                direction += group["momentum"] * flat(self.base.state[p]["momentum_buffer"] for p in self.params)
        return x - group["lr"] * direction

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """One SAMPa update on the current batch; returns the loss at x~ on the previous batch."""
        batch = (inputs, targets)
        prev = self.prev_batch if self.prev_batch is not None else batch
        with torch.no_grad():
            x = flat(self.params).detach().clone()
            x_tilde = x + self.rho * self.gy / (self.gy.norm() + EPS)
            y = self.extrapolation(x)
        g0, g1, loss = self.backend.gradients(self, x_tilde, prev, y, batch)
        with torch.no_grad():
            _assign(self.params, x)
            agg = (1.0 - self.lam) * g0 + self.lam * g1
            offset = 0
            for p in self.params:
                n = p.numel()
                p.grad = agg[offset:offset + n].view_as(p).clone()
                offset += n
        self.base.step()
        self.base.zero_grad(set_to_none=True)
        self.gy, self.prev_batch = g1.detach(), batch
        self.steps += 1
        return loss


class GradientPair:
    """Computes SAMPa's two gradients for one step; subclasses decide how (in sequence or in parallel)."""

    def gradients(self, opt: SAMPa, x_tilde: torch.Tensor, prev_batch, y: torch.Tensor, batch
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
        raise NotImplementedError


def gradient_at(model: nn.Module, params: list[torch.Tensor], point: torch.Tensor, loss_fn, batch
                ) -> tuple[torch.Tensor, float]:
    """Flat gradient of mean loss_fn(model(x), y) at parameters ``point`` (model is modified)."""
    with torch.no_grad():
        _assign(params, point)
    for p in params:
        p.grad = None
    inputs, targets = batch
    loss = loss_fn(model(inputs), targets).mean()
    grads = torch.autograd.grad(loss, params)
    return flat(grads).detach(), float(loss.detach())


class SequentialPair(GradientPair):
    """The reference: grad f(x~_t; B_{t-1}) on the model (its BN statistics are kept), then
    grad f(y_{t+1}; B_t) on a scratch replica (its BN statistics are discarded; in train mode
    BatchNorm normalises with batch statistics, so the replica's stale buffers do not matter)."""

    def __init__(self) -> None:
        self._scratch: nn.Module | None = None

    def gradients(self, opt, x_tilde, prev_batch, y, batch):
        g0, loss = gradient_at(opt.model, opt.params, x_tilde, opt.loss_fn, prev_batch)
        if self._scratch is None:
            self._scratch = copy.deepcopy(opt.model)
        scratch_params = [p for p in self._scratch.parameters() if p.requires_grad]
        g1, _ = gradient_at(self._scratch, scratch_params, y, opt.loss_fn, batch)
        return g0, g1, loss
