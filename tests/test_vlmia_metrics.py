"""VL-MIA metrics against a direct, loop-by-loop transcription of the reference semantics (vlmia_spec §2-§4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lionsnb.vlmia import batch_scores, scores
from lionsnb.vlmia.metrics import aggregate, k_of, min_k_plus_plus, position_quantities, score_keys, text_scores

# the 112 keys, written out by hand from vlmia_spec §4.2
P = ["0%", "5.0%", "10.0%", "20.0%", "30.0%", "40.0%", "50.0%", "60.0%", "70.0%", "80.0%", "90.0%", "100%"]
OFFICIAL_KEYS = (["ppl"] + [f"Min_{p} Prob" for p in P[:-1]]
                 + ["Modified_entropy", "Modified_renyi_05", "Modified_renyi_2", "Max_Prob_Gap"]
                 + [f"Max_{p} renyi_{a}" for p in P for a in ("05", "1", "2", "inf")]
                 + [f"Min_{p} renyi_{a}" for p in P for a in ("05", "1", "2", "inf")])
RATIOS_MIN = [0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
RATIOS = RATIOS_MIN + [1]


def reference(logits: np.ndarray, ids: np.ndarray | None) -> dict[str, float]:
    """A direct transcription of the spec: one position at a time, Python loops, numpy sorts."""
    t_len, _ = logits.shape
    if ids is None:  # image-slice pseudo-targets: position p gets argmax(row p - 1)
        ids = np.zeros(t_len, dtype=np.int64)
        for p in range(1, t_len):
            ids[p] = int(np.argmax(logits[p - 1]))
    ent = {a: [] for a in ("05", "1", "2", "inf")}
    gaps, lps, mod_ent, mod05, mod2 = [], [], [], [], []
    for i in range(t_len - 1):
        row = torch.as_tensor(logits[i], dtype=torch.float64)
        p = torch.softmax(row, -1).numpy()        # as run_with_img.py#L284-L285
        lp = torch.log_softmax(row, -1).numpy()
        pc = np.clip(p, 1e-10, 1 - 1e-10)
        y = int(ids[i + 1])
        ent["1"].append(-np.sum(p * lp))
        ent["05"].append(2.0 * math.log(np.sum(pc ** 0.5)))
        ent["2"].append(-math.log(np.sum(pc ** 2)))
        ent["inf"].append(-lp.max())
        gaps.append(lp.max() - lp[lp < lp.max()].max())
        lps.append(lp[y])
        mod_ent.append(-(1 - pc[y]) * math.log(pc[y]) - np.sum(p * np.log(1 - pc)) + pc[y] * math.log(1 - pc[y]))
        others = [j for j in range(len(pc)) if j != y]
        for alpha, store in ((0.5, mod05), (2.0, mod2)):
            a = abs(1 - alpha)
            s1 = sum(pc[j] * (1 - pc[j]) ** a for j in others)
            s2 = sum(pc[j] for j in others)
            store.append(-(1 / a) * ((1 - pc[y]) * pc[y] ** a - (1 - pc[y]) + s1 - s2))
    n = t_len - 1
    out: dict[str, float] = {}
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        out["ppl"] = float(np.exp(np.nanmean(-np.array(lps)))) if n else math.nan
        srt = np.sort(lps)
        for r in RATIOS_MIN:
            k = max(1, int(n * r))
            out[f"Min_{r * 100}% Prob"] = float(-np.mean(srt[:k])) if n else math.nan
        out["Modified_entropy"] = float(np.nanmean(mod_ent)) if n else math.nan
        out["Modified_renyi_05"] = float(np.nanmean(mod05)) if n else math.nan
        out["Modified_renyi_2"] = float(np.nanmean(mod2)) if n else math.nan
        out["Max_Prob_Gap"] = float(-np.mean(gaps)) if n else math.nan
        for side in ("Max", "Min"):
            for r in RATIOS:
                k = max(1, int(n * r))
                for a in ("05", "1", "2", "inf"):
                    srt = np.sort(ent[a])
                    vals = srt[-k:] if side == "Max" else srt[:k]
                    out[f"{side}_{r * 100}% renyi_{a}"] = float(np.mean(vals)) if n else math.nan
    return out


def mixed_logits(t_len: int, vocab: int, seed: int) -> torch.Tensor:
    """Rows at mixed temperatures: peaked, flat and in between."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(t_len, vocab, generator=g, dtype=torch.float64)
    temps = torch.tensor([0.05, 0.3, 1.0, 3.0, 10.0], dtype=torch.float64)[torch.arange(t_len) % 5]
    return base * temps.unsqueeze(1) * 4


