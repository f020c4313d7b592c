"""Backs ``notebooks/lipslev/01_levenshtein.ipynb``: the Levenshtein distance and its neighbourhoods.

Abad Rocamora, Chrysos, Cevher, "Certified Robustness Under Bounded Levenshtein Distance", ICLR 2025
(arXiv 2501.13676). The certificate of the series bounds how much a classifier can change inside a
Levenshtein ball; this notebook measures the objects the bound talks about (the algorithms live in the core
module :mod:`lionsnb.lipslev.levenshtein`; this module holds the notebook's spec, checks, tables and figures):

* the DP table of d_Lev and a backtracked optimal edit script (substitution, deletion, insertion);
* the unique strings at distance exactly 1, canonically enumerated, and their count
  |N_1| = (2n + 1)(sigma - 1) + 1 + runs(x), checked against a deduplicated enumeration of all edits;
* the exact size of the ball |N_<=k| for any string, counted with a Levenshtein automaton
  (:func:`count_ball`, checked against breadth-first enumeration), which shows why brute-force
  verification is hopeless beyond k = 1 on AG-News-sized sentences;
* the tokenizer (lowercase, drop characters outside the alphabet) is 1-Lipschitz for d_Lev;
* the ERP distance (Def. 4.1) with the zero vector as gap, Lemma S4 (p = inf on one-hot rows equals
  d_Lev) and what p = 1 and p = 2 give instead.
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from lionsnb.context import setup_for
from lionsnb.display import Table, show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.lipslev.data import ag_news_alphabet, load_ag_news
from lionsnb.lipslev.levenshtein import (
    Alphabet,
    apply_edit,
    ball,
    count_ball,
    edit_script,
    erp_distance,
    levenshtein,
    levenshtein_table,
    neighbour_count,
    neighbour_edits,
    neighbours,
    one_hot,
    runs,
)
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.widgets import explore

SPEC = MethodSpec(
    name="lipslev.nb01_levenshtein",
    title="LipsLev 1: Levenshtein distance and its neighbourhoods",
    profiles={
        # *_pairs / *_strings / *_triples / *_edits: random cases per check; bfs_limit: largest ball enumerated
        # by breadth-first search; growth_*: the exact-count grid behind the growth plots and the widget;
        # ag_*: AG-News sentences (|N_1| for ag_sentences, exact |N_<=k| up to ag_k_max for ag_exact of them)
        "smoke": dict(script_pairs=200, metric_triples=300, formula_strings=300, max_len=10, max_sigma=8,
                      bfs_ns=(2, 4, 6, 8), bfs_sigmas=(2, 4), bfs_k_max=3, bfs_limit=20_000,
                      growth_ns=(4, 8, 16, 32, 64, 128, 256), growth_sigmas=(2, 8, 56), growth_k_max=3,
                      ag_sentences=1000, ag_exact=3, ag_k_max=2, tokenizer_edits=1000, erp_pairs=100,
                      throughput_batch=32, throughput_repeats=1),
        "teach": dict(script_pairs=2000, metric_triples=3000, formula_strings=3000, max_len=12, max_sigma=8,
                      bfs_ns=(2, 4, 6, 8, 10, 12), bfs_sigmas=(2, 4, 8), bfs_k_max=3, bfs_limit=300_000,
                      growth_ns=(4, 8, 16, 32, 64, 128, 256), growth_sigmas=(2, 4, 8, 16, 36, 56),
                      growth_k_max=4, ag_sentences=1000, ag_exact=20, ag_k_max=3, tokenizer_edits=5000,
                      erp_pairs=1000, throughput_batch=256, throughput_repeats=3),
        "full": dict(script_pairs=20_000, metric_triples=30_000, formula_strings=30_000, max_len=14, max_sigma=10,
                     bfs_ns=(2, 4, 6, 8, 10, 12, 14), bfs_sigmas=(2, 4, 8), bfs_k_max=3, bfs_limit=2_000_000,
                     growth_ns=(4, 8, 16, 32, 64, 128, 256, 512), growth_sigmas=(2, 4, 8, 16, 36, 56),
                     growth_k_max=4, ag_sentences=7600, ag_exact=100, ag_k_max=3, tokenizer_edits=100_000,
                     erp_pairs=5000, throughput_batch=256, throughput_repeats=5),
    },
    knobs={
        "source": Knob("sitting", "the source string of the DP-table figure (1 to 16 characters)", str),
        "target": Knob("strings", "the target string of the DP-table figure (1 to 16 characters)", str),
    },
)
setup = setup_for(SPEC)

#: longest string the DP-table figure draws legibly
MAX_FIGURE_LEN = 16
#: the sizes of the paper's AG-News model (embed 150, hidden 100, kernel 10), for the throughput measurement
PAPER_MODEL = dict(embed_dim=150, hidden=100, kernel_size=10)
KIND_COLORS = {"keep": "0.45", "sub": "tab:orange", "del": "tab:red", "ins": "tab:blue"}
KIND_NAMES = {"keep": "keep", "sub": "substitute", "del": "delete", "ins": "insert"}


def check_pair(source: str, target: str) -> tuple[str, str]:
    """Validate the two strings of the DP-table figure (1..16 characters each)."""
    for name, text in (("SOURCE", source), ("TARGET", target)):
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_FIGURE_LEN:
            raise ValueError(f"{name} = {text!r}: use a string of 1 to {MAX_FIGURE_LEN} characters "
                             "(longer tables are unreadable as a figure; levenshtein() takes any length)")
    return source, target


def random_strings(rng: np.random.Generator, count: int, max_len: int, max_sigma: int,
                   min_len: int = 0) -> list[tuple[tuple[int, ...], int]]:
    """``count`` random (string, sigma) pairs: sigma uniform in 1..max_sigma, length in min_len..max_len.

    Small alphabets make runs of equal symbols frequent, which is what the neighbour count is about.
    """
    out = []
    for _ in range(count):
        sigma = int(rng.integers(1, max_sigma + 1))
        n = int(rng.integers(min_len, max_len + 1))
        out.append((tuple(int(c) for c in rng.integers(1, sigma + 1, size=n)), sigma))
    return out


def random_edits(rng: np.random.Generator, seq: Sequence[int], sigma: int, count: int) -> tuple:
    """``seq`` after ``count`` uniformly random edits (each a substitution, deletion or insertion)."""
    out = tuple(seq)
    for _ in range(count):
        kind = ("sub", "del", "ins")[int(rng.integers(3))] if out else "ins"
        j = int(rng.integers(len(out) + (kind == "ins")))
        out = apply_edit(out, (kind, j, int(rng.integers(1, sigma + 1))))
    return out


# ----------------------------------------------------------------------------- the DP table and the script

def apply_script(source: Sequence, script: Sequence[tuple]) -> list:
    """The string an edit script of :func:`edit_script` produces from ``source`` (keep/sub/del/ins ops in order)."""
    out, i = [], 0
    for op, pos, x, y in script:
        if op in ("keep", "sub", "del"):
            if pos != i or source[i] != x:
                raise ValueError(f"script op {op} at position {pos} does not match the source at {i}")
            i += 1
        if op in ("keep", "sub", "ins"):
            out.append(y)
    if i != len(source):
        raise ValueError("the script does not consume the whole source")
    return out


def script_counts(script: Sequence[tuple]) -> dict[str, int]:
    """Number of operations of each kind (keep, sub, del, ins) in a script."""
    counts = Counter(op for op, *_ in script)
    return {kind: counts.get(kind, 0) for kind in KIND_COLORS}


def format_alignment(script: Sequence[tuple]) -> str:
    """Three aligned lines: the source (``-`` for insertions), the operations, the target (``-`` for deletions).

    Operation marks: ``|`` keep, ``S`` substitute, ``D`` delete, ``I`` insert.
    """
    mark = {"keep": "|", "sub": "S", "del": "D", "ins": "I"}
    top, mid, bottom = [], [], []
    for op, _, x, y in script:
        top.append("-" if x is None else _show(x))
        bottom.append("-" if y is None else _show(y))
        mid.append(mark[op])
    return "\n".join(("source  " + " ".join(top), "edits   " + " ".join(mid), "target  " + " ".join(bottom)))


def _show(ch) -> str:
    return "␣" if ch == " " else str(ch)


def script_check(pairs: int, max_len: int, max_sigma: int, seed: int = 0) -> dict:
    """On random pairs: the DP table's corner, the two-row DP and the script agree.

    Counts ``mismatches``: pairs where table[n, m] != levenshtein(a, b), the script's number of edits is
    not the distance, or applying the script to a does not give b.
    """
    rng = np.random.default_rng(seed)
    mismatches, kinds = 0, Counter()
    for _ in range(pairs):
        sigma = int(rng.integers(1, max_sigma + 1))
        a = [int(c) for c in rng.integers(1, sigma + 1, size=int(rng.integers(0, max_len + 1)))]
        b = [int(c) for c in rng.integers(1, sigma + 1, size=int(rng.integers(0, max_len + 1)))]
        d = levenshtein(a, b)
        script = edit_script(a, b)
        counts = script_counts(script)
        cost = counts["sub"] + counts["del"] + counts["ins"]
        ok = levenshtein_table(a, b)[-1, -1] == d and cost == d and apply_script(a, script) == b
        mismatches += not ok
        kinds.update({k: v for k, v in counts.items() if k != "keep"})
    return {"pairs": pairs, "mismatches": mismatches, "edit_kinds": dict(kinds)}


def draw_table(fig, *, source: str, target: str) -> None:
    """The DP table d_Lev(source[:i], target[:j]) as a heat map, with one optimal edit script drawn on it."""
    check_pair(source, target)
    table = levenshtein_table(source, target)
    script = edit_script(source, target)
    ax = fig.subplots()
    im = ax.imshow(table, cmap="Greens", vmin=0, vmax=max(1, table.max()) * 1.4)
    for (i, j), v in np.ndenumerate(table):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color="black")
    i = j = 0
    for op, _, _, _ in script:
        di, dj = {"keep": (1, 1), "sub": (1, 1), "del": (1, 0), "ins": (0, 1)}[op]
        ax.annotate("", xy=(j + dj, i + di), xytext=(j, i),
                    arrowprops=dict(arrowstyle="->", color=KIND_COLORS[op], lw=2.4, shrinkA=6, shrinkB=6))
        i, j = i + di, j + dj
    used = script_counts(script)
    for op, color in KIND_COLORS.items():
        move = {"keep": "diagonal", "sub": "diagonal", "del": "down", "ins": "right"}[op]
        ax.plot([], [], color=color, lw=2.4,
                label=f"{KIND_NAMES[op]}: {move}, cost {0 if op == 'keep' else 1} (x{used[op]})")
    ax.set_xticks(range(len(target) + 1), ["ε"] + [_show(c) for c in target])
    ax.set_yticks(range(len(source) + 1), ["ε"] + [_show(c) for c in source])
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.grid(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.colorbar(im, ax=ax, label="d_Lev(source[:i], target[:j])", shrink=0.8, location="bottom")
    label(ax, f"target prefix  (column j = first j characters of {target!r})",
          f"source prefix  (row i, of {source!r})",
          f"d_Lev({source!r}, {target!r}) = {table[-1, -1]}: DP table and one optimal script")


# ----------------------------------------------------------------------------- metric axioms

def metric_check(triples: int, max_len: int, max_sigma: int, seed: int = 0) -> dict:
    """Identity, symmetry and the triangle inequality of d_Lev on random triples.

    Half of the triples are unrelated random strings; in the other half b and c are a few random edits
    away from a (there the triangle inequality is often tight, so a wrong DP would show up).
    """
    rng = np.random.default_rng(seed)
    identity = symmetry = triangle = tight = 0
    for t in range(triples):
        sigma = int(rng.integers(1, max_sigma + 1))
        a = tuple(int(c) for c in rng.integers(1, sigma + 1, size=int(rng.integers(0, max_len + 1))))
        if t % 2:
            b = random_edits(rng, a, sigma, int(rng.integers(0, 4)))
            c = random_edits(rng, b, sigma, int(rng.integers(0, 4)))
        else:
            b, c = (tuple(int(x) for x in rng.integers(1, sigma + 1, size=int(rng.integers(0, max_len + 1))))
                    for _ in range(2))
        ab, ba, bc, ac = levenshtein(a, b), levenshtein(b, a), levenshtein(b, c), levenshtein(a, c)
        identity += levenshtein(a, a) != 0 or (ab == 0) != (a == b)
        symmetry += ab != ba
        triangle += ac > ab + bc
        tight += ac == ab + bc
    return {"triples": triples, "identity_violations": identity, "symmetry_violations": symmetry,
            "triangle_violations": triangle, "violations": identity + symmetry + triangle,
            "tight_fraction": tight / max(triples, 1)}


# ----------------------------------------------------------------------------- the distance-1 neighbourhood

def all_single_edits(seq: Sequence[int], symbols: Sequence[int]) -> list[tuple]:
    """Every single edit applied to ``seq``, duplicates kept (what a naive brute force enumerates).

    n(sigma - 1) substitutions, n deletions and (n + 1) sigma insertions.
    """
    seq = tuple(seq)
    out = [apply_edit(seq, ("sub", j, c)) for j in range(len(seq)) for c in symbols if c != seq[j]]
    out += [apply_edit(seq, ("del", j, 0)) for j in range(len(seq))]
    out += [apply_edit(seq, ("ins", j, c)) for j in range(len(seq) + 1) for c in symbols]
    return out


def brute_force_counts(seq: Sequence[int], symbols: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Per edit kind: (edits enumerated, distinct strings they give). Kinds are told apart by the length."""
    n = len(seq)
    results = all_single_edits(seq, symbols)
    out = {}
    for kind, length in (("sub", n), ("del", n - 1), ("ins", n + 1)):
        same = [r for r in results if len(r) == length]
        out[kind] = (len(same), len(set(same)))
    return out


