"""Observation models p(y | f(x; θ)) for :class:`pyrobnn.BayesianModel`.

A likelihood turns the network output for one observation (its *output shape*
``o``) into a distribution over that observation (its *event shape* ``e``, the
shape of ``y[i]``). A single output is a scalar observation: ``Linear(h, 1)``
with ``y`` of shape ``(N,)`` (or ``(N, 1)``) has ``e = ()``. A likelihood may
own latent variables, such as a learned noise scale; they are sampled before
the data plate and get a guide like any weight.

Shapes: :meth:`Likelihood.distribution` receives the output with shape
``batch + (N, *o)`` and latent values of shape ``batch' + ()`` where ``batch'``
is ``batch`` with a trailing 1 for the data dim (or ``()`` outside plates). It
returns a distribution with batch shape ``batch + (N,)`` and event shape ``e``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import Distribution, constraints

from pyrobnn.likelihoods._base import ONE, SCALAR, SCALE_SITE, Likelihood, check_real, event_output
from pyrobnn.priors import HalfNormal, Prior, as_prior

__all__ = [
    "SCALE_SITE",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Likelihood",
    "Poisson",
    "StudentT",
]

#: The half-lines a scale prior may live on: (a, ∞) and [a, ∞), for a lower bound a ≥ 0.
_HALF_LINES = (type(constraints.positive), type(constraints.nonnegative))


def _check_scale_support(prior: Prior) -> None:
    """Refuse a scale prior that puts mass outside the positive reals.

    A support of [0, ∞) (HalfNormal, HalfCauchy, Gamma, Exponential) is as good as
    (0, ∞) (LogNormal, InverseGamma): the guides work on the unconstrained scale and
    map back with ``exp``, which never reaches 0.
    """
    support = prior.support
    if isinstance(support, _HALF_LINES) and float(support.lower_bound) >= 0:
        return
    raise ValueError(
        "the scale prior must be over the positive reals, (0, inf) or [0, inf), but "
        f"{type(prior).__name__}({prior.extra_repr()}) has support {support}. Use a prior for a "
        "positive quantity, such as pb.priors.HalfNormal(1.0), dist.HalfCauchy(1.0), "
        "dist.LogNormal(0.0, 1.0) or dist.Gamma(2.0, 2.0)"
    )


class _Scaled(Likelihood):
    """A fixed observation scale, or a learned one with a prior (site ``likelihood.scale``)."""

    scale_value: torch.Tensor | None

    def _init_scale(self, scale: float | str | Prior | Distribution) -> None:
        prior: Prior | None = None
        value: float | None = None
        if isinstance(scale, str):
            if scale != "learn":
                raise ValueError(f"scale must be a positive float, 'learn' or a prior, got {scale!r}")
            prior = HalfNormal(1.0)
        elif isinstance(scale, (Prior, Distribution)):
            prior = as_prior(scale, what="scale prior")
            _check_scale_support(prior)
        elif not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a positive float, 'learn' or a prior, got {type(scale).__name__}")
        elif not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        else:
            value = float(scale)
        self.scale_prior = prior
        self.register_buffer("scale_value", None if value is None else torch.tensor(value))

    def latent_priors(self) -> dict[str, Prior]:
        return {} if self.scale_prior is None else {SCALE_SITE: self.scale_prior}

    def latent_init(self, name: str) -> torch.Tensor:
        if name != SCALE_SITE or self.scale_prior is None:
            raise KeyError(name)
        # The prior median, capped at 0.5 so that early fits are not explained away as noise.
        try:
            median = float(self.scale_prior.base().icdf(torch.tensor(0.5)))
        except (NotImplementedError, AttributeError):
            median = 0.5
        return torch.tensor(min(median, 0.5))

    def _scale(self, latents: Mapping[str, torch.Tensor], event_ndim: int) -> torch.Tensor:
        if self.scale_value is not None:
            return self.scale_value
        value = latents[SCALE_SITE]
        return value.reshape(value.shape + (1,) * event_ndim)

    def check_values(self, y: torch.Tensor, output_shape: torch.Size) -> None:
        check_real(y, type(self).__name__)

    #: The Fisher information about the location is this over σ²: 1 for a Gaussian.
    _fisher_factor = 1.0

    def _fisher_diagonal(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        return (self._fisher_factor / self._scale(latents, 0) ** 2).expand_as(output)

    def _scale_repr(self) -> str:
        if self.scale_value is not None:
            return f"scale={self.scale_value.item():g}"
        prior = self.scale_prior
        assert prior is not None
        return f"scale ~ {type(prior).__name__}({prior.extra_repr()})"


class Gaussian(_Scaled):
    """y ~ Normal(f(x; θ), σ).

    Parameters
    ----------
    scale
        A fixed noise scale σ (float); ``"learn"`` for a learned σ with a
        ``HalfNormal(1)`` prior (suited to standardised targets); or a prior over
        σ: a pyrobnn prior or a Pyro distribution on (0, ∞) or [0, ∞), such as
        ``pb.priors.HalfNormal(1.0)``, ``dist.HalfCauchy(1.0)``, ``dist.LogNormal(0.0, 1.0)``
        or ``dist.Gamma(2.0, 2.0)``.
    """

    def __init__(self, scale: float | str | Prior | Distribution = 1.0) -> None:
        super().__init__()
        self._init_scale(scale)

    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        loc = event_output(output, output_shape)
        event_ndim = len(self.event_shape(output_shape))
        return dist.Normal(loc, self._scale(latents, event_ndim)).to_event(event_ndim)

    def extra_repr(self) -> str:
        return self._scale_repr()


class StudentT(_Scaled):
    """y ~ StudentT(df, f(x; θ), σ): a Gaussian with heavy tails, robust to outliers."""

    df: torch.Tensor

    def __init__(self, df: float = 4.0, scale: float | str | Prior | Distribution = 1.0) -> None:
        super().__init__()
        if not df > 0:
            raise ValueError(f"df must be > 0, got {df}")
        self.register_buffer("df", torch.tensor(float(df)))
        self._init_scale(scale)

    @property
    def _fisher_factor(self) -> float:  # type: ignore[override]
        return float((self.df + 1) / (self.df + 3))  # a Student t location's information is (ν+1)/((ν+3)σ²)

    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        loc = event_output(output, output_shape)
        event_ndim = len(self.event_shape(output_shape))
        return dist.StudentT(self.df, loc, self._scale(latents, event_ndim)).to_event(event_ndim)

    def extra_repr(self) -> str:
        return f"df={self.df.item():g}, {self._scale_repr()}"


class HeteroscedasticGaussian(Likelihood):
    """y ~ Normal(μ(x; θ), σ(x; θ)) with the network predicting both.

    The last output dim holds ``[μ, raw σ]``, twice the target's width
    (``Linear(h, 2)`` for a scalar target); ``σ = softplus(raw σ) + min_scale``.
    """

    def __init__(self, min_scale: float = 1e-3) -> None:
        super().__init__()
        if not min_scale >= 0:
            raise ValueError(f"min_scale must be >= 0, got {min_scale}")
        self.min_scale = float(min_scale)

    def event_shape(self, output_shape: torch.Size) -> torch.Size:
        if len(output_shape) == 0 or output_shape[-1] % 2:
            raise ValueError(
                "HeteroscedasticGaussian likelihood: the network output for one observation "
                f"has shape {tuple(output_shape)}; its last dim must be even, holding the mean "
                "and the raw scale (e.g. Linear(hidden, 2) for a scalar target)."
            )
        event = torch.Size((*output_shape[:-1], output_shape[-1] // 2))
        return SCALAR if event == ONE else event

    def _shape_hint(self) -> str:
        return "The net must output [mean, raw scale]: twice the target's width in its last dim."

    def split(self, output: torch.Tensor, output_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and the scale from the network output."""
        k = output.shape[-1] // 2
        loc, raw = output[..., :k], output[..., k:]
        if output_shape == torch.Size([2]):
            loc, raw = loc.squeeze(-1), raw.squeeze(-1)
        return loc, F.softplus(raw) + self.min_scale

    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        loc, scale = self.split(output, output_shape)
        return dist.Normal(loc, scale).to_event(len(self.event_shape(output_shape)))

    def check_values(self, y: torch.Tensor, output_shape: torch.Size) -> None:
        check_real(y, "HeteroscedasticGaussian")

    def _fisher_diagonal(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        k = output.shape[-1] // 2
        raw = output[..., k:]
        scale = F.softplus(raw) + self.min_scale
        # about the mean 1/σ²; about σ 2/σ², times (dσ/d raw)² = sigmoid(raw)²
        return torch.cat([scale.pow(-2), 2 * (torch.sigmoid(raw) / scale).pow(2)], dim=-1)

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale:g}"


