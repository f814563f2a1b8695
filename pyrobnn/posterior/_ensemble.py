"""Many fits of one model as one posterior: :class:`Ensemble`, a weighted mixture of sources of draws,
and :func:`stacking_weights`, the weights that predict best."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pyrobnn._rng import seeded
from pyrobnn.model import BayesianModel
from pyrobnn.posterior._source import DrawSource

__all__ = ["WEIGHTS_FROM", "Ensemble", "allocate", "stacking_weights"]

#: Where an ensemble's weights came from (``Ensemble.weights_from``).
WEIGHTS_FROM = ("equal", "loo", "holdout", "user")
#: Draws behind the median and the quantiles of a mixture, which have no closed form.
QUANTILE_DRAWS = 4000


class Ensemble(nn.Module):
    r"""K sources of draws of one model's latent sites, mixed: q(θ) = Σₖ wₖ qₖ(θ).

    The members are fits from independent starts (a deep ensemble when they are
    MAP fits; :func:`pyrobnn.ensemble` fits them), or any sources of draws of the
    same model. A posterior whose modes one fit cannot span (the fits of a
    network that differ between clusters of data) is better approximated by
    several fits than by any one of them; see the concepts page, "Ensembles".

    Parameters
    ----------
    model
        The model every member approximates the posterior of.
    members
        Two or more sources of draws (fitted guides, stored draws) of ``model``'s
        latent sites.
    weights
        One weight per member, each ≥ 0, summing to one; default equal weights.
    weights_from
        Where the weights came from, recorded with them: ``"equal"``, ``"loo"``
        (stacking on PSIS-LOO), ``"holdout"`` (stacking on held-out data) or
        ``"user"``.

    Capabilities (see :class:`pyrobnn.posterior.DrawSource`): a mixture has a
    density when every member has one and none is a point mass; it is made of
    point masses (``point_mass``) when every member is one (an ensemble of MAP
    fits: K atoms, with no spread for PSIS-LOO or k̂ to measure); its draws are
    independent (``has_chains`` false) and its members are ``members``
    (``has_members`` true), which :func:`pyrobnn.to_arviz` writes as chains.
    """

    has_members = True
    has_chains = False

    def __init__(
        self,
        model: BayesianModel,
        members: Sequence[DrawSource],
        weights: Sequence[float] | torch.Tensor | None = None,
        *,
        weights_from: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, BayesianModel):
            raise TypeError(f"an ensemble mixes posteriors of a pb.BayesianModel, got {type(model).__name__}")
        members = list(members)
        if len(members) < 2:
            raise ValueError(
                f"an ensemble needs at least 2 members, got {len(members)}; fit more "
                "(pb.ensemble(model, kind, data, num_members=8)) or use the one fit as it is"
            )
        sites = model.latent_sites()
        for k, member in enumerate(members):
            if not isinstance(member, DrawSource):
                raise TypeError(f"ensemble member {k} is a {type(member).__name__}, not a source of draws")
            if list(member.site_names) != list(sites):
                raise ValueError(
                    f"ensemble member {k} covers the latent sites {list(member.site_names)}, the model has "
                    f"{list(sites)}: members must all be posteriors of this model"
                )
        self.members = nn.ModuleList(members)  # type: ignore[arg-type]  # every source is an nn.Module
        self.register_buffer("weights", Ensemble.check_weights(weights, len(members), model))
        self.weights: torch.Tensor
        if weights_from is None:
            weights_from = "equal" if weights is None else "user"
        if weights_from not in WEIGHTS_FROM:
            raise ValueError(f"weights_from must be one of {WEIGHTS_FROM}, got {weights_from!r}")
        self.weights_from = weights_from
        self.point_mass = all(m.point_mass for m in members)
        self.has_density = all(m.has_density and not m.point_mass for m in members)

    @property
    def sources(self) -> list[DrawSource]:
        """The members, as sources of draws."""
        return list(self.members)  # type: ignore[arg-type]

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def site_names(self) -> list[str]:
        return list(self.sources[0].site_names)

    @property
    def num_latent(self) -> int:
        """The dimension D of the latent space."""
        return int(self.sources[0].num_latent)

    @property
    def equal_weights(self) -> bool:
        """Whether every member weighs 1/K (the export then writes the members as chains)."""
        return bool(torch.allclose(self.weights, torch.full_like(self.weights, 1.0 / self.num_members)))

    # ------------------------------------------------- the draw interface
    def sample(self, num_samples: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of the mixture, each ``(num_samples, *shape)``, in random order.

        Member k gives ⌊n wₖ⌋ draws and the remainders go to the largest fractions
        (stratified: the members' shares vary less than under multinomial draws).
        """
        counts = allocate(int(num_samples), self.weights)
        device = self.weights.device
        with seeded(seed, device), torch.no_grad():
            parts = [m.sample(c) for m, c in zip(self.sources, counts, strict=True) if c > 0]
            order = torch.randperm(int(num_samples), device=device)
        return {name: torch.cat([p[name] for p in parts])[order.to(parts[0][name].device)] for name in parts[0]}

    def member_of(self, num_samples: int) -> torch.Tensor:
        """Which member each of :meth:`sample`'s ``num_samples`` draws came from, before the shuffle."""
        counts = allocate(int(num_samples), self.weights)
        return torch.repeat_interleave(torch.arange(self.num_members), torch.tensor(counts))

    @property
    def linearized(self) -> bool:
        """Whether a member predicts with a linearised network (a Laplace approximation's)."""
        return any(getattr(m, "linearized", False) for m in self.sources)

    def linearized_outputs(self, model: BayesianModel, draws: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Each draw through the member it most probably came from: that member's linearised network, or the net.

        The member is the one with the largest wₖ qₖ(θ). Members at distinct modes are far
        apart on the scale of their spreads, so a draw's own member wins; where two overlap,
        their centres are close and so are their linearisations.
        """
        log_w = self.weights.log().unsqueeze(-1)
        owner = (torch.stack([m.log_prob(draws) for m in self.sources]) + log_w.to(x)).argmax(0)
        out: torch.Tensor | None = None
        for k, member in enumerate(self.sources):
            index = (owner == k).nonzero().squeeze(-1)
            if len(index) == 0:
                continue
            mine = {name: value[index] for name, value in draws.items()}
            if getattr(member, "linearized", False):
                part = member.linearized_outputs(model, mine, x)  # type: ignore[attr-defined]
            else:
                part = model.evaluate(mine, x)[0]
            if out is None:
                out = part.new_empty((len(owner), *part.shape[1:]))
            out[index] = part
        assert out is not None
        return out

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """log Σₖ wₖ qₖ(θ) per draw; raises unless :attr:`has_density`."""
        if not self.has_density:
            raise NotImplementedError(
                "this ensemble has no density: a member is a point mass or stored draws (has_density is "
                "False), so importance weights and PSIS k̂ do not apply to it; R̂ across members, from "
                "pb.to_arviz, is its diagnostic."
            )
        per_member = torch.stack([m.log_prob(draws) for m in self.sources])
        log_w = self.weights.log().to(per_member).unsqueeze(-1)
        return torch.logsumexp(per_member + log_w, dim=0)

    def median(self) -> dict[str, torch.Tensor]:
        """Marginal medians of the mixture, from 4000 draws with a fixed seed."""
        return {name: q[0] for name, q in self.quantiles([0.5]).items()}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Marginal quantiles of the mixture, from 4000 draws with a fixed seed."""
        draws = self.sample(QUANTILE_DRAWS, seed=0)
        q = torch.as_tensor(qs, dtype=torch.float64).reshape(-1)
        ranks = (q * (QUANTILE_DRAWS - 1)).round().long()  # nearest-rank estimate
        return {name: value.sort(dim=0).values[ranks.to(value.device)] for name, value in draws.items()}

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise TypeError(
            "an ensemble is not fitted as a whole: pb.ensemble(model, kind, data, num_members=K) fits its "
            "members; use the posterior it returns for predict, to_arviz, compare and save."
        )

    def spec(self) -> dict[str, Any]:
        """``{"kind": "ensemble", "options": {"members": [each member's spec], "weights_from": ...}}``."""
        members = [m.spec() for m in self.sources]
        return {"kind": "ensemble", "options": {"members": members, "weights_from": self.weights_from}}

    @staticmethod
    def check_weights(weights: Sequence[float] | torch.Tensor | None, k: int, model: BayesianModel) -> torch.Tensor:
        """``weights`` as a float64 tensor of K entries ≥ 0 summing to one (equal when None), or a clear error."""
        device = next((b.device for b in model.buffers()), torch.device("cpu"))
        if weights is None:
            return torch.full((k,), 1.0 / k, dtype=torch.float64, device=device)
        w = torch.as_tensor(weights, dtype=torch.float64).detach().reshape(-1).to(device)
        if len(w) != k:
            raise ValueError(f"got {len(w)} weights for {k} members: give one weight per member")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"ensemble weights must be finite and >= 0, got {w.tolist()}")
        total = float(w.sum())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"ensemble weights sum to {total:.6g}, not 1: normalise them (w / w.sum())")
        return w

    def extra_repr(self) -> str:
        weights = ", ".join(f"{w:.3g}" for w in self.weights.tolist())
        return f"members={self.num_members}, weights=[{weights}], weights_from={self.weights_from!r}"


