"""Parallel backends for SAMPa's two gradients per step.

SAMPa (Xie, Pethick, Cevher, "SAMPa: Sharpness-aware minimization parallelized", NeurIPS 2024,
arXiv 2410.10683, Eq. 3) needs, at step t,

    g0 = grad f(x~_t; B_{t-1})     (the perturbed gradient, at x~_t = x_t + rho g_y / ||g_y||)
    g1 = grad f(y_{t+1}; B_t)      (the extrapolated gradient, y_{t+1} = x_t - lr (g_y + wd x_t + mu buf_t))

and both depend only on x_t and y_t, so they can be computed at the same time.  Every backend here
is a :class:`~lionsnb.sam.optim.GradientPair` for :class:`~lionsnb.sam.optim.SAMPa` and returns the
same numbers as :class:`~lionsnb.sam.optim.SequentialPair` (checked in float64 to 1e-10 by
``tests/test_sampa_parallel.py``):

* :class:`DistributedPair`: two processes (``torch.distributed``), one gradient each, ONE all-reduce
  of one flat vector per step: the official code's layout (two ranks, no DDP gradient sync, a single
  all-reduce per step).  Unlike the official script, grad f(y) travels in its own slot of the vector
  instead of being recovered by a division by lam, so SAMPa-0 (lam = 0) works.
  :func:`run_distributed_sampa` launches the two processes on one machine.
* :class:`ConcurrentPair`: one process, two model replicas; on CUDA each gradient runs in its own
  stream, on CPU in its own Python thread (ATen releases the GIL).
* :class:`VmapPair`: ``torch.func.vmap(torch.func.grad(...))`` over the stacked parameter sets
  (x~_t, y_{t+1}) and stacked batches (B_{t-1}, B_t); for models without BatchNorm only.

All backends keep the official code's BatchNorm convention: the running statistics of the model come
from the g0 pass (at x~_t on the previous batch); those of the g1 pass are discarded.  In train mode
the running statistics do not influence the gradients (BatchNorm normalises with batch statistics),
so the g1 pass may run on a replica whose buffers lag behind.

Speed: the two gradients only overlap when one gradient does not saturate the hardware: a GPU that one
small gradient does not fill, or a CPU core that is idle (torch's intra-op threads do not scale well on
small matrices, so a second gradient on a second thread can gain even on 2 cores; on cores busy with other
work it cannot).  Compare with SAM on the same device in the same run (``benchmarks/sam_step.py``).
"""
from __future__ import annotations

import copy
import os
import pickle
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lionsnb.sam.losses import smooth_cross_entropy
from lionsnb.sam.optim import GradientPair, SAMPa, _assign, flat

Batch = tuple[torch.Tensor, torch.Tensor]

__all__ = [
    "ConcurrentPair",
    "DistributedPair",
    "DistributedRun",
    "DistributedRunError",
    "VmapPair",
    "run_distributed_sampa",
]