def duplicate_groups(seq: Sequence, symbols: Sequence) -> dict[tuple, list]:
    """Strings at distance 1 that several single edits produce, with those edits (canonical one first)."""
    seq = tuple(seq)
    groups: dict[tuple, list] = defaultdict(list)
    edits = [("sub", j, c) for j in range(len(seq)) for c in symbols if c != seq[j]]
    edits += [("del", j, None) for j in range(len(seq))]
    edits += [("ins", j, c) for j in range(len(seq) + 1) for c in symbols]
    for e in edits:
        groups[apply_edit(seq, e)].append(e)
    return {s: es for s, es in groups.items() if len(es) > 1}


def formula_check(strings: int, max_len: int, max_sigma: int, seed: int = 0, distance_checks: int = 50) -> dict:
    """The neighbour-count formula and the canonical enumeration against brute force on random strings.

    For each random (x, sigma): the deduplicated set of all single edits (brute force) has
    (2n + 1)(sigma - 1) + 1 + runs(x) elements (``formula_mismatches``); the canonical edits of
    :func:`neighbour_edits` give pairwise distinct strings (``canonical_duplicates``) and exactly that set
    (``canonical_set_mismatches``); on the first ``distance_checks`` strings every neighbour is at
    distance exactly 1 (``distance_violations``).
    """
    rng = np.random.default_rng(seed)
    rows = []
    formula_bad = dup = set_bad = dist_bad = 0
    for t, (x, sigma) in enumerate(random_strings(rng, strings, max_len, max_sigma)):
        symbols = list(range(1, sigma + 1))
        raw = all_single_edits(x, symbols)
        unique = set(raw)
        canon = neighbours(x, symbols)
        formula = neighbour_count(len(x), sigma, runs(x))
        formula_bad += len(unique) != formula
        dup += len(canon) - len(set(canon))
        set_bad += set(canon) != unique
        if t < distance_checks:
            dist_bad += sum(levenshtein(x, q) != 1 for q in canon)
        rows.append((len(x), sigma, runs(x), len(raw), len(unique), formula))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 6)
    return {"strings_checked": strings, "formula_mismatches": formula_bad, "canonical_duplicates": dup,
            "canonical_set_mismatches": set_bad, "distance_violations": dist_bad,
            "n": arr[:, 0].tolist(), "sigma": arr[:, 1].tolist(), "runs": arr[:, 2].tolist(),
            "raw": arr[:, 3].tolist(), "unique": arr[:, 4].tolist(), "formula": arr[:, 5].tolist()}


