"""Device choice, seeding and thread policy: the environment-dependent parts of a run."""
from __future__ import annotations

import math
import os
import random
from typing import NamedTuple

import numpy as np
import torch

from lionsnb.params import ParameterError, validate_device


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(requested: str = "auto") -> torch.device:
    """Return the device to use: cuda > mps > cpu for ``"auto"``, else exactly what was asked.

    Asking for a device this machine lacks is an error that says what to use instead.
    ``"cuda:1"`` style indices are accepted.
    """
    validate_device(requested)
    kind = requested.split(":")[0]
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ParameterError(
            "DEVICE = 'cuda' but this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA). "
            "Use DEVICE = 'auto' or 'cpu', or run on a GPU machine."
        )
    if kind == "cuda" and ":" in requested:
        index = int(requested.split(":")[1])
        if index >= torch.cuda.device_count():
            raise ParameterError(
                f"DEVICE = {requested!r} but only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
    if kind == "mps" and not mps_available():
        raise ParameterError("DEVICE = 'mps' but Apple's Metal backend is not available here. Use 'auto' or 'cpu'.")
    return torch.device(requested)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch Generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def set_thread_policy() -> str:
    """Pick the number of torch CPU threads and return a short description for the banner.

    ``LIONSNB_THREADS`` forces a count.  Without it torch's default is kept when the
    OpenMP wait policy is passive; if torch was imported before lionsnb could set
    ``OMP_WAIT_POLICY=PASSIVE`` we fall back to one thread, which is never pathologically slow.
    """
    forced = os.environ.get("LIONSNB_THREADS")
    if forced:
        try:
            n = int(forced)
            if n < 1:
                raise ValueError
        except ValueError:
            raise ParameterError(f"LIONSNB_THREADS={forced!r}: use a positive integer.") from None
        torch.set_num_threads(n)
        return f"{n} thread{'s' * (n > 1)} (LIONSNB_THREADS)"
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        torch.set_num_threads(1)
        return "1 thread (OMP_WAIT_POLICY is not PASSIVE; set it before importing torch for more)"
    n = torch.get_num_threads()
    return f"{n} thread{'s' * (n > 1)}"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


class LoadAverage(NamedTuple):
    """The 1/5/15-minute load averages and the CPU count; prints as one line for the notebooks."""

    one: float
    five: float
    fifteen: float
    cpus: int

    def __str__(self) -> str:
        if math.isnan(self.one):
            return "load average not available"
        return f"load average {self.one:.2f} / {self.five:.2f} / {self.fifteen:.2f} on {self.cpus} CPUs"


def load_average() -> LoadAverage:
    """The machine's load averages (timings on a shared machine are only comparable within one run).

    NaN where the operating system does not say; ``str()`` gives the line the notebooks print.
    """
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        one = five = fifteen = float("nan")
    return LoadAverage(one, five, fifteen, os.cpu_count() or 1)
