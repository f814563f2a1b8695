"""The flow itself: a normalizing flow over the joint latent vector of a block of sites.

:class:`FlowBlock` is the flow part of a :class:`pyrobnn.guides.FlowGuide`: a
:class:`JointGuide` over the sites it is given and no others, built from the
layers of :mod:`pyro.distributions.transforms`.
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

from pyrobnn.guides._init import Init, initial_values
from pyrobnn.guides._joint import JointGuide
from pyrobnn.model import BayesianModel

__all__ = ["FLOWS", "MAX_IAF_DIM", "FlowBlock", "flow_size"]

FLOWS = ("iaf", "affine_coupling", "spline_coupling")

#: The largest block an IAF is built for by default (its hidden width must be ≥ D).
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


class FlowBlock(JointGuide):
    r"""A flow over exactly the sites it is given: the flow part of a :class:`~pyrobnn.guides.FlowGuide`.

    q(u) is a standard Normal pushed through flow layers, then a learnable
    location and scale: u = μ + σ ⊙ f_K ∘ … ∘ f_1(z), z ~ N(0, I), over the
    joint unconstrained vector u of its sites. It covers only those sites (a
    guide for part of a model); a :class:`~pyrobnn.guides.FlowGuide` composes
    it with a mean-field guide for the rest. The options are the FlowGuide's.
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
        init: Init = "pretrained",
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
                "use a mean-field guide for a single scalar, or choose more sites."
            )
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if flow == "iaf" and dim > max_dim:
            hidden = 2 * dim
            size = num_layers * (dim * hidden + hidden * 2 * dim)
            raise ValueError(
                f"an IAF over D = {dim} latent dimensions needs hidden width ≥ D: about {size / 1e6:.0f}M "
                f"parameters ({16 * size / 2**30:.1f} GiB with gradients and Adam state; limit max_dim={max_dim}). "
                "Put the flow on a smaller block (sites='last_layer' or a list of globs), or use "
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
                f"state (limit max_memory_gib={max_memory_gib}). Put the flow on a smaller block "
                "(sites='last_layer' or a list of globs) with mean-field elsewhere, use fewer or narrower "
                "layers, or raise max_memory_gib if you have the memory."
            )
        self.flow, self.num_layers, self.hidden_dims = flow, num_layers, list(hidden_dims)
        self.conditioner_lr = 1.0 / self.hidden_dims[-1] if conditioner_lr is None else float(conditioner_lr)
        self.max_memory_gib = float(max_memory_gib)
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