def draw_formula(fig, *, result: dict) -> None:
    """Brute-force distinct neighbours against the formula (left) and how many raw edits were duplicates (right)."""
    ax1, ax2 = fig.subplots(1, 2)
    formula, unique, raw = (np.asarray(result[k]) for k in ("formula", "unique", "raw"))
    sigma, n = np.asarray(result["sigma"]), np.asarray(result["n"])
    sc = ax1.scatter(formula, unique, c=sigma, s=14, cmap="viridis", alpha=0.8)
    top = max(formula.max(), unique.max()) + 2
    ax1.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="y = x")
    ax1.legend()
    fig.colorbar(sc, ax=ax1, label="alphabet size sigma")
    label(ax1, "(2n+1)(sigma-1) + 1 + runs(x)", "distinct strings among all single edits",
          f"{len(formula)} random strings, {result['formula_mismatches']} mismatches")
    dup_share = np.where(raw > 0, 1 - unique / np.maximum(raw, 1), 0.0)
    sc2 = ax2.scatter(n + 0.25 * (np.random.default_rng(0).random(len(n)) - 0.5), dup_share, c=sigma, s=14,
                      cmap="viridis", alpha=0.8)
    label(ax2, "string length n (jittered)", "share of raw edits that are duplicates",
          "Duplicates a naive enumeration evaluates")
    fig.colorbar(sc2, ax=ax2, label="alphabet size sigma")


# ----------------------------------------------------------------------------- the ball N_<=k

def estimate_exactly_k(n1: int, k: int) -> float:
    """The rough estimate |N_k| ~ |N_1|^k / k!: k edits chosen from |N_1| options, in any order."""
    return float(n1) ** k / math.factorial(k)


def bfs_vs_count(ns: Sequence[int], sigmas: Sequence[int], k_max: int, limit: int, seed: int = 0) -> dict:
    """Ball sizes by breadth-first enumeration (``ball``, deduplicated) against :func:`count_ball`.

    For every (n, sigma) a random string; k goes up to ``k_max`` while the estimated ball stays below
    ``limit`` strings. Returns records and the number of (n, sigma, k) where the two counts differ.
    """
    rng = np.random.default_rng(seed)
    records, mismatches, largest = [], 0, 0
    for sigma in sigmas:
        for n in ns:
            x = tuple(int(c) for c in rng.integers(1, sigma + 1, size=n))
            n1 = neighbour_count(n, sigma, runs(x))
            k = max([kk for kk in range(1, k_max + 1)
                     if sum(estimate_exactly_k(n1, d) for d in range(kk + 1)) <= limit] or [1])
            start = time.perf_counter()
            dist = ball(x, list(range(1, sigma + 1)), k)
            seconds = time.perf_counter() - start
            bfs = np.bincount(np.fromiter(dist.values(), dtype=np.int64), minlength=k + 1).tolist()
            start = time.perf_counter()
            exact = count_ball(x, sigma, k)
            count_seconds = time.perf_counter() - start
            mismatches += bfs != exact
            largest = max(largest, len(dist))
            records.append({"n": n, "sigma": sigma, "k": k, "bfs": bfs, "exact": exact, "bfs_s": seconds,
                            "count_s": count_seconds})
    return {"records": records, "mismatches": mismatches, "largest_ball": largest,
            "cases": sum(r["k"] + 1 for r in records)}


def growth_table(ns: Sequence[int], sigmas: Sequence[int], k_max: int, seed: int = 0) -> dict:
    """Exact |N_<=k| for k = 0..k_max of one random string per (sigma, n): ``sizes[s][i][k]`` (floats)."""
    rng = np.random.default_rng(seed)
    sizes, n1 = [], []
    bar = progress_bar(total=len(ns) * len(sigmas), desc="exact ball sizes", unit="string")
    for sigma in sigmas:
        row, row1 = [], []
        for n in ns:
            x = [int(c) for c in rng.integers(1, sigma + 1, size=n)]
            hist = count_ball(x, sigma, k_max)
            row.append([float(v) for v in np.cumsum(np.asarray(hist, dtype=object))])
            row1.append(neighbour_count(n, sigma, runs(x)))
            bar.update()
        sizes.append(row)
        n1.append(row1)
    bar.close()
    return {"ns": list(ns), "sigmas": list(sigmas), "k_max": k_max, "sizes": sizes, "n1": n1}


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def growth_slopes(table: dict, sigma: int) -> dict[int, float]:
    """For each k >= 1: the log-log slope of |N_<=k| against n at alphabet size ``sigma`` (expected ~ k)."""
    s = table["sigmas"].index(sigma)
    sizes = np.asarray(table["sizes"][s], dtype=float)
    half = len(table["ns"]) // 2  # the large-n end, where the leading term dominates
    return {k: loglog_slope(table["ns"][half:], sizes[half:, k]) for k in range(1, table["k_max"] + 1)}


