"""Backs ``notebooks/uncurl/01_experts_routing.ipynb``: experts and routing, the UNCURL components, one pruning.

The algorithms live in the core modules of :mod:`lionsnb.uncurl`; this module arranges them for the notebook, which
imports it as ``m``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure
from lionsnb.uncurl import data as D
from lionsnb.uncurl.components import (
    align_expert,
    cluster_experts,
    expert_forward,
    expert_similarity,
    matching_permutation,
    merge_experts,
    permute_expert,
    usage_frequency,
)
from lionsnb.uncurl.experiments import SERIES_PROFILES, pretrained, task_models
from lionsnb.uncurl.model import evaluate, load_model, router_statistics
from lionsnb.uncurl.plots import (
    draw_clusters,
    draw_merge_graph,
    draw_similarity,
    draw_task_transfer,
    draw_training,
    draw_usage,
)
from lionsnb.uncurl.prune import plan_layer, prune_moe
from lionsnb.widgets import explore

TASKS = ("copy", "rev", "sort", "add")

SPEC = MethodSpec(
    name="uncurl.nb01_experts_routing",
    title="UNCURL 1: experts, routing and the merge",
    profiles={p: {**SERIES_PROFILES[p], "explore_factors": f} for p, f in
              (("smoke", (2, 4)), ("teach", (2, 4)), ("full", (2, 4, 8)))},
    knobs={
        "n_experts": Knob(8, "experts per MoE layer of the pre-trained model", int, choices=(4, 8)),
        "task": Knob("sort", "target task of the pruning", str, choices=TASKS),
        "factor": Knob(2, "pruning factor r (experts kept = E / r)", int, choices=(1, 2, 4, 8)),
        "align": Knob("first", "alignment reference inside a cluster", str,
                      choices=("first", "expert0", "most_used", "none")),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    3: "Two experts trained from different initialisations can compute nearly the same function with their hidden "
       "units in a different order: unit i of one expert plays the role of unit pi(i) of the other. Averaging the "
       "weights index by index then mixes unrelated units (a fc1 row of one unit with a fc1 row of another), and "
       "the average of two unrelated GELU units is neither. Permuting the hidden units of one expert changes "
       "nothing about what it computes (fc1 rows, fc1 bias and fc2 columns move together), so we may pick the "
       "permutation that lines its units up with the reference's before averaging: weight matching maximises "
       "<W1_ref, P W1> + <W2_ref, W2 P^T>, a linear assignment. The notebook measures the loss of accuracy when "
       "this step is skipped (ALIGN = 'none'). Alignment cannot make the merge exact: matched units still differ.",
}


# ----------------------------------------------------------------------------- experiments

def accuracy_rows(trained: dict, states: dict, tasks: tuple[str, ...], n_eval: int) -> list[dict]:
    """Exact-match accuracy and NLL per task of the pre-trained model and of each task's fine-tuned model."""
    ev = D.make_batch(tasks, n_per_task=n_eval, seed=10_000)
    base = evaluate(load_model(trained), ev)
    rows = []
    for task in tasks:
        tuned = evaluate(load_model(trained, state=states[task]), ev.subset(task))[task]
        rows.append({"task": task, "pre-trained accuracy": base[task]["acc"], "pre-trained NLL": base[task]["nll"],
                     "fine-tune steps": int(states["steps"][task]), "task fine-tuned accuracy": tuned["acc"],
                     "task fine-tuned NLL": tuned["nll"]})
    return rows


def usage_by_task(trained: dict, tasks: tuple[str, ...], n_calib: int, seed: int) -> dict[str, list]:
    """Expert usage frequencies of the pre-trained model on each task's data, per MoE layer."""
    model = load_model(trained)
    out = {}
    for task in tasks:
        stats = router_statistics(model, D.calibration_batches(task, n_calib, seed=seed + 77))
        out[task] = [usage_frequency(s["topk"], model.cfg.n_experts) for s in stats]
    return out


def specialisation(usage: dict[str, list]) -> dict[str, float]:
    """Mean total-variation distance between the usage of two tasks, per layer and averaged; 0 = no
    specialisation, 1 = disjoint experts."""
    tasks = list(usage)
    out = {}
    for layer in range(len(usage[tasks[0]])):
        d = [0.5 * float((usage[a][layer] - usage[b][layer]).abs().sum()) for i, a in enumerate(tasks)
             for b in tasks[i + 1:]]
        out[f"layer {layer}"] = sum(d) / len(d)
    out["mean"] = sum(out.values()) / len(out)
    return out


