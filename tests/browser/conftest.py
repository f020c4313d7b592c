"""The browser tier (`make test-browser`): Debian's chromium driven by Playwright (no browser download).

Collected only when LIONSNB_BROWSER=1 (tests/conftest.py ignores this folder otherwise). It needs an executed smoke
run in build/test-smoke (the notebook tests of `make test` write it; `make test-browser` runs it when missing).
Screenshots and the measured keypress-to-new-image latencies go to build/browser/.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("LIONSNB_BROWSER_RUN", ROOT / "build" / "test-smoke"))
OUT = ROOT / "build" / "browser"
#: the flags that keep chromium from calling home (the machine's network is closed; each refused call costs time)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
LATENCIES: dict[str, dict[str, float]] = {"site": {}, "lab": {}}

#: JavaScript: resolve with the ms from the next keydown/change to the new image decoded in `img`
WATCH_JS = """(img) => { window.__lx = new Promise((resolve) => {
  let t0 = null;
  const start = () => { if (t0 === null) { t0 = performance.now(); } };
  document.addEventListener('keydown', start, {capture: true, once: true});
  document.addEventListener('change', start, {capture: true, once: true});
  document.addEventListener('input', start, {capture: true, once: true});
  const obs = new MutationObserver(() => { obs.disconnect();
    const done = () => resolve(performance.now() - (t0 === null ? performance.now() : t0));
    img.decode().then(done, done); });
  obs.observe(img, {attributes: true, attributeFilter: ['src']});
  setTimeout(() => { obs.disconnect(); resolve(-1); }, 20000);
}); }"""


def chromium_path() -> str | None:
    """LIONSNB_CHROMIUM, else chromium on the PATH (Debian: /usr/bin/chromium)."""
    for cand in (os.environ.get("LIONSNB_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium: install Debian's package (apt-get install chromium) or set LIONSNB_CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install playwright (no browser download is needed)")
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()
    (OUT / "latency.json").write_text(json.dumps(_latency_report(), indent=2) + "\n", encoding="utf-8")


def _latency_report() -> dict:
    out: dict = {"goal_ms": 100, "unit": "ms from the keypress to the new image decoded in the page"}
    for tier, values in LATENCIES.items():
        ok = [v for v in values.values() if v >= 0]
        out[tier] = {"widgets": values, "median_ms": sorted(ok)[len(ok) // 2] if ok else None,
                     "max_ms": max(ok) if ok else None, "over_goal": sum(v > 100 for v in ok)}
    return out


@pytest.fixture(scope="session")
def smoke_run() -> Path:
    if not (RUN_DIR / "results.json").is_file():
        pytest.skip(f"no executed smoke run in {RUN_DIR}: run `make test` (or `lionsnb run --profile smoke --out "
                    f"{RUN_DIR}`) first")
    return RUN_DIR


@pytest.fixture(scope="session")
def site(smoke_run) -> Path:
    from lionsnb.site import build_site

    out = ROOT / "build" / "browser-site"
    build_site(smoke_run, out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab_url(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (no token, private settings and workspaces), notebooks in the smoke profile.

    It serves a copy of notebooks/ (and data/), with autosave off: running a notebook in the browser must never
    write outputs into the repository's notebooks.
    """
    port = free_port()
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "data").symlink_to(ROOT / "data")
    settings = home / "settings" / "@jupyterlab"
    for plugin, content in (("apputils-extension/notification", '{"fetchNews": "false", "checkForUpdates": false}'),
                            ("docmanager-extension/plugin", '{"autosave": false}'),
                            ("notebook-extension/tracker", '{"autoStartDefaultKernel": true}')):
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    env = dict(os.environ, LIONSNB_PROFILE="smoke", JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), OMP_WAIT_POLICY="PASSIVE")
    env.pop("LIONSNB_HEADLESS", None)
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--allow-root",
         "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited: {(home / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
