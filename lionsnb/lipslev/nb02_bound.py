"""Backs ``notebooks/lipslev/02_bound.ipynb``: the Lipschitz bound of the character CNN, layer by layer.

Abad Rocamora, Chrysos, Cevher, "Certified Robustness Under Bounded Levenshtein Distance", ICLR 2025
(arXiv 2501.13676), Thm 4.3 / Cor. 4.4 / Remark 4.5 / Cor. 4.6; official code LIONS-EPFL/LipsLev@81d7cda
(``lips.py``, ``models.py``). For the margin g_yt = f_y - f_t of the model E -> conv (full padding) -> ReLU
-> ... -> SUM pooling -> head C (no biases),

    |g_yt(P) - g_yt(Q)| <= ||c_y - c_t||_r  prod_i M(K_i)  M(E, P)  d_Lev(P, Q),

with M(E, P) = max_{i in chars(P) + pad, j in Gamma + pad} ||e_i - e_j||_p (M(E): i over everything) and
M(K) = sum over taps of ||K[:, :, j]||_{p->p}. The model and its constants live in the core module
:mod:`lionsnb.lipslev.model`; this module holds the notebook's helpers: one stage of the model at a time, each
constant with a demonstration of why it has its form, the exhaustive check of the bound on random tiny models (whole
Levenshtein balls), the looseness of the bound on the authors' checkpoint, and the counterexample to the layer-wise
ERP statement.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.display import Table, show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.lipslev.bruteforce import shortest_rows
from lionsnb.lipslev.certify import as_float64, certificate, logits_of_ids, pad_batch
from lionsnb.lipslev.data import NUMBERS_LETTERS_CHARS, load_ag_news, numbers_letters, official_checkpoint
from lionsnb.lipslev.levenshtein import Alphabet, apply_edit, ball, erp_distance, levenshtein, neighbour_edits
from lionsnb.lipslev.model import (
    NORMS,
    LipsLevCNN,
    build_model,
    conv_constant,
    dual,
    embedding_constant,
    head_constant,
    load_official_checkpoint,
    norm_name,
    norm_of,
    operator_norm,
    pairwise_distances,
)
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.widgets import explore

#: relative and absolute tolerance of a bound violation (float64 arithmetic)
RTOL, ATOL = 1e-9, 1e-9
#: histogram bins of the ratio |dg| / (L d) on [0, 1] (one more count collects the violations)
RATIO_BINS = np.linspace(0.0, 1.0, 41)

SPEC = MethodSpec(
    name="lipslev.nb02_bound",
    title="LipsLev 2: the Lipschitz bound of the character CNN, layer by layer, checked exhaustively",
    profiles={
        # n_models / tight_models / pad_free_models: random tiny models of Experiments 1-2 and of the padding-row
        # check; layerwise_trials: random settings per eps of the deep dive; official_sentences: sentences whose
        # distance-1 neighbourhoods are evaluated on the reference model (neighbour_sample: a random subset of each,
        # None = all); local_sentences: sentences of the local-vs-global comparison
        "smoke": dict(n_models=240, tight_models=300, pad_free_models=300, layerwise_trials=30,
                      official_sentences=1, neighbour_sample=1500, local_sentences=200),
        "teach": dict(n_models=3000, tight_models=2000, pad_free_models=2000, layerwise_trials=200,
                      official_sentences=2, neighbour_sample=None, local_sentences=1000),
        "full": dict(n_models=6000, tight_models=6000, pad_free_models=6000, layerwise_trials=1000,
                     official_sentences=5, neighbour_sample=None, local_sentences=7600),
    },
    knobs={
        "norm": Knob("2", "the norm p of the layer-by-layer demonstrations and the default histogram", str,
                     choices=tuple(NORMS)),
        "max_len": Knob(6, "longest random string P of the exhaustive check (characters)", int, low=1, high=7),
        "radius": Knob(2, "Levenshtein radius of the exhaustive balls around P", int, low=1, high=2),
        "kernel_size": Knob(4, "kernel size q of the substitution example", int, low=1, high=10),
    },
    datasets=(),
)
setup = setup_for(SPEC)


def _t(x) -> torch.Tensor:
    """A detached float64 CPU tensor of an array, tensor or parameter."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x, dtype=float))


# ----------------------------------------------------------------------------- models

def random_tiny_model(seed: int, *, p: float = 2.0, lipschitz: bool = False, sigma: int | None = None,
                      embed_dim: int | None = None, hidden: int | None = None, kernel_size: int | None = None,
                      layers: int | None = None, num_classes: int | None = None) -> LipsLevCNN:
    """A float64 LipsLev CNN with random sizes (alphabet 2-4, d, h 1-3, q 1-4, 1-2 layers, 2-3 classes).

    Sizes not given are drawn from ``seed``; the weights are PyTorch's default init under ``seed``.
    ``lipschitz=False`` keeps the raw weights (bound G of Thm 4.3), ``True`` divides every layer by its constant.
    """
    rng = np.random.default_rng(seed)
    draw = {"sigma": int(rng.integers(2, 5)), "embed_dim": int(rng.integers(1, 4)), "hidden": int(rng.integers(1, 4)),
            "kernel_size": int(rng.integers(1, 5)), "layers": int(rng.integers(1, 3)),
            "num_classes": int(rng.integers(2, 4))}
    given = dict(sigma=sigma, embed_dim=embed_dim, hidden=hidden, kernel_size=kernel_size, layers=layers,
                 num_classes=num_classes)
    size = {k: (v if v is not None else draw[k]) for k, v in given.items()}
    alphabet = Alphabet(tuple("abcdefgh"[:size["sigma"]]))
    model = build_model(alphabet, size["num_classes"], seed=seed, embed_dim=size["embed_dim"], hidden=size["hidden"],
                        kernel_size=size["kernel_size"], layers=size["layers"], p=p, lipschitz=lipschitz)
    return as_float64(model)


def demo_model(seed: int, *, p: float = 2.0, kernel_size: int = 4, lipschitz: bool = False) -> LipsLevCNN:
    """The float64 example of the stage-by-stage tour: alphabet 'abcdefgh', d = 4, h = 6, two classes."""
    model = build_model(Alphabet(tuple("abcdefgh")), 2, seed=seed, embed_dim=4, hidden=6, kernel_size=kernel_size,
                        p=p, lipschitz=lipschitz)
    return as_float64(model)


def describe_model(model: LipsLevCNN) -> dict:
    """Sizes and settings of a model as a plain dict."""
    return {"sigma": model.alphabet.size, "d": model.emb.weight.shape[1], "h": model.C.weight.shape[1],
            "q": model.kernel_size, "layers": model.layers, "classes": model.num_classes,
            "p": norm_name(model.p), "lipschitz": model.lipschitz}


def official_paths(folder: str | Path | None = None) -> tuple[Path, Path] | None:
    """(state dict, char_to_id JSON) of the authors' checkpoint, or None (and print why) when it or AG-News is
    absent (:func:`lionsnb.lipslev.data.official_checkpoint`)."""
    paths, reason = official_checkpoint(folder)
    if paths is None:
        print(f"The authors' checkpoint is not used ({reason}): the reference model is a RANDOM 1-Lipschitz model "
              "on synthetic strings.")
    return paths


def reference_model(paths: tuple[Path, Path] | None, *, seed: int = 0) -> LipsLevCNN:
    """The official checkpoint (p = 2, 1-Lipschitz) when ``paths`` is given, else a random 1-Lipschitz model
    (d 16, h 16, q 5) over the ``numbers_letters`` alphabet."""
    if paths is not None:
        return load_official_checkpoint(*paths, p=2.0, lipschitz=True)
    alphabet = Alphabet(tuple(NUMBERS_LETTERS_CHARS))
    return build_model(alphabet, 2, seed=seed, embed_dim=16, hidden=16, kernel_size=5, p=2.0, lipschitz=True).eval()


