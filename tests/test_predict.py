"""Posterior draws and predictions: shapes, decompositions, chunking, and what they must show."""

from __future__ import annotations

import math

import pytest
import torch

import pyrobnn as pb
import pyrobnn.posterior as posterior_module


def mlp(d_in: int, d_out: int, hidden: int = 32, depth: int = 1) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = d_in
    for _ in range(depth):
        layers += [torch.nn.Linear(width, hidden), torch.nn.Tanh()]
        width = hidden
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, d_out))


@pytest.fixture(scope="module")
def gaussian_fit() -> pb.FitResult:
    torch.manual_seed(0)
    ds = pb.datasets.load("gap1d")
    model = pb.BayesianModel(pb.lift(mlp(1, 1)), pb.likelihoods.Gaussian(scale=0.1))
    # 300 steps are enough for these tests but leave the net still climbing: no FitWarning here
    return pb.fit(model, "meanfield", (ds.x_train, ds.y_train), num_steps=300, check=False, progress=False)


def test_sample_shapes_and_names(gaussian_fit: pb.FitResult) -> None:
    draws = gaussian_fit.posterior().sample(7, seed=0)
    assert {k: tuple(v.shape) for k, v in draws.items()} == {
        "0.weight": (7, 32, 1),
        "0.bias": (7, 32),
        "2.weight": (7, 1, 32),
        "2.bias": (7, 1),
    }


def test_gaussian_prediction_summaries(gaussian_fit: pb.FitResult) -> None:
    x = torch.linspace(-2, 2, 30).unsqueeze(-1)
    pred = gaussian_fit.posterior().predict(x, num_samples=400, seed=1)
    assert pred.samples.shape == (400, 30) and pred.mean.shape == (30,) and pred.output.shape == (400, 30, 1)
    # fixed noise: the aleatoric variance is σ² exactly; total = epistemic + aleatoric
    torch.testing.assert_close(pred.aleatoric_variance, torch.full((30,), 0.01))
    torch.testing.assert_close(pred.variance, pred.epistemic_variance + 0.01)
    torch.testing.assert_close(pred.std, pred.variance.sqrt())
    lo, hi = pred.interval(0.9)
    inside = ((pred.samples >= lo) & (pred.samples <= hi)).float().mean()
    assert abs(inside.item() - 0.9) < 0.01  # empirical quantiles of the same 400 × 30 draws
    assert torch.all(lo < pred.mean) and torch.all(pred.mean < hi)


def test_coverage_of_targets_drawn_from_the_predictive_is_the_level(gaussian_fit: pb.FitResult) -> None:
    x = torch.linspace(-2, 2, 200).unsqueeze(-1)
    pred = gaussian_fit.posterior().predict(x, num_samples=2000, seed=1)
    # Targets drawn from the predictive itself (fresh draws, independent of the 2000 that set
    # the interval): each is inside the central 90% interval with probability 0.9 up to the
    # quantiles' own error (≈0.01), so over 200 points the share has sd ≈ 0.022; 0.09 is > 4 sd.
    draws = gaussian_fit.posterior().predict(x, num_samples=1, seed=2).samples[0]
    for level in (0.5, 0.9):
        assert abs(pred.coverage(draws, level) - level) < 0.09
    lo, hi = pred.interval(0.9)
    shifted = hi + 0.1  # just above every interval: none covered, and (N, 1) targets are accepted
    assert pred.coverage(shifted.unsqueeze(-1), 0.9) == 0.0 and pred.coverage(lo, 0.9) == 1.0
    with pytest.raises(ValueError, match="y has 3 rows but the prediction has 200 points"):
        pred.coverage(draws[:3])


def test_log_prob_is_log_mean_exp_of_the_likelihood(gaussian_fit: pb.FitResult) -> None:
    ds = pb.datasets.load("gap1d")
    pred = gaussian_fit.posterior().predict(ds.x_test[:50], num_samples=300, seed=2)
    per_draw = torch.distributions.Normal(pred.output.squeeze(-1), 0.1).log_prob(ds.y_test[:50])
    direct = torch.logsumexp(per_draw, 0) - math.log(300)
    torch.testing.assert_close(pred.log_prob(ds.y_test[:50]), direct)
    torch.testing.assert_close(pred.log_prob(ds.y_test[:50, None]), direct)  # (N, 1) targets too


