"""Backs ``notebooks/uncurl/03_scratch_latency.ipynb``: pruned large SMoE against a small SMoE trained from scratch,
and what pruning buys (parameters, memory, measured latency of the physically smaller layer against slot binding);
the Mixtral adapter.

The algorithms live in the core modules of :mod:`lionsnb.uncurl`; this module arranges them for the notebook, which
imports it as ``m``.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.uncurl import data as D
from lionsnb.uncurl import mixtral
from lionsnb.uncurl.experiments import SERIES_PROFILES, finetune, pretrained, task_models
from lionsnb.uncurl.model import (
    MoELayer,
    collapse_logsumexp,
    count_parameters,
    evaluate,
    load_model,
    parameter_bytes,
    router_statistics,
)
from lionsnb.uncurl.plots import draw_latency, draw_scratch
from lionsnb.uncurl.prune import prune_moe
from lionsnb.widgets import explore

TASKS = ("copy", "rev", "sort", "add")

SPEC = MethodSpec(
    name="uncurl.nb03_scratch_latency",
    title="UNCURL 3: pruned versus from scratch, and what pruning buys",
    profiles={
        "smoke": {**SERIES_PROFILES["smoke"], "factors": (2,), "latency_tokens": (16, 256),
                  "latency_repeats": 5},
        "teach": {**SERIES_PROFILES["teach"], "factors": (2, 4), "latency_tokens": (16, 64, 256, 1024, 4096),
                  "latency_repeats": 15},
        "full": {**SERIES_PROFILES["full"], "factors": (2, 4, 8), "latency_tokens": (16, 64, 256, 1024, 4096, 16384),
                 "latency_repeats": 30},
    },
    knobs={
        "n_experts": Knob(8, "experts per layer of the large pre-trained model", int, choices=(4, 8, 16, 32, 64)),
        "factor": Knob(2, "pruning factor r shown first", int, choices=(2, 4, 8)),
        "router": Knob("mean", "router handling of the pruned model compared with scratch", str,
                       choices=("slot", "logsumexp", "mean")),
        "recovery_steps": Knob(20, "task fine-tuning steps after pruning (0: none)", int, low=0, high=2000),
        "task": Knob("copy", "task of the latency and adapter demos", str, choices=TASKS),
    },
)
setup = setup_for(SPEC)

MODEL_ANSWERS = {
    2: "Slot binding keeps the E router outputs and binds the slots of a cluster to one merged module: the "
       "parameters shrink by r (memory), but the layer still computes E logits, takes the top-2 over E slots and "
       "dispatches each slot separately, so it makes as many expert calls as the unpruned layer (and a token whose "
       "two slots fall in one cluster runs the same merged expert twice). The FLOPs per token are the same for "
       "every variant (k experts per token), so the shrunk layer can only win on the per-expert dispatch cost: a "
       "few kernel launches or Python-level calls per expert, which dominate for small batches (decoding) and "
       "fade for large ones, where the matrix products dominate. The latency figure shows exactly that. In the "
       "paper's setting the larger win is elsewhere: with experts spread over devices, fewer experts mean less "
       "All2All communication and fewer devices.",
}


# ----------------------------------------------------------------------------- experiments

def scratch_comparison(trained: dict, states: dict, scratch: dict[int, dict], scratch_states: dict[int, dict],
                       tasks: tuple[str, ...], factors: tuple[int, ...], router: str, recovery_steps: int,
                       n_eval: int, n_calib: int, seed: int, batch_size: int) -> list[dict]:
    """Per task and r: the large task model pruned to E/r experts (UNCURL with ``router``, frequency-drop, UNCURL
    plus ``recovery_steps`` of task fine-tuning) against the small SMoE of E/r experts trained from scratch with
    the same budget (pre-training steps and task fine-tuning), with and without the same extra steps."""
    ev = D.make_batch(tasks, n_per_task=n_eval, seed=10_000)
    rows = []
    for task in tasks:
        big = load_model(trained, state=states[task])
        stats = router_statistics(big, D.calibration_batches(task, n_calib, seed=seed + 77))
        sub = ev.subset(task)
        for r in factors:
            small_e = big.cfg.n_experts // r
            small = load_model(scratch[small_e], state=scratch_states[small_e][task])
            pruned = prune_moe(big, r, [], method="uncurl", router=router, seed=seed, statistics=stats)
            variants = {"UNCURL": pruned,
                        "frequency-drop": prune_moe(big, r, [], method="frequency", seed=seed, statistics=stats),
                        "from scratch": small}
            if recovery_steps:
                variants["UNCURL + fine-tune"] = finetune(pruned, task, recovery_steps, batch_size=batch_size,
                                                          seed=seed + 1)
                variants["from scratch + fine-tune"] = finetune(small, task, recovery_steps, batch_size=batch_size,
                                                                seed=seed + 1)
            for name, model in variants.items():
                res = evaluate(model, sub)[task]
                rows.append({"task": task, "r": r, "experts": small_e, "variant": name, "acc": res["acc"],
                             "nll": res["nll"], "parameters": count_parameters(model)})
    return rows


def scratch_table(rows: list[dict], factor: int):
    sel = [r for r in rows if r["r"] == factor]
    variants = list(dict.fromkeys(r["variant"] for r in sel))
    out = []
    for v in variants:
        acc = {r["task"]: r["acc"] for r in sel if r["variant"] == v}
        params = next(r["parameters"] for r in sel if r["variant"] == v)
        out.append({"model": v, "parameters": params, **acc, "mean": sum(acc.values()) / len(acc)})
    return table(out, title=f"{sel[0]['experts']} experts per layer (r = {factor}): exact-match accuracy per task")


def mean_acc(rows: list[dict], factor: int, variant: str) -> float:
    vals = [r["acc"] for r in rows if r["r"] == factor and r["variant"] == variant]
    return sum(vals) / len(vals) if vals else float("nan")


def cost_rows(trained: dict, state: dict, task: str, factor: int, n_calib: int, seed: int) -> list[dict]:
    """Parameters and parameter memory of the unpruned model and its pruned variants (whole model and experts)."""
    model = load_model(trained, state=state)
    stats = router_statistics(model, D.calibration_batches(task, n_calib, seed=seed + 77))
    variants = {"unpruned": model}
    for name, method, router in (("slot binding", "uncurl", "slot"), ("logsumexp router", "uncurl", "logsumexp"),
                                 ("mean-row router", "uncurl", "mean"), ("frequency-drop", "frequency", "slot")):
        variants[name] = prune_moe(model, factor, [], method=method, router=router, statistics=stats, seed=seed)
    rows = []
    for name, m in variants.items():
        layer = m.moe_layers[0]
        rows.append({"model": name, "distinct experts per layer": len(layer.unique_experts()),
                     "router outputs": layer.router.out_features, "expert slots dispatched": len(layer.experts),
                     "parameters": count_parameters(m), "expert parameters": count_parameters(m, experts_only=True),
                     "parameter memory (KiB)": parameter_bytes(m) / 1024})
    return rows


def latency_sweep(trained: dict, state: dict, task: str, factor: int, token_counts: tuple[int, ...], repeats: int,
                  n_calib: int, seed: int) -> list[dict]:
    """Median forward time of the first MoE layer (unpruned, slot binding, logsumexp, mean-row) for several token
    counts; the variants are timed interleaved in every repeat, so their ratios are robust to load changes."""
    model = load_model(trained, state=state)
    stats = router_statistics(model, D.calibration_batches(task, n_calib, seed=seed + 77))
    layers: dict[str, MoELayer] = {"unpruned": model.moe_layers[0]}
    for router in ("slot", "logsumexp", "mean"):
        layers[router] = prune_moe(model, factor, [], router=router, statistics=stats, seed=seed).moe_layers[0]
    out = []
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in token_counts:
            x = torch.randn(n, model.cfg.d_model, generator=gen)
            times: dict[str, list[float]] = {k: [] for k in layers}
            for _ in range(2):
                for layer in layers.values():
                    layer(x)
            for _ in range(repeats):
                for name, layer in layers.items():
                    t0 = time.perf_counter()
                    layer(x)
                    times[name].append(time.perf_counter() - t0)
            out.append({"tokens": n, **{f"{k}_ms": 1000 * statistics.median(v) for k, v in times.items()}})
    return out


def latency_table(rows: list[dict]):
    return table([{"tokens": r["tokens"], "unpruned (ms)": r["unpruned_ms"], "slot binding (ms)": r["slot_ms"],
                   "logsumexp (ms)": r["logsumexp_ms"], "mean-row (ms)": r["mean_ms"],
                   "slot / unpruned": r["slot_ms"] / r["unpruned_ms"],
                   "logsumexp / slot": r["logsumexp_ms"] / r["slot_ms"], "mean-row / slot": r["mean_ms"] / r["slot_ms"]}
                  for r in rows], title="Forward latency of one MoE layer (median, interleaved in one run)")


def mixtral_demo(n_experts: int, factor: int, seed: int) -> dict:
    """The adapter on a tiny random MixtralForCausalLM: exact weight round trip, a pruned model per router that
    still generates, and the plain checkpoint of the mean-row router."""
    import tempfile

    from transformers import MixtralForCausalLM

    model = mixtral.tiny_mixtral(n_experts=n_experts, seed=seed)
    block = mixtral.moe_blocks(model)[0]
    before = (block.experts.gate_up_proj.detach().clone(), block.experts.down_proj.detach().clone())
    mixtral.set_experts(block, mixtral.get_experts(block))
    roundtrip = torch.equal(block.experts.gate_up_proj, before[0]) and torch.equal(block.experts.down_proj, before[1])
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 64, (4, 16), generator=gen)
    calib = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    prompt = ids[:1, :6]
    rows = []
    with torch.no_grad():
        base = model(input_ids=ids).logits
        same = prune_moe(model, 1, calib, router="mean", eps=0.0)(input_ids=ids).logits
    for method, router in (("uncurl", "slot"), ("uncurl", "logsumexp"), ("uncurl", "mean"), ("frequency", "slot")):
        pruned = prune_moe(model, factor, calib, method=method, router=router, seed=seed)
        out = pruned.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
        rows.append({"method": method, "router": router if method == "uncurl" else "dropped rows",
                     "experts per layer": int(mixtral.moe_blocks(pruned)[0].experts.gate_up_proj.shape[0]),
                     "router class": type(mixtral.moe_blocks(pruned)[0].gate).__name__,
                     "parameters": sum(p.numel() for p in pruned.parameters()),
                     "generated tokens": int(out.shape[1] - prompt.shape[1])})
    reloaded = False
    mean_model = prune_moe(model, factor, calib, router="mean", seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        mean_model.save_pretrained(tmp)
        again = MixtralForCausalLM.from_pretrained(tmp).eval()
        with torch.no_grad():
            reloaded = bool(torch.allclose(again(input_ids=ids).logits, mean_model(input_ids=ids).logits, atol=1e-5))
    return {"roundtrip_exact": float(roundtrip), "r1_bit_identical": float(torch.equal(base, same)),
            "mean_router_reloads": float(reloaded), "unpruned_parameters": sum(p.numel() for p in model.parameters()),
            "rows": rows}


# ----------------------------------------------------------------------------- exercises

def reference_logsumexp_router(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The reference of Exercise 1 (the package's ``collapse_logsumexp``)."""
    return collapse_logsumexp(logits, groups)


