"""Forward latency of a pruned MoE layer: physically shrunk (logsumexp / mean-row router) vs slot binding vs
unpruned, measured interleaved in one run so that the ratios survive a shared, loaded machine.

Slot binding (MC-SMoE's behaviour) keeps E router outputs and dispatches every slot separately, so it makes as
many expert calls as the unpruned layer; the shrunk layer dispatches E/r experts.  Every token still goes through
k experts, so the FLOPs are the same: the gain is the per-expert dispatch cost, largest for few tokens (decoding)
and fading for large batches where the matrix products dominate.  Hence the sweep over the token count.  The
weights are random (latency does not depend on training); the calibration data are generated task sequences.

    python benchmarks/uncurl_latency.py                     # E = 8, r = 4, d = 64 (the notebooks' sizes)
    python benchmarks/uncurl_latency.py --experts 16 --factor 4 --d-model 256 --hidden 512 --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported


def run(experts: int = 8, factor: int = 4, d_model: int = 64, hidden: int = 64, tokens: int = 512,
        repeats: int = 30, device: str = "cpu", seed: int = 0) -> dict:
    """Median latency (ms) of one MoE layer per variant on ``tokens`` hidden states, and the ratios."""
    import statistics
    import time

    import torch

    from lionsnb.uncurl import data as D
    from lionsnb.uncurl.model import MoEConfig, TinyMoE, count_parameters
    from lionsnb.uncurl.prune import prune_moe

    torch.manual_seed(seed)
    model = TinyMoE(MoEConfig(n_experts=experts, d_model=d_model, n_heads=4, expert_hidden=hidden)).eval()
    calib = [D.make_batch(("copy", "rev", "sort", "add"), n=64, seed=seed + 1)]
    variants = {"unpruned": model}
    for name, router in (("slot", "slot"), ("logsumexp", "logsumexp"), ("mean", "mean")):
        variants[name] = prune_moe(model, factor, calib, router=router, seed=seed)
    variants = {k: v.to(device) for k, v in variants.items()}
    x = torch.randn(tokens, d_model, generator=torch.Generator().manual_seed(seed)).to(device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for _ in range(3):
            for m in variants.values():
                m.moe_layers[0](x)
        for _ in range(repeats):
            for name, m in variants.items():
                sync()
                t0 = time.perf_counter()
                m.moe_layers[0](x)
                sync()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "device": str(device), "experts": experts, "factor": factor, "d_model": d_model, "hidden": hidden,
        "tokens": tokens, "repeats": repeats,
        **{f"{k}_ms": 1000 * v for k, v in med.items()},
        "slot_over_unpruned": med["slot"] / med["unpruned"],
        "logsumexp_over_slot": med["logsumexp"] / med["slot"],
        "mean_over_slot": med["mean"] / med["slot"],
        "mean_over_unpruned": med["mean"] / med["unpruned"],
        "expert_params_unpruned": count_parameters(model.moe_layers[0], experts_only=True),
        "expert_params_pruned": count_parameters(variants["slot"].moe_layers[0], experts_only=True),
    }


def sweep(token_counts=(64, 512, 4096), **kwargs) -> list[dict]:
    """:func:`run` for several token counts."""
    return [run(tokens=t, **kwargs) for t in token_counts]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="UNCURL: latency of the shrunk MoE layer vs slot binding (ratios)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--tokens", default="64,512,4096", help="comma-separated token counts")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.experts % args.factor:
        parser.error("--factor must divide --experts")
    try:
        counts = tuple(int(t) for t in args.tokens.split(","))
    except ValueError:
        parser.error("--tokens takes comma-separated integers, e.g. 64,512,4096")
    results = sweep(counts, experts=args.experts, factor=args.factor, d_model=args.d_model, hidden=args.hidden,
                    repeats=args.repeats, device=args.device)
    first = results[0]
    print(f"UNCURL latency, one MoE layer: E = {first['experts']} -> {first['experts'] // first['factor']} experts, "
          f"d = {first['d_model']}, hidden = {first['hidden']}, {first['device']}, median of {first['repeats']}")
    print(f"expert parameters: {first['expert_params_unpruned']} -> {first['expert_params_pruned']}")
    print(f"{'tokens':>7s} {'unpruned ms':>12s} {'slot ms':>9s} {'logsumexp ms':>13s} {'mean-row ms':>12s} "
          f"{'slot/unpruned':>14s} {'logsumexp/slot':>15s} {'mean-row/slot':>14s}")
    for r in results:
        print(f"{r['tokens']:7d} {r['unpruned_ms']:12.3f} {r['slot_ms']:9.3f} {r['logsumexp_ms']:13.3f} "
              f"{r['mean_ms']:12.3f} {r['slot_over_unpruned']:14.2f} {r['logsumexp_over_slot']:15.2f} "
              f"{r['mean_over_slot']:14.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