def _log2_ticks(ax, values) -> None:
    """A base-2 log axis labelled with the values themselves."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(values), [str(v) for v in values])
    ax.minorticks_off()


def draw_growth_overview(fig, *, table: dict, bfs: dict, sigma: int, n: int) -> None:
    """|N_<=k| against n (at ``sigma``), against sigma (at ``n``) and the BFS-measured points against the counts."""
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ns, sigmas = table["ns"], table["sigmas"]
    s, i = sigmas.index(sigma), ns.index(n)
    sizes = np.asarray(table["sizes"], dtype=float)
    for k in range(1, table["k_max"] + 1):
        line, = ax1.plot(ns, sizes[s, :, k], marker="o", label=f"k = {k}")
        ax1.plot(ns, [sum(estimate_exactly_k(v, d) for d in range(k + 1)) for v in table["n1"][s]],
                 ls=":", color=line.get_color())
        ax2.plot(sigmas, sizes[:, i, k], marker="o", label=f"k = {k}")
    for ax, ticks in ((ax1, ns), (ax2, sigmas)):
        _log2_ticks(ax, ticks)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    label(ax1, "string length n", "|N_<=k| (strings within distance k)",
          f"sigma = {sigma}: exact; dotted: sum |N_1|^d/d!")
    label(ax2, "alphabet size sigma", "|N_<=k|", f"n = {n}: exact counts")
    recs = bfs["records"]
    exact = [sum(r["exact"][:k + 1]) for r in recs for k in range(r["k"] + 1)]
    enum = [sum(r["bfs"][:k + 1]) for r in recs for k in range(r["k"] + 1)]
    ks = [k for r in recs for k in range(r["k"] + 1)]
    import matplotlib.pyplot as plt

    k_top = max(ks)
    sc = ax3.scatter(exact, enum, c=ks, cmap=plt.get_cmap("plasma", k_top + 1), vmin=-0.5, vmax=k_top + 0.5, s=22)
    top = max(exact + enum)
    ax3.plot([1, top], [1, top], color="black", lw=0.8, ls="--", label="y = x")
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.legend(fontsize=8)
    fig.colorbar(sc, ax=ax3, label="radius k", ticks=range(k_top + 1))
    label(ax3, "automaton count of |N_<=k|", "breadth-first enumeration (deduplicated)",
          f"{len(recs)} strings, {bfs['mismatches']} mismatches")


def draw_growth(fig, *, table: dict, k: int, sigma: int, ag: dict | None = None) -> None:
    """Explorer view: |N_<=k| against n for one sigma and k, with the estimate, and the brute-force work at k."""
    ax1, ax2 = fig.subplots(1, 2)
    ns, s = table["ns"], table["sigmas"].index(sigma)
    sizes = np.asarray(table["sizes"][s], dtype=float)
    for kk in range(1, table["k_max"] + 1):
        ax1.plot(ns, sizes[:, kk], marker="o", lw=2.6 if kk == k else 0.8, alpha=1 if kk == k else 0.4,
                 label=f"k = {kk}")
    est = [sum(estimate_exactly_k(v, d) for d in range(k + 1)) for v in table["n1"][s]]
    ax1.plot(ns, est, ls=":", color="black", label=f"sum_d<=k |N_1|^d/d!, k = {k}")
    if ag is not None and ag.get("ball_exact") and ag["sigma"] == sigma and k <= ag["k_max"]:
        ax1.scatter(ag["exact_lengths"], [b[k] for b in ag["ball_exact"]], marker="*", s=60, color="tab:red",
                    zorder=5, label=f"AG-News sentences (sigma {ag['sigma']})")
    _log2_ticks(ax1, ns)
    ax1.set_yscale("log")
    ax1.legend(fontsize=7)
    label(ax1, "string length n", "|N_<=k|", f"sigma = {sigma}, k = {k}")
    ratio = sizes[:, k] / np.asarray(est)
    ax2.plot(ns, ratio, marker="o")
    ax2.axhline(1.0, color="black", lw=0.8, ls="--")
    _log2_ticks(ax2, ns)
    label(ax2, "string length n", "exact / estimate", f"How good is |N_1|^k/k! at sigma = {sigma}?")


# ----------------------------------------------------------------------------- AG-News sizes

def ag_news_strings(count: int, seed: int = 0) -> dict:
    """Encoded AG-News evaluation sentences (offline test rows 0..count-1) and the model alphabet.

    The alphabet is the authors' checkpoint's (56 characters) when ``../shared/data/lipslev_official`` is
    there, else built from the texts (:func:`lionsnb.lipslev.data.ag_news_alphabet`). Without the AG-News file:
    random strings of AG-News-like lengths over 56 symbols, and ``source`` says so.
    """
    try:
        data = load_ag_news()
    except FileNotFoundError as err:
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.normal(235, 70, size=count).round().astype(int), 20, 900)
        seqs = [[int(c) for c in rng.integers(1, 57, size=n)] for n in lengths]
        return {"source": f"synthetic stand-in (random strings, sigma 56): {err}", "sigma": 56, "seqs": seqs,
                "texts": None, "alphabet": None}
    alphabet, how = ag_news_alphabet(data.texts)
    texts = data.texts[:count]
    return {"source": f"{data.source}, rows 0..{len(texts) - 1}; alphabet: {how}", "sigma": alphabet.size,
            "seqs": [alphabet.encode(t) for t in texts], "texts": texts, "alphabet": alphabet}


def ag_news_neighbourhoods(seqs: Sequence[Sequence[int]], sigma: int, exact: int, k_max: int,
                           source: str = "") -> dict:
    """|N_1| (formula) of every encoded sentence of ``seqs``, and exact |N_<=k| (k <= k_max) of ``exact`` of them.

    The sentences with exact counts are spread over the length quantiles. Also the number of raw edits a
    naive enumeration (duplicates kept) evaluates at distance 1: n(sigma - 1) + n + (n + 1) sigma.
    ``source`` only describes the sentences (see :func:`ag_news_strings`).
    """
    lengths = np.array([len(s) for s in seqs])
    n1 = [neighbour_count(len(s), sigma, runs(s)) for s in seqs]
    raw = [len(s) * (sigma - 1) + len(s) + (len(s) + 1) * sigma for s in seqs]
    order = np.argsort(lengths, kind="stable")
    picks = sorted({int(order[int(q)]) for q in np.linspace(0, len(seqs) - 1, min(exact, len(seqs)))})
    ball_exact, seconds = [], []
    for idx in progress_bar(picks, desc="exact |N_<=k| of AG-News sentences", unit="sentence"):
        start = time.perf_counter()
        hist = count_ball(seqs[idx], sigma, k_max)
        seconds.append(time.perf_counter() - start)
        ball_exact.append([float(v) for v in np.cumsum(np.asarray(hist, dtype=object))])
    return {"source": source, "sigma": sigma, "lengths": lengths.tolist(), "runs": [runs(s) for s in seqs],
            "n1": n1, "raw": raw, "exact_rows": picks, "exact_lengths": [int(lengths[i]) for i in picks],
            "exact_n1": [n1[i] for i in picks], "ball_exact": ball_exact, "k_max": k_max,
            "count_seconds": seconds}


def forward_throughput(sigma: int, n: int, batch: int, repeats: int = 1, seed: int = 0, device="cpu") -> dict:
    """Strings per second through a randomly initialised model of the paper's AG-News size (d 150, h 100, q 10).

    Brute-force verification needs one such forward pass per neighbour; the certificate needs one per
    sentence. Float32, no gradients, the best of ``repeats`` timed batches after one warm-up batch.
    """
    import torch

    from lionsnb.lipslev.model import build_model

    chars = tuple(chr(0x100 + i) for i in range(sigma))  # any sigma distinct characters
    model = build_model(Alphabet(chars), 4, seed=seed, **PAPER_MODEL).to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, sigma + 1, (batch, n), generator=gen).to(device)
    best = math.inf
    with torch.no_grad():
        model(ids)
        for _ in range(max(1, repeats)):
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(ids)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return {"strings_per_s": batch / best, "batch": batch, "n": n, "device": str(device)}


def ag_summary(ag: dict, strings_per_s: float) -> dict:
    """The numbers the notebook quotes about AG-News: lengths, |N_1|, exact |N_<=k| and brute-force cost.

    ``ball_k``/``ratio_k`` are medians over the sentences with exact counts (the ratio divides by
    sum_{d <= k} |N_1|^d / d!); ``seconds_k`` extrapolates the brute-force time for the median ball from
    the measured ``strings_per_s`` (one forward pass per string; the certificate needs one per sentence).
    """
    lengths, n1 = np.asarray(ag["lengths"]), np.asarray(ag["n1"])
    out = {"sentences": len(lengths), "sigma": ag["sigma"], "median_length": float(np.median(lengths)),
           "min_length": int(lengths.min()), "max_length": int(lengths.max()),
           "median_n1": float(np.median(n1)), "min_n1": int(n1.min()), "max_n1": int(n1.max()),
           "median_raw": float(np.median(ag["raw"])),
           "duplicate_share": float(np.median(1 - n1 / np.asarray(ag["raw"], dtype=float)))}
    sizes = np.asarray(ag["ball_exact"], dtype=float)
    for k in range(1, ag["k_max"] + 1):
        est = np.array([sum(estimate_exactly_k(v, d) for d in range(k + 1)) for v in ag["exact_n1"]])
        out[f"ball_{k}"] = float(np.median(sizes[:, k]))
        out[f"ratio_{k}"] = float(np.median(sizes[:, k] / est))
        out[f"seconds_{k}"] = out[f"ball_{k}"] / strings_per_s
    out["largest_count"] = float(sizes.max())
    return out


def draw_ag_news(fig, *, ag: dict) -> None:
    """|N_1| of every AG-News sentence against its length, and the exact ball sizes of a few against k."""
    ax1, ax2 = fig.subplots(1, 2)
    lengths, n1 = np.asarray(ag["lengths"]), np.asarray(ag["n1"])
    ax1.scatter(lengths, n1, s=6, alpha=0.5, label="|N_1| = (2n+1)(sigma-1)+1+runs")
    ax1.scatter(lengths, ag["raw"], s=6, alpha=0.3, label="raw edits (duplicates kept)")
    ax1.legend(fontsize=8)
    label(ax1, "encoded length n", "strings at distance 1", f"{len(lengths)} AG-News sentences, sigma = {ag['sigma']}")
    ks = np.arange(ag["k_max"] + 1)
    for length, sizes, n1_ in zip(ag["exact_lengths"], ag["ball_exact"], ag["exact_n1"]):
        line, = ax2.plot(ks, sizes, marker="o", lw=1, label=f"n = {length}")
        ax2.plot(ks[1:], [sum(estimate_exactly_k(n1_, d) for d in range(k + 1)) for k in ks[1:]], ls=":",
                 color=line.get_color())
    ax2.set_yscale("log")
    ax2.set_xticks(ks)
    if len(ag["exact_lengths"]) <= 8:
        ax2.legend(fontsize=7)
    label(ax2, "radius k", "|N_<=k| (exact; dotted: estimate)", "Forward passes brute force needs per sentence")


# ----------------------------------------------------------------------------- the tokenizer

#: characters a random raw edit may write: the alphabet's, upper case, and some the alphabet lacks
RAW_EXTRA = "ABCDEFGHIJKLMNOPQRSTUVWXYZ<>@%+[]{}|~`^\t\néü€–"


#: the official AG-News alphabet (56 characters, sorted), used when its JSON file is not there
AG_NEWS_CHARS = " !\"#$&'()*,-./0123456789:;=?\\_abcdefghijklmnopqrstuvwxyz"
#: example sentences for the tokenizer check when the AG-News file is not there (written for this notebook)
FALLBACK_TEXTS = (
    "Markets Rally as Tech Shares Climb; Investors Shrug Off Rate Worries (Reuters)",
    "Storm Delays Launch of Weather Satellite -- Officials Say a New Date Is Set for Friday",
    "Home Team Wins 3-1 After Late Goals; Coach Praises \"Patient\" Defence",
    "Chip Maker Reports Record Quarter, Cites Demand for Servers & Laptops",
    "Talks Resume Between Unions and Airline Over Pension Plan, Both Sides Confirm",
)


def tokenizer_data(count: int) -> tuple[Alphabet, list[str], str]:
    """(alphabet, raw texts, where they come from) for the tokenizer check: AG-News when present."""
    data = ag_news_strings(count)
    if data["texts"] is None:
        return Alphabet(tuple(AG_NEWS_CHARS)), list(FALLBACK_TEXTS), "built-in example sentences (AG-News not found)"
    return data["alphabet"], list(data["texts"]), data["source"]


def tokenizer_examples(alphabet: Alphabet, text: str) -> list[dict]:
    """A few hand-picked raw edits of ``text`` with their raw and encoded distances."""
    cases = []
    upper = next((j for j, ch in enumerate(text) if ch.isupper()), None)
    if upper is not None:
        cases.append(("lower-case one letter", text[:upper] + text[upper].lower() + text[upper + 1:]))
    outside = next((ch for ch in "é€~<@" if ch.lower() not in alphabet.char_to_id), None)
    if outside is not None:
        cases.append((f"insert {outside!r} (not in the alphabet)", text[:3] + outside + text[3:]))
        if len(text) > 2 and text[2].lower() in alphabet.char_to_id:
            cases.append((f"substitute position 2 by {outside!r}", text[:2] + outside + text[3:]))
    if len(text) > 4:
        new = "q" if text[4].lower() != "q" else "z"
        cases.append((f"substitute position 4 by {new!r}", text[:4] + new + text[5:]))
        cases.append(("delete position 1", text[:1] + text[2:]))
    return [{"edit": name, "raw": edited, "encoded": alphabet.decode(alphabet.encode(edited)),
             "raw_distance": levenshtein(text, edited),
             "encoded_distance": levenshtein(alphabet.encode(text), alphabet.encode(edited))}
            for name, edited in cases]


def raw_edit(text: str, rng: np.random.Generator, pool: str) -> str:
    """``text`` after one random raw edit (substitute, delete, insert) with characters from ``pool``."""
    kind = int(rng.integers(3)) if text else 2
    if kind == 0:
        j = int(rng.integers(len(text)))
        return text[:j] + pool[int(rng.integers(len(pool)))] + text[j + 1:]
    if kind == 1:
        j = int(rng.integers(len(text)))
        return text[:j] + text[j + 1:]
    j = int(rng.integers(len(text) + 1))
    return text[:j] + pool[int(rng.integers(len(pool)))] + text[j:]


def tokenizer_check(alphabet: Alphabet, texts: Sequence[str], edits: int, max_edits: int = 4, window: int = 40,
                    seed: int = 0) -> dict:
    """Encoded distance <= raw distance, on random raw edits of windows cut from ``texts``.

    Each case: a random window of a random text, 1..max_edits random raw edits with characters of the
    alphabet, upper case and characters outside the alphabet; the raw distance is measured with
    :func:`levenshtein` (it can be below the number of edits), and the encoded one on
    ``alphabet.encode`` of both. ``hist[(raw, encoded)]`` counts the pairs.
    """
    rng = np.random.default_rng(seed)
    pool = "".join(alphabet.chars) + RAW_EXTRA
    violations, hist, single_zero, single = 0, Counter(), 0, 0
    for _ in range(edits):
        text = texts[int(rng.integers(len(texts)))]
        start = int(rng.integers(max(1, len(text) - window + 1)))
        raw = text[start:start + window]
        count = int(rng.integers(1, max_edits + 1))
        edited = raw
        for _ in range(count):
            edited = raw_edit(edited, rng, pool)
        d_raw = levenshtein(raw, edited)
        d_enc = levenshtein(alphabet.encode(raw), alphabet.encode(edited))
        violations += d_enc > d_raw
        hist[(d_raw, d_enc)] += 1
        if count == 1:
            single += 1
            single_zero += d_enc == 0
    return {"edits_checked": edits, "violations": violations,
            "hist": {f"{a},{b}": v for (a, b), v in sorted(hist.items())},
            "invisible_single_edits": single_zero / max(single, 1), "single_edits": single}


def draw_tokenizer(fig, *, result: dict) -> None:
    """Counts of (raw distance, encoded distance) pairs; everything on or below the diagonal is allowed."""
    ax = fig.subplots()
    pairs = {tuple(int(v) for v in key.split(",")): c for key, c in result["hist"].items()}
    top = max(max(a, b) for a, b in pairs) + 1
    grid = np.zeros((top, top))
    for (a, b), c in pairs.items():
        grid[b, a] = c
    logs = np.log10(np.where(grid > 0, grid, np.nan))
    im = ax.imshow(logs, origin="lower", cmap="viridis")
    mid = np.nanmax(logs) / 2
    for (b, a), c in np.ndenumerate(grid):
        if c:
            ax.text(a, b, f"{int(c)}", ha="center", va="center", fontsize=8,
                    color="white" if logs[b, a] < mid else "black")
    ax.plot([-0.5, top - 0.5], [-0.5, top - 0.5], color="red", lw=1, ls="--", label="encoded = raw")
    ax.grid(False)
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(im, ax=ax, label="log10 count")
    label(ax, "raw distance d_Lev(s, s')", "encoded distance d_Lev(phi(s), phi(s'))",
          f"{result['edits_checked']} random raw edits: {result['violations']} above the diagonal")


# ----------------------------------------------------------------------------- ERP

def weighted_levenshtein(a: Sequence, b: Sequence, sub: float, indel: float) -> float:
    """Edit distance with substitution cost ``sub`` and insertion/deletion cost ``indel`` (an independent DP)."""
    prev = [j * indel for j in range(len(b) + 1)]
    for i, x in enumerate(a, 1):
        cur = [i * indel]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + indel, cur[j - 1] + indel, prev[j - 1] + (0.0 if x == y else sub)))
        prev = cur
    return float(prev[-1])


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of a longest common subsequence."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def erp_naive(a: np.ndarray, b: np.ndarray, p: float) -> float:
    """Def. 4.1 as written: the exponential recursion with the zero vector as gap (for tiny inputs only)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0:
        return float(sum(np.linalg.norm(r, ord=p) for r in b))
    if len(b) == 0:
        return float(sum(np.linalg.norm(r, ord=p) for r in a))
    return min(np.linalg.norm(a[0], ord=p) + erp_naive(a[1:], b, p),
               np.linalg.norm(b[0], ord=p) + erp_naive(a, b[1:], p),
               np.linalg.norm(a[0] - b[0], ord=p) + erp_naive(a[1:], b[1:], p))


