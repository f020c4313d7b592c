"""The ``lionsnb`` command: ``run`` notebooks, ``list`` the registry, ``doctor`` the environment.

Exit codes: 0 success, 1 a notebook failed (or ``doctor`` found a FAIL), 2 a usage
error (bad profile, device, target, parameter or registry).  The module is
torch-free so the command starts fast; only ``doctor`` imports torch.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lionsnb.params import DEFAULT_PROFILE, DEVICES, PROFILES, ParameterError

PROFILE_ENV = "LIONSNB_PROFILE"
DEFAULT_OUT = Path("build") / "executed"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` can return 2 (also inside tests)."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message}\n{self.format_usage().strip()}")


class _UsageError(Exception):
    pass


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lionsnb`` command."""
    from lionsnb import __version__

    parser = _Parser(prog="lionsnb", description="Run, list and check the lionsnb teaching notebooks.")
    parser.add_argument("--version", action="version", version=f"lionsnb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="execute notebooks with papermill and check their metrics",
                         description="Execute notebooks (registered ids, paths or directories; none = all "
                                     "registered), one subprocess each, and check their recorded metrics.")
    run.add_argument("targets", nargs="*", metavar="NOTEBOOK_OR_DIR_OR_ID")
    run.add_argument("--profile", default=None,
                     help=f"one of {', '.join(PROFILES)} (default: ${PROFILE_ENV} or {DEFAULT_PROFILE})")
    run.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: build/executed)")
    run.add_argument("--report", default=None, help="HTML report path (default: <out>/report.html)")
    run.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} or cuda:N (default: auto)")
    run.add_argument("--timeout", type=_positive_float, default=None,
                     help="seconds per notebook (default: 3 x its budget; 1800 for unregistered notebooks)")
    run.add_argument("--jobs", "-j", type=int, default=1, help="notebooks run in parallel (default: 1)")
    run.add_argument("--index", default=None, help="the registry file (default: notebooks/index.yaml)")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (typed like papermill: int, float, True/False/None, str)")
    run.add_argument("--no-html", action="store_true", help="do not convert executed notebooks to HTML")
    run.add_argument("--quiet", "-q", action="store_true", help="no live progress bar from papermill")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="run only the I-th of N budget-balanced shares of the notebooks (several runners; join "
                          "their outputs with `lionsnb report --merge`)")

    rep = sub.add_parser("report", help="re-render a run's report, or merge the outputs of several shards",
                         description="Render the HTML report of a run (its results.json), or with --merge join the "
                                     "output folders of `lionsnb run --shard I/N` into one report.")
    rep.add_argument("--merge", nargs="+", metavar="DIR", required=True,
                     help="output folders of the runs (shards) to join (one folder: just re-render its report)")
    rep.add_argument("--out", default="build/merged", help="folder for the merged results.json (default: "
                                                           "build/merged)")
    rep.add_argument("--report", default=None, help="HTML report path (default: <out>/report.html)")

    lst = sub.add_parser("list", help="list the registered notebooks")
    lst.add_argument("--index", default=None, help="the registry file (default: notebooks/index.yaml)")

    doc = sub.add_parser("doctor", help="check this environment can run the notebooks")
    doc.add_argument("--index", default=None, help="the registry file (default: notebooks/index.yaml)")

    site = sub.add_parser("site", help="build the static course site from a run's executed notebooks",
                          description="Build a static site (index + one page per notebook, explorers working "
                                      "without a kernel, math and assets local) from the output folder of "
                                      "`lionsnb run`.")
    site.add_argument("--from", dest="source", default=str(DEFAULT_OUT),
                      help="the run's output folder (default: build/executed)")
    site.add_argument("--out", default="build/site", help="the site folder (default: build/site)")

    asg = sub.add_parser("assignments", help="write the exercises as an nbgrader course (source version)",
                         description="Write an nbgrader course folder: source/<series>/<notebook>.ipynb with each "
                                     "exercise's solution region, an autograded test per checked exercise and a "
                                     "manually graded answer per think exercise; then use `nbgrader "
                                     "generate_assignment <series>` and `nbgrader autograde <series>` in DIR.")
    asg.add_argument("--out", required=True, help="the course folder (created; existing files are replaced)")
    asg.add_argument("--series", nargs="*", default=None, help="only these series (default: all)")
    asg.add_argument("--profile", default="teach", help="the PROFILE the assignments run in (default: teach)")
    asg.add_argument("--points", type=float, default=1.0, help="points per exercise (default: 1)")

    ans = sub.add_parser("answers", help="print the model answers of a notebook's think exercises (for teachers)",
                         description="Print the model answers of the exercises without code of the given "
                                     "notebooks (registered ids; none = all).")
    ans.add_argument("targets", nargs="*", metavar="ID")
    ans.add_argument("--index", default=None, help="the registry file (default: notebooks/index.yaml)")
    return parser


