"""Backs ``notebooks/uncurl/02_pruning_factor.ipynb``: accuracy against the pruning factor, the threshold r*, methods
and router handling, for two pre-trained E.

The algorithms live in the core modules of :mod:`lionsnb.uncurl`; this module arranges them for the notebook, which
imports it as ``m``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.uncurl.experiments import (
    SERIES_PROFILES,
    SWEEP_VARIANTS,
    curve,
    mean_over_tasks,
    pretrained,
    select,
    sweep,
    task_models,
    threshold_factor,
)
from lionsnb.uncurl.model import collapse_logsumexp
from lionsnb.uncurl.plots import METHOD_STYLE, ROUTER_LABEL, draw_rstar, draw_threshold
from lionsnb.uncurl.prune import apply_layer_plan, merged_router_rows, plan_layer, prune_moe
from lionsnb.widgets import explore

TASKS = ("copy", "rev", "sort", "add")

SPEC = MethodSpec(
    name="uncurl.nb02_pruning_factor",
    title="UNCURL 2: the threshold pruning factor",
    profiles={p: {**SERIES_PROFILES[p], "deltas": d} for p, d in
              (("smoke", (0.02, 0.1)), ("teach", (0.0, 0.02, 0.05, 0.1, 0.2)), ("full", (0.0, 0.02, 0.05, 0.1, 0.2)))},
    knobs={
        "n_experts": Knob(8, "experts per layer of the pre-trained model shown first", int, choices=(4, 8, 16, 32, 64)),
        "task": Knob("copy", "target task", str, choices=TASKS),
        "pruning": Knob("uncurl", "pruning method", str, choices=("uncurl", "frequency", "random")),
        "router": Knob("slot", "router handling after a merge", str, choices=("slot", "logsumexp", "mean")),
        "delta": Knob(0.02, "tolerated relative accuracy loss for the threshold r*", float, low=0.0, high=0.5),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    3: "r* is the largest factor whose pruned model keeps (1 - delta) of the unpruned accuracy. With many experts "
       "per layer a task typically relies on a subset of them, and experts that the router treats alike on the "
       "task are candidates for merging at little cost; the more experts there are, the more such redundancy "
       "there is to remove before the experts the task needs get merged, so the paper finds a threshold that "
       "depends on the number of pre-training experts. At this scale the table of Experiment 2 shows what r* "
       "does for E = 4 and 8: both models are so small that every expert carries part of every task, so pruning "
       "costs accuracy from r = 2 on and r* stays at 1 or 2 for small delta. Two points per line, one seed and toy "
       "tasks cannot establish a trend; the full profile (E up to 64) is the experiment that could.",
}


# ----------------------------------------------------------------------------- experiments

def _tasks(recs: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in recs))


def all_sweeps(ctx) -> dict[int, list[dict]]:
    """The pruning sweep of every pre-trained E of the profile (pre-training, task fine-tuning and sweep cached for
    the series)."""
    out = {}
    for e in ctx.sizes.experts:
        trained = pretrained(ctx, e)
        out[e] = sweep(ctx, trained, task_models(ctx, trained))
    return out


def unpruned_table(records: dict[int, list[dict]]):
    rows = []
    for e, recs in records.items():
        rows.append({"E": e, **{t: r["acc"] for t in _tasks(recs) for r in select(recs, r=1, task=t,
                                                                                 method="uncurl", router="slot")}})
    return table(rows, title="Unpruned task models: exact-match accuracy per task")


def draw_curves(fig, records: dict[int, list[dict]], E: int, router: str = "slot") -> None:
    """Accuracy (top) and NLL (bottom) against r for every task, the three methods, one pre-trained E."""
    recs = records[E]
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    factors = sorted({r["r"] for r in recs})
    for i, task in enumerate(tasks):
        ax1 = fig.add_subplot(2, len(tasks), i + 1)
        ax2 = fig.add_subplot(2, len(tasks), len(tasks) + i + 1)
        for name in ("uncurl", "frequency", "random"):
            rt = "drop" if name == "frequency" else router
            ax1.plot(factors, [curve(recs, "acc", task=task, method=name, router=rt)[r] for r in factors],
                     **METHOD_STYLE[name])
            ax2.plot(factors, [curve(recs, "nll", task=task, method=name, router=rt)[r] for r in factors],
                     **METHOD_STYLE[name])
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_xticks(factors, [str(r) for r in factors])
            ax.minorticks_off()
        ax1.set_ylim(-0.02, 1.02)
        label(ax1, "pruning factor r", "exact-match accuracy", f"{task}, E = {E}")
        label(ax2, "pruning factor r", "answer NLL")
        if i == 0:
            ax1.legend(fontsize=7, loc="lower left")


def rstar_table(records: dict[int, list[dict]], delta: float, method: str, router: str):
    rt = "drop" if method == "frequency" else router
    rows = []
    for e, recs in records.items():
        rows.append({"E": e, **{t: threshold_factor(curve(recs, "acc", task=t, method=method, router=rt), delta)
                                for t in _tasks(recs)}})
    return table(rows, title=f"Threshold factor r* at delta = {delta:g} ({method}, {ROUTER_LABEL[rt]})")


def rstar_means(records: dict[int, list[dict]], delta: float, method: str = "uncurl",
                router: str = "slot") -> dict[int, float]:
    rt = "drop" if method == "frequency" else router
    return {e: float(np.mean([threshold_factor(curve(recs, "acc", task=t, method=method, router=rt), delta)
                              for t in _tasks(recs)])) for e, recs in records.items()}


def method_rows(records: dict[int, list[dict]], factors=(2, 4)) -> list[dict]:
    """Mean accuracy over the tasks at r = 2 and 4 for every (method, router) and E."""
    rows = []
    for e, recs in records.items():
        for method, router in SWEEP_VARIANTS:
            row = {"E": e, "method": method, "router": ROUTER_LABEL[router]}
            for r in factors:
                if r <= e:
                    row[f"r = {r}"] = mean_over_tasks(recs, r, method=method, router=router)
            rows.append(row)
    return rows


def draw_methods(fig, rows: list[dict]) -> None:
    """Mean accuracy over tasks per (method, router), one panel per E and r."""
    es = sorted({r["E"] for r in rows})
    cols = [k for k in rows[0] if k.startswith("r = ")]
    colors = {"uncurl": "#1b7837", "random": "#7f7f7f", "frequency": "#b2182b"}
    n = 0
    for e in es:
        for col in cols:
            sel = [r for r in rows if r["E"] == e and col in r]
            if not sel:
                continue
            n += 1
    k = 0
    for e in es:
        for col in cols:
            sel = [r for r in rows if r["E"] == e and col in r]
            if not sel:
                continue
            k += 1
            ax = fig.add_subplot(1, n, k)
            names = [f"{r['method']}\n{r['router']}" for r in sel]
            ax.bar(range(len(sel)), [r[col] for r in sel], color=[colors[r["method"]] for r in sel])
            ax.set_xticks(range(len(sel)), names, rotation=90, fontsize=7)
            ax.set_ylim(0, 1)
            label(ax, "method, router", "mean accuracy over tasks", f"E = {e}, {col}")


def gaps(records: dict[int, list[dict]]) -> dict[str, float]:
    """The numbers the notebook records: differences of mean accuracies, drops at one expert per layer."""
    out = {}
    acc1 = {e: [curve(recs, "acc", task=t, method="uncurl", router="slot")[1] for t in _tasks(recs)]
            for e, recs in records.items()}
    out["unpruned_acc_min"] = min(min(v) for v in acc1.values())
    for e, recs in records.items():
        drops = [curve(recs, "acc", task=t, method="uncurl", router="slot")[1]
                 - curve(recs, "acc", task=t, method="uncurl", router="slot")[e] for t in _tasks(recs)]
        out[f"drop_one_expert_max_E{e}"] = max(drops)
        for r in (2, 4):
            if r <= e:
                u = mean_over_tasks(recs, r, method="uncurl", router="slot")
                out[f"uncurl_minus_frequency_r{r}_E{e}"] = u - mean_over_tasks(recs, r, method="frequency")
                out[f"uncurl_minus_random_r{r}_E{e}"] = u - mean_over_tasks(recs, r, method="random", router="slot")
        out[f"logsumexp_minus_slot_r2_E{e}"] = (mean_over_tasks(recs, 2, method="uncurl", router="logsumexp")
                                                - mean_over_tasks(recs, 2, method="uncurl", router="slot"))
        out[f"mean_minus_slot_r2_E{e}"] = (mean_over_tasks(recs, 2, method="uncurl", router="mean")
                                           - mean_over_tasks(recs, 2, method="uncurl", router="slot"))
    return out


def identity_checks(ctx) -> dict[str, float]:
    """r = 1 with eps = 0 leaves outputs bit-identical (every method and router); frequency-drop keeps the most
    used experts; the logsumexp router gives each merged expert its members' summed probability."""
    from lionsnb.uncurl import data as D
    from lionsnb.uncurl.model import load_model, router_statistics

    trained = pretrained(ctx, ctx.sizes.experts[0])
    model = load_model(trained)
    calib = D.calibration_batches("copy", 32, seed=1)
    probe = D.make_batch(TASKS, n_per_task=8, seed=2).inputs
    stats = router_statistics(model, calib)
    out = {}
    with torch.no_grad():
        base = model(probe)
        same = all(torch.equal(prune_moe(model, 1, [], method=meth, router=rt, eps=0.0, statistics=stats)(probe),
                               base) for meth in ("uncurl", "frequency", "random")
                   for rt in ("slot", "logsumexp", "mean"))
    out["r = 1, eps = 0: outputs bit-identical (9 variants)"] = float(same)
    freq = prune_moe(model, 2, [], method="frequency", statistics=stats)
    ok = True
    for plan, st in zip(freq.prune_plans, stats):
        counts = torch.bincount(st["topk"].reshape(-1), minlength=model.cfg.n_experts)
        ok &= set(plan.kept) == set(sorted(range(model.cfg.n_experts), key=lambda e: (-int(counts[e]), e))
                                    [:model.cfg.n_experts // 2])
    out["frequency-drop keeps the most used experts"] = float(ok)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(100, 8, generator=gen, dtype=torch.float64)
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])
    p = torch.softmax(z, -1)
    summed = torch.stack([p[:, groups == c].sum(-1) for c in range(4)], -1)
    out["logsumexp router: max |P(cluster) - sum of members|"] = float(
        (torch.softmax(collapse_logsumexp(z, groups), -1) - summed).abs().max())
    return out


