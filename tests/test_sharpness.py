"""The start-here primer: properties that break if the method were implemented wrongly."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lionsnb.sharpness as sh
import lionsnb.sharpness.nb00_start_here as nb
from lionsnb.datasets import load_digits


@pytest.fixture(scope="module")
def surface():
    return sh.TwoBasinSurface()


@pytest.fixture(scope="module")
def digits():
    return load_digits(n_train=300)


def test_closed_form_gradient_matches_autograd(surface):
    w = torch.tensor([[0.3, -0.7], [-1.1, 0.2], [2.0, 1.0]], dtype=torch.float64)
    for point in w:
        assert torch.allclose(surface.grad(point), torch.func.grad(surface.loss)(point), atol=1e-12)
    assert surface.grad(w).shape == (3, 2)


def test_minima_are_stationary_and_sharpness_is_as_designed(surface):
    for which in ("sharp", "flat"):
        assert surface.grad(surface.minimum(which)).norm() < 1e-12
    # near a Gaussian well's centre the Hessian is depth / width^2 (slightly bent by the other well)
    assert surface.sharpness(surface.minimum("sharp")) == pytest.approx(1.0 / 0.2 ** 2, rel=0.02)
    assert surface.sharpness(surface.minimum("flat")) == pytest.approx(0.8 / 1.0 ** 2, rel=0.02)


def test_gd_threshold_is_exactly_two_over_lambda(surface):
    """Linear stability: lr slightly below 2/lambda converges to the sharp minimum, slightly above does not."""
    lam = surface.sharpness(surface.minimum("sharp"))
    runs = sh.surface_lr_sweep(surface, [0.97 * 2 / lam, 1.03 * 2 / lam], steps=2000)
    outcomes = [r["outcome"] for r in runs.values()]
    assert outcomes[0] == "sharp" and outcomes[1] != "sharp"
    summary = sh.stability_summary(runs, lam)
    assert summary["stability_violations_2d"] == 0
    assert summary["largest_lr_converging_to_sharp_times_sharpness"] == pytest.approx(1.94)
    assert summary["smallest_lr_leaving_sharp_times_sharpness"] == pytest.approx(2.06)


def test_batched_gd_equals_single_runs(surface):
    w0 = torch.tensor([-0.9, 0.1], dtype=torch.float64)
    batch = sh.gradient_descent(surface, w0, [0.05, 0.5], 30)
    for i, lr in enumerate([0.05, 0.5]):
        assert torch.allclose(batch[:, i], sh.gradient_descent(surface, w0, lr, 30))


def test_power_iteration_on_known_spectrum():
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = q @ torch.diag(torch.tensor([4.0, 2.0, 1, 1, 0.5, 0.1, 0, -1], dtype=torch.float64)) @ q.T
    value, v = sh.power_iteration(lambda x: A @ x, 8, iters=200, dtype=torch.float64)
    assert value == pytest.approx(4.0, rel=1e-8)
    assert abs(float(v @ q[:, 0])) == pytest.approx(1.0, rel=1e-6)


def test_hvp_equals_exact_hessian_product(digits):
    torch.manual_seed(0)
    model = sh.load_mlp  # noqa: F841  (the same MLP class is used below)
    from lionsnb.models import MLP

    net = MLP(64, [4], 10, torch.nn.Tanh).double()
    x, y = digits.x_train[:50].double(), digits.y_train[:50]
    H = sh.exact_hessian(net, F.cross_entropy, x, y)
    params = list(net.parameters())
    v = [torch.randn_like(p) for p in params]
    hv = sh.hessian_vector_product(F.cross_entropy(net(x), y), params, v)
    flat_v = torch.cat([t.reshape(-1) for t in v])
    assert torch.allclose(torch.cat([t.reshape(-1) for t in hv]), H @ flat_v, atol=1e-10)


def test_power_iteration_matches_exact_top_eigenvalue_of_network(digits):
    check = sh.power_iteration_check(digits, hidden=4, n=100, steps=100)
    assert check["rel_error"] < 1e-4


def test_worst_case_loss(surface):
    w = surface.minimum("sharp")
    assert sh.worst_case_loss(surface, w, 0.0) == pytest.approx(float(surface.loss(w)))
    small = sh.worst_case_loss(surface, w, 0.01)
    # at a minimum, the worst case over a small ball is L* + lambda rho^2 / 2
    assert small == pytest.approx(sh.quadratic_worst_case(float(surface.loss(w)), surface.sharpness(w), 0.01),
                                  rel=1e-4)
    assert sh.worst_case_loss(surface, w, 0.1) >= small
    with pytest.raises(ValueError):
        sh.worst_case_loss(surface, w, -0.1)


def test_flip_radius_matches_prediction(surface):
    curves = sh.worst_case_curves(surface, [i / 200 for i in range(61)])
    measured, predicted = sh.flip_radius(curves), sh.predicted_flip_radius(curves)
    assert math.isfinite(measured) and 0.9 < measured / predicted < 1.2


def test_sam_landscape_is_an_upper_envelope(surface):
    base = sh.sam_landscape(surface, 0.0, 21)
    lifted = sh.sam_landscape(surface, 0.2, 21)
    assert (lifted >= base - 1e-12).all() and (lifted > base).any()


def test_sam_perturbation_is_the_steepest_first_order_ascent(digits):
    g = torch.tensor([3.0, 4.0])
    assert torch.allclose(sh.sam_perturbation(g, 0.5), torch.tensor([0.3, 0.4]))
    assert torch.equal(sh.sam_perturbation(torch.zeros(3), 0.1), torch.zeros(3))
    run = sh.train_full_batch_gd(digits, 0.5, 16, 50, 50, 5, seed=0)
    model = sh.load_mlp(run["state"], digits, 16)
    gain = sh.ascent_vs_random(model, digits, sh.sam_perturbation, rho=0.05)
    assert gain["sam"] > gain["random_best"]


def test_full_batch_gd_records_and_stays_below_the_edge(digits):
    runs = {lr: sh.train_full_batch_gd(digits, lr, 16, 200, 100, 10, seed=0) for lr in (0.1, 0.8)}
    for lr, run in runs.items():
        assert run["step"] == [0, 100, 200] and not run["diverged"]
        assert lr * run["sharpness"][-1] < 2.2  # stability bound, with a small power-iteration tolerance
    summary = sh.summarise_mlp_runs(runs)
    assert summary["stable_lrs"] == [0.1, 0.8] and summary["metrics"]["flatness_ratio"] > 1.0


def test_diverging_run_is_detected(digits):
    run = sh.train_full_batch_gd(digits, 50.0, 16, 40, 20, 5, seed=0)
    assert run["diverged"]
    with pytest.raises(RuntimeError, match="diverged"):
        sh.summarise_mlp_runs({50.0: run})


def test_exercise_checkers_accept_correct_and_reject_wrong_solutions():
    def good_eig(A, iters=100):
        v = torch.ones(A.shape[0], dtype=A.dtype)
        for _ in range(iters):
            v = A @ v
            v = v / v.norm()
        return float(v @ (A @ v))

    assert nb.check_exercise_top_eigenvalue(good_eig).status == "solved"
    assert nb.check_exercise_top_eigenvalue(lambda A, iters=100: float(A.trace())).status == "incorrect"
    assert nb.check_exercise_sam_perturbation(lambda g, rho: rho * g / (g.norm() + 1e-12)).status == "solved"
    assert nb.check_exercise_sam_perturbation(lambda g, rho: rho * g).status == "incorrect"
