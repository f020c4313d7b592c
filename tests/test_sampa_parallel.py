"""SAMPa's parallel gradient backends give the sequential reference's parameters and BN buffers.

Everything runs in float64: correct backends agree to about 1e-15, so a
tolerance of 1e-10 separates round-off from a wrong gradient, batch or BatchNorm convention.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import multiprocessing
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from lionsnb.models import MLP
from lionsnb.sam.losses import smooth_cross_entropy
from lionsnb.sam.optim import SAMPa, SequentialPair
from lionsnb.sam.parallel import ConcurrentPair, DistributedRunError, VmapPair, run_distributed_sampa

ROOT = Path(__file__).resolve().parents[1]
# smooth_cross_entropy's scatter_ has no vmap batching rule: torch warns that it falls back to a loop
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

HYPER = dict(lr=0.1, rho=0.1, momentum=0.9, weight_decay=5e-4)
N_STEPS = 4
LAMS = [0.0, 0.2, 0.5]
ATOL = 1e-10

# picklable builders: the distributed ranks rebuild the architecture in their own processes
bn_mlp = partial(MLP, 6, [12, 12], 4, batch_norm=True)
plain_mlp = partial(MLP, 6, [12, 12], 4, batch_norm=False)


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_batches(n: int = N_STEPS, size: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=generator) * 2 + 0.5, torch.randint(0, 4, (size,), generator=generator))
            for _ in range(n)]


def initial_model(build=bn_mlp, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build().train()


def train(model: torch.nn.Module, backend, lam: float, batches) -> tuple[dict, list[float]]:
    opt = SAMPa(model, smooth_cross_entropy, lam=lam, backend=backend, **HYPER)
    losses = [opt.step(x, y) for x, y in batches]
    return copy.deepcopy(model.state_dict()), losses


def assert_same_state(actual: dict, expected: dict, atol: float = ATOL) -> None:
    """Every parameter and buffer (running_mean/var, num_batches_tracked) agrees."""
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        assert got.dtype == want.dtype, name
        if want.is_floating_point():
            diff = (got - want).abs().max().item()
            assert diff <= atol, f"{name}: max |difference| {diff:.3g} > {atol:g}"
        else:
            assert torch.equal(got, want), f"{name}: {got} != {want}"


@pytest.fixture(scope="module")
def reference() -> dict:
    """SequentialPair's final state and losses for each lam, on the BN MLP and on the plain MLP."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return {(key, lam): train(initial_model(build), SequentialPair(), lam, make_batches())
                for key, build in (("bn", bn_mlp), ("plain", plain_mlp)) for lam in LAMS}
    finally:
        torch.set_default_dtype(previous)


def test_the_comparison_is_sensitive(reference):
    assert reference["bn", 0.2][0]["net.0.weight"].dtype == torch.float64
    """The reference moved the weights and BN statistics, and SAMPa-0 is not SGD on the lagged batch
    (what the official script computes at lam = 0), so equal states below mean something."""
    start = initial_model().state_dict()
    final, _ = reference["bn", 0.0]
    assert (final["net.0.weight"] - start["net.0.weight"]).abs().max() > 1e-2
    assert (final["net.1.running_mean"] - start["net.1.running_mean"]).abs().max() > 1e-2
    assert final["net.1.num_batches_tracked"].item() == N_STEPS  # one counted pass per step
    model = initial_model()
    sgd = torch.optim.SGD(model.parameters(), lr=HYPER["lr"], momentum=HYPER["momentum"],
                          weight_decay=HYPER["weight_decay"])
    batches = make_batches()
    for prev in [batches[0], *batches[:-1]]:  # official lam = 0: SGD on the lagged batch
        sgd.zero_grad()
        smooth_cross_entropy(model(prev[0]), prev[1]).mean().backward()
        sgd.step()
    assert (model.state_dict()["net.0.weight"] - final["net.0.weight"]).abs().max() > 1e-6
    for lam in (0.2, 0.5):
        assert (reference["bn", lam][0]["net.0.weight"] - final["net.0.weight"]).abs().max() > 1e-6


@pytest.mark.parametrize("lam", LAMS)
def test_concurrent_threads_match_sequential(reference, lam):
    backend = ConcurrentPair()
    try:
        state, losses = train(initial_model(), backend, lam, make_batches())
    finally:
        backend.close()
    expected_state, expected_losses = reference["bn", lam]
    assert_same_state(state, expected_state)
    assert losses == pytest.approx(expected_losses, abs=ATOL)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device: ConcurrentPair's two-stream path only runs on CUDA")
@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5])
def test_concurrent_cuda_streams_match_sequential(reference, lam):
    device = torch.device("cuda")
    model = initial_model().to(device)
    batches = [(x.to(device), y.to(device)) for x, y in make_batches()]
    state, losses = train(model, ConcurrentPair(), lam, batches)
    expected_state, expected_losses = reference["bn", lam]
    assert_same_state({k: v.cpu() for k, v in state.items()}, expected_state)
    assert losses == pytest.approx(expected_losses, abs=ATOL)


