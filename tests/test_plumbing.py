"""The shared mechanisms every notebook inherits: cached calls keyed on their arguments, tables, source display,
headless progress, small multiples and the static explorer, the notebook structure reader, file modes and
offline math in the HTML outputs."""
from __future__ import annotations

import base64
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from lionsnb import display, progress, structure, widgets  # noqa: E402
from lionsnb.cache import ArtifactCache, cache_key  # noqa: E402
from lionsnb.files import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- ctx.cached(name, fn, **kwargs)

CALLS: list[dict] = []


def _train(lr: float, seed: int = 0) -> dict:
    CALLS.append({"lr": lr, "seed": seed})
    return {"value": torch.tensor([lr * 10 + seed])}


def test_cached_call_keys_on_exactly_the_arguments(tmp_path):
    cache = ArtifactCache(tmp_path, method="demo", profile="smoke")
    CALLS.clear()
    a = cache.call("run", _train, lr=0.1, seed=0)
    b = cache.call("run", _train, lr=0.1, seed=0)
    c = cache.call("run", _train, lr=0.1, seed=1)  # another seed is another result, never the old one
    assert CALLS == [{"lr": 0.1, "seed": 0}, {"lr": 0.1, "seed": 1}]
    assert torch.equal(a["value"], b["value"]) and not torch.equal(a["value"], c["value"])
    assert (cache.hits, cache.misses) == (1, 2)


def test_cached_call_refuses_lambdas_closures_and_bound_methods(tmp_path):
    cache = ArtifactCache(tmp_path, method="demo", profile="smoke")
    seed = 3
    with pytest.raises(TypeError, match="module-level function"):
        cache.call("run", lambda lr: lr * seed, lr=0.1)

    def inner(lr):
        return lr * seed

    with pytest.raises(TypeError, match="closure"):
        cache.call("run", inner, lr=0.1)
    with pytest.raises(TypeError, match="bound method"):
        cache.call("run", [1, 2].count, value=1)


def test_cached_call_keys_partials_modules_dataclasses_and_settings(tmp_path):
    cache = ArtifactCache(tmp_path, method="demo", profile="smoke")
    CALLS.clear()
    cache.call("run", functools.partial(_train, seed=1), lr=0.5)
    cache.call("run", functools.partial(_train, seed=2), lr=0.5)
    assert len(CALLS) == 2, "a partial's arguments are part of the key"
    net = torch.nn.Linear(2, 2)
    key_before = cache_key(m=net)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert cache_key(m=net) != key_before, "a module is keyed by its weights"

    @dataclass
    class Data:
        x: torch.Tensor
        name: str

    assert cache_key(d=Data(torch.ones(2), "a")) == cache_key(d=Data(torch.ones(2), "a"))
    assert cache_key(d=Data(torch.ones(2), "a")) != cache_key(d=Data(torch.zeros(2), "a"))
    assert cache_key(dev=torch.device("cpu")) == cache_key(dev="cpu")
    from lionsnb.params import Sizes

    assert cache_key(s=Sizes("m", "smoke", {"n": 1})) != cache_key(s=Sizes("m", "smoke", {"n": 2}))


def test_context_cached_is_the_keyed_call(tmp_path):
    import lionsnb
    from lionsnb.params import Knob, MethodSpec

    spec = MethodSpec("demo", "Demo", profiles={p: {} for p in ("smoke", "teach", "full")},
                      knobs={"rho": Knob(0.05, "radius", float, low=0.0)})
    ctx = lionsnb.setup("smoke", method=spec, device="cpu", cache_dir=str(tmp_path))
    CALLS.clear()
    ctx.cached("run", _train, lr=0.2)
    ctx.cached("run", _train, lr=0.2)
    assert CALLS == [{"lr": 0.2, "seed": 0}]


# ----------------------------------------------------------------------------- display

