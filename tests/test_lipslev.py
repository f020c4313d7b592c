"""LipsLev core: distances, neighbourhoods, model constants, certificate soundness, brute force, baselines."""
from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from lionsnb.lipslev import Alphabet, build_model, certificate, certified_accuracy, certify, predict, strict_radius
from lionsnb.lipslev.baselines import charmer_attack_ids, ibp_certify_ids
from lionsnb.lipslev.bruteforce import IncrementalEngine, brute_force_ids, full_logits
from lionsnb.lipslev.certify import as_float64, pad_batch
from lionsnb.lipslev.data import find_ag_news_csv, numbers_letters
from lionsnb.lipslev.levenshtein import (
    apply_edit,
    ball,
    edit_script,
    erp_distance,
    levenshtein,
    levenshtein_table,
    neighbour_count,
    neighbour_edits,
    one_hot,
    runs,
)
from lionsnb.lipslev.model import LipsLevCNN, conv_constant, embedding_constant, head_constant
from lionsnb.lipslev.train import train, triangle

INF = math.inf


def naive_levenshtein(a, b):
    if not a or not b:
        return len(a) + len(b)
    return min(naive_levenshtein(a[1:], b) + 1, naive_levenshtein(a, b[1:]) + 1,
               naive_levenshtein(a[1:], b[1:]) + (a[0] != b[0]))


def naive_erp(a, b, p):
    if len(a) == 0:
        return sum(np.linalg.norm(x, ord=p) for x in b)
    if len(b) == 0:
        return sum(np.linalg.norm(x, ord=p) for x in a)
    return min(np.linalg.norm(a[0], ord=p) + naive_erp(a[1:], b, p),
               np.linalg.norm(b[0], ord=p) + naive_erp(a, b[1:], p),
               np.linalg.norm(a[0] - b[0], ord=p) + naive_erp(a[1:], b[1:], p))


def random_string(rng: random.Random, sigma: int, lo: int, hi: int) -> tuple:
    return tuple(rng.randint(1, sigma) for _ in range(rng.randint(lo, hi)))


def tiny_model(rng: random.Random, seed: int, *, lipschitz: bool, layers: int | None = None) -> LipsLevCNN:
    sigma = rng.randint(2, 4)
    model = build_model(Alphabet(tuple("abcd"[:sigma])), rng.randint(2, 3), seed=seed,
                        embed_dim=rng.randint(1, 3), hidden=rng.randint(1, 3), kernel_size=rng.randint(1, 4),
                        layers=layers or rng.randint(1, 3), p=rng.choice([1.0, 2.0, INF]), lipschitz=lipschitz)
    with torch.no_grad():  # spread the scales so that raw (non-normalised) constants are far from 1
        for param in model.parameters():
            param.mul_(rng.uniform(0.3, 3.0))
        model.emb.weight[0].zero_()
    return as_float64(model)


# --------------------------------------------------------------------------- text

def test_alphabet_lowercases_and_drops_unknown_characters():
    alphabet = Alphabet(tuple("ab c"))
    assert alphabet.encode("A b-Cz") == [1, 3, 2, 4]
    assert alphabet.decode(alphabet.encode("A b-Cz")) == "a bc"
    assert alphabet.dropped("A b-Cz") == "-z"
    assert Alphabet.from_char_to_id(alphabet.char_to_id) == alphabet
    assert Alphabet.from_texts(["Ba", "cab"]).chars == ("b", "a", "c")
    with pytest.raises(ValueError, match="1..N"):
        Alphabet.from_char_to_id({"a": 2})


def test_encoding_never_increases_the_distance():
    rng = random.Random(0)
    alphabet = Alphabet(tuple("abc"))
    raw = "abcXY"
    for _ in range(300):
        a = "".join(rng.choice(raw) for _ in range(rng.randint(0, 7)))
        b = "".join(rng.choice(raw) for _ in range(rng.randint(0, 7)))
        assert levenshtein(alphabet.encode(a), alphabet.encode(b)) <= levenshtein(a.lower(), b.lower())


