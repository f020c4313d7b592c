"""Static assets the HTML outputs ship with, so that they render offline (no CDN).

The executed notebooks exported to HTML (the runner) and the course site use MathJax 2 from the
``jupyter-server-mathjax`` package, copied once next to the pages (English only, about 9 MB).
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

#: the MathJax configuration the pages load (the one this MathJax build carries)
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
#: what is copied from the package's static folder (paths relative to it): all but the other languages
_MATHJAX_PARTS = ("MathJax.js", "LICENSE", "config", "extensions", "jax", "fonts", "localization/en")
_lock = threading.Lock()
#: jupyter-server-mathjax ships the STIX-Web fonts only: both output processors use them (MathJax's default, the TeX
#: fonts, is not in the package; the pages would ask the file system for it in vain and fall back)
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], '
                 'preferredFont: null, webFont: "STIX-Web", imageFont: null}, SVG: {font: "STIX-Web"}});</script>')


def mathjax_source() -> Path:
    """The MathJax folder of the installed ``jupyter-server-mathjax`` package (a clear error when missing)."""
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise ImportError("offline math in HTML outputs needs the jupyter-server-mathjax package: "
                          "pip install jupyter-server-mathjax") from err
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def install_mathjax(dest: str | os.PathLike[str]) -> Path:
    """Copy MathJax into ``dest`` (once; a complete copy is reused) and return the path of ``MathJax.js``."""
    dest = Path(dest)
    script = dest / "MathJax.js"
    marker = dest / ".complete"
    with _lock:
        if marker.is_file() and script.is_file():
            return script
        src = mathjax_source()
        dest.mkdir(parents=True, exist_ok=True)
        for part in _MATHJAX_PARTS:
            source = src / part
            if source.is_dir():
                shutil.copytree(source, dest / part, dirs_exist_ok=True)
            elif source.is_file():
                (dest / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / part)
        marker.write_text("copied from jupyter-server-mathjax\n", encoding="utf-8")
    return script


def mathjax_url(page_dir: str | os.PathLike[str], mathjax_dir: str | os.PathLike[str]) -> str:
    """The relative URL from a page in ``page_dir`` to the local MathJax, with the configuration."""
    rel = os.path.relpath(Path(mathjax_dir) / "MathJax.js", Path(page_dir)).replace(os.sep, "/")
    return f"{rel}?config={MATHJAX_CONFIG}"


#: nbconvert templates shipped with the package (``lionsnb``: the lab look without network requests)
TEMPLATES = Path(__file__).resolve().parent / "templates"


def html_exporter(mathjax: str, **resources_defaults):
    """An nbconvert ``HTMLExporter`` with the package's template and MathJax at the (relative) URL ``mathjax``."""
    from nbconvert import HTMLExporter

    class _Exporter(HTMLExporter):
        def _init_resources(self, resources):
            resources = super()._init_resources(resources)
            resources.setdefault("lionsnb_mathjax_fonts", MATHJAX_FONTS)
            return resources

    return _Exporter(template_name="lionsnb", extra_template_basedirs=[str(TEMPLATES)], mathjax_url=mathjax,
                     **resources_defaults)
