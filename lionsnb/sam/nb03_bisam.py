"""Backs ``notebooks/sam/03_bisam.ipynb``: BiSAM, SAM whose maximiser uses a lower bound of the 0-1 loss.

Xie, Latorre, Antonakopoulos, Pethick, Cevher, "Improving SAM requires rethinking its
optimization formulation", ICML 2024 (arXiv 2407.12993).  SAM is restated on the 0-1 loss
as a bilevel problem: the minimiser keeps the cross-entropy (an upper bound), the maximiser
that produces the perturbation uses the lower bound

    Q_{phi,mu}(w) = (1/n) sum_i (1/mu) log sum_j exp(mu phi(F_j(x_i))),   F_j = f_j - f_y,

with phi_log(x) = 1 - log(1 + exp(gamma - x)), gamma = log(e - 1), or phi_tanh(x) = tanh(alpha x).
Algorithm 1: e_t = rho grad Q(w_t) / ||grad Q(w_t)||,  w_{t+1} = w_t - eta grad L(w_t + e_t).
As in the official code, the package's :func:`bisam_loss` has no 1/mu factor (the perturbation
is normalised, so the factor only rescales); :func:`q_lower_bound` restores it for the bounds.

The method lives in the core modules (:mod:`lionsnb.sam.losses`: the bounds; :mod:`lionsnb.sam.steps`: the
training step; :mod:`lionsnb.sam.flips`: flip counting); this module holds the notebook's experiments (a 2-D toy,
flip counts along SAM training on digits, test accuracy over seeds), its figures and its exercise checks.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lionsnb.context import setup_for
from lionsnb.datasets import Split, load_digits
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.models import MLP
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress
from lionsnb.sam.flips import (
    count_flips,
    flips_from_predictions,
    misclassified_weight_share,
    perturbation,
    perturbed,
    predict,
)
from lionsnb.sam.losses import (
    GAMMA,
    SURROGATES,
    bisam_loss,
    ce_upper_bound,
    phi_log,
    phi_tanh,
    q_lower_bound,
    smooth_cross_entropy,
    zero_one_loss,
)
from lionsnb.sam.optim import SAM
from lionsnb.sam.steps import SEQUENTIAL_GRADIENTS, bisam_step, make_optimizer, sam_step
from lionsnb.training import fit
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="sam.nb03_bisam",
    title="BiSAM: SAM with a lower bound of the 0-1 loss as the maximiser",
    profiles={
        "smoke": dict(toy_seeds=(0, 1), toy_n=150, toy_steps=300, toy_grid=61, rhos=(0.05, 0.2, 0.5),
                      mus=(1.0, 10.0), alphas=(0.1, 1.0), n_train=None, hidden=(128, 128), epochs=12,
                      batch_size=128, lr=0.05, checkpoints=(0, 1, 2, 4, 8, 12), seeds=(0,)),
        "teach": dict(toy_seeds=tuple(range(8)), toy_n=150, toy_steps=300, toy_grid=101,
                      rhos=(0.05, 0.1, 0.2, 0.5, 1.0), mus=(0.5, 1.0, 2.0, 5.0, 10.0),
                      alphas=(0.05, 0.1, 0.2, 0.5, 1.0), n_train=None, hidden=(128, 128), epochs=30,
                      batch_size=128, lr=0.05, checkpoints=(0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30),
                      seeds=tuple(range(8))),
        "full": dict(toy_seeds=tuple(range(16)), toy_n=150, toy_steps=300, toy_grid=141,
                     rhos=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0), mus=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0),
                     alphas=(0.05, 0.1, 0.2, 0.5, 1.0), n_train=None, hidden=(256, 256), epochs=60,
                     batch_size=128, lr=0.05, checkpoints=(0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60),
                     seeds=tuple(range(10))),
    },
    knobs={
        "rho": Knob(0.2, "perturbation radius rho of SAM and BiSAM", float, low=0.0, high=2.0),
        "surrogate": Knob("log", "BiSAM lower bound phi of the 0-1 loss: log or tanh", str, choices=SURROGATES),
        "mu": Knob(1.0, "mu, the sharpness of the logsumexp in Q", float, low=0.0, low_open=True, high=100.0),
        "alpha": Knob(0.1, "alpha, the slope of phi_tanh", float, low=0.0, low_open=True, high=10.0),
    },
    datasets=("digits",),
)
setup = setup_for(SPEC)

#: the perturbations compared: SAM's own (smoothed CE, the training loss), plain CE, BiSAM's two bounds
PERTURBATIONS = ("sce", "ce", "log", "tanh")
NAMES = {"sce": "smoothed CE (SAM)", "ce": "CE", "log": "BiSAM log", "tanh": "BiSAM tanh",
         "sgd": "SGD", "sgd_2x": "SGD, 2x epochs", "sam": "SAM", "bisam_log": "BiSAM (log)",
         "bisam_tanh": "BiSAM (tanh)"}
COLORS = {"sce": "tab:blue", "ce": "tab:cyan", "log": "tab:red", "tanh": "tab:orange", "sgd": "tab:gray",
          "sgd_2x": "black", "sam": "tab:blue", "bisam_log": "tab:red", "bisam_tanh": "tab:orange"}
METHODS = ("sgd", "sgd_2x", "sam", "bisam_log", "bisam_tanh")
#: label smoothing of the training loss, as in the reference code
SMOOTHING = 0.1
CLASS_COLORS = ("#4c72b0", "#55a868", "#8172b2")


#: model answers of the think exercises (for teachers; `lionsnb answers sam_bisam` prints them)
MODEL_ANSWERS = {
    3: "Yes, at small and moderate radii. Measured on digits (one SAM run with rho 0.2, checkpoints at epochs 0-20, "
       "flips summed over the checkpoints): with mu = 1, alpha = 0.1 the order is smoothed CE 1041 > CE 933 > "
       "Q_log 807 > Q_tanh 710 at rho 0.2; with mu = 10, alpha = 1 it becomes Q_tanh 1160 ~ Q_log 1159 > smoothed "
       "CE 1041 > CE 933, and at rho 0.05 Q_log flips 351 and Q_tanh 428 against 226 for smoothed CE. At rho 0.5 "
       "smoothed CE flips the most again (2377 against 2073 for Q_log): a large ball flips points whichever "
       "direction it takes. Test accuracy moves by about the seed spread (compare with acc_sam_std), so the "
       "sharper bounds do not buy a measurable gain here. What it says: 'a lower bound of the 0-1 loss' is not "
       "one objective but a family, and how well it targets the points near the boundary depends on how closely "
       "it follows the max and the step (mu, alpha), on the label smoothing of the training loss and on the "
       "radius. The bilevel argument says which kind of objective the maximiser should have; it does not by "
       "itself guarantee that a given member of the family flips more points, nor that flipping more points "
       "improves test accuracy at this scale.",
}


def training_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The minimiser's loss: smoothed cross-entropy (s = 0.1), per sample, as in the reference code."""
    return smooth_cross_entropy(logits, targets, SMOOTHING)


