"""The unlearning trainer on a real (tiny) model: the cone invariants at every step, the update of each method against
a hand-written one, the reference model left untouched; the data generator, the tokenisation, the pipeline, the
restricted top-layers wrapper of a Llama-family model, and the real TOFU loader's offline message."""
from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from lionsnb.unlearning import UnlearnConfig, UnlearningTrainer, build_pipeline, lm_loss, make_benchmark, unlearn
from lionsnb.unlearning.data import ATTRIBUTES, TEMPLATES, load_tofu
from lionsnb.unlearning.losses import IGNORE_INDEX
from lionsnb.unlearning.models import TopLayersLM, greedy_generate
from lionsnb.unlearning.text import encode_pairs, word_tokenizer


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(seed=0, n_authors=6, facts_per_author=3, n_eval=6, base_epochs=3, ft_epochs=3,
                          max_new_tokens=4)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------- the cone, every step


@pytest.mark.parametrize("optimizer,lr,auto", [("sgd", 0.5, False), ("adamw", 3e-3, True), ("sgd", 0.2, True)])
def test_cone_invariants_hold_exactly_at_every_step_of_a_real_run(pipe, optimizer, lr, auto):
    model = pipe.model("target")
    res = unlearn(model, pipe.forget_train, pipe.retain_train, method="NGDiff", optimizer=optimizer, lr=lr, steps=12,
                  forget_batch=4, retain_batch=4, auto_lr=auto, lazy_freq=3, progress=False)
    rel_r, rel_f = np.array(res.logs["rel_retain"]), np.array(res.logs["rel_forget"])
    assert len(rel_r) == 12 and res.diverged_step == -1
    assert (rel_r >= -1e-6).all() and (rel_f <= 1e-6).all()
    # <d, g_R> = ||g_R|| (1 - cos) and <d, g_F> = ||g_F|| (cos - 1) at every step
    L = {k: np.array(v) for k, v in res.logs.items()}
    np.testing.assert_allclose(L["dot_retain"], L["norm_retain"] * (1 - L["cos"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(L["dot_forget"], L["norm_forget"] * (L["cos"] - 1), rtol=1e-4, atol=1e-6)
    assert (L["norm_d"] <= 2 + 1e-6).all()
    if auto:
        assert len(res.probes) == 4 and all(p["ratios"][-1] == 0.0 for p in res.probes)


def test_graddiff_leaves_the_cone_where_ngdiff_does_not(pipe):
    model = pipe.model("target")
    res = unlearn(model, pipe.forget_train, pipe.retain_train, method="GradDiff", optimizer="sgd", lr=0.5, steps=12,
                  forget_batch=4, retain_batch=4, progress=False)
    L = {k: np.array(v) for k, v in res.logs.items()}
    leaves = L["norm_ratio"] * L["cos"] > 1
    np.testing.assert_array_equal(L["rel_retain"] < 0, leaves)  # GradDiff raises L_R iff ||g_F|| cos > ||g_R||


# --------------------------------------------------------------------------------------------- one step by hand


def _grads(model, batch):
    model.zero_grad()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    lm_loss(logits, batch.labels).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("method", ["GA", "GradDiff", "NGDiff"])
def test_one_sgd_step_equals_the_hand_written_update(pipe, method):
    model = pipe.model("target")
    trainer = UnlearningTrainer(model, pipe.forget_train, pipe.retain_train,
                                UnlearnConfig(method=method, optimizer="sgd", lr=0.1, steps=1, forget_batch=3,
                                              retain_batch=3, seed=5), progress=False)
    fb = copy.deepcopy(trainer.forget_batches).next()
    rb = copy.deepcopy(trainer.retain_batches).next()
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    g_f, g_r = _grads(model, fb), _grads(model, rb)
    d = {"GA": -g_f, "GradDiff": g_r - g_f, "NGDiff": g_r / g_r.norm() - g_f / g_f.norm()}[method]
    model.zero_grad()
    trainer.train()
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(after, before - 0.1 * d, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["KL", "NPO", "NPO+GD", "NPO+KL"])
def test_trainer_leaves_the_reference_model_untouched(pipe, method):
    model = pipe.model("target")
    ref = pipe.model("target")
    ref_state = _state(ref)
    flags = [p.requires_grad for p in ref.parameters()]
    res = unlearn(model, pipe.forget_train, pipe.retain_train, ref_model=ref, method=method, optimizer="adamw",
                  lr=3e-3, steps=5, forget_batch=4, retain_batch=4, progress=False)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    assert all(p.grad is None for p in ref.parameters())
    assert not any(p.requires_grad for p in ref.parameters()) and any(flags)
    moved = any(not torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())
    assert moved and np.isfinite(res.logs["objective"]).all()


def test_default_reference_is_a_frozen_copy_and_npo_starts_at_2_over_beta_log_2(pipe):
    model = pipe.model("target")
    trainer = UnlearningTrainer(model, pipe.forget_train, pipe.retain_train,
                                UnlearnConfig(method="NPO", lr=1e-3, steps=3, beta=0.1), progress=False)
    assert trainer.ref_model is not model
    start = _state(trainer.ref_model)
    res = trainer.train()
    assert res.logs["npo"][0] == pytest.approx(20 * np.log(2), rel=1e-5)  # S_theta = S_ref at the first step
    assert all(torch.equal(v, start[k]) for k, v in trainer.ref_model.state_dict().items())


def test_divergence_stops_the_run_with_finite_parameters(pipe):
    model = pipe.model("target")
    res = unlearn(model, pipe.forget_train, pipe.retain_train, method="GA", optimizer="sgd", lr=1e4, steps=30,
                  progress=False)
    assert 0 <= res.diverged_step < 30 and len(res.logs["loss_forget"]) == res.diverged_step
    assert np.isfinite(res.logs["loss_forget"]).all() and res.logs["loss_forget"][-1] > 100
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_eval_fn_is_called_at_start_every_k_and_end(pipe):
    model = pipe.model("target")
    calls = []
    res = unlearn(model, pipe.forget_train, pipe.retain_train, method="NGDiff", lr=1e-3, steps=6, eval_every=2,
                  eval_fn=lambda m: calls.append(1) or {"x": 1.0}, progress=False)
    assert [e["step"] for e in res.evals] == [0, 2, 4, 6]


def test_config_errors():
    with pytest.raises(ValueError, match="unknown method"):
        UnlearnConfig(method="SuperForget")
    with pytest.raises(ValueError, match="optimizer"):
        UnlearnConfig(optimizer="lion")


# --------------------------------------------------------------------------------------------- data and text


def test_benchmark_is_seeded_nested_and_tofu_shaped():
    a, b = make_benchmark(20, 10, seed=3), make_benchmark(20, 10, seed=3)
    assert a.items == b.items and a.world_facts == b.world_facts
    assert make_benchmark(20, 10, seed=4).items != a.items
    assert len(a.items) == 200 and {it.kind for it in a.items} == set(ATTRIBUTES)
    f1, _ = a.split(1)
    f5, _ = a.split(5)
    f10, r10 = a.split(10)
    assert set(f1) <= set(f5) <= set(f10) and len(f10) == 20 and len(f10) + len(r10) == 200
    assert not set(f10) & set(r10)
    for it in a.items:
        assert len(it.perturbed) == 5 and len(set(it.perturbed)) == 5 and it.paraphrased not in it.perturbed
        q, ans, para = TEMPLATES[it.kind]
        assert it.question == q.format(n=a.authors[it.author].name)
        prefix = para.split("{v}")[0].format(n=a.authors[it.author].name)
        assert it.paraphrased.startswith(prefix) and all(p.startswith(prefix) for p in it.perturbed)
    for it in a.world_facts + a.real_authors:
        assert len(it.perturbed) == 3 and it.paraphrased == it.answer and it.answer not in it.perturbed
    holdout_names = {it.question for it in a.holdout}
    assert not holdout_names & {it.question for it in a.items}


def test_encoding_masks_the_question_and_labels_answer_plus_eos():
    b = make_benchmark(3, 2, seed=0)
    tok = word_tokenizer(b.texts())
    enc = encode_pairs(tok, [b.items[0].question, b.items[1].question], [b.items[0].answer, "short ."])
    for i in range(2):
        ids, lab, n = enc.input_ids[i], enc.labels[i], int(enc.lengths[i])
        answer_pos = (lab != IGNORE_INDEX).nonzero().reshape(-1)
        assert answer_pos[-1] == n - 1 and ids[n - 1] == tok.eos_token_id and lab[n - 1] == tok.eos_token_id
        assert torch.equal(lab[answer_pos], ids[answer_pos]) and lab[0] == IGNORE_INDEX
        assert (lab[n:] == IGNORE_INDEX).all() and (enc.attention_mask[i, n:] == 0).all()
        assert int(enc.n_labels[i]) == len(answer_pos)
    decoded = tok.decode(enc.input_ids[0, :int(enc.lengths[0])], skip_special_tokens=True)
    assert b.items[0].answer.rstrip(".").split()[0] in decoded


def test_real_tofu_loader_fails_offline_with_a_clear_message():
    with pytest.raises(RuntimeError, match="make_benchmark"):
        load_tofu("forget10")
    with pytest.raises(ValueError, match="forget01"):
        load_tofu("forget50")


def test_pipeline_models_learn_and_retain_model_never_saw_the_forget_set(pipe):
    assert pipe.histories["target"][-1] < pipe.histories["target"][0]
    t, r = pipe.evaluate(pipe.model("target"), rouge=False), pipe.evaluate(pipe.model("retain"), rouge=False)
    assert np.mean(t["per_set"]["forget"]["gt"]) < np.mean(r["per_set"]["forget"]["gt"])
    again = pipe.evaluate(pipe.model("retain"), rouge=False, retain_ratios=r["truth_ratios"])
    assert again["forget_quality"] == 1.0  # the retain model against itself


# --------------------------------------------------------------------------------------------- top layers wrapper


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, eos_token_id=2,
                      pad_token_id=0, bos_token_id=1)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_top_layers_lm_equals_the_full_model_and_restricts_the_vocabulary():
    base = _tiny_llama()
    ids = torch.randint(3, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    full = base(input_ids=ids, attention_mask=mask).logits
    vocab = list(range(0, 50, 2)) + [3, 7]
    top = TopLayersLM(base, n_trainable=1, vocab_ids=vocab)
    out = top(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out[0], full[0][:, vocab], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1, :6], full[1, :6][:, vocab], rtol=1e-5, atol=1e-5)
    assert top.cache_size() == 3
    assert [p.requires_grad for p in base.parameters()] == [False] * len(list(base.parameters()))
    assert sum(p.numel() for p in top.parameters() if p.requires_grad) > 0
    # a deep copy shares the frozen trunk and copies the trainable top
    twin = copy.deepcopy(top)
    assert twin.base is top.base and twin.layers[0] is not top.layers[0]
    with torch.no_grad():
        twin.layers[0].mlp.down_proj.weight.add_(1.0)
    assert not torch.equal(twin.layers[0].mlp.down_proj.weight, top.layers[0].mlp.down_proj.weight)
    # greedy generation: argmax within the restricted vocabulary, the same with and without a KV cache
    prompt = ids[0, :4].tolist()
    gen = greedy_generate(top, [prompt], max_new_tokens=5, eos_token_id=-1)[0]
    seq = list(prompt)
    for _ in range(5):
        logits = base(input_ids=torch.tensor([seq])).logits[0, -1]
        seq.append(vocab[int(logits[vocab].argmax())])
    assert gen == seq[4:]
    labels = torch.tensor([[IGNORE_INDEX, 4, 7]])
    assert top.to_model_ids(labels).tolist() == [[IGNORE_INDEX, 2, 26]]
    with pytest.raises(ValueError, match="outside vocab_ids"):
        top.to_model_ids(torch.tensor([[5]]))


@pytest.mark.skipif(importlib.util.find_spec("rouge_score") is None, reason="rouge_score missing")
def test_evaluation_numbers_have_the_tofu_structure(pipe):
    res = pipe.evaluate(pipe.model("target"), rouge=True)
    nums = res["numbers"]
    assert len([k for k in nums if not k.startswith("forget") and k != "Model Utility"]) == 9
    assert 0 <= nums["Model Utility"] <= 1 and res["truth_ratios"].shape == (len(pipe.forget_items),)
    assert all(0 <= v <= 1 for v in res["per_set"]["retain"]["rouge"])


class _Parrot(torch.nn.Module):
    """A stand-in model whose greedy continuation is always the same token ids (then EOS)."""

    def __init__(self, continuation):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.continuation = list(continuation)

    def generate(self, input_ids, max_new_tokens, eos_token_id, **_):
        tail = (self.continuation + [eos_token_id] * max_new_tokens)[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([tail] * input_ids.shape[0])], dim=1)


def test_muse_knowmem_and_verbmem_follow_their_definitions(pipe):
    from lionsnb.unlearning import knowmem, rouge_l_f1, verbmem

    tok = pipe.tokenizer
    item = pipe.forget_items[0]
    said = tok(" " + item.answer + " Question : who ?", add_special_tokens=False)["input_ids"]
    parrot = _Parrot(said)
    got = knowmem(parrot, tok, [item.question], [item.answer], icl=[("Who?", "Nobody.")], max_new_tokens=40)
    spoken = tok.decode(tok(" " + item.answer, add_special_tokens=False)["input_ids"])
    assert got == pytest.approx(100 * rouge_l_f1(item.answer, spoken))  # cut before the next "Question"
    assert got > 50
    text = f"Question: {item.question}\nAnswer: {item.answer}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    parrot = _Parrot(ids[4:10])
    assert verbmem(parrot, tok, [text], prefix_tokens=4, max_new_tokens=6) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="prefix_tokens"):
        verbmem(parrot, tok, ["short"], prefix_tokens=4)
