"""Backs ``notebooks/lipslev/03_training.ipynb``: 1-Lipschitz training (Eq. 7) and the regularised baseline (Table 3).

Abad Rocamora, Chrysos, Cevher, "Certified Robustness Under Bounded Levenshtein Distance", ICLR 2025
(arXiv 2501.13676); official code LIONS-EPFL/LipsLev@81d7cda (``models.py`` ``ConvLipsModel``, ``train.py``).

* **1-Lipschitz by construction (Eq. 7).** The forward pass divides every layer by its own constant,
  E/M(E), K/M(K), C/M(C), recomputed from the current weights at every call; gradients flow through the
  normalisers. Each constant is positively homogeneous of degree 1 in its layer's weights, so the logits
  do not change when any layer's raw weights are multiplied by a positive factor. Consequences: the
  gradient is orthogonal to each layer's weights and scales like 1/||W||, so plain SGD moves a layer's
  *direction* by about lr / ||W||^2 per unit gradient; the paper's lr = 100 with SGD is large only in raw
  units.
* **Regularised baseline.** The same network without normalisation (``lipschitz=False``), rescaled to be
  1-Lipschitz at initialisation, trained with CE + lambda * M(C) prod M(K) M(E) and certified with the
  global raw-weight constants L_yt = ||c_y - c_t||_r prod M(K) M(E, P).

The training loop is the core module :mod:`lionsnb.lipslev.train`; this module holds the notebook's helpers: the
task and optimiser settings of each profile, the checks of the scale invariance, training runs to cache, certification
summaries, the soundness check against exact brute force and a Charmer-style attack, the lambda sweep, tables,
figures and exercise checkers.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lionsnb.context import setup_for
from lionsnb.display import Table, show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.lipslev.baselines import charmer_attack
from lionsnb.lipslev.bruteforce import brute_force_many, shortest_rows
from lionsnb.lipslev.certify import as_float64, certificate, certified_accuracy, pad_batch
from lionsnb.lipslev.data import (
    NUMBERS_LETTERS_CHARS,
    TextSplit,
    ag_news_alphabet,
    load_ag_news,
    numbers_letters,
    offline_split,
)
from lionsnb.lipslev.levenshtein import Alphabet
from lionsnb.lipslev.model import (
    NORMS,
    LipsLevCNN,
    build_model,
    conv_constant,
    dual,
    embedding_constant,
    head_constant,
    norm_of,
    pairwise_distances,
)
from lionsnb.lipslev.train import head_spread, lipschitz_penalty, train, triangle
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.widgets import explore

#: learning rate used when LR is 0 and the optimiser differs from the profile's: the paper's SGD lr, and an
#: Adam lr that trains in a few epochs on a CPU
DEFAULT_LR = {"sgd": 100.0, "adam": 1e-2}
#: model sizes per task (the paper's AG-News model; a small one for the synthetic task)
MODEL_SIZES = {"ag_news": dict(embed_dim=150, hidden=100, kernel_size=10),
               "numbers_letters": dict(embed_dim=32, hidden=64, kernel_size=5)}
#: the lambdas of the regularised baseline: the paper's four (Table 3) and one larger value (ours) that shows
#: the other end of the trade-off
LAMBDAS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)
#: the optimiser sweep of the "why lr 100" experiment (1-Lipschitz model, numbers_letters)
LR_SWEEP = (("sgd", 1.0), ("sgd", 10.0), ("sgd", 100.0), ("adam", 1e-2))


def _reg(n_train, epochs, embed_dim, hidden, kernel_size, max_len, lip_optimizer, lip_lr, lr=1e-2):
    """Settings of the lambda sweep on one task: data, sizes, the baseline's Adam lr and the 1-Lipschitz
    reference's optimiser."""
    return dict(n_train=n_train, epochs=epochs, sizes=dict(embed_dim=embed_dim, hidden=hidden,
                                                           kernel_size=kernel_size),
                max_len=max_len, lr=lr, lip_optimizer=lip_optimizer, lip_lr=lip_lr)


SPEC = MethodSpec(
    name="lipslev.nb03_training",
    title="LipsLev 3: 1-Lipschitz training (Eq. 7), the constants during training, and the regularised baseline",
    profiles={
        "smoke": dict(dataset="numbers_letters", epochs=3, batch_size=128, train_max_len=None, optimizer="sgd",
                      lr=100.0, nl_train=5000, nl_eval=200, nl_len=(8, 16), ag_train=1000, ag_eval=200,
                      bf_certified=30, bf_uncertified=5, lr_sweep_train=2000, lr_sweep_epochs=2,
                      reg_dataset="numbers_letters",
                      reg_numbers_letters=_reg(2000, 3, 32, 64, 5, None, "sgd", 100.0),
                      reg_ag_news=_reg(1000, 2, 32, 32, 10, 128, "adam", 1e-2), max_k=6),
        "teach": dict(dataset="ag_news", epochs=5, batch_size=128, train_max_len=128, optimizer="adam", lr=1e-2,
                      nl_train=5000, nl_eval=200, nl_len=(8, 16), ag_train=None, ag_eval=None,
                      bf_certified=25, bf_uncertified=5, lr_sweep_train=2000, lr_sweep_epochs=2,
                      reg_dataset="numbers_letters",
                      reg_numbers_letters=_reg(2000, 3, 32, 64, 5, None, "sgd", 100.0),
                      reg_ag_news=_reg(2000, 3, 64, 64, 10, 128, "adam", 1e-2), max_k=6),
        "full": dict(dataset="ag_news", epochs=30, batch_size=128, train_max_len=1000, optimizer="sgd", lr=100.0,
                     nl_train=13000, nl_eval=200, nl_len=(10, 40), ag_train=None, ag_eval=None,
                     bf_certified=100, bf_uncertified=20, lr_sweep_train=5000, lr_sweep_epochs=3,
                     reg_dataset="ag_news",
                     reg_numbers_letters=_reg(13000, 3, 32, 64, 5, None, "sgd", 100.0),
                     reg_ag_news=_reg(None, 10, 150, 100, 10, 128, "adam", 1e-2), max_k=6),
    },
    knobs={
        "dataset": Knob("auto", "auto (the profile's task: numbers_letters in smoke, AG-News otherwise), ag_news "
                        "or numbers_letters", str, choices=("auto", "ag_news", "numbers_letters")),
        "optimizer": Knob("auto", "auto (the profile's: the paper's SGD in smoke and full, Adam in teach), sgd or "
                          "adam", str, choices=("auto", "sgd", "adam")),
        "lr": Knob(0.0, "peak learning rate; 0 takes the profile's (or 100 for SGD, 0.01 for Adam)", float,
                   low=0.0),
        "schedule": Knob("cyclic", "cyclic (one triangle over the run, as in the paper) or constant", str,
                         choices=("cyclic", "constant")),
        "momentum": Knob(0.9, "SGD momentum (the paper: 0.9)", float, low=0.0, high=1.0, high_open=True),
        "norm": Knob("2", "the norm p of the constants (the paper trains 1, 2 and inf)", str, choices=tuple(NORMS)),
        "reg_dataset": Knob("auto", "task of the lambda sweep: auto (numbers_letters in smoke and teach, AG-News in "
                            "full), numbers_letters or ag_news (a subset in smoke and teach)", str,
                            choices=("auto", "ag_news", "numbers_letters")),
    },
    datasets=(),
)
setup = setup_for(SPEC)


