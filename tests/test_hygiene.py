"""Notebook hygiene: the rules of CONTRIBUTING.md, checked on every registered notebook.

Stored clean, one literal parameters cell, one setup cell (the notebook's own module as ``m``), the template's
sections with one heading per markdown cell, the core code shown in Implementation, questions and a "what to look
for" sentence before every widget, exercises that follow the stub template and never shown answers, objectives with
time and prerequisites, repository paths that exist, and a last cell that records the metrics.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import logging
import re
from pathlib import Path

import pytest

from lionsnb import structure
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
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
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


def notebook_module(entry) -> str:
    """``lionsnb.<series>.nbNN_<stem>`` for ``notebooks/<series>/NN_<stem>.ipynb`` (the naming rule)."""
    rel = Path(entry.path).resolve().relative_to(ROOT / "notebooks")
    assert len(rel.parts) == 2, f"{entry.id}: notebooks live in notebooks/<series>/NN_<stem>.ipynb, not {rel}"
    m = re.fullmatch(r"(\d\d)_([a-z0-9_]+)\.ipynb", rel.name)
    assert m, f"{entry.id}: the file name must be NN_<stem>.ipynb (two digits, lower case), got {rel.name}"
    return f"lionsnb.{rel.parts[0]}.nb{m.group(1)}_{m.group(2)}"


def test_registered_method_is_the_notebooks_module(entry):
    module = notebook_module(entry)
    assert f"lionsnb.{entry.method}" == module, \
        f"{entry.id}: registry method {entry.method!r} must be {module.removeprefix('lionsnb.')!r} (naming rule)"
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{entry.id}: {module} does not exist"


def test_setup_cell_is_one_import_and_one_setup_line(entry):
    cell = source(code_cells(load(entry))[1])
    body = ast.parse(cell).body
    imports, rest = body[:-1], body[-1:]
    allowed = {"numpy": "np", "torch": "torch"}
    own = [n for n in imports if isinstance(n, ast.Import) and n.names[0].name.startswith("lionsnb")]
    assert len(own) == 1 and len(own[0].names) == 1, f"{entry.id}: the setup cell imports one lionsnb module:\n{cell}"
    alias = own[0].names[0]
    assert alias.name == notebook_module(entry) and alias.asname == "m", \
        f"{entry.id}: the setup cell must say `import {notebook_module(entry)} as m`, got:\n{cell}"
    for node in imports:
        if node is own[0]:
            continue
        ok = isinstance(node, ast.Import) and len(node.names) == 1 and \
            allowed.get(node.names[0].name) == (node.names[0].asname or node.names[0].name)
        assert ok, f"{entry.id}: besides the lionsnb module the setup cell may only import numpy as np and torch"
    assert len(rest) == 1 and isinstance(rest[0], ast.Assign) and rest[0].targets[0].id == "ctx" \
        and "m.setup(" in cell, f"{entry.id}: the setup cell ends with one line ctx = m.setup(...)"
    for name in get_method(entry.method).parameter_names():
        assert name in cell, f"{entry.id}: parameter {name} is not passed to setup"


def test_no_numpy_or_torch_through_the_module(entry):
    uses = [i for i, c in enumerate(load(entry)["cells"]) if c["cell_type"] == "code"
            and re.search(r"\bm\.(np|torch)\.", source(c))]
    assert not uses, f"{entry.id}: cells {uses} use m.np / m.torch; import numpy as np and torch in the setup cell"


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
    order = [text.split(":")[0].lower() for text, _, _ in structure.read(entry.path).sections]
    found = [next(i for i, t in enumerate(structure.TEMPLATE) if h.startswith(t)) for h in order
             if any(h.startswith(t) for t in structure.TEMPLATE)]
    assert found == sorted(found), f"{entry.id}: the ## sections are out of the template's order: {order}"
    assert set(structure.TEMPLATE) <= {structure.TEMPLATE[i] for i in found}, \
        f"{entry.id}: every template section needs its own ## heading; found {order}"


def test_one_heading_per_markdown_cell_at_its_top(entry):
    bad = []
    for i, cell in enumerate(load(entry)["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        hs = structure.headings(cell)
        if len(hs) > 1 or (hs and hs[0][0] != 0):
            bad.append(i)
    assert not bad, f"{entry.id}: markdown cells {bad} carry a heading below their first line or several headings; " \
                    "split them so that each heading opens its own cell"


def test_objectives_state_time_and_prerequisites(entry):
    first = source(load(entry)["cells"][0])
    for label in ("**Time.**", "**Prerequisites.**", "**Hardware.**"):
        assert label in first, f"{entry.id}: the title cell states {label} (estimated student time, prerequisites, " \
                               "hardware)"


def test_implementation_shows_the_core_code(entry):
    st = structure.read(entry.path)
    cells = st.section_cells("implementation")
    shown = [i for i in cells if st.calls(i, "show_source")]
    assert shown, f"{entry.id}: the Implementation section must show the method's core code with m.show_source(...)"


def test_questions_and_what_to_look_for_before_every_widget(entry):
    st = structure.read(entry.path)
    explore = st.section_cells("explore")
    for i in st.explore_cells():
        before = [j for j in range(i - 1, -1, -1) if st.cells[j]["cell_type"] == "markdown"]
        assert before and "?" in source(st.cells[before[0]]), \
            f"{entry.id}: cell {i} opens a widget; the markdown cell before it must ask one or two questions"
    text = " ".join(source(st.cells[j]).lower() for j in explore if st.cells[j]["cell_type"] == "markdown")
    assert "what to look for" in text, f"{entry.id}: the Explore section needs a 'What to look for' sentence"


def test_exercises_follow_the_template(entry):
    st = structure.read(entry.path)
    assert st.exercises, f"{entry.id}: no exercise found; each opens with a '### Exercise N: title' cell"
    assert [e.number for e in st.exercises] == list(range(1, len(st.exercises) + 1)), \
        f"{entry.id}: exercises are numbered 1, 2, ... in order"
    module = importlib.import_module(notebook_module(entry))
    answers = getattr(module, "MODEL_ANSWERS", {})
    for ex in st.exercises:
        if ex.think:
            assert ex.number in answers and len(answers[ex.number]) > 40, \
                f"{entry.id}: think exercise {ex.number} needs a model answer in {module.__name__}.MODEL_ANSWERS"
            continue
        assert ex.checks, f"{entry.id}: exercise {ex.number} defines {ex.stubs} but calls no m.check_exercise_*"
        for j in ex.code_cells:
            for node in ast.parse(st.code(j)).body:
                if isinstance(node, ast.FunctionDef) and node.name in ex.stubs:
                    ok, why = structure.is_stub(node)
                    assert ok, f"{entry.id}, exercise {ex.number}: {why}"


def _reference_of(check) -> object | None:
    """The reference solution a check_exercise_* function compares with (its check_exercise call's 3rd argument)."""
    tree = ast.parse(inspect.getsource(check).lstrip())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "check_exercise":
            ref = node.args[2] if len(node.args) > 2 else next((k.value for k in node.keywords
                                                                 if k.arg == "reference"), None)
            if ref is not None:
                try:
                    return eval(ast.unparse(ref), check.__globals__)  # noqa: S307 - names of our own module
                except Exception:  # noqa: BLE001 - a local variable: not a shown function
                    return None
    return None


def test_no_exercise_answer_is_shown_before_its_exercise(entry):
    st = structure.read(entry.path)
    module = importlib.import_module(notebook_module(entry))
    shown = st.shown_sources()
    for ex in st.exercises:
        for check_name in ex.checks:
            ref = _reference_of(getattr(module, check_name))
            if ref is None:
                continue
            qual = getattr(ref, "__qualname__", "")
            for cell, expr in shown:
                if cell >= ex.heading_cell:
                    continue
                obj = eval(expr, {"m": module, "np": None, "torch": None})  # noqa: S307
                inside = qual.startswith(getattr(obj, "__qualname__", "\0") + ".") and \
                    getattr(obj, "__module__", "") == getattr(ref, "__module__", "")
                assert obj is not ref and not inside, \
                    f"{entry.id}: cell {cell} shows {expr}, the answer to exercise {ex.number}, before the exercise"


#: paths a markdown cell may name: files and folders of this repository
_REPO_PATH = re.compile(r"(?<![\w./-])((?:notebooks|lionsnb|data|tests|benchmarks|docs)/[\w./-]*[\w/])")
#: phrases of internal notes a student cannot open or check
_INTERNAL = ("method note", "recalled, not read", "as we recall", "our notes")


def test_markdown_names_only_paths_that_exist(entry):
    missing = []
    for cell in load(entry)["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for path in _REPO_PATH.findall(source(cell)):
            if not (ROOT / path.rstrip("/")).exists():
                missing.append(path)
    assert not missing, f"{entry.id}: markdown names repository paths that do not exist: {sorted(set(missing))}"


def test_no_references_to_internal_notes(entry):
    text = " ".join(source(c).lower() for c in load(entry)["cells"] if c["cell_type"] == "markdown")
    found = [p for p in _INTERNAL if p in text]
    assert not found, f"{entry.id}: markdown refers to internal notes ({found}); cite the paper, the code or a file " \
                      "in the repository instead"


def test_budgets_fit_the_profiles(entry):
    from lionsnb.registry import SMOKE_BUDGET_LLM_S, SMOKE_BUDGET_S

    limit = SMOKE_BUDGET_LLM_S if entry.loads_llm else SMOKE_BUDGET_S
    assert entry.budget_s["smoke"] <= limit, (f"smoke notebooks must run in <= {limit} s on 2 CPU cores "
                                              "(150 s only for notebooks that load a real LLM: loads_llm: true)")
    assert entry.budget_s["teach"] <= 300, "teach notebooks must run in <= 5 min on a 2-core laptop"