class Bernoulli(Likelihood):
    """y ∈ {0, 1} ~ Bernoulli(logits = f(x; θ))."""

    predicts_classes = True

    def class_probs(self, output: torch.Tensor, output_shape: torch.Size) -> torch.Tensor:
        p = torch.sigmoid(event_output(output, output_shape))
        return torch.stack([1 - p, p], dim=-1)

    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        logits = event_output(output, output_shape)
        return dist.Bernoulli(logits=logits).to_event(len(self.event_shape(output_shape)))

    def prepare_y(self, output_shape: torch.Size, y: torch.Tensor) -> torch.Tensor:
        y = super().prepare_y(output_shape, y)
        return y if y.dtype.is_floating_point else y.to(torch.get_default_dtype())

    def check_values(self, y: torch.Tensor, output_shape: torch.Size) -> None:
        bad = ~((y == 0) | (y == 1))
        if bad.any():
            raise ValueError(
                f"Bernoulli likelihood needs targets in {{0, 1}}; found {y[bad][0].item()!r}. "
                "For more than two classes use pb.likelihoods.Categorical."
            )

    def _fisher_diagonal(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        p = torch.sigmoid(output)
        return p * (1 - p)


class Categorical(Likelihood):
    """y ∈ {0, …, C−1} ~ Categorical(logits = f(x; θ)); the net outputs C logits."""

    predicts_classes = True

    def class_probs(self, output: torch.Tensor, output_shape: torch.Size) -> torch.Tensor:
        return torch.softmax(output, dim=-1)

    def event_shape(self, output_shape: torch.Size) -> torch.Size:
        if len(output_shape) == 0:
            raise ValueError(
                "Categorical likelihood: the network outputs one number per observation, "
                "but it must output one logit per class (e.g. Linear(hidden, num_classes))."
            )
        return output_shape[:-1]

    def _shape_hint(self) -> str:
        return "y holds integer class labels, one per observation; the net outputs one logit per class."

    def check_values(self, y: torch.Tensor, output_shape: torch.Size) -> None:
        num_classes = output_shape[-1]
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(
                f"Categorical likelihood needs integer class labels, got y of dtype {y.dtype}. "
                "Convert labels with y.long()."
            )
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"Categorical likelihood: labels must lie in 0..{num_classes - 1} (the net outputs "
                f"{num_classes} logits), but y ranges over {y.min().item()}..{y.max().item()}."
            )

    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        return dist.Categorical(logits=output).to_event(len(output_shape) - 1)

    def mean(self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size) -> torch.Tensor:
        return torch.softmax(output, dim=-1)  # E[one-hot(y)] = the class probabilities

    def variance(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        p = torch.softmax(output, dim=-1)
        return p * (1 - p)

    def output_fisher(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        """diag(p) − p pᵀ per group of C logits (a block of the ``(N, O, O)`` matrix)."""
        p = torch.softmax(output, dim=-1).reshape(len(output), -1, output.shape[-1])
        blocks = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (N, K, C, C)
        n, k, c, _ = blocks.shape
        eye = torch.eye(k, dtype=output.dtype, device=output.device)
        return torch.einsum("nkab,kl->nkalb", blocks, eye).reshape(n, k * c, k * c)


class Poisson(Likelihood):
    """y ∈ {0, 1, 2, …} ~ Poisson(rate = exp(f(x; θ))): the net outputs a log-rate."""

    def distribution(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> TorchDistribution:
        log_rate = event_output(output, output_shape).clamp(max=math.log(1e8))
        return dist.Poisson(log_rate.exp()).to_event(len(self.event_shape(output_shape)))

    def prepare_y(self, output_shape: torch.Size, y: torch.Tensor) -> torch.Tensor:
        y = super().prepare_y(output_shape, y)
        return y if y.dtype.is_floating_point else y.to(torch.get_default_dtype())

    def check_values(self, y: torch.Tensor, output_shape: torch.Size) -> None:
        if (y < 0).any() or (y != torch.round(y)).any():
            raise ValueError("Poisson likelihood needs non-negative integer counts as targets.")

    def _fisher_diagonal(
        self, output: torch.Tensor, latents: Mapping[str, torch.Tensor], output_shape: torch.Size
    ) -> torch.Tensor:
        return output.clamp(max=math.log(1e8)).exp()  # the rate
