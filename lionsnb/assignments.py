"""The exercises as nbgrader assignments: ``lionsnb assignments [--series S] --out DIR``.

Writes an nbgrader course folder, ``DIR/source/<series>/<NN_stem>.ipynb`` plus ``DIR/nbgrader_config.py``, in which

* each code exercise's stub keeps its signature and docstring and gets a **solution region**
  (``### BEGIN SOLUTION`` ... ``### END SOLUTION``): the notebook module's ``SOLUTIONS[stub]`` when it has one (a
  function whose body is the model solution), else a call of the package's reference solution, the function the
  exercise's check compares with;
* each exercise's check is followed by an **autograded test cell** worth ``points`` (it asserts the check passes);
* each think exercise gets a **manually graded answer cell** holding the model answer of ``MODEL_ANSWERS``;
* every other cell is locked (read-only), outputs are cleared and ``PROFILE`` is set to the chosen profile.

``nbgrader generate_assignment <series>`` then writes the release version (solutions replaced by ``raise
NotImplementedError()``, which the notebooks' checks treat as "not attempted") and ``nbgrader autograde`` grades
submissions unchanged. Torch-free until a notebook module is imported.
"""
from __future__ import annotations

import ast
import copy
import importlib
import inspect
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lionsnb import structure
from lionsnb.files import atomic_write_text

NBGRADER_SCHEMA = 3
CONFIG = """# nbgrader course folder written by `lionsnb assignments` (see the lionsnb README)
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "lionsnb"
c.CourseDirectory.root = {root!r}
# the notebooks train small models: give a cell minutes, not nbgrader's default 30 s
c.ExecutePreprocessor.timeout = 1200
c.Execute.timeout = 1200
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
"""


