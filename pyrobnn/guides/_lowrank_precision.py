r"""A posterior precision kept as a diagonal plus the top of its data term's spectrum, matrix-free.

For a network too large for a D×D matrix, :class:`pyrobnn.guides.LaplaceGuide` with
``structure="lowrank"`` keeps, of the likelihood's curvature G, its k leading eigenpairs in the
prior's whitened coordinates and the rest of its diagonal,

.. math:: G ≈ C Q Λ Q^\top C + \mathrm{diag}(r), \qquad C = \mathrm{diag}(p_0)^{1/2},
          \qquad r = \mathrm{diag}(G) - \mathrm{diag}(C Q Λ Q^\top C),

with Q (D×k) orthonormal: the directions in which the data have taught the most relative to
the prior, and a diagonal that is G's own (:class:`LowRankCurvature`). The eigenpairs come from
randomized subspace iteration (Halko, Martinsson and Tropp 2011, algorithm 4.4) on products
G V that never form G (:func:`top_eigenpairs`). The posterior precision
τ diag(p₀) + ratio · G is again a diagonal plus rank k (:class:`LowRankPrecision`): its log
determinant, solves, draws and densities cost O(D k²) at most (:class:`SqrtCovariance`).

Without the diagonal every direction the eigenpairs miss would keep the prior's spread, however
much the data say about it (``benchmarks/README.md``, "Low-rank Laplace", measures both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import constraints
from torch.distributions.transforms import Transform

__all__ = ["LowRankCurvature", "LowRankPrecision", "SqrtCovariance", "top_eigenpairs"]

#: Extra random directions beyond the rank, and rounds of subspace iteration: Halko et al.'s
#: defaults for spectra that decay, as a network's curvature does.
OVERSAMPLE = 10
POWER_ROUNDS = 2


@dataclass(frozen=True)
class LowRankPrecision:
    """The matrix diag(c) (I + Q diag(λ) Qᵀ) diag(c), c > 0, λ ≥ 0: D×D, held in O(D k) numbers.

    Positive definite by construction, which :meth:`LowRankCurvature.precision` guarantees.
    """

    scale: torch.Tensor  # c, (D,)
    basis: torch.Tensor  # Q, (D, k), orthonormal columns
    eigenvalues: torch.Tensor  # λ, (k,), λ ≥ 0

    def dense(self) -> torch.Tensor:
        """The D×D matrix (for checks on small D)."""
        inner = self.basis @ torch.diag(self.eigenvalues) @ self.basis.T
        inner = inner + torch.eye(len(self.scale), dtype=inner.dtype, device=inner.device)
        return self.scale[:, None] * inner * self.scale[None, :]

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        """P⁻¹ g, by the Woodbury identity on the whitened matrix."""
        a = g / self.scale
        coeffs = (1 / (1 + self.eigenvalues) - 1) * (self.basis.T @ a)
        return (a + self.basis @ coeffs) / self.scale

    def log_det(self) -> torch.Tensor:
        """log det P = 2 Σ log c + Σ log(1 + λ)."""
        return 2 * self.scale.log().sum() + torch.log1p(self.eigenvalues).sum()

    def sqrt_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, d) with P⁻¹ = S Sᵀ, S = diag(s) (I + Q diag(d) Qᵀ): s = 1/c, d = (1 + λ)^(−½) − 1."""
        return 1 / self.scale, torch.rsqrt(1 + self.eigenvalues) - 1


