"""The exercises as nbgrader assignments: the source version's metadata, and the round trip through nbgrader itself
(generate the release version, autograde a submission that solves everything and one that leaves the stubs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lionsnb.assignments import build_assignments, reference_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course")
    summary = build_assignments(out, series=["sharpness"], profile="smoke")
    assert list(summary) == ["start_here"]
    assert summary["start_here"]["autograded"] == 2 and summary["start_here"]["manual"] == 1
    return out


def test_source_version_has_solution_regions_tests_and_answers(course):
    nb = nbformat.read(str(course / "source" / "sharpness" / "00_start_here.ipynb"), as_version=4)
    meta = [c.metadata["nbgrader"] for c in nb.cells]
    assert all(m["schema_version"] == 3 for m in meta) and len({m["grade_id"] for m in meta}) == len(meta)
    solutions = [c for c in nb.cells if c.metadata["nbgrader"]["solution"] and c.cell_type == "code"]
    assert len(solutions) == 2 and all("### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source
                                       for c in solutions)
    assert "def my_top_eigenvalue(A, iters=100):" in solutions[0].source  # the signature and docstring stay
    tests = [c for c in nb.cells if c.metadata["nbgrader"]["grade"] and c.cell_type == "code"]
    assert len(tests) == 2 and all(c.metadata["nbgrader"]["locked"] and c.metadata["nbgrader"]["points"] == 1
                                   for c in tests)
    answers = [c for c in nb.cells if c.cell_type == "markdown" and c.metadata["nbgrader"]["solution"]]
    assert len(answers) == 1 and "mini-batch" in answers[0].source
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert 'PROFILE = "smoke"' in params.source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_reference_of_finds_the_checked_function():
    import lionsnb.sharpness.nb00_start_here as m

    assert reference_of(m.check_exercise_top_eigenvalue) == ("lionsnb.sharpness.hessian", "top_eigenvalue")


def test_unknown_series_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown series"):
        build_assignments(tmp_path, series=["nope"])


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # nbgrader runs the `alembic` command of its environment: put the venv's bin first on the PATH
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.mark.notebooks
def test_nbgrader_round_trip(course):
    pytest.importorskip("nbgrader")
    gen = _nbgrader(course, "generate_assignment", "sharpness", "--force")
    assert gen.returncode == 0, gen.stdout + gen.stderr
    release = course / "release" / "sharpness" / "00_start_here.ipynb"
    text = release.read_text()
    assert "BEGIN SOLUTION" not in text and "v = v / v.norm()" not in text and "Jastrzebski" not in text
    assert "raise NotImplementedError()" in text
    # two submissions: one solving every exercise (the source version), one handing in the stubs (the release)
    for student, version in (("solver", course / "source"), ("stubs", course / "release")):
        dest = course / "submitted" / student / "sharpness"
        dest.mkdir(parents=True)
        shutil.copy(version / "sharpness" / "00_start_here.ipynb", dest / "00_start_here.ipynb")
        (dest / "timestamp.txt").write_text("2026-12-07 12:00:00.000000 UTC")
    auto = _nbgrader(course, "autograde", "sharpness", "--create", "--force")
    assert auto.returncode == 0, auto.stdout[-3000:] + auto.stderr[-3000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {}
        for student in ("solver", "stubs"):
            nb = gb.find_submission_notebook("00_start_here", "sharpness", student)
            scores[student] = {g.name: (g.auto_score, g.max_score) for g in nb.grades}
    tests = [name for name in scores["solver"] if name.endswith("-test")]
    assert len(tests) == 2
    assert all(scores["solver"][t] == (1.0, 1.0) for t in tests), scores["solver"]
    assert all(scores["stubs"][t] == (0.0, 1.0) for t in tests), scores["stubs"]
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "nbgrader-roundtrip.json").write_text(json.dumps(scores, indent=2, default=str))


def test_every_registered_notebook_converts(tmp_path):
    """Every exercise of the suite has a solution region (a model solution or a checked reference)."""
    summary = build_assignments(tmp_path)
    from lionsnb.registry import load_registry

    assert set(summary) == set(load_registry().ids)
    for nb_id, counts in summary.items():
        nb = nbformat.read(counts["path"], as_version=4)
        assert counts["autograded"] + counts["manual"] >= 1, f"{nb_id}: no graded exercise"
        solutions = [c for c in nb.cells if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source]
        assert len(solutions) >= counts["autograded"] > 0 or counts["manual"], nb_id
