"""The metrics record: the last cell of every notebook writes what it measured.

The record is a small JSON file (path injected by the runner as ``METRICS_PATH``)
that tests read back to assert the registered metric keys and ranges.
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lionsnb.files import atomic_write_bytes


def to_metric(name: str, value: Any) -> float | int | bool | str:
    """Turn tensors / NumPy scalars into plain JSON values; reject anything else clearly."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise TypeError(f"metric {name!r} must be a scalar, got an array of shape "
                            f"{tuple(getattr(value, 'shape', ()))}") from None
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}: a notebook must not record non-finite numbers")
        return value
    raise TypeError(f"metric {name!r} must be a number, bool or string, got {type(value).__name__}")


def write_metrics(path: str | Path, metrics: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    """Atomically write ``{"meta": ..., "metrics": ...}`` as JSON to ``path`` and return it."""
    clean = {k: to_metric(k, v) for k, v in metrics.items()}
    doc = {"meta": dict(meta), "metrics": clean}
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return doc


def read_metrics(path: str | Path) -> dict:
    """Read a metrics file written by :func:`write_metrics`; returns the ``metrics`` mapping."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise ValueError(f"{path} is not a metrics record: expected {{'meta': {{...}}, 'metrics': {{...}}}}")
    return doc["metrics"]