# ----------------------------------------------------------------------------- settings and data

def resolve_optimizer(sizes, optimizer: str, lr: float) -> tuple[str, float]:
    """The optimiser and peak learning rate of a run: 'auto' and lr = 0 take the profile's choice
    (an optimiser other than the profile's gets :data:`DEFAULT_LR`)."""
    if optimizer not in ("auto", "sgd", "adam"):
        raise ValueError(f"optimizer = {optimizer!r}: use auto, sgd or adam")
    if lr < 0:
        raise ValueError(f"lr = {lr}: use a positive learning rate, or 0 for the default")
    name = sizes["optimizer"] if optimizer == "auto" else optimizer
    if lr > 0:
        return name, float(lr)
    return name, float(sizes["lr"] if name == sizes["optimizer"] else DEFAULT_LR[name])


def load_task(dataset: str, sizes, seed: int = 0) -> dict:
    """Train and eval splits, alphabet, model sizes and a description of the task.

    ``dataset`` 'auto' takes the profile's. AG-News uses the offline split (train on test rows 1000-7599,
    evaluate on rows 0-999: NOT comparable to the paper); when the CSV is missing it falls back to
    ``numbers_letters`` and says why in ``note``.
    """
    name = sizes["dataset"] if dataset == "auto" else dataset
    if name not in MODEL_SIZES:
        raise ValueError(f"dataset = {dataset!r}: use auto, ag_news or numbers_letters")
    note = ""
    if name == "ag_news":
        try:
            train_split, eval_split = offline_split(n_train=sizes["ag_train"], n_eval=sizes["ag_eval"])
            alphabet, how = ag_news_alphabet(load_ag_news().texts)
            note = ("AG-News, offline convention: train on test rows 1000-7599, evaluate on test rows 0-999 "
                    f"(NOT comparable to the paper, which trains on the 120k train split); alphabet: {how}")
        except FileNotFoundError as err:
            name, note = "numbers_letters", f"AG-News is not available ({err}); using numbers_letters instead. "
    if name == "numbers_letters":
        lo, hi = sizes["nl_len"]
        train_split = numbers_letters(sizes["nl_train"], min_len=lo, max_len=hi, seed=seed)
        eval_split = numbers_letters(sizes["nl_eval"], min_len=lo, max_len=hi, seed=seed + 1)
        alphabet = Alphabet(NUMBERS_LETTERS_CHARS)
        note += (f"numbers_letters (synthetic): {len(train_split)} train / {len(eval_split)} eval strings of length "
                 f"{lo}-{hi}; label 1 = mostly letters")
    return {"name": name, "train": train_split, "eval": eval_split, "alphabet": alphabet,
            "classes": len(train_split.classes), "model": dict(MODEL_SIZES[name]), "note": note}


# ----------------------------------------------------------------------------- scale invariance

def scaled_copy(model: LipsLevCNN, factors: Sequence[float]) -> LipsLevCNN:
    """A copy whose raw embedding, conv kernels and head are multiplied by ``factors`` (one per layer:
    embedding, each conv layer, head)."""
    layers = [model.emb, *model.convs, model.C]
    if len(factors) != len(layers):
        raise ValueError(f"need {len(layers)} factors (embedding, {model.layers} conv, head), got {len(factors)}")
    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer, a in zip([out.emb, *out.convs, out.C], factors):
            if not a > 0:
                raise ValueError(f"scale factors must be positive, got {a}")
            layer.weight.mul_(float(a))
    return out


@torch.no_grad()
def scale_invariance_gap(model: LipsLevCNN, seqs: Sequence[Sequence[int]], *, trials: int = 20,
                         seed: int = 0) -> dict:
    """max |logits(scaled raw weights) - logits| over random positive per-layer factors in [1e-3, 1e3].

    Float64. For the 1-Lipschitz model the gap is rounding error; ``raw_change`` is the same measurement
    for the raw (unnormalised) network with the same weights, which does change.
    """
    m64 = as_float64(model)
    raw = as_float64(model)
    raw.lipschitz = False
    ids = pad_batch(seqs)
    base, base_raw = m64(ids), raw(ids)
    rng = np.random.default_rng(seed)
    gap, raw_change = 0.0, 0.0
    n_layers = model.layers + 2
    for _ in range(trials):
        factors = 10.0 ** rng.uniform(-3, 3, size=n_layers)
        gap = max(gap, float((scaled_copy(m64, factors)(ids) - base).abs().max()))
        raw_change = max(raw_change, float((scaled_copy(raw, factors)(ids) - base_raw).abs().max()
                                            / base_raw.abs().max()))
    return {"gap": gap, "raw_change": raw_change, "trials": trials, "logit_scale": float(base.abs().max())}


def _layers(model: LipsLevCNN) -> list[tuple[str, torch.nn.Parameter]]:
    return ([("embedding", model.emb.weight)] + [(f"conv{i}", c.weight) for i, c in enumerate(model.convs)]
            + [("head", model.C.weight)])


