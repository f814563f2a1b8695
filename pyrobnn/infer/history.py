"""The record of a fit, step by step (:class:`History`), its convergence checks, and the error
that stops a diverging fit (:class:`FitError`) and the warning about a fit that ended badly
(:class:`FitWarning`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pyrobnn._warnings import DiagnosticWarning
from pyrobnn.infer._checks import convergence_message

if TYPE_CHECKING:
    from pyrobnn.guides import Guide

__all__ = ["FitError", "FitWarning", "History"]


@dataclass(frozen=True, repr=False)
class History:
    """Per-step record of a fit (numpy arrays of length ``num_steps``).

    ``loss`` is the minimised objective −(log_likelihood − kl_weight · kl);
    ``log_likelihood`` the expected log-likelihood scaled to the dataset;
    ``kl`` the KL(q‖p) estimate (closed form where available).
    """

    loss: np.ndarray
    log_likelihood: np.ndarray
    kl: np.ndarray
    kl_weight: np.ndarray
    lr: np.ndarray

    @property
    def elbo(self) -> np.ndarray:
        """The ELBO per step at KL weight 1."""
        return self.log_likelihood - self.kl

    def __len__(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "loss": self.loss,
            "log_likelihood": self.log_likelihood,
            "kl": self.kl,
            "kl_weight": self.kl_weight,
            "lr": self.lr,
            "elbo": self.elbo,
        }

    def check(self, *, min_steps: int = 200) -> str | None:
        """What is wrong with the end of this fit, as a message, or ``None``.

        Two checks on the per-step ELBO (:func:`pyrobnn.fit` runs them at the end and
        issues their message as a :class:`FitWarning`; call this after a loop of your own
        over :meth:`pyrobnn.infer.svi.SVIState.step`):

        - **diverged**: the mean ELBO of the last tenth of the steps is below the ELBO of
          the first step by more than 5 times the noise of one step's estimate (the
          standard deviation of the last tenth's steps about their trend, combined with the
          standard error of their mean) and by more than 1 nat. The fit made its start
          worse: lower the learning rate.
        - **not settled** (fits of at least ``min_steps`` steps): the mean ELBO of the
          last eighth is above that of the fifth (the first eighth of the last half) by
          more than 5 standard errors, 1 nat and 10% of the final |ELBO|. The fit was still
          climbing: more steps, or a higher learning rate. Where the learning rate was held
          at its start for at least 60% of the steps before it fell (``num_steps="auto"``
          holds it for two thirds), the eighths are those of the held steps alone: what
          the decay gains is the guide ceasing to jitter about its optimum, not a climb.

        The standard errors are those of batch means (each stretch cut into 10 batches,
        its linear trend removed first), which allows for the correlation of successive
        steps. A fit that passes may still gain from more steps (the learning rate's
        decay damps the end of every fit). See the concepts page, "Fitting: where it
        starts, and when it has not settled".
        """
        return convergence_message(self.elbo, self.lr, min_steps=min_steps)

    def __repr__(self) -> str:
        n = len(self)
        if n == 0:
            return "History(num_steps=0)"
        k = max(1, n // 20)
        elbo = self.elbo
        return (
            f"History(num_steps={n}, elbo: first {elbo[:k].mean():.6g} -> last {elbo[-k:].mean():.6g} "
            f"(means over {k} step{'s' if k > 1 else ''}), lr: {self.lr[0]:.3g} -> {self.lr[-1]:.3g})"
        )


class FitError(RuntimeError):
    """The fit diverged: the loss became NaN or infinite, or a joint guide's factorisation failed.

    ``step`` is the step at which it happened, ``history`` the record up to it
    (the failed step's row is NaN) and ``guide`` the guide, put back to its last
    state whose loss was finite (``None`` when the error was raised without one).
    """

    def __init__(self, message: str, *, step: int, history: History, guide: Guide | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.history = history
        self.guide = guide

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # pickled whole (a worker process of a benchmark or a DataLoader sends it back as it is)
        return _restore_fit_error, (str(self), self.step, self.history, self.guide)


def divergence(what: str, step: int, last: float, lr: float, history: History, guide: Guide | None) -> FitError:
    """The :class:`FitError` of a fit that diverged at ``step``: ``what`` happened, after a finite loss ``last``."""
    return FitError(
        f"{what} at step {step} (last finite loss: {last:.6g}). The guide was restored to its last finite "
        f"state (err.guide). Likely causes: a learning rate too high (lr={lr}), an initial scale too large, or "
        "inputs on a wildly different scale than the prior (standardise x and y).",
        step=step,
        history=history,
        guide=guide,
    )


def _restore_fit_error(message: str, step: int, history: History, guide: Guide | None) -> FitError:
    return FitError(message, step=step, history=history, guide=guide)


class FitWarning(DiagnosticWarning):
    """A fit ended without error but its ELBO says it went wrong: it diverged to a finite loss,
    or it was still rising at the end. The message names the fix. See :meth:`History.check`."""
