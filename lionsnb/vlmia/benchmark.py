"""Scoring cost against the forward pass, measured in one run (``python benchmarks/vlmia_scoring.py``).

Three ratios, each the median of interleaved repeats so that a shared machine affects both sides alike:

* **tiny VLM**: the pipeline's scoring (per-position quantities once per sequence, then the 124 scores of the four
  slices) against the inference forward pass that produced the logits, for a batch of images;
* **loop**: the vectorised scoring against a per-position loop in the style of the reference code (one position
  and one metric at a time), on the same logits: the speed-up of vectorising;
* **LM** (with ``--llm``, when SmolLM2's files are installed): :func:`batch_scores` against the full forward pass
  of SmolLM2-135M-Instruct on Shakespeare passages (a 49,152-token vocabulary scored in float64).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lionsnb.vlmia.data import INSTRUCTION, make_pairs
from lionsnb.vlmia.metrics import RENYI_RATIOS, aggregate, batch_scores, k_of
from lionsnb.vlmia.model import TinyVLMConfig, build_tiny_vlm
from lionsnb.vlmia.pipeline import TinyVLMAdapter, _gather_rows, _pad, build_sequence, sequence_quantities, slice_rows
from lionsnb.vlmia.slicing import slices

__all__ = ["main", "tiny_vlm_ratio", "loop_speedup", "lm_ratio", "loop_scores"]


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_vlm_ratio(n_images: int = 128, n_embd: int = 128, repeats: int = 5, device: str = "cpu") -> dict[str, float]:
    """Scoring / forward for the tiny VLM on a batch of images with 12-word descriptions."""
    model = build_tiny_vlm(TinyVLMConfig(n_embd=n_embd), seed=0)
    adapter = TinyVLMAdapter(model, device)
    pairs = make_pairs(n_images, 0)
    seqs = [build_sequence(adapter, INSTRUCTION, c) for c in pairs.captions]
    bounds = [slices(c, adapter.n_image, ld) for _, c, ld in seqs]
    ids, mask = _pad([s[0] for s in seqs], adapter.pad_token_id)
    images = pairs.images.to(device)

    def forward():
        with torch.no_grad():
            return adapter.logits(images, ids, mask)

    logits = forward()

    def score():
        q = sequence_quantities(logits, ids.to(logits.device), [b["img"] for b in bounds])
        for name in ("img", "inst", "desp", "inst_desp"):
            rows, lengths = _gather_rows(q, [slice_rows(b[name], "vlmia") for b in bounds])
            aggregate(rows, lengths, extras=True)

    fwd, sc = [], []
    for _ in range(repeats):  # interleaved, so that the load of a shared machine hits both alike
        fwd.append(_median_time(forward, 1))
        sc.append(_median_time(score, 1))
    f, s = statistics.median(fwd), statistics.median(sc)
    return {"images": n_images, "positions": int(ids.numel()), "vocabulary": int(logits.shape[-1]),
            "forward_s": f, "scoring_s": s, "scoring_over_forward": s / f}


def loop_scores(logits: torch.Tensor, ids: torch.Tensor) -> dict[str, float]:
    """The scores of one slice computed one position at a time, as the reference's ``get_meta_metrics`` loop does
    (float64 softmax per row, Python lists, numpy sorts): the baseline of the vectorisation speed-up."""
    rows = logits.double()
    ent = {a: [] for a in ("05", "1", "2", "inf")}
    lps, gaps, mod_ent, mod05, mod2 = [], [], [], [], []
    for i in range(rows.shape[0] - 1):
        p = torch.softmax(rows[i], -1)
        lp = torch.log_softmax(rows[i], -1)
        pc = p.clamp(1e-10, 1 - 1e-10)
        y = int(ids[i + 1])
        ent["1"].append(float(-(p * lp).sum()))
        ent["05"].append(float(2 * torch.log(pc.sqrt().sum())))
        ent["2"].append(float(-torch.log((pc * pc).sum())))
        top = lp.max()
        ent["inf"].append(float(-top))
        gaps.append(float(top - lp[lp < top].max()))
        lps.append(float(lp[y]))
        py = float(pc[y])
        mod_ent.append(-(1 - py) * math.log(py) - float((p * torch.log(1 - pc)).sum()) + py * math.log(1 - py))
        others = torch.cat([pc[:y], pc[y + 1:]])
        for alpha, store in ((0.5, mod05), (2.0, mod2)):
            a = abs(1 - alpha)
            rest = float((others * (1 - others) ** a).sum() - others.sum())
            store.append(-(1 / a) * ((1 - py) * py ** a - (1 - py) + rest))
    n = len(lps)
    out = {"ppl": math.exp(float(np.mean(-np.array(lps)))), "Max_Prob_Gap": -float(np.mean(gaps)),
           "Modified_entropy": float(np.mean(mod_ent)), "Modified_renyi_05": float(np.mean(mod05)),
           "Modified_renyi_2": float(np.mean(mod2))}
    srt_lp = np.sort(lps)
    for r in RENYI_RATIOS[:-1]:
        out[f"Min_{r * 100}% Prob"] = -float(np.mean(srt_lp[:k_of(n, r)]))
    for a, vals in ent.items():
        srt = np.sort(vals)
        for r in RENYI_RATIOS:
            k = k_of(n, r)
            out[f"Max_{r * 100}% renyi_{a}"] = float(np.mean(srt[-k:]))
            out[f"Min_{r * 100}% renyi_{a}"] = float(np.mean(srt[:k]))
    return out


def loop_speedup(n_sequences: int = 16, length: int = 40, vocab: int = 512, repeats: int = 3) -> dict[str, float]:
    """The vectorised :func:`batch_scores` against :func:`loop_scores` on the same random logits."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n_sequences, length, vocab, generator=gen) * 3
    ids = torch.randint(0, vocab, (n_sequences, length), generator=gen)
    vec, loop = [], []
    for _ in range(repeats):
        vec.append(_median_time(lambda: batch_scores(logits, ids), 1))
        loop.append(_median_time(lambda: [loop_scores(logits[b], ids[b]) for b in range(n_sequences)], 1))
    ref = loop_scores(logits[0], ids[0])
    ours = batch_scores(logits[:1], ids[:1])
    worst = max(abs(ours[k][0] - v) / max(1.0, abs(v)) for k, v in ref.items())
    v, lo = statistics.median(vec), statistics.median(loop)
    return {"sequences": n_sequences, "positions": n_sequences * length, "vocabulary": vocab, "vectorised_s": v,
            "loop_s": lo, "speedup": lo / v, "max_rel_difference": worst}


