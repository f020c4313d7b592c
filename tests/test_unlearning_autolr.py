"""GeN's automatic learning rate (lionsnb.unlearning.autolr): the 3-point closed form, the fitted optimum on an exact
quadratic, the smoothing band, the probe's bookkeeping, the fallback, and parity with ``gen-optim``'s lr_parabola."""
from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from lionsnb.unlearning import AutoLR, gen_closed_form, gen_fit, gen_lr_update, lr_parabola
from lionsnb.unlearning.autolr import ParabolaFit


def test_closed_form_equals_least_squares_and_curve_fit_through_three_points():
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(0)
    for _ in range(20):
        lr = float(rng.uniform(1e-4, 1.0))
        L0, yp, ym = rng.normal(size=3)
        fit = gen_fit(lr, [-1, 1, 0], [L0 + ym, L0 + yp, L0])
        closed = gen_closed_form(lr, yp, ym)
        assert fit.A == pytest.approx(closed.A, rel=1e-9) and fit.B == pytest.approx(closed.B, rel=1e-9)
        assert fit.r2 == pytest.approx(1.0, abs=1e-9)
        x = np.array([-1.0, 1.0, 0.0]) * lr
        (A, B), _ = curve_fit(lambda x, a, b: 0.5 * a * x ** 2 - b * x, x, np.array([ym, yp, 0.0]))
        assert fit.A == pytest.approx(A, rel=1e-6) and fit.B == pytest.approx(B, rel=1e-6)
        if closed.A != 0:
            assert closed.x_opt == pytest.approx(lr * (ym - yp) / (2 * (yp + ym)), rel=1e-12)


def _quadratic(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    H = M @ M.T + n * torch.eye(n, dtype=torch.float64)
    w_star = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
    return H, w_star, w, (lambda: 0.5 * (w - w_star) @ H @ (w - w_star))


def test_fitted_optimum_on_an_exact_quadratic_is_the_newton_step_along_the_gradient():
    H, w_star, w, loss = _quadratic()
    opt = torch.optim.SGD([w], lr=0.01)
    loss().backward()
    g = w.grad.detach().clone()
    w0 = w.detach().clone()
    res = lr_parabola([w], opt, lambda: loss(), smooth=0.0)
    x_true = float(g @ g / (g @ H @ g))  # argmin_x L(w - x g) for an exact quadratic
    assert res.x_opt == pytest.approx(x_true, rel=1e-8)
    assert res.accepted and res.r2 == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(w.detach(), w0)                         # parameters exactly back at w_t
    assert res.lr_after == pytest.approx(min(max(x_true, 0.005), 0.02))  # smooth 0: the clipped optimum


def test_one_lazy_update_changes_lr_by_a_factor_in_095_110():
    rng = np.random.default_rng(1)
    for _ in range(200):
        lr = float(rng.uniform(1e-3, 1))
        fit = ParabolaFit(A=float(rng.lognormal()), B=float(rng.lognormal()), r2=1.0)
        new = gen_lr_update(lr, fit, smooth=0.9)
        assert 0.95 * lr - 1e-15 <= new <= 1.10 * lr + 1e-15
        assert np.sign(new - lr) == np.sign(np.log(fit.x_opt / lr)) or new == lr
    assert gen_lr_update(0.1, ParabolaFit(A=-1.0, B=1.0, r2=1.0)) == 0.1      # concave: unchanged
    assert gen_lr_update(0.1, ParabolaFit(A=1.0, B=-1.0, r2=1.0)) == 0.1      # ascent direction: unchanged
    assert gen_lr_update(0.1, ParabolaFit(A=1.0, B=1.0, r2=0.5)) == 0.1       # poor fit: unchanged


def test_fallback_halves_lr_when_the_fit_fails():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.2)
    w.grad = torch.ones(3)
    calls = iter([float("nan"), 1.0, 0.5])
    res = lr_parabola([w], opt, lambda: next(calls))
    assert res.failed and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert torch.equal(w.detach(), torch.ones(3))


def test_lr_factor_needs_exactly_one_zero_and_is_not_mutated():
    w = torch.nn.Parameter(torch.ones(2))
    w.grad = torch.ones(2)
    opt = torch.optim.SGD([w], lr=0.1)
    factors = [-1, 1, 0.5]
    with pytest.raises(ValueError, match="exactly one 0"):
        lr_parabola([w], opt, lambda: 1.0, lr_factor=factors)
    factors = [0, -1, 1]
    lr_parabola([w], opt, lambda: float(w.sum()), lr_factor=factors)
    assert factors == [0, -1, 1]


def test_autolr_schedule_and_validation():
    auto = AutoLR(lazy_freq=4)
    assert [s for s in range(12) if auto.due(s)] == [3, 7, 11]
    with pytest.raises(ValueError):
        AutoLR(lazy_freq=0)
    with pytest.raises(ValueError):
        AutoLR(smooth=1.5)


# --------------------------------------------------------------------------------------------- parity with GeN


def _net_and_data(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(16, 5, generator=g, dtype=torch.float64),
                torch.randn(16, 3, generator=g, dtype=torch.float64)) for _ in range(4)]
    return net, batches


@pytest.mark.skipif(importlib.util.find_spec("GeN") is None, reason="gen-optim (module GeN) is not installed")
@pytest.mark.parametrize("kind,lr", [("sgd", 0.05), ("sgd", 0.5), ("adamw", 1e-2), ("adamw", 1e-3)])
def test_matches_gen_optim_lr_parabola(kind, lr):
    from GeN import lr_parabola as gen_lr_parabola

    criterion = torch.nn.MSELoss()
    net_a, batches = _net_and_data()
    net_b = copy.deepcopy(net_a)

    def make_opt(net):
        return (torch.optim.SGD(net.parameters(), lr=lr) if kind == "sgd"
                else torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01))

    opt_a, opt_b = make_opt(net_a), make_opt(net_b)
    for step in range(3):
        x, y = batches[step]
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            opt.zero_grad()
            criterion(net(x), y).backward()
        nxt = batches[step + 1]
        gen_lr_parabola(net_a, opt_a, criterion, tr_iter=iter([nxt]), device="cpu", task="image_cls",
                        lr_factor=[-1, 0, 1])
        lr_parabola(list(net_b.parameters()), opt_b, lambda: criterion(net_b(nxt[0]), nxt[1]))
        assert opt_b.param_groups[0]["lr"] == pytest.approx(opt_a.param_groups[0]["lr"], rel=1e-8)
        for pa, pb in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(pa.data, pb.data)  # both back at w_t, bit for bit
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(pa.data, pb.data, rtol=1e-12, atol=1e-14)