def test_table_from_rows_mapping_and_nested_mapping():
    t = display.table([{"lr": 0.1, "acc": 0.91234567}, {"lr": 1.0, "acc": None}], title="runs")
    text = repr(t)
    assert text.splitlines()[0] == "runs" and "0.9123" in text and "-" in text.splitlines()[-1]
    html = t._repr_html_()
    assert "<caption" in html and html.count("<tr>") == 3 and "text-align:right" in html
    two = display.table({"a": 1, "b": "x"})
    assert two.columns == ["quantity", "value"] and two.column("value") == [1, "x"]
    nested = display.table({"sam": {"acc": 0.9}, "sgd": {"acc": 0.8}}, index="method")
    assert nested.columns == ["method", "acc"] and nested.column("method") == ["sam", "sgd"]
    with pytest.raises(KeyError, match="no row has"):
        display.table([{"a": 1}], columns=["b"])
    assert display.format_value(1e-9) == "1.000e-09" and display.format_value(123456789.0) == "1.235e+08"


def test_show_source_shows_the_package_code_with_file_and_lines(capsys):
    display.show_source(display.table)
    out = capsys.readouterr().out
    assert "def table(" in out and "lionsnb/display.py, lines" in out
    html = display.Source(display.table)._repr_html_()
    assert "lionsnb/display.py" in html and "<pre" in html
    with pytest.raises(TypeError, match="function, class or method"):
        display.Source(3)


# ----------------------------------------------------------------------------- progress

def test_headless_progress_prints_one_summary_line(monkeypatch, capsys):
    monkeypatch.setenv("LIONSNB_HEADLESS", "1")
    total = sum(progress.progress(range(5), desc="training", unit="step"))
    assert total == 10
    assert re.fullmatch(r"training: 5 steps in \d+\.\d s\n", capsys.readouterr().out)
    with progress.progress(total=4, desc="sweep") as bar:
        bar.update(3)
        bar.set_postfix(loss=0.5)
    assert re.fullmatch(r"sweep: 3 of 4 its in \d+\.\d s \(loss 0.5\)\n", capsys.readouterr().out)
    for _ in progress.progress(range(3), desc="quiet", disable=True):
        pass
    assert capsys.readouterr().out == ""


def test_live_progress_is_tqdm_that_disappears(monkeypatch):
    monkeypatch.delenv("LIONSNB_HEADLESS", raising=False)
    bar = progress.progress(range(2), desc="x")
    assert type(bar).__module__.startswith("tqdm") and bar.leave is False
    list(bar)


# ----------------------------------------------------------------------------- explorer

def _draw(fig, *, k, data, kind="a"):
    ax = fig.subplots()
    ax.plot(data[k])
    ax.set_xlabel("i")
    ax.set_ylabel(f"value at k = {k}")


def test_small_multiples_and_fixed_arguments(monkeypatch):
    data = {k: [k, 2 * k, k * k] for k in range(8)}
    ex = widgets.Explorer(functools.partial(_draw, data=data), {"k": list(range(8))}, {"k": 5})
    name, values = ex.panel_values()
    assert name == "k" and len(values) == 4 and 5 in values and values == sorted(values)
    fig = ex.small_multiples()
    assert [a.get_title() for a in fig.axes if a.get_title()] == [f"k = {v}" for v in values]
    monkeypatch.setenv("LIONSNB_HEADLESS", "1")
    monkeypatch.setenv("LIONSNB_STATIC_EXPLORER", "0")
    explorer = widgets.explore(_draw, {"k": list(range(8))}, k=2, data=data, panels=[0, 2, 7])
    assert explorer.panel_values() == ("k", [0, 2, 7])
    with pytest.raises(ValueError, match="not precomputed"):
        widgets.explore(_draw, {"k": [0, 1]}, k=3, data=data)


