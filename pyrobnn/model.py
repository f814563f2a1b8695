"""The Pyro model: a lifted network plus a likelihood, ``model(x, y=None)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import sum_rightmost
from torch import nn
from torch.distributions import Independent, biject_to, constraints
from torch.distributions.transforms import Transform

from pyrobnn.lift import BayesianNet
from pyrobnn.likelihoods import Likelihood
from pyrobnn.priors import Prior

__all__ = ["BayesianModel", "LatentLayout", "LatentSite"]

#: Name of the observation site.
OBS = "obs"


@dataclass(frozen=True)
class LatentSite:
    """A latent variable of the model, as a guide needs to know it."""

    name: str
    shape: torch.Size
    prior: Prior
    init: torch.Tensor  # a starting value on the constrained scale

    @property
    def support(self) -> object:
        return self.prior.support

    @property
    def on_real_line(self) -> bool:
        """Whether the prior's support is the whole real line (no bijection between θ and u)."""
        support = self.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        return support is constraints.real

    def normal_prior(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(μ, 1/σ²), flattened, when the prior is a Normal on the real line; else None."""
        if not self.on_real_line:
            return None
        prior = self.prior.distribution(self.shape)
        base = prior.base_dist if isinstance(prior, Independent) else prior
        if type(base) not in (torch.distributions.Normal, dist.Normal):
            return None
        loc = base.loc.expand(self.shape).reshape(-1).detach()
        scale = base.scale.expand(self.shape).reshape(-1).detach()
        return loc, scale.pow(-2)


class LatentLayout:
    """How (some of) the latent sites lie in one flat vector: the one flattening of the latents.

    Site after site in the model's order, each flattened row-major. A joint guide
    lays out its unconstrained vector u this way, stored MCMC draws their
    constrained values θ, and a sampler its state: :meth:`split` and :meth:`join`
    reshape only; :meth:`constrain` and :meth:`pack` also map between u and θ
    with each site's bijection to its prior's support (``biject_to``).
    Build one with :meth:`BayesianModel.layout`.

    Attributes
    ----------
    names
        The sites, in order.
    shapes, sizes, transforms
        Per site: its shape, its number of scalars, and the bijection T from
        the real line to its support (θ = T(u)).
    dim
        D, the length of the vector.
    """

    def __init__(self, sites: Mapping[str, LatentSite]) -> None:
        self.names = list(sites)
        self.shapes: dict[str, torch.Size] = {name: site.shape for name, site in sites.items()}
        self.transforms: dict[str, Transform] = {name: biject_to(site.support) for name, site in sites.items()}
        self.sizes = {name: site.shape.numel() for name, site in sites.items()}
        self.dim = sum(self.sizes.values())

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Values per site, each ``batch + shape``, from a vector ``batch + (D,)``; no transform."""
        batch = flat.shape[:-1]
        out, pos = {}, 0
        for name in self.names:
            size = self.sizes[name]
            out[name] = flat[..., pos : pos + size].reshape(batch + self.shapes[name])
            pos += size
        return out

    def join(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`split`: values per site (``batch + shape``) as one ``batch + (D,)`` vector."""
        parts = []
        for name in self.names:
            value = values[name]
            batch = value.shape[: value.dim() - len(self.shapes[name])]
            parts.append(value.reshape((*batch, self.sizes[name])))
        return torch.cat(parts, dim=-1)

    def constrain(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ = T(u) per site from an unconstrained vector u, ``batch + (D,)``."""
        return {name: self.transforms[name](u) for name, u in self.split(latent).items()}

    def constrain_with_log_det(self, latent: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """θ = T(u) per site and Σ log|det ∂θ/∂u| per vector (``batch``): what a potential on u adds."""
        theta, log_det = {}, torch.zeros(latent.shape[:-1], dtype=latent.dtype, device=latent.device)
        for name, u in self.split(latent).items():
            transform = self.transforms[name]
            theta[name] = value = transform(u)
            log_det = log_det + sum_rightmost(transform.log_abs_det_jacobian(u, value), len(self.shapes[name]))
        return theta, log_det

    def pack(self, draws: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconstrained vectors u = T⁻¹(θ) of constrained draws, and Σ log|det ∂u/∂θ| per draw."""
        parts, log_det = {}, None
        for name in self.names:
            value = draws[name]
            u = self.transforms[name].inv(value)
            ld = sum_rightmost(self.transforms[name].inv.log_abs_det_jacobian(value, u), len(self.shapes[name]))
            log_det = ld if log_det is None else log_det + ld
            parts[name] = u
        assert log_det is not None
        return self.join(parts), log_det


class BayesianModel(nn.Module):
    r"""A Bayesian neural network as a Pyro model: priors, network, likelihood.

    Calling ``model(x, y)`` samples every random weight (sites named by parameter
    path), the likelihood's own latent variables (e.g. ``"likelihood.scale"``),
    and then observes ``y`` at the site ``"obs"`` inside a plate ``"data"`` at
    dim ``-1``. With ``y=None`` it samples from the prior predictive.

    Parameters
    ----------
    net
        A lifted network from :func:`pyrobnn.lift`.
    likelihood
        An observation model from :mod:`pyrobnn.likelihoods`.

    Notes
    -----
    When ``x`` is a minibatch of ``n`` out of ``N = dataset_size`` observations,
    the log-likelihood is scaled by ``N / n`` so that each step's objective is an
    unbiased estimate of the full-data ELBO

    .. math:: \mathcal{L}(q) = \sum_{i=1}^{N} \mathbb{E}_q[\log p(y_i \mid x_i, \theta)]
              - \mathrm{KL}(q(\theta) \,\|\, p(\theta)),

    i.e. the KL is counted once per epoch-sized objective, not once per batch.
    The scale comes from the plate's size, not from a subsample drawn by Pyro,
    so the model draws no random permutation per step.
    """

    def __init__(self, net: BayesianNet, likelihood: Likelihood) -> None:
        super().__init__()
        if not isinstance(net, BayesianNet):
            raise TypeError(
                f"BayesianModel needs a lifted network, got {type(net).__name__}. "
                "Lift it first: model = pb.BayesianModel(pb.lift(net, prior=...), likelihood)."
            )
        if not isinstance(likelihood, Likelihood):
            raise TypeError(
                f"likelihood must be one of pb.likelihoods (Gaussian, HeteroscedasticGaussian, "
                f"StudentT, Bernoulli, Categorical, Poisson), got {type(likelihood).__name__}"
            )
        self.net = net
        self.likelihood = likelihood
        self._first_layer = _first_linear(net.net)

    # -------------------------------------------------------------- latents
    def latent_sites(self) -> dict[str, LatentSite]:
        """Every latent site of the model, in sampling order."""
        sites = {}
        for site in self.net.sites:
            sites[site.name] = LatentSite(site.name, site.shape, site.prior, self.net.initial_value(site.name))
        for name, prior in self.likelihood.latent_priors().items():
            sites[name] = LatentSite(name, torch.Size(), prior, self.likelihood.latent_init(name))
        return sites

    def layout(self, sites: Sequence[str] | None = None) -> LatentLayout:
        """The :class:`LatentLayout` of every latent site in the model's order, or of ``sites`` in their given order."""
        latent = self.latent_sites()
        if sites is not None:
            unknown = [name for name in sites if name not in latent]
            if unknown:
                raise ValueError(f"unknown latent sites {unknown}; the model has {list(latent)}")
            latent = {name: latent[name] for name in sites}
        return LatentLayout(latent)

    # --------------------------------------------------------------- model
    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, dataset_size: int | None = None
    ) -> torch.Tensor:
        """Run the model. ``dataset_size`` (default ``len(x)``) scales a minibatch likelihood."""
        self.check_features(x)
        draws = self.net.sample_params()
        latents = self.likelihood.sample_latents()
        out = self.net.run(draws, x)
        n = x.shape[0]
        # run() drops the data-plate dim from the draws' batch shape; what is left precedes N
        batch_ndim = max(len(self.net.batch_shape(draws)) - 1, 0)
        output_shape = out.shape[batch_ndim + 1 :]
        if y is not None:
            if y.shape[0] != n:
                raise ValueError(f"x has {n} rows but y has {y.shape[0]}; they must match.")
            y = self.likelihood.prepare_y(output_shape, y)
        else:
            self.likelihood.event_shape(output_shape)  # raises on an impossible output shape
        size = n if dataset_size is None else int(dataset_size)
        # Passing the subsample indices sets the scale N/n without Pyro drawing a randperm.
        subsample = torch.arange(n, device=x.device) if size != n else None
        with pyro.plate("data", size=size, subsample=subsample, dim=-1):
            fn = self.likelihood.distribution(out, latents, output_shape)
            return pyro.sample(OBS, fn, obs=y)

    # ---------------------------------------------------------- no Pyro
    def check_features(self, x: torch.Tensor) -> None:
        """Raise if ``x`` does not have the number of features per row that the network's first layer takes.

        The check is made when the layer ``x`` meets first is sure: the network is an
        ``nn.Linear`` or an ``nn.Sequential`` (nested or not) that starts with one.
        For other networks, :meth:`output_shape` explains torch's shape error instead.
        """
        if self._first_layer is None or x.dim() == 0:
            return
        name, width = self._first_layer
        layer = f"in_features of {name!r} nn.Linear" if name else "its in_features: the network is an nn.Linear"
        features = f"{width} feature{'s' if width != 1 else ''}"
        if x.dim() == 1:
            raise ValueError(
                f"x has shape {tuple(x.shape)}: one number per row, but the network's first layer "
                f"takes {features} per row ({layer}); pass x with shape ({len(x)}, {width})"
                + (", e.g. x.unsqueeze(-1)" if width == 1 else "")
            )
        if x.shape[-1] != width:
            got = x.shape[-1]
            raise ValueError(
                f"x has {got} feature{'s' if got != 1 else ''} per row but the network's first layer "
                f"takes {width} ({layer}); pass x with {width} column{'s' if width != 1 else ''}"
            )

    def output_shape(self, x: torch.Tensor) -> torch.Size:
        """The network's output shape for one observation (one pass at the twin's current weights)."""
        self.check_features(x)
        try:
            with torch.no_grad():
                out = self.net.net(x[:2])  # two rows: batch statistics need more than one
        except RuntimeError as err:
            if "shapes cannot be multiplied" not in str(err):
                raise
            raise ValueError(
                f"the network cannot run on x of shape {tuple(x.shape)} ({err}); check that x has "
                "the number of features per row that the network's first layer takes"
            ) from err
        return out.shape[1:]

    def evaluate(
        self, draws: Mapping[str, torch.Tensor], x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Network outputs and likelihood latents for ``P`` given draws (each ``(P, *shape)``).

        Returns the output, shape ``(P, N, *o)``, and the likelihood latents, each
        shaped ``(P, 1)`` to broadcast over the data dim. Pure torch: no Pyro sites.
        """
        self.check_features(x)
        net_draws = {name: draws[name] for name in self.net.site_names}
        if net_draws:
            out = self.net.run_batched(net_draws, x)
            num = out.shape[0]
        else:
            num = next(iter(draws.values())).shape[0] if draws else 1
            single = self.net.net(x)
            out = single.expand((num, *single.shape))
        latents = {name: draws[name].reshape(num, 1) for name in self.likelihood.latent_priors()}
        return out, latents


def _first_linear(net: nn.Module) -> tuple[str, int] | None:
    """The path and ``in_features`` of the layer every input meets first, when that is sure.

    Sure means the network is an ``nn.Linear``, or an ``nn.Sequential`` (nested or
    not) whose first layer is one; in any other module, the order of the submodules
    says nothing about the order in which ``forward`` runs them.
    """
    path = []
    while isinstance(net, nn.Sequential) and len(net):
        name, net = next(iter(net.named_children()))
        path.append(name)
    if type(net) is not nn.Linear:  # a subclass may reshape its input first
        return None
    return ".".join(path), net.in_features