def erp_checks(pairs: int, max_len: int, max_sigma: int, seed: int = 0, embed_dim: int = 3) -> dict:
    """ERP on one-hot and on embedded sequences, on random pairs of strings.

    * ``s4_max_abs_gap``: max |ERP_inf(onehot a, onehot b) - d_Lev(a, b)| (Lemma S4);
    * ``erp2_weighted_gap``: max |ERP_2 - weighted edit distance with substitution sqrt(2), indel 1|;
    * ``erp1_indel_gap``: max |ERP_1 - (|a| + |b| - 2 LCS)| (a substitution costs 2 = a deletion + an insertion);
    * ``erp2_over_lev`` min/max and the share of pairs with ERP_2 = sqrt(2) d_Lev;
    * ``naive_gap``: the DP against the recursion of Def. 4.1 on the first pairs of length <= 5;
    * ``padding_gap``: max |ERP(E a, E b) - ERP(E a + zero rows, E b)| for a random embedding E whose
      padding row is 0: padding is free;
    * ``embedding_ratio_max``: max ERP_p(E a, E b) / (M(E) d_Lev(a, b)) over p in {1, 2, inf}, where M(E)
      is the largest distance between two rows of E, the zero row included (<= 1 means each edit costs at
      most M(E)).
    """
    rng = np.random.default_rng(seed)
    s4 = w2 = w1 = naive = pad = 0.0
    ratio_max, ratios, lev_all, erp_all = 0.0, [], [], {1: [], 2: [], "inf": []}
    exact_sqrt2 = naive_checked = 0
    for t in range(pairs):
        sigma = int(rng.integers(1, max_sigma + 1))
        a = [int(c) for c in rng.integers(1, sigma + 1, size=int(rng.integers(0, max_len + 1)))]
        b = (random_edits(rng, a, sigma, int(rng.integers(1, 4))) if t % 2 else
             [int(c) for c in rng.integers(1, sigma + 1, size=int(rng.integers(0, max_len + 1)))])
        b = list(b)
        oa, ob = one_hot(a, sigma), one_hot(b, sigma)
        d = levenshtein(a, b)
        e_inf, e2, e1 = erp_distance(oa, ob, np.inf), erp_distance(oa, ob, 2), erp_distance(oa, ob, 1)
        s4 = max(s4, abs(e_inf - d))
        w2 = max(w2, abs(e2 - weighted_levenshtein(a, b, math.sqrt(2), 1.0)))
        w1 = max(w1, abs(e1 - (len(a) + len(b) - 2 * lcs_length(a, b))))
        lev_all.append(d)
        erp_all["inf"].append(e_inf)
        erp_all[2].append(e2)
        erp_all[1].append(e1)
        if d > 0:
            ratios.append(e2 / d)
            exact_sqrt2 += abs(e2 - math.sqrt(2) * d) < 1e-9
        if naive_checked < 40 and len(a) <= 5 and len(b) <= 5:
            naive = max(naive, max(abs(erp_distance(oa, ob, p) - erp_naive(oa, ob, p)) for p in (1, 2, np.inf)))
            naive_checked += 1
        # a random embedding with a zero padding row
        emb = np.vstack([np.zeros(embed_dim), rng.normal(size=(sigma, embed_dim))])
        ea, eb = emb[np.asarray(a, dtype=int)], emb[np.asarray(b, dtype=int)]
        padded = np.vstack([ea, np.zeros((int(rng.integers(1, 4)), embed_dim))])
        for p in (1.0, 2.0, np.inf):
            base = erp_distance(ea, eb, p)
            pad = max(pad, abs(erp_distance(padded, eb, p) - base))
            m_e = max(np.linalg.norm(emb[i] - emb[j], ord=p) for i in range(sigma + 1) for j in range(sigma + 1))
            if d > 0:
                ratio_max = max(ratio_max, base / (m_e * d))
    ratios = np.asarray(ratios) if ratios else np.ones(1)
    return {"pairs": pairs, "s4_max_abs_gap": s4, "erp2_weighted_gap": w2, "erp1_indel_gap": w1,
            "naive_gap": naive, "naive_checked": naive_checked, "padding_gap": pad,
            "embedding_ratio_max": ratio_max, "erp2_over_lev_min": float(ratios.min()),
            "erp2_over_lev_max": float(ratios.max()), "erp2_equals_sqrt2_lev": exact_sqrt2 / max(len(ratios), 1),
            "lev": lev_all, "erp": {str(k): v for k, v in erp_all.items()}}


