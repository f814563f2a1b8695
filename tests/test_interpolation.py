"""The effective number of parameters (pb.guides.effective_parameters) and the warning it drives: a
point estimate with a learned noise scale that interpolates its data (pyrobnn/infer/_interpolation.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pyrobnn as pb


def linear_model(d: int, prior_scale: float) -> pb.BayesianModel:
    net = pb.lift(torch.nn.Linear(d, 1), pb.priors.Normal(0.0, prior_scale))
    return pb.BayesianModel(net, pb.likelihoods.Gaussian(scale="learn"))


@pytest.mark.parametrize(("n", "d"), [(50, 3), (4, 10)])  # the D × D Gram matrix, and the N × N one
def test_effective_parameters_of_a_linear_gaussian_model_is_mackays_count(n: int, d: int) -> None:
    # y = [x, 1] w + ε with w ~ N(0, s² I): the posterior precision is JᵀJ / σ² + I / s², and
    # γ = Σ λ / (λ + 1) over the eigenvalues λ of s² JᵀJ / σ², whatever the point's weights
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.randn(n, generator=g)
    sigma, prior_scale = 0.25, 0.5  # both exact in float32, where the Fisher factor 1/σ² is formed
    model = linear_model(d, prior_scale)
    point = pb.guides.make_guide("map", model, init="prior").median()
    point["likelihood.scale"] = torch.tensor(sigma)
    design = np.hstack([x.double().numpy(), np.ones((n, 1))])
    lam = np.linalg.eigvalsh(prior_scale**2 * design.T @ design / sigma**2)
    exact = float(np.sum(lam / (lam + 1)))
    gamma = pb.guides.effective_parameters(model, point, x, y[:, None])
    assert gamma is not None
    assert gamma == pytest.approx(exact, rel=1e-9)  # float64 throughout: rounding only
    assert gamma <= min(n, d + 1)


def interpolating_data(n: int = 40, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """40 points in 8 dimensions, y = x₀ + noise 0.3: a 8-30-1 tanh net (301 weights) passes through all."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, x[:, 0] + 0.3 * torch.randn(n, generator=g)


def model_for(x: torch.Tensor, hidden: int, scale: float | str = "learn") -> pb.BayesianModel:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    return pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale=scale))


def interpolation_warnings(fit: object) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()  # type: ignore[operator]
    return [str(w.message) for w in caught if "interpolates the training data" in str(w.message)]


def test_a_map_fit_that_interpolates_its_data_warns_with_the_count_and_the_fixes() -> None:
    x, y = interpolating_data()
    model = model_for(x, 30)
    found = interpolation_warnings(lambda: pb.fit(model, "map", (x, y), num_steps=800, progress=False))
    assert len(found) == 1
    message = found[0]
    assert message.startswith("fitting MAPGuide: the point estimate interpolates the training data")
    # observed during development: γ = 40.00 of 40, σ = 0.0072 where the data's noise is 0.3
    gamma = float(message.split("γ = ")[1].split(" ")[0])
    assert gamma > 0.95 * len(y)
    assert "of the network's 301 for 40 observations" in message
    assert "Fit a guide with a spread" in message and "likelihoods.Gaussian(scale=...)" in message
    # silenced with the other end-of-fit checks, and no check where the noise scale is fixed
    assert not interpolation_warnings(lambda: pb.fit(model, "map", (x, y), num_steps=800, progress=False, check=False))
    fixed = model_for(x, 30, scale=0.3)
    assert not interpolation_warnings(lambda: pb.fit(fixed, "map", (x, y), num_steps=800, progress=False))


def test_fits_that_level_off_or_have_a_spread_are_not_warned() -> None:
    # a 1-10-1 net (31 weights) on 20 points of a sine: D > N, yet its MAP fit levels off at
    # σ ≈ 0.21 with γ ≈ 5.8 (observed during development), far below the threshold of 15
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, generator=g) * 4 - 2
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(20, generator=g)
    assert not interpolation_warnings(lambda: pb.fit(model_for(x, 10), "map", (x, y), num_steps=1500, progress=False))
    # a guide with a spread is never checked: its KL term holds σ
    x, y = interpolating_data()
    assert not interpolation_warnings(
        lambda: pb.fit(model_for(x, 30), "meanfield", (x, y), num_steps=300, progress=False)
    )


def test_a_laplace_fit_is_checked_at_its_map_point() -> None:
    x, y = interpolating_data()
    model = model_for(x, 30)
    found = interpolation_warnings(lambda: pb.fit(model, "laplace", (x, y), num_steps=800, progress=False))
    assert len(found) == 1
    assert found[0].startswith("fitting LaplaceGuide: ") and "re-tunes σ by its evidence" in found[0]


def test_an_ensemble_warns_once_naming_its_interpolating_members_but_not_its_map_starts() -> None:
    x, y = interpolating_data()
    found = interpolation_warnings(
        lambda: pb.ensemble(model_for(x, 30), "map", (x, y), num_members=3, num_steps=800, progress=False)
    )
    assert len(found) == 1
    assert found[0].startswith("fitting ensemble members 0, 1, 2 (map): ") and "member 0's point" in found[0]
    # members with a spread start at MAP fits of their own, which interpolate too: not the members' fault
    assert not interpolation_warnings(
        lambda: pb.ensemble(model_for(x, 30), "meanfield", (x, y), num_members=2, num_steps=300, progress=False)
    )
