"""The notebook registry: ``notebooks/index.yaml`` lists every notebook of the suite.

Each entry says where the notebook is, what it teaches, how long each profile may
take (``budget_s``) and which metrics its last cell must record, with the range
each metric must fall in (per profile or the same for all).  The runner uses the
budgets for timeouts and the ranges to turn a run into a pass/fail verdict.

This module is torch-free: the command line imports it.
"""
from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lionsnb.params import PROFILES

#: The environment variable that points at an index file (overrides the search).
INDEX_ENV = "LIONSNB_INDEX"
#: Schema version this loader understands.
SCHEMA_VERSION = 1
ACCELERATORS: tuple[str, ...] = ("cpu", "gpu")
#: How many metrics the report shows when an entry does not say (``report_metrics``).
DEFAULT_REPORT_METRICS = 4

_ID_RE = re.compile(r"^[a-z0-9_]+$")
_REQUIRED = ("id", "path", "title", "method", "accelerator", "budget_s", "metrics")
_OPTIONAL = ("report_metrics", "loads_llm")
#: Smoke budget limits (seconds): every notebook, and one that loads a real language model (``loads_llm``).
SMOKE_BUDGET_S = 60
SMOKE_BUDGET_LLM_S = 150

#: A metric range: (low, high), ``None`` meaning unbounded on that side.
Range = tuple[float | None, float | None]


class RegistryError(ValueError):
    """``index.yaml`` is missing or invalid; the message names the entry and the field."""


class IndexNotFoundError(RegistryError):
    """No ``index.yaml`` could be found (nothing was given and the search found none)."""


@dataclass(frozen=True)
class NotebookEntry:
    """One registered notebook."""

    id: str
    path: Path  #: absolute path of the .ipynb
    title: str
    method: str
    accelerator: str  #: "cpu" or "gpu"
    budget_s: dict[str, float]  #: profile -> seconds
    metrics: dict[str, dict[str, Range]]  #: metric -> profile -> (low, high)
    report_metrics: list[str] = field(default_factory=list)
    loads_llm: bool = False  #: loads a real language model: the smoke budget may reach SMOKE_BUDGET_LLM_S

    def budget(self, profile: str) -> float:
        """The time budget in seconds for ``profile``."""
        return self.budget_s[profile]

    def ranges(self, profile: str) -> dict[str, Range]:
        """``{metric: (low, high)}`` for ``profile``."""
        return {name: per_profile[profile] for name, per_profile in self.metrics.items()}


@dataclass
class Registry:
    """All entries of one ``index.yaml``; ``root`` is the directory holding it (``notebooks/``)."""

    root: Path
    index_path: Path
    entries: list[NotebookEntry]

    @property
    def by_id(self) -> dict[str, NotebookEntry]:
        """``{id: entry}``."""
        return {e.id: e for e in self.entries}

    @property
    def ids(self) -> list[str]:
        """Entry ids in registry order."""
        return [e.id for e in self.entries]

    def find(self, path_or_id: str | os.PathLike[str]) -> NotebookEntry | None:
        """The entry with this id, or whose notebook is this path (relative to cwd or to ``root``)."""
        key = os.fspath(path_or_id)
        entry = self.by_id.get(key)
        if entry is not None:
            return entry
        candidates = [Path(key).expanduser()]
        if not Path(key).is_absolute():
            candidates.append(self.root / key)
        by_path = {e.path: e for e in self.entries}
        for cand in candidates:
            try:
                resolved = cand.resolve()
            except OSError:
                continue
            if resolved in by_path:
                return by_path[resolved]
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)


# ----------------------------------------------------------------------------- finding

def _package_index() -> Path:
    import lionsnb

    return Path(lionsnb.__file__).resolve().parent.parent / "notebooks" / "index.yaml"