def test_levenshtein_matches_naive_recursion_and_edit_script():
    rng = random.Random(1)
    for _ in range(200):
        a, b = random_string(rng, 3, 0, 6), random_string(rng, 3, 0, 6)
        d = levenshtein(a, b)
        assert d == naive_levenshtein(a, b) == levenshtein_table(a, b)[-1, -1] == levenshtein(b, a)
        script = edit_script(a, b)
        assert sum(op != "keep" for op, *_ in script) == d
        out = [y if op in ("keep", "sub", "ins") else None for op, _, _, y in script]
        assert tuple(x for x in out if x is not None) == b


@pytest.mark.parametrize("sigma", [2, 3, 5])
def test_neighbour_count_formula_and_canonical_enumeration(sigma):
    rng = random.Random(sigma)
    symbols = list(range(1, sigma + 1))
    for _ in range(60):
        seq = random_string(rng, sigma, 0, 9)
        edits = neighbour_edits(seq, symbols)
        canonical = [apply_edit(seq, e) for e in edits]
        every = {apply_edit(seq, (k, j, c)) for j in range(len(seq) + 1) for c in symbols for k in ("sub", "del", "ins")
                 if not (k != "ins" and j == len(seq))} - {seq}
        assert len(canonical) == len(set(canonical)) == len(every) == neighbour_count(len(seq), sigma, runs(seq))
        assert set(canonical) == every
        assert all(levenshtein(seq, s) == 1 for s in canonical)


def test_neighbour_count_known_value():
    assert neighbour_count(8, 36, 8) == 604  # n = 8 distinct characters, sigma = 36
    assert len(neighbour_edits(tuple(range(1, 9)), range(1, 37))) == 604


def test_ball_distances_are_levenshtein_distances():
    rng = random.Random(3)
    for _ in range(10):
        seq = random_string(rng, 3, 1, 5)
        within = ball(seq, [1, 2, 3], 2)
        assert all(levenshtein(seq, s) == d for s, d in within.items())
        # completeness: every string of length <= len + 2 within distance 2 is in the ball
        for length in range(max(0, len(seq) - 2), len(seq) + 3):
            for s in itertools.product([1, 2, 3], repeat=length):
                assert (levenshtein(seq, s) <= 2) == (s in within)


@pytest.mark.parametrize("p", [1.0, 2.0, INF])
def test_erp_dp_matches_recursion(p):
    rng = np.random.default_rng(4)
    for _ in range(20):
        a, b = rng.normal(size=(rng.integers(0, 5), 2)), rng.normal(size=(rng.integers(0, 5), 2))
        assert erp_distance(a, b, p) == pytest.approx(naive_erp(a, b, p), abs=1e-12)


def test_erp_with_inf_norm_on_one_hot_is_levenshtein():  # Lemma S4
    rng = random.Random(5)
    for _ in range(100):
        a, b = random_string(rng, 4, 0, 7), random_string(rng, 4, 0, 7)
        assert erp_distance(one_hot(a, 4).reshape(-1, 4), one_hot(b, 4).reshape(-1, 4), INF) == levenshtein(a, b)


# --------------------------------------------------------------------------- model and constants

def test_constants_match_their_definitions():
    torch.manual_seed(0)
    w = torch.randn(5, 3, 4, dtype=torch.float64)
    assert conv_constant(w, 2.0).item() == pytest.approx(sum(np.linalg.norm(w[:, :, j].numpy(), 2) for j in range(4)))
    assert conv_constant(w, 1.0).item() == pytest.approx(sum(np.linalg.norm(w[:, :, j].numpy(), 1) for j in range(4)))
    assert conv_constant(w, INF).item() == pytest.approx(sum(np.linalg.norm(w[:, :, j].numpy(), np.inf)
                                                              for j in range(4)))
    e = torch.randn(6, 3, dtype=torch.float64)
    e[0] = 0
    assert embedding_constant(e, 2.0).item() == pytest.approx(max(torch.dist(e[i], e[j]).item()
                                                                  for i in range(6) for j in range(6)))
    local = embedding_constant(e, 2.0, [2, 2, 3])
    assert local.item() == pytest.approx(max(torch.dist(e[i], e[j]).item() for i in (0, 2, 3) for j in range(6)))
    c = torch.randn(3, 5, dtype=torch.float64)
    assert head_constant(c, 1.0).item() == pytest.approx(max((c[i] - c[j]).abs().max().item()
                                                              for i in range(3) for j in range(3)))  # dual r = inf


