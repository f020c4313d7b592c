"""Discovery of method subpackages: each ``lionsnb.<name>`` that defines ``SPEC`` is a method.

Adding a method series means adding a subpackage with a ``SPEC``; nothing here changes.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from lionsnb.params import MethodSpec, ParameterError

_PACKAGE_DIR = Path(__file__).parent


def method_names() -> list[str]:
    """Names of the subpackages of ``lionsnb`` (candidate methods), without importing them."""
    return sorted(m.name for m in pkgutil.iter_modules([str(_PACKAGE_DIR)]) if m.ispkg)


def get_method(name: str) -> MethodSpec:
    """The MethodSpec of ``lionsnb.<name>``; a clear error for an unknown name."""
    if name not in method_names():
        raise ParameterError(f"unknown method {name!r}: the methods are {', '.join(method_names())}.")
    module = importlib.import_module(f"lionsnb.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, MethodSpec):
        raise ParameterError(f"lionsnb.{name} defines no SPEC (a lionsnb.MethodSpec); it is not a method.")
    return spec