def check_exercise_logsumexp_router(attempt: Callable, ctx=None) -> ExerciseResult:
    """Exercise 1: merged-expert logits logsumexp_{e in c} z_e, clusters in label order."""
    gen = torch.Generator().manual_seed(14)
    z = torch.randn(20, 8, generator=gen, dtype=torch.float64) * 3
    cases = [(z, torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])), (z, torch.arange(8)), (z, torch.zeros(8, dtype=torch.long)),
             (z[:, :4], torch.tensor([1, 0, 1, 0]))]
    return check_exercise("logsumexp router", attempt, reference_logsumexp_router, cases,
                          compare=lambda got, exp: torch.allclose(torch.as_tensor(got, dtype=torch.float64), exp,
                                                                  atol=1e-9),
                          hint="for every cluster c in increasing order take torch.logsumexp of the logits of its "
                               "members along the expert dimension, then stack the columns.", ctx=ctx)


def _solution_logsumexp_router(logits, groups):
    """Logits of the merged experts (model solution of Exercise 1)."""
    n_clusters = int(groups.max()) + 1
    columns = [torch.logsumexp(logits[:, groups == c], dim=1) for c in range(n_clusters)]
    return torch.stack(columns, dim=-1)


#: model solutions as a student would write them (``lionsnb assignments`` puts them in the solution regions)
SOLUTIONS = {"my_logsumexp_router": _solution_logsumexp_router}


def draw_costs(fig, rows: list[dict]) -> None:
    """Expert parameters and distinct experts per variant."""
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names = [r["model"] for r in rows]
    ax1.bar(range(len(rows)), [r["expert parameters"] for r in rows], color="#2166ac")
    ax1.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    label(ax1, "model", "expert parameters", "Memory: expert parameters")
    ax2.bar(range(len(rows)), [r["expert slots dispatched"] for r in rows], color="#b2182b",
            label="expert slots dispatched")
    ax2.bar(range(len(rows)), [r["distinct experts per layer"] for r in rows], color="#1b7837", width=0.5,
            label="distinct experts")
    ax2.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    label(ax2, "model", "per MoE layer", "Work: slots dispatched vs experts held")
    ax2.legend(fontsize=8)


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SOLUTIONS", "TASKS", "show_source", "table", "figure", "explore", "pretrained",
    "task_models", "scratch_comparison", "scratch_table", "mean_acc", "cost_rows", "latency_sweep", "latency_table",
    "mixtral_demo", "MoELayer", "mixtral", "draw_scratch", "draw_latency", "draw_costs",
    "check_exercise_logsumexp_router",
]
