"""compare: one row per guide, ranked by test log-likelihood, matching a direct computation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pyrobnn as pb
from pyrobnn.evaluate.compare import compare


def test_compare_ranks_guides_and_its_test_log_likelihood_is_direct() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 * torch.randn(60, generator=g)
    x_test, y_test = x[40:], y[40:]
    model = pb.BayesianModel(pb.lift(nn.Linear(2, 1, bias=False)), pb.likelihoods.Gaussian(0.3))
    good = pb.fit(model, "meanfield", (x[:40], y[:40]), num_steps=300, lr=0.05, progress=False)
    bad = pb.Posterior(model, pb.guides.make_guide("meanfield", model, init="prior"))  # an unfitted guide
    table = compare({"unfitted": bad, "fitted": good}, x_test, y_test, train=(x[:40], y[:40]), num_samples=200)
    assert list(table.index) == ["fitted", "unfitted"]  # sorted by test log-likelihood
    assert {"final_elbo", "rmse", "coverage", "khat", "fit_seconds", "num_variational_params", "elpd_loo"} <= set(table)
    assert table.loc["fitted", "num_variational_params"] == 4  # loc and scale of 2 weights
    assert math.isnan(table.loc["unfitted", "final_elbo"]) and math.isfinite(table.loc["fitted", "final_elbo"])
    assert table.loc["fitted", "loo_rank"] == 0

    # Direct: the same draws (same seed), p(y | x, w) = N(x·w, 0.3²), log-mean-exp over draws.
    w = good.guide.sample(200, seed=0)["weight"].reshape(200, 2)
    log_p = torch.distributions.Normal(w @ x_test.T, 0.3).log_prob(y_test)
    direct = float((torch.logsumexp(log_p, 0) - math.log(200)).mean())
    assert table.loc["fitted", "test_log_likelihood"] == pytest.approx(direct, abs=1e-5)  # float32 rounding


def test_compare_classification_has_accuracy_and_ece() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 2, generator=g)
    y = (x[:, 0] > 0).long()
    model = pb.BayesianModel(pb.lift(nn.Linear(2, 2)), pb.likelihoods.Categorical())
    result = pb.fit(model, "meanfield", (x, y), num_steps=200, lr=0.05, progress=False)
    table = compare({"mf": result}, x, y, num_samples=100)
    row = table.loc["mf"]
    assert row["accuracy"] > 0.9 and 0.0 <= row["ece"] < 0.3 and math.isnan(row["khat"])
    with pytest.raises(TypeError, match=r"compare\['x'\] must be a pb.FitResult or pb.Posterior, got int"):
        compare({"x": 3}, x, y)  # type: ignore[dict-item]
    assert np.isfinite(row["fit_seconds"])


def _linear_fits() -> tuple[dict[str, pb.FitResult], tuple[torch.Tensor, ...]]:
    """Mean-field and MAP fits of a 2-weight linear regression, with 40 training and 200 test points."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(240, 2, generator=g)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 * torch.randn(240, generator=g)
    model = pb.BayesianModel(pb.lift(nn.Linear(2, 1, bias=False)), pb.likelihoods.Gaussian(0.3))
    data = (x[:40], y[:40])
    fits = {kind: pb.fit(model, kind, data, num_steps=300, lr=0.05, progress=False) for kind in ("meanfield", "map")}
    return fits, (x[:40], y[:40], x[40:], y[40:])


def test_a_point_mass_gets_no_loo_and_is_never_ranked() -> None:
    # PSIS-LOO over copies of one θ̂ is the in-sample fit (p_loo 0): it would win LOO by construction.
    fits, (x, y, x_test, y_test) = _linear_fits()
    assert fits["map"].guide.point_mass and not fits["meanfield"].guide.point_mass
    table = compare({"mf": fits["meanfield"], "map": fits["map"]}, x_test, y_test, train=(x, y), num_samples=200)
    loo = [
        "elpd_loo",
        "elpd_loo_se",
        "elpd_loo_per_point",
        "elpd_loo_per_point_se",
        "p_loo",
        "loo_bad_khat",
        "loo_rank",
        "loo_weight",
    ]
    assert all(math.isnan(table.loc["map", column]) for column in loo)
    assert math.isnan(table.loc["map", "khat"]) and math.isnan(table.loc["map", "final_elbo"])
    assert all(math.isfinite(table.loc["mf", column]) for column in loo)
    assert table.loc["mf", "loo_rank"] == 0 and table.loc["mf", "loo_weight"] == 1.0  # alone among the ranked
    assert math.isfinite(table.loc["map", "test_log_likelihood"])  # held-out metrics still apply to it
    assert "az_compare" not in table.attrs  # one posterior with spread: nothing for az.compare to rank


