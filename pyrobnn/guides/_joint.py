"""Guides over the joint unconstrained latent vector of (some of) a model's sites.

A joint guide draws one vector u ∈ R^D from a distribution q(u) at an auxiliary
site, splits it into the sites' unconstrained values, maps each to its support,
and places a point mass at each model site carrying log|det ∂u/∂θ| (the pattern
of Pyro's ``AutoContinuous``). The ELBO then sees log q(θ) = log q(u) + Σ log|det ∂u/∂θ|.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import init_to_value

from pyrobnn._rng import seeded
from pyrobnn.guides._base import Guide
from pyrobnn.model import BayesianModel, LatentLayout, LatentSite

__all__ = ["AutoGaussianGuide", "JointGuide", "PriorModel"]

#: Draws used for the median and quantiles of guides without closed-form marginals.
QUANTILE_DRAWS = 4000


class PriorModel:
    """A data-free model sampling only the chosen latent sites from their priors.

    Pyro's autoguides discover their latent space by running a model once; this
    one needs no data, so a guide can be built (and its parameters created)
    before any batch is seen.
    """

    def __init__(self, sites: Mapping[str, LatentSite]) -> None:
        self.sites = dict(sites)

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {name: pyro.sample(name, site.prior.distribution(site.shape)) for name, site in self.sites.items()}


class JointGuide(Guide):
    """Base class: subclasses define :meth:`posterior`, a distribution over R^D.

    A joint guide fits with 32 particles per step by default, against a mean-field
    guide's 8. Its dependence parameters (a Cholesky factor's D(D−1)/2 entries, a
    rank-r factor's D·r, a flow's conditioner weights) get one noisy gradient each,
    and Adam turns the noise of the many whose signal is small into a random walk
    that every marginal sums over: the fit spends its entropy on spurious
    correlations and ends below mean-field's ELBO, although its family contains
    mean-field's. More particles shrink the noise, and the network runs once per step for
    all of them; the measurements are in the concepts page, "Why a joint guide fits with
    more particles", and ``benchmarks/README.md``.
    """

    correlates = True

    num_particles = 32

    def __init__(self, model: BayesianModel, sites: Sequence[str] | None = None) -> None:
        super().__init__(model, sites)
        self.layout = LatentLayout(self._sites)

    @property
    def latent_site(self) -> str:
        """Name of the auxiliary site holding the joint latent vector."""
        return f"_{type(self).__name__}_latent"

    def posterior(self) -> dist.TorchDistribution:
        """q(u) over the unconstrained latent vector u ∈ R^D."""
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        latent = pyro.sample(self.latent_site, self.posterior(), infer={"is_auxiliary": True})
        result = {}
        for name, u in self.layout.split(latent).items():
            transform = self.layout.transforms[name]
            value = transform(u)
            ndim = len(self.layout.shapes[name])
            log_density = sum_rightmost(transform.inv.log_abs_det_jacobian(value, u), ndim)
            result[name] = pyro.sample(name, dist.Delta(value, log_density=log_density, event_dim=ndim))
        return result

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        return self.layout.constrain(self.posterior().sample((num_samples,)))

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        latent, log_det = self.layout.pack(draws)
        return self.posterior().log_prob(latent) + log_det

    def median(self) -> dict[str, torch.Tensor]:
        """Marginal medians, estimated from draws (fixed seed) when no closed form exists."""
        return {name: q[0] for name, q in self.quantiles([0.5]).items()}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Marginal quantiles, estimated from ``QUANTILE_DRAWS`` draws with a fixed seed."""
        draws = self.sample(QUANTILE_DRAWS, seed=0)
        qs = torch.as_tensor(qs, dtype=torch.float64).reshape(-1)
        ranks = (qs * (QUANTILE_DRAWS - 1)).round().long()  # nearest-rank estimate
        return {name: value.sort(dim=0).values[ranks.to(value.device)] for name, value in draws.items()}

    def covariance(self) -> torch.Tensor:
        """The D×D covariance of q(u) in :attr:`layout` order (estimated from draws for flows)."""
        with torch.no_grad():
            q = self.posterior()
            try:
                return q.covariance_matrix.clone()  # type: ignore[no-any-return]
            except (AttributeError, NotImplementedError):
                with seeded(0, self._device()):
                    u = q.sample((QUANTILE_DRAWS,))
                return torch.cov(u.T)


class AutoGaussianGuide(JointGuide):
    """A joint Gaussian guide whose parameters and marginals come from a Pyro autoguide.

    The autoguide is built on a :class:`PriorModel` of the sites, with module-local
    parameters, and set up at once (its parameters exist before any data is seen).
    """

    def _build_auto(self, auto_cls: type, values: Mapping[str, torch.Tensor], **options: Any) -> None:
        with pyro.settings.context(module_local_params=True):
            self.auto = auto_cls(PriorModel(self._sites), init_loc_fn=init_to_value(values=dict(values)), **options)
            self.auto._setup_prototype()  # creates the parameters now, no data needed
            self.auto.get_posterior()
        assert self.auto.latent_dim == self.layout.dim

    def posterior(self) -> dist.TorchDistribution:
        with pyro.settings.context(module_local_params=True):
            return self.auto.get_posterior()  # type: ignore[no-any-return]

    def median(self) -> dict[str, torch.Tensor]:
        with torch.no_grad(), pyro.settings.context(module_local_params=True):
            return dict(self.auto.median())

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Exact Gaussian marginal quantiles, mapped through each site's support."""
        with torch.no_grad(), pyro.settings.context(module_local_params=True):
            return dict(self.auto.quantiles(torch.as_tensor(qs).tolist()))
