"""q(u) of a batch of low-rank or full-rank members, rebuilt from their autoguides' stacked parameters.

What ``pyrobnn.infer._batched.fit_batch`` draws its joint members' particles from, and how it
finds a member whose q no longer factorises (a diverged member, left out while the others go on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch

from pyrobnn.guides import FullRankGuide, LowRankGuide

__all__ = ["JOINT_POSTERIORS", "auto_of", "rsample", "unfactorisable"]


def rsample(q: dist.TorchDistribution, num: int) -> torch.Tensor:
    """``num`` reparameterised draws per member, ``(K, num, D)``, by one batched matrix product.

    torch's ``rsample`` multiplies the factor into each draw's noise separately (the factor
    broadcast to every draw), and the backward pass then builds a D×D outer product per draw.
    ``eps @ Lᵀ`` draws the same Gaussian: a batch of 4 full-rank members of a 1-50-1 net, 32
    draws each, took 7.7 ms a step so against 11.6 ms (one thread).
    """
    loc = q.loc.unsqueeze(-2)  # type: ignore[attr-defined]
    k, dim = loc.shape[0], loc.shape[-1]
    if isinstance(q, dist.MultivariateNormal):
        eps = torch.randn((k, num, dim), dtype=loc.dtype, device=loc.device)
        return loc + eps @ q.scale_tril.transpose(-1, -2)  # type: ignore[no-any-return]
    assert isinstance(q, dist.LowRankMultivariateNormal)
    factor = q.cov_factor
    eps_w = torch.randn((k, num, factor.shape[-1]), dtype=loc.dtype, device=loc.device)
    eps_d = torch.randn((k, num, dim), dtype=loc.dtype, device=loc.device)
    return loc + eps_w @ factor.transpose(-1, -2) + q.cov_diag.sqrt().unsqueeze(-2) * eps_d  # type: ignore[no-any-return]


def auto_of(guide: LowRankGuide | FullRankGuide) -> Any:
    """The Pyro autoguide a joint Gaussian guide wraps."""
    return guide.auto


def _lowrank_posterior(p: dict[str, torch.Tensor]) -> dist.TorchDistribution:
    # as AutoLowRankMultivariateNormal.get_posterior builds it
    scale = p["scale"]
    return dist.LowRankMultivariateNormal(p["loc"], p["cov_factor"] * scale.unsqueeze(-1), scale * scale)


def _fullrank_posterior(p: dict[str, torch.Tensor]) -> dist.TorchDistribution:
    # as AutoMultivariateNormal.get_posterior builds it
    return dist.MultivariateNormal(p["loc"], scale_tril=p["scale"][..., None] * p["scale_tril"])


#: q(u) of a batch of members from their autoguide's constrained parameters, stacked.
JOINT_POSTERIORS: dict[str, Callable[[dict[str, torch.Tensor]], dist.TorchDistribution]] = {
    "AutoLowRankMultivariateNormal": _lowrank_posterior,
    "AutoMultivariateNormal": _fullrank_posterior,
}


def unfactorisable(
    posterior: Callable[[dict[str, torch.Tensor]], dist.TorchDistribution], values: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Per member, whether its q(u) can no longer be built: a factor gone NaN, infinite or singular."""
    bad = []
    for member in range(next(iter(values.values())).shape[0]):
        try:
            posterior({key: value[member] for key, value in values.items()})
        except torch.linalg.LinAlgError:
            bad.append(True)
        else:
            bad.append(False)
    return torch.tensor(bad)
