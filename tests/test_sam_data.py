"""Data and models of the SAM series, including the full profile's CIFAR-10 path without the data."""
from __future__ import annotations

import pytest
import torch

from lionsnb.datasets import DatasetUnavailable, Split
from lionsnb.models import ResNetCifar, SmallCNN
from lionsnb.sam import data, nb01_sam


def test_cifar10_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LIONSNB_DATA", str(tmp_path))
    problem = data._cifar10_problem()
    assert problem and ("torchvision" in problem or str(tmp_path) in problem)
    with pytest.raises(DatasetUnavailable, match="cifar10"):
        data.load_data("cifar10")


def test_full_profile_falls_back_to_mnist1d_with_a_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LIONSNB_DATA", str(tmp_path))
    assert data.resolve_dataset("auto", "full") == "mnist1d"
    assert "CIFAR-10 is not available" in capsys.readouterr().out
    assert data.resolve_dataset("auto", "teach") == "mnist1d"
    assert data.resolve_dataset("digits", "full") == "digits"
    full = nb01_sam.SPEC.sizes("full")
    assert data.model_kind(full.model, "mnist1d") == "mlp" and data.model_kind(full.model, "cifar10") == "resnet20"
    assert data.model_kind("cnn", "digits") == "cnn"


def test_models_shapes():
    assert ResNetCifar(20)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in ResNetCifar(20).parameters()) == pytest.approx(272_474, rel=0.01)
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCifar(21)
    assert SmallCNN((1, 40), 10)(torch.zeros(3, 40)).shape == (3, 10)
    split = Split(torch.zeros(4, 40), torch.zeros(4, dtype=torch.long), torch.zeros(2, 40),
                  torch.zeros(2, dtype=torch.long), 10, "x")
    for kind in ("mlp", "mlp_bn", "cnn"):
        assert data.build_model(kind, split, 16)(split.x_train).shape == (4, 10)
    with pytest.raises(ValueError, match="unknown model"):
        data.build_model("vit", split)


def test_unknown_dataset_name():
    with pytest.raises(DatasetUnavailable, match="unknown dataset"):
        data.load_data("imagenet")
