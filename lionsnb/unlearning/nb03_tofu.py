"""Backs ``notebooks/unlearning/03_tofu.ipynb``: TOFU's picture (Model Utility against Forget Quality) for GA,
GradDiff, KL, NPO, NPO+GD, NGDiff and NGDiff with the automatic learning rate, on the generated benchmark.

Metrics: :mod:`lionsnb.unlearning.metrics`; evaluation: :mod:`lionsnb.unlearning.evaluation`; runs:
:func:`lionsnb.unlearning.experiments.run_unlearning`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.unlearning.evaluation import MU_PARTS
from lionsnb.unlearning.experiments import retain_reference, run_unlearning, summarise_eval
from lionsnb.unlearning.metrics import forget_quality, ks_statistic, model_utility, privleak, truth_ratio
from lionsnb.unlearning.pipeline import build_pipeline, prepare
from lionsnb.unlearning.plots import color
from lionsnb.widgets import explore

_TINY = dict(model="tiny", n_perturbed=5, n_layer=2, n_head=2, n_embd=64, n_positions=48)
METHODS = ("GA", "GradDiff", "KL", "NPO", "NPO+GD", "NGDiff", "NGDiff+AutoLR")

SPEC = MethodSpec(
    name="unlearning.nb03_tofu",
    title="Unlearning 3: TOFU's picture, Model Utility against Forget Quality",
    profiles={
        # pipeline: benchmark and model (the tiny GPT on CPU; a pre-trained model in full); steps / eval_every:
        # unlearning steps and evaluation period; batch: forget and retain batch size
        "smoke": dict(pipeline=dict(_TINY, n_authors=10, facts_per_author=4, forget_pct=10, n_eval=6,
                                    base_epochs=10, ft_epochs=12, max_new_tokens=8),
                      methods=("GA", "GradDiff", "NPO", "NGDiff", "NGDiff+AutoLR"), steps=8, eval_every=4, batch=4,
                      lazy_freq=4),
        "teach": dict(pipeline=dict(_TINY, n_authors=20, facts_per_author=10, forget_pct=10, n_eval=40,
                                    base_epochs=60, ft_epochs=40, max_new_tokens=16),
                      methods=METHODS, steps=40, eval_every=10, batch=8, lazy_freq=4),
        "full": dict(pipeline=dict(model="smollm2", n_authors=100, facts_per_author=10, n_perturbed=5, forget_pct=10,
                                   n_eval=100, n_trainable=30, restrict_vocab=False, ft_epochs=5, ft_lr=1e-5,
                                   ft_batch=16, replay=False, max_new_tokens=32),
                     methods=METHODS, steps=100, eval_every=10, batch=16, lazy_freq=4),
    },
    knobs={
        "lr": Knob(2e-4, "AdamW learning rate of every unlearning method (the initial lr of AutoLR)", float, low=0.0,
                   low_open=True, high=1.0),
        "beta": Knob(0.1, "NPO's inverse temperature beta", float, low=0.0, low_open=True, high=10.0),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "The harmonic mean is dominated by its smallest part: MU is high only if *every* one of the nine numbers is "
       "high, and a single collapsed number (e.g. the retain truth ratio going to 0, or ROUGE on world facts going "
       "to 0 because the model only outputs garbage) drags MU to 0, as scipy's hmean does. An arithmetic mean would "
       "let a model that destroyed one ability hide behind eight intact ones. The price: MU is sensitive to the "
       "noisiest small part (at this scale, the truth ratio of a set with few items).",
    3: "The p-value of the two-sample KS test is smallest when the two samples do not overlap at all (statistic 1). "
       "For n = m the exact two-sided p-value is then 2 / C(2n, n): for n = 20, 2 / C(40, 20) = 1.45e-11, which is "
       "the floor of Forget Quality with 20 forget items (TOFU's forget01 has 40 items, forget05 200, forget10 300 "
       "with ds_size 300, so its floors are far lower, e.g. the 1e-21 of a Llama-2 target). With n = 10 the floor is "
       "2 / C(20, 10) = 1.1e-5. So 'orders of magnitude' of FQ gain are bounded by the size of the forget set, and "
       "comparing FQ across forget-set sizes is meaningless: a p-value measures evidence, not effect size.",
}


# ----------------------------------------------------------------------------- implementation checks

def metric_checks() -> dict:
    """The metric identities on cases with a known answer."""
    r = np.array([0.4, 0.9, 1.3, 2.0, 0.7])
    vals = [0.8, 0.5, 0.9, 0.6, 0.7, 0.55, 0.65, 0.75, 0.45]
    tr_a = truth_ratio([1.0], [[0.5, 2.0]], perturbed_mean="arithmetic")[0]
    tr_g = truth_ratio([1.0], [[0.5, 2.0]], perturbed_mean="geometric")[0]
    rows = [
        {"check": "forget quality of a sample against itself", "value": forget_quality(r, r), "expected": 1.0},
        {"check": "forget quality is the same for R and 1/R", "value": forget_quality(1 / r, 1 / (1.7 * r + 0.1)),
         "expected": forget_quality(r, 1.7 * r + 0.1)},
        {"check": "model utility of nine equal numbers 0.37", "value": model_utility([0.37] * 9), "expected": 0.37},
        {"check": "model utility = 9 / sum(1/x)", "value": model_utility(vals),
         "expected": 9 / sum(1 / v for v in vals)},
        {"check": "model utility with a zero part", "value": model_utility(vals[:-1] + [0.0]), "expected": 0.0},
        {"check": "truth ratio, arithmetic: (e^-0.5 + e^-2)/2 / e^-1", "value": tr_a,
         "expected": (math.exp(-0.5) + math.exp(-2)) / 2 / math.exp(-1)},
        {"check": "truth ratio, geometric: exp(1 - 1.25)", "value": tr_g, "expected": math.exp(1 - 1.25)},
    ]
    for row in rows:
        row["error"] = abs(row["value"] - row["expected"])
    return {"rows": rows, "max_error": max(row["error"] for row in rows)}


# ----------------------------------------------------------------------------- runs

def target_reference(sizes: dict, seed: int, target_state: dict, retain_ratios) -> dict:
    """The target model's evaluation (Forget Quality against the retain model) and its membership AUC."""
    from lionsnb.unlearning.evaluation import membership_auc

    pipe = prepare(sizes, seed)
    model = pipe.model(state=target_state)
    out = summarise_eval(pipe.evaluate(model, rouge=True, retain_ratios=np.asarray(retain_ratios)))
    out["mia_auc"] = membership_auc(model, pipe.sets["forget"].gt, pipe.holdout)
    return out


