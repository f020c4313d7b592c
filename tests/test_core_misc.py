"""Datasets, models, the training loop and method discovery."""
from __future__ import annotations

import pytest
import torch

from lionsnb import datasets
from lionsnb.methods import get_method, method_names
from lionsnb.models import MLP, count_parameters, flat_parameters
from lionsnb.params import ParameterError
from lionsnb.training import evaluate, fit


def test_digits_split_is_seeded_and_disjoint():
    a, b = datasets.load_digits(seed=0), datasets.load_digits(seed=0)
    assert torch.equal(a.x_train, b.x_train) and a.n_classes == 10
    assert len(a.x_train) + len(a.x_test) == 1797 and a.x_train.max() <= 1.0
    assert not torch.equal(datasets.load("digits", seed=1).x_train, a.x_train)


def test_unknown_dataset_is_clear():
    with pytest.raises(datasets.DatasetUnavailable, match="unknown dataset 'cifar'"):
        datasets.load("cifar")


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(datasets.DatasetUnavailable, match="pip install mnist1d"):
        datasets.require_datasets(["mnist1d"])


def test_mlp_and_helpers():
    model = MLP(4, [3], 2)
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2 == flat_parameters(model).numel()


def test_fit_learns_digits_and_is_reproducible():
    data = datasets.load_digits(n_train=400)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MLP(64, [32], 10)
        hist = fit(model, data.x_train, data.y_train, epochs=10, batch_size=32, x_test=data.x_test,
                   y_test=data.y_test, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), progress=False)
        runs.append(hist.as_dict())
    assert runs[0] == runs[1]
    assert runs[0]["train_loss"][-1] < runs[0]["train_loss"][0] and runs[0]["test_acc"][-1] > 0.8
    loss, acc = evaluate(model, data.x_test, data.y_test)
    assert acc == pytest.approx(runs[1]["test_acc"][-1])


def test_fit_with_custom_step():
    seen = []

    def step(model, optimizer, x, y, loss_fn):
        seen.append(len(x))
        return 0.0

    model = MLP(2, [2], 2)
    fit(model, torch.zeros(10, 2), torch.zeros(10, dtype=torch.long), epochs=1, batch_size=4,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), step=step, progress=False)
    assert seen == [4, 4, 2]
    with pytest.raises(ValueError, match="epochs"):
        fit(model, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), epochs=0,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_methods_are_discovered():
    assert "sharpness" in method_names()
    assert get_method("sharpness.nb00_start_here").name == "sharpness.nb00_start_here"
    with pytest.raises(ParameterError, match="unknown method"):
        get_method("nope")
