"""Likelihood options: which priors a learned noise scale accepts, and that every guide fits them."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import pyrobnn as pb

X = torch.randn(40, 2)
Y = X.sum(-1) + 0.3 * torch.randn(40)

# Priors on [0, inf) (HalfNormal, HalfCauchy, Gamma) and on (0, inf) (LogNormal): all are priors for a scale.
SCALE_PRIORS = {
    "pb.priors.HalfNormal": lambda: pb.priors.HalfNormal(1.0),
    "dist.HalfNormal": lambda: dist.HalfNormal(1.0),
    "dist.HalfCauchy": lambda: dist.HalfCauchy(1.0),
    "dist.LogNormal": lambda: dist.LogNormal(0.0, 1.0),
    "dist.Gamma": lambda: dist.Gamma(2.0, 2.0),
}
LIKELIHOODS = {
    "Gaussian": lambda prior: pb.likelihoods.Gaussian(scale=prior),
    "StudentT": lambda prior: pb.likelihoods.StudentT(df=4, scale=prior),
}


def small_model(likelihood: pb.likelihoods.Likelihood) -> pb.BayesianModel:
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return pb.BayesianModel(pb.lift(net), likelihood)


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize("prior", list(SCALE_PRIORS))
def test_scale_prior_on_the_positive_half_line_fits(prior: str, likelihood: str) -> None:
    model = small_model(LIKELIHOODS[likelihood](SCALE_PRIORS[prior]()))
    assert list(model.likelihood.latent_priors()) == [pb.likelihoods.SCALE_SITE]
    result = pb.fit(model, "meanfield", (X, Y), num_steps=50, progress=False)
    assert torch.isfinite(torch.as_tensor(result.history.loss)).all()
    draws = result.guide.sample(200)[pb.likelihoods.SCALE_SITE]
    assert draws.shape == (200,) and torch.all(draws > 0)


@pytest.mark.parametrize("guide", ["map", "fullrank", "lowrank"])
def test_scale_prior_on_zero_to_inf_with_other_guides(guide: str) -> None:
    model = small_model(pb.likelihoods.Gaussian(scale=dist.HalfCauchy(1.0)))
    result = pb.fit(model, guide, (X, Y), num_steps=50, progress=False)
    assert torch.isfinite(torch.as_tensor(result.history.loss)).all()
    assert torch.all(result.guide.sample(50)[pb.likelihoods.SCALE_SITE] > 0)


@pytest.mark.parametrize(
    ("prior", "support"),
    [
        (pb.priors.Normal(0.0, 1.0), r"Real\(\)"),
        (dist.Uniform(0.0, 10.0), r"Interval\(lower_bound=0\.0, upper_bound=10\.0\)"),
        (dist.Poisson(3.0), r"IntegerGreaterThan\(lower_bound=0\)"),
    ],
)
def test_scale_prior_off_the_positive_reals_is_refused(prior: object, support: str) -> None:
    with pytest.raises(
        ValueError,
        match=rf"the scale prior must be over the positive reals, \(0, inf\) or \[0, inf\), but .* has support "
        rf"{support}\. Use a prior for a positive quantity, such as pb\.priors\.HalfNormal\(1\.0\)",
    ):
        pb.likelihoods.StudentT(df=4, scale=prior)  # type: ignore[arg-type]
