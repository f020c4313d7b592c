"""Token-level unlearning losses, exactly as the reference code computes them.

Conventions (``unlearning_spec.md`` §1-2): ``logits`` is ``[B, T, V]``, ``labels`` is ``[B, T]`` with ``-100`` on
positions without a target; position ``t`` of the logits predicts the label at ``t + 1`` (so ``labels[:, 0]`` is never
a target and the logits of the last position are never used). Everything is computed in the dtype it is given (no
float32 cast, unlike ``model(...).loss``) and is differentiable with respect to the model's logits.

* :func:`sequence_nll`: summed NLL per row, S(x) (TOFU ``get_batch_loss``).
* :func:`lm_loss`: HF ``outputs.loss``, the token-weighted mean NLL over every target of the batch.
* :func:`npo_loss`: NPO (Zhang et al. 2024) with the summed NLL, ``-(2/beta) mean log sigmoid(beta (S - S_ref))``.
* :func:`kl_retain`: KL(p_ref || p_theta) over all B*T positions (TOFU's ``'batchmean'``, no mask).
* :func:`npo_muse_logits`: MUSE's variant (difference of raw logits), offered only for parity, under its own name.

The baselines are sums of these with coefficients 1 (:data:`METHOD_LOSSES`, :func:`method_loss`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _check_pair(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must be [B, T] = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position NLL after the causal shift, ``[B, T-1]``, 0 where the shifted label is -100."""
    _check_pair(logits, labels)
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    safe = torch.where(mask, shift_labels, torch.zeros_like(shift_labels))
    logp = torch.log_softmax(shift_logits, dim=-1)
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, nll, torch.zeros_like(nll))


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """Number of target positions per row (shifted labels that are not -100), ``[B]``."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed NLL per sequence, ``[B]`` (spec §2.2; TOFU ``data_module.py`` ``get_batch_loss``).

    S(x) = sum over target positions t of -log softmax(logits[t])[labels[t+1]]; a row without a target gives 0.
    """
    return token_nll(logits, labels).sum(dim=1)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """HF ``outputs.loss``: sum of :func:`sequence_nll` over the batch / number of target positions (spec §2.3).

    A token-weighted mean (rows with long answers weigh more), not a mean of per-row means. A batch without any
    target returns NaN, as HF does (0/0).
    """
    total = sequence_nll(logits, labels).sum()
    return total / target_count(labels).sum().to(total.dtype)


def npo_loss(logits_forget: torch.Tensor, labels_forget: torch.Tensor, ref_logits_forget: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """Negative preference optimisation (spec §2.4; NPO repo ``TOFU/dataloader.py`` branch ``'npo'``).

    ``-(2/beta) * mean_b log sigmoid(beta * (S_theta - S_ref))`` with S the *summed* NLL of each row under the model
    and under the frozen reference (same labels). Stable for large |beta (S - S_ref)| (log-sigmoid, softplus form).
    The mean runs over all B rows (a row with no target contributes (2/beta) log 2).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if ref_logits_forget.shape != logits_forget.shape:
        raise ValueError(f"reference logits {tuple(ref_logits_forget.shape)} must match the model's "
                         f"{tuple(logits_forget.shape)}")
    s_theta = sequence_nll(logits_forget, labels_forget)
    s_ref = sequence_nll(ref_logits_forget.detach(), labels_forget)
    return -(2.0 / beta) * F.logsigmoid(beta * (s_theta - s_ref)).mean()


def kl_retain(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) summed over the vocabulary, averaged over all B*T positions (spec §2.5).

    ``logits`` (first argument) is the model being trained; ``ref_logits`` the frozen reference. No labels, no mask:
    padding, question and last positions all count (TOFU's ``kl_div(..., reduction='batchmean', log_target=True)``
    on the ``[B*T, V]`` views).
    """
    if logits.shape != ref_logits.shape or logits.dim() != 3:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} must both be "
                         "[B, T, V]")
    logp = torch.log_softmax(logits, dim=-1)
    logq = torch.log_softmax(ref_logits.detach(), dim=-1)
    rows = logits.shape[0] * logits.shape[1]
    return (logq.exp() * (logq - logp)).sum() / rows