def find_index(start: str | os.PathLike[str] | None = None, *, cwd: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``index.yaml``.

    Looks at, in order: ``start`` (an explicit index file, or a directory holding
    ``index.yaml`` or ``notebooks/index.yaml``), ``$LIONSNB_INDEX``,
    ``notebooks/index.yaml`` in ``cwd`` (default: the current directory) and its
    parents, then the ``notebooks/index.yaml`` next to the installed package.
    """
    if start is not None:
        p = Path(start).expanduser()
        if p.is_dir():
            for cand in (p / "index.yaml", p / "notebooks" / "index.yaml"):
                if cand.is_file():
                    return cand.resolve()
            raise IndexNotFoundError(
                f"{p} is a directory without index.yaml or notebooks/index.yaml; "
                "pass the path of the registry file itself (e.g. --index notebooks/index.yaml)."
            )
        if not p.is_file():
            raise IndexNotFoundError(f"registry file {p} does not exist; check the path given with --index.")
        return p.resolve()
    env = os.environ.get(INDEX_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise IndexNotFoundError(
                f"${INDEX_ENV} points to {p}, which is not a file; fix it or unset it "
                f"(unset {INDEX_ENV}) to use the notebooks/index.yaml of this checkout."
            )
        return p.resolve()
    here = Path(cwd) if cwd is not None else Path.cwd()
    here = here.resolve()
    for d in (here, *here.parents):
        cand = d / "notebooks" / "index.yaml"
        if cand.is_file():
            return cand
    pkg = _package_index()
    if pkg.is_file():
        return pkg
    raise IndexNotFoundError(
        f"no notebooks/index.yaml found in {here} or its parents, nor next to the lionsnb package ({pkg}). "
        f"Run from the lionsnb checkout, pass --index PATH, or set {INDEX_ENV}."
    )


# ----------------------------------------------------------------------------- loading

def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _parse_bound(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(float(value)):
        raise RegistryError(f"{where}: bound {value!r} must be a finite number or null (unbounded).")
    return float(value)


def _parse_range(value: Any, where: str) -> Range:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RegistryError(
            f"{where}: a range must be a list [low, high] (null for unbounded), got {value!r}."
        )
    low = _parse_bound(value[0], where)
    high = _parse_bound(value[1], where)
    if low is not None and high is not None and low > high:
        raise RegistryError(f"{where}: low {value[0]!r} > high {value[1]!r}; write the range as [low, high].")
    return (low, high)


def _parse_metrics(raw: Any, where: str) -> dict[str, dict[str, Range]]:
    if not isinstance(raw, Mapping):
        raise RegistryError(
            f"{where}: 'metrics' must map metric names to ranges, e.g. {{loss: [0, 1.0]}}; got {raw!r}."
        )
    out: dict[str, dict[str, Range]] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{where}: metric names must be non-empty strings, got {name!r}.")
        w = f"{where}, field 'metrics.{name}"
        if isinstance(spec, Mapping):
            unknown = [k for k in spec if k not in PROFILES]
            if unknown:
                raise RegistryError(
                    f"{w}': unknown profile {unknown[0]!r}; per-profile ranges use the profiles "
                    f"{', '.join(PROFILES)}."
                )
            missing = [p for p in PROFILES if p not in spec]
            if missing:
                raise RegistryError(
                    f"{w}': per-profile ranges need all of {', '.join(PROFILES)} (missing {', '.join(missing)}); "
                    "use [null, null] for a profile that is not checked."
                )
            out[name] = {p: _parse_range(spec[p], f"{w}.{p}'") for p in PROFILES}
        else:
            rng = _parse_range(spec, w + "'")
            out[name] = {p: rng for p in PROFILES}
    return out


def _parse_budget(raw: Any, where: str) -> dict[str, float]:
    w = f"{where}, field 'budget_s"
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{w}': must map each profile to seconds, e.g. {{smoke: 60, teach: 300, full: 900}}.")
    unknown = [k for k in raw if k not in PROFILES]
    if unknown:
        raise RegistryError(f"{w}': unknown profile {unknown[0]!r}; use the profiles {', '.join(PROFILES)}.")
    missing = [p for p in PROFILES if p not in raw]
    if missing:
        raise RegistryError(f"{w}': a budget is required for every profile; missing {', '.join(missing)}.")
    out: dict[str, float] = {}
    for p in PROFILES:
        v = raw[p]
        if not _is_number(v) or not math.isfinite(float(v)) or v <= 0:
            raise RegistryError(f"{w}.{p}': {v!r} must be a positive number of seconds.")
        out[p] = float(v)
    return out


def _parse_entry(raw: Any, index: int, root: Path) -> NotebookEntry:
    if not isinstance(raw, Mapping):
        raise RegistryError(f"notebooks[{index}]: each entry must be a mapping with fields {', '.join(_REQUIRED)}.")
    ident = raw.get("id")
    where = f"entry {ident!r}" if isinstance(ident, str) and ident else f"notebooks[{index}]"
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise RegistryError(f"{where}: missing field {missing[0]!r} (required: {', '.join(_REQUIRED)}).")
    unknown = [f for f in raw if f not in _REQUIRED + _OPTIONAL]
    if unknown:
        raise RegistryError(
            f"{where}: unknown field {unknown[0]!r}; allowed fields: {', '.join(_REQUIRED + _OPTIONAL)}."
        )
    if not isinstance(ident, str) or not _ID_RE.match(ident):
        raise RegistryError(f"{where}, field 'id': {ident!r} must match [a-z0-9_]+ (lower case, digits, _).")
    for name in ("path", "title", "method"):
        if not isinstance(raw[name], str) or not raw[name].strip():
            raise RegistryError(f"{where}, field {name!r}: must be a non-empty string, got {raw[name]!r}.")
    if not all(_ID_RE.match(part) for part in raw["method"].split(".")):
        raise RegistryError(f"{where}, field 'method': {raw['method']!r} must name a lionsnb method module "
                            "(lower-case words joined by dots, e.g. sharpness or sam.sampa).")
    rel = Path(raw["path"])
    if rel.is_absolute():
        raise RegistryError(f"{where}, field 'path': {rel} must be relative to {root} (the directory of index.yaml).")
    if rel.suffix != ".ipynb":
        raise RegistryError(f"{where}, field 'path': {rel} must be a .ipynb notebook.")
    path = (root / rel).resolve()
    if not path.is_file():
        raise RegistryError(
            f"{where}, field 'path': {rel} does not exist (looked for {path}); fix the path or remove the entry."
        )
    acc = raw["accelerator"]
    if acc not in ACCELERATORS:
        raise RegistryError(f"{where}, field 'accelerator': {acc!r} is not one of {', '.join(ACCELERATORS)}.")
    budget = _parse_budget(raw["budget_s"], where)
    metrics = _parse_metrics(raw["metrics"], where)
    if "report_metrics" in raw and raw["report_metrics"] is not None:
        rm = raw["report_metrics"]
        if not isinstance(rm, list) or not all(isinstance(m, str) for m in rm):
            raise RegistryError(f"{where}, field 'report_metrics': must be a list of metric names, got {rm!r}.")
        for m in rm:
            if m not in metrics:
                raise RegistryError(
                    f"{where}, field 'report_metrics': {m!r} is not under 'metrics'; register it there "
                    "(use [null, null] for a metric without a range)."
                )
        report = list(rm)
    else:
        report = list(metrics)[:DEFAULT_REPORT_METRICS]
    loads_llm = raw.get("loads_llm", False)
    if not isinstance(loads_llm, bool):
        raise RegistryError(f"{where}, field 'loads_llm': must be true or false, got {loads_llm!r}.")
    return NotebookEntry(
        id=ident,
        path=path,
        title=raw["title"].strip(),
        method=raw["method"],
        accelerator=acc,
        budget_s=budget,
        metrics=metrics,
        report_metrics=report,
        loads_llm=loads_llm,
    )


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Load and validate the registry (``path``, else :func:`find_index`); raises :class:`RegistryError`."""
    import yaml

    index = find_index(path)
    try:
        doc = yaml.safe_load(index.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RegistryError(f"{index} is not valid YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise RegistryError(f"{index}: expected a mapping with 'version: {SCHEMA_VERSION}' and 'notebooks: [...]'.")
    version = doc.get("version")
    if version != SCHEMA_VERSION:
        raise RegistryError(
            f"{index}: field 'version' is {version!r}; this lionsnb reads version {SCHEMA_VERSION}."
        )
    unknown = [k for k in doc if k not in ("version", "notebooks")]
    if unknown:
        raise RegistryError(f"{index}: unknown top-level field {unknown[0]!r}; allowed: version, notebooks.")
    raw_entries = doc.get("notebooks")
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        raise RegistryError(f"{index}: field 'notebooks' must be a list of entries.")
    root = index.parent
    entries: list[NotebookEntry] = []
    seen_ids: dict[str, int] = {}
    seen_paths: dict[Path, str] = {}
    for i, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(raw, i, root)
        except RegistryError as exc:
            raise RegistryError(f"{index}: {exc}") from None
        if entry.id in seen_ids:
            raise RegistryError(
                f"{index}: entry {entry.id!r}, field 'id': duplicate id (also notebooks[{seen_ids[entry.id]}]); "
                "ids must be unique."
            )
        if entry.path in seen_paths:
            raise RegistryError(
                f"{index}: entry {entry.id!r}, field 'path': the notebook is already registered as "
                f"{seen_paths[entry.path]!r}."
            )
        seen_ids[entry.id] = i
        seen_paths[entry.path] = entry.id
        entries.append(entry)
    return Registry(root=root, index_path=index, entries=entries)


# ----------------------------------------------------------------------------- checks

def format_range(rng: Range) -> str:
    """``[1.5, inf)``-style text for a range."""
    low, high = rng
    lo = "(-inf" if low is None else f"[{low:g}"
    hi = "inf)" if high is None else f"{high:g}]"
    return f"{lo}, {hi}"


def check_metrics(entry: NotebookEntry, profile: str, metrics: Mapping[str, Any]) -> list[str]:
    """Human-readable violations of ``entry``'s registered ranges for ``profile`` (empty: all fine).

    Booleans count as 0/1; strings and other non-numbers are violations.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    problems: list[str] = []
    for name, rng in entry.ranges(profile).items():
        if name not in metrics:
            problems.append(
                f"metric {name!r} is missing: {entry.id} must record it (ctx.record({name}=...)) "
                "or index.yaml must stop registering it"
            )
            continue
        value = metrics[name]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, numbers.Real):
            problems.append(f"metric {name!r} = {metrics[name]!r} is not a number")
            continue
        low, high = rng
        if math.isnan(float(value)):
            problems.append(f"metric {name!r} is NaN, not within {format_range(rng)} ({profile})")
        elif low is not None and value < low:
            problems.append(f"metric {name!r} = {value:.6g} is below the {profile} range {format_range(rng)}")
        elif high is not None and value > high:
            problems.append(f"metric {name!r} = {value:.6g} is above the {profile} range {format_range(rng)}")
    return problems


def iter_notebooks(directory: str | os.PathLike[str]) -> list[Path]:
    """Every ``*.ipynb`` under ``directory`` (sorted, resolved), ignoring ``.ipynb_checkpoints`` and hidden dirs."""
    base = Path(directory).resolve()
    found = []
    for p in base.rglob("*.ipynb"):
        rel_parts = p.relative_to(base).parts
        if any(part == ".ipynb_checkpoints" or part.startswith(".") for part in rel_parts[:-1]):
            continue
        if p.is_file():
            found.append(p.resolve())
    return sorted(found)


def unregistered_notebooks(registry: Registry) -> list[Path]:
    """Notebooks under the registry's directory that have no entry (for the hygiene test)."""
    known = {e.path for e in registry.entries}
    return [p for p in iter_notebooks(registry.root) if p not in known]


def known_ids_text(ids: Iterable[str]) -> str:
    """``a, b, c`` or ``(none)``."""
    ids = list(ids)
    return ", ".join(ids) if ids else "(none)"
