"""Execute notebooks with papermill, one subprocess per notebook, and judge the results.

For every notebook the runner writes, into the output directory (never next to
the source notebook):

* ``<id>.ipynb``        the executed notebook (partial when it failed or timed out),
* ``<id>.metrics.json`` what the notebook's last cell recorded (``ctx.record``),
* ``<id>.log``          papermill's stdout and stderr,
* ``<id>.html``         the executed notebook as HTML (also for failures),

plus ``results.json`` (all results) and, when asked, an HTML report.

A run is judged per notebook: ``ok``, ``failed`` (a cell raised, or no metrics
were recorded), ``timeout``, ``bad-metrics`` (recorded metrics outside the ranges
registered in ``index.yaml``) or ``skipped`` (a GPU notebook without ``--device
cuda``).  This module is torch-free.
"""
from __future__ import annotations

import codecs
import datetime as _dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any, TextIO

from lionsnb.files import atomic_write_text
from lionsnb.params import ParameterError, suggest, validate_device, validate_profile
from lionsnb.record import read_metrics
from lionsnb.registry import (
    IndexNotFoundError,
    NotebookEntry,
    Registry,
    check_metrics,
    iter_notebooks,
    known_ids_text,
    load_registry,
)

#: Statuses, in the order the summary counts them.
STATUSES: tuple[str, ...] = ("ok", "skipped", "failed", "timeout", "bad-metrics")
#: Statuses that make the run fail (exit code 1).
FAILURE_STATUSES: frozenset[str] = frozenset({"failed", "timeout", "bad-metrics"})
#: Timeout for notebooks that are not registered (no budget to scale).
UNREGISTERED_TIMEOUT_S = 1800.0
#: The default timeout is this multiple of the entry's budget.
TIMEOUT_FACTOR = 3.0
#: Parameters the runner injects itself; users set them with --profile/--device.
RUNNER_PARAMETERS: tuple[str, ...] = ("PROFILE", "DEVICE", "METRICS_PATH")
_ERROR_CELL_TAG = "papermill-error-cell-tag"
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class TargetError(ValueError):
    """A notebook target (id, path or directory) could not be resolved."""


