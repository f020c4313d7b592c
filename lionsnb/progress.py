"""Progress bars for long work, the one way the package shows them.

In a live Jupyter frontend (or a terminal) :func:`progress` is a ``tqdm.auto`` bar that disappears when the work is
done (``leave=False``), or stays and ends at its final count (``leave=True``). In a headless run (the runner sets
``LIONSNB_HEADLESS=1``; papermill, CI) there is no bar at all: a saved notebook would keep a frozen widget ("99 %",
"0/30" in a viewer without widgets). Instead the loop prints one summary line when it ends, e.g.
``training: 300 steps in 4.2 s``.

Use it like tqdm::

    for step in progress(range(n), desc="training", unit="step"):
        ...
    with progress(total=n, desc="sweep") as bar:
        bar.update(1)
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def headless() -> bool:
    """True when live progress bars would only leave stale widgets behind (runner, CI)."""
    return os.environ.get("LIONSNB_HEADLESS", "") not in ("", "0")


class Summary:
    """A tqdm stand-in for headless runs: counts, then prints one line when closed."""

    def __init__(self, iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", leave: bool = False, disable: bool = False, **_: Any):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.desc, self.total, self.unit, self.disable = desc, total, unit, disable
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this progress bar has no iterable; use update() or pass one")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = {"": s}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def write(self, text: str) -> None:
        print(text)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        seconds = time.perf_counter() - self.started
        count = f"{self.n}" if self.total in (None, self.n) else f"{self.n} of {self.total}"
        units = self.unit if self.unit.endswith("s") or self.n == 1 else f"{self.unit}s"
        extra = ", ".join(f"{k} {v}" if k else str(v) for k, v in self.postfix.items())
        label = f"{self.desc}: " if self.desc else ""
        print(f"{label}{count} {units} in {seconds:.1f} s" + (f" ({extra})" if extra else ""), file=sys.stdout)

    def __enter__(self) -> Summary:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
             leave: bool = False, disable: bool = False, **kwargs: Any) -> Any:
    """A progress bar over ``iterable`` (or a manual one with ``total``); see the module docstring.

    ``leave=True`` keeps a live bar after the loop (it then shows its final count); the default removes it.
    ``disable=True`` shows nothing at all (also no summary line).
    """
    if headless():
        return Summary(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable, **kwargs)


def quiet_libraries() -> None:
    """Silence the progress bars and info chatter of transformers and the hub ("Loading weights 0/272")."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except Exception:  # noqa: BLE001 - an old or partial transformers: nothing to silence
            pass
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:  # noqa: BLE001
            pass