def _meta(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
          points: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": NBGRADER_SCHEMA,
                            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def reference_of(check: Callable) -> tuple[str, str] | None:
    """``(module, name)`` of the reference solution an ``m.check_exercise_*`` function compares with."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(check)))
    for node in ast.walk(tree):
        name = getattr(node, "func", None)
        name = getattr(name, "id", getattr(name, "attr", "")) if name is not None else ""
        if isinstance(node, ast.Call) and name == "check_exercise":
            ref = node.args[2] if len(node.args) > 2 else next((k.value for k in node.keywords
                                                                 if k.arg == "reference"), None)
            if ref is None:
                return None
            try:
                obj = eval(ast.unparse(ref), check.__globals__)  # noqa: S307 - a name of our own module
            except Exception:  # noqa: BLE001
                return None
            module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
            if module and qual and "<" not in qual and "." not in qual:
                return module, qual
    return None


def _solution_body(stub: ast.FunctionDef, module: Any, checks: list[str]) -> str:
    """The lines of the solution region for one stub (indented by 4)."""
    solutions = getattr(module, "SOLUTIONS", {})
    if stub.name in solutions:
        fn = solutions[stub.name]
        src = textwrap.dedent(inspect.getsource(fn))
        node = ast.parse(src).body[0]
        body = node.body[1:] if ast.get_docstring(node) else node.body
        lines = src.splitlines()
        first, last = body[0].lineno - 1, body[-1].end_lineno
        text = textwrap.dedent("\n".join(lines[first:last]))
        return textwrap.indent(text, "    ")
    for check in checks:
        ref = reference_of(getattr(module, check))
        if ref is None:
            continue
        args = [a.arg for a in stub.args.args]
        if stub.args.vararg is not None:
            args.append(f"*{stub.args.vararg.arg}")
        call_args = ", ".join(args)
        return (f"    # the package's reference solution; read it with m.show_source\n"
                f"    from {ref[0]} import {ref[1]} as reference\n"
                f"    return reference({call_args})")
    raise ValueError(f"{module.__name__}: no solution for the stub {stub.name}: add SOLUTIONS[{stub.name!r}] or check "
                     "it with check_exercise(name, attempt, reference, cases)")


def with_solution(cell_source: str, stubs: list[str], module: Any, checks: list[str]) -> str:
    """The stub cell with each stub's body (after its docstring) replaced by a solution region."""
    tree = ast.parse(cell_source)
    lines = cell_source.splitlines()
    for node in sorted((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in stubs),
                       key=lambda n: n.lineno, reverse=True):
        has_doc = ast.get_docstring(node) is not None
        start = (node.body[1].lineno if has_doc and len(node.body) > 1 else node.body[0].end_lineno + 1
                 if has_doc else node.body[0].lineno) - 1
        end = node.end_lineno
        region = ["    ### BEGIN SOLUTION", *_solution_body(node, module, checks).splitlines(), "    ### END SOLUTION"]
        lines[start:end] = region
    return "\n".join(lines)


def assignment_notebook(path: Path, module_name: str, *, profile: str, points: float = 1.0) -> tuple[dict, dict]:
    """The nbgrader source version of one notebook and ``{"autograded": n, "manual": n, "points": total}``."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    st = structure.read(path)
    module = importlib.import_module(module_name)
    answers = getattr(module, "MODEL_ANSWERS", {})
    exercise_cells = {j: ex for ex in st.exercises for j in ex.code_cells}
    think_headings = {ex.heading_cell: ex for ex in st.exercises if ex.think}
    cells: list[Any] = []
    counts = {"autograded": 0, "manual": 0, "points": 0.0}
    for i, cell in enumerate(nb.cells):
        cell = copy.deepcopy(cell)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        gid = f"{st.path.stem}-cell{i:03d}"
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            cell.source = re.sub(r'^PROFILE = "\w+"', f'PROFILE = "{profile}"', cell.source, flags=re.M)
        ex = exercise_cells.get(i)
        if ex is not None and any(f"def {s}(" in cell.source for s in ex.stubs):
            cell.source = with_solution(cell.source, ex.stubs, module, ex.checks)
            cell.metadata["nbgrader"] = _meta(gid, solution=True)
        else:
            cell.metadata["nbgrader"] = _meta(gid, locked=True)
        cells.append(cell)
        if ex is not None and ex.checks and ex.stubs and i == max(j for j in ex.code_cells
                                                                  if any(c in nb.cells[j].source for c in ex.checks)):
            stub, check = ex.stubs[0], ex.checks[0]
            test = nbformat.v4.new_code_cell(
                f"# Autograded: exercise {ex.number} ({ex.title or stub}) must pass its check.\n"
                f"assert m.{check}({stub}).status == \"solved\", \"exercise {ex.number} is not solved yet\"")
            test.metadata["nbgrader"] = _meta(f"{st.path.stem}-exercise{ex.number}-test", grade=True, locked=True,
                                              points=points)
            cells.append(test)
            counts["autograded"] += 1
            counts["points"] += points
        if i in think_headings:
            number = think_headings[i].number
            answer = nbformat.v4.new_markdown_cell(
                answers.get(number, "(no model answer recorded: add it to MODEL_ANSWERS)"))
            answer.metadata["nbgrader"] = _meta(f"{st.path.stem}-exercise{number}-answer", solution=True,
                                                grade=True, points=points)
            cells.append(answer)
            counts["manual"] += 1
            counts["points"] += points
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb, counts


def build_assignments(out: str | os.PathLike[str], *, series: list[str] | None = None, profile: str = "teach",
                      points: float = 1.0) -> dict[str, dict]:
    """Write the nbgrader course folder ``out``; returns ``{notebook id: counts}``."""
    import nbformat

    from lionsnb.params import validate_profile
    from lionsnb.registry import load_registry

    validate_profile(profile)
    registry = load_registry()
    out = Path(out).resolve()
    summary: dict[str, dict] = {}
    known = sorted({Path(e.path).resolve().relative_to(registry.root).parts[0] for e in registry})
    unknown = [s for s in series or [] if s not in known]
    if unknown:
        raise ValueError(f"unknown series {unknown}; the series are {', '.join(known)}")
    for entry in registry:
        rel = Path(entry.path).resolve().relative_to(registry.root)
        if series and rel.parts[0] not in series:
            continue
        nb, counts = assignment_notebook(Path(entry.path), f"lionsnb.{entry.method}", profile=profile, points=points)
        dest = out / "source" / rel.parts[0] / rel.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, nbformat.writes(nb))
        summary[entry.id] = {**counts, "path": str(dest)}
    atomic_write_text(out / "nbgrader_config.py", CONFIG.format(root=str(out)))
    return summary
