"""Load-or-compute artifact cache for trained models and sweeps.

Entries are keyed by a hash of (method, name, the caller's key, profile, package
version), written atomically (temporary file + rename) into ``LIONSNB_CACHE``
(default: the user cache dir, e.g. ``~/.cache/lionsnb``), and read back with
``torch.load(weights_only=True)``, so a cache file can never run code.  A corrupt
or unreadable entry is recomputed with a warning, never a crash.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from lionsnb._version import __version__
from lionsnb.files import atomic_write_bytes

T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$LIONSNB_CACHE``, else the platform's user cache dir + ``lionsnb``."""
    env = os.environ.get("LIONSNB_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "lionsnb"


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of a cache key.

    Numbers, strings, booleans and None stand for themselves (floats by repr); lists, tuples and dicts are walked;
    arrays and tensors count by content (dtype, shape, sha256 of the bytes); a torch module by its class and the
    content of its state dict; a dataclass by its class and fields; any object with a ``cache_token()`` method by
    what that returns (e.g. a model loaded from a hub id returns the id and the dtype).
    """
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    token = getattr(value, "cache_token", None)
    if callable(token):
        return {"object": type(value).__qualname__, "token": _canonical(token())}
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, torch.nn.Module):
        return {"module": type(value).__qualname__, "state": _canonical(dict(value.state_dict()))}
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy() if value.dtype != torch.bfloat16 else value.detach().cpu().float().numpy()
    if isinstance(value, np.ndarray):
        return {"ndarray": str(value.dtype), "shape": list(value.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, np.generic):
        return _canonical(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": type(value).__qualname__,
                "fields": _canonical({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})}
    raise TypeError(
        f"cache keys must be made of numbers, strings, booleans, None, lists, dicts, arrays, tensors, torch "
        f"modules, dataclasses or objects with a cache_token() method; got {type(value).__name__}. Pass the "
        f"settings that determine the result."
    )


def function_id(fn: Callable[..., Any]) -> dict[str, Any]:
    """What identifies a cached computation: the function's module and qualified name (a partial's arguments too).

    Lambdas, closures and bound methods are refused: they carry values the key cannot see, which is how a cache key
    drifts from what the computation uses. Pass a module-level function and its arguments instead.
    """
    if isinstance(fn, functools.partial):
        return {"partial": function_id(fn.func), "args": _canonical(list(fn.args)),
                "keywords": _canonical(dict(fn.keywords))}
    if not callable(fn):
        raise TypeError(f"ctx.cached needs a function to call, got {type(fn).__name__}")
    name = getattr(fn, "__qualname__", "")
    owner = getattr(fn, "__self__", None)
    if inspect.ismethod(fn) or (owner is not None and not inspect.ismodule(owner)):
        raise TypeError(f"ctx.cached cannot key a bound method ({name}): its object is an input the key cannot see. "
                        "Pass a module-level function and give it the object's settings as arguments.")
    if name.endswith("<lambda>") or "<locals>" in name or getattr(fn, "__closure__", None):
        raise TypeError(
            f"ctx.cached(name, fn, **kwargs) calls fn(**kwargs) and keys the result on exactly those arguments, so fn "
            f"must be a module-level function, not a lambda or closure ({name or fn!r}): its captured values would "
            "not be part of the key. Write ctx.cached('name', m.compute, x=..., seed=...) instead.")
    return {"function": f"{getattr(fn, '__module__', '?')}.{name}"}


def cache_key(**parts: Any) -> str:
    """Hex digest identifying one cache entry."""
    blob = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _to_storable(value: Any) -> Any:
    """Convert NumPy values to tensors/Python scalars so that ``weights_only`` loading accepts them."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_to_storable(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (str, int, float, bool, complex)) or value is None:
        return value
    raise TypeError(
        f"ctx.cached can store tensors, arrays, numbers, strings and dicts/lists of them, not "
        f"{type(value).__name__}. For a model, return model.state_dict() and load it back."
    )


class ArtifactCache:
    """A directory of ``<name>-<hash>.pt`` files; see the module docstring."""

    def __init__(self, root: Path | str | None = None, *, method: str = "", profile: str = "",
                 version: str = __version__, enabled: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.method, self.profile, self.version, self.enabled = method, profile, version, enabled
        self.hits = 0
        self.misses = 0

    def path_for(self, name: str, **key: Any) -> Path:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"cache name {name!r}: use letters, digits, '-' and '_' only")
        digest = cache_key(method=self.method, name=name, key=key, profile=self.profile, version=self.version)
        return self.root / (self.method or "misc") / f"{name}-{digest}.pt"

    def get(self, name: str, fn: Callable[[], T], /, **key: Any) -> T:
        """Return the cached value for (name, key), computing and storing it with ``fn()`` if needed.

        The low-level call; notebooks use :meth:`call` (``ctx.cached``), whose key cannot disagree with the
        computation.
        """
        path = self.path_for(name, **key)
        if self.enabled and path.exists():
            try:
                value = torch.load(path, map_location="cpu", weights_only=True)
                self.hits += 1
                return value
            except Exception as err:  # corrupt, truncated or foreign file
                warnings.warn(f"cache entry {path} is unreadable ({type(err).__name__}: {err}); recomputing it.",
                              stacklevel=2)
        self.misses += 1
        value = _to_storable(fn())
        if not self.enabled:
            return value
        import io

        buf = io.BytesIO()
        torch.save(value, buf)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as err:
            warnings.warn(f"could not write cache entry {path} ({err}); continuing without caching. "
                          "Set LIONSNB_CACHE to a writable directory.", stacklevel=2)
            return value
        buf.seek(0)
        # Return what a later load returns, so the first and the cached run see the same types.
        return torch.load(buf, map_location="cpu", weights_only=True)

    def call(self, name: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """``fn(**kwargs)``, loaded from the cache when the same function ran with the same arguments before.

        The key is the name, the function (module and qualified name), exactly the arguments it is called with and
        the package version, so a key and its computation cannot disagree (e.g. a seed that changes the result is an
        argument, hence in the key). The profile and the notebook are not part of it: the arguments determine the
        result, so the notebooks of one series share what they compute alike (a model pre-trained once serves every
        notebook that asks for it). See :func:`function_id` for the functions allowed.
        """
        ident = function_id(fn)
        series = (self.method or "misc").split(".")[0]
        shared = ArtifactCache(self.root, method=series, profile="", version=self.version, enabled=self.enabled)
        try:
            return shared.get(name, lambda: fn(**kwargs), function=ident, arguments=kwargs)
        finally:
            self.hits += shared.hits
            self.misses += shared.misses
