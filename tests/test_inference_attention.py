"""Tiled (FlashAttention) attention: exactness against SDPA, masks, GQA without copies, tile skipping, memory,
IO counts, and the kernel inside a Llama forward pass."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lionsnb.inference import attention as att
from lionsnb.inference.attention import (
    attention_memory_benchmark,
    flash_attention,
    hbm_accesses_flash,
    hbm_accesses_standard,
    online_softmax,
    online_update,
    peak_memory,
    reference_attention,
    tile_schedule,
)
from lionsnb.inference.llama import causal_mask, naive_attention


def qkv(b, h, g, L, S, d, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, L, d, generator=gen, dtype=dtype), torch.randn(b, g, S, d, generator=gen, dtype=dtype),
            torch.randn(b, g, S, d, generator=gen, dtype=dtype))


def explicit_scores(q, k, causal):
    scores = q @ k.repeat_interleave(q.shape[1] // k.shape[1], dim=1).transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2]), -math.inf)
    return scores


SHAPES = [  # b, h, g, L, S, d, causal, block
    (1, 1, 1, 1, 1, 4, True, 64), (1, 9, 3, 1, 77, 64, True, 16), (2, 4, 2, 5, 37, 32, True, 16),
    (1, 2, 2, 67, 67, 16, True, 16), (1, 3, 1, 128, 128, 32, True, 32), (2, 6, 1, 33, 50, 16, False, 16),
    (1, 2, 1, 40, 9, 8, False, 16), (1, 4, 2, 29, 29, 8, False, 7), (1, 6, 3, 13, 100, 8, True, 7),
    (1, 2, 1, 100, 101, 8, True, 64), (2, 8, 4, 3, 3, 16, True, 1),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_equals_sdpa_naive_and_logsumexp(shape):
    b, h, g, L, S, d, causal, block = shape
    q, k, v = qkv(b, h, g, L, S, d, seed=L * 31 + S)
    out, lse = flash_attention(q, k, v, causal=causal, block_size=block, return_lse=True)
    assert out.shape == q.shape and lse.shape == q.shape[:3]
    assert (out - reference_attention(q, k, v, causal)).abs().max() < 1e-5
    assert (out - naive_attention(q, k, v, causal)).abs().max() < 1e-5
    assert (lse - torch.logsumexp(explicit_scores(q, k, causal), -1)).abs().max() < 1e-5


def test_random_shapes_of_the_notebook_sweep():
    import lionsnb.inference.nb01_attention as fa

    rows = fa.correctness_sweep(fa.random_shapes(25, 90, seed=3), seed=3, progress=False)
    assert len(rows) == 33
    assert max(max(r["error_sdpa"], r["error_naive"], r["error_lse"]) for r in rows) < 1e-5
    assert any(r["L"] == 1 for r in rows) and any(r["L"] != r["S"] for r in rows if r["causal"])


def test_bottom_right_alignment_decode_and_chunks():
    q, k, v = qkv(1, 6, 2, 30, 30, 16, seed=1)
    full = flash_attention(q, k, v, causal=True, block_size=8)
    # equal to SDPA's is_causal where it is right (L = S) ...
    assert (full - F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)).abs().max() < 1e-5
    # ... and chunks of new queries against the cache prefix reproduce the rows of the full pass
    for a, b in ((0, 7), (7, 8), (8, 21), (21, 30)):
        part = flash_attention(q[:, :, a:b], k[:, :, :b], v[:, :, :b], causal=True, block_size=8)
        assert (part - full[:, :, a:b]).abs().max() < 1e-5
    # a decode step (L = 1) sees every key: causal or not, the same answer; SDPA's top-left is_causal is wrong
    last = q[:, :, -1:]
    step = flash_attention(last, k, v, causal=True)
    assert (step - flash_attention(last, k, v, causal=False)).abs().max() < 1e-6
    wrong = F.scaled_dot_product_attention(last, k, v, is_causal=True, enable_gqa=True)
    assert (wrong - step).abs().max() > 0.05
    assert (wrong - v[:, :, :1].repeat_interleave(3, dim=1)).abs().max() < 1e-6  # it only saw key 0


def test_result_does_not_depend_on_the_block_size():
    q, k, v = qkv(2, 4, 2, 45, 61, 8, seed=2, dtype=torch.float64)
    outs = [flash_attention(q, k, v, causal=True, block_size=b) for b in (1, 3, 16, 45, 1000)]
    assert outs[0].dtype == torch.float64
    for o in outs[1:]:
        assert (o - outs[0]).abs().max() < 1e-12


def test_gqa_head_groups_read_their_kv_head():
    q, k, v = qkv(1, 6, 2, 9, 14, 8, seed=4)
    out = flash_attention(q, k, v, causal=True, block_size=4)
    for h in range(6):
        g = h // 3  # 3 query heads per KV head
        alone = flash_attention(q[:, h:h + 1], k[:, g:g + 1], v[:, g:g + 1], causal=True, block_size=4)
        assert (alone - out[:, h:h + 1]).abs().max() < 1e-6
    # a wrong grouping (h % G instead of h // (H / G)) would differ
    assert (flash_attention(q[:, 1:2], k[:, 1:2], v[:, 1:2], causal=True) - out[:, 1:2]).abs().max() > 1e-3


def test_gqa_decode_never_copies_k_or_v():
    q, k, v = qkv(1, 9, 3, 1, 2048, 64, seed=5)
    out, peak = peak_memory(lambda: flash_attention(q, k, v, causal=True, block_size=64))
    kv_bytes = k.nbytes + v.nbytes
    assert peak < kv_bytes / 50, f"the tiled decode step allocated {peak} bytes for K/V of {kv_bytes}"
    _, naive_peak = peak_memory(lambda: naive_attention(q, k, v, causal=True))
    assert naive_peak >= 3 * kv_bytes  # repeat_interleave to 9 heads: 3x K and V
    assert (out - reference_attention(q, k, v, True)).abs().max() < 1e-5


def test_kernel_skips_exactly_the_tiles_above_the_diagonal(monkeypatch):
    calls = []
    real_update = att.online_update

    def counting(*args):
        calls.append(1)
        return real_update(*args)

    monkeypatch.setattr(att, "online_update", counting)
    for L, S, b, causal in ((100, 100, 16, True), (20, 100, 16, True), (1, 100, 16, True), (50, 70, 16, False),
                            (130, 130, 32, True)):
        calls.clear()
        q, k, v = qkv(1, 2, 1, L, S, 8)
        flash_attention(q, k, v, causal=causal, block_size=b)
        sched = tile_schedule(L, S, b, causal)
        assert len(calls) == int((sched != att.SKIPPED).sum())
    n_tiles = math.ceil(130 / 32)
    sched = tile_schedule(130, 130, 32, True)
    assert int((sched != att.SKIPPED).sum()) == n_tiles * (n_tiles + 1) // 2
    assert int((sched == att.MASKED).sum()) == n_tiles  # only the diagonal tiles need a mask
    assert int((tile_schedule(1, 100, 16, True) == att.MASKED).sum()) == 0  # a decode step needs no mask


def test_fully_masked_rows_give_zero_not_nan():
    q, k, v = qkv(1, 2, 1, 10, 4, 8, seed=6)
    out, lse = flash_attention(q, k, v, causal=True, block_size=3, return_lse=True)
    assert not torch.isnan(out).any()
    assert torch.equal(out[:, :, :6], torch.zeros_like(out[:, :, :6]))
    assert torch.isneginf(lse[:, :, :6]).all() and torch.isfinite(lse[:, :, 6:]).all()
    assert (out[:, :, 6:] - naive_attention(q, k, v, True)[:, :, 6:]).abs().max() < 1e-5


def test_scale_and_half_precision():
    q, k, v = qkv(1, 4, 2, 17, 23, 16, seed=7)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.3, enable_gqa=True)
    assert (flash_attention(q, k, v, scale=0.3, block_size=5) - ref).abs().max() < 1e-5
    out16 = flash_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True, block_size=8)
    assert out16.dtype == torch.bfloat16
    assert (out16.float() - reference_attention(q, k, v, True)).abs().max() < 5e-2


def test_bad_input_is_rejected_with_a_message():
    q, k, v = qkv(1, 4, 3, 5, 5, 8)
    with pytest.raises(ValueError, match="divide"):
        flash_attention(q, k, v)
    q, k, v = qkv(1, 4, 2, 5, 5, 8)
    with pytest.raises(ValueError, match="block_size"):
        flash_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="batch, heads"):
        flash_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="same shape"):
        flash_attention(q, k, v[:, :, :3])


def test_online_softmax_and_update():
    x = torch.tensor([0.3, -1.2, 2.0, 0.7, 4.1, -0.5, 1.0, 3.3, 5.2, -2.0], dtype=torch.float64)
    for block in (1, 3, 4, 10, 20):
        probs, trace = online_softmax(x, block)
        assert torch.allclose(probs, torch.softmax(x, 0), atol=1e-14)
        assert trace[-1]["m"] == pytest.approx(5.2)
        assert len(trace) == math.ceil(10 / block)
    gen = torch.Generator().manual_seed(8)
    s = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    v = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    m, ell, acc = torch.full((3, 1), -math.inf, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64), \
        torch.zeros(3, 2, dtype=torch.float64)
    for j in range(0, 12, 5):
        m, ell, acc = online_update(m, ell, acc, s[:, j:j + 5], v[j:j + 5])
    assert torch.allclose(acc / ell, torch.softmax(s, -1) @ v, atol=1e-12)
    assert torch.allclose(m + ell.log(), torch.logsumexp(s, -1, keepdim=True), atol=1e-12)
    # a tile whose scores are all masked leaves the state untouched (no NaN)
    m2, l2, acc2 = online_update(m, ell, acc, torch.full((3, 4), -math.inf, dtype=torch.float64), v[:4])
    assert torch.equal(m2, m) and torch.allclose(l2, ell) and torch.allclose(acc2, acc)


def test_peak_memory_quadratic_vs_linear():
    small, large = attention_memory_benchmark(256, timing=False), attention_memory_benchmark(1024, timing=False)
    for r in (small, large):
        assert r["naive_bytes"] >= 2 * r["score_matrix_bytes"]  # scores and softmax live at the same time
        assert r["output_bytes"] <= r["tiled_bytes"] < r["output_bytes"] + 20 * 64 * 64 * 4  # output + a few tiles
        assert r["tiled_max_abs_error_vs_sdpa"] < 1e-5
    assert large["naive_bytes"] / small["naive_bytes"] > 14  # ~ 16 = (1024 / 256)^2
    assert large["tiled_bytes"] / small["tiled_bytes"] < 4.5  # at most ~ 4 = 1024 / 256
    assert large["ratio_naive_over_tiled"] > 2 * small["ratio_naive_over_tiled"]
    timed = attention_memory_benchmark(128, repeats=1)
    assert {"naive_seconds", "tiled_seconds", "sdpa_seconds", "ratio_naive_over_tiled"} <= set(timed)


def _simulated_flash_accesses(n, d, m):
    """FA1 Algorithm 1 walked tile by tile, counting every HBM element read and written."""
    b_c = math.ceil(m / (4 * d))
    b_r = min(b_c, d)
    count = n * d + 2 * n  # line 2: O, l, m initialised in HBM
    for j in range(0, n, b_c):
        cols = min(b_c, n - j)
        count += 2 * cols * d  # load K_j, V_j
        for i in range(0, n, b_r):
            rows = min(b_r, n - i)
            count += 2 * rows * d + 2 * rows  # load Q_i, O_i, l_i, m_i
            count += rows * d + 2 * rows  # write O_i, l_i, m_i
    return count


def test_hbm_access_counts():
    assert hbm_accesses_standard(1024, 64) == 4 * 1024 * 64 + 4 * 1024 ** 2
    for n, d, m in ((1024, 64, 98304), (1000, 80, 50000), (4096, 128, 116736), (64, 64, 1 << 20)):
        assert hbm_accesses_flash(n, d, m) == _simulated_flash_accesses(n, d, m)
    # Theorem 2: Theta(N^2 d^2 / M): 4x for twice N (large N), about 1/2 for twice M
    assert 3.6 < hbm_accesses_flash(32768, 64, 98304) / hbm_accesses_flash(16384, 64, 98304) < 4.1
    assert hbm_accesses_flash(16384, 64, 2 * 98304) / hbm_accesses_flash(16384, 64, 98304) < 0.6
    assert hbm_accesses_standard(4096, 64) / hbm_accesses_flash(4096, 64, 98304) > 5


def test_notebook_helpers_and_exercise_references():
    import lionsnb.inference.nb01_attention as fa

    pit = fa.is_causal_pitfall(key_len=20, chunk=3)
    assert pit["decode_error"] > 0.01 and pit["chunk_error"] > 0.01
    assert pit["decode_explicit_mask_error"] < 1e-5 and pit["decode_wrong_equals_first_value"] < 1e-6
    for name, attempt in (("update", lambda *a: online_update(*a)), ("mask", causal_mask),
                          ("hbm", hbm_accesses_flash)):
        assert getattr(fa, f"check_exercise_{name}")(attempt).status == "solved"
    wrong_mask = lambda L, S: torch.ones(L, S, dtype=torch.bool).tril(0)  # noqa: E731  (top-left)
    assert fa.check_exercise_mask(wrong_mask).status == "incorrect"
    no_rescale = lambda m, ell, acc, s, v: (torch.maximum(m, s.amax(-1, keepdim=True)),  # noqa: E731
                                            ell + torch.exp(s - s.amax(-1, keepdim=True)).sum(-1, keepdim=True),
                                            acc + torch.exp(s - s.amax(-1, keepdim=True)) @ v)
    assert fa.check_exercise_update(no_rescale).status == "incorrect"
    assert fa.loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- inside a Llama forward pass

def test_runner_with_flash_attention_equals_sdpa_and_hf(tiny_llama_2l):
    from lionsnb.inference.llama import LlamaRunner, generate

    ids = torch.randint(0, 128, (2, 75), generator=torch.Generator().manual_seed(1))
    flash, sdpa = LlamaRunner(tiny_llama_2l, attention="flash"), LlamaRunner(tiny_llama_2l, attention="sdpa")
    with torch.no_grad():
        hf = tiny_llama_2l(ids).logits
    assert (flash(ids) - sdpa(ids)).abs().max() < 1e-4
    assert (flash(ids) - hf).abs().max() < 1e-4
    # the cached decode feeds L = 1 and chunks with L < S: the bottom-right mask must hold there
    prompt = ids[0, :9].tolist()
    assert generate(flash, prompt, 10).tokens == generate(sdpa, prompt, 10, use_cache=False).tokens
    cache = flash.new_cache(75)
    parts = torch.cat([flash(ids[:1, :30], cache), flash(ids[:1, 30:31], cache), flash(ids[:1, 31:], cache)], 1)
    assert (parts - hf[:1]).abs().max() < 1e-4


@pytest.mark.llm
def test_smollm2_with_flash_attention_keeps_its_predictions(smollm2):
    import lionsnb.inference.nb01_attention as fa

    ids, text = fa.passage("smollm2", 24)
    assert len(ids) == 24 and text.startswith("To be, or not to be")
    real = fa.real_model_check("smollm2", ids)
    assert real["flash_vs_sdpa"] < 1e-3 and real["flash_vs_hf"] < 1e-3
    assert real["same_argmax"] and real["same_argmax_hf"] and real["layers"] == 30


def test_notebook_figures_are_labelled_and_the_gpu_cell_runs_its_code_path_on_cpu():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import lionsnb.inference.nb01_attention as fa
    from lionsnb.plotting import unlabelled_axes

    gpu_rows = fa.gpu_sdpa_timing([64, 128], heads=2, repeats=1, device="cpu")
    assert all("tiled_seconds" in r and ("math_seconds" in r or "math_error" in r) for r in gpu_rows)
    if not torch.cuda.is_available():
        assert fa.gpu_sdpa_timing([64]) is None
    x = torch.tensor([0.3, -1.2, 2.0, 0.7, 4.1])
    sweep = fa.block_sweep(64, 16, blocks=(16, 32), repeats=1, progress=False)
    assert [r["tiles_computed"] for r in sweep["rows"]] == [10, 3]
    real = {"tokens": 3, "layers": 2, "per_position_flash": [0.0, 1e-6, 2e-6],
            "per_position_naive": [0.0, 1e-6, 1e-6], "logit_scale": 10.0}
    draws = [
        (fa.draw_online_softmax, dict(x=x, trace=online_softmax(x, 2)[1], block_size=2)),
        (fa.draw_masks, dict(query_len=3, key_len=7)),
        (fa.draw_tiles, dict(cases=[("a", 40, 40, 8), ("b", 1, 40, 8)])),
        (fa.draw_errors, dict(rows=fa.correctness_sweep(fa.random_shapes(2, 20), progress=False))),
        (fa.draw_memory, dict(sweep=fa.memory_sweep([64, 128], d=16, block_size=16, progress=False))),
        (fa.draw_block, dict(sweep=sweep, block_size=32)),
        (fa.draw_block_sweep, dict(sweep=sweep)),
        (fa.draw_hbm, dict(rows=fa.hbm_rows([256, 512], 64, 192), d=64, sram_kib=192)),
        (fa.draw_real_model, dict(result=real)),
        (fa.draw_gpu, dict(rows=gpu_rows)),
    ]
    for draw, kwargs in draws:
        fig = plt.figure()
        draw(fig, **kwargs)
        assert unlabelled_axes(fig) == [], draw.__name__
        plt.close(fig)
    with pytest.raises(ValueError, match="not swept"):
        fa.sweep_row(sweep, 64)
    assert len(fa.block_table(sweep)) == 4 and len(fa.gpu_table(gpu_rows)) == 2
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="this machine has"):
            fa.gpu_timing([64], "NVIDIA H100")
    assert len(fa.block_table(sweep)) == 4 and len(fa.gpu_table(gpu_rows)) == 2
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="this machine has"):
            fa.gpu_timing([64], "NVIDIA H100")
