"""One widget pattern for the whole suite: a static figure first, then controls over a precomputed sweep.

A notebook computes (or loads from the cache) a small grid of results, then calls::

    lionsnb.widgets.explore(draw, {"lr": [0.01, 0.1, 1.0], "rho": [0.0, 0.05]}, lr=0.1)

``draw(fig, **values)`` only *looks results up* for one point of the grid and draws them into ``fig``.
:func:`explore` shows, in this order:

1. the **static figure**: small multiples over a few values of the first control (the others at their defaults),
   a normal PNG output, so an executed or exported notebook carries the comparison the controls are for;
2. in a live Jupyter frontend, sliders/dropdowns whose options are exactly the grid values, driving an image
   (the frames of a small grid are rendered up front, so moving a control only swaps an image);
3. in a headless run (the runner, CI), an HTML/JavaScript explorer instead: the same controls over the
   pre-rendered frames, embedded in the output, so that the executed notebook exported to HTML (the course site)
   works without a kernel and without network.
"""
from __future__ import annotations

import io
import itertools
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

DrawFn = Callable[..., None]


def is_headless() -> bool:
    """True when no live widget frontend can be expected (runner, plain Python, no ipywidgets)."""
    if os.environ.get("LIONSNB_HEADLESS", "") not in ("", "0"):
        return True
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or type(shell).__name__ != "ZMQInteractiveShell"


