"""Did a fit end well? Two checks on its per-step ELBO, measured against the ELBO's own noise.

:meth:`pyrobnn.History.check` and :func:`pyrobnn.fit` (which warns with the message) call
:func:`convergence_message`; the criterion is spelled out in ``History.check``'s docstring
and on the concepts page.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "DIVERGED_SE",
    "HELD_FRACTION",
    "MIN_STEPS",
    "RISING_FRACTION",
    "RISING_SE",
    "convergence_message",
    "held_steps",
    "segment_mean",
]

#: Noise units (see convergence_message) by which the end must fall below the start to count as diverged.
DIVERGED_SE = 5.0
#: Standard errors by which the last eighth must exceed the fifth to count as still rising.
RISING_SE = 5.0
#: ... and the fraction of the final |ELBO| that the rise must exceed.
RISING_FRACTION = 0.10
#: Nats below which no difference of means is worth a warning, whatever its standard error.
MIN_NATS = 1.0
#: A fit that held its starting learning rate for at least this fraction of its steps (and then let it
#: fall) is checked for still rising over those steps alone. The fixed schedule holds it for half the
#: steps and is checked whole; ``num_steps="auto"`` holds it for two thirds.
HELD_FRACTION = 0.6
#: Fits shorter than this are not checked for still rising (smoke fits in tests and doctests).
MIN_STEPS = 200
#: Batches per segment for the batch-means standard error.
NUM_BATCHES = 10


def segment_mean(values: np.ndarray) -> tuple[float, float, float]:
    """The mean of a stretch of per-step values, its standard error by batch means, and the
    standard deviation of one step's value about the stretch's trend.

    The stretch's least-squares line is removed first, so that a trend within it is not
    taken for noise; the residuals are cut into ``NUM_BATCHES`` contiguous batches, whose
    means are close to independent when a batch is longer than the steps' correlation.
    """
    n = len(values)
    mean = float(values.mean())
    if n < 2 * NUM_BATCHES:
        return mean, math.inf, math.inf
    t = np.arange(n, dtype=np.float64)
    slope, intercept = np.polyfit(t, values, 1)
    residual = values - (slope * t + intercept)
    usable = n - n % NUM_BATCHES
    batch_means = residual[:usable].reshape(NUM_BATCHES, -1).mean(axis=1)
    return mean, float(batch_means.std(ddof=1) / math.sqrt(NUM_BATCHES)), float(residual.std(ddof=2))


def convergence_message(elbo: np.ndarray, lr: np.ndarray, *, min_steps: int = MIN_STEPS) -> str | None:
    """The message of :meth:`pyrobnn.History.check`: what went wrong at the end of a fit, or ``None``."""
    n = len(elbo)
    if n < 2 * NUM_BATCHES or not np.all(np.isfinite(elbo)):
        return None
    tenth = max(n // 10, 2 * NUM_BATCHES)
    start = float(elbo[0])  # the guide as it started, before any update
    end, end_se, step_sd = segment_mean(elbo[-tenth:])
    # One step's estimate at the start is as noisy as one at the end, or less (a guide starts narrow).
    noise = math.hypot(end_se, step_sd)
    drop = start - end
    if drop > max(DIVERGED_SE * noise, MIN_NATS):
        return (
            f"the ELBO ended below where it started: {end:.6g} on average over the last {tenth} steps, "
            f"against {start:.6g} at the first step ({drop / noise:.0f} times the noise of one step's "
            f"estimate). The optimiser overshot: lower the learning rate (lr={lr[0]:.3g}; try {lr[0] / 10:.3g})."
        )
    # The stretch checked is the whole fit, or, where the rate was held past HELD_FRACTION of it
    # (num_steps="auto" holds it for two thirds), the steps at the starting rate: the decay's own
    # gain (the guide stops jittering about its optimum) is not a climb still under way.
    held = held_steps(lr)
    m = held if held >= HELD_FRACTION * n else n
    if m < max(min_steps, 8 * NUM_BATCHES):
        return None
    eighth = m // 8
    early, early_se, _ = segment_mean(elbo[4 * eighth : 5 * eighth])  # the first eighth of the last half
    late, late_se, _ = segment_mean(elbo[m - eighth : m])  # the last eighth
    rise, se = late - early, math.hypot(early_se, late_se)
    if rise > max(RISING_SE * se, MIN_NATS, RISING_FRACTION * abs(late)):
        where = "the fit" if m == n else f"the {m} steps before the learning rate's decay"
        return (
            f"the ELBO was still rising over the last half of {where}: by {rise:.4g} nats from the first to "
            f"the last eighth of it ({rise / se:.0f} standard errors, {100 * rise / abs(late):.1f}% of the "
            f"ELBO). The guide has not settled: fit longer (num_steps={2 * n} or more) or with a learning rate "
            f"higher than its lr={lr[0]:.3g}."
        )
    return None


def held_steps(lr: np.ndarray) -> int:
    """How many steps, from the first, ran at the starting learning rate."""
    fell = np.flatnonzero(lr < lr[0] * (1 - 1e-9))
    return int(fell[0]) if len(fell) else len(lr)
