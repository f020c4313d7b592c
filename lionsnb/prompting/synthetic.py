"""The synthetic comparison: the scripted stand-in at several accuracies, on a whole bank, with every strategy.

:class:`~lionsnb.prompting.backends.ScriptedBackend` knows the answer key and is right with a chosen probability,
malformed (no usable answer) with another, independently on every call; it also plays the LLM grader. Its numbers
are **synthetic**: they show the mechanics of the aggregates (mean, majority vote, any strategy) and of pass rates
when an assistant is competent, nothing about a real model (whose mistakes are correlated across prompts).
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence

from lionsnb.prompting.backends import ScriptedBackend
from lionsnb.prompting.bank import Bank
from lionsnb.prompting.strategies import STRATEGIES
from lionsnb.prompting.study import run_study

#: the stand-in's accuracies in the notebooks' comparison
SCRIPTED_ACCURACIES = (0.3, 0.6, 0.9)
#: its rate of malformed replies
SYNTHETIC_MALFORMED = 0.1


def scripted_rows(bank: Bank, accuracy: float, *, seed: int = 0, n_questions: int = 0,
                  strategies: Sequence[str] = STRATEGIES, malformed_rate: float = SYNTHETIC_MALFORMED) -> list[dict]:
    """The study's rows for ``strategies`` on ``bank`` (or a stratified sample of ``n_questions``) answered AND graded
    by a scripted stand-in that is right with probability ``accuracy``.

    Its replies go to a throw-away response cache written without a per-file sync
    (:meth:`~lionsnb.prompting.backends.ResponseCache.put`): they are deterministic and instant to regenerate, and
    thousands of ``fsync`` calls would dominate the run time.
    """
    sample = bank.select(n=int(n_questions) or None, seed=seed)  # 0: the whole bank
    backend = ScriptedBackend.from_bank(bank, seed=seed, accuracy=float(accuracy), malformed_rate=malformed_rate)
    with tempfile.TemporaryDirectory(prefix="lionsnb-scripted-") as folder:
        return run_study(sample, list(strategies), backend, folder, bank=bank, grader=backend, progress=False,
                         sync=False)


def scripted_study(bank: Bank, accuracies: Sequence[float] = SCRIPTED_ACCURACIES, *, seed: int = 0,
                   n_questions: int = 0, strategies: Sequence[str] = STRATEGIES) -> dict[float, list[dict]]:
    """``{accuracy: rows}``: :func:`scripted_rows` at each accuracy (the notebooks cache it with ``ctx.cached``)."""
    from lionsnb.progress import progress

    return {float(a): scripted_rows(bank, a, seed=seed, n_questions=n_questions, strategies=strategies)
            for a in progress(list(accuracies), desc="scripted stand-in", unit="run")}


__all__ = ["SCRIPTED_ACCURACIES", "SYNTHETIC_MALFORMED", "scripted_rows", "scripted_study"]
