"""The fitted posterior: draws of the weights and predictions with their uncertainty."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, eval_mode, model_device, model_dtype
from pyrobnn.guides import Guide
from pyrobnn.likelihoods import Categorical, Gaussian, HeteroscedasticGaussian, Poisson, StudentT
from pyrobnn.model import BayesianModel

__all__ = ["DRAWS_PER_CHUNK", "DrawChunk", "Posterior", "Prediction"]

#: Draws and points per vectorized network pass (bounds memory): for predictions, and for
#: every stage that evaluates log densities over many draws (the export, the k̂ diagnostic).
DRAWS_PER_CHUNK = 64
POINTS_PER_CHUNK = 4096


@dataclass(frozen=True)
class DrawChunk:
    """Up to :data:`DRAWS_PER_CHUNK` draws with what was evaluated on them (:meth:`Posterior.chunks`).

    Attributes
    ----------
    draws
        Every latent site, each ``(n, *shape)``.
    log_q
        log q(θ) per draw, ``(n,)``; ``None`` for stored draws (an MCMC run).
    prediction
        The posterior predictive at ``x`` for these draws, when ``x`` was given.
    log_likelihood
        log p(yᵢ | xᵢ, θ), ``(n, N)``, when ``y`` was given.
    log_p
        The log joint log p(θ) + Σᵢ log p(yᵢ | xᵢ, θ), ``(n,)``, when ``y`` was given.
    """

    draws: dict[str, torch.Tensor]
    log_q: torch.Tensor | None
    prediction: Prediction | None = None
    log_likelihood: torch.Tensor | None = None
    log_p: torch.Tensor | None = None


class Posterior:
    """A model with a fitted guide: q(θ) standing in for p(θ | data).

    Parameters
    ----------
    model
        The :class:`pyrobnn.BayesianModel` that was fitted.
    guide
        Its fitted guide (``result.guide``).

    Examples
    --------
    >>> post = pb.Posterior(model, result.guide)          # doctest: +SKIP
    >>> pred = post.predict(x_test, num_samples=1000)      # doctest: +SKIP
    >>> pred.mean, pred.std, pred.interval(0.9)            # doctest: +SKIP
    """

    def __init__(self, model: BayesianModel, guide: Guide) -> None:
        if not isinstance(model, BayesianModel):
            raise TypeError(f"Posterior needs a pb.BayesianModel, got {type(model).__name__}")
        if not isinstance(guide, Guide):
            raise TypeError(f"Posterior needs a pyrobnn guide, got {type(guide).__name__}")
        missing = set(model.latent_sites()) ^ set(guide.site_names)
        if missing:
            raise ValueError(f"guide and model disagree on the latent sites {sorted(missing)}")
        self.model = model
        self.guide = guide

    def sample(self, num_samples: int = 1000, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Draws from q, keyed by site name, each ``(num_samples, *param.shape)``."""
        return self.guide.sample(num_samples, seed=seed)

    def predict(self, x: Any, num_samples: int = 1000, seed: int | None = None) -> Prediction:
        """The posterior predictive at ``x``, from ``num_samples`` draws of the weights.

        The network runs vectorized over draws, in chunks of draws and points so
        that memory stays bounded (1000 draws over 10,000 points is fine).
        """
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        x = self._inputs(x)
        with seeded(seed, x.device):
            return self._predict(self.guide.sample(num_samples), x)

    def predict_draws(self, draws: dict[str, torch.Tensor], x: Any, seed: int | None = None) -> Prediction:
        """The posterior predictive at ``x`` for given draws of every site (each ``(S, *shape)``).

        Like :meth:`predict`, chunked over draws and points, but for draws the
        caller already holds (for instance to export them alongside the
        prediction). ``seed`` seeds the draws of y in ``Prediction.samples``.
        """
        missing = set(self.guide.site_names) - set(draws)
        if missing:
            raise ValueError(f"draws lack the sites {sorted(missing)}; pass a draw of every latent site")
        x = self._inputs(x)
        with seeded(seed, x.device):
            return self._predict(draws, x)

    def _inputs(self, x: Any) -> torch.Tensor:
        x = as_tensor(x, "x", dtype=model_dtype(self.model), device=model_device(self.model))
        check_pair(x, None)
        return x

    def _predict(self, draws: dict[str, torch.Tensor], x: torch.Tensor) -> Prediction:
        num_samples = int(next(iter(draws.values())).shape[0])
        with torch.no_grad(), eval_mode(self.model):
            outputs = []
            for lo in range(0, num_samples, DRAWS_PER_CHUNK):
                chunk = {name: draws[name][lo : lo + DRAWS_PER_CHUNK] for name in self.guide.site_names}
                parts = [
                    self.model.evaluate(chunk, x[i : i + POINTS_PER_CHUNK])[0]
                    for i in range(0, len(x), POINTS_PER_CHUNK)
                ]
                outputs.append(torch.cat(parts, dim=1))
            output = torch.cat(outputs, dim=0)
            latents = {name: draws[name].reshape(num_samples, 1) for name in self.model.likelihood.latent_priors()}
            prediction = Prediction(self.model, output, latents)
            prediction._draw_samples()
        return prediction

    def chunks(
        self,
        num_samples: int,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        block: Sequence[str] | None = None,
        draws: dict[str, torch.Tensor] | None = None,
    ) -> Iterator[DrawChunk]:
        r"""Draws from q, :data:`DRAWS_PER_CHUNK` at a time, each chunk with log q, and log p given data.

        This is the one loop behind every estimate over many draws (the importance
        weights log p(θ, y) − log q(θ) of the k̂ diagnostic, the export's
        ``log_q``, ``log_p``, predictive and pointwise log-likelihood); it bounds
        memory for large nets. Call it under ``torch.no_grad()`` and a seed.

        Parameters
        ----------
        num_samples
            Draws in all.
        x, y
            Tensors on the model's device and dtype (checked by the caller): with
            ``x``, each chunk carries the prediction at ``x``; with ``y`` too, the
            pointwise log-likelihood and the log joint.
        block
            Draw only these sites; every other is held at the guide's median and
            ``log_q`` is the block's marginal density (the guide must have
            ``site_distribution``).
        draws
            Stored draws to walk through in order instead of drawing from q (an
            MCMC run); ``log_q`` is then ``None`` and ``num_samples`` is ignored.
        """
        fixed = self.guide.median() if block is not None else {}
        if draws is not None:
            num_samples = len(next(iter(draws.values())))
        for lo in range(0, num_samples, DRAWS_PER_CHUNK):
            n = min(DRAWS_PER_CHUNK, num_samples - lo)
            log_q: torch.Tensor | None
            if draws is not None:
                chunk = {name: value[lo : lo + n] for name, value in draws.items()}
                log_q = None
            elif block is None:
                chunk = self.guide.sample(n)
                log_q = self.guide.log_prob(chunk)
            else:
                chunk = self.guide.sample(n)
                for name, value in fixed.items():
                    if name not in block:
                        chunk[name] = value.expand((n, *value.shape))
                site_distribution = self.guide.site_distribution  # checked by the caller
                log_q = torch.zeros(n, dtype=model_dtype(self.model), device=model_device(self.model))
                for name in block:
                    log_q = log_q + site_distribution(name).log_prob(chunk[name])  # type: ignore[operator]
            if x is None:
                yield DrawChunk(chunk, log_q)
                continue
            prediction = self.predict_draws(chunk, x)
            if y is None:
                yield DrawChunk(chunk, log_q, prediction)
                continue
            log_lik = prediction.log_likelihood(y)
            yield DrawChunk(chunk, log_q, prediction, log_lik, self.log_prior(chunk) + log_lik.sum(-1))

    def log_prior(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(θ) of draws shaped ``(S, *shape)`` per site: a ``(S,)`` tensor (sum over sites)."""
        total: torch.Tensor | None = None
        with torch.no_grad():
            for name, site in self.model.latent_sites().items():
                lp = site.prior.distribution(site.shape).log_prob(draws[name])
                total = lp if total is None else total + lp
        assert total is not None  # a Posterior's model has at least one latent site
        return total

    def log_likelihood(self, x: Any, y: Any, num_samples: int = 1000, seed: int | None = None) -> torch.Tensor:
        """The per-draw pointwise log-likelihood matrix log p(yᵢ | xᵢ, θ_s), shape ``(num_samples, N)``.

        Its log-mean-exp over draws (dim 0) is :meth:`Prediction.log_prob`; it is
        the ``log_likelihood`` group ArviZ's LOO and WAIC read.
        """
        return self.predict(x, num_samples=num_samples, seed=seed).log_likelihood(y)

    def __repr__(self) -> str:
        return f"Posterior(guide={type(self.guide).__name__}, sites={len(self.guide.site_names)})"


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
    """

    def __init__(self, model: BayesianModel, output: torch.Tensor, latents: dict[str, torch.Tensor]) -> None:
        self.likelihood = model.likelihood
        self.output = output
        self.latents = latents
        self.output_shape = output.shape[2:]
        self.samples: torch.Tensor

    # ----------------------------------------------------------- per draw
    def _per_draw(self) -> Any:
        return self.likelihood.distribution(self.output, self.latents, self.output_shape)

    def _draw_samples(self) -> None:
        self.samples = self._per_draw().sample()

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
        """E_θ(Var[y | θ]): the observation noise, averaged over draws."""
        self._require((Gaussian, HeteroscedasticGaussian, StudentT, Categorical), "aleatoric_variance")
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
        self._require((Gaussian, HeteroscedasticGaussian, StudentT, Poisson), "coverage")
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
        """Predictive class probabilities: E_θ[softmax(f(x; θ))], ``(N, C)``."""
        self._require((Categorical,), "probs")
        return torch.softmax(self.output, dim=-1).mean(0)

    @property
    def entropy(self) -> torch.Tensor:
        """Total predictive entropy H[E_θ p(y | θ)] (nats)."""
        p = self.probs
        return (-(p * torch.log(p.clamp_min(1e-30))).sum(-1)).clamp_min(0.0)  # ≥ 0 despite rounding

    @property
    def expected_entropy(self) -> torch.Tensor:
        """E_θ H[p(y | θ)]: the aleatoric part of the entropy."""
        self._require((Categorical,), "expected_entropy")
        log_p = torch.log_softmax(self.output, dim=-1)
        return (-(log_p.exp() * log_p).sum(-1)).clamp_min(0.0).mean(0)

    @property
    def mutual_information(self) -> torch.Tensor:
        """I[y; θ] = total − expected entropy: the epistemic part (BALD)."""
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    def _require(self, kinds: tuple[type, ...], what: str) -> None:
        if not isinstance(self.likelihood, kinds):
            names = ", ".join(k.__name__ for k in kinds)
            raise AttributeError(f"{what} is defined for {names} likelihoods, not {type(self.likelihood).__name__}")

    def __repr__(self) -> str:
        kind = type(self.likelihood).__name__
        return f"Prediction(num_samples={self.num_samples}, points={self.output.shape[1]}, likelihood={kind})"
