"""The artifact cache: keying, round trips, corruption and atomic writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lionsnb.cache import ArtifactCache, cache_key
from lionsnb.files import atomic_write_bytes


def counting(value):
    calls = []

    def fn():
        calls.append(1)
        return value

    return fn, calls


def test_compute_once_then_load(tmp_path):
    cache = ArtifactCache(tmp_path, method="m", profile="smoke")
    fn, calls = counting({"w": torch.arange(3.0), "acc": 0.5})
    first = cache.get("run", fn, lr=0.1)
    second = cache.get("run", fn, lr=0.1)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    assert torch.equal(first["w"], second["w"]) and second["acc"] == 0.5


@pytest.mark.parametrize("change", [
    dict(key={"lr": 0.2}), dict(profile="teach"), dict(version="9.9"), dict(method="other"), dict(name="run2"),
])
def test_key_profile_version_method_name_all_matter(tmp_path, change):
    base = dict(method="m", profile="smoke", version="0.1")
    cache = ArtifactCache(tmp_path, **base)
    cache.get("run", lambda: 1, lr=0.1)
    other = ArtifactCache(tmp_path, **{**base, **{k: v for k, v in change.items() if k in base}})
    fn, calls = counting(2)
    other.get(change.get("name", "run"), fn, **change.get("key", {"lr": 0.1}))
    assert calls == [1]


def test_key_is_order_independent_and_float_exact():
    assert cache_key(a=1, b=[0.1, 2]) == cache_key(b=[0.1, 2], a=1)
    assert cache_key(x=0.1) != cache_key(x=0.1000001)
    assert cache_key(x=np.arange(3)) != cache_key(x=np.arange(4))
    with pytest.raises(TypeError, match="cache keys"):
        cache_key(x=object())


def test_corrupt_entry_is_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path, method="m", profile="smoke")
    cache.get("run", lambda: torch.ones(2))
    path = cache.path_for("run")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        value = cache.get("run", lambda: torch.zeros(2))
    assert torch.equal(value, torch.zeros(2))
    assert torch.equal(cache.get("run", lambda: torch.ones(5)), torch.zeros(2))  # the repaired entry loads


def test_weights_only_refuses_code(tmp_path):
    """A pickled object that would run code on load is treated as corrupt, never executed."""
    cache = ArtifactCache(tmp_path, method="m", profile="smoke")
    path = cache.path_for("evil")
    path.parent.mkdir(parents=True)
    torch.save({"x": ArtifactCache}, path)  # a class reference: not allowed by weights_only
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.get("evil", lambda: 3) == 3


def test_numpy_is_stored_as_tensors_consistently(tmp_path):
    cache = ArtifactCache(tmp_path, method="m", profile="smoke")
    first = cache.get("np", lambda: {"a": np.arange(3.0), "s": np.float32(2.5), "t": (1, "x")})
    second = cache.get("np", lambda: None)
    for value in (first, second):
        assert isinstance(value["a"], torch.Tensor) and value["s"] == 2.5 and value["t"] == (1, "x")


def test_unstorable_value_is_a_clear_error(tmp_path):
    cache = ArtifactCache(tmp_path, method="m", profile="smoke")
    with pytest.raises(TypeError, match="state_dict"):
        cache.get("model", lambda: torch.nn.Linear(2, 2))


def test_disabled_cache_always_computes(tmp_path):
    cache = ArtifactCache(tmp_path, method="m", profile="smoke", enabled=False)
    fn, calls = counting(1)
    cache.get("x", fn)
    cache.get("x", fn)
    assert len(calls) == 2 and not any(tmp_path.rglob("*.pt"))


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("lionsnb.files.os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_bad_name(tmp_path):
    with pytest.raises(ValueError, match="cache name"):
        ArtifactCache(tmp_path).path_for("../escape")
