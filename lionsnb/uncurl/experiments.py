"""Experiment runners shared by the UNCURL notebooks: pre-training, pruning sweeps, the threshold factor, latency.

Every runner is a pure function of its arguments (seeded), so the notebooks cache its result with
``ctx.cached(name, fn, **kwargs)`` and share pre-trained models between notebooks.
"""
from __future__ import annotations

import statistics as stats_
import time
from collections.abc import Iterable

import torch

from lionsnb.uncurl import data as D
from lionsnb.uncurl.model import (
    MoEConfig,
    TinyMoE,
    count_parameters,
    evaluate,
    load_model,
    parameter_bytes,
    router_statistics,
    train_moe,
)
from lionsnb.uncurl.prune import apply_plans, plan_layer, prune_moe

#: (method, router) pairs a sweep evaluates; frequency-drop has no router choice.
SWEEP_VARIANTS = (("uncurl", "slot"), ("uncurl", "logsumexp"), ("uncurl", "mean"),
                  ("random", "slot"), ("random", "logsumexp"), ("random", "mean"), ("frequency", "drop"))


def factors_for(n_experts: int) -> list[int]:
    """The pruning factors r = 1, 2, 4, ... up to E (one expert per layer)."""
    out, r = [], 1
    while r <= n_experts:
        if n_experts % r == 0:
            out.append(r)
        r *= 2
    return out


def pretrain(n_experts: int, tasks: tuple[str, ...], steps: int, batch_size: int = 64, lr: float = 3e-3,
             seed: int = 0, d_model: int = 64, expert_hidden: int = 64, n_layers: int = 2, n_heads: int = 4,
             top_k: int = 2, task_weights: tuple[float, ...] | None = None, progress: bool = True) -> dict:
    """Train the tiny MoE decoder with ``n_experts`` experts per layer on the task mixture (see ``train_moe``).

    Also the from-scratch baseline: a small SMoE with E/r experts gets exactly the same budget (steps, batch,
    learning rate, data) as the large one.  ``task_weights``: how often each task is drawn (default: uniform).
    """
    cfg = MoEConfig(n_experts=n_experts, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                    expert_hidden=expert_hidden, top_k=top_k)
    return train_moe(cfg, tuple(tasks), steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress,
                     desc=f"train E={n_experts}", task_weights=task_weights).to_dict()


def task_finetune(trained: dict, tasks: tuple[str, ...], steps: int, batch_size: int = 64, lr: float = 2e-3,
                  seed: int = 0, target_acc: float = 0.95, check_every: int = 20, n_check: int = 128,
                  progress: bool = True) -> dict[str, dict]:
    """The task-fine-tuned models UNCURL prunes: the pre-trained model fine-tuned on each task alone, in rounds
    of ``check_every`` AdamW steps until its exact-match accuracy on ``n_check`` fresh validation examples of the
    task reaches ``target_acc``, or ``steps`` steps (load-balancing loss kept).  Every model of the series gets
    the same rule.  Returns ``{task: state_dict}`` plus ``{"steps": {task: steps used}}``; ``steps = 0`` returns
    the pre-trained weights for every task."""
    model = load_model(trained)
    out: dict = {"steps": {}}
    iterator = tasks
    if progress and steps:
        try:
            from lionsnb.progress import progress as bar
            iterator = bar(tasks, desc=f"fine-tune E={model.cfg.n_experts}")
        except ImportError:
            pass
    for i, task in enumerate(iterator):
        check = D.make_batch((task,), n_per_task=n_check, seed=20_000 + i)
        tuned, used = model, 0
        while used < steps and evaluate(tuned, check)[task]["acc"] < target_acc:
            n = min(check_every, steps - used)
            tuned = finetune(tuned, task, n, batch_size=batch_size, lr=lr, seed=seed * 7919 + i * 131 + used)
            used += n
        out[task] = {k: v.detach().cpu().clone() for k, v in tuned.state_dict().items()}
        out["steps"][task] = used
    return out


def eval_batch(tasks: tuple[str, ...], n_per_task: int, seed: int = 10_000) -> D.Batch:
    """The held-out evaluation examples (a seed far from the training seeds)."""
    return D.make_batch(tuple(tasks), n_per_task=n_per_task, seed=seed)


