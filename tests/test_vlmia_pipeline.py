"""The cross-modal pipeline: tiny VLM and a tiny random LlavaForConditionalGeneration through the same code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lionsnb.vlmia import roc_metrics, scores, slices
from lionsnb.vlmia.data import INSTRUCTION, make_pairs, make_tokenizer, patchify
from lionsnb.vlmia.experiments import attack, auc_table, load_tiny, metric_key, tiny_config
from lionsnb.vlmia.model import TinyVLMConfig, build_tiny_vlm, caption_batch
from lionsnb.vlmia.pipeline import (
    TinyVLMAdapter,
    build_sequence,
    describe,
    run_pipeline,
    score_texts,
    sequence_traces,
    tiny_random_llava,
)


def per_example_reference(adapter, images, descriptions, compat="vlmia"):
    """Score one example at a time with scores() on slices of its own full logits (no batching, no padding)."""
    out = []
    for i, d in enumerate(descriptions):
        ids, chunks, ld = build_sequence(adapter, INSTRUCTION if isinstance(adapter, TinyVLMAdapter) else "Say.", d)
        bounds = slices(chunks, adapter.n_image, ld)
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = adapter.logits(images[i:i + 1], x, torch.ones_like(x))[0]
        row = {}
        for name, b in bounds.items():
            if compat == "vlmia":
                row[name] = scores(logits[b], None if name == "img" else x[0, b])
            else:
                rows = logits[b.start - 1:b.stop - 1]
                row[name] = scores(rows, None if name == "img" else x[0, b], compat="standard")
        out.append(row)
    return out


def assert_pipeline_matches(res, ref, rel: float = 1e-9) -> None:
    for i, row in enumerate(ref):
        for name, sc in row.items():
            for k, want in sc.items():
                got = res.scores[name][k][i]
                if math.isnan(want):
                    assert math.isnan(got), (i, name, k)
                else:
                    assert got == pytest.approx(want, rel=rel, abs=1e-12 if rel < 1e-6 else rel), (i, name, k)


def test_tokenizer_patchify_and_data() -> None:
    tok = make_tokenizer()
    pairs = make_pairs(6, 0)
    assert pairs.images.shape == (6, 3, 16, 16) and float(pairs.images.min()) >= 0 and float(pairs.images.max()) <= 1
    for c, tail in zip(pairs.captions, pairs.tails):
        assert c.endswith("near " + tail) and tok.decode(tok.encode(c)) == c
    assert torch.equal(make_pairs(6, 0).images, pairs.images)           # seeded
    shifted = make_pairs(6, 0, distribution="shifted")
    assert all(m["background"] in ("white", "teal") for m in shifted.meta)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48) and torch.equal(p[0, 1], x[0, :, 0:4, 4:8].reshape(-1))
    with pytest.raises(ValueError, match="vocabulary"):
        tok.encode("a purple elephant")


def test_caption_loss_mask_and_sequence_layout() -> None:
    tok = make_tokenizer()
    prefix, suffix, mask = caption_batch(tok, ["a red circle on grey near ivy moss"])
    head = len(tok.encode(f"{INSTRUCTION} ASSISTANT:", add_special_tokens=False))
    assert not mask[0, :head].any() and mask[0, head:].all()             # caption + EOS only
    _, _, text_mask = caption_batch(tok, ["a red circle on grey near ivy moss"], loss_on="text")
    assert text_mask.all()
    model = build_tiny_vlm()
    adapter = TinyVLMAdapter(model)
    ids, chunks, ld = build_sequence(adapter, INSTRUCTION, "a red circle on grey near ivy moss")
    b = slices(chunks, adapter.n_image, ld)
    assert [ids[i] for i in range(b["img"].start, b["img"].stop)] == [tok.image_token_id] * 16
    assert tok.decode(ids[b["desp"]]) == "a red circle on grey near ivy moss"
    assert tok.decode(ids[b["inst"]], skip_special_tokens=False) == f"{INSTRUCTION} ASSISTANT:"
    assert len(ids) == b["inst_desp"].stop


@pytest.mark.parametrize("compat", ["vlmia", "standard"])
def test_pipeline_equals_per_slice_scores(compat: str) -> None:
    model = build_tiny_vlm(TinyVLMConfig(n_embd=32, n_layer=1), seed=3)
    adapter = TinyVLMAdapter(model)
    pairs = make_pairs(5, 1)
    descriptions = ["a red circle on grey near ivy moss", "a blue cross", "a", "a green square and a red cross on "
                    "black near ochre delta", "near near"]
    ref = per_example_reference(adapter, pairs.images, descriptions, compat)
    # one example per forward pass: the same float32 logits as the reference, so the same scores to 1e-9
    res = run_pipeline(adapter, pairs.images, INSTRUCTION, descriptions=descriptions, batch_size=1, compat=compat)
    assert set(res.scores) == {"img", "inst", "desp", "inst_desp"}
    assert all(len(v) == 112 + 12 for v in res.scores.values())          # 112 official keys + Min-K%++
    assert_pipeline_matches(res, ref)
    assert res.forward_seconds > 0 and res.scoring_seconds > 0
    # padded batches: the logits differ only by float32 rounding of the batched matmuls
    batched = run_pipeline(adapter, pairs.images, INSTRUCTION, descriptions=descriptions, batch_size=3, compat=compat)
    assert_pipeline_matches(batched, ref, rel=1e-4)


def test_greedy_describe_and_identities_on_the_pipeline() -> None:
    model = build_tiny_vlm(TinyVLMConfig(n_embd=32, n_layer=1), seed=4)
    with torch.no_grad():  # specials (never generated) get logit 0, below the best text token: greedy = raw argmax
        model.lm.get_output_embeddings().weight[list(model.tokenizer.special_ids)] = 0.0
    adapter = TinyVLMAdapter(model)
    pairs = make_pairs(4, 2)
    desc = describe(adapter, pairs.images, INSTRUCTION, max_new_tokens=6, min_new_tokens=2)
    assert all(2 <= len(d.split()) <= 6 for d in desc)
    # greedy with the KV cache equals argmax of a full forward pass, token by token
    ids, chunks, _ = build_sequence(adapter, INSTRUCTION, desc[0])
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = adapter.logits(pairs.images[:1], x, torch.ones_like(x))[0]
    n = len(desc[0].split())
    start = len(ids) - n
    assert logits[start - 1:len(ids) - 1].argmax(-1).tolist() == ids[start:]
    res = run_pipeline(adapter, pairs.images, INSTRUCTION, descriptions=desc)
    for name in ("img", "desp"):  # pseudo-targets on img, greedy tokens on desp: Min-K% = MaxRényi-K%(α = ∞)
        sc = res.scores[name]
        assert np.allclose(sc["ppl"], np.exp(sc["Max_100% renyi_inf"]), rtol=1e-12)
        for p in ("0%", "10.0%", "50.0%", "90.0%"):
            assert np.allclose(sc[f"Min_{p} Prob"], sc[f"Max_{p} renyi_inf"], rtol=1e-12)
    labels = [1, 0, 1, 0]
    assert roc_metrics(res.scores["img"]["ppl"], labels)[0] == roc_metrics(res.scores["img"]["Max_100% renyi_inf"],
                                                                           labels)[0]
    tr = sequence_traces(adapter, pairs.images[:1], INSTRUCTION, desc[0])
    assert tr["quantities"]["renyi_05"].shape == (len(ids) - 1,)
    assert tr["tokens"][tr["slices"]["img"].start] == "<img>"


def test_text_mia_slices_on_a_black_image() -> None:
    model = build_tiny_vlm(TinyVLMConfig(n_embd=32, n_layer=1), seed=5)
    res = score_texts(TinyVLMAdapter(model), ["a red circle on grey near ivy moss", "a blue cross on black"],
                      torch.zeros(1, 3, 16, 16))
    assert set(res.scores) == {"inst", "desp"}
    assert np.all(np.isfinite(res.scores["inst"]["ppl"]))


def test_untrained_model_iid_split_gives_chance_auc() -> None:
    cfg = tiny_config({"image_size": 16, "n_embd": 64, "n_layer": 2})
    pairs = make_pairs(256, 7)
    labels = np.r_[np.ones(128), np.zeros(128)]
    res = attack(load_tiny(cfg, None), pairs.images, labels, max_new_tokens=8, batch_size=256)
    table = auc_table(res)
    aucs = [a for per in table.values() for a in per.values()]
    assert len(aucs) == 4 * 124 and min(aucs) >= 0.35 and max(aucs) <= 0.65


def test_metric_key_families() -> None:
    assert metric_key("MaxRényi-K%", "0.5", 10) == "Max_10.0% renyi_05"
    assert metric_key("MinRényi-K%", "inf", 0) == "Min_0% renyi_inf"
    assert metric_key("Min-K% Prob", "1", 100) == "Min_90.0% Prob"
    assert metric_key("ModRényi", "1", 10) == "Modified_entropy"
    assert metric_key("Perplexity") == "ppl" and metric_key("Max-Prob-Gap") == "Max_Prob_Gap"
    with pytest.raises(ValueError, match="family"):
        metric_key("Zlib")


# --------------------------------------------------------------------------- transformers' LLaVA, offline

def test_pipeline_runs_unchanged_on_transformers_llava() -> None:
    adapter = tiny_random_llava()
    assert adapter.n_image == 4
    images = make_pairs(3, 0).images
    res = run_pipeline(adapter, images, "Say.", max_new_tokens=5, min_new_tokens=2, batch_size=1)
    assert all(2 <= len(d.split()) <= 5 for d in res.descriptions)
    assert set(res.scores) == {"img", "inst", "desp", "inst_desp"}
    assert_pipeline_matches(res, per_example_reference(adapter, images, res.descriptions))
    ids, chunks, ld = build_sequence(adapter, "Say.", res.descriptions[0])
    b = slices(chunks, 4, ld)
    assert ids[b["img"]] == [3, 3, 3, 3] and ids[0] == 1 and ids[b["inst"]] == [6, 5]


def test_hub_loaders_fail_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from lionsnb.datasets import DatasetUnavailable
    from lionsnb.vlmia.hub import load_vlmia_images, load_vlmia_texts
    from lionsnb.vlmia.pipeline import load_llava

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetUnavailable, match="huggingface.co|pip install datasets"):
        load_vlmia_images("img_Flickr")
    with pytest.raises(DatasetUnavailable, match="huggingface.co|pip install datasets"):
        load_vlmia_texts("llava_v15_gpt_text", 32)
    with pytest.raises(ValueError, match="subset"):
        load_vlmia_images("flickr")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not load 'llava-hf/llava-1.5-7b-hf'"):
        load_llava()


def test_augmentations_and_aug_kl_match_the_per_slice_definition() -> None:
    from lionsnb.vlmia.augment import augment_images
    from lionsnb.vlmia.metrics import aug_kl
    from lionsnb.vlmia.pipeline import aug_kl_scores

    pairs = make_pairs(3, 4)
    views = augment_images(pairs.images, seed=1)
    assert len(views) == 4 and all(v.shape == pairs.images.shape for v in views)
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in views)
    assert all(not torch.allclose(v, pairs.images) for v in views)
    assert all(torch.equal(a, b) for a, b in zip(views, augment_images(pairs.images, seed=1)))   # seeded
    model = build_tiny_vlm(TinyVLMConfig(n_embd=32, n_layer=1), seed=6)
    adapter = TinyVLMAdapter(model)
    descriptions = ["a red circle on grey near ivy moss", "a blue cross", "a green square on black near dune ochre"]
    res = aug_kl_scores(adapter, pairs.images, INSTRUCTION, descriptions, seed=5, batch_size=1)
    for i, d in enumerate(descriptions):
        ids, chunks, ld = build_sequence(adapter, INSTRUCTION, d)
        x = torch.tensor([ids])
        with torch.no_grad():
            base = adapter.logits(pairs.images[i:i + 1], x, torch.ones_like(x))[0]
            augmented = [adapter.logits(v, x, torch.ones_like(x))[0]
                         for v in augment_images(pairs.images[i:i + 1], 5 + i)]
        for name, b in slices(chunks, adapter.n_image, ld).items():
            want = aug_kl(base[b], [a[b] for a in augmented])
            assert res[name][i] == pytest.approx(want, rel=1e-6, abs=1e-9), (i, name)
            assert res[name][i] <= 0   # minus a KL divergence
