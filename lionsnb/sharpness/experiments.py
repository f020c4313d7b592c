"""The start-here experiments: learning-rate sweeps on a 2-D surface and on a tiny MLP, and
SAM's worst-case loss around sharp and flat minima.  Each returns plain dicts of tensors,
lists and numbers so that ``ctx.cached`` can store them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lionsnb.datasets import Split
from lionsnb.models import MLP, flat_parameters
from lionsnb.progress import progress
from lionsnb.sharpness.hessian import exact_hessian, power_iteration, top_hessian_eigenvalue
from lionsnb.sharpness.surfaces import TwoBasinSurface, gradient_descent, worst_case_loss

#: a run "converged" to a minimum when it ends closer to it than this
CONVERGED_DISTANCE = 1e-3


def surface_lr_sweep(surface: TwoBasinSurface, lrs: Sequence[float], steps: int,
                     start: Sequence[float] = (0.02, 0.05)) -> dict:
    """Gradient descent from next to the sharp minimum (offset ``start``) for every learning rate.

    Per run: the trajectory, the loss curve, where it ended ("sharp" or "flat" when it
    converged to that minimum, i.e. ended within 1e-3 of it; "oscillating" when it is
    still bouncing inside a basin; "plateau" when it stalled far from both minima;
    "wandering" otherwise) and the sharpness at its end.
    """
    w0 = surface.minimum("sharp") + torch.tensor(start, dtype=torch.float64)
    paths = gradient_descent(surface, w0, list(lrs), steps)
    minima = {k: surface.minimum(k) for k in ("sharp", "flat")}
    runs = {}
    for i, lr in enumerate(lrs):
        path = paths[:, i]
        end = path[-1]
        grad_norm = float(surface.grad(end).norm())
        near = [k for k, m in minima.items() if float((end - m).norm()) < CONVERGED_DISTANCE]
        if near:
            outcome = near[0]
        elif surface.basin(end) != "none":
            outcome = "oscillating"
        else:
            outcome = "plateau" if grad_norm < 1e-6 else "wandering"
        runs[float(lr)] = {"path": path, "loss": surface.loss(path), "outcome": outcome,
                           "final_sharpness": surface.sharpness(end), "grad_norm": grad_norm}
    return runs


def stability_summary(runs: dict, sharp_lambda: float) -> dict:
    """The measured stability threshold around the sharp minimum, in units of 2 / lambda_max.

    Linear stability says GD with step lr can converge to a minimum only if
    lr * lambda_max < 2.  ``violations`` counts converged runs that break this.
    """
    stay = [lr for lr, r in runs.items() if r["outcome"] == "sharp"]
    leave = [lr for lr, r in runs.items() if r["outcome"] != "sharp"]
    violations = sum(1 for lr, r in runs.items()
                     if r["outcome"] in ("sharp", "flat") and lr * r["final_sharpness"] >= 2.0)
    return {
        "largest_lr_converging_to_sharp_times_sharpness": max(stay) * sharp_lambda if stay else 0.0,
        "smallest_lr_leaving_sharp_times_sharpness": min(leave) * sharp_lambda if leave else math.inf,
        "stability_violations_2d": violations,
    }


def worst_case_curves(surface: TwoBasinSurface, rhos: Sequence[float]) -> dict:
    """SAM's worst-case loss max_{||e||<=rho} L(w* + e) at both minima, measured and 2nd-order predicted."""
    out: dict = {"rho": [float(r) for r in rhos]}
    for which in ("sharp", "flat"):
        w = surface.minimum(which)
        lam, base = surface.sharpness(w), float(surface.loss(w))
        out[which] = [worst_case_loss(surface, w, r) for r in rhos]
        out[which + "_quadratic"] = [base + 0.5 * lam * r * r for r in rhos]
        out[which + "_lambda"], out[which + "_loss"] = lam, base
    return out


def flip_radius(curves: dict) -> float:
    """Smallest rho (linear interpolation on the curve) where the flat minimum's worst case is lower."""
    rho, gap = curves["rho"], [s - f for s, f in zip(curves["sharp"], curves["flat"])]
    for i in range(1, len(rho)):
        if gap[i - 1] < 0 <= gap[i]:
            return rho[i - 1] + (rho[i] - rho[i - 1]) * (-gap[i - 1]) / (gap[i] - gap[i - 1])
    return math.inf


def predicted_flip_radius(curves: dict) -> float:
    """Where the quadratic predictions cross: sqrt(2 (L_f - L_s) / (lambda_s - lambda_f))."""
    gap = curves["flat_loss"] - curves["sharp_loss"]
    return math.sqrt(2 * gap / (curves["sharp_lambda"] - curves["flat_lambda"]))


def sam_landscape(surface: TwoBasinSurface, rho: float, n: int, n_angles: int = 48, n_radii: int = 6) -> torch.Tensor:
    """L_rho(w) = max_{||e||<=rho} L(w + e) on the plotting grid (n x n), vectorised."""
    X, Y, L = surface.grid(n)
    if rho == 0:
        return L
    w = torch.stack([X, Y], -1)[..., None, None, :]
    angles = torch.linspace(0, 2 * math.pi, n_angles + 1, dtype=torch.float64)[:-1]
    radii = torch.linspace(0, rho, n_radii + 1, dtype=torch.float64)
    e = radii[:, None, None] * torch.stack([angles.cos(), angles.sin()], -1)[None]
    return surface.loss(w + e).amax(dim=(-2, -1))


