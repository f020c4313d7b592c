"""The notebook registry: loading, validation errors, metric checks and the index search order."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import lionsnb
from lionsnb.registry import (
    IndexNotFoundError,
    NotebookEntry,
    RegistryError,
    check_metrics,
    find_index,
    format_range,
    load_registry,
    unregistered_notebooks,
)

FIXTURES = Path(__file__).parent / "fixtures"


def entry(**overrides: Any) -> dict[str, Any]:
    """A valid raw entry for ``a.ipynb``; ``overrides`` replace fields (value None deletes one)."""
    raw: dict[str, Any] = {
        "id": "a",
        "path": "a.ipynb",
        "title": "A",
        "method": "sharpness",
        "accelerator": "cpu",
        "budget_s": {"smoke": 10, "teach": 20, "full": 30},
        "metrics": {"loss": [0, 1], "ratio": {"smoke": [1.0, None], "teach": [1.5, None], "full": [1.5, None]}},
    }
    for k, v in overrides.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return raw


def write_index(tmp_path: Path, entries: list[dict[str, Any]], *, touch: bool = True, **top: Any) -> Path:
    """Write ``index.yaml`` in ``tmp_path`` (creating every entry's notebook when ``touch``)."""
    if touch:
        for e in entries:
            if isinstance(e, dict) and isinstance(e.get("path"), str):
                p = tmp_path / e["path"]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("{}")
    doc = {"version": 1, "notebooks": entries, **top}
    index = tmp_path / "index.yaml"
    index.write_text(yaml.safe_dump(doc, sort_keys=False))
    return index


def test_fixture_registry_loads() -> None:
    reg = load_registry(FIXTURES / "index.yaml")
    assert reg.root == FIXTURES.resolve()
    assert reg.ids[:2] == ["ok", "fail"]
    ok = reg.by_id["ok"]
    assert ok.path == (FIXTURES / "ok.ipynb").resolve() and ok.path.is_absolute()
    assert ok.budget_s == {"smoke": 30.0, "teach": 30.0, "full": 30.0}
    assert ok.metrics["answer"] == {p: (40.0, 44.0) for p in ("smoke", "teach", "full")}
    assert ok.report_metrics == ["answer"]
    assert reg.find("ok") is ok
    assert reg.find(FIXTURES / "ok.ipynb") is ok
    assert reg.find("ok.ipynb") is ok  # relative to the registry's directory
    assert reg.find("nope") is None


def test_valid_entry_parsed(tmp_path: Path) -> None:
    reg = load_registry(write_index(tmp_path, [entry(report_metrics=["ratio"])]))
    e = reg.entries[0]
    assert isinstance(e, NotebookEntry)
    assert e.metrics["loss"]["teach"] == (0.0, 1.0)
    assert e.metrics["ratio"]["smoke"] == (1.0, None)
    assert e.ranges("teach") == {"loss": (0.0, 1.0), "ratio": (1.5, None)}
    assert e.budget("full") == 30.0
    assert e.report_metrics == ["ratio"]


def test_report_metrics_default_first_four(tmp_path: Path) -> None:
    metrics = {f"m{i}": [0, 1] for i in range(6)}
    e = load_registry(write_index(tmp_path, [entry(metrics=metrics)])).entries[0]
    assert e.report_metrics == ["m0", "m1", "m2", "m3"]


def test_real_index_parses_as_yaml() -> None:
    """The suite's own index has the schema version and entries with ids (files may not exist yet)."""
    doc = yaml.safe_load((Path(__file__).parent.parent / "notebooks" / "index.yaml").read_text())
    assert doc["version"] == 1
    assert all("id" in e for e in doc["notebooks"])


@pytest.mark.parametrize(
    "raw, needles",
    [
        (entry(title=None), ["'a'", "missing field 'title'"]),
        (entry(budget_s=None), ["'a'", "missing field 'budget_s'"]),
        (entry(budget_s={"smoke": 1, "teach": 2, "fast": 3}), ["'a'", "budget_s", "unknown profile 'fast'"]),
        (entry(budget_s={"smoke": 1, "teach": 2}), ["'a'", "budget_s", "missing full"]),
        (entry(budget_s={"smoke": 1, "teach": 2, "full": -3}), ["'a'", "budget_s.full", "positive"]),
        (entry(accelerator="tpu"), ["'a'", "accelerator", "'tpu'"]),
        (entry(path="missing.ipynb"), ["'a'", "'path'", "does not exist"]),
        (entry(metrics={"loss": [2, 1]}), ["'a'", "metrics.loss", "low 2 > high 1"]),
        (entry(metrics={"loss": {"smoke": [0, 1], "teach": [3, 1], "full": [0, 1]}}),
         ["'a'", "metrics.loss.teach", "low 3 > high 1"]),
        (entry(metrics={"loss": {"smoke": [0, 1], "teach": [0, 1]}}), ["'a'", "metrics.loss", "missing full"]),
        (entry(metrics={"loss": [0, "x"]}), ["'a'", "metrics.loss", "'x'"]),
        (entry(metrics={"loss": 3}), ["'a'", "metrics.loss", "[low, high]"]),
        (entry(id="Bad-Id"), ["'Bad-Id'", "'id'", "[a-z0-9_]+"]),
        (entry(colour="red"), ["'a'", "unknown field 'colour'"]),
        (entry(report_metrics=["nope"]), ["'a'", "report_metrics", "'nope'"]),
    ],
)
def test_validation_errors_name_entry_and_field(tmp_path: Path, raw: dict, needles: list[str]) -> None:
    if raw.get("path") == "missing.ipynb":
        index = write_index(tmp_path, [raw], touch=False)
    else:
        index = write_index(tmp_path, [raw])
    with pytest.raises(RegistryError) as info:
        load_registry(index)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg


def test_duplicate_id(tmp_path: Path) -> None:
    index = write_index(tmp_path, [entry(), entry(path="b.ipynb")])
    with pytest.raises(RegistryError, match=r"entry 'a', field 'id': duplicate id"):
        load_registry(index)


def test_duplicate_path(tmp_path: Path) -> None:
    index = write_index(tmp_path, [entry(), entry(id="b")])
    with pytest.raises(RegistryError, match=r"entry 'b', field 'path'.*already registered as 'a'"):
        load_registry(index)


def test_bad_version_and_yaml(tmp_path: Path) -> None:
    index = write_index(tmp_path, [entry()])
    index.write_text(index.read_text().replace("version: 1", "version: 2"))
    with pytest.raises(RegistryError, match="version"):
        load_registry(index)
    index.write_text("version: 1\nnotebooks: [\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(index)


def test_empty_registry(tmp_path: Path) -> None:
    reg = load_registry(write_index(tmp_path, []))
    assert reg.entries == [] and len(reg) == 0


def test_check_metrics(tmp_path: Path) -> None:
    e = load_registry(write_index(tmp_path, [entry()])).entries[0]
    assert check_metrics(e, "teach", {"loss": 0.5, "ratio": 2.0, "extra": "fine"}) == []
    # per-profile range: 1.2 passes smoke ([1, inf)) but not teach ([1.5, inf))
    assert check_metrics(e, "smoke", {"loss": 0.5, "ratio": 1.2}) == []
    (v,) = check_metrics(e, "teach", {"loss": 0.5, "ratio": 1.2})
    assert "'ratio'" in v and "below" in v and "teach" in v and "[1.5, inf)" in v
    (v,) = check_metrics(e, "teach", {"loss": 1.5, "ratio": 2})
    assert "'loss'" in v and "above" in v
    (v,) = check_metrics(e, "teach", {"ratio": 2})
    assert "'loss'" in v and "missing" in v
    (v,) = check_metrics(e, "teach", {"loss": "low", "ratio": 2})
    assert "not a number" in v
    (v,) = check_metrics(e, "teach", {"loss": float("nan"), "ratio": 2})
    assert "NaN" in v
    assert check_metrics(e, "teach", {"loss": True, "ratio": 2}) == []  # bools count as 0/1
    assert len(check_metrics(e, "full", {})) == 2
    with pytest.raises(ValueError, match="profile"):
        check_metrics(e, "huge", {})


def test_format_range() -> None:
    assert format_range((0.0, 1.0)) == "[0, 1]"
    assert format_range((None, 2.0)) == "(-inf, 2]"
    assert format_range((1.5, None)) == "[1.5, inf)"


def test_unregistered_notebooks(tmp_path: Path) -> None:
    index = write_index(tmp_path, [entry()])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stray.ipynb").write_text("{}")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    (tmp_path / "sub" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "sub" / ".ipynb_checkpoints" / "stray-checkpoint.ipynb").write_text("{}")
    reg = load_registry(index)
    assert unregistered_notebooks(reg) == [(tmp_path / "sub" / "stray.ipynb").resolve()]


def test_find_index_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_tree = tmp_path / "repo" / "notebooks" / "index.yaml"
    in_tree.parent.mkdir(parents=True)
    in_tree.write_text("version: 1\nnotebooks: []\n")
    deep = tmp_path / "repo" / "docs" / "deeper"
    deep.mkdir(parents=True)
    env_index = tmp_path / "env.yaml"
    env_index.write_text("version: 1\nnotebooks: []\n")
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("version: 1\nnotebooks: []\n")

    monkeypatch.chdir(deep)
    monkeypatch.setenv("LIONSNB_INDEX", str(env_index))
    assert find_index(explicit) == explicit.resolve()  # 1. explicit path
    assert find_index(tmp_path / "repo") == in_tree.resolve()  # explicit dir holding notebooks/index.yaml
    assert find_index() == env_index.resolve()  # 2. $LIONSNB_INDEX
    monkeypatch.delenv("LIONSNB_INDEX")
    assert find_index() == in_tree.resolve()  # 3. notebooks/index.yaml in cwd's parents
    assert find_index(cwd=tmp_path) == (Path(lionsnb.__file__).resolve().parent.parent / "notebooks" / "index.yaml")
    assert load_registry().index_path == in_tree.resolve()


def test_find_index_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IndexNotFoundError, match="does not exist"):
        find_index(tmp_path / "nope.yaml")
    with pytest.raises(IndexNotFoundError, match="without index.yaml"):
        find_index(tmp_path)
    monkeypatch.setenv("LIONSNB_INDEX", str(tmp_path / "nope.yaml"))
    with pytest.raises(IndexNotFoundError, match="LIONSNB_INDEX"):
        find_index()