def lm_ratio(n_passages: int = 8, n_tokens: int = 64, repeats: int = 3) -> dict[str, float]:
    """:func:`batch_scores` against the full forward pass of SmolLM2-135M-Instruct."""
    from lionsnb.lm import load_causal_lm
    from lionsnb.vlmia.textmia import shakespeare_passages

    model, tok = load_causal_lm(progress=False)
    passages = shakespeare_passages(tok, n_passages, 0, n_tokens, seed=0)
    ids = passages.ids

    def forward():
        with torch.no_grad():
            return model(ids).logits

    logits = forward()
    fwd, sc = [], []
    for _ in range(repeats):
        fwd.append(_median_time(forward, 1))
        sc.append(_median_time(lambda: batch_scores(logits, ids, extras=True), 1))
    f, s = statistics.median(fwd), statistics.median(sc)
    return {"passages": n_passages, "positions": int(ids.numel()), "vocabulary": int(logits.shape[-1]),
            "forward_s": f, "scoring_s": s, "scoring_over_forward": s / f}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", action="store_true", help="also time SmolLM2-135M-Instruct (offline files)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from lionsnb.runtime import load_average

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load_average()}")
    out = {"tiny VLM (scoring / forward)": tiny_vlm_ratio(repeats=args.repeats, device=args.device),
           "vectorised against a per-position loop": loop_speedup(repeats=max(1, args.repeats // 2))}
    if args.llm:
        out["SmolLM2-135M (scoring / forward)"] = lm_ratio(repeats=max(1, args.repeats // 2))
    for name, row in out.items():
        print(f"\n{name}")
        for k, v in row.items():
            print(f"  {k:24s} {v:.4g}" if isinstance(v, float) else f"  {k:24s} {v}")
    return out
