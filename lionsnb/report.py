"""The run summary: a plain-text table for the terminal and a self-contained HTML report.

Both are built from a :class:`lionsnb.runner.RunSummary`.  The HTML page has inline
CSS only (no external assets), escapes every piece of text, links to each
executed notebook (HTML and .ipynb) relative to the report's own location, and is
written atomically.  Torch-free.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lionsnb.files import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from lionsnb.runner import NotebookResult, RunSummary

#: How many recorded metrics to show for a notebook without ``report_metrics``.
DEFAULT_SHOWN = 4

_COLOURS = {
    "ok": ("#1a7f37", "#dafbe1"),
    "skipped": ("#6e7781", "#eaeef2"),
    "failed": ("#cf222e", "#ffebe9"),
    "timeout": ("#bc4c00", "#fff1e5"),
    "bad-metrics": ("#8250df", "#fbefff"),
}


def format_value(value: Any) -> str:
    """A metric value in a few characters (floats with 4 significant digits)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def shown_metrics(result: NotebookResult) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs to show: the entry's report_metrics, else the first 4 recorded."""
    if not result.metrics:
        return []
    names = list(result.report_metrics) or list(result.metrics)[:DEFAULT_SHOWN]
    return [(n, result.metrics.get(n, "-")) for n in names]


def format_range(bounds: Any) -> str:
    """A registered range as text: ``[0, 1]``, ``>= 1.5``, ``<= 0.01``, ``= 8`` or ``any``."""
    if not bounds:
        return ""
    low, high = bounds
    fmt = lambda x: format_value(float(x)) if isinstance(x, float) else str(x)  # noqa: E731
    if low is None and high is None:
        return "any"
    if low is None:
        return f"<= {fmt(high)}"
    if high is None:
        return f">= {fmt(low)}"
    if low == high:
        return f"= {fmt(low)}"
    return f"[{fmt(low)}, {fmt(high)}]"


def _shown_with_range(result: NotebookResult) -> list[tuple[str, str, str]]:
    """``(name, value, registered range)`` for the shown metrics."""
    ranges = getattr(result, "ranges", {}) or {}
    return [(k, format_value(v), format_range(ranges.get(k))) for k, v in shown_metrics(result)]


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _budget(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _metrics_text(result: NotebookResult) -> str:
    return "  ".join(f"{k}={v}" + (f" (range {r})" if r else "") for k, v, r in _shown_with_range(result))


def format_table(summary: RunSummary) -> str:
    """A plain-text table (id, status, time, budget, key metrics) followed by the failures."""
    header = ("id", "status", "time s", "budget s", "key metrics")
    rows = []
    for r in summary.results:
        time_s = _seconds(r.seconds) if r.status != "skipped" else "-"
        if r.over_budget:
            time_s += "!"
        rows.append((r.id, r.status, time_s, _budget(r.budget_s), _metrics_text(r)))
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(4)]
    right = (False, False, True, True)

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[i].rjust(widths[i]) if right[i] else row[i].ljust(widths[i]) for i in range(4)]
        return "  ".join(cells + [row[4]]).rstrip()

    lines = [fmt(header), fmt(tuple("-" * w for w in widths) + ("-" * 11,))]
    lines += [fmt(row) for row in rows]
    counts = summary.counts()
    total = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing run"
    lines.append("")
    shard = f", shard {summary.shard}" if getattr(summary, "shard", None) else ""
    lines.append(f"{len(summary.results)} notebook(s), profile {summary.profile}, device {summary.device}{shard}, "
                 f"{_seconds(summary.seconds)} s: {total}")
    if any(r.over_budget for r in summary.results):
        lines.append("! = over its time budget (reported, not a failure)")
    failed = [r for r in summary.results if r.failed]
    if failed:
        lines.append("")
        lines.append("Failures:")
        for r in failed:
            lines.append(f"* {r.id} [{r.status}] {r.path}")
            cell = r.failing_cell
            if cell:
                lines.append(f"    in {cell.get('where', 'a cell')}: {cell.get('first_line', '')}")
            if r.error and r.status != "bad-metrics":
                lines.extend("    " + ln for ln in r.error.splitlines())
            for v in r.violations:
                lines.append(f"    - {v}")
            if r.log:
                lines.append(f"    log: {r.log}")
            if r.executed:
                lines.append(f"    executed notebook: {r.executed}")
    skipped = [r for r in summary.results if r.status == "skipped" and r.error]
    if skipped:
        lines.append("")
        lines.append("Skipped:")
        lines.extend(f"* {r.id}: {r.error}" for r in skipped)
    return "\n".join(lines)


