"""One plotting style for the whole suite, and small helpers that keep axes labelled."""
from __future__ import annotations

from collections.abc import Iterable

import matplotlib

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the suite's matplotlib style; inline PNG figures inside Jupyter."""
    matplotlib.rcParams.update(STYLE)
    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:  # plain Python: whatever backend matplotlib picked
        pass


def label(ax, xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Label both axes (and optionally the title) of ``ax``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


def unlabelled_axes(fig) -> list[str]:
    """Descriptions of the axes of ``fig`` that lack an x or y label (colorbars excluded)."""
    bad = []
    for i, ax in enumerate(fig.get_axes()):
        if ax.get_label() == "<colorbar>" or not ax.get_visible() or not ax.axison:
            continue
        if not ax.get_xlabel() or not ax.get_ylabel():
            bad.append(f"axes {i} ({ax.get_title() or 'untitled'})")
    return bad


def subplots(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.4, **kw):
    """``plt.subplots`` with a size that scales with the grid."""
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                        constrained_layout=True, **kw)


def colors(n: int) -> Iterable:
    import matplotlib.pyplot as plt

    return plt.cm.viridis([i / max(n - 1, 1) for i in range(n)])


def figure(width: float = 6.4, height: float = 4.0):
    """A new figure of the given size (inches) with constrained layout; ``draw_*`` functions fill it."""
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), constrained_layout=True)
