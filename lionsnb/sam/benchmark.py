"""Per-step wall clock of SGD, SAM and SAMPa (with each gradient backend) on one model and device.

    python benchmarks/sam_step.py --device cpu --model mlp --width 512 --batch 256 --steps 30 --warmup 5

(the script is a thin wrapper around this module; notebooks call :func:`time_methods`).

Every method trains the same initial model on the same batches, in one run, so the ratios (to SGD and
SAMPa / SAM) are comparable; absolute times are not (they depend on the machine and its load).  The
median of the timed steps is reported, after ``--warmup`` untimed steps; on CUDA each step ends with
``torch.cuda.synchronize()``.

SAMPa (Xie, Pethick, Cevher, NeurIPS 2024, arXiv 2410.10683) needs two gradients per step that can
run in parallel; the backends are those of :mod:`lionsnb.sam.parallel`:

* ``sampa-sequential``: one after the other (the reference, 2 sequential gradients);
* ``sampa-concurrent``: two replicas, two CUDA streams or two CPU threads;
* ``sampa-distributed``: two processes, one all-reduce per step (gloo on CPU or a single GPU, nccl
  with two GPUs); the parent process only waits, rank 0 measures;
* ``sampa-vmap``: one vmapped call (models without BatchNorm only, e.g. ``--no-batch-norm``).

On CPU every method uses ``--threads`` intra-op threads (default 1) and each distributed rank one, so
SAMPa's backends may use two cores where SGD and SAM use one.  Whether the two gradients overlap depends
on idle compute: on an idle 2-core CPU a small model leaves a core free and the concurrent backend's step
takes less than SAM's; on a machine whose cores are busy with other work it may take as long or longer.
Report the load average next to the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from lionsnb.models import MLP, ResNetCifar, SmallCNN
from lionsnb.sam.losses import smooth_cross_entropy
from lionsnb.sam.optim import SAM, SAMPa, SequentialPair
from lionsnb.sam.parallel import ConcurrentPair, VmapPair, run_distributed_sampa
from lionsnb.sam.steps import sam_step
from lionsnb.training import sgd_step

METHODS = ("sgd", "sam", "sampa-sequential", "sampa-concurrent", "sampa-distributed", "sampa-vmap")
N_IN, N_CLASSES = 64, 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn", "resnet"),
                        help=f"mlp: {N_IN}-width x depth-{N_CLASSES}; cnn: SmallCNN on 3x32x32 with widths "
                             "(width/8, width/4); resnet: CIFAR ResNet of --depth (6n+2)")
    parser.add_argument("--width", type=int, default=512, help="hidden width of the MLP (default 512)")
    parser.add_argument("--depth", type=int, default=None,
                        help="hidden layers of the MLP (default 2) or ResNet depth (default 20)")
    parser.add_argument("--no-batch-norm", action="store_true", help="MLP without BatchNorm (allows sampa-vmap)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads on CPU (default 1; 0 keeps torch's default)")
    parser.add_argument("--lam", type=float, default=0.2, help="SAMPa's lambda (default 0.2)")
    parser.add_argument("--rho", type=float, default=0.05, help="perturbation radius (default 0.05)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {', '.join(METHODS)} (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
    if args.steps < 1 or args.warmup < 0 or args.batch < 2 or args.width < 1:
        parser.error("need --steps >= 1, --warmup >= 0, --batch >= 2 and --width >= 1")
    args.methods = methods
    return args


def model_factory(args: argparse.Namespace) -> Callable[[], torch.nn.Module]:
    """A picklable builder (the distributed ranks rebuild the architecture in their own processes)."""
    if args.model == "mlp":
        depth = 2 if args.depth is None else args.depth
        return partial(MLP, N_IN, [args.width] * depth, N_CLASSES, batch_norm=not args.no_batch_norm)
    if args.model == "cnn":
        return partial(SmallCNN, (3, 32, 32), N_CLASSES, widths=(max(1, args.width // 8), max(1, args.width // 4)))
    return partial(ResNetCifar, 20 if args.depth is None else args.depth, N_CLASSES)


def make_batches(args: argparse.Namespace, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(args.seed + 1)
    shape = (args.batch, N_IN) if args.model == "mlp" else (args.batch, 3, 32, 32)
    return [(torch.randn(shape, generator=generator), torch.randint(0, N_CLASSES, (args.batch,), generator=generator))
            for _ in range(n)]


def time_steps(step: Callable[[torch.Tensor, torch.Tensor], object], batches, warmup: int,
               device: torch.device) -> list[float]:
    """Wall clock (seconds) of each step after the first ``warmup`` ones."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = []
    for i, (x, y) in enumerate(batches):
        sync()
        start = time.perf_counter()
        step(x, y)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def run_method(name: str, args: argparse.Namespace, build: Callable, initial: dict, batches, device: torch.device,
               dtype: torch.dtype) -> tuple[list[float] | None, str]:
    """(step times in seconds, or None if skipped; a note for the table)."""
    def fresh_model():
        model = build()
        model.load_state_dict(initial)
        return model.to(device=device, dtype=dtype).train()

    hyper = dict(lr=args.lr, momentum=0.9, weight_decay=5e-4)
    local = [(x.to(device=device, dtype=dtype), y.to(device)) for x, y in batches]
    if name == "sgd":
        model = fresh_model()
        opt = torch.optim.SGD(model.parameters(), **hyper)
        return time_steps(lambda x, y: sgd_step(model, opt, x, y, smooth_cross_entropy), local, args.warmup,
                          device), "1 gradient"
    if name == "sam":
        model = fresh_model()
        opt = SAM(model.parameters(), torch.optim.SGD, rho=args.rho, **hyper)
        return time_steps(lambda x, y: sam_step(model, opt, x, y, smooth_cross_entropy), local, args.warmup,
                          device), "2 sequential gradients"
    if name == "sampa-distributed":
        if device.type == "cuda" and device.index not in (None, 0):
            return None, "skipped: the launcher places ranks on cuda:0 and cuda:1"
        run = run_distributed_sampa(build, batches, lam=args.lam, rho=args.rho, loss_fn=smooth_cross_entropy,
                                    device=device.type, initial_state=initial, **hyper)
        return run.step_times[args.warmup:], f"2 processes, {run.backend}, rank 0 timed"
    if name == "sampa-vmap":
        model = fresh_model()
        if any(isinstance(m, _BatchNorm) for m in model.modules()):
            return None, "skipped: model has BatchNorm (try --no-batch-norm)"
        backend, note = VmapPair(), "torch.func.vmap over both gradients"
    elif name == "sampa-concurrent":
        model = fresh_model()
        backend = ConcurrentPair()
        note = "2 replicas, 2 CUDA streams" if device.type == "cuda" else "2 replicas, 2 threads"
    else:
        model = fresh_model()
        backend, note = SequentialPair(), "2 sequential gradients"
    opt = SAMPa(model, smooth_cross_entropy, rho=args.rho, lam=args.lam, backend=backend, **hyper)
    try:
        with warnings.catch_warnings():  # vmap: smooth CE's scatter_ takes torch's (timed) per-sample fallback
            warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
            return time_steps(opt.step, local, args.warmup, device), note
    finally:
        if isinstance(backend, ConcurrentPair):
            backend.close()


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: dict[str, dict]) -> str:
    header = f"{'method':<19} {'ms/step':>9} {'x SGD':>7} {'x SAM':>7}  notes"
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        lines.append(f"{name:<19} {_cell(row['ms_per_step']):>9} {_cell(row['vs_sgd']):>7} "
                     f"{_cell(row['vs_sam']):>7}  {row['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, verbose: bool = True) -> dict:
    """Run the benchmark, print the table (unless ``verbose=False``), and return (and optionally write) the
    numbers."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA device is visible: use --device cpu")
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the distributed ranks inherit it
    try:
        build = model_factory(args)
        torch.manual_seed(args.seed)
        initial = {k: v.clone() for k, v in build().state_dict().items()}
        batches = make_batches(args, args.warmup + args.steps)
        rows: dict[str, dict] = {}
        for name in args.methods:
            times, note = run_method(name, args, build, initial, batches, device, dtype)
            rows[name] = {"ms_per_step": None if times is None else 1e3 * statistics.median(times),
                          "times_ms": None if times is None else [1e3 * t for t in times], "note": note}
    finally:
        torch.set_default_dtype(previous_dtype)

    for row in rows.values():
        for key, ref in (("vs_sgd", "sgd"), ("vs_sam", "sam")):
            base = rows.get(ref, {}).get("ms_per_step")
            row[key] = None if row["ms_per_step"] is None or not base else row["ms_per_step"] / base
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor()
                                                                                     or platform.machine())
    threads = torch.get_num_threads()
    result = {
        "device": str(device), "device_name": device_name, "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "intra_op_threads": threads,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "methods": rows,
    }
    if verbose:
        print(f"SAM/SAMPa step benchmark: {args.model} (width {args.width}), batch {args.batch}, {args.dtype}, "
              f"device {device} ({device_name}), {threads} intra-op thread(s), {os.cpu_count()} CPU(s), "
              f"median of {args.steps} steps after {args.warmup} warm-up")
        print(format_table(rows))
        sampa_vs_sam = {name: row["vs_sam"] for name, row in rows.items()
                        if name.startswith("sampa") and row["vs_sam"] is not None}
        if sampa_vs_sam:
            print("SAMPa / SAM: " + ", ".join(f"{name.split('-', 1)[1]} {r:.2f}" for name, r in sampa_vs_sam.items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


def time_methods(device: torch.device | str, width: int = 512, steps: int = 20, warmup: int = 3,
                 batch: int = 256, seed: int = 0, distributed: bool = True, verbose: bool = False
                 ) -> dict[str, float]:
    """Median ms per step of SGD, SAM and SAMPa (sequential, concurrent and, if asked, distributed), measured
    in one run on ``device`` with torch's current thread setting (``verbose=True`` prints the benchmark's table)."""
    methods = ["sgd", "sam", "sampa-sequential", "sampa-concurrent"] + (["sampa-distributed"] if distributed else [])
    result = main(["--device", str(device), "--width", str(width), "--steps", str(steps), "--warmup", str(warmup),
                   "--batch", str(batch), "--seed", str(seed), "--threads", "0", "--methods", ",".join(methods)],
                  verbose=verbose)
    return {name: round(row["ms_per_step"], 3) for name, row in result["methods"].items()
            if row["ms_per_step"] is not None}


if __name__ == "__main__":
    main(sys.argv[1:])
