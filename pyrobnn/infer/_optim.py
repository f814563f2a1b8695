"""The optimiser of a fit and its schedules: the learning rate's decay (over a fixed length, or until the
ELBO levels off) and the KL weight."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyrobnn.infer._checks import segment_mean

__all__ = [
    "KLWeight",
    "LinearAnnealing",
    "OptimizerSpec",
    "UntilConverged",
    "fit_kl_weight",
    "kl_weight_at",
    "lr_decay_schedule",
    "make_optimizer",
]

#: What ``optimizer=`` accepts: an optimiser, or a callable taking parameter groups and returning one.
OptimizerSpec = torch.optim.Optimizer | Callable[[Iterable[Any]], torch.optim.Optimizer]
#: What ``kl_weight=`` accepts: a number, or a schedule ``step -> weight``.
KLWeight = float | Callable[[int], float]


@dataclass(frozen=True)
class LinearAnnealing:
    """A KL weight rising linearly from ``start`` to 1 over ``warmup_steps`` steps, then 1
    (what :func:`pyrobnn.linear_annealing` returns)."""

    warmup_steps: int
    start: float = 0.0

    def __post_init__(self) -> None:
        if not self.warmup_steps >= 1:
            raise ValueError(f"warmup_steps must be >= 1, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        return min(1.0, self.start + (1.0 - self.start) * step / self.warmup_steps)

    def __repr__(self) -> str:
        start = f", start={self.start}" if self.start else ""
        return f"linear_annealing({self.warmup_steps}{start})"


#: ``num_steps="auto"`` for a guide that correlates the sites: the KL weight's warm-up, in steps.
AUTO_WARM_UP = 3000


def fit_kl_weight(kl_weight: KLWeight | None, correlates: bool, num_steps: int | str | None) -> KLWeight:
    """The KL weight a fit runs with: ``kl_weight`` as given, or by default 1, except under
    ``num_steps="auto"`` for a guide that correlates the sites (``Guide.correlates``), where it
    rises from 0 to 1 over the first ``AUTO_WARM_UP`` steps.

    Why: from their default start, low-rank, full-rank and flow fits of a 1-50-1 net on
    ``gap1d`` end 31-41 nats higher after a warm-up, and 5-6 higher on ``friedman``; on
    ``hetero1d`` they end within about 2 nats of a fit without one, above or below it.
    Mean-field is left at 1: a warm-up lost it 24 and 4 nats on ``hetero1d`` and ``friedman``
    and gained 24 on ``gap1d`` (``benchmarks/kl_warm_up.py``).
    """
    if kl_weight is not None:
        return kl_weight
    return LinearAnnealing(AUTO_WARM_UP) if correlates and num_steps == "auto" else 1.0


def kl_weight_at(kl_weight: KLWeight, step: int) -> float:
    """The KL weight β at ``step``, checked to be >= 0."""
    value = float(kl_weight(step)) if callable(kl_weight) else float(kl_weight)
    if not value >= 0:
        raise ValueError(f"the KL weight must be >= 0, got {value} at step {step}")
    return value


def lr_decay_schedule(num_steps: int, factor: float, scale: float = 1.0) -> Callable[[int], float]:
    """A ``LambdaLR`` multiplier: ``scale`` over the first half, then falling geometrically to ``scale * factor``."""
    half = num_steps // 2
    span = max(num_steps - 1 - half, 1)

    def multiplier(step: int) -> float:
        return scale * (1.0 if step <= half else factor ** ((step - half) / span))

    return multiplier


def make_optimizer(spec: OptimizerSpec | None, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The optimiser ``spec`` names over ``groups``; by default Adam at ``lr``."""
    if spec is None:
        # Fused: one kernel for all parameters' updates instead of several per tensor. On CPU it
        # took a 13-50-1 guide's update from 0.15 ms to 0.04 and an MNIST-sized MLP's from 2.1 ms
        # to 1.4. Where torch has no fused kernel for these tensors (a device or dtype it lacks),
        # the plain loop.
        try:
            return torch.optim.Adam(groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(groups, lr=lr)
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec):
        return spec(groups)
    raise TypeError(f"optimizer must be a torch optimizer or a callable params -> optimizer, got {spec!r}")


