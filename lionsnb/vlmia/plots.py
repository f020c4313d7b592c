"""Figures of the VL-MIA notebooks. Each ``draw_*`` function draws one result (or one point of a precomputed
sweep) into a figure, so the same code makes the static figures and the widget frames."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lionsnb.plotting import colors, label
from lionsnb.vlmia.evaluation import roc_metrics, roc_points, tpr_at_fpr
from lionsnb.vlmia.experiments import ALPHA_LABELS, HEATMAP_ROWS, metric_key
from lionsnb.vlmia.slicing import SLICE_NAMES

SLICE_COLOURS = {"prefix": "#dddddd", "img": "#f4c27a", "inst": "#9ecae1", "desp": "#a1d99b"}
QUANTITY_OF_ALPHA = {"0.5": "renyi_05", "1": "renyi_1", "2": "renyi_2", "inf": "renyi_inf"}


def _log_roc(ax, scores: np.ndarray, labels: np.ndarray, name: str, color=None, ls: str = "-") -> float:
    fpr, tpr = roc_points(scores, labels)
    auc = roc_metrics(scores, labels)[0]
    floor = 1.0 / max(1, int((np.asarray(labels) == 0).sum()))
    ax.plot(np.clip(fpr, floor / 2, 1), np.clip(tpr, floor / 2, 1), ls, color=color, lw=1.4,
            label=f"{name} (AUC {auc:.2f})", drawstyle="steps-post")
    return auc


def _roc_axes(ax, n_neg: int, title: str = "") -> None:
    floor = 1.0 / max(1, n_neg)
    grid = np.logspace(np.log10(floor / 2), 0, 50)
    ax.plot(grid, grid, ":", color="gray", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor / 2, 1)
    ax.set_ylim(floor / 2, 1.05)
    label(ax, "false positive rate (log)", "true positive rate (log)", title)


def draw_training(fig, *, run: Mapping[str, Any]) -> None:
    """Loss per epoch of the two training stages."""
    ax1, ax2 = fig.subplots(1, 2)
    pre = np.asarray(run["pretrain_losses"])
    ax1.plot(np.arange(1, len(pre) + 1), pre, "o-", ms=3, color="tab:gray")
    label(ax1, "epoch", "loss (all text tokens)", "stage 1: pre-training on the public pool")
    tuned = np.asarray(run["losses"])
    ax2.plot(np.arange(1, len(tuned) + 1), tuned, "o-", ms=3, color="tab:red")
    label(ax2, "epoch", "loss (caption tokens)", "stage 2: instruction tuning on the members")


def draw_trace(fig, *, alpha: str, k: int, traces: Mapping[str, Mapping[str, Any]]) -> None:
    """Per-position Rényi entropy H_α of the next-token distribution along the whole sequence, one panel per
    example (member, non-member); slices shaded; on the description slice the k(K) largest values (the ones
    MaxRényi-K% averages, with the reference's alignment) are circled."""
    from lionsnb.vlmia.metrics import k_of

    names = list(traces)
    axes = fig.subplots(len(names), 1, sharex=False, squeeze=False)[:, 0]
    q = QUANTITY_OF_ALPHA[alpha]
    for ax, name in zip(axes, names):
        tr = traces[name]
        h = np.asarray(tr["quantities"][q])
        pos = np.arange(len(h))
        sl = {k: slice(*v) for k, v in tr["slices"].items()}
        ax.axvspan(-0.5, sl["img"].start - 0.5, color=SLICE_COLOURS["prefix"], alpha=0.5, lw=0)
        for s in ("img", "inst", "desp"):
            ax.axvspan(sl[s].start - 0.5, sl[s].stop - 0.5, color=SLICE_COLOURS[s], alpha=0.45, lw=0, label=s)
        ax.plot(pos, h, ".-", color="black", lw=1, ms=4)
        rows = np.arange(sl["desp"].start, sl["desp"].stop - 1)   # row i scores desc token i + 1 (in-slice)
        if len(rows):
            kk = k_of(len(rows), {0: 0, 100: 1}.get(k, k / 100))
            top = rows[np.argsort(-h[rows], kind="stable")[:kk]]
            ax.plot(top, h[top], "o", mfc="none", mec="tab:red", ms=9, mew=1.6, label=f"top {k}% of desp rows")
        ticks = list(range(sl["img"].stop - 1, len(h)))
        ax.set_xticks(ticks)
        ax.set_xticklabels([tr["tokens"][i + 1] for i in ticks], rotation=70, fontsize=7)
        label(ax, "row t (tick: the token t + 1 it predicts)", f"H_{alpha} (nats)",
              f"{name}: \u201c{tr['description']}\u201d")
        ax.title.set_fontsize(9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=7, borderaxespad=0)


def draw_explorer(fig, *, family: str, alpha: str, k: int, slice_name: str, epoch: int,
                  sweep: Mapping[str, Any]) -> None:
    """Left: log-log ROC of the chosen metric (and perplexity) at ``epoch``. Right: its AUC against the epochs."""
    key = metric_key(family, alpha, k)
    res = sweep["results"][str(epoch)]
    labels = np.asarray(res["labels"])
    ax1, ax2 = fig.subplots(1, 2)
    na = slice_name == "img" and family in ("Perplexity", "Min-K% Prob", "ModRényi", "Min-K%++")
    scores = np.asarray(res["scores"][slice_name][key])
    _roc_axes(ax1, int((labels == 0).sum()))
    auc = _log_roc(ax1, scores, labels, key, color="tab:red")
    _log_roc(ax1, np.asarray(res["scores"][slice_name]["ppl"]), labels, "ppl", color="tab:gray", ls="--")
    t1 = tpr_at_fpr(scores, labels, 0.01)
    ax1.set_title(f"{slice_name}, epoch {epoch}: AUC {auc:.3f}, TPR@1%FPR {t1:.2f}"
                  + (" (target-based on img: N/A in the paper)" if na else ""), fontsize=9)
    ax1.legend(loc="lower right", fontsize=7)
    epochs = list(sweep["epochs"])
    aucs = [roc_metrics(np.asarray(sweep["results"][str(e)]["scores"][slice_name][key]), labels)[0] for e in epochs]
    ppl = [roc_metrics(np.asarray(sweep["results"][str(e)]["scores"][slice_name]["ppl"]), labels)[0]
           for e in epochs]
    ax2.plot(epochs, aucs, "o-", color="tab:red", label=key)
    ax2.plot(epochs, ppl, "s--", color="tab:gray", label="ppl")
    ax2.axvline(epoch, color="tab:red", alpha=0.3, lw=6)
    ax2.axhline(0.5, color="gray", ls=":", lw=1)
    ax2.set_ylim(0.3, 1.02)
    label(ax2, "instruction-tuning epochs on the members", "AUC", f"slice {slice_name}")
    ax2.legend(loc="lower right", fontsize=7)


def draw_rocs(fig, *, result: Mapping[str, Any], slice_name: str, keys: Sequence[str]) -> None:
    """Log-log ROC curves of several metrics on one slice."""
    ax = fig.subplots()
    labels = np.asarray(result["labels"])
    _roc_axes(ax, int((labels == 0).sum()), f"ROC on the {slice_name} slice (lower score = member)")
    for key, c in zip(keys, colors(len(keys))):
        _log_roc(ax, np.asarray(result["scores"][slice_name][key]), labels, key, color=c)
    ax.legend(loc="lower right", fontsize=7)


def draw_auc_vs_k(fig, *, result: Mapping[str, Any], slice_names: Sequence[str] = ("desp", "inst_desp")) -> None:
    """AUC of MaxRényi-K% against K, one line per α, one panel per slice (perplexity as a dashed line)."""
    from lionsnb.vlmia.experiments import K_PERCENTS

    labels = np.asarray(result["labels"])
    axes = fig.subplots(1, len(slice_names), squeeze=False)[0]
    for ax, s in zip(axes, slice_names):
        for alpha, c in zip(ALPHA_LABELS, colors(4)):
            aucs = [roc_metrics(np.asarray(result["scores"][s][metric_key("MaxRényi-K%", alpha, k)]), labels)[0]
                    for k in K_PERCENTS]
            ax.plot(K_PERCENTS, aucs, "o-", ms=3, color=c, label=f"α = {alpha}")
        ax.axhline(roc_metrics(np.asarray(result["scores"][s]["ppl"]), labels)[0], color="tab:red", ls="--",
                   label="perplexity")
        ax.axhline(0.5, color="gray", ls=":", lw=1)
        label(ax, "K (% of positions averaged)", "AUC", f"MaxRényi-K% on {s}")
        ax.legend(fontsize=7)


def draw_auc_vs_epochs(fig, *, sweep: Mapping[str, Any], keys: Sequence[str],
                       slice_names: Sequence[str] = SLICE_NAMES) -> None:
    """AUC against the instruction-tuning epochs, one panel per slice, one line per metric."""
    epochs = list(sweep["epochs"])
    axes = fig.subplots(1, len(slice_names), squeeze=False, sharey=True)[0]
    for ax, s in zip(axes, slice_names):
        for key, c in zip(keys, colors(len(keys))):
            res = [sweep["results"][str(e)] for e in epochs]
            aucs = [roc_metrics(np.asarray(r["scores"][s][key]), np.asarray(r["labels"]))[0] for r in res]
            ax.plot(epochs, aucs, "o-", ms=3, color=c, label=key)
        ax.axhline(0.5, color="gray", ls=":", lw=1)
        ax.set_ylim(0.25, 1.02)
        label(ax, "epochs", "AUC", s)
    axes[-1].legend(fontsize=6, loc="lower right")


def heatmap_table(result: Mapping[str, Any], rows: Sequence[tuple[str, str, bool]] = HEATMAP_ROWS
                  ) -> dict[str, dict[str, float | None]]:
    """``{row label: {slice: AUC or None}}``; None for target-based metrics on ``img`` (N/A, as in the paper)."""
    labels = np.asarray(result["labels"])
    out = {}
    for name, key, target_based in rows:
        out[name] = {s: (None if (s == "img" and target_based) else
                         roc_metrics(np.asarray(result["scores"][s][key]), labels)[0]) for s in SLICE_NAMES}
    return out


def draw_heatmap(fig, *, table: Mapping[str, Mapping[str, float | None]], title: str = "") -> None:
    """The AUC heatmap, metric x slice (grey = N/A)."""
    ax = fig.subplots()
    names = list(table)
    values = np.array([[np.nan if table[n][s] is None else table[n][s] for s in SLICE_NAMES] for n in names])
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].copy()
    cmap.set_bad("#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.2, vmax=0.8 if np.nanmax(values) < 0.8 else 1.0,
                   aspect="auto")
    for i in range(len(names)):
        for j in range(len(SLICE_NAMES)):
            v = values[i, j]
            ax.text(j, i, "N/A" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(SLICE_NAMES)))
    ax.set_xticklabels(SLICE_NAMES)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.grid(False)
    label(ax, "slice", "metric (* = target-based)", title)
    fig.colorbar(im, ax=ax, label="AUC")


