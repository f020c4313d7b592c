"""The task mixture, the tiny MoE decoder, evaluation and the sweep helpers of the UNCURL series."""
from __future__ import annotations

import pytest
import torch

from lionsnb.uncurl import MoEConfig, TinyMoE
from lionsnb.uncurl import data as D
from lionsnb.uncurl.experiments import factors_for, threshold_factor
from lionsnb.uncurl.model import evaluate, train_moe


def answer_of(task: str, x: list[str]) -> list[str]:
    if task == "copy":
        return x
    if task == "rev":
        return x[::-1]
    if task == "sort":
        return sorted(x)
    if task == "add":
        return [str((int(x[0]) + int(x[1])) % 10)]
    if task == "succ":
        return ["abcdefgha"["abcdefgh".index(s) + 1] if s.isalpha() else str((int(s) + 1) % 10) for s in x]
    if task == "parity":
        return [str(int(s) % 2) for s in x]
    if task == "count":
        return [str(len(x))]
    keys, values, q = x[:-1:2], x[1:-1:2], x[-1]
    return [values[keys.index(q)]]


def test_every_task_generates_correct_answers_and_masks():
    batch = D.make_batch(D.ALL_TASKS, n_per_task=20, seed=3)
    assert batch.tokens.shape == (160, D.SEQ_LEN)
    for row in range(len(batch)):
        text = D.decode(batch.tokens[row]).split()
        task = text[0][1:-1]
        eq = text.index("=")
        x, y = text[1:eq], text[eq + 1:-1]
        assert text[-1] == "<eos>"
        assert y == answer_of(task, x), (task, text)
        targets = batch.tokens[row, 1:][batch.answer_mask[row, :-1]]
        assert D.decode(targets).split() == y + ["<eos>"]
    again = D.make_batch(D.ALL_TASKS, n_per_task=20, seed=3)
    assert torch.equal(again.tokens, batch.tokens)   # seeded
    with pytest.raises(ValueError, match="unknown task"):
        D.make_batch(("copy", "translate"), n_per_task=2)


def test_routing_weights_are_renormalised_top_k_and_aux_loss_is_switch_style():
    torch.manual_seed(0)
    m = TinyMoE(MoEConfig(n_experts=4, d_model=16, n_heads=2, expert_hidden=8))
    layer = m.moe_layers[0]
    x = torch.randn(30, 16)
    _logits, _probs, w, i = layer.route(x)
    assert torch.allclose(w.sum(-1), torch.ones(30))
    p = torch.softmax(x @ layer.router.weight.T, -1)
    top = torch.topk(p, 2)
    assert torch.equal(i, top.indices) and torch.allclose(w, top.values / top.values.sum(-1, keepdim=True))
    layer.train()
    layer(x)
    share = torch.bincount(i.reshape(-1), minlength=4).float() / 60
    assert torch.allclose(layer.aux_loss, 4 * (share * p.mean(0)).sum())
    with torch.no_grad():   # the layer output is the weighted sum of the chosen experts
        layer.eval()
        ref = torch.stack([sum(w[n, j] * layer.experts[int(i[n, j])](x[n]) for j in range(2)) for n in range(30)])
        assert torch.allclose(layer(x), ref, atol=1e-6)


def test_exact_match_equals_greedy_decoding():
    result = train_moe(MoEConfig(n_experts=4, d_model=32, n_heads=2, expert_hidden=32), ("copy", "add"), steps=40,
                       seed=0)
    model = result.model()
    batch = D.make_batch(("copy", "add"), n_per_task=24, seed=5)
    acc = evaluate(model, batch)
    greedy_ok = []
    with torch.no_grad():
        for row in range(len(batch)):
            ids = batch.tokens[row].tolist()
            start = ids.index(D.EQ) + 1
            end = ids.index(D.EOS) + 1
            seq = ids[:start]
            while len(seq) < end:
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            greedy_ok.append(seq == ids[:end])
    for t, name in enumerate(batch.tasks):
        sel = (batch.task == t).tolist()
        ref = sum(ok for ok, s in zip(greedy_ok, sel) if s) / sum(sel)
        assert acc[name]["acc"] == pytest.approx(ref)
    assert len(result.losses) == 40 and result.losses[-1] < result.losses[0]


def test_threshold_factor_and_factors():
    assert factors_for(8) == [1, 2, 4, 8] and factors_for(4) == [1, 2, 4]
    curve = {1: 1.0, 2: 0.99, 4: 0.9, 8: 0.3}
    assert threshold_factor(curve, 0.02) == 2
    assert threshold_factor(curve, 0.1) == 4
    assert threshold_factor(curve, 0.0) == 1
    assert threshold_factor({1: 0.9, 2: 0.5, 4: 0.9}, 0.02) == 1   # the accuracy must stay flat up to r*
    with pytest.raises(ValueError):
        threshold_factor({2: 0.5}, 0.1)


def test_latency_benchmark_runs_and_reports_ratios():
    from lionsnb.uncurl.benchmark import run

    res = run(experts=4, factor=2, tokens=32, repeats=2)
    assert res["expert_params_pruned"] * 2 == res["expert_params_unpruned"]
    assert all(res[k] > 0 for k in ("slot_over_unpruned", "logsumexp_over_slot", "mean_over_slot"))


def test_task_finetune_follows_its_stopping_rule():
    from lionsnb.uncurl.experiments import pretrain, task_finetune

    trained = pretrain(2, ("copy", "add"), steps=3, batch_size=8, d_model=16, n_heads=2, expert_hidden=8,
                       progress=False)
    none = task_finetune(trained, ("copy",), steps=0, progress=False)
    assert none["steps"] == {"copy": 0}
    assert all(torch.equal(none["copy"][k], v) for k, v in trained["state"].items())
    easy = task_finetune(trained, ("copy",), steps=5, target_acc=0.0, progress=False)   # already "accurate"
    assert easy["steps"] == {"copy": 0}
    hard = task_finetune(trained, ("copy", "add"), steps=5, target_acc=1.01, check_every=2, n_check=8,
                         batch_size=8, progress=False)
    assert hard["steps"] == {"copy": 5, "add": 5}
    assert not torch.equal(hard["add"]["head.weight"], trained["state"]["head.weight"])