def raw_gradients(model: LipsLevCNN, seqs: Sequence[Sequence[int]], labels: Sequence[int], *,
                  detach_constants: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (raw weight, cross-entropy gradient)}`` in float64, for the embedding, each conv layer and the head.

    ``detach_constants=True`` treats M(E), M(K), M(C) as constants in the backward pass (what one would get
    by not differentiating through the normalisers): the gradient then has a radial component.
    """
    m64 = as_float64(model)
    m64.zero_grad()
    ids = pad_batch(seqs)
    if detach_constants:
        if not m64.lipschitz:
            raise ValueError("detach_constants only makes sense for a 1-Lipschitz (normalised) model")
        emb = m64.emb.weight / embedding_constant(m64.emb.weight, m64.p).detach()
        kernels = [c.weight / conv_constant(c.weight, m64.p).detach() for c in m64.convs]
        head = m64.C.weight / head_constant(m64.C.weight, m64.p).detach()
        logits = m64.features(ids, (emb, kernels, head)) @ head.T
    else:
        logits = m64(ids)
    F.cross_entropy(logits, torch.as_tensor(list(labels))).backward()
    return {name: (weight.detach().clone(), weight.grad.detach().clone()) for name, weight in _layers(m64)}


def layer_gradients(model: LipsLevCNN, seqs: Sequence[Sequence[int]], labels: Sequence[int], *,
                    detach_constants: bool = False) -> dict:
    """Per layer (see :func:`raw_gradients`): weight norm, gradient norm and the cosine between gradient and weight
    (0 for a scale-invariant layer, by Euler's theorem)."""
    out = {}
    for name, (w, g) in raw_gradients(model, seqs, labels, detach_constants=detach_constants).items():
        out[name] = {"weight_norm": float(w.norm()), "grad_norm": float(g.norm()),
                     "cosine": float((w * g).sum() / (w.norm() * g.norm() + 1e-300))}
    return out


def turn_angle(weight: torch.Tensor, grad: torch.Tensor, lr: float) -> float:
    """The angle (radians) between a layer's weights W and W' = W - lr * grad after one plain SGD step: how far the
    step turns the direction of W, the only thing a scale-invariant network sees."""
    w, g = torch.as_tensor(weight).double().flatten(), torch.as_tensor(grad).double().flatten()
    new = w - lr * g
    along = float(w @ new) / float(w.norm())                     # component of W' along W
    across = float((new - along * w / w.norm()).norm())          # component orthogonal to W
    return math.atan2(across, along)


def gradient_scaling_gap(model: LipsLevCNN, seqs, labels, alpha: float = 8.0) -> float:
    """max over layers of |alpha grad(alpha W) - grad(W)| / |grad(W)| when EVERY layer is scaled by ``alpha``
    (float64; a power of two scales exactly): 0 for a scale-invariant loss, whose gradient scales like 1/alpha."""
    m0 = as_float64(model)
    m1 = scaled_copy(m0, [alpha] * (model.layers + 2))
    grads = []
    for m in (m0, m1):
        m.zero_grad()
        F.cross_entropy(m(pad_batch(seqs)), torch.as_tensor(list(labels))).backward()
        grads.append([layer.weight.grad.detach().clone() for layer in [m.emb, *m.convs, m.C]])
    return max(float((alpha * b - a).norm() / (a.norm() + 1e-300)) for a, b in zip(*grads))


def effective_learning_rates(model: LipsLevCNN, lr: float) -> dict:
    """lr / ||W||_F^2 per layer: how far one SGD step at ``lr`` turns a scale-invariant layer's direction, per
    unit gradient taken at the unit-norm point."""
    return {name: lr / float(w.detach().norm()) ** 2 for name, w in _layers(model)}


@torch.no_grad()
def normalised_constants(model: LipsLevCNN) -> dict:
    """M(E), M(K), M(C) of the EFFECTIVE weights (float64): 1 for a 1-Lipschitz model, by construction."""
    emb, kernels, head = as_float64(model).effective_weights()
    return {"M(E)": float(embedding_constant(emb, model.p)),
            **{f"M(K{i})": float(conv_constant(k, model.p)) for i, k in enumerate(kernels)},
            "M(C)": float(head_constant(head, model.p))}


@torch.no_grad()
def rescale_gap(alphabet: Alphabet, classes: int, seqs: Sequence[Sequence[int]], *, seed: int = 0, p: float = 2.0,
                **sizes) -> float:
    """max |logits| difference between the normalised model and the raw model with the same initial weights
    rescaled by :func:`rescale_to_one_lipschitz` (float64): 0 up to rounding, so the baseline starts from the
    same function as the 1-Lipschitz model."""
    lip = as_float64(build_model(alphabet, classes, seed=seed, p=p, lipschitz=True, **sizes))
    raw = as_float64(build_model(alphabet, classes, seed=seed, p=p, lipschitz=False, **sizes))
    rescale_to_one_lipschitz(raw)
    ids = pad_batch(seqs)
    return float((lip(ids) - raw(ids)).abs().max())


def schedule_factors(steps: int, schedule: str = "cyclic") -> list[float]:
    """The learning-rate factor of every step of a run (``lipslev.train``: LambdaLR, stepped per batch)."""
    return [triangle(s, steps) if schedule == "cyclic" else 1.0 for s in range(steps)]


# ----------------------------------------------------------------------------- training runs

def train_run(task: dict, *, optimizer: str, lr: float, epochs: int, batch_size: int = 128,
              schedule: str = "cyclic", momentum: float = 0.9, max_len: int | None = None, p: float = 2.0,
              lipschitz: bool = True, reg_lambda: float = 0.0, model_sizes: dict | None = None,
              n_train: int | None = None, seed: int = 0, device="cpu", progress: bool = True) -> dict:
    """Train one model on ``task`` (a :func:`load_task` dict) and return a cacheable record:
    the state dict (CPU), the per-epoch history of ``lipslev.train.train`` and the settings.

    ``lipschitz=False`` builds the raw network, rescales it to be 1-Lipschitz at initialisation
    (:func:`rescale_to_one_lipschitz`) and trains it with CE + ``reg_lambda`` * penalty.
    """
    sizes = dict(model_sizes or task["model"])
    model = build_model(task["alphabet"], task["classes"], seed=seed, p=p, lipschitz=lipschitz, **sizes)
    if not lipschitz:
        rescale_to_one_lipschitz(model)
    data = task["train"] if n_train is None else task["train"].subset(range(min(n_train, len(task["train"]))))
    start = time.perf_counter()
    history = train(model, data, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                    optimizer=optimizer, schedule=schedule, max_len=max_len, reg_lambda=reg_lambda, seed=seed,
                    device=device, eval_data=task["eval"], progress=progress)
    seconds = time.perf_counter() - start
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"state": state, "history": history, "seconds": seconds, "sizes": sizes, "lipschitz": lipschitz,
            "p": p, "reg_lambda": reg_lambda, "optimizer": optimizer, "lr": lr, "n_train": len(data)}


def model_of(run: dict, task: dict) -> LipsLevCNN:
    """The trained model of a :func:`train_run` record (CPU, eval mode)."""
    model = LipsLevCNN(task["alphabet"], task["classes"], p=float(run["p"]), lipschitz=bool(run["lipschitz"]),
                       **{k: int(v) for k, v in run["sizes"].items()})
    model.load_state_dict(run["state"])
    return model.eval()


@torch.no_grad()
def rescale_to_one_lipschitz(model: LipsLevCNN) -> LipsLevCNN:
    """Divide each raw layer by its constant (in place): the raw network then computes the same function as
    the normalised one, and its global bound M(C) prod M(K) M(E) is 1 (the baseline's initialisation)."""
    constants = model.constants()
    model.emb.weight.div_(constants["M(E)"])
    for i, conv in enumerate(model.convs):
        conv.weight.div_(constants[f"M(K{i})"])
    model.C.weight.div_(constants["M(C)"])
    return model


# ----------------------------------------------------------------------------- certification summaries

