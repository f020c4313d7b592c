"""Backs ``notebooks/unlearning/04_autolr.ipynb``: NGDiff's automatic learning rate (GeN's parabola fit).

The rule lives in :mod:`lionsnb.unlearning.autolr`, the trainer that calls it every ``lazy_freq`` steps in
:mod:`lionsnb.unlearning.trainer`; this module runs the sweeps and draws them.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.unlearning.autolr import gen_fit, gen_lr_update, gen_optimum, lr_parabola
from lionsnb.unlearning.benchmark import autolr_overhead
from lionsnb.unlearning.experiments import run_unlearning
from lionsnb.unlearning.pipeline import build_pipeline
from lionsnb.widgets import explore

_TINY = dict(model="tiny", n_perturbed=5, forget_pct=10, n_layer=2, n_head=2, n_embd=64, n_positions=48)

SPEC = MethodSpec(
    name="unlearning.nb04_autolr",
    title="Unlearning 4: NGDiff's automatic learning rate (GeN's parabola fit)",
    profiles={
        # lrs: initial learning rates per optimizer; lazies / smooths: the explorer's grid; timing_repeats: repeats
        # of the overhead measurement (fixed lr and AutoLR interleaved)
        "smoke": dict(pipeline=dict(_TINY, n_authors=10, facts_per_author=3, n_eval=6, base_epochs=15, ft_epochs=12),
                      steps=12, batch=6, lrs={"sgd": (0.003, 0.3), "adamw": (2e-5, 2e-3)}, lazies=(4,),
                      smooths=(0.0, 0.9), timing_steps=12, timing_repeats=1),
        "teach": dict(pipeline=dict(_TINY, n_authors=20, facts_per_author=5, n_eval=20, base_epochs=50, ft_epochs=35),
                      steps=60, batch=8, lrs={"sgd": (0.003, 0.03, 0.3), "adamw": (2e-5, 2e-4, 2e-3)},
                      lazies=(1, 4, 8), smooths=(0.0, 0.9), timing_steps=40, timing_repeats=3),
        "full": dict(pipeline=dict(_TINY, n_authors=50, facts_per_author=10, n_eval=40, base_epochs=60,
                                   ft_epochs=40, n_layer=6, n_embd=256, n_head=4),
                     steps=200, batch=16, lrs={"sgd": (0.003, 0.03, 0.3), "adamw": (2e-5, 2e-4, 2e-3)},
                     lazies=(1, 4, 8), smooths=(0.0, 0.9), timing_steps=100, timing_repeats=5),
    },
    knobs={
        "optimizer": Knob("sgd", "base optimiser of NGDiff (GeN probes along its update)", str,
                          choices=("sgd", "adamw")),
        "lazy_freq": Knob(4, "GeN refits the learning rate every lazy_freq steps", int, low=1, high=100),
        "smooth": Knob(0.9, "GeN's smoothing (0.9 in the GeN code; 0 jumps to the clipped optimum)", float,
                       low=0.0, high=1.0),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "Along NGDiff's direction the retain loss has slope B = <d, g_R> = ||g_R|| (1 - cos) >= 0, so a parabola fitted "
       "to it has a positive B and, if it curves up, a finite optimum x* = B / A: the step that lowers the retain loss "
       "most. The combined objective L_R - L_F has no such anchor: along a direction that raises L_F it usually keeps "
       "falling (L_F can grow without bound: the model can always make the forget answers less likely), so its "
       "parabola is often concave (A < 0, rejected) or its optimum runs away, and the fitted lr would grow until the "
       "model collapses, which is exactly GA's failure. Probing the retain loss picks the largest step the retain "
       "task tolerates, and the forget loss rises along d anyway (<d, g_F> <= 0).",
    3: "With smooth = 0.9 each accepted update is lr <- 0.1 clip(x*, lr/2, 2 lr) + 0.9 lr, a factor between 0.95 and "
       "1.10. Recovering from an lr 10 times too small needs at least log(10) / log(1.10) = 24.2, so 25 accepted "
       "updates, i.e. 100 steps at lazy_freq 4 (if every fit is valid and asks for at least 2 lr). From 10 times too "
       "large: log(10) / -log(0.95) = 44.9, so 45 updates, 180 steps. A 40-step unlearning run therefore cannot "
       "recover from a badly chosen initial lr; smooth = 0 moves by up to 2x per update (4 updates up, 4 down).",
}


# ----------------------------------------------------------------------------- implementation checks

def quadratic_check(seed: int = 0, n: int = 8) -> dict:
    """GeN's probe on an exact quadratic L(w) = 1/2 (w - w*)' H (w - w*) with SGD: the fitted optimum must be the exact
    minimiser along the gradient, g'g / g'Hg, and the parameters must end exactly where they started."""
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=gen, dtype=torch.float64)
    H = M @ M.T + n * torch.eye(n, dtype=torch.float64)
    w_star = torch.randn(n, generator=gen, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64))

    def loss():
        return 0.5 * (w - w_star) @ H @ (w - w_star)

    opt = torch.optim.SGD([w], lr=0.01)
    loss().backward()
    g = w.grad.detach().clone()
    start = w.detach().clone()
    res = lr_parabola([w], opt, loss, smooth=0.0)
    exact = float(g @ g / (g @ H @ g))
    return {"fitted optimum x*": res.x_opt, "exact g'g / g'Hg": exact,
            "relative error": abs(res.x_opt - exact) / exact, "R^2": res.r2,
            "new lr (smooth 0: clip(x*, lr/2, 2 lr))": res.lr_after,
            "parameters moved by the probe": float((w.detach() - start).abs().max())}


# ----------------------------------------------------------------------------- runs

def autolr_runs(ctx, pipe, optimizer: str, lazies, smooths) -> dict:
    """NGDiff with a fixed lr and with AutoLR for every (initial lr, lazy_freq, smooth) (each run cached)."""
    runs = {}
    for lr in ctx.sizes.lrs[optimizer]:
        common = dict(sizes=pipe.sizes, seed=ctx.seed, target_state=pipe.states["target"], method="NGDiff", lr=lr,
                      steps=ctx.sizes.steps, optimizer=optimizer, forget_batch=ctx.sizes.batch,
                      retain_batch=ctx.sizes.batch, eval_rouge=False, run_seed=ctx.seed)
        runs[(lr, 0, 0.0)] = ctx.cached("ngdiff_fixed", run_unlearning, **common)
        for lazy in lazies:
            for smooth in smooths:
                runs[(lr, lazy, smooth)] = ctx.cached("ngdiff_autolr", run_unlearning, auto_lr=True, lazy_freq=lazy,
                                                      smooth=smooth, **common)
    return runs


def run_table(runs: dict):
    """One row per run: initial and final lr, number of accepted updates, final losses on the eval sets."""
    rows = []
    for (lr, lazy, smooth), run in runs.items():
        lrs = run["logs"]["lr_used"]
        first, last = run["evals"][0], run["evals"][-1]
        rows.append({"initial lr": lr, "AutoLR": "off" if lazy == 0 else f"lazy {lazy}, smooth {smooth:g}",
                     "final lr": lrs[-1], "updates accepted": sum(p["accepted"] for p in run["probes"]),
                     "of": len(run["probes"]), "forget NLL": last["forget_nll"],
                     "forget NLL gain": last["forget_nll"] - first["forget_nll"],
                     "retain NLL change": last["retain_nll"] - first["retain_nll"]})
    return table(rows, title="NGDiff with a fixed and an automatic learning rate")


def update_factors(runs: dict) -> dict:
    """Every accepted GeN update: the factor lr_after / lr_before per smoothing, and whether its sign follows
    log(x* / lr) (an unchanged lr counts as agreeing only if x* = lr within 1e-12)."""
    factors: dict[float, list[float]] = {}
    agree, total = 0, 0
    for (_, lazy, smooth), run in runs.items():
        if lazy == 0:
            continue
        for p in run["probes"]:
            if not p["accepted"]:
                continue
            f = p["lr_after"] / p["lr_before"]
            factors.setdefault(smooth, []).append(f)
            want = np.sign(math.log(p["x_opt"] / p["lr_before"]))
            agree += int(np.sign(f - 1) == want or abs(f - 1) < 1e-12)
            total += 1
    return {"factors": factors, "sign_agreement": agree / total if total else float("nan"), "accepted": total}


def factor_table(uf: dict):
    return table([{"smooth": s, "accepted updates": len(f), "smallest factor": min(f), "largest factor": max(f)}
                  for s, f in sorted(uf["factors"].items())],
                 title=f"lr_after / lr_before per accepted GeN update (sign follows log(x*/lr) in "
                       f"{uf['sign_agreement']:.0%} of {uf['accepted']})")


def timing(sizes: dict, seed: int, target_state: dict, optimizer: str, lr: float, steps: int, batch: int,
           lazy_freq: int, repeats: int) -> dict:
    """Wall time of NGDiff with a fixed lr and with AutoLR (same steps and batches, interleaved ``repeats`` times in
    one process): :func:`lionsnb.unlearning.benchmark.autolr_overhead`, as the benchmark script measures it."""
    return autolr_overhead(sizes, seed, target_state, optimizer=optimizer, lr=lr, steps=steps, batch=batch,
                           lazy_freq=lazy_freq, repeats=repeats)


# ----------------------------------------------------------------------------- figures

def draw_lr_run(fig, *, lr: float, lazy: int, smooth: float, runs: dict) -> None:
    """Left: the learning rate per step with GeN's fitted optimum x* at each update (hollow: rejected fit).
    Right: forget and retain loss of the training batches, AutoLR against the fixed lr."""
    run, fixed = runs[(lr, lazy, smooth)], runs[(lr, 0, 0.0)]
    ax, bx = fig.subplots(1, 2)
    ax.plot(run["logs"]["lr_used"], color="tab:olive", label="lr used (AutoLR)")
    ax.axhline(lr, color="tab:green", ls="--", lw=1, label="fixed lr")
    acc = [p for p in run["probes"] if p["accepted"]]
    rej = [p for p in run["probes"] if not p["accepted"] and math.isfinite(p["x_opt"]) and p["x_opt"] > 0]
    ax.plot([p["step"] for p in acc], [p["x_opt"] for p in acc], "o", color="tab:red", ms=4, label="fitted x*")
    ax.plot([p["step"] for p in rej], [p["x_opt"] for p in rej], "o", mfc="none", color="tab:red", ms=4,
            label="x* of a rejected fit")
    ax.set_yscale("log")
    label(ax, "step", "learning rate", f"initial lr {lr:g}, lazy {lazy}, smooth {smooth:g}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    for r, style, name in ((run, "-", "AutoLR"), (fixed, "--", "fixed lr")):
        bx.plot(r["logs"]["loss_forget"], style, color="tab:red", label=f"forget loss, {name}")
        bx.plot(r["logs"]["loss_retain"], style, color="tab:blue", label=f"retain loss, {name}")
    bx.set_yscale("log")
    label(bx, "step", "batch loss (mean token NLL)", "NGDiff")
    bx.legend(fontsize=7)


def draw_factors(fig, *, uf: dict) -> None:
    """Histogram of lr_after / lr_before per accepted update, per smoothing, with GeN's bounds."""
    ax = fig.subplots()
    for s, f in sorted(uf["factors"].items()):
        ax.hist(np.log2(f), bins=30, alpha=0.6, label=f"smooth {s:g}")
    for b, txt in ((math.log2(0.95), "0.95"), (math.log2(1.10), "1.10"), (-1, "1/2"), (1, "2")):
        ax.axvline(b, color="0.5", ls=":", lw=1)
        ax.text(b, ax.get_ylim()[1] * 0.95, txt, fontsize=7, ha="center")
    label(ax, "log2(lr after / lr before)", "accepted GeN updates", "how far one update moves the learning rate")
    ax.legend(fontsize=7)


# ----------------------------------------------------------------------------- exercises

def check_exercise_gen_optimum(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: x* from the three probed losses."""
    cases = [(0.1, -0.02, 0.05), (1.0, -0.5, 0.7), (0.01, -1e-4, 3e-4), (0.5, 0.1, 0.3)]
    return check_exercise("GeN's optimum", attempt, gen_optimum, cases,
                          hint="A = (y+ + y-) / lr^2 and B = (y- - y+) / (2 lr); return B / A.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "show_source", "table", "figure", "explore", "lr_parabola", "gen_lr_update",
    "gen_fit", "quadratic_check", "build_pipeline", "autolr_runs", "run_table", "update_factors", "factor_table",
    "timing", "draw_lr_run", "draw_factors", "check_exercise_gen_optimum",
]
