"""BiSAM notebook (lionsnb.sam.nb03_bisam): bounds, gradients and steps checked against hand computations and
independent re-derivations in float64; the flip counter on hand-made cases; the experiments on tiny sizes."""
from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

matplotlib.use("Agg")

import lionsnb.sam.nb03_bisam as m  # noqa: E402
from lionsnb.datasets import load_digits  # noqa: E402
from lionsnb.methods import get_method  # noqa: E402
from lionsnb.models import MLP  # noqa: E402
from lionsnb.params import ParameterError  # noqa: E402
from lionsnb.plotting import unlabelled_axes  # noqa: E402

GAMMA = math.log(math.e - 1)


def phi_log_by_hand(x: float) -> float:
    return 1.0 - math.log(1.0 + math.exp(GAMMA - x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- surrogates

def test_phi_log_values_and_slope_at_hand_points():
    x = torch.tensor([0.0, GAMMA, -1.0, 2.0, 60.0, -200.0], dtype=torch.float64, requires_grad=True)
    y = m.phi_log(x)
    v = y.detach()
    assert float(v[0]) == pytest.approx(0.0, abs=1e-15)              # phi_log(0) = 0 exactly by the choice of gamma
    assert float(v[1]) == pytest.approx(1.0 - math.log(2.0), abs=1e-15)
    assert float(v[2]) == pytest.approx(phi_log_by_hand(-1.0), abs=1e-15)
    assert float(v[3]) == pytest.approx(phi_log_by_hand(2.0), abs=1e-15)
    assert float(v[4]) == pytest.approx(1.0, abs=1e-15)              # bounded by 1
    assert float(v[5]) == pytest.approx(1.0 - (GAMMA + 200.0), rel=1e-12)  # finite, asymptotically linear
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert float(grad[0]) == pytest.approx((math.e - 1) / math.e, abs=1e-15)  # phi' = sigmoid(gamma - x)
    assert float(grad[3]) == pytest.approx(sigmoid(GAMMA - 2.0), abs=1e-15)


def test_phi_tanh_value_and_gradient():
    x = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    y = m.phi_tanh(x, 0.5)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert float(y.detach()) == pytest.approx(math.tanh(1.5), abs=1e-15)
    assert float(grad) == pytest.approx(0.5 / math.cosh(1.5) ** 2, abs=1e-15)


@pytest.mark.parametrize("kind,mu,alpha", [("log", 2.0, 0.1), ("tanh", 1.0, 0.5), ("tanh", 10.0, 0.1)])
def test_bisam_loss_and_its_logit_gradient_by_hand(kind, mu, alpha):
    """logits (1, 2, 0), label 0: F = (0, 1, -1); Q = log sum_j exp(mu phi(F_j)), dQ/dF_j = softmax_j mu phi'(F_j),
    dQ/df_k = dQ/dF_k for k != y and dQ/df_y = -sum_{j != y} dQ/dF_j."""
    phi = phi_log_by_hand if kind == "log" else (lambda v: math.tanh(alpha * v))
    dphi = (lambda v: sigmoid(GAMMA - v)) if kind == "log" else (lambda v: alpha / math.cosh(alpha * v) ** 2)
    F_ = [0.0, 1.0, -1.0]
    terms = [math.exp(mu * phi(v)) for v in F_]
    q = math.log(sum(terms))
    dF = [t / sum(terms) * mu * dphi(v) for t, v in zip(terms, F_)]
    expected_grad = [-(dF[1] + dF[2]), dF[1], dF[2]]
    logits = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    value = m.bisam_loss(logits, torch.tensor([0]), kind, mu, alpha)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert float(value.detach()) == pytest.approx(q, abs=1e-14)
    assert grad[0].tolist() == pytest.approx(expected_grad, abs=1e-14)


def test_vectorised_shift_has_the_gradient_of_an_in_place_row_loop():
    """The official code shifts the logits row by row, in place; the gather version must agree in float64."""
    g = torch.Generator().manual_seed(3)
    logits = 4 * torch.randn(20, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 7, (20,), generator=g)
    for kind, mu in (("log", 1.0), ("tanh", 10.0)):
        a = logits.clone().requires_grad_(True)
        (grad_vec,) = torch.autograd.grad(m.bisam_loss(a, targets, kind, mu).sum(), a)
        b = logits.clone().requires_grad_(True)
        shifted = b * 1.0  # a non-leaf copy that may be modified in place
        for i in range(len(targets)):
            shifted[i] = shifted[i] - shifted[i, targets[i]].clone()
        phi = m.phi_log(shifted) if kind == "log" else m.phi_tanh(shifted, 0.1)
        (grad_loop,) = torch.autograd.grad(torch.logsumexp(mu * phi, -1).sum(), b)
        assert torch.allclose(grad_vec, grad_loop, atol=1e-13, rtol=0)
    assert torch.equal(m.logit_shift(logits, targets), m.logit_shift_loop(logits, targets))
    assert m.shift_gradient_error("log") < 1e-13 and m.shift_gradient_error("tanh", mu=10.0) < 1e-13


def test_bounds_hold_and_a_wrong_bound_is_caught():
    checks = m.bound_checks([0.5, 1.0, 10.0], [0.1, 1.0], n_random=300)
    assert checks["lower_bound_violations"] == 0 and checks["upper_bound_violations"] == 0
    assert checks["phi_log_at_zero"] < 1e-15
    # the same comparison fails for a quantity that is *not* a lower bound: Q without the log(K)/mu shift
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 10, (500,), generator=g)
    q_unshifted = m.bisam_loss(logits, targets, "log", 1.0)
    assert (q_unshifted > m.zero_one_loss(logits, targets)).any()
    # natural-log CE is not an upper bound (log 2 < 1) while CE in bits is: a barely misclassified sample
    barely = torch.tensor([[0.0, 0.01]], dtype=torch.float64)
    label0 = torch.tensor([0])
    assert float(m.zero_one_loss(barely, label0)) == 1.0
    assert float(F.cross_entropy(barely, label0)) < 1.0 <= float(m.ce_upper_bound(barely, label0))


def test_gradient_weight_matches_closed_forms():
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    assert torch.allclose(m.gradient_weight("ce", x), torch.sigmoid(x), atol=1e-14)
    mu = 2.0
    expected = mu * torch.sigmoid(GAMMA - x) * torch.sigmoid(mu * m.phi_log(x))
    assert torch.allclose(m.gradient_weight("log", x, mu), expected, atol=1e-14)
    # CE's weight grows on the wrong side, Q_log's vanishes there
    far = torch.tensor([8.0], dtype=torch.float64)
    assert float(m.gradient_weight("ce", far)) > 0.99 and float(m.gradient_weight("log", far)) < 0.01


# ----------------------------------------------------------------------------- steps

def test_bisam_first_step_moves_along_grad_q():
    for kind, mu, alpha in (("log", 1.0, 0.1), ("tanh", 10.0, 0.1)):
        check = m.first_step_check(kind, mu, alpha, rho=0.3, seed=1)
        assert check["first_step_error"] < 1e-14
        assert check["norm"] == pytest.approx(0.3, rel=1e-9)
        assert check["cos_bisam_sam"] < 0.9999  # BiSAM's perturbation is not SAM's


def test_bisam_training_steps_equal_an_independent_derivation():
    """Three BiSAM (tanh, mu 10, alpha 0.5) steps via make_method + fit's step vs the algorithm written out."""
    torch.manual_seed(0)
    model = MLP(5, [7], 3, nn.Tanh).double()
    ref = MLP(5, [7], 3, nn.Tanh).double()
    ref.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g))
            for _ in range(3)]
    rho, lr, mom, wd, mu, alpha = 0.2, 0.1, 0.9, 5e-4, 10.0, 0.5
    opt, step = m.make_method("bisam_tanh", model, lr, rho, mu, alpha, momentum=mom, weight_decay=wd)
    for x, y in data:
        step(model, opt, x, y, m.training_loss)
    names = [n for n, _ in ref.named_parameters()]
    w = [p.detach().clone() for p in ref.parameters()]
    bufs = None

    def grad_of(loss_fn, weights, x, y):
        ws = [t.clone().requires_grad_(True) for t in weights]
        out = torch.func.functional_call(ref, dict(zip(names, ws)), (x,))
        return torch.autograd.grad(loss_fn(out, y).mean(), ws)

    for x, y in data:
        gq = grad_of(lambda o, t: torch.logsumexp(mu * torch.tanh(alpha * (o - o.gather(1, t[:, None]))), 1), w, x, y)
        norm = torch.sqrt(sum((a ** 2).sum() for a in gq))
        e = [rho * a / (norm + 1e-12) for a in gq]
        gp = grad_of(lambda o, t: m.smooth_cross_entropy(o, t, 0.1), [a + b for a, b in zip(w, e)], x, y)
        d = [a + wd * b for a, b in zip(gp, w)]
        bufs = d if bufs is None else [mom * b + di for b, di in zip(bufs, d)]
        w = [a - lr * b for a, b in zip(w, bufs)]
    for got, want in zip(model.parameters(), w):
        assert torch.allclose(got.detach(), want, atol=1e-12, rtol=0)


