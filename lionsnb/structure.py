"""The structure of a lionsnb notebook, read from its JSON: sections, exercises, widgets, shown sources.

The notebook template (CONTRIBUTING.md) makes a notebook machine-readable: every markdown cell carries at most one
heading, on its first line; ``## `` headings open the template's sections; each exercise opens with a
``### Exercise N: title`` cell, followed by its code cells (a stub ``def my_...`` and a check cell calling
``m.check_exercise_...``) or by none (a "think" exercise, whose model answer lives in the notebook module's
``MODEL_ANSWERS``). The hygiene tests, the course assignments (nbgrader) and the site read notebooks through this
module. Torch-free.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADING_RE = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")
EXERCISE_RE = re.compile(r"^###\s+Exercise\s+(\d+)\b[:.]?\s*(.*)$", re.IGNORECASE)
#: the sections every notebook has, in this order (CONTRIBUTING.md); matched as prefixes of ``## `` headings,
#: the title cell (``# ``) holds the objectives
TEMPLATE = ("setup", "background", "implementation", "experiment", "explore", "exercises", "summary", "references",
            "record")


def source(cell: dict[str, Any]) -> str:
    """A cell's source as one string."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def headings(cell: dict[str, Any]) -> list[tuple[int, int, str]]:
    """``(line number, level, text)`` of every markdown heading in a markdown cell (not inside code fences)."""
    out, fenced = [], False
    for i, line in enumerate(source(cell).splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = HEADING_RE.match(line)
        if m and not fenced:
            out.append((i, len(m.group(1)), m.group(2)))
    return out


@dataclass
class Exercise:
    """One exercise: its heading cell, its code cells, the stub functions they define and the checks they call."""

    number: int
    title: str
    heading_cell: int
    code_cells: list[int] = field(default_factory=list)
    stubs: list[str] = field(default_factory=list)  #: names of the functions the student completes
    checks: list[str] = field(default_factory=list)  #: names of the ``m.check_exercise_*`` functions called

    @property
    def think(self) -> bool:
        """A question to think or measure about, with no code to complete."""
        return not self.stubs and not self.checks


@dataclass
class Structure:
    """A notebook's cells grouped into the template's sections."""

    path: Path
    nb: dict[str, Any]
    sections: list[tuple[str, int, int]]  #: (heading text, first cell, end cell exclusive), for ``## `` headings
    exercises: list[Exercise]

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.nb["cells"]

    def section_of(self, index: int) -> str:
        """The ``## `` heading text of the section holding cell ``index`` ('' before the first one)."""
        for text, start, end in self.sections:
            if start <= index < end:
                return text
        return ""

    def section_cells(self, prefix: str) -> list[int]:
        """Indices of the cells in every section whose heading starts with ``prefix`` (case-insensitive)."""
        out: list[int] = []
        for text, start, end in self.sections:
            if text.lower().startswith(prefix.lower()):
                out.extend(range(start, end))
        return out

    def code(self, index: int) -> str:
        return source(self.cells[index]) if self.cells[index]["cell_type"] == "code" else ""

    def calls(self, index: int, attribute: str) -> list[ast.Call]:
        """The calls ``<anything>.attribute(...)`` or ``attribute(...)`` in code cell ``index``."""
        try:
            tree = ast.parse(self.code(index))
        except SyntaxError:
            return []
        out = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name == attribute:
                    out.append(node)
        return out

    def shown_sources(self) -> list[tuple[int, str]]:
        """``(cell, expression)`` of every ``show_source(expression)`` call, in order."""
        out = []
        for i in range(len(self.cells)):
            for call in self.calls(i, "show_source"):
                if call.args:
                    out.append((i, ast.unparse(call.args[0])))
        return out

    def explore_cells(self) -> list[int]:
        """Code cells that open an explorer (``explore(...)`` or a notebook helper named ``*explorer*(...)``)."""
        out = []
        for i in range(len(self.cells)):
            code = self.code(i)
            if re.search(r"\bexplore\(|\w*_explorer\(|\bExplorer\(", code):
                out.append(i)
        return out


def read(path: str | Path) -> Structure:
    """Parse a notebook file into its :class:`Structure`."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb.get("cells", [])
    starts = []
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "markdown":
            for _, level, text in headings(cell)[:1]:
                if level == 2:
                    starts.append((text, i))
    sections = [(text, start, starts[k + 1][1] if k + 1 < len(starts) else len(cells))
                for k, (text, start) in enumerate(starts)]
    exercises: list[Exercise] = []
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "markdown" and headings(cell)[:1] and headings(cell)[0][0] == 0:
            m = EXERCISE_RE.match(source(cell).splitlines()[0])
            if m:
                exercises.append(Exercise(int(m.group(1)), m.group(2).strip(), i))
    # code cells belong to the exercise whose heading precedes them, up to the next markdown heading
    boundaries = sorted({i for i, c in enumerate(cells) if c.get("cell_type") == "markdown" and headings(c)})
    structure = Structure(path, nb, sections, exercises)
    for ex in exercises:
        end = next((b for b in boundaries if b > ex.heading_cell), len(cells))
        for j in range(ex.heading_cell + 1, end):
            if cells[j].get("cell_type") != "code":
                continue
            ex.code_cells.append(j)
            try:
                tree = ast.parse(source(cells[j]))
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    ex.stubs.append(node.name)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr.startswith("check_exercise"):
                    ex.checks.append(node.func.attr)
    return structure


def is_stub(fn: ast.FunctionDef) -> tuple[bool, str]:
    """Whether a student stub follows the template: a docstring, skeleton lines with ``...``, no bare raise."""
    doc = ast.get_docstring(fn)
    if not doc:
        return False, f"{fn.name}: the stub needs a docstring (what it takes, what it returns)"
    body = fn.body[1:]
    raises = [n for n in ast.walk(fn) if isinstance(n, ast.Raise)
              and "NotImplementedError" in ast.unparse(n.exc or ast.Constant(None))]
    if raises:
        return False, f"{fn.name}: use skeleton lines with ... instead of raise NotImplementedError"
    ellipses = [n for n in ast.walk(ast.Module(body=body, type_ignores=[]))
                if isinstance(n, ast.Constant) and n.value is Ellipsis]
    if not ellipses:
        return False, f"{fn.name}: the stub needs skeleton lines where the student writes (with ...)"
    return True, ""
