"""Experiment runners shared by the VL-MIA notebooks: data, the two training stages, the attack, AUC tables.

Everything returns plain dicts of tensors, arrays, numbers and strings, so that a notebook can cache it with
``ctx.cached``. The tiny VLM is trained in two stages, like LLaVA:

1. **pre-training** on a public pool of pairs (disjoint from members and non-members), loss on every text token
   after the image; this model has seen the distribution but not the members (the confound's reference model);
2. **visual instruction tuning** on the members, loss on the caption tokens only; its epochs control memorisation.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from lionsnb.vlmia.data import INSTRUCTION, Pairs, make_pairs
from lionsnb.vlmia.evaluation import roc_metrics, roc_summary
from lionsnb.vlmia.metrics import ALPHAS, RENYI_RATIOS, _pct
from lionsnb.vlmia.model import TinyVLM, TinyVLMConfig, build_tiny_vlm, train_tiny_vlm
from lionsnb.vlmia.pipeline import TinyVLMAdapter, aug_kl_scores, describe, run_pipeline, sequence_traces

__all__ = ["tiny_config", "make_tiny_data", "pretrain", "finetune", "load_tiny", "attack", "auc_table",
           "metric_key", "FAMILIES", "TARGET_BASED", "HEATMAP_ROWS", "ALPHA_LABELS", "K_PERCENTS", "roc_table",
           "TinySetup", "tiny_setup", "train_target", "epoch_sweep", "confound_study", "setup_data", "renyi_keys",
           "example_traces", "tail_recall", "attack_members", "aug_kl_attack"]

#: metric families of the explorer; target-based ones need the true next token (N/A on the image slice)
FAMILIES = ("MaxRényi-K%", "MinRényi-K%", "Min-K% Prob", "Perplexity", "ModRényi", "Max-Prob-Gap", "Min-K%++")
TARGET_BASED = {"Min-K% Prob": True, "Perplexity": True, "ModRényi": True, "Min-K%++": True,
                "MaxRényi-K%": False, "MinRényi-K%": False, "Max-Prob-Gap": False}
ALPHA_LABELS = {"0.5": "05", "1": "1", "2": "2", "inf": "inf"}
#: K in percent, as in the official key names
K_PERCENTS = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
_RATIO_OF = dict(zip(K_PERCENTS, RENYI_RATIOS))


def metric_key(family: str, alpha: str = "0.5", k: int = 10) -> str:
    """The official key of a metric family at Rényi order ``alpha`` (``"0.5"``, ``"1"``, ``"2"``, ``"inf"``) and K %.

    Families without α or K ignore them; Min-K% Prob has no K = 100 % (the reference stops at 90 %); ModRényi
    at α = 1 is the modified entropy and has no α = ∞ (use 2)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: choose one of {FAMILIES}")
    if alpha not in ALPHA_LABELS:
        raise ValueError(f"alpha={alpha!r}: choose one of {tuple(ALPHA_LABELS)}")
    if k not in _RATIO_OF:
        raise ValueError(f"k={k}: choose one of {K_PERCENTS}")
    pct = _pct(_RATIO_OF[k])
    if family == "MaxRényi-K%":
        return f"Max_{pct} renyi_{ALPHA_LABELS[alpha]}"
    if family == "MinRényi-K%":
        return f"Min_{pct} renyi_{ALPHA_LABELS[alpha]}"
    if family == "Min-K% Prob":
        return f"Min_{_pct(_RATIO_OF[min(k, 90)])} Prob"
    if family == "Min-K%++":
        return f"Min_{pct}++"
    if family == "ModRényi":
        return {"0.5": "Modified_renyi_05", "1": "Modified_entropy"}.get(alpha, "Modified_renyi_2")
    if family == "Perplexity":
        return "ppl"
    return "Max_Prob_Gap"


#: rows of the AUC heatmap (the paper's Table 3 layout): label, key, target-based
HEATMAP_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("Perplexity*", "ppl", True), ("Min-0% Prob*", "Min_0% Prob", True), ("Min-10% Prob*", "Min_10.0% Prob", True),
    ("ModRényi α=0.5*", "Modified_renyi_05", True), ("ModRényi α=2*", "Modified_renyi_2", True),
    ("Min-10%++*", "Min_10.0%++", True), ("Max-Prob-Gap", "Max_Prob_Gap", False)) + tuple(
    (f"MaxRényi α={a}, K={k}%", f"Max_{_pct(_RATIO_OF[k])} renyi_{ALPHA_LABELS[a]}", False)
    for a in ("0.5", "1", "2", "inf") for k in (0, 10, 100))