def assert_close(ours: dict, ref: dict, rtol: float = 1e-10, atol: float = 1e-12, skip: tuple = ()) -> None:
    assert set(ours) == set(ref)
    for k in ref:
        if k in skip:
            continue
        a, b = ours[k], ref[k]
        if math.isnan(b):
            assert math.isnan(a), k
        else:
            assert a == pytest.approx(b, rel=rtol, abs=atol), k


def test_key_names_are_the_official_112() -> None:
    assert len(OFFICIAL_KEYS) == 112 and len(set(OFFICIAL_KEYS)) == 112
    assert score_keys() == OFFICIAL_KEYS  # same order too
    out = scores(mixed_logits(6, 11, 0), torch.arange(6))
    assert list(out) == OFFICIAL_KEYS
    assert not any(k in out for k in ("Min_0.0% Prob", "Max_100.0% renyi_1", "Max_30.000000000000004% renyi_1"))


@pytest.mark.parametrize("t_len,vocab,seed", [(2, 7, 0), (9, 13, 1), (37, 50, 2), (91, 20, 3)])
def test_matches_direct_reference(t_len: int, vocab: int, seed: int) -> None:
    logits = mixed_logits(t_len, vocab, seed)
    ids = torch.randint(0, vocab, (t_len,), generator=torch.Generator().manual_seed(seed + 10))
    ours = scores(logits, ids)
    ref = reference(logits.numpy(), ids.numpy())
    assert_close(ours, ref)


def test_image_slice_pseudo_targets_match_reference() -> None:
    logits = mixed_logits(17, 30, 5)
    assert_close(scores(logits, None), reference(logits.numpy(), None))


def test_alignment_row_i_against_ids_i_plus_1() -> None:
    logits = mixed_logits(8, 10, 6)
    ids = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    base = scores(logits, ids)
    other = ids.clone()
    other[0] = (ids[0] + 1) % 10          # ids[0] is never a target
    assert scores(logits, other) == base
    changed = logits.clone()
    changed[-1] = torch.randn(10, dtype=torch.float64)  # the last row is never used
    assert scores(changed, ids) == base
    # row 0 is scored against ids[1]: a target equal to row 0's argmax gives loss -max log p at that position
    two = scores(logits[:2], torch.tensor([0, int(logits[0].argmax())]))
    assert two["ppl"] == pytest.approx(math.exp(-float(torch.log_softmax(logits[0], -1).max())), rel=1e-12)
    # the standard alignment scores all T rows (row t against ids[t]): not the same numbers
    std = scores(logits, ids, compat="standard")
    assert std["ppl"] != pytest.approx(base["ppl"], rel=1e-6)
    lp = torch.log_softmax(logits, -1)
    assert std["ppl"] == pytest.approx(math.exp(-float(lp[torch.arange(8), ids].mean())), rel=1e-12)
    with pytest.raises(ValueError, match="compat"):
        scores(logits, ids, compat="official")


def test_edge_t1_all_nan_and_t2_single_position() -> None:
    one = scores(mixed_logits(1, 5, 0), torch.tensor([3]))
    assert len(one) == 112 and all(math.isnan(v) for v in one.values())
    logits = mixed_logits(2, 9, 1)
    two = scores(logits, torch.tensor([0, 4]))
    lp_y = float(torch.log_softmax(logits[0], -1)[4])
    for p in P[:-1]:
        assert two[f"Min_{p} Prob"] == pytest.approx(-lp_y, rel=1e-12)
    assert two["ppl"] == pytest.approx(math.exp(-lp_y), rel=1e-12)
    assert len({two[f"Max_{p} renyi_1"] for p in P} | {two[f"Min_{p} renyi_1"] for p in P}) == 1


