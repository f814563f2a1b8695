"""The record of a fit, step by step (:class:`History`), and the error that stops a diverging one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FitError", "History"]


@dataclass(frozen=True)
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


class FitError(RuntimeError):
    """The fit diverged: the loss became NaN or infinite.

    ``step`` is the step at which it happened and ``history`` the record up to
    it (the failed step's row is NaN).
    """

    def __init__(self, message: str, *, step: int, history: History) -> None:
        super().__init__(message)
        self.step = step
        self.history = history