def evaluate(model: LipsLevCNN, data: TextSplit, max_k: int = 6) -> dict:
    """Certificate of every eval sentence (float64, never truncated) and verified accuracy for k = 0..max_k.

    Plain lists (cacheable): radii (-1 = wrong), encoded lengths, the smallest margin min_t g_yt and the
    Lipschitz constant L_yt of the class that sets the radius; the seconds the certificate took.
    """
    start = time.perf_counter()
    cert = certificate(model, data.texts, data.labels)
    seconds = time.perf_counter() - start
    ks = list(range(max_k + 1))
    return {"radii": cert.radii.tolist(), "lengths": cert.lengths.tolist(), "min_margin": cert.min_margin.tolist(),
            "binding_lipschitz": cert.binding_lipschitz.tolist(), "ks": ks,
            "verified": [certified_accuracy(cert.radii, k) for k in ks], "seconds": seconds,
            "per_sentence_s": seconds / max(len(data), 1)}


def length_radius_correlation(evaluation: dict) -> float:
    """Spearman rank correlation between encoded length and certified radius over the correct sentences
    (nan when fewer than 3 or when either is constant)."""
    radii, lengths = np.asarray(evaluation["radii"]), np.asarray(evaluation["lengths"])
    ok = radii >= 0
    if ok.sum() < 3 or np.ptp(radii[ok]) == 0 or np.ptp(lengths[ok]) == 0:
        return float("nan")

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # average ranks of ties
            r[x == v] = r[x == v].mean()
        return r

    return float(np.corrcoef(ranks(lengths[ok]), ranks(radii[ok]))[0, 1])


def soundness(model: LipsLevCNN, data: TextSplit, evaluation: dict, *, n_certified: int, n_uncertified: int,
              progress: bool = True) -> dict:
    """Exact brute force (k = 1) and a Charmer attack (k = 1) on the chosen eval sentences.

    A certified sentence (radius >= 1) that brute force finds NOT robust, or that the attack breaks, is a
    soundness violation. Also per sentence: max over the distance-1 ball of |g_yt(Q) - g_yt(P)| / L_yt(P)
    (the bound says <= 1).
    """
    certified, uncertified = shortest_rows(evaluation["radii"], evaluation["lengths"], n_certified, n_uncertified)
    rows = certified + uncertified
    if not rows:
        return {"rows": [], "radius": [], "length": [], "bf_robust": [], "attacked": [], "ratio": [],
                "bf_seconds": [], "neighbours": [], "bf_violations": 0, "attack_violations": 0, "checked": 0,
                "max_ratio": 0.0}
    texts, labels = [data.texts[i] for i in rows], [data.labels[i] for i in rows]
    cert = certificate(model, texts, labels)
    bf = brute_force_many(model, texts, labels, k=1, progress=progress)
    attack = charmer_attack(model, texts, labels, k=1, progress=progress)
    ratio = []
    for b, lips in zip(bf, cert.lipschitz):
        others = ~np.isnan(lips)
        ratio.append(float((b.max_change[others] / lips[others]).max()) if b.neighbours else 0.0)
    radius = cert.radii.tolist()
    robust = [bool(b.robust) for b in bf]
    attacked = [bool(a.success) for a in attack]
    return {"rows": rows, "radius": radius, "length": cert.lengths.tolist(), "bf_robust": robust,
            "attacked": attacked, "ratio": ratio, "bf_seconds": [b.seconds for b in bf],
            "neighbours": [b.neighbours for b in bf],
            "bf_violations": sum(r >= 1 and not ok for r, ok in zip(radius, robust)),
            "attack_violations": sum(r >= 1 and hit for r, hit in zip(radius, attacked)),
            "checked": sum(r >= 1 for r in radius), "max_ratio": max(ratio)}


# ----------------------------------------------------------------------------- the regularised baseline

def reg_settings(sizes, reg_dataset: str) -> tuple[str, dict]:
    """(task name, settings) of the lambda sweep: 'auto' takes the profile's task."""
    name = sizes["reg_dataset"] if reg_dataset == "auto" else reg_dataset
    if name not in MODEL_SIZES:
        raise ValueError(f"reg_dataset = {reg_dataset!r}: use auto, ag_news or numbers_letters")
    return name, dict(sizes[f"reg_{name}"])


def tradeoff(task: dict, settings: dict, *, lambdas: Sequence[float] = LAMBDAS, batch_size: int = 128,
             p: float = 2.0, max_k: int = 6, seed: int = 0, device="cpu", progress: bool = True) -> dict:
    """The regularised baseline for each lambda and a 1-Lipschitz model trained on the same data, with the same
    sizes and epochs (``settings``: see :func:`reg_settings`), each certified on the task's eval split.

    The baseline is the raw network rescaled to 1-Lipschitz at initialisation and trained with Adam at
    ``settings['lr']`` on CE + lambda * M(C) prod M(K) M(E); the reference uses ``settings['lip_optimizer']``.
    Returns plain lists per model: name, lambda (None for the 1-Lipschitz model), verified accuracy for
    k = 0..max_k, the final global bound M(C) prod M(K) M(E) of the raw weights, radii, training seconds.
    """
    out = {"names": [], "lambdas": [], "verified": [], "bound": [], "radii": [], "seconds": [],
           "ks": list(range(max_k + 1)), "n_train": None, "epochs": settings["epochs"]}
    configs = [(f"lambda = {lam:g}", lam) for lam in lambdas] + [("1-Lipschitz", None)]
    for name, lam in progress_bar(configs, desc="lambda sweep", unit="model", disable=not progress):
        lip = lam is None
        run = train_run(task, optimizer=settings["lip_optimizer"] if lip else "adam",
                        lr=settings["lip_lr"] if lip else settings["lr"], epochs=settings["epochs"],
                        batch_size=batch_size, max_len=settings["max_len"], p=p, lipschitz=lip,
                        reg_lambda=0.0 if lip else lam, model_sizes=settings["sizes"], n_train=settings["n_train"],
                        seed=seed, device=device, progress=False)
        model = model_of(run, task)
        ev = evaluate(model, task["eval"], max_k)
        with torch.no_grad():
            bound = float(lipschitz_penalty(model)) if not lip else 1.0
        out["names"].append(name)
        out["lambdas"].append(lam)
        out["verified"].append(ev["verified"])
        out["bound"].append(bound)
        out["radii"].append(list(ev["radii"]))
        out["seconds"].append(run["seconds"])
        out["n_train"] = run["n_train"]
    return out


def weight_norms(model: LipsLevCNN) -> list[float]:
    """Frobenius norms of the raw embedding, conv kernels and head."""
    return [float(w.detach().norm()) for w in (model.emb.weight, *[c.weight for c in model.convs], model.C.weight)]