@pytest.mark.parametrize("lam", LAMS)
def test_vmap_matches_sequential_without_batchnorm(reference, lam):
    state, losses = train(initial_model(plain_mlp), VmapPair(), lam, make_batches())
    expected_state, expected_losses = reference["plain", lam]
    assert_same_state(state, expected_state)
    assert losses == pytest.approx(expected_losses, abs=ATOL)


def test_vmap_rejects_batchnorm_and_unequal_batches():
    opt = SAMPa(initial_model(), smooth_cross_entropy, backend=VmapPair(), **HYPER)
    with pytest.raises(ValueError, match="BatchNorm"):
        opt.step(*make_batches(1)[0])
    opt = SAMPa(initial_model(plain_mlp), smooth_cross_entropy, backend=VmapPair(), **HYPER)
    opt.step(*make_batches(1, size=16)[0])
    with pytest.raises(ValueError, match="equal shapes"):
        opt.step(*make_batches(1, size=12)[0])


@pytest.mark.parametrize("lam", LAMS)
def test_distributed_matches_sequential(reference, lam):
    torch.manual_seed(123)  # the launcher's own build gets other weights: initial_state must win
    run = run_distributed_sampa(bn_mlp, make_batches(), lam=lam, loss_fn=smooth_cross_entropy,
                                initial_state=initial_model().state_dict(), timeout_s=120, **HYPER)
    expected_state, expected_losses = reference["bn", lam]
    assert run.backend == "gloo" or torch.cuda.device_count() >= 2
    assert_same_state(run.state_dict, expected_state)
    for name, tensor in run.state_dict.items():  # the ranks apply one identical update
        assert torch.equal(tensor, run.rank1_state_dict[name]), name
    assert run.losses == pytest.approx(expected_losses, abs=ATOL)
    assert len(run.step_times) == N_STEPS and all(t > 0 for t in run.step_times)


def test_distributed_child_failure_is_reported():
    """Rank 1 fails at step 2 (its batch has a target out of range); rank 0 is blocked in the all-reduce
    and must be stopped; the error carries rank 1's traceback."""
    batches = make_batches(3)
    batches[1][1][0] = 99  # rank 1 computes on the current batch, rank 0 on the previous one
    with pytest.raises(DistributedRunError, match="rank 1 failed first") as info:
        run_distributed_sampa(bn_mlp, batches, lam=0.2, loss_fn=smooth_cross_entropy, timeout_s=120, **HYPER)
    message = str(info.value)
    assert "out of bounds" in message and "Traceback" in message


def _hanging_loss(logits, targets):
    """Picklable by reference (this module is importable in the ranks): never returns in a rank."""
    time.sleep(600)
    return smooth_cross_entropy(logits, targets)


def test_distributed_timeout_kills_the_ranks():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="killed"):
        run_distributed_sampa(bn_mlp, make_batches(1), lam=0.2, loss_fn=_hanging_loss, timeout_s=3, **HYPER)
    assert time.monotonic() - start < 60
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_distributed_rejects_what_cannot_reach_the_ranks():
    with pytest.raises(TypeError, match="picklable"):
        run_distributed_sampa(lambda: bn_mlp(), make_batches(1), lam=0.2, **HYPER)
    with pytest.raises(ValueError, match="world_size must be 2"):
        run_distributed_sampa(bn_mlp, make_batches(1), lam=0.2, world_size=3, **HYPER)


def _load_benchmark():
    """The benchmark module; ``benchmarks/sam_step.py`` is a thin wrapper that must expose its ``main``."""
    spec = importlib.util.spec_from_file_location("sam_step_script", ROOT / "benchmarks" / "sam_step.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from lionsnb.sam import benchmark

    assert script.main is benchmark.main
    return benchmark


def test_benchmark_runs(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    result = bench.main(["--device", "cpu", "--model", "mlp", "--width", "16", "--batch", "8", "--steps", "3",
                         "--warmup", "1", "--no-batch-norm", "--json", str(out)])
    table = capsys.readouterr().out
    for name in bench.METHODS:
        assert name in table
        row = result["methods"][name]
        assert len(row["times_ms"]) == 3 and all(t > 0 for t in row["times_ms"]), name
        assert row["ms_per_step"] > 0
    assert "SAMPa / SAM" in table
    assert json.loads(out.read_text())["methods"].keys() == set(bench.METHODS)
    # with BatchNorm, the vmap backend is reported as skipped instead of failing
    result = bench.main(["--model", "mlp", "--width", "8", "--batch", "4", "--steps", "1", "--warmup", "0",
                         "--methods", "sgd,sampa-vmap"])
    assert result["methods"]["sampa-vmap"]["ms_per_step"] is None
    assert "skipped" in capsys.readouterr().out
