"""muP^2 notebook 2 (transfer): the batched grid trainer against the SAM optimizer, sweep shapes, the base-width
identity, the analysis on constructed grids, exercises and knobs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lionsnb.mup2.nb02_transfer as mt
from lionsnb.datasets import Split
from lionsnb.mup2 import mean_loss, optimum, rho_response, train_grid, transfer_summary, transfer_sweep
from lionsnb.params import ParameterError


@pytest.fixture(scope="module")
def data() -> Split:
    """A small separable 3-class problem (no dataset generation in unit tests)."""
    gen = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.randn(3, 12, generator=gen)
    y = torch.randint(0, 3, (240,), generator=gen)
    x = centers[y] + torch.randn(240, 12, generator=gen)
    return Split(x[:160], y[:160], x[160:], y[160:], 3, "toy")


TINY = dict(widths=[16, 64], lrs=[0.05, 0.2, 0.8], rhos=[0.0, 0.1], seeds=[0, 1], base_width=16, epochs=2,
            batch_size=32, progress=False)


@pytest.fixture(scope="module")
def result(data):
    return transfer_sweep(data, **TINY)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_batched_training_equals_the_sam_optimizer_network_by_network(momentum):
    """Each batched network = the same network trained alone by make_sam + sam_step + fit (float64), both schemes,
    rho = 0 (SGD) included, with and without momentum."""
    assert mt.batched_vs_optimizer(momentum=momentum) < 1e-9


def test_base_width_is_the_same_run_for_both_schemes(data, result):
    """Every factor is 1 at n = n0: SP-SAM and muP^2-SAM train identically there (and differ above it)."""
    assert mt.base_identity_gap() == 0.0
    runs = [train_grid(data, scheme, 16, [0.2], [0.1], [0], base_width=16, epochs=2, batch_size=32)
            for scheme in mt.SCHEME_NAMES]
    assert runs[0]["train_loss"][0] == runs[1]["train_loss"][0]
    wide = [train_grid(data, scheme, 64, [0.2], [0.1], [0], base_width=16, epochs=2, batch_size=32)
            for scheme in mt.SCHEME_NAMES]
    assert wide[0]["train_loss"][0] != wide[1]["train_loss"][0]
    # without sharing, the sweep's base-width column is the same for both schemes anyway
    again = transfer_sweep(data, **{**TINY, "widths": [16]}, share_base=False)
    assert again["train_loss"][0] == again["train_loss"][1]


def test_sweep_shapes_ranges_and_reproducibility(data, result):
    loss = np.asarray(result["train_loss"])
    assert loss.shape == (2, 2, 3, 2, 2)
    for key in ("test_loss", "test_acc", "diverged"):
        assert np.asarray(result[key]).shape == loss.shape
    acc = np.asarray(result["test_acc"])
    assert ((acc >= 0) & (acc <= 1)).all()
    assert np.nanmin(loss) < 0.5 and acc.max() > 0.6, "a separable toy problem should be learned at the best point"
    assert transfer_sweep(data, **TINY)["train_loss"] == result["train_loss"]


def test_chunking_does_not_change_the_result(data, result):
    chunked = transfer_sweep(data, **TINY, max_networks=5)
    assert np.allclose(chunked["train_loss"], result["train_loss"], rtol=1e-6)
    by_memory = transfer_sweep(data, **TINY, max_elements=2e4)  # a few networks of width 64 at a time
    assert np.allclose(by_memory["train_loss"], result["train_loss"], rtol=1e-6)


def test_divergence_is_marked_not_averaged(data):
    run = train_grid(data, "SP-SAM", 64, [1e4, 0.1], [0.0, 0.0], [0, 0], base_width=16, epochs=1, batch_size=32)
    assert list(run["diverged"]) == [True, False]
    assert math.isinf(run["train_loss"][0]) and run["test_acc"][0] == pytest.approx(1 / 3)


def constructed(best_sp, best_mp, widths=(16, 64, 256), lrs=(0.1, 0.2, 0.4, 0.8), rhos=(0.0, 0.1), seeds=2):
    """A result whose loss is 1 everywhere except 0.5 at the given lr index per width (rho index 0)."""
    loss = np.ones((2, len(widths), len(lrs), len(rhos), seeds))
    for s, best in enumerate((best_sp, best_mp)):
        for w, i in enumerate(best):
            loss[s, w, i, 0, :] = 0.5 - 0.01 * w  # wider is better at the optimum
    return {"schemes": ["SP-SAM", "muP2-SAM"], "widths": list(widths), "lrs": list(lrs), "rhos": list(rhos),
            "seeds": list(range(seeds)), "epochs": 1, "train_loss": loss.tolist(),
            "test_acc": np.full(loss.shape, 0.5).tolist()}


def test_transfer_summary_on_a_constructed_grid():
    """Optimum fixed for one scheme, moving by one grid step per width for the other."""
    res = constructed(best_sp=(3, 2, 1), best_mp=(1, 1, 1))
    summary = transfer_summary(res, 0)
    assert summary["muP2-SAM"]["shift_log2_lr"] == 0 and summary["muP2-SAM"]["regret"] == 0
    assert summary["SP-SAM"]["shift_log2_lr"] == pytest.approx(-2.0)
    assert summary["SP-SAM"]["spread_log2_lr"] == pytest.approx(2.0)
    assert summary["SP-SAM"]["regret"] == pytest.approx(1.0 - 0.48)
    assert summary["SP-SAM"]["seed_spread_log2_lr"] == 0  # both seeds agree
    assert summary["muP2-SAM"]["wider_is_better"] == 1.0
    assert summary["SP-SAM"]["lr_at_edge"] == 1


def test_mean_loss_marks_a_cell_where_any_seed_diverged():
    res = constructed(best_sp=(1, 1, 1), best_mp=(1, 1, 1))
    loss = np.asarray(res["train_loss"])
    loss[0, 0, 2, 1, 0] = np.inf
    res["train_loss"] = loss.tolist()
    mean = mean_loss(res)
    assert np.isinf(mean[0, 0, 2, 1]) and mean[0, 0, 2, 0] == 1.0
    assert optimum([[np.inf, 0.4], [0.2, np.nan]]) == (1, 0)
    assert optimum([[0.1, 0.5], [0.1, 0.2]]) == (0, 0)  # ties: first in row-major order
    with pytest.raises(ValueError):
        optimum([1.0, 2.0])


def test_rho_response_is_zero_at_rho_zero(result):
    resp = rho_response(result)
    for scheme in result["schemes"]:
        assert np.allclose(resp[scheme][:, 0], 0.0)


def test_tables_and_figures(result):
    from lionsnb.plotting import unlabelled_axes

    j = result["rhos"].index(0.1)
    assert len(mt.optima_table(result, j)) == 4
    assert len(mt.summary_table(transfer_summary(result, j))) > 0
    joint = mt.joint_optima(result)
    assert set(joint) == set(mt.SCHEME_NAMES) and len(mt.joint_table(joint)) == 4
    for draw, kwargs in ((mt.draw_lr_curves, {"rho": 0.1}), (mt.draw_heatmaps, {}),
                         (mt.draw_width, {"width": 64, "scheme": "SP-SAM"})):
        fig = mt.figure(10, 4)
        draw(fig, result=result, **kwargs)
        assert unlabelled_axes(fig) == [], draw.__name__


def test_rho_factor_formula_matches_the_table_and_the_optimizer():
    assert mt.factor_error(64) < 1e-12
    assert mt.mup2_rho_factors_reference(4.0) == pytest.approx((4.0, 1.0, 0.25))
    assert mt.first_step_error(width=256, base_width=64) < 1e-12


def test_exercise_checks_accept_the_reference_and_reject_wrong_answers():
    assert mt.check_exercise_rho_factors(mt.mup2_rho_factors_reference).status == "solved"
    assert mt.check_exercise_rho_factors(lambda r: (1.0, 1.0, 1.0)).status == "incorrect"
    assert mt.check_exercise_argmin(mt.grid_argmin_reference).status == "solved"
    assert mt.check_exercise_argmin(lambda g: np.unravel_index(np.argmax(g), np.shape(g))).status == "incorrect"


def test_bad_input_and_knobs_are_rejected(data):
    with pytest.raises(ValueError, match="scheme"):
        train_grid(data, "SP", 16, [0.1], [0.1], [0], base_width=16, epochs=1, batch_size=32)
    with pytest.raises(ValueError):
        train_grid(data, "SP-SAM", 16, [0.0], [0.1], [0], base_width=16, epochs=1, batch_size=32)
    with pytest.raises(ValueError):
        train_grid(data, "SP-SAM", 16, [0.1, 0.2], [0.1], [0], base_width=16, epochs=1, batch_size=32)
    with pytest.raises(ParameterError):
        mt.setup("smoke", momentum=1.0)
    with pytest.raises(ParameterError):
        mt.setup("smoke", rho=-0.1)
    with pytest.raises(ParameterError):
        mt.setup("smoke", dataset="imagenet")


def test_profiles_contain_the_base_width_first():
    for profile, sizes in mt.SPEC.profiles.items():
        assert sizes["widths"][0] == sizes["base_width"], profile
        assert list(sizes["widths"]) == sorted(sizes["widths"]) and 0.0 in sizes["rhos"]
        assert len(sizes["seeds"]) >= (3 if profile != "smoke" else 1)
