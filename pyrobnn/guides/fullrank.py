"""Full-rank multivariate Normal guide: a dense covariance over all latent sites."""

from __future__ import annotations

from typing import Any

from pyro.infer.autoguide import AutoMultivariateNormal

from pyrobnn.guides._init import Init, initial_values
from pyrobnn.guides._joint import AutoGaussianGuide
from pyrobnn.model import BayesianModel

__all__ = ["FullRankGuide", "memory_of_dense"]

#: The largest latent dimension a dense covariance is built for by default.
MAX_DIM = 5000


def memory_of_dense(dim: int) -> float:
    """Bytes a trained D×D float32 Cholesky factor needs: parameter, gradient and two Adam moments."""
    return 4.0 * 4 * dim * (dim + 1) / 2


class FullRankGuide(AutoGaussianGuide):
    r"""q(u) = N(μ, L Lᵀ) over the unconstrained latent vector, L lower-triangular.

    Wraps Pyro's :class:`~pyro.infer.autoguide.AutoMultivariateNormal`. It can
    represent any Gaussian posterior exactly — on a conjugate linear model it
    recovers the posterior mean and covariance — at O(D²) memory and O(D³)
    time per step, so it suits small nets, last layers and low-dimensional models.

    Parameters
    ----------
    model
        The model to approximate the posterior of.
    init_scale
        Initial marginal standard deviation of every coordinate.
    init
        ``"pretrained"``, ``"reset"``, ``"prior"`` or ``{site: value}`` (see
        :class:`MeanFieldGuide`).
    max_dim
        Refuse latent dimensions above this (default 5000, about 200 MB of
        optimiser state); raise it deliberately if you have the memory.
    """

    def __init__(
        self, model: BayesianModel, *, init_scale: float = 1e-2, init: Init = "pretrained", max_dim: int = MAX_DIM
    ) -> None:
        super().__init__(model)
        dim = self.layout.dim
        if dim > max_dim:
            raise ValueError(
                f"a full-rank guide over D = {dim} latent dimensions needs a {dim}×{dim} covariance factor, "
                f"about {memory_of_dense(dim) / 2**30:.1f} GiB with its gradient and Adam state, and O(D³) "
                f"work per step (limit max_dim={max_dim}). Use make_guide('lowrank', model) (rank √D up to 25), a flow "
                "over the last layer (make_guide('flow', model, sites='last_layer')), lift fewer "
                "parameters, or pass max_dim= if you have the memory."
            )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self._build_auto(AutoMultivariateNormal, initial_values(model, init), init_scale=init_scale)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "fullrank", ...}``, with ``max_dim`` the guide's own dimension (so a rebuild never refuses)."""
        return self._spec(FullRankGuide, "fullrank", {"max_dim": self.layout.dim})
