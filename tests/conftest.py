"""Shared test settings: a private cache dir, the passive OpenMP policy and a headless widget mode."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own LIONSNB_CACHE and no LIONSNB_PROFILE from the caller's shell."""
    monkeypatch.setenv("LIONSNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LIONSNB_PROFILE", raising=False)
    yield


#: the browser tier runs only through `make test-browser` (it needs chromium and an executed smoke run)
collect_ignore = [] if os.environ.get("LIONSNB_BROWSER", "") not in ("", "0") else ["browser"]
