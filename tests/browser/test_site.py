"""The static site in a real browser: every page opens from disk, loads nothing from the network, renders its math,
and every explorer control swaps the image without a kernel."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import LATENCIES, OUT, RUN_DIR, WATCH_JS

#: what a page may request: the file system, inline data, and the blank frame MathJax measures its fonts in
LOCAL = ("file:", "data:", "blob:", "about:blank")


def _ids() -> list[str]:
    try:
        return [r["id"] for r in json.loads((RUN_DIR / "results.json").read_text())["results"]]
    except (OSError, ValueError, KeyError):
        return ["(no smoke run)"]


def test_index_links_every_page(browser, site):
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((site / "index.html").as_uri())
    hrefs = page.eval_on_selector_all(".card h3 a", "els => els.map(e => e.getAttribute('href'))")
    assert sorted(hrefs) == sorted(f"{i}.html" for i in _ids())
    assert page.locator("h2").count() >= 1  # grouped by series
    assert not [u for u in requests if not u.startswith(LOCAL)], "the index loaded from the network"
    page.screenshot(path=str(OUT / "site-index.png"))
    page.close()


def _has_math(nb_id: str) -> bool:
    """Whether the notebook's markdown holds TeX ($...$, $$...$$, \\(...\\), \\[...\\] or an environment)."""
    from lionsnb.registry import load_registry

    entry = next(e for e in load_registry() if e.id == nb_id)
    cells = json.loads(Path(entry.path).read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.search(r"\$\$|\$[^$\s][^$]*\$|\\\(|\\\[|\\begin\{", text) is not None


@pytest.mark.parametrize("nb_id", _ids())
def test_page_works_offline_and_its_explorers_move(browser, site, nb_id):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((site / f"{nb_id}.html").as_uri())
    page.wait_for_load_state("load")
    if _has_math(nb_id):
        page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0",
                               timeout=30000)
        assert page.locator(".MathJax, .MathJax_Display, .MathJax_SVG").count() > 0, "math did not render"
    assert page.locator(".lionsnb-nav a[href^='sources/']").count() == 1, "no link back to the source notebook"
    explorers = page.locator(".lionsnb-explorer")
    for i in range(explorers.count()):
        ex = explorers.nth(i)
        img = ex.locator("img.lionsnb-explorer-frame")
        controls = ex.locator("input[type=range], select")
        for j in range(controls.count()):
            control = controls.nth(j)
            before = img.get_attribute("src")
            page.evaluate(WATCH_JS, img.element_handle())
            if control.evaluate("e => e.tagName") == "SELECT":
                options = control.evaluate("e => [...e.options].map(o => o.value)")
                if len(options) < 2:
                    continue
                old = options.index(control.input_value())  # by index: Playwright matches a value "1" to a label "1"
                control.select_option(index=next(k for k in range(len(options)) if k != old))
            else:
                if control.get_attribute("max") == "0":
                    continue
                control.focus()
                at_max = control.input_value() == control.get_attribute("max")
                page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
            ms = page.evaluate("window.__lx")
            assert img.get_attribute("src") != before, f"{nb_id}: explorer {i}, control {j} did not change the image"
            assert not ex.locator(".lionsnb-explorer-note").inner_text(), "a control offered a missing frame"
            LATENCIES["site"][f"{nb_id}/explorer{i}/control{j}"] = round(ms, 2)
            if control.evaluate("e => e.tagName") == "SELECT":
                control.select_option(index=old)
            else:
                page.keyboard.press("ArrowRight" if at_max else "ArrowLeft")  # back to the defaults
    if explorers.count():
        explorers.first.scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / f"site-{nb_id}.png"))
    network = [u for u in requests if not u.startswith(LOCAL)]
    assert not network, f"{nb_id}: the page loaded from the network: {network[:3]}"
    page.close()