def allocate(num_samples: int, weights: torch.Tensor) -> list[int]:
    """Draws per member: ⌊n wₖ⌋, and the remainder to the largest fractional parts (ties: lower k)."""
    share = weights.double().cpu() * num_samples
    counts = share.floor().long()
    left = num_samples - int(counts.sum())
    if left > 0:
        order = sorted(range(len(share)), key=lambda k: (-(float(share[k]) - int(counts[k])), k))
        for k in order[:left]:
            counts[k] += 1
    return [int(c) for c in counts]


def stacking_weights(log_density: torch.Tensor, *, iterations: int = 2000, tol: float = 1e-10) -> torch.Tensor:
    r"""Stacking weights: argmax over the simplex of Σᵢ log Σₖ wₖ exp(ℓᵢₖ).

    ``log_density`` is ``(N, K)``: ℓᵢₖ, the log predictive density of point i
    under member k on data the member was not fitted to (PSIS-LOO, or a held-out
    split). The objective is concave in w; the fixed-point iteration
    wₖ ← mean over i of wₖ pᵢₖ / Σⱼ wⱼ pᵢⱼ (the EM update for mixture weights
    with fixed components) increases it at every step and converges to its
    maximum (Yao, Vehtari, Simpson & Gelman 2018; Yao, Vehtari & Gelman 2022).
    """
    ell = log_density.double()
    if ell.dim() != 2 or ell.shape[1] < 1:
        raise ValueError(f"log_density must be (points, members), got shape {tuple(ell.shape)}")
    if not torch.isfinite(ell).all():
        raise ValueError("log predictive densities for stacking must be finite")
    k = ell.shape[1]
    log_w = torch.full((k,), -math.log(k), dtype=torch.float64, device=ell.device)
    previous = -math.inf
    for _ in range(iterations):
        joint = ell + log_w
        total = torch.logsumexp(joint, dim=1, keepdim=True)
        objective = float(total.sum())
        log_w = torch.logsumexp(joint - total, dim=0) - math.log(len(ell))
        if objective - previous < tol * max(1.0, abs(objective)):
            break
        previous = objective
    w = log_w.exp()
    return w / w.sum()
