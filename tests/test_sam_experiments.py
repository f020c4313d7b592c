"""Experiment helpers of the SAM notebooks: landscapes, scale invariance, cost accounting, the quadratic."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lionsnb.datasets import load_digits
from lionsnb.models import MLP
from lionsnb.sam import experiments as ex
from lionsnb.sam import nb02_sampa as sp


@pytest.fixture(scope="module")
def digits():
    return load_digits(n_train=300)


def test_filter_normalised_direction(digits):
    torch.manual_seed(0)
    model = MLP(64, [16], 10)
    d = ex.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for p, di in zip(model.parameters(), d):
        if p.dim() == 1:
            assert torch.equal(di, torch.zeros_like(p))
        else:
            assert torch.allclose(di.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-5)
    surface = ex.loss_surface(model, digits, [d], [-0.5, 0.0, 0.5])
    with torch.no_grad():
        base = float(F.cross_entropy(model(digits.x_train[:2000]), digits.y_train[:2000]))
    assert surface[1] == pytest.approx(base, rel=1e-6)
    assert torch.equal(list(model.parameters())[0], list(model.parameters())[0])  # weights restored below
    before = [p.clone() for p in model.parameters()]
    ex.loss_surface(model, digits, [d, d], [-1.0, 1.0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_asam_is_scale_invariant_and_sam_is_not(digits):
    torch.manual_seed(0)
    model = MLP(64, [32], 10)
    rescaled = ex.rescale_relu_mlp(model, 3.0)
    x = digits.x_train[:50]
    assert torch.allclose(model(x), rescaled(x), atol=1e-5)  # the same function
    asam = [ex.ascent_increase(m, digits, 0.5, adaptive=True) for m in (model, rescaled)]
    sam = [ex.ascent_increase(m, digits, 0.05, adaptive=False) for m in (model, rescaled)]
    assert asam[0] == pytest.approx(asam[1], rel=1e-3)
    assert abs(sam[0] - sam[1]) > 0.1 * abs(sam[0])


def test_train_run_counts_sequential_gradients(digits):
    runs = {m: ex.train_run(digits, m, rho=0.05, epochs=2, width=16, batch_size=100, power_iters=3, progress=False)
            for m in ("sgd", "sam", "sampa")}
    assert runs["sgd"]["sequential_gradients"] == [3, 6]
    assert runs["sam"]["sequential_gradients"] == [6, 12]
    assert runs["sampa"]["sequential_gradients"] == [3, 6]
    assert all(len(r["test_acc"]) == 2 and r["sharpness"] > 0 for r in runs.values())


def test_quadratic_sam_settles_where_derived_and_stale_does_not_shrink():
    runs = sp.quadratic_runs((0.1, 0.01), (0.1,), (0.0, 0.2), 3000)
    for eta in (0.1, 0.01):
        assert sp.plateau(runs, "SAM", eta, 0.1, 0.0) == pytest.approx(sp.sam_plateau_theory(eta, 0.1), rel=1e-6)
    assert sp.plateau(runs, "SAMPa", 0.1, 0.1, 0.2) > 10 * sp.plateau(runs, "SAMPa", 0.01, 0.1, 0.2)
    stale = [sp.plateau(runs, "stale", eta, 0.1, 0.0) for eta in (0.1, 0.01)]
    assert all(0.5 < s / (4 * 0.1 ** 2) < 1.5 for s in stale)


def test_cosine_trace_and_timing_run(digits):
    trace = sp.cosine_trace(digits, rho=0.1, lam=0.2, lr=0.05, width=16, model="mlp", steps=12, every=4)
    assert trace["step"] == [4, 8] and all(-1 <= c <= 1 for c in trace["cosine"])
    threads = __import__("torch").get_num_threads()
    timing = sp.time_methods("cpu", width=16, steps=2, warmup=1, distributed=False)
    assert set(timing) == {"sgd", "sam", "sampa-sequential", "sampa-concurrent"} and min(timing.values()) > 0
    assert __import__("torch").get_num_threads() == threads  # the notebook's thread setting is left alone


def test_timing_reading_follows_the_measurement():
    assert "overlapped" in sp.timing_reading(0.81, 1.0)
    assert "no measurable" in sp.timing_reading(1.02, 0.98)
    assert "slower" in sp.timing_reading(1.4, 1.05)
    assert "not reliable" in sp.timing_reading(0.41, 0.35)  # the sequential backend cannot beat SAM: load changed
    assert "not reliable" in sp.timing_reading(0.3)  # below two ideal devices
