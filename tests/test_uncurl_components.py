"""The five UNCURL components against direct computations on hand-built inputs (spec: uncurl_spec.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lionsnb.uncurl import align_expert, cluster_experts, expert_similarity, merge_experts, usage_frequency
from lionsnb.uncurl.components import (
    canonical_labels,
    expert_forward,
    matching_permutation,
    permute_expert,
    random_group_labels,
)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def gelu_expert(d: int, h: int, gen: torch.Generator, dtype=torch.float64) -> dict:
    return {"fc1.weight": torch.randn(h, d, generator=gen, dtype=dtype),
            "fc1.bias": torch.randn(h, generator=gen, dtype=dtype),
            "fc2.weight": torch.randn(d, h, generator=gen, dtype=dtype),
            "fc2.bias": torch.randn(d, generator=gen, dtype=dtype)}


def swiglu_expert(d: int, h: int, gen: torch.Generator, dtype=torch.float64) -> dict:
    return {"gate.weight": torch.randn(h, d, generator=gen, dtype=dtype),
            "up.weight": torch.randn(h, d, generator=gen, dtype=dtype),
            "down.weight": torch.randn(d, h, generator=gen, dtype=dtype)}


def ari(a, b) -> float:
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------------------------- usage_frequency
def test_usage_frequency_counts_all_k_columns_over_n_times_k():
    idx = torch.tensor([[0, 1], [1, 0], [1, 2], [2, 1]])
    f = usage_frequency(idx, 5)
    # expert 0: 2, expert 1: 4, expert 2: 2 of N*k = 8 assignments; 3 and 4 (trailing) never chosen
    assert torch.allclose(f, torch.tensor([0.25, 0.5, 0.25, 0.0, 0.0], dtype=f.dtype))
    assert f.shape == (5,) and abs(float(f.sum()) - 1) < 1e-7
    # column order does not matter; top-1 (first column only) or N in the denominator would differ
    assert torch.equal(usage_frequency(idx.flip(1), 5), f)


def test_usage_frequency_equals_the_reference_rule_on_random_routing():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(300, 8, generator=gen), -1)
    top2 = torch.argsort(probs)[:, -2:]            # MC-SMoE: argsort(probs)[:, -2:], +1 per index
    counts = torch.zeros(8)
    for i in top2.reshape(-1):
        counts[i] += 1
    assert torch.allclose(usage_frequency(top2, 8), counts / counts.sum(), atol=1e-7)
    top3 = torch.topk(probs, 3).indices               # the same rule for any k
    c3 = torch.bincount(top3.reshape(-1), minlength=8).float()
    assert torch.allclose(usage_frequency(top3, 8), c3 / (300 * 3), atol=1e-7)


def test_usage_frequency_rejects_bad_input():
    with pytest.raises(ValueError, match="expert indices"):
        usage_frequency(torch.tensor([[0, 4]]), 4)
    with pytest.raises(ValueError, match="integer"):
        usage_frequency(torch.tensor([[0.0, 1.0]]), 4)


# --------------------------------------------------------------------------------------------- expert_similarity
def test_similarity_equals_mapped_torch_cosine_of_columns(float64):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(200, 6, generator=gen) * torch.arange(1, 7)
    s = expert_similarity(z)
    ref = torch.eye(6)
    for i in range(6):
        for j in range(i + 1, 6):
            v = (F.cosine_similarity(z[:, i], z[:, j], dim=-1, eps=1e-7) + 1) / 2
            ref[i, j] = ref[j, i] = v
    assert s.dtype == torch.float64
    assert torch.allclose(s, ref, rtol=0, atol=1e-12)
    assert torch.equal(s, s.T) and torch.equal(torch.diagonal(s), torch.ones(6))
    assert float(s.min()) >= 0 and float(s.max()) <= 1


def test_similarity_is_uncentred_cosine_not_correlation(float64):
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(500, 4, generator=gen) + 50.0   # a large common offset: cosines near 1, Pearson near 0
    s = expert_similarity(z)
    assert float(s[0, 1]) > 0.99
    anti = torch.stack([torch.linspace(-1, 1, 50), -torch.linspace(-1, 1, 50)], 1)
    assert float(expert_similarity(anti)[0, 1]) < 1e-12   # cos = -1 maps to 0 (the (x + 1)/2 map)


# ----------------------------------------------------------------------------------------------- cluster_experts
def block_similarity(sizes, gen, noise=0.05):
    n = sum(sizes)
    s = torch.full((n, n), 0.1, dtype=torch.float64)
    start = 0
    for k in sizes:
        s[start:start + k, start:start + k] = 0.9
        start += k
    s = s + noise * torch.rand(n, n, generator=gen, dtype=torch.float64)
    s = (s + s.T) / 2
    s.fill_diagonal_(1.0)
    perm = torch.randperm(n, generator=gen)
    truth = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return s[perm][:, perm], truth[perm]


def test_cluster_experts_is_sklearn_spectral_clustering_with_the_seed():
    from sklearn.cluster import SpectralClustering

    gen = torch.Generator().manual_seed(3)
    s, truth = block_similarity([3, 2, 3], gen)
    labels = cluster_experts(s, 3)
    ref = SpectralClustering(n_clusters=3, affinity="precomputed", assign_labels="kmeans",
                             random_state=0).fit(s.numpy()).labels_
    assert labels.dtype == torch.long and ari(labels, ref) == 1.0
    assert ari(labels, truth) == 1.0   # the planted blocks are found
    # unstructured S: the seed must really reach random_state
    a = torch.rand(12, 12, generator=gen, dtype=torch.float64)
    a = (a + a.T) / 2
    a.fill_diagonal_(1.0)
    seen = set()
    for seed in range(6):
        mine = cluster_experts(a, 4, seed=seed)
        ref = SpectralClustering(n_clusters=4, affinity="precomputed", assign_labels="kmeans",
                                 random_state=seed).fit(a.numpy()).labels_
        assert ari(mine, ref) == 1.0
        seen.add(tuple(canonical_labels(mine).tolist()))
    assert len(seen) > 1, "different seeds should give different partitions of an unstructured S"


def test_cluster_experts_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_experts(torch.eye(4), 5)


# -------------------------------------------------------------------------------------------------- align_expert
@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_alignment_preserves_the_function_and_recovers_a_permuted_copy(kind, float64):
    gen = torch.Generator().manual_seed(4)
    make = gelu_expert if kind == "gelu" else swiglu_expert
    ref, other = make(8, 16, gen), make(8, 16, gen)
    x = torch.randn(32, 8, generator=gen)
    aligned = align_expert(ref, other)
    y0, y1 = expert_forward(other, x), expert_forward(aligned, x)
    assert torch.allclose(y1, y0, rtol=0, atol=1e-10 * float(y0.abs().max()))
    before = {k: v.clone() for k, v in other.items()}
    perm = torch.randperm(16, generator=gen)
    shuffled = permute_expert(ref, perm)
    back = align_expert(ref, shuffled)
    for k in ref:
        assert torch.equal(back[k], ref[k]), k
    for k in other:   # inputs untouched
        assert torch.equal(other[k], before[k])


def test_alignment_uses_the_fc2_term_and_maximises_the_score(float64):
    from scipy.optimize import linear_sum_assignment

    gen = torch.Generator().manual_seed(5)
    differs = 0
    for _ in range(5):
        ref, exp = gelu_expert(6, 10, gen), gelu_expert(6, 10, gen)
        score = ref["fc1.weight"] @ exp["fc1.weight"].T + ref["fc2.weight"].T @ exp["fc2.weight"]
        _, perm = linear_sum_assignment(score.numpy(), maximize=True)
        out = align_expert(ref, exp)
        assert torch.equal(out["fc1.weight"], exp["fc1.weight"][perm])
        assert torch.equal(out["fc1.bias"], exp["fc1.bias"][perm])
        assert torch.equal(out["fc2.weight"], exp["fc2.weight"][:, perm])
        assert torch.equal(out["fc2.bias"], exp["fc2.bias"])
        no_fc2 = matching_permutation(ref, exp, include_fc2=False)
        differs += int(not torch.equal(no_fc2, torch.as_tensor(perm)))
    assert differs > 0, "for unrelated experts the fc2 term changes the matching"


# ------------------------------------------------------------------------------------------------- merge_experts
def test_merge_is_the_frequency_weighted_average_with_eps_in_sorted_label_order(float64):
    gen = torch.Generator().manual_seed(6)
    experts = [gelu_expert(4, 5, gen) for _ in range(8)]
    freqs = torch.rand(8, generator=gen)
    labels = torch.tensor([5, 2, 5, 0, 2, 0, 9, 5])
    before = [{k: v.clone() for k, v in e.items()} for e in experts]
    merged = merge_experts(experts, freqs, labels)
    assert len(merged) == 4
    for out, label in zip(merged, [0, 2, 5, 9]):   # torch.unique order
        members = [i for i in range(8) if int(labels[i]) == label]
        for key in experts[0]:
            num = sum(freqs[i] * experts[i][key] for i in members)
            ref = num / (sum(freqs[i] for i in members) + 1e-3)
            assert torch.allclose(out[key], ref, rtol=1e-12, atol=1e-12), (label, key)
    for e, b in zip(experts, before):
        for k in e:
            assert torch.equal(e[k], b[k])


def test_merge_eps_singletons_identical_experts_and_zero_usage(float64):
    gen = torch.Generator().manual_seed(7)
    experts = [gelu_expert(3, 4, gen) for _ in range(4)]
    freqs = torch.tensor([0.1, 0.4, 0.3, 0.2])
    ident = torch.arange(4)
    exact = merge_experts(experts, freqs, ident, eps=0.0)         # r = 1, eps = 0: the identity, exactly
    for a, b in zip(exact, experts):
        for k in a:
            assert torch.equal(a[k], b[k])
    scaled = merge_experts(experts, freqs, ident)                 # default eps: f / (f + 1e-3) times the expert
    for a, b, f in zip(scaled, experts, freqs):
        for k in a:
            assert torch.allclose(a[k], b[k] * f / (f + 1e-3), rtol=1e-12, atol=0)
    same = [experts[0]] * 4                                       # identical experts, eps = 0: a no-op
    out = merge_experts(same, freqs, torch.zeros(4, dtype=torch.long), eps=0.0)[0]
    for k in out:
        assert torch.allclose(out[k], experts[0][k], rtol=1e-14, atol=1e-14)
    zero = merge_experts(experts, torch.tensor([0.0, 0.0, 0.5, 0.5]), torch.tensor([0, 0, 1, 1]))[0]
    assert all(torch.equal(v, torch.zeros_like(v)) for v in zero.values())   # frequencies summing to 0 -> zeros


def test_merge_with_float32_frequencies_matches_to_1e6(float64):
    gen = torch.Generator().manual_seed(8)
    experts = [gelu_expert(3, 4, gen) for _ in range(6)]
    topk = torch.randint(0, 6, (500, 2), generator=gen)
    f32 = usage_frequency(topk, 6).float()
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    merged = merge_experts(experts, f32, labels)
    f64 = f32.double()
    for out, c in zip(merged, range(3)):
        m = [i for i in range(6) if int(labels[i]) == c]
        ref = sum(f64[i] * experts[i]["fc1.weight"] for i in m) / (f64[m].sum() + 1e-3)
        assert torch.allclose(out["fc1.weight"], ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_random_groups_are_non_empty_and_canonical_labels_keep_the_partition():
    gen = torch.Generator().manual_seed(9)
    for _ in range(20):
        labels = random_group_labels(8, 3, gen)
        assert sorted(set(labels.tolist())) == [0, 1, 2]
    assert canonical_labels(torch.tensor([2, 0, 2, 1])).tolist() == [0, 1, 0, 2]
