"""JupyterLab in a real browser: one notebook per series runs top to bottom in the smoke profile, every Explore
control moves the displayed image (ipywidgets, through the kernel), and no cell reports an error."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import LATENCIES, OUT, ROOT, RUN_DIR, WATCH_JS

NO_PENDING_CELL = """() => { const ps = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  return ps.length > 0 && ps.every(p => /\\[\\d+\\]/.test(p.textContent)); }"""


def one_per_series() -> list[tuple[str, str]]:
    """``(id, notebook path)``: per series, the notebook with an explorer that ran fastest in the smoke run."""
    from lionsnb import structure
    from lionsnb.registry import load_registry

    try:
        results = {r["id"]: r for r in json.loads((RUN_DIR / "results.json").read_text())["results"]}
    except (OSError, ValueError, KeyError):
        return []
    registry = load_registry()
    best: dict[str, tuple[float, str, str]] = {}
    for entry in registry:
        r = results.get(entry.id)
        if r is None or r["status"] != "ok" or not structure.read(entry.path).explore_cells():
            continue
        rel = Path(entry.path).resolve().relative_to(ROOT)
        series = rel.parts[1]
        if series not in best or r["seconds"] < best[series][0]:
            best[series] = (r["seconds"], entry.id, rel.as_posix())
    return [(nb_id, path) for _, nb_id, path in sorted(best.values(), key=lambda t: t[2])]


NOTEBOOKS = one_per_series()


@pytest.mark.parametrize("nb_id,path", NOTEBOOKS or [("(no smoke run)", "")], ids=[n for n, _ in NOTEBOOKS] or None)
def test_notebook_runs_and_its_widgets_move(browser, lab_url, smoke_run, nb_id, path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab_url}/lab/tree/{path}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").first.click()
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    deadline = time.time() + 600
    try:
        while not page.evaluate(NO_PENDING_CELL):
            if accept.count():  # "Select Kernel" (a fresh JupyterLab asks once): the notebook's own, python3
                accept.first.click()
            assert time.time() < deadline, f"{nb_id}: the cells did not finish within 10 minutes"
            page.wait_for_timeout(1000)
    finally:
        page.screenshot(path=str(OUT / f"lab-{nb_id}-after-run.png"))
    errors = page.evaluate("""[...document.querySelectorAll('.jp-OutputArea-output')]
        .filter(o => o.querySelector('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
                     && /Traceback|Error/.test(o.textContent)).map(o => o.textContent.slice(0, 300))""")
    assert not errors, f"{nb_id}: cells reported errors: {errors[:2]}"
    assert page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() == 1, "kernel not idle"
    boxes = page.locator(".widget-vbox:has(img.widget-image)")
    assert boxes.count() >= 1, f"{nb_id}: no explorer controls appeared"
    for i in range(boxes.count()):
        box = boxes.nth(i)
        img = box.locator("img.widget-image").first
        box.scroll_into_view_if_needed()
        handles = box.locator(".noUi-handle")
        selects = box.locator("select")
        for j in range(handles.count()):
            before = img.get_attribute("src")
            page.evaluate(WATCH_JS, img.element_handle())
            handles.nth(j).focus()
            page.keyboard.press("ArrowRight")
            ms = page.evaluate("window.__lx")
            if ms < 0:  # at the end of its range: the other way
                page.evaluate(WATCH_JS, img.element_handle())
                page.keyboard.press("ArrowLeft")
                ms = page.evaluate("window.__lx")
            assert img.get_attribute("src") != before, f"{nb_id}: slider {j} of explorer {i} did not change the image"
            LATENCIES["lab"][f"{nb_id}/explorer{i}/slider{j}"] = round(ms, 2)
        for j in range(selects.count()):
            options = selects.nth(j).evaluate("e => [...e.options].map(o => o.value)")
            if len(options) < 2:
                continue
            before = img.get_attribute("src")
            page.evaluate(WATCH_JS, img.element_handle())
            selects.nth(j).select_option(next(v for v in options if v != selects.nth(j).input_value()))
            ms = page.evaluate("window.__lx")
            assert img.get_attribute("src") != before, f"{nb_id}: dropdown {j} of explorer {i} did not change"
            LATENCIES["lab"][f"{nb_id}/explorer{i}/dropdown{j}"] = round(ms, 2)
    boxes.first.scroll_into_view_if_needed()
    page.screenshot(path=str(OUT / f"lab-{nb_id}.png"))
    page.close()
