"""lionsnb.setup, the Context, devices and seeding."""
from __future__ import annotations

import json
import os

import pytest
import torch

import lionsnb
from lionsnb import context as context_module
from lionsnb.datasets import DatasetUnavailable, register_dataset
from lionsnb.params import PROFILES, Knob, MethodSpec, ParameterError
from lionsnb.runtime import pick_device

SPEC = MethodSpec(name="demo", title="demo", profiles={p: {"n": i} for i, p in enumerate(PROFILES)},
                  knobs={"rho": Knob(0.05, "radius", float, low=0.0)})


def test_setup_returns_context(capsys):
    ctx = lionsnb.setup("smoke", method=SPEC, seed=3, device="cpu", rho=0.1)
    banner = capsys.readouterr().out
    assert "profile smoke" in banner and "seed 3" in banner and "rho=0.1" in banner
    assert ctx.profile == "smoke" and ctx.sizes.n == 0 and ctx.knobs.rho == 0.1
    assert ctx.device == torch.device("cpu")


def test_setup_seeds_everything():
    lionsnb.setup("smoke", method=SPEC, seed=7, device="cpu")
    a = torch.rand(3)
    lionsnb.setup("smoke", method=SPEC, seed=7, device="cpu")
    assert torch.equal(a, torch.rand(3))


def test_setup_by_method_name():
    ctx = lionsnb.setup("smoke", method="sharpness.nb00_start_here", device="cpu")
    assert ctx.method.name == "sharpness.nb00_start_here" and ctx.knobs.lr == ctx.method.knobs["lr"].default
    with pytest.raises(ParameterError, match="unknown method 'sharpnes'"):
        lionsnb.setup("smoke", method="sharpnes")


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": -1.0}, "RHO = -1.0 is not valid"),
    ({"radius": 0.1}, "unknown parameter 'RADIUS'"),
    ({"device": "tpu"}, "DEVICE = 'tpu'"),
    ({"seed": -2}, "SEED"),
    ({"metrics_path": None}, "METRICS_PATH"),
])
def test_setup_rejects_bad_values(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        lionsnb.setup("smoke", method=SPEC, **kwargs)


def test_setup_rejects_unknown_profile():
    with pytest.raises(ParameterError, match="unknown profile 'fast'"):
        lionsnb.setup("fast", method=SPEC)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ParameterError, match="no usable CUDA GPU.*Use DEVICE = 'auto' or 'cpu'"):
        pick_device("cuda")


def test_auto_device_is_available():
    assert pick_device("auto").type in ("cuda", "mps", "cpu")


def test_env_profile_overrides_outside_papermill(monkeypatch):
    monkeypatch.setenv("LIONSNB_PROFILE", "smoke")
    assert lionsnb.setup("teach", method=SPEC, device="cpu").profile == "smoke"
    monkeypatch.setenv("LIONSNB_PROFILE", "tiny")
    with pytest.raises(ParameterError, match="unknown profile 'tiny'"):
        lionsnb.setup("teach", method=SPEC, device="cpu")


def test_papermill_injected_names_are_validated(monkeypatch):
    """papermill only warns about unknown names; setup reads its injected cell and refuses them."""
    monkeypatch.setattr(context_module, "injected_parameters", lambda: {"PROFILE": "smoke", "RH0": 0.1})
    with pytest.raises(ParameterError, match="unknown parameter 'RH0'.*Did you mean 'RHO'"):
        lionsnb.setup("smoke", method=SPEC, device="cpu")


def test_injected_profile_beats_env(monkeypatch):
    monkeypatch.setenv("LIONSNB_PROFILE", "full")
    monkeypatch.setattr(context_module, "injected_parameters", lambda: {"PROFILE": "smoke"})
    assert lionsnb.setup("smoke", method=SPEC, device="cpu").profile == "smoke"


def test_injected_parameters_parses_papermill_cell(monkeypatch):
    class Shell:
        user_ns = {"In": ["", "PROFILE = 'teach'", '# Parameters\nPROFILE = "smoke"\nRHO = 0.2\n', "x = 1"]}

    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert context_module.injected_parameters() == {"PROFILE": "smoke", "RHO": 0.2}


def test_missing_dataset_names_the_fix():
    register_dataset("absent", "a dataset that is never there", lambda: "run `make data` first.",
                     lambda: None)
    spec = MethodSpec(name="needs_data", title="x", profiles={p: {} for p in PROFILES}, datasets=("absent",))
    with pytest.raises(DatasetUnavailable, match="dataset 'absent' is not available: run `make data` first"):
        lionsnb.setup("smoke", method=spec, device="cpu")


def test_record_writes_json_atomically(tmp_path, capsys):
    path = tmp_path / "sub" / "m.json"
    ctx = lionsnb.setup("smoke", method=SPEC, device="cpu", metrics_path=str(path))
    out = ctx.record(acc=torch.tensor(0.5), n=3, ok=True)
    assert out == {"acc": 0.5, "n": 3, "ok": True}
    doc = json.loads(path.read_text())
    assert doc["metrics"] == out and doc["meta"]["profile"] == "smoke" and doc["meta"]["knobs"] == {"rho": 0.05}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temporary file left behind
    assert (path.stat().st_mode & 0o777) == 0o644 & ~_umask()  # readable by a course web server
    capsys.readouterr()
    # shown once, as the table that ends the notebook's last cell; nothing printed besides
    assert "acc" in repr(out) and "<table" in out._repr_html_() and "m.json" in out._repr_html_()
    assert capsys.readouterr().out == ""


def test_record_rejects_bad_metrics_and_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    ctx = lionsnb.setup("smoke", method=SPEC, device="cpu", metrics_path=str(path))
    ctx.record(acc=0.9)
    before = path.read_text()
    with pytest.raises(ValueError, match="non-finite"):
        ctx.record(acc=float("nan"))
    with pytest.raises(TypeError, match="must be a scalar"):
        ctx.record(acc=torch.ones(3))
    with pytest.raises(TypeError, match="must be a number"):
        ctx.record(acc=[1, 2])
    assert path.read_text() == before


def test_seed_for_is_stable_and_distinct():
    ctx = lionsnb.setup("smoke", method=SPEC, device="cpu", seed=1)
    assert ctx.seed_for("a") == ctx.seed_for("a") != ctx.seed_for("b")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
