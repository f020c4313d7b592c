"""Backs ``notebooks/unlearning/02_curves.ipynb``: unlearning curves of GA, GradDiff, NPO and NGDiff on SmolLM2-135M
(last layer trainable), step by step: forget and retain loss, and the geometry of the two gradients along training.

Losses: :mod:`lionsnb.unlearning.losses`; trainer: :mod:`lionsnb.unlearning.trainer`; the SmolLM2 wrapper:
:class:`lionsnb.unlearning.models.TopLayersLM`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.lm import model_knob
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.unlearning.finetune import per_token_losses
from lionsnb.unlearning.losses import kl_retain, lm_loss, npo_loss, sequence_nll
from lionsnb.unlearning.pipeline import build_pipeline, prepare
from lionsnb.unlearning.plots import color, draw_curves
from lionsnb.unlearning.trainer import UnlearnConfig, UnlearningTrainer
from lionsnb.widgets import explore

_LLM = dict(model="smollm2", n_perturbed=5, n_trainable=1, restrict_vocab=True, replay=False, ft_lr=1e-3)

SPEC = MethodSpec(
    name="unlearning.nb02_curves",
    title="Unlearning 2: curves of GA, GradDiff, NPO and NGDiff on SmolLM2",
    profiles={
        # pipeline: SmolLM2 with its last n_trainable layers fine-tuned on the authors (the target);
        # methods / steps / batch: the unlearning runs; lrs: the learning rates of the GradDiff-NGDiff sweep
        # (the knob LR is added); n_world: world facts whose loss tracks general knowledge
        "smoke": dict(pipeline=dict(_LLM, n_authors=4, facts_per_author=3, forget_pct=25, n_eval=4, ft_epochs=3,
                                    ft_batch=8),
                      methods=("GA", "GradDiff", "NPO", "NGDiff"), steps=4, batch=3, lrs=(1e-3,), n_world=6),
        "teach": dict(pipeline=dict(_LLM, n_authors=10, facts_per_author=5, forget_pct=10, n_eval=10, ft_epochs=8,
                                    ft_batch=16),
                      methods=("GA", "GradDiff", "NPO", "NGDiff"), steps=25, batch=8, lrs=(3e-5, 1e-4, 1e-3),
                      n_world=20),
        "full": dict(pipeline=dict(_LLM, n_authors=100, facts_per_author=10, forget_pct=10, n_eval=100,
                                   n_trainable=30, restrict_vocab=False, ft_epochs=5, ft_lr=1e-5, ft_batch=16),
                     methods=("GA", "GradDiff", "KL", "NPO", "NPO+GD", "NGDiff"), steps=100, batch=16,
                     lrs=(1e-6, 1e-5, 1e-4), n_world=40),
    },
    knobs={
        "model": model_knob("the pre-trained Llama-family causal LM whose last layers are unlearned"),
        "lr": Knob(3e-4, "learning rate of every method in the main comparison", float, low=0.0, low_open=True,
                   high=1.0),
        "optimizer": Knob("adamw", "base optimiser of every method", str, choices=("adamw", "sgd")),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "NPO's forget term is (2/beta) log(1 + (pi_theta/pi_ref)^beta), i.e. (2/beta) softplus(-beta (S - S_ref)) with "
       "S the summed NLL. Its gradient is the GA gradient of each sequence times the weight "
       "2 sigmoid(-beta (S - S_ref)): at the start (S = S_ref) the weight is 1, and as a sequence becomes unlikely "
       "(S - S_ref grows) the weight decays exponentially, so a forgotten sequence stops pushing. The loss is bounded "
       "below by 0, while GA's -NLL is unbounded below and its gradient never fades (the cross-entropy gradient "
       "p - onehot has norm up to sqrt 2 however unlikely the answer already is). This is why GA keeps destroying "
       "the model after the forget answers are gone and NPO slows down: in the curves NPO's forget loss falls "
       "behind GA's after the first steps (with more steps or a smaller lr it levels off).",
    3: "kl_retain averages over all B x T positions of the retain batch, including the question tokens and the "
       "padding (TOFU's 'batchmean' over the flattened [B*T, V] logits, no mask). Two consequences: (1) the KL term "
       "also pins the model's predictions on the questions and the padding, which the NLL of GradDiff ignores, so KL "
       "is a stronger anchor to the reference model, and (2) its size depends on the padding: the same examples "
       "padded to a longer batch width give a different loss and gradient scale. A masked mean over answer tokens "
       "would be a different method; to reproduce TOFU you keep the unmasked version.",
}


# ----------------------------------------------------------------------------- implementation checks

def loss_checks(seed: int = 0) -> dict:
    """The losses on hand-built float64 logits with TOFU-style masks, against direct computations."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, 9, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 9, (3, 6), generator=gen)
    labels[0, :2] = -100  # a question of two tokens
    labels[1] = -100      # a row without target ...
    labels[1, 0] = 4      # ... labelled only at position 0, which is never a target
    labels[2, 5] = -100   # padding at the end
    ref = logits + 0.5 * torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1), ignore_index=-100)
    s, s_ref = sequence_nll(logits, labels), sequence_nll(ref, labels)
    rows = [
        {"check": "lm_loss = cross-entropy over all target tokens (HF outputs.loss)",
         "value": float(lm_loss(logits, labels)), "expected": float(ce)},
        {"check": "sequence_nll of a row without target", "value": float(s[1]), "expected": 0.0},
        {"check": "npo_loss at theta = ref: (2/beta) log 2", "value": float(npo_loss(logits, labels, logits)),
         "expected": 20 * math.log(2)},
        {"check": "npo_loss = (2/beta) mean log(1 + exp(-beta (S - S_ref)))",
         "value": float(npo_loss(logits, labels, ref)),
         "expected": float((20 * torch.log1p(torch.exp(-0.1 * (s - s_ref)))).mean())},
        {"check": "kl_retain(p, p) = 0", "value": float(kl_retain(logits, logits)), "expected": 0.0},
        {"check": "kl_retain = KL(p_ref || p_theta), mean over B*T positions", "value": float(kl_retain(logits, ref)),
         "expected": float((ref.softmax(-1) * (ref.log_softmax(-1) - logits.log_softmax(-1))).sum() / 18)},
    ]
    for r in rows:
        r["error"] = abs(r["value"] - r["expected"])
    return {"rows": rows, "max_error": max(r["error"] for r in rows)}


