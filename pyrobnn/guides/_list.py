"""Guides for disjoint groups of sites side by side: :class:`GuideList`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pyrobnn.guides._base import Guide
from pyrobnn.model import BayesianModel

__all__ = ["GuideList"]


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
