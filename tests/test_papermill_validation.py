"""A notebook run by plain papermill (not our runner) refuses an unknown parameter, naming it.

papermill itself only logs "Passed unknown parameter"; lionsnb.setup reads the injected cell back.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "sharpness" / "00_start_here.ipynb"


@pytest.mark.notebooks
def test_plain_papermill_run_fails_on_unknown_parameter(tmp_path):
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOK), str(out), "-k", "python3", "--no-progress-bar",
         "-p", "PROFILE", "smoke", "-p", "RH0", "0.1"],
        cwd=NOTEBOOK.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "unknown parameter 'RH0'" in proc.stderr and "Did you mean 'RHO'" in proc.stderr
    assert out.exists()  # papermill kept the partial notebook
