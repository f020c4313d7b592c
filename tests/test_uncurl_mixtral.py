"""The Mixtral adapter on a tiny randomly initialised MixtralForCausalLM (offline, fused expert tensors)."""
from __future__ import annotations

import pytest
import torch

from lionsnb.uncurl import mixtral, prune_moe
from lionsnb.uncurl.components import expert_forward
from lionsnb.uncurl.prune import METHODS, ROUTERS

transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("the adapter targets the fused expert layout of transformers >= 5", allow_module_level=True)


@pytest.fixture(scope="module")
def model():
    return mixtral.tiny_mixtral(n_experts=4, seed=0)


@pytest.fixture(scope="module")
def calib():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (4, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    return [{"input_ids": ids[:2], "attention_mask": mask[:2]}, {"input_ids": ids[2:], "attention_mask": mask[2:]}]


def test_layout_is_the_fused_one(model):
    block = mixtral.moe_blocks(model)[0]
    assert tuple(block.experts.gate_up_proj.shape) == (4, 96, 32)
    assert tuple(block.experts.down_proj.shape) == (4, 32, 48)
    assert tuple(block.gate.weight.shape) == (4, 32)


def test_weights_round_trip_exactly(model):
    block = mixtral.moe_blocks(model)[1]
    gate_up, down = block.experts.gate_up_proj.detach().clone(), block.experts.down_proj.detach().clone()
    experts = mixtral.get_experts(block)
    assert torch.equal(experts[2]["gate.weight"], gate_up[2, :48]) and torch.equal(experts[2]["up.weight"],
                                                                                     gate_up[2, 48:])
    mixtral.set_experts(block, experts)
    assert torch.equal(block.experts.gate_up_proj, gate_up) and torch.equal(block.experts.down_proj, down)


def test_expert_dict_computes_what_the_fused_module_computes(model):
    block = mixtral.moe_blocks(model)[0]
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    experts = mixtral.get_experts(block)
    idx = torch.full((5, 1), 3)
    with torch.no_grad():
        fused = block.experts(x, idx, torch.ones(5, 1))
    assert torch.allclose(fused, expert_forward(experts[3], x), atol=1e-5)


def test_router_statistics_skip_padding(model, calib):
    stats = mixtral.router_statistics(model, calib)
    assert len(stats) == 2
    assert stats[0]["logits"].shape == (4 * 12 - 3, 4) and stats[0]["topk"].shape == (45, 2)


@pytest.mark.parametrize("method", ["uncurl", "frequency"])
def test_r1_is_bit_identical_on_mixtral(model, calib, method):
    ids = calib[1]["input_ids"]
    with torch.no_grad():
        base = model(input_ids=ids).logits
        out = prune_moe(model, 1, calib, method=method, router="mean", eps=0.0)(input_ids=ids).logits
    assert torch.equal(out, base)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("router", ROUTERS)
def test_pruned_mixtral_still_generates(model, calib, method, router):
    pruned = prune_moe(model, 2, calib, method=method, router=router)
    blocks = mixtral.moe_blocks(pruned)
    assert all(b.experts.gate_up_proj.shape[0] == 2 for b in blocks)
    out = pruned.generate(calib[0]["input_ids"][:1], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 18)
    assert mixtral.moe_blocks(model)[0].experts.gate_up_proj.shape[0] == 4   # input untouched
    one = prune_moe(model, 4, calib, method=method, router=router)   # one expert per layer, top-2 > 1
    assert one.generate(calib[0]["input_ids"][:1], max_new_tokens=3, do_sample=False, pad_token_id=0).shape == (1, 15)


def test_slot_binding_on_mixtral_equals_the_merged_experts_under_the_original_routing(model, calib):
    pruned = prune_moe(model, 2, calib, router="slot")
    block, orig = mixtral.moe_blocks(pruned)[0], mixtral.moe_blocks(model)[0]
    labels = pruned.prune_plans[0].labels
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w, i = torch.topk(torch.softmax(x @ orig.gate.weight.T, -1), 2)
        w = w / w.sum(-1, keepdim=True)
        merged = mixtral.get_experts_unchecked(block)
        ref = torch.stack([sum(w[n, j] * expert_forward(merged[int(labels[i[n, j]])], x[n]) for j in range(2))
                           for n in range(6)])
        out = block(x[None]).reshape(6, 32)
    assert torch.allclose(out, ref, atol=1e-5)


def test_mean_router_mixtral_saves_and_reloads_as_a_plain_checkpoint(model, calib, tmp_path):
    from transformers import MixtralForCausalLM

    pruned = prune_moe(model, 2, calib, router="mean")
    pruned.save_pretrained(tmp_path)
    again = MixtralForCausalLM.from_pretrained(tmp_path).eval()
    ids = calib[0]["input_ids"]
    assert again.config.num_local_experts == 2
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("router", ROUTERS)
def test_the_same_adapter_prunes_an_olmoe(router):
    olmoe = mixtral.tiny_olmoe(n_experts=4, seed=1)
    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        base = olmoe(input_ids=ids).logits
        same = prune_moe(olmoe, 1, [ids], method="uncurl", router=router, eps=0.0)(input_ids=ids).logits
    assert torch.equal(same, base)
    pruned = prune_moe(olmoe, 2, [ids], method="uncurl", router=router)
    assert type(mixtral.moe_blocks(pruned)[0].gate).__name__.endswith("OlmoeTopKRouter")
    assert pruned.generate(ids[:1], max_new_tokens=4, do_sample=False, pad_token_id=0).shape == (1, 14)