def test_loo_columns_are_arviz_in_original_units_with_se_and_bad_khat_share() -> None:
    import arviz as az

    fits, (x, y, x_test, y_test) = _linear_fits()
    posts = {"mf": fits["meanfield"], "mf2": fits["meanfield"].posterior()}
    unit = compare(posts, x_test, y_test, train=(x, y), num_samples=200)
    scaled = compare(posts, x_test, y_test, train=(x, y), num_samples=200, y_scale=2.0)
    loo = unit.attrs["loo"]["mf"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ's Pareto-k warning; the share is checked below
        direct = az.loo(pb.to_arviz(fits["meanfield"], x, y, num_samples=200, seed=0))
    assert loo.elpd_loo == pytest.approx(direct.elpd_loo)
    row = unit.loc["mf"]
    assert row["elpd_loo"] == pytest.approx(float(loo.elpd_loo))  # y_scale 1: the standardised scale itself
    assert row["elpd_loo_se"] == pytest.approx(float(loo.se)) and row["p_loo"] == pytest.approx(float(loo.p_loo))
    assert row["elpd_loo_per_point"] == pytest.approx(row["elpd_loo"] / 40)
    assert row["elpd_loo_per_point_se"] == pytest.approx(row["elpd_loo_se"] / 40)
    good_k = min(1 - 1 / math.log10(200), 0.7)  # ArviZ's threshold for 200 draws: 0.565
    assert row["loo_bad_khat"] == pytest.approx(float(np.mean(np.asarray(direct.pareto_k) > good_k)))
    # y = 2 z: the Jacobian moves every point's log density by −log 2, the se not at all
    assert scaled.loc["mf", "elpd_loo"] == pytest.approx(row["elpd_loo"] - 40 * math.log(2.0), rel=1e-6)
    assert scaled.loc["mf", "elpd_loo_se"] == pytest.approx(row["elpd_loo_se"])
    assert scaled.loc["mf", "test_log_likelihood"] == pytest.approx(row["test_log_likelihood"] - math.log(2.0))
    assert set(unit.attrs["az_compare"].index) == {"mf", "mf2"}


def test_metric_standard_errors_over_test_points() -> None:
    fits, (_, _, x_test, y_test) = _linear_fits()
    table = compare({"mf": fits["meanfield"]}, x_test, y_test, num_samples=200, y_scale=3.0)
    row, n = table.loc["mf"], len(y_test)
    per_point = table.attrs["test_log_likelihood_pointwise"]["mf"]
    assert per_point.shape == (n,) and per_point.mean() == pytest.approx(row["test_log_likelihood"], abs=1e-6)
    assert row["test_log_likelihood_se"] == pytest.approx(per_point.std(ddof=1) / math.sqrt(n))
    c = row["coverage"]
    assert row["coverage_se"] == pytest.approx(math.sqrt(c * (1 - c) / n))  # binomial
    # the delta-method se of the RMSE against a bootstrap over test points (200 points, 2000
    # resamples: the two agree to a few percent; 20% leaves room for the bootstrap's own noise)
    mean = fits["meanfield"].posterior().predict(x_test, num_samples=200, seed=0).mean.double()
    sq = (3.0 * (mean - y_test.double())).pow(2).numpy()
    assert float(np.sqrt(sq.mean())) == pytest.approx(row["rmse"], rel=1e-5)
    boot = np.random.default_rng(0).integers(0, n, size=(2000, n))
    assert row["rmse_se"] == pytest.approx(np.sqrt(sq[boot].mean(1)).std(), rel=0.2)


def test_accuracy_has_a_binomial_standard_error() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 2, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(80, generator=g) > 0).long()
    model = pb.BayesianModel(pb.lift(nn.Linear(2, 2)), pb.likelihoods.Categorical())
    result = pb.fit(model, "meanfield", (x, y), num_steps=200, lr=0.05, progress=False)
    row = compare({"mf": result}, x, y, num_samples=100).loc["mf"]
    a = row["accuracy"]
    assert 0 < a < 1 and row["accuracy_se"] == pytest.approx(math.sqrt(a * (1 - a) / 80))
    assert row["test_log_likelihood_se"] > 0
