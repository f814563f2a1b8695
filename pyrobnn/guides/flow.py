"""Normalizing-flow guides from ``pyro.distributions.transforms``, scoped to part of a net.

A flow over every weight of a real network is infeasible (an IAF needs hidden
width ≥ D), so a flow covers a *scope* — the last layer, chosen sites, or all
of a small model — and a mean-field guide covers the rest.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.nn import AutoRegressiveNN
from torch import nn
from torch.distributions import constraints

from pyrobnn import _globs
from pyrobnn.guides._base import Guide
from pyrobnn.guides._joint import JointGuide
from pyrobnn.guides.meanfield import MeanFieldGuide, initial_values
from pyrobnn.model import BayesianModel

__all__ = ["FLOWS", "FlowGuide", "GuideList", "flow_size", "make_flow_guide"]

FLOWS = ("iaf", "affine_coupling", "spline_coupling")

#: The largest scope an IAF is built for by default (its hidden width must be ≥ D).
MAX_IAF_DIM = 2000


class _LocScale(dist.TransformModule):
    """u = μ + σ ⊙ z with learnable μ and σ = softplus(ρ): the flow's last layer."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = 1

    def __init__(self, loc: torch.Tensor, scale: float) -> None:
        super().__init__(cache_size=1)
        self.loc = nn.Parameter(loc.detach().clone())
        self.raw_scale = nn.Parameter(torch.full_like(loc, math.log(math.expm1(scale))))

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return self.loc + F.softplus(self.raw_scale) * z

    def _inverse(self, u: torch.Tensor) -> torch.Tensor:
        return (u - self.loc) / F.softplus(self.raw_scale)

    def log_abs_det_jacobian(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.raw_scale).log().sum(-1).expand(z.shape[:-1])


