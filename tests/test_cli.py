"""The ``lionsnb`` command line (``main(argv)``), on the fixture registry."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lionsnb.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
INDEX = str(FIXTURES / "index.yaml")


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--index", INDEX]) == 0
    out = capsys.readouterr().out
    assert "3 notebook(s)" in out
    for needle in ("ok", "fail", "fixtures", "cpu", "30/30/30", "OK: records answer", "ok.ipynb"):
        assert needle in out


def test_list_bad_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--index", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.notebooks  # executes (fixture) notebooks through the runner: not in make test-fast
def test_run_ok_and_bad_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", "ok", "--index", INDEX, "--profile", "smoke", "--out", str(out), "--no-html",
                 "--quiet", "-p", "SCALE", "1.0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "answer=42" in captured.out and f"report: {out / 'report.html'}" in captured.out
    assert "[1/1] ok" in captured.err
    assert (out / "report.html").is_file() and not (out / "ok.html").exists()
    assert json.loads((out / "results.json").read_text())["results"][0]["status"] == "ok"

    code = main(["run", "ok", "--index", INDEX, "--profile", "smoke", "--out", str(out), "--no-html",
                 "--quiet", "--param", "SCALE", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert "bad-metrics" in captured.out and "'answer' = 84" in captured.out


@pytest.mark.parametrize("argv, needle", [
    (["--profile", "huge"], "profile 'huge'"),
    (["--device", "tpu"], "DEVICE = 'tpu' is not valid"),
    (["--jobs", "0"], "--jobs"),
    (["-p", "NOPE", "1"], "unknown parameter 'NOPE'"),
    (["-p", "SCALE", "1", "-p", "SCALE", "2"], "twice"),
    (["missing_id"], "unknown notebook 'missing_id'"),
    (["--timeout", "-1"], "--timeout"),
])
def test_run_usage_errors(argv: list[str], needle: str, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    targets = [] if "missing_id" in argv else ["ok"]
    assert main(["run", *targets, "--index", INDEX, "--out", str(tmp_path / "out"), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out" / "ok.ipynb").exists()


def test_profile_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LIONSNB_PROFILE", "gigantic")
    assert main(["run", "ok", "--index", INDEX, "--out", str(tmp_path)]) == 2
    assert "LIONSNB_PROFILE" in capsys.readouterr().err


def test_no_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


def test_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--index", INDEX])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert "Python" in out and "torch" in out and "papermill" in out and "kernel python3" in out
    assert "registry" in out and "doctor:" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert lines and all(ln.split()[0] in ("ok", "warn", "FAIL") for ln in lines)
    assert (code == 1) == any(ln.split()[0] == "FAIL" for ln in lines)


def test_python_m_lionsnb_is_fast_and_torch_free() -> None:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, "-m", "lionsnb", "list", "--index", INDEX],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ok.ipynb" in proc.stdout
    code = ("import sys, lionsnb.cli, lionsnb.registry, lionsnb.runner, lionsnb.report; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