def draw_erp(fig, *, result: dict) -> None:
    """ERP_p of one-hot sequences against d_Lev, for p = inf, 2, 1, with the lines y = x, sqrt(2) x, 2x."""
    axes = fig.subplots(1, 3, sharey=True)
    lev = np.asarray(result["lev"], float)
    jitter = 0.12 * (np.random.default_rng(0).random(len(lev)) - 0.5)
    top = lev.max() + 0.5
    for ax, (key, name) in zip(axes, (("inf", "p = inf"), ("2", "p = 2"), ("1", "p = 1"))):
        ax.scatter(lev + jitter, result["erp"][key], s=8, alpha=0.4)
        for slope, style in ((1, "--"), (math.sqrt(2), ":"), (2, "-.")):
            ax.plot([0, top], [0, slope * top], color="black", lw=0.8, ls=style,
                    label={1: "y = x", 2: "y = 2x"}.get(slope, "y = sqrt(2) x"))
        ax.legend(fontsize=7)
        label(ax, "d_Lev(a, b) (jittered)", "ERP_p(onehot a, onehot b)", f"ERP, {name}")


# ----------------------------------------------------------------------------- tables

def script_table(script: Sequence[tuple], source: str, target: str) -> Table:
    """The operations of one edit script, counted by kind, with the distance and what the script produces."""
    counts = script_counts(script)
    return table({**{f"{KIND_NAMES[k]} (cost {0 if k == 'keep' else 1})": v for k, v in counts.items()},
                  "edits (cost of the script)": counts["sub"] + counts["del"] + counts["ins"],
                  "d_Lev(SOURCE, TARGET)": levenshtein(source, target),
                  "the script applied to SOURCE": "".join(apply_script(source, script))},
                 title=f"One optimal edit script from {source!r} to {target!r}")