def lr_sweep(task: dict, configs: Sequence[tuple[str, float]] = LR_SWEEP, *, epochs: int, n_train: int,
             batch_size: int = 128, schedule: str = "cyclic", momentum: float = 0.9, max_len: int | None = None,
             p: float = 2.0, seed: int = 0, device="cpu", progress: bool = True) -> dict:
    """Short 1-Lipschitz runs for several (optimiser, peak lr): final eval accuracy and training loss, and the
    growth factor of each layer's raw weight norm (scale-invariant layers drift outwards under SGD)."""
    init = build_model(task["alphabet"], task["classes"], seed=seed, p=p, **task["model"])
    norms0 = weight_norms(init)
    out = {"configs": [list(c) for c in configs], "eval_acc": [], "loss": [], "norm_growth": [], "seconds": [],
           "layers": ["embedding"] + [f"conv{i}" for i in range(init.layers)] + ["head"]}
    for opt, lr in progress_bar(list(configs), desc="optimiser sweep", unit="run", disable=not progress):
        run = train_run(task, optimizer=opt, lr=lr, epochs=epochs, batch_size=batch_size, schedule=schedule,
                        momentum=momentum, max_len=max_len, p=p, n_train=n_train, seed=seed, device=device,
                        progress=False)
        norms = weight_norms(model_of(run, task))
        out["eval_acc"].append(run["history"]["eval_acc"][-1])
        out["loss"].append(run["history"]["loss"][-1])
        out["norm_growth"].append([b / a for a, b in zip(norms0, norms)])
        out["seconds"].append(run["seconds"])
    return out


# ----------------------------------------------------------------------------- figures

def draw_scale(fig, *, model: LipsLevCNN, seqs: Sequence[Sequence[int]], alphas=None) -> None:
    """Relative logit change max |f(scaled) - f| / max |f| when one layer (or all) is scaled by alpha: the
    normalised model against the raw network with the same weights (float64)."""
    alphas = np.logspace(-3, 3, 13) if alphas is None else np.sort(np.asarray(alphas, dtype=float))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    m64 = as_float64(model)
    raw = as_float64(model)
    raw.lipschitz = False
    ids = pad_batch(seqs)
    n_layers = model.layers + 2
    names = ["embedding"] + [f"conv{i}" for i in range(model.layers)] + ["head", "all layers"]
    floor = 1e-18
    with torch.no_grad():
        base, base_raw = m64(ids), raw(ids)
        for j, name in enumerate(names):
            changes, raw_changes = [], []
            for a in alphas:
                factors = [a] * n_layers if name == "all layers" else [a if i == j else 1.0 for i in range(n_layers)]
                changes.append(float((scaled_copy(m64, factors)(ids) - base).abs().max() / base.abs().max()))
                raw_changes.append(float((scaled_copy(raw, factors)(ids) - base_raw).abs().max()
                                         / base_raw.abs().max()))
            style = dict(marker=".", label=name, ls="--" if name == "all layers" else "-")
            ax1.plot(alphas, np.maximum(changes, floor), **style)
            ax2.plot(alphas, np.maximum(raw_changes, floor), **style)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    label(ax1, "factor alpha on the raw weights", "relative logit change (floor 1e-18)",
          "1-Lipschitz model (Eq. 7): invariant")
    label(ax2, "factor alpha on the raw weights", "relative logit change (floor 1e-18)",
          "Same weights without normalisation")


def draw_history(fig, *, history: dict, title: str = "") -> None:
    """Loss and accuracies, the three constants of the raw weights, and the head spread, per epoch."""
    from matplotlib.ticker import MaxNLocator

    ax1, ax2, ax3 = fig.subplots(1, 3)
    epochs = history["epoch"]
    ax1.plot(epochs, history["loss"], marker="o", label="training loss")
    ax1b = ax1.twinx()
    ax1b.plot(epochs, history["train_acc"], marker="s", color="C1", label="train accuracy")
    ax1b.plot(epochs, history["eval_acc"], marker="^", color="C2", label="eval accuracy")
    ax1b.set_ylabel("accuracy")
    ax1b.set_xlabel("epoch")
    ax1b.grid(False)
    lines = ax1.get_legend_handles_labels()[0] + ax1b.get_legend_handles_labels()[0]
    ax1.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center right")
    label(ax1, "epoch", "cross-entropy", title or "Training")
    for key, marker in (("M(E)", "o"), ("M(K)", "s"), ("M(C)", "^")):
        ax2.plot(epochs, history[key], marker=marker, label=key)
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    label(ax2, "epoch", "constant of the raw weights", "Constants (the forward pass divides by them)")
    for ax in (ax1, ax2, ax3):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax3.plot(epochs, history["head_spread"], marker="o")
    if max(history["head_spread"]) > 0:  # two classes: a single pair, the spread is 0 by definition
        ax3.set_yscale("log")
    label(ax3, "epoch", "(max - min) / max of ||c_i - c_j||", "Head spread (0 = regular simplex)")


def head_distances(model: LipsLevCNN) -> np.ndarray:
    """||c_i - c_j||_r / M(C) of the normalised head (float64)."""
    _, _, head = as_float64(model).effective_weights()
    return pairwise_distances(head, head, dual(model.p)).detach().numpy()


def draw_head(fig, *, distances: np.ndarray, classes: Sequence[str], init: np.ndarray | None = None) -> None:
    """Heat map of the pairwise head distances, and the off-diagonal ones sorted (at init and trained)."""
    ax1, ax2 = fig.subplots(1, 2)
    im = ax1.imshow(distances, cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(distances):
        ax1.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax1.set_xticks(range(len(classes)), classes, rotation=30, fontsize=8)
    ax1.set_yticks(range(len(classes)), classes, fontsize=8)
    ax1.grid(False)
    fig.colorbar(im, ax=ax1, label="||c_i - c_j||_r / M(C)")
    label(ax1, "class j", "class i", "Trained head: pairwise distances")
    off = ~np.eye(len(distances), dtype=bool)
    ax2.plot(np.sort(distances[off])[::2], marker="o", label="trained")
    if init is not None:
        ax2.plot(np.sort(init[off])[::2], marker="s", label="initialisation")
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize=8)
    label(ax2, "class pair (sorted)", "||c_i - c_j||_r / M(C)", "All pairs equal = regular simplex")


