"""The notebook runner, on tiny fixture notebooks (about 2 s of papermill each)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from lionsnb.params import ParameterError
from lionsnb.registry import load_registry
from lionsnb.runner import (
    TargetError,
    child_env,
    find_failing_cell,
    papermill_command,
    parameter_names,
    parse_param_value,
    resolve_targets,
    run_notebooks,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_state() -> dict[str, tuple[int, int]]:
    """Names, sizes and mtimes of everything in the fixtures directory."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in FIXTURES.iterdir()}


@pytest.fixture(scope="module")
def registry():
    return load_registry(FIXTURES / "index.yaml")


@pytest.fixture(scope="module")
def ok_and_fail(registry, tmp_path_factory):
    """One run of fail + ok (in that order): the run must go on after the failure."""
    before = fixture_state()
    out = tmp_path_factory.mktemp("ok_and_fail")
    summary = run_notebooks(["fail", "ok"], profile="smoke", out_dir=out, registry=registry,
                            report_path=out / "site" / "report.html", progress=False)
    return summary, out, before


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_ok_notebook(ok_and_fail) -> None:
    summary, out, before = ok_and_fail
    ok = next(r for r in summary.results if r.id == "ok")
    assert ok.status == "ok", ok.error
    assert ok.metrics == {"answer": 42.0}
    assert ok.violations == [] and ok.failing_cell is None and ok.error is None
    assert ok.budget_s == 30.0 and not ok.over_budget and 0 < ok.seconds < 30
    for name in ("ok.ipynb", "ok.metrics.json", "ok.log", "ok.html"):
        assert (out / name).is_file(), name
    assert ok.executed == str(out / "ok.ipynb") and ok.html == str(out / "ok.html")
    meta = json.loads((out / "ok.metrics.json").read_text())["meta"]
    assert meta["profile"] == "smoke"  # the runner injected PROFILE
    # nothing written next to the source notebooks
    assert fixture_state() == before


def test_failure_does_not_stop_the_run(ok_and_fail) -> None:
    summary, out, _ = ok_and_fail
    assert [r.id for r in summary.results] == ["fail", "ok"]
    assert [r.status for r in summary.results] == ["failed", "ok"]
    assert not summary.ok and summary.exit_code == 1


def test_failing_cell_named(ok_and_fail) -> None:
    summary, out, _ = ok_and_fail
    fail = summary.results[0]
    cell = fail.failing_cell
    assert cell is not None
    assert cell["code_cell"] == 3  # the parameters cell is 1, the print cell 2
    assert "code cell 3" in cell["where"]
    assert cell["first_line"] == "x = 1"
    assert cell["ename"] == "ValueError" and cell["evalue"] == "boom"
    assert fail.error == "ValueError: boom"
    # partial output kept: the executed notebook has cell 2's output and the traceback
    nb = nbformat.read(out / "fail.ipynb", as_version=4)
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("partial output before the failure" in t for t in texts)
    assert not any("never reached" in t for t in texts)
    assert (out / "fail.html").is_file() and (out / "fail.log").is_file()
    assert fail.metrics_path is None  # it recorded nothing


def test_results_json_and_report(ok_and_fail) -> None:
    summary, out, _ = ok_and_fail
    doc = json.loads((out / "results.json").read_text())
    assert doc["profile"] == "smoke" and doc["device"] == "auto" and doc["started"]
    assert doc["exit_code"] == 1
    assert [r["status"] for r in doc["results"]] == ["failed", "ok"]
    report = (out / "site" / "report.html").read_text()
    assert "boom" in report and "code cell 3" in report and "failed" in report
    assert 'href="../ok.html"' in report  # links relative to the report
    assert "<script" not in report and "http://" not in report and "https://" not in report


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_bad_metrics(registry, tmp_path: Path) -> None:
    summary = run_notebooks(["ok"], profile="teach", out_dir=tmp_path, registry=registry,
                            params={"SCALE": 2}, html=False, progress=False)
    (res,) = summary.results
    assert res.status == "bad-metrics" and summary.exit_code == 1
    assert res.metrics == {"answer": 84.0}
    assert len(res.violations) == 1 and "'answer'" in res.violations[0] and "above" in res.violations[0]
    assert res.html is None and not (tmp_path / "ok.html").exists()


