"""The built-in datasets: small synthetic problems generated on the fly from a seed.

Nothing is downloaded or shipped; each built-in is a function of a
``torch.Generator`` and a size, registered with its task, its train and test
sizes and a one-line description.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from pyrobnn.datasets._dataset import Dataset

__all__ = ["describe", "load", "names"]


def _gap1d(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    side = torch.randint(0, 2, (n, 1), generator=g)
    x = torch.where(side == 0, -2 + 1.5 * torch.rand(n, 1, generator=g), 0.5 + 1.5 * torch.rand(n, 1, generator=g))
    y = torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(n, generator=g)
    return x, y


def _hetero1d(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = 4 * torch.rand(n, 1, generator=g) - 2
    noise = 0.05 + 0.25 * (x.squeeze(-1) + 2) / 4
    y = torch.sin(2 * x).squeeze(-1) + noise * torch.randn(n, generator=g)
    return x, y


def _friedman(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 10, generator=g)
    y = (
        10 * torch.sin(math.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
        + torch.randn(n, generator=g)
    )
    return x, y


def _moons(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.randint(0, 2, (n,), generator=g)
    angle = math.pi * torch.rand(n, generator=g)
    x = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    x = torch.where(label[:, None] == 1, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], dim=1), x)
    return x + 0.15 * torch.randn(n, 2, generator=g), label


def _spirals(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.randint(0, 3, (n,), generator=g)
    r = torch.rand(n, generator=g)
    angle = 4 * r + label * (2 * math.pi / 3) + 0.2 * torch.randn(n, generator=g)
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
    return x, label


_REGISTRY: dict[str, tuple[str, Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]], int, int, str]] = {
    "gap1d": (
        "regression",
        _gap1d,
        160,
        200,
        "y = sin(3x) + N(0, 0.1²), x in [-2, -0.5] ∪ [0.5, 2]: a gap in the inputs",
    ),
    "hetero1d": ("regression", _hetero1d, 300, 300, "y = sin(2x) + noise growing from 0.05 to 0.3 over x in [-2, 2]"),
    "friedman": ("regression", _friedman, 500, 500, "Friedman #1: 10 inputs, 5 informative, N(0, 1) noise"),
    "moons": ("classification", _moons, 400, 400, "two interleaved half-moons, 2 classes"),
    "spirals": ("classification", _spirals, 600, 600, "three interleaved spirals, 3 classes"),
}


def names() -> list[str]:
    """The built-in dataset names."""
    return list(_REGISTRY)


def describe(name: str) -> str:
    return _REGISTRY[_check(name)][4]


def _check(name: str) -> str:
    if name not in _REGISTRY:
        raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(_REGISTRY)}")
    return name


def load(name: str, seed: int = 0) -> Dataset:
    """Generate a built-in dataset; the same ``seed`` gives the same data."""
    task, make, n_train, n_test, text = _REGISTRY[_check(name)]
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = make(g, n_train)
    x_test, y_test = make(g, n_test)
    return Dataset(name, task, x_train, y_train, x_test, y_test, text)
