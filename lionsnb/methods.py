"""Discovery of methods: each notebook module ``lionsnb.<series>.nbNN_<stem>`` defines the ``SPEC`` of its
notebook, e.g. ``sam.nb02_sampa`` is ``lionsnb/sam/nb02_sampa.py`` behind ``notebooks/sam/02_sampa.ipynb``.

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
    """The MethodSpec of ``lionsnb.<name>`` (dotted names allowed); a clear error for an unknown name."""
    if not isinstance(name, str) or name.split(".")[0] not in method_names():
        raise ParameterError(f"unknown method {name!r}: the method packages are {', '.join(method_names())}.")
    try:
        module = importlib.import_module(f"lionsnb.{name}")
    except ModuleNotFoundError:
        raise ParameterError(f"unknown method {name!r}: there is no module lionsnb.{name}.") from None
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, MethodSpec):
        series = name.split(".")[0]
        notebooks = sorted(f"{series}.{m.name}" for m in pkgutil.iter_modules([str(_PACKAGE_DIR / series)])
                           if m.name.startswith("nb"))
        hint = f" Its notebook modules are: {', '.join(notebooks)}." if notebooks else ""
        raise ParameterError(f"lionsnb.{name} defines no SPEC (a lionsnb.MethodSpec); it is not a method.{hint}")
    return spec