# ----------------------------------------------------------------------------- surrogates and bounds

def logit_shift(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """F_j = f_j - f_y for every sample, vectorised (a gather); F_y = 0."""
    return logits - logits.gather(-1, targets[:, None])


def logit_shift_loop(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same shift written row by row (on a copy, never in place on the autograd output); a reference."""
    rows = [logits[i] - logits[i, int(targets[i])] for i in range(len(targets))]
    return torch.stack(rows)


def ce_term(x: torch.Tensor) -> torch.Tensor:
    """The per-class cross-entropy term log2(1 + e^x): an upper bound of the step 1[x >= 0]."""
    return F.softplus(x) / math.log(2.0)


def phi(kind: str, x: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """phi_log or phi_tanh by name."""
    if kind not in SURROGATES:
        raise ValueError(f"kind must be one of {SURROGATES}, got {kind!r}")
    return phi_log(x) if kind == "log" else phi_tanh(x, alpha)


def perturbation_loss(name: str, mu: float = 1.0, alpha: float = 0.1) -> Callable:
    """The per-sample loss whose gradient gives the perturbation: sce (SAM), ce, log or tanh (BiSAM)."""
    if name == "sce":
        return training_loss
    if name == "ce":
        return lambda logits, targets: F.cross_entropy(logits, targets, reduction="none")
    if name in SURROGATES:
        return lambda logits, targets: bisam_loss(logits, targets, name, mu, alpha)
    raise ValueError(f"unknown perturbation {name!r}: use one of {PERTURBATIONS}")


def gradient_weight(kind: str, x: torch.Tensor, mu: float = 1.0, alpha: float = 0.1) -> torch.Tensor:
    """How strongly a sample with one competing class at margin F = x pulls the perturbation.

    Two classes, logits (0, x) with target 0: d loss / d x for CE (sigmoid(x)) and for
    Q = log(1 + exp(mu phi(x))) (mu phi'(x) sigmoid(mu phi(x))), by autograd.
    """
    x = x.detach().clone().requires_grad_(True)
    logits = torch.stack([torch.zeros_like(x), x], -1)
    targets = torch.zeros(len(x), dtype=torch.long)
    loss = perturbation_loss(kind, mu, alpha)(logits, targets)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad.detach()


def surrogate_curves(mus: Sequence[float], alphas: Sequence[float], lo: float = -6.0, hi: float = 6.0,
                     points: int = 601) -> dict:
    """Everything the surrogate figure draws, for every (mu, alpha) of the grid.

    * per class term vs x = F_j: the step, the CE term log2(1 + e^x), phi_log, phi_tanh;
    * per sample loss along logits (0, t, -1), target 0 (t is the competing logit): the 0-1 loss,
      CE / log 2 and Q - log(K)/mu for both bounds;
    * the gradient weight d loss / d F of a two-class sample, normalised to a maximum of 1.
    """
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    path = torch.stack([torch.zeros_like(x), x, -torch.ones_like(x)], -1)
    targets = torch.zeros(points, dtype=torch.long)
    out = {"x": x, "step": (x >= 0).double(), "ce_term": ce_term(x), "phi_log": phi_log(x),
           "zero_one": zero_one_loss(path, targets), "ce_bound": ce_upper_bound(path, targets),
           "weight_ce": gradient_weight("ce", x), "by_mu_alpha": {}}
    out["weight_ce"] = out["weight_ce"] / out["weight_ce"].max()
    for mu in mus:
        for alpha in alphas:
            entry = {"phi_tanh": phi_tanh(x, alpha)}
            for kind in SURROGATES:
                entry[f"q_{kind}"] = q_lower_bound(path, targets, kind, mu, alpha)
                w = gradient_weight(kind, x, mu, alpha)
                entry[f"weight_{kind}"] = w / w.max()
            out["by_mu_alpha"][(float(mu), float(alpha))] = entry
    return out


def bound_checks(mus: Sequence[float], alphas: Sequence[float], n_random: int = 2000, n_classes: int = 10,
                 seed: int = 0) -> dict:
    """Count violations of the bounds, in float64.

    * pointwise: phi_log(x) > 1[x >= 0] or phi_tanh(x) > 1[x >= 0] on a dense grid of x;
    * per sample, on random logits (scale 1, 3 and 10): Q - log(K)/mu > 0-1 loss (lower bound,
      for every (mu, alpha)) and CE / log 2 < 0-1 loss (upper bound).
    """
    x = torch.linspace(-50, 50, 200_001, dtype=torch.float64)
    step = (x >= 0).double()
    lower = int((phi_log(x) > step).sum()) + sum(int((phi_tanh(x, a) > step).sum()) for a in alphas)
    g = torch.Generator().manual_seed(seed)
    upper = 0
    for scale in (1.0, 3.0, 10.0):
        logits = scale * torch.randn(n_random, n_classes, generator=g, dtype=torch.float64)
        targets = torch.randint(0, n_classes, (n_random,), generator=g)
        zero_one = zero_one_loss(logits, targets)
        upper += int((ce_upper_bound(logits, targets) < zero_one).sum())
        for mu in mus:
            for alpha in alphas:
                for kind in SURROGATES:
                    lower += int((q_lower_bound(logits, targets, kind, mu, alpha) > zero_one + 1e-12).sum())
    zero = torch.zeros(1, dtype=torch.float64)
    return {"lower_bound_violations": lower, "upper_bound_violations": upper,
            "phi_log_at_zero": float(phi_log(zero).abs()), "phi_tanh_at_zero": float(phi_tanh(zero).abs()),
            "phi_log_max": float(phi_log(x).max()), "phi_log_slope_at_zero": math.exp(GAMMA) / (1 + math.exp(GAMMA))}


# ----------------------------------------------------------------------------- implementation checks

def shift_gradient_error(kind: str = "log", mu: float = 1.0, alpha: float = 0.1, n: int = 32, n_classes: int = 10,
                         seed: int = 0) -> float:
    """Max |difference| between the gradients (w.r.t. the logits) of Q with the vectorised shift and with a
    row loop, in float64."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, n_classes, generator=g, dtype=torch.float64)
    targets = torch.randint(0, n_classes, (n,), generator=g)
    grads = []
    for shift in (logit_shift, logit_shift_loop):
        f = logits.clone().requires_grad_(True)
        q = torch.logsumexp(mu * phi(kind, shift(f, targets), alpha), -1).mean()
        grads.append(torch.autograd.grad(q, f)[0])
    return float((grads[0] - grads[1]).abs().max())


def first_step_check(kind: str = "log", mu: float = 1.0, alpha: float = 0.1, rho: float = 0.2, seed: int = 0,
                     n: int = 64) -> dict:
    """BiSAM's perturbation from the SAM optimizer vs rho grad Q / (||grad Q|| + 1e-12) computed independently.

    A float64 MLP (8 -> 16 -> 3) on random data; the reference differentiates Q of a functional
    copy of the network with respect to one flat parameter vector.  Also returns the angle
    between BiSAM's and SAM's perturbations (they differ, or BiSAM would be SAM).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(8, [16], 3, nn.Tanh).double()
    x = torch.randn(n, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    params = [p for p in model.parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in params])

    # reference: Q as a function of the flat parameter vector
    def q_of(flat: torch.Tensor) -> torch.Tensor:
        chunks, offset = {}, 0
        for name, p in model.named_parameters():
            chunks[name] = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        logits = torch.func.functional_call(model, chunks, (x,))
        return torch.logsumexp(mu * phi(kind, logits - logits.gather(1, y[:, None]), alpha), 1).mean()

    flat = w0.clone().requires_grad_(True)
    (grad_q,) = torch.autograd.grad(q_of(flat), flat)
    expected = rho * grad_q / (grad_q.norm() + 1e-12)  # SAM's epsilon on the norm

    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.1)
    bisam_loss(model(x), y, kind, mu, alpha).mean().backward()
    opt.first_step(zero_grad=True)
    got = torch.cat([p.detach().reshape(-1) for p in params]) - w0

    e_sam = perturbation(model_at(model, w0), training_loss, x, y, rho)
    e_sam = torch.cat([e.reshape(-1) for e in e_sam])
    cos = float(got @ e_sam / (got.norm() * e_sam.norm()))
    return {"first_step_error": float((got - expected).abs().max()), "norm": float(got.norm()),
            "cos_bisam_sam": cos}


def model_at(model: nn.Module, flat: torch.Tensor) -> nn.Module:
    """Set ``model``'s parameters to the flat vector ``flat`` (in place) and return it."""
    torch.nn.utils.vector_to_parameters(flat.detach().clone(), model.parameters())
    return model


# ----------------------------------------------------------------------------- the 2-D toy

def make_toy(n: int = 150, seed: int = 0, noise: float = 1.0, n_classes: int = 3, radius: float = 1.6
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian blobs in 2-D (centres on a circle of ``radius``), balanced classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    angle = 2 * math.pi * y / n_classes
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + noise * torch.randn(n, 2, generator=g), y


def train_toy(x: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 0.2, hidden: int = 32,
              seed: int = 0) -> nn.Module:
    """A tanh MLP 2 -> 32 -> 32 -> 3 trained by full-batch SGD (momentum 0.9) on plain cross-entropy."""
    torch.manual_seed(seed)
    model = MLP(2, [hidden, hidden], int(y.max()) + 1, nn.Tanh)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


TOY_PERTURBATIONS = ("ce", "log", "tanh")


@torch.no_grad()
def logits_on(model: nn.Module, mesh: torch.Tensor, grid: int) -> torch.Tensor:
    """The model's logits on a flattened ``grid`` x ``grid`` mesh, as (grid, grid, classes)."""
    return model(mesh).reshape(grid, grid, -1)


def toy_experiment(seeds: Sequence[int], rhos: Sequence[float], n: int = 150, steps: int = 300, grid: int = 101,
                   mu: float = 1.0, alpha: float = 0.1) -> dict:
    """SGD-trained toys (one per seed); at the trained w, the perturbations of CE, BiSAM log and BiSAM tanh
    with the same rho, and how many training points each flips (full batch).

    For the first seed also the logits on a ``grid`` x ``grid`` mesh at w and at every w + e,
    for the decision-boundary figure.
    """
    out: dict = {"rhos": [float(r) for r in rhos], "seeds": list(seeds), "flips": {}, "clean_errors": [],
                 "weight_share": {k: [] for k in TOY_PERTURBATIONS}}
    for i, seed in enumerate(progress(list(seeds), desc="toys", unit="toy")):
        x, y = make_toy(n, seed)
        model = train_toy(x, y, steps, seed=seed)
        clean = predict(model, x)
        out["clean_errors"].append(int((clean != y).sum()))
        if i == 0:
            lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
            gx, gy = torch.linspace(float(lo[0]), float(hi[0]), grid), torch.linspace(float(lo[1]), float(hi[1]), grid)
            mesh = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
            out["toy"] = {"x": x, "y": y, "gx": gx, "gy": gy, "clean": clean,
                          "logits": logits_on(model, mesh, grid)}
        for name in TOY_PERTURBATIONS:
            loss_fn = perturbation_loss(name, mu, alpha)
            out["weight_share"][name].append(misclassified_weight_share(model, x, y, loss_fn))
            unit = perturbation(model, loss_fn, x, y, 1.0)
            for rho in out["rhos"]:
                with perturbed(model, [rho * u for u in unit]):
                    pred = predict(model, x)
                    if i == 0:
                        out["toy"][(name, rho)] = {"pred": pred, "logits": logits_on(model, mesh, grid)}
                out["flips"].setdefault((name, rho), []).append(flips_from_predictions(clean, pred, y)["flips"])
    return out


def toy_summary(toy: dict, rho: float, surrogate: str) -> dict:
    """Mean flips per toy at ``rho`` (CE and both bounds) and the misclassified share of the gradient mass."""
    mean = {k: float(np.mean(toy["flips"][(k, float(rho))])) for k in TOY_PERTURBATIONS}
    return {"toy_clean_errors": float(np.mean(toy["clean_errors"])),
            "toy_flips_ce": mean["ce"], "toy_flips_log": mean["log"], "toy_flips_tanh": mean["tanh"],
            "toy_flips_surrogate_minus_ce": mean[surrogate] - mean["ce"],
            "toy_seeds_surrogate_ge_ce": float(np.mean([s >= c for s, c in zip(toy["flips"][(surrogate, float(rho))],
                                                                               toy["flips"][("ce", float(rho))])])),
            "toy_wrong_share_ce": float(np.mean(toy["weight_share"]["ce"])),
            "toy_wrong_share_surrogate": float(np.mean(toy["weight_share"][surrogate]))}


def _regions(ax, toy: dict, logits: torch.Tensor, boundary: torch.Tensor | None = None) -> None:
    """Decision regions (shaded) and boundaries (solid) from logits on the mesh; ``boundary``: the logits at w
    (its boundaries dotted)."""
    from matplotlib.colors import ListedColormap

    gx, gy = toy["gx"].numpy(), toy["gy"].numpy()
    k = logits.shape[-1]
    ax.contourf(gx, gy, logits.argmax(-1).numpy(), levels=np.arange(-0.5, k), cmap=ListedColormap(CLASS_COLORS[:k]),
                alpha=0.22)
    for f, style, width in ((logits, "solid", 1.3), (boundary, "dotted", 1.0)):
        if f is None:
            continue
        for c in range(k):  # where class c's logit meets the best other one
            others = torch.cat([f[..., :c], f[..., c + 1:]], -1).amax(-1)
            ax.contour(gx, gy, (f[..., c] - others).numpy(), levels=[0.0], colors="k", linewidths=width,
                       linestyles=style)


def _points(ax, toy: dict, wrong: torch.Tensor, flipped: torch.Tensor | None = None) -> None:
    x, y = toy["x"].numpy(), toy["y"].numpy()
    for c, colour in enumerate(CLASS_COLORS):
        sel = y == c
        ax.scatter(x[sel, 0], x[sel, 1], s=14, color=colour, edgecolor="white", linewidth=0.4, zorder=3)
    w = wrong.numpy()
    ax.scatter(x[w, 0], x[w, 1], s=30, marker="x", color="black", linewidth=1.2, zorder=4)
    if flipped is not None and flipped.any():
        f = flipped.numpy()
        ax.scatter(x[f, 0], x[f, 1], s=110, facecolor="none", edgecolor="red", linewidth=1.6, zorder=5)


def _toy_legend(ax) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="x", color="black", ls="none", label="misclassified"),
               Line2D([], [], marker="o", mfc="none", mec="red", ms=9, mew=1.6, ls="none",
                      label="flipped: right at w, wrong at w + e"),
               Line2D([], [], color="k", ls="dotted", label="boundary at w")]
    ax.legend(handles=handles, loc="lower left", fontsize=7, frameon=True, framealpha=0.85)


def _rho_axis(ax, rhos: Sequence[float]) -> None:
    """A log x-axis (symlog when rho = 0 is in the sweep) with one plain tick per radius of the sweep."""
    from matplotlib.ticker import NullFormatter

    positive = [r for r in rhos if r > 0]
    if len(positive) < len(rhos):
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    else:
        ax.set_xscale("log")
    ax.set_xticks(list(rhos), [f"{r:g}" for r in rhos])
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw_toy(fig, rho: float, surrogate: str, toy: dict) -> None:
    """Decision regions at w, at w + e(CE) and at w + e(surrogate) with flipped points circled, and the mean
    number of flips over all toys for every rho."""
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    t = toy["toy"]
    y, clean = t["y"], t["clean"]
    _regions(axes[0], t, t["logits"])
    _points(axes[0], t, clean != y)
    label(axes[0], "$x_1$", "$x_2$", f"at w: {int((clean != y).sum())} training errors")
    for ax, name in zip(axes[1:3], ("ce", surrogate)):
        entry = t[(name, float(rho))]
        wrong = entry["pred"] != y
        flipped = wrong & (clean == y)
        _regions(ax, t, entry["logits"], boundary=t["logits"])
        _points(ax, t, wrong, flipped)
        label(ax, "$x_1$", "$x_2$", f"w + e({NAMES[name]}), rho {rho:g}: {int(flipped.sum())} flips")
    _toy_legend(axes[1])
    ax = axes[3]
    rhos = toy["rhos"]
    for name in TOY_PERTURBATIONS:
        mean = [np.mean(toy["flips"][(name, r)]) for r in rhos]
        ax.plot(rhos, mean, "o-", color=COLORS[name], label=NAMES[name], lw=2.5 if name == surrogate else 1)
    ax.axvline(rho, color="k", ls=":", lw=1)
    _rho_axis(ax, rhos)
    ax.legend()
    label(ax, "perturbation radius rho", f"flips per toy (mean of {len(toy['seeds'])} toys)",
          "flipped training points")


# ----------------------------------------------------------------------------- training on digits

def make_model(split: Split, hidden: Sequence[int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(split.x_train.shape[1], list(hidden), split.n_classes)


def make_method(name: str, model: nn.Module, lr: float, rho: float, mu: float = 1.0, alpha: float = 0.1,
                momentum: float = 0.9, weight_decay: float = 5e-4):
    """(optimizer, step) for sgd | sgd_2x | sam | bisam_log | bisam_tanh, with the reference code's SGD settings.

    SAM and BiSAM share the optimizer; BiSAM's step differentiates Q (with ``mu``, ``alpha``) in its first pass.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: use one of {METHODS}")
    # the loss is only used by SAMPa, which is not among these methods
    return make_optimizer("sgd" if name == "sgd_2x" else name, model, smooth_cross_entropy, lr=lr, rho=rho,
                          momentum=momentum, weight_decay=weight_decay, mu=mu, alpha=alpha)


def gradients_per_step(name: str) -> int:
    """Sequential gradient evaluations per update: SGD 1, SAM and BiSAM 2."""
    return SEQUENTIAL_GRADIENTS["sgd" if name.startswith("sgd") else "sam" if name == "sam" else "bisam"]


def flip_curve(split: Split, rho: float, rhos: Sequence[float], checkpoints: Sequence[int], mu: float = 1.0,
               alpha: float = 0.1, hidden: Sequence[int] = (128, 128), lr: float = 0.05, batch_size: int = 128,
               seed: int = 0) -> dict:
    """The paper's flip diagnostic along SAM training (radius ``rho``) on ``split``; at each checkpoint epoch, the
    same w perturbed by SAM's own smoothed-CE perturbation, by plain CE and by both BiSAM bounds, for every radius
    in ``rhos``, per training batch; how many training points each misclassifies.

    Also records, per checkpoint, the share of training points more confident than the smoothed target
    (p_y > 1 - s), whose smoothed-CE gradient points towards *more* confidence.
    """
    x, y = split.x_train, split.y_train
    model = make_model(split, hidden, seed)
    opt, step = make_method("sam", model, lr, rho)
    checkpoints = sorted(set(int(c) for c in checkpoints))
    rhos = [float(r) for r in rhos]
    out: dict = {"epochs": checkpoints, "rhos": rhos, "rho_train": float(rho), "clean_errors": [],
                 "overconfident": [], "counts": {(k, r): [] for k in PERTURBATIONS for r in rhos}}
    done = 0
    for epoch in progress(checkpoints, desc="flip checkpoints", unit="checkpoint"):
        if epoch > done:
            fit(model, x, y, epochs=epoch - done, optimizer=opt, step=step, loss_fn=training_loss,
                batch_size=batch_size, seed=seed * 1000 + done, progress=False)
            done = epoch
        with torch.no_grad():
            p_y = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
        out["overconfident"].append(float((p_y > 1 - SMOOTHING).double().mean()))
        out["clean_errors"].append(int((predict(model, x) != y).sum()))
        for name in PERTURBATIONS:
            counts = count_flips(model, x, y, perturbation_loss(name, mu, alpha), rhos, batch_size,
                                 seed=seed * 1000 + epoch)
            for r in rhos:
                out["counts"][(name, r)].append(counts[r])
    return out


def flip_summary(flips: dict, rho: float) -> dict:
    """Flips at ``rho`` per perturbation, **summed over the checkpoint epochs** of ``flips["epochs"]``: at each
    checkpoint a count is the number of training points right at w and wrong at w + e (out of all training points),
    so ``flips_sce`` = sum over checkpoints of that count for SAM's own perturbation. ``late_*`` sums the
    checkpoints in the second half of training only."""
    r = float(rho)
    total = {k: sum(c["flips"] for c in flips["counts"][(k, r)]) for k in PERTURBATIONS}
    late = [i for i, e in enumerate(flips["epochs"]) if e >= flips["epochs"][-1] / 2]
    late_total = {k: sum(flips["counts"][(k, r)][i]["flips"] for i in late) for k in PERTURBATIONS}
    return {"flips_sce": total["sce"], "flips_ce": total["ce"], "flips_log": total["log"],
            "flips_tanh": total["tanh"], "flips_log_minus_sce": total["log"] - total["sce"],
            "flips_ce_minus_sce": total["ce"] - total["sce"], "flips_log_minus_ce": total["log"] - total["ce"],
            "flips_tanh_minus_log": total["tanh"] - total["log"],
            "late_flips_sce": late_total["sce"], "late_flips_log": late_total["log"],
            "final_train_errors": flips["clean_errors"][-1], "final_overconfident": flips["overconfident"][-1]}


def flip_table(flips: dict, rho: float, n_train: int):
    """Per perturbation: flips summed over the checkpoints, their mean per checkpoint and share of the training set."""
    r, n_ck = float(rho), len(flips["epochs"])
    rows = []
    for k in PERTURBATIONS:
        counts = [c["flips"] for c in flips["counts"][(k, r)]]
        rows.append({"perturbation": NAMES[k], f"flips summed over {n_ck} checkpoints": sum(counts),
                     "mean flips per checkpoint": sum(counts) / n_ck,
                     "share of the training points": sum(counts) / (n_ck * n_train),
                     "at the last checkpoint": counts[-1]})
    epochs = ", ".join(str(e) for e in flips["epochs"])
    return table(rows, title=f"Training points flipped (right at w, wrong at w + e) at rho {r:g}, out of {n_train} "
                             f"per checkpoint; checkpoints at epochs {epochs}")


def toy_table(toy_metrics: dict, surrogate: str, n: int):
    """The toy's flips and gradient-mass shares as one table."""
    return table([{"perturbation": "CE", "flips per toy (mean)": toy_metrics["toy_flips_ce"],
                   "gradient mass on misclassified points": toy_metrics["toy_wrong_share_ce"]},
                  {"perturbation": f"BiSAM {surrogate}", "flips per toy (mean)": toy_metrics[f"toy_flips_{surrogate}"],
                   "gradient mass on misclassified points": toy_metrics["toy_wrong_share_surrogate"]},
                  {"perturbation": "BiSAM tanh" if surrogate == "log" else "BiSAM log",
                   "flips per toy (mean)": toy_metrics["toy_flips_tanh" if surrogate == "log" else "toy_flips_log"],
                   "gradient mass on misclassified points": None}],
                 title=f"2-D toys: {toy_metrics['toy_clean_errors']:.1f} of {n} training points wrong at w (mean); "
                       f"{toy_metrics['toy_seeds_surrogate_ge_ce']:.0%} of toys with surrogate flips >= CE flips")


def draw_flips(fig, rho: float, flips: dict) -> None:
    """Flips along SAM training at ``rho`` for every perturbation (left) and summed over training vs rho (right)."""
    ax, ax2 = fig.subplots(1, 2)
    r = float(rho)
    epochs = flips["epochs"]
    for name in PERTURBATIONS:
        ax.plot(epochs, [c["flips"] for c in flips["counts"][(name, r)]], "o-", ms=3, color=COLORS[name],
                label=NAMES[name])
    ax.plot(epochs, flips["clean_errors"], "--", color="gray", label="errors at w")
    ax.set_yscale("symlog", linthresh=10)
    ax.legend()
    label(ax, "epoch of SAM training", "training points flipped by e",
          f"same w, same rho = {r:g} (SAM trained with rho {flips['rho_train']:g})")
    base = [sum(c["flips"] for c in flips["counts"][("sce", q)]) for q in flips["rhos"]]
    for name in PERTURBATIONS:
        total = [sum(c["flips"] for c in flips["counts"][(name, q)]) for q in flips["rhos"]]
        ax2.plot(flips["rhos"], [t / b if b else float("nan") for t, b in zip(total, base)], "o-",
                 color=COLORS[name], label=NAMES[name])
    ax2.axvline(r, color="k", ls=":", lw=1)
    _rho_axis(ax2, flips["rhos"])
    label(ax2, "perturbation radius rho", "flips summed over checkpoints / SAM's",
          "relative to SAM's own perturbation")


def accuracy_runs(split: Split, seeds: Sequence[int], epochs: int, rho: float, mu: float = 1.0, alpha: float = 0.1,
                  hidden: Sequence[int] = (128, 128), lr: float = 0.05, batch_size: int = 128,
                  methods: Sequence[str] = METHODS) -> dict:
    """Test accuracy per epoch of every method and seed (same initialisation and batches per seed).

    ``sgd_2x`` is SGD with twice the epochs: the same number of gradient evaluations as SAM and BiSAM.
    Accuracy is the final epoch's on the test split (no validation split, no checkpoint selection).
    """
    steps_per_epoch = math.ceil(len(split.x_train) / batch_size)
    runs: dict = {}
    jobs = [(name, seed) for name in methods for seed in seeds]
    for name, seed in progress(jobs, desc="training runs", unit="run"):
        model = make_model(split, hidden, seed)
        opt, step = make_method(name, model, lr, rho, mu, alpha)
        n_epochs = 2 * epochs if name == "sgd_2x" else epochs
        hist = fit(model, split.x_train, split.y_train, epochs=n_epochs, optimizer=opt, step=step,
                   loss_fn=training_loss, batch_size=batch_size, x_test=split.x_test, y_test=split.y_test,
                   seed=seed, progress=False)
        per_epoch = steps_per_epoch * gradients_per_step(name)
        runs[(name, seed)] = {"test_acc": list(hist.test_acc), "train_loss": list(hist.train_loss),
                              "grad_evals": [per_epoch * (i + 1) for i in range(n_epochs)]}
    return {"methods": list(methods), "seeds": list(seeds), "runs": runs}


def accuracy_summary(acc: dict) -> dict:
    """Mean and standard deviation of the final test accuracy per method, and the paired differences."""
    final = {m: np.array([acc["runs"][(m, s)]["test_acc"][-1] for s in acc["seeds"]]) for m in acc["methods"]}
    out: dict = {}
    for m, a in final.items():
        out[f"acc_{m}"] = float(a.mean())
        out[f"acc_{m}_std"] = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        out[f"grad_evals_{m}"] = acc["runs"][(m, acc["seeds"][0])]["grad_evals"][-1]
    for b in ("bisam_log", "bisam_tanh"):
        if b in final and "sam" in final:
            out[f"{b}_minus_sam"] = float((final[b] - final["sam"]).mean())
            out[f"seeds_{b}_beats_sam"] = int((final[b] > final["sam"]).sum())
    if "sam" in final and "sgd" in final:
        out["sam_minus_sgd"] = float((final["sam"] - final["sgd"]).mean())
    return out


def accuracy_table(acc: dict):
    """Method, gradient evaluations, final test accuracy (mean, std over seeds, every seed)."""
    s = accuracy_summary(acc)
    return table([{"method": NAMES[m], "gradient evaluations": s["grad_evals_" + m], "test accuracy (mean)":
                   s["acc_" + m], "std over seeds": s["acc_" + m + "_std"],
                   "per seed": [acc["runs"][(m, sd)]["test_acc"][-1] for sd in acc["seeds"]]}
                  for m in acc["methods"]], title=f"Final test accuracy on digits, {len(acc['seeds'])} seeds")


def draw_accuracy(fig, acc: dict) -> None:
    """Final test accuracy per method and seed (left), test accuracy vs gradient evaluations (right)."""
    ax, ax2 = fig.subplots(1, 2)
    s = accuracy_summary(acc)
    for i, m in enumerate(acc["methods"]):
        final = [acc["runs"][(m, sd)]["test_acc"][-1] for sd in acc["seeds"]]
        ax.scatter([i] * len(final), final, color=COLORS[m], s=18, alpha=0.6)
        ax.errorbar([i + 0.15], [s[f"acc_{m}"]], yerr=[s[f"acc_{m}_std"]], fmt="o", color=COLORS[m], capsize=4)
    ax.set_xticks(range(len(acc["methods"])), [NAMES[m] for m in acc["methods"]], rotation=20)
    label(ax, "method", "final test accuracy", f"{len(acc['seeds'])} seeds: each seed (dots), mean +- std")
    for m in acc["methods"]:
        curves = np.array([acc["runs"][(m, sd)]["test_acc"] for sd in acc["seeds"]])
        style = dict(lw=4, alpha=0.5) if m == "sgd" else dict(ls="--") if m == "sgd_2x" else {}
        ax2.plot(acc["runs"][(m, acc["seeds"][0])]["grad_evals"], curves.mean(0), color=COLORS[m], label=NAMES[m],
                 **style)
    ax2.legend()
    lo = min(min(r["test_acc"][len(r["test_acc"]) // 4:]) for r in acc["runs"].values())
    ax2.set_ylim(max(lo - 0.01, 0), None)
    label(ax2, "sequential gradient evaluations", "test accuracy (mean over seeds)",
          "cost: SAM and BiSAM need 2 per step")


def draw_surrogates(fig, mu: float, alpha: float, curves: dict) -> None:
    """The per-class terms, the per-sample bounds along one logit and the gradient weights, at (mu, alpha)."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    x = curves["x"].numpy()
    e = curves["by_mu_alpha"][(float(mu), float(alpha))]
    ax1.plot(x, curves["step"].numpy(), color="k", lw=2, label=r"0-1 step $1[x \geq 0]$")
    ax1.plot(x, curves["ce_term"].numpy(), color=COLORS["ce"], label=r"CE term $\log_2(1 + e^x)$")
    ax1.plot(x, curves["phi_log"].numpy(), color=COLORS["log"], label=r"$\phi_{\log}$")
    ax1.plot(x, e["phi_tanh"].numpy(), color=COLORS["tanh"], label=rf"$\phi_{{\tanh}}$, $\alpha$ = {alpha:g}")
    ax1.set_ylim(-2.5, 3)
    ax1.legend(loc="upper left")
    label(ax1, r"$x = F_j = f_j - f_y$", "per-class term", "upper vs lower bounds of the step")
    ax2.plot(x, curves["zero_one"].numpy(), color="k", lw=2, label="0-1 loss")
    ax2.plot(x, curves["ce_bound"].numpy(), color=COLORS["ce"], label=r"CE / $\log 2$")
    for kind in SURROGATES:
        ax2.plot(x, e[f"q_{kind}"].numpy(), color=COLORS[kind], label=rf"$Q_{{\{kind}}} - \log(K)/\mu$")
    ax2.set_ylim(-2.5, 3)
    ax2.legend(loc="upper left")
    label(ax2, "competing logit t (logits 0, t, -1; label 0)", "per-sample loss", rf"per sample, $\mu$ = {mu:g}")
    ax3.plot(x, curves["weight_ce"].numpy(), color=COLORS["ce"], label="CE")
    for kind in SURROGATES:
        ax3.plot(x, e[f"weight_{kind}"].numpy(), color=COLORS[kind], label=rf"$Q_{{\{kind}}}$")
    ax3.axvline(0, color="k", lw=0.8, ls=":")
    ax3.text(0.98, 0.5, "misclassified\n(F > 0)", transform=ax3.transAxes, ha="right", fontsize=8)
    ax3.legend(loc="upper left")
    label(ax3, "margin F of a two-class sample", r"$\partial$ loss / $\partial F$ (max = 1)",
          "who pulls the perturbation")


# ----------------------------------------------------------------------------- exercises

def check_exercise_phi_log(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: phi_log(x) = 1 - log(1 + exp(gamma - x)), gamma = log(e - 1), stable for large |x|."""
    cases = [(torch.tensor([0.0], dtype=torch.float64),),
             (torch.tensor([-3.0, -1.0, 0.5, GAMMA, 2.0, 6.0], dtype=torch.float64),),
             (torch.tensor([-200.0, -30.0, 30.0, 200.0]),)]
    return check_exercise("phi_log", attempt, phi_log, cases, ctx=ctx,
                          hint="1 - softplus(gamma - x) with torch.nn.functional.softplus stays finite for "
                               "large |x|; m.GAMMA holds gamma.")


def check_exercise_logit_shift(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: the vectorised shift F = f - f_y (one gather, no Python loop over rows)."""
    g = torch.Generator().manual_seed(0)
    cases = [(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]), torch.tensor([0, 2])),
             (torch.randn(7, 10, generator=g), torch.randint(0, 10, (7,), generator=g)),
             (torch.randn(1, 4, generator=g), torch.tensor([3]))]
    return check_exercise("logit_shift", attempt, logit_shift, cases, ctx=ctx,
                          hint="logits.gather(1, targets[:, None]) picks f_y per row as a column; broadcasting "
                               "does the rest.")


__all__ = [
    "SPEC", "setup", "GAMMA", "SURROGATES", "PERTURBATIONS", "METHODS", "NAMES", "phi_log", "phi_tanh", "phi",
    "bisam_loss", "smooth_cross_entropy", "zero_one_loss", "training_loss", "logit_shift", "logit_shift_loop",
    "ce_term", "q_lower_bound", "ce_upper_bound", "perturbation_loss", "gradient_weight", "surrogate_curves",
    "bound_checks", "shift_gradient_error", "first_step_check", "perturbation", "perturbed", "predict",
    "flips_from_predictions", "count_flips", "misclassified_weight_share", "make_toy", "train_toy", "toy_experiment",
    "toy_summary", "draw_toy", "make_model", "make_method", "gradients_per_step", "flip_curve", "flip_summary",
    "draw_flips", "accuracy_runs", "accuracy_summary", "accuracy_table", "draw_accuracy", "draw_surrogates",
    "check_exercise_phi_log", "check_exercise_logit_shift", "load_digits", "figure", "label", "explore",
    "show_source", "table", "SAM", "bisam_step", "sam_step", "MODEL_ANSWERS", "flip_table", "toy_table",
]