def draw_verified(fig, *, evaluation: dict, title: str = "") -> None:
    """Verified accuracy against k, and the certified radii against sentence length."""
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(evaluation["ks"], evaluation["verified"], marker="o")
    for k, v in zip(evaluation["ks"], evaluation["verified"]):
        ax1.annotate(f"{v:.3f}", (k, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax1.set_ylim(-0.02, 1.02)
    label(ax1, "Levenshtein radius k", "verified accuracy (k = 0: clean)", title or "Certified accuracy")
    radii, lengths = np.asarray(evaluation["radii"]), np.asarray(evaluation["lengths"])
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(radii))
    ax2.scatter(lengths, radii + jitter, s=6, alpha=0.5)
    label(ax2, "encoded sentence length n", "certified radius (-1 = wrong, jittered)", "Radius vs length")


def draw_soundness(fig, *, check: dict) -> None:
    """Per checked sentence: max over the distance-1 ball of |dg| / L (<= 1), coloured by the verdicts."""
    ax1, ax2 = fig.subplots(1, 2)
    radius, ratio = np.asarray(check["radius"]), np.asarray(check["ratio"])
    robust = np.asarray(check["bf_robust"])
    x = np.arange(len(radius))
    for mask, name, marker in ((radius >= 1, "certified (r >= 1)", "o"), ((radius == 0) & robust,
                                "not certified, brute force robust", "s"),
                               ((radius == 0) & ~robust, "not certified, not robust", "x")):
        if mask.any():
            ax1.scatter(x[mask], ratio[mask], marker=marker, label=name)
    ax1.axhline(1.0, color="red", ls="--", lw=1, label="the bound (ratio 1)")
    ax1.set_ylim(0, max(1.1, float(ratio.max(initial=0)) * 1.1))
    ax1.legend(fontsize=7)
    label(ax1, "checked sentence (certified first, each group by length)", "max |g(Q) - g(P)| / L over d(P,Q)=1",
          "Tightness of the bound at k = 1")
    counts = [int((radius >= 1).sum()), int(((radius >= 1) & robust).sum()),
              int(((radius >= 1) & ~np.asarray(check["attacked"])).sum())]
    ax2.bar(["certified", "certified and\nbrute-force robust", "certified and\nnot attacked"], counts,
            color=["C0", "C2", "C1"])
    for i, c in enumerate(counts):
        ax2.text(i, c, str(c), ha="center", va="bottom")
    label(ax2, "verdict", "sentences", "Soundness: all three bars must be equal")


def draw_lr_sweep(fig, *, sweep: dict) -> None:
    """Eval accuracy per (optimiser, lr), and how much each layer's raw weight norm grew during training."""
    ax1, ax2 = fig.subplots(1, 2)
    names = [f"{opt} {lr:g}" for opt, lr in sweep["configs"]]
    ax1.bar(names, sweep["eval_acc"], color=[f"C{i}" for i in range(len(names))])
    for i, v in enumerate(sweep["eval_acc"]):
        ax1.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax1.set_ylim(0, 1.08)
    label(ax1, "optimiser and peak lr", "eval accuracy", "1-Lipschitz model, same data and epochs")
    growth = np.asarray(sweep["norm_growth"])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax2.bar(np.arange(len(sweep["layers"])) + (i - (len(names) - 1) / 2) * width, growth[i], width, label=name)
    ax2.set_xticks(range(len(sweep["layers"])), sweep["layers"])
    ax2.set_yscale("log")
    ax2.axhline(1.0, color="gray", lw=0.8)
    ax2.legend(fontsize=7)
    label(ax2, "layer", "||W|| after / before training", "Raw weight norms grow under SGD")


def model_colors(names: Sequence[str]) -> dict:
    """One colour per model of the lambda sweep: a blue-to-yellow ramp over lambda, red for the 1-Lipschitz model."""
    import matplotlib

    ramp = matplotlib.colormaps["viridis"]
    lams = [n for n in names if n != "1-Lipschitz"]
    colours = {n: ramp(i / max(len(lams) - 1, 1) * 0.9) for i, n in enumerate(lams)}
    colours["1-Lipschitz"] = "C3"
    return colours


def draw_tradeoff(fig, *, sweep: dict, main: dict | None = None, main_name: str = "") -> None:
    """Clean vs verified accuracy at k = 1 for every lambda and the 1-Lipschitz model(s), and verified accuracy
    against k."""
    ax1, ax2 = fig.subplots(1, 2)
    colours = model_colors(sweep["names"])
    for name, lam, acc in zip(sweep["names"], sweep["lambdas"], sweep["verified"]):
        lip = lam is None
        ax1.scatter(acc[0], acc[1], marker="*" if lip else "o", s=200 if lip else 60, color=colours[name],
                    label=name, zorder=3)
        ax2.plot(sweep["ks"], acc, marker="*" if lip else "o", lw=2.5 if lip else 1, label=name, color=colours[name])
    if main is not None:
        ax1.scatter(main["verified"][0], main["verified"][1], marker="P", s=120, color="k", label=main_name, zorder=3)
    ax1.legend(fontsize=7)
    label(ax1, "clean accuracy", "verified accuracy at k = 1", "Clean vs verified (paper Table 3)")
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=7)
    label(ax2, "Levenshtein radius k", "verified accuracy (k = 0: clean)", "Verified accuracy vs k")


def draw_model_view(fig, *, sweep: dict, model: str) -> None:
    """Explorer view for one model of the lambda sweep: its verified accuracy against k (the others faint), and
    the histogram of its certified radii."""
    ax1, ax2 = fig.subplots(1, 2)
    name = model
    i = sweep["names"].index(name)
    colours = model_colors(sweep["names"])
    for j, (other, acc) in enumerate(zip(sweep["names"], sweep["verified"])):
        ax1.plot(sweep["ks"], acc, marker="o", lw=3 if j == i else 1, alpha=1 if j == i else 0.3, label=other,
                 color=colours[other])
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(fontsize=7)
    label(ax1, "Levenshtein radius k", "verified accuracy (k = 0: clean)",
          f"{name}: global bound {sweep['bound'][i]:.3g}")
    radii = np.asarray(sweep["radii"][i])
    top = max(int(radii.max()), 1)
    ax2.bar(range(-1, top + 1), [int((radii == r).sum()) for r in range(-1, top + 1)], color=colours[name])
    ax2.set_xticks(range(-1, top + 1))
    label(ax2, "certified radius (-1 = wrong)", "eval sentences", f"{name}: radius histogram")


# ----------------------------------------------------------------------------- tables

def settings_table(task: dict, optimizer: str, lr: float, sizes, schedule: str, momentum: float, p: str) -> Table:
    """The task and the training settings of the main run, next to the paper's."""
    max_len = sizes["train_max_len"]
    return table({"task": task["note"], "train": repr(task["train"]), "eval": repr(task["eval"]),
                  "model": f"{task['model']} over {task['alphabet'].size} characters, {task['classes']} classes, "
                           f"p = {p}",
                  "optimiser": f"{optimizer} (momentum {momentum if optimizer == 'sgd' else 'n/a'}), peak lr {lr:g}, "
                               f"{schedule} schedule",
                  "epochs, batch": f"{sizes['epochs']}, {sizes['batch_size']}",
                  "truncation": (f"sentences cut to {max_len} characters for training only (never for "
                                 "certification)" if max_len else "none"),
                  "the paper": "SGD, momentum 0.9, lr 100, cyclic, batch 128, 30 epochs, sentences cut to 1000 "
                               "characters"}, title="This run", max_chars=400)


def scale_table(scale: dict) -> Table:
    """The scale-invariance check: the normalised model against the raw network, same weights and factors."""
    return table([{"network": "1-Lipschitz (Eq. 7)", "largest logit change": scale["gap"],
                   "relative to the logits": scale["gap"] / scale["logit_scale"]},
                  {"network": "raw (same weights, no normalisation)", "largest logit change": None,
                   "relative to the logits": scale["raw_change"]}],
                 title=f"{scale['trials']} random per-layer scalings in [1e-3, 1e3] (float64)")