def npo_muse_logits(logits_forget: torch.Tensor, labels_forget: torch.Tensor, ref_logits_forget: torch.Tensor,
                    beta: float = 0.1) -> torch.Tensor:
    """MUSE's NPO (``muse_bench`` ``iterative.py``): the difference of the *raw logits* at the labels, summed per row.

    Not the paper's definition; offered for parity with MUSE only (method note §5, "MUSE caveat").
    """
    _check_pair(logits_forget, labels_forget)
    shift_labels = labels_forget[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    safe = torch.where(mask, shift_labels, torch.zeros_like(shift_labels)).unsqueeze(-1)
    pick = logits_forget[:, :-1].gather(-1, safe).squeeze(-1)
    pick_ref = ref_logits_forget.detach()[:, :-1].gather(-1, safe).squeeze(-1)
    log_ratio = torch.where(mask, pick - pick_ref, torch.zeros_like(pick)).sum(dim=1)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


# --------------------------------------------------------------------------- the baselines as compositions

#: The static scalarisations min c_R L_R - c_F L_F and friends (spec §2.6); NGDiff is not a loss but a direction.
METHODS: tuple[str, ...] = ("GA", "GradDiff", "KL", "NPO", "NPO+GD", "NPO+KL", "NGDiff")

#: Which inputs each method needs: forget logits, retain logits, reference logits on forget / on retain.
NEEDS: dict[str, dict[str, bool]] = {
    "GA": dict(retain=False, ref_forget=False, ref_retain=False),
    "GradDiff": dict(retain=True, ref_forget=False, ref_retain=False),
    "KL": dict(retain=True, ref_forget=False, ref_retain=True),
    "NPO": dict(retain=False, ref_forget=True, ref_retain=False),
    "NPO+GD": dict(retain=True, ref_forget=True, ref_retain=False),
    "NPO+KL": dict(retain=True, ref_forget=True, ref_retain=True),
    "NGDiff": dict(retain=True, ref_forget=False, ref_retain=False),
}


def forget_term(method: str, logits_f: torch.Tensor, labels_f: torch.Tensor, ref_logits_f: torch.Tensor | None = None,
                beta: float = 0.1) -> torch.Tensor:
    """The forget part of a method's loss (to minimise): ``-lm_loss`` (GA family) or ``npo_loss`` (NPO family)."""
    if method.startswith("NPO"):
        if ref_logits_f is None:
            raise ValueError(f"{method} needs the reference model's logits on the forget batch")
        return npo_loss(logits_f, labels_f, ref_logits_f, beta=beta)
    return -lm_loss(logits_f, labels_f)


def retain_term(method: str, logits_r: torch.Tensor | None, labels_r: torch.Tensor | None,
                ref_logits_r: torch.Tensor | None = None) -> torch.Tensor | None:
    """The retain part of a method's loss: None (GA, NPO), ``lm_loss`` (GradDiff, NPO+GD, NGDiff) or ``kl_retain``."""
    if method in ("GA", "NPO"):
        return None
    if logits_r is None:
        raise ValueError(f"{method} needs a retain batch")
    if method in ("KL", "NPO+KL"):
        if ref_logits_r is None:
            raise ValueError(f"{method} needs the reference model's logits on the retain batch")
        return kl_retain(logits_r, ref_logits_r)
    return lm_loss(logits_r, labels_r)


def method_loss(method: str, logits_f: torch.Tensor, labels_f: torch.Tensor, logits_r: torch.Tensor | None = None,
                labels_r: torch.Tensor | None = None, ref_logits_f: torch.Tensor | None = None,
                ref_logits_r: torch.Tensor | None = None, beta: float = 0.1) -> torch.Tensor:
    """The scalar loss a baseline minimises (spec §2.6, all coefficients 1).

    GA = -lm(F); GradDiff = -lm(F) + lm(R); KL = -lm(F) + KL(ref||theta on R); NPO = npo(F); NPO+GD = npo(F) + lm(R);
    NPO+KL = npo(F) + KL(R). NGDiff has no scalar loss (its step is :func:`~lionsnb.unlearning.ngdiff_direction`).
    """
    if method not in METHOD_LOSSES:
        raise ValueError(f"unknown method {method!r}: the scalar-loss methods are {', '.join(METHOD_LOSSES)} "
                         "(NGDiff is a direction, see ngdiff_direction)")
    loss = forget_term(method, logits_f, labels_f, ref_logits_f, beta)
    extra = retain_term(method, logits_r, labels_r, ref_logits_r)
    return loss if extra is None else loss + extra


#: The methods defined by a scalar loss.
METHOD_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    name: (lambda *a, _n=name, **k: method_loss(_n, *a, **k)) for name in METHODS if name != "NGDiff"}