# ----------------------------------------------------------------------------- runs

def set_losses(sizes: dict, seed: int, state: dict, n_world: int) -> dict:
    """Mean per-token NLL of the forget answers, the retain answers and ``n_world`` world facts under ``state``."""
    pipe = prepare(sizes, seed)
    model = pipe.model(state=state)
    world = pipe.sets["world_facts"].gt.rows(range(min(n_world, len(pipe.sets["world_facts"].gt))))
    return {"forget": float(per_token_losses(model, pipe.sets["forget"].gt).mean()),
            "retain": float(per_token_losses(model, pipe.sets["retain"].gt).mean()),
            "world": float(per_token_losses(model, world).mean())}


def curve_run(sizes: dict, seed: int, target_state: dict, method: str, lr: float, optimizer: str, steps: int,
              batch: int, n_world: int) -> dict:
    """One method from the target: the trainer's per-step logs, and the set losses before and after."""
    pipe = prepare(sizes, seed)
    model = pipe.model(state=target_state)
    cfg = UnlearnConfig(method=method, optimizer=optimizer, lr=lr, steps=steps, forget_batch=batch,
                        retain_batch=batch, seed=seed)
    res = UnlearningTrainer(model, pipe.forget_train, pipe.retain_train, cfg).train().as_dict()
    world = pipe.sets["world_facts"].gt.rows(range(min(n_world, len(pipe.sets["world_facts"].gt))))
    res["after"] = {"forget": float(per_token_losses(model, pipe.sets["forget"].gt).mean()),
                    "retain": float(per_token_losses(model, pipe.sets["retain"].gt).mean()),
                    "world": float(per_token_losses(model, world).mean())}
    return res


def run_curves(ctx, pipe, methods, lrs, optimizer: str) -> dict:
    """``{(method, lr): run}``, each run cached on its own."""
    out = {}
    for method in methods:
        for lr in lrs:
            out[(method, lr)] = ctx.cached("curve_run", curve_run, sizes=pipe.sizes, seed=ctx.seed,
                                           target_state=pipe.states["target"], method=method, lr=lr,
                                           optimizer=optimizer, steps=ctx.sizes.steps, batch=ctx.sizes.batch,
                                           n_world=ctx.sizes.n_world)
    return out


def stage_table(base: dict, target: dict):
    return table({"base model (SmolLM2)": base, "target (fine-tuned on all authors)": target}, index="model",
                 title="Mean per-token NLL of the answers")


def final_table(runs: dict, target: dict, lr: float):
    rows = []
    for (method, run_lr), run in runs.items():
        if run_lr != lr:
            continue
        a = run["after"]
        cone = _cone_violations(run)
        rows.append({"method": method, "forget NLL": a["forget"], "forget / target": a["forget"] / target["forget"],
                     "retain NLL": a["retain"], "retain / target": a["retain"] / target["retain"],
                     "world-facts NLL": a["world"], "world / target": a["world"] / target["world"],
                     "steps raising L_R to 1st order": cone, "stopped early": run["diverged_step"] >= 0})
    return table(rows, title=f"After unlearning at lr {lr:g} (mean per-token NLL on the evaluation sets)")


def _cone_violations(run: dict) -> int:
    """Steps whose direction d raised L_R to first order (<d, g_R> < 0): never for NGDiff."""
    return int(np.sum(np.asarray(run["logs"]["rel_retain"]) < -1e-6))


