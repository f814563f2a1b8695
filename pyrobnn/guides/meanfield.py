"""Mean-field Normal guide: q(θ) = Π_j N(θ_j | μ_j, σ_j²), at the model's own sites."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.poutine.runtime import InferDict
from torch import nn
from torch.distributions import kl_divergence
from torch.distributions.transforms import identity_transform

from pyrobnn._effects import LOCAL_REPARAM
from pyrobnn._globs import module_key
from pyrobnn.guides._base import Guide
from pyrobnn.guides._init import Init, initial_values
from pyrobnn.model import BayesianModel

__all__ = ["MeanFieldGuide"]


class MeanFieldGuide(Guide):
    r"""A fully factorised Normal guide, one location and scale per scalar.

    Each site is sampled at the model's own name as ``Normal(μ, σ)`` (for a
    constrained site, such as a noise scale, as that Normal pushed through
    ``biject_to(support)``). Because guide and prior then share a site and a
    distribution family, the ELBO can use the closed-form KL for Normal priors.

    Parameters
    ----------
    model
        The :class:`pyrobnn.BayesianModel` to approximate the posterior of.
    init_scale
        The initial σ of every site (on the unconstrained scale). Small values
        (1e-3 to 1e-2) let the fit start from a near-deterministic network.
    init
        Where the locations start. ``"pretrained"`` (default): at the network's
        current weights, whatever set them (a user's training, or for a freshly
        built net torch's global RNG when it was built; no ``seed`` of pyrobnn's
        sets them). ``"reset"``: at torch's default initialisation drawn afresh,
        every layer's ``reset_parameters()`` (the network itself is left alone).
        ``"prior"``: at a draw from the prior. ``"reset"`` and ``"prior"`` draw
        from torch's global RNG, which :func:`pyrobnn.fit` seeds with its ``seed``,
        so that a fit from them is a function of ``seed``.
        ``{site: value}``: at the values given, on the constrained scale, for
        every latent site, e.g. a MAP fit's ``guide.median()`` (a warm start).
    sites
        Restrict the guide to these latent sites (for composing it with another
        guide over the rest); default: all.
    kl
        ``"analytic"``: closed-form KL(q‖p) wherever torch registers one (Normal
        priors), Monte Carlo elsewhere; ``"mc"``: Monte Carlo for every site.
    local_reparam
        Fit with the local reparameterisation trick (Kingma et al. 2015): in the
        ELBO, the ``nn.Linear`` layers whose weights this guide covers draw their
        pre-activations, one per observation and particle, instead of their weights
        (see Notes). Needs ``kl="analytic"`` and a prior with a closed-form KL
        from a Normal on those weights (Normal, Laplace).

    Notes
    -----
    σ is parametrised as ``softplus(ρ)``. At the reverse-KL optimum for a
    Gaussian posterior N(m, Λ⁻¹) a mean-field guide has mean m and variances
    1/Λᵢᵢ, which understate the marginal variances (Λ⁻¹)ᵢᵢ when the posterior
    is correlated (Bishop 2006, §10.1.2).

    With ``local_reparam=True`` the fit optimises the same ELBO with another
    unbiased estimator. Under q the pre-activation ``a = W h + b`` of a linear
    layer for one input row ``h`` is Normal with mean ``μ_W h + μ_b`` and variance
    ``σ_W² h² + σ_b²``; drawing it independently per row, rather than drawing ``W``
    once for the batch, leaves each row's expected log-likelihood unchanged,
    removes the covariance between rows that a shared weight draw induces, and
    builds no ``(particles, out, in)`` weight tensor. On minibatches those
    covariances are usually positive and the gradient's variance falls, often
    by a large factor; near the optimum of a small full-batch fit they can be
    negative, and the variance then rises (notebook 1). It holds where each
    row's output depends on a layer's weights only through that product: the
    layer runs once per pass on one row per observation and the rows do not
    interact (:attr:`pyrobnn.BayesianNet.local_sites` lists the layers that
    qualify; the others are still drawn). A layer that
    turns out to run twice, or on sequences, raises at the first step. It changes
    training only: the guide marks the sites it covers
    (``infer={"local_reparam": True}``), and the effect handler that
    :class:`pyrobnn.ELBO` applies around guide and model does the rest
    (``pyrobnn/infer/_local_reparam.py``). Outside it, a call of the guide,
    :meth:`sample` and every prediction draw weights.

    References
    ----------
    Blundell, Cornebise, Kavukcuoglu & Wierstra (2015). Weight uncertainty in
    neural networks. ICML.

    Kingma, Salimans & Welling (2015). Variational dropout and the local
    reparameterization trick. NeurIPS.
    """

    def __init__(
        self,
        model: BayesianModel,
        *,
        init_scale: float = 1e-2,
        init: Init = "pretrained",
        kl: str = "analytic",
        sites: Sequence[str] | None = None,
        local_reparam: bool = False,
    ) -> None:
        super().__init__(model, sites)
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        if kl not in ("analytic", "mc"):
            raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
        self.analytic_kl = kl == "analytic"
        self.init_scale = float(init_scale)
        values = initial_values(model, init)
        raw_scale = math.log(math.expm1(self.init_scale))
        self.loc = nn.ParameterDict()
        self.raw_scale = nn.ParameterDict()
        for name, site in self._sites.items():
            unconstrained = self._transforms[name].inv(values[name])
            self.loc[module_key(name)] = nn.Parameter(unconstrained.detach().clone().reshape(site.shape))
            self.raw_scale[module_key(name)] = nn.Parameter(torch.full_like(self.loc[module_key(name)], raw_scale))
        self.local_sites: list[str] = self._check_local(model) if local_reparam else []
        self._covers_model = self.site_names == list(model.latent_sites())

    def _check_local(self, model: BayesianModel) -> list[str]:
        """The sites to reparameterise locally; raises where the trick cannot apply."""
        if not self.analytic_kl:
            raise ValueError(
                "local_reparam=True needs kl='analytic': the weights it covers are never drawn, "
                "so there is no value for a Monte Carlo KL"
            )
        eligible = set(model.net.local_sites)
        local = [name for name in self._sites if name in eligible]
        if not local:
            reason = model.net.no_local_reason or "this guide covers none of their random parameters"
            raise ValueError(
                f"local_reparam=True found no layer to reparameterise locally ({reason}); it applies to "
                "the weights and biases of nn.Linear layers. Build the guide with local_reparam=False."
            )
        for name in local:
            prior = self._sites[name].prior.distribution(self._sites[name].shape)
            try:
                kl_divergence(self.site_distribution(name), prior)
            except NotImplementedError:
                raise ValueError(
                    f"local_reparam=True needs a closed-form KL(q || p) at site {name!r}, and torch has "
                    f"none for its prior {type(self._sites[name].prior).__name__}; use a pb.priors.Normal "
                    "prior there or local_reparam=False."
                ) from None
        return local

    # ------------------------------------------------------------ q per site
    def _normal(self, name: str) -> dist.Normal:
        return dist.Normal(self.loc[module_key(name)], F.softplus(self.raw_scale[module_key(name)]))

    def site_distribution(self, name: str) -> dist.TorchDistribution:
        """q for one site: a Normal (to_event over the whole tensor) on its support."""
        base = self._normal(name)
        transform = self._transforms[name]
        ndim = len(self._sites[name].shape)
        if transform is identity_transform:  # biject_to(real): q is the Normal itself
            return base.to_event(ndim)
        return dist.TransformedDistribution(base, [transform]).to_event(ndim)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        draws = {}
        for name in self._sites:
            # The sites it covers are marked for the ELBO's local reparameterisation handler;
            # anywhere else the mark means nothing, and they are drawn like the others.
            # (A key of pyrobnn's own, not one of those Pyro's InferDict types.)
            infer = cast(InferDict, {LOCAL_REPARAM: True}) if name in self.local_sites else None
            draws[name] = pyro.sample(name, self.site_distribution(name), infer=infer)
        return draws

    # -------------------------------------------------------- draw-level API
    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        return {name: self.site_distribution(name).sample((num_samples,)) for name in self._sites}

    def median(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {name: self._transforms[name](self.loc[module_key(name)]).clone() for name in self._sites}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        first = next(iter(self.loc.values()))
        qs = torch.as_tensor(qs, dtype=first.dtype, device=first.device)
        out = {}
        with torch.no_grad():
            for name, site in self._sites.items():
                normal = self._normal(name)
                q = qs.reshape((-1,) + (1,) * len(site.shape))
                out[name] = self._transforms[name](normal.icdf(q))  # monotone: quantiles map through
        return out

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for name in self._sites:
            lp = self.site_distribution(name).log_prob(draws[name])
            total = lp if total is None else total + lp
        assert total is not None
        return total

    def scales(self) -> dict[str, torch.Tensor]:
        """σ per site on the unconstrained scale."""
        with torch.no_grad():
            return {name: F.softplus(self.raw_scale[module_key(name)]).clone() for name in self._sites}

    def spec(self) -> dict[str, Any]:
        """``{"kind": "meanfield", ...}`` with the ELBO's estimator options and, for part of a model, its sites."""
        options: dict[str, Any] = {"kl": "analytic" if self.analytic_kl else "mc"}
        if self.local_sites:
            options["local_reparam"] = True
        if not self._covers_model:
            options["sites"] = self.site_names
        return self._spec(MeanFieldGuide, "meanfield", options)

    def extra_repr(self) -> str:
        kl = "analytic" if self.analytic_kl else "mc"
        local = f", local_reparam={len(self.local_sites)} sites" if self.local_sites else ""
        return f"{super().extra_repr()}, kl={kl}{local}"
