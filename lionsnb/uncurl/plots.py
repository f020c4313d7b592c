"""Figures of the UNCURL series.  Every ``draw_*`` takes a matplotlib figure and precomputed results only, so the
explorers can call them for any point of a sweep without computing anything."""
from __future__ import annotations

import math

import numpy as np
import torch

from lionsnb.plotting import label
from lionsnb.uncurl.components import cluster_members

METHOD_STYLE = {
    "uncurl": dict(color="#1b7837", marker="o", label="UNCURL (cluster + align + merge)"),
    "frequency": dict(color="#b2182b", marker="s", label="frequency-drop"),
    "random": dict(color="#7f7f7f", marker="^", label="random groups + merge"),
    "scratch": dict(color="#2166ac", marker="D", label="small SMoE from scratch"),
}
ROUTER_LABEL = {"slot": "slot binding", "logsumexp": "logsumexp router", "mean": "mean-row router",
                "drop": "dropped rows"}


def draw_training(fig, trained: dict, title: str = "") -> None:
    """Answer-token loss and load-balancing loss along pre-training."""
    ax = fig.add_subplot(1, 1, 1)
    losses = np.asarray(trained["losses"], dtype=float)
    k = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    ax.plot(np.arange(len(losses)), losses, color="#cccccc", lw=0.8, label="per step")
    ax.plot(np.arange(k - 1, len(losses)), smooth, color="#1b7837", label=f"mean of {k} steps")
    ax2 = ax.twinx()
    ax2.plot(np.asarray(trained["aux"], dtype=float), color="#b2182b", lw=0.8, alpha=0.6)
    ax2.set_ylabel("load-balancing loss (red)")
    ax.set_yscale("log")
    label(ax, "training step", "answer cross-entropy", title or "Pre-training on the task mixture")
    ax.legend(loc="upper right")


def draw_usage(fig, usage: dict[str, list]) -> None:
    """Grouped bars: the share of top-k assignments each expert gets on each task's data, one panel per layer."""
    tasks = list(usage)
    n_layers = len(usage[tasks[0]])
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    for layer in range(n_layers):
        ax = fig.add_subplot(1, n_layers, layer + 1)
        n_experts = len(usage[tasks[0]][layer])
        width = 0.8 / len(tasks)
        for t, task in enumerate(tasks):
            f = np.asarray(usage[task][layer], dtype=float)
            ax.bar(np.arange(n_experts) + (t - (len(tasks) - 1) / 2) * width, f, width, label=task,
                   color=colors[t % len(colors)])
        ax.axhline(1 / n_experts, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(n_experts))
        label(ax, "expert", "usage frequency f_e", f"MoE layer {layer}")
        if layer == 0:
            ax.legend(title="task data", ncol=2)


def _order(labels: torch.Tensor) -> list[int]:
    return [e for members in cluster_members(labels) for e in members]


def draw_similarity(ax, similarity: torch.Tensor, labels: torch.Tensor, title: str = "") -> None:
    """Heatmap of S with the experts reordered by cluster and each cluster's block outlined."""
    from matplotlib.patches import Rectangle

    order = _order(labels)
    s = np.asarray(torch.as_tensor(similarity)[order][:, order], dtype=float)
    im = ax.imshow(s, vmin=float(s.min()), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(order)), [str(e) for e in order])
    ax.set_yticks(range(len(order)), [str(e) for e in order])
    start = 0
    for members in cluster_members(labels):
        ax.add_patch(Rectangle((start - 0.5, start - 0.5), len(members), len(members), fill=False, ec="white",
                               lw=2))
        start += len(members)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="S = (cos + 1) / 2")
    ax.grid(False)
    label(ax, "expert (ordered by cluster)", "expert (ordered by cluster)", title)