def tiny_config(sizes: Mapping[str, Any]) -> TinyVLMConfig:
    """The tiny VLM's sizes from a profile (``image_size``, ``n_embd``, ``n_layer``, ``n_head``)."""
    return TinyVLMConfig(image_size=int(sizes["image_size"]), patch=4, n_embd=int(sizes["n_embd"]),
                         n_layer=int(sizes["n_layer"]), n_head=int(sizes.get("n_head", 4)),
                         n_positions=int(sizes.get("n_positions", 64 if sizes["image_size"] <= 16 else 128)))


def make_tiny_data(n_members: int, n_nonmembers: int, n_pool: int, image_size: int, seed: int,
                   n_shifted: int = 0) -> dict[str, Pairs]:
    """Members, IID non-members, the pre-training pool (all IID, disjoint) and shifted non-members."""
    iid = make_pairs(n_members + n_nonmembers + n_pool, seed, size=image_size)
    out = {"members": iid.subset(range(n_members)),
           "nonmembers": iid.subset(range(n_members, n_members + n_nonmembers)),
           "pool": iid.subset(range(n_members + n_nonmembers, n_members + n_nonmembers + n_pool))}
    if n_shifted:
        out["shifted"] = make_pairs(n_shifted, seed, size=image_size, distribution="shifted")
    return out


def pretrain(pool: Pairs, config: TinyVLMConfig, epochs: int, *, seed: int = 0, lr: float = 3e-3,
             batch_size: int = 32, progress: Callable | None = None, device: str = "cpu") -> dict[str, Any]:
    """Stage 1: the tiny VLM trained on the public pool with the loss on all text tokens."""
    res = train_tiny_vlm(pool, epochs, config=config, seed=seed, lr=lr, batch_size=batch_size, loss_on="text",
                         progress=progress, device=device)
    return {"state": res.states[epochs], "losses": res.losses, "seconds": res.seconds, "config": asdict(config)}


def finetune(members: Pairs, base_state: Mapping[str, torch.Tensor] | None, config: TinyVLMConfig, epochs: int,
             checkpoints: Sequence[int], *, seed: int = 0, lr: float = 3e-3, batch_size: int = 32,
             progress: Callable | None = None, device: str = "cpu") -> dict[str, Any]:
    """Stage 2: visual instruction tuning on the members (caption loss only); states at every checkpoint epoch.

    ``base_state=None`` starts from the untrained model (no pre-training stage)."""
    res = train_tiny_vlm(members, epochs, config=config, seed=seed + 1, lr=lr, batch_size=batch_size,
                         checkpoints=checkpoints, init_state=None if base_state is None else dict(base_state),
                         progress=progress, device=device)
    return {"states": {str(e): s for e, s in res.states.items()}, "losses": res.losses, "seconds": res.seconds}


def load_tiny(config: TinyVLMConfig, state: Mapping[str, torch.Tensor] | None) -> TinyVLM:
    """A tiny VLM with the given weights (None = the untrained, randomly initialised model)."""
    model = build_tiny_vlm(config, seed=0)
    if state is not None:
        model.load_state_dict(dict(state))
    return model.eval()


