"""Small models shared by the series."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """A fully connected network ``in -> hidden... -> out`` with one activation type,
    optionally with BatchNorm after every hidden linear layer."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, activation: type[nn.Module] = nn.ReLU,
                 batch_norm: bool = False):
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All trainable parameters as one detached vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with max pooling, then a linear head; for 1-D (e.g. MNIST-1D) or 2-D inputs.

    ``in_shape`` is (channels, length) or (channels, height, width).
    """

    def __init__(self, in_shape: Sequence[int], n_classes: int, widths: Sequence[int] = (16, 32)):
        super().__init__()
        two_d = len(in_shape) == 3
        conv, bn, pool = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.BatchNorm1d,
                                                                                  nn.MaxPool1d)
        self.in_shape = tuple(in_shape)
        layers: list[nn.Module] = []
        channels = in_shape[0]
        for width in widths:
            layers += [conv(channels, width, 3, padding=1, bias=False), bn(width), nn.ReLU(), pool(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.features(torch.zeros(2, *in_shape)).flatten(1).shape[1]
        self.head = nn.Linear(n_flat, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(len(x), *self.in_shape)).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """He et al. (2016) CIFAR ResNet-(6n+2): 16/32/64 channels, n basic blocks per stage (n=3: ResNet-20)."""

    def __init__(self, depth: int = 20, n_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = 16
        for stage, c_out in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return self.head(out.mean(dim=(2, 3)))