def test_prediction_in_chunks_matches_one_pass(gaussian_fit: pb.FitResult, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.linspace(-2, 2, 23).unsqueeze(-1)
    post = gaussian_fit.posterior()
    whole = post.predict(x, num_samples=50, seed=4)
    monkeypatch.setattr(posterior_module, "DRAWS_PER_CHUNK", 7)
    monkeypatch.setattr(posterior_module, "POINTS_PER_CHUNK", 5)
    chunked = post.predict(x, num_samples=50, seed=4)
    torch.testing.assert_close(chunked.output, whole.output)
    torch.testing.assert_close(chunked.samples, whole.samples)


def test_many_draws_over_many_points_fit_in_memory(gaussian_fit: pb.FitResult) -> None:
    x = torch.linspace(-3, 3, 10_000).unsqueeze(-1)
    pred = gaussian_fit.posterior().predict(x, num_samples=1000, seed=0)
    assert pred.samples.shape == (1000, 10_000) and torch.isfinite(pred.std).all()


@pytest.mark.slow
def test_predictive_std_is_larger_in_the_gap() -> None:
    torch.manual_seed(0)
    ds = pb.datasets.load("gap1d")
    model = pb.BayesianModel(pb.lift(mlp(1, 1, hidden=50)), pb.likelihoods.Gaussian(scale=0.1))
    post = pb.fit(model, "meanfield", (ds.x_train, ds.y_train), num_steps=1500, progress=False).posterior()
    on_data = post.predict(ds.x_train, num_samples=500, seed=0)
    in_gap = post.predict(torch.linspace(-0.25, 0.25, 11).unsqueeze(-1), num_samples=500, seed=0)
    # Observed (seed 0): epistemic sd 0.13 in the middle of the gap against 0.07 on the
    # data (ratio ~1.9), total sd 0.16 against 0.12. Mean-field is known to understate
    # in-between uncertainty (Foong et al. 2019), so the margins are 1.4x and 1.15x.
    assert in_gap.epistemic_variance.sqrt().mean() > 1.4 * on_data.epistemic_variance.sqrt().median()
    assert in_gap.std.mean() > 1.15 * on_data.std.median()


@pytest.mark.slow
def test_classification_accuracy_and_probabilities() -> None:
    torch.manual_seed(0)
    ds = pb.datasets.load("moons")
    model = pb.BayesianModel(pb.lift(mlp(2, 2, hidden=32, depth=2)), pb.likelihoods.Categorical())
    post = pb.fit(model, "meanfield", (ds.x_train, ds.y_train), num_steps=1500, progress=False).posterior()
    pred = post.predict(ds.x_test, num_samples=300, seed=0)
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(len(ds.x_test)))
    accuracy = (pred.probs.argmax(-1) == ds.y_test).float().mean().item()
    # The moons overlap with noise 0.15; a well-fit net gets ~0.97 (observed 0.97 at seed 0).
    assert accuracy > 0.93
    assert torch.all(pred.mutual_information >= 0)
    assert torch.all(pred.mutual_information <= pred.entropy + 1e-6)
    torch.testing.assert_close(pred.entropy - pred.expected_entropy, pred.mutual_information, atol=1e-5, rtol=0)
    assert torch.all(pred.entropy <= math.log(2) + 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["map", "meanfield"])
def test_heteroscedastic_likelihood_learns_growing_noise(kind: str) -> None:
    torch.manual_seed(0)
    ds = pb.datasets.load("hetero1d")
    model = pb.BayesianModel(pb.lift(mlp(1, 2, hidden=32)), pb.likelihoods.HeteroscedasticGaussian())
    post = pb.fit(model, kind, (ds.x_train, ds.y_train), num_steps=1500, progress=False).posterior()
    x = torch.linspace(-1.8, 1.8, 10).unsqueeze(-1)
    noise = post.predict(x, num_samples=300, seed=0).aleatoric_variance.sqrt()
    truth = 0.05 + 0.25 * (x.squeeze(-1) + 2) / 4
    # The generating noise sd grows 4.8-fold across the grid (0.06 to 0.29); the learned
    # one must follow it (observed correlation 0.97 MAP, 0.95 mean-field; ratio 5.7 and 4.0).
    assert torch.corrcoef(torch.stack([noise, truth]))[0, 1] > 0.9
    assert noise[-1] / noise[0] > 2.5
    if kind == "map":
        # The point estimate recovers the noise level itself (observed within 24%). Mean-field
        # VI over-regularises (the weights' spread feeds E_θ σ(x; θ)², and the KL favours
        # explaining variation as noise): observed 1.2-2.4x the truth, so no level check there.
        assert (noise / truth).sub(1).abs().max() < 0.35