def curve_metrics(runs: dict, target: dict, lr: float, lrs) -> dict:
    out = {}
    for (method, run_lr), run in runs.items():
        key = method.lower().replace("+", "_")
        if run_lr == lr:
            out[f"{key}_forget_ratio"] = run["after"]["forget"] / target["forget"]
            out[f"{key}_retain_ratio"] = run["after"]["retain"] / target["retain"]
            out[f"{key}_world_ratio"] = run["after"]["world"] / target["world"]
    ng = [r for (mth, _), r in runs.items() if mth == "NGDiff"]
    out["ngdiff_cone_violations"] = sum(int(np.sum((np.asarray(r["logs"]["rel_retain"]) < -1e-6)
                                                   | (np.asarray(r["logs"]["rel_forget"]) > 1e-6))) for r in ng)
    if "ngdiff_retain_ratio" in out and "ga_retain_ratio" in out:
        out["ngdiff_over_ga_retain"] = out["ngdiff_retain_ratio"] / out["ga_retain_ratio"]
    if "ngdiff_retain_ratio" in out and "graddiff_retain_ratio" in out:
        out["ngdiff_over_graddiff_retain"] = out["ngdiff_retain_ratio"] / out["graddiff_retain_ratio"]
    big = max(lrs)
    gd = runs.get(("GradDiff", big))
    if gd is not None:
        out["graddiff_large_lr_out_of_cone_share"] = float(np.mean(np.asarray(gd["logs"]["rel_retain"]) < -1e-6))
        out["graddiff_large_lr_retain_ratio"] = gd["after"]["retain"] / target["retain"]
        out["ngdiff_large_lr_retain_ratio"] = runs[("NGDiff", big)]["after"]["retain"] / target["retain"]
        small = min(lrs)
        out["graddiff_small_lr_retain_ratio"] = runs[("GradDiff", small)]["after"]["retain"] / target["retain"]
    return out


# ----------------------------------------------------------------------------- figures

def draw_method_curves(fig, *, runs: dict, lr: float) -> None:
    """Forget and retain loss of the training batches per step, one line per method, at one lr."""
    sel = {m: r for (m, r_lr), r in runs.items() if r_lr == lr}
    draw_curves(fig, runs=sel, keys=("loss_forget", "loss_retain"), log=(True, True),
                ylabels=("forget batch loss (token NLL)", "retain batch loss (token NLL)"),
                titles=(f"forget loss (up is forgetting), lr {lr:g}", "retain loss (up is damage)"))


def draw_geometry(fig, *, runs: dict, lr: float) -> None:
    """cos(g_R, g_F) and ||g_F|| / ||g_R|| along training, per method."""
    sel = {m: r for (m, r_lr), r in runs.items() if r_lr == lr}
    draw_curves(fig, runs=sel, keys=("cos", "norm_ratio"), log=(False, True),
                ylabels=("cos(g_R, g_F)", "||g_F|| / ||g_R||"),
                titles=(f"angle of the two gradients, lr {lr:g}", "norm ratio (GradDiff's boundary: ratio cos = 1)"))


def draw_sweep(fig, *, method: str, lr: float, runs: dict) -> None:
    """One run of the lr sweep: the two losses and the norm ratio x cos (GradDiff leaves the cone above 1)."""
    run = runs[(method, lr)]
    ax, bx = fig.subplots(1, 2)
    ax.plot(run["logs"]["loss_forget"], color="tab:red", label="forget batch loss")
    ax.plot(run["logs"]["loss_retain"], color="tab:blue", label="retain batch loss")
    ax.set_yscale("log")
    label(ax, "unlearning step", "token NLL", f"{method}, lr {lr:g}")
    ax.legend(fontsize=7)
    prod = np.asarray(run["logs"]["norm_ratio"]) * np.asarray(run["logs"]["cos"])
    bx.plot(prod, color=color(method))
    bx.axhline(1.0, color="black", ls="--", lw=1)
    label(bx, "unlearning step", "||g_F|| cos / ||g_R||", "above 1: GradDiff's step raises L_R")
    bx.title.set_fontsize(9)


# ----------------------------------------------------------------------------- exercises

def check_exercise_lm_loss(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: lm_loss from sequence_nll and the number of target positions."""
    gen = torch.Generator().manual_seed(5)
    cases = []
    for b, t in ((2, 5), (4, 7)):
        logits = torch.randn(b, t, 11, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 11, (b, t), generator=gen)
        labels[0, :3] = -100
        cases.append((logits, labels))
    return check_exercise("token-weighted LM loss", attempt, lm_loss, cases,
                          hint="sum sequence_nll over the rows and divide by (labels[:, 1:] != -100).sum(); a mean of "
                               "per-row means is a different number.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "show_source", "table", "figure", "explore", "sequence_nll", "npo_loss",
    "kl_retain", "loss_checks", "build_pipeline", "set_losses", "run_curves", "stage_table", "final_table",
    "curve_metrics", "draw_method_curves", "draw_geometry", "draw_sweep", "check_exercise_lm_loss",
]
