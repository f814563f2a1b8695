"""The one interface every pyrobnn guide has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import biject_to
from torch.distributions.transforms import Transform

from pyrobnn._rng import seeded
from pyrobnn.model import BayesianModel, LatentSite

__all__ = ["Guide"]


class Guide(nn.Module):
    """A variational family q(θ) over every latent site of a :class:`BayesianModel`.

    A fitted guide is a source of draws for :class:`pyrobnn.Posterior` (see
    ``pyrobnn.posterior.DrawSource``): fresh independent draws, with a density.

    Subclasses sample each site with ``pyro.sample`` at the model's own site
    names in :meth:`forward`, and implement the draw-level methods below without
    Pyro, on the constrained scale of each site.
    """

    #: whether the ELBO may use a closed-form KL(q || p) where one is registered
    analytic_kl: bool = False
    #: the particles per step :func:`pyrobnn.fit` draws unless told otherwise (see the subclasses)
    num_particles: int = 8
    #: whether q(θ) is a point mass (every draw the same θ̂): it then has no spread, so measures
    #: built on the spread of the draws (PSIS-LOO, k̂, an ELBO as a bound) do not apply to it
    point_mass: bool = False
    #: whether :meth:`log_prob` gives log q(θ) (importance weights, k̂, the export's ``log_q``);
    #: every guide has one. With ``point_mass``, this is what a ``pyrobnn.posterior.DrawSource``
    #: declares; stored MCMC draws declare the opposite.
    has_density: bool = True
    #: whether the draws come in a sampler's chains: never for a guide, whose draws are independent
    has_chains: bool = False
    #: whether the source mixes other sources: never for a guide (see ``pyrobnn.posterior.Ensemble``)
    has_members: bool = False
    #: whether q correlates the sites (low-rank, full-rank, a flow): under ``num_steps="auto"`` such a
    #: fit starts with a warm-up of the KL weight (``pyrobnn.infer._optim.fit_kl_weight``)
    correlates: bool = False

    def __init__(self, model: BayesianModel, sites: Sequence[str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, BayesianModel):
            raise TypeError(f"a guide is built for a pb.BayesianModel, got {type(model).__name__}")
        all_sites = model.latent_sites()
        if not all_sites:
            raise ValueError(
                "the model has no latent variables: every parameter was excluded from the "
                "prior. Lift at least one parameter, or train the net by maximum likelihood."
            )
        if sites is not None:  # a guide for part of the model, to be combined with others
            unknown = [name for name in sites if name not in all_sites]
            if unknown:
                raise ValueError(f"unknown latent sites {unknown}; the model has {list(all_sites)}")
            all_sites = {name: all_sites[name] for name in sites}
        # Kept as a plain dict (not submodules): the guide owns only its own parameters.
        self._sites: dict[str, LatentSite] = all_sites
        self._transforms: dict[str, Transform] = {name: biject_to(site.support) for name, site in all_sites.items()}

    @property
    def site_names(self) -> list[str]:
        return list(self._sites)

    @property
    def num_latent(self) -> int:
        """The dimension D of the latent space."""
        return sum(site.shape.numel() for site in self._sites.values())

    # ---------------------------------------------------------- interface
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every latent site with ``pyro.sample`` (called by the ELBO with the model's arguments)."""
        raise NotImplementedError

    def sample(self, num_samples: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` independent draws per site, each ``(num_samples, *shape)``, constrained."""
        with seeded(seed, self._device()), torch.no_grad():
            return self._sample(int(num_samples))

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def median(self) -> dict[str, torch.Tensor]:
        """The median of each site's marginal (the mode's stand-in for a point estimate)."""
        raise NotImplementedError

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Marginal quantiles per site, each ``(len(qs), *shape)``."""
        raise NotImplementedError

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """log q(θ) of draws shaped ``(num_samples, *shape)``: a ``(num_samples,)`` tensor."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """How to rebuild this guide's structure: ``{"kind": ..., "options": {...}}``, plain data.

        ``make_guide(spec["kind"], model, **spec["options"])`` builds an untrained
        guide of the same class with the same parameter shapes, ready for
        ``load_state_dict``; this is what :func:`pyrobnn.save` records. The
        options that only set starting values (``init``, ``init_scale``) are left
        out: the loaded state replaces them. Those that change how a fit
        estimates the ELBO (``kl``, ``local_reparam``) are kept, so a restored
        guide trains as the saved one did.

        Raises
        ------
        NotImplementedError
            For a guide :func:`~pyrobnn.guides.make_guide` does not build: a
            :class:`GuideList` of one's own, or a subclass that does not override
            ``spec`` (it would be rebuilt as its parent).
        """
        raise NotImplementedError(f"{type(self).__name__} has no spec (make_guide does not build it)")

    def _spec(self, cls: type[Guide], kind: str, options: dict[str, Any]) -> dict[str, Any]:
        """``{"kind": kind, "options": options}``, for a guide of exactly class ``cls``."""
        if type(self) is not cls:  # a subclass rebuilt from its parent's spec would lose what it adds
            raise NotImplementedError(
                f"{type(self).__name__} inherits {cls.__name__}.spec, which rebuilds a {cls.__name__}; "
                "override spec to say how to rebuild it"
            )
        return {"kind": kind, "options": options}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups, each with an ``lr_scale`` (its fraction of the fit's learning rate)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr_scale": 1.0}]

    # ------------------------------------------------------------- helpers
    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"sites={len(self._sites)}, latent_dim={self.num_latent}"
