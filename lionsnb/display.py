"""What a notebook shows besides figures: HTML, the source of a package function, and tables.

* :func:`show_source` displays the code of a package function or class, highlighted, with the file and lines it
  comes from, so that the Implementation section of a notebook shows the algorithm itself, not a copy of it.
* :func:`table` turns rows (dicts), a ``{label: value}`` mapping or a ``{row: {column: value}}`` mapping into a
  :class:`Table`: end a cell with it and the notebook shows one labelled table (HTML in Jupyter and in exported
  pages, aligned text elsewhere) instead of a wall of prints.

This module is torch-free.
"""
from __future__ import annotations

import html
import inspect
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parent


def in_notebook() -> bool:
    """True inside an IPython kernel or shell (where ``display`` shows rich output)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show_html(text: str) -> None:
    """Display HTML in a notebook (headless runs keep it in their outputs); print its plain text elsewhere."""
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(text))
        return
    print(re.sub(r"<[^>]+>", " ", html.unescape(text)))


def show(obj: Any) -> None:
    """``IPython.display.display`` in a notebook, ``print`` elsewhere."""
    if in_notebook():
        from IPython.display import display

        display(obj)
    else:
        print(obj)


# ----------------------------------------------------------------------------- source

class Source:
    """The source of one function or class: highlighted HTML in notebooks, plain text elsewhere."""

    def __init__(self, obj: Any):
        obj = inspect.unwrap(obj)  # a decorated function (e.g. @torch.no_grad()) shows its own code and file
        try:
            lines, first = inspect.getsourcelines(obj)
            path = Path(inspect.getsourcefile(obj) or "")
        except (TypeError, OSError) as err:
            raise TypeError(f"show_source needs a function, class or method defined in a file; got {obj!r} "
                            f"({err}).") from None
        self.code = "".join(lines).rstrip() + "\n"
        self.first, self.last = first, first + len(lines) - 1
        try:
            self.where = f"lionsnb/{path.resolve().relative_to(_PACKAGE_ROOT).as_posix()}"
        except ValueError:
            self.where = path.name
        self.name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))

    @property
    def header(self) -> str:
        return f"{self.name} — {self.where}, lines {self.first}-{self.last}"

    def __repr__(self) -> str:
        return f"# {self.header}\n{self.code}"

    def _repr_html_(self) -> str:
        try:
            from pygments import highlight
            from pygments.formatters import HtmlFormatter
            from pygments.lexers import PythonLexer

            body = highlight(self.code, PythonLexer(), HtmlFormatter(noclasses=True, nowrap=False))
        except ImportError:  # pygments comes with Jupyter; plain <pre> otherwise
            body = f"<pre>{html.escape(self.code)}</pre>"
        return (f"<div class='lionsnb-source'><div style='font-size:85%;color:#555'>"
                f"<code>{html.escape(self.header)}</code></div>{body}</div>")


def show_source(obj: Any) -> None:
    """Show the source of a package function, class or method, highlighted, with its file and lines."""
    show(Source(obj))


# ----------------------------------------------------------------------------- tables

def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` significant digits, None as '-', sequences joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 10 ** (digits + 2) or abs(value) < 10 ** -(digits - 1)):
            return f"{value:.{max(digits - 1, 1)}e}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, digits) for v in value)
    return str(value)


class Table:
    """A labelled table: ``columns`` and ``rows`` of cells; shows as HTML in notebooks and as text elsewhere."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, title: str = "",
                 digits: int = 4, max_chars: int = 200):
        self.rows = [dict(r) for r in rows]
        self.columns = list(columns)
        self.title, self.digits, self.max_chars = title, digits, max_chars

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        return [r.get(name) for r in self.rows]

    def _cell(self, value: Any) -> str:
        text = format_value(value, self.digits)
        return text if len(text) <= self.max_chars else text[: self.max_chars - 1] + "…"

    def __repr__(self) -> str:
        cells = [[self._cell(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        numeric = [all(_is_number(r.get(c)) for r in self.rows) for c in self.columns]

        def line(values: Iterable[str]) -> str:
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, widths, numeric)).rstrip()

        out = [self.title] if self.title else []
        out += [line(self.columns), line("-" * w for w in widths)]
        out += [line(row) for row in cells]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        numeric = [all(_is_number(r.get(c)) for r in self.rows) for c in self.columns]
        align = ["right" if num else "left" for num in numeric]
        head = "".join(f"<th style='text-align:{a}'>{html.escape(c)}</th>" for c, a in zip(self.columns, align))
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:{a};vertical-align:top'>"
                             f"{html.escape(self._cell(r.get(c))).replace(chr(10), '<br>')}</td>"
                             for c, a in zip(self.columns, align)) + "</tr>"
            for r in self.rows)
        caption = f"<caption style='text-align:left;font-weight:bold'>{html.escape(self.title)}</caption>" \
            if self.title else ""
        return f"<table class='lionsnb-table'>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)) or (
        hasattr(value, "item") and getattr(value, "ndim", 1) == 0)


def table(rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], columns: Sequence[str] | None = None, *,
          title: str = "", digits: int = 4, index: str | None = None, max_chars: int = 200) -> Table:
    """A :class:`Table` from rows (a list of dicts), ``{label: value}`` or ``{row label: {column: value}}``.

    ``columns`` picks and orders the columns (default: every key, in first-seen order). ``{label: value}`` makes a
    two-column table (``quantity``, ``value``); ``{row: {column: value}}`` puts the row labels in a first column
    named ``index`` (default ``""``). Floats show ``digits`` significant digits.
    """
    if isinstance(rows, Mapping):
        values = list(rows.values())
        if values and all(isinstance(v, Mapping) for v in values):
            key = index if index is not None else ""
            rows = [{key: label, **dict(v)} for label, v in rows.items()]
            if columns is not None and key not in columns:
                columns = [key, *columns]
        else:
            rows = [{"quantity": k, "value": v} for k, v in rows.items()]
            columns = columns or ["quantity", "value"]
    rows = list(rows)
    if not all(isinstance(r, Mapping) for r in rows):
        raise TypeError("table() takes a list of dicts, {label: value} or {row: {column: value}}.")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    unknown = [c for c in columns if rows and all(c not in r for r in rows)]
    if unknown:
        have = sorted({k for r in rows for k in r})
        raise KeyError(f"table(): no row has the column(s) {unknown}; the rows have {have}.")
    return Table(rows, columns, title=title, digits=digits, max_chars=max_chars)
