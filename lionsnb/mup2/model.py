"""Width-parameterised MLP, per-layer parameter groups for SAM, and per-layer perturbation effects."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lionsnb.mup2.scaling import LAYERS, scaling_table
from lionsnb.sam.optim import SAM


class WidthMLP(nn.Module):
    """x -> W1 (n x d_in) -> ReLU -> W2 (n x n) -> ReLU -> W3 (d_out x n), bias-free.

    Initialised with base std sqrt(2 / fan_in_at_base) times the table's ``init_std`` factor:
    input sqrt(2/d_in), hidden sqrt(2/n0) r^{-1/2} = sqrt(2/n), output sqrt(2/n0) r^{-b_out}
    (muP: sqrt(2/n0) n0/n; SP: sqrt(2/n)).
    """

    def __init__(self, d_in: int, width: int, d_out: int, parameterization: str = "mup", base_width: int = 64):
        super().__init__()
        self.width, self.base_width = width, base_width
        self.input = nn.Linear(d_in, width, bias=False)
        self.hidden = nn.Linear(width, width, bias=False)
        self.output = nn.Linear(width, d_out, bias=False)
        table = scaling_table(parameterization, width=width, base_width=base_width)["layers"]
        base_std = {"input": math.sqrt(2.0 / d_in), "hidden": math.sqrt(2.0 / base_width),
                    "output": math.sqrt(2.0 / base_width)}
        with torch.no_grad():
            for name in LAYERS:
                getattr(self, name).weight.normal_(0.0, base_std[name] * table[name].init_std)

    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The input of each layer (x^{l-1}) for a batch."""
        h1 = torch.relu(self.input(x))
        h2 = torch.relu(self.hidden(h1))
        return {"input": x, "hidden": h1, "output": h2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(torch.relu(self.input(x.flatten(1))))))


class WidthCNN(nn.Module):
    """A small 1-D CNN of width n (channels): input conv (c_in -> n, kernel k), hidden conv (n -> n, kernel k),
    global average pooling, output linear (n -> d_out); ReLU, bias-free.  Input-, hidden- and output-like
    layers get the MLP's exponents (the kernel size is a width-independent constant): init std
    sqrt(2 / fan_in_at_base) times the table's ``init_std`` factor, fan_in = channels x kernel.
    """

    def __init__(self, c_in: int, width: int, d_out: int, parameterization: str = "mup", base_width: int = 64,
                 kernel: int = 3):
        super().__init__()
        self.width, self.base_width, self.c_in = width, base_width, c_in
        self.input = nn.Conv1d(c_in, width, kernel, padding=kernel // 2, bias=False)
        self.hidden = nn.Conv1d(width, width, kernel, padding=kernel // 2, bias=False)
        self.output = nn.Linear(width, d_out, bias=False)
        table = scaling_table(parameterization, width=width, base_width=base_width)["layers"]
        base_std = {"input": math.sqrt(2.0 / (c_in * kernel)), "hidden": math.sqrt(2.0 / (base_width * kernel)),
                    "output": math.sqrt(2.0 / base_width)}
        with torch.no_grad():
            for name in LAYERS:
                getattr(self, name).weight.normal_(0.0, base_std[name] * table[name].init_std)

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), self.c_in, -1)

    def activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h0 = self._shape(x)
        h1 = torch.relu(self.input(h0))
        h2 = torch.relu(self.hidden(h1)).mean(-1)
        return {"input": h0, "hidden": h1, "output": h2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.activations(x)["output"])