def prune_sweep(trained: dict, tasks: tuple[str, ...], factors: Iterable[int], n_eval: int,
                n_calib: int, seed: int = 0, variants: Iterable[tuple[str, str]] = SWEEP_VARIANTS,
                align: str = "first", task_states: dict[str, dict] | None = None, progress: bool = True) -> list[dict]:
    """Task-aware pruning: for every target task, factor r and (method, router), prune the task's model with that
    task's calibration data and evaluate it on that task.

    ``task_states``: the task-fine-tuned weights (:func:`task_finetune`); without them every task prunes the
    pre-trained model.  Returns one record per run: task, r, method, router, experts per layer after pruning,
    expert parameters, exact-match accuracy and answer NLL.
    """
    base = load_model(trained)
    ev = eval_batch(tasks, n_eval)
    records = []
    variants = list(variants)
    jobs = [(t, r) for t in tasks for r in factors]
    iterator = jobs
    if progress:
        try:
            from lionsnb.progress import progress as bar
            iterator = bar(jobs, desc=f"prune sweep E={base.cfg.n_experts}")
        except ImportError:
            pass
    stats_cache: dict[str, list] = {}
    models: dict[str, TinyMoE] = {}
    for task, r in iterator:
        if task not in models:
            models[task] = base
            if task_states is not None:
                models[task] = load_model(trained, state=task_states[task])
        model = models[task]
        if task not in stats_cache:
            calib = D.calibration_batches(task, n_calib, seed=seed + 77, tasks=tuple(tasks))
            stats_cache[task] = router_statistics(model, calib)
        sub = ev.subset(task)
        plans: dict[str, list] = {}
        for method, router in variants:
            if method not in plans:  # one grouping per method serves every router handling
                gen = torch.Generator().manual_seed(seed)
                plans[method] = [plan_layer(st["logits"], st["topk"], model.cfg.n_experts, r, method, seed=seed,
                                            generator=gen) for st in stats_cache[task]]
            pruned = apply_plans(model, plans[method], router="slot" if router == "drop" else router, align=align)
            res = evaluate(pruned, sub)[task]
            records.append({"E": model.cfg.n_experts, "task": task, "r": r, "method": method, "router": router,
                            "experts": model.cfg.n_experts // r,
                            "expert_params": count_parameters(pruned, experts_only=True),
                            "acc": res["acc"], "nll": res["nll"]})
    return records


def threshold_factor(acc_by_r: dict[int, float], delta: float) -> int:
    """r* = the largest r such that every r' <= r keeps ``acc(r') >= (1 - delta) acc(1)`` (accuracy flat so far)."""
    if 1 not in acc_by_r:
        raise ValueError("acc_by_r needs the unpruned accuracy acc(1)")
    base = acc_by_r[1]
    best = 1
    for r in sorted(acc_by_r):
        if acc_by_r[r] >= (1 - delta) * base:
            best = r
        else:
            break
    return best


def select(records: list[dict], **where) -> list[dict]:
    """The records whose fields equal ``where``."""
    return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def curve(records: list[dict], metric: str = "acc", **where) -> dict[int, float]:
    """``{r: metric}`` of the records matching ``where`` (one record per r expected)."""
    return {r["r"]: r[metric] for r in select(records, **where)}


def mean_over_tasks(records: list[dict], r: int, metric: str = "acc", **where) -> float:
    vals = [x[metric] for x in select(records, r=r, **where)]
    if not vals:
        raise ValueError(f"no records with r={r} and {where}")
    return sum(vals) / len(vals)


@torch.no_grad()
def forward_latency(models: dict[str, torch.nn.Module], tokens: torch.Tensor, repeats: int = 20,
                    warmup: int = 3, layer_only: bool = False) -> dict[str, float]:
    """Median forward time (seconds) of each model on ``tokens``, measured interleaved in one run.

    ``layer_only``: time only the first MoE layer on the hidden states it sees, which isolates what pruning changes.
    Interleaving the models in every repeat makes the ratios robust to load changes on a shared machine.
    """
    inputs: dict[str, torch.Tensor] = {}
    calls = {}
    for name, m in models.items():
        m.eval()
        if layer_only:
            layer = m.moe_layers[0]
            x = torch.randn(tokens.numel(), m.cfg.d_model, generator=torch.Generator().manual_seed(0))
            inputs[name] = x
            calls[name] = (lambda layer=layer, x=x: layer(x))
        else:
            calls[name] = (lambda m=m: m(tokens))
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: stats_.median(v) for k, v in times.items()}


