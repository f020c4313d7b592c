"""``lionsnb.setup`` and the :class:`Context` every notebook works with."""
from __future__ import annotations

import ast
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from lionsnb import runtime
from lionsnb._version import __version__
from lionsnb.cache import ArtifactCache
from lionsnb.params import (
    DEFAULT_PROFILE,
    MethodSpec,
    ParameterError,
    Sizes,
    check_parameter_names,
    validate_profile,
    validate_seed,
)
from lionsnb.record import to_metric, write_metrics

T = TypeVar("T")

#: papermill writes the overrides it injects into a cell that starts with this comment.
_PAPERMILL_HEADER = "# Parameters"


def injected_parameters() -> dict[str, Any] | None:
    """The names and values papermill injected into this kernel, or None outside papermill.

    papermill only warns about names a notebook does not declare, so setup reads the
    injected cell back from IPython's input history and validates it itself.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None:
        return None
    for source in reversed(shell.user_ns.get("In", [])):
        if isinstance(source, str) and source.lstrip().startswith(_PAPERMILL_HEADER):
            out: dict[str, Any] = {}
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return None
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            try:
                                out[target.id] = ast.literal_eval(node.value)
                            except ValueError:
                                out[target.id] = None
            return out
    return None


@dataclass
class Context:
    """Everything a notebook needs after setup: profile, sizes, knobs, device, cache and record."""

    method: MethodSpec
    profile: str
    seed: int
    device: torch.device
    sizes: Sizes
    knobs: Sizes
    metrics_path: str
    cache: ArtifactCache
    generator: torch.Generator
    exercises: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def cached(self, name: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(**kwargs)``, loaded from the cache when it ran before with the same arguments.

        The key is ``name``, the function and exactly ``kwargs`` (plus the method, profile and package version), so
        everything the result depends on must be an argument: ``ctx.cached("runs", m.train_runs, lr=LR,
        seed=SEED)``. ``fn`` must be a module-level function (lambdas and closures are refused, since the key could
        not see what they capture). Arguments may be numbers, strings, lists/dicts, arrays, tensors, torch modules
        (keyed by their weights) or dataclasses.
        """
        return self.cache.call(name, fn, **kwargs)

    def seed_for(self, *parts: Any) -> int:
        """A reproducible seed derived from the notebook's SEED and ``parts`` (e.g. a run name)."""
        from lionsnb.cache import cache_key

        return int(cache_key(seed=self.seed, parts=list(parts))[:8], 16)

    def record(self, **metrics: Any) -> Record:
        """Record the notebook's metrics: write them (atomically) to METRICS_PATH when set; returns the record.

        The returned :class:`Record` is a dict of the metrics that shows as one table when it ends a cell (the
        notebook's last cell), and nothing else is printed.
        """
        meta = {
            "method": self.method.name,
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "version": __version__,
            "knobs": dict(self.knobs),
            "exercises": dict(self.exercises),
            "elapsed_s": round(time.perf_counter() - self.started, 3),
        }
        if self.metrics_path:
            doc = write_metrics(self.metrics_path, metrics, meta)
        else:
            doc = {"meta": meta, "metrics": {k: to_metric(k, v) for k, v in metrics.items()}}
        return Record(doc["metrics"], path=self.metrics_path)


class Record(dict):
    """The metrics a notebook recorded; ending a cell with it shows them once, as a table."""

    def __init__(self, metrics: dict[str, Any], path: str = ""):
        super().__init__(metrics)
        self.path = path

    def _table(self):
        from lionsnb.display import table

        where = f" (written to {self.path})" if self.path else ""
        return table(dict(self), title=f"Metrics recorded by this notebook{where}")

    def _repr_html_(self) -> str:
        return self._table()._repr_html_()

    def __repr__(self) -> str:
        return repr(self._table())


def setup_for(spec: MethodSpec) -> Callable[..., Context]:
    """The ``setup`` of one method: ``setup_for(SPEC)(PROFILE, seed=SEED, device=DEVICE, **knobs)``."""
    def method_setup(profile: str | None = None, **kwargs: Any) -> Context:
        return setup(profile, method=spec, **kwargs)

    method_setup.__doc__ = f"``lionsnb.setup`` for {spec.name}: {spec.title}."
    return method_setup


def setup(profile: str | None = None, *, method: MethodSpec | str, seed: int = 0, device: str = "auto",
          metrics_path: str = "", cache_dir: str | None = None, **knobs: Any) -> Context:
    """Validate a notebook's parameters and prepare its run; returns the :class:`Context`.

    Checks the profile, seed, device and every knob (name and value), and the names
    papermill injected; seeds Python/NumPy/torch; picks the device (cuda > mps > cpu
    for ``"auto"``); sets the thread policy and plotting style; prints a one-line banner.
    ``LIONSNB_PROFILE`` replaces the notebook's PROFILE unless papermill injected one.
    """
    if isinstance(method, str):
        from lionsnb.methods import get_method

        method = get_method(method)
    injected = injected_parameters()
    if injected:
        check_parameter_names(injected, method)
    source = ""
    env_profile = os.environ.get("LIONSNB_PROFILE")
    if env_profile and not (injected and "PROFILE" in injected):
        profile, source = env_profile, " (from LIONSNB_PROFILE)"
    profile = validate_profile(profile if profile is not None else DEFAULT_PROFILE)
    seed = validate_seed(seed)
    if not isinstance(metrics_path, str):
        raise ParameterError(f"METRICS_PATH = {metrics_path!r}: use a file path string, or '' to not write.")
    values = method.validate_knobs(knobs)
    dev = runtime.pick_device(device)
    from lionsnb.datasets import require_datasets

    require_datasets(method.datasets)
    threads = runtime.set_thread_policy()
    from lionsnb.progress import quiet_libraries

    quiet_libraries()
    generator = runtime.seed_everything(seed)
    from lionsnb import plotting

    plotting.use_style()
    cache = ArtifactCache(cache_dir, method=method.name, profile=profile,
                          enabled=os.environ.get("LIONSNB_NO_CACHE", "") in ("", "0"))
    ctx = Context(method=method, profile=profile, seed=seed, device=dev, sizes=method.sizes(profile),
                  knobs=Sizes(method.name, profile, values, what="knob"), metrics_path=metrics_path,
                  cache=cache, generator=generator)
    knob_text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    print(f"lionsnb {__version__} | {method.name} | profile {profile}{source} | seed {seed} | "
          f"{runtime.describe_device(dev)}, {threads} | {knob_text} | cache {cache.root}", file=sys.stdout)
    return ctx