def _dpi() -> float:
    """The resolution frames are rendered at: ``savefig.dpi``, or ``figure.dpi`` where it says 'figure'."""
    import matplotlib

    dpi = matplotlib.rcParams["savefig.dpi"]
    return float(matplotlib.rcParams["figure.dpi"] if dpi == "figure" else dpi)


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
        self.panels: list[Any] = []
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
            fig.savefig(buf, format="png", dpi=_dpi())
            plt.close(fig)
            self.frames[key] = buf.getvalue()
        return self.frames[key]

    def points(self, few: bool = False) -> list[dict[str, Any]]:
        """The grid points whose frames the explorer offers.

        All of them up to :attr:`PRERENDER_LIMIT`; else the points that differ from the defaults in one control only
        (every control still moves). ``few=True`` (the smoke profile's static pages) keeps the small multiples'
        values of the first control and up to three values of each other control.
        """
        combos = [dict(zip(self.grid, combo)) for combo in itertools.product(*self.grid.values())]
        if len(combos) <= self.PRERENDER_LIMIT and not few:
            return combos
        cross = [dict(self.values)]
        first, panel = self.panel_values()
        for name, values in self.grid.items():
            if few:
                values = panel if name == first else [values[i] for i in
                                                      sorted({0, len(values) // 2, len(values) - 1})]
            cross += [{**self.values, name: v} for v in values if v != self.values[name]]
        return cross

    def prerender(self, progress: bool = True) -> int:
        """Render the frames of :meth:`points` now; returns their number."""
        from lionsnb.progress import progress as bar

        points = self.points()
        for point in bar(points, desc="rendering explorer frames", unit="frame", disable=not progress):
            self.render(**point)
        return len(points)

    def panel_values(self, max_panels: int = 4) -> tuple[str | None, list[Any]]:
        """The control and values the small multiples show: the explorer's ``panels`` when given, else a few values
        of the first control that has more than one, evenly spread over its grid and including its default."""
        name = next((n for n, v in self.grid.items() if len(v) > 1), None)
        if name is None:
            return None, []
        if self.panels:
            return name, [self._checked(name, v) for v in self.panels]
        values = self.grid[name]
        if len(values) <= max_panels:
            return name, list(values)
        idx = sorted({round(i * (len(values) - 1) / (max_panels - 1)) for i in range(max_panels)})
        default = values.index(self.values[name])
        if default not in idx:
            idx[min(range(len(idx)), key=lambda j: abs(idx[j] - default))] = default
        return name, [values[i] for i in sorted(set(idx))]

    def small_multiples(self, max_panels: int = 4):
        """One figure of frames side by side: a few values of the first control, the others at their defaults."""
        import matplotlib.image as mpimg
        import matplotlib.pyplot as plt

        name, values = self.panel_values(max_panels)
        if name is None:
            return self.figure()
        frames = [mpimg.imread(io.BytesIO(self.render(**{name: v})), format="png") for v in values]
        h, w = frames[0].shape[:2]
        wide = w / h >= 1.8
        if wide and len(frames) > 3 and not self.panels:
            name, values = self.panel_values(3)
            frames = [mpimg.imread(io.BytesIO(self.render(**{name: v})), format="png") for v in values]
        ncols = 1 if wide else min(2, len(frames))
        nrows = -(-len(frames) // ncols)
        dpi = _dpi()
        scale = min(1.0, 13.0 / (ncols * w / dpi))
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(ncols * w / dpi * scale,
                                                                          nrows * (h / dpi * scale + 0.35)))
        others = ", ".join(f"{n} = {_format(v)}" for n, v in self.values.items() if n != name)
        for ax, value, frame in zip(axes.flat, values, frames):
            ax.imshow(frame)
            ax.set_title(f"{name} = {_format(value)}", fontsize=10, fontweight="bold")
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"{name} over {', '.join(_format(v) for v in values)}" + (f" (at {others})" if others else ""),
                     fontsize=10)
        fig.tight_layout()
        return fig

    def static_html(self) -> str:
        """A self-contained HTML/JavaScript explorer over the pre-rendered frames: controls swap the image in the
        browser, without a kernel or network (the executed notebook exported to HTML carries it)."""
        import base64
        import html as _html
        import json
        import uuid

        points = self.points(few=os.environ.get("LIONSNB_EXPLORER_FRAMES", "all") == "few")
        # each control offers the values that have frames (all of them, except in the smoke profile's pages)
        grid = {n: [v for v in vals if any(p[n] == v for p in points)] for n, vals in self.grid.items()}
        axes = [{"name": n, "labels": [_format(v) for v in vals]} for n, vals in grid.items()]
        frames = {}
        for point in points:
            key = ",".join(str(grid[n].index(point[n])) for n in grid)
            frames[key] = base64.b64encode(self.render(**point)).decode("ascii")
        start = ",".join(str(grid[n].index(self.values[n])) for n in grid)
        uid = f"lx-{uuid.uuid4().hex[:10]}"
        controls = []
        for a, (n, vals) in enumerate(grid.items()):
            i = vals.index(self.values[n])
            numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals)
            label = _html.escape(n)
            if numeric and len(vals) > 1:
                controls.append(
                    f"<label style='margin-right:1.5em'>{label} <input type='range' data-axis='{a}' min='0' "
                    f"max='{len(vals) - 1}' step='1' value='{i}' aria-label='{label}'> "
                    f"<output data-axis='{a}'>{_html.escape(_format(vals[i]))}</output></label>")
            else:
                options = "".join(f"<option value='{j}'{' selected' if j == i else ''}>{_html.escape(_format(v))}"
                                  f"</option>" for j, v in enumerate(vals))
                controls.append(f"<label style='margin-right:1.5em'>{label} <select data-axis='{a}' "
                                f"aria-label='{label}'>{options}</select></label>")
        data = json.dumps({"axes": axes, "frames": frames, "start": start})
        return (
            f"<div class='lionsnb-explorer' id='{uid}' data-frames='{len(frames)}'>"
            f"<div class='lionsnb-explorer-controls' style='margin:0.3em 0'>{''.join(controls)}</div>"
            f"<img class='lionsnb-explorer-frame' alt='explorer frame' style='max-width:100%' "
            f"src='data:image/png;base64,{frames[start]}'>"
            f"<div class='lionsnb-explorer-note' style='font-size:85%;color:#a00'></div>"
            f"<script type='application/json' class='lionsnb-explorer-data'>{data}</script>"
            f"<script>{_EXPLORER_JS.replace('__ID__', uid)}</script></div>")

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
            figsize: tuple[float, float] | None = None, panels: Sequence[Any] | None = None,
            **kwargs: Any) -> Explorer:
    """Show the small-multiples figure, then controls over ``grid`` (see the module docstring).

    Keyword arguments that name a control set its start value (``lr=LR``); the others are passed to ``draw``
    unchanged with every frame (the precomputed results it looks up: ``runs=runs``), so a notebook writes
    ``m.explore(m.draw_run, {"lr": lrs}, lr=LR, runs=runs)`` instead of a lambda.
    ``panels`` picks the values of the first control that the small multiples show (default: a few, evenly spread).
    ``interactive=None`` decides by :func:`is_headless`: live frontends get ipywidgets, headless runs the
    HTML/JavaScript explorer. Returns the :class:`Explorer`, whose ``update(**values)`` also works without widgets.
    """
    import functools

    import matplotlib.pyplot as plt

    defaults = {k: v for k, v in kwargs.items() if k in grid}
    fixed = {k: v for k, v in kwargs.items() if k not in grid}
    explorer = Explorer(functools.partial(draw, **fixed) if fixed else draw, grid, defaults, figsize=figsize)
    explorer.panels = list(panels or [])
    fig = explorer.small_multiples()
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
    elif os.environ.get("LIONSNB_STATIC_EXPLORER", "1") not in ("", "0"):
        from lionsnb.display import in_notebook

        if in_notebook():
            from IPython.display import HTML

            _display(HTML(explorer.static_html()))
        else:
            print(f"(static figure; in JupyterLab the controls {', '.join(explorer.grid)} appear here)")
    return explorer


#: the static explorer's script: controls -> frame key -> image; records the last swap time for the browser tests
_EXPLORER_JS = """(function(){var root=document.getElementById('__ID__');if(!root){return;}
var data=JSON.parse(root.querySelector('.lionsnb-explorer-data').textContent);
var img=root.querySelector('.lionsnb-explorer-frame'),note=root.querySelector('.lionsnb-explorer-note');
var idx=data.start.split(',');var controls=root.querySelectorAll('[data-axis]');
function show(){var key=idx.join(',');var f=data.frames[key];
 if(f){img.src='data:image/png;base64,'+f;note.textContent='';root.dataset.key=key;}
 else{note.textContent='this combination was not precomputed in this run';}}
controls.forEach(function(c){if(c.tagName==='OUTPUT'){return;}
 c.addEventListener('input',function(){var t0=performance.now();idx[+c.dataset.axis]=c.value;
  var out=root.querySelector('output[data-axis="'+c.dataset.axis+'"]');
  if(out){out.textContent=data.axes[+c.dataset.axis].labels[+c.value];}
  show();root.dataset.swapMs=(performance.now()-t0).toFixed(2);});});})();"""


def _display(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
    except ImportError:
        pass
