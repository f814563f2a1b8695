"""The low-rank Laplace structure: its algebra exact, and the full structure recovered at full rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_laplace import block_mean, conjugate, linear_model
from torch import nn

import pyrobnn as pb
from pyrobnn.guides import LaplaceGuide
from pyrobnn.guides._lowrank_precision import LowRankCurvature, top_eigenpairs


def tanh_fit(structure: str, **options: object) -> pb.FitResult:
    """Laplace on a 1-8-1 tanh net (D = 25) in float64, from one and the same MAP fit."""
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-2, 2, 40, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(2 * x).squeeze(-1) + 0.1 * torch.randn(40, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(0.1)).double()
    fit = {"num_steps": 1500, "lr": 0.03, "progress": False, "check": False}
    result = pb.fit(model, "laplace", (x, y), structure=structure, **fit, **options)
    assert isinstance(result.guide, LaplaceGuide)
    return result


def test_subspace_iteration_finds_the_leading_eigenpairs() -> None:
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64)).Q
    values = 2.0 ** -torch.arange(60, dtype=torch.float64)
    matrix = basis @ torch.diag(values) @ basis.T
    found, found_values = top_eigenpairs(lambda v: matrix @ v, 60, 5, matrix)
    # The error of subspace iteration shrinks as (λ_(k+p+1) / λ_k)^(2q+1) = (2^-10)^5 ≈ 1e-15
    # (Halko et al. 2011, section 9.2): float64 rounding is the limit, and 1e-10 is far above it.
    torch.testing.assert_close(found_values, values[:5], rtol=1e-10, atol=0.0)
    alignment = (found.T @ basis[:, :5]).abs()
    torch.testing.assert_close(alignment, torch.eye(5, dtype=torch.float64), rtol=0.0, atol=1e-10)


def test_lowrank_at_full_rank_is_exact_on_the_conjugate_linear_model() -> None:
    x, y, _, mean, cov, log_evidence = conjugate()
    guide = pb.fit(linear_model(), "laplace", (x, y), num_steps=50, progress=False, structure="lowrank").guide
    assert guide.structure == "lowrank" and guide.rank == 4
    # rank + oversampling ≥ D: the subspace is all of R^D and every step is exact up to float64
    # rounding, as for structure="full" (see test_laplace.py for the tolerance)
    torch.testing.assert_close(block_mean(guide), mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(guide.covariance(), cov, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(guide.marginal_sd(), cov.diagonal().sqrt(), rtol=1e-9, atol=1e-12)
    assert float(guide.log_evidence) == pytest.approx(log_evidence, rel=1e-9)
    assert guide.summary()["effective_parameters"] == pytest.approx(4 - float(cov.trace()), rel=1e-9)


def test_the_low_rank_plus_diagonal_algebra_is_exact() -> None:
    g = torch.Generator().manual_seed(2)
    dim, rank = 30, 4
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g, dtype=torch.float64)).Q
    curvature = LowRankCurvature(
        scale=torch.rand(dim, generator=g, dtype=torch.float64) + 0.5,
        basis=basis,
        eigenvalues=torch.tensor([50.0, 9.0, 2.0, 0.1], dtype=torch.float64),
        residual=torch.rand(dim, generator=g, dtype=torch.float64),
    )
    prior = curvature.scale.pow(2)
    ratio, tau = 1.7, 0.6
    dense = torch.diag(tau * prior + ratio * curvature.residual) + ratio * (
        curvature.scale[:, None] * basis @ torch.diag(curvature.eigenvalues) @ basis.T * curvature.scale[None, :]
    )
    # pure linear algebra in float64 on a well-conditioned 30×30 matrix: rounding only
    assert float(curvature.log_det(ratio, tau, prior)) == pytest.approx(float(torch.logdet(dense)), rel=1e-12)
    precision = curvature.precision(ratio, tau, prior)
    torch.testing.assert_close(precision.dense(), dense, rtol=1e-10, atol=1e-10)
    g_vec = torch.randn(dim, generator=g, dtype=torch.float64)
    torch.testing.assert_close(precision.solve(g_vec), torch.linalg.solve(dense, g_vec), rtol=1e-10, atol=1e-10)
    assert float(precision.log_det()) == pytest.approx(float(torch.logdet(dense)), rel=1e-12)


def test_lowrank_matches_full_at_full_rank_and_nearly_so_once_the_spectrum_is_spent() -> None:
    full = tanh_fit("full").guide
    whole = tanh_fit("lowrank", rank=25).guide
    # the same MAP and the same precision, by two routes: float64 rounding only
    torch.testing.assert_close(block_mean(whole), block_mean(full), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(whole.covariance(), full.covariance(), rtol=1e-7, atol=1e-10)
    assert float(whole.log_evidence) == pytest.approx(float(full.log_evidence), rel=1e-9)
    # The prior is N(0, 1), so P − I is the whitened curvature; its spectrum here falls from 2e4
    # to 6 at the 8th eigenvalue, 0.07 at the 10th and 0.004 after. With 10 eigenpairs the
    # diagonal stands in for a remainder whose log det is ½ Σ log(1 + 0.004 + ...) ≈ 0.003 nats
    # (measured 0.0009): 0.01 nats bounds it
    part = tanh_fit("lowrank", rank=10).guide
    assert abs(float(part.log_evidence) - float(full.log_evidence)) < 0.01
    # and the draws have the density the guide reports: the transform's log-Jacobian is right
    draws = whole.block_distribution().sample((5,))
    dense = torch.distributions.MultivariateNormal(block_mean(full), full.covariance())
    torch.testing.assert_close(whole.block_distribution().log_prob(draws), dense.log_prob(draws), rtol=1e-7, atol=1e-8)


def test_a_block_above_max_dim_gets_the_lowrank_structure_and_predicts_as_full() -> None:
    result = tanh_fit("auto", max_dim=10, rank=10)
    guide = result.guide
    assert guide.structure == "lowrank" and guide.basis.shape == (25, 10)
    assert guide.summary()["rank"] == 10
    # the 10 eigenpairs kept hold all but 0.07 of the whitened curvature (see above): the
    # predictive is the full one's. The two sds come from 4000 independent draws each: the
    # ratio's relative se is about sqrt(2 / (2 · 4000)) ≈ 0.016; 5 se
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).unsqueeze(-1)
    got = result.posterior().predict(x, 4000, seed=0).std
    full = tanh_fit("full").posterior().predict(x, 4000, seed=1).std
    assert float((got / full - 1).abs().max()) < 0.08


def test_lowrank_refuses_the_hessian() -> None:
    with pytest.raises(ValueError, match="structure='lowrank' takes curvature='fisher' or 'ggn'"):
        pb.guides.make_guide("laplace", linear_model(), structure="lowrank", curvature="hessian")


def test_lowrank_survives_save_and_load(tmp_path: Path) -> None:
    x, y, *_ = conjugate()
    result = pb.fit(linear_model(), "laplace", (x, y), num_steps=50, progress=False, structure="lowrank", rank=2)
    post = result.posterior()
    pb.save(tmp_path / "fit.pt", post)
    loaded = pb.load(tmp_path / "fit.pt", linear_model())
    torch.testing.assert_close(loaded.source.covariance(), post.source.covariance())
    torch.testing.assert_close(loaded.predict(x, 50, seed=0).std, post.predict(x, 50, seed=0).std)
