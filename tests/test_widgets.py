"""The widget pattern: small multiples first; controls only over precomputed values; both paths."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from lionsnb import widgets  # noqa: E402
from lionsnb.plotting import unlabelled_axes  # noqa: E402

SWEEP = {(lr, mode): lr * (2 if mode == "double" else 1) for lr in (0.1, 0.5, 1.0) for mode in ("single", "double")}


def make_draw(calls):
    def draw(fig, lr, mode):
        calls.append((lr, mode))
        ax = fig.subplots()
        ax.bar([0], [SWEEP[(lr, mode)]])  # a lookup, no computation
        ax.set_xlabel("run")
        ax.set_ylabel("value")

    return draw


def test_headless_shows_small_multiples_only(monkeypatch, capsys):
    monkeypatch.setenv("LIONSNB_HEADLESS", "1")
    calls = []
    ex = widgets.explore(make_draw(calls), {"lr": [0.1, 0.5, 1.0], "mode": ["single", "double"]}, lr=0.5)
    # the static figure: one panel per value of the first control, the second at its default
    assert calls == [(0.1, "single"), (0.5, "single"), (1.0, "single")]
    assert ex.controls == {} and ex.image is None  # no widgets headless
    assert "static figure" in capsys.readouterr().out  # outside a kernel: no HTML explorer either
    # the explorer still works without widgets: tests and scripts can draw any computed point
    png = ex.update(lr=1.0, mode="double")
    assert calls[-1] == (1.0, "double") and png.startswith(b"\x89PNG")
    assert unlabelled_axes(ex.figure(lr=0.1)) == []


def test_is_headless_detection(monkeypatch):
    monkeypatch.setenv("LIONSNB_HEADLESS", "1")
    assert widgets.is_headless()
    monkeypatch.delenv("LIONSNB_HEADLESS")
    assert widgets.is_headless()  # plain pytest process: no Jupyter kernel


def test_interactive_path_builds_controls_and_redraws(monkeypatch):
    import ipywidgets

    calls = []
    ex = widgets.explore(make_draw(calls), {"lr": [0.1, 0.5, 1.0], "mode": ["single", "double"]},
                         interactive=True, lr=0.1)
    assert isinstance(ex.controls["lr"], ipywidgets.SelectionSlider)
    assert isinstance(ex.controls["mode"], ipywidgets.Dropdown)
    assert [v for _, v in ex.controls["lr"].options] == [0.1, 0.5, 1.0]
    # small multiples + every frame of the 3 x 2 grid, each rendered once, up front
    assert calls[:3] == [(0.1, "single"), (0.5, "single"), (1.0, "single")] and sorted(calls) == sorted(SWEEP)
    n = len(calls)
    ex.controls["lr"].value = 0.5  # what moving the slider does
    assert ex.image.value == ex.frames[(0.5, "single")]
    ex.controls["mode"].value = "double"
    assert ex.image.value == ex.frames[(0.5, "double")] and ex.values == {"lr": 0.5, "mode": "double"}
    assert len(calls) == n, "moving a control must only look a frame up, never draw"
    assert ex.last_ms is not None and ex.last_ms > 0
    ex.update(lr=1.0)  # programmatic updates move the controls too
    assert ex.controls["lr"].value == 1.0 and ex.image.value == ex.frames[(1.0, "double")]


def test_large_grids_render_frames_on_first_visit(monkeypatch):
    monkeypatch.setattr(widgets.Explorer, "PRERENDER_LIMIT", 2)
    calls = []
    ex = widgets.explore(make_draw(calls), {"lr": [0.1, 0.5, 1.0], "mode": ["single", "double"]},
                         interactive=True, lr=0.1)
    assert len(ex.frames) == 3  # only the small multiples' frames
    ex.controls["mode"].value = "double"
    ex.controls["lr"].value = 0.5
    ex.controls["lr"].value = 0.1
    ex.controls["lr"].value = 0.5
    assert len(ex.frames) == 5 and calls.count((0.5, "double")) == 1


def draw_lr(fig, lr):
    ax = fig.subplots()
    ax.plot([0, 1], [0, lr])
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def test_only_precomputed_values_are_accepted():
    ex = widgets.Explorer(draw_lr, {"lr": [0.1, 0.5]}, {})
    with pytest.raises(ValueError, match="lr=0.3 was not precomputed; choose one of 0.1, 0.5"):
        ex.update(lr=0.3)
    with pytest.raises(ValueError, match="unknown control 'rho'"):
        ex.update(rho=0.1)
    with pytest.raises(ValueError, match="not precomputed"):
        widgets.Explorer(draw_lr, {"lr": [0.1, 0.5]}, {"lr": 2.0})
    with pytest.raises(ValueError, match="no precomputed values"):
        widgets.Explorer(draw_lr, {"lr": []}, {})
    assert ex.update(lr=0.1 + 1e-15) is not None  # float round-off still matches the grid


def test_unlabelled_axes_are_reported():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    assert unlabelled_axes(fig) == ["axes 0 (untitled)"]
    plt.close(fig)
