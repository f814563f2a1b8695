"""Normalizing-flow guides from ``pyro.distributions.transforms``, on a chosen block of a net.

A flow over every weight of a real network is infeasible (an IAF needs hidden
width ≥ D), so a :class:`FlowGuide` puts its flow on the sites it is given —
the last layer, sites chosen by glob, or all of a small model — and a
mean-field guide on the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch

from pyrobnn import _globs
from pyrobnn.guides._flowblock import FLOWS, MAX_IAF_DIM, FlowBlock, flow_size
from pyrobnn.guides._init import Init
from pyrobnn.guides._list import GuideList
from pyrobnn.guides._select import select_sites
from pyrobnn.guides.meanfield import MeanFieldGuide
from pyrobnn.model import BayesianModel, LatentLayout

__all__ = ["FLOWS", "FlowBlock", "FlowGuide", "flow_size", "make_flow_guide"]

#: Where a ``FlowBlock`` keeps its state; a FlowGuide over every site once kept it at the top.
_BLOCK_STATE = ("layers", "loc_scale", "reverse")


class FlowGuide(GuideList):
    r"""A normalizing flow over chosen sites, mean-field over the rest.

    On the chosen sites q(u) is a standard Normal pushed through flow layers, then
    a learnable location and scale: u = μ + σ ⊙ f_K ∘ … ∘ f_1(z), z ~ N(0, I), over
    their joint unconstrained vector u. The flow layers come from
    :mod:`pyro.distributions.transforms`; with their near-identity start the
    guide begins as a mean-field guide centred at the initial values, and the
    flow learns the skew, curvature and dependence a Gaussian cannot hold. The
    sites left out get a :class:`MeanFieldGuide`, and q is the product of the
    two: :attr:`guides` lists the flow part (a ``FlowBlock``) and, if any
    site is left, the mean-field part.

    Parameters
    ----------
    model
        The model to approximate the posterior of.
    sites
        The sites the flow covers: ``"all"`` (the default; every latent site, a
        small model), ``"last_layer"`` (the parameters of the last lifted
        module), or glob patterns over site names (one or a list).
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
        As for :class:`MeanFieldGuide` (both parts).
    kl, local_reparam
        Of the mean-field part, as for :class:`MeanFieldGuide`: with
        ``sites="last_layer"`` the body of an MLP can then be fitted with the
        local reparameterisation trick. ``local_reparam=True`` needs a
        mean-field part, a site the flow leaves out.
    max_dim
        Refuse an IAF over more than this many dimensions.
    max_memory_gib
        Refuse a flow whose conditioner networks, with their gradients and Adam
        state, would take more memory than this.
    conditioner_lr
        The flow layers' networks learn at this fraction of the fit's learning
        rate (the location and scale at the full rate); default 1 / (last hidden
        width). Adam moves every weight by about the learning rate per step and
        a conditioner sums ``width`` of them into each shift and log-scale, so larger
        fractions make the fit oscillate or diverge (measured in
        ``benchmarks/README.md``, ``flow_gap.py``, and the concepts page).
    scope
        Deprecated since 0.2.0: the former name of ``sites``.

    References
    ----------
    Rezende & Mohamed (2015). Variational inference with normalizing flows. ICML.
    Kingma et al. (2016). Improved variational inference with inverse autoregressive flow. NeurIPS.
    Dinh, Sohl-Dickstein & Bengio (2017). Density estimation using Real NVP. ICLR.
    Durkan et al. (2019). Neural spline flows. NeurIPS.
    """

    correlates = True

    def __init__(
        self,
        model: BayesianModel,
        sites: str | Sequence[str] | None = None,
        *,
        flow: str = "affine_coupling",
        num_layers: int = 4,
        hidden_dims: Sequence[int] | None = None,
        init_scale: float = 1e-2,
        init: Init = "pretrained",
        kl: str = "analytic",
        local_reparam: bool = False,
        max_dim: int = MAX_IAF_DIM,
        max_memory_gib: float = 2.0,
        conditioner_lr: float | None = None,
        scope: str | Sequence[str] | None = None,
    ) -> None:
        if not isinstance(model, BayesianModel):
            raise TypeError(f"a guide is built for a pb.BayesianModel, got {type(model).__name__}")
        argument = "sites" if scope is None else "scope"  # the keyword an error names
        patterns = _globs.sites_keyword("FlowGuide", sites, scope, old="scope")
        patterns = "all" if patterns is None else patterns
        inside = select_sites(model, patterns, argument)
        outside = [name for name in model.latent_sites() if name not in inside]
        if local_reparam and not outside:
            raise ValueError(
                "local_reparam=True applies to the mean-field part of a flow guide, and these sites leave "
                f"none: the flow covers every site. Choose fewer (e.g. {argument}='last_layer') or drop local_reparam."
            )
        parts: list[MeanFieldGuide | FlowBlock] = [
            FlowBlock(
                model,
                inside,
                flow=flow,
                num_layers=num_layers,
                hidden_dims=hidden_dims,
                init_scale=init_scale,
                init=init,
                max_dim=max_dim,
                max_memory_gib=max_memory_gib,
                conditioner_lr=conditioner_lr,
            )
        ]
        if outside:
            rest = MeanFieldGuide(
                model, sites=outside, init_scale=init_scale, init=init, kl=kl, local_reparam=local_reparam
            )
            parts.append(rest)
        super().__init__(model, parts)

    # ------------------------------------------------------------ the flow part
    @property
    def _flow_part(self) -> FlowBlock:
        part = self.parts[0]
        assert isinstance(part, FlowBlock)
        return part

    @property
    def flow(self) -> str:
        """The kind of flow layer: ``"affine_coupling"``, ``"spline_coupling"`` or ``"iaf"``."""
        return self._flow_part.flow

    @property
    def num_layers(self) -> int:
        """The number of flow layers."""
        return self._flow_part.num_layers

    @property
    def hidden_dims(self) -> list[int]:
        """Hidden widths of each flow layer's conditioner network."""
        return self._flow_part.hidden_dims

    @property
    def conditioner_lr(self) -> float:
        """The conditioners' fraction of the fit's learning rate."""
        return self._flow_part.conditioner_lr

    @property
    def layout(self) -> LatentLayout:
        """How the flow's sites lie in its latent vector u (every site's when ``sites="all"``)."""
        return self._flow_part.layout

    def posterior(self) -> dist.TorchDistribution:
        """q(u) of the flow's sites, over their joint unconstrained vector (see :attr:`layout`)."""
        return self._flow_part.posterior()

    def covariance(self) -> torch.Tensor:
        """The covariance of :meth:`posterior`, estimated from draws (fixed seed)."""
        return self._flow_part.covariance()

    # ----------------------------------------------------------- checkpoints
    def spec(self) -> dict[str, Any]:
        """``{"kind": "flow", ...}``: the flow's sites and shape, and the mean-field part's estimator options."""
        block = self._flow_part
        options: dict[str, Any] = {
            # exact site names are glob patterns that match only themselves
            "sites": "all" if block.site_names == self.site_names else block.site_names,
            "flow": block.flow,
            "num_layers": block.num_layers,
            "hidden_dims": list(block.hidden_dims),
            "max_dim": block.layout.dim,
            "max_memory_gib": block.max_memory_gib,  # a flow built past the default limit rebuilds too
            "conditioner_lr": block.conditioner_lr,  # a resumed fit trains the conditioners as before
        }
        for part in self.guides[1:]:  # the mean-field part: its kl and local_reparam
            options.update({k: v for k, v in part.spec()["options"].items() if k != "sites"})
        return self._spec(FlowGuide, "flow", options)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Up to pyrobnn 0.1 a flow over every site was the flow part itself, its state at the top
        # (``layers.0...``, ``loc_scale.loc``, ``reverse``): read those keys as the first part's.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix) :]
            if name.split(".")[0] in _BLOCK_STATE:
                state_dict[f"{prefix}parts.0.{name}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, flow={self.flow}, flow_sites={len(self._flow_part.site_names)}"


def make_flow_guide(model: BayesianModel, **options: Any) -> FlowGuide:
    """A :class:`FlowGuide` for ``model`` (the same as ``make_guide("flow", model, **options)``)."""
    return FlowGuide(model, **options)