def layer_output(model: nn.Module, name: str, inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """What layer ``name`` of ``model`` computes from ``inputs`` with ``weight`` (linear in the weight)."""
    module = getattr(model, name)
    if isinstance(module, nn.Conv1d):
        return F.conv1d(inputs, weight, padding=module.padding)
    return inputs @ weight.T


def param_groups(model: WidthMLP, table: dict, lr: float, rho: float) -> list[dict]:
    """One SAM/SGD parameter group per layer with its lr, rho, gradient-norm weight and perturb flag."""
    groups = []
    for name in LAYERS:
        f = table["layers"][name]
        groups.append({"params": [getattr(model, name).weight], "lr": lr * f.lr, "rho": rho * f.rho,
                       "gradnorm_scale": f.gradnorm, "perturb": f.perturbed, "layer": name})
    return groups


def adaptive_mode(variant: str):
    return {"asam_elementwise": True, "asam_elementwise_bcd": True, "asam_layerwise": "layerwise"}.get(variant, False)


def make_sam(model: WidthMLP, table: dict, lr: float, rho: float, momentum: float = 0.0,
             base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD) -> SAM:
    """The SAM optimizer of :mod:`lionsnb.sam` with muP^2's per-layer lr, rho and gradient-norm weights."""
    kwargs = {"momentum": momentum} if base_optimizer is torch.optim.SGD else {}
    return SAM(param_groups(model, table, lr, rho), base_optimizer, rho=rho,
               adaptive=adaptive_mode(table["variant"]), lr=lr, **kwargs)


SCHEMES = {
    # scheme -> (parameterization, rho_scaling, variant) for perturbation_slopes
    "sp_naive": ("sp", "naive", "sam"),
    "mup_naive": ("mup", "naive", "sam"),
    "mup_global": ("mup", "global", "sam"),
    "mup2": ("mup", "mup2", "sam"),
    "mup2_independent": ("mup", "mup2_independent", "sam"),
    "asam_elementwise": ("mup", "naive", "asam_elementwise"),
    "asam_elementwise_bcd": ("mup", "naive", "asam_elementwise_bcd"),
    "asam_layerwise": ("mup", "naive", "asam_layerwise"),
}
#: expected slopes (input, hidden, output) of the RMS effect ||e^l x^{l-1}|| against width,
#: derived from the width exponents of :mod:`lionsnb.mup2.scaling`; notebook 1 measures them
EXPECTED_SLOPES = {
    "mup_naive": (-1.5, -0.5, 0.5),
    "mup_global": (-2.0, -1.0, 0.0),
    "mup2": (0.0, 0.0, 0.0),
    "mup2_independent": (0.0, 0.0, 0.0),
    "asam_elementwise": (0.0, 0.0, 0.0),
    "asam_elementwise_bcd": (-1.0, -1.0, -1.0),
    "asam_layerwise": (0.0, 0.0, 0.0),
}


def batch(d_in: int = 32, n: int = 16, d_out: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed Gaussian batch (inputs of unit scale) with random labels."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=gen), torch.randint(0, d_out, (n,), generator=gen)


def perturbation_effects(scheme: str, width: int, base_width: int = 64, rho: float = 0.1, seed: int = 0,
                         x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                         model: str = "mlp", channels: int = 8) -> dict[str, dict[str, float]]:
    """For a freshly initialised muP (or SP) MLP: each layer's SAM perturbation e^l (computed by the SAM
    optimizer with the scheme's per-layer factors) and its effect

    * ``rms``: RMS over the batch of e^l x^{l-1} (the change of that layer's pre-activations);
    * ``logits``: RMS change of the logits when that layer alone is perturbed.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    parameterization, rho_scaling, variant = SCHEMES[scheme]
    if x is None:
        x, y = batch(seed=seed)
    torch.manual_seed(seed)
    if model not in ("mlp", "cnn"):
        raise ValueError(f"model must be 'mlp' or 'cnn', got {model!r}")
    if model == "mlp":
        model = WidthMLP(x.shape[1], width, int(y.max()) + 1, parameterization, base_width).double()
    else:  # the batch's features as a sequence with ``channels`` channels
        model = WidthCNN(channels, width, int(y.max()) + 1, parameterization, base_width).double()
    x = x.double()
    table = scaling_table(parameterization, variant, width=width, base_width=base_width, rho_scaling=rho_scaling)
    opt = make_sam(model, table, lr=0.0, rho=rho)
    F.cross_entropy(model(x), y).backward()
    before = {name: getattr(model, name).weight.detach().clone() for name in LAYERS}
    opt.first_step(zero_grad=True)
    eps = {name: getattr(model, name).weight.detach() - before[name] for name in LAYERS}
    with torch.no_grad():
        for name in LAYERS:
            getattr(model, name).weight.copy_(before[name])
        acts = model.activations(x)
        base_logits = model(x)
        out: dict[str, dict[str, float]] = {}
        for name in LAYERS:
            rms = float(layer_output(model, name, acts[name], eps[name]).pow(2).mean().sqrt())
            getattr(model, name).weight.add_(eps[name])
            logits = float((model(x) - base_logits).pow(2).mean().sqrt())
            getattr(model, name).weight.copy_(before[name])
            out[name] = {"rms": rms, "logits": logits}
    return out


def fit_slope(widths, values) -> float:
    """Least-squares slope of log(values) against log(widths)."""
    return float(np.polyfit(np.log(np.asarray(widths, float)), np.log(np.asarray(values, float)), 1)[0])


def perturbation_curves(scheme: str, widths, seed: int = 0, base_width: int = 64, rho: float = 0.1,
                        model: str = "mlp") -> dict:
    """Per-layer effects (both metrics) at every width, for one scheme (``model`` mlp or cnn)."""
    effects = [perturbation_effects(scheme, w, base_width, rho, seed, model=model) for w in widths]
    return {metric: {name: [e[name][metric] for e in effects] for name in LAYERS} for metric in ("rms", "logits")}


def perturbation_slopes(scheme: str, widths, seed: int = 0, metric: str = "rms", model: str = "mlp"
                        ) -> dict[str, float]:
    """Log-log slope, against width, of each layer's effective perturbation on a freshly initialised MLP
    (or ``model="cnn"``), one layer perturbed at a time: ``{"input": s, "hidden": s, "output": s}``."""
    curves = perturbation_curves(scheme, widths, seed, model=model)
    return {name: fit_slope(widths, curves[metric][name]) for name in LAYERS}


def layerwise_step_error(width: int = 256, base_width: int = 64, rho: float = 0.1, seed: int = 0) -> dict:
    """One muP^2 perturbation by the SAM optimizer against the formula written out by hand (float64):
    e^l = rho_l g_l / ||(s_k g_k)_k||.  Returns the per-layer perturbation norms and the largest difference."""
    x, y = batch(seed=seed)
    torch.manual_seed(seed)
    model = WidthMLP(x.shape[1], width, int(y.max()) + 1, "mup", base_width).double()
    table = scaling_table("mup2", width=width, base_width=base_width)
    weights = [getattr(model, k).weight for k in LAYERS]
    grads = torch.autograd.grad(F.cross_entropy(model(x.double()), y), weights)
    f = [table["layers"][k] for k in LAYERS]
    norm = torch.sqrt(sum((fl.gradnorm * g.norm()) ** 2 for fl, g in zip(f, grads)))
    by_hand = [rho * fl.rho * g / (norm + 1e-12) for fl, g in zip(f, grads)]
    before = [w.detach().clone() for w in weights]
    opt = make_sam(model, table, lr=0.1, rho=rho)
    F.cross_entropy(model(x.double()), y).backward()
    opt.first_step(zero_grad=True)
    eps = [w.detach() - b for w, b in zip(weights, before)]
    return {"norms": {k: float(e.norm()) for k, e in zip(LAYERS, eps)},
            "max_error": max(float((e - h).abs().max()) for e, h in zip(eps, by_hand))}
