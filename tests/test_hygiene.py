"""Notebook hygiene: stored clean, one literal parameters cell, one setup line, registered, records metrics."""
from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest

from lionsnb.methods import get_method
from lionsnb.params import COMMON_PARAMETERS
from lionsnb.registry import load_registry, unregistered_notebooks

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry(ROOT / "notebooks" / "index.yaml")
ENTRIES = list(REGISTRY)
#: the template every notebook follows (CONTRIBUTING.md); each must appear as a markdown heading
SECTIONS = ("objectives", "setup", "background", "implementation", "experiment", "explore", "exercises",
            "summary", "references", "record")


def load(entry) -> dict:
    return json.loads(Path(entry.path).read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_notebook_is_registered_and_every_entry_exists():
    assert ENTRIES, "notebooks/index.yaml registers no notebook"
    assert unregistered_notebooks(REGISTRY) == []
    for entry in ENTRIES:
        assert Path(entry.path).is_file(), f"{entry.id}: {entry.path} does not exist"


@pytest.fixture(params=ENTRIES, ids=[e.id for e in ENTRIES])
def entry(request):
    return request.param


def test_stored_without_outputs_or_widget_state(entry):
    nb = load(entry)
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
    assert not dirty, f"{entry.id}: cells {dirty} carry outputs; clear them before committing"
    assert "widgets" not in nb["metadata"], f"{entry.id}: widget state stored in the notebook metadata"


def test_kernelspec_is_python3(entry):
    assert load(entry)["metadata"]["kernelspec"]["name"] == "python3"


def test_one_literal_parameters_cell_first(entry):
    cells = code_cells(load(entry))
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert tagged == [0], f"{entry.id}: exactly one cell tagged 'parameters', the first code cell (got {tagged})"
    names = []
    for node in ast.parse(source(cells[0])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"{entry.id}: the parameters cell may only hold NAME = literal lines"
        ast.literal_eval(node.value)  # raises for anything but a literal
        names.append(node.targets[0].id)
    spec = get_method(entry.method)
    assert set(names) == set(spec.parameter_names()), \
        f"{entry.id}: parameters {names} differ from the method's {spec.parameter_names()}"
    assert names[:len(COMMON_PARAMETERS)] == list(COMMON_PARAMETERS)


def test_papermill_parses_every_parameter(entry, caplog):
    """papermill's parser gives up silently on some comments (e.g. quotes or '='), dropping the parameter."""
    import papermill

    with caplog.at_level(logging.WARNING):
        found = papermill.inspect_notebook(str(entry.path))
    assert set(found) == set(get_method(entry.method).parameter_names())
    assert "Unable to parse" not in caplog.text


def test_setup_cell_is_one_import_and_one_setup_line(entry):
    cell = source(code_cells(load(entry))[1])
    body = ast.parse(cell).body
    assert len(body) == 2 and isinstance(body[0], (ast.Import, ast.ImportFrom)), \
        f"{entry.id}: the cell after the parameters must be one import and one setup line, got:\n{cell}"
    assert isinstance(body[1], ast.Assign) and body[1].targets[0].id == "ctx" and "setup(" in cell
    for name in get_method(entry.method).parameter_names():
        assert name in cell, f"{entry.id}: parameter {name} is not passed to setup"


def test_last_cell_records_metrics(entry):
    last = load(entry)["cells"][-1]
    assert last["cell_type"] == "code" and "ctx.record(" in source(last)
    recorded = {kw.arg for node in ast.walk(ast.parse(source(last))) if isinstance(node, ast.Call)
                for kw in node.keywords if kw.arg}
    missing = set(entry.metrics) - recorded
    # keys passed through **dicts cannot be seen statically; the smoke run checks them all
    assert not missing or "**" in source(last), f"{entry.id}: registered metrics never recorded: {missing}"


def test_template_sections_present(entry):
    headings = " ".join(line.lower() for c in load(entry)["cells"] if c["cell_type"] == "markdown"
                        for line in source(c).splitlines() if line.startswith("#"))
    text = " ".join(source(c).lower() for c in load(entry)["cells"] if c["cell_type"] == "markdown")
    missing = [s for s in SECTIONS if s not in headings and f"**{s}" not in text]
    assert not missing, f"{entry.id}: template sections missing: {missing} (see CONTRIBUTING.md)"


def test_budgets_fit_the_profiles(entry):
    from lionsnb.registry import SMOKE_BUDGET_LLM_S, SMOKE_BUDGET_S

    limit = SMOKE_BUDGET_LLM_S if entry.loads_llm else SMOKE_BUDGET_S
    assert entry.budget_s["smoke"] <= limit, (f"smoke notebooks must run in <= {limit} s on 2 CPU cores "
                                              "(150 s only for notebooks that load a real LLM: loads_llm: true)")
    assert entry.budget_s["teach"] <= 300, "teach notebooks must run in <= 5 min on a 2-core laptop"