# ----------------------------------------------------------------------------- exercises

def check_exercise_threshold_factor(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: r* = the largest r such that every r' <= r keeps acc(r') >= (1 - delta) acc(1)."""
    cases = [({1: 1.0, 2: 0.99, 4: 0.9, 8: 0.3}, 0.02), ({1: 1.0, 2: 0.99, 4: 0.9, 8: 0.3}, 0.1),
             ({1: 0.9, 2: 0.5, 4: 0.9}, 0.02), ({1: 0.8, 2: 0.8, 4: 0.79}, 0.0), ({1: 0.5, 2: 0.6}, 0.0)]
    return check_exercise("threshold factor", attempt, threshold_factor, cases,
                          compare=lambda got, exp: int(got) == exp,
                          hint="walk r upwards from 1 and stop at the first r whose accuracy falls below "
                               "(1 - delta) * acc[1].", ctx=ctx)


def check_exercise_mean_router(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: row c = sum_{e in c} f_e w_e / sum_{e in c} f_e (plain mean if the cluster was never used)."""
    gen = torch.Generator().manual_seed(13)
    w = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    cases = [(w, torch.tensor([0, 1, 0, 1, 2, 2]), torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.1], dtype=torch.float64)),
             (w, torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0.5, 0.0, 0.0, 0.2, 0.2, 0.1], dtype=torch.float64)),
             (w, torch.arange(6), torch.full((6,), 1 / 6, dtype=torch.float64))]
    return check_exercise("mean-row router", attempt, merged_router_rows, cases,
                          compare=lambda got, exp: torch.allclose(torch.as_tensor(got, dtype=torch.float64), exp,
                                                                  atol=1e-9),
                          hint="for each cluster label in increasing order, weight the member rows by their "
                               "frequencies and divide by the sum of those frequencies.", ctx=ctx)