def reference_texts(paths, *, n: int, seed: int = 0):
    """AG-News test rows (texts, labels) for the official model, else ``numbers_letters`` strings."""
    if paths is not None:
        data = load_ag_news()
        return data.texts[:n], data.labels[:n], "AG-News test split"
    data = numbers_letters(n, min_len=10, max_len=40, seed=seed)
    return data.texts, data.labels, "numbers_letters (synthetic)"


# ----------------------------------------------------------------------------- the model, stage by stage

@torch.no_grad()
def stages(model: LipsLevCNN, ids: Sequence[int]) -> dict[str, np.ndarray]:
    """Every intermediate of one (unpadded) sentence, with the effective weights, in the model's dtype.

    ``embedding`` (n, d), then per conv layer ``conv{i}`` (pre-activation) and ``relu{i}`` (length + q - 1 each
    time, channels h), ``pooled`` (h,) = the SUM over positions, and ``logits`` (K,).
    """
    emb, kernels, head = model.effective_weights()
    x = emb[torch.as_tensor(list(ids), dtype=torch.long)].T[None]  # (1, d, n)
    out = {"embedding": x[0].T.numpy().copy()}
    for i, k in enumerate(kernels):
        pre = F.conv1d(x, k, padding=k.shape[-1] - 1)
        x = torch.relu(pre)
        out[f"conv{i}"], out[f"relu{i}"] = pre[0].T.numpy().copy(), x[0].T.numpy().copy()
    pooled = x.sum(-1)[0]
    out["pooled"], out["logits"] = pooled.numpy().copy(), (pooled @ head.T).numpy().copy()
    return out


@torch.no_grad()
def feature_maps(model: LipsLevCNN, ids: torch.Tensor) -> torch.Tensor:
    """The last ReLU output (B, h, T) of a padded batch, before pooling."""
    emb, kernels, _ = model.effective_weights()
    x = F.embedding(ids, emb, padding_idx=0).transpose(1, 2)
    for k in kernels:
        x = torch.relu(F.conv1d(x, k, padding=k.shape[-1] - 1))
    return x


@torch.no_grad()
def padding_differences(model: LipsLevCNN, seqs: Sequence[Sequence[int]], extras: Sequence[int] = (1, 5, 50)) -> dict:
    """max |logits(padded with e extra zeros) - logits(unpadded)| over sentences and e, for SUM pooling (the
    model) and, for contrast, MEAN pooling of the same feature maps."""
    head = model.effective_weights()[2]
    out = {"sum": 0.0, "mean": 0.0}
    for s in seqs:
        base_map = feature_maps(model, pad_batch([s]))
        base_sum, base_mean = base_map.sum(-1) @ head.T, base_map.mean(-1) @ head.T
        for e in extras:
            fmap = feature_maps(model, pad_batch([s], extra=e))
            out["sum"] = max(out["sum"], float((fmap.sum(-1) @ head.T - base_sum).abs().max()))
            out["mean"] = max(out["mean"], float((fmap.mean(-1) @ head.T - base_mean).abs().max()))
            # the model's own forward on the padded batch is the sum-pooled path
            out["sum"] = max(out["sum"], float((model(pad_batch([s], extra=e)) - base_sum).abs().max()))
    return out


# ----------------------------------------------------------------------------- embedding constant

def embedding_distances(weight: torch.Tensor, p: float) -> np.ndarray:
    """The matrix ||e_i - e_j||_p over all rows (row 0 = padding)."""
    weight = _t(weight)
    return pairwise_distances(weight, weight, p).numpy()


def argmax_pair(distances: np.ndarray) -> tuple[int, int]:
    """(i, j) with i < j of the largest entry of a symmetric distance matrix."""
    i, j = np.unravel_index(int(np.argmax(distances)), distances.shape)
    return (int(min(i, j)), int(max(i, j)))


def local_embedding_constant(weight, ids: Sequence[int], p: float, *, include_pad: bool = True) -> float:
    """M(E, P) = max_{i in chars(P) (+ pad), j in Gamma + pad} ||e_i - e_j||_p (Remark 4.5).

    ``include_pad=False`` is the WRONG variant that leaves the padding row out of the P side; it misses the
    cost ||e_c|| of inserting a character c and is only here to show that it breaks the bound.
    """
    weight = _t(weight)
    rows = sorted(set(int(i) for i in ids) | ({0} if include_pad else set()))
    if not rows:
        return 0.0
    with torch.no_grad():
        return float(pairwise_distances(weight[rows], weight, p).max())


def local_global_ratios(model: LipsLevCNN, texts: Sequence[str], prefix: int | None = None) -> np.ndarray:
    """M(E, P) / M(E) of the effective embedding for each text (or its first ``prefix`` encoded characters)."""
    emb = model.effective_weights()[0].detach().double()
    row_max = pairwise_distances(emb, emb, model.p).max(1).values.numpy()
    glob = row_max.max()
    out = []
    for t in texts:
        ids = model.alphabet.encode(t)[:prefix]
        out.append(row_max[[0, *set(ids)]].max() / glob)
    return np.asarray(out)


def margin_constants(model: LipsLevCNN, m_e: float) -> np.ndarray:
    """(K, K) matrix ||c_y - c_t||_r prod M(K) m_e of the effective weights, for a given embedding constant."""
    _, kernels, head = model.effective_weights()
    with torch.no_grad():
        m_k = float(torch.stack([conv_constant(k, model.p) for k in kernels]).prod())
        return pairwise_distances(head, head, dual(model.p)).numpy() * m_k * m_e


@torch.no_grad()
def constant_formula_error(model: LipsLevCNN, ids: Sequence[int] | None = None) -> float:
    """max |model.lipschitz_constants(ids) - the formula written out here| over class pairs.

    Raw weights: ||c_y - c_t||_r prod M(K) M(E, P). 1-Lipschitz weights: the same with E/M(E), K/M(K), C/M(C)
    collapses to (M(E, P) / M(E)) ||c_y - c_t||_r / M(C), all of the RAW weights.
    """
    raw_e, raw_c = _t(model.emb.weight), _t(model.C.weight)
    m_ep = local_embedding_constant(raw_e, ids, model.p) if ids is not None else float(
        embedding_constant(raw_e, model.p))
    pairs = head_pairs(raw_c, model.p)
    if model.lipschitz:
        expected = m_ep / float(embedding_constant(raw_e, model.p)) * pairs / float(head_constant(raw_c, model.p))
    else:
        m_k = np.prod([float(conv_constant(_t(c.weight), model.p)) for c in model.convs])
        expected = pairs * m_k * m_ep
    return float(np.abs(model.lipschitz_constants(ids).double().numpy() - expected).max())


# ----------------------------------------------------------------------------- conv constant

def tap_norms(weight: torch.Tensor, p: float) -> np.ndarray:
    """||K[:, :, j]||_{p->p} for each tap j of a Conv1d weight (h, d, q); their sum is M(K)."""
    return operator_norm(_t(weight).permute(2, 0, 1), p).numpy()


@torch.no_grad()
def substitution_windows(model: LipsLevCNN, seq: Sequence[int], position: int, char: int) -> dict:
    """What one substitution does to the first conv layer's pre-activations (effective weights).

    Returns the output positions t whose window changed, the per-position change (h, T), its p-norms, the
    prediction K_{tap} delta with tap = position - t + q - 1 (torch's conv1d is a cross-correlation with q - 1
    zeros padded on both sides), and the per-window bounds ||K_tap||_{p->p} ||delta||_p.
    """
    if not 0 <= position < len(seq):
        raise ValueError(f"position {position} is outside the sentence (length {len(seq)})")
    if char == seq[position]:
        raise ValueError("substitute a different character")
    emb, kernels, _ = model.effective_weights()
    k = kernels[0]
    q = k.shape[-1]
    new = list(seq)
    new[position] = char
    maps = []
    for s in (seq, new):
        x = emb[torch.as_tensor(list(s))].T[None]
        maps.append(F.conv1d(x, k, padding=q - 1)[0])
    change = (maps[1] - maps[0]).double()
    norms = torch.linalg.vector_norm(change, ord=model.p, dim=0).numpy()
    changed = np.flatnonzero(np.abs(change.numpy()).max(0) > 0).tolist()
    delta = (emb[char] - emb[seq[position]]).double()
    predicted = torch.zeros_like(change)
    for t in range(position, position + q):
        predicted[:, t] = k[:, :, position - t + q - 1].double() @ delta
    taps = tap_norms(k, model.p)
    delta_norm = float(torch.linalg.vector_norm(delta, ord=model.p))
    bounds = np.zeros(change.shape[1])
    for t in range(position, position + q):
        bounds[t] = taps[position - t + q - 1] * delta_norm
    return {"change": change.numpy(), "norms": norms, "changed": changed,
            "expected": list(range(position, position + q)),
            "prediction_error": float((change - predicted).abs().max()), "bounds": bounds, "delta_norm": delta_norm,
            "m_k": float(taps.sum()), "q": q, "length": len(seq)}