def test_normalised_model_has_unit_constants_and_is_scale_invariant():
    model = as_float64(build_model(Alphabet(tuple("abcde")), 3, seed=0, embed_dim=4, hidden=5, kernel_size=3, layers=2))
    emb, kernels, head = model.effective_weights()
    assert embedding_constant(emb, 2.0).item() == pytest.approx(1.0)
    assert all(conv_constant(k, 2.0).item() == pytest.approx(1.0) for k in kernels)
    assert head_constant(head, 2.0).item() == pytest.approx(1.0)
    ids = pad_batch([[1, 2, 3, 4, 5, 1], [2, 2]])
    before = model(ids)
    with torch.no_grad():
        for param, scale in zip(model.parameters(), (3.0, 0.2, 7.0, 0.5)):
            param.mul_(scale)
    assert torch.allclose(model(ids), before, atol=1e-12)


def test_logits_do_not_depend_on_padding_length():
    model = build_model(Alphabet(tuple("abcdefgh")), 4, seed=1, embed_dim=8, hidden=6, kernel_size=4, layers=2)
    seq = [1, 5, 2, 8, 8, 3, 1]
    with torch.no_grad():
        short = model(pad_batch([seq]))
        for extra in (1, 5, 40):
            assert torch.allclose(model(pad_batch([seq], extra=extra)), short, atol=1e-5)
    m64 = as_float64(model)
    assert torch.allclose(m64(pad_batch([seq], extra=100)), m64(pad_batch([seq])), atol=1e-12, rtol=0)


def test_bias_free_and_zero_padding_row():
    model = build_model(Alphabet(tuple("ab")), 2, seed=0)
    assert all(c.bias is None for c in model.convs) and model.C.bias is None
    assert torch.all(model.emb.weight[0] == 0)


# --------------------------------------------------------------------------- soundness

def test_bound_holds_exhaustively_on_random_tiny_models_at_distance_two():
    """|g_yt(P) - g_yt(Q)| <= L_yt(P) d(P, Q) over the whole radius-2 ball, local and global, raw and 1-Lipschitz."""
    rng = random.Random(10)
    worst, checked = 0.0, 0
    for trial in range(240):
        model = tiny_model(rng, trial, lipschitz=trial % 2 == 0)
        sigma = model.alphabet.size
        seq = random_string(rng, sigma, 0, 5)
        within = ball(seq, range(1, sigma + 1), 2)
        strings = list(within)
        g = full_logits(model, strings)
        base = g[strings.index(seq)]
        dist = torch.tensor([float(within[s]) for s in strings], dtype=torch.float64)
        for local in (True, False):
            lips = model.lipschitz_constants(seq if local else None).detach()
            for y in range(model.num_classes):
                for t in range(model.num_classes):
                    if t == y:
                        continue
                    change = ((g[:, y] - g[:, t]) - (base[y] - base[t])).abs()
                    allowed = lips[y, t] * dist
                    assert torch.all(change <= allowed * (1 + 1e-9) + 1e-12), (trial, local, y, t)
                    ratio = change[dist > 0] / allowed[dist > 0].clamp_min(1e-300)
                    worst = max(worst, float(ratio.max()))
        checked += len(strings)
    assert checked > 20_000
    assert 0.5 < worst <= 1 + 1e-9


def test_bound_is_tight_for_a_scalar_model():
    """d = h = 1, q = 1, p = 2: a substitution can move the margin by exactly L (ratio 1)."""
    model = LipsLevCNN(Alphabet(("a", "b")), 2, embed_dim=1, hidden=1, kernel_size=1, p=2.0)
    with torch.no_grad():
        model.emb.weight.copy_(torch.tensor([[0.0], [1.0], [0.5]]))
        model.conv0.weight.fill_(2.0)
        model.C.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    model = as_float64(model)
    seq = (1, 1, 2)
    base = full_logits(model, [seq])[0]
    lips = model.lipschitz_constants(seq)[0, 1].item()
    changes = [abs(float((g[0] - g[1]) - (base[0] - base[1])))
               for g in full_logits(model, [apply_edit(seq, e) for e in neighbour_edits(seq, [1, 2])])]
    assert max(changes) == pytest.approx(lips, rel=1e-12)


