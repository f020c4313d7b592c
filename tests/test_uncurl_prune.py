"""prune_moe on the tiny MoE decoder: identities, the three methods, the three router handlings."""
from __future__ import annotations

import copy

import pytest
import torch

from lionsnb.uncurl import MoEConfig, TinyMoE, prune_moe, usage_frequency
from lionsnb.uncurl import data as D
from lionsnb.uncurl.components import expert_forward
from lionsnb.uncurl.model import collapse_logsumexp, count_parameters, expert_from_dict, router_statistics
from lionsnb.uncurl.prune import METHODS, ROUTERS, align_clusters, collect_router_statistics


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TinyMoE(MoEConfig(n_experts=8, d_model=32, n_heads=2, expert_hidden=32)).eval()
    with torch.no_grad():   # sharper routing than the default init, so that usage is uneven
        for layer in m.moe_layers:
            layer.router.weight.mul_(4.0)
    return m


@pytest.fixture(scope="module")
def calib():
    return D.calibration_batches("rev", 64, seed=1, batch_size=32)


@pytest.fixture(scope="module")
def probe():
    return D.make_batch(("rev", "copy"), n_per_task=16, seed=2).inputs


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("router", ROUTERS)
def test_r1_leaves_outputs_bit_identical(model, calib, probe, method, router):
    with torch.no_grad():
        base = model(probe)
        pruned = prune_moe(model, 1, calib, method=method, router=router, eps=0.0)
        assert torch.equal(pruned(probe), base)
        assert torch.equal(model(probe), base)   # the input model is unchanged


def test_default_eps_scales_singletons_so_r1_is_not_exact(model, calib, probe):
    with torch.no_grad():
        pruned = prune_moe(model, 1, calib, method="uncurl")
        assert not torch.equal(pruned(probe), model(probe))
        plan = pruned.prune_plans[0]
        e = 3
        f = plan.frequencies[e]
        assert torch.allclose(pruned.moe_layers[0].experts[e].fc1.weight,
                              model.moe_layers[0].experts[e].fc1.weight * f / (f + 1e-3))


def test_frequency_drop_keeps_exactly_the_most_used_experts(model, calib, probe):
    stats = router_statistics(model, calib)
    pruned = prune_moe(model, 4, calib, method="frequency")
    for layer_idx, (orig, new, st) in enumerate(zip(model.moe_layers, pruned.moe_layers, stats)):
        counts = torch.bincount(st["topk"].reshape(-1), minlength=8)
        top2 = sorted(sorted(range(8), key=lambda e: (-int(counts[e]), e))[:2])
        assert pruned.prune_plans[layer_idx].kept == top2
        assert len(new.experts) == 2 and new.router.out_features == 2
        assert torch.equal(new.router.weight, orig.router.weight[top2])
        for k, e in enumerate(top2):
            for name, p in orig.experts[e].state_dict().items():
                assert torch.equal(new.experts[k].state_dict()[name], p)
    # the dropped experts' tokens are re-routed among the kept ones with renormalised top-k weights
    layer, orig = pruned.moe_layers[0], model.moe_layers[0]
    x = torch.randn(20, 32, generator=torch.Generator().manual_seed(3))
    kept = pruned.prune_plans[0].kept
    logits = x @ orig.router.weight.T
    masked = logits.masked_fill(~torch.isin(torch.arange(8), torch.tensor(kept)), float("-inf"))
    w, i = torch.topk(torch.softmax(masked, -1), 2)
    w = w / w.sum(-1, keepdim=True)
    ref = sum(w[:, j, None] * torch.stack([orig.experts[int(e)](x[n]) for n, e in enumerate(i[:, j])])
              for j in range(2))
    with torch.no_grad():
        assert torch.allclose(layer(x), ref, atol=1e-5)


def test_merging_identical_experts_is_a_no_op(calib, probe):
    torch.manual_seed(1)
    m = TinyMoE(MoEConfig(n_experts=4, d_model=32, n_heads=2, expert_hidden=32)).eval()
    for layer in m.moe_layers:
        state = layer.experts[0].state_dict()
        for e in layer.experts[1:]:
            e.load_state_dict(state)
    with torch.no_grad():
        base = m(probe)
        for router in ROUTERS:
            for r in (2, 4):
                out = prune_moe(m, r, calib, method="uncurl", router=router, eps=0.0)(probe)
                assert torch.allclose(out, base, atol=1e-5), (router, r)


