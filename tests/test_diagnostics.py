"""PSIS k̂ (Yao et al. 2018) on the conjugate regression, where the posterior is known exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrobnn as pb
from pyrobnn.evaluate.diagnostics import PoorFitWarning, psis_khat, psis_log_weights


def correlated_regression(noise: float = 0.1, n: int = 40, sigma: float = 0.5, seed: int = 0):
    """y = X w + N(0, σ²), w ~ N(0, I), two nearly collinear inputs: posterior N(m, Λ⁻¹), corr ≈ −0.98."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    x = torch.cat([z + noise * torch.randn(n, 1, generator=g), z + noise * torch.randn(n, 1, generator=g)], dim=1)
    y = x @ torch.tensor([1.0, -0.5]) + sigma * torch.randn(n, generator=g)
    precision = torch.eye(2, dtype=torch.float64) + x.double().T @ x.double() / sigma**2
    cov = torch.linalg.inv(precision)
    return x, y, sigma, cov @ x.double().T @ y.double() / sigma**2, precision, cov


def linear_model(sigma: float) -> pb.BayesianModel:
    net = nn.Linear(2, 1, bias=False)
    return pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian(scale=sigma))


class FullRankGuide(pb.guides.Guide):
    """A full-covariance Normal over the one weight site of the linear model (test-local).

    Stands in for the ``"fullrank"`` guide while that is being built; the test
    below also runs the library's own when ``make_guide`` offers it.
    """

    def __init__(self, model: pb.BayesianModel, init_scale: float = 0.1) -> None:
        super().__init__(model)
        ((self.name, site),) = self._sites.items()
        self.shape = site.shape
        dim = site.shape.numel()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_tril = nn.Parameter(torch.eye(dim) * init_scale)

    def _q(self) -> dist.MultivariateNormal:
        tril = torch.tril(self.raw_tril, -1) + torch.diag(self.raw_tril.diagonal().abs() + 1e-6)
        return dist.MultivariateNormal(self.loc, scale_tril=tril)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        q = dist.TransformedDistribution(self._q(), [dist.transforms.ReshapeTransform((self.loc.numel(),), self.shape)])
        return {self.name: pyro.sample(self.name, q)}

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        return {self.name: self._q().sample((num_samples,)).reshape((num_samples, *self.shape))}

    def median(self) -> dict[str, torch.Tensor]:
        return {self.name: self.loc.detach().reshape(self.shape)}

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        value = draws[self.name]
        return self._q().log_prob(value.reshape(value.shape[0], -1))


def test_khat_is_good_for_a_full_rank_guide_at_the_exact_posterior() -> None:
    x, y, sigma, m, _precision, cov = correlated_regression()
    model = linear_model(sigma)
    guide = FullRankGuide(model)
    with torch.no_grad():
        guide.loc.copy_(m.float())
        guide.raw_tril.copy_(torch.linalg.cholesky(cov).float())
    khat = psis_khat(pb.Posterior(model, guide), x, y, num_samples=2000, seed=0)
    # q = p(θ | y) up to float32 rounding, so the log weights are constant up to ~1e-4 and
    # their tail is short; observed k̂ ≈ −0.02 to −0.14 (seeds 0-4 on a fitted q). Issue 4: < 0.5.
    assert khat < 0.5


@pytest.mark.slow
def test_khat_of_a_fitted_library_full_rank_guide() -> None:
    if "fullrank" not in pb.guides.GUIDE_KINDS:
        pytest.skip("the library's 'fullrank' guide is not there yet; the test above uses a test-local one")
    x, y, sigma, *_ = correlated_regression()
    model = linear_model(sigma)
    result = pb.fit(model, "fullrank", (x, y), num_steps=1000, lr=0.05, progress=False)
    assert psis_khat(result.posterior(), x, y, num_samples=2000, seed=0) < 0.5


