"""Losses of the SAM series: smoothed cross-entropy and BiSAM's lower bounds of the 0-1 loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: gamma = log(e - 1), so that phi_log(0) = 0
GAMMA = math.log(math.e - 1.0)
SURROGATES = ("log", "tanh")


def smooth_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Per-sample KL(q || softmax(logits)) with q_y = 1 - s and q_j = s / (K - 1) for j != y.

    This is the training loss of the SAM, BiSAM and SAMPa reference code.  It equals the
    cross-entropy against q minus the (constant) entropy of q, so it has the same gradient
    as cross-entropy against q.  Note the difference to ``F.cross_entropy(label_smoothing=s)``,
    which puts s / K on every class, the target included.  ``smoothing=0`` is plain cross-entropy.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    n_classes = logits.shape[-1]
    q = torch.full_like(logits, smoothing / (n_classes - 1))
    q.scatter_(-1, targets[:, None], 1.0 - smoothing)
    log_p = F.log_softmax(logits, dim=-1)
    return (torch.xlogy(q, q) - q * log_p).sum(-1)


def phi_log(x: torch.Tensor) -> torch.Tensor:
    """phi_log(x) = 1 - log(1 + exp(gamma - x)), gamma = log(e - 1): a smooth lower bound of the step 1[x >= 0]."""
    return 1.0 - F.softplus(GAMMA - x)


def phi_tanh(x: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """phi_tanh(x) = tanh(alpha x)."""
    return torch.tanh(alpha * x)


def bisam_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "log", mu: float = 1.0,
               alpha: float = 0.1) -> torch.Tensor:
    """BiSAM's perturbation loss per sample (Xie et al. 2024, Eq. for Q_{phi,mu}):

        logsumexp_j ( mu * phi(F_j) ),   F_j = f_j - f_y,

    a smooth lower bound of the 0-1 loss that the inner (maximising) problem uses instead
    of cross-entropy.  As in the official code there is no 1/mu factor (the ascent direction
    is normalised, so it would only rescale).  The logit shift is vectorised (a gather), not
    an in-place loop over rows.
    """
    if kind not in SURROGATES:
        raise ValueError(f"kind must be one of {SURROGATES}, got {kind!r}")
    if mu <= 0:
        raise ValueError(f"mu must be > 0, got {mu}")
    shifted = logits - logits.gather(-1, targets[:, None])
    phi = phi_log(shifted) if kind == "log" else phi_tanh(shifted, alpha)
    return torch.logsumexp(mu * phi, dim=-1)


def zero_one_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample 0-1 loss: 1 where the prediction is wrong."""
    return (logits.argmax(-1) != targets).to(logits.dtype)


def q_lower_bound(logits: torch.Tensor, targets: torch.Tensor, kind: str = "log", mu: float = 1.0,
                  alpha: float = 0.1) -> torch.Tensor:
    """Q with the paper's 1/mu, minus log(K)/mu: per sample a lower bound of the 0-1 loss.

    (1/mu) logsumexp_j(mu phi_j) <= max_j phi_j + log(K)/mu, and max_j phi(F_j) <= 0-1 loss
    because phi(0) = 0 (the j = y term) and phi(x) <= 1[x >= 0] for every x.
    """
    return bisam_loss(logits, targets, kind, mu, alpha) / mu - math.log(logits.shape[-1]) / mu


def ce_upper_bound(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in bits, CE / log 2: per sample an upper bound of the 0-1 loss."""
    return F.cross_entropy(logits, targets, reduction="none") / math.log(2.0)
