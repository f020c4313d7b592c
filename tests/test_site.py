"""The static course site, built from a run without a browser (the browser tier checks it in chromium)."""
from __future__ import annotations

import re
from pathlib import Path

from lionsnb.registry import load_registry
from lionsnb.runner import run_notebooks
from lionsnb.site import build_site, page_summary, title_cell_parts

FIXTURES = Path(__file__).parent / "fixtures"


def test_title_cell_parts():
    cell = ("# A title\n\n**Objectives.** After this notebook you can\n\n1. do x;\n2. do y.\n\n"
            "**Time.** About 30 minutes.\n\n**Prerequisites.** Notebook 1.\n\n**Hardware.** A laptop CPU.")
    title, objectives, facts = title_cell_parts(cell)
    assert title == "A title" and "1. do x;" in objectives and "Time" not in objectives
    assert facts == {"Time": "About 30 minutes.", "Prerequisites": "Notebook 1.", "Hardware": "A laptop CPU."}


def test_site_from_a_run(tmp_path):
    run = tmp_path / "run"
    summary = run_notebooks(["ok"], profile="smoke", out_dir=run, registry=load_registry(FIXTURES / "index.yaml"),
                            progress=False)
    assert summary.ok
    index = build_site(run, tmp_path / "site")
    text = index.read_text()
    assert 'href="ok.html"' in text and "sources/fixtures/ok.ipynb" in text and "cdnjs" not in text
    page = (tmp_path / "site" / "ok.html").read_text()
    assert "answer = 42" in page and 'href="index.html"' in page and "_static/mathjax/MathJax.js" in page
    assert not re.search(r"(src|href)=[\"']https?://", page), "the page loads something from the network"
    assert (tmp_path / "site" / "sources" / "fixtures" / "ok.ipynb").is_file()
    assert (tmp_path / "site" / "executed" / "ok.ipynb").is_file()
    assert page_summary(tmp_path / "site") == {"pages": ["ok.html"], "explorers": {"ok.html": 0}}
