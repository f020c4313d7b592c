"""Every registered notebook, executed in the smoke profile through the CLI (slow: marker ``notebooks``).

One module-scoped run executes the whole registry as a subprocess (output streamed
so CI logs show progress) and writes ``build/test-smoke/``: executed notebooks, the
HTML report, ``results.json`` and a benchmark table (``benchmarks.md`` + ``.json``).
Then, per entry: the notebook ran, recorded every registered metric within its
smoke range, and took at most 3x its smoke budget (budgets are reported, only 3x fails).

Select the device with ``LIONSNB_TEST_DEVICE`` (default ``cpu``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.notebooks

REPO = Path(__file__).resolve().parent.parent
INDEX = REPO / "notebooks" / "index.yaml"
OUT = REPO / "build" / "test-smoke"
PROFILE = "smoke"
SLACK = 3.0  # a notebook fails only past SLACK x its smoke budget


def _raw_entries() -> list[dict[str, Any]]:
    """The registry's entries as written (without validation, so collection never fails)."""
    try:
        doc = yaml.safe_load(INDEX.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    entries = doc.get("notebooks") or []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


ENTRIES = _raw_entries()
IDS = [e["id"] for e in ENTRIES] or ["(no entries)"]


def _missing_notebooks() -> list[str]:
    return [f"{e['id']} ({e.get('path')})" for e in ENTRIES
            if not (INDEX.parent / str(e.get("path", ""))).is_file()]


def _write_benchmarks(doc: dict[str, Any]) -> None:
    rows = []
    for r in doc.get("results", []):
        budget = r.get("budget_s")
        ratio = r["seconds"] / budget if budget and r.get("status") != "skipped" else None
        rows.append({"id": r["id"], "status": r["status"], "seconds": round(r["seconds"], 2),
                     "budget_s": budget, "ratio": None if ratio is None else round(ratio, 3)})
    bench = {"profile": doc.get("profile"), "device": doc.get("device"), "started": doc.get("started"),
             "lionsnb_version": doc.get("lionsnb_version"), "notebooks": rows}
    (OUT / "benchmarks.json").write_text(json.dumps(bench, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Smoke benchmarks ({doc.get('device')}, {doc.get('started')})", "",
             "| notebook | status | seconds | budget s | time / budget |",
             "|---|---|---:|---:|---:|"]
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}" + (" (over)" if row["ratio"] > 1 else "")
        budget = "-" if row["budget_s"] is None else f"{row['budget_s']:g}"
        lines.append(f"| {row['id']} | {row['status']} | {row['seconds']:.1f} | {budget} | {ratio} |")
    lines += ["", f"A notebook fails the test only above {SLACK:g}x its budget."]
    (OUT / "benchmarks.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def smoke_results(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Run every registered notebook once (profile smoke) and return ``{id: result}``."""
    if not ENTRIES:
        pytest.skip(f"{INDEX} registers no notebooks yet")
    missing = _missing_notebooks()
    if missing:
        pytest.skip("registered notebook(s) not written yet: " + ", ".join(missing))
    device = os.environ.get("LIONSNB_TEST_DEVICE", "cpu")
    cmd = [sys.executable, "-m", "lionsnb", "run", "--profile", PROFILE, "--out", "build/test-smoke",
           "--report", "build/test-smoke/report.html", "--device", device, "--index", str(INDEX)]
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # a fresh artifact cache: the test must compute every result, never load one from an earlier run
    env["LIONSNB_CACHE"] = str(tmp_path_factory.mktemp("lionsnb-cache"))
    results_json = OUT / "results.json"
    if results_json.exists():
        results_json.unlink()
    budget_total = sum(float((e.get("budget_s") or {}).get(PROFILE, 600)) for e in ENTRIES)
    limit = SLACK * budget_total + 120 * len(ENTRIES)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # stream the run to the terminal / CI log
        print(f"\n$ {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=limit)
    if proc.returncode == 2 or not results_json.is_file():
        pytest.fail(f"`lionsnb run` could not run the registry (exit code {proc.returncode}); "
                    "see its error message above")
    doc = json.loads(results_json.read_text(encoding="utf-8"))
    _write_benchmarks(doc)
    return {r["id"]: r for r in doc["results"]}


def _result(smoke_results: dict[str, dict[str, Any]], nb_id: str) -> dict[str, Any]:
    if nb_id not in smoke_results:
        pytest.fail(f"{nb_id} is registered but `lionsnb run` reported no result for it")
    r = smoke_results[nb_id]
    if r["status"] == "skipped":
        pytest.skip(f"{nb_id} skipped: {r.get('error')}")
    return r


@pytest.mark.parametrize("nb_id", IDS)
def test_notebook_runs(smoke_results: dict[str, dict[str, Any]], nb_id: str) -> None:
    r = _result(smoke_results, nb_id)
    if r["status"] in ("failed", "timeout"):
        cell = r.get("failing_cell") or {}
        where = f"\n  in {cell.get('where')}: {cell.get('first_line')}" if cell else ""
        tb = f"\n{cell.get('traceback')}" if cell.get("traceback") else ""
        pytest.fail(f"{nb_id} {r['status']}: {r.get('error')}{where}{tb}\n  executed notebook: "
                    f"{r.get('executed')}\n  log: {r.get('log')}", pytrace=False)


@pytest.mark.parametrize("nb_id", IDS)
def test_notebook_metrics(smoke_results: dict[str, dict[str, Any]], nb_id: str) -> None:
    r = _result(smoke_results, nb_id)
    if r["status"] in ("failed", "timeout"):
        pytest.skip(f"{nb_id} did not finish ({r['status']}); see test_notebook_runs")
    entry = next(e for e in ENTRIES if e["id"] == nb_id)
    missing = [k for k in (entry.get("metrics") or {}) if k not in r["metrics"]]
    assert not missing, f"{nb_id} did not record registered metric(s) {missing}; recorded: {sorted(r['metrics'])}"
    assert not r["violations"], (f"{nb_id}: metrics outside their {PROFILE} ranges:\n  "
                                 + "\n  ".join(r["violations"]))


@pytest.mark.parametrize("nb_id", IDS)
def test_notebook_time(smoke_results: dict[str, dict[str, Any]], nb_id: str) -> None:
    r = _result(smoke_results, nb_id)
    budget = r.get("budget_s")
    assert budget, f"{nb_id} has no {PROFILE} budget"
    assert r["seconds"] <= SLACK * budget, (
        f"{nb_id} took {r['seconds']:.1f} s, more than {SLACK:g} x its {PROFILE} budget of {budget:g} s "
        "(see build/test-smoke/benchmarks.md)")
