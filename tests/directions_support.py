"""Small models and image folders for the directions tests (real concept-world images)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def world_images(root: Path, per_class: int = 2, size: int = 32) -> Path:
    """An ImageFolder export of the concept world (8 classes x ``per_class``)."""
    from neurflow_graph.datasets.concept_world import export_world

    return Path(export_world(out_dir=root, seed=3, n_per_class=per_class, split="train", size=size))


class Planted(nn.Module):
    """``planted``'s output (pre-ReLU) lies in the 3-dim span of the columns of ``A`` (C x 3):
    its weight is ``A @ B``, a rank-3 map of the 8 nonlinear features below it."""

    def __init__(self, width: int = 12, rank: int = 3, num_classes: int = 8, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.planted = nn.Conv2d(8, width, 1, bias=False)
        self.A = torch.randn(width, rank, generator=g, dtype=torch.float64)
        B = torch.randn(rank, 8, generator=g, dtype=torch.float64)
        with torch.no_grad():
            self.planted.weight.copy_((self.A @ B).float().view(width, 8, 1, 1))
        self.relu = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(width, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.planted(self.stem(x)))
        x = self.pool(self.block(x)).flatten(1)
        return self.fc(x)


def build_planted() -> nn.Module:
    return Planted().eval()


class FunctionalRelu(nn.Module):
    """A functional relu after ``conv`` and one at the end of ``unit`` (rules 3 and 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.unit = _Unit()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        x = self.pool(self.unit(x))
        return self.fc(x.mean((2, 3)))


class _Unit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InplaceAfter(nn.Module):
    """conv -> in-place ReLU -> max-pool -> fc (rule 3 with an in-place ReLU; ``pool`` is rule 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).mean((2, 3)))


def one_thread():
    """Generator for an autouse fixture: tiny forwards run with one torch thread (two threads on a
    shared, loaded 2-core machine cost 10-20x in synchronisation); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
