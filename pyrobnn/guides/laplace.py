"""The Laplace approximation: a MAP fit, then a Gaussian with the curvature of the log joint there."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrobnn._globs import module_key
from pyrobnn.guides._base import Guide
from pyrobnn.guides._curvature import (
    CURVATURES,
    STRUCTURES,
    Block,
    Evidence,
    covariance_root,
    gaussian_prior,
    likelihood_curvature,
    newton_step,
)
from pyrobnn.guides._init import Init, initial_values
from pyrobnn.guides._lowrank_precision import LowRankPrecision, SqrtCovariance
from pyrobnn.guides._select import laplace_block
from pyrobnn.guides.fullrank import MAX_DIM
from pyrobnn.likelihoods import SCALE_SITE, StudentT
from pyrobnn.model import BayesianModel, LatentLayout

__all__ = ["LaplaceGuide"]

#: Rounds of (Newton step, hyperparameters by evidence) when a hyperparameter is tuned.
MAX_ROUNDS = 6
#: Eigenpairs a ``"lowrank"`` structure keeps unless told.
RANK = 100


class LaplaceGuide(Guide):
    r"""The Laplace approximation q(θ) = N(θ*, P⁻¹): a MAP fit θ*, then the curvature of −log p(y, θ) there.

    A fit has two phases. :func:`pyrobnn.fit` first trains the guide as a point mass (the
    objective is the negative log joint, exactly as for ``"map"``), then calls
    :meth:`fit_posterior` on the whole data, which builds the precision

    .. math:: P = \sum_i J_i^\top Λ_i J_i + τ\,\mathrm{diag}(p_0)

    over the block of sites chosen by ``sites``: Jᵢ is the Jacobian of the network output at
    xᵢ with respect to the block, Λᵢ the curvature of −log p(yᵢ | f) in the output, p₀ the
    lifted priors' precision (−∂² log p(θ) at θ*, 1/s² for a N(μ, s²) prior) and τ a factor
    on it (1 unless tuned). Sites outside the block stay at their MAP values, as last-layer
    Laplace is defined. In a loop of one's own over :meth:`pyrobnn.infer.svi.SVIState.step`, call
    ``state.guide.fit_posterior(model, x, y)`` after the MAP steps; to start from a MAP fit
    one already has, ``make_guide("laplace", model, init=map_fit.guide.median())`` and then
    ``fit_posterior``.

    Parameters
    ----------
    model
        The model.
    sites
        The block: ``"all"`` (every random weight), ``"last_layer"`` or globs. The
        likelihood's own latent sites never belong to it (see ``noise``), and every block
        site must live on the real line.
    curvature
        Λᵢ: ``"fisher"`` (the default), the likelihood's Fisher information about the output
        (:meth:`~pyrobnn.likelihoods.Likelihood.output_fisher`; positive semi-definite, and
        equal to the generalised Gauss-Newton matrix for the Gaussian, Bernoulli, Categorical
        and Poisson likelihoods); ``"ggn"``, the Hessian of −log p(yᵢ | f) at the observed yᵢ
        (it differs for Student t and heteroscedastic likelihoods and may be indefinite there);
        ``"hessian"``, the exact Hessian of −log p(y | θ), the network's own second
        derivatives included (not positive definite away from a strict mode).
    structure
        ``"full"`` (a D×D precision, D ≤ ``max_dim``); ``"lowrank"`` (the data term's ``rank``
        leading eigenpairs, whitened by the prior and found matrix-free, plus the rest of its
        diagonal: O(D · rank) memory, for nets of any size; ``"fisher"`` and ``"ggn"`` only);
        ``"diag"`` (the diagonal only); or ``"auto"`` (the default: ``"full"`` up to
        ``max_dim`` weights, ``"lowrank"`` above).
    prior_precision
        τ: ``"prior"`` (τ = 1, the lifted priors as they are), ``"tune"`` (τ maximising the
        Laplace log evidence: type-II maximum likelihood; Normal priors only), or a number.
        A tuned or given τ changes the model: the reference of :func:`pyrobnn.mcmc` samples
        the lifted priors, not these.
    noise
        A learned noise scale (``Gaussian(scale="learn")``): ``"evidence"`` (the default)
        sets it by type-II maximum likelihood, as a hyperparameter of the Laplace evidence;
        ``"map"`` keeps its MAP value. Either way it is a point in q, not part of the Gaussian.
    predictive
        What :meth:`pyrobnn.Posterior.predict`, the export's log-likelihood, LOO and k̂ use:
        ``"linear"`` (the default), the linearised network f(x, θ*) + J(x)(θ − θ*), or
        ``"sample"``, the network itself at each draw of θ. Sampling the network at Laplace
        draws underfits, because the Gaussian spreads along directions that the
        linearisation, which built it, deems flat and the network does not (Immer, Korzepa
        and Bauer 2021); the linearised predictive is the one that belongs to the Gaussian.
    init
        Where the MAP phase starts, as for every guide.
    max_dim
        The largest block a ``"full"`` structure is built for.
    rank
        How many eigenpairs ``"lowrank"`` keeps (at most D; at D it is ``"full"``). What they
        miss keeps only the data term's diagonal, as ``"diag"`` does everywhere.

    Attributes
    ----------
    log_evidence
        The Laplace estimate of log p(y) at the fitted hyperparameters (NaN before
        :meth:`fit_posterior`): log p(y | θ*) + log p(θ*) + D/2 log 2π − ½ log det P over the
        block, the sites outside it held as hyperparameters.
    prior_factor
        τ, as fitted or given.
    effective_parameters
        γ = D − τ Σⱼ p₀ⱼ (P⁻¹)ⱼⱼ, how many of the block's D directions the data determine
        rather than the prior (MacKay 1992); at the type-II optimum in τ, γ = τ θ*ᵀ diag(p₀) θ*
        for zero-mean Normal priors. NaN before :meth:`fit_posterior`.
    """

    #: The MAP phase fits a point mass: one particle is all it needs.
    num_particles = 1

    def __init__(
        self,
        model: BayesianModel,
        *,
        sites: str | Sequence[str] = "all",
        curvature: str = "fisher",
        structure: str = "auto",
        prior_precision: str | float = "prior",
        noise: str = "evidence",
        predictive: str = "linear",
        init: Init = "pretrained",
        max_dim: int = MAX_DIM,
        rank: int = RANK,
    ) -> None:
        super().__init__(model)
        for name, value, allowed in (
            ("curvature", curvature, CURVATURES),
            ("structure", structure, (*STRUCTURES, "auto")),
            ("noise", noise, ("evidence", "map")),
            ("predictive", predictive, ("linear", "sample")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        number = isinstance(prior_precision, (int, float)) and not isinstance(prior_precision, bool)
        if not (prior_precision in ("prior", "tune") or (number and float(prior_precision) > 0)):
            raise ValueError(f"prior_precision must be 'prior', 'tune' or a positive number, got {prior_precision!r}")
        names = laplace_block(model, sites)
        self.layout = LatentLayout({name: self._sites[name] for name in names})
        dim = self.layout.dim
        if structure == "auto":
            structure = "full" if dim <= max_dim else "lowrank"
        if structure == "full" and dim > max_dim:
            mib = 8 * dim / 2**20  # D float64 numbers, in MiB
            raise ValueError(
                f"a full Laplace precision over D = {dim} numbers needs a {dim}×{dim} matrix ({mib * dim:,.0f} MiB "
                f"in float64) and O(D³) work (limit max_dim={max_dim}). Forms that fit: structure='lowrank' "
                f"({mib * (min(rank, dim) + 2):,.1f} MiB), structure='diag' ({mib:,.2f} MiB) or sites='last_layer'; "
                "or pass max_dim= if you have the memory."
            )
        if structure == "lowrank" and (curvature == "hessian" or not rank >= 1):
            raise ValueError(
                "structure='lowrank' takes curvature='fisher' or 'ggn' (products with Jᵀ Λ J, never a "
                f"Hessian) and a rank >= 1; got curvature={curvature!r}, rank={rank!r}"
            )
        self.curvature, self.structure, self.noise, self.predictive = curvature, structure, noise, predictive
        self.prior_precision = prior_precision
        self.max_dim = max_dim
        self.rank = min(rank, dim)
        values = initial_values(model, init)
        self.value = nn.ParameterDict()
        for name, site in self._sites.items():
            unconstrained = self._transforms[name].inv(values[name])
            self.value[module_key(name)] = nn.Parameter(unconstrained.detach().clone().reshape(site.shape))
        like = next(iter(values.values()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool, device=like.device))
        factor_shape = (dim, dim) if structure == "full" else (dim,)
        self.register_buffer("factor", torch.zeros(factor_shape, dtype=like.dtype, device=like.device))
        if structure == "lowrank":  # the covariance's root diag(factor) (I + basis diag(shrink) basisᵀ)
            self.register_buffer("basis", torch.zeros(dim, self.rank, dtype=like.dtype, device=like.device))
            self.register_buffer("shrink", torch.zeros(self.rank, dtype=like.dtype, device=like.device))
        self.register_buffer("log_evidence", torch.full((), math.nan, dtype=torch.float64, device=like.device))
        self.register_buffer("prior_factor", torch.ones((), dtype=torch.float64, device=like.device))
        self.register_buffer("effective_parameters", torch.full_like(self.log_evidence, math.nan))
        self.fitted: torch.Tensor
        self.factor: torch.Tensor  # the covariance's Cholesky factor ("full"), else sds ("diag": the marginals)
        self.log_evidence: torch.Tensor
        self.prior_factor: torch.Tensor
        self.effective_parameters: torch.Tensor
        self.basis: torch.Tensor  # "lowrank" only, as is shrink
        self.shrink: torch.Tensor

    # ------------------------------------------------------------ state
    @property
    def point_mass(self) -> bool:  # type: ignore[override]
        """A point mass (the MAP) until :meth:`fit_posterior` has run."""
        return not bool(self.fitted)

    @property
    def linearized(self) -> bool:
        """Whether predictions take the linearised network (see ``predictive``)."""
        return bool(self.fitted) and self.predictive == "linear"

    def _point(self, name: str) -> torch.Tensor:
        return self._transforms[name](self.value[module_key(name)])  # type: ignore[no-any-return]

    def block_distribution(self) -> dist.TorchDistribution:
        """N(θ*, P⁻¹) over the block's vector, in ``layout`` order."""
        if not bool(self.fitted):
            raise RuntimeError("the Laplace approximation has no curvature yet: fit it (pb.fit, or fit_posterior)")
        loc = self.layout.join({name: self._point(name) for name in self.layout.names})
        if self.structure == "full":
            return dist.MultivariateNormal(loc, scale_tril=self.factor)
        if self.structure == "lowrank":
            root = SqrtCovariance(loc, self.factor, self.basis, self.shrink)
            return dist.TransformedDistribution(dist.Normal(torch.zeros_like(loc), 1.0).to_event(1), [root])
        return dist.Normal(loc, self.factor).to_event(1)

    def covariance(self) -> torch.Tensor:
        """The D×D covariance P⁻¹ of the block, in ``layout`` order."""
        if self.structure == "full":
            return self.factor @ self.factor.T
        if self.structure == "lowrank":
            inner = self.basis @ torch.diag(2 * self.shrink + self.shrink.pow(2)) @ self.basis.T
            return self.factor[:, None] * (inner + torch.eye(len(self.factor)).to(inner)) * self.factor[None, :]
        return torch.diag(self.factor.pow(2))

    def marginal_sd(self) -> torch.Tensor:
        """The block's marginal posterior sds, in ``layout`` order, without forming the covariance."""
        if self.structure == "full":
            return self.factor.pow(2).sum(-1).sqrt()
        if self.structure == "lowrank":  # diag of (I + Q d Qᵀ)² = 1 + Σⱼ Qᵢⱼ² (2dⱼ + dⱼ²)
            return self.factor * (1 + self.basis.pow(2) @ (2 * self.shrink + self.shrink.pow(2))).sqrt()
        return self.factor

    # ------------------------------------------------------- interface
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        values = {name: self._point(name) for name in self._sites}
        if bool(self.fitted):
            latent = pyro.sample("_LaplaceGuide_latent", self.block_distribution(), infer={"is_auxiliary": True})
            values.update(self.layout.split(latent))
        return {
            name: pyro.sample(name, dist.Delta(value, event_dim=len(self._sites[name].shape)))
            for name, value in values.items()
        }

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        draws = {name: self._point(name).expand((num_samples, *s.shape)).clone() for name, s in self._sites.items()}
        if bool(self.fitted):
            draws.update(self.layout.split(self.block_distribution().sample((num_samples,))))
        return draws

    def median(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {name: self._point(name).clone() for name in self._sites}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Exact Gaussian marginal quantiles in the block; the MAP value elsewhere."""
        with torch.no_grad():
            point = self.median()
            q = torch.as_tensor(qs, dtype=self.factor.dtype, device=self.factor.device).reshape(-1)
            out = {name: value.expand((len(q), *value.shape)).clone() for name, value in point.items()}
            if bool(self.fitted):
                sd = self.marginal_sd()
                loc = self.layout.join({name: point[name] for name in self.layout.names})
                out.update(self.layout.split(torch.distributions.Normal(loc, sd).icdf(q[:, None])))
            return out

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """log N(θ_block; θ*, P⁻¹), plus the point masses' 0 or −inf at the sites outside the block."""
        num = next(iter(draws.values())).shape[0]
        total = torch.zeros(num, dtype=self.factor.dtype, device=self.factor.device)
        block = set(self.layout.names) if bool(self.fitted) else set()
        for name, site in self._sites.items():
            if name not in block:
                total = total + dist.Delta(self._point(name), event_dim=len(site.shape)).log_prob(draws[name])
        if block:
            total = total + self.block_distribution().log_prob(self.layout.join({n: draws[n] for n in block}))
        return total

    def linearized_outputs(self, model: BayesianModel, draws: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The linearised network's output f(x, θ*) + J(x)(θ − θ*) at each draw: ``(S, N, *o)``."""
        point = self.median()
        block = Block(model, self.layout, point)
        deltas = self.layout.join({name: draws[name] for name in self.layout.names}) - block.vector()
        return block.linearized(deltas, x)

    def spec(self) -> dict[str, Any]:
        """``{"kind": "laplace", ...}`` with the block's sites by name and the options that shape the fit."""
        options = {"sites": list(self.layout.names), "max_dim": max(self.layout.dim, 1), "rank": self.rank}
        for name in ("curvature", "structure", "prior_precision", "noise", "predictive"):
            options[name] = getattr(self, name)
        return self._spec(LaplaceGuide, "laplace", options)

    def summary(self) -> dict[str, Any]:
        """What the fit chose, as plain data: curvature, structure, block size, τ, the noise scale, log Z, γ."""
        scale = self.median()[SCALE_SITE] if SCALE_SITE in self._sites else None
        return {
            "curvature": self.curvature,
            "structure": self.structure,
            "block_dim": self.layout.dim,
            "rank": self.rank if self.structure == "lowrank" else None,
            "prior_precision": self.prior_precision,
            "prior_factor": float(self.prior_factor),
            "noise": self.noise,
            "noise_scale": None if scale is None else float(scale),
            "predictive": self.predictive,
            "log_evidence": float(self.log_evidence),
            "effective_parameters": float(self.effective_parameters),
        }

    # ------------------------------------------------- the second phase
    def fit_posterior(self, model: BayesianModel, x: torch.Tensor, y: torch.Tensor) -> LaplaceGuide:
        """Build the Gaussian around the current point, on the whole data ``(x, y)``; returns the guide.

        ``y`` as the likelihood observes it (checked and shaped as :func:`pyrobnn.fit` does).
        One Newton step from the point (with the posterior precision, accepted only where it
        raises the log joint) first polishes the MAP; with a hyperparameter to tune, the steps
        and the type-II maximum-likelihood updates alternate until they settle.
        """
        tune_scale = self.noise == "evidence" and SCALE_SITE in self._sites
        if tune_scale and isinstance(model.likelihood, StudentT) and self.curvature != "fisher":
            raise ValueError(
                "noise='evidence' with a Student t likelihood needs curvature='fisher' (its curvature in "
                "the output then scales as 1/σ²); or keep the MAP noise scale with noise='map'"
            )
        tune_tau = self.prior_precision == "tune"
        tau = 1.0 if isinstance(self.prior_precision, str) else float(self.prior_precision)
        with torch.no_grad():
            block = Block(model, self.layout, self.median())
        if (tune_tau or tau != 1.0) and gaussian_prior(block) is None:
            raise ValueError(
                "prior_precision other than 'prior' scales a Normal prior's precision, but a site of the Laplace "
                "block has another prior; use prior_precision='prior'"
            )

        def evidence_at(block: Block) -> Evidence:
            return Evidence(block, x, y, likelihood_curvature(block, x, y, self.curvature, self.structure, self.rank))

        rounds = MAX_ROUNDS if (tune_scale or tune_tau) else 1
        for _ in range(rounds):
            evidence = evidence_at(block)
            moved = newton_step(block, evidence, x, y, tau)
            if moved is not None:
                block = moved
                evidence = evidence_at(block)
            scale, new_tau = evidence.maximise(tune_scale, tune_tau, tau)
            settled = abs(new_tau - tau) <= 1e-6 * tau and abs(scale - evidence.scale0) <= 1e-6 * evidence.scale0
            tau = new_tau
            if tune_scale:
                block.point[SCALE_SITE] = torch.tensor(scale, dtype=block.point[SCALE_SITE].dtype, device=x.device)
                block = Block(model, self.layout, block.point)
            if settled and moved is None:
                break
        ratio = (evidence.scale0 / scale) ** 2 if tune_scale else 1.0
        log_z = float(evidence(torch.tensor(scale), torch.tensor(tau)))
        self._set(block, evidence.precision(ratio, tau), tau, log_z)
        variance = self.marginal_sd().double().pow(2)  # γ = D − tr(τ diag(p₀) P⁻¹)
        self.effective_parameters.fill_(self.layout.dim - tau * float((evidence.precision0 * variance).sum()))
        return self

    def _set(self, block: Block, precision: torch.Tensor | LowRankPrecision, tau: float, log_z: float) -> None:
        factor, basis, shrink = covariance_root(precision, self.curvature)
        with torch.no_grad():
            for name, value in block.point.items():
                self.value[module_key(name)].copy_(self._transforms[name].inv(value))
            self.factor.copy_(factor.to(self.factor.dtype))
            if basis is not None and shrink is not None:  # "lowrank"
                self.basis.copy_(basis.to(self.basis.dtype))
                self.shrink.copy_(shrink.to(self.shrink.dtype))
            self.prior_factor.fill_(tau)
            self.log_evidence.fill_(log_z)
            self.fitted.fill_(True)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, block_dim={self.layout.dim}, curvature={self.curvature!r}, "
            f"structure={self.structure!r}, fitted={bool(self.fitted)}"
        )
