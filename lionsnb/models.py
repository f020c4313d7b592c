"""Small models shared by the series."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """A fully connected network ``in -> hidden... -> out`` with one activation type."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All trainable parameters as one detached vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])