def _err(message: str) -> None:
    print(f"lionsnb: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- run

def _cmd_run(args: argparse.Namespace) -> int:
    from lionsnb.params import validate_device, validate_profile
    from lionsnb.registry import IndexNotFoundError, RegistryError, load_registry
    from lionsnb.report import format_table
    from lionsnb.runner import TargetError, parse_param_value, run_notebooks

    profile = args.profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    try:
        validate_profile(profile)
        validate_device(args.device)
        if args.jobs < 1:
            raise ParameterError(f"--jobs must be >= 1, got {args.jobs}.")
    except ParameterError as exc:
        source = f" (from ${PROFILE_ENV})" if args.profile is None and os.environ.get(PROFILE_ENV) else ""
        _err(f"{exc}{source if 'profile' in str(exc) else ''}")
        return 2
    params: dict[str, object] = {}
    for name, value in args.param:
        if name in params:
            _err(f"-p {name} given twice; give each parameter once.")
            return 2
        params[name] = parse_param_value(value)
    registry = None
    try:
        registry = load_registry(args.index)
    except IndexNotFoundError as exc:
        if args.index is not None or not args.targets:
            _err(str(exc))
            return 2
    except RegistryError as exc:
        _err(str(exc))
        return 2
    report = args.report or str(Path(args.out) / "report.html")
    try:
        from lionsnb.runner import parse_shard

        shard = parse_shard(args.shard) if args.shard else None
        summary = run_notebooks(args.targets, profile=profile, out_dir=args.out, device=args.device,
                                timeout=args.timeout, jobs=args.jobs, params=params, registry=registry,
                                report_path=report, html=not args.no_html, progress=not args.quiet, shard=shard)
    except (ParameterError, TargetError, RegistryError) as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; partial outputs are in " + str(args.out))
        return 130
    print(format_table(summary))
    print(f"report: {summary.report_path or report}")
    return summary.exit_code


# ----------------------------------------------------------------------------- list

def _cmd_list(args: argparse.Namespace) -> int:
    from lionsnb.registry import RegistryError, load_registry

    try:
        registry = load_registry(args.index)
    except RegistryError as exc:
        _err(str(exc))
        return 2
    print(f"{len(registry)} notebook(s) in {registry.index_path}")
    if not registry.entries:
        return 0
    header = ("id", "method", "accel", f"budget s ({'/'.join(PROFILES)})", "title", "path")
    rows = []
    for e in registry.entries:
        budgets = "/".join(f"{e.budget_s[p]:g}" for p in PROFILES)
        try:
            rel = e.path.relative_to(registry.root).as_posix()
        except ValueError:
            rel = str(e.path)
        rows.append((e.id, e.method, e.accelerator, budgets, e.title, rel))
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


# ----------------------------------------------------------------------------- assignments

def _cmd_assignments(args: argparse.Namespace) -> int:
    from lionsnb.assignments import build_assignments
    from lionsnb.registry import RegistryError

    try:
        summary = build_assignments(args.out, series=args.series, profile=args.profile, points=args.points)
    except (ValueError, RegistryError) as exc:
        _err(str(exc))
        return 2
    for nb_id, counts in summary.items():
        print(f"{nb_id}: {counts['autograded']} autograded, {counts['manual']} manually graded, "
              f"{counts['points']:g} points -> {counts['path']}")
    print(f"nbgrader course: {Path(args.out).resolve()} (cd there; nbgrader generate_assignment <series>)")
    return 0


# ----------------------------------------------------------------------------- site

def _cmd_site(args: argparse.Namespace) -> int:
    from lionsnb.registry import RegistryError
    from lionsnb.site import build_site, page_summary

    try:
        index = build_site(args.source, args.out)
    except (FileNotFoundError, RegistryError) as exc:
        _err(str(exc))
        return 2
    info = page_summary(args.out)
    print(f"site: {index} ({len(info['pages'])} pages, {sum(info['explorers'].values())} explorers; open it in a "
          "browser, no server needed)")
    return 0


# ----------------------------------------------------------------------------- report

def _cmd_report(args: argparse.Namespace) -> int:
    from lionsnb.registry import RegistryError
    from lionsnb.report import format_table, write_report
    from lionsnb.runner import TargetError, merge_summaries

    try:
        summary = merge_summaries(args.merge, args.out)
    except (ParameterError, TargetError, RegistryError, ValueError) as exc:
        _err(str(exc))
        return 2
    report = Path(args.report or Path(args.out) / "report.html")
    summary.report_path = str(write_report(summary, report))
    print(format_table(summary))
    print(f"report: {summary.report_path}")
    return summary.exit_code


# ----------------------------------------------------------------------------- answers

def _cmd_answers(args: argparse.Namespace) -> int:
    import importlib

    from lionsnb.registry import RegistryError, known_ids_text, load_registry

    try:
        registry = load_registry(args.index)
    except RegistryError as exc:
        _err(str(exc))
        return 2
    entries = []
    for target in args.targets or registry.ids:
        entry = registry.find(target)
        if entry is None:
            _err(f"unknown notebook {target!r}; registered ids: {known_ids_text(registry.ids)}")
            return 2
        entries.append(entry)
    for entry in entries:
        answers = getattr(importlib.import_module(f"lionsnb.{entry.method}"), "MODEL_ANSWERS", {})
        print(f"# {entry.id}: {entry.title}")
        if not answers:
            print("(no think exercises: every exercise has a checked reference solution)\n")
        for number, text in sorted(answers.items()):
            print(f"Exercise {number}. {text}\n")
    return 0


# ----------------------------------------------------------------------------- doctor

class _Doctor:
    def __init__(self) -> None:
        self.fails = 0
        self.warns = 0

    def ok(self, text: str) -> None:
        print(f"  ok    {text}")

    def warn(self, text: str) -> None:
        self.warns += 1
        print(f"  warn  {text}")

    def fail(self, text: str) -> None:
        self.fails += 1
        print(f"  FAIL  {text}")


def _version_of(module: str) -> str | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return None
    return str(getattr(mod, "__version__", "installed"))


def _cmd_doctor(args: argparse.Namespace) -> int:
    import importlib.util
    import platform
    import tempfile

    from lionsnb import __version__

    d = _Doctor()
    print(f"lionsnb {__version__} doctor")
    py = sys.version_info
    if py >= (3, 10):
        d.ok(f"Python {platform.python_version()} ({sys.executable})")
    else:
        d.fail(f"Python {platform.python_version()}: lionsnb needs Python >= 3.10")

    required = {"torch": "pip install torch (pick the build for your machine, see README)",
                "papermill": "pip install papermill", "nbformat": "pip install nbformat",
                "ipywidgets": "pip install ipywidgets", "matplotlib": "pip install matplotlib"}
    for module, fix in required.items():
        version = _version_of(module)
        if version is None:
            d.fail(f"{module} is not importable: {fix}")
        else:
            d.ok(f"{module} {version}")

    try:
        import torch

        if torch.cuda.is_available():
            names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            d.ok(f"CUDA available: {torch.cuda.device_count()} GPU(s) ({names})")
        else:
            d.ok("CUDA not available: notebooks run on CPU (GPU notebooks are skipped)")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            d.ok("MPS (Apple GPU) available")
        else:
            d.ok("MPS not available")
    except Exception as exc:  # noqa: BLE001
        d.warn(f"could not query CUDA/MPS: {type(exc).__name__}: {exc}")

    omp = os.environ.get("OMP_WAIT_POLICY")
    if omp and omp.upper() == "PASSIVE":
        d.ok("OMP_WAIT_POLICY=PASSIVE")
    else:
        d.warn(f"OMP_WAIT_POLICY is {omp or 'not set'}: export OMP_WAIT_POLICY=PASSIVE before running python "
               "(spin-waiting threads slow torch down 6-20x on a busy 2-core machine; the runner sets it for "
               "notebooks it starts)")

    if importlib.util.find_spec("rfc3987_syntax") is not None:
        d.warn("rfc3987_syntax is installed: pip uninstall rfc3987-syntax saves ~3 s per notebook")
    else:
        d.ok("rfc3987_syntax not installed (notebook validation stays fast)")

    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
        d.ok(f"kernel python3: {' '.join(spec.argv[:3])} ({spec.resource_dir})")
    except Exception as exc:  # noqa: BLE001
        d.fail(f"no 'python3' Jupyter kernel ({type(exc).__name__}: {exc}): "
               "pip install ipykernel && python -m ipykernel install --user")

    try:
        from lionsnb.cache import default_cache_dir

        cache = default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".doctor-", delete=True) as f:
            f.write(b"ok")
        d.ok(f"cache dir {cache} is writable")
    except Exception as exc:  # noqa: BLE001
        d.fail(f"cache dir not writable ({type(exc).__name__}: {exc}): set LIONSNB_CACHE to a writable directory")

    from lionsnb.registry import RegistryError, load_registry, unregistered_notebooks

    try:
        registry = load_registry(args.index)
        d.ok(f"registry {registry.index_path}: {len(registry)} notebook(s), every entry exists")
        for entry in registry.entries:
            if importlib.util.find_spec(f"lionsnb.{entry.method}") is None:
                d.warn(f"entry {entry.id!r}: method {entry.method!r} is not a lionsnb subpackage")
        extra = unregistered_notebooks(registry)
        if extra:
            d.warn(f"{len(extra)} notebook(s) not in {registry.index_path.name}: "
                   + ", ".join(str(p.relative_to(registry.root)) for p in extra[:5]))
    except RegistryError as exc:
        d.fail(f"registry: {exc}")

    verdict = "FAIL" if d.fails else ("ok with warnings" if d.warns else "ok")
    print(f"doctor: {verdict} ({d.fails} FAIL, {d.warns} warn)")
    return 1 if d.fails else 0


# ----------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lionsnb`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handlers = {"run": _cmd_run, "list": _cmd_list, "doctor": _cmd_doctor, "answers": _cmd_answers,
                "report": _cmd_report, "site": _cmd_site,
                "assignments": _cmd_assignments}
    try:
        return handlers[args.command](args)
    except BrokenPipeError:  # `lionsnb list | head`: the reader left, nothing to report
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