def test_every_certified_sentence_is_brute_force_robust():
    rng = random.Random(11)
    certified = {1: 0, 2: 0}
    for trial in range(600):
        model = tiny_model(rng, 1000 + trial, lipschitz=True)
        sigma = model.alphabet.size
        seq = random_string(rng, sigma, 4, 9)  # margins grow with length (the empty string has logits 0)
        text = model.alphabet.decode(seq)
        label = int(full_logits(model, [seq])[0].argmax())
        radius = certify(model, [text], [label])[0]
        if radius < 0:  # an exact tie at the argmax (e.g. all ReLUs dead): not correctly classified
            continue
        for k in (1, 2):
            if radius >= k:
                certified[k] += 1
                assert brute_force_ids(model, seq, label, k, engine="full").robust, (trial, k)
    print("certified at k = 1, 2:", certified)
    assert certified[1] >= 20 and certified[2] >= 3


def test_incremental_engine_equals_full_recompute():
    rng = random.Random(12)
    worst = 0.0
    for trial in range(40):
        model = tiny_model(rng, 2000 + trial, lipschitz=trial % 2 == 0, layers=1)
        sigma = model.alphabet.size
        seq = random_string(rng, sigma, 0, 9)
        edits = neighbour_edits(seq, range(1, sigma + 1))
        fast = IncrementalEngine(model, seq).logits(edits)
        slow = full_logits(model, [apply_edit(seq, e) for e in edits])
        worst = max(worst, float((fast - slow).abs().max()) if len(edits) else 0.0)
    assert worst < 1e-9
    model = as_float64(build_model(Alphabet(tuple("abcdefghij")), 4, seed=3, embed_dim=16, hidden=12, kernel_size=5))
    seq = tuple(rng.randint(1, 10) for _ in range(30))
    a = brute_force_ids(model, seq, int(full_logits(model, [seq])[0].argmax()), 1, engine="incremental")
    b = brute_force_ids(model, seq, a.label, 1, engine="full")
    assert a.robust == b.robust and a.min_margin == pytest.approx(b.min_margin, abs=1e-9)
    assert np.allclose(a.max_change, b.max_change, atol=1e-9) and a.neighbours == b.neighbours


# --------------------------------------------------------------------------- certificate API

def test_strict_radius():
    assert strict_radius(2.5, 1.0) == 2
    assert strict_radius(2.0, 1.0) == 1  # a margin exactly k * L does not certify k
    assert strict_radius(0.3, 1.0) == 0
    assert strict_radius(-0.1, 1.0) == -1


def test_certify_predict_and_certified_accuracy():
    data = numbers_letters(60, min_len=5, max_len=12, seed=0)
    model = build_model(Alphabet(tuple("abcdefghijklmnopqrstuvwxyz0123456789")), 2, seed=0, embed_dim=8, hidden=8,
                        kernel_size=3)
    radii = certify(model, data.texts, data.labels)
    preds = predict(model, data.texts)
    assert [r >= 0 for r in radii] == [p == y for p, y in zip(preds, data.labels)]
    assert certified_accuracy(radii, 0) == pytest.approx(np.mean(np.array(preds) == np.array(data.labels)))
    assert all(certified_accuracy(radii, k) >= certified_accuracy(radii, k + 1) for k in range(4))
    cert = certificate(model, data.texts, data.labels)
    assert np.all(cert.lipschitz[~np.isnan(cert.lipschitz)] <= 1 + 1e-9)  # 1-Lipschitz model: L_yt <= 1
    with pytest.raises(TypeError):
        certify(model, "one string", [0])
    with pytest.raises(ValueError, match="labels"):
        certify(model, ["ab"], [5])