def draw_merge_graph(ax, labels: torch.Tensor, frequencies: torch.Tensor, title: str = "") -> None:
    """Original experts (left, area ~ usage) joined to the merged expert they become (right)."""
    labels = torch.as_tensor(labels)
    f = np.asarray(torch.as_tensor(frequencies, dtype=torch.float64), dtype=float)
    n = len(labels)
    member_of = {e: int(labels[e]) for e in range(n) if int(labels[e]) >= 0}  # -1: dropped (frequency-drop)
    m = max(member_of.values()) + 1
    y_left = {e: n - 1 - e for e in range(n)}
    y_right = {c: (n - 1) * (1 - (c + 0.5) / m) for c in range(m)}
    for e in range(n):
        if e in member_of:
            c = member_of[e]
            ax.plot([0, 1], [y_left[e], y_right[c]], color="#1b7837", lw=0.5 + 6 * f[e], alpha=0.7)
    sizes = 40 + 1200 * f
    ax.scatter(np.zeros(n), [y_left[e] for e in range(n)], s=sizes, color="#2166ac", zorder=3)
    for e in range(n):
        ax.annotate(f"{e}", (0, y_left[e]), xytext=(-14, 0), textcoords="offset points", va="center", ha="right")
        if e not in member_of:
            ax.annotate("dropped", (0, y_left[e]), xytext=(10, 0), textcoords="offset points", va="center",
                        color="#b2182b", fontsize=8)
    mass = [sum(f[e] for e in member_of if member_of[e] == c) for c in range(m)]
    ax.scatter(np.ones(m), [y_right[c] for c in range(m)], s=[40 + 1200 * x for x in mass], color="#1b7837",
               marker="s", zorder=3)
    for c in range(m):
        ax.annotate(f"merged {c}", (1, y_right[c]), xytext=(12, 0), textcoords="offset points", va="center")
    ax.set_xlim(-0.4, 1.6)
    ax.set_xticks([0, 1], ["before", "after"])
    ax.set_yticks([])
    ax.grid(False)
    label(ax, "pruning", "experts (marker area ~ usage)", title)


def draw_clusters(fig, task: str, factor: int, plans: dict, layer: int = 0) -> None:
    """Explorer frame: similarity with spectral clusters and the merge graph of one layer, for one task and r."""
    plan = plans[f"{task}/{factor}"][layer]
    ax1 = fig.add_subplot(1, 2, 1)
    draw_similarity(ax1, plan["similarity"], plan["labels"],
                    f"{task}: router-logit similarity, layer {layer}, {len(set(plan['labels'].tolist()))} clusters")
    ax2 = fig.add_subplot(1, 2, 2)
    draw_merge_graph(ax2, plan["labels"], plan["frequencies"], f"merge graph, r = {factor}")


def draw_task_transfer(fig, rows: list[dict], target: str) -> None:
    """Accuracy on every task of models pruned for ``target`` (grouped bars per variant)."""
    ax = fig.add_subplot(1, 1, 1)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    width = 0.8 / len(variants)
    cmap = ["#999999", "#1b7837", "#a6dba0", "#b2182b", "#7f7f7f"]
    for v, name in enumerate(variants):
        acc = [next(r["acc"] for r in rows if r["variant"] == name and r["task"] == t) for t in tasks]
        ax.bar(np.arange(len(tasks)) + (v - (len(variants) - 1) / 2) * width, acc, width, label=name,
               color=cmap[v % len(cmap)])
    ax.set_xticks(range(len(tasks)), [f"{t}\n(target)" if t == target else t for t in tasks])
    ax.set_ylim(0, 1.05)
    label(ax, "evaluation task", "exact-match accuracy", f"Models pruned with calibration data of '{target}'")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _log2_axis(ax, factors) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(factors, [str(r) for r in factors])
    ax.minorticks_off()


def draw_threshold(fig, E: int, task: str, method: str, router: str, delta: float, records: dict) -> None:
    """Explorer frame: accuracy and NLL against r for one pre-trained E and task; the chosen method bold, r* marked
    for the accuracy band (1 - delta) acc(1)."""
    from lionsnb.uncurl.experiments import curve, threshold_factor

    recs = records[E]
    router_of = {"frequency": "drop"}
    chosen = (method, router_of.get(method, router))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    factors = sorted({r["r"] for r in recs})
    for name in ("uncurl", "frequency", "random"):
        rt = router_of.get(name, router)
        acc = curve(recs, "acc", task=task, method=name, router=rt)
        nll = curve(recs, "nll", task=task, method=name, router=rt)
        bold = (name, rt) == chosen
        style = dict(METHOD_STYLE[name])
        style["label"] = style["label"] + ("" if name == "frequency" else f", {ROUTER_LABEL[rt]}")
        ax1.plot(list(acc), list(acc.values()), lw=2.5 if bold else 1, alpha=1 if bold else 0.45, **style)
        ax2.plot(list(nll), list(nll.values()), lw=2.5 if bold else 1, alpha=1 if bold else 0.45, **style)
    acc = curve(recs, "acc", task=task, method=chosen[0], router=chosen[1])
    r_star = threshold_factor(acc, delta)
    ax1.axhspan((1 - delta) * acc[1], 1.02, color="#1b7837", alpha=0.08)
    ax1.axhline((1 - delta) * acc[1], color="#1b7837", lw=0.8, ls="--")
    ax1.axvline(r_star, color="black", lw=1, ls=":")
    ax1.annotate(f"r* = {r_star}", (r_star, 0.03), xytext=(4, 0), textcoords="offset points",
                 bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.8))
    for ax in (ax1, ax2):
        _log2_axis(ax, factors)
    ax1.set_ylim(-0.02, 1.02)
    label(ax1, "pruning factor r = E / experts kept", "exact-match accuracy",
          f"E = {E}, task '{task}', delta = {delta:g}")
    label(ax2, "pruning factor r", "answer NLL (nats per token)", "Task loss")
    ax1.legend(fontsize=7, loc="upper right")


