"""compare: one row per guide, ranked by test log-likelihood, matching a direct computation."""

from __future__ import annotations

import math

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
