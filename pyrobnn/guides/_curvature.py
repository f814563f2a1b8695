"""The curvature of a model's log joint in a block of its weights, and the Laplace evidence.

Everything here runs on the lifted network's functional twin (``BayesianModel.evaluate``) under
``torch.func``: the network output as a function of the block's vector θ, every other site held at
a point (:class:`Block`); its Jacobian per chunk of observations, whence the generalised Gauss-Newton
and Fisher matrices (full, diagonal or low-rank); its Jacobian-vector products (the linearised
predictive); the exact Hessian; the Laplace log evidence (:class:`Evidence`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping

import pyro
import torch
from torch.func import hessian, jacfwd, jacrev, jvp, vmap

from pyrobnn.guides._lowrank_precision import LowRankCurvature, LowRankPrecision, top_eigenpairs
from pyrobnn.model import BayesianModel, LatentLayout

__all__ = [
    "CURVATURES",
    "STRUCTURES",
    "Block",
    "Evidence",
    "covariance_root",
    "data_chunks",
    "gauss_newton_factors",
    "gaussian_prior",
    "likelihood_curvature",
    "newton_step",
]

#: How the curvature of the log-likelihood is measured (see :class:`pyrobnn.guides.LaplaceGuide`).
CURVATURES = ("fisher", "ggn", "hessian")
#: How much of the posterior precision is kept: all of it, its diagonal, or the prior's diagonal
#: plus the leading eigenpairs of the data term (:mod:`pyrobnn.guides._lowrank_precision`).
STRUCTURES = ("full", "diag", "lowrank")
#: Observations per Jacobian: the chunk's Jacobian holds POINTS · outputs · D numbers.
POINTS_PER_CHUNK = 256


@functools.cache
def forward_mode_ready() -> None:
    """Load torch's forward-mode decompositions once, quietly.

    torch builds them with ``torch.jit.script`` on the first forward-mode derivative, which
    issues a DeprecationWarning from inside torch (2.13) that no user of pyrobnn can act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401


