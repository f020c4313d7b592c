"""lionsnb: a notebook-first teaching suite for recent ML research.

The top-level import is deliberately light (no torch) so that the command line
(``lionsnb list``, ``lionsnb run``) starts fast.  Heavy pieces load on first use.

Notebooks start with::

    import lionsnb.sharpness.nb00_start_here as m
    ctx = m.setup(PROFILE, seed=SEED, device=DEVICE, metrics_path=METRICS_PATH, lr=LR)

The OpenMP wait policy is set here, before anything can import torch: two threads
that spin-wait on a loaded 2-core machine run 6-20x slower than one thread.
"""
from __future__ import annotations

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lionsnb._version import __version__  # noqa: E402
from lionsnb.params import PROFILES, Knob, MethodSpec, ParameterError  # noqa: E402

__all__ = [
    "__version__",
    "PROFILES",
    "Knob",
    "MethodSpec",
    "ParameterError",
    "setup",
    "Context",
]


def __getattr__(name: str):
    """Load torch-dependent parts lazily (``lionsnb.setup``, ``lionsnb.Context``)."""
    if name in ("setup", "Context"):
        from lionsnb import context

        return getattr(context, name)
    raise AttributeError(f"module 'lionsnb' has no attribute {name!r}")