def retain_auc(sizes: dict, seed: int, retain_state: dict) -> float:
    """Membership AUC of the retain model (MUSE's AUC_retrain): forget authors it never saw against hold-out ones."""
    from lionsnb.unlearning.evaluation import membership_auc

    pipe = prepare(sizes, seed)
    return membership_auc(pipe.model(state=retain_state), pipe.sets["forget"].gt, pipe.holdout)


def run_methods(ctx, pipe, retain: dict, lr: float, beta: float) -> dict:
    """Every method of the profile on the target, each run cached on its own (evaluations every ``eval_every``)."""
    runs = {}
    for name in ctx.sizes.methods:
        method = name.split("+AutoLR")[0]
        runs[name] = ctx.cached("tofu_run", run_unlearning, sizes=pipe.sizes, seed=ctx.seed,
                                target_state=pipe.states["target"], method=method, lr=lr, beta=beta,
                                steps=ctx.sizes.steps, optimizer="adamw", forget_batch=ctx.sizes.batch,
                                retain_batch=ctx.sizes.batch, auto_lr=name.endswith("+AutoLR"),
                                lazy_freq=ctx.sizes.lazy_freq, eval_every=ctx.sizes.eval_every, eval_rouge=True,
                                retain_ratios=retain["truth_ratios"], privleak=True, run_seed=ctx.seed)
    return runs