class Block:
    """The Laplace block: sites laid out by ``layout``, every other latent site held at ``point``.

    ``point`` holds every latent site's value (constrained, each of its site's shape).
    """

    def __init__(self, model: BayesianModel, layout: LatentLayout, point: Mapping[str, torch.Tensor]) -> None:
        self.model = model
        self.layout = layout
        self.point = dict(point)
        self.latents = {name: self.point[name] for name in model.likelihood.latent_priors()}
        latent = model.latent_sites()
        self.sites = [latent[name] for name in layout.names]

    def vector(self) -> torch.Tensor:
        """θ*, the block's vector at the point."""
        return self.layout.join({name: self.point[name] for name in self.layout.names})

    def output(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network output ``(N, *o)`` at the block's vector ``theta`` (D,) and the point elsewhere."""
        draws = {name: value.unsqueeze(0) for name, value in self.point.items()}
        draws.update(self.layout.split(theta.unsqueeze(0)))
        return self.model.evaluate(draws, x)[0][0]

    def log_likelihood(
        self, output: torch.Tensor, y: torch.Tensor, latents: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Σᵢ log p(yᵢ | outputᵢ), at the point's latents (a learned scale) unless given others."""
        latents = self.latents if latents is None else latents
        fn = self.model.likelihood.distribution(output, latents, output.shape[1:])
        return fn.log_prob(y).sum()

    def linearized(self, deltas: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """f(x, θ*) + J(x) δ for each row δ of ``deltas`` (S, D): ``(S, N, *o)``, by Jacobian-vector products."""
        forward_mode_ready()
        theta = self.vector()
        base = self.output(theta, x)
        tangents = vmap(lambda v: jvp(lambda t: self.output(t, x), (theta,), (v,))[1])(deltas)
        return base + tangents


def likelihood_curvature(
    block: Block, x: torch.Tensor, y: torch.Tensor, curvature: str, structure: str, rank: int = 0
) -> torch.Tensor | LowRankCurvature:
    """The curvature of −Σᵢ log p(yᵢ | θ) at θ*: ``(D, D)`` for ``"full"``, its diagonal ``(D,)`` for
    ``"diag"``, its ``rank`` leading eigenpairs in the prior's whitened coordinates and the rest of
    its diagonal for ``"lowrank"``.

    ``"fisher"``: Σᵢ Jᵢᵀ Fᵢ Jᵢ with Fᵢ the likelihood's Fisher information about the output
    (:meth:`~pyrobnn.likelihoods.Likelihood.output_fisher`); ``"ggn"``: the same with the Hessian of
    −log p(yᵢ | f) at the observed yᵢ; ``"hessian"``: the exact Hessian, second derivatives of the
    network included (``"full"`` and ``"diag"`` only).
    """
    forward_mode_ready()
    theta = block.vector()
    if structure == "lowrank":
        return _low_rank(block, theta, x, y, curvature, rank)
    dim = len(theta)
    # summed in float64: a float32 sum of many Jᵢᵀ Λᵢ Jᵢ loses the small eigenvalues to rounding
    total = theta.new_zeros((dim, dim) if structure == "full" else (dim,), dtype=torch.float64)
    for xs, ys in data_chunks(x, y):
        if curvature == "hessian":
            part = hessian(lambda t: -block.log_likelihood(block.output(t, xs), ys))(theta)  # noqa: B023
            total += (part if structure == "full" else part.diagonal()).double()
        else:
            jac, info = gauss_newton_factors(block, theta, xs, ys, curvature)
            equation = "nad,nab,nbe->de" if structure == "full" else "nad,nab,nbd->d"
            total += torch.einsum(equation, jac, info, jac)
    return total.detach()


def data_chunks(x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The data ``POINTS_PER_CHUNK`` observations at a time, each used with autograd on and Pyro's checks off."""
    for lo in range(0, len(x), POINTS_PER_CHUNK):
        with torch.enable_grad(), pyro.validation_enabled(False):
            yield x[lo : lo + POINTS_PER_CHUNK], y[lo : lo + POINTS_PER_CHUNK]


def _low_rank(
    block: Block, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, curvature: str, rank: int
) -> LowRankCurvature:
    """The leading eigenpairs of C⁻¹ G C⁻¹ (C² the prior precision), from products with G = Σᵢ Jᵢᵀ Λᵢ Jᵢ
    only, and what they leave of G's diagonal."""
    root = prior_precision(block).double().sqrt()
    if not bool((root > 0).all()):
        raise ValueError(
            "structure='lowrank' whitens by the prior's precision, which is 0 at some weight of the block (a "
            "Laplace or uniform prior does this): give those weights a Normal prior, or use structure='diag'"
        )
    diagonal: list[torch.Tensor] = []  # diag(G), summed on the first pass

    def matmat(vectors: torch.Tensor) -> torch.Tensor:
        total, diag = torch.zeros_like(vectors), torch.zeros_like(root)
        whitened = vectors / root[:, None]
        for xs, ys in data_chunks(x, y):
            jac, info = gauss_newton_factors(block, theta, xs, ys, curvature)
            total += torch.einsum("nad,nab,nbk->dk", jac, info, torch.einsum("nbe,ek->nbk", jac, whitened))
            if not diagonal:
                diag += torch.einsum("nad,nab,nbd->d", jac, info, jac)
        if not diagonal:
            diagonal.append(diag)
        return total.detach() / root[:, None]

    basis, values = top_eigenpairs(matmat, len(theta), min(rank, len(theta)), root)
    kept = root.pow(2) * (basis.pow(2) @ values)
    return LowRankCurvature(root, basis, values, (diagonal[0] - kept).clamp(min=0))


def gauss_newton_factors(
    block: Block, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, curvature: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Jᵢ, Λᵢ) for one chunk of observations, in float64: ``(n, O, D)`` and ``(n, O, O)``."""
    output = block.output(theta, x)
    n, shape = len(x), output.shape[1:]
    flat = output.reshape(n, -1)
    jacobian = jacfwd if len(theta) <= flat.shape[1] * n else jacrev
    jac = jacobian(lambda t: block.output(t, x).reshape(n, -1))(theta)  # (n, O, D)
    if curvature == "fisher":
        info = block.model.likelihood.output_fisher(output.detach(), block.latents, shape)
    else:
        full = hessian(lambda f: -block.log_likelihood(f.reshape(n, *shape), y))(flat.detach())
        index = torch.arange(n, device=x.device)
        info = full[index, :, index, :]  # the blocks of one observation each: (n, O, O)
    return jac.detach().double(), info.detach().double()


def gaussian_prior(block: Block) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(μ, 1/σ²) over the block's vector when every block site's prior is a Normal on the real line; else None."""
    parts = [site.normal_prior() for site in block.sites]
    if any(part is None for part in parts):
        return None
    locs, precisions = zip(*parts, strict=True)  # type: ignore[misc]  # no None left
    return torch.cat(locs), torch.cat(precisions)


def prior_log_density(block: Block, theta: torch.Tensor) -> torch.Tensor:
    """log p(θ) of the block's sites, at their lifted priors."""
    total = theta.new_zeros(())
    for site, value in zip(block.sites, block.layout.split(theta).values(), strict=True):
        total = total + site.prior.distribution(site.shape).log_prob(value).sum()
    return total


def prior_precision(block: Block) -> torch.Tensor:
    """The diagonal of −∇² log p(θ) at θ* (the priors are independent across numbers, so it is all of it)."""
    with torch.enable_grad():
        theta = block.vector().detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(prior_log_density(block, theta), theta, create_graph=True)
        (second,) = torch.autograd.grad(grad.sum(), theta)
    return -second.detach()


class Evidence:
    r"""The Laplace log evidence as a function of the noise scale σ and the prior precision's factor τ.

    .. math:: \log Z = \log p(y \mid θ^*, σ) + \log p_τ(θ^*) + \tfrac{D}{2}\log 2π
              - \tfrac12 \log\det\big(G_σ + τ\,\mathrm{diag}(p_0)\big)

    with G_σ the curvature of the log-likelihood (computed at the point's σ₀; for the
    Gaussian likelihood every curvature scales as 1/σ², so G_σ = G (σ₀/σ)²), p₀ the lifted
    priors' precision and p_τ the prior with its precision times τ (Normal priors only;
    τ = 1 is the lifted prior itself, whatever its family).
    """

    def __init__(
        self, block: Block, x: torch.Tensor, y: torch.Tensor, curvature: torch.Tensor | LowRankCurvature
    ) -> None:
        self.block = block
        self.y = y
        self.curvature = curvature if isinstance(curvature, LowRankCurvature) else curvature.double()
        self.theta = block.vector().detach()
        self.dim = len(self.theta)
        with torch.no_grad():
            self.output = block.output(self.theta, x)
        self.scale_site = next(iter(block.latents), None)
        self.scale0 = float(block.latents[self.scale_site]) if self.scale_site is not None else 1.0
        self.precision0 = prior_precision(block).double()
        self.gaussian = gaussian_prior(block)
        self.log_prior1 = float(prior_log_density(block, self.theta))
        self.eigenvalues: torch.Tensor | None = None
        if isinstance(curvature, LowRankCurvature):
            pass  # its log det has a form of its own
        elif bool((self.precision0 > 0).all()):  # whiten by the prior once: det is then a product
            root, dense = self.precision0.rsqrt(), curvature.double()
            if dense.dim() == 2:
                whitened = root[:, None] * dense * root[None, :]
                self.eigenvalues = torch.linalg.eigvalsh(0.5 * (whitened + whitened.T))
            else:
                self.eigenvalues = dense * root.pow(2)

    def log_det(self, ratio: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """log det(G · ratio + τ diag(p₀)), ratio = (σ₀/σ)²."""
        if self.eigenvalues is not None:
            return self.precision0.log().sum() + torch.log(self.eigenvalues * ratio + tau).sum()
        if isinstance(self.curvature, LowRankCurvature):
            return self.curvature.log_det(ratio, tau, self.precision0)
        precision = self.precision(ratio, tau)
        assert isinstance(precision, torch.Tensor)
        return torch.logdet(precision) if precision.dim() == 2 else precision.log().sum()

    def precision(self, ratio: torch.Tensor | float, tau: torch.Tensor | float) -> torch.Tensor | LowRankPrecision:
        """The posterior precision G (σ₀/σ)² + τ diag(p₀) (full, its diagonal, or low-rank), in float64."""
        if isinstance(self.curvature, LowRankCurvature):
            return self.curvature.precision(ratio, tau, self.precision0)
        if self.curvature.dim() == 2:
            return self.curvature * ratio + torch.diag(self.precision0 * tau)
        return self.curvature * ratio + self.precision0 * tau

    def __call__(self, scale: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """log Z at σ = ``scale`` (ignored without a learned scale) and τ = ``tau``, differentiable in both."""
        latents = self.block.latents
        ratio = torch.ones((), dtype=torch.float64)
        if self.scale_site is not None:
            latents = {self.scale_site: scale.to(self.output.dtype)}
            ratio = (self.scale0 / scale.double()) ** 2
        log_lik = self.block.log_likelihood(self.output, self.y, latents).double()
        if self.gaussian is None:
            log_prior = torch.tensor(self.log_prior1, dtype=torch.float64)
        else:
            loc, precision = (t.double() for t in self.gaussian)
            squares = (precision * (self.theta.double() - loc).pow(2)).sum()
            log_prior = 0.5 * (torch.log(precision * tau).sum() - self.dim * math.log(2 * math.pi) - tau * squares)
        return log_lik + log_prior + 0.5 * self.dim * math.log(2 * math.pi) - 0.5 * self.log_det(ratio, tau)

    def maximise(self, tune_scale: bool, tune_tau: bool, tau: float) -> tuple[float, float]:
        """(σ, τ) maximising log Z over those asked for (type-II maximum likelihood), the rest held."""
        log_scale = torch.tensor(math.log(self.scale0), dtype=torch.float64, requires_grad=tune_scale)
        log_tau = torch.tensor(math.log(tau), dtype=torch.float64, requires_grad=tune_tau)
        params = [p for p in (log_scale, log_tau) if p.requires_grad]
        if params:
            start = [p.detach().clone() for p in params]
            with torch.enable_grad():
                if not _lbfgs(lambda: -self(log_scale.exp(), log_tau.exp()), params):
                    # torch's strong-Wolfe search fails on a non-finite trial point (far out in
                    # σ or τ); a plain first-order ascent from the start, keeping the best, does not
                    with torch.no_grad():
                        for p, s in zip(params, start, strict=True):
                            p.copy_(s)
                    _adam(lambda: -self(log_scale.exp(), log_tau.exp()), params)
        return float(log_scale.detach().exp()), float(log_tau.detach().exp())


def newton_step(block: Block, evidence: Evidence, x: torch.Tensor, y: torch.Tensor, tau: float) -> Block | None:
    """The block moved by one Newton step on log p(y, θ) (prior precision × τ), if that raises it; else None."""
    theta = block.vector().detach()

    def log_joint(t: torch.Tensor) -> torch.Tensor:
        log_prior = prior_log_density(block, t)
        if tau != 1.0:  # a Normal prior with its precision times τ, up to a constant
            loc, precision = gaussian_prior(block)  # type: ignore[misc]  # checked by the caller
            log_prior = -0.5 * tau * (precision * (t - loc).pow(2)).sum()
        return block.log_likelihood(block.output(t, x), y) + log_prior

    with torch.enable_grad():
        t = theta.clone().requires_grad_(True)
        before = log_joint(t)
        (grad,) = torch.autograd.grad(before, t)
    precision = evidence.precision(1.0, tau)
    g = grad.double()
    if isinstance(precision, LowRankPrecision):  # positive definite by construction
        step = precision.solve(g)
    elif precision.dim() == 2:
        chol, info = torch.linalg.cholesky_ex(0.5 * (precision + precision.T))
        if int(info) != 0:
            return None
        step = torch.cholesky_solve(g[:, None], chol)[:, 0]
    else:
        step = g / precision
    candidate = theta + step.to(theta.dtype)
    with torch.no_grad():
        after = log_joint(candidate)
    if not bool(torch.isfinite(after)) or not float(after) > float(before.detach()):
        return None
    point = dict(block.point)
    point.update(block.layout.split(candidate))
    return Block(block.model, block.layout, point)


def covariance_root(
    precision: torch.Tensor | LowRankPrecision, curvature: str
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A root of P⁻¹ as :class:`~pyrobnn.guides.LaplaceGuide` stores it: (factor, basis, shrink).

    Full P: (the covariance's Cholesky factor, None, None). Diagonal P: (the sds, None, None).
    Low-rank P: (s, Q, d) of :meth:`LowRankPrecision.sqrt_covariance`. A precision that is not
    positive definite raises a ValueError that names the cause and the fix.
    """
    not_definite = f"the posterior precision at the MAP is not positive definite (curvature={curvature!r})"
    if isinstance(precision, LowRankPrecision):  # positive definite by construction
        s, d = precision.sqrt_covariance()
        return s, precision.basis, d
    if precision.dim() == 1:
        if not bool((precision > 0).all()):
            raise ValueError(f"{not_definite}: its diagonal has entries <= 0; use curvature='fisher'")
        return precision.rsqrt(), None, None
    chol, info = torch.linalg.cholesky_ex(0.5 * (precision + precision.T))
    if int(info) != 0:
        why = (
            "its curvature spans more orders of magnitude than the float precision holds (a noise scale near "
            "zero does this): fit the model in float64 (model.double()) or use structure='diag'"
            if curvature == "fisher"
            else "the point is no strict mode of the log joint; use curvature='fisher', positive "
            "semi-definite by construction, or fit the MAP longer"
        )
        raise ValueError(f"{not_definite}: {why}")
    covariance = torch.cholesky_inverse(chol)
    return torch.linalg.cholesky(0.5 * (covariance + covariance.T)), None, None


def _lbfgs(loss: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> bool:
    """Minimise ``loss`` over ``params`` with L-BFGS and a strong-Wolfe search; False if it failed."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    try:
        opt.step(closure)
    except (IndexError, RuntimeError):
        return False
    with torch.no_grad():
        return bool(torch.isfinite(loss())) and all(bool(torch.isfinite(p).all()) for p in params)


def _adam(loss: Callable[[], torch.Tensor], params: list[torch.Tensor], steps: int = 2000) -> None:
    """Minimise ``loss`` with Adam, leaving ``params`` at the best finite value seen."""
    opt = torch.optim.Adam(params, lr=0.05)
    best, best_value = [p.detach().clone() for p in params], math.inf
    for _ in range(steps):
        opt.zero_grad()
        value = loss()
        if not bool(torch.isfinite(value)):
            break
        if float(value) < best_value:
            best, best_value = [p.detach().clone() for p in params], float(value)
        value.backward()
        opt.step()
    with torch.no_grad():
        for p, b in zip(params, best, strict=True):
            p.copy_(b)
