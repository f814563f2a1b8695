"""pb.fit's end-of-fit checks (FitWarning), FitError's guide, unknown keywords, init="reset", reprs."""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

import pyrobnn as pb
from pyrobnn.infer._nuts import Potential


def regression(n: int = 64, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, torch.sin(x.sum(-1)) + 0.1 * torch.randn(n, generator=g)


def mlp(d: int = 3, hidden: int = 5) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


def mlp_model(d: int = 3, hidden: int = 5, scale: float | str = 0.1) -> pb.BayesianModel:
    return pb.BayesianModel(pb.lift(mlp(d, hidden)), pb.likelihoods.Gaussian(scale=scale))


# ----------------------------------------------------------------- FitError keeps its guide
def test_fit_error_hands_back_the_restored_guide_of_a_kind_string() -> None:
    x, y = regression()
    with pytest.raises(pb.FitError, match=r"fitting the 'fullrank' guide \(FullRankGuide\): the loss became") as err:
        pb.fit(mlp_model(scale="learn"), "fullrank", (x, y), num_steps=200, lr=1e8, progress=False)
    guide = err.value.guide
    assert isinstance(guide, pb.guides.FullRankGuide)
    assert all(torch.isfinite(p).all() for p in guide.parameters())
    draws = guide.sample(4, seed=0)
    assert all(torch.isfinite(v).all() for v in draws.values())
    assert "(err.guide)" in str(err.value)


# ----------------------------------------------------------------- unknown keywords
def test_a_misspelt_fit_keyword_is_named_with_the_nearest_match() -> None:
    x, y = regression()
    message = (
        r"unknown keyword argument 'num_step' \(did you mean num_steps\?\): pb.fit takes num_steps, "
        r".*passes any other keyword to the 'meanfield' guide, whose options are init_scale, init, kl"
    )
    with pytest.raises(TypeError, match=message):
        pb.fit(mlp_model(), "meanfield", (x, y), num_step=10, progress=False)
    with pytest.raises(TypeError, match=r"'rnak' \(did you mean rank\?\)"):
        pb.svi.init(mlp_model(), "lowrank", (x, y), rnak=2)
    with pytest.raises(TypeError, match=r"unknown keyword argument 'zzz': pb.fit takes"):
        pb.fit(mlp_model(), "map", (x, y), zzz=1, progress=False)


def test_the_keywords_the_message_lists_are_fits_own() -> None:
    x, y = regression()
    with pytest.raises(TypeError) as err:
        pb.fit(mlp_model(), "map", (x, y), zzz=1, progress=False)
    listed = str(err.value).split("pb.fit takes ")[1].split(", and passes")[0].split(", ")
    params = inspect.signature(pb.fit).parameters
    own = [name for name, p in params.items() if p.kind is p.KEYWORD_ONLY]
    assert sorted(listed) == sorted(own)


# ----------------------------------------------------------------- reprs and timing
def test_fit_result_and_history_print_short_and_time_the_first_step_apart() -> None:
    x, y = regression()
    result = pb.fit(mlp_model(), "meanfield", (x, y), num_steps=40, seed=3, progress=False)
    text = repr(result)
    assert text.startswith("FitResult(guide=MeanFieldGuide, num_steps=40, final_elbo=")
    assert "seed=3" in text and "elapsed_s=" in text and len(text) < 200
    history = repr(result.history)
    assert history.startswith("History(num_steps=40, elbo: first ") and len(history) < 200
    assert 0 < result.first_step_s <= result.elapsed_s


# ----------------------------------------------------------------- init="reset"
def start_of(net_seed: int, fit_seed: int, init: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(net_seed)  # what a script's global seed does to a freshly built net
    model = mlp_model()
    state = pb.svi.init(model, "meanfield", regression(), seed=fit_seed, init=init)
    return {name: value.clone() for name, value in state.guide.median().items()}


def test_reset_start_is_a_function_of_the_fit_seed_alone() -> None:
    a, b = start_of(1, 5, "reset"), start_of(2, 5, "reset")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    c = start_of(1, 6, "reset")
    assert not torch.equal(a["0.weight"], c["0.weight"])
    # "pretrained" starts at the net's own weights, which the global seed set
    assert not torch.equal(start_of(1, 5, "pretrained")["0.weight"], start_of(2, 5, "pretrained")["0.weight"])


def test_reset_fits_are_bit_identical_whatever_the_global_seed() -> None:
    x, y = regression()
    losses = []
    for net_seed in (1, 2):
        torch.manual_seed(net_seed)
        model = mlp_model()
        result = pb.fit(model, "meanfield", (x, y), num_steps=30, seed=4, init="reset", progress=False)
        losses.append(result.history.loss)
    np.testing.assert_array_equal(losses[0], losses[1])


def test_reset_draws_torchs_default_initialisation_and_leaves_the_nets_alone() -> None:
    net = mlp(hidden=50)
    user = {name: p.detach().clone() for name, p in net.named_parameters()}
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))
    twin = {name: model.net.initial_value(name).clone() for name in model.net.site_names}
    before = torch.get_rng_state()
    # (seed=0 would redraw exactly the net's weights: conftest built it after torch.manual_seed(0))
    state = pb.svi.init(model, "meanfield", regression(), seed=1, init="reset")
    assert torch.equal(before, torch.get_rng_state())  # the caller's global RNG is untouched
    start = state.guide.median()
    # nn.Linear's reset_parameters: weights and biases uniform on ±1/sqrt(fan_in) (fan_in = 3 here)
    bound = 1 / math.sqrt(3)
    assert start["0.weight"].abs().max() <= bound and start["0.weight"].abs().max() > 0.9 * bound
    assert not torch.equal(start["0.weight"], user["0.weight"])
    assert start["likelihood.scale"] == model.latent_sites()["likelihood.scale"].init  # the likelihood's default
    for name, value in net.named_parameters():
        assert torch.equal(value.detach(), user[name])
    for name in model.net.site_names:
        assert torch.equal(model.net.initial_value(name), twin[name])


