"""Width x (lr, rho) sweeps of SAM on the width MLP, trained as batches of independent networks.

A transfer study trains the same architecture at many grid points and seeds: at small widths a CPU spends most of
its time in Python overhead, one network at a time. :func:`train_grid` trains ``M`` independent copies of
:class:`~lionsnb.mup2.model.WidthMLP` at once, with their weights stacked as ``(M, out, in)`` tensors and batched
matrix products, each copy with its own learning rate, radius and seed. It performs exactly the update of the SAM
optimizer of :mod:`lionsnb.sam` with muP^2's per-layer groups (:func:`~lionsnb.mup2.model.make_sam`):

    e^l   = rho rho_l g^l / (||(s_k g^k)_k||_2 + 1e-12)       (per network; rho_l, s_l from the factor table)
    W^l  <- W^l - lr lr_l buf^l,   buf^l = momentum buf^l + grad^l L(W + e)   (torch.optim.SGD, no weight decay)

with the initial weights drawn by ``WidthMLP`` under ``torch.manual_seed(seed)`` and the batches in the order of
:func:`lionsnb.training.fit` with the same seed, so that a batched network equals the one-network run (a unit test
checks it in float64). rho = 0 is SGD: one gradient per step.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.datasets import Split
from lionsnb.mup2.model import WidthMLP
from lionsnb.mup2.scaling import LAYERS, scaling_table

#: the two parameterisations compared in the transfer study: label -> (factor table, WidthMLP initialisation)
TRANSFER_SCHEMES = {"SP-SAM": ("sp", "sp"), "muP2-SAM": ("mup2", "mup")}
EPS = 1e-12


def initial_weights(scheme: str, width: int, d_in: int, d_out: int, base_width: int, seed: int
                    ) -> list[torch.Tensor]:
    """The (input, hidden, output) weights ``WidthMLP`` draws under ``torch.manual_seed(seed)``."""
    _, init = TRANSFER_SCHEMES[scheme]
    torch.manual_seed(seed)
    model = WidthMLP(d_in, width, d_out, init, base_width)
    return [getattr(model, name).weight.detach().clone() for name in LAYERS]


def forward(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of M stacked width MLPs: ``x`` (M, B, d_in) -> (M, B, d_out), as ``WidthMLP.forward``."""
    w1, w2, w3 = weights
    h = torch.relu(torch.bmm(x, w1.transpose(1, 2)))
    h = torch.relu(torch.bmm(h, w2.transpose(1, 2)))
    return torch.bmm(h, w3.transpose(1, 2))


def _losses(weights, x, y) -> torch.Tensor:
    """Mean cross-entropy of each network on its batch: (M,)."""
    logits = forward(weights, x)
    m, b, k = logits.shape
    return F.cross_entropy(logits.reshape(m * b, k), y.reshape(m * b), reduction="none").view(m, b).mean(1)


