"""Data and models of the SAM series: MNIST-1D and digits on CPU, CIFAR-10 (ResNet-20) on GPU runners."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lionsnb.datasets import DatasetUnavailable, Split, load, register_dataset
from lionsnb.models import MLP, ResNetCifar, SmallCNN

DATASETS = ("auto", "mnist1d", "digits", "cifar10")


def cifar10_dir() -> Path:
    """Where CIFAR-10 is looked for: ``$LIONSNB_DATA/cifar10`` or ``~/.cache/lionsnb/data/cifar10``."""
    root = os.environ.get("LIONSNB_DATA") or Path.home() / ".cache" / "lionsnb" / "data"
    return Path(root) / "cifar10"


def _cifar10_problem() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return "the package torchvision is missing (pip install torchvision matching your torch)."
    if not (cifar10_dir() / "cifar-10-batches-py").is_dir():
        return (f"no CIFAR-10 in {cifar10_dir()}: download it there with "
                f"torchvision.datasets.CIFAR10('{cifar10_dir()}', download=True) on a machine with network "
                "access, or set LIONSNB_DATA.")
    return None


def _load_cifar10(n_train: int | None = None, seed: int = 0) -> Split:
    from torchvision.datasets import CIFAR10

    def tensors(train: bool):
        ds = CIFAR10(str(cifar10_dir()), train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
        std = torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]
        return (x - mean) / std, torch.tensor(ds.targets)

    xtr, ytr = tensors(True)
    xte, yte = tensors(False)
    if n_train is not None:
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(xtr))[:n_train])
        xtr, ytr = xtr[order], ytr[order]
    return Split(xtr, ytr, xte, yte, 10, "cifar10")


register_dataset("cifar10", "CIFAR-10 via torchvision, from a local copy (never downloaded here)",
                 _cifar10_problem, _load_cifar10)


def resolve_dataset(name: str, profile: str) -> str:
    """``auto`` means CIFAR-10 in the full profile when it is available, else MNIST-1D (with a message)."""
    if name != "auto":
        return name
    if profile == "full":
        problem = _cifar10_problem()
        if problem is None:
            return "cifar10"
        print(f"full profile: CIFAR-10 is not available ({problem}) Using MNIST-1D instead.")
    return "mnist1d"


def load_data(name: str, n_train: int | None = None, seed: int = 0) -> Split:
    """MNIST-1D, digits (seeded split) or CIFAR-10, as float tensors."""
    if name == "digits":
        from lionsnb.datasets import load_digits

        return load_digits(n_train=n_train, seed=seed)
    if name == "mnist1d":
        data = load("mnist1d", seed=seed)
        if n_train is not None:
            data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
        return data
    if name == "cifar10":
        return load("cifar10", n_train=n_train, seed=seed)
    raise DatasetUnavailable(f"unknown dataset {name!r}; use one of {', '.join(DATASETS[1:])}")


def build_model(kind: str, data: Split, width: int = 256) -> nn.Module:
    """``mlp`` (two hidden layers), ``mlp_bn`` (with BatchNorm), ``cnn`` (small CNN with BatchNorm) or
    ``resnet20`` (CIFAR only)."""
    shape = tuple(data.x_train.shape[1:])
    n_in = int(np.prod(shape))
    if kind in ("mlp", "mlp_bn"):
        return MLP(n_in, [width, width], data.n_classes, batch_norm=kind == "mlp_bn")
    if kind == "cnn":
        in_shape = shape if len(shape) == 3 else (1, n_in)
        return SmallCNN(in_shape, data.n_classes)
    if kind == "resnet20":
        return ResNetCifar(20, data.n_classes)
    raise ValueError(f"unknown model {kind!r}: use mlp, mlp_bn, cnn or resnet20")


def model_kind(profile_model: str, dataset: str) -> str:
    """The model a notebook trains: ResNet-20 only makes sense on CIFAR-10, elsewhere the profile's MLP
    (``profile_model`` is the profile's ``model`` size: mlp, mlp_bn, cnn or resnet20)."""
    if dataset == "cifar10":
        return "resnet20"
    return "mlp" if profile_model == "resnet20" else profile_model


def split_fields(name: str, n_train: int | None = None, seed: int = 0) -> dict:
    """:func:`load_data` as a plain dict of its fields (what the cache stores)."""
    return vars(load_data(name, n_train, seed))


def cached_split(ctx, name: str, n_train: int | None, seed: int) -> Split:
    """:func:`load_data` through the notebook's cache (MNIST-1D takes seconds to generate)."""
    return Split(**ctx.cached(f"data_{name}", split_fields, name=name, n_train=n_train, seed=seed))