def test_reset_redraws_layers_that_find_their_weights_through_parameters() -> None:
    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(2, 3, batch_first=True)
            self.out = torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.rnn(x)[0][:, -1])

    model = pb.BayesianModel(pb.lift(Head()), pb.likelihoods.Gaussian(0.1))
    torch.manual_seed(1)
    values = model.net.reset_values()
    assert set(values) == set(model.net.site_names)
    for name, value in values.items():  # nn.GRU redraws every weight it finds in self.parameters()
        assert not torch.equal(value, model.net.initial_value(name)), name


def test_reset_refuses_a_parameter_no_reset_parameters_redraws() -> None:
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)
            self.gain = torch.nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gain * self.lin(x)

    model = pb.BayesianModel(pb.lift(Scaled()), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"no layer's reset_parameters\(\) redraws \['gain'\].*init='prior'"):
        pb.guides.make_guide("meanfield", model, init="reset")


def test_mcmc_start_takes_reset_too() -> None:
    x, y = regression()
    model = mlp_model()
    potential = Potential(model, x, y)
    torch.manual_seed(1)  # not 0, under which conftest built the net: the same draws
    a = potential.initial("reset")
    torch.manual_seed(1)
    assert torch.equal(a, potential.initial("reset"))
    assert not torch.equal(a, potential.initial("pretrained"))


# ----------------------------------------------------------------- FitWarning
def test_a_fit_that_diverges_to_a_finite_loss_warns_to_lower_the_learning_rate() -> None:
    x, y = regression()
    with pytest.warns(pb.FitWarning, match=r"ended below where it started.*lower the learning rate \(lr=10"):
        pb.fit(mlp_model(hidden=50), "map", (x, y), num_steps=300, lr=10.0, progress=False)


def test_a_fit_still_rising_warns_to_fit_longer() -> None:
    x, y = regression()
    with pytest.warns(pb.FitWarning, match=r"still rising over the last half.*num_steps=800 or more"):
        pb.fit(mlp_model(hidden=50), "meanfield", (x, y), num_steps=400, lr=1e-3, lr_decay=1.0, progress=False)


def test_a_settled_fit_does_not_warn_and_check_false_silences_the_check() -> None:
    x, y = regression()
    linear = pb.BayesianModel(pb.lift(torch.nn.Linear(3, 1)), pb.likelihoods.Gaussian(scale=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a Bayesian linear regression: one optimum, reached well within 1000 steps at lr=0.05
        result = pb.fit(linear, "meanfield", (x, y), num_steps=1000, lr=0.05, progress=False)
        assert result.history.check() is None
        pb.fit(mlp_model(hidden=50), "map", (x, y), num_steps=300, lr=10.0, check=False, progress=False)


def test_short_fits_are_not_checked_for_still_rising() -> None:
    x, y = regression()
    # 199 steps at a tiny rate: the ELBO climbs throughout, but below 200 steps only divergence is checked
    result = pb.fit(mlp_model(hidden=50), "meanfield", (x, y), num_steps=199, lr=1e-3, lr_decay=1.0, progress=False)
    assert result.history.check() is None
    assert result.history.check(min_steps=100) is not None


def test_the_gain_of_the_rate_decay_after_a_held_rate_is_not_still_rising() -> None:
    # Synthetic histories: a level ELBO of -300 (noise sd 2) at the starting rate, then a rise of 40
    # nats (13% of the ELBO, over the 10% the check allows) while the rate decays, as a settled
    # full-rank fit under num_steps="auto" gains when the guide stops jittering about its optimum.
    rng = np.random.default_rng(0)
    n, held = 6000, 4000  # "auto" holds the rate for two thirds of the fit
    decay_gain = np.r_[np.zeros(held), np.linspace(0.0, 40.0, n - held)]
    elbo = -300.0 + decay_gain + 2.0 * rng.standard_normal(n)
    lr = np.r_[np.full(held, 0.01), 0.01 * 0.1 ** np.linspace(0.0, 1.0, n - held + 1)[1:]]
    assert pb.History(elbo, elbo, np.zeros(n), np.ones(n), lr).check() is None
    # the same rise under the fixed schedule, which lets the rate fall from the midpoint, still warns:
    # there the last half is the decay, and a rise this large means a fit still climbing when it began
    fixed = np.r_[np.full(n // 2, 0.01), 0.01 * 0.1 ** np.linspace(0.0, 1.0, n - n // 2 + 1)[1:]]
    late = -300.0 + np.r_[np.zeros(n // 2), np.linspace(0.0, 40.0, n - n // 2)] + 2.0 * rng.standard_normal(n)
    problem = pb.History(late, late, np.zeros(n), np.ones(n), fixed).check()
    assert problem is not None and "last half of the fit" in problem
    # and a climb at the held rate itself warns, naming the steps it measured
    climbing = -300.0 + np.linspace(0.0, 150.0, n) + 2.0 * rng.standard_normal(n)
    problem = pb.History(climbing, climbing, np.zeros(n), np.ones(n), lr).check()
    assert problem is not None and "last half of the 4000 steps before the learning rate's decay" in problem