def checks_table(scripts: dict, axioms: dict) -> Table:
    """The DP/script checks and the metric axioms on random strings, as one table of counts."""
    rows = [
        {"check": "table corner = two-row DP, #edits = d_Lev, script gives b", "cases": scripts["pairs"],
         "violations": scripts["mismatches"]},
        {"check": "identity: d(a, b) = 0 exactly when a = b", "cases": axioms["triples"],
         "violations": axioms["identity_violations"]},
        {"check": "symmetry: d(a, b) = d(b, a)", "cases": axioms["triples"],
         "violations": axioms["symmetry_violations"]},
        {"check": "triangle: d(a, c) <= d(a, b) + d(b, c)", "cases": axioms["triples"],
         "violations": axioms["triangle_violations"]},
    ]
    return table(rows, title=f"Random pairs and triples (the triangle inequality was tight in "
                             f"{axioms['tight_fraction']:.0%} of the triples)")


def duplicates_table(seq: Sequence, symbols: Sequence) -> Table:
    """Per edit kind: the edits a naive enumeration makes and the distinct strings they give."""
    counts = brute_force_counts(seq, symbols)
    return table([{"edit kind": KIND_NAMES[kind], "edits": edits, "distinct strings": distinct}
                  for kind, (edits, distinct) in counts.items()],
                 title=f"Single edits of {''.join(map(str, seq))!r} over {{{', '.join(map(str, symbols))}}}")


def formula_table(formula: dict, max_len: int, max_sigma: int) -> Table:
    """The neighbour-count formula and the canonical enumeration against brute force, as counts."""
    rows = [{"check": "|dedup(all single edits)| = (2n+1)(sigma-1) + 1 + runs", "violations":
             formula["formula_mismatches"]},
            {"check": "duplicates in the canonical list", "violations": formula["canonical_duplicates"]},
            {"check": "canonical set differs from the brute-force set", "violations":
             formula["canonical_set_mismatches"]},
            {"check": "canonical neighbours not at distance 1 (first 50 strings)", "violations":
             formula["distance_violations"]}]
    return table(rows, title=f"{formula['strings_checked']} random strings (n <= {max_len}, sigma <= {max_sigma})")


def bfs_table(bfs: dict, last: int = 4) -> Table:
    """The last ``last`` strings of the BFS-vs-automaton check: counts per distance and times."""
    rows = [{"n": r["n"], "sigma": r["sigma"], "k": r["k"], "|N_d|, d = 0..k (enumeration)": r["bfs"],
             "|N_d| (automaton)": r["exact"], "enumeration s": r["bfs_s"], "automaton s": r["count_s"]}
            for r in bfs["records"][-last:]]
    return table(rows, title=f"{len(bfs['records'])} strings, {bfs['cases']} (string, k) counts: {bfs['mismatches']} "
                             f"mismatches; largest ball enumerated {bfs['largest_ball']:,} strings (last {last} shown)")


def slopes_table(slopes: dict[int, float], sigma: int) -> Table:
    """The log-log slopes of |N_<=k| against n, one row per k."""
    return table([{"k": k, "slope of log |N_<=k| vs log n": v} for k, v in slopes.items()],
                 title=f"Growth with the string length at sigma = {sigma} (large n)", digits=4)


def ag_table(summary: dict, speed: dict, k_max: int) -> Table:
    """What the notebook quotes about AG-News: lengths, |N_1|, the exact balls and the extrapolated brute force."""
    rows = [{"quantity": "sentences (sigma)", "value": f"{summary['sentences']} ({summary['sigma']} characters)"},
            {"quantity": "encoded length: median (min-max)",
             "value": f"{summary['median_length']:.0f} ({summary['min_length']}-{summary['max_length']})"},
            {"quantity": "|N_1|: median (min-max)",
             "value": f"{summary['median_n1']:,.0f} ({summary['min_n1']:,}-{summary['max_n1']:,})"},
            {"quantity": "raw single edits, duplicates kept: median",
             "value": f"{summary['median_raw']:,.0f} ({summary['duplicate_share']:.1%} duplicates)"},
            {"quantity": "forward passes of the paper-size model",
             "value": f"{speed['strings_per_s']:,.0f} strings/s on {speed['device']} (batch {speed['batch']}, "
                      f"length {speed['n']})"}]
    for k in range(1, k_max + 1):
        rows.append({"quantity": f"k = {k}: median exact |N_<=k| (exact / estimate)",
                     "value": f"{summary[f'ball_{k}']:.3g} ({summary[f'ratio_{k}']:.3f})"})
        rows.append({"quantity": f"k = {k}: brute force, extrapolated, per sentence",
                     "value": f"{summary[f'seconds_{k}']:.3g} s = {summary[f'seconds_{k}'] / 3600:.3g} h "
                              "(the certificate: one forward pass)"})
    return table(rows, title="AG-News sentences and their Levenshtein balls")


