"""The built-in datasets: small synthetic problems generated on the fly from a seed.

Nothing is downloaded or shipped; each built-in is a function of a
``torch.Generator`` and a size, registered with its task, its train and test
sizes and a one-line description. A built-in may draw its test split from a
different input distribution than its training split (``gap1d`` tests inside
the gap its training data leave); the training split is always drawn first,
from the same generator, so the test split's design never changes the
training data a seed gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from pyrobnn.datasets._dataset import Dataset

__all__ = ["describe", "load", "names"]


Make = Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]


def _sin3x(g: torch.Generator, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(len(x), generator=g)


def _gap1d(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    side = torch.randint(0, 2, (n, 1), generator=g)
    x = torch.where(side == 0, -2 + 1.5 * torch.rand(n, 1, generator=g), 0.5 + 1.5 * torch.rand(n, 1, generator=g))
    return _sin3x(g, x)


def _gap1d_test(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    # uniform over the whole range, the gap (-0.5, 0.5) included (a quarter of the points on average)
    return _sin3x(g, -2 + 4 * torch.rand(n, 1, generator=g))


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


class _Builtin(NamedTuple):
    task: str
    train: Make
    n_train: int
    n_test: int
    text: str
    test: Make | None = None  # None: the test split is drawn as the training split is


_REGISTRY: dict[str, _Builtin] = {
    "gap1d": _Builtin(
        "regression",
        _gap1d,
        160,
        200,
        "y = sin(3x) + N(0, 0.1²); training x in [-2, -0.5] ∪ [0.5, 2], test x uniform on [-2, 2]: "
        "a gap in the training inputs that the test split crosses",
        test=_gap1d_test,
    ),
    "hetero1d": _Builtin(
        "regression", _hetero1d, 300, 300, "y = sin(2x) + noise growing from 0.05 to 0.3 over x in [-2, 2]"
    ),
    "friedman": _Builtin("regression", _friedman, 500, 500, "Friedman #1: 10 inputs, 5 informative, N(0, 1) noise"),
    "moons": _Builtin("classification", _moons, 400, 400, "two interleaved half-moons, 2 classes"),
    "spirals": _Builtin("classification", _spirals, 600, 600, "three interleaved spirals, 3 classes"),
}


def names() -> list[str]:
    """The built-in dataset names."""
    return list(_REGISTRY)


def describe(name: str) -> str:
    return _REGISTRY[_check(name)].text


def _check(name: str) -> str:
    if name not in _REGISTRY:
        raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(_REGISTRY)}")
    return name


def load(name: str, seed: int = 0) -> Dataset:
    """Generate a built-in dataset; the same ``seed`` gives the same data.

    The training split is drawn first and the test split after it, from one generator
    seeded with ``seed``. ``gap1d``'s test inputs are uniform on [-2, 2], so about a quarter
    of them lie in the gap (-0.5, 0.5) that its training inputs leave.
    """
    spec = _REGISTRY[_check(name)]
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = spec.train(g, spec.n_train)
    x_test, y_test = (spec.test or spec.train)(g, spec.n_test)
    return Dataset(name, spec.task, x_train, y_train, x_test, y_test, spec.text)