LIKELIHOODS = {
    "gaussian": (lambda: pb.likelihoods.Gaussian(0.5), 1, lambda x: x.sum(-1)),
    "gaussian-learn": (lambda: pb.likelihoods.Gaussian("learn"), 1, lambda x: x.sum(-1)),
    "gaussian-prior": (lambda: pb.likelihoods.Gaussian(pb.priors.LogNormal(-1.0, 0.5)), 1, lambda x: x.sum(-1)),
    "studentt": (lambda: pb.likelihoods.StudentT(4.0, "learn"), 1, lambda x: x.sum(-1)),
    "hetero": (lambda: pb.likelihoods.HeteroscedasticGaussian(), 2, lambda x: x.sum(-1)),
    "bernoulli": (lambda: pb.likelihoods.Bernoulli(), 1, lambda x: (x.sum(-1) > 0).float()),
    "categorical": (lambda: pb.likelihoods.Categorical(), 3, lambda x: (x[:, 0] > 0).long() + (x[:, 1] > 0).long()),
    "poisson": (lambda: pb.likelihoods.Poisson(), 1, lambda x: torch.poisson(x.sum(-1).exp().clamp(max=20))),
    "multi-output": (lambda: pb.likelihoods.Gaussian(0.5), 2, lambda x: x[:, :2]),
}


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_every_likelihood_fits_and_predicts(name: str) -> None:
    make, width, target = LIKELIHOODS[name]
    x = torch.randn(40, 3)
    y = target(x)
    model = pb.BayesianModel(pb.lift(mlp(3, width, hidden=8)), make())
    result = pb.fit(model, "meanfield", (x, y), num_steps=10, num_particles=4, progress=False)
    assert torch.isfinite(torch.as_tensor(result.history.loss)).all()
    pred = result.posterior().predict(x, num_samples=20, seed=0)
    event = y.shape[1:]
    assert pred.samples.shape == (20, 40, *event)
    lp = pred.log_prob(y)
    assert lp.shape == (40,) and torch.isfinite(lp).all()
    assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.std).all()
    assert repr(model.likelihood) and repr(pred)


def test_entropies_against_hand_computed_values() -> None:
    """Two draws of a 2-class net at one input: softmax (0.5, 0.5) and (0.9, 0.1) (logits 0 and log 9)."""
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(1, 2)), pb.likelihoods.Categorical())
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(9.0), 0.0]]])  # (draws, points, classes)
    pred = pb.Prediction(model, logits, {})
    h = lambda *p: -sum(q * math.log(q) for q in p)  # noqa: E731
    torch.testing.assert_close(pred.entropy, torch.tensor([h(0.7, 0.3)]))
    torch.testing.assert_close(pred.expected_entropy, torch.tensor([(h(0.5, 0.5) + h(0.9, 0.1)) / 2]))
    torch.testing.assert_close(pred.mutual_information, pred.entropy - pred.expected_entropy)


def test_a_bernoulli_prediction_has_the_class_summaries_of_the_equivalent_categorical() -> None:
    """Bernoulli with logit f is Categorical with logits (0, f): the same probabilities and entropies."""
    f = torch.tensor([[[0.0], [2.0]], [[math.log(9.0)], [-1.0]]])  # (draws, points, 1)
    bern = pb.Prediction(pb.BayesianModel(pb.lift(torch.nn.Linear(1, 1)), pb.likelihoods.Bernoulli()), f, {})
    cat_logits = torch.cat([torch.zeros_like(f), f], dim=-1)
    cat = pb.Prediction(pb.BayesianModel(pb.lift(torch.nn.Linear(1, 2)), pb.likelihoods.Categorical()), cat_logits, {})
    torch.testing.assert_close(bern.probs, cat.probs)
    torch.testing.assert_close(bern.probs[..., 1], bern.mean)
    torch.testing.assert_close(bern.entropy, cat.entropy)
    torch.testing.assert_close(bern.expected_entropy, cat.expected_entropy)
    # a Prediction is whole when built: its draws of y are there, one per draw of θ
    assert bern.samples.shape == (2, 2) and cat.samples.shape == (2, 2)


@pytest.mark.parametrize("likelihood", [pb.likelihoods.Poisson(), pb.likelihoods.Bernoulli()])
def test_aleatoric_variance_is_the_term_the_total_variance_adds(likelihood: pb.likelihoods.Likelihood) -> None:
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(1, 1)), likelihood)
    pred = pb.Prediction(model, torch.randn(50, 7, 1, generator=torch.Generator().manual_seed(0)), {})
    torch.testing.assert_close(pred.variance, pred.epistemic_variance + pred.aleatoric_variance)
    # what the likelihood declares decides which summaries exist
    if likelihood.predicts_classes:
        with pytest.raises(AttributeError, match="coverage is defined for likelihoods of real or count targets"):
            pred.coverage(torch.zeros(7))
    else:
        with pytest.raises(AttributeError, match="probs is defined for likelihoods of class labels"):
            _ = pred.probs