@pytest.mark.slow
def test_khat_is_poor_for_mean_field_on_a_correlated_posterior() -> None:
    x, y, sigma, _m, precision, cov = correlated_regression()
    model = linear_model(sigma)
    # Mean-field's reverse-KL optimum has sd 1/sqrt(Λᵢᵢ), here 5.7x narrower than the marginals.
    assert (cov.diag().sqrt() * precision.diag().sqrt()).min() > 5
    mf = pb.fit(model, "meanfield", (x, y), num_steps=1000, lr=0.05, init_scale=0.1, progress=False)
    # Along the long axis q's sd is ~0.18x the posterior's, so the ratios' tail has
    # k = 1 − 0.18² ≈ 0.97 (Notes of psis_khat). The estimate from a finite tail is biased low
    # and scatters: 0.85 here (draw seed 0); 0.72-0.85 over draw seeds 0-3 and fit seeds 0-2.
    pattern = r"PSIS k̂ = \d\.\d\d > 0.7 for all latent sites: the guide MeanFieldGuide is a poor approximation"
    with pytest.warns(PoorFitWarning, match=pattern):
        khat = psis_khat(mf.posterior(), x, y, num_samples=2000, seed=0)
    assert khat > 0.7


def test_khat_flags_a_guide_with_too_narrow_a_fixed_scale() -> None:
    x, y, sigma, m, _precision, cov = correlated_regression()
    model = linear_model(sigma)
    guide = pb.guides.make_guide("meanfield", model, init_scale=0.1)
    post_sd = cov.diag().sqrt().float()
    with torch.no_grad():  # q centred on the exact posterior mean, but 10x too narrow
        guide.loc["weight"].copy_(m.float().reshape(1, 2))
        guide.raw_scale["weight"].copy_(torch.log(torch.expm1(0.1 * post_sd)).reshape(1, 2))
    with pytest.warns(PoorFitWarning):
        khat = psis_khat(pb.Posterior(model, guide), x, y, num_samples=1000)
    # The tail has k = 1 − 0.1² = 0.99 along each axis; from 1000 draws the estimator (whose
    # weak prior pulls k̂ towards 0.5 for short tails) gave 0.885 at seed 0. Require > 0.7.
    assert khat > 0.7


def test_log_weights_match_a_closed_form_computation() -> None:
    x, y, sigma, _m, _precision, _cov = correlated_regression()
    model = linear_model(sigma)
    guide = pb.guides.make_guide("meanfield", model, init_scale=0.2)
    post = pb.Posterior(model, guide)
    log_w = psis_log_weights(post, x, y, num_samples=50, seed=3)
    w = guide.sample(50, seed=3)["weight"].reshape(50, 2)  # the same draws: same seed, same stream
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)
    lik = torch.distributions.Normal(w @ x.T, sigma).log_prob(y).sum(-1)
    with torch.no_grad():
        q = guide.site_distribution("weight").log_prob(w.reshape(50, 1, 2))
    # float32 sums over 40 points: agreement to 1e-4 relative.
    np.testing.assert_allclose(log_w, (prior + lik - q).double().numpy(), rtol=1e-4, atol=1e-3)


def test_block_khat_and_errors() -> None:
    torch.manual_seed(0)
    x = torch.randn(40, 2)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 * torch.randn(40)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))
    result = pb.fit(model, "meanfield", (x, y), num_steps=300, lr=0.02, progress=False)
    khat = psis_khat(result.posterior(), x, y, num_samples=500, sites="likelihood.scale", warn=False)
    # One positive scalar against its conditional posterior: a mean-field log-normal fits that well.
    assert np.isfinite(khat) and khat < 0.7
    with pytest.raises(ValueError, match=r"sites pattern 'nope' matches no parameter"):
        psis_khat(result.posterior(), x, y, sites="nope")
    with pytest.raises(ValueError, match=r"MAP guide is a point mass with no density"):
        psis_khat(pb.fit(model, "map", (x, y), num_steps=2, progress=False).posterior(), x, y)
    with pytest.raises(ValueError, match=r"num_samples must be an integer >= 10"):
        psis_khat(result.posterior(), x, y, num_samples=5)
    with pytest.raises(ValueError, match=r"_Opaque does not provide \(it has no site_distribution\(\)\)"):
        psis_khat(pb.Posterior(model, _Opaque(model, result.guide)), x, y, sites="2.*", num_samples=20)


class _Opaque(pb.guides.Guide):
    """A guide that gives the joint density only (as a full-rank guide does), no per-site marginals."""

    def __init__(self, model: pb.BayesianModel, inner: pb.guides.Guide) -> None:
        super().__init__(model)
        self.inner = inner

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        return self.inner._sample(num_samples)

    def median(self) -> dict[str, torch.Tensor]:
        return self.inner.median()

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner.log_prob(draws)
