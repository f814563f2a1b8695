"""Posterior predictive summaries: :class:`Prediction`."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyrobnn._tensors import as_tensor
from pyrobnn.model import BayesianModel

__all__ = ["Prediction"]


class Prediction:
    """Posterior predictive summaries at a set of inputs.

    Attributes
    ----------
    output
        Network outputs per draw, ``(num_samples, N, *o)``.
    samples
        Draws of y from the posterior predictive, ``(num_samples, N, *e)``.
    mean, std
        Predictive mean and standard deviation of y (for ``Categorical``, of the
        one-hot vector: ``mean`` is then ``probs``).

    Parameters
    ----------
    model, output, latents
        The model, its network outputs per draw and the likelihood's latent values per
        draw (each ``(num_samples, 1)``), as :meth:`pyrobnn.Posterior.predict` builds them.
    samples
        Draws of y, one per draw of θ; drawn here from p(y | output, latents) with the
        global torch generator when not given.
    """

    def __init__(
        self,
        model: BayesianModel,
        output: torch.Tensor,
        latents: dict[str, torch.Tensor],
        samples: torch.Tensor | None = None,
    ) -> None:
        self.likelihood = model.likelihood
        self.output = output
        self.latents = latents
        self.output_shape = output.shape[2:]
        self.samples: torch.Tensor = self._per_draw().sample() if samples is None else samples

    # ----------------------------------------------------------- per draw
    def _per_draw(self) -> Any:
        return self.likelihood.distribution(self.output, self.latents, self.output_shape)

    @property
    def num_samples(self) -> int:
        return int(self.output.shape[0])

    @property
    def conditional_mean(self) -> torch.Tensor:
        """E[y | θ_s] per draw s: ``(num_samples, N, ...)``."""
        return self.likelihood.mean(self.output, self.latents, self.output_shape)

    @property
    def mean(self) -> torch.Tensor:
        return self.conditional_mean.mean(0)

    @property
    def epistemic_variance(self) -> torch.Tensor:
        """Var_θ(E[y | θ]): the part of the predictive variance due to not knowing θ."""
        return self.conditional_mean.var(0, unbiased=False)

    @property
    def aleatoric_variance(self) -> torch.Tensor:
        """E_θ(Var[y | θ]): the observation noise, averaged over draws (the term :attr:`variance` adds)."""
        return self.likelihood.variance(self.output, self.latents, self.output_shape).mean(0)

    @property
    def variance(self) -> torch.Tensor:
        """Total predictive variance (law of total variance: epistemic + aleatoric)."""
        return self.epistemic_variance + self.likelihood.variance(self.output, self.latents, self.output_shape).mean(0)

    @property
    def std(self) -> torch.Tensor:
        return self.variance.sqrt()

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Central predictive interval of y with the given probability, from the samples."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        qs = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=self.samples.dtype, device=self.samples.device)
        lo, hi = torch.quantile(self.samples.to(qs.dtype), qs, dim=0)
        return lo, hi

    def coverage(self, y: Any, level: float = 0.9) -> float:
        """Share of the targets ``y`` inside the central ``level`` interval (:meth:`interval`).

        Close to ``level`` for a calibrated predictive on held-out data; below it the
        intervals are too narrow. For real-valued targets.
        """
        self._require(False, "coverage")
        y = self._targets(y)
        lo, hi = self.interval(level)
        y = y.to(lo.dtype)
        return float(((y >= lo) & (y <= hi)).double().mean())

    def log_prob(self, y: Any) -> torch.Tensor:
        """Pointwise log predictive density: log (1/S) Σ_s p(y_i | x_i, θ_s), noise included."""
        log_p = self._per_draw().log_prob(self._targets(y))  # (num_samples, N)
        return torch.logsumexp(log_p, dim=0) - math.log(self.num_samples)

    def log_likelihood(self, y: Any) -> torch.Tensor:
        """Per-draw pointwise log-likelihood log p(yᵢ | xᵢ, θ_s): a ``(num_samples, N)`` tensor."""
        return self._per_draw().log_prob(self._targets(y))  # type: ignore[no-any-return]

    def _targets(self, y: Any) -> torch.Tensor:
        """``y`` checked against this prediction's points and laid out as the likelihood's events."""
        y = as_tensor(y, "y", dtype=self.output.dtype, device=self.output.device)
        if len(y) != self.output.shape[1]:
            raise ValueError(f"y has {len(y)} rows but the prediction has {self.output.shape[1]} points")
        return self.likelihood.prepare_y(self.output_shape, y)

    # ------------------------------------------------------ classification
    @property
    def probs(self) -> torch.Tensor:
        """Predictive class probabilities E_θ[p(y = c | θ)], the classes last: ``(N, *e, C)``
        (for ``Bernoulli``, C = 2: the probabilities of 0 and 1)."""
        self._require(True, "probs")
        return self.likelihood.class_probs(self.output, self.output_shape).mean(0)

    @property
    def entropy(self) -> torch.Tensor:
        """Total predictive entropy H[E_θ p(y | θ)] (nats)."""
        p = self.probs
        return (-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).clamp_min(0.0)  # ≥ 0 despite rounding

    @property
    def expected_entropy(self) -> torch.Tensor:
        """E_θ H[p(y | θ)]: the aleatoric part of the entropy."""
        self._require(True, "expected_entropy")
        p = self.likelihood.class_probs(self.output, self.output_shape)
        return (-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).clamp_min(0.0).mean(0)

    @property
    def mutual_information(self) -> torch.Tensor:
        """I[y; θ] = total − expected entropy: the epistemic part (BALD)."""
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    def _require(self, classes: bool, what: str) -> None:
        """Refuse ``what`` unless the likelihood predicts classes (``classes``) or does not."""
        if self.likelihood.predicts_classes != classes:
            kinds = "class labels (Bernoulli, Categorical)" if classes else "real or count targets"
            raise AttributeError(f"{what} is defined for likelihoods of {kinds}, not {type(self.likelihood).__name__}")

    def __repr__(self) -> str:
        kind = type(self.likelihood).__name__
        return f"Prediction(num_samples={self.num_samples}, points={self.output.shape[1]}, likelihood={kind})"