def _grad_and_loss(model: nn.Module, params: list[torch.Tensor], point: torch.Tensor, loss_fn: Callable,
                   batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat gradient of the mean loss at parameters ``point`` and the loss as a tensor.

    The same operations as :func:`lionsnb.sam.optim.gradient_at`, but the loss stays on the device
    (``float(loss)`` would synchronise a CUDA stream before the other gradient is launched).
    """
    with torch.no_grad():
        _assign(params, point)
    for p in params:
        p.grad = None
    with torch.enable_grad():  # grad mode is thread-local: worker threads may not inherit it
        inputs, targets = batch
        loss = loss_fn(model(inputs), targets).mean()
        grads = torch.autograd.grad(loss, params)
    return flat(grads).detach(), loss.detach()


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- one device, two replicas

class ConcurrentPair(GradientPair):
    """SAMPa's two gradients at the same time in one process, on two model replicas.

    * g0 = grad f(x~_t; B_{t-1}) runs on the optimizer's model itself, so its BatchNorm running
      statistics are updated exactly as in :class:`~lionsnb.sam.optim.SequentialPair` (the official
      code's convention: rank 0's statistics, from the perturbed pass on the previous batch).
    * g1 = grad f(y_{t+1}; B_t) runs on a persistent replica (a deep copy made on first use); its
      buffers are refreshed from the model before each pass and its statistics are discarded.
    * On CUDA each pass is launched into its own :class:`torch.cuda.Stream` (both wait for the
      current stream first, and the current stream waits for both before the gradients are used).
      On CPU the g1 pass runs in a worker thread while the calling thread computes g0; ATen
      releases the GIL inside its kernels, so the two passes can use two cores.

    A gain needs idle compute: a GPU that one small gradient does not fill, or a CPU core left idle
    by one gradient; on cores busy with other work the two passes compete for the same cores and
    memory bandwidth.  :meth:`close` stops the CPU worker thread (it also ends with the
    interpreter).
    """

    def __init__(self) -> None:
        self._replica: nn.Module | None = None
        self._source: nn.Module | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._streams: dict[torch.device, tuple[torch.cuda.Stream, torch.cuda.Stream]] = {}

    def _replica_of(self, model: nn.Module) -> nn.Module:
        replica = self._replica
        stale = (replica is None or self._source is not model
                 or [(p.shape, p.dtype, p.device) for p in _trainable(replica)]
                 != [(p.shape, p.dtype, p.device) for p in _trainable(model)])
        if stale:
            self._replica, self._source = copy.deepcopy(model), model
        replica = self._replica
        replica.train(model.training)
        with torch.no_grad():
            for mine, theirs in zip(replica.buffers(), model.buffers()):
                mine.copy_(theirs)
        return replica

    def gradients(self, opt: SAMPa, x_tilde, prev_batch, y, batch):
        replica = self._replica_of(opt.model)
        replica_params = _trainable(replica)
        if x_tilde.device.type == "cuda":
            g0, g1, loss = self._cuda(opt, replica, replica_params, x_tilde, prev_batch, y, batch)
        else:
            g0, g1, loss = self._threads(opt, replica, replica_params, x_tilde, prev_batch, y, batch)
        return g0, g1, float(loss)

    def _threads(self, opt, replica, replica_params, x_tilde, prev_batch, y, batch):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampa-g1")
        future = self._pool.submit(_grad_and_loss, replica, replica_params, y, opt.loss_fn, batch)
        try:
            g0, loss = _grad_and_loss(opt.model, opt.params, x_tilde, opt.loss_fn, prev_batch)
        finally:
            g1, _ = future.result()  # always wait, so the replica is idle before anything else happens
        return g0, g1, loss

    def _cuda(self, opt, replica, replica_params, x_tilde, prev_batch, y, batch):
        device = x_tilde.device
        if device not in self._streams:
            self._streams[device] = (torch.cuda.Stream(device), torch.cuda.Stream(device))
        s0, s1 = self._streams[device]
        main = torch.cuda.current_stream(device)
        s0.wait_stream(main)
        s1.wait_stream(main)
        with torch.cuda.stream(s0):
            g0, loss = _grad_and_loss(opt.model, opt.params, x_tilde, opt.loss_fn, prev_batch)
        with torch.cuda.stream(s1):
            g1, _ = _grad_and_loss(replica, replica_params, y, opt.loss_fn, batch)
        main.wait_stream(s0)
        main.wait_stream(s1)
        for tensor in (g0, loss, g1):
            tensor.record_stream(main)  # allocated on a side stream, used on the main one
        return g0, g1, loss

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# ----------------------------------------------------------------------------- vmap

class VmapPair(GradientPair):
    """Both gradients in one vectorised call: ``vmap(grad_and_value(loss))`` over the stacked
    parameter sets (x~_t, y_{t+1}) and stacked batches (B_{t-1}, B_t).

    For models without BatchNorm only (a ``ValueError`` says so otherwise): under vmap the two
    passes would share one set of running-statistics buffers, which cannot reproduce the official
    convention (statistics from the x~ pass only).  The two batches must have the same shapes.
    Random layers (dropout) are not supported (vmap's default ``randomness="error"``).  Losses with
    in-place ops that vmap cannot batch (``smooth_cross_entropy``'s ``scatter_``) take torch's slow
    per-sample fallback, with a warning.
    """

    def gradients(self, opt: SAMPa, x_tilde, prev_batch, y, batch):
        model = opt.model
        bn = [name for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
        if bn:
            raise ValueError(f"VmapPair supports models without BatchNorm only (found {bn[:3]}...): use "
                             "ConcurrentPair or SequentialPair, or a BN-free model")
        (x_prev, t_prev), (x_now, t_now) = prev_batch, batch
        if x_prev.shape != x_now.shape or t_prev.shape != t_now.shape:
            raise ValueError(f"VmapPair needs batches of equal shapes, got {tuple(x_prev.shape)} and "
                             f"{tuple(x_now.shape)}: drop the last incomplete batch (drop_last=True)")
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        fixed.update(dict(model.named_buffers()))
        stacked = torch.stack([x_tilde, y])
        params, offset = {}, 0
        for name, p in zip(names, opt.params):
            params[name] = stacked[:, offset:offset + p.numel()].reshape(2, *p.shape)
            offset += p.numel()

        def mean_loss(theta, inputs, targets):
            out = torch.func.functional_call(model, {**theta, **fixed}, (inputs,))
            return opt.loss_fn(out, targets).mean()

        grads, losses = torch.func.vmap(torch.func.grad_and_value(mean_loss))(
            params, torch.stack([x_prev, x_now]), torch.stack([t_prev, t_now]))
        g = torch.cat([grads[name].reshape(2, -1) for name in names], dim=1).detach()
        return g[0].clone(), g[1].clone(), float(losses[0])


# ----------------------------------------------------------------------------- two processes

class DistributedPair(GradientPair):
    """SAMPa's two gradients on two ranks of a ``torch.distributed`` process group.

    The official code's layout (two processes, DDP's own gradient all-reduce switched off, one
    all-reduce per step): rank 0 computes g0 = grad f(x~_t; B_{t-1}) on its model, which updates
    its BatchNorm running statistics; rank 1 computes g1 = grad f(y_{t+1}; B_t).  Each rank fills
    its slots of one flat vector

        [ g0 | g1 | model buffers (rank 0's, after its pass) | rank 0's loss ]

    with zeros in the other rank's slots, and ONE all-reduce (sum) gives both ranks every number.
    Both ranks then apply the identical SGD update (the caller's :class:`SAMPa` on each rank), so
    the two model copies stay bit-identical; rank 1 also takes rank 0's buffers, so its own
    statistics from the g1 pass are discarded.  Since g1 has its own slot, lam = 0 (SAMPa-0) still
    gives both ranks grad f(y); the official script recovers it as (sum - g0) / (lam + 1e-15)
    and silently degenerates to SGD on the previous batch at lam = 0.

    Both ranks must iterate the same batches.  Integer buffers (``num_batches_tracked``) travel in
    the gradients' dtype: exact up to 2^24 steps in float32, 2^53 in float64.  For a launcher on
    one machine, see :func:`run_distributed_sampa`.
    """

    def __init__(self, group=None):
        self.group = group

    def gradients(self, opt: SAMPa, x_tilde, prev_batch, y, batch):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("DistributedPair needs an initialised process group of 2 ranks "
                               "(torch.distributed.init_process_group), e.g. via run_distributed_sampa")
        world, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        if world != 2:
            raise RuntimeError(f"DistributedPair needs exactly 2 ranks (one per gradient), got {world}")
        n = x_tilde.numel()
        buffers = list(opt.model.buffers())
        n_buf = sum(b.numel() for b in buffers)
        vector = torch.zeros(2 * n + n_buf + 1, dtype=x_tilde.dtype, device=x_tilde.device)
        if rank == 0:
            g0, loss = _grad_and_loss(opt.model, opt.params, x_tilde, opt.loss_fn, prev_batch)
            vector[:n] = g0
            if buffers:
                vector[2 * n:2 * n + n_buf] = flat(b.detach().to(vector.dtype) for b in buffers)
            vector[-1] = loss
        else:
            g1, _ = _grad_and_loss(opt.model, opt.params, y, opt.loss_fn, batch)
            vector[n:2 * n] = g1
        dist.all_reduce(vector, op=dist.ReduceOp.SUM, group=self.group)
        with torch.no_grad():
            offset = 2 * n
            for b in buffers:
                part = vector[offset:offset + b.numel()].view_as(b)
                b.copy_(part if b.is_floating_point() else part.round())
                offset += b.numel()
        return vector[:n].clone(), vector[n:2 * n].clone(), float(vector[-1])


class DistributedRunError(RuntimeError):
    """A rank of :func:`run_distributed_sampa` failed; the message holds its traceback."""


@dataclass
class DistributedRun:
    """What :func:`run_distributed_sampa` returns (all tensors on the CPU)."""

    state_dict: dict[str, torch.Tensor]          # rank 0's model after the last step
    step_times: list[float]                      # rank 0's wall clock per step, seconds
    losses: list[float]                          # loss at x~ on the previous batch, per step
    rank1_state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    backend: str = "gloo"
    device: str = "cpu"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def _distributed_worker(rank: int, world_size: int, port: int, workdir: str, build_model: Callable[[], nn.Module],
                        loss_fn: Callable, hyper: dict, backend: str, device: str, dtype: torch.dtype,
                        timeout_s: float) -> None:
    """One rank: build the model, load the parent's initial state, run SAMPa with DistributedPair."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    torch.set_default_dtype(dtype)
    loopback = _loopback_interface()
    if loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", loopback)
    if device == "cuda":
        dev = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    try:
        inputs = torch.load(Path(workdir) / "inputs.pt", weights_only=True)
        model = build_model()
        own = model.state_dict()
        wrong = [k for k, v in inputs["state"].items() if k in own and own[k].dtype != v.dtype]
        if wrong:
            raise TypeError(f"build_model() in the worker gives dtypes that differ from the parent's for {wrong[:3]}: "
                            "make build_model set the dtype explicitly (e.g. return model.double())")
        model.load_state_dict(inputs["state"])
        model.to(dev).train()
        opt = SAMPa(model, loss_fn, backend=DistributedPair(), **hyper)
        batches = [(x.to(dev), t.to(dev)) for x, t in inputs["batches"]]
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        ready = torch.zeros(1, device=dev)
        dist.all_reduce(ready)  # both ranks start timing together
        sync()
        times, losses = [], []
        for x, t in batches:
            start = time.perf_counter()
            losses.append(opt.step(x, t))
            sync()
            times.append(time.perf_counter() - start)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        torch.save({"state": state, "times": times, "losses": losses}, Path(workdir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Success: leave without the interpreter's teardown, which takes seconds once torch is loaded.
    # Everything that matters is in the result file (closed above); exceptions take the normal path.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _start_method(requested: str | None) -> str:
    """``requested``, else "forkserver" where the platform has it, else "spawn".

    A forkserver gets torch, torch._dynamo (imported by the first optimizer a process builds, about
    2 s) and this module preloaded, so that forking a rank costs no import.
    """
    import multiprocessing

    method = requested or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    if method == "forkserver":
        # Takes effect when the server starts (its first use in this process); harmless afterwards.
        multiprocessing.get_context("forkserver").set_forkserver_preload(["torch", "torch._dynamo", __name__])
    return method


def _check_picklable(**objects) -> None:
    """The ranks unpickle ``objects`` in fresh processes: they must be importable by reference."""
    import functools

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    for name, obj in objects.items():
        target = obj.func if isinstance(obj, functools.partial) else obj
        if getattr(target, "__module__", None) == "__main__" and main_file is None:
            raise TypeError(f"{name} is defined in an interactive session (a notebook or a REPL), which the ranks "
                            "cannot import: move it into a module, or use functools.partial of a library function, "
                            "e.g. functools.partial(lionsnb.models.MLP, 64, [256], 10, batch_norm=True)")
        try:
            pickle.dumps(obj)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing here
            raise TypeError(f"{name} must be picklable, because the ranks run in separate processes: use a "
                            f"module-level function or functools.partial of one, not a lambda or a local "
                            f"function ({exc})") from None


#: last lines of a rank's traceback that mean "the other rank went away", not a cause
_COMMUNICATION_ERRORS = ("Connection closed by peer", "Connection reset by peer", "DistBackendError",
                         "DistNetworkError", "NCCL communicator was aborted", "Broken pipe")


def _failure_report(context, exc: Exception) -> str:
    """Every failed rank's traceback, the rank that failed first (the cause) on top.

    When one rank dies, the other one usually fails in the all-reduce too ("connection closed by
    peer"): communication errors go last, then the order in which the error files were written.
    """
    errors = []
    for rank, error_file in enumerate(context.error_files):
        path = Path(error_file)
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as handle:
                trace = pickle.load(handle)
            last = trace.rstrip().splitlines()[-1] if trace.strip() else ""
            errors.append((any(sign in last for sign in _COMMUNICATION_ERRORS), path.stat().st_mtime_ns, rank, trace))
    if not errors:
        return f"SAMPa distributed run failed: {exc}"
    errors.sort()
    _, _, rank, trace = errors[0]
    lines = [f"SAMPa rank {rank} failed first, with:", trace.rstrip()]
    for _, _, other, other_trace in errors[1:]:
        lines += [f"rank {other} failed afterwards (most likely as a consequence):",
                  other_trace.rstrip().splitlines()[-1]]
    return "\n".join(lines)


def run_distributed_sampa(build_model: Callable[[], nn.Module], batches: Sequence[Batch], *, lr: float, rho: float,
                          lam: float, momentum: float = 0.0, weight_decay: float = 0.0,
                          loss_fn: Callable = smooth_cross_entropy, world_size: int = 2, backend: str | None = None,
                          device: str | None = None, timeout_s: float = 300.0,
                          initial_state: dict[str, torch.Tensor] | None = None,
                          start_method: str | None = None) -> DistributedRun:
    """Run SAMPa with :class:`DistributedPair` in two new processes on this machine.

    ``build_model()`` is called once here to create the initial weights (seed before calling, or
    seed inside it; ``initial_state``, a ``state_dict``, overrides them) and once in each rank to
    build the architecture, which then loads those weights; it must return the same dtypes in a
    fresh process (the ranks inherit this process's default dtype).  ``build_model`` and
    ``loss_fn`` must be picklable (module-level functions or ``functools.partial`` of them).
    Each rank uses one intra-op thread and iterates all ``batches`` (one SAMPa step each).

    ``backend``: "nccl" when ``device`` is "cuda" and there are at least 2 GPUs, else "gloo"
    (``device`` defaults to "cuda" when there are at least 2 GPUs; with one GPU both ranks share it
    through gloo).  Communication stays on 127.0.0.1.  A rank's exception is re-raised here as a
    :class:`DistributedRunError` that contains its traceback; after ``timeout_s`` seconds the ranks
    are killed and ``TimeoutError`` is raised.

    ``start_method``: "forkserver" by default where the platform has it (a single-threaded server
    process that has imported torch forks the ranks, so a launch costs no torch import after the
    first), else "spawn"; "spawn" always works.

    Returns rank 0's final ``state_dict``, its per-step wall-clock times and losses, and rank 1's
    final ``state_dict`` (identical to rank 0's when everything works).
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    if world_size != 2:
        raise ValueError(f"SAMPa has two gradients per step, so world_size must be 2, got {world_size}")
    if not batches:
        raise ValueError("batches is empty: pass at least one (inputs, targets) pair")
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = device or ("cuda" if n_gpu >= world_size else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and n_gpu == 0:
        raise ValueError("device='cuda' but no CUDA device is visible: use device='cpu'")
    backend = backend or ("nccl" if device == "cuda" and n_gpu >= world_size else "gloo")
    if backend == "nccl" and (device != "cuda" or n_gpu < world_size):
        raise ValueError(f"backend 'nccl' needs one GPU per rank ({world_size}), found {n_gpu} (device={device!r}): "
                         "use backend='gloo'")
    _check_picklable(build_model=build_model, loss_fn=loss_fn)
    start_method = _start_method(start_method)

    model = build_model()
    if initial_state is not None:
        model.load_state_dict(initial_state)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    cpu_batches = [(x.detach().cpu(), t.detach().cpu()) for x, t in batches]
    hyper = dict(lr=lr, rho=rho, lam=lam, momentum=momentum, weight_decay=weight_decay)
    SAMPa(model, loss_fn, **hyper)  # validates the hyper-parameters here rather than in both ranks

    workdir = tempfile.mkdtemp(prefix="lionsnb-sampa-")
    context = None
    try:
        torch.save({"state": state, "batches": cpu_batches}, Path(workdir) / "inputs.pt")
        args = (world_size, _free_port(), workdir, build_model, loss_fn, hyper, backend, device,
                torch.get_default_dtype(), float(timeout_s))
        context = mp.start_processes(_distributed_worker, args=args, nprocs=world_size, join=False,
                                     start_method=start_method)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if context.join(timeout=0.2):
                    break
            except ProcessException as exc:
                raise DistributedRunError(_failure_report(context, exc)) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"run_distributed_sampa: the ranks did not finish within {timeout_s:g} s; "
                                   "they were killed")
        results = [torch.load(Path(workdir) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    finally:
        if context is not None:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
            for error_file in context.error_files:
                Path(error_file).unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return DistributedRun(state_dict=results[0]["state"], step_times=results[0]["times"],
                          losses=results[0]["losses"], rank1_state_dict=results[1]["state"],
                          backend=backend, device=device)


if __name__ == "__main__":  # pragma: no cover - a tiny demo: python -m lionsnb.sam.parallel
    from functools import partial

    from lionsnb.models import MLP

    torch.manual_seed(0)
    demo_batches = [(torch.randn(32, 8), torch.randint(0, 3, (32,))) for _ in range(3)]
    run = run_distributed_sampa(partial(MLP, 8, [16], 3, batch_norm=True), demo_batches, lr=0.1, rho=0.05,
                                lam=0.2, momentum=0.9, weight_decay=5e-4)
    print(f"backend {run.backend}, ms/step {[round(1e3 * t, 2) for t in run.step_times]}", file=sys.stderr)
