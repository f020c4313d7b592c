"""muP^2: factor tables, the layerwise SAM step, equality with plain SAM at the base width, width slopes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lionsnb.mup2 as m
from lionsnb.sam import SAM

R = 4  # width / base width in the table tests


def factors(parameterization, variant="sam", optimizer="sgd", rho_scaling=None):
    t = m.scaling_table(parameterization, variant, optimizer, width=64 * R, base_width=64, rho_scaling=rho_scaling)
    return {k: (f.init_std, f.lr, f.rho, f.gradnorm) for k, f in t["layers"].items()}


@pytest.mark.parametrize("parameterization, variant, rho_scaling, expected", [
    # hand-derived from the bcd exponents (Haas et al. 2024, Table D.2), r = n / n0 = 4
    ("mup2", "sam", None, {"input": (1, R, R, R ** 0.5), "hidden": (R ** -0.5, 1, 1, R ** -0.5),
                           "output": (1 / R, 1 / R, 1 / R, R ** -1.5)}),
    ("mup2", "sam", "mup2_independent", {"input": (1, R, R, R ** 0.5), "hidden": (R ** -0.5, 1, 1, 1),
                                         "output": (1 / R, 1 / R, 1 / R, R ** -0.5)}),
    ("mup", "sam", "global", {"input": (1, R, R ** -0.5, 1), "hidden": (R ** -0.5, 1, R ** -0.5, 1),
                              "output": (1 / R, 1 / R, R ** -0.5, 1)}),
    ("mup", "sam", None, {"input": (1, R, 1, 1), "hidden": (R ** -0.5, 1, 1, 1), "output": (1 / R, 1 / R, 1, 1)}),
    ("sp", "sam", None, {"input": (1, 1, 1, 1), "hidden": (R ** -0.5, 1, 1, 1), "output": (R ** -0.5, 1, 1, 1)}),
    ("sp", "sam", "mup2", {"input": (1, 1, 1, R ** -0.5), "hidden": (R ** -0.5, 1, 1 / R, R ** -1.5),
                           "output": (R ** -0.5, 1, 1 / R, R ** -1.5)}),   # SP-LP of the paper's Fig. 1
    ("mup", "asam_elementwise", None, {"input": (1, R, R ** 0.5, 1), "hidden": (R ** -0.5, 1, R ** 0.5, 1),
                                       "output": (1 / R, 1 / R, R ** 0.5, 1)}),
    ("mup", "asam_layerwise", None, {"input": (1, R, 1, 1), "hidden": (R ** -0.5, 1, 1 / R, 1 / R),
                                     "output": (1 / R, 1 / R, 1, 1)}),
])
def test_factor_table_matches_hand_derivation(parameterization, variant, rho_scaling, expected):
    got = factors(parameterization, variant, rho_scaling=rho_scaling)
    for layer, values in expected.items():
        assert got[layer] == pytest.approx(values, rel=1e-12), layer


def test_adam_table_is_marked_derived():
    t = m.scaling_table("mup2", optimizer="adam", width=64 * R, base_width=64)
    lrs = [t["layers"][k].lr for k in m.LAYERS]
    assert lrs == pytest.approx([1, 1 / R, 1 / R])  # muP-Adam: eta / fan_in, normalised
    assert [t["layers"][k].rho for k in m.LAYERS] == pytest.approx([R, 1, 1 / R])  # SGD's rho factors
    assert any("Adam" in d for d in t["derived"])
    assert "n0" in t["convention"]


def test_every_factor_is_one_at_the_base_width():
    for p in ("sp", "mup", "mup2"):
        for f in m.scaling_table(p, width=64, base_width=64)["layers"].values():
            assert (f.init_std, f.lr, f.rho, f.gradnorm) == (1, 1, 1, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(parameterization="ntk"), "parameterization"), (dict(parameterization="mup", variant="gsam"), "variant"),
    (dict(parameterization="mup", optimizer="lion"), "optimizer"), (dict(parameterization="mup", width=0), "width"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        m.scaling_table(**kwargs)


def data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 12, generator=gen, dtype=torch.float64), torch.randint(0, 5, (8,), generator=gen))
            for _ in range(3)]


def sam_steps(model, opt, x, y) -> None:
    """One explicit two-pass SAM update."""
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)


def test_mup2_at_the_base_width_is_plain_sam():
    torch.manual_seed(0)
    a = m.WidthMLP(12, 32, 5, "mup", base_width=32).double()
    b = copy.deepcopy(a)
    opt_a = m.make_sam(a, m.scaling_table("mup2", width=32, base_width=32), lr=0.1, rho=0.05, momentum=0.9)
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    for x, y in data():
        for model, opt in ((a, opt_a), (b, opt_b)):
            sam_steps(model, opt, x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_layerwise_sam_step_equals_rederivation():
    """e^l = rho_l g_l / ||(s_k g_k)_k||, gradient at w + e, per-layer SGD lr; 3 steps, float64."""
    torch.manual_seed(0)
    ours = m.WidthMLP(12, 128, 5, "mup", base_width=32).double()
    ref = copy.deepcopy(ours)
    table = m.scaling_table("mup2", width=128, base_width=32)
    opt = m.make_sam(ours, table, lr=0.1, rho=0.05)
    f = [table["layers"][k] for k in m.LAYERS]
    for x, y in data():
        sam_steps(ours, opt, x, y)
        params = [ref.input.weight, ref.hidden.weight, ref.output.weight]
        g = torch.autograd.grad(F.cross_entropy(ref(x), y), params)
        norm = torch.sqrt(sum((fl.gradnorm * gl.norm()) ** 2 for fl, gl in zip(f, g)))
        w = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, fl, gl in zip(params, f, g):
                p.add_(0.05 * fl.rho * gl / (norm + 1e-12))
        g2 = torch.autograd.grad(F.cross_entropy(ref(x), y), params)
        with torch.no_grad():
            for p, wl, fl, gl in zip(params, w, f, g2):
                p.copy_(wl - 0.1 * fl.lr * gl)
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-12, rtol=0)


def test_sam_on_perturbs_nothing_in_an_mlp_without_normalisation():
    model = m.WidthMLP(12, 64, 5, "mup", base_width=32).double()
    opt = m.make_sam(model, m.scaling_table("mup", "sam_on", width=64, base_width=32), lr=0.1, rho=0.05)
    x, y = data()[0]
    before = [p.clone() for p in model.parameters()]
    F.cross_entropy(model(x), y).backward()
    opt.first_step()
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


SMOKE_WIDTHS = (128, 256, 512, 1024)


@pytest.mark.parametrize("scheme", sorted(m.EXPECTED_SLOPES))
def test_width_slopes_at_smoke_widths(scheme):
    """The issue's acceptance test: fitted slopes within 0.25 of the expected values."""
    slopes = m.perturbation_slopes(scheme, SMOKE_WIDTHS)
    for layer, expected in zip(m.LAYERS, m.EXPECTED_SLOPES[scheme]):
        assert abs(slopes[layer] - expected) < 0.25, (scheme, layer, slopes[layer], expected)


