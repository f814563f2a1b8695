"""Low-rank multivariate Normal guide: covariance W Wᵀ + diag over all latent sites."""

from __future__ import annotations

from typing import Any

from pyro.infer.autoguide import AutoLowRankMultivariateNormal

from pyrobnn.guides._init import Init, initial_values
from pyrobnn.guides._joint import AutoGaussianGuide
from pyrobnn.model import BayesianModel

__all__ = ["LowRankGuide"]


class LowRankGuide(AutoGaussianGuide):
    r"""q(u) = N(μ, W Wᵀ + D) over the unconstrained latent vector, W of shape (D, rank).

    Wraps Pyro's :class:`~pyro.infer.autoguide.AutoLowRankMultivariateNormal`
    (its parameters, initialisation and marginals) on a data-free copy of the
    model's latent sites.

    Parameters
    ----------
    model
        The model to approximate the posterior of.
    rank
        Columns of W. Pyro's default (√D) is far too large for a network
        (316 at D = 10⁵); pyrobnn asks for a small explicit rank.
    init_scale
        Initial marginal standard deviation of every coordinate.
    init
        ``"pretrained"`` (start at the network's current weights), ``"reset"``
        (torch's default initialisation, redrawn), ``"prior"`` (a prior draw) or
        ``{site: value}``; see :class:`MeanFieldGuide`.

    Notes
    -----
    Cost per step is O(D · rank) in time and memory; the correlation captured is
    whatever the leading ``rank`` directions of the posterior covariance hold.
    """

    def __init__(
        self, model: BayesianModel, *, rank: int = 10, init_scale: float = 1e-2, init: Init = "pretrained"
    ) -> None:
        super().__init__(model)
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.rank = rank
        self._build_auto(AutoLowRankMultivariateNormal, initial_values(model, init), init_scale=init_scale, rank=rank)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "lowrank", "options": {"rank": ...}}``."""
        return self._spec(LowRankGuide, "lowrank", {"rank": self.rank})

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