def what_pruning_buys(trained: dict, task: str, factor: int, n_calib: int = 128, batch: int = 256,
                      repeats: int = 20, seed: int = 0) -> list[dict]:
    """Parameters, parameter memory and measured forward latency of the unpruned model and its r-pruned versions
    (slot binding, logsumexp and mean-row routers, frequency-drop), whole model and the MoE layer alone."""
    model = load_model(trained)
    calib = D.calibration_batches(task, n_calib, seed=seed + 77)
    st = router_statistics(model, calib)
    variants = {"unpruned": model}
    for name, method, router in (("slot binding", "uncurl", "slot"), ("logsumexp", "uncurl", "logsumexp"),
                                 ("mean-row", "uncurl", "mean"), ("frequency-drop", "frequency", "slot")):
        variants[name] = prune_moe(model, factor, [], method=method, router=router, statistics=st, seed=seed)
    tokens = eval_batch((task,), batch).inputs
    whole = forward_latency(variants, tokens, repeats=repeats)
    layer = forward_latency(variants, tokens, repeats=repeats, layer_only=True)
    out = []
    for name, m in variants.items():
        out.append({"model": name, "experts per layer": len(m.moe_layers[0].unique_experts()),
                    "router outputs": m.moe_layers[0].router.out_features,
                    "expert calls per layer": len(m.moe_layers[0].experts),
                    "parameters": count_parameters(m), "expert parameters": count_parameters(m, experts_only=True),
                    "memory_kib": parameter_bytes(m) / 1024, "latency_ms": 1000 * whole[name],
                    "layer_latency_ms": 1000 * layer[name]})
    return out




def finetune(model: TinyMoE, task: str, steps: int, batch_size: int = 64, lr: float = 2e-3,
             seed: int = 0) -> TinyMoE:
    """A short task fine-tune of a (pruned) model on fresh examples of ``task`` (AdamW, constant lr); a copy.

    The load-balancing loss is kept (coefficient from the model's config).  Bound slots share one module, so
    slot-bound experts receive the gradients of all their slots.
    """
    import copy

    from lionsnb.uncurl.model import masked_loss

    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    for step in range(steps):
        batch = D.make_batch((task,), n=batch_size, seed=seed * 1_000_003 + 500_000 + step)
        logits = model(batch.inputs)
        loss = masked_loss(logits, batch) + model.cfg.aux_coef * model.aux_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model.eval()


# ------------------------------------------------------------------------- shared by the series' notebooks
#: Sizes every notebook of the series shares (the pre-trained models are the same, so the cache serves them once).
SERIES_PROFILES: dict[str, dict] = {
    "smoke": dict(tasks=("copy", "rev", "sort", "add"), experts=(4, 8), d_model=32, n_heads=2, n_layers=2,
                  expert_hidden=32, steps=60, batch_size=32, lr=3e-3, finetune_steps=10, n_eval=24, n_calib=24,
                  task_weights=None),
    "teach": dict(tasks=("copy", "rev", "sort", "add"), experts=(4, 8), d_model=64, n_heads=4, n_layers=2,
                  expert_hidden=64, steps=400, batch_size=64, lr=3e-3, finetune_steps=200, n_eval=200, n_calib=128,
                  task_weights=None),
    "full": dict(tasks=D.ALL_TASKS, experts=(4, 8, 16, 32, 64), d_model=128, n_heads=4, n_layers=4,
                 expert_hidden=128, steps=4000, batch_size=128, lr=2e-3, finetune_steps=300, n_eval=1000,
                 n_calib=512, task_weights=None),
}


def pretrained(ctx, n_experts: int) -> dict:
    """The pre-trained tiny MoE with ``n_experts`` experts per layer at the run's profile (shared by the notebooks)."""
    s = ctx.sizes
    return ctx.cached("pretrain", pretrain, n_experts=n_experts, tasks=tuple(s.tasks), steps=s.steps,
                      batch_size=s.batch_size, lr=s.lr, seed=ctx.seed, d_model=s.d_model,
                      expert_hidden=s.expert_hidden, n_layers=s.n_layers, n_heads=s.n_heads,
                      task_weights=s.task_weights)


def task_models(ctx, trained: dict) -> dict[str, dict]:
    """The task-fine-tuned weights of ``trained`` for every task of the profile (shared by the notebooks)."""
    s = ctx.sizes
    return ctx.cached("task_finetune", task_finetune, trained=trained, tasks=tuple(s.tasks),
                      steps=s.finetune_steps, batch_size=s.batch_size, seed=ctx.seed)


def sweep(ctx, trained: dict, states: dict[str, dict]) -> list[dict]:
    """The task-aware pruning sweep of one pre-trained model over every task, r and (method, router), cached for
    the series."""
    s = ctx.sizes
    return ctx.cached("prune_sweep", prune_sweep, trained=trained, tasks=tuple(s.tasks),
                      factors=factors_for(trained["config"]["n_experts"]), n_eval=s.n_eval, n_calib=s.n_calib,
                      seed=ctx.seed, task_states=states)
