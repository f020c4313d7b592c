"""The EMA teacher of the SSDA recipe (``utils/ema.py`` of ``Morales97/ssda``).

After every optimizer step t (counted from 0)::

    alpha_t = min(alpha, (t + 1) / (t + 10)),    theta_EMA <- alpha_t theta_EMA + (1 - alpha_t) theta

so alpha_0 = 0.1, alpha_9 = 0.526 and the cap 0.995 is reached at t = 1790. This is not the mean-teacher ramp
1 - 1/(t + 1). The update covers every floating-point entry of the state dict, parameters **and buffers**
(BatchNorm running statistics are averaged, not copied); integer buffers (``num_batches_tracked``) are left
as they are.
"""
from __future__ import annotations

import torch
from torch import nn


def ema_alpha(step: int, alpha: float = 0.995) -> float:
    """alpha_t = min(alpha, (step + 1) / (step + 10))."""
    if step < 0:
        raise ValueError(f"step={step}: the EMA ramp counts optimizer steps from 0.")
    return min(alpha, (step + 1) / (step + 10))


def ema_update(teacher: nn.Module, student: nn.Module, step: int, alpha: float = 0.995) -> float:
    """Update ``teacher`` in place towards ``student`` with alpha_t = :func:`ema_alpha` (step, alpha).

    Every floating-point state-dict entry (parameters and buffers) becomes alpha_t * teacher +
    (1 - alpha_t) * student; integer buffers are untouched; the student is not modified.

    Returns:
        alpha_t (for logging).
    """
    a = ema_alpha(step, alpha)
    t_state = teacher.state_dict(keep_vars=True)
    s_state = student.state_dict(keep_vars=True)
    if t_state.keys() != s_state.keys():
        raise ValueError("teacher and student must have the same architecture (state-dict keys differ).")
    keys = [k for k, t in t_state.items() if torch.is_floating_point(t)]
    with torch.no_grad():
        t_list = [t_state[k].data for k in keys]
        s_list = [s_state[k].detach().to(t_state[k].dtype) for k in keys]
        torch._foreach_mul_(t_list, a)
        torch._foreach_add_(t_list, s_list, alpha=1 - a)
    return a