def draw_rstar(fig, records: dict, delta: float, method: str = "uncurl", router: str = "slot") -> None:
    """r* against the number of pre-training experts E, one line per task."""
    from lionsnb.uncurl.experiments import curve, threshold_factor

    ax = fig.add_subplot(1, 1, 1)
    es = sorted(records)
    tasks = list(dict.fromkeys(r["task"] for r in records[es[0]]))
    for i, task in enumerate(tasks):
        rs = [threshold_factor(curve(records[e], "acc", task=task, method=method, router=router), delta) for e in es]
        ax.plot(es, [r * (1 + 0.03 * (i - len(tasks) / 2)) for r in rs], marker="o", label=task)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(es, [str(e) for e in es])
    ticks = [2 ** k for k in range(int(math.log2(max(es))) + 1)]
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    label(ax, "experts per layer at pre-training E", "threshold factor r*",
          f"r* at delta = {delta:g} ({METHOD_STYLE[method]['label'].split(' (')[0]}, {ROUTER_LABEL[router]})")
    ax.legend(title="task")


def draw_scratch(fig, factor: int, rows: list[dict]) -> None:
    """Explorer frame: per task, the pruned E -> E/r model against the small SMoE of E/r experts from scratch."""
    ax = fig.add_subplot(1, 1, 1)
    sel = [r for r in rows if r["r"] == factor]
    tasks = list(dict.fromkeys(r["task"] for r in sel))
    variants = list(dict.fromkeys(r["variant"] for r in sel))
    width = 0.8 / len(variants)
    palette = {"UNCURL": "#1b7837", "UNCURL + fine-tune": "#a6dba0", "frequency-drop": "#b2182b",
               "from scratch": "#2166ac", "from scratch + fine-tune": "#92c5de"}
    for v, name in enumerate(variants):
        acc = [next(r["acc"] for r in sel if r["variant"] == name and r["task"] == t) for t in tasks]
        ax.bar(np.arange(len(tasks)) + (v - (len(variants) - 1) / 2) * width, acc, width, label=name,
               color=palette.get(name, "#999999"))
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    experts = sel[0]["experts"] if sel else "?"
    label(ax, "task", "exact-match accuracy", f"{experts} experts per layer: pruned (r = {factor}) vs from scratch")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def draw_latency(fig, rows: list[dict]) -> None:
    """Forward latency of one MoE layer against the number of tokens, per variant (log-log), and the ratio to slot
    binding."""
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    tokens = [r["tokens"] for r in rows]
    styles = {"unpruned": ("#444444", "o"), "slot": ("#b2182b", "s"), "logsumexp": ("#1b7837", "^"),
              "mean": ("#2166ac", "D")}
    names = {"unpruned": "unpruned", "slot": "slot binding", "logsumexp": "logsumexp router (shrunk)",
             "mean": "mean-row router (shrunk)"}
    for key, (color, marker) in styles.items():
        ax1.plot(tokens, [r[f"{key}_ms"] for r in rows], color=color, marker=marker, label=names[key])
        if key != "slot":
            ax2.plot(tokens, [r[f"{key}_ms"] / r["slot_ms"] for r in rows], color=color, marker=marker,
                     label=names[key])
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax2.axhline(1.0, color="#b2182b", lw=1, ls="--")
    ax1.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(tokens, [str(t) for t in tokens])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax1.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax1.yaxis.set_major_formatter(ScalarFormatter())
    ax1.yaxis.set_minor_formatter(NullFormatter())
    label(ax1, "tokens in the batch", "MoE layer forward (ms, median)", "Latency of one MoE layer")
    label(ax2, "tokens in the batch", "latency / slot binding", "Ratio to slot binding (same run)")
    ax1.legend(fontsize=8)
