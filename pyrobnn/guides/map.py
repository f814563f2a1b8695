"""MAP guide: a point mass at each site, for comparison with the Bayesian guides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrobnn._globs import module_key
from pyrobnn.guides._base import Guide
from pyrobnn.guides._init import Init, initial_values
from pyrobnn.model import BayesianModel

__all__ = ["MAPGuide"]


class MAPGuide(Guide):
    r"""q(θ) = δ(θ − θ̂): fitting it maximises log p(y | θ) + log p(θ), the MAP estimate.

    With a point mass the "KL" term of the ELBO is −log p(θ̂) (the entropy of a
    Delta is dropped, as Pyro's ``AutoDelta`` does), so the objective is the
    negative log joint density. Draws are copies of θ̂; predictions from it carry
    only the likelihood's noise.

    ``init`` is where θ̂ starts: ``"pretrained"``, ``"reset"``, ``"prior"`` or
    ``{site: value}``, as for :class:`MeanFieldGuide`.
    """

    point_mass = True

    def __init__(self, model: BayesianModel, *, init: Init = "pretrained") -> None:
        super().__init__(model)
        values = initial_values(model, init)
        self.value = nn.ParameterDict()
        for name, site in self._sites.items():
            unconstrained = self._transforms[name].inv(values[name])
            self.value[module_key(name)] = nn.Parameter(unconstrained.detach().clone().reshape(site.shape))

    def _point(self, name: str) -> torch.Tensor:
        return self._transforms[name](self.value[module_key(name)])  # type: ignore[no-any-return]

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {
            name: pyro.sample(name, dist.Delta(self._point(name), event_dim=len(site.shape)))
            for name, site in self._sites.items()
        }

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        return {
            name: self._point(name).expand((num_samples, *site.shape)).clone() for name, site in self._sites.items()
        }

    def median(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {name: self._point(name).clone() for name in self._sites}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        n = len(torch.as_tensor(qs).reshape(-1))
        with torch.no_grad():
            return self._sample(n)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "map", "options": {}}``."""
        return self._spec(MAPGuide, "map", {})

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """0 where every draw equals θ̂ and −inf elsewhere (the Delta's density)."""
        num = next(iter(draws.values())).shape[0]
        total = torch.zeros(num, device=self._device())
        for name, site in self._sites.items():
            d = dist.Delta(self._point(name), event_dim=len(site.shape))
            total = total + d.log_prob(draws[name])
        return total
