"""The cost of NGDiff's automatic learning rate: time of NGDiff with GeN's lazy parabola fit over the same run with a
fixed learning rate (same model, same batches, same steps), both measured in one process and interleaved (goal: at
most 1.3x). Two clocks: the process's CPU time (``time.process_time``: what the runs cost, insensitive to other
processes on a shared machine) and the wall time (what a user waits, noisy when the cores are shared).

    python benchmarks/unlearning_autolr.py                     # tiny GPT, SGD, lazy_freq 4
    python benchmarks/unlearning_autolr.py --optimizer adamw --lazy-freq 1 --steps 60 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lionsnb.unlearning.pipeline import build_pipeline, prepare
from lionsnb.unlearning.trainer import UnlearnConfig, UnlearningTrainer

#: the benchmark's default model and data: the tiny GPT of the notebooks' teach profile
BENCH_SIZES = dict(model="tiny", n_authors=20, facts_per_author=5, forget_pct=10, n_eval=10, base_epochs=30,
                   ft_epochs=20)


def autolr_overhead(sizes: dict, seed: int, target_state: dict, optimizer: str = "sgd", lr: float = 0.03,
                    steps: int = 40, batch: int = 8, lazy_freq: int = 4, repeats: int = 3) -> dict:
    """Median CPU and wall time of ``repeats`` NGDiff runs with a fixed lr and with AutoLR, interleaved; their ratios
    (``ratio``: CPU time, ``wall_ratio``: wall time)."""
    pipe = prepare(sizes, seed)
    times: dict[str, list[float]] = {"fixed": [], "auto": []}
    walls: dict[str, list[float]] = {"fixed": [], "auto": []}
    probes = 0
    for r in range(repeats):
        for kind in ("fixed", "auto"):
            model = pipe.model(state=target_state)
            cfg = UnlearnConfig(method="NGDiff", optimizer=optimizer, lr=lr, steps=steps, forget_batch=batch,
                                retain_batch=batch, auto_lr=kind == "auto", lazy_freq=lazy_freq, seed=r)
            trainer = UnlearningTrainer(model, pipe.forget_train, pipe.retain_train, cfg, progress=False)
            start, cpu = time.perf_counter(), time.process_time()
            res = trainer.train()
            times[kind].append(time.process_time() - cpu)
            walls[kind].append(time.perf_counter() - start)
            probes = len(res.probes) if kind == "auto" else probes
    fixed, auto = float(np.median(times["fixed"])), float(np.median(times["auto"]))
    wall_fixed, wall_auto = float(np.median(walls["fixed"])), float(np.median(walls["auto"]))
    return {"fixed_cpu_s": fixed, "auto_cpu_s": auto, "ratio": auto / fixed, "fixed_wall_s": wall_fixed,
            "auto_wall_s": wall_auto, "wall_ratio": wall_auto / wall_fixed, "steps": steps, "lazy_freq": lazy_freq,
            "probes_per_run": probes, "repeats": repeats, "optimizer": optimizer}


def run(optimizer: str = "sgd", lr: float | None = None, steps: int = 40, batch: int = 8, lazy_freq: int = 4,
        repeats: int = 3, seed: int = 0) -> dict:
    """Train the tiny pipeline's target model, then measure :func:`autolr_overhead`."""
    pipe = build_pipeline(seed=seed, stages=("base", "target"), **BENCH_SIZES)
    lr = lr if lr is not None else (0.03 if optimizer == "sgd" else 2e-4)
    return autolr_overhead(pipe.sizes, seed, pipe.states["target"], optimizer=optimizer, lr=lr, steps=steps,
                           batch=batch, lazy_freq=lazy_freq, repeats=repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="time of NGDiff + AutoLR over NGDiff with a fixed lr (one run)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--lr", type=float, help="initial learning rate (default: 0.03 for sgd, 2e-4 for adamw)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lazy-freq", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.lazy_freq < 1:
        parser.error("--steps, --repeats and --lazy-freq must be >= 1")
    res = run(args.optimizer, args.lr, args.steps, args.batch, args.lazy_freq, args.repeats)
    for key, value in res.items():
        print(f"  {key:18s} {value:.4g}" if isinstance(value, float) else f"  {key:18s} {value}")
    print(f"AutoLR / fixed lr = {res['ratio']:.3f}x in CPU time, {res['wall_ratio']:.3f}x in wall time (goal <= 1.3x)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