def reference_table(target: dict, retain: dict):
    """The twelve TOFU numbers, Model Utility and Forget Quality of the target and retain models."""
    rows = {}
    for name, ref in (("target", target), ("retain", retain)):
        rows[name] = {k: ref["numbers"][k] for k in ref["numbers"]} | {"Forget Quality": ref["fq"]}
    keys = list(rows["target"])
    return table([{"number": k, "target": rows["target"][k], "retain": rows["retain"][k]} for k in keys],
                 title="TOFU's numbers of the target (trained on all authors) and the retain model (never saw F)")


def final_rows(runs: dict, target: dict, auc_retrain: float) -> list[dict]:
    """One row per method: the last evaluation, relative to the target."""
    rows = []
    for name, run in runs.items():
        last = run["evals"][-1]
        rows.append({"method": name, "Model Utility": last["mu"], "MU / target": last["mu"] / target["mu"],
                     "Forget Quality": last["fq"], "log10 FQ gain": math.log10(max(last["fq"], 1e-300) / target["fq"]),
                     "forget NLL": last["forget_nll"], "retain NLL": last["retain_nll"],
                     "PrivLeak %": privleak(run["mia_auc"], auc_retrain),
                     "stopped early": run["diverged_step"] >= 0})
    return rows


# ----------------------------------------------------------------------------- figures

def draw_mu_fq(fig, *, runs: dict, target: dict, retain: dict) -> None:
    """TOFU's plot: Model Utility against log10 Forget Quality, one trajectory per method (start at the target)."""
    ax = fig.subplots()
    for name, run in runs.items():
        fq = np.array([max(e["fq"], 1e-300) for e in run["evals"]])
        mu = np.array([e["mu"] for e in run["evals"]])
        ax.plot(np.log10(fq), mu, "-o", color=color(name), label=name, ms=3, lw=1.2)
        ax.plot(np.log10(fq[-1]), mu[-1], "s", color=color(name), ms=7)
    ax.plot(np.log10(target["fq"]), target["mu"], "k*", ms=12, label="target (start)")
    ax.plot(0.0, retain["mu"], "*", color="tab:blue", ms=12, label="retain model (FQ = 1)")
    ax.axvline(math.log10(0.05), color="0.6", ls=":", lw=1)
    ax.text(math.log10(0.05), ax.get_ylim()[0], " p = 0.05", fontsize=7, color="0.4", va="bottom")
    label(ax, "log10 Forget Quality (KS p-value against the retain model)", "Model Utility",
          "every evaluation along unlearning (square: last)")
    ax.legend(fontsize=7, ncol=2)


def draw_truth_ratios(fig, *, method: str, step: int, runs: dict, retain: dict, target: dict) -> None:
    """Forget-set truth ratios of one method at one evaluation against the retain model's: histograms and empirical
    CDFs, whose largest vertical gap is the KS statistic behind Forget Quality."""
    run = runs[method]
    ev = next(e for e in run["evals"] if e["step"] == step)
    ours = np.log(np.asarray(ev["truth_ratios"], dtype=float))
    ref = np.log(np.asarray(retain["truth_ratios"], dtype=float))
    tgt = np.log(np.asarray(target["truth_ratios"], dtype=float))
    ax, bx = fig.subplots(1, 2)
    lo = min(ours.min(), ref.min(), tgt.min())
    hi = max(ours.max(), ref.max(), tgt.max())
    bins = np.linspace(lo, hi + 1e-9, 16)
    ax.hist(ref, bins=bins, alpha=0.5, color="tab:blue", label="retain model")
    ax.hist(ours, bins=bins, alpha=0.5, color=color(method), label=f"{method}, step {step}")
    ax.hist(tgt, bins=bins, histtype="step", color="black", label="target")
    label(ax, "log truth ratio (perturbed over paraphrased)", "forget items", "histograms")
    ax.legend(fontsize=7)
    for sample, col, name in ((ref, "tab:blue", "retain model"), (ours, color(method), method),
                              (tgt, "black", "target")):
        xs = np.concatenate([[lo], np.sort(sample), [hi]])
        ys = np.concatenate([[0.0], np.arange(1, len(sample) + 1) / len(sample), [1.0]])
        bx.step(xs, ys, where="post", color=col, label=name)
    label(bx, "log truth ratio", "empirical CDF",
          f"KS = {ev['ks_stat']:.2f}, FQ = {ev['fq']:.1e}, MU = {ev['mu']:.2f}")
    bx.title.set_fontsize(9)
    bx.legend(fontsize=7)


