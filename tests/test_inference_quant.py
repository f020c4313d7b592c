"""Quantisation (lionsnb.inference.quantizers): error bounds per scheme, code ranges, granularity, zero points,
packed sizes, perplexity windows, GPTQ against RTN, and the model-level helpers on a tiny_llama_2l_init random Llama."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from lionsnb.inference import quantizers as q
from lionsnb.inference.quantizers import Scheme

ALL_SCHEMES = [Scheme(b, mode, gran, g) for b in (2, 3, 4, 5, 8) for mode in q.MODES
               for gran, g in (("tensor", 128), ("channel", 128), ("group", 32), ("group", 48))]


def _weights(seed=0, out=40, inp=100):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * torch.logspace(-2, 0.5, out)[:, None]
    w[3, 7] = 9.0  # an outlier
    return w


def _step(qt: q.QuantizedTensor, shape) -> torch.Tensor:
    """The scale of every element of the weight."""
    out, inp = shape
    if qt.scheme.granularity == "tensor":
        return qt.scales.reshape(1, 1).expand(out, inp)
    if qt.scheme.granularity == "channel":
        return qt.scales.expand(out, inp)
    return qt.scales.repeat_interleave(qt.scheme.group_size, 1)[:, :inp]


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda s: s.key)
def test_error_at_most_half_a_step_and_codes_in_range(scheme):
    w = _weights()
    qt = q.quantize(w, scheme)
    lo, hi = q.code_range(scheme.bits, scheme.symmetric)
    assert int(qt.codes.min()) >= lo and int(qt.codes.max()) <= hi
    assert qt.codes.shape == w.shape
    s = _step(qt, w.shape)
    # every element lies inside the clamp range by construction (absmax / min-max scales): |error| <= s / 2
    err = (qt.dequantize() - w).abs()
    assert bool((err <= s / 2 * (1 + 1e-5) + 1e-7).all()), float((err / s).max())
    # the codes reproduce the dequantised weight exactly
    assert torch.equal(q.fake_quantize(w, scheme), qt.dequantize())


def test_symmetric_formula_by_hand():
    x = torch.tensor([[0.5, -1.2, 2.1, 0.1]])
    qt = q.quantize(x, Scheme(4, "symmetric", "tensor"))
    s = 2.1 / 7
    assert math.isclose(float(qt.scales), s, rel_tol=1e-6)
    assert qt.codes.flatten().tolist() == [2, -4, 7, 0]  # round(0.5/0.3)=2, round(-4)=-4, 7, 0
    assert torch.allclose(qt.dequantize(), s * torch.tensor([[2.0, -4.0, 7.0, 0.0]]))


def test_zero_point_formula_and_exact_points():
    x = torch.tensor([[-0.7, 0.0, 0.3, 1.6, 0.95]])
    scheme = Scheme(4, "zeropoint", "tensor")
    qt = q.quantize(x, scheme)
    s = (1.6 + 0.7) / 15
    z = round(0.7 / s)
    assert math.isclose(float(qt.scales), s, rel_tol=1e-6) and float(qt.zeros) == z
    xh = qt.dequantize()
    assert float(xh[0, 1]) == 0.0  # zero is always exactly representable
    # the smallest and largest representable values s (0 - z), s (2^b - 1 - z) are reproduced exactly,
    # and the true min / max land within s / 2 of them
    grid_lo, grid_hi = s * (0 - z), s * (15 - z)
    ends = torch.tensor([[grid_lo, grid_hi]])
    s_t, z_t = qt.scales, qt.zeros
    codes = q.quantize_codes(ends, s_t, z_t, 4, False)
    assert codes.flatten().tolist() == [0.0, 15.0]
    assert torch.allclose(q.dequantize_codes(codes, s_t, z_t), ends, atol=1e-7)
    assert abs(float(xh[0, 0]) + 0.7) <= s / 2 + 1e-7 and abs(float(xh[0, 3]) - 1.6) <= s / 2 + 1e-7


def test_zero_point_range_contains_zero_and_all_zero_rows():
    x = torch.tensor([[0.2, 0.9, 0.5], [0.0, 0.0, 0.0]])  # all positive row; all zero row
    for mode in q.MODES:
        qt = q.quantize(x, Scheme(3, mode, "channel"))
        xh = qt.dequantize()
        assert torch.equal(xh[1], torch.zeros(3))
        assert torch.isfinite(qt.scales).all()
    s, z = q.qparams(x[:1], 4, symmetric=False)
    assert float(z) == 0.0 and math.isclose(float(s), 0.9 / 15, rel_tol=1e-6)


def test_more_bits_less_error():
    w = _weights(1)
    for mode in q.MODES:
        for gran in ("tensor", "channel", "group"):
            e8 = q.relative_error(q.fake_quantize(w, Scheme(8, mode, gran, 32)), w)
            e4 = q.relative_error(q.fake_quantize(w, Scheme(4, mode, gran, 32)), w)
            e2 = q.relative_error(q.fake_quantize(w, Scheme(2, mode, gran, 32)), w)
            assert e8 < e4 / 8 and e4 < e2


def test_per_channel_beats_per_tensor_on_rows_of_different_scales():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 256, generator=g) * torch.logspace(-3, 0, 64)[:, None]
    for bits in (4, 8):
        for mode in q.MODES:
            tensor = q.relative_error(q.fake_quantize(w, Scheme(bits, mode, "tensor")), w)
            channel = q.relative_error(q.fake_quantize(w, Scheme(bits, mode, "channel")), w)
            assert channel <= tensor
            # rows far below the largest one are rounded to zero per tensor, but kept per channel
            small = slice(0, 16)
            e_t = q.relative_error(q.fake_quantize(w, Scheme(bits, mode, "tensor"))[small], w[small])
            e_c = q.relative_error(q.fake_quantize(w, Scheme(bits, mode, "channel"))[small], w[small])
            assert e_c < 0.5 * e_t


def test_small_groups_beat_per_channel_on_outlier_columns():
    g = torch.Generator().manual_seed(3)
    w = 0.02 * torch.randn(128, 512, generator=g)
    w[:, torch.randperm(512, generator=g)[:4]] *= 50.0
    for mode in q.MODES:
        channel = q.relative_error(q.fake_quantize(w, Scheme(4, mode, "channel")), w)
        g32 = q.relative_error(q.fake_quantize(w, Scheme(4, mode, "group", 32)), w)
        assert g32 < 0.8 * channel  # a clear margin: only the groups holding an outlier lose resolution


def test_ragged_last_group_and_group_count():
    w = _weights(4, out=8, inp=100)
    scheme = Scheme(4, "zeropoint", "group", 32)
    qt = q.quantize(w, scheme)
    assert qt.scales.shape == (8, 4)  # groups 32, 32, 32, 4
    # the short last group gets its own parameters from its 4 columns only
    s, z = q.qparams(w[:, 96:], 4, symmetric=False)
    assert torch.allclose(qt.scales[:, 3:], s) and torch.equal(qt.zeros[:, 3:], z)


def test_bits_per_weight_and_packed_bytes():
    assert q.bits_per_weight(Scheme(4, "symmetric", "group", 128), 1024) == 4 + 16 / 128
    assert q.bits_per_weight(Scheme(4, "zeropoint", "group", 128), 1024) == 4 + 20 / 128
    assert q.bits_per_weight(Scheme(8, "symmetric", "channel"), 576) == 8 + 16 / 576
    assert q.bits_per_weight(Scheme(4, "symmetric", "group", 128), 576) == 4 + 5 * 16 / 576  # 5 groups
    assert q.packed_bytes((10, 128), Scheme(4, "symmetric", "group", 128)) == (10 * 128 * 4 + 10 * 16) // 8
    assert q.packed_bytes((10, 128), Scheme(8, "symmetric", "tensor")) == 10 * 128 + 2
    # the stored scales have the size packed_bytes counts
    qt = q.quantize(torch.randn(10, 128), Scheme(4, "zeropoint", "group", 32))
    assert qt.scales.numel() == 40 and qt.packed_bytes == (10 * 128 * 4 + 40 * (16 + 4)) // 8


def test_scheme_validation():
    with pytest.raises(ValueError):
        Scheme(1)
    with pytest.raises(ValueError):
        Scheme(4, "asymmetric")
    with pytest.raises(ValueError):
        Scheme(4, "symmetric", "group", 0)
    assert q.scheme_for(4, 0).granularity == "channel" and q.scheme_for(4, -1).granularity == "tensor"
    assert q.scheme_for(3, 64, "zeropoint") == Scheme(3, "zeropoint", "group", 64)


# ----------------------------------------------------------------------------- GPTQ

@pytest.mark.parametrize("scheme", [Scheme(4, "symmetric", "group", 32), Scheme(4, "zeropoint", "channel"),
                                    Scheme(3, "zeropoint", "group", 16), Scheme(8, "symmetric", "tensor")],
                         ids=lambda s: s.key)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_with_identity_hessian_is_rtn(scheme, act_order):
    w = _weights(5, out=24, inp=96)
    got = q.gptq_quantize(w, torch.eye(96), scheme, block_size=32, act_order=act_order)
    rtn = q.quantize(w, scheme)
    assert torch.allclose(got.dequantize(), rtn.dequantize(), atol=1e-6)
    assert (got.codes != rtn.codes).float().mean() < 1e-3  # at most an exact tie rounds differently


@pytest.mark.parametrize("scheme", [Scheme(4, "symmetric", "group", 32), Scheme(4, "zeropoint", "channel"),
                                    Scheme(3, "symmetric", "channel")], ids=lambda s: s.key)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_reduces_output_error_on_correlated_inputs(scheme, act_order):
    g = torch.Generator().manual_seed(6)
    w = 0.05 * torch.randn(32, 128, generator=g)
    x = q.correlated_inputs(1024, 128, seed=6)
    xtx = x.T @ x
    gq = q.gptq_quantize(w, 2 * xtx / 1024, scheme, act_order=act_order)
    lo, hi = q.code_range(scheme.bits, scheme.symmetric)
    assert int(gq.codes.min()) >= lo and int(gq.codes.max()) <= hi
    e_gptq, _ = q.output_error(gq.dequantize(), w, xtx)
    e_rtn, _ = q.output_error(q.fake_quantize(w, scheme), w, xtx)
    assert e_gptq < 0.7 * e_rtn
    # ... on inputs from the same distribution it never saw, too
    x2 = q.correlated_inputs(512, 128, seed=6, sample_seed=1)  # same distribution, fresh samples
    assert q.output_error(gq.dequantize(), w, x2.T @ x2)[0] < q.output_error(q.fake_quantize(w, scheme), w,
                                                                               x2.T @ x2)[0]


def test_gptq_codes_and_scales_reproduce_the_weight():
    """The returned QuantizedTensor is self-consistent: requantising its dequantised weight with its own
    scales gives back its codes (with act-order too, whose group scales are fixed from the original weight)."""
    w = _weights(9, out=16, inp=96)
    x = q.correlated_inputs(400, 96, seed=9)
    for act_order in (False, True):
        for scheme in (Scheme(4, "zeropoint", "group", 32), Scheme(3, "symmetric", "channel")):
            gq = q.gptq_quantize(w, 2 * x.T @ x / 400, scheme, act_order=act_order)
            w_hat = gq.dequantize()
            again = q.quantize_codes(w_hat, *_expand(gq, w.shape), scheme.bits, scheme.symmetric)
            assert torch.equal(again, gq.codes.float())
            if act_order and scheme.granularity == "group":
                assert torch.allclose(gq.scales, q.quantize(w, scheme).scales)


def _expand(qt, shape):
    s = _step(qt, shape)
    z = qt.zeros.repeat_interleave(qt.scheme.group_size, 1)[:, :shape[1]] if qt.scheme.granularity == "group" \
        else qt.zeros.expand(*shape) if qt.scheme.granularity == "channel" else qt.zeros.reshape(1, 1).expand(*shape)
    return s, z


def test_act_order_helps_when_a_few_inputs_dominate():
    g = torch.Generator().manual_seed(10)
    w = 0.05 * torch.randn(48, 128, generator=g)
    x = q.correlated_inputs(2048, 128, seed=10)
    xtx = x.T @ x
    scheme = Scheme(4, "zeropoint", "group", 32)
    plain = q.output_error(q.gptq_quantize(w, 2 * xtx / 2048, scheme).dequantize(), w, xtx)[0]
    ordered = q.output_error(q.gptq_quantize(w, 2 * xtx / 2048, scheme, act_order=True).dequantize(), w, xtx)[0]
    assert ordered < plain


def test_gptq_blocks_do_not_change_the_result():
    w = _weights(7, out=16, inp=64)
    x = q.correlated_inputs(256, 64, seed=7)
    h = 2 * x.T @ x / 256
    scheme = Scheme(4, "symmetric", "group", 16)
    a = q.gptq_quantize(w, h, scheme, block_size=16).dequantize()
    b = q.gptq_quantize(w, h, scheme, block_size=64).dequantize()
    assert torch.allclose(a, b, atol=1e-4)


def test_output_error_matches_direct_computation():
    g = torch.Generator().manual_seed(8)
    w, w_hat, x = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g), torch.randn(30, 10, generator=g)
    err, ref = q.output_error(w_hat, w, x.T @ x)
    assert math.isclose(err, float((x @ w_hat.T - x @ w.T).norm()), rel_tol=1e-4)
    assert math.isclose(ref, float((x @ w.T).norm()), rel_tol=1e-4)


# ----------------------------------------------------------------------------- a tiny_llama_2l_init Llama

def test_quantize_model_works_on_a_copy(tiny_llama_2l_init):
    before = {k: v.clone() for k, v in tiny_llama_2l_init.state_dict().items()}
    scheme = Scheme(4, "symmetric", "group", 32)
    work, rep = q.quantize_model(tiny_llama_2l_init, scheme)
    assert work is not tiny_llama_2l_init
    assert all(torch.equal(before[k], v) for k, v in tiny_llama_2l_init.state_dict().items())
    lin = q.linear_layers(work)
    assert len(lin) == 14 and "lm_head" not in lin  # 7 per layer; the tied head is kept
    assert set(rep.layer_errors) == set(lin)
    for name, mod in lin.items():
        ref = dict(tiny_llama_2l_init.named_modules())[name].weight
        assert torch.equal(mod.weight, q.fake_quantize(ref, scheme))
    assert torch.equal(work.lm_head.weight, tiny_llama_2l_init.lm_head.weight)
    # memory: packed linears + the rest in float32
    n = sum(m.weight.numel() for m in lin.values())
    assert rep.quantized_params == n and rep.quantized_fp32_bytes == 4 * n
    assert rep.quantized_bytes == sum(q.packed_bytes(tuple(m.weight.shape), scheme) for m in lin.values())
    assert math.isclose(rep.memory_ratio, (4 + 16 / 32) / 32, rel_tol=1e-6)
    # a reused copy gives the same result, and restore_model undoes it
    work2, _ = q.quantize_model(tiny_llama_2l_init, Scheme(8, "zeropoint", "channel"), out=work)
    work2, rep3 = q.quantize_model(tiny_llama_2l_init, scheme, out=work2)
    assert rep3.weight_error == rep.weight_error
    q.restore_model(tiny_llama_2l_init, work2)
    assert all(torch.equal(a, b) for a, b in zip(work2.parameters(), tiny_llama_2l_init.parameters()))
    with pytest.raises(ValueError):
        q.quantize_model(tiny_llama_2l_init, scheme, out=tiny_llama_2l_init)


def test_quantize_head_includes_the_tied_embedding(tiny_llama_2l_init):
    work, rep = q.quantize_model(tiny_llama_2l_init, Scheme(4, "symmetric", "channel"), quantize_head=True)
    assert "lm_head" in rep.layer_errors
    assert work.model.embed_tokens.weight is work.lm_head.weight
    assert not torch.equal(work.model.embed_tokens.weight, tiny_llama_2l_init.model.embed_tokens.weight)


def test_perplexity_windows_score_every_token_once(tiny_llama_2l_init):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 128, (100,), generator=g)
    with torch.no_grad():
        logits = tiny_llama_2l_init(ids[None]).logits[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], ids[1:])
    whole = q.perplexity(tiny_llama_2l_init, ids, window=100, stride=100)
    assert whole["tokens"] == 99 and math.isclose(whole["nll"], float(nll), rel_tol=1e-5)
    slid = q.perplexity(tiny_llama_2l_init, ids, window=40, stride=15, batch_size=3)
    assert slid["tokens"] == 99 and slid["windows"] == len(q.window_starts(100, 40, 15))
    # a random model has no long-range knowledge: the windowed nll is close to the full-context one
    assert abs(slid["nll"] - float(nll)) < 0.05
    assert q.window_starts(100, 40, 15) == [0, 15, 30, 45, 60]


def test_gptq_model_sequential_and_in_place(tiny_llama_2l_init):
    g = torch.Generator().manual_seed(2)
    calib = torch.randint(0, 128, (2, 48), generator=g)
    heldout = torch.randint(0, 128, (1, 40), generator=g)
    scheme = Scheme(4, "symmetric", "group", 32)
    work = copy.deepcopy(tiny_llama_2l_init)
    rep = q.gptq_model(work, calib, scheme, heldout_ids=heldout, n_layers=1, progress=False)
    assert rep.layers_done == 1 and len(rep.names) == 7
    # layer 0 changed, layer 1 untouched
    layers = tiny_llama_2l_init.model.layers
    assert not torch.equal(work.model.layers[0].mlp.down_proj.weight, layers[0].mlp.down_proj.weight)
    assert torch.equal(work.model.layers[1].mlp.down_proj.weight, layers[1].mlp.down_proj.weight)
    # GPTQ minimises the calibration output error: below RTN on every linear of the layer
    assert all(a < b for a, b in zip(rep.gptq_calib, rep.rtn_calib))
    # 4-bit symmetric groups of 32: at most 15 distinct values in every group of the written weights
    w = work.model.layers[0].self_attn.o_proj.weight.detach().reshape(-1, 32)
    assert max(len(torch.unique(row)) for row in w) <= 15
    # decoder_inputs + running the layers reproduces the model's own hidden states
    hidden, kwargs = q.decoder_inputs(tiny_llama_2l_init, calib)
    with torch.no_grad():
        for layer in tiny_llama_2l_init.model.layers:
            out = layer(hidden, **kwargs)
            hidden = out[0] if isinstance(out, (tuple, list)) else out
        ref = tiny_llama_2l_init(calib, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(tiny_llama_2l_init.model.norm(hidden), ref, atol=1e-5)


# ----------------------------------------------------------------------------- notebook module

def test_notebook_module_helpers():
    import lionsnb.inference.nb03_quantization as m

    rows = m.error_bound_check(bits=(4, 8))
    assert all(r["worst_error_over_half_step"] <= 1 + 1e-4 and r["codes_in_range"] for r in rows)
    demo = m.granularity_demo()
    assert demo["rows"]["int4 sym per-channel"] < demo["rows"]["int4 sym per-tensor"]
    assert demo["outliers"]["int4 sym g32"] < demo["outliers"]["int4 sym per-channel"]
    toy = m.gptq_toy()
    assert toy["gptq_output_error"] < toy["rtn_output_error"] and toy["identity_max_diff"] < 1e-6
    for checker, stub in ((m.check_exercise_symmetric, lambda x, b: m.symmetric_reference(x, b)),
                          (m.check_exercise_zeropoint, lambda x, b: m.zeropoint_reference(x, b)),
                          (m.check_exercise_bits, lambda b, g, z: m.bits_reference(b, g, z))):
        assert checker(stub).status == "solved"

    def not_done(*args):
        raise NotImplementedError

    assert m.check_exercise_bits(not_done).status == "not attempted"
    assert m.check_exercise_symmetric(lambda x, b: x).status == "incorrect"
    assert m.bits_reference(4, 128, True) == 4 + 20 / 128


@pytest.mark.llm
def test_smollm2_int8_per_channel_is_near_lossless(smollm2):
    from lionsnb.inference.corpus import passage_ids

    model, tok, _ = smollm2
    ids = passage_ids(tok, 128, "hamlet", "ACT III")
    base = q.perplexity(model, ids, window=128, stride=128)
    work, rep = q.quantize_model(model, Scheme(8, "symmetric", "channel"))
    int8 = q.perplexity(work, ids, window=128, stride=128)
    assert rep.weight_error < 0.02 and abs(int8["ppl"] / base["ppl"] - 1) < 0.05
