"""The authors' released AG-News checkpoint reproduces their verified accuracies and per-row outputs.

Needs ../shared/data/lipslev_official/ and ../shared/data/ag_news/ (read-only test data next to the
repository); skipped with the reason when they are absent.
"""
from __future__ import annotations

import csv
import math

import pytest

from lionsnb.lipslev import certificate, certified_accuracy, certify, load_official_checkpoint, predict
from lionsnb.lipslev.bruteforce import brute_force
from lionsnb.lipslev.data import load_ag_news, shared_dir

OFFICIAL = shared_dir("lipslev_official")
STATE, CHARS = OFFICIAL / "official_ag_news_state.pt", OFFICIAL / "official_char_to_id.json"
FIRST10 = OFFICIAL / "official_results_lipslev_first10.csv"
AG_NEWS = shared_dir("ag_news") / "test.csv"

pytestmark = pytest.mark.skipif(
    not (STATE.is_file() and CHARS.is_file() and AG_NEWS.is_file()),
    reason=f"the official LipsLev checkpoint ({OFFICIAL}) or the AG-News test split ({AG_NEWS}) is not there")


@pytest.fixture(scope="module")
def model():
    return load_official_checkpoint(STATE, CHARS, p=2)


@pytest.fixture(scope="module")
def data():
    return load_ag_news(path=AG_NEWS)


def test_sizes_are_inferred_from_the_tensors(model):
    assert (model.alphabet.size, model.emb.embedding_dim, model.conv0.out_channels, model.kernel_size,
            model.num_classes) == (56, 150, 100, 10, 4)


def test_verified_accuracy_on_the_first_1001_rows(model, data):
    radii = certify(model, data.texts[:1001], data.labels[:1001])
    got = [certified_accuracy(radii, k) for k in (1, 2, 3)]
    assert got == pytest.approx([0.3836163836163836, 0.13886113886113885, 0.03796203796203796], abs=1e-12)
    assert sum(r >= 0 for r in radii) == 744


def test_first_ten_rows_match_the_authors_output(model, data):
    rows = list(csv.DictReader(FIRST10.open(encoding="utf-8")))
    texts = [r["sentence"] for r in rows]
    assert texts == data.texts[:10]  # the loader builds the same sentences (title + " " + description)
    labels = [int(r["true_label"]) for r in rows]
    assert predict(model, texts) == [int(r["pred_label"]) for r in rows]
    cert = certificate(model, texts, labels)
    for i, row in enumerate(rows):
        if row["margin"]:
            assert cert.min_margin[i] == pytest.approx(float(row["margin"]), abs=2e-5)
            assert cert.radii[i] == int(float(row["radius"]))
        else:
            assert cert.radii[i] == -1


def test_exact_brute_force_agrees_on_short_rows(model, data):
    """Rows 2 (robust) and 8 (not robust at distance 1) of the official BruteF run; certified rows are robust."""
    assert brute_force(model, data.texts[2], data.labels[2]).robust
    result = brute_force(model, data.texts[8], data.labels[8])
    assert not result.robust and result.min_margin < 0
    assert certify(model, [data.texts[8]], [data.labels[8]]) == [0]
    loose = result.max_change[[0, 1, 2]].max()
    assert 0 < loose < 1 and math.isfinite(loose)  # bound L = 1 is loose at k = 1


def test_mismatched_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="char_to_id"):
        load_official_checkpoint(STATE, tmp_path / "missing.json")
    small = tmp_path / "chars.json"
    small.write_text('{"a": 1, "b": 2}', encoding="utf-8")
    with pytest.raises(ValueError, match="do not belong together"):
        load_official_checkpoint(STATE, small)