@dataclass
class NotebookResult:
    """The outcome of one notebook."""

    id: str
    path: str  #: the source notebook
    title: str
    status: str  #: one of STATUSES
    seconds: float = 0.0
    budget_s: float | None = None
    over_budget: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    failing_cell: dict[str, Any] | None = None
    error: str | None = None  #: why it failed / was skipped, one paragraph
    executed: str | None = None  #: the executed .ipynb
    html: str | None = None
    log: str | None = None
    metrics_path: str | None = None
    registered: bool = True
    report_metrics: list[str] = field(default_factory=list)
    #: metric -> [low, high] registered for this profile (None = unbounded), shown next to each value
    ranges: dict[str, list[float | None]] = field(default_factory=dict)
    returncode: int | None = None

    @property
    def failed(self) -> bool:
        """True when this result fails the run."""
        return self.status in FAILURE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class RunSummary:
    """All results of one ``run_notebooks`` call."""

    results: list[NotebookResult]
    profile: str
    device: str
    out_dir: str
    started: str  #: ISO time the run started
    seconds: float = 0.0
    jobs: int = 1
    report_path: str | None = None
    lionsnb_version: str = ""
    shard: str | None = None  #: "I/N" when this run was one shard of the registry; "merged" for merged shards

    @property
    def ok(self) -> bool:
        """True when nothing failed (skipped notebooks do not fail a run)."""
        return not any(r.failed for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 when all notebooks are ok or skipped, else 1."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        """``{status: count}`` for the statuses present."""
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json``."""
        return {
            "lionsnb_version": self.lionsnb_version,
            "profile": self.profile,
            "device": self.device,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "jobs": self.jobs,
            "shard": self.shard,
            "out_dir": self.out_dir,
            "report": self.report_path,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class _Job:
    index: int
    id: str
    path: Path
    entry: NotebookEntry | None


# ----------------------------------------------------------------------------- parameters

def parse_param_value(text: str) -> Any:
    """Type a command-line value the way papermill's ``-p`` does: True/False/None, int, float, else str."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _read_notebook_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TargetError(f"cannot read notebook {path}: {exc}") from None


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: Mapping[str, Any]) -> list[str]:
    return list((cell.get("metadata") or {}).get("tags") or [])


def parameter_names(notebook: str | os.PathLike[str]) -> list[str] | None:
    """Names assigned in the notebook's cell tagged ``parameters`` (``None``: no such cell)."""
    import ast

    nb = _read_notebook_json(Path(notebook))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" not in _tags(cell):
            continue
        src = _source(cell)
        names: list[str] = []
        try:
            tree = ast.parse(src)
        except SyntaxError:
            for line in src.splitlines():
                m = re.match(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=(?!=)", line)
                if m:
                    names.append(m.group(1))
            return list(dict.fromkeys(names))
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            for t in targets:
                elts = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
                names.extend(e.id for e in elts if isinstance(e, ast.Name))
        return list(dict.fromkeys(names))
    return None


def validate_params(job_id: str, path: Path, params: Mapping[str, Any]) -> None:
    """Raise :class:`ParameterError` unless every name in ``params`` is assigned in the parameters cell."""
    if not params:
        return
    names = parameter_names(path)
    if names is None:
        raise ParameterError(
            f"{job_id} ({path}) has no code cell tagged 'parameters', so -p {next(iter(params))} "
            "cannot be applied. Tag the notebook's first code cell 'parameters' or drop the -p option."
        )
    unknown = [n for n in params if n not in names]
    if unknown:
        hint = suggest(unknown[0], names)
        raise ParameterError(
            f"unknown parameter {unknown[0]!r} for notebook {job_id} ({path}).{hint} "
            f"Its parameters cell assigns: {', '.join(names) or '(nothing)'}."
        )


def _validate_user_params(params: Mapping[str, Any]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ParameterError(f"parameter name {name!r} is not a Python identifier.")
        if name in RUNNER_PARAMETERS:
            flag = {"PROFILE": "--profile", "DEVICE": "--device", "METRICS_PATH": "--out"}[name]
            raise ParameterError(
                f"-p {name} is set by the runner; use {flag} instead."
            )
        try:
            yaml.safe_dump(value)
        except yaml.YAMLError:
            raise ParameterError(
                f"parameter {name} = {value!r}: only str, int, float, bool, None (and lists/dicts of them) "
                "can be passed to a notebook."
            ) from None
        out[name] = value
    return out


# ----------------------------------------------------------------------------- targets

def resolve_targets(targets: Sequence[str | os.PathLike[str]], registry: Registry | None,
                    exclude_dir: Path | None = None) -> list[tuple[str, Path, NotebookEntry | None]]:
    """Turn ids/paths/directories into ``(id, path, entry-or-None)``; empty = every registered notebook."""
    if not targets:
        if registry is None or not registry.entries:
            where = registry.index_path if registry is not None else "notebooks/index.yaml"
            raise TargetError(f"no notebooks to run: {where} registers none; name a notebook or directory.")
        return [(e.id, e.path, e) for e in registry.entries]
    found: list[tuple[Path, NotebookEntry | None]] = []
    for target in targets:
        key = os.fspath(target)
        entry = registry.find(key) if registry is not None else None
        if entry is not None:
            found.append((entry.path, entry))
            continue
        cands = [Path(key).expanduser()]
        if registry is not None and not Path(key).is_absolute():
            cands.append(registry.root / key)
        cand = next((c for c in cands if c.exists()), None)
        if cand is None:
            ids = registry.ids if registry is not None else []
            hint = suggest(key, ids)
            raise TargetError(
                f"unknown notebook {key!r}: not a registered id nor an existing .ipynb file or directory.{hint} "
                f"Registered ids: {known_ids_text(ids)} (see `lionsnb list`)."
            )
        if cand.is_dir():
            nbs = [p for p in iter_notebooks(cand)
                   if exclude_dir is None or not _is_within(p, exclude_dir)]
            if not nbs:
                raise TargetError(f"directory {cand} holds no notebooks (*.ipynb).")
            for p in nbs:
                found.append((p, registry.find(p) if registry is not None else None))
        elif cand.suffix != ".ipynb":
            raise TargetError(f"{cand} is not a notebook (.ipynb).")
        else:
            p = cand.resolve()
            found.append((p, registry.find(p) if registry is not None else None))
    out: list[tuple[str, Path, NotebookEntry | None]] = []
    seen_paths: set[Path] = set()
    used_ids = set(registry.ids) if registry is not None else set()
    taken: set[str] = set()
    for path, entry in found:
        if path in seen_paths:
            continue
        seen_paths.add(path)
        if entry is not None:
            ident = entry.id
        else:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "notebook"
            ident, n = stem, 2
            while ident in taken or ident in used_ids:
                ident, n = f"{stem}-{n}", n + 1
        taken.add(ident)
        out.append((ident, path, entry))
    return out


def _is_within(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- processes

def count_gpus() -> int:
    """The number of GPUs ``nvidia-smi -L`` lists (1 when it is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 1
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return max(1, n)


def _gpu_slots() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        return [s.strip() for s in visible.split(",") if s.strip()]
    return [str(i) for i in range(count_gpus())]


def child_env(jobs: int, gpu_slot: str | None = None, base: Mapping[str, str] | None = None,
              profile: str = "") -> dict[str, str]:
    """The environment of one notebook's subprocess.

    Headless (no live progress bars or widgets: one summary line per loop, the HTML/JavaScript explorers); in the
    smoke profile the explorers embed only a few frames per control, to keep CI fast.
    """
    env = dict(os.environ if base is None else base)
    env["LIONSNB_HEADLESS"] = "1"
    if profile == "smoke":
        env.setdefault("LIONSNB_EXPLORER_FRAMES", "few")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if jobs > 1 and not env.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if gpu_slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu_slot
    return env


def papermill_command(src: Path, dst: Path, *, profile: str, device: str, metrics_path: Path,
                      params: Mapping[str, Any] | None = None, progress_bar: bool = True) -> list[str]:
    """The papermill command line for one notebook (user params travel typed, as YAML)."""
    import yaml

    cmd = [sys.executable, "-m", "papermill", str(src), str(dst), "-k", "python3", "--cwd", str(src.parent),
           "-p", "PROFILE", profile, "-p", "DEVICE", device, "-p", "METRICS_PATH", str(metrics_path)]
    if params:
        cmd += ["-y", yaml.safe_dump(dict(params), default_flow_style=True, width=1 << 30).strip()]
    if not progress_bar:
        cmd.append("--no-progress-bar")
    return cmd


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (best effort: psutil, else /proc, else none)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - psutil missing or the process is gone
        pass
    children: dict[int, list[int]] = {}
    try:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    stat = f.read().decode(errors="replace")
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    except OSError:
        return []
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop papermill and its kernel.

    SIGINT first (papermill then interrupts the kernel and saves the partial notebook),
    SIGTERM after ``grace_s``, SIGKILL 2 s later; finally every descendant still alive
    (the kernel runs in a session of its own) is killed.
    """
    kids = set(_descendants(proc.pid))
    if os.name != "posix":  # pragma: no cover - Windows
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            kids |= set(_descendants(proc.pid))
    _signal(kids, signal.SIGKILL)


def _pump(stream: Any, log_file: Any, echo: TextIO | None) -> None:
    """Copy the child's output to the log (bytes) and, when ``echo``, live to our stderr."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = stream.fileno()
    while True:
        try:
            chunk = os.read(fd, 8192)
        except OSError:
            break
        if not chunk:
            break
        log_file.write(chunk)
        log_file.flush()
        if echo is not None:
            try:
                echo.write(decoder.decode(chunk))
                echo.flush()
            except (OSError, ValueError):
                pass


# ----------------------------------------------------------------------------- judging

def _numbered_code_cells(executed: Path) -> Iterator[tuple[int, dict, list[str], int, bool]]:
    """(index in the notebook, cell, tags, code-cell number as in the source, injected?) for each code cell of an
    executed notebook; papermill's error banner is skipped and its injected cell is not counted.  Nothing for an
    unreadable file."""
    if not executed.is_file():
        return
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    code_no = 0
    for index, cell in enumerate(nb.get("cells", [])):
        tags = _tags(cell)
        if cell.get("cell_type") != "code" or _ERROR_CELL_TAG in tags:
            continue
        injected = "injected-parameters" in tags
        if not injected:
            code_no += 1
        yield index, cell, tags, code_no, injected


def find_failing_cell(executed: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The cell that stopped the run, from the executed notebook (``None`` if none raised).

    ``code_cell`` counts code cells from 1 as in the *source* notebook: papermill's
    injected-parameters cell and its error banner are not counted.
    """
    for index, cell, tags, code_no, injected in _numbered_code_cells(Path(executed)):
        if "raises-exception" in tags:
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if not errors:
            continue
        err = errors[0]
        lines = [ln for ln in _source(cell).splitlines() if ln.strip()]
        tb = [_ANSI_RE.sub("", t) for t in err.get("traceback", [])]
        tb_text = "\n".join(tb)
        if len(tb_text) > 4000:
            tb_text = "...\n" + tb_text[-4000:]
        return {
            "code_cell": None if injected else code_no,
            "cell_index": index,
            "where": ("papermill's injected parameters cell" if injected else
                      f"code cell {code_no} (counting code cells from 1)"),
            "first_line": lines[0] if lines else "",
            "ename": err.get("ename", ""),
            "evalue": _ANSI_RE.sub("", str(err.get("evalue", ""))),
            "traceback": tb_text,
        }
    return None


def _tail(path: Path, n: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in _ANSI_RE.sub("", text).replace("\r", "\n").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


_html_lock = threading.Lock()


def export_html(executed: Path, dst: Path, mathjax_dir: Path | None = None) -> Path:
    """Write ``executed`` as an HTML page at ``dst`` whose math renders offline.

    MathJax is copied once into ``mathjax_dir`` (default: ``_static/mathjax`` beside the page) and the page loads
    it by a relative URL, so the page works from the file system or any static web server, without a CDN.
    """
    import nbformat

    from lionsnb.assets import html_exporter, install_mathjax, mathjax_url

    mathjax_dir = Path(mathjax_dir) if mathjax_dir is not None else dst.parent / "_static" / "mathjax"
    install_mathjax(mathjax_dir)
    with _html_lock:
        nb = nbformat.read(str(executed), as_version=4)
        body, _ = html_exporter(mathjax_url(dst.parent, mathjax_dir)).from_notebook_node(nb)
    atomic_write_text(dst, body)
    return dst


def _fmt_budget(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


# ----------------------------------------------------------------------------- running

class _Runner:
    def __init__(self, *, profile: str, device: str, out_dir: Path, timeout: float | None, jobs: int,
                 params: dict[str, Any], html: bool, progress: bool, total: int, id_width: int):
        self.profile = profile
        self.device = device
        self.out_dir = out_dir
        self.timeout = timeout
        self.jobs = jobs
        self.params = params
        self.html = html
        self.progress = progress
        self.total = total
        self.id_width = id_width
        self.print_lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.procs_lock = threading.Lock()
        self.cancelled = threading.Event()
        self.gpu_slots: Queue[str] | None = None
        if device.startswith("cuda") and jobs > 1:
            self.gpu_slots = Queue()
            for s in _gpu_slots():
                self.gpu_slots.put(s)

    def say(self, text: str) -> None:
        with self.print_lock:
            print(text, file=sys.stderr, flush=True)

    def line(self, job: _Job, status: str, tail: str = "") -> None:
        self.say(f"[{job.index}/{self.total}] {status:<11} {job.id:<{self.id_width}}  {tail}".rstrip())

    def run(self, job: _Job) -> NotebookResult:
        entry = job.entry
        budget = entry.budget(self.profile) if entry is not None else None
        res = NotebookResult(id=job.id, path=str(job.path), title=entry.title if entry else job.path.stem,
                             status="skipped", budget_s=budget, registered=entry is not None,
                             report_metrics=list(entry.report_metrics) if entry else [],
                             ranges={k: list(v) for k, v in entry.ranges(self.profile).items()} if entry else {})
        if entry is not None and entry.accelerator == "gpu" and not self.device.startswith("cuda"):
            res.error = (f"needs a GPU (accelerator: gpu in index.yaml); run with --device cuda on a GPU "
                         f"machine (this run: --device {self.device})")
            self.line(job, "skipped", res.error)
            return res
        if self.cancelled.is_set():
            res.error = "not run: the run was interrupted"
            return res
        slot = self.gpu_slots.get() if self.gpu_slots is not None else None
        try:
            return self._execute(job, res, slot)
        finally:
            if slot is not None and self.gpu_slots is not None:
                self.gpu_slots.put(slot)

    def _execute(self, job: _Job, res: NotebookResult, slot: str | None) -> NotebookResult:
        out = self.out_dir
        executed = out / f"{job.id}.ipynb"
        metrics_path = out / f"{job.id}.metrics.json"
        log_path = out / f"{job.id}.log"
        html_path = out / f"{job.id}.html"
        for stale in (executed, metrics_path, log_path, html_path):
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
        res.executed, res.log, res.metrics_path = str(executed), str(log_path), str(metrics_path)
        limit = self.timeout
        if limit is None:
            limit = TIMEOUT_FACTOR * res.budget_s if res.budget_s is not None else UNREGISTERED_TIMEOUT_S
        stream = self.progress and self.jobs == 1
        cmd = papermill_command(job.path, executed, profile=self.profile, device=self.device,
                                metrics_path=metrics_path, params=self.params, progress_bar=stream)
        env = child_env(self.jobs, slot, profile=self.profile)
        budget_txt = f" (budget {_fmt_budget(res.budget_s)} s)" if res.budget_s is not None else ""
        gpu_txt = f" on GPU {slot}" if slot is not None else ""
        self.line(job, "start", f"{job.path.name}{budget_txt}{gpu_txt}")
        timed_out = False
        t0 = time.monotonic()
        with open(log_path, "wb") as log_file:
            shown_env = " ".join(f"{k}={env[k]}" for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
                                 if k in env and (k != "CUDA_VISIBLE_DEVICES" or slot is not None))
            log_file.write(("$ " + (shown_env + " " if shown_env else "") + " ".join(cmd) + "\n").encode())
            log_file.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, cwd=str(job.path.parent),
                                    start_new_session=(os.name == "posix"))
            with self.procs_lock:
                self.procs.add(proc)
            pump = threading.Thread(target=_pump, args=(proc.stdout, log_file, sys.stderr if stream else None),
                                    daemon=True)
            pump.start()
            try:
                try:
                    proc.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _stop_process(proc)
            except BaseException:
                _stop_process(proc, grace_s=3.0)
                raise
            finally:
                with self.procs_lock:
                    self.procs.discard(proc)
                pump.join(timeout=10)
                if proc.stdout is not None:
                    proc.stdout.close()
        res.seconds = time.monotonic() - t0
        res.returncode = proc.returncode
        if stream:
            sys.stderr.write("\n")
        self._judge(res, job.entry, executed, metrics_path, log_path, timed_out, limit)
        if self.html and executed.is_file():
            try:
                res.html = str(export_html(executed, html_path))
            except Exception as exc:  # noqa: BLE001 - HTML is a convenience, never a failure
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(f"\n[lionsnb] HTML export failed: {type(exc).__name__}: {exc}\n")
        if not executed.is_file():
            res.executed = None
        if not metrics_path.is_file():
            res.metrics_path = None
        tail = f"{_fmt_s(res.seconds)} s"
        if res.budget_s is not None:
            tail += f" / {_fmt_budget(res.budget_s)} s budget" + ("  (over budget)" if res.over_budget else "")
        if res.failed and res.error:
            where = f"code cell {res.failing_cell['code_cell']}: " if (
                res.failing_cell and res.failing_cell.get("code_cell") and res.status == "failed") else ""
            tail += f"  -- {where}{res.error.splitlines()[0]}"
        self.line(job, res.status, tail)
        return res

    def _judge(self, res: NotebookResult, entry: NotebookEntry | None, executed: Path, metrics_path: Path,
               log_path: Path, timed_out: bool, limit: float) -> None:
        if res.budget_s is not None:
            res.over_budget = res.seconds > res.budget_s
        if timed_out:
            res.status = "timeout"
            if self.timeout is not None:
                why = "--timeout"
            elif res.budget_s is not None:
                why = f"{TIMEOUT_FACTOR:g} x the {self.profile} budget of {_fmt_budget(res.budget_s)} s"
            else:
                why = "the default for unregistered notebooks"
            res.error = (f"timed out after {_fmt_s(limit)} s ({why}); the partial notebook is kept. "
                         "Raise --timeout, or use a smaller profile.")
            cell = find_failing_cell(executed)
            if cell is not None:
                cell["where"] += ", interrupted at the timeout"
            res.failing_cell = cell or _running_cell(executed)
            return
        if res.returncode != 0:
            res.status = "failed"
            cell = find_failing_cell(executed)
            res.failing_cell = cell
            if cell is not None:
                res.error = f"{cell['ename']}: {cell['evalue']}"
            elif res.returncode == 138:
                res.error = "the kernel died (out of memory?); see the log: " + str(log_path)
            else:
                res.error = (f"papermill exited with code {res.returncode}; last lines of {log_path}:\n"
                             + _tail(log_path))
            return
        if not metrics_path.is_file():
            if res.registered:
                res.status = "failed"
                res.error = "notebook recorded no metrics: its last cell must call ctx.record(...)"
            else:
                res.status = "ok"
            return
        try:
            res.metrics = read_metrics(metrics_path)
        except (OSError, ValueError) as exc:
            res.status = "failed"
            res.error = f"cannot read the metrics file {metrics_path}: {exc}"
            return
        if entry is None:
            res.status = "ok"
            return
        res.violations = check_metrics(entry, self.profile, res.metrics)
        if res.violations:
            res.status = "bad-metrics"
            res.error = (f"{len(res.violations)} metric(s) outside the {self.profile} ranges registered in "
                         f"index.yaml: " + "; ".join(res.violations))
        else:
            res.status = "ok"

    def cancel(self) -> None:
        self.cancelled.set()
        with self.procs_lock:
            procs = list(self.procs)
        for p in procs:
            _stop_process(p, grace_s=3.0)


def _running_cell(executed: Path) -> dict[str, Any] | None:
    """For a timeout: the first code cell papermill had not finished (its progress metadata)."""
    for index, cell, _tags_of_cell, code_no, injected in _numbered_code_cells(executed):
        status = ((cell.get("metadata") or {}).get("papermill") or {}).get("status")
        if status in ("running", "pending"):
            lines = [ln for ln in _source(cell).splitlines() if ln.strip()]
            return {
                "code_cell": None if injected else code_no,
                "cell_index": index,
                "where": f"code cell {code_no} (counting code cells from 1), "
                         f"{'still running' if status == 'running' else 'not started'} at the timeout",
                "first_line": lines[0] if lines else "",
                "ename": "Timeout",
                "evalue": "",
                "traceback": "",
            }
    return None


# ----------------------------------------------------------------------------- shards

#: the budget assumed for a notebook that is not registered (it has none), when sharding
UNREGISTERED_BUDGET_S = 60.0


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with 1 <= I <= N; a clear error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ParameterError(f"--shard {text!r}: write I/N with 1 <= I <= N, e.g. --shard 2/4 for the second of "
                             "four shards.")
    return int(m.group(1)), int(m.group(2))


def assign_shards(budgets: Mapping[str, float], count: int) -> list[list[str]]:
    """Split notebook ids over ``count`` shards, balancing their budgets; deterministic.

    Longest budget first (ties by id), each to the shard with the smallest total so far (ties to the lowest shard):
    the classic LPT rule, whose largest shard is at most 4/3 of the optimum. Returns the ids of each shard in
    registry order.
    """
    if count < 1:
        raise ParameterError(f"the number of shards must be >= 1, got {count}")
    order = {ident: k for k, ident in enumerate(budgets)}
    loads = [0.0] * count
    shards: list[list[str]] = [[] for _ in range(count)]
    for ident in sorted(budgets, key=lambda i: (-budgets[i], i)):
        k = min(range(count), key=lambda j: (loads[j], j))
        loads[k] += budgets[ident]
        shards[k].append(ident)
    return [sorted(shard, key=order.__getitem__) for shard in shards]


def run_notebooks(targets: Sequence[str | os.PathLike[str]] = (), *, profile: str,
                  out_dir: str | os.PathLike[str], device: str = "auto", timeout: float | None = None,
                  jobs: int = 1, params: Mapping[str, Any] | None = None, registry: Registry | None = None,
                  report_path: str | os.PathLike[str] | None = None, html: bool = True,
                  progress: bool = True, shard: tuple[int, int] | None = None) -> RunSummary:
    """Execute notebooks (ids, paths or directories; empty = all registered) and judge them.

    ``shard=(I, N)`` runs only the I-th of N budget-balanced shares of the targets (:func:`assign_shards`, budgets
    of this profile), so that N machines together run everything once; ``lionsnb report --merge`` joins them.

    ``params`` are extra notebook parameters with their Python types (the CLI types
    strings with :func:`parse_param_value`); every name must be assigned in each
    notebook's parameters cell.  Raises :class:`ParameterError`, :class:`TargetError`
    or :class:`RegistryError` before running anything when the request is invalid.
    """
    from lionsnb import __version__

    validate_profile(profile)
    validate_device(device)
    if not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs must be an integer >= 1, got {jobs!r}.")
    if jobs > 1 and re.fullmatch(r"cuda:\d+", device):
        raise ParameterError(f"--device {device} pins one GPU; with --jobs > 1 use --device cuda so that "
                             "each notebook gets a GPU of its own.")
    if timeout is not None and (not isinstance(timeout, (int, float)) or not timeout > 0 or math.isnan(timeout)):
        raise ParameterError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    user_params = _validate_user_params(params or {})
    if registry is None:
        try:
            registry = load_registry()
        except IndexNotFoundError:
            if not targets:
                raise
            registry = None
    out = Path(out_dir).expanduser().resolve()
    if registry is not None and _is_within(out, registry.root):
        raise ParameterError(f"output directory {out} is inside {registry.root}; the runner never writes into "
                             "notebooks/. Choose another --out (default: build/executed).")
    resolved = resolve_targets(list(targets), registry, exclude_dir=out)
    if shard is not None:
        index, count = shard
        if not 1 <= index <= count:
            raise ParameterError(f"shard {index}/{count}: the index must be between 1 and {count}")
        budgets = {ident: (e.budget(profile) if e is not None else UNREGISTERED_BUDGET_S) for ident, _, e in resolved}
        chosen = set(assign_shards(budgets, count)[index - 1])
        resolved = [r for r in resolved if r[0] in chosen]
    for ident, path, entry in resolved:
        if out == path.parent.resolve():
            raise ParameterError(f"output directory {out} holds the notebook {path}; the runner never writes "
                                 "next to a source notebook. Choose another --out (default: build/executed).")
    to_run = [(i, p, e) for i, p, e in resolved
              if not (e is not None and e.accelerator == "gpu" and not device.startswith("cuda"))]
    for ident, path, _ in to_run:
        validate_params(ident, path, user_params)

    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().astimezone()
    summary = RunSummary(results=[], profile=profile, device=device, out_dir=str(out),
                         started=started.isoformat(timespec="seconds"), jobs=jobs,
                         report_path=str(Path(report_path).expanduser().resolve()) if report_path else None,
                         lionsnb_version=__version__, shard=f"{shard[0]}/{shard[1]}" if shard else None)
    jobs_list = [_Job(index=k + 1, id=i, path=p, entry=e) for k, (i, p, e) in enumerate(resolved)]
    runner = _Runner(profile=profile, device=device, out_dir=out, timeout=timeout, jobs=jobs, params=user_params,
                     html=html, progress=progress, total=len(jobs_list),
                     id_width=max((len(j.id) for j in jobs_list), default=8))
    if runner.gpu_slots is not None and runner.gpu_slots.qsize() < jobs:
        runner.say(f"note: {runner.gpu_slots.qsize()} GPU(s) for --jobs {jobs}: at most "
                   f"{runner.gpu_slots.qsize()} notebook(s) run at a time, one per GPU")
    t0 = time.monotonic()
    results: dict[int, NotebookResult] = {}
    results_lock = threading.Lock()

    def record(job: _Job, res: NotebookResult) -> None:
        with results_lock:
            results[job.index] = res
            summary.results = [results[k] for k in sorted(results)]
            summary.seconds = time.monotonic() - t0
            atomic_write_text(out / "results.json", json.dumps(summary.to_dict(), indent=2) + "\n")

    try:
        if jobs == 1:
            for job in jobs_list:
                record(job, runner.run(job))
        else:
            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lionsnb-run") as pool:
                futures = {pool.submit(runner.run, job): job for job in jobs_list}
                try:
                    for fut in as_completed(futures):
                        record(futures[fut], fut.result())
                except BaseException:
                    runner.cancel()
                    for f in futures:
                        f.cancel()
                    raise
    except KeyboardInterrupt:
        runner.cancel()
        raise
    summary.results = [results[k] for k in sorted(results)]
    summary.seconds = time.monotonic() - t0
    atomic_write_text(out / "results.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    if report_path:
        from lionsnb.report import write_report

        write_report(summary, report_path)
    return summary


def load_summary(results_json: str | os.PathLike[str]) -> RunSummary:
    """Read a ``results.json`` back into a :class:`RunSummary` (e.g. to re-render the report)."""
    doc = json.loads(Path(results_json).read_text(encoding="utf-8"))
    known = set(NotebookResult.__dataclass_fields__)
    results = [NotebookResult(**{k: v for k, v in r.items() if k in known}) for r in doc.get("results", [])]
    return RunSummary(results=results, profile=doc.get("profile", ""), device=doc.get("device", ""),
                      out_dir=doc.get("out_dir", str(Path(results_json).parent)), started=doc.get("started", ""),
                      seconds=float(doc.get("seconds", 0.0)), jobs=int(doc.get("jobs", 1)),
                      report_path=doc.get("report"), lionsnb_version=doc.get("lionsnb_version", ""),
                      shard=doc.get("shard"))


def merge_summaries(dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> RunSummary:
    """Join the ``results.json`` of several shard runs into one summary written to ``out_dir/results.json``.

    Each ``dir`` is a shard's output folder (as downloaded: the paths recorded on the runner are re-based onto it
    when they do not exist here). Every notebook must appear once, and all shards must share the profile.
    """
    summaries = []
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise TargetError(f"{d} holds no results.json: pass the output folders of `lionsnb run --shard I/N`.")
        summary = load_summary(path)
        for r in summary.results:
            for attr in ("executed", "html", "log", "metrics_path"):
                value = getattr(r, attr)
                if value and not Path(value).exists() and (Path(d) / Path(value).name).exists():
                    setattr(r, attr, str((Path(d) / Path(value).name).resolve()))
        summaries.append(summary)
    if not summaries:
        raise TargetError("nothing to merge: pass at least one shard output folder")
    profiles = {s.profile for s in summaries}
    if len(profiles) > 1:
        raise ParameterError(f"the shards ran different profiles ({', '.join(sorted(profiles))}); merge runs of one "
                             "profile.")
    seen: dict[str, str] = {}
    results: list[NotebookResult] = []
    for d, summary in zip(dirs, summaries):
        for r in summary.results:
            if r.id in seen:
                raise ParameterError(f"notebook {r.id} appears in two shards ({seen[r.id]} and {d}); each shard of "
                                     "one run holds different notebooks.")
            seen[r.id] = str(d)
            results.append(r)
    try:
        order = {ident: k for k, ident in enumerate(load_registry().ids)}
    except Exception:  # noqa: BLE001 - no registry here: keep the shards' order
        order = {}
    results.sort(key=lambda r: (order.get(r.id, len(order)), r.id))
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    merged = RunSummary(results=results, profile=summaries[0].profile,
                        device=", ".join(sorted({s.device for s in summaries})), out_dir=str(out),
                        started=min(s.started for s in summaries), seconds=max(s.seconds for s in summaries),
                        jobs=sum(s.jobs for s in summaries), lionsnb_version=summaries[0].lionsnb_version,
                        shard="merged")
    atomic_write_text(out / "results.json", json.dumps(merged.to_dict(), indent=2) + "\n")
    return merged
