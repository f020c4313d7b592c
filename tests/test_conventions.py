"""The package's conventions (CONTRIBUTING.md): file names say what they hold, imports point one way, the public
API imports from each subpackage's top as the README documents it, and one helper has one home."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from lionsnb.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lionsnb"
SERIES = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
NB_MODULE = re.compile(r"nb(\d\d)_([a-z0-9_]+)\.py")


def _imports(path: Path) -> set[str]:
    """Absolute names of the lionsnb modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("lionsnb")}


def _is_nb(module: str) -> bool:
    return bool(NB_MODULE.fullmatch(module.rsplit(".", 1)[-1] + ".py"))


def test_every_notebook_module_backs_a_notebook_and_back():
    notebooks = {p.relative_to(ROOT / "notebooks").with_suffix("").as_posix()
                 for p in (ROOT / "notebooks").glob("*/*.ipynb")}
    expected = {f"{nb.split('/')[0]}/nb{nb.split('/')[1]}" for nb in notebooks}
    modules = {f"{p.parent.name}/{p.stem}" for p in PACKAGE.glob("*/nb*.py") if NB_MODULE.fullmatch(p.name)}
    strays = [p.relative_to(ROOT).as_posix() for p in PACKAGE.glob("*/nb*.py") if not NB_MODULE.fullmatch(p.name)]
    assert not strays, f"notebook modules are named nbNN_<stem>.py: {strays}"
    assert modules == expected, (
        f"each notebooks/<series>/NN_<stem>.ipynb is backed by lionsnb/<series>/nbNN_<stem>.py; "
        f"modules without a notebook: {sorted(modules - expected)}, notebooks without a module: "
        f"{sorted(expected - modules)}")


def test_registry_names_each_notebooks_own_module():
    for entry in load_registry(ROOT / "notebooks" / "index.yaml"):
        rel = Path(entry.path).resolve().relative_to(ROOT / "notebooks")
        assert entry.method == f"{rel.parts[0]}.nb{rel.stem}", f"{entry.id}: method must be {rel.parts[0]}.nb{rel.stem}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_from_notebook_modules_to_core(path):
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    nb_imports = sorted(m for m in _imports(path) if _is_nb(m) or any(_is_nb(p) for p in m.split(".")[:-1]))
    if _is_nb(name):
        assert not nb_imports, f"{name} imports other notebook modules {nb_imports}; move the shared helper into a " \
                               "core module of the series or into the plumbing"
    else:
        assert not nb_imports, f"core module {name} imports notebook modules {nb_imports}; core never imports nb*"


def test_progress_bars_go_through_lionsnb_progress():
    offenders = [p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")
                 if p.name != "progress.py" and re.search(r"^\s*(from|import) tqdm", p.read_text(), re.M)]
    assert not offenders, f"use lionsnb.progress.progress instead of tqdm (headless runs print one line): {offenders}"


@pytest.mark.parametrize("series", SERIES)
def test_subpackage_top_declares_its_public_api(series):
    module = importlib.import_module(f"lionsnb.{series}")
    names = getattr(module, "__all__", None)
    assert names, f"lionsnb.{series} must list its public API in __all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"lionsnb.{series}.__all__ names what it does not define: {missing}"


def readme_api() -> dict[str, list[str]]:
    """``{subpackage: [names]}`` from the README's ``## API`` section (one ``### lionsnb.<series>`` table each)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## API", 1)[1].split("\n## ", 1)[0] if "\n## API" in text else ""
    out: dict[str, list[str]] = {}
    current = None
    for line in section.splitlines():
        m = re.match(r"^###\s+`?(lionsnb\.\w+)`?", line)
        if m:
            current = m.group(1)
            out[current] = []
        elif current and line.startswith("|") and "`" in line:
            cell = line.split("|")[1]
            for name in re.findall(r"`([A-Za-z_]\w*)", cell):
                out[current].append(name)
    return out


def test_readme_documents_an_api_table_per_series():
    api = readme_api()
    documented = {k.split(".")[1] for k in api}
    assert set(SERIES) <= documented, f"README ## API lacks a table for {sorted(set(SERIES) - documented)}"


@pytest.mark.parametrize("package,names", sorted(readme_api().items()))
def test_every_documented_name_imports_from_its_subpackage(package, names):
    module = importlib.import_module(package)
    assert names, f"the README table of {package} lists no name"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"README documents `from {package} import ...` for {missing}, which do not import"
    not_public = [n for n in names if n not in getattr(module, "__all__", ())]
    assert not not_public, f"{package}.__all__ lacks documented names {not_public}"
