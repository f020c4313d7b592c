"""Sharded runs: a deterministic, budget-balanced split of the registry over N runners, and one merged report.

Tested on a faked registry of trivial notebooks (copies of the fixture `ok.ipynb` with made-up budgets)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lionsnb.cli import main
from lionsnb.params import ParameterError
from lionsnb.registry import load_registry
from lionsnb.runner import TargetError, assign_shards, merge_summaries, parse_shard, run_notebooks

FIXTURES = Path(__file__).parent / "fixtures"


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/3", "4/3", "2", "a/b", "-1/2"):
        with pytest.raises(ParameterError, match="I/N"):
            parse_shard(bad)


def test_assign_shards_balances_budgets_and_covers_everything_once():
    budgets = {"a": 300, "b": 60, "c": 150, "d": 150, "e": 60, "f": 90, "g": 30}
    shards = assign_shards(budgets, 3)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == sorted(budgets) and len(flat) == len(set(flat))
    loads = [sum(budgets[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(budgets.values()) / 2, loads
    assert max(loads) <= 4 / 3 * (sum(budgets.values()) / 3) + 1e-9 or max(loads) == max(budgets.values())
    reordered = assign_shards(dict(reversed(list(budgets.items()))), 3)
    assert [set(s) for s in shards] == [set(s) for s in reordered], "the split does not depend on the input order"
    order = list(budgets)
    assert all(s == sorted(s, key=order.index) for s in shards), "registry order inside a shard"
    assert assign_shards(budgets, 1) == [order]
    assert sum(1 for s in assign_shards(budgets, 10) if not s) == 3  # more shards than notebooks: some are empty


@pytest.fixture(scope="module")
def fake_registry(tmp_path_factory):
    """Four trivial notebooks with budgets 40, 30, 20, 10 s (smoke)."""
    root = tmp_path_factory.mktemp("fake_registry")
    entries = []
    for name, budget in (("n40", 40), ("n30", 30), ("n20", 20), ("n10", 10)):
        shutil.copy(FIXTURES / "ok.ipynb", root / f"{name}.ipynb")
        entries.append({"id": name, "path": f"{name}.ipynb", "title": f"fake {name}", "method": "fixtures",
                        "accelerator": "cpu", "budget_s": {"smoke": budget, "teach": budget, "full": budget},
                        "metrics": {"answer": [40, 44]}})
    (root / "index.yaml").write_text(yaml.safe_dump({"version": 1, "notebooks": entries}))
    return load_registry(root / "index.yaml")


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_two_shards_run_everything_once_and_merge(fake_registry, tmp_path):
    outs = []
    for i in (1, 2):
        out = tmp_path / f"shard-{i}"
        summary = run_notebooks([], profile="smoke", out_dir=out, registry=fake_registry, html=False,
                                progress=False, shard=(i, 2))
        assert summary.shard == f"{i}/2" and summary.ok
        outs.append((out, [r.id for r in summary.results]))
    # LPT on 40, 30, 20, 10: {40, 10} and {30, 20}, 50 s each
    assert [ids for _, ids in outs] == [["n40", "n10"], ["n30", "n20"]]
    # the runner's folders as a CI artifact download would lay them out elsewhere
    moved = []
    for out, _ in outs:
        target = tmp_path / "downloaded" / out.name
        shutil.copytree(out, target)
        shutil.rmtree(out)
        moved.append(target)
    merged = merge_summaries(moved, tmp_path / "merged")
    assert sorted(r.id for r in merged.results) == ["n10", "n20", "n30", "n40"] and merged.ok
    assert merged.shard == "merged" and all(Path(r.executed).is_file() for r in merged.results)
    doc = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert doc["counts"] == {"ok": 4}
    assert main(["report", "--merge", *map(str, moved), "--out", str(tmp_path / "m2")]) == 0
    page = (tmp_path / "m2" / "report.html").read_text()
    assert all(f"fake {n}" in page for n in ("n40", "n30", "n20", "n10")) and "shard merged" in page
    with pytest.raises(ParameterError, match="appears in two shards"):
        merge_summaries([moved[0], moved[0]], tmp_path / "dup")
    with pytest.raises(TargetError, match="no results.json"):
        merge_summaries([tmp_path], tmp_path / "none")


def test_shards_of_different_profiles_do_not_merge(tmp_path):
    for name, profile in (("a", "smoke"), ("b", "teach")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"profile": profile, "results": []}))
    with pytest.raises(ParameterError, match="different profiles"):
        merge_summaries([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
