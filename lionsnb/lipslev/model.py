"""The LipsLev character CNN and its Lipschitz constants w.r.t. the Levenshtein distance.

Model (official ``ConvLipsModel``, LIONS-EPFL/LipsLev@81d7cda ``models.py``): embedding with a zero
padding row -> Conv1d (kernel q, padding q-1 on both sides, no bias) -> ReLU [-> more such layers]
-> SUM pooling over positions -> linear head without bias.

Constants for the norm p with dual r (1/p + 1/r = 1), Thm 4.3 / Cor. 4.4 / Remark 4.5:

* M(E)   = max_{i,j in Gamma + pad} ||e_i - e_j||_p, and the local M(E, P) with i restricted to the
  characters of P plus padding;
* M(K)   = sum_{taps j} ||K[:, :, j]||_{p->p} (the code sums over taps: one changed input changes q outputs);
* M(C)   = max_{i,j} ||c_i - c_j||_r over class rows.

Bound on the margin g_yt = f_y - f_t:  |g_yt(P) - g_yt(Q)| <= ||c_y - c_t||_r prod M(K) M(E, P) d_Lev(P, Q).
With ``lipschitz=True`` every layer is divided by its own constant inside ``forward`` (Eq. 7), so
every pairwise margin is 1-Lipschitz.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lionsnb.lipslev.levenshtein import Alphabet

P_CHOICES = (1.0, 2.0, math.inf)
#: the norms the notebooks offer as a knob: knob value -> p
NORMS = {"1": 1.0, "2": 2.0, "inf": math.inf}


def dual(p: float) -> float:
    """r with 1/p + 1/r = 1."""
    p = float(p)
    if p == 1.0:
        return math.inf
    if math.isinf(p):
        return 1.0
    return p / (p - 1.0)


def check_p(p: float) -> float:
    p = float(p)
    if p not in P_CHOICES:
        raise ValueError(f"p = {p!r} is not supported: use 1, 2 or inf (math.inf)")
    return p


def norm_of(name: str) -> float:
    """p for a knob value '1', '2' or 'inf' (the notebooks' NORM parameter)."""
    if name not in NORMS:
        raise ValueError(f"norm {name!r}: use one of {', '.join(NORMS)}")
    return NORMS[name]


def norm_name(p: float) -> str:
    """The knob value of a norm p: '1', '2' or 'inf'."""
    return "inf" if math.isinf(p) else f"{p:g}"


def pairwise_distances(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """||x_i - y_j||_p for all rows (differentiable; exact also for p = inf)."""
    return torch.linalg.vector_norm(x[:, None, :] - y[None, :, :], ord=p, dim=-1)


def operator_norm(matrix: torch.Tensor, p: float) -> torch.Tensor:
    """Induced p->p norm of matrices (batched over leading dims): spectral, max column sum, max row sum."""
    if p == 2.0:
        return torch.linalg.matrix_norm(matrix, ord=2)
    if p == 1.0:
        return matrix.abs().sum(-2).amax(-1)
    return matrix.abs().sum(-1).amax(-1)


def embedding_constant(weight: torch.Tensor, p: float, ids: Sequence[int] | None = None) -> torch.Tensor:
    """M(E) (``ids`` None) or the local M(E, P) with rows ``ids`` of P plus the padding row 0."""
    if ids is None:
        return pairwise_distances(weight, weight, p).max()
    rows = torch.as_tensor(sorted(set(int(i) for i in ids) | {0}), dtype=torch.long, device=weight.device)
    return pairwise_distances(weight[rows], weight, p).max()


def conv_constant(weight: torch.Tensor, p: float) -> torch.Tensor:
    """M(K) = sum over the q taps of ||K[:, :, j]||_{p->p} for a Conv1d weight (h, d, q)."""
    return operator_norm(weight.permute(2, 0, 1), p).sum()


def head_constant(weight: torch.Tensor, p: float) -> torch.Tensor:
    """M(C) = max over class pairs of ||c_i - c_j||_r (r the dual of p)."""
    return pairwise_distances(weight, weight, dual(p)).max()


class LipsLevCNN(nn.Module):
    """Character CNN of LipsLev; attribute names (``emb``, ``conv0``.., ``C``) match the official state dict."""

    def __init__(self, alphabet: Alphabet, num_classes: int, *, embed_dim: int = 150, hidden: int = 100,
                 kernel_size: int = 10, layers: int = 1, p: float = 2.0, lipschitz: bool = True):
        super().__init__()
        if layers < 1 or kernel_size < 1 or num_classes < 2:
            raise ValueError("need layers >= 1, kernel_size >= 1 and at least 2 classes")
        self.alphabet = alphabet
        self.p = check_p(p)
        self.lipschitz = bool(lipschitz)
        self.kernel_size, self.layers, self.num_classes = kernel_size, layers, num_classes
        self.emb = nn.Embedding(alphabet.size + 1, embed_dim, padding_idx=0)
        widths = [embed_dim] + [hidden] * layers
        for i in range(layers):
            setattr(self, f"conv{i}", nn.Conv1d(widths[i], widths[i + 1], kernel_size, padding=kernel_size - 1,
                                                bias=False))
        self.C = nn.Linear(hidden, num_classes, bias=False)

    def cache_token(self) -> dict:
        """What a cached computation on this model depends on (``ctx.cached`` keys models by it): the weights and
        the settings that are not in the state dict (norm, normalisation, alphabet, sizes)."""
        return {"state": dict(self.state_dict()), "p": norm_name(self.p), "lipschitz": self.lipschitz,
                "alphabet": "".join(self.alphabet.chars), "kernel_size": self.kernel_size, "layers": self.layers,
                "classes": self.num_classes}

    @property
    def convs(self) -> list[nn.Conv1d]:
        return [getattr(self, f"conv{i}") for i in range(self.layers)]

    def constants(self) -> dict[str, torch.Tensor]:
        """M(E), M(K) per layer and M(C) of the raw (unnormalised) weights."""
        return {"M(E)": embedding_constant(self.emb.weight, self.p),
                **{f"M(K{i})": conv_constant(c.weight, self.p) for i, c in enumerate(self.convs)},
                "M(C)": head_constant(self.C.weight, self.p)}

    def effective_weights(self) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The weights the forward pass uses: E/M(E), K/M(K), C/M(C) for a 1-Lipschitz model, else raw."""
        emb, kernels, head = self.emb.weight, [c.weight for c in self.convs], self.C.weight
        if self.lipschitz:
            emb = emb / embedding_constant(emb, self.p)
            kernels = [k / conv_constant(k, self.p) for k in kernels]
            head = head / head_constant(head, self.p)
        return emb, kernels, head

    def features(self, ids: torch.Tensor, weights=None) -> torch.Tensor:
        """Sum-pooled features z (B, h) of padded id batches (B, n)."""
        emb, kernels, _ = weights if weights is not None else self.effective_weights()
        x = F.embedding(ids, emb, padding_idx=0).transpose(1, 2)
        for k in kernels:
            x = torch.relu(F.conv1d(x, k, padding=k.shape[-1] - 1))
        return x.sum(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weights = self.effective_weights()
        return self.features(ids, weights) @ weights[2].T

    def lipschitz_constants(self, ids: Sequence[int] | None = None) -> torch.Tensor:
        """(K, K) matrix of G_yt = ||c_y - c_t||_r prod M(K) M(E, P) of the effective weights.

        ``ids`` given: the local constant around that sentence (Remark 4.5); None: the global one.
        """
        emb, kernels, head = self.effective_weights()
        m_e = embedding_constant(emb, self.p, ids)
        m_k = torch.stack([conv_constant(k, self.p) for k in kernels]).prod()
        return pairwise_distances(head, head, dual(self.p)) * m_k * m_e


def build_model(alphabet: Alphabet, num_classes: int, *, seed: int = 0, **kwargs) -> LipsLevCNN:
    """A freshly initialised model (PyTorch default init, as in the paper) under a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LipsLevCNN(alphabet, num_classes, **kwargs)


def load_official_checkpoint(state_dict_path: str | Path, char_to_id_path: str | Path, p: float = 2.0,
                             lipschitz: bool = True) -> LipsLevCNN:
    """The authors' released model as a :class:`LipsLevCNN` (sizes inferred from the tensors, any alphabet).

    ``state_dict_path`` holds ``emb.weight`` (sigma + 1, d), ``conv{i}.weight`` (h, d, q) and ``C.weight``
    (K, h), loaded with ``weights_only=True``; ``char_to_id_path`` the alphabet JSON.
    """
    state_dict_path, char_to_id_path = Path(state_dict_path), Path(char_to_id_path)
    for path in (state_dict_path, char_to_id_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass the paths of the official state dict and its "
                                    "char_to_id JSON (offline copies live in ../shared/data/lipslev_official/)")
    state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    alphabet = Alphabet.from_char_to_id(json.loads(char_to_id_path.read_text(encoding="utf-8")))
    layers = sum(1 for k in state if k.startswith("conv") and k.endswith(".weight"))
    missing = [k for k in ("emb.weight", "C.weight", *(f"conv{i}.weight" for i in range(layers))) if k not in state]
    if missing or layers == 0:
        raise ValueError(f"{state_dict_path} is not a LipsLev state dict: missing {missing or ['conv0.weight']}")
    emb, conv, head = state["emb.weight"], state["conv0.weight"], state["C.weight"]
    if emb.shape[0] != alphabet.size + 1:
        raise ValueError(f"the embedding has {emb.shape[0]} rows but the alphabet has {alphabet.size} characters "
                         "plus padding: the state dict and char_to_id files do not belong together")
    model = LipsLevCNN(alphabet, head.shape[0], embed_dim=emb.shape[1], hidden=conv.shape[0],
                       kernel_size=conv.shape[2], layers=layers, p=p, lipschitz=lipschitz)
    model.load_state_dict(state)
    return model.eval()