def cluster_plans(trained: dict, states: dict, tasks: tuple[str, ...], factors: tuple[int, ...], n_calib: int,
                  seed: int) -> dict[str, list]:
    """For every task and r: per layer the similarity, the spectral clusters and the usage frequencies that UNCURL
    computes on the task-fine-tuned model ("task/r" -> list of dicts)."""
    out = {}
    for task in tasks:
        model = load_model(trained, state=states[task])
        stats = router_statistics(model, D.calibration_batches(task, n_calib, seed=seed + 77))
        for r in factors:
            plans = [plan_layer(s["logits"], s["topk"], model.cfg.n_experts, r, "uncurl", seed=seed) for s in stats]
            out[f"{task}/{r}"] = [{"similarity": p.similarity, "labels": p.labels, "frequencies": p.frequencies}
                                  for p in plans]
    return out


def task_transfer(trained: dict, states: dict, target: str, factor: int, tasks: tuple[str, ...], n_eval: int,
                  n_calib: int, seed: int, align: str) -> list[dict]:
    """The target task's model pruned with the target's calibration data, evaluated on every task."""
    model = load_model(trained, state=states[target])
    calib = D.calibration_batches(target, n_calib, seed=seed + 77)
    stats = router_statistics(model, calib)
    ev = D.make_batch(tasks, n_per_task=n_eval, seed=10_000)
    variants = {"task model, unpruned": model}
    for name, method, al in ((f"UNCURL (align {align})", "uncurl", align), ("UNCURL, no alignment", "uncurl", "none"),
                             ("frequency-drop", "frequency", align), ("random groups + merge", "random", align)):
        if name.startswith("UNCURL, no") and align == "none":
            continue
        variants[name] = prune_moe(model, factor, [], method=method, align=al, seed=seed, statistics=stats)
    rows = []
    for name, m in variants.items():
        res = evaluate(m, ev)
        rows += [{"variant": name, "task": t, "acc": res[t]["acc"], "nll": res[t]["nll"]} for t in tasks]
    return rows


def clusters_text(labels: torch.Tensor) -> str:
    """``{0, 3} {1, 2}``: the members of each cluster."""
    from lionsnb.uncurl.components import cluster_members

    return " ".join("{" + ", ".join(map(str, c)) + "}" for c in cluster_members(labels))


def transfer_table(rows: list[dict], target: str):
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    out = []
    for v in variants:
        sel = {r["task"]: r["acc"] for r in rows if r["variant"] == v}
        others = [a for t, a in sel.items() if t != target]
        out.append({"model": v, f"accuracy on '{target}' (target)": sel[target],
                    "mean accuracy on the other tasks": sum(others) / len(others)})
    return table(out, title=f"Pruned for '{target}': the target task against the others")


def component_checks(seed: int = 0) -> dict[str, float]:
    """Known-answer checks of the components shown in the Implementation section (float64)."""
    gen = torch.Generator().manual_seed(seed)
    d, h = 8, 16

    def expert():
        return {"fc1.weight": torch.randn(h, d, generator=gen, dtype=torch.float64),
                "fc1.bias": torch.randn(h, generator=gen, dtype=torch.float64),
                "fc2.weight": torch.randn(d, h, generator=gen, dtype=torch.float64),
                "fc2.bias": torch.randn(d, generator=gen, dtype=torch.float64)}

    ref, other = expert(), expert()
    x = torch.randn(64, d, generator=gen, dtype=torch.float64)
    aligned = align_expert(ref, other)
    y0, y1 = expert_forward(other, x), expert_forward(aligned, x)
    shuffled = permute_expert(ref, torch.randperm(h, generator=gen))
    recovered = align_expert(ref, shuffled)
    experts = [expert() for _ in range(4)]
    f = torch.tensor([0.1, 0.4, 0.3, 0.2], dtype=torch.float64)
    exact = merge_experts(experts, f, torch.arange(4), eps=0.0)
    scaled = merge_experts(experts, f, torch.arange(4))
    pair = merge_experts(experts[:2], f[:2], torch.zeros(2, dtype=torch.long))[0]
    by_hand = (f[0] * experts[0]["fc1.weight"] + f[1] * experts[1]["fc1.weight"]) / (f[0] + f[1] + 1e-3)
    blocks = torch.full((6, 6), 0.1, dtype=torch.float64)
    blocks[:3, :3] = blocks[3:, 3:] = 0.9
    blocks.fill_diagonal_(1.0)
    labels = cluster_experts(blocks, 2)
    return {
        "aligned expert: max |output change| / max |output|": float((y1 - y0).abs().max() / y0.abs().max()),
        "aligned expert: fc2 columns moved with fc1 rows": float(torch.equal(
            aligned["fc2.weight"], other["fc2.weight"][:, matching_permutation(ref, other)])),
        "permuted copy realigned exactly": float(all(torch.equal(recovered[k], ref[k]) for k in ref)),
        "merge, r = 1, eps = 0: max |change|": max(float((a[k] - b[k]).abs().max()) for a, b in zip(exact, experts)
                                                   for k in a),
        "merge, r = 1, eps = 1e-3: scale of expert 0": float(scaled[0]["fc1.weight"][0, 0]
                                                             / experts[0]["fc1.weight"][0, 0]),
        "f / (f + 1e-3) for f = 0.1": 0.1 / (0.1 + 1e-3),
        "merge of two: max |diff| to the hand formula": float((pair["fc1.weight"] - by_hand).abs().max()),
        "clusters of a two-block S: blocks found": float(labels[:3].unique().numel() == 1
                                                         and labels[3:].unique().numel() == 1
                                                         and labels[0] != labels[3]),
    }