def draw_parts(fig, *, runs: dict, target: dict) -> None:
    """The nine parts of Model Utility after unlearning, relative to the target's."""
    ax = fig.subplots()
    names = list(runs)
    x = np.arange(len(MU_PARTS))
    w = 0.8 / len(names)
    for i, name in enumerate(names):
        nums = runs[name]["evals"][-1]["numbers"]
        ax.bar(x + i * w, [nums[p] / max(target["numbers"][p], 1e-12) for p in MU_PARTS], w, color=color(name),
               label=name)
    ax.axhline(1, color="black", lw=0.6)
    ax.set_xticks(x + 0.4 - w / 2, [p.replace("_", " ").replace(" Probability", "\nProb.")
                                    .replace(" ROUGE", "\nROUGE").replace(" Truth Ratio", "\nTR") for p in MU_PARTS],
                  fontsize=7)
    label(ax, "part of Model Utility", "after unlearning / target", "what each method destroys")
    ax.legend(fontsize=7, ncol=3)


def ranking_metrics(runs: dict, target: dict, retain: dict) -> dict:
    """The figures the notebook records."""
    def last(name, key):
        return runs[name]["evals"][-1][key] if name in runs else float("nan")

    out = {"target_fq": target["fq"], "target_mu": target["mu"], "retain_mu": retain["mu"],
           "retain_self_fq": retain["fq"]}
    for name in runs:
        key = name.lower().replace("+", "_").replace("autolr", "auto")
        out[f"{key}_mu_ratio"] = last(name, "mu") / target["mu"]
        out[f"{key}_log10_fq_gain"] = math.log10(max(last(name, "fq"), 1e-300) / target["fq"])
    out["ngdiff_forget_nll_gain"] = last("NGDiff", "forget_nll") - target["forget_nll"]
    out["ngdiff_retain_nll_change"] = last("NGDiff", "retain_nll") - target["retain_nll"]
    return out


# ----------------------------------------------------------------------------- exercises

def check_exercise_ks_statistic(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: the two-sample KS statistic, max |F_a(x) - F_b(x)| over the pooled sample."""
    rng = np.random.default_rng(4)
    cases = [(np.array([0.1, 0.4, 0.5]), np.array([0.2, 0.3, 0.9, 1.0])),
             (rng.lognormal(0, 1, 20), rng.lognormal(0.5, 1, 20)),
             (np.arange(5.0), np.arange(5.0) + 10), (np.ones(4), np.ones(3))]
    return check_exercise("KS statistic", attempt, ks_statistic, cases,
                          hint="for every x of the pooled sample, F(x) = np.mean(sample <= x); take the largest "
                               "absolute difference.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "METHODS", "show_source", "table", "figure", "explore", "truth_ratio",
    "forget_quality", "model_utility", "metric_checks", "build_pipeline", "retain_reference", "target_reference",
    "retain_auc", "run_methods", "reference_table", "final_rows", "draw_mu_fq", "draw_truth_ratios", "draw_parts",
    "privleak",
    "ranking_metrics", "check_exercise_ks_statistic",
]