def test_k_rule_is_int_of_float_product() -> None:
    assert k_of(90, 0.7) == 62 and int(90 * 0.7) == 62       # not the exact floor 63
    assert [k_of(5, r) for r in (0, 0.05, 0.1, 0.2)] == [1, 1, 1, 1]
    assert k_of(5, 1) == 5 and k_of(40, 0.05) == 2
    # n = 90 positions (T = 91): Max_70.0% is the mean of the 62 largest, which differs from the 63 largest
    logits = mixed_logits(91, 20, 3)
    ours = scores(logits, torch.zeros(91, dtype=torch.long))
    h = np.sort(position_quantities(logits[:-1], None)["renyi_1"].numpy())
    assert ours["Max_70.0% renyi_1"] == pytest.approx(h[-62:].mean(), rel=1e-12)
    assert ours["Max_70.0% renyi_1"] != pytest.approx(h[-63:].mean(), rel=1e-9)
    assert ours["Min_70.0% renyi_1"] == pytest.approx(h[:62].mean(), rel=1e-12)
    # the batched k rule agrees with Python's int(n * K) for every n up to 400
    lengths = torch.arange(1, 401)
    q = {k: torch.rand(400, 400, dtype=torch.float64) for k in
         ("target_logprob", "modified_entropy", "modified_renyi_05", "modified_renyi_2", "gap", "renyi_05",
          "renyi_1", "renyi_2", "renyi_inf")}
    agg = aggregate(q, lengths)
    for n in (90, 170, 180, 330, 340, 350, 360, 7, 1):
        vals = np.sort(q["renyi_2"][n - 1, :n].numpy())
        assert agg["Max_70.0% renyi_2"][n - 1] == pytest.approx(vals[-k_of(n, 0.7):].mean(), rel=1e-12)


