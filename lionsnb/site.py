"""The course site: the executed suite as static HTML pages that work from the file system, widgets included.

``lionsnb site --from build/executed --out build/site`` (``make site``) reads a run's ``results.json`` and writes

* ``index.html``: the notebooks grouped by series, each with its title, objectives, time and prerequisites, status,
  run time against its budget and key metrics next to their registered ranges;
* ``<id>.html`` per notebook: every output, rendered by nbconvert with the package's template (code highlighted,
  figures at their size, math by a local MathJax, explorers as HTML/JavaScript over their pre-rendered frames);
  a header links back to the index, to the source notebook and to the executed one;
* ``sources/<series>/NN_<stem>.ipynb`` (the source notebooks, without outputs) and ``executed/<id>.ipynb``;
* ``_static/mathjax/``.

Nothing is loaded from the network: no CDN script, font or style.
"""
from __future__ import annotations

import html
import importlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lionsnb.assets import MATHJAX_FONTS
from lionsnb.files import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;
padding:0 1em;line-height:1.45} h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid
#d0d7de;padding-bottom:.2em} .meta{color:#57606a} .card{border:1px solid #d0d7de;border-radius:8px;padding:.8em 1em;
margin:.8em 0} .card h3{margin:.1em 0 .3em 0;font-size:1.1em} .card .id{color:#57606a;font-family:ui-monospace,
monospace;font-size:.85em} .status{font-weight:600;padding:.1em .5em;border-radius:1em;font-size:.85em}
.objectives{font-size:.95em} .objectives ol{margin:.3em 0} .facts{font-size:.9em;color:#424a53}
.metrics{font-family:ui-monospace,monospace;font-size:.85em;color:#424a53} .range{color:#6e7781} a{color:#0969da}
"""
_STATUS_COLOURS = {"ok": ("#1a7f37", "#dafbe1"), "skipped": ("#6e7781", "#eaeef2"), "failed": ("#cf222e", "#ffebe9"),
                   "timeout": ("#bc4c00", "#fff1e5"), "bad-metrics": ("#8250df", "#fbefff")}
_NAV_CSS = ("position:sticky;top:0;z-index:10;background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:.5em 1em;"
            "font-family:system-ui,sans-serif;font-size:.9em")


@dataclass
class Page:
    """One notebook of the site."""

    id: str
    title: str
    series: str
    status: str
    seconds: float
    budget_s: float | None
    metrics: list[tuple[str, str, str]]  #: (name, value, registered range)
    source: Path  #: the source notebook in the repository
    executed: Path | None
    objectives: str = ""  #: HTML of the objectives paragraph and list
    facts: dict[str, str] = field(default_factory=dict)  #: Time, Prerequisites, Hardware -> text


def _markdown(text: str) -> str:
    """Markdown to HTML with the converter nbconvert uses (mistune); math is left for MathJax."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    return markdown2html_mistune(text)


def title_cell_parts(first_cell: str) -> tuple[str, str, dict[str, str]]:
    """``(title, objectives markdown, {Time, Prerequisites, Hardware})`` from a notebook's title cell."""
    lines = first_cell.splitlines()
    title = lines[0].lstrip("#").strip() if lines else ""
    body = "\n".join(lines[1:])
    facts = {}
    for label in ("Time", "Prerequisites", "Hardware"):
        m = re.search(rf"\*\*{label}\.\*\*\s*(.*?)(?=\n\s*\n|\n\*\*\w+\.\*\*|\Z)", body, re.S)
        if m:
            facts[label] = " ".join(m.group(1).split())
    m = re.search(r"\*\*Objectives\.\*\*(.*?)(?=\n\*\*(?:Time|Prerequisites|Hardware)\.\*\*|\Z)", body, re.S)
    objectives = m.group(1).strip() if m else ""
    return title, objectives, facts


def series_title(series: str) -> str:
    """The first line of the series subpackage's docstring (``lionsnb.<series>``)."""
    try:
        doc = importlib.import_module(f"lionsnb.{series}").__doc__ or ""
    except Exception:  # noqa: BLE001 - a folder without a subpackage: its name will do
        doc = ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first or series


def collect_pages(run_dir: Path) -> list[Page]:
    """The pages of a run: its ``results.json`` joined with the registry and the executed notebooks."""
    import nbformat

    from lionsnb.registry import load_registry
    from lionsnb.report import _shown_with_range
    from lionsnb.runner import load_summary

    results = run_dir / "results.json"
    if not results.is_file():
        raise FileNotFoundError(f"{run_dir} holds no results.json: run the notebooks first (`make run`, or "
                                f"`lionsnb run --out {run_dir}`), then build the site from that folder.")
    summary = load_summary(results)
    registry = load_registry()
    pages = []
    for r in summary.results:
        entry = registry.find(r.id)
        source = Path(r.path)
        executed = Path(r.executed) if r.executed and Path(r.executed).is_file() else None
        if executed is None and (run_dir / f"{r.id}.ipynb").is_file():
            executed = run_dir / f"{r.id}.ipynb"
        nb = nbformat.read(str(executed or source), as_version=4)
        first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
        title, objectives, facts = title_cell_parts(first)
        try:
            series = source.resolve().relative_to(registry.root).parts[0]
        except ValueError:
            series = source.parent.name
        pages.append(Page(id=r.id, title=entry.title if entry else title, series=series, status=r.status,
                          seconds=r.seconds, budget_s=r.budget_s, metrics=_shown_with_range(r), source=source,
                          executed=executed, objectives=_markdown(objectives) if objectives else "", facts=facts))
    return pages


def _badge(status: str) -> str:
    fg, bg = _STATUS_COLOURS.get(status, ("#1f2328", "#eaeef2"))
    return f'<span class="status" style="color:{fg};background:{bg}">{html.escape(status)}</span>'


def render_index(pages: list[Page], *, profile: str, mathjax: str) -> str:
    """The index page: series in registry order, one card per notebook."""
    e = html.escape
    series_order = list(dict.fromkeys(p.series for p in pages))
    blocks = []
    for series in series_order:
        cards = []
        for p in (p for p in pages if p.series == series):
            facts = "".join(f"<div><b>{e(k)}.</b> {e(v)}</div>" for k, v in p.facts.items())
            metrics = "<br>".join(f"{e(k)} = {e(v)}" + (f' <span class="range">(registered {e(r)})</span>' if r
                                                         else "") for k, v, r in p.metrics)
            budget = f" of {p.budget_s:g} s" if p.budget_s else ""
            cards.append(
                f'<div class="card"><h3><a href="{e(p.id)}.html">{e(p.title)}</a></h3>'
                f'<div class="id">{e(p.id)} · {_badge(p.status)} · {p.seconds:.0f} s{e(budget)} '
                f'({e(profile)} profile) · <a href="{e(_source_href(p))}">source notebook</a></div>'
                f'<div class="objectives">{p.objectives}</div><div class="facts">{facts}</div>'
                f'<div class="metrics">{metrics}</div></div>')
        blocks.append(f'<h2>{e(series_title(series))}</h2>' + "".join(cards))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lionsnb: the course notebooks</title><style>{_CSS}</style>
<script type="text/x-mathjax-config">MathJax.Hub.Config({{tex2jax: {{inlineMath: [['$','$']], processEscapes: true}}}});
</script>{MATHJAX_FONTS}<script src="{e(mathjax)}"></script></head>
<body><h1>lionsnb: the course notebooks</h1>
<div class="meta">{len(pages)} notebooks executed in the <b>{e(profile)}</b> profile. Every page works offline, from
the file system; the explorers' controls swap precomputed images in the browser, no kernel needed. To run a
notebook yourself, open its source in JupyterLab (see the README).</div>
{''.join(blocks)}
</body></html>
"""


def _source_href(page: Page) -> str:
    return f"sources/{page.series}/{page.source.name}"


def _nav(page: Page) -> str:
    e = html.escape
    executed = f' · <a href="executed/{e(page.id)}.ipynb">executed notebook</a>' if page.executed else ""
    return (f'<nav class="lionsnb-nav" style="{_NAV_CSS}"><a href="index.html">← all notebooks</a> · '
            f'<a href="{e(_source_href(page))}">source notebook</a> ({e(page.series)}/{e(page.source.name)})'
            f'{executed} · {_badge(page.status)}</nav>')


def build_site(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Build the site of the run in ``run_dir`` into ``out_dir``; returns the index page."""
    import nbformat

    from lionsnb.assets import html_exporter, install_mathjax, mathjax_url
    from lionsnb.progress import progress
    from lionsnb.runner import load_summary

    run_dir, out = Path(run_dir).resolve(), Path(out_dir).resolve()
    pages = collect_pages(run_dir)
    profile = load_summary(run_dir / "results.json").profile
    out.mkdir(parents=True, exist_ok=True)
    mathjax_dir = out / "_static" / "mathjax"
    install_mathjax(mathjax_dir)
    for page in progress(pages, desc="site pages", unit="page"):
        dest = out / "sources" / page.series / page.source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page.source, dest)
        if page.executed is not None:
            (out / "executed").mkdir(exist_ok=True)
            shutil.copyfile(page.executed, out / "executed" / f"{page.id}.ipynb")
        nb = nbformat.read(str(page.executed or page.source), as_version=4)
        exporter = html_exporter(mathjax_url(out, mathjax_dir))
        body, _ = exporter.from_notebook_node(nb, resources={"lionsnb_header": _nav(page),
                                                             "metadata": {"name": page.title}})
        atomic_write_text(out / f"{page.id}.html", body)
    index = atomic_write_text(out / "index.html", render_index(pages, profile=profile,
                                                               mathjax=mathjax_url(out, mathjax_dir)))
    return index


def page_summary(site: str | os.PathLike[str]) -> dict[str, Any]:
    """What a built site holds: its pages and explorers (used by the tests and the CLI's last line)."""
    site = Path(site)
    pages = sorted(p.name for p in site.glob("*.html") if p.name != "index.html")
    explorers = {p: len(re.findall(r"class=[\"']lionsnb-explorer[\"']", (site / p).read_text(encoding="utf-8")))
                 for p in pages}
    return {"pages": pages, "explorers": explorers}