def gradients_table(true_grad: dict, detached: dict, scaling_gap: float) -> Table:
    """Per layer: weight and gradient norms and the cosine between them, through the normalisers and detached."""
    rows = [{"layer": name, "||W||": t["weight_norm"], "||grad||": t["grad_norm"], "cos(grad, W)": t["cosine"],
             "cos with the constants detached": detached[name]["cosine"]} for name, t in true_grad.items()]
    return table(rows, title=f"Cross-entropy gradients at initialisation (relative gap of alpha grad(alpha W) = "
                             f"grad(W), alpha = 8: {scaling_gap:.1e})")


def effective_lr_table(model: LipsLevCNN, lr: float) -> Table:
    """Per layer: ||W||^2 and the effective learning rate lr / ||W||^2 of plain SGD at ``lr``."""
    return table([{"layer": name, "||W||^2": lr / value, f"effective lr at SGD lr {lr:g}": value}
                  for name, value in effective_learning_rates(model, lr).items()],
                 title="Effective learning rates at initialisation")


def implementation_table(unit: dict, largest_l: float, rescale: float, factors: Sequence[float]) -> Table:
    """The three checks with a known answer of the Implementation section."""
    return table({**{f"{k} of the effective weights": v for k, v in unit.items()},
                  "largest L_yt of the model (global M(E))": largest_l,
                  "raw network rescaled at init vs normalised: max |logit difference|": rescale,
                  "schedule factor: start, largest, end": [factors[0], max(factors), factors[-1]]},
                 title="Checks with a known answer", digits=12)


def lr_sweep_table(sweep: dict) -> Table:
    """Per (optimiser, peak lr): eval accuracy and the growth of each layer's raw weight norm."""
    return table([{"optimiser": opt, "peak lr": lr_, "eval accuracy": acc,
                   **{f"norm growth: {layer}": g for layer, g in zip(sweep["layers"], growth)}}
                  for (opt, lr_), acc, growth in zip(sweep["configs"], sweep["eval_acc"], sweep["norm_growth"])],
                 title="The optimiser sweep (1-Lipschitz model, numbers_letters)")


def history_table(history: dict) -> Table:
    """The per-epoch record of a training run."""
    keys = ("loss", "train_acc", "eval_acc", "M(E)", "M(K)", "M(C)", "head_spread", "seconds")
    return table([{"epoch": e, **{k: history[k][i] for k in keys}} for i, e in enumerate(history["epoch"])],
                 title="Training, per epoch (M(.) of the raw weights)")


def verified_table(evaluation: dict) -> Table:
    """Verified accuracy per radius k (k = 0: clean accuracy)."""
    return table([{"k": k, "verified accuracy": v} for k, v in zip(evaluation["ks"], evaluation["verified"])],
                 title=f"{len(evaluation['radii'])} eval sentences certified in {evaluation['seconds']:.2f} s "
                       f"({1e3 * evaluation['per_sentence_s']:.2f} ms per sentence)")


def soundness_table(check: dict, per_sentence_s: float) -> Table:
    """The soundness check in numbers: certified sentences against brute force and the attack, the uncertified ones,
    the largest |dg| / L and the time per sentence."""
    radius = np.asarray(check["radius"], dtype=int)
    robust = np.asarray(check["bf_robust"], dtype=bool)
    attacked = np.asarray(check["attacked"], dtype=bool)
    certified, uncertified = radius >= 1, radius == 0
    lengths = np.asarray(check["length"])[certified]
    return table({"certified sentences checked (radius >= 1)": int(certified.sum()),
                  "their encoded lengths": f"{lengths.min()}-{lengths.max()}" if lengths.size else "-",
                  "certified but brute force finds a flip": check["bf_violations"],
                  "certified but the attack flips it": check["attack_violations"],
                  "correct sentences with radius 0": int(uncertified.sum()),
                  "... robust at k = 1 anyway (brute force)": int((uncertified & robust).sum()),
                  "... flipped by the attack": int((uncertified & attacked).sum()),
                  "largest |dg| / L over all checked balls": check["max_ratio"],
                  "brute force, seconds per sentence": float(np.mean(check["bf_seconds"])) if check["bf_seconds"]
                  else None,
                  "neighbours per sentence": float(np.mean(check["neighbours"])) if check["neighbours"] else None,
                  "certificate, ms per sentence": 1e3 * per_sentence_s}, title="Soundness at k = 1")


def tradeoff_table(sweep: dict) -> Table:
    """Per model of the lambda sweep: clean and verified accuracy at k = 1..3, the global bound, training time."""
    return table([{"model": name, "clean": acc[0], "verified k=1": acc[1], "k=2": acc[2], "k=3": acc[3],
                   "global bound M(C) M(K) M(E)": bound, "seconds": float(sec)}
                  for name, acc, bound, sec in zip(sweep["names"], sweep["verified"], sweep["bound"],
                                                   sweep["seconds"])],
                 title=f"The lambda sweep: {sweep['n_train']} training sentences, {sweep['epochs']} epochs")


def tradeoff_summary(sweep: dict) -> dict:
    """Indices and differences the notebook quotes: lambda = 0, the best baseline at k = 1, the 1-Lipschitz model,
    and the 1-Lipschitz model minus the best baseline at each k."""
    lams = [i for i, lam in enumerate(sweep["lambdas"]) if lam is not None]
    lip = sweep["names"].index("1-Lipschitz")
    best = max(lams, key=lambda i: sweep["verified"][i][1])
    diffs = {k: sweep["verified"][lip][k] - max(sweep["verified"][i][k] for i in lams) for k in range(1, 4)}
    return {"lams": lams, "lip": lip, "best": best, "lam0": sweep["lambdas"].index(0.0), "diffs": diffs}


def tradeoff_summary_table(sweep: dict) -> Table:
    """The comparison of :func:`tradeoff_summary` as a table."""
    s = tradeoff_summary(sweep)
    rows = [{"model": "lambda = 0", "clean": sweep["verified"][s["lam0"]][0],
             "verified k=1": sweep["verified"][s["lam0"]][1]},
            {"model": f"best baseline at k = 1: {sweep['names'][s['best']]}", "clean": sweep["verified"][s["best"]][0],
             "verified k=1": sweep["verified"][s["best"]][1]},
            {"model": "1-Lipschitz", "clean": sweep["verified"][s["lip"]][0],
             "verified k=1": sweep["verified"][s["lip"]][1]}]
    diffs = ", ".join(f"k = {k}: {v:+.3f}" for k, v in s["diffs"].items())
    return table(rows, title=f"1-Lipschitz minus the best baseline: {diffs}")