def test_perturbation_helper_equals_sam_first_step():
    torch.manual_seed(0)
    model = MLP(4, [6], 3, nn.Tanh).double()
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(10) % 3
    w0 = [p.detach().clone() for p in model.parameters()]
    e = m.perturbation(model, m.training_loss, x, y, 0.25)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), w0))  # the helper does not move the model
    opt = m.SAM(model.parameters(), torch.optim.SGD, rho=0.25, lr=0.1)
    m.training_loss(model(x), y).mean().backward()
    opt.first_step()
    for p, a, ei in zip(model.parameters(), w0, e):
        assert torch.allclose(p.detach() - a, ei, atol=1e-15)


# ----------------------------------------------------------------------------- flips

class Shifted(nn.Module):
    """Logits (0, x + b): class 1 iff x > -b. One parameter b."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return torch.stack([torch.zeros_like(x), x + self.b], -1)


def test_flip_counter_on_a_hand_made_case():
    model = Shifted()
    x = torch.tensor([-2.0, -0.05, 0.5, 2.0, -0.08], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1])  # the last point is wrong at w
    up = lambda logits, t: logits[:, 1]  # noqa: E731 - gradient w.r.t. b is 1, so e = +rho
    counts = m.count_flips(model, x, y, up, [0.1, 2.5])
    assert counts[0.1] == {"clean_errors": 1, "errors": 1, "flips": 1, "fixed": 1}  # -0.05 flips, -0.08 is fixed
    assert counts[2.5] == {"clean_errors": 1, "errors": 2, "flips": 2, "fixed": 1}  # -2 flips too
    down = lambda logits, t: -logits[:, 1]  # noqa: E731 - e = -rho
    assert m.count_flips(model, x, y, down, [0.6])[0.6]["flips"] == 1  # 0.5 - 0.6 < 0
    # per batch: every batch has the same gradient here, so the counts cannot change
    assert m.count_flips(model, x, y, up, [0.1, 2.5], batch_size=2, seed=3) == counts
    assert float(model.b.detach()) == 0.0  # restored


def test_perturbed_restores_by_copy_even_after_an_error():
    model = Shifted()
    with pytest.raises(RuntimeError):
        with m.perturbed(model, [torch.tensor([0.3], dtype=torch.float64)]):
            assert float(model.b.detach()) == pytest.approx(0.3)
            raise RuntimeError("boom")
    assert float(model.b.detach()) == 0.0


def test_misclassified_weight_share_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # the second sample is wrong
    y = torch.tensor([0, 0])
    ce = lambda o, t: F.cross_entropy(o, t, reduction="none")  # noqa: E731
    share = m.misclassified_weight_share(nn.Identity(), logits, y, ce)
    wrong_mass, right_mass = 2 * sigmoid(1.0), 2 * (1 - sigmoid(2.0))
    assert share == pytest.approx(wrong_mass / (wrong_mass + right_mass), abs=1e-14)
    assert m.misclassified_weight_share(nn.Identity(), logits[:1], y[:1], ce) == 0.0


# ----------------------------------------------------------------------------- experiments, tiny

def test_toy_experiment_tiny():
    toy = m.toy_experiment([0, 1], [0.2, 1.0], n=60, steps=60, grid=11)
    assert set(toy["flips"]) == {(k, r) for k in m.TOY_PERTURBATIONS for r in (0.2, 1.0)}
    assert all(len(v) == 2 and all(isinstance(c, int) and 0 <= c <= 60 for c in v) for v in toy["flips"].values())
    assert toy["toy"]["logits"].shape == (11, 11, 3) and toy["toy"][("log", 0.2)]["logits"].shape == (11, 11, 3)
    summary = m.toy_summary(toy, 0.2, "tanh")
    assert summary["toy_flips_surrogate_minus_ce"] == summary["toy_flips_tanh"] - summary["toy_flips_ce"]
    assert 0 <= summary["toy_wrong_share_ce"] <= 1
    fig = m.figure(12, 3)
    m.draw_toy(fig, rho=1.0, surrogate="log", toy=toy)
    assert unlabelled_axes(fig) == []


@pytest.fixture(scope="module")
def small_digits():
    return load_digits(n_train=150)


def test_flip_curve_tiny(small_digits):
    flips = m.flip_curve(small_digits, 0.1, [0.0, 0.5], [0, 1], hidden=(16,), batch_size=50)
    assert flips["epochs"] == [0, 1] and len(flips["clean_errors"]) == 2
    for k in m.PERTURBATIONS:
        assert [c["flips"] for c in flips["counts"][(k, 0.0)]] == [0, 0]  # rho = 0 flips nothing
    summary = m.flip_summary(flips, 0.5)
    assert summary["flips_log_minus_sce"] == summary["flips_log"] - summary["flips_sce"]
    fig = m.figure(10, 3)
    m.draw_flips(fig, rho=0.5, flips=flips)
    assert unlabelled_axes(fig) == []


def test_accuracy_runs_tiny_and_cost(small_digits):
    acc = m.accuracy_runs(small_digits, seeds=(0, 1), epochs=1, rho=0.1, hidden=(16,), batch_size=50)
    s = m.accuracy_summary(acc)
    assert s["grad_evals_sam"] == s["grad_evals_bisam_log"] == s["grad_evals_bisam_tanh"] == 2 * s["grad_evals_sgd"]
    assert s["grad_evals_sgd_2x"] == s["grad_evals_sam"]
    assert all(0 <= s[f"acc_{k}"] <= 1 for k in m.METHODS)
    assert "BiSAM (log)" in m.accuracy_table(acc).column("method")
    fig = m.figure(10, 3)
    m.draw_accuracy(fig, acc)
    assert unlabelled_axes(fig) == []
    with pytest.raises(ValueError, match="unknown method"):
        m.make_method("adam", m.make_model(small_digits, (4,), 0), 0.1, 0.1)


def test_surrogate_figure_is_labelled():
    curves = m.surrogate_curves([1.0], [0.1], points=51)
    fig = m.figure(12, 3)
    m.draw_surrogates(fig, mu=1.0, alpha=0.1, curves=curves)
    assert unlabelled_axes(fig) == []


# ----------------------------------------------------------------------------- exercises and spec

def test_exercise_checks_accept_the_reference_and_reject_wrong_answers():
    assert m.check_exercise_phi_log(m.phi_log).status == "solved"
    assert m.check_exercise_logit_shift(m.logit_shift).status == "solved"

    def stub(*args):
        raise NotImplementedError

    result = m.check_exercise_phi_log(stub)
    assert result.status == "not attempted" and result.fn is m.phi_log
    naive = lambda x: 1 - torch.log(1 + torch.exp(m.GAMMA - x))  # noqa: E731 - overflows for x = -200 in float32
    assert m.check_exercise_phi_log(naive).status == "incorrect"
    flipped_sign = lambda f, t: f.gather(1, t[:, None]) - f  # noqa: E731
    assert m.check_exercise_logit_shift(flipped_sign).status == "incorrect"


def test_spec_and_knobs():
    assert get_method("sam.nb03_bisam") is m.SPEC
    assert set(m.SPEC.parameter_names()) >= {"RHO", "SURROGATE", "MU", "ALPHA"}
    knobs = m.SPEC.validate_knobs({"rho": 0, "surrogate": "tanh"})
    assert knobs["rho"] == 0.0 and knobs["mu"] == 1.0
    for bad in ({"surrogate": "hinge"}, {"rho": -0.1}, {"mu": 0.0}, {"alpha": -1.0}):
        with pytest.raises(ParameterError):
            m.SPEC.validate_knobs(bad)
