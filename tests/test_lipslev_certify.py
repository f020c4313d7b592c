"""Tests of notebook 4 of the LipsLev series (lionsnb.lipslev.nb04_certify): certify vs brute force vs attack."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import lionsnb.lipslev.nb04_certify as v
from lionsnb.lipslev.certify import certify, strict_radius
from lionsnb.lipslev.levenshtein import Alphabet, ball, levenshtein
from lionsnb.plotting import unlabelled_axes

SMALL = dict(v.FALLBACK, n_train=800, min_len=6, max_len=10, embed_dim=8, hidden=16, kernel_size=3, epochs=2)


@pytest.fixture(scope="module")
def trained():
    """A small 1-Lipschitz model trained on numbers_letters (about 1 s) and 40 fresh strings of the task."""
    model = v.fallback_model(v.train_fallback(SMALL, seed=0, progress=False)["state"], SMALL)
    data = v.numbers_letters(40, min_len=6, max_len=10, seed=5)
    return model, data


@pytest.fixture(scope="module")
def results(trained):
    model, data = trained
    cert = v.certificate_arrays(model, data.texts, data.labels)
    rows = v.exact_rows(cert["lengths"], cert["radii"], 30, 12)
    exact = v.run_exact(model, [data.texts[i] for i in rows], [data.labels[i] for i in rows], progress=False)
    charmer = v.run_charmer(model, data.texts[:30], data.labels[:30], 2, progress=False)
    return cert, rows, exact, charmer


# ----------------------------------------------------------------------------- the subject

def test_official_checkpoint_reports_missing_files(tmp_path):
    paths, reason = v.official_checkpoint(tmp_path)
    assert paths is None
    assert "official_ag_news_state.pt" in reason and "official_char_to_id.json" in reason


def test_load_subject_rejects_unknown_choice_and_official_without_files(tmp_path):
    ctx = v.setup("smoke", seed=0)
    with pytest.raises(ValueError, match="auto, official or synthetic"):
        v.load_subject(ctx, "both")
    with pytest.raises(FileNotFoundError, match="MODEL = official"):
        v.load_subject(ctx, "official", folder=tmp_path)


def test_auto_falls_back_to_the_synthetic_model_and_says_so(tmp_path, capsys):
    from types import SimpleNamespace

    ctx = SimpleNamespace(sizes=SimpleNamespace(n_cert=20, fallback=SMALL), seed=0,
                          cached=lambda name, fn, **kwargs: fn(**kwargs))
    subject = v.load_subject(ctx, "auto", folder=tmp_path)
    assert "falling back" in capsys.readouterr().out
    assert subject.name == "synthetic" and not subject.official and len(subject.data) == 20
    assert subject.model.alphabet.size == 36 and subject.history["epoch"] == [1, 2]


@pytest.mark.skipif(v.official_checkpoint()[0] is None, reason="the authors' checkpoint or AG-News is not in "
                    "../shared/data (see official_checkpoint)")
def test_official_subject_first_rows():
    ctx = v.setup("smoke", seed=0)
    subject = v.load_subject(ctx, "auto")
    assert subject.official and len(subject.data) == ctx.sizes.n_cert
    cert = v.certificate_arrays(subject.model, subject.data.texts[:10], subject.data.labels[:10])
    # the per-row radii of the first ten rows under the authors' released checkpoint (their verify() output)
    assert cert["radii"][[1, 2, 5, 6, 7, 8]].tolist() == [2, 0, 0, 4, 1, 0]
    assert (cert["radii"][[0, 3, 4, 9]] == -1).all()
    assert (cert["floor_radii"] == cert["radii"]).all()
    assert np.allclose(cert["binding_lipschitz"], 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- the radius

def test_strict_radius_differs_from_the_official_floor_only_at_ties():
    assert v.radius_from_margins([2.0, 3.5], [1.0, 1.0]) == 1
    assert v.official_floor_radius([2.0, 3.5], [1.0, 1.0]) == 2
    assert v.radius_from_margins([2.1, 3.5], [1.0, 1.0]) == v.official_floor_radius([2.1, 3.5], [1.0, 1.0]) == 2
    assert v.radius_from_margins([0.5, -0.1], [1.0, 1.0]) == v.official_floor_radius([0.5, -0.1], [1.0, 1.0]) == -1
    assert v.radius_from_margins([0.0, 1.0], [1.0, 1.0]) == -1


def test_radius_from_margins_is_the_largest_strictly_certified_k():
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = rng.uniform(-0.5, 6.0, size=rng.integers(1, 4))
        if rng.random() < 0.3:  # force exact ties
            g = np.round(g)
        L = rng.choice([0.5, 1.0, 2.0], size=len(g))
        r = v.radius_from_margins(g, L)
        if g.min() <= 0:
            assert r == -1
            continue
        assert np.all(g > r * L)                     # r is certified, strictly
        assert not np.all(g > (r + 1) * L)           # r + 1 is not
        assert r == min(strict_radius(a, b) for a, b in zip(g, L))


def test_certificate_arrays_agree_with_certify_and_bind_the_radius(trained, results):
    model, data = trained
    cert = results[0]
    assert cert["radii"].tolist() == certify(model, data.texts, data.labels)
    correct = cert["radii"] >= 0
    ratio = cert["binding_margin"] / cert["binding_lipschitz"]
    # the binding class gives the radius: floor-with-strictness of its g / L
    assert all(strict_radius(g, L) == r for g, L, r in zip(cert["binding_margin"][correct],
                                                           cert["binding_lipschitz"][correct], cert["radii"][correct]))
    assert np.all(ratio[~correct] <= 0)
    assert (cert["floor_radii"] != cert["radii"]).sum() == 0  # no exact ties on real margins
    assert v.verified_curve(cert["radii"], 3)[0] == pytest.approx(correct.mean())


# ----------------------------------------------------------------------------- the baselines

def test_exact_rows_mix_certified_and_not_and_prefer_short():
    lengths = [50, 10, 20, 30, 40, 5, 15, 25]
    radii = [1, 0, -1, 2, 0, 1, 0, 1]
    rows = v.exact_rows(lengths, radii, 8, 4)
    assert rows == sorted(rows)
    assert 2 not in rows                                   # misclassified rows are left out
    certified = [i for i in rows if radii[i] >= 1]
    assert sorted(certified) == [5, 7] and sorted(set(rows) - set(certified)) == [1, 6]
    # a short group is topped up by the other one
    assert v.exact_rows(lengths, [1, 1, 1, 1, 1, 0, 1, 1], 8, 4) == [1, 2, 5, 6]
    assert len(v.exact_rows(lengths, radii, 8, 100)) == 7
    assert all(i < 4 for i in v.exact_rows(lengths, radii, 4, 3))   # only the first n_attack rows


def test_charmer_k1_is_the_first_step_of_k2(trained):
    model, data = trained
    one = v.run_charmer(model, data.texts[:25], data.labels[:25], 1, progress=False)
    two = v.run_charmer(model, data.texts[:25], data.labels[:25], 2, progress=False)
    assert (v.attack_robust(one, 1) == v.attack_robust(two, 1)).all()
    assert (v.attack_robust(two, 2) <= v.attack_robust(two, 1)).all()
    with pytest.raises(ValueError, match="at most 1"):
        v.attack_robust(one, 2)


def test_certified_implies_brute_force_robust_implies_attack_fails(results):
    cert, rows, exact, charmer = results
    assert exact["correct"].all() and len(rows) == 12
    assert (cert["radii"][rows] >= 1).any() and (cert["radii"][rows] == 0).any()
    table = v.soundness_checks(cert["radii"][:30], charmer, cert["radii"][rows], exact)
    assert all(row["violations"] == 0 for row in table)
    assert table[0]["applies_to"] == int((cert["radii"][rows] >= 1).sum())
    # IBP is sound, never tighter than brute force
    assert not (exact["ibp_certified"] & ~exact["robust"]).any()
    assert v.attack_vs_exact(v.subset(charmer, rows), exact)["bf_says_robust"] == 0
    ratios = v.tightness(exact["max_change"], cert["lipschitz"][rows], exact["correct"])
    assert len(ratios) == 12 and 0 < ratios.max() <= 1 + 1e-9


def test_soundness_table_counts_contradictions():
    charmer = {"k": 2, "correct": np.array([True, True, True, False]), "broken_at": np.array([1, 3, 2, 0])}
    exact = {"robust": np.array([False, True, True]), "ibp_certified": np.array([True, False, True])}
    table = v.soundness_checks([1, 2, 2, -1], charmer, [1, 0, 1], exact)
    counts = {row["check"]: (row["applies_to"], row["violations"]) for row in table}
    assert counts["LipsLev certified at k = 1, brute force finds a flip"] == (2, 1)
    assert counts["IBP certified at k = 1, brute force finds a flip"] == (2, 1)
    assert counts["LipsLev certified at k = 1, Charmer flips it with <= 1 edit"] == (3, 1)
    assert counts["LipsLev certified at k = 2, Charmer flips it with <= 2 edits"] == (2, 1)
    cross = v.attack_vs_exact({"correct": np.array([True, True, True]), "broken_at": np.array([1, 1, 3])}, exact)
    assert cross == {"attack_flips": 2, "bf_says_robust": 1}


def test_tightness_divides_by_the_class_constant():
    max_change = np.array([[0.0, 0.3, 0.9], [0.5, 0.0, 0.2]])
    lips = np.array([[np.nan, 1.0, 2.0], [0.5, np.nan, 1.0]])
    assert v.tightness(max_change, lips, [True, True]).tolist() == pytest.approx([0.45, 1.0])
    assert v.tightness(max_change, lips, [False, True]).tolist() == pytest.approx([1.0])


def test_subset_and_as_arrays():
    import torch

    result = {"k": 2, "a": np.arange(5), "b": torch.arange(5) * 2}
    sub = v.subset(result, [4, 1])
    assert sub["k"] == 2 and sub["a"].tolist() == [4, 1] and sub["b"].tolist() == [8, 2]
    assert isinstance(v.as_arrays(result)["b"], np.ndarray)


# ----------------------------------------------------------------------------- length and timing

def test_length_bins_group_by_length():
    lengths = [5, 1, 4, 2, 3, 6]
    radii = [2, -1, 1, 0, 0, 3]
    bins = v.length_bins(lengths, radii, 2)
    assert bins["count"] == [3, 3] and bins["low"] == [1, 4] and bins["high"] == [3, 6]
    assert bins["acc_0"] == pytest.approx([2 / 3, 1.0]) and bins["acc_1"] == pytest.approx([0.0, 1.0])
    assert bins["acc_2"] == pytest.approx([0.0, 2 / 3])
    with pytest.raises(ValueError):
        v.length_bins(lengths, radii, 7)


def test_enumeration_timing_engines_agree(trained):
    model, data = trained
    seq = model.alphabet.encode(data.texts[0])
    out = v.enumeration_timing(model, seq, 64, seed=1)
    assert out["sample"] == 64 and out["neighbours"] > 64
    assert out["engine_max_diff"] < 1e-10
    assert out["seconds"] == pytest.approx(out["per_neighbour"] * out["neighbours"])


def test_ball_sizes_k2_count_the_ball(trained):
    model, _ = trained
    texts = ["ab1", "zz"]
    symbols = range(1, model.alphabet.size + 1)
    expected = [len(ball(model.alphabet.encode(t), symbols, 2)) for t in texts]
    assert v.ball_sizes_k2(model, texts).tolist() == expected


# ----------------------------------------------------------------------------- figures

def test_figures_have_labelled_axes(trained, results):
    model, data = trained
    cert, rows, exact, charmer = results
    timing = v.timing_study(model, [data.texts[i] for i in rows], [data.labels[i] for i in rows],
                            [data.texts[rows[0]]], enum_sample=32, repeats=1)
    bins = v.length_bins(cert["lengths"], cert["radii"], 3)
    draws = [lambda f: v.draw_certificate(f, cert=cert, k_max=4),
             lambda f: v.draw_sandwich(f, cert=cert, k_max=4, n_attack=30, charmer=charmer, exact_rows_=rows,
                                       exact=exact),
             lambda f: v.draw_tightness(f, ratios=v.tightness(exact["max_change"], cert["lipschitz"][rows],
                                                              exact["correct"])),
             lambda f: v.draw_length(f, bins=bins, lengths=cert["lengths"], cert=cert),
             lambda f: v.draw_timing(f, exact_lengths=cert["lengths"][rows], exact=exact,
                                     charmer_seconds=charmer["seconds"][rows],
                                     cert_per_sentence=timing["cert_per_sentence"],
                                     enumeration=timing["enumeration"], k2_seconds=[1.0]),
             lambda f: v.draw_radius(f, cert=cert, k=1, k_max=4)]
    import matplotlib.pyplot as plt

    for draw in draws:
        fig = v.figure(10, 4)
        draw(fig)
        assert unlabelled_axes(fig) == []
        plt.close(fig)


# ----------------------------------------------------------------------------- the sentence editor

def test_edit_record_measures_the_encoded_distance(trained):
    model, data = trained
    text, label = data.texts[0], data.labels[0]
    radius = certify(model, [text], [label])[0]
    same = v.edit_record(model, text, label, "!" + text.upper() + "?", classes=data.classes)
    assert same["distance"] == 0 and same["dropped"] == "!?" and same["radius"] == radius
    assert same["inside"] == (radius >= 0) and same["consistent"]
    base = v.edit_record(model, text, label, text)
    assert same["logits"] == pytest.approx(base["logits"])
    far = "a" * (len(text) + 3)
    rec = v.edit_record(model, text, label, far, radius=1)
    assert rec["distance"] == levenshtein(model.alphabet.encode(text), model.alphabet.encode(far))
    assert not rec["inside"] and rec["consistent"]
    # a forced inside-the-ball record with a wrong prediction is flagged as inconsistent
    wrong = v.edit_record(model, text, 1 - int(np.argmax(base["logits"])), text, radius=5)
    assert wrong["inside"] and not wrong["consistent"]
    assert "certificate would be unsound" in v.edit_html(wrong)


def test_edit_html_shows_every_field(trained):
    model, data = trained
    text, label = data.texts[1], data.labels[1]
    rec = v.edit_record(model, text, label, v.example_edit(text, model.alphabet), classes=data.classes)
    page = v.edit_html(rec)
    for piece in ("dropped characters", "Levenshtein distance to the original", "certified radius of the original",
                  "logits", data.classes[rec["prediction"]], "verdict"):
        assert piece in page
    assert ("inside the certified ball" in page) == (rec["inside"] and rec["radius"] >= 0)


def test_example_edit_is_one_edit_plus_a_dropped_character():
    alphabet = Alphabet(tuple("abcdefghijklmnopqrstuvwxyz "))
    text = "the quick brown fox"
    edited = v.example_edit(text, alphabet)
    assert alphabet.dropped(edited) != ""
    assert levenshtein(alphabet.encode(text), alphabet.encode(edited)) == 1


def test_sentence_editor_headless_and_live(trained):
    model, data = trained
    text, label = data.texts[2], data.labels[2]
    record = v.sentence_editor(model, text, label, classes=data.classes, interactive=False)
    assert record["edited"] == v.example_edit(text, model.alphabet)
    box = v.sentence_editor(model, text, label, classes=data.classes, interactive=True)
    textarea, panel = box.children[1], box.children[2]
    assert "(after encoding): 0" in panel.value
    textarea.value = text + "zz"
    assert "(after encoding): 2" in panel.value


def test_editor_row_picks_a_short_certified_sentence():
    cert = {"radii": np.array([0, 2, 3, 2, -1]), "lengths": np.array([5, 40, 30, 20, 1])}
    assert v.editor_row(cert) == 3
    assert v.editor_row({"radii": np.array([0, 0, -1]), "lengths": np.array([3, 2, 1])}) == 1


# ----------------------------------------------------------------------------- exercises

def test_exercise_checkers_accept_the_reference_and_reject_mistakes():
    assert v.check_exercise_accuracy(v.certified_accuracy).status == "solved"
    assert v.check_exercise_accuracy(lambda radii, k: float(np.mean(np.asarray(radii) > k))).status == "incorrect"
    assert v.check_exercise_radius(strict_radius).status == "solved"
    floor = v.check_exercise_radius(lambda g, L: math.floor(g / L) if g > 0 else -1)   # non-strict: wrong at ties
    assert floor.status == "incorrect" and floor.fn is strict_radius
    assert v.check_exercise_soundness(v.soundness_violations_reference).status == "solved"
    assert v.check_exercise_soundness(lambda r, b: int((np.asarray(r) >= 1).sum())).status == "incorrect"

    def stub(*args):
        raise NotImplementedError

    assert v.check_exercise_accuracy(stub).status == "not attempted"


def test_spec_profiles_and_official_constants():
    for profile in ("smoke", "teach", "full"):
        sizes = v.SPEC.sizes(profile)
        assert sizes.n_exact <= sizes.n_attack <= sizes.n_cert
    assert v.SPEC.sizes("teach").n_cert == v.OFFICIAL_ROWS
    assert math.isclose(v.OFFICIAL_LOGGED[1], 384 / 1001)


# ----------------------------------------------------------------------------- the cache key (issue 11)

def test_the_cached_certificate_follows_the_seed_of_the_synthetic_sample(tmp_path, trained):
    """The old notebook keyed the certificate on (model name, n) only: another SEED drew another synthetic sample but
    got the first seed's certificate back. The key is now the call's arguments (model, texts, labels)."""
    model, _ = trained
    first = v.setup("smoke", seed=0, cache_dir=str(tmp_path))
    certs = []
    for seed in (1, 2, 1):
        data = v.numbers_letters(15, min_len=6, max_len=10, seed=seed)
        certs.append(first.cached("certificate", v.certificate_arrays, model=model, texts=data.texts,
                                  labels=data.labels))
    assert first.cache.misses == 2 and first.cache.hits == 1          # seed 1 again: the same entry
    assert certs[0]["lengths"].tolist() != certs[1]["lengths"].tolist()
    assert certs[2]["radii"].tolist() == certs[0]["radii"].tolist()
    # the model is part of the key too (its weights and settings), not only its name
    other = v.fallback_model(v.train_fallback(dict(SMALL, epochs=1), seed=1, progress=False)["state"], SMALL)
    data = v.numbers_letters(15, min_len=6, max_len=10, seed=1)
    first.cached("certificate", v.certificate_arrays, model=other, texts=data.texts, labels=data.labels)
    assert first.cache.misses == 3


def test_load_subject_caches_the_fallback_under_its_sizes_and_seed(tmp_path, capsys):
    from types import SimpleNamespace

    calls = []

    def cached(name, fn, **kwargs):
        calls.append((name, fn, kwargs))
        return fn(**kwargs)

    for seed in (0, 1):
        ctx = SimpleNamespace(sizes=SimpleNamespace(n_cert=10, fallback=dict(SMALL, epochs=1)), seed=seed,
                              cached=cached)
        subject = v.load_subject(ctx, "synthetic", folder=tmp_path)
        assert len(subject.data) == 10
    assert [c[0] for c in calls] == ["fallback_model", "fallback_model"]
    assert all(c[1] is v.train_fallback for c in calls)
    assert [c[2]["seed"] for c in calls] == [0, 1] and calls[0][2]["sizes"] == dict(SMALL, epochs=1)


def test_tables_of_the_notebook(trained, results):
    model, data = trained
    cert, rows, exact, charmer = results
    assert len(v.certificate_table(cert)) == 5
    i = int(np.argmax(cert["radii"] >= 1))
    assert len(v.by_hand_table(cert, i, data.classes)) == len(data.classes) - 1
    assert len(v.curve_table(v.verified_curve(cert["radii"], 3), False, 40)) == 4
    official = v.curve_table([0.7, 0.3836163836163836, 0.1, 0.01], True, v.OFFICIAL_ROWS)
    assert official.column("difference")[1] == 0
    assert len(v.attack_table(cert["radii"][:30], charmer)) == 2
    assert len(v.exact_table(cert, rows, exact, charmer)) == 5
    assert len(v.length_table(v.length_bins(cert["lengths"], cert["radii"], 3))) == 3
    assert set(v.MODEL_ANSWERS) == {4}
