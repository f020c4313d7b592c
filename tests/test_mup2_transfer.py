"""muP^2 notebook 2 (transfer): sweep shapes, argmax, reproducibility, knobs, and the base-width identity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lionsnb.mup2.transfer as mt
from lionsnb.datasets import Split
from lionsnb.params import ParameterError


@pytest.fixture(scope="module")
def data() -> Split:
    """A small separable 3-class problem (no dataset generation in unit tests)."""
    gen = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.randn(3, 12, generator=gen)
    y = torch.randint(0, 3, (240,), generator=gen)
    x = centers[y] + torch.randn(240, 12, generator=gen)
    return Split(x[:160], y[:160], x[160:], y[160:], 3, "toy")


TINY = dict(widths=[16, 64], lrs=[0.05, 0.2, 0.8], rhos=[0.0, 0.1], base_width=16, epochs=2, batch_size=32,
            progress=False)


@pytest.fixture(scope="module")
def result(data):
    return mt.sweep(data, **TINY)


def test_sweep_shapes_and_ranges(result):
    acc = np.asarray(result["acc"])
    assert acc.shape == (2, 2, 3, 2)
    assert np.asarray(result["acc_seeds"]).shape == (2, 2, 3, 2, 1)
    assert np.asarray(result["diverged"]).shape == acc.shape
    assert ((acc >= 0) & (acc <= 1)).all()
    assert acc.max() > 0.6, "a separable toy problem should be learned by the best grid point"


def test_sweep_is_reproducible(data, result):
    again = mt.sweep(data, **TINY)
    assert again["acc"] == result["acc"]


def test_base_width_is_the_same_run_for_both_schemes(data, result):
    """Every factor is 1 at n = n0: SP-SAM and muP^2-SAM must train identically there, and differ above it."""
    assert mt.base_width_gap(result, 16) == 0.0
    a = mt.train_point(data, "SP-SAM", 16, 0.2, 0.1, base_width=16, epochs=2, batch_size=32)
    b = mt.train_point(data, "muP2-SAM", 16, 0.2, 0.1, base_width=16, epochs=2, batch_size=32)
    assert a["train_loss"] == b["train_loss"] and a["acc"] == b["acc"]
    c = mt.train_point(data, "SP-SAM", 64, 0.2, 0.1, base_width=16, epochs=2, batch_size=32)
    d = mt.train_point(data, "muP2-SAM", 64, 0.2, 0.1, base_width=16, epochs=2, batch_size=32)
    assert c["train_loss"] != d["train_loss"]


def test_rho_zero_is_sam_with_zero_radius(data):
    """The SGD shortcut for rho = 0 gives the same training as SAM's two passes with a zero perturbation."""
    from lionsnb.mup2 import WidthMLP, make_sam, scaling_table
    from lionsnb.sam.steps import sam_step
    from lionsnb.training import fit

    run = mt.train_point(data, "muP2-SAM", 64, 0.2, 0.0, base_width=16, epochs=2, batch_size=32, seed=3)
    torch.manual_seed(3)
    model = WidthMLP(12, 64, 3, "mup", 16)
    opt = make_sam(model, scaling_table("mup2", width=64, base_width=16), lr=0.2, rho=0.0)
    hist = fit(model, data.x_train, data.y_train, epochs=2, optimizer=opt, step=sam_step, batch_size=32,
               x_test=data.x_test, y_test=data.y_test, seed=3, progress=False)
    assert math.isclose(run["train_loss"], hist.train_loss[-1], rel_tol=1e-5)
    assert run["acc"] == hist.test_acc[-1]


def test_grid_argmax_and_optima(result):
    assert mt.grid_argmax_reference([[0.1, 0.5], [0.5, 0.2]]) == (0, 1)  # ties: first in row-major order
    assert mt.grid_argmax_reference([[0.0, 0.1, 0.2], [0.9, 0.3, 0.0]]) == (1, 0)
    with pytest.raises(ValueError):
        mt.grid_argmax_reference([1.0, 2.0])
    opt = mt.optima(result)
    for s, scheme in enumerate(result["schemes"]):
        for w, row in enumerate(opt[scheme]):
            assert row["acc"] == np.asarray(result["acc"][s][w]).max()
            assert row["lr"] == result["lrs"][row["i"]] and row["rho"] == result["rhos"][row["j"]]


def test_transfer_summary_on_a_constructed_grid():
    """Optimum fixed for one scheme, moving for the other: spreads and regret come out as constructed."""
    lrs, rhos = [0.1, 0.2, 0.4, 0.8], [0.0, 0.1, 0.2]
    fixed = np.zeros((3, 4, 3))
    fixed[:, 1, 1] = 0.9
    moving = np.zeros((3, 4, 3))
    for w in range(3):
        moving[w, 3 - w, w] = 0.8
    res = {"schemes": ["SP-SAM", "muP2-SAM"], "widths": [16, 64, 256], "lrs": lrs, "rhos": rhos,
           "acc": [moving.tolist(), fixed.tolist()]}
    summary = mt.transfer_summary(res)
    assert summary["muP2-SAM"]["spread_log2_lr"] == 0 and summary["muP2-SAM"]["spread_rho"] == 0
    assert summary["muP2-SAM"]["regret"] == 0
    assert summary["SP-SAM"]["spread_log2_lr"] == pytest.approx(2.0)
    assert summary["SP-SAM"]["spread_rho"] == pytest.approx(0.2)
    assert summary["SP-SAM"]["regret"] == pytest.approx(0.8)


def test_rho_factor_formula_matches_the_table_and_the_optimizer():
    for r in (0.5, 1.0, 4.0, 16.0):
        assert mt.mup2_rho_factors_reference(r) == pytest.approx(mt.table_rho_factors(r, 64))
    assert mt.mup2_rho_factors_reference(4.0) == pytest.approx((4.0, 1.0, 0.25))
    assert mt.first_step_error(width=256, base_width=64) < 1e-12


def test_exercise_checks_accept_the_reference_and_reject_wrong_answers():
    assert mt.check_exercise_rho_factors(mt.mup2_rho_factors_reference).status == "solved"
    assert mt.check_exercise_rho_factors(lambda r: (1.0, 1.0, 1.0)).status == "incorrect"
    assert mt.check_exercise_argmax(mt.grid_argmax_reference).status == "solved"
    assert mt.check_exercise_argmax(lambda g: np.unravel_index(np.argmin(g), np.shape(g))).status == "incorrect"


def test_bad_input_and_knobs_are_rejected(data):
    with pytest.raises(ValueError, match="scheme"):
        mt.train_point(data, "SP", 16, 0.1, 0.1, base_width=16, epochs=1, batch_size=32)
    with pytest.raises(ValueError):
        mt.sweep(data, widths=[16], lrs=[0.0], rhos=[0.1], base_width=16, epochs=1, batch_size=32, progress=False)
    with pytest.raises(ValueError):
        mt.base_width_gap({"widths": [32, 64], "acc": []}, 16)
    with pytest.raises(ParameterError):
        mt.setup("smoke", momentum=1.0)
    with pytest.raises(ParameterError):
        mt.setup("smoke", contour=0.0)
    with pytest.raises(ParameterError):
        mt.setup("smoke", dataset="imagenet")


def test_profiles_contain_the_base_width_first():
    for profile, sizes in mt.SPEC.profiles.items():
        assert sizes["widths"][0] == sizes["base_width"], profile
        assert list(sizes["widths"]) == sorted(sizes["widths"]) and 0.0 in sizes["rhos"]