def test_unknown_param_rejected_before_running(registry, tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as info:
        run_notebooks(["ok"], profile="smoke", out_dir=tmp_path / "out", registry=registry,
                      params={"SCAEL": 2}, progress=False)
    msg = str(info.value)
    assert "'SCAEL'" in msg and "SCALE" in msg and "METRICS_PATH" in msg
    assert not (tmp_path / "out").exists()  # nothing ran
    with pytest.raises(ParameterError, match="--profile"):
        run_notebooks(["ok"], profile="smoke", out_dir=tmp_path / "out", registry=registry,
                      params={"PROFILE": "full"}, progress=False)


def test_bad_arguments(registry, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="profile"):
        run_notebooks(["ok"], profile="huge", out_dir=tmp_path, registry=registry)
    with pytest.raises(ParameterError, match="DEVICE"):
        run_notebooks(["ok"], profile="smoke", device="tpu", out_dir=tmp_path, registry=registry)
    with pytest.raises(ParameterError, match="jobs"):
        run_notebooks(["ok"], profile="smoke", jobs=0, out_dir=tmp_path, registry=registry)
    with pytest.raises(TargetError, match="unknown notebook 'okk'.*Did you mean 'ok'"):
        run_notebooks(["okk"], profile="smoke", out_dir=tmp_path, registry=registry)
    with pytest.raises(ParameterError, match="never writes"):
        run_notebooks(["ok"], profile="smoke", out_dir=FIXTURES / "out", registry=registry)


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_timeout_default_is_three_budgets(registry, tmp_path: Path) -> None:
    summary = run_notebooks(["slow"], profile="smoke", out_dir=tmp_path, registry=registry, html=False,
                            progress=False)
    (res,) = summary.results
    assert res.status == "timeout" and summary.exit_code == 1
    assert res.over_budget
    assert 9.0 <= res.seconds < 25
    assert "timed out after 9.0 s" in res.error and "budget" in res.error
    assert (tmp_path / "slow.ipynb").is_file()  # partial notebook kept
    assert res.failing_cell is not None and res.failing_cell["code_cell"] == 3


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_jobs_two_runs_both(registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_notebooks(["ok", "fail"], profile="smoke", out_dir=tmp_path, registry=registry, jobs=2,
                            html=False)
    assert [r.id for r in summary.results] == ["ok", "fail"]
    assert [r.status for r in summary.results] == ["ok", "failed"]
    err = capsys.readouterr().err
    assert "[1/2] start" in err and "[2/2] start" in err
    assert "[1/2] ok" in err and "[2/2] failed" in err and "30 s budget" in err
    assert "Executing:" not in err  # no live progress bars from parallel jobs


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_unregistered_directory_and_missing_metrics(tmp_path: Path) -> None:
    """A directory target runs every notebook in it; an unregistered notebook has no checks."""
    src = tmp_path / "nbs"
    src.mkdir()
    shutil.copy(FIXTURES / "ok.ipynb", src / "first.ipynb")
    nb = nbformat.read(FIXTURES / "ok.ipynb", as_version=4)
    nb.cells[-1].source = "print('records nothing')"
    nbformat.write(nb, src / "quiet.ipynb")
    index = src / "index.yaml"
    index.write_text(yaml.safe_dump({"version": 1, "notebooks": [{
        "id": "quiet", "path": "quiet.ipynb", "title": "Quiet", "method": "fixtures", "accelerator": "cpu",
        "budget_s": {"smoke": 30, "teach": 30, "full": 30}, "metrics": {}}]}))
    reg = load_registry(index)
    summary = run_notebooks([src], profile="smoke", out_dir=tmp_path / "out", registry=reg, html=False,
                            progress=False)
    by_id = {r.id: r for r in summary.results}
    assert set(by_id) == {"first", "quiet"}
    assert by_id["first"].status == "ok" and not by_id["first"].registered
    assert by_id["first"].budget_s is None and by_id["first"].metrics == {"answer": 42.0}
    assert by_id["quiet"].status == "failed"
    assert "recorded no metrics" in by_id["quiet"].error and "ctx.record" in by_id["quiet"].error


def test_gpu_entry_skipped_on_cpu(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    shutil.copy(FIXTURES / "ok.ipynb", tmp_path / "nbs" / "gpu.ipynb")
    index = tmp_path / "nbs" / "index.yaml"
    index.write_text(yaml.safe_dump({"version": 1, "notebooks": [{
        "id": "gpu", "path": "gpu.ipynb", "title": "Needs a GPU", "method": "fixtures", "accelerator": "gpu",
        "budget_s": {"smoke": 30, "teach": 30, "full": 30}, "metrics": {"answer": [40, 44]}}]}))
    summary = run_notebooks([], profile="smoke", device="cpu", out_dir=tmp_path / "out",
                            registry=load_registry(index), progress=False)
    (res,) = summary.results
    assert res.status == "skipped" and "--device cuda" in res.error
    assert summary.ok and summary.exit_code == 0
    assert not (tmp_path / "out" / "gpu.ipynb").exists()


@pytest.mark.parametrize("text, value", [
    ("2", 2), ("-3", -3), ("2.5", 2.5), ("1e-3", 1e-3), ("True", True), ("False", False), ("None", None),
    ("sgd", "sgd"), ("true", "true"), ("cuda:0", "cuda:0"),
])
def test_parse_param_value(text: str, value: object) -> None:
    parsed = parse_param_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_papermill_command_and_env(tmp_path: Path) -> None:
    src = FIXTURES / "ok.ipynb"
    cmd = papermill_command(src, tmp_path / "ok.ipynb", profile="smoke", device="cpu",
                            metrics_path=tmp_path / "ok.metrics.json",
                            params={"SCALE": 2, "LR": 0.5, "NAME": "1", "FLAG": True}, progress_bar=False)
    assert cmd[1:3] == ["-m", "papermill"]
    assert cmd[cmd.index("--cwd") + 1] == str(FIXTURES)
    assert cmd[cmd.index("-k") + 1] == "python3"
    assert "--no-progress-bar" in cmd
    joined = " ".join(cmd)
    assert "-p PROFILE smoke" in joined and "-p DEVICE cpu" in joined
    assert f"-p METRICS_PATH {tmp_path / 'ok.metrics.json'}" in joined
    assert yaml.safe_load(cmd[cmd.index("-y") + 1]) == {"SCALE": 2, "LR": 0.5, "NAME": "1", "FLAG": True}

    env = child_env(2, "1", base={"PATH": "/bin"})
    assert env["LIONSNB_HEADLESS"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["PYTHONUNBUFFERED"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert int(env["OMP_NUM_THREADS"]) >= 1
    env = child_env(1, None, base={"OMP_WAIT_POLICY": "ACTIVE"})
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and "OMP_NUM_THREADS" not in env
    assert child_env(4, None, base={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"


def test_parameter_names() -> None:
    assert parameter_names(FIXTURES / "ok.ipynb") == ["PROFILE", "SEED", "DEVICE", "METRICS_PATH", "SCALE"]
    assert parameter_names(FIXTURES / "fail.ipynb") == ["PROFILE", "SEED", "DEVICE", "METRICS_PATH"]


def test_resolve_targets(registry) -> None:
    got = resolve_targets([], registry)
    assert [i for i, _, _ in got] == registry.ids
    got = resolve_targets(["ok", str(FIXTURES / "ok.ipynb"), "fail.ipynb"], registry)
    assert [i for i, _, _ in got] == ["ok", "fail"]  # de-duplicated, paths map to entries
    with pytest.raises(TargetError, match="not a notebook"):
        resolve_targets([str(FIXTURES / "index.yaml")], registry)


def test_find_failing_cell_skips_error_banner(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    banner = nbformat.v4.new_markdown_cell("An Exception was encountered")
    banner.metadata["tags"] = ["papermill-error-cell-tag"]
    params = nbformat.v4.new_code_cell("A = 1")
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("A = 2")
    injected.metadata["tags"] = ["injected-parameters"]
    allowed = nbformat.v4.new_code_cell("1/0")
    allowed.metadata["tags"] = ["raises-exception"]
    allowed.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="x", traceback=[])]
    bad = nbformat.v4.new_code_cell("\n  f(A)  # here\n")
    bad.outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'f' is not defined",
                                          traceback=["\x1b[31mNameError\x1b[0m"])]
    nb.cells = [banner, params, injected, allowed, bad]
    nbformat.write(nb, tmp_path / "x.ipynb")
    cell = find_failing_cell(tmp_path / "x.ipynb")
    assert cell["code_cell"] == 3 and cell["cell_index"] == 4
    assert cell["first_line"] == "  f(A)  # here" and cell["ename"] == "NameError"
    assert cell["traceback"] == "NameError"
    assert find_failing_cell(tmp_path / "missing.ipynb") is None


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_gpu_slots_with_parallel_jobs(registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--device cuda --jobs 2: each running notebook gets CUDA_VISIBLE_DEVICES of its own (fixtures ignore DEVICE)."""
    import lionsnb.runner as runner

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(runner, "count_gpus", lambda: 2)
    summary = run_notebooks(["ok", "fail"], profile="smoke", device="cuda", out_dir=tmp_path, registry=registry,
                            jobs=2, html=False)
    assert [r.status for r in summary.results] == ["ok", "failed"]
    err = capsys.readouterr().err
    assert "on GPU 0" in err and "on GPU 1" in err
    slots = {(tmp_path / f"{i}.log").read_text().split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for i in ("ok", "fail")}
    assert slots == {"0", "1"}
    with pytest.raises(ParameterError, match="pins one GPU"):
        run_notebooks(["ok"], profile="smoke", device="cuda:1", jobs=2, out_dir=tmp_path, registry=registry)


def test_report_escapes_and_table() -> None:
    from lionsnb.report import format_table, render_report
    from lionsnb.runner import NotebookResult, RunSummary

    bad = NotebookResult(id="x", path="/nb/x.ipynb", title="<script>alert(1)</script>", status="failed",
                         seconds=1.0, budget_s=0.5, over_budget=True, error="ValueError: <b>&",
                         failing_cell={"where": "code cell 2", "first_line": "if a < b:", "code_cell": 2,
                                       "ename": "ValueError", "evalue": "<b>&", "traceback": "tb <i>"})
    good = NotebookResult(id="y", path="/nb/y.ipynb", title="Y", status="ok", seconds=2.0, budget_s=10.0,
                          metrics={"a": 1.23456789, "b": 2, "c": True, "d": "s", "e": 5.0},
                          report_metrics=[])
    summary = RunSummary(results=[bad, good], profile="smoke", device="cpu", out_dir="/o", started="now",
                         lionsnb_version="0")
    page = render_report(summary, "/o")
    assert "<script>" not in page and "&lt;script&gt;" in page and "if a &lt; b:" in page
    assert "a = 1.235" in page and "e = 5" not in page  # first 4 metrics only
    table = format_table(summary)
    assert "x   failed" in table and "1.0!" in table and "over its time budget" in table
    assert "in code cell 2: if a < b:" in table and "a=1.235  b=2  c=True  d=s" in table
