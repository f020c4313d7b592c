"""The notebook modules of the VL-MIA series: figures with labelled axes, exercise checks, helpers, the text MIA
machinery on a tiny random Llama (the real SmolLM2 run is marked ``llm``)."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from lionsnb.plotting import figure, unlabelled_axes  # noqa: E402
from lionsnb.vlmia import plots  # noqa: E402
from lionsnb.vlmia.evaluation import mann_whitney_auc, roc_metrics  # noqa: E402
from lionsnb.vlmia.metrics import max_renyi_k, min_k_prob, score_keys, text_scores  # noqa: E402
from lionsnb.vlmia.slicing import SLICE_NAMES  # noqa: E402
from lionsnb.vlmia.textmia import Passages, SplitLM, text_mia  # noqa: E402


def fake_result(n: int = 20, seed: int = 0, shift: float = 1.0) -> dict:
    """An attack result with every key on every slice: members' scores shifted down by ``shift``."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n), np.zeros(n)].astype(np.int64)
    keys = score_keys() + [f"Min_{p}++" for p in ("0%", "5.0%", "10.0%", "20.0%", "30.0%", "40.0%", "50.0%", "60.0%",
                                                   "70.0%", "80.0%", "90.0%", "100%")]
    scores = {s: {k: rng.normal(0, 1, 2 * n) - shift * labels for k in keys} for s in SLICE_NAMES}
    return {"scores": scores, "labels": labels, "descriptions": ["a"] * (2 * n)}


def fake_sweep() -> dict:
    return {"epochs": [0, 5, 10], "results": {str(e): fake_result(seed=e, shift=e / 10) for e in (0, 5, 10)},
            "untrained": fake_result(seed=9, shift=0.0)}


