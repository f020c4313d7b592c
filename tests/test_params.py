"""Profiles, knobs and parameter-name validation."""
from __future__ import annotations

import math

import pytest

from lionsnb.params import (
    PROFILES,
    Knob,
    MethodSpec,
    ParameterError,
    check_parameter_names,
    validate_profile,
    validate_seed,
)


def make_spec(**extra) -> MethodSpec:
    return MethodSpec(
        name="demo", title="demo",
        profiles={p: {"epochs": i + 1} for i, p in enumerate(PROFILES)},
        knobs={"rho": Knob(0.05, "radius", float, low=0.0), "lr": Knob(0.1, "step", float, low=0.0, low_open=True),
               "steps": Knob(3, "steps", int, low=1), "mode": Knob("a", "mode", str, choices=("a", "b"))},
        **extra,
    )


def test_profiles_validated_with_suggestion():
    assert validate_profile("smoke") == "smoke"
    with pytest.raises(ParameterError, match="unknown profile 'teech'.*Did you mean 'teach'"):
        validate_profile("teech")


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(ParameterError, match="SEED"):
        validate_seed(seed)


def test_knob_values():
    spec = make_spec()
    out = spec.validate_knobs({"rho": 0, "lr": 1})
    assert out == {"rho": 0.0, "lr": 1.0, "steps": 3, "mode": "a"}
    assert isinstance(out["lr"], float)


@pytest.mark.parametrize("knobs, message", [
    ({"rho": -0.1}, "RHO = -0.1 is not valid.*>= 0"),
    ({"lr": 0.0}, "LR = 0.0 is not valid.*> 0"),
    ({"lr": math.nan}, "LR = nan"),
    ({"steps": 2.5}, "STEPS = 2.5"),
    ({"steps": True}, "STEPS = True"),
    ({"mode": "c"}, "one of 'a', 'b'"),
    ({"rhoo": 0.1}, "unknown parameter 'RHOO'.*Did you mean 'RHO'"),
])
def test_bad_knobs_name_the_fix(knobs, message):
    with pytest.raises(ParameterError, match=message):
        make_spec().validate_knobs(knobs)


def test_parameter_names():
    spec = make_spec()
    assert spec.parameter_names() == ("PROFILE", "SEED", "DEVICE", "METRICS_PATH", "RHO", "LR", "STEPS", "MODE")
    check_parameter_names(["PROFILE", "RHO"], spec)
    with pytest.raises(ParameterError, match="'EPOCHS'"):
        check_parameter_names(["PROFILE", "EPOCHS"], spec)


def test_spec_requires_all_profiles_and_same_sizes():
    with pytest.raises(ValueError, match="missing"):
        MethodSpec(name="x", title="x", profiles={"smoke": {}, "teach": {}})
    with pytest.raises(ValueError, match="same sizes"):
        MethodSpec(name="x", title="x", profiles={"smoke": {"a": 1}, "teach": {"a": 1}, "full": {"b": 1}})
    with pytest.raises(ValueError, match="lower-case"):
        MethodSpec(name="x", title="x", profiles={p: {} for p in PROFILES}, knobs={"RHO": Knob(0.1, "r")})


def test_sizes_attribute_access():
    sizes = make_spec().sizes("teach")
    assert sizes.epochs == 2 and dict(sizes) == {"epochs": 2}
    with pytest.raises(AttributeError, match="no size 'epoch'.*Did you mean 'epochs'"):
        sizes.epoch