def _href(target: str | None, base: Path) -> str | None:
    if not target:
        return None
    try:
        rel = os.path.relpath(Path(target).resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        rel = Path(target).resolve().as_uri()
        return rel
    return quote(Path(rel).as_posix())


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#1f2328;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} .meta{color:#57606a;margin-bottom:1.2em}
.totals span{display:inline-block;margin-right:.8em}
table{border-collapse:collapse;width:100%} th,td{padding:.45em .6em;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #d0d7de;font-size:.9em;color:#57606a}
tbody.nb{border-bottom:1px solid #d0d7de}
.status{font-weight:600;padding:.1em .5em;border-radius:1em;white-space:nowrap;font-size:.9em}
.id{color:#57606a;font-family:ui-monospace,monospace;font-size:.85em}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.over{color:#bc4c00;font-weight:600}
.metrics{font-family:ui-monospace,monospace;font-size:.85em} .range{color:#57606a}
.detail td{padding-top:0;font-size:.9em}
.detail pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap;margin:.3em 0}
.detail ul{margin:.2em 0}
a{color:#0969da}
"""


def _status_badge(status: str) -> str:
    fg, bg = _COLOURS.get(status, ("#1f2328", "#eaeef2"))
    return f'<span class="status" style="color:{fg};background:{bg}">{html.escape(status)}</span>'


def _row(r: NotebookResult, base: Path) -> str:
    e = html.escape
    links = []
    for label, target in (("html", r.html), ("ipynb", r.executed), ("log", r.log)):
        href = _href(target, base)
        if href and Path(target).exists():  # type: ignore[arg-type]
            links.append(f'<a href="{e(href)}">{label}</a>')
    title_html = e(r.title)
    html_href = _href(r.html, base) if r.html else None
    if html_href:
        title_html = f'<a href="{e(html_href)}">{title_html}</a>'
    time_cls = ' class="num over"' if r.over_budget else ' class="num"'
    time_txt = "-" if r.status == "skipped" else f"{_seconds(r.seconds)} s"
    budget_txt = f" / {_budget(r.budget_s)} s" if r.budget_s is not None else ""
    over = " (over budget)" if r.over_budget else ""
    metrics = "<br>".join(f"{e(k)} = {e(v)}" + (f' <span class="range">(registered {e(rng)})</span>' if rng else "")
                          for k, v, rng in _shown_with_range(r)) or "-"
    out = [
        '<tbody class="nb">',
        "<tr>",
        f'<td>{title_html}<br><span class="id">{e(r.id)}</span></td>',
        f"<td>{_status_badge(r.status)}</td>",
        f"<td{time_cls}>{e(time_txt + budget_txt + over)}</td>",
        f'<td class="metrics">{metrics}</td>',
        f"<td>{' · '.join(links) or '-'}</td>",
        "</tr>",
    ]
    details = []
    cell = r.failing_cell
    if cell:
        details.append(f"<div>In {e(str(cell.get('where', 'a cell')))}: <code>{e(str(cell.get('first_line', '')))}"
                       "</code></div>")
    if r.error and (r.status != "bad-metrics" or not r.violations):
        details.append(f"<pre>{e(r.error)}</pre>")
    if cell and cell.get("traceback"):
        details.append(f"<details><summary>traceback</summary><pre>{e(str(cell['traceback']))}</pre></details>")
    if r.violations:
        details.append("<ul>" + "".join(f"<li>{e(v)}</li>" for v in r.violations) + "</ul>")
    if details:
        out.append(f'<tr class="detail"><td colspan="5">{"".join(details)}</td></tr>')
    out.append("</tbody>")
    return "\n".join(out)


def render_report(summary: RunSummary, base_dir: str | os.PathLike[str]) -> str:
    """The report page as a string; links are relative to ``base_dir``."""
    e = html.escape
    base = Path(base_dir)
    counts = summary.counts()
    totals = " ".join(f"<span>{_status_badge(s)} {n}</span>" for s, n in counts.items()) or "nothing run"
    verdict = "all ok" if summary.ok else "FAILED"
    rows = "\n".join(_row(r, base) for r in summary.results)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lionsnb run report: {e(summary.profile)} ({e(verdict)})</title>
<style>{_CSS}</style>
</head>
<body>
<h1>lionsnb run report: {e(verdict)}</h1>
<div class="meta">profile <b>{e(summary.profile)}</b> · device <b>{e(summary.device)}</b> ·
started {e(summary.started)} · {e(_seconds(summary.seconds))} s · jobs {summary.jobs} ·
{f"shard {e(summary.shard)} · " if getattr(summary, "shard", None) else ""}
lionsnb {e(summary.lionsnb_version)} · {len(summary.results)} notebook(s)</div>
<div class="totals">{totals}</div>
<table>
<thead><tr><th>notebook</th><th>status</th><th class="num">time / budget</th><th>key metrics</th>
<th>outputs</th></tr></thead>
{rows}
</table>
</body>
</html>
"""


def write_report(summary: RunSummary, path: str | os.PathLike[str]) -> Path:
    """Write the self-contained HTML report to ``path`` atomically and return its path."""
    dst = Path(path).expanduser().resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(summary, dst.parent)
    return atomic_write_text(dst, text)