# ----------------------------------------------------------------------------- head constant

def random_head(seed: int = 0, classes: int = 4, hidden: int = 8) -> torch.Tensor:
    """A random float64 head C (classes x hidden), standard normal entries."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(classes, hidden, generator=gen, dtype=torch.float64)


def holder_direction(v, p: float) -> np.ndarray:
    """A unit vector u (||u||_p = 1) with v . u = ||v||_r, r the dual of p: Hoelder's inequality is attained."""
    v = np.asarray(v, dtype=float)
    if not np.any(v):
        return np.zeros_like(v)
    if p == 1.0:  # r = inf: all the mass on the largest |v_k|
        u = np.zeros_like(v)
        k = int(np.argmax(np.abs(v)))
        u[k] = np.sign(v[k])
        return u
    if math.isinf(p):  # r = 1: signs
        return np.sign(v)
    r = dual(p)
    u = np.sign(v) * np.abs(v) ** (r - 1)
    return u / np.linalg.norm(u, ord=p)


def head_pairs(head, p: float) -> np.ndarray:
    """The pairwise head constants ||c_y - c_t||_r as a (K, K) matrix."""
    head = _t(head)
    return pairwise_distances(head, head, dual(p)).numpy()


def holder_check(head, p: float) -> dict:
    """Per class pair y < t: the constant ||c_y - c_t||_r and the change of g_yt along the Hoelder direction of
    unit p-norm (equal to the constant: no smaller constant is valid for this layer).

    For p = 2 also the 'vector' route's constant sqrt(2) ||C||_2, from |df_y - df_t| <= sqrt(2) ||df||_2 <=
    sqrt(2) ||C||_2 ||dz||_2: always >= every pairwise constant, so the sqrt(2) only loosens the bound.
    """
    c = _t(head).numpy()
    pairs = head_pairs(c, p)
    vector = math.sqrt(2) * float(np.linalg.norm(c, ord=2)) if p == 2.0 else None
    rows = []
    for y in range(c.shape[0]):
        for t in range(y + 1, c.shape[0]):
            u = holder_direction(c[y] - c[t], p)
            rows.append({"y": y, "t": t, "pairwise": float(pairs[y, t]), "attained": float((c[y] - c[t]) @ u),
                         "unit_norm": float(np.linalg.norm(u, ord=p)), "vector": vector})
    return {"rows": rows, "max_gap": max(abs(r["pairwise"] - r["attained"]) for r in rows),
            "min_vector_over_pairwise": (min(vector / r["pairwise"] for r in rows) if vector is not None else None)}


# ----------------------------------------------------------------------------- exhaustive check of the bound

def _random_string(rng: np.random.Generator, sigma: int, max_len: int, min_len: int = 0) -> list[int]:
    n = int(rng.integers(min_len, max_len + 1))
    return [int(c) for c in rng.integers(1, sigma + 1, size=n)]


def ball_ratios(model: LipsLevCNN, seq: Sequence[int], radius: int) -> dict:
    """|g_yt(Q) - g_yt(P)| / (L_yt d_Lev(P, Q)) for every Q in the ball of ``radius`` (Q != P) and every class
    pair y < t, with the local and the global constant; full forward passes in the model's dtype.

    Returns per constant the ratios (N, pairs), the distances (N,), the violations (|dg| > L d (1 + RTOL) +
    ATOL) and the argmax neighbour.
    """
    symbols = list(range(1, model.alphabet.size + 1))
    dist = ball(seq, symbols, radius)
    strings = list(dist)
    logits = logits_of_ids(model, strings).double().numpy()
    d = np.array([dist[s] for s in strings], dtype=float)
    base = logits[strings.index(tuple(seq))]
    ys, ts = np.triu_indices(model.num_classes, 1)
    dg = np.abs((logits[:, ys] - logits[:, ts]) - (base[ys] - base[ts]))
    keep = d > 0
    out = {"distances": d[keep], "strings": [s for s, k in zip(strings, keep) if k]}
    with torch.no_grad():
        for name, ids in (("local", list(seq)), ("global", None)):
            lips = model.lipschitz_constants(ids).numpy()[ys, ts]
            bound = lips[None, :] * d[keep][:, None]
            ratio = np.divide(dg[keep], bound, out=np.zeros_like(bound), where=bound > 0)
            violating = dg[keep] > bound * (1 + RTOL) + ATOL
            out[name] = {"ratios": ratio, "violating": violating, "violations": int(violating.sum()),
                         "lipschitz": lips}
    return out


def _group(p: float, constant: str, distance: int) -> str:
    return f"p={norm_name(p)}|{constant}|d={distance}"