def train_full_batch_gd(split: Split, lr: float, hidden: int, steps: int, eval_every: int, power_iters: int,
                        seed: int, device: torch.device | str = "cpu") -> dict:
    """Full-batch gradient descent on a tanh MLP (64 -> hidden -> hidden -> 10), cross-entropy.

    Every ``eval_every`` steps: the Hessian's top eigenvalue on the training set
    (power iteration), the training loss and the test accuracy.  Returns the curves
    and the final weights; ``diverged`` when the final loss is not below the initial one.
    """
    torch.manual_seed(seed)
    model = MLP(split.x_train.shape[1], [hidden, hidden], split.n_classes, torch.nn.Tanh).to(device)
    x, y = split.x_train.to(device), split.y_train.to(device)
    xt, yt = split.x_test.to(device), split.y_test.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    log: dict[str, list] = {"step": [], "sharpness": [], "train_loss": [], "test_acc": []}
    for step in progress(range(steps + 1), desc=f"full-batch GD, lr {lr:g}", unit="step"):
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                train_loss = float(F.cross_entropy(model(x), y))
                acc = float((model(xt).argmax(1) == yt).float().mean())
            finite = math.isfinite(train_loss)
            lam = top_hessian_eigenvalue(model, F.cross_entropy, x, y, iters=power_iters, seed=seed) if finite \
                else float("nan")
            for key, value in zip(log, (step, lam, train_loss, acc)):
                log[key].append(value)
            if not finite:
                break
        if step < steps:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    diverged = not (math.isfinite(log["train_loss"][-1]) and log["train_loss"][-1] < log["train_loss"][0])
    return {"lr": lr, **log, "diverged": diverged,
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def load_mlp(state: dict, split: Split, hidden: int) -> MLP:
    """Rebuild the MLP of :func:`train_full_batch_gd` from its saved weights."""
    model = MLP(split.x_train.shape[1], [hidden, hidden], split.n_classes, torch.nn.Tanh)
    model.load_state_dict(state)
    return model


def loss_slices(model: MLP, split: Split, rhos: Sequence[float], n_points: int, power_iters: int,
                seed: int = 0) -> dict:
    """Training loss along the top Hessian eigenvector, L(w + t v) for |t| <= max(rhos), and SAM's
    first-order worst case L(w + rho g / ||g||) - L(w) for each rho."""
    x, y = split.x_train, split.y_train
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    sizes, shapes = [p.numel() for p in params], [p.shape for p in params]

    def matvec(flat: torch.Tensor) -> torch.Tensor:
        parts = [c.view(s) for c, s in zip(torch.split(flat, sizes), shapes)]
        hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, parts)), params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    lam, v = power_iteration(matvec, sum(sizes), iters=power_iters, generator=torch.Generator().manual_seed(seed))
    g = torch.cat([gr.reshape(-1) for gr in grads]).detach()
    w0 = flat_parameters(model)
    t_max = max(rhos) if max(rhos) > 0 else 1.0
    ts = torch.linspace(-t_max, t_max, n_points, dtype=torch.float32)

    @torch.no_grad()
    def loss_at(w: torch.Tensor) -> float:
        torch.nn.utils.vector_to_parameters(w, model.parameters())
        return float(F.cross_entropy(model(x), y))

    base = loss_at(w0)
    along = [loss_at(w0 + t * v) for t in ts]
    sam = [loss_at(w0 + r * g / (g.norm() + 1e-12)) - base for r in rhos]
    torch.nn.utils.vector_to_parameters(w0, model.parameters())
    return {"t": ts, "along_top_eigenvector": torch.tensor(along), "base_loss": base, "sharpness": lam,
            "rho": [float(r) for r in rhos], "sam_increase": sam}


def power_iteration_check(split: Split, hidden: int = 8, n: int = 200, steps: int = 300, seed: int = 0) -> dict:
    """Power iteration vs the exact Hessian spectrum of a tiny trained MLP (a few hundred parameters)."""
    torch.manual_seed(seed)
    model = MLP(split.x_train.shape[1], [hidden], split.n_classes, torch.nn.Tanh).double()
    x, y = split.x_train[:n].double(), split.y_train[:n]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    H = exact_hessian(model, F.cross_entropy, x, y)
    eigs = torch.linalg.eigvalsh(H)
    estimate = top_hessian_eigenvalue(model, F.cross_entropy, x, y, iters=200, seed=seed, tol=1e-10)
    return {"n_params": H.shape[0], "exact_top": float(eigs[-1]), "second": float(eigs[-2]),
            "estimate": estimate, "rel_error": abs(estimate - float(eigs[-1])) / abs(float(eigs[-1]))}


def sam_landscapes(surface: TwoBasinSurface, rhos: Sequence[float], n: int) -> dict[float, torch.Tensor]:
    """:func:`sam_landscape` for every radius in ``rhos``."""
    return {float(r): sam_landscape(surface, r, n) for r in rhos}


def train_mlp_runs(split: Split, lrs: Sequence[float], hidden: int, steps: int, eval_every: int, power_iters: int,
                   seed: int, device: str = "cpu") -> dict[float, dict]:
    """:func:`train_full_batch_gd` for every learning rate in ``lrs`` (same seed, same data)."""
    return {float(lr): train_full_batch_gd(split, lr, hidden, steps, eval_every, power_iters, seed=seed,
                                           device=device) for lr in lrs}


def slices_of_runs(mlp_runs: dict, lrs: Sequence[float], split: Split, hidden: int, rhos: Sequence[float],
                   n_points: int, power_iters: int, seed: int = 0) -> dict[float, dict]:
    """:func:`loss_slices` around the trained networks of ``mlp_runs`` for the learning rates ``lrs``."""
    return {float(lr): loss_slices(load_mlp(mlp_runs[lr]["state"], split, hidden), split, rhos, n_points,
                                   power_iters, seed=seed) for lr in lrs}
