"""Profiles, method specifications and parameter validation.

Every method subpackage declares one :class:`MethodSpec`: its sizes for the three
profiles and its knobs (the method's tunable parameters, e.g. a perturbation
radius).  Notebooks declare the same knobs in upper case in their ``parameters``
cell; :func:`lionsnb.setup` validates both the names and the values, so that a
typo or a bad value stops the notebook with a message that says what to do.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The three execution profiles, from quickest to largest.
PROFILES: tuple[str, ...] = ("smoke", "teach", "full")
#: What each profile is for (shown by ``lionsnb list`` and in errors).
PROFILE_HELP: dict[str, str] = {
    "smoke": "CI: every code path, <= 60 s per notebook on 2 CPU cores (150 s for one that loads a real LLM)",
    "teach": "the default: <= 5 min per notebook on a 2-core laptop, big enough to show the effect",
    "full": "GPU runners: the scale closest to the paper we can reach",
}
DEFAULT_PROFILE = "teach"
#: Parameters every notebook has, besides its method's knobs.
COMMON_PARAMETERS: tuple[str, ...] = ("PROFILE", "SEED", "DEVICE", "METRICS_PATH")
#: names a knob cannot have: they are the keyword arguments of ``setup`` itself
RESERVED_KNOBS: tuple[str, ...] = ("profile", "method", "seed", "device", "metrics_path", "cache_dir")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


class ParameterError(ValueError):
    """A notebook parameter, profile or knob value is invalid; the message says how to fix it."""


def suggest(name: str, known: Iterable[str]) -> str:
    """' Did you mean X?' for the closest known name, or ''."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Knob:
    """One tunable parameter of a method, with its default and its valid range.

    ``low``/``high`` bound numeric knobs (inclusive unless ``low_open``/``high_open``);
    ``choices`` restricts any knob to a fixed set of values.
    """

    default: Any
    help: str
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """The valid values in words, e.g. ``a float > 0``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = [f"a{'n' if self.kind is int else ''} {self.kind.__name__}"]
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if len(parts) > 1 else "")

    def validate(self, name: str, value: Any) -> Any:
        """Return ``value`` (ints promoted to float for float knobs) or raise ParameterError."""
        bad = ParameterError(
            f"{name} = {value!r} is not valid: {name} ({self.help}) must be {self.describe()}. "
            f"Fix the value in the notebook's parameters cell (default: {self.default!r})."
        )
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
        elif not isinstance(value, self.kind) or isinstance(value, bool):
            raise bad
        if self.choices is not None and value not in self.choices:
            raise bad
        if self.kind in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                raise bad
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                raise bad
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                raise bad
        return value


class Sizes(Mapping[str, Any]):
    """Read-only settings of one method (its sizes for one profile, or its knobs), as attributes.

    ``ctx.sizes.epochs``; an unknown name raises an error listing the known ones.
    """

    def __init__(self, method: str, profile: str, values: Mapping[str, Any], what: str = "size"):
        self._method, self._profile, self._values, self._what = method, profile, dict(values), what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"profile {self._profile!r} of method {self._method!r} has no {self._what} {name!r}; "
                f"known: {', '.join(sorted(self._values))}.{suggest(name, self._values)}"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def cache_token(self) -> dict[str, Any]:
        """What a cached computation given these settings depends on: the values themselves."""
        return dict(self._values)

    def _table(self):
        from lionsnb.display import table

        return table({k: v for k, v in self._values.items()},
                     title=f"{self._what}s of {self._method}, profile {self._profile}")

    def __repr__(self) -> str:
        return repr(self._table())

    def _repr_html_(self) -> str:
        return self._table()._repr_html_()


@dataclass(frozen=True)
class MethodSpec:
    """What a method subpackage declares: sizes per profile, knobs and required datasets."""

    name: str
    title: str
    profiles: Mapping[str, Mapping[str, Any]]
    knobs: Mapping[str, Knob] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [p for p in PROFILES if p not in self.profiles]
        extra = [p for p in self.profiles if p not in PROFILES]
        if missing or extra:
            raise ValueError(
                f"method {self.name!r} must define sizes for exactly the profiles {PROFILES}; "
                f"missing {missing}, unknown {extra}"
            )
        keys = {p: set(v) for p, v in self.profiles.items()}
        if len({frozenset(k) for k in keys.values()}) != 1:
            raise ValueError(f"method {self.name!r}: every profile must define the same sizes, got {keys}")
        for knob in self.knobs:
            if knob != knob.lower() or not knob.isidentifier():
                raise ValueError(f"method {self.name!r}: knob names are lower-case identifiers, got {knob!r}")
            if knob in RESERVED_KNOBS:
                raise ValueError(f"method {self.name!r}: the knob name {knob!r} is taken by setup's own arguments "
                                 f"({', '.join(RESERVED_KNOBS)}); name it after what it sets, e.g. "
                                 f"'{knob}_name' or a word of the method")

    def parameter_names(self) -> tuple[str, ...]:
        """All names a notebook of this method may have in its parameters cell."""
        return COMMON_PARAMETERS + tuple(k.upper() for k in self.knobs)

    def sizes(self, profile: str) -> Sizes:
        return Sizes(self.name, validate_profile(profile), self.profiles[profile])

    def validate_knobs(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Check names and values of the knobs given to setup; fill in defaults for the rest."""
        out = {}
        for name, value in knobs.items():
            if name not in self.knobs:
                raise ParameterError(
                    f"unknown parameter {name.upper()!r} for method {self.name!r}: known parameters are "
                    f"{', '.join(self.parameter_names())}.{suggest(name.upper(), self.parameter_names())}"
                )
            out[name] = self.knobs[name].validate(name.upper(), value)
        for name, knob in self.knobs.items():
            out.setdefault(name, knob.default)
        return out


def validate_profile(profile: Any) -> str:
    """Return the profile name or raise ParameterError naming the valid ones."""
    if profile not in PROFILES:
        hint = suggest(str(profile), PROFILES)
        raise ParameterError(
            f"unknown profile {profile!r}: use one of {', '.join(PROFILES)} "
            f"(smoke for CI, teach by default, full on a GPU).{hint}"
        )
    return profile


def validate_device(device: Any) -> str:
    """Check the spelling of a device request (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Whether the device exists is checked by :func:`lionsnb.runtime.pick_device`.
    """
    import re

    if isinstance(device, str) and (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        return device
    raise ParameterError(f"DEVICE = {device!r} is not valid: use one of {', '.join(DEVICES)} (or 'cuda:N').")


def validate_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParameterError(f"SEED = {seed!r} is not valid: use a non-negative integer, e.g. SEED = 0.")
    return seed


def check_parameter_names(names: Iterable[str], spec: MethodSpec) -> None:
    """Raise ParameterError for any name that is not a parameter of ``spec``'s notebooks."""
    known = spec.parameter_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"passed to a {spec.name!r} notebook; known parameters are {', '.join(known)}."
            f"{suggest(unknown[0], known)} Check the -p/--param names of your papermill or lionsnb run call."
        )