def test_alignment_inside_a_model_is_output_invariant(model, probe):
    m = copy.deepcopy(model)
    with torch.no_grad():
        base = m(probe)
        for layer in m.moe_layers:
            experts = [{k: v.clone() for k, v in e.state_dict().items()} for e in layer.experts]
            aligned = align_clusters(experts, torch.zeros(8, dtype=torch.long), torch.ones(8), align="expert0")
            changed = sum(not torch.equal(a["fc1.weight"], b["fc1.weight"]) for a, b in zip(aligned, experts))
            assert changed >= 6   # random experts really get permuted
            for e, a in zip(layer.experts, aligned):
                e.load_state_dict(a)
        assert torch.allclose(m(probe), base, atol=1e-5)


def test_logsumexp_router_gives_each_cluster_its_members_summed_probability():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(50, 8, generator=gen, dtype=torch.float64) * 3
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])
    p = torch.softmax(logits, -1)
    summed = torch.stack([p[:, groups == c].sum(-1) for c in range(4)], -1)
    assert torch.allclose(torch.softmax(collapse_logsumexp(logits, groups), -1), summed, atol=1e-12)
    assert torch.equal(collapse_logsumexp(logits, torch.arange(8)), logits)   # singletons: exact


def test_routers_shrink_the_layer_and_slot_binding_matches_a_direct_computation(model, calib):
    stats = collect_router_statistics(model, calib)
    full = count_parameters(model, experts_only=True)
    sizes = {}
    for router in ROUTERS:
        pruned = prune_moe(model, 4, calib, router=router, statistics=stats)
        layer = pruned.moe_layers[1]
        assert len(layer.unique_experts()) == 2
        assert len(layer.experts) == (8 if router == "slot" else 2)
        assert layer.n_slots == (8 if router == "slot" else 2)
        sizes[router] = count_parameters(pruned, experts_only=True)
        if router == "slot":
            plan = pruned.prune_plans[1]
            orig = model.moe_layers[1]
            x = torch.randn(10, 32, generator=torch.Generator().manual_seed(5))
            w, i = torch.topk(torch.softmax(x @ orig.router.weight.T, -1), 2)
            w = w / w.sum(-1, keepdim=True)
            merged = [{k: v for k, v in layer.experts[int(plan.labels.tolist().index(c))].state_dict().items()}
                      for c in range(2)]
            ref = torch.stack([sum(w[n, j] * expert_forward(merged[int(plan.labels[i[n, j]])], x[n])
                                   for j in range(2)) for n in range(10)])
            with torch.no_grad():
                assert torch.allclose(layer(x), ref, atol=1e-5)
    assert sizes["slot"] == sizes["logsumexp"] == sizes["mean"] == full // 4


def test_mean_router_rows_are_frequency_weighted(model, calib):
    pruned = prune_moe(model, 2, calib, router="mean")
    plan = pruned.prune_plans[0]
    w = model.moe_layers[0].router.weight
    for c, members in enumerate(plan.clusters):
        f = plan.frequencies[members]
        ref = (f[:, None] * w[members]).sum(0) / f.sum() if float(f.sum()) > 0 else w[members].mean(0)
        assert torch.allclose(pruned.moe_layers[0].router.weight[c], ref, atol=1e-6)


def test_uncurl_plan_uses_the_task_statistics(model, calib):
    stats = collect_router_statistics(model, calib)
    pruned = prune_moe(model, 2, calib, statistics=stats)
    for plan, st in zip(pruned.prune_plans, stats):
        assert torch.allclose(plan.frequencies, usage_frequency(st["topk"], 8))
        assert plan.similarity.shape == (8, 8)
        assert sorted(len(c) for c in plan.clusters) and sum(len(c) for c in plan.clusters) == 8
        assert len(plan.clusters) == 4


def test_bad_arguments_say_what_to_do(model, calib):
    with pytest.raises(ValueError, match="divisor"):
        prune_moe(model, 3, calib)
    with pytest.raises(ValueError, match="method"):
        prune_moe(model, 2, calib, method="magnitude")
    with pytest.raises(ValueError, match="router"):
        prune_moe(model, 2, calib, router="softmax")
    with pytest.raises(ValueError, match="already pruned"):
        once = prune_moe(model, 2, calib, router="slot")
        prune_moe(once, 2, calib)
    with pytest.raises(ValueError, match="empty"):
        prune_moe(model, 2, [])


def test_expert_from_dict_round_trip(model):
    e = model.moe_layers[0].experts[2]
    again = expert_from_dict(e.state_dict())
    for k, v in e.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