def draw_histograms(fig, *, result: Mapping[str, Any], slice_name: str, keys: Sequence[str]) -> None:
    """Score distributions of members and non-members for a few metrics on one slice."""
    labels = np.asarray(result["labels"])
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        s = np.asarray(result["scores"][slice_name][key])
        bins = np.linspace(np.nanmin(s), np.nanmax(s), 25)
        ax.hist(s[labels == 1], bins=bins, alpha=0.6, color="tab:red", label="members")
        ax.hist(s[labels == 0], bins=bins, alpha=0.6, color="tab:blue", label="non-members")
        label(ax, f"{key} (lower = member)", "count", f"{slice_name}: AUC {roc_metrics(s, labels)[0]:.2f}")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)


def draw_confound(fig, *, fraction: float, slice_name: str, mixtures: Mapping[str, Any], key: str) -> None:
    """Members against a non-member set with a ``fraction`` of shifted images, scored by a model that never saw the
    members. Left: log-log ROC at this fraction. Right: AUC against the fraction, per slice."""
    ax1, ax2 = fig.subplots(1, 2)
    mix = mixtures["mixes"][f"{fraction:g}"]
    labels = np.asarray(mix["labels"])
    _roc_axes(ax1, int((labels == 0).sum()), f"{fraction:.0%} of the non-members shifted")
    _log_roc(ax1, np.asarray(mix["scores"][slice_name][key]), labels, f"{key} on {slice_name}", color="tab:purple")
    ax1.legend(loc="lower right", fontsize=7)
    fractions = sorted(float(f) for f in mixtures["mixes"])
    for s, c in zip(SLICE_NAMES, colors(4)):
        aucs = [roc_metrics(np.asarray(mixtures["mixes"][f"{f:g}"]["scores"][s][key]),
                            np.asarray(mixtures["mixes"][f"{f:g}"]["labels"]))[0] for f in fractions]
        ax2.plot(fractions, aucs, "o-", color=c, label=s, lw=2.5 if s == slice_name else 1)
    ax2.axvline(fraction, color="tab:purple", alpha=0.3, lw=6)
    ax2.axhline(0.5, color="gray", ls=":", lw=1)
    ax2.set_ylim(0.2, 1.02)
    label(ax2, "share of shifted non-members", "AUC", f"{key}, model never trained on the members")
    ax2.legend(fontsize=7)