@torch.no_grad()
def evaluate_grid(weights, x: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy of every network on the whole of (x, y): two arrays of shape (M,)."""
    m = weights[0].shape[0]
    device = weights[0].device
    loss = torch.zeros(m, dtype=torch.float64, device=device)
    correct = torch.zeros(m, dtype=torch.float64, device=device)
    for i in range(0, len(x), chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        logits = forward(weights, xb.unsqueeze(0).expand(m, *xb.shape).to(weights[0].dtype))
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(m), reduction="none").view(m, -1)
        loss += ce.double().sum(1)
        correct += (logits.argmax(-1) == yb).double().sum(1)
    return (loss / len(x)).cpu().numpy(), (correct / len(x)).cpu().numpy()


def train_grid(data: Split, scheme: str, width: int, lrs: Sequence[float], rhos: Sequence[float],
               seeds: Sequence[int], *, base_width: int, epochs: int, batch_size: int, momentum: float = 0.0,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               return_weights: bool = False) -> dict:
    """Train one network per (lr, rho, seed) triple (the three sequences have one entry per network) with SAM
    under ``scheme`` at ``width``; returns per network the final training loss on the whole training set (at the
    trained weights), the test loss and accuracy, and whether it diverged.

    The networks are independent: stacking them only batches the arithmetic.
    """
    if scheme not in TRANSFER_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(TRANSFER_SCHEMES)}, got {scheme!r}")
    if not (len(lrs) == len(rhos) == len(seeds)) or not lrs:
        raise ValueError("lrs, rhos and seeds need one entry per network (and at least one network)")
    if min(lrs) <= 0 or min(rhos) < 0 or epochs < 1 or batch_size < 1 or not 0 <= momentum < 1:
        raise ValueError(f"need lr > 0, rho >= 0, epochs >= 1, batch_size >= 1 and 0 <= momentum < 1; got "
                         f"lrs={list(lrs)}, rhos={list(rhos)}, epochs={epochs}, batch_size={batch_size}, "
                         f"momentum={momentum}")
    table_name, _ = TRANSFER_SCHEMES[scheme]
    factors = scaling_table(table_name, width=width, base_width=base_width)["layers"]
    device = torch.device(device)
    x_train, y_train = data.x_train.flatten(1).to(device=device, dtype=dtype), data.y_train.to(device)
    d_in, d_out, n = x_train.shape[1], data.n_classes, len(x_train)
    unique = sorted(set(int(s) for s in seeds))
    start = {s: initial_weights(scheme, width, d_in, d_out, base_width, s) for s in unique}
    weights = [torch.stack([start[int(s)][k] for s in seeds]).to(device=device, dtype=dtype).requires_grad_(True)
               for k in range(3)]
    lr = torch.tensor(list(lrs), dtype=dtype, device=device)
    rho = torch.tensor(list(rhos), dtype=dtype, device=device)
    lr_l = [lr * factors[name].lr for name in LAYERS]
    rho_l = [rho * factors[name].rho for name in LAYERS]
    s_l = [factors[name].gradnorm for name in LAYERS]
    sam = bool((rho > 0).any())
    which = torch.tensor([unique.index(int(s)) for s in seeds], device=device)
    generators = [torch.Generator().manual_seed(s) for s in unique]
    bs = min(batch_size, n)
    buffers: list[torch.Tensor] | None = None
    started = time.perf_counter()
    for _ in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=g) if bs < n else torch.arange(n)
                              for g in generators]).to(device)
        for i in range(0, n, bs):
            idx = orders[:, i:i + bs][which]                       # (M, B): each network's batch
            xb, yb = x_train[idx], y_train[idx]
            grads = torch.autograd.grad(_losses(weights, xb, yb).sum(), weights)
            if sam:
                with torch.no_grad():
                    norm = torch.sqrt(sum((s * g.flatten(1).norm(dim=1)) ** 2 for s, g in zip(s_l, grads)))
                    scale = 1.0 / (norm + EPS)
                    perturbed = [(w + g * (r * scale)[:, None, None]).requires_grad_(True)
                                 for w, g, r in zip(weights, grads, rho_l)]
                grads = torch.autograd.grad(_losses(perturbed, xb, yb).sum(), perturbed)
            with torch.no_grad():
                if momentum and buffers is not None:
                    buffers = [b.mul_(momentum).add_(g) for b, g in zip(buffers, grads)]
                else:
                    buffers = [g.clone() for g in grads]
                for w, b, step in zip(weights, buffers, lr_l):
                    w.sub_(b * step[:, None, None])
    seconds = time.perf_counter() - started
    final = [w.detach() for w in weights]
    train_loss, _ = evaluate_grid(final, x_train, y_train)
    test_loss, test_acc = evaluate_grid(final, data.x_test.flatten(1).to(device=device, dtype=dtype),
                                        data.y_test.to(device))
    diverged = ~np.isfinite(train_loss) | (train_loss > 1e6)
    train_loss = np.where(diverged, np.inf, train_loss)
    test_acc = np.where(diverged, 1.0 / d_out, test_acc)  # NaN logits give an arbitrary argmax: count as chance
    out = {"train_loss": train_loss, "test_loss": np.where(diverged, np.inf, test_loss), "test_acc": test_acc,
           "diverged": diverged, "seconds": seconds}
    if return_weights:
        out["weights"] = [w.cpu() for w in final]
    return out


def transfer_sweep(data: Split, *, widths: Sequence[int], lrs: Sequence[float], rhos: Sequence[float],
                   seeds: Sequence[int], base_width: int, epochs: int, batch_size: int, momentum: float = 0.0,
                   schemes: Sequence[str] = tuple(TRANSFER_SCHEMES), share_base: bool = True,
                   max_networks: int = 256, max_elements: float = 1e9, device: str = "cpu",
                   progress: bool = True) -> dict:
    """Every scheme x width x lr x rho x seed, trained with :func:`train_grid` (one batch of networks per scheme,
    width and rho = 0 / rho > 0, since SGD needs one gradient per step and SAM two; at most ``max_networks`` at once,
    and fewer when their weights, gradients, perturbed copies and buffers would exceed ``max_elements`` numbers).

    ``share_base=True`` trains the base width once: every factor is 1 there, so both schemes are the same
    networks (a wiring check, true by construction; the tests check it on a whole grid).
    Returns plain nested lists indexed ``[scheme][width][lr][rho][seed]`` for ``train_loss``, ``test_loss``,
    ``test_acc`` and ``diverged``, and ``seconds`` per (scheme, width).
    """
    from lionsnb.progress import progress as bar

    if not widths or not lrs or not rhos or not seeds:
        raise ValueError("widths, lrs, rhos and seeds must each hold at least one value")
    shape = (len(schemes), len(widths), len(lrs), len(rhos), len(seeds))
    out = {key: np.zeros(shape) for key in ("train_loss", "test_loss", "test_acc")}
    out["diverged"] = np.zeros(shape, dtype=bool)
    seconds = np.zeros(shape[:2])
    jobs = [(s, w) for s in range(len(schemes)) for w in range(len(widths))]
    for s, w in bar(jobs, desc="(lr, rho) grids", unit="grid", disable=not progress):
        width = widths[w]
        d_in = int(np.prod(tuple(data.x_train.shape[1:])))
        per_network = 5 * (d_in * width + width * width + width * data.n_classes)
        chunk_size = max(1, min(max_networks, int(max_elements // per_network)))
        if share_base and s > 0 and width == base_width:
            for key in out:
                out[key][s, w] = out[key][0, w]
            continue
        for zero in (True, False):
            cells = [(i, j, k) for i in range(len(lrs)) for j, r in enumerate(rhos) for k in range(len(seeds))
                     if (r == 0) == zero]
            for first in range(0, len(cells), chunk_size):
                chunk = cells[first:first + chunk_size]
                run = train_grid(data, schemes[s], width, [lrs[i] for i, _, _ in chunk],
                                 [rhos[j] for _, j, _ in chunk], [seeds[k] for _, _, k in chunk],
                                 base_width=base_width, epochs=epochs, batch_size=batch_size, momentum=momentum,
                                 device=device)
                for c, (i, j, k) in enumerate(chunk):
                    for key in out:
                        out[key][s, w, i, j, k] = run[key][c]
                seconds[s, w] += run["seconds"]
    result = {"schemes": list(schemes), "widths": list(widths), "lrs": list(lrs), "rhos": list(rhos),
              "seeds": list(seeds), "base_width": base_width, "epochs": epochs, "batch_size": batch_size,
              "seconds": seconds.tolist()}
    result.update({key: value.tolist() for key, value in out.items()})
    return result


# ----------------------------------------------------------------------------- analysis

def mean_loss(result: dict, key: str = "train_loss") -> np.ndarray:
    """Mean over seeds, ``[scheme][width][lr][rho]``; a cell where any seed diverged is inf."""
    a = np.asarray(result[key], dtype=float)
    return np.where(np.isfinite(a).all(-1), np.where(np.isfinite(a), a, 0).mean(-1), np.inf)


def optimum(grid: np.ndarray) -> tuple[int, int]:
    """(lr index, rho index) of the smallest finite entry of a 2-D loss grid (ties: first in row-major order)."""
    arr = np.asarray(grid, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"need a non-empty 2-D grid, got shape {arr.shape}")
    i, j = np.unravel_index(int(np.argmin(np.where(np.isfinite(arr), arr, np.inf))), arr.shape)
    return int(i), int(j)


def lr_optima(result: dict, rho_index: int, key: str = "train_loss") -> dict[str, dict]:
    """Per scheme and width: the best lr at a fixed radius, for the seed mean and for every seed.

    Returns ``{scheme: {"log2_lr": [per width], "log2_lr_seeds": [[per seed] per width], "at_edge": [...],
    "loss": [per width]}}``; ``log2_lr`` of the mean curve, ``at_edge`` when that optimum is the grid's first or
    last lr (the true optimum may lie outside).
    """
    a = np.asarray(result[key], dtype=float)[..., rho_index, :]        # scheme, width, lr, seed
    mean = mean_loss(result, key)[..., rho_index]                      # scheme, width, lr
    log2 = np.log2(result["lrs"])
    out = {}
    for s, scheme in enumerate(result["schemes"]):
        best = [int(np.argmin(mean[s, w])) for w in range(len(result["widths"]))]
        per_seed = [[float(log2[int(np.argmin(np.where(np.isfinite(a[s, w, :, k]), a[s, w, :, k], np.inf)))])
                     for k in range(a.shape[-1])] for w in range(len(result["widths"]))]
        out[scheme] = {"log2_lr": [float(log2[i]) for i in best], "log2_lr_seeds": per_seed,
                       "at_edge": [i in (0, len(log2) - 1) for i in best],
                       "loss": [float(mean[s, w, i]) for w, i in enumerate(best)]}
    return out


def transfer_summary(result: dict, rho_index: int, key: str = "train_loss") -> dict[str, dict]:
    """How far the optimum moves with width, per scheme, at radius ``rhos[rho_index]``:

    * ``shift_log2_lr``: log2(best lr at the largest width) - log2(best lr at the smallest) (0 = it stays put);
    * ``spread_log2_lr``: max - min over widths of log2(best lr);
    * ``seed_spread_log2_lr``: the largest, over widths, standard deviation of the per-seed optimum;
    * ``regret``: loss at the largest width with the smallest width's best lr, minus the best loss there (0 =
      perfect transfer; inf when that lr diverges at the largest width);
    * ``wider_is_better``: share of consecutive width pairs whose best loss falls as the width grows;
    * ``nested``: share of (lr, consecutive width pair) where the wider network reaches a lower loss at the same lr
      (1 = the curves of the widths never cross, as muTransfer predicts under muP).
    """
    opt = lr_optima(result, rho_index, key)
    mean = mean_loss(result, key)[..., rho_index]
    log2 = list(np.log2(result["lrs"]))
    out = {}
    for s, scheme in enumerate(result["schemes"]):
        o = opt[scheme]
        small = log2.index(o["log2_lr"][0])
        best = o["loss"]
        out[scheme] = {"shift_log2_lr": o["log2_lr"][-1] - o["log2_lr"][0],
                       "spread_log2_lr": max(o["log2_lr"]) - min(o["log2_lr"]),
                       "seed_spread_log2_lr": max(float(np.std(v)) for v in o["log2_lr_seeds"]),
                       "regret": float(mean[s, -1, small] - best[-1]),
                       "wider_is_better": float(np.mean([b < a for a, b in zip(best[:-1], best[1:])])),
                       "nested": float(np.mean([mean[s, w + 1, i] < mean[s, w, i]
                                                for w in range(len(result["widths"]) - 1)
                                                for i in range(len(log2))])),
                       "lr_at_edge": int(sum(o["at_edge"])), "best_loss": best}
    return out


def rho_response(result: dict, key: str = "train_loss") -> dict[str, np.ndarray]:
    """Per scheme: loss at each width's best lr (for rho = 0) as a function of rho, minus the loss at rho = 0:
    what a given base radius does to the trained network at every width (``[width][rho]``)."""
    mean = mean_loss(result, key)
    if 0.0 not in result["rhos"]:
        raise ValueError("rho_response needs rho = 0 in the sweep")
    j0 = result["rhos"].index(0.0)
    out = {}
    for s, scheme in enumerate(result["schemes"]):
        rows = []
        for w in range(len(result["widths"])):
            i = int(np.argmin(mean[s, w, :, j0]))
            rows.append(mean[s, w, i, :] - mean[s, w, i, j0])
        out[scheme] = np.asarray(rows)
    return out