@dataclass(frozen=True)
class LowRankCurvature:
    """A curvature G ≈ C Q diag(λ) Qᵀ C + diag(r): its leading eigenpairs (whitened by C), and the
    rest of its diagonal, r = diag(G) − diag(C Q diag(λ) Qᵀ C), so that the diagonal is G's own.

    Negative eigenvalues and diagonal remainders (a ``"ggn"`` curvature that is indefinite, as a
    Student t likelihood's can be) count as 0: the precision stays positive definite.
    """

    scale: torch.Tensor  # C's diagonal, (D,)
    basis: torch.Tensor  # Q, (D, k)
    eigenvalues: torch.Tensor  # λ, (k,)
    residual: torch.Tensor  # r, (D,)

    def _parts(
        self, ratio: float | torch.Tensor, tau: float | torch.Tensor, prior: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(d, V) with P = diag(d) + V Vᵀ: d = τ p₀ + ratio · r and V = √ratio · C Q diag(√λ)."""
        d = tau * prior + ratio * self.residual
        v = (self.scale[:, None] * self.basis) * (ratio * self.eigenvalues.clamp(min=0)).sqrt()
        return d, v

    def log_det(self, ratio: float | torch.Tensor, tau: float | torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """log det P = Σ log d + log det(I + Vᵀ diag(1/d) V): O(D k²), differentiable in ratio and τ."""
        d, v = self._parts(ratio, tau, prior)
        inner = v.T @ (v / d[:, None])
        eye = torch.eye(len(inner), dtype=inner.dtype, device=inner.device)
        return d.log().sum() + torch.logdet(eye + inner)

    def precision(
        self, ratio: float | torch.Tensor, tau: float | torch.Tensor, prior: torch.Tensor
    ) -> LowRankPrecision:
        """P = diag(√d) (I + U diag(σ²) Uᵀ) diag(√d), from the thin SVD U diag(σ) Wᵀ of diag(1/√d) V."""
        d, v = self._parts(ratio, tau, prior)
        u, sigma, _ = torch.linalg.svd(v / d.sqrt()[:, None], full_matrices=False)
        return LowRankPrecision(d.sqrt(), u, sigma.pow(2))


class SqrtCovariance(Transform):
    """z ↦ μ + S z with S = diag(s) (I + Q diag(d) Qᵀ), d > −1: N(0, I) becomes N(μ, S Sᵀ).

    S⁻¹ = (I + Q diag(1/(1 + d) − 1) Qᵀ) diag(1/s), so both directions and
    log|det S| = Σ log s + Σ log(1 + d) cost O(D k).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, s: torch.Tensor, basis: torch.Tensor, d: torch.Tensor) -> None:
        super().__init__()
        self.loc, self.s, self.basis, self.d = loc, s, basis, d

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return self.loc + self.s * (z + ((z @ self.basis) * self.d) @ self.basis.T)

    def _inverse(self, theta: torch.Tensor) -> torch.Tensor:
        a = (theta - self.loc) / self.s
        return a + ((a @ self.basis) * (1 / (1 + self.d) - 1)) @ self.basis.T

    def log_abs_det_jacobian(self, z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        total = self.s.log().sum() + torch.log1p(self.d).sum()
        return total.expand(z.shape[:-1])


def top_eigenpairs(
    matmat: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    rank: int,
    like: torch.Tensor,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, λ): the ``rank`` leading eigenpairs of a symmetric positive semi-definite D×D matrix A,
    known only through ``matmat(V) = A V`` for V of shape (D, m), λ in decreasing order.

    Randomized subspace iteration with :data:`OVERSAMPLE` extra directions and
    :data:`POWER_ROUNDS` rounds, then Rayleigh-Ritz: ``POWER_ROUNDS + 2`` calls of ``matmat``.
    Exact (to rounding) when rank + OVERSAMPLE ≥ D. The start is drawn from its own generator,
    seeded by ``seed``, so the result does not depend on, or disturb, the global random state.
    """
    width = min(dim, rank + OVERSAMPLE)
    generator = torch.Generator(device=like.device).manual_seed(seed)
    start = torch.randn(dim, width, generator=generator, dtype=like.dtype, device=like.device)
    basis = torch.linalg.qr(matmat(start)).Q
    for _ in range(POWER_ROUNDS):
        basis = torch.linalg.qr(matmat(basis)).Q
    projected = basis.T @ matmat(basis)
    values, vectors = torch.linalg.eigh(0.5 * (projected + projected.T))
    order = values.argsort(descending=True)[:rank]
    return basis @ vectors[:, order], values[order]