#: ``num_steps="auto"``: no check before this many steps, then one every ``AUTO_CHECK_EVERY``.
AUTO_MIN_STEPS = 1000
AUTO_CHECK_EVERY = 100
#: ... the decay starts here at the latest, whatever the ELBO does.
AUTO_MAX_STEPS = 40_000
#: ... the nats by which the last quarter's mean ELBO may exceed the quarter's before it and count as level.
AUTO_TOL = 0.5
#: ... and that gain's standard errors (batch means) under which it counts as level too.
AUTO_SE = 2.0
#: ... in this many checks in a row, so that one noisy stretch does not end the fit.
AUTO_CONFIRM = 3


class UntilConverged:
    """The length and learning-rate schedule of a fit with ``num_steps="auto"``.

    The rate stays at ``lr`` while the ELBO rises. From ``AUTO_MIN_STEPS`` on, every
    ``AUTO_CHECK_EVERY`` steps, the mean per-step ELBO over the last quarter of the steps so
    far is set against the quarter before it (both after the KL weight's last change); once it
    exceeds it by less than ``AUTO_TOL`` nats, or than ``AUTO_SE`` standard errors of the
    difference where the ELBO is noisier than that can resolve, the fit is level at this
    rate, and the rate falls geometrically to ``lr * lr_decay`` over half as many steps
    again, as the fixed schedule's second half does. A fit of n steps that gains less than
    half a nat over its last quarter has little left to gain from four times as many
    (``benchmarks/fit_optimum.py`` measures it).
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.decay_start: int | None = None
        self.num_steps = AUTO_MAX_STEPS + AUTO_MAX_STEPS // 2  # the horizon until the decay is placed
        self._steps = 0
        self._weight: float | None = None  # the KL weight of the steps in _elbo
        self._elbo: list[float] = []
        self._level = 0  # checks in a row that found the ELBO level

    def multiplier(self, scale: float = 1.0) -> Callable[[int], float]:
        """A ``LambdaLR`` multiplier that follows the decay once :meth:`record` has placed it."""

        def multiplier(step: int) -> float:
            if self.decay_start is None or step <= self.decay_start:
                return scale
            span = max(self.num_steps - 1 - self.decay_start, 1)
            return scale * self.factor ** ((step - self.decay_start) / span)

        return multiplier

    def record(self, elbo: float, kl_weight: float = 1.0) -> None:
        """Take one step's objective; place the decay where it has levelled off.

        ``elbo`` is the step's objective at its KL weight. Steps are compared only with steps
        of the same weight: where the weight changes (a warm-up, ``linear_annealing``), the
        objective does too, and the checks start afresh, once ``AUTO_MIN_STEPS`` steps and the
        fit's last half are all at the new weight.
        """
        self._steps += 1
        if kl_weight != self._weight:
            self._elbo, self._level, self._weight = [], 0, kl_weight
        self._elbo.append(elbo)
        n, quarter = len(self._elbo), self._steps // 4
        if self.decay_start is None and self._steps >= AUTO_MAX_STEPS:
            self.decay_start, self.num_steps = self._steps, self._steps + self._steps // 2
        # quarters of the whole fit, both of them at the current weight: after a warm-up of w
        # steps the first check waits until the fit is 2w long, so that "level" means what it
        # means without one (the quarters of a fit n steps long, not of the steps since w)
        if self.decay_start is not None or n < max(AUTO_MIN_STEPS, 2 * quarter) or n % AUTO_CHECK_EVERY:
            return
        values = np.asarray(self._elbo)
        before, before_se, _ = segment_mean(values[n - 2 * quarter : n - quarter])
        last, last_se, _ = segment_mean(values[n - quarter :])
        level = last - before < max(AUTO_TOL, AUTO_SE * math.hypot(before_se, last_se))
        self._level = self._level + 1 if level else 0
        if self._level >= AUTO_CONFIRM:
            self.decay_start, self.num_steps = self._steps, self._steps + self._steps // 2
