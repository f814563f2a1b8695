"""The base class of the observation models and the helpers they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from pyrobnn.priors import Prior

__all__ = ["ONE", "SCALAR", "SCALE_SITE", "Likelihood", "check_real", "event_output"]

#: Site name of a learned observation-noise scale.
SCALE_SITE = "likelihood.scale"

SCALAR = torch.Size()
ONE = torch.Size([1])


class Likelihood(nn.Module):
    """Base class: the shape rule, value checks and p(y | output, latents).

    What a likelihood can do is declared here, not inferred from its type elsewhere:
    :attr:`predicts_classes` and :meth:`class_probs`; :meth:`mean` and :meth:`variance`
    (every likelihood); :meth:`output_fisher` (those that know their Fisher information).
    """

    #: Whether y is a class label (Bernoulli, Categorical): predictions then have class
    #: probabilities (:meth:`class_probs`), accuracy and calibration, and no RMSE or intervals.
    predicts_classes: ClassVar[bool] = False

    def latent_priors(self) -> dict[str, Prior]:
        """Priors of this likelihood's own latent variables, by site name."""
        return {}

    def latent_init(self, name: str) -> torch.Tensor:
        """A starting value for a latent site (used by the guides)."""
        raise KeyError(name)

    def sample_latents(self) -> dict[str, torch.Tensor]:
        """Sample this likelihood's latent sites with ``pyro.sample`` (inside a model)."""
        return {name: pyro.sample(name, prior.distribution(SCALAR)) for name, prior in self.latent_priors().items()}

    # ---------------------------------------------------------------- shapes
    def event_shape(self, output_shape: torch.Size) -> torch.Size:
        """The shape of one observation y[i] for a network output of shape ``o`` per observation."""
        return SCALAR if output_shape == ONE else output_shape

    def prepare_y(self, output_shape: torch.Size, y: torch.Tensor) -> torch.Tensor:
        """Check ``y`` against the output shape and values; return it in event layout."""
        event = self.event_shape(output_shape)
        got = y.shape[1:]
        if got != event:
            if event == SCALAR and got == ONE:
                y = y.squeeze(-1)
            else:
                raise ValueError(
                    f"{type(self).__name__} likelihood: the network output for one observation "
                    f"has shape {tuple(output_shape)}, so each y[i] must have shape "
                    f"{tuple(event)}, but y has shape {tuple(y.shape)}. {self._shape_hint()}"
                )
        return y

    def _shape_hint(self) -> str:
        return "Make the last layer's width match the target's, or reshape y."

    def check_values(self, y: torch.Tensor, output_shape: torch.Size) -> None:
        """Raise if ``y`` holds values this likelihood cannot observe (called on the data, not per step)."""

    # ---------------------------------------------------------- distribution
    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        """p(y | output, latents): batch shape ``batch + (N,)``, event shape ``e`` (see the module notes)."""
        raise NotImplementedError

    def mean(self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size) -> torch.Tensor:
        """E[y | θ] per observation."""
        return self.distribution(output, latents, output_shape).mean

    def variance(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        """Var[y | θ] per observation: the aleatoric part of the predictive variance."""
        return self.distribution(output, latents, output_shape).variance

    def class_probs(self, output: torch.Tensor, output_shape: torch.Size) -> torch.Tensor:
        """p(y = c | θ) per draw and observation, the classes last: ``(..., N, *e, C)``."""
        raise ValueError(f"the {type(self).__name__} likelihood predicts no classes")

    # ---------------------------------------------------------- curvature
    def output_fisher(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        """The Fisher information of p(y | output) about the output, per observation: ``(N, O, O)``.

        ``output`` is the network output at one θ, ``(N, *o)`` with no draw dim, flattened
        row-major to ``O`` numbers per observation; ``latents`` hold one value per site
        (a learned scale of shape ``()``). E_y[∇ log p(y | f) ∇ log p(y | f)ᵀ] in closed
        form: the curvature the Laplace approximation uses by default. For the exponential
        families with their canonical link (a Gaussian's mean, Bernoulli and Categorical
        logits, a Poisson log-rate) it equals the Hessian of −log p(y | f), whatever y is,
        so the Fisher and the generalised Gauss-Newton matrix coincide there.
        """
        information = self._fisher_diagonal(output, latents, output_shape)
        return torch.diag_embed(information.reshape(len(output), -1))

    def _fisher_diagonal(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        """The Fisher information per output number, shaped like ``output``, where it is diagonal."""
        raise NotImplementedError(
            f"{type(self).__name__} declares no Fisher information; use the curvature 'ggn' or 'hessian'"
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise TypeError("a likelihood is used through pb.BayesianModel, not called")


def event_output(output: torch.Tensor, output_shape: torch.Size) -> torch.Tensor:
    """The output with a single trailing output dim dropped (scalar observations)."""
    return output.squeeze(-1) if output_shape == ONE else output


def check_real(y: torch.Tensor, name: str) -> None:
    if not y.dtype.is_floating_point:
        raise TypeError(
            f"{name} likelihood needs real-valued targets, got y of dtype {y.dtype}. "
            "Integer class labels call for pb.likelihoods.Categorical or Bernoulli; "
            "for a real target convert it with y.float()."
        )