def _solution_threshold_factor(acc_by_r, delta):
    """Threshold pruning factor r* (model solution of Exercise 1)."""
    floor = (1 - delta) * acc_by_r[1]
    kept = []
    for r in sorted(acc_by_r):
        if acc_by_r[r] < floor:
            break
        kept.append(r)
    return max(kept)


def _solution_mean_router(weight, labels, frequencies):
    """Rows of the mean-row router (model solution of Exercise 2)."""
    n_clusters = int(labels.max()) + 1
    rows = []
    for c in range(n_clusters):
        members = labels == c
        f = frequencies[members]
        w = weight[members]
        rows.append((f[:, None] * w).sum(0) / f.sum() if float(f.sum()) > 0 else w.mean(0))
    return torch.stack(rows)


#: model solutions as a student would write them (``lionsnb assignments`` puts them in the solution regions)
SOLUTIONS = {"my_threshold_factor": _solution_threshold_factor, "my_mean_router": _solution_mean_router}


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "TASKS", "show_source", "table", "figure", "explore", "all_sweeps",
    "unpruned_table", "draw_curves", "rstar_table", "rstar_means", "method_rows", "draw_methods", "gaps",
    "identity_checks", "plan_layer", "prune_moe", "apply_layer_plan", "collapse_logsumexp", "draw_threshold",
    "draw_rstar", "check_exercise_threshold_factor", "check_exercise_mean_router",
]