class FlowGuide(JointGuide):
    r"""q(u): a standard Normal pushed through flow layers, then a learnable location and scale.

    u = μ + σ ⊙ f_K ∘ … ∘ f_1(z), z ~ N(0, I). The flow layers come from
    :mod:`pyro.distributions.transforms`; with their near-identity start the
    guide begins as a mean-field guide centred at the initial values, and the
    flow learns the skew, curvature and dependence a Gaussian cannot hold.

    Parameters
    ----------
    model
        The model to approximate the posterior of.
    sites
        The sites the flow covers (default: all).
    flow
        ``"affine_coupling"`` (Real NVP, the default) or ``"spline_coupling"``
        (more flexible, slower), whose hidden width need not grow with D; or
        ``"iaf"`` (affine autoregressive), whose hidden width must be ≥ D.
    num_layers
        Flow layers (default 4: a coupling layer transforms half of the
        coordinates); the coordinate order is reversed between layers.
    hidden_dims
        Hidden widths of each layer's conditioner network (default:
        ``[max(2 D, 16)]`` for IAF, ``[min(max(2 D, 16), 256)]`` for couplings).
    init_scale, init
        As for :class:`MeanFieldGuide`.
    max_dim
        Refuse an IAF over more than this many dimensions.
    max_memory_gib
        Refuse a flow whose conditioner networks, with their gradients and Adam
        state, would take more memory than this.
    conditioner_lr
        The flow layers' networks learn at this fraction of the fit's learning
        rate (the location and scale at the full rate); default 1 / (last hidden
        width). Adam moves every weight by about the learning rate per step and
        a conditioner sums ``width`` of them into each shift and log-scale: on a
        1-50-1 net's 152 weights (width 256), fractions of 1, 0.1 and 0.03 made
        the fit oscillate or diverge, 0.01 fit as well as mean-field.

    References
    ----------
    Rezende & Mohamed (2015). Variational inference with normalizing flows. ICML.
    Kingma et al. (2016). Improved variational inference with inverse autoregressive flow. NeurIPS.
    Dinh, Sohl-Dickstein & Bengio (2017). Density estimation using Real NVP. ICLR.
    Durkan et al. (2019). Neural spline flows. NeurIPS.
    """

    def __init__(
        self,
        model: BayesianModel,
        sites: Sequence[str] | None = None,
        *,
        flow: str = "affine_coupling",
        num_layers: int = 4,
        hidden_dims: Sequence[int] | None = None,
        init_scale: float = 1e-2,
        init: str = "pretrained",
        max_dim: int = MAX_IAF_DIM,
        max_memory_gib: float = 2.0,
        conditioner_lr: float | None = None,
    ) -> None:
        super().__init__(model, sites)
        if conditioner_lr is not None and not conditioner_lr > 0:
            raise ValueError(f"conditioner_lr must be > 0, got {conditioner_lr}")
        dim = self.layout.dim
        if flow not in FLOWS:
            raise ValueError(f"unknown flow {flow!r}; valid flows are {', '.join(FLOWS)}")
        if dim < 2:
            raise ValueError(
                f"a flow needs at least 2 latent dimensions in its scope, got D = {dim}; "
                "use a mean-field guide for a single scalar, or widen the scope."
            )
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if flow == "iaf" and dim > max_dim:
            hidden = 2 * dim
            size = num_layers * (dim * hidden + hidden * 2 * dim)
            raise ValueError(
                f"an IAF over D = {dim} latent dimensions needs hidden width ≥ D: about {size / 1e6:.0f}M "
                f"parameters ({16 * size / 2**30:.1f} GiB with gradients and Adam state; limit max_dim={max_dim}). "
                "Scope the flow to a smaller block (scope='last_layer' or a list of globs), or use "
                "flow='affine_coupling' / 'spline_coupling', whose hidden width need not grow with D."
            )
        if hidden_dims is None:
            width = max(2 * dim, 16)
            hidden_dims = [width] if flow == "iaf" else [min(width, 256)]
        size = flow_size(flow, dim, list(hidden_dims), num_layers)
        if 16 * size > max_memory_gib * 2**30:
            raise ValueError(
                f"a flow ({flow}) over D = {dim} latent dimensions ({num_layers} layers, hidden {list(hidden_dims)}) "
                f"has about {size / 1e6:.0f}M parameters, {16 * size / 2**30:.1f} GiB with gradients and Adam "
                f"state (limit max_memory_gib={max_memory_gib}). Scope the flow to a smaller block "
                "(scope='last_layer' or a list of globs) with mean-field elsewhere, use fewer or narrower "
                "layers, or raise max_memory_gib if you have the memory."
            )
        self.flow, self.num_layers, self.hidden_dims = flow, num_layers, list(hidden_dims)
        self.conditioner_lr = 1.0 / self.hidden_dims[-1] if conditioner_lr is None else float(conditioner_lr)
        values = initial_values(model, init)
        loc, _ = self.layout.pack({name: values[name] for name in self.layout.names})
        self.layers = nn.ModuleList([_layer(flow, dim, self.hidden_dims) for _ in range(num_layers)])
        self.loc_scale = _LocScale(loc, init_scale)
        # Each layer conditions later coordinates on earlier ones (a coupling: the second half on
        # the first); reversing the order between layers lets every coordinate depend on the others.
        self.register_buffer("reverse", torch.arange(dim - 1, -1, -1, device=loc.device))
        self.to(loc.device)

    def posterior(self) -> dist.TorchDistribution:
        chain: list[Any] = []
        for i, layer in enumerate(self.layers):
            if i:
                chain.append(T.Permute(self.reverse))
            chain.append(layer)
        chain.append(self.loc_scale)
        loc = self.loc_scale.loc
        base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        return dist.TransformedDistribution(base, chain)

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": list(self.loc_scale.parameters()), "lr_scale": 1.0},
            {"params": list(self.layers.parameters()), "lr_scale": self.conditioner_lr},
        ]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, flow={self.flow}, num_layers={self.num_layers}, hidden_dims={self.hidden_dims}"


def flow_size(flow: str, dim: int, hidden_dims: list[int], num_layers: int) -> int:
    """Approximate number of parameters in the flow layers' conditioner networks."""
    split = dim // 2
    if flow == "iaf":
        widths = [dim, *hidden_dims, 2 * dim]
    elif flow == "affine_coupling":
        widths = [split, *hidden_dims, 2 * (dim - split)]
    else:  # spline coupling: 8 bins' widths, heights, derivatives and lambdas per coordinate
        widths = [split, *hidden_dims, (dim - split) * (4 * 8 - 1)]
    extra = split * (4 * 8 - 1) if flow == "spline_coupling" else 0  # its unconditioned spline
    return num_layers * (extra + sum(a * b + b for a, b in itertools.pairwise(widths)))