def attack(model: TinyVLM, images: torch.Tensor, labels: Sequence[int], *, max_new_tokens: int = 16,
           min_new_tokens: int = 2, batch_size: int = 128, compat: str = "vlmia",
           descriptions: Sequence[str] | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The VL-MIA pipeline on the tiny VLM: describe greedily, one forward pass, slice, score every metric."""
    res = run_pipeline(TinyVLMAdapter(model, device), images, INSTRUCTION, descriptions=descriptions,
                       max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, batch_size=batch_size,
                       compat=compat)
    return {"scores": res.scores, "descriptions": res.descriptions, "labels": np.asarray(labels, dtype=np.int64),
            "generate_s": res.generate_seconds, "forward_s": res.forward_seconds, "scoring_s": res.scoring_seconds}


def auc_table(result: Mapping[str, Any], keys: Sequence[str] | None = None,
              slice_names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """``{slice: {key: AUC}}`` of an :func:`attack` result (all keys and slices by default)."""
    labels = np.asarray(result["labels"])
    out: dict[str, dict[str, float]] = {}
    for name in slice_names or list(result["scores"]):
        per = result["scores"][name]
        out[name] = {k: roc_metrics(np.asarray(per[k]), labels)[0] for k in (keys or list(per))}
    return out


def roc_table(result: Mapping[str, Any], slice_name: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per key: AUC, accuracy, TPR@5%FPR and TPR@1%FPR on one slice."""
    labels = np.asarray(result["labels"])
    return [{"metric": k, **roc_summary(np.asarray(result["scores"][slice_name][k]), labels)} for k in keys]


def renyi_keys() -> list[str]:
    """Every MaxRényi-K% key."""
    return [f"Max_{_pct(r)} renyi_{a}" for r in RENYI_RATIOS for a in ALPHAS]


# --------------------------------------------------------------------------- the notebooks' cached computations

@dataclass(frozen=True)
class TinySetup:
    """Everything that determines a tiny-VLM experiment (a cache key): data, model, the two training stages and
    the generation settings of the attack."""

    image_size: int
    n_embd: int
    n_layer: int
    n_members: int
    n_nonmembers: int
    n_pool: int
    n_shifted: int
    pretrain_epochs: int
    epochs: int
    checkpoints: tuple[int, ...]
    lr: float
    batch_size: int
    max_new_tokens: int
    min_new_tokens: int
    seed: int
    device: str = "cpu"

    @property
    def config(self) -> TinyVLMConfig:
        return tiny_config({"image_size": self.image_size, "n_embd": self.n_embd, "n_layer": self.n_layer})

    @property
    def sweep_epochs(self) -> list[int]:
        """The epochs at which the attack is run: the checkpoints and the last epoch."""
        return sorted(set(self.checkpoints) | {self.epochs})


def tiny_setup(sizes: Mapping[str, Any], seed: int, device: str = "cpu") -> TinySetup:
    """A :class:`TinySetup` from a profile's sizes (``ctx.sizes``); ``device`` trains and attacks there."""
    return TinySetup(image_size=int(sizes["image_size"]), n_embd=int(sizes["n_embd"]), n_layer=int(sizes["n_layer"]),
                     n_members=int(sizes["n_members"]), n_nonmembers=int(sizes["n_nonmembers"]),
                     n_pool=int(sizes["n_pool"]), n_shifted=int(sizes.get("n_shifted", 0)),
                     pretrain_epochs=int(sizes["pretrain_epochs"]), epochs=int(sizes["epochs"]),
                     checkpoints=tuple(int(c) for c in sizes["checkpoints"]), lr=float(sizes["lr"]),
                     batch_size=int(sizes["batch_size"]), max_new_tokens=int(sizes["max_new_tokens"]),
                     min_new_tokens=int(sizes.get("min_new_tokens", 2)), seed=int(seed), device=str(device))


def setup_data(setup: TinySetup) -> dict[str, Pairs]:
    """The (seeded) pairs of an experiment: members, non-members, pool and shifted non-members."""
    return make_tiny_data(setup.n_members, setup.n_nonmembers, setup.n_pool, setup.image_size, setup.seed,
                          n_shifted=setup.n_shifted)


def train_target(setup: TinySetup, progress: Callable | None = None) -> dict[str, Any]:
    """Both training stages: ``base`` (pre-trained on the pool) and ``states`` (instruction-tuned on the members,
    one state per checkpoint epoch, keys as strings), with losses and wall times."""
    data = setup_data(setup)
    cfg = setup.config
    base = pretrain(data["pool"], cfg, setup.pretrain_epochs, seed=setup.seed, lr=setup.lr,
                    batch_size=setup.batch_size, progress=progress, device=setup.device)
    tuned = finetune(data["members"], base["state"], cfg, setup.epochs, setup.sweep_epochs, seed=setup.seed,
                     lr=setup.lr, batch_size=setup.batch_size, progress=progress, device=setup.device)
    return {"base": base["state"], "states": tuned["states"], "pretrain_losses": base["losses"],
            "losses": tuned["losses"], "pretrain_seconds": base["seconds"], "train_seconds": tuned["seconds"]}


def _attack_setup(setup: TinySetup, state: Mapping[str, torch.Tensor] | None, images: torch.Tensor,
                  labels: np.ndarray) -> dict[str, Any]:
    return attack(load_tiny(setup.config, state), images, labels, max_new_tokens=setup.max_new_tokens,
                  min_new_tokens=setup.min_new_tokens, batch_size=256, device=setup.device)


def attack_members(setup: TinySetup, state: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
    """The attack with one model (``None`` = untrained) on the members against the IID non-members."""
    data = setup_data(setup)
    images = torch.cat([data["members"].images, data["nonmembers"].images])
    labels = np.r_[np.ones(setup.n_members, dtype=np.int64), np.zeros(setup.n_nonmembers, dtype=np.int64)]
    out = _attack_setup(setup, state, images, labels)
    out["captions"] = data["members"].captions + data["nonmembers"].captions
    return out


def epoch_sweep(setup: TinySetup, run: Mapping[str, Any], progress: Callable | None = None) -> dict[str, Any]:
    """The attack (members against IID non-members) on the untrained model and on every checkpoint of the
    instruction tuning (epoch 0 is the pre-trained base): ``{"epochs", "results": {str(epoch): attack},
    "untrained", "captions", "seconds"}``."""
    data = setup_data(setup)
    images = torch.cat([data["members"].images, data["nonmembers"].images])
    labels = np.r_[np.ones(setup.n_members, dtype=np.int64), np.zeros(setup.n_nonmembers, dtype=np.int64)]
    started = time.perf_counter()
    epochs = setup.sweep_epochs
    out = {"epochs": epochs, "results": {}, "captions": data["members"].captions + data["nonmembers"].captions}
    for e in (progress(epochs, desc="attacking each checkpoint") if progress else epochs):
        out["results"][str(e)] = _attack_setup(setup, run["states"][str(e)], images, labels)
    out["untrained"] = _attack_setup(setup, None, images, labels)
    out["seconds"] = time.perf_counter() - started
    return out


def confound_study(setup: TinySetup, base_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The distribution-shift confound with the pre-trained model that never saw the members: members against IID
    non-members (``iid``) and against shifted non-members (``shifted``)."""
    data = setup_data(setup)
    if setup.n_shifted < 1:
        raise ValueError("the confound needs shifted non-members: set n_shifted > 0 in the profile")
    members = data["members"].images
    iid = _attack_setup(setup, base_state, torch.cat([members, data["nonmembers"].images]),
                        np.r_[np.ones(len(members), dtype=np.int64), np.zeros(setup.n_nonmembers, dtype=np.int64)])
    shifted = _attack_setup(setup, base_state, torch.cat([members, data["shifted"].images]),
                            np.r_[np.ones(len(members), dtype=np.int64), np.zeros(setup.n_shifted, dtype=np.int64)])
    return {"iid": iid, "shifted": shifted, "captions_shifted": data["shifted"].captions}


def example_traces(setup: TinySetup, state: Mapping[str, torch.Tensor], indices: Mapping[str, int]
                   ) -> dict[str, dict[str, Any]]:
    """For named examples (``{"member": 0, "non-member": 0}``; members first, then non-members, in the order of
    :func:`setup_data`), the greedy description and the per-position quantities over its whole inference sequence.

    Storable: slices as ``[start, stop]``, quantities as arrays, tokens as strings, plus the true caption."""
    data = setup_data(setup)
    pairs = {"member": data["members"], "non-member": data["nonmembers"]}
    adapter = TinyVLMAdapter(load_tiny(setup.config, state), setup.device)
    out = {}
    for name, index in indices.items():
        kind = "member" if name.startswith("member") else "non-member"
        image = pairs[kind].images[index:index + 1]
        desc = describe(adapter, image, INSTRUCTION, setup.max_new_tokens, min_new_tokens=setup.min_new_tokens)[0]
        tr = sequence_traces(adapter, image, INSTRUCTION, desc)
        out[name] = {"quantities": tr["quantities"], "ids": tr["ids"], "tokens": tr["tokens"],
                     "slices": {k: [v.start, v.stop] for k, v in tr["slices"].items()}, "description": desc,
                     "caption": pairs[kind].captions[index], "logits": tr["logits"].detach().double().cpu()}
    return out


def tail_recall(descriptions: Sequence[str], captions: Sequence[str], tail_len: int = 2) -> float:
    """Share of descriptions that end with the true idiosyncratic tail of their caption (memorisation)."""
    hits = [d.split()[-tail_len:] == c.split()[-tail_len:] for d, c in zip(descriptions, captions)]
    return float(np.mean(hits)) if hits else float("nan")


def aug_kl_attack(setup: TinySetup, state: Mapping[str, torch.Tensor], descriptions: Sequence[str]) -> dict[str, Any]:
    """Aug-KL of every member and IID non-member under one model, with the descriptions the attack generated."""
    data = setup_data(setup)
    images = torch.cat([data["members"].images, data["nonmembers"].images])
    labels = np.r_[np.ones(setup.n_members, dtype=np.int64), np.zeros(setup.n_nonmembers, dtype=np.int64)]
    adapter = TinyVLMAdapter(load_tiny(setup.config, state), setup.device)
    started = time.perf_counter()
    kl = aug_kl_scores(adapter, images, INSTRUCTION, descriptions, seed=setup.seed, batch_size=128)
    return {"scores": {name: {"aug_kl": values} for name, values in kl.items()}, "labels": labels,
            "seconds": time.perf_counter() - started}