def test_gap_skips_all_tied_maxima() -> None:
    row = torch.tensor([[2.0, 5.0, 5.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    q = position_quantities(row, torch.tensor([0, 0]))
    assert float(q["gap"][0]) == pytest.approx(3.0, rel=1e-12)    # to the third distinct value, not 0
    assert math.isnan(float(q["gap"][1]))                          # all equal: reference raises, we give NaN
    out = scores(torch.cat([row[:1], row[:1]]), torch.tensor([0, 0]))
    assert out["Max_Prob_Gap"] == pytest.approx(-3.0, rel=1e-12)


def test_clamp_floor_on_a_large_peaked_vocabulary() -> None:
    vocab = 32000
    logits = torch.zeros(3, vocab, dtype=torch.float64)
    logits[:, 7] = 200.0                                           # p_y = 1.0 exactly in float64
    ids = torch.tensor([0, 7, 7])
    out = scores(logits, ids)
    floor05 = 2 * math.log(1 + (vocab - 1) * 1e-5)                 # the H_0.5 floor, 0.555 nats
    assert floor05 == pytest.approx(0.5545, abs=1e-3)
    assert out["Max_100% renyi_05"] == pytest.approx(floor05, rel=1e-6)
    assert out["Max_100% renyi_2"] == pytest.approx(2e-10, rel=1e-3)
    assert out["Max_100% renyi_1"] == pytest.approx(0.0, abs=1e-12)  # Shannon is unclamped
    for k in ("Modified_entropy", "Modified_renyi_05", "Modified_renyi_2"):
        assert math.isfinite(out[k])
    ref = reference(logits.numpy(), ids.numpy())
    assert_close(out, ref, rtol=1e-9)


def test_near_certain_target_and_very_unlikely_target() -> None:
    logits = torch.tensor([[30.0, 0.0, -2.0, 1.0], [-40.0, 0.0, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4]],
                          dtype=torch.float64)
    for ids in (torch.tensor([0, 0, 0]), torch.tensor([0, 1, 0])):
        assert_close(scores(logits, ids), reference(logits.numpy(), ids.numpy()))


def test_modified_entropy_differs_from_textbook_by_at_most_clamp_term() -> None:
    logits = mixed_logits(12, 40, 9)
    ids = torch.randint(0, 40, (12,), generator=torch.Generator().manual_seed(2))
    q = position_quantities(logits[:-1], ids[1:])
    p = torch.softmax(logits[:-1], -1)
    pc = p.clamp(1e-10, 1 - 1e-10)
    pcy = pc.gather(-1, ids[1:, None]).squeeze(-1)
    mask = torch.ones_like(p, dtype=torch.bool).scatter(-1, ids[1:, None], False)
    # the textbook j != y form (clamped inside the logs) differs by (p̃_y - p_y) ln(1 - p̃_y), at most 2.3e-9
    textbook = -(1 - pcy) * torch.log(pcy) - torch.where(mask, p * torch.log1p(-pc), torch.zeros_like(p)).sum(-1)
    assert torch.allclose(q["modified_entropy"], textbook, atol=3e-9, rtol=0)


def test_greedy_identities_on_image_slice_and_on_greedy_description() -> None:
    logits = mixed_logits(30, 25, 4)
    img = scores(logits, None)
    for p in P[:-1]:
        assert img[f"Min_{p} Prob"] == pytest.approx(img[f"Max_{p} renyi_inf"], rel=1e-12)
    assert img["ppl"] == pytest.approx(math.exp(img["Max_100% renyi_inf"]), rel=1e-12)
    # a greedy description: token i+1 is the argmax of row i -> the same identities with real ids
    greedy = torch.cat([torch.tensor([3]), logits[:-1].argmax(-1)])
    desp = scores(logits, greedy)
    for p in P[:-1]:
        assert desp[f"Min_{p} Prob"] == pytest.approx(desp[f"Max_{p} renyi_inf"], rel=1e-12)
        assert desp[f"Min_{p} Prob"] == pytest.approx(img[f"Min_{p} Prob"], rel=1e-12)
    assert desp["ppl"] == pytest.approx(math.exp(desp["Max_100% renyi_inf"]), rel=1e-12)


def test_batch_equals_one_by_one_with_padding() -> None:
    lens = [5, 12, 2, 1, 9]
    batch = torch.randn(5, 12, 17, dtype=torch.float64) * 3
    ids = torch.randint(0, 17, (5, 12))
    out = batch_scores(batch, ids, lens, extras=True)
    img = batch_scores(batch, None, lens)
    for b, n in enumerate(lens):
        single = scores(batch[b, :n], ids[b, :n])
        single_img = scores(batch[b, :n], None)
        for k in OFFICIAL_KEYS:
            for got, want in ((out[k][b], single[k]), (img[k][b], single_img[k])):
                if math.isnan(want):
                    assert math.isnan(got), (b, k)
                else:
                    assert got == pytest.approx(want, rel=1e-12), (b, k)
        if n > 1:
            assert out["Min_20.0%++"][b] == pytest.approx(min_k_plus_plus(batch[b, :n], ids[b, :n], 0.2), rel=1e-12)


def test_nan_rows_follow_the_sort_semantics() -> None:
    q = {k: torch.tensor([[1.0, 2.0, float("nan"), 4.0]], dtype=torch.float64) for k in
         ("target_logprob", "modified_entropy", "modified_renyi_05", "modified_renyi_2", "gap", "renyi_05",
          "renyi_1", "renyi_2", "renyi_inf")}
    out = aggregate(q, [4])
    assert math.isnan(out["Max_0% renyi_1"][0])             # NaN sorts last: every Max-K% takes it
    assert out["Min_50.0% renyi_1"][0] == pytest.approx(1.5)  # k = 2 smallest: finite
    assert math.isnan(out["Min_100% renyi_1"][0])
    assert out["Modified_entropy"][0] == pytest.approx(7 / 3)  # NaN-ignoring mean
    assert out["ppl"][0] == pytest.approx(math.exp(-7 / 3))
    assert math.isnan(out["Max_Prob_Gap"][0])


def test_float32_logits_are_scored_in_float64() -> None:
    logits = mixed_logits(10, 30, 8)
    ids = torch.randint(0, 30, (10,), generator=torch.Generator().manual_seed(0))
    a = scores(logits.float(), ids)
    b = scores(logits.float().double(), ids)
    assert a == b


def test_text_scores() -> None:
    out = text_scores(math.e ** 2, "to be or not to be", lowercase_ppl=math.e ** 3)
    import zlib

    assert out["ppl/zlib"] == pytest.approx(2 / len(zlib.compress(b"to be or not to be")))
    assert out["ppl/lowercase_ppl"] == pytest.approx(-1.5)


def test_scores_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="one slice"):
        scores(torch.zeros(2, 3, 4), None)
    with pytest.raises(ValueError, match="one id per row"):
        scores(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_benchmark_loop_baseline_and_perplexity_fast_path_agree() -> None:
    from lionsnb.vlmia.benchmark import loop_scores
    from lionsnb.vlmia.metrics import perplexity

    logits = mixed_logits(15, 40, 11)
    ids = torch.randint(0, 40, (15,), generator=torch.Generator().manual_seed(4))
    ours = scores(logits, ids)
    for k, v in loop_scores(logits, ids).items():
        assert ours[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    batch = torch.randn(3, 9, 30, dtype=torch.float64)
    bids = torch.randint(0, 30, (3, 9))
    assert np.allclose(perplexity(batch, bids, [9, 4, 2]), batch_scores(batch, bids, [9, 4, 2])["ppl"], rtol=1e-12)