def test_ibp_is_sound_and_never_beats_brute_force():
    rng = random.Random(13)
    agree = 0
    for trial in range(60):
        model = tiny_model(rng, 3000 + trial, lipschitz=True, layers=1)
        seq = random_string(rng, model.alphabet.size, 1, 6)
        label = int(full_logits(model, [seq])[0].argmax())
        ibp = ibp_certify_ids(model, seq, label)
        exact = brute_force_ids(model, seq, label, 1)
        assert not (ibp.certified and not exact.robust)
        if not exact.correct:  # an exact tie at the argmax
            continue
        assert ibp.lower_bounds[[t for t in range(model.num_classes) if t != label]].min() <= exact.min_margin + 1e-9
        agree += ibp.certified == exact.robust
    assert agree > 0


def test_charmer_attack_is_valid_and_never_breaks_a_certificate():
    rng = random.Random(14)
    successes = 0
    for trial in range(60):
        model = tiny_model(rng, 4000 + trial, lipschitz=True, layers=1)
        seq = random_string(rng, model.alphabet.size, 2, 8)
        label = rng.randrange(model.num_classes)
        radius = certify(model, [model.alphabet.decode(seq)], [label])[0]
        attack = charmer_attack_ids(model, seq, label, k=2, top_positions=4)
        if attack.success and attack.correct:
            successes += 1
            assert levenshtein(seq, attack.adversarial) <= attack.edits_used <= 2
            assert int(full_logits(model, [attack.adversarial])[0].argmax()) != label or attack.margin <= 0
            assert radius < attack.edits_used
        exact = brute_force_ids(model, seq, label, 1)
        if attack.success and attack.edits_used == 1:
            assert not exact.robust
    assert successes > 0


def test_robust_accuracy_counts_correct_and_unbroken_sentences():
    from lionsnb.lipslev import robust_accuracy
    from lionsnb.lipslev.baselines import AttackResult

    results = [AttackResult(True, False, 1, (), 1.0, 3, 0.0), AttackResult(True, True, 1, (), -0.1, 3, 0.0),
               AttackResult(False, False, 0, (), -1.0, 0, 0.0), AttackResult(True, False, 2, (), 0.5, 5, 0.0)]
    assert robust_accuracy(results) == 0.5


# --------------------------------------------------------------------------- data and training

def test_numbers_letters_is_seeded_and_labelled():
    a, b = numbers_letters(400, seed=3), numbers_letters(400, seed=3)
    assert a.texts == b.texts and a.labels == b.labels
    letters = np.array([np.mean([c.isalpha() for c in t]) for t in a.texts])
    labels = np.array(a.labels)
    assert letters[labels == 1].mean() > 0.7 and letters[labels == 0].mean() < 0.3
    with pytest.raises(ValueError):
        numbers_letters(0)


def test_missing_ag_news_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("LIONSNB_AG_NEWS", raising=False)
    with pytest.raises(FileNotFoundError, match="LIONSNB_AG_NEWS"):
        find_ag_news_csv(tmp_path / "nowhere")
    csv_file = tmp_path / "test.csv"
    csv_file.write_text('"3","Title","Body text"\n', encoding="utf-8")
    monkeypatch.setenv("LIONSNB_AG_NEWS", str(tmp_path))
    assert find_ag_news_csv() == csv_file


def test_triangle_schedule():
    assert triangle(0, 11) == 0 and triangle(5, 11) == 1 and triangle(10, 11) == 0
    assert triangle(2, 11) == pytest.approx(0.4)


def test_training_learns_the_synthetic_task_and_certifies():
    data = numbers_letters(1500, min_len=8, max_len=16, seed=0)
    held = numbers_letters(100, min_len=8, max_len=16, seed=1)
    model = build_model(Alphabet(tuple("abcdefghijklmnopqrstuvwxyz0123456789")), 2, seed=0, embed_dim=16, hidden=16,
                        kernel_size=5)
    history = train(model, data, epochs=2, lr=0.02, optimizer="adam", progress=False, eval_data=held)
    assert history["loss"][-1] < history["loss"][0] or history["train_acc"][-1] > 0.9
    radii = certify(model, held.texts, held.labels)
    assert certified_accuracy(radii, 0) > 0.85 and certified_accuracy(radii, 1) > 0.3
    with pytest.raises(ValueError, match="lipschitz=False"):
        train(model, data, reg_lambda=0.1)
