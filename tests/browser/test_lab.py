"""JupyterLab in a real browser: one notebook per series runs top to bottom in the smoke profile, every Explore
control moves the displayed image (ipywidgets, through the kernel), and no cell reports an error."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import LATENCIES, OUT, ROOT, RUN_DIR, WATCH_JS

#: the notebook as JupyterLab's own model holds it (the DOM prompts can lag behind): code cells, how many have run, how
#: many are queued or running, and the error outputs (the kernel's idle/busy status is not used: ipykernel reports
#: "idle" after each comm message, also while a long cell runs). Needs the server flag LabApp.expose_app_in_browser.
MODEL_STATE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) { return null; }
  const cells = panel.content.model.cells;
  const out = {code: 0, executed: 0, pending: 0, errors: []};
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') { continue; }
    out.code += 1;
    if (cell.executionCount !== null) { out.executed += 1; }
    if (cell.executionState === 'running') { out.pending += 1; }
    for (let j = 0; j < cell.outputs.length; j++) {
      const o = cell.outputs.get(j).toJSON();
      if (o.output_type === 'error') { out.errors.push(`cell ${i}: ${o.ename}: ${String(o.evalue).slice(0, 300)}`); }
    }
  }
  return out; }"""


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
    # a fresh workspace per notebook: no tab (and no kernel) of an earlier test is restored
    page.goto(f"{lab_url}/lab/workspaces/{nb_id}/tree/{path}?reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").first.click()
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    deadline = time.time() + 600
    stopped_polls = 0  # polls with no cell queued or running before all have run: "Run All" has stopped
    retries = 0
    try:
        while True:
            if accept.count():  # "Select Kernel" (a fresh JupyterLab asks once): the notebook's own, python3
                accept.first.click()
            state = page.evaluate(MODEL_STATE)
            assert state is not None, f"{nb_id}: JupyterLab shows no notebook"
            if state["pending"] == 0 and state["executed"] == state["code"]:
                break
            stopped_polls = stopped_polls + 1 if state["pending"] == 0 else 0
            assert not (state["errors"] and stopped_polls), f"{nb_id}: cells reported errors: {state['errors'][:2]}"
            if not state["executed"] and stopped_polls >= 15:  # the kernel was not ready for the first "Run All"
                retries += 1
                assert retries <= 3, f"{nb_id}: Run All Cells did not start (tried {retries} times)"
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                stopped_polls = 0
            assert stopped_polls < 10 or not state["executed"], (
                f"{nb_id}: Run All Cells stopped after {state['executed']} of {state['code']} code cells")
            assert time.time() < deadline, f"{nb_id}: the cells did not finish within 10 minutes"
            page.wait_for_timeout(1000)
    finally:
        page.screenshot(path=str(OUT / f"lab-{nb_id}-after-run.png"))
    assert not state["errors"], f"{nb_id}: cells reported errors: {state['errors'][:2]}"
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
    page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")  # free the kernel's memory
    page.close()
