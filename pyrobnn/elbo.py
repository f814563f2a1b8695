r"""The evidence lower bound, estimated with reparameterised (and vectorized) particles.

.. math::

    \mathrm{ELBO}(q) = \underbrace{\mathbb{E}_{q(\theta)}[\log p(y \mid x, \theta)]}_{\text{expected log-likelihood}}
      - \beta\, \underbrace{\mathrm{KL}(q(\theta) \,\|\, p(\theta))}_{\text{KL}}
      \le \log p(y \mid x),

with equality exactly when q is the posterior; the gap is KL(q‖p(θ | y)). β is the
KL weight (1 for the true bound; below 1 only during annealing).

This is Pyro's :class:`~pyro.infer.Trace_ELBO` with two additions: it keeps
the two terms apart (``elbo.last``), and it uses the closed-form KL for every
site where torch registers one, if the guide allows it (as
:class:`~pyro.infer.TraceMeanField_ELBO` does), with a Monte Carlo
log q − log p elsewhere. Every guide site must be reparameterisable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch.distributions import Independent, kl_divergence

__all__ = ["ELBO", "Terms"]


@dataclass(frozen=True)
class Terms:
    """The parts of one loss estimate (averaged over particles; detached)."""

    loss: float
    log_likelihood: float  # E_q[log p(y | θ)], scaled to the whole dataset
    kl: float  # KL(q || p) (closed form where available)
    kl_weight: float

    @property
    def elbo(self) -> float:
        """The ELBO at KL weight 1 (the bound on log p(y))."""
        return self.log_likelihood - self.kl


class ELBO(Trace_ELBO):
    """ELBO estimator with separate log-likelihood and KL terms and a KL weight.

    Parameters
    ----------
    num_particles
        Number of draws from the guide per estimate.
    vectorize_particles
        Draw all particles at once in a plate (one network pass per step).
    kl_weight
        β, the weight of the KL term (mutable between steps for annealing).
    """

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True, kl_weight: float = 1.0) -> None:
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
        super().__init__(
            num_particles=num_particles,
            vectorize_particles=vectorize_particles and num_particles > 1,
            max_plate_nesting=1,
        )
        self.kl_weight = float(kl_weight)
        self.last: Terms | None = None

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> tuple[Any, Any]:
        # Like Pyro's get_importance_trace, but without computing every log density
        # up front: closed-form KL sites never need log q or log p.
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        analytic = bool(getattr(poutine.unwrap(guide), "analytic_kl", False))
        log_lik: torch.Tensor | float = 0.0
        kl: torch.Tensor | float = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            ll_p, kl_p = _terms(model_trace, guide_trace, analytic)
            log_lik = log_lik + ll_p / self.num_particles
            kl = kl + kl_p / self.num_particles
        loss = -(log_lik - self.kl_weight * kl)
        if not isinstance(loss, torch.Tensor):
            raise ValueError("the model has neither latent nor observed sites: nothing to fit")
        self.last = Terms(_item(loss), _item(log_lik), _item(kl), self.kl_weight)
        return loss

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


def _item(value: torch.Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _scaled_sum(value: torch.Tensor, site: dict[str, Any]) -> torch.Tensor:
    if site["mask"] is not None:
        value = value.masked_fill(~site["mask"], 0.0)
    return (value * site["scale"]).sum()


def _is_point_mass(fn: Any) -> bool:
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return isinstance(fn, Delta)


def _terms(model_trace: Any, guide_trace: Any, analytic: bool) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """Expected log-likelihood and KL(q || p) of one (possibly vectorized) trace pair.

    The KL is Σ log q over every guide site (auxiliary ones included: a joint
    guide samples one latent vector and puts point masses carrying the Jacobian
    at the model's sites) minus Σ log p over the model's latent sites, except for
    sites whose KL has a closed form, which replace both terms.
    """
    log_lik: torch.Tensor | float = 0.0
    kl: torch.Tensor | float = 0.0
    closed_form = set()
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            log_lik = log_lik + _scaled_sum(site["fn"].log_prob(site["value"]), site)
            continue
        q_site = guide_trace.nodes[name]
        # Pyro's KL(Delta || p) = -log p(v) ignores a Delta's log_density: never use it.
        if analytic and not _is_point_mass(q_site["fn"]):
            try:
                kl = kl + _scaled_sum(kl_divergence(q_site["fn"], site["fn"]), q_site)
                closed_form.add(name)
                continue
            except NotImplementedError:
                pass
        kl = kl - _scaled_sum(site["fn"].log_prob(site["value"]), site)
    for name, q_site in guide_trace.nodes.items():
        if q_site["type"] != "sample" or name in closed_form:
            continue
        if not q_site["fn"].has_rsample:
            raise ValueError(
                f"guide site {name!r} uses {type(q_site['fn']).__name__}, which cannot be "
                "reparameterised; pyrobnn's ELBO needs rsample-able guide distributions."
            )
        kl = kl + _scaled_sum(q_site["fn"].log_prob(q_site["value"]), q_site)
    return log_lik, kl