def tokenizer_table(alphabet: Alphabet, text: str) -> Table:
    """Hand-picked raw edits of ``text`` with their raw and encoded distances."""
    rows = tokenizer_examples(alphabet, text)
    return table([{"raw edit": r["edit"], "raw distance": r["raw_distance"], "encoded distance":
                   r["encoded_distance"], "encoded string": r["encoded"]} for r in rows],
                 title=f"Raw {text!r}, encoded {alphabet.decode(alphabet.encode(text))!r}")


def erp_table(erp: dict) -> Table:
    """The ERP statements measured on random pairs, one row each."""
    rows = [{"statement": "Lemma S4, p = inf: ERP = d_Lev", "max gap": erp["s4_max_abs_gap"]},
            {"statement": "p = 2: ERP = min(sqrt2 S + I + D), the weighted edit distance",
             "max gap": erp["erp2_weighted_gap"]},
            {"statement": "p = 1: ERP = |a| + |b| - 2 LCS(a, b), the indel distance", "max gap": erp["erp1_indel_gap"]},
            {"statement": f"the DP = the recursion of Def. 4.1 ({erp['naive_checked']} short pairs, p = 1, 2, inf)",
             "max gap": erp["naive_gap"]},
            {"statement": "random embedding with a zero pad row: appending padding changes ERP by",
             "max gap": erp["padding_gap"]}]
    return table(rows, title=f"{erp['pairs']} random pairs (length <= 8, sigma <= 5)")


def erp_ratio_table(erp: dict) -> Table:
    """How ERP at p = 2 compares with d_Lev, and the M(E) bound on a random embedding."""
    return table({"ERP_2 / d_Lev, min": erp["erp2_over_lev_min"], "ERP_2 / d_Lev, max": erp["erp2_over_lev_max"],
                  "share of pairs with ERP_2 = sqrt(2) d_Lev": erp["erp2_equals_sqrt2_lev"],
                  "max ERP_p(E a, E b) / (M(E) d_Lev(a, b)), p = 1, 2, inf": erp["embedding_ratio_max"]},
                 title="ERP against the Levenshtein distance")


# ----------------------------------------------------------------------------- exercises

def _string_pairs() -> list[tuple]:
    gen = np.random.default_rng(11)
    pairs = [("kitten", "sitting"), ("", "abc"), ("abc", ""), ("flaw", "lawn"), ("aaaa", "aa"), ("same", "same")]
    for _ in range(6):
        a = "".join(gen.choice(list("ab c"), size=int(gen.integers(0, 9))))
        b = "".join(gen.choice(list("ab c"), size=int(gen.integers(0, 9))))
        pairs.append((a, b))
    return pairs


def check_exercise_levenshtein(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: the Levenshtein DP on strings and lists, against :func:`levenshtein`."""
    return check_exercise("Levenshtein DP", attempt, levenshtein, _string_pairs(),
                          compare=lambda got, exp: int(got) == exp,
                          hint="D[i][0] = i, D[0][j] = j, and D[i][j] = min(D[i-1][j] + 1, D[i][j-1] + 1, "
                               "D[i-1][j-1] + (a[i-1] != b[j-1])).", ctx=ctx)


def _run_cases() -> list[tuple]:
    return [("",), ("a",), ("aaaa",), ("aab",), ("abab",), ("mississippi",), ((1, 1, 2, 2, 2, 1),), ("  x  ",)]


def check_exercise_runs(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: the number of runs, against :func:`runs`."""
    return check_exercise("count runs", attempt, runs, _run_cases(), compare=lambda got, exp: int(got) == exp,
                          hint="a new run starts at position 0 and wherever seq[j] != seq[j-1]; the empty "
                               "sequence has 0 runs.", ctx=ctx)


def brute_force_neighbour_count(seq: Sequence, sigma: int) -> int:
    """Distinct strings at distance exactly 1 of ``seq`` over an alphabet of ``sigma`` symbols.

    The alphabet is the symbols of ``seq`` plus new ones up to ``sigma`` (enumerate and deduplicate).
    """
    symbols: list = list(dict.fromkeys(seq))
    if len(symbols) > sigma:
        raise ValueError(f"{seq!r} uses {len(symbols)} distinct symbols, more than sigma = {sigma}")
    fresh = (object() for _ in iter(int, 1))  # symbols guaranteed to differ from everything in seq
    symbols += [next(fresh) for _ in range(sigma - len(symbols))]
    return len(set(all_single_edits(tuple(seq), symbols)))


def _neighbour_cases() -> list[tuple]:
    return [("", 3), ("a", 1), ("aab", 2), ("abba", 2), ("banana", 3), ((1, 1, 1, 2), 4), ((3, 1, 2, 2, 3), 5)]


def check_exercise_neighbour_count(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: the number of distinct strings at distance 1, against an enumeration with deduplication."""
    return check_exercise("unique neighbours at distance 1", attempt, brute_force_neighbour_count,
                          _neighbour_cases(), compare=lambda got, exp: int(got) == exp,
                          hint="substitutions n(sigma - 1), deletions one per run, insertions "
                               "(n + 1)(sigma - 1) + 1; the reference enumerates and deduplicates.", ctx=ctx)


#: model answers of the exercises without code (for teachers; `lionsnb answers lipslev_levenshtein` prints them)
MODEL_ANSWERS = {
    4: "abcd -> bcda: d_Lev = 2 (delete the leading a, insert an a at the end), against 4 substitutions position by "
       "position; the DP table's script goes down once at the start and right once at the end. On one-hot rows "
       "ERP at p = 2 prices a deletion and an insertion at 1 each and a substitution at sqrt(2), so it takes the "
       "same deletion + insertion: ERP_2 = 2 = d_Lev, below sqrt(2) d_Lev = 2.83. The sqrt(2) is only an upper "
       "bound: whenever an optimal script can avoid substitutions, ERP_2 equals d_Lev (p = 1 gives 2 as well, "
       "since 2 = |a| + |b| - 2 LCS = 4 + 4 - 2 * 3).",
}

__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "MAX_FIGURE_LEN", "show_source", "table", "figure", "label", "explore",
    "Alphabet", "levenshtein", "levenshtein_table", "edit_script", "neighbour_edits", "neighbours", "count_ball",
    "erp_distance", "one_hot", "runs", "apply_script", "format_alignment", "script_check", "metric_check",
    "duplicate_groups", "brute_force_counts", "formula_check", "bfs_vs_count", "growth_table", "growth_slopes",
    "ag_news_strings", "ag_news_neighbourhoods", "forward_throughput", "ag_summary", "tokenizer_data",
    "tokenizer_check", "erp_checks", "draw_table", "draw_formula", "draw_growth_overview", "draw_growth",
    "draw_ag_news", "draw_tokenizer", "draw_erp", "script_table", "checks_table", "duplicates_table",
    "formula_table", "bfs_table", "slopes_table", "ag_table", "tokenizer_table", "erp_table", "erp_ratio_table",
    "check_exercise_levenshtein", "check_exercise_runs", "check_exercise_neighbour_count",
]