def test_static_explorer_embeds_every_frame_and_a_script(monkeypatch):
    data = {k: [k, -k] for k in range(3)}
    ex = widgets.Explorer(functools.partial(_draw, data=data), {"k": [0, 1, 2], "kind": ["a", "b"]}, {"k": 1})
    monkeypatch.delenv("LIONSNB_EXPLORER_FRAMES", raising=False)
    html = ex.static_html()
    payload = json.loads(re.search(r"class='lionsnb-explorer-data'>(.*?)</script>", html).group(1))
    assert len(payload["frames"]) == 6 and payload["start"] == "1,0"
    assert [a["labels"] for a in payload["axes"]] == [["0", "1", "2"], ["a", "b"]]
    png = base64.b64decode(payload["frames"]["2,1"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "type='range'" in html and "<select" in html and "http" not in html.split("<script>")[1]
    monkeypatch.setenv("LIONSNB_EXPLORER_FRAMES", "few")
    few = json.loads(re.search(r"class='lionsnb-explorer-data'>(.*?)</script>", ex.static_html()).group(1))
    assert 1 < len(few["frames"]) <= 6


# ----------------------------------------------------------------------------- structure

def test_structure_reads_sections_exercises_and_widgets():
    st = structure.read(ROOT / "notebooks" / "sharpness" / "00_start_here.ipynb")
    names = [s[0].split(":")[0].lower() for s in st.sections]
    assert names[0] == "setup" and "exercises" in names and names[-1] == "record"
    assert [e.number for e in st.exercises] == [1, 2, 3]
    assert st.exercises[0].stubs == ["my_top_eigenvalue"] and st.exercises[0].checks == [
        "check_exercise_top_eigenvalue"]
    assert st.exercises[2].think
    assert all(st.section_of(i).lower().startswith("explore") for i in st.explore_cells())
    assert any("hessian_vector_product" in expr for _, expr in st.shown_sources())


def test_stub_rules():
    import ast

    good = ast.parse('def f(x):\n    """Doc."""\n    y = ...\n    return ...\n').body[0]
    bare = ast.parse('def f(x):\n    """Doc."""\n    raise NotImplementedError\n').body[0]
    nodoc = ast.parse("def f(x):\n    return ...\n").body[0]
    assert structure.is_stub(good)[0]
    assert not structure.is_stub(bare)[0] and not structure.is_stub(nodoc)[0]


# ----------------------------------------------------------------------------- outputs

def test_outputs_are_world_readable(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.html", "<p>x</p>")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_html_export_ships_mathjax(tmp_path):
    import nbformat

    from lionsnb.runner import export_html

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("$$x^2$$")])
    src = tmp_path / "a.ipynb"
    nbformat.write(nb, src)
    page = export_html(src, tmp_path / "out" / "a.html")
    text = page.read_text()
    assert "cdnjs" not in text and "_static/mathjax/MathJax.js?config=" in text
    assert (tmp_path / "out" / "_static" / "mathjax" / "MathJax.js").is_file()
    assert (tmp_path / "out" / "_static" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()


def test_report_shows_each_metric_with_its_range():
    from lionsnb.report import _metrics_text, format_range
    from lionsnb.runner import NotebookResult

    assert format_range([0, 1]) == "[0, 1]" and format_range([1.5, None]) == ">= 1.5"
    assert format_range([None, 0.01]) == "<= 0.01" and format_range([8, 8]) == "= 8"
    r = NotebookResult("a", "a.ipynb", "A", "ok", metrics={"gap": -0.079}, report_metrics=["gap"],
                       ranges={"gap": [-1, 1]})
    assert _metrics_text(r) == "gap=-0.079 (range [-1, 1])"


def test_answers_command_prints_model_answers(capsys):
    from lionsnb.cli import main

    assert main(["answers", "start_here"]) == 0
    out = capsys.readouterr().out
    assert "Exercise 3." in out and "mini-batch" in out
    assert main(["answers", "nope"]) == 2


def test_show_source_of_a_decorated_function():
    import torch

    @torch.no_grad()
    def double(x):
        return 2 * x

    src = display.Source(double)
    assert "return 2 * x" in src.code and "test_plumbing.py" in src.where


def test_cached_calls_are_shared_within_a_series_only(tmp_path):
    CALLS.clear()
    first = ArtifactCache(tmp_path, method="demo.nb01_a", profile="smoke")
    second = ArtifactCache(tmp_path, method="demo.nb02_b", profile="teach")
    other = ArtifactCache(tmp_path, method="other.nb01_a", profile="smoke")
    first.call("pretrain", _train, lr=0.3)
    second.call("pretrain", _train, lr=0.3)  # another notebook of the series: the same model, computed once
    assert len(CALLS) == 1 and (second.hits, second.misses) == (1, 0)
    other.call("pretrain", _train, lr=0.3)
    assert len(CALLS) == 2, "series do not share entries"


def test_knob_names_cannot_shadow_setup_arguments():
    from lionsnb.params import Knob, MethodSpec

    with pytest.raises(ValueError, match="taken by setup"):
        MethodSpec("demo", "Demo", profiles={p: {} for p in ("smoke", "teach", "full")},
                   knobs={"method": Knob("a", "which method", str)})
