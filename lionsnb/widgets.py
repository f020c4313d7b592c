"""One widget pattern for the whole suite: a static figure first, then controls over a precomputed sweep.

A notebook computes (or loads from the cache) a small grid of results, then calls::

    lionsnb.widgets.explore(draw, {"lr": [0.01, 0.1, 1.0], "rho": [0.0, 0.05]}, lr=0.1)

``draw(fig, **values)`` only *looks results up* for one point of the grid and draws
them into ``fig``.  :func:`explore` first shows the static figure at the default
values (a normal PNG output, so executed and exported notebooks carry the result),
then, in a live Jupyter frontend, sliders/dropdowns whose options are exactly the
grid values.  The frames of a small grid are rendered once, up front (each frame a
PNG, drawn from the sweep), so moving a control only swaps an image: a few
milliseconds, however slow matplotlib is.  Larger grids render each frame on first
visit and reuse it afterwards.
Headless runs (papermill through ``lionsnb run``, plain Python, no ipywidgets)
show only the static figure.
"""
from __future__ import annotations

import io
import itertools
import numbers
import os
import time
from typing import Any, Callable, Mapping, Sequence

DrawFn = Callable[..., None]


def show_html(text: str) -> None:
    """Display HTML in a notebook (headless runs keep it in their outputs); print its plain text elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            display(HTML(text))
            return
    except ImportError:
        pass
    import html
    import re

    print(re.sub(r"<[^>]+>", " ", html.unescape(text)))


def is_headless() -> bool:
    """True when no live widget frontend can be expected (runner, plain Python, no ipywidgets)."""
    if os.environ.get("LIONSNB_HEADLESS", "") not in ("", "0"):
        return True
    try:
        from IPython import get_ipython

        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or type(shell).__name__ != "ZMQInteractiveShell"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Explorer:
    """Controls over a precomputed grid; :meth:`update` validates a point and shows its frame."""

    #: grids up to this many points are rendered up front in live frontends
    PRERENDER_LIMIT = 64

    def __init__(self, draw: DrawFn, grid: Mapping[str, Sequence[Any]], defaults: Mapping[str, Any],
                 figsize: tuple[float, float] | None = None):
        if not grid:
            raise ValueError("explore needs at least one control: grid = {name: [values...]}")
        self.draw = draw
        self.grid = {name: list(values) for name, values in grid.items()}
        for name, values in self.grid.items():
            if not values:
                raise ValueError(f"control {name!r} has no precomputed values")
        unknown = set(defaults) - set(self.grid)
        if unknown:
            raise ValueError(f"default for unknown control(s) {sorted(unknown)}; controls are {sorted(self.grid)}")
        self.values = {name: values[0] for name, values in self.grid.items()}
        self.values.update({k: self._checked(k, v) for k, v in defaults.items()})
        self.figsize = figsize
        self.frames: dict[tuple, bytes] = {}
        self.controls: dict[str, Any] = {}
        self.image = None
        self.last_ms: float | None = None

    def _checked(self, name: str, value: Any) -> Any:
        """Return the grid value equal to ``value`` or raise a ValueError listing the valid ones."""
        if name not in self.grid:
            raise ValueError(f"unknown control {name!r}; controls are {', '.join(self.grid)}")
        for candidate in self.grid[name]:
            if candidate == value or (isinstance(value, numbers.Real) and isinstance(candidate, numbers.Real)
                                      and not isinstance(value, bool)
                                      and abs(float(candidate) - float(value)) <= 1e-12 * max(1.0, abs(value))):
                return candidate
        raise ValueError(
            f"{name}={value!r} was not precomputed; choose one of {', '.join(_format(v) for v in self.grid[name])} "
            f"(or add it to the sweep and recompute)."
        )

    def _point(self, values: Mapping[str, Any]) -> dict[str, Any]:
        point = dict(self.values)
        point.update({k: self._checked(k, v) for k, v in values.items()})
        return point

    def figure(self, **values: Any):
        """Draw the grid point ``values`` (others as they are) into a new figure and return it."""
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=self.figsize, constrained_layout=True)
        self.draw(fig, **self._point(values))
        return fig

    def render(self, **values: Any) -> bytes:
        """The PNG frame of a grid point, drawn on first request and reused afterwards."""
        import matplotlib.pyplot as plt

        point = self._point(values)
        key = tuple(point[name] for name in self.grid)
        if key not in self.frames:
            fig = self.figure(**point)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plt.close(fig)
            self.frames[key] = buf.getvalue()
        return self.frames[key]

    def prerender(self, progress: bool = True) -> int:
        """Render every frame of the grid now; returns the number of frames."""
        from tqdm.auto import tqdm

        points = list(itertools.product(*self.grid.values()))
        for combo in tqdm(points, desc="rendering frames", disable=not progress, leave=False):
            self.render(**dict(zip(self.grid, combo)))
        return len(points)

    def update(self, **values: Any) -> bytes:
        """Move to a grid point: validate it, look its frame up, show it under the controls (live)."""
        start = time.perf_counter()
        self.values = self._point(values)
        png = self.render(**self.values)
        for name, widget in self.controls.items():
            if widget.value != self.values[name]:
                widget.value = self.values[name]
        if self.image is not None:
            self.image.value = png
        self.last_ms = 1e3 * (time.perf_counter() - start)
        return png

    def build_controls(self):
        """Create the widgets (one per grid axis) and the image they drive; returns the container."""
        import ipywidgets as w

        rows = []
        for name, values in self.grid.items():
            options = [(_format(v), v) for v in values]
            numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
            if numeric and len(values) > 1:
                control = w.SelectionSlider(options=options, value=self.values[name], description=name,
                                            continuous_update=True, style={"description_width": "initial"},
                                            layout=w.Layout(width="420px"))
            else:
                control = w.Dropdown(options=options, value=self.values[name], description=name)
            control.observe(lambda change, n=name: self.update(**{n: change["new"]}), names="value")
            self.controls[name] = control
            rows.append(control)
        self.image = w.Image(value=self.render(), format="png", layout=w.Layout(max_width="100%"))
        return w.VBox([*rows, self.image])


def explore(draw: DrawFn, grid: Mapping[str, Sequence[Any]], *, interactive: bool | None = None,
            figsize: tuple[float, float] | None = None, **defaults: Any) -> Explorer:
    """Show the static figure at ``defaults``, then (live frontends only) controls over ``grid``.

    ``interactive=None`` decides by :func:`is_headless`; tests force either path.
    Returns the :class:`Explorer`, whose ``update(**values)`` also works without widgets.
    """
    import matplotlib.pyplot as plt

    explorer = Explorer(draw, grid, defaults, figsize=figsize)
    fig = explorer.figure()
    _display(fig)
    plt.close(fig)
    live = (not is_headless()) if interactive is None else interactive
    if live:
        n_points = 1
        for values in explorer.grid.values():
            n_points *= len(values)
        if n_points <= Explorer.PRERENDER_LIMIT:
            explorer.prerender()
        _display(explorer.build_controls())
    else:
        print(f"(static figure; in JupyterLab the controls {', '.join(explorer.grid)} appear here)")
    return explorer


def _display(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
    except ImportError:
        pass
