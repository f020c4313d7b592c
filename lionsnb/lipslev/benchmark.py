"""Certification vs exact brute force at Levenshtein distance 1: time per sentence and their ratio.

Both run on the same AG-News sentences (the first ``n`` correctly classified test rows, so that brute
force has to enumerate every neighbour) with the same model, in one run, on the current CPU. The
certificate is timed batched (how it is used) and one sentence at a time; brute force uses the
incremental engine (already ~10-50x faster than recomputing every neighbour, which
``--full-engine N`` times on N sentences). Ratios, not absolute times, are the result.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lionsnb.progress import progress as progress_bar


def run(n: int = 100, full_engine: int = 0, state: str | None = None, chars: str | None = None,
        csv_path: str | None = None, progress: bool = True) -> dict:
    import torch

    from lionsnb.lipslev.bruteforce import brute_force
    from lionsnb.lipslev.certify import as_float64, certificate
    from lionsnb.lipslev.data import OFFICIAL_FILES, OFFICIAL_FOLDER, load_ag_news, shared_dir
    from lionsnb.lipslev.model import load_official_checkpoint

    torch.set_num_threads(max(1, torch.get_num_threads()))
    official = shared_dir(OFFICIAL_FOLDER)
    model = as_float64(load_official_checkpoint(state or official / OFFICIAL_FILES[0],
                                                chars or official / OFFICIAL_FILES[1]))
    data = load_ag_news(path=csv_path)
    first = certificate(model, data.texts[:4 * n], data.labels[:4 * n])
    rows = [int(i) for i in np.flatnonzero(first.radii >= 0)[:n]]
    texts, labels = [data.texts[i] for i in rows], [data.labels[i] for i in rows]

    start = time.perf_counter()
    cert = certificate(model, texts, labels)
    batched = (time.perf_counter() - start) / len(rows)
    start = time.perf_counter()
    for t, y in zip(texts, labels):
        certificate(model, [t], [y])
    single = (time.perf_counter() - start) / len(rows)

    results = [brute_force(model, t, y, 1) for t, y in progress_bar(list(zip(texts, labels)), desc="brute force k=1",
                                                                     unit="sentence", disable=not progress)]
    bf = float(np.mean([r.seconds for r in results]))
    agree = sum((r.robust) >= (c >= 1) for r, c in zip(results, cert.radii))
    out = {"sentences": len(rows), "mean_length": float(np.mean([len(t) for t in texts])),
           "mean_neighbours": float(np.mean([r.neighbours for r in results])),
           "certificate_s_per_sentence_batched": batched, "certificate_s_per_sentence_single": single,
           "brute_force_s_per_sentence": bf, "ratio_bf_over_certificate_batched": bf / batched,
           "ratio_bf_over_certificate_single": bf / single,
           "certified_at_1": int((cert.radii >= 1).sum()),
           "brute_force_robust_at_1": int(sum(r.robust for r in results)),
           "soundness_violations": int(len(rows) - agree)}
    if full_engine:
        slow = [brute_force(model, t, y, 1, engine="full").seconds for t, y in zip(texts[:full_engine],
                                                                                   labels[:full_engine])]
        out["full_engine_s_per_sentence"] = float(np.mean(slow))
        out["ratio_full_engine_over_certificate_batched"] = out["full_engine_s_per_sentence"] / batched
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of correctly classified sentences (default 100)")
    parser.add_argument("--full-engine", type=int, default=0, help="also time full-recompute brute force on N of them")
    parser.add_argument("--state", help="official state dict (default ../shared/data/lipslev_official/...)")
    parser.add_argument("--chars", help="official char_to_id JSON")
    parser.add_argument("--csv", help="AG-News test.csv (default: $LIONSNB_AG_NEWS or ../shared/data/ag_news)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    out = run(args.n, args.full_engine, args.state, args.chars, args.csv)
    print(f"LipsLev certification vs exact brute force (distance 1), {out['sentences']} correctly classified "
          f"AG-News sentences, mean length {out['mean_length']:.0f} chars, {out['mean_neighbours']:.0f} unique "
          f"neighbours each")
    print(f"  certificate, batched       {out['certificate_s_per_sentence_batched'] * 1e3:9.3f} ms / sentence")
    print(f"  certificate, one at a time {out['certificate_s_per_sentence_single'] * 1e3:9.3f} ms / sentence")
    print(f"  brute force (incremental)  {out['brute_force_s_per_sentence'] * 1e3:9.1f} ms / sentence")
    if "full_engine_s_per_sentence" in out:
        print(f"  brute force (full)         {out['full_engine_s_per_sentence'] * 1e3:9.1f} ms / sentence")
        ratio = out["ratio_full_engine_over_certificate_batched"]
        print(f"  ratio full brute force / certificate (batched): {ratio:.3g}x")
    print(f"  ratio brute force / certificate: {out['ratio_bf_over_certificate_batched']:.3g}x batched, "
          f"{out['ratio_bf_over_certificate_single']:.3g}x one at a time (goal >= 1e4)")
    print(f"  certified at 1: {out['certified_at_1']}, brute-force robust at 1: {out['brute_force_robust_at_1']}, "
          f"soundness violations: {out['soundness_violations']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