def angle_table(grads: dict[str, tuple[torch.Tensor, torch.Tensor]], lr: float, angle_fn) -> Table:
    """Per layer: the angle one plain SGD step at ``lr`` turns the weights by (``angle_fn``: the exercise's function),
    the exact angle arctan(lr ||g|| / ||W||) of a gradient orthogonal to W, and its small-step form lr ||g|| / ||W||."""
    rows = []
    for name, (w, g) in grads.items():
        ratio = lr * float(g.norm()) / float(w.norm())
        rows.append({"layer": name, "||W||": float(w.norm()), "||grad||": float(g.norm()),
                     f"turn angle at lr {lr:g} (rad)": float(angle_fn(w, g, lr)),
                     "arctan(lr ||g|| / ||W||)": math.atan(ratio), "lr ||g|| / ||W|| (small steps)": ratio})
    return table(rows, title="One SGD step from the initial weights")


# ----------------------------------------------------------------------------- exercises

def triangle_reference(step: int, total: int) -> float:
    """The exercise's reference: :func:`lionsnb.lipslev.train.triangle`."""
    return triangle(step, total)


def penalty_reference(emb: torch.Tensor, kernel: torch.Tensor, head: torch.Tensor) -> float:
    """The exercise's reference: M(C) M(K) M(E) of raw weights for p = 2."""
    return float(embedding_constant(emb, 2.0) * conv_constant(kernel, 2.0) * head_constant(head, 2.0))


def raw_weights(model: LipsLevCNN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embedding, first conv kernel, head) of the raw weights as detached float64 tensors."""
    return (model.emb.weight.detach().double(), model.convs[0].weight.detach().double(),
            model.C.weight.detach().double())


def _penalty_cases():
    gen = torch.Generator().manual_seed(3)
    cases = []
    for sigma, d, h, q, k in ((3, 2, 2, 1, 2), (5, 4, 3, 3, 3), (8, 6, 5, 4, 4)):
        emb = torch.randn(sigma + 1, d, generator=gen, dtype=torch.float64)
        emb[0] = 0
        cases.append((emb, torch.randn(h, d, q, generator=gen, dtype=torch.float64),
                      torch.randn(k, h, generator=gen, dtype=torch.float64)))
    # characters clustered far from the origin: the largest distance is to the padding row
    emb = 5.0 + 0.1 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    emb[0] = 0
    cases.append((emb, torch.randn(4, 3, 2, generator=gen, dtype=torch.float64),
                  torch.randn(3, 4, generator=gen, dtype=torch.float64)))
    return cases


def _angle_cases():
    gen = torch.Generator().manual_seed(4)
    cases = []
    for shape, lr in (((5,), 0.1), ((4, 3), 1.0), ((3, 2, 2), 10.0), ((6,), 100.0)):
        w = torch.randn(*shape, generator=gen, dtype=torch.float64)
        g = torch.randn(*shape, generator=gen, dtype=torch.float64)
        cases.append((w, g, lr))
        g_perp = g - (g * w).sum() / (w * w).sum() * w  # a gradient orthogonal to W, as for a scale-invariant layer
        cases.append((w, g_perp, lr))
    return cases


def check_exercise_triangle(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: the one-cycle factor, against :func:`lionsnb.lipslev.train.triangle`."""
    cases = [(s, t) for t in (1, 2, 5, 11, 100) for s in sorted({0, 1, t // 2, t - 2, t - 1}) if 0 <= s < t]
    return check_exercise("triangular learning-rate factor", attempt, triangle_reference, cases,
                          hint="0 at step 0, 1 at step (total - 1) / 2, 0 at step total - 1; linear in between. "
                               "With a single step the factor is 1.", ctx=ctx)


def check_exercise_turn_angle(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: the angle one SGD step turns a layer by, against :func:`turn_angle`."""
    return check_exercise("turn angle of one SGD step", attempt, turn_angle, _angle_cases(),
                          compare=lambda got, exp: abs(float(got) - exp) <= 1e-6 * max(1.0, abs(exp)),
                          hint="W' = W - lr * grad; the angle between the flattened W and W' is "
                               "arccos(<W, W'> / (||W|| ||W'||)) (clip the cosine to [-1, 1]).", ctx=ctx)


def check_exercise_penalty(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: the baseline's penalty M(C) M(K) M(E) for p = 2."""
    return check_exercise("the baseline's Lipschitz penalty", attempt, penalty_reference, _penalty_cases(),
                          hint="M(E): the largest distance between two embedding rows (the padding row 0 "
                               "included); M(K): the sum over taps of the spectral norms of kernel[:, :, j]; "
                               "M(C): the largest distance between two head rows.", ctx=ctx)


#: model answers of the exercises without code (for teachers; `lionsnb answers lipslev_training` prints them)
MODEL_ANSWERS = {
    4: "SGD at lr 100: the effective learning rate of a layer is 100 / ||W||^2 (Background). For the paper-size "
       "AG-News model ||E||^2 is about 56 x 150 = 8400 at initialisation, so the embedding moves by about 0.01 per "
       "unit gradient while the small head turns fast, and every SGD step makes each norm grow (the gradient is "
       "orthogonal to the weights), lowering the effective rates further. In 5 epochs this is a different, typically "
       "slower start than Adam's, whose steps have a fixed raw size whatever the norm; compare the loss, the "
       "accuracies and the verified accuracies of the two runs (the history and verified tables), and remember that "
       "the paper needs 30 epochs on 120k sentences with these settings. In the constants panel M(E), M(K), M(C) "
       "grow steadily under SGD (the norms can only grow), while under Adam they drift without that systematic "
       "growth; the network never sees them, since it divides by them. With NORM = 'inf' the head constants use the "
       "dual norm r = 1. The head spread still measures how far the pairwise distances ||c_i - c_j||_1 / M(C) are "
       "from equal; an exact regular simplex is a Euclidean notion, so compare head_spread_final of the two runs "
       "rather than expecting 0.",
}

__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "NORMS", "LAMBDAS", "LR_SWEEP", "show_source", "table", "figure", "label",
    "explore", "LipsLevCNN", "build_model", "train", "triangle", "head_spread", "norm_of", "as_float64",
    "resolve_optimizer", "load_task", "scaled_copy", "scale_invariance_gap", "raw_gradients", "layer_gradients",
    "turn_angle", "gradient_scaling_gap", "effective_learning_rates", "normalised_constants", "rescale_gap",
    "schedule_factors", "train_run", "model_of", "rescale_to_one_lipschitz", "evaluate",
    "length_radius_correlation", "soundness", "reg_settings", "tradeoff", "weight_norms", "lr_sweep",
    "head_distances", "raw_weights", "draw_scale", "draw_history", "draw_head", "draw_verified", "draw_soundness",
    "draw_lr_sweep", "draw_tradeoff", "draw_model_view", "settings_table", "scale_table", "gradients_table",
    "effective_lr_table", "implementation_table", "lr_sweep_table", "history_table", "verified_table",
    "soundness_table", "tradeoff_table", "tradeoff_summary", "tradeoff_summary_table", "angle_table",
    "check_exercise_triangle", "check_exercise_turn_angle", "check_exercise_penalty",
]
