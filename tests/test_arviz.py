"""to_arviz with arviz 0.2x: groups, dims, chains, netCDF, and ArviZ's own summaries and plots on it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math

import numpy as np
import pytest
import torch
from torch import nn

import pyrobnn as pb
from pyrobnn.export import to_arviz

az = pytest.importorskip("arviz")
if not az.__version__.startswith("0."):
    pytest.skip(
        "the arviz 1.x adapter is tested by tests/test_arviz_core.py (make test-arviz1)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def fits() -> tuple[list[pb.FitResult], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, generator=g)
    y = torch.tanh(x @ torch.tensor([1.0, -0.5])) + 0.2 * torch.randn(30, generator=g)
    results = []
    for seed in range(2):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1))
        model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))
        results.append(pb.fit(model, "meanfield", (x, y), num_steps=150, lr=0.02, seed=seed, progress=False))
    return results, x, y


def test_groups_dims_and_log_densities(fits) -> None:  # type: ignore[no-untyped-def]
    (result, _), x, y = fits
    idata = to_arviz(result, x, y, num_samples=100, seed=0)
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood", "sample_stats",
                                   "observed_data", "constant_data", "elbo_history"}  # fmt: skip
    post = idata.posterior
    assert post["0.weight"].dims == ("chain", "draw", "0.weight_out", "0.weight_in")
    assert post["0.weight"].shape == (1, 100, 6, 2) and post["likelihood.scale"].dims == ("chain", "draw")
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "obs_id")
    assert idata.observed_data["obs"].shape == (30,) and idata.constant_data["x"].shape == (30, 2)
    assert len(idata.elbo_history.step) == 150
    np.testing.assert_allclose(idata.elbo_history["elbo"].values[0], result.history.elbo)

    # log_p = log prior + Σ log-likelihood; log_q the guide's density at the exported draws.
    p = result.posterior()
    draws = {k: torch.as_tensor(v.values[0]) for k, v in post.data_vars.items()}
    log_q = result.guide.log_prob(draws).detach().numpy()
    np.testing.assert_allclose(idata.sample_stats["log_q"].values[0], log_q, rtol=1e-5)  # float32 rounding
    log_p = (p.log_prior(draws) + torch.as_tensor(idata.log_likelihood["obs"].values[0]).sum(-1)).numpy()
    np.testing.assert_allclose(idata.sample_stats["log_p"].values[0], log_p, rtol=1e-5)
    # The pointwise log-likelihood's log-mean-exp is the predictive density pb already reports.
    lpd = p.predict_draws(draws, x).log_prob(y).numpy()
    ll = idata.log_likelihood["obs"].values[0]
    # float32: numpy's sequential logaddexp and torch's logsumexp round differently, by a few
    # ulps of the O(1) terms, which an rtol alone cannot absorb where the density nears zero.
    np.testing.assert_allclose(np.logaddexp.reduce(ll, axis=0) - math.log(100), lpd, rtol=1e-5, atol=2e-6)


# A 30-point fit of a 25-weight net: a few points are influential, and ArviZ says so (its
# Pareto-k warning); here the plumbing is under test, not this model's LOO.
@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_arviz_functions_run_on_the_export(fits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    results, x, y = fits
    idata = to_arviz(results, x, y, num_samples=200, seed=0)
    assert idata.posterior.sizes["chain"] == 2
    summary = az.summary(idata, var_names=["likelihood.scale", "2.bias"])
    assert list(summary.index) == ["likelihood.scale", "2.bias[0]"] and (summary["ess_bulk"] > 0).all()
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == 30
    az.plot_ppc(idata, num_pp_samples=20)
    az.plot_posterior(idata, var_names=["likelihood.scale"])
    plt.close("all")

    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        for name, value in idata[group].data_vars.items():
            np.testing.assert_array_equal(back[group][name].values, value.values)


def test_unstable_predictions_show_in_rhat() -> None:
    """Two fits that disagree on a prediction give R̂ far above 1 on it; two draws of one fit do not."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 1, generator=g)
    y = x[:, 0] + 0.1 * torch.randn(20, generator=g)
    model = pb.BayesianModel(pb.lift(nn.Linear(1, 1)), pb.likelihoods.Gaussian(0.1))
    good = pb.fit(model, "meanfield", (x, y), num_steps=300, lr=0.05, progress=False)
    stuck = pb.guides.make_guide("meanfield", model)  # never fitted: the initial net
    same = to_arviz([good, good], x, y, num_samples=200, seed=0)
    mixed = to_arviz([good.posterior(), pb.Posterior(model, stuck)], x[:3], num_samples=200, seed=0)
    r_same = float(az.rhat(same.posterior_predictive)["obs"].max())
    r_mixed = float(az.rhat(mixed.posterior_predictive)["obs"].max())
    # Same fit: R̂ within Monte Carlo noise of 1 (< 1.05 for 2 x 200 independent draws).
    assert r_same < 1.05
    # A fitted and an unfitted net predict differently: R̂ ≫ 1.01 (the usual alarm).
    assert r_mixed > 1.5


def test_var_names_and_errors(fits) -> None:  # type: ignore[no-untyped-def]
    (result, other), _x, y = fits
    idata = to_arviz(result.posterior(), num_samples=20, seed=0, sites="2.*", dims={"2.weight": ["a", "b"]})
    assert list(idata.posterior.data_vars) == ["2.weight", "2.bias"]
    assert idata.posterior["2.weight"].dims == ("chain", "draw", "a", "b")
    assert set(idata.groups()) == {"posterior", "sample_stats"}
    with pytest.raises(ValueError, match=r"sites pattern '3\.\*' matches no parameter"):
        to_arviz(result, sites="3.*", num_samples=5)
    with pytest.raises(ValueError, match=r"mix of FitResults and Posteriors"):
        to_arviz([result, other.posterior()], num_samples=5)
    with pytest.raises(TypeError, match=r"got str at position 1"):
        to_arviz([result, "b"], num_samples=5)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"y was given without x"):
        to_arviz(result, y=y, num_samples=5)
    small = pb.BayesianModel(pb.lift(nn.Linear(2, 1)), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"chain 1 comes from a different model"):
        to_arviz([result.posterior(), pb.Posterior(small, pb.guides.make_guide("meanfield", small))], num_samples=5)


def test_var_names_is_the_deprecated_name_of_sites(fits) -> None:  # type: ignore[no-untyped-def]
    (result, _other), _x, _y = fits
    with pytest.warns(DeprecationWarning, match=r"var_names= is deprecated; use sites=.*since 0\.2\.0"):
        old = to_arviz(result.posterior(), num_samples=5, seed=0, var_names="2.*")
    new = to_arviz(result.posterior(), num_samples=5, seed=0, sites="2.*")
    assert list(old.posterior.data_vars) == list(new.posterior.data_vars) == ["2.weight", "2.bias"]
    np.testing.assert_array_equal(old.posterior["2.weight"].values, new.posterior["2.weight"].values)
    with pytest.raises(TypeError, match=r"both sites= and var_names="):
        to_arviz(result.posterior(), num_samples=5, sites="2.*", var_names="2.*")


def test_default_sites_of_a_large_net() -> None:
    from pyrobnn.export._collect import default_sites

    net = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 2))  # 120,902 weights > 1e5
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))
    assert default_sites(model) == ["2.weight", "2.bias", "likelihood.scale"]