def draw_text_mia(fig, *, result: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Text MIA on the LM: log-log ROC before and after fine-tuning, and the perplexity histograms."""
    ax1, ax2 = fig.subplots(1, 2)
    labels = np.asarray(result["labels"])
    _roc_axes(ax1, int((labels == 0).sum()), "after fine-tuning (solid) and before (dashed)")
    for key, c in zip(keys, colors(len(keys))):
        _log_roc(ax1, np.asarray(result["after"][key]), labels, key, color=c)
        _log_roc(ax1, np.asarray(result["before"][key]), labels, f"{key}, before", color=c, ls="--")
    ax1.legend(loc="lower right", fontsize=6)
    logs = {when: np.log(np.asarray(result[when]["ppl"])) for when in ("before", "after")}
    both = np.concatenate(list(logs.values()))
    bins = np.linspace(both.min(), both.max(), 16)
    for when, ls in (("before", "--"), ("after", "-")):
        for lab, c, name in ((1, "tab:red", "members"), (0, "tab:blue", "non-members")):
            ax2.hist(logs[when][labels == lab], bins=bins, histtype="step", ls=ls, color=c, lw=1.5,
                     label=f"{name}, {when}")
    label(ax2, "log perplexity of the passage", "count", "fine-tuning lowers the members' perplexity most")
    ax2.legend(fontsize=7)


def draw_images(fig, *, rows: Mapping[str, Any], n: int = 6) -> None:
    """A few images per named set (e.g. members, IID non-members, shifted non-members) with their captions."""
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, pairs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(pairs.images[c].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.axis("off")
            words = pairs.captions[c].split()
            head = f"{name}\n" if c == 0 else "\n"
            ax.set_title(head + " ".join(words[:-3]) + "\n" + " ".join(words[-3:]), fontsize=6,
                         fontweight="normal")
