"""The fitted posterior: draws of the weights and predictions with their uncertainty.

A :class:`Posterior` is a model with a source of draws of its latent sites: a
fitted guide, or the stored draws of a sampler (:class:`MCMCDraws`). Each source
declares what it can do (:class:`DrawSource`: a density, a point mass, chains),
and every stage that uses a posterior asks it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, eval_mode, model_device, model_dtype
from pyrobnn.guides import Guide
from pyrobnn.model import BayesianModel
from pyrobnn.posterior._draws import MCMCDraws
from pyrobnn.posterior._ensemble import Ensemble, stacking_weights
from pyrobnn.posterior._prediction import Prediction
from pyrobnn.posterior._source import ChainSource, DrawSource, MemberSource

__all__ = [
    "DRAWS_PER_CHUNK",
    "ChainSource",
    "DrawChunk",
    "DrawSource",
    "Ensemble",
    "MCMCDraws",
    "MemberSource",
    "Posterior",
    "Prediction",
    "stacking_weights",
]

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
        log q(θ) per draw, ``(n,)``; ``None`` for a source without a density
        (``has_density`` false: stored draws of an MCMC run).
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
    """A model with a source of draws standing in for p(θ | data): a fitted guide q(θ), or stored draws.

    Parameters
    ----------
    model
        The :class:`pyrobnn.BayesianModel` that was fitted or sampled.
    source
        Where the draws come from: a fitted guide (``result.guide``), or the
        :class:`MCMCDraws` of :func:`pyrobnn.mcmc`; any :class:`DrawSource`.
    guide
        Deprecated (since 0.3.0, removed in 0.4.0) keyword name of ``source``.

    Attributes
    ----------
    source
        The source of draws; its flags (``has_density``, ``point_mass``,
        ``has_chains``) say which estimates apply to this posterior.

    Examples
    --------
    >>> post = pb.Posterior(model, result.guide)          # doctest: +SKIP
    >>> pred = post.predict(x_test, num_samples=1000)      # doctest: +SKIP
    >>> pred.mean, pred.std, pred.interval(0.9)            # doctest: +SKIP
    """

    def __init__(
        self, model: BayesianModel, source: DrawSource | None = None, *, guide: DrawSource | None = None
    ) -> None:
        if guide is not None:
            if source is not None:
                raise TypeError("Posterior takes one source of draws; pass it as source, not also as guide")
            warnings.warn(
                "Posterior(model, guide=...) is deprecated since pyrobnn 0.3.0 and will be removed in 0.4.0: "
                "pass the source of draws positionally, Posterior(model, guide), or as source=.",
                DeprecationWarning,
                stacklevel=2,
            )
            source = guide
        if not isinstance(model, BayesianModel):
            raise TypeError(f"Posterior needs a pb.BayesianModel, got {type(model).__name__}")
        if source is None or not isinstance(source, DrawSource):
            raise TypeError(
                "Posterior needs a source of draws: a fitted pyrobnn guide (result.guide) or the "
                f"MCMCDraws of pb.mcmc, got {type(source).__name__}"
            )
        missing = set(model.latent_sites()) ^ set(source.site_names)
        if missing:
            what = "guide" if isinstance(source, Guide) else f"source of draws ({type(source).__name__})"
            raise ValueError(f"{what} and model disagree on the latent sites {sorted(missing)}")
        self.model = model
        self.source: DrawSource = source

    @property
    def guide(self) -> Any:
        """The fitted guide, when the source is one.

        For stored draws (a source that is no guide) this returns the source
        with a :class:`DeprecationWarning`: the name is kept for code written
        before 0.3.0 (``post.guide.diverging``) and goes in 0.4.0; read
        ``post.source`` instead.
        """
        if not isinstance(self.source, Guide):
            warnings.warn(
                f"post.guide of a posterior whose draws are no guide ({type(self.source).__name__}) is "
                "deprecated since pyrobnn 0.3.0 and will be removed in 0.4.0: use post.source.",
                DeprecationWarning,
                stacklevel=2,
            )
        return self.source

    def sample(self, num_samples: int = 1000, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Draws from the source, keyed by site name, each ``(num_samples, *param.shape)``."""
        return self.source.sample(num_samples, seed=seed)

    def predict(self, x: Any, num_samples: int = 1000, seed: int | None = None) -> Prediction:
        """The posterior predictive at ``x``, from ``num_samples`` draws of the weights.

        The network runs vectorized over draws, in chunks of draws and points so
        that memory stays bounded (1000 draws over 10,000 points is fine).
        """
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        x = self._inputs(x)
        with seeded(seed, x.device):
            return self._predict(self.source.sample(num_samples), x)

    def predict_draws(self, draws: dict[str, torch.Tensor], x: Any, seed: int | None = None) -> Prediction:
        """The posterior predictive at ``x`` for given draws of every site (each ``(S, *shape)``).

        Like :meth:`predict`, chunked over draws and points, but for draws the
        caller already holds (for instance to export them alongside the
        prediction). ``seed`` seeds the draws of y in ``Prediction.samples``.
        """
        missing = set(self.source.site_names) - set(draws)
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
        # A source may declare that its draws belong to a linearised network (a Laplace
        # approximation's): the outputs are then f(x, θ*) + J(x)(θ − θ*), here and in every
        # stage that predicts through this method (the export, LOO, k̂).
        if getattr(self.source, "linearized", False):
            network = self.source.linearized_outputs  # type: ignore[attr-defined]
        else:
            network = lambda model, chunk, xs: model.evaluate(chunk, xs)[0]  # noqa: E731
        with torch.no_grad(), eval_mode(self.model):
            outputs = []
            for lo in range(0, num_samples, DRAWS_PER_CHUNK):
                chunk = {name: draws[name][lo : lo + DRAWS_PER_CHUNK] for name in self.source.site_names}
                parts = [
                    network(self.model, chunk, x[i : i + POINTS_PER_CHUNK]) for i in range(0, len(x), POINTS_PER_CHUNK)
                ]
                outputs.append(torch.cat(parts, dim=1))
            output = torch.cat(outputs, dim=0)
            latents = {name: draws[name].reshape(num_samples, 1) for name in self.model.likelihood.latent_priors()}
            prediction = Prediction(self.model, output, latents)
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
        r"""Draws from the source, :data:`DRAWS_PER_CHUNK` at a time, each with log q, and log p given data.

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
            Draws to walk through in order instead of drawing from the source
            (the chains of stored draws, :meth:`ChainSource.in_order`);
            ``num_samples`` is then ignored.

        ``log_q`` is ``None`` throughout for a source without a density
        (``source.has_density`` false).
        """
        source = self.source
        fixed = source.median() if block is not None else {}
        if draws is not None:
            num_samples = len(next(iter(draws.values())))
        for lo in range(0, num_samples, DRAWS_PER_CHUNK):
            n = min(DRAWS_PER_CHUNK, num_samples - lo)
            log_q: torch.Tensor | None
            if draws is not None:
                chunk = {name: value[lo : lo + n] for name, value in draws.items()}
            else:
                chunk = source.sample(n)
            if block is None:
                log_q = source.log_prob(chunk) if source.has_density else None
            else:
                for name, value in fixed.items():
                    if name not in block:
                        chunk[name] = value.expand((n, *value.shape))
                site_distribution = source.site_distribution  # type: ignore[attr-defined]  # checked by the caller
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
        return f"Posterior(source={type(self.source).__name__}, sites={len(self.source.site_names)})"
