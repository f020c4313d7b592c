"""Exercises that never break a top-to-bottom run.

A notebook cell holds a student stub that raises ``NotImplementedError`` (or
returns None); :func:`check_exercise` runs it on a few cases against the
package's reference solution and prints feedback.  It returns the function the
rest of the notebook should use: the student's when it is correct, otherwise the
reference, so that later cells always work.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

STATUSES = ("solved", "not attempted", "incorrect")


@dataclass
class ExerciseResult:
    name: str
    status: str
    message: str
    fn: Callable[..., Any]

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)


def close(got: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Recursive numeric comparison of results (numbers, arrays, tensors, tuples/lists of them)."""
    if isinstance(expected, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(expected) and all(
            close(g, e, rtol, atol) for g, e in zip(got, expected))
    try:
        g, e = _as_array(got), _as_array(expected)
    except (TypeError, ValueError):
        return got == expected
    return g.shape == e.shape and bool(np.allclose(g, e, rtol=rtol, atol=atol))


def check_exercise(name: str, attempt: Callable[..., Any], reference: Callable[..., Any],
                   cases: Sequence[tuple], *, compare: Callable[[Any, Any], bool] = close, hint: str = "",
                   ctx: Any = None) -> ExerciseResult:
    """Check ``attempt`` against ``reference`` on ``cases`` (argument tuples); print feedback.

    Returns an :class:`ExerciseResult` (callable) that uses the student's function
    when it passed every case and the reference otherwise.  ``ctx`` records the status.
    """
    status, message = "solved", f"✓ {name}: correct on all {len(cases)} checks."
    for i, args in enumerate(cases, 1):
        try:
            got = attempt(*args)
        except NotImplementedError:
            status = "not attempted"
            message = f"… {name}: not implemented yet; the notebook continues with the reference solution."
            break
        except Exception as err:  # the student's code crashed: show it, don't stop the notebook
            status = "incorrect"
            message = f"✗ {name}: check {i} raised {type(err).__name__}: {err}"
            break
        if got is None or got is Ellipsis:
            status = "not attempted"
            message = f"… {name}: your function returned {got!r}; the notebook continues with the reference solution."
            break
        expected = reference(*args)
        if not compare(got, expected):
            status = "incorrect"
            message = f"✗ {name}: check {i} gave {_short(got)}, expected {_short(expected)}."
            break
    if status != "solved":
        message += (f" Hint: {hint}" if hint and status == "incorrect" else "")
        message += " (using the reference solution below)" if status == "incorrect" else ""
    print(message)
    if ctx is not None:
        ctx.exercises[name] = status
    return ExerciseResult(name, status, message, attempt if status == "solved" else reference)


def _short(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        arr = _as_array(value)
        text = repr(np.round(arr, 6).tolist()) if arr.size <= 6 else f"an array of shape {arr.shape}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