def soundness_sweep(n_models: int, *, seed: int = 0, max_len: int = 6, radius: int = 2, progress: bool = True) -> dict:
    """The exhaustive check on ``n_models`` random tiny models (float64), one random string P each.

    Model i uses p = (1, 2, inf)[i % 3] and alternates raw weights (bound G) and 1-Lipschitz weights
    (i // 3 % 2); sizes as in :func:`random_tiny_model`. Every Q with 1 <= d_Lev(P, Q) <= ``radius`` is
    evaluated with the full forward pass and compared with both the local and the global constant.
    Returns plain containers: ratio histograms per (p, constant, distance) on :data:`RATIO_BINS` (plus one
    overflow count), violation counts, maxima and one row per model.
    """
    if n_models < 1 or radius < 1 or max_len < 0:
        raise ValueError("need n_models >= 1, radius >= 1 and max_len >= 0")
    ps = (1.0, 2.0, math.inf)
    hist = {_group(p, c, k): [0] * len(RATIO_BINS) for p in ps for c in ("local", "global")
            for k in range(1, radius + 1)}
    group_max = {g: 0.0 for g in hist}
    rows, violations, neighbours_checked, pair_checks = [], 0, 0, 0
    start = time.perf_counter()
    for i in progress_bar(range(n_models), desc="random tiny models", unit="model", disable=not progress):
        p, lipschitz = ps[i % 3], bool((i // 3) % 2)
        model_seed = seed * 1_000_003 + i
        model = random_tiny_model(model_seed, p=p, lipschitz=lipschitz)
        rng = np.random.default_rng(model_seed + 17)
        seq = _random_string(rng, model.alphabet.size, max_len)
        res = ball_ratios(model, seq, radius)
        d = res["distances"]
        neighbours_checked += len(d)
        row = {**describe_model(model), "seed": model_seed, "n": len(seq), "neighbours": len(d)}
        for constant in ("local", "global"):
            r, bad = res[constant]["ratios"], res[constant]["violating"]
            violations += res[constant]["violations"]
            pair_checks += r.size
            row[f"max_{constant}"] = float(r.max()) if r.size else 0.0
            for k in range(1, radius + 1):
                sel, sel_bad = r[d == k].ravel(), bad[d == k].ravel()
                if not sel.size:
                    continue
                g = _group(p, constant, k)
                # ratios a rounding error above 1 (not violations) go to the last bin below 1
                counts = np.histogram(np.minimum(sel[~sel_bad], 1.0), bins=RATIO_BINS)[0]
                hist[g][:-1] = [a + int(b) for a, b in zip(hist[g][:-1], counts)]
                hist[g][-1] += int(sel_bad.sum())
                group_max[g] = max(group_max[g], float(sel.max()))
        rows.append(row)
    max_ratio = max(group_max.values())
    return {"hist": hist, "group_max": group_max, "rows": rows, "violations": violations,
            "models": n_models, "neighbours": neighbours_checked, "pair_checks": pair_checks,
            "max_ratio": max_ratio, "radius": radius, "max_len": max_len, "seconds": time.perf_counter() - start}


def tight_search(n_models: int, *, seed: int = 0, max_len: int = 6, progress: bool = True) -> dict:
    """Search for the bound's worst case on 1-D models (d = h = 1, one layer, two classes) at distance 1 with
    the global constant; q cycles over 1..4 and the weights alternate raw / 1-Lipschitz.

    Returns the largest |dg| / (L d) per q, the overall best with the model's settings, P and Q (so that it
    can be rebuilt with :func:`random_tiny_model`), and every model's max ratio.
    """
    best = {"ratio": -1.0}
    ratios, qs = [], []
    for i in progress_bar(range(n_models), desc="tight search", unit="model", disable=not progress):
        model_seed = seed * 1_000_003 + 500_000 + i
        kw = dict(embed_dim=1, hidden=1, kernel_size=1 + (i // 2) % 4, layers=1, num_classes=2, p=2.0,
                  lipschitz=bool(i % 2))
        model = random_tiny_model(model_seed, **kw)
        rng = np.random.default_rng(model_seed + 17)
        seq = _random_string(rng, model.alphabet.size, max_len)
        res = ball_ratios(model, seq, 1)
        r = res["global"]["ratios"].max(1)
        ratios.append(float(r.max()))
        qs.append(kw["kernel_size"])
        # ties (several models reach 1 up to rounding) go to the smallest q, then the first found
        key = (round(float(r.max()), 12), -kw["kernel_size"])
        if key > (round(best["ratio"], 12), -best.get("kwargs", {"kernel_size": 99})["kernel_size"]):
            k = int(np.argmax(r))
            best = {"ratio": float(r[k]), "seed": model_seed, "kwargs": kw, "sigma": model.alphabet.size,
                    "P": list(seq), "Q": list(res["strings"][k])}
    per_q = {q: max(r for r, qq in zip(ratios, qs) if qq == q) for q in sorted(set(qs))}
    return {"best": best, "ratios": ratios, "q": qs, "max_per_q": per_q, "models": n_models}


@torch.no_grad()
def tight_details(best: dict) -> dict:
    """Rebuild the tight model of :func:`tight_search` and return its effective weights, P, Q, the margins,
    the constant L and the M(E) pair, to read off why the ratio is 1."""
    model = random_tiny_model(best["seed"], **best["kwargs"])
    emb, kernels, head = model.effective_weights()
    logits = logits_of_ids(model, [best["P"], best["Q"]]).double().numpy()
    g = logits[:, 0] - logits[:, 1]
    dist = embedding_distances(emb, model.p)
    names = ["pad"] + list(model.alphabet.chars)
    i, j = argmax_pair(dist)
    lips = float(model.lipschitz_constants(None)[0, 1])
    d = levenshtein(best["P"], best["Q"])
    return {"P": model.alphabet.decode(best["P"]), "Q": model.alphabet.decode(best["Q"]), "distance": d,
            "embedding": {n: emb[k].tolist() for k, n in enumerate(names)}, "kernel": kernels[0].flatten().tolist(),
            "head": head.flatten().tolist(), "g_P": float(g[0]), "g_Q": float(g[1]), "L": lips,
            "ratio": abs(g[1] - g[0]) / (lips * d), "pair": (names[i], names[j]), "M(E)": float(dist[i, j]),
            "lipschitz": model.lipschitz, "q": model.kernel_size}


def pad_free_search(n_models: int, *, seed: int = 0, max_len: int = 6, progress: bool = True) -> dict:
    """Distance-1 check of the local bound with the correct M(E, P) and with the WRONG variant that leaves the
    padding row out of the P side. Counts violations of each and the kinds of edits that violate the wrong one.

    The models have d = h = 1 and one layer (q, alphabet, classes random) and P has 1 to min(3, ``max_len``)
    characters: there the bound is nearly attained and the missing insertion cost ||e_c|| is often larger than
    every distance from a character of P, so the wrong constant is caught quickly."""
    ps = (1.0, 2.0, math.inf)
    out = {"violations_correct": 0, "violations_wrong": 0, "wrong_by_kind": {"sub": 0, "del": 0, "ins": 0},
           "models_wrong": 0, "models": n_models, "example": None}
    for i in progress_bar(range(n_models), desc="pad row on the P side?", unit="model", disable=not progress):
        model_seed = seed * 1_000_003 + 900_000 + i
        model = random_tiny_model(model_seed, p=ps[i % 3], lipschitz=bool((i // 3) % 2), embed_dim=1, hidden=1,
                                  layers=1)
        rng = np.random.default_rng(model_seed + 17)
        seq = _random_string(rng, model.alphabet.size, max(1, min(3, max_len)), min_len=1)
        edits = neighbour_edits(seq, list(range(1, model.alphabet.size + 1)))
        strings = [seq] + [list(apply_edit(seq, e)) for e in edits]
        logits = logits_of_ids(model, strings).double().numpy()
        ys, ts = np.triu_indices(model.num_classes, 1)
        g = logits[:, ys] - logits[:, ts]
        dg = np.abs(g[1:] - g[0])
        emb = model.effective_weights()[0].detach()
        found = False
        for name, include_pad in (("correct", True), ("wrong", False)):
            m_e = local_embedding_constant(emb, seq, model.p, include_pad=include_pad)
            lips = margin_constants(model, m_e)[ys, ts]
            bad = dg > lips[None, :] * (1 + RTOL) + ATOL
            out[f"violations_{name}"] += int(bad.sum())
            if name == "wrong" and bad.any():
                found = True
                for e_idx in np.flatnonzero(bad.any(1)):
                    out["wrong_by_kind"][edits[e_idx][0]] += 1
                if out["example"] is None:
                    e_idx = int(np.argmax((dg / lips[None, :]).max(1)))
                    out["example"] = {"seed": model_seed, "p": model.p, "lipschitz": model.lipschitz,
                                      "P": list(seq), "edit": list(edits[e_idx]), "dg": float(dg[e_idx].max()),
                                      "wrong_constant": float(lips.max()),
                                      "correct_constant": float(margin_constants(
                                          model, local_embedding_constant(emb, seq, model.p))[ys, ts].max())}
        out["models_wrong"] += found
    return out


# ----------------------------------------------------------------------------- the official checkpoint at k = 1

def looseness_runs(model: LipsLevCNN, texts: Sequence[str], labels: Sequence[int], *, count: int,
                   sample: int | None = None, seed: int = 0) -> list[dict]:
    """:func:`neighbourhood_looseness` on the ``count`` shortest correctly classified sentences of ``texts``
    (certified ones first, :func:`lionsnb.lipslev.bruteforce.shortest_rows`), with their row, text and radius."""
    cert = certificate(model, texts, labels)
    certified, uncertified = shortest_rows(cert.radii, cert.lengths, count, 0, top_up=True)
    out = []
    for k, row in enumerate(certified + uncertified):
        res = neighbourhood_looseness(model, texts[row], int(labels[row]), sample=sample, seed=seed + k)
        out.append({**res, "row": row, "text": texts[row], "label": int(labels[row])})
    return out


def neighbourhood_looseness(model: LipsLevCNN, text: str, label: int, *, sample: int | None = None,
                            seed: int = 0, batch_size: int = 256) -> dict:
    """max over the exact distance-1 neighbourhood of |g_yt(Q) - g_yt(P)|, against L_yt(P), for each t != y.

    The neighbours are the canonical unique strings at distance exactly 1 (``neighbour_edits``); ``sample``
    evaluates a random subset of that many instead (then the maximum is a lower bound of the true one).
    Logits in the model's dtype (float32 for the checkpoint), L from the float64 certificate.
    """
    seq = model.alphabet.encode(text)
    edits = neighbour_edits(seq, list(range(1, model.alphabet.size + 1)))
    total = len(edits)
    if sample is not None and sample < total:
        pick = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
        edits = [edits[i] for i in pick]
    start = time.perf_counter()
    strings = [seq] + [list(apply_edit(seq, e)) for e in edits]
    logits = logits_of_ids(model, strings, batch_size=batch_size).double().numpy()
    seconds = time.perf_counter() - start
    cert = certificate(model, [text], [label])
    others = [t for t in range(model.num_classes) if t != label]
    g = logits[:, [label]] - logits[:, others]
    dg = np.abs(g[1:] - g[0])
    lips = cert.lipschitz[0, others]
    per_neighbour = (dg / lips[None, :]).max(1)
    return {"n": len(seq), "neighbours": len(edits), "total": total, "sampled": len(edits) < total,
            "margins": cert.margins[0, others].tolist(), "lipschitz": lips.tolist(),
            "max_dg": dg.max(0).tolist(), "ratio": float(per_neighbour.max()), "per_neighbour": per_neighbour,
            "min_neighbour_margin": float(g[1:].min()), "radius": int(cert.radii[0]), "seconds": seconds}


# ----------------------------------------------------------------------------- deep dive: layer-wise ERP

def layerwise_counterexample(seed: int, eps: float, *, n: int = 5, d: int = 2, h: int = 2, q: int = 3,
                             p: float = 2.0) -> dict:
    """Insert a vector of norm ``eps`` into a random real sequence A (n x d) and compare the ERP distances of
    A, B and of their full convolutions.

    ``erp_ratio`` = d_ERP(conv A, conv B) / (M(K) d_ERP(A, B)), which the layer-wise statement claims <= 1.
    ``end_to_end_ratio`` = ||z(B) - z(A)||_p / (M(K) M) for the sum-pooled ReLU features z, with M the largest
    p-distance among {0, rows of A, the inserted vector}: the end-to-end bound with the rows as the embeddings
    of a virtual alphabet (one insertion: d_Lev = 1).
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    kernel = torch.as_tensor(rng.normal(size=(h, d, q)))
    u = rng.normal(size=d)
    v = eps * u / np.linalg.norm(u, ord=p)
    j = int(rng.integers(1, n))
    b = np.vstack([a[:j], v[None], a[j:]])

    def conv(x):
        return F.conv1d(torch.as_tensor(x).T[None], kernel, padding=q - 1)[0].T

    ca, cb = conv(a), conv(b)
    m_k = float(conv_constant(kernel, p))
    erp_in, erp_out = erp_distance(a, b, p), erp_distance(ca.numpy(), cb.numpy(), p)
    z_change = float(torch.linalg.vector_norm(torch.relu(cb).sum(0) - torch.relu(ca).sum(0), ord=p))
    rows = np.vstack([np.zeros((1, d)), a, v[None]])
    m_virtual = float(np.max([np.linalg.norm(x - y, ord=p) for x in rows for y in rows]))
    return {"eps": eps, "position": j, "erp_in": erp_in, "erp_out": erp_out, "m_k": m_k,
            "erp_ratio": erp_out / (m_k * erp_in), "z_change": z_change, "m_virtual": m_virtual,
            "end_to_end_ratio": z_change / (m_k * m_virtual)}


def layerwise_search(trials: int, *, seed: int = 0, eps_values: Sequence[float] = (1e-1, 1e-2, 1e-3),
                     progress: bool = True) -> dict:
    """:func:`layerwise_counterexample` on ``trials`` random settings per eps (p cycling over 1, 2, inf)."""
    ps = (1.0, 2.0, math.inf)
    out = {"eps": list(eps_values), "erp_ratio": [], "end_to_end_ratio": [], "best": None}
    for e in progress_bar(eps_values, desc="layer-wise ERP", unit="eps", disable=not progress):
        erp, e2e = [], []
        for i in range(trials):
            rng = np.random.default_rng(seed * 7919 + i)
            size = dict(n=int(rng.integers(2, 7)), d=int(rng.integers(1, 4)), h=int(rng.integers(1, 4)),
                        q=int(rng.integers(2, 5)), p=ps[i % 3])
            res = layerwise_counterexample(seed * 7919 + i, e, **size)
            erp.append(res["erp_ratio"])
            e2e.append(res["end_to_end_ratio"])
            if out["best"] is None or res["erp_ratio"] > out["best"]["erp_ratio"]:
                out["best"] = {**res, **size, "seed": seed * 7919 + i}
        out["erp_ratio"].append(erp)
        out["end_to_end_ratio"].append(e2e)
    return out


# ----------------------------------------------------------------------------- figures

def _char_label(c: str) -> str:
    """A tick label for one character: the space as an open box, the others as they are."""
    return "␣" if c == " " else c


def display_order(alphabet: Alphabet) -> tuple[list[int], list[int]]:
    """Row indices (pad first) in reading order for figures: the pad row, letters a-z, digits, then the space and
    the other characters, each group sorted; and the positions where a new group starts."""
    def group(c: str) -> int:
        return 0 if c.isalpha() else 1 if c.isdigit() else 2

    chars = sorted(range(alphabet.size), key=lambda i: (group(alphabet.chars[i]), alphabet.chars[i]))
    order = [0] + [i + 1 for i in chars]
    starts = [k for k in range(1, len(order)) if k == 1 or
              group(alphabet.chars[order[k] - 1]) != group(alphabet.chars[order[k - 1] - 1])]
    return order, starts


def draw_embedding_heatmap(fig, *, distances: np.ndarray, alphabet: Alphabet, p: float, title: str = "") -> None:
    """||e_i - e_j||_p over all rows with the argmax pair, i.e. M(E), circled.

    Rows and columns in reading order (:func:`display_order`: pad, letters, digits, the rest), each labelled with its
    character on all four edges, with white lines between the groups, so that a 57-row alphabet stays readable.
    """
    order, starts = display_order(alphabet)
    shown = distances[np.ix_(order, order)]
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="magma", origin="upper", interpolation="nearest")
    ax.grid(False)
    names = ["pad"] + [_char_label(c) for c in alphabet.chars]
    labels = [names[i] for i in order]
    size = 10 if len(labels) <= 30 else 8.5
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, fontsize=size, fontfamily="monospace")
    ax.set_yticks(ticks, labels, fontsize=size, fontfamily="monospace")
    ax.tick_params(top=True, labeltop=True, right=True, labelright=True, length=2, pad=1)
    for tick in ax.get_xticklabels(which="both"):
        if tick.get_text() == "pad":  # the only label wider than one character: upright, so it does not overlap
            tick.set_rotation(90)
    for k in starts:
        ax.axhline(k - 0.5, color="white", lw=1.2)
        ax.axvline(k - 0.5, color="white", lw=1.2)
    i, j = argmax_pair(distances)
    a, b = order.index(i), order.index(j)
    for y, x in ((a, b), (b, a)):
        ax.plot(x, y, marker="o", markersize=11, markerfacecolor="none", markeredgecolor="cyan", markeredgewidth=2)
    fig.colorbar(im, ax=ax, label=f"||e_i - e_j||_{norm_name(p)}", shrink=0.8, pad=0.06)
    label(ax, "character j (column)", "character i (row)",
          title or f"M(E) = {distances[i, j]:.3g} at ({names[i]!r}, {names[j]!r}), circled")


def row_max_ratios(model: LipsLevCNN) -> np.ndarray:
    """max_j ||e_i - e_j||_p / M(E) for every row i (pad first) of the effective embedding: M(E, P) / M(E) is
    the largest of these over the characters of P and the pad."""
    emb = _t(model.effective_weights()[0])
    row_max = pairwise_distances(emb, emb, model.p).max(1).values.numpy()
    return row_max / row_max.max()


def draw_local_global(fig, *, row_ratio: np.ndarray, alphabet: Alphabet, full: np.ndarray, prefix: np.ndarray,
                      prefix_len: int, source: str) -> None:
    """Left: each row's farthest distance relative to M(E), sorted; right: M(E, P) / M(E) for whole sentences
    and for their first ``prefix_len`` characters."""
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    names = np.array(["pad"] + [_char_label(c) for c in alphabet.chars])
    order = np.argsort(row_ratio)
    ax1.bar(range(len(order)), row_ratio[order],
            color=["tab:orange" if n == "pad" else "tab:blue" for n in names[order]])
    ax1.set_xticks(range(len(order)), names[order], fontsize=7.5 if len(order) > 30 else 9, fontfamily="monospace")
    ax1.tick_params(axis="x", length=2, pad=1)
    for tick in ax1.get_xticklabels():
        if tick.get_text() == "pad":  # upright, so that it does not run into its neighbours
            tick.set_rotation(90)
    ax1.set_ylim(max(0.0, row_ratio.min() - 0.05), 1.005)
    label(ax1, "row i (sorted; the pad row in orange)", "max_j ||e_i - e_j|| / M(E)", "How far each row reaches")
    gap_full, gap_prefix = 1.0 - full, 1.0 - prefix
    hi = max(gap_full.max(), gap_prefix.max(), 1e-12)
    bins = np.linspace(0.0, hi * 1.05, 30)
    ax2.hist(gap_full, bins=bins, alpha=0.7, label=f"whole sentences ({np.mean(gap_full <= 1e-12):.0%} at 0)")
    ax2.hist(gap_prefix, bins=bins, alpha=0.7,
             label=f"first {prefix_len} characters ({np.mean(gap_prefix <= 1e-12):.0%} at 0)")
    ax2.legend(fontsize=8)
    label(ax2, "gain of the local constant: 1 - M(E, P) / M(E)", "sentences", f"Local vs global ({source})")


def draw_substitution(fig, *, windows: dict, position: int) -> None:
    """Left: |change| of the conv pre-activations (channels x output positions); right: per-window norm of the
    change against ||K_tap|| ||delta|| and the window range position..position+q-1."""
    ax1, ax2 = fig.subplots(1, 2)
    change = np.abs(windows["change"])
    im = ax1.imshow(change, aspect="auto", cmap="viridis", origin="lower")
    ax1.grid(False)
    fig.colorbar(im, ax=ax1, label="|change|")
    label(ax1, "conv output position t", "channel", f"substitution at input position {position}")
    t = np.arange(change.shape[1])
    ax2.bar(t, windows["norms"], label="||change at t||_p", color="tab:blue")
    q = windows["q"]
    inside = (t >= position) & (t < position + q)
    ax2.plot(t[inside], windows["bounds"][inside], "r_", markersize=18, mew=2,
             label="||K_tap||_(p->p) ||delta||_p")
    ax2.axvspan(position - 0.5, position + q - 0.5, color="orange", alpha=0.15,
                label=f"t = {position}..{position + q - 1}")
    ax2.legend(fontsize=8)
    bound = windows["m_k"] * windows["delta_norm"]
    label(ax2, "conv output position t", "norm of the change",
          f"sum of changes {windows['norms'].sum():.3g} <= M(K) ||delta|| = {bound:.3g}")


def draw_ratio_hist(ax, sweep: dict, groups: Sequence[str], title: str) -> None:
    counts = np.sum([np.asarray(sweep["hist"][g]) for g in groups], axis=0)
    centers = (RATIO_BINS[:-1] + RATIO_BINS[1:]) / 2
    width = RATIO_BINS[1] - RATIO_BINS[0]
    ax.bar(centers, counts[:-1], width=width, color="tab:blue", label="ratio in [0, 1]")
    ax.bar([1.0 + width], [counts[-1]], width=width, color="tab:red", label=f"violations (> 1): {counts[-1]}")
    ax.set_yscale("log")
    ax.axvline(1.0, color="black", ls="--", lw=1)
    top = max(float(sweep["group_max"][g]) for g in groups)
    ax.legend(fontsize=8, title=f"max {top:.6f}", title_fontsize=8)
    label(ax, "|g(P) - g(Q)| / (L d_Lev(P, Q))", "(neighbour, class pair) checks", title)


def _groups(sweep: dict, p: str | None = None, constant: str | None = None, distance: int | None = None) -> list[str]:
    out = []
    for g in sweep["hist"]:
        gp, gc, gd = g.split("|")
        if (p is None or gp == f"p={p}") and (constant is None or gc == constant) and \
                (distance is None or gd == f"d={distance}"):
            out.append(g)
    return out


def draw_sweep_overview(fig, *, sweep: dict) -> None:
    """Ratio histograms by distance (global constant), and per-model max ratio against d * h."""
    radius = int(sweep["radius"])
    axes = fig.subplots(1, radius + 1)
    for k in range(1, radius + 1):
        draw_ratio_hist(axes[k - 1], sweep, _groups(sweep, constant="global", distance=k),
                        f"distance {k}, global M(E), all p")
    ax = axes[-1]
    rows = sweep["rows"]
    dh = np.array([r["d"] * r["h"] for r in rows]) + np.random.default_rng(0).uniform(-0.2, 0.2, len(rows))
    mx = np.array([r["max_global"] for r in rows])
    lip = np.array([bool(r["lipschitz"]) for r in rows])
    ax.scatter(dh[~lip], mx[~lip], s=6, alpha=0.5, label="raw weights (G)")
    ax.scatter(dh[lip], mx[lip], s=6, alpha=0.5, label="1-Lipschitz (L)")
    ax.axhline(1.0, color="black", ls="--", lw=1)
    ax.legend(fontsize=8)
    label(ax, "d x h (jittered)", "max ratio over the ball", "Worst neighbour per model")


def draw_ratio_explorer(fig, *, sweep: dict, p: str, distance: int, constant: str) -> None:
    """The widget's view: one histogram for a norm p, a distance and a constant."""
    ax = fig.subplots()
    draw_ratio_hist(ax, sweep, _groups(sweep, p=p, constant=constant, distance=distance),
                    f"p = {p}, distance {distance}, {constant} M(E)")


def draw_looseness(fig, *, results: Sequence[dict]) -> None:
    """Histogram of max_t |dg_yt| / L_yt over each sentence's distance-1 neighbours."""
    ax = fig.subplots()
    for k, res in enumerate(results):
        vals = np.asarray(res["per_neighbour"])
        ax.hist(vals, bins=50, alpha=0.6,
                label=f"sentence {k + 1}: n = {res['n']}, {res['neighbours']} neighbours, max {res['ratio']:.3f}")
    ax.axvline(1.0, color="black", ls="--", lw=1, label="the bound (ratio 1)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    label(ax, "max_t |g_yt(Q) - g_yt(P)| / L_yt(P)", "neighbours Q at distance 1",
          "How much of the bound is used at k = 1")


def draw_layerwise(fig, *, search: dict) -> None:
    """Max and median ratio per eps: layer-wise ERP ratio (grows like 1/eps) vs the end-to-end ratio (<= 1)."""
    ax = fig.subplots()
    eps = np.asarray(search["eps"])
    erp = np.asarray(search["erp_ratio"])
    e2e = np.asarray(search["end_to_end_ratio"])
    ax.loglog(eps, erp.max(1), "o-", label="layer-wise: d_ERP(conv A, conv B) / (M(K) d_ERP(A, B)), max")
    ax.loglog(eps, np.median(erp, 1), "o--", label="layer-wise, median")
    ax.loglog(eps, e2e.max(1), "s-", label="end-to-end: ||dz|| / (M(K) M), max")
    ax.axhline(1.0, color="black", ls="--", lw=1)
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    label(ax, "norm eps of the inserted vector", "ratio (1 = the claimed bound)", "Inserting a near-zero vector")


# ----------------------------------------------------------------------------- tables

#: float64 machine epsilon: the spacing of floats near 1 (ratios a few of these above 1 are rounding)
FLOAT64_EPS = float(np.finfo(np.float64).eps)


def model_table(model: LipsLevCNN, what: str) -> Table:
    """The sizes and settings of a model, one row."""
    return table([{"model": what, **describe_model(model)}], title="Reference model")


def stages_table(stages_: dict[str, np.ndarray], logits: np.ndarray) -> Table:
    """The shape of every stage of one sentence, and how far the stage-by-stage logits are from ``model.forward``."""
    rows = [{"stage": name, "shape": "x".join(str(v) for v in value.shape) or "scalar"}
            for name, value in stages_.items()]
    gap = float(np.abs(stages_["logits"] - logits).max())
    return table(rows, title=f"Stages of one sentence (max |stage-by-stage logits - model.forward| = {gap:.1e})")


def padding_table(**results: dict) -> Table:
    """Largest logit change when zeros are appended, for sum pooling (the model) and mean pooling, per model."""
    return table([{"model": name, "sum pooling (the model)": r["sum"], "mean pooling (contrast)": r["mean"]}
                  for name, r in results.items()], title="max |logit change| when padding is appended (float64)")


def embedding_table(distances: np.ndarray, alphabet: Alphabet, p: float, pad_is_zero: bool) -> Table:
    """M(E), the pair attaining it, and the largest character norm (the distance to the pad row)."""
    names = ["pad"] + [_char_label(c) for c in alphabet.chars]
    i, j = argmax_pair(distances)
    return table({f"M(E), p = {norm_name(p)}": float(distances[i, j]), "attained by": f"{names[i]!r}, {names[j]!r}",
                  "largest ||e_i|| (distance to the pad row)": float(distances[0].max()),
                  "padding row all zero": pad_is_zero}, title="The embedding constant of the reference model")


def local_global_table(row_ratio: np.ndarray, full: np.ndarray, prefix: np.ndarray, prefix_len: int) -> Table:
    """How much the local constant M(E, P) gains over M(E): per row, whole sentences, sentence prefixes."""
    rows = [{"set": "rows: max_j ||e_i - e_j|| / M(E)", "min": float(row_ratio.min()),
             "median": float(np.median(row_ratio)), "share equal to 1": float(np.mean(row_ratio >= 1 - 1e-12))},
            {"set": "whole sentences: M(E, P) / M(E)", "min": float(full.min()), "median": float(np.median(full)),
             "share equal to 1": float(np.mean(full >= 1 - 1e-12))},
            {"set": f"first {prefix_len} characters: M(E, P) / M(E)", "min": float(prefix.min()),
             "median": float(np.median(prefix)), "share equal to 1": float(np.mean(prefix >= 1 - 1e-12))}]
    return table(rows, title="Local against global embedding constant", digits=6)


def pad_free_table(result: dict) -> Table:
    """Violations of the correct local constant and of the variant without the pad row, by edit kind."""
    kinds = result["wrong_by_kind"]
    rows = [{"constant": "correct M(E, P) (pad row on the P side)",
             "violated (neighbour, class pair) checks": result["violations_correct"],
             "violating substitutions": 0 if not result["violations_correct"] else None,
             "violating deletions": 0 if not result["violations_correct"] else None,
             "violating insertions": 0 if not result["violations_correct"] else None},
            {"constant": "pad row left out of the P side",
             "violated (neighbour, class pair) checks": result["violations_wrong"],
             "violating substitutions": kinds["sub"], "violating deletions": kinds["del"],
             "violating insertions": kinds["ins"]}]
    return table(rows, title=f"{result['models']} one-channel models, every neighbour at distance 1 "
                             f"(the wrong constant fails in {result['models_wrong']} models)")


def pad_free_example(result: dict) -> str:
    """One neighbour that breaks the constant without the pad row, in words ('' when none was found)."""
    ex = result["example"]
    if ex is None:
        return ""
    kind, pos, char = ex["edit"]
    letters = "abcdefgh"
    return (f"example: P = {''.join(letters[c - 1] for c in ex['P'])!r}, {kind} of {letters[int(char) - 1]!r} at "
            f"position {int(pos)}: |dg| = {ex['dg']:.4f} > wrong constant {ex['wrong_constant']:.4f} "
            f"(correct constant {ex['correct_constant']:.4f})")


def substitution_table(windows: dict, taps: np.ndarray, p: float) -> Table:
    """What one substitution does to the conv pre-activations, against the prediction of the text."""
    return table({"tap norms ||K_j||_(p->p)": [round(float(v), 3) for v in taps],
                  f"M(K), p = {norm_name(p)}": windows["m_k"],
                  "conv outputs that changed": windows["changed"],
                  f"expected: t = j .. j + q - 1 (q = {windows['q']})": windows["expected"],
                  "max |change - K_tap delta|": windows["prediction_error"],
                  "sum over t of ||change at t||_p": float(windows["norms"].sum()),
                  "M(K) ||delta||_p": windows["m_k"] * windows["delta_norm"]},
                 title=f"One substitution in a sentence of length {windows['length']}")


def holder_table(heads: dict) -> tuple[Table, float]:
    """Per head and norm: the pairwise constants ||c_y - c_t||_r, how exactly Hoelder's direction attains them,
    and (p = 2) the vector route's sqrt(2) ||C||_2; returns the table and the largest relative gap."""
    rows, gap = [], 0.0
    for head_name, head in heads.items():
        for name, p in NORMS.items():
            res = holder_check(head, p)
            largest = max(r["pairwise"] for r in res["rows"])
            gap = max(gap, res["max_gap"] / largest)
            rows.append({"head": f"{head_name} {tuple(head.shape)}", "p": name,
                         "pairwise ||c_y - c_t||_r": [round(r["pairwise"], 3) for r in res["rows"]],
                         "attained up to": res["max_gap"],
                         "sqrt(2) ||C||_2 / largest pairwise": res["min_vector_over_pairwise"]})
    return table(rows, title="The head's pairwise Hoelder constants"), gap


def sweep_table(sweep: dict) -> Table:
    """The exhaustive check per kind of weights: models and the largest ratio with the local and the global
    constant."""
    rows = []
    for lip in (False, True):
        sel = [r for r in sweep["rows"] if bool(r["lipschitz"]) == lip]
        rows.append({"weights": "1-Lipschitz (constant L)" if lip else "raw (constant G)", "models": len(sel),
                     "largest ratio, local M(E, P)": max(r["max_local"] for r in sel),
                     "largest ratio, global M(E)": max(r["max_global"] for r in sel)})
    return table(rows, title=f"{sweep['models']} models, {sweep['neighbours']:,} neighbours, {sweep['pair_checks']:,} "
                             f"(neighbour, class pair, constant) checks in {sweep['seconds']:.1f} s: "
                             f"{sweep['violations']} violations", digits=6)


def rounding_table(sweep: dict) -> Table:
    """The largest ratio of all checks to 17 digits, its excess over 1 in units of the float64 machine epsilon, and
    the tolerance a violation must exceed."""
    excess = sweep["max_ratio"] - 1.0
    return table({"largest ratio over all checks (17 digits)": f"{sweep['max_ratio']:.17g}",
                  "largest ratio - 1": excess,
                  "... in float64 machine epsilons (2.2e-16)": excess / FLOAT64_EPS,
                  "a violation must exceed": "L d (1 + 1e-9) + 1e-9",
                  "violations": sweep["violations"]}, title="Rounding against violations")


def size_table(sweep: dict) -> Table:
    """Mean worst-neighbour ratio (global constant) of the smallest models (d h = 1) and the larger ones."""
    rows = sweep["rows"]
    groups = {"d x h = 1": [r["max_global"] for r in rows if r["d"] * r["h"] == 1],
              "d x h >= 4": [r["max_global"] for r in rows if r["d"] * r["h"] >= 4]}
    return table([{"models": name, "count": len(v), "mean worst-neighbour ratio": float(np.mean(v)) if v else None}
                  for name, v in groups.items()], title="How much of the bound the worst neighbour uses, by size")


def tight_table(tight: dict, details: dict) -> Table:
    """The tight search: the best ratio, per kernel size, and the first tight model's weights."""
    rows = {"models searched": tight["models"], "largest ratio found": tight["best"]["ratio"],
            "largest ratio - 1, in float64 epsilons": (tight["best"]["ratio"] - 1.0) / FLOAT64_EPS,
            "models within 1e-9 of ratio 1": sum(r >= 1 - 1e-9 for r in tight["ratios"]),
            **{f"largest ratio at q = {int(q)}": float(v) for q, v in tight["max_per_q"].items()},
            "tight model": f"q = {details['q']}, {'1-Lipschitz' if details['lipschitz'] else 'raw'} weights",
            "P -> Q": f"{details['P']!r} -> {details['Q']!r} (distance {details['distance']})",
            "effective embedding": ", ".join(f"{k}: {v[0]:.4f}" for k, v in details["embedding"].items()),
            "M(E) and its pair": f"{details['M(E)']:.4f} at {details['pair']}",
            "kernel taps": [round(v, 4) for v in details["kernel"]],
            "head": [round(v, 4) for v in details["head"]],
            "g(P), g(Q), L": f"{details['g_P']:.6f}, {details['g_Q']:.6f}, {details['L']:.6f}"}
    return table(rows, title="One-channel models at distance 1 (global constant)", digits=12)


def looseness_table(results: Sequence[dict]) -> Table:
    """Per sentence of the reference model: neighbours evaluated, L_yt, margins, the largest margin changes and the
    share of the bound they use."""
    rows = []
    for res in results:
        rows.append({"row": res["row"], "n": res["n"], "radius": res["radius"],
                     "neighbours": f"{res['neighbours']} of {res['total']}" if res["sampled"] else res["total"],
                     "L_yt": [round(v, 4) for v in res["lipschitz"]],
                     "margins g_yt": [round(v, 3) for v in res["margins"]],
                     "max |dg_yt|": [round(v, 4) for v in res["max_dg"]],
                     "max |dg| / L": res["ratio"], "bound / largest change": 1 / res["ratio"],
                     "smallest margin of a neighbour": res["min_neighbour_margin"], "seconds": res["seconds"]})
    return table(rows, title="The exact distance-1 neighbourhoods on the reference model")


def layerwise_table(search: dict) -> Table:
    """Per eps: the layer-wise ERP ratio (max, median, share above 1) and the end-to-end ratio."""
    rows = []
    for e, erp, e2e in zip(search["eps"], search["erp_ratio"], search["end_to_end_ratio"]):
        rows.append({"eps": e, "layer-wise ratio, max": max(erp), "median": float(np.median(erp)),
                     "above 1": f"{sum(r > 1 for r in erp)} of {len(erp)}", "end-to-end ratio, max": max(e2e)})
    return table(rows, title="Inserting a vector of norm eps: d_ERP(conv A, conv B) / (M(K) d_ERP(A, B))")


def worst_case_text(search: dict) -> str:
    """The worst layer-wise case in words."""
    best = search["best"]
    return (f"worst case: n = {best['n']}, d = {best['d']}, h = {best['h']}, q = {best['q']}, p = "
            f"{norm_name(best['p'])}, insertion at {best['position']}: d_ERP(A, B) = {best['erp_in']:.1e}, "
            f"d_ERP(conv A, conv B) = {best['erp_out']:.3g}, M(K) = {best['m_k']:.3g}")


def group_max_table(sweep: dict) -> Table:
    """The largest ratio of every histogram of the sweep (norm, constant, distance)."""
    rows = []
    for group, value in sweep["group_max"].items():
        p, constant, distance = group.split("|")
        rows.append({"p": p.removeprefix("p="), "constant": constant, "distance": int(distance.removeprefix("d=")),
                     "largest ratio": value})
    return table(rows, title="Largest ratio per histogram", digits=8)


# ----------------------------------------------------------------------------- exercises

def _conv_cases():
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(h, d, q, generator=gen, dtype=torch.float64).numpy(),) for h, d, q in
            ((1, 1, 1), (3, 2, 4), (2, 5, 3), (4, 4, 1))]


def conv_constant_p1_reference(weight) -> float:
    """M(K) for p = 1: sum over taps of the max column abs-sum of K[:, :, j]."""
    return float(conv_constant(_t(weight), 1.0))


def check_exercise_conv_p1(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: M(K) for p = 1 on random conv weights."""
    return check_exercise("M(K) for p = 1", attempt, conv_constant_p1_reference, _conv_cases(),
                          hint="||A||_{1->1} is the largest column sum of |A| (sum over output channels, max over "
                               "input channels); M(K) adds it up over the q taps weight[:, :, j].", ctx=ctx)


def check_exercise_head_pairs(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: the pairwise head constants ||c_y - c_t||_r for p = 1, 2, inf, against :func:`head_pairs`."""
    gen = np.random.default_rng(5)
    cases = [(gen.normal(size=(3, 4)), 2.0), (gen.normal(size=(4, 2)), 1.0), (gen.normal(size=(2, 5)), math.inf),
             (gen.normal(size=(3, 3)), math.inf)]
    return check_exercise("pairwise head constants", attempt, head_pairs, cases,
                          hint="use the DUAL norm r of p: r = inf for p = 1, 2 for 2, 1 for inf; entry (y, t) is "
                               "||C[y] - C[t]||_r.", ctx=ctx)


def local_constant_reference(emb, ids, p: float) -> float:
    """The exercise's reference: :func:`local_embedding_constant` with the pad row on the P side."""
    return local_embedding_constant(emb, ids, p)


def check_exercise_local_constant(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: the local embedding constant M(E, P), including the one-dimensional case of the text."""
    gen = np.random.default_rng(9)
    emb = np.vstack([np.zeros((1, 3)), gen.normal(size=(5, 3))])
    one_d = np.array([[0.0], [1.0], [10.0]])  # the pad row matters: the answer is 10, not 9
    cases = [(one_d, [1], 2.0), (emb, [1, 2, 2], 2.0), (emb, [3], 1.0), (emb, [5, 4], math.inf), (emb, [], 2.0)]
    return check_exercise("local M(E, P)", attempt, local_constant_reference, cases,
                          hint="the rows on the P side are the characters of P AND the padding row 0 (an insertion "
                               "costs ||e_c - 0||); the other side is every row, padding included.", ctx=ctx)


__all__ = [
    "SPEC", "setup", "NORMS", "RTOL", "ATOL", "FLOAT64_EPS", "show_source", "table", "figure", "label", "explore",
    "LipsLevCNN", "norm_of", "norm_name", "as_float64", "pad_batch", "official_paths", "reference_model",
    "reference_texts", "demo_model", "random_tiny_model", "describe_model", "stages", "padding_differences",
    "embedding_distances", "argmax_pair", "local_embedding_constant", "local_global_ratios", "row_max_ratios",
    "constant_formula_error", "tap_norms", "substitution_windows", "random_head", "holder_check", "head_pairs",
    "ball_ratios", "soundness_sweep", "tight_search", "tight_details", "pad_free_search", "looseness_runs",
    "neighbourhood_looseness", "layerwise_counterexample", "layerwise_search", "draw_embedding_heatmap",
    "draw_local_global", "draw_substitution", "draw_sweep_overview", "draw_ratio_explorer", "draw_looseness",
    "draw_layerwise", "model_table", "stages_table", "padding_table", "embedding_table", "local_global_table",
    "pad_free_table", "pad_free_example", "substitution_table", "holder_table", "sweep_table", "size_table",
    "tight_table", "rounding_table",
    "display_order", "looseness_table", "layerwise_table", "worst_case_text", "group_max_table",
    "check_exercise_conv_p1", "check_exercise_head_pairs", "check_exercise_local_constant",
]