# ----------------------------------------------------------------------------- exercises

def _topk_cases():
    gen = torch.Generator().manual_seed(11)
    probs = torch.softmax(torch.randn(50, 6, generator=gen), -1)
    return [(torch.tensor([[0, 1], [1, 0], [1, 2], [2, 1]]), 5), (torch.topk(probs, 2).indices, 6),
            (torch.topk(probs, 3).indices, 8)]


def check_exercise_usage_frequency(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: f_e = count_e / (N k) over all k columns, trailing experts included."""
    return check_exercise("usage frequency", attempt, usage_frequency, _topk_cases(),
                          compare=lambda got, exp: torch.allclose(torch.as_tensor(got, dtype=torch.float64),
                                                                  exp.double(), atol=1e-6),
                          hint="count every entry of all k columns (torch.bincount with minlength=n_experts) and "
                               "divide by N * k.", ctx=ctx)


def check_exercise_expert_similarity(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 2: S = (cos + 1) / 2 between the columns of Z, diagonal 1."""
    gen = torch.Generator().manual_seed(12)
    cases = [(torch.randn(100, 4, generator=gen, dtype=torch.float64),),
             (torch.randn(300, 8, generator=gen, dtype=torch.float64) + 5.0,),
             (torch.tensor([[1.0, -1.0, 2.0], [2.0, -2.0, -1.0]], dtype=torch.float64),)]
    return check_exercise("expert similarity", attempt, expert_similarity, cases,
                          compare=lambda got, exp: torch.allclose(torch.as_tensor(got, dtype=torch.float64), exp,
                                                                  atol=1e-9),
                          hint="normalise each column of Z to unit length, take Z^T Z, map (c + 1) / 2 and set the "
                               "diagonal to 1. Do not centre the columns.", ctx=ctx)


def _solution_usage_frequency(topk_indices, n_experts):
    """Usage frequency of each expert (model solution of Exercise 1)."""
    counts = torch.bincount(topk_indices.reshape(-1), minlength=n_experts)
    return counts.to(torch.get_default_dtype()) / topk_indices.numel()


def _solution_expert_similarity(router_logits):
    """Router-logit similarity of experts (model solution of Exercise 2)."""
    unit = router_logits / router_logits.norm(dim=0).clamp_min(1e-7)
    cos = unit.T @ unit
    sim = (cos + 1) / 2
    sim.fill_diagonal_(1.0)
    return sim


#: model solutions as a student would write them (``lionsnb assignments`` puts them in the solution regions)
SOLUTIONS = {"my_usage_frequency": _solution_usage_frequency, "my_expert_similarity": _solution_expert_similarity}


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "TASKS", "show_source", "table", "figure", "explore",
    "pretrained", "task_models", "accuracy_rows", "usage_by_task", "specialisation", "cluster_plans",
    "task_transfer", "transfer_table", "clusters_text", "component_checks", "cluster_experts",
    "align_expert", "matching_permutation", "permute_expert", "merge_experts", "draw_training", "draw_usage",
    "draw_similarity", "draw_merge_graph", "draw_clusters", "draw_task_transfer", "check_exercise_usage_frequency",
    "check_exercise_expert_similarity",
]
