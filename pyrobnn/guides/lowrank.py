"""Low-rank multivariate Normal guide: covariance W Wᵀ + diag over all latent sites."""

from __future__ import annotations

from typing import Any

from pyro.infer.autoguide import AutoLowRankMultivariateNormal

from pyrobnn.guides._init import Init, initial_values
from pyrobnn.guides._joint import AutoGaussianGuide
from pyrobnn.model import BayesianModel

__all__ = ["MAX_DEFAULT_RANK", "LowRankGuide", "default_rank"]

#: The largest rank chosen unless told: √D pays on every built-in task measured (up to D = 602, √D = 25),
#: and beyond it a step's cost grows in proportion to the rank on a large net (benchmarks/README.md).
MAX_DEFAULT_RANK = 25


def default_rank(dim: int) -> int:
    """round(√D), Pyro's own default, but at most :data:`MAX_DEFAULT_RANK` (and at least 1)."""
    return max(1, min(round(dim**0.5), MAX_DEFAULT_RANK))


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
        Columns of W. By default round(√D), as Pyro's own default, but at most
        25 (``pyrobnn.guides.lowrank.default_rank``): 12 on a 1-50-1 net (D = 152), 25 from D = 601 up.
        √D itself is far too large for a real network (819 on a 784-512-512-10
        MLP), and a step there costs in proportion to the rank: pass a smaller
        one (``rank=10`` is 2.2 times faster there) where time matters more.
    init_scale
        Initial marginal standard deviation of every coordinate.
    init
        ``"pretrained"`` (start at the network's current weights), ``"reset"``
        (torch's default initialisation, redrawn), ``"prior"`` (a prior draw) or
        ``{site: value}``; see :class:`MeanFieldGuide`.

    Notes
    -----
    Cost per step is O(D · rank) in time and memory; the correlation captured is
    whatever the leading ``rank`` directions of the posterior covariance hold. On
    the built-in regressions the network's pass dominates a step, so √D costs no
    more per step than rank 10, and the default fits end 0.6-2.5 nats higher on
    the one-input tasks (D = 152) and 24-37 nats higher on ``friedman`` (D = 602)
    than rank 10's (benchmarks/README.md, ``fit_lr.py``).
    """

    def __init__(
        self, model: BayesianModel, *, rank: int | None = None, init_scale: float = 1e-2, init: Init = "pretrained"
    ) -> None:
        super().__init__(model)
        if rank is None:
            rank = default_rank(self.num_latent)
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