def fake_trace(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = 34
    q = {k: rng.random(n) for k in ("renyi_05", "renyi_1", "renyi_2", "renyi_inf", "target_logprob")}
    toks = ["<s>", "USER:"] + ["<img>"] * 16 + ["describe", "the", "image", ".", "ASSISTANT:"] + ["w"] * 12
    return {"quantities": q, "tokens": toks, "slices": {"img": [2, 18], "inst": [18, 23], "desp": [23, 35],
                                                        "inst_desp": [18, 35]}, "description": "w " * 12}


def test_every_figure_labels_its_axes() -> None:
    sweep = fake_sweep()
    final = sweep["results"]["10"]
    traces = {"member": fake_trace(0), "non-member": fake_trace(1)}
    draws = [
        (plots.draw_training, {"run": {"pretrain_losses": [3, 2, 1], "losses": [1, 0.5]}}),
        (plots.draw_trace, {"alpha": "0.5", "k": 10, "traces": traces}),
        (plots.draw_explorer, {"family": "MaxRényi-K%", "alpha": "1", "k": 10, "slice_name": "desp", "epoch": 5,
                               "sweep": sweep}),
        (plots.draw_rocs, {"result": final, "slice_name": "desp", "keys": ["ppl", "Max_10.0% renyi_05"]}),
        (plots.draw_auc_vs_k, {"result": final}),
        (plots.draw_auc_vs_epochs, {"sweep": sweep, "keys": ["ppl", "Max_0% renyi_1"]}),
        (plots.draw_heatmap, {"table": plots.heatmap_table(final)}),
        (plots.draw_histograms, {"result": final, "slice_name": "desp", "keys": ["ppl", "Max_Prob_Gap"]}),
        (plots.draw_text_mia, {"result": {"before": final["scores"]["desp"], "after": final["scores"]["desp"],
                                          "labels": final["labels"]}, "keys": ["ppl"]}),
    ]
    import matplotlib.pyplot as plt

    for draw, kwargs in draws:
        fig = figure(10, 4)
        draw(fig, **kwargs)
        assert unlabelled_axes(fig) == [], draw.__name__
        plt.close(fig)


def test_heatmap_marks_target_based_metrics_na_on_img() -> None:
    table = plots.heatmap_table(fake_result())
    assert table["Perplexity*"]["img"] is None and table["Min-0% Prob*"]["img"] is None
    assert table["MaxRényi α=0.5, K=10%"]["img"] is not None and 0 <= table["Max-Prob-Gap"]["desp"] <= 1


def test_notebook_one_helpers_and_checks() -> None:
    import lionsnb.vlmia.nb01_pipeline as nb1

    rows = nb1.known_answer_checks()
    assert nb1.known_answer_error(rows) < 1e-9
    assert nb1.check_exercise_slices(lambda c0, n, cl, ld: {
        "img": (c0, c0 + n), "inst": (c0 + n, c0 + n + cl - 1 - ld), "desp": (c0 + n + cl - 1 - ld, c0 + n + cl - 1),
        "inst_desp": (c0 + n, c0 + n + cl - 1)}).status == "solved"
    assert nb1.check_exercise_slices(lambda *a: {"img": (0, 1)}).status == "incorrect"

    def exact_floor(values, ratio):
        k = max(1, math.floor(round(len(values) * ratio, 9)))
        return float(np.mean(sorted(values)[-k:]))

    assert nb1.check_exercise_max_renyi_k(exact_floor).status == "incorrect"  # k = 63, not 62, for n = 90, K = 0.7
    assert nb1.check_exercise_max_renyi_k(max_renyi_k).status == "solved"
    assert set(nb1.MODEL_ANSWERS) == {3}


def test_notebook_two_three_four_helpers() -> None:
    import lionsnb.vlmia.nb02_explorer as nb2
    import lionsnb.vlmia.nb03_auc_study as nb3
    import lionsnb.vlmia.nb04_confound_text as nb4

    assert nb2.known_roc_error(nb2.known_roc_cases()) < 1e-12
    assert nb2.check_exercise_auc(mann_whitney_auc).status == "solved"
    assert nb2.nearest_epoch(-1, [0, 5, 10]) == 10 and nb2.nearest_epoch(7, [0, 5, 10]) == 5
    sweep = fake_sweep()
    assert 0 <= nb2.untrained_deviation(sweep) <= 0.5
    cmp = nb2.renyi_vs_ppl(sweep["results"]["10"])
    assert cmp["difference"] == pytest.approx(cmp["maxrenyi"] - cmp["ppl"])
    assert nb3.batched_vs_loop()["largest difference"] < 1e-12
    assert nb3.check_exercise_min_k_prob(min_k_prob).status == "solved"
    assert nb3.growth(sweep, "ppl") == pytest.approx(
        roc_metrics(sweep["results"]["10"]["scores"]["desp"]["ppl"], sweep["results"]["10"]["labels"])[0]
        - roc_metrics(sweep["results"]["0"]["scores"]["desp"]["ppl"], sweep["results"]["0"]["labels"])[0])
    assert nb4.check_exercise_zlib(lambda p, t: text_scores(p, t)["ppl/zlib"]).status == "solved"
    study = {"iid": fake_result(seed=1, shift=0.0), "shifted": fake_result(seed=2, shift=2.0)}
    mix = nb4.mixtures(study)
    aucs = [roc_metrics(mix["mixes"][f"{f:g}"]["scores"]["desp"]["ppl"], mix["mixes"][f"{f:g}"]["labels"])[0]
            for f in nb4.FRACTIONS]
    # members are the same in both attacks; the shifted attack's non-members score higher (its members lower)
    assert len(mix["mixes"]) == 5 and all(len(m["labels"]) == 40 for m in mix["mixes"].values())
    assert aucs[0] == pytest.approx(roc_metrics(study["iid"]["scores"]["desp"]["ppl"], study["iid"]["labels"])[0])
    summary = nb4.confound_summary(study, "ppl")
    assert summary["iid_max_dev"] <= 0.5 and summary["shifted_desp"] > 0.5


# --------------------------------------------------------------------------- text MIA on a tiny random Llama

class CharTokenizer:
    """Characters as tokens (ids 3..): enough for the text MIA's calls."""

    pad_token_id = 0

    def __call__(self, text: str) -> dict:
        return {"input_ids": [3 + (ord(c) % 60) for c in text]}

    def decode(self, ids) -> str:
        return "".join(chr(int(i) - 3 + 32) for i in ids)


def tiny_llama(layers: int = 4):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_split_lm_equals_the_full_model() -> None:
    model = tiny_llama()
    ids = torch.randint(3, 63, (3, 17))
    split = SplitLM(model, 2)
    with torch.no_grad():
        full = model(ids).logits
        parts = split.top(split.lower(ids))
    assert torch.allclose(full, parts, atol=1e-5)
    assert {n.split(".")[2] for n in split.state() if n.startswith("model.layers.")} == {"2", "3"}
    with pytest.raises(ValueError, match="n_train_layers"):
        SplitLM(model, 5)


def test_text_mia_separates_members_after_fine_tuning() -> None:
    model = tiny_llama()
    tok = CharTokenizer()
    rng = np.random.default_rng(0)
    texts = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, 24)) for _ in range(16)]
    ids = torch.tensor([tok(t)["input_ids"] for t in texts])
    passages = Passages(ids, texts, ["x"] * 16, np.r_[np.ones(8), np.zeros(8)].astype(np.int64))
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    out = text_mia(model, tok, passages, epochs=30, n_train_layers=2, lr=3e-3, batch_size=8)
    labels = out["labels"]
    assert out["losses"][-1] < out["losses"][0]
    assert abs(roc_metrics(out["before"]["ppl"], labels)[0] - 0.5) <= 0.35
    assert roc_metrics(out["after"]["ppl"], labels)[0] >= 0.9
    assert {"ppl/zlib", "ppl/lowercase_ppl", "Min_20.0%++"} <= set(out["after"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before_state.items())  # restored


@pytest.mark.llm
def test_text_mia_on_smollm2_smoke() -> None:
    from lionsnb.lm import load_causal_lm
    from lionsnb.vlmia.textmia import shakespeare_passages

    model, tok = load_causal_lm(progress=False)
    passages = shakespeare_passages(tok, 6, 6, 24, seed=0)
    assert passages.ids.shape == (12, 24) and len(set(passages.plays)) > 1
    out = text_mia(model, tok, passages, epochs=3, n_train_layers=2, lr=5e-4)
    assert roc_metrics(out["after"]["ppl"], out["labels"])[0] >= roc_metrics(out["before"]["ppl"],
                                                                               out["labels"])[0]


def test_model_solutions_pass_their_checks() -> None:
    import lionsnb.vlmia.nb01_pipeline as nb1
    import lionsnb.vlmia.nb02_explorer as nb2
    import lionsnb.vlmia.nb03_auc_study as nb3
    import lionsnb.vlmia.nb04_confound_text as nb4

    assert nb1.check_exercise_slices(nb1.SOLUTIONS["my_slices"]).status == "solved"
    assert nb1.check_exercise_max_renyi_k(nb1.SOLUTIONS["my_max_renyi_k"]).status == "solved"
    assert nb2.check_exercise_auc(nb2.SOLUTIONS["my_auc"]).status == "solved"
    assert nb3.check_exercise_min_k_prob(nb3.SOLUTIONS["my_min_k_prob"]).status == "solved"
    assert nb4.check_exercise_zlib(nb4.SOLUTIONS["my_zlib_ratio"]).status == "solved"
