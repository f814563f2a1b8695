"""The plots draw what they say, on the Agg backend."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

import pyrobnn as pb
from pyrobnn import plots


@pytest.fixture(autouse=True)
def _close() -> None:
    yield
    plt.close("all")


def test_elbo_predictive_and_prior_posterior() -> None:
    x = torch.linspace(-2, 2, 30).unsqueeze(-1)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(30)
    model = pb.BayesianModel(
        pb.lift(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))), pb.likelihoods.Gaussian(0.1)
    )
    result = pb.fit(model, "meanfield", (x, y), num_steps=100, progress=False)
    axes = plots.plot_elbo(result, smooth=10)
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), result.history.elbo)
    ax = plots.plot_predictive(result.posterior(), x, y, num_samples=100)
    assert len(ax.collections) == 3  # two bands and the data
    axes = plots.plot_prior_posterior(result.posterior(), ["0.weight", "2.bias"], num_samples=100)
    assert [a.get_title() for a in axes] == ["0.weight", "2.bias"] and all(a.lines for a in axes)
    with pytest.raises(ValueError, match=r"plot_predictive draws 1-D inputs, got x of shape \(30, 2\)"):
        plots.plot_predictive(result.posterior(), torch.randn(30, 2))


def test_reliability_diagram() -> None:
    x = torch.randn(60, 2)
    y = (x[:, 0] > 0).long()
    model = pb.BayesianModel(pb.lift(nn.Linear(2, 2)), pb.likelihoods.Categorical())
    result = pb.fit(model, "meanfield", (x, y), num_steps=100, lr=0.05, progress=False)
    ax = plots.plot_reliability(result.posterior(), x, y, num_samples=100)
    assert ax.get_title().startswith("ECE = ") and len(ax.patches) == 10


def test_predicted_vs_observed_and_calibration_curves() -> None:
    x = torch.randn(40, 3)
    y = x.sum(-1) + 0.3 * torch.randn(40)
    model = pb.BayesianModel(pb.lift(nn.Linear(3, 1)), pb.likelihoods.Gaussian(0.3))
    post = pb.fit(model, "meanfield", (x, y), num_steps=150, lr=0.05, progress=False).posterior()
    ax = plots.plot_predicted_vs_observed(post, x, y, num_samples=100)
    assert ax.get_title().endswith("of intervals cover y") and len(ax.containers) == 1  # one errorbar set
    ax = plots.plot_calibration(post, x, y, num_samples=200, label="a")
    plots.plot_calibration(post, x, y, num_samples=200, label="b", levels=[0.5, 0.9], ax=ax)
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["calibrated", "a", "b"]  # the diagonal is drawn once
    nominal, observed = ax.lines[1].get_data()
    np.testing.assert_allclose(nominal, np.arange(1, 20) / 20)
    # nested central intervals of the same draws: observed coverage cannot fall as the level rises
    assert np.all(np.diff(observed) >= 0) and 0 <= observed[0] and observed[-1] <= 1
    classifier = pb.BayesianModel(pb.lift(nn.Linear(3, 2)), pb.likelihoods.Categorical())
    cls_post = pb.Posterior(classifier, pb.guides.make_guide("meanfield", classifier))
    with pytest.raises(ValueError, match=r"plot_calibration draws real-valued .* use pb.plots.plot_reliability"):
        plots.plot_calibration(cls_post, x, (y > 0).long())


def test_decision_surface_shows_entropy_away_from_the_data() -> None:
    x = torch.randn(60, 2)
    y = (x[:, 0] > 0).long()
    model = pb.BayesianModel(pb.lift(nn.Linear(2, 2)), pb.likelihoods.Categorical())
    post = pb.fit(model, "meanfield", (x, y), num_steps=100, lr=0.05, progress=False).posterior()
    ax = plots.plot_decision_surface(post, x, y, grid_size=20, num_samples=50)
    assert len(ax.collections) >= 3 and [t.get_text() for t in ax.get_legend().get_texts()] == ["class 0", "class 1"]
    with pytest.raises(ValueError, match=r"plot_decision_surface draws 2-D inputs, got x of shape \(60, 3\)"):
        plots.plot_decision_surface(post, torch.randn(60, 3))