def test_global_scaling_only_perturbs_the_last_layer_effectively():
    effects = [m.perturbation_effects("mup_global", w) for w in (256, 2048)]
    share = [e["output"]["logits"] / sum(e[k]["logits"] for k in m.LAYERS) for e in effects]
    assert share[1] > share[0] and share[1] > 0.8


def test_fit_slope():
    assert m.fit_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert m.fit_slope([1, 10], [5, 0.5]) == pytest.approx(-1.0)


# The CNN (input conv with 8 channels x kernel 3): the schemes whose slopes are already asymptotic at smoke widths.
CNN_ASYMPTOTIC = ("mup_naive", "mup_global", "mup2_independent", "asam_elementwise", "asam_elementwise_bcd")


@pytest.mark.parametrize("scheme", CNN_ASYMPTOTIC)
def test_cnn_width_slopes(scheme):
    slopes = m.perturbation_slopes(scheme, SMOKE_WIDTHS, model="cnn")
    for layer, expected in zip(m.LAYERS, m.EXPECTED_SLOPES[scheme]):
        assert abs(slopes[layer] - expected) < 0.25, (scheme, layer, slopes[layer], expected)


def test_cnn_default_gradnorm_drift_shrinks_with_input_fan_in():
    """With Algorithm 1's default weights s_l = r^{-d_l}, the input layer dominates the denominator only once
    n is large compared to its fan-in; for a small input fan-in the slopes drift upwards at smoke widths and
    the drift shrinks as the fan-in grows (measured: about +0.4 at 8 channels, +0.15 at 32)."""
    def worst(channels):
        effects = [m.perturbation_effects("mup2", w, model="cnn", channels=channels) for w in SMOKE_WIDTHS]
        return max(abs(m.fit_slope(SMOKE_WIDTHS, [e[k]["rms"] for e in effects])) for k in m.LAYERS)

    assert worst(32) < worst(8) < 0.6 and worst(32) < 0.25


def test_cnn_at_the_base_width_is_plain_sam():
    torch.manual_seed(0)
    a = m.WidthCNN(2, 16, 5, "mup", base_width=16).double()
    b = copy.deepcopy(a)
    opt_a = m.make_sam(a, m.scaling_table("mup2", width=16, base_width=16), lr=0.1, rho=0.05)
    opt_b = SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    x, y = torch.randn(6, 2, 10, dtype=torch.float64), torch.randint(0, 5, (6,))
    for model, opt in ((a, opt_a), (b, opt_b)):
        sam_steps(model, opt, x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
