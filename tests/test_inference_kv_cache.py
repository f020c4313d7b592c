"""Tests of notebook 2 of the inference series: KV cache, GQA and the paged KV cache (lionsnb.inference.paged,
lionsnb.inference.nb02_kv_cache). Tiny random Llama models except one test on the real SmolLM2."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import lionsnb.inference.nb02_kv_cache as kc
from lionsnb.inference.llama import KVCache, LlamaRunner, generate, kv_cache_bytes, naive_attention
from lionsnb.inference.paged import (
    BlockManager,
    OutOfBlocks,
    PagedKVCache,
    PagedSequence,
    blocks_needed,
    paged_attention,
    paged_greedy,
    prefix_sharing,
    random_requests,
    simulate_serving,
)
from lionsnb.plotting import unlabelled_axes

# ----------------------------------------------------------------------------- block manager

def test_blocks_needed():
    assert [blocks_needed(n, 16) for n in (0, 1, 15, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError):
        blocks_needed(3, 0)


def test_reference_counts_fork_copy_on_write_and_free():
    m = BlockManager(num_blocks=10, block_size=4)
    m.add_sequence("a")
    assert m.append("a", 6) == []                       # 2 blocks: one full, one with 2 of 4 slots
    assert m.tables["a"] == [0, 1] and m.ref_counts[:2] == [1, 1]
    m.fork("a", "b")                                    # b shares both blocks
    assert m.tables["b"] == [0, 1] and m.ref_counts[:2] == [2, 2] and m.used_blocks == 2
    copies = m.append("b", 1)                           # b writes into the shared partial block: copy it
    assert copies == [(1, 2)] and m.tables["b"] == [0, 2] and m.ref_counts[:3] == [2, 1, 1] and m.copies == 1
    assert m.append("a", 1) == []                       # a is now the only holder of block 1: in place
    assert m.tables["a"] == [0, 1]
    m.append("a", 3)                                    # crosses a boundary: a new block, no copy
    assert m.tables["a"] == [0, 1, 3] and m.lengths["a"] == 10
    m.check()
    assert m.tokens_stored() == 4 + 4 + 2 + 3          # block 0 counted once although shared
    m.free("a")
    assert m.ref_counts[0] == 1 and m.ref_counts[1] == 0 and m.ref_counts[3] == 0   # shared block 0 survives
    m.check()
    m.free("b")
    assert m.free_blocks == 10 and sum(m.ref_counts) == 0
    m.check()


def test_fork_on_block_boundary_needs_no_copy_and_truncate_releases():
    m = BlockManager(num_blocks=6, block_size=4)
    m.add_sequence(0)
    m.append(0, 8)
    m.fork(0, 1)
    assert m.append(1, 1) == [] and m.tables[1] == [0, 1, 2]   # full blocks are never written again
    m.truncate(1, 3)
    assert m.tables[1] == [0] and m.ref_counts[:3] == [2, 1, 0]
    m.check()


def test_out_of_blocks_changes_nothing():
    m = BlockManager(num_blocks=2, block_size=4)
    m.add_sequence(0)
    m.append(0, 6)
    m.fork(0, 1)
    before = (list(m.ref_counts), {k: list(v) for k, v in m.tables.items()}, dict(m.lengths), m.free_blocks)
    with pytest.raises(OutOfBlocks):
        m.append(1, 1)                                  # needs a copy of the shared block: no block free
    assert (m.ref_counts, m.tables, m.lengths, m.free_blocks) == before
    m.check()


def test_random_operations_keep_the_invariants():
    rng = np.random.default_rng(0)
    m = BlockManager(num_blocks=64, block_size=3)
    names = 0
    for _ in range(400):
        op = rng.integers(0, 5)
        live = list(m.tables)
        try:
            if op == 0 or not live:
                m.add_sequence(names)
                names += 1
            elif op == 1:
                m.append(live[rng.integers(len(live))], int(rng.integers(1, 8)))
            elif op == 2:
                m.fork(live[rng.integers(len(live))], names)
                names += 1
            elif op == 3:
                m.free(live[rng.integers(len(live))])
            else:
                s = live[rng.integers(len(live))]
                m.truncate(s, int(rng.integers(0, m.lengths[s] + 1)))
        except OutOfBlocks:
            pass
        m.check()
    for s in list(m.tables):
        m.free(s)
    assert m.free_blocks == 64


# ----------------------------------------------------------------------------- tensors

@pytest.mark.parametrize("block_size", [1, 3, 8, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_gather_equals_contiguous_cache(block_size, seed):
    out = kc.random_append_check(3, 2, 5, block_size, [37 + 3 * block_size, 1, 20, 9], seed=seed)
    assert out["forked"] and out["sequences"] == 5
    assert out["max_diff"] == 0.0
    if block_size > 1:
        assert out["copy_on_write"] >= 1


def test_copy_on_write_keeps_the_parent_intact():
    torch.manual_seed(0)
    cache = PagedKVCache(2, 2, 4, num_blocks=8, block_size=4)
    cache.add_sequence("p")
    k, v = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    cache.append("p", k, v)
    cache.fork("p", "c")
    k2, v2 = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    cache.append("c", k2, v2)
    pk, pv = cache.gather("p")
    ck, cv = cache.gather("c")
    assert torch.equal(pk, k) and torch.equal(pv, v)
    assert torch.equal(ck, torch.cat([k, k2], dim=2)) and torch.equal(cv, torch.cat([v, v2], dim=2))
    assert cache.block_table("p")[0] == cache.block_table("c")[0]     # the full block stays shared
    assert cache.block_table("p")[1] != cache.block_table("c")[1]     # the partial one was copied


@pytest.mark.parametrize("queries", [1, 3])
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_attention_through_the_block_table_equals_contiguous_attention(queries, block_size):
    torch.manual_seed(block_size + queries)
    layers, kv_heads, heads, d = 2, 2, 6, 8
    cache = PagedKVCache(layers, kv_heads, d, num_blocks=32, block_size=block_size)
    contiguous = KVCache(layers, 1, kv_heads, d, 40)
    cache.add_sequence(0)
    cache.add_sequence(1)                                # interleave another sequence: scattered blocks
    for chunk in (5, 1, 7, 2):
        k, v = torch.randn(layers, kv_heads, chunk, d), torch.randn(layers, kv_heads, chunk, d)
        start = cache.length(0)
        cache.append(0, k, v)
        cache.append(1, torch.randn(layers, kv_heads, 2, d), torch.randn(layers, kv_heads, 2, d))
        for layer in range(layers):
            contiguous.store(layer, start, k[layer][None], v[layer][None])
    n = cache.length(0)
    for layer in range(layers):
        q = torch.randn(heads, queries, d)
        expected = naive_attention(q[None], contiguous.keys[layer, :, :, :n], contiguous.values[layer, :, :, :n],
                                   causal=True)[0]
        got = paged_attention(q, cache, 0, layer)
        assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
    assert kc.paged_attention_check(cache, 0, heads, queries) < 1e-5


def test_runner_through_the_paged_cache_equals_the_contiguous_cache(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    prompt = [3, 17, 99, 4, 56, 7, 7, 120, 1]
    expected = generate(runner, prompt, 12, keep_logits=True)
    cache = PagedKVCache.for_runner(runner, num_blocks=16, block_size=4)
    assert paged_greedy(runner, cache, "s", prompt, 12) == expected.tokens
    assert cache.length("s") == len(prompt) + 11
    # logits step by step, and a sampled decode from the same seed
    cache2 = PagedKVCache.for_runner(runner, num_blocks=16, block_size=3)
    view, contiguous = PagedSequence(cache2, 0), runner.new_cache(40)
    feed = torch.tensor([prompt])
    for token in expected.tokens[:6]:
        a, b = runner(feed, view)[0, -1], runner(feed, contiguous)[0, -1]
        assert torch.allclose(a, b, atol=1e-5)
        feed = torch.tensor([[token]])
    sampled = generate(runner, prompt, 10, temperature=1.0, seed=3).tokens
    assert paged_greedy(runner, PagedKVCache.for_runner(runner, num_blocks=16, block_size=4), 0, prompt, 10,
                        temperature=1.0, seed=3) == sampled
    with pytest.raises(ValueError):
        runner(torch.tensor([[1, 2]]), view, start=0)   # new tokens must follow the sequence's end


def test_shared_prefix_decode_equals_separate_decodes(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    shared = list(range(10, 31))                         # 21 tokens: 5 full blocks of 4 and one partial
    own = [[40, 41, 42], [50, 51], [60]]
    out = kc.paged_shared_decode(runner, shared, own, 5, block_size=4)
    assert out["equal"]
    assert out["blocks_after_fork"] == out["blocks_after_prefill"] == 6
    assert out["copy_on_write"] == 2                     # the last of the three writes the partial block in place
    assert out["blocks_used"] < out["blocks_unshared"]
    assert all(t[:5] == out["tables"]["request 0"][:5] for t in out["tables"].values())


# ----------------------------------------------------------------------------- memory

def test_formula_equals_allocated_and_gqa_ratio(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    for row in kc.formula_checks(runner, [(1, 1, torch.float32), (37, 3, torch.float16), (100, 2, torch.bfloat16)]):
        assert row["formula"] == row["allocated"]
    per_token = kv_cache_bytes(2, 2, 16, 1, 1, 4)
    assert kc.allocated_bytes(runner, 1) == per_token
    assert kc.allocated_bytes(runner, 10, n_kv_heads=4) == 2 * kc.allocated_bytes(runner, 10)   # MHA = H/G x
    assert kc.allocated_bytes(runner, 10, n_kv_heads=1) * 2 == kc.allocated_bytes(runner, 10)   # MQA
    table = {r["model"]: r for r in kc.known_config_table(runner, name="tiny")}
    assert table["Llama-2-7B (MHA)"]["kib_per_token"] == 512.0
    assert table["Llama-2-70B (GQA-8)"]["kib_per_token"] == 320.0 and table["Llama-2-70B (GQA-8)"]["saving"] == 8
    assert kc.attention_intensity(32, 32) == 1 and kc.attention_intensity(64, 8) == 8


def test_chunked_prefill_matches_one_shot_prefill(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    out = kc.chunked_prefill_check(runner, list(range(5, 25)), 7)
    assert out["max_diff"] < 1e-5 and out["same_token"] and out["stored_diff"] < 1e-5
    assert out["length_after_first"] == 7 and out["length"] == 20 and out["shape"] == (2, 1, 2, 20, 16)


def test_step_flops_model(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    c1, c2 = kc.step_flops(runner, 10, True), kc.step_flops(runner, 20, True)
    u1, u2 = kc.step_flops(runner, 10, False), kc.step_flops(runner, 20, False)
    assert u2 > 1.9 * u1 and c2 < 1.1 * c1 and u1 > 9 * c1


def test_batch_decode_timing_runs_every_batch(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    out = kc.batch_decode_timing(runner, [1, 2, 3, 4], (1, 3), 2, progress=False)
    assert out["batch"] == [1, 3] and all(t > 0 for t in out["step_s"]) and len(out["step_cpu_s"]) == 2


def test_step_time_scan_rolls_the_cache_back(tiny_llama_2l):
    runner = LlamaRunner(tiny_llama_2l)
    out = kc.step_time_scan(runner, list(range(1, 40)), (4, 16, 32), 2, progress=False)
    assert out["context"] == [4, 16, 32]
    for key in ("cached_s", "uncached_s", "cached_cpu_s", "uncached_cpu_s"):
        assert len(out[key]) == 3 and all(t >= 0 for t in out[key])
    assert all(t > 0 for t in out["cached_s"] + out["uncached_s"])
    with pytest.raises(ValueError):
        kc.step_time_scan(runner, list(range(10)), (16,), 1, progress=False)


def test_decode_speed_summary():
    out = kc.decode_speed([5.0, 1.0, 1.0, 1.0, 1.0], [5.0, 2.0, 3.0, 4.0, 5.0])
    assert out["speedup"] == pytest.approx(3.5) and out["uncached_growth"] == pytest.approx(2.5)
    assert out["cached_growth"] == 1.0 and out["prefill_s"] == 5.0


# ----------------------------------------------------------------------------- simulation

def test_serving_simulation_properties():
    requests = random_requests(120, 128, 128, seed=1)
    cont = simulate_serving(requests, pool_tokens=4096, max_len=256)
    assert cont["max_waste"] < 256 and cont["preemptions"] == 0
    for block in (1, 8, 32):
        paged = simulate_serving(requests, pool_tokens=4096, max_len=256, block_size=block)
        assert paged["max_waste"] < block                                  # under one block per sequence
        assert paged["utilisation"] > cont["utilisation"]
        assert paged["tokens_per_step"] >= cont["tokens_per_step"]
        trace = paged["trace"]
        assert (trace["reserved"] >= trace["real"]).all() and (trace["reserved"] <= 4096).all()
        if block == 1:
            assert paged["utilisation"] == 1.0
    # contiguous reservation: every running sequence holds max_len slots
    assert (cont["trace"]["reserved"] == 256 * cont["trace"]["batch"]).all()
    assert cont["tokens_per_step"] * cont["steps"] == pytest.approx(requests.output.sum())
    with pytest.raises(ValueError):
        simulate_serving(requests, pool_tokens=4096, max_len=100)


def test_prefix_sharing_counts():
    for system, users, bs in ((100, [20, 30, 5, 17], 16), (64, [1, 2, 3], 16), (7, [9, 9], 4), (50, [3], 8)):
        out = prefix_sharing(len(users), system, users, bs)
        full = system // bs
        assert out["blocks_unshared"] == sum(blocks_needed(system + u, bs) for u in users)
        assert out["blocks_shared"] == full + sum(blocks_needed(system + u, bs) - full for u in users)
        assert out["copy_on_write"] == (len(users) - 1 if system % bs else 0)


def test_sweep_and_figures():
    sweep = kc.serving_sweep(20, 4096, block_sizes=kc.BLOCK_SIZES, max_lens=kc.MAX_LENS, progress=False)
    assert kc.sweep_max_waste(sweep) < 1
    import matplotlib.pyplot as plt

    fig = kc.figure(13, 4)
    kc.draw_serving(fig, sweep=sweep, block_size=16, max_len=1024)
    assert unlabelled_axes(fig) == []
    plt.close(fig)
    m = BlockManager(6, 4)
    m.add_sequence("a")
    m.append("a", 6)
    m.fork("a", "b")
    fig = kc.figure(6, 3)
    kc.draw_pool(fig, snapshots=[("after fork", kc.pool_snapshot(m))])
    assert unlabelled_axes(fig) == []
    plt.close(fig)
    fig = kc.figure(10, 4)
    kc.draw_sharing(fig, rows=[{"n": 2, "blocks_unshared": 10, "blocks_shared": 6}])
    kc.draw_decode_time(kc.figure(), prompt_len=4, cached_seconds=[1, 0.1, 0.1], uncached_seconds=[1, 0.3, 0.4])
    plt.close("all")


# ----------------------------------------------------------------------------- exercises

def test_exercise_references_and_wrong_answers():
    assert kc.check_exercise_bytes(kv_cache_bytes).status == "solved"
    assert kc.check_exercise_bytes(lambda L, g, d, s, b, e: L * g * d * s * b * e).status == "incorrect"
    assert kc.check_exercise_blocks(blocks_needed).status == "solved"
    assert kc.check_exercise_blocks(lambda n, b: n // b + 1).status == "incorrect"
    assert kc.check_exercise_blocks(lambda n, b: math.ceil(n / b)).status == "solved"
    assert kc.check_exercise_waste(kc.contiguous_waste).status == "solved"
    assert kc.check_exercise_waste(lambda lengths, L: L - max(lengths)).status == "incorrect"


# ----------------------------------------------------------------------------- the real model

@pytest.mark.llm
def test_real_model_cached_equals_uncached_equals_hf(smollm2):
    model, tokenizer, runner = smollm2
    assert (runner.n_layers, runner.n_heads, runner.n_kv_heads, runner.head_dim) == (30, 9, 3, 64)
    prompt = kc.prompt_ids(tokenizer, 12)
    out = kc.greedy_runs("smollm2", prompt, 5)
    assert out["cached_tokens"] == out["uncached_tokens"] == out["hf_tokens"]
    assert max(out["diff_uncached"]) < 1e-3 and max(out["diff_hf"]) < 1e-3
    row = kc.formula_checks(runner, [(64, 1, torch.float32)])[0]
    assert row["formula"] == row["allocated"] == 2 * 30 * 3 * 64 * 64 * 4
    # the known configurations next to the loaded model, which must match its own config
    configs = {r["model"]: r for r in kc.known_config_table(runner)}
    assert configs["SmolLM2-135M (loaded, GQA-3)"]["kib_per_token"] == 2 * 30 * 3 * 64 * 2 / 1024
    assert all(r["source"] for r in configs.values())


@pytest.mark.llm
def test_the_benchmark_script_runs_on_core_modules(smollm2):
    """benchmarks/inference_speed.py calls lionsnb.inference.benchmark, which imports no notebook module."""
    from lionsnb.inference.benchmark import kv_cache_benchmark, run

    bench = kv_cache_benchmark(new_tokens=3, prompt_tokens=6)
    assert bench["tokens_match"] and bench["speedup"] > 0 and bench["new_tokens"] == 3
    out = run("attention", n=64)
    assert out["attention"]["ratio_naive_over_tiled"] > 0