def _layer(flow: str, dim: int, hidden_dims: list[int]) -> dist.TransformModule:
    if flow == "iaf":
        # A fixed variable order (Pyro's helper draws a random one): layers alternate via Permute.
        arn = AutoRegressiveNN(dim, hidden_dims, permutation=torch.arange(dim))  # type: ignore[arg-type]
        layer = T.AffineAutoregressive(arn)
    elif flow == "affine_coupling":
        layer = T.affine_coupling(dim, hidden_dims=hidden_dims)
    else:
        layer = T.spline_coupling(dim, hidden_dims=hidden_dims)
        return layer  # (a zero conditioner output is not the identity for a spline)
    # Shrink the conditioner's output layer (Glow zeroes it; a small nonzero start keeps a
    # gradient flowing to every layer): an affine layer then starts within ~1% of the identity,
    # so the guide starts as the mean-field guide at the initial values rather than a random
    # warp of it, which on a network's weights can throw the fit off at once.
    last = [m for m in layer.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e-2)
        if last.bias is not None:
            last.bias.zero_()
    return layer


class GuideList(Guide):
    """Guides for disjoint groups of sites, side by side (q is their product)."""

    def __init__(self, model: BayesianModel, parts: Sequence[Guide]) -> None:
        super().__init__(model)
        self.parts = nn.ModuleList(parts)
        covered = [name for part in parts for name in part.site_names]
        if sorted(covered) != sorted(self._sites):
            raise ValueError(f"the parts must cover each latent site once; they cover {covered}")
        # Closed-form KL per site where a part can use it; the ELBO falls back to Monte Carlo elsewhere.
        self.analytic_kl = any(part.analytic_kl for part in parts)

    @property
    def guides(self) -> list[Guide]:
        return list(self.parts)  # type: ignore[arg-type]

    @property
    def num_particles(self) -> int:  # type: ignore[override]
        """The most any part asks for: the parts share every step's particles."""
        return max(part.num_particles for part in self.guides)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        for part in self.guides:
            result.update(part(*args, **kwargs))
        return result

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        return {k: v for part in self.guides for k, v in part._sample(num_samples).items()}

    def median(self) -> dict[str, torch.Tensor]:
        return {k: v for part in self.guides for k, v in part.median().items()}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v for part in self.guides for k, v in part.quantiles(qs).items()}

    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.guides for group in part.param_groups()]

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [part.log_prob({n: draws[n] for n in part.site_names}) for part in self.guides]
        return torch.stack(parts).sum(0)


def _scope_sites(model: BayesianModel, scope: str | Sequence[str]) -> list[str]:
    names = list(model.latent_sites())
    if scope == "all":
        return names
    if scope == "last_layer":
        net_sites = model.net.site_names
        if not net_sites:
            raise ValueError("scope='last_layer': the network has no random parameters")
        last = net_sites[-1].rpartition(".")[0]
        return [n for n in net_sites if n.rpartition(".")[0] == last]
    if isinstance(scope, str):
        scope = [scope]
    return _globs.select(scope, names, argument="scope")


def make_flow_guide(
    model: BayesianModel,
    *,
    scope: str | Sequence[str] = "all",
    init_scale: float = 1e-2,
    init: str = "pretrained",
    kl: str = "analytic",
    local_reparam: bool = False,
    **flow_options: Any,
) -> Guide:
    """A flow over the sites in ``scope`` and, if any are left, mean-field over the rest.

    ``scope`` is ``"all"`` (every latent site, a small model), ``"last_layer"``
    (the parameters of the last lifted module), or glob patterns over site names.
    ``kl`` and ``local_reparam`` apply to the mean-field part (see
    :class:`MeanFieldGuide`): with ``scope="last_layer"`` the body of an MLP can
    then be fitted with the local reparameterisation trick.
    """
    inside = _scope_sites(model, scope)
    outside = [name for name in model.latent_sites() if name not in inside]
    if local_reparam and not outside:
        raise ValueError(
            "local_reparam=True applies to the mean-field part of a flow guide, and this scope leaves "
            "none: the flow covers every site. Narrow the scope (e.g. scope='last_layer') or drop local_reparam."
        )
    flow = FlowGuide(model, inside, init_scale=init_scale, init=init, **flow_options)
    if not outside:
        return flow
    rest = MeanFieldGuide(model, sites=outside, init_scale=init_scale, init=init, kl=kl, local_reparam=local_reparam)
    return GuideList(model, [flow, rest])
