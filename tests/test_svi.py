"""pb.svi: the building blocks of pb.fit (init, SVIState.step) driven by a loop of one's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pyrobnn as pb


def regression(n: int = 64, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, torch.sin(x.sum(-1)) + 0.1 * torch.randn(n, generator=g)


def mlp_model(scale: float | str = 0.1, hidden: int = 8) -> pb.BayesianModel:
    torch.manual_seed(1)  # the same network weights each time, whatever ran before
    net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    return pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale=scale))


def assert_same_fit(history: pb.History, guide: pb.guides.Guide, result: pb.FitResult) -> None:
    for name, values in result.history.as_dict().items():
        np.testing.assert_array_equal(history.as_dict()[name], values, err_msg=name)
    mine, theirs = guide.state_dict(), result.guide.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("meanfield", {"num_steps": 40}),
        ("meanfield", {"epochs": 4, "batch_size": 20, "kl_weight": pb.linear_annealing(10), "lr_decay": 0.1}),
        ("fullrank", {"num_steps": 30, "batch_size": 32}),
    ],
)
def test_a_loop_of_steps_is_fit_bit_for_bit(kind: str, options: dict) -> None:
    x, y = regression()
    result = pb.fit(mlp_model("learn"), kind, (x, y), seed=3, progress=False, **options)
    state = pb.svi.init(mlp_model("learn"), kind, (x, y), seed=3, **options)
    assert state.num_steps == result.num_steps and state.step_count == 0 and len(state.history) == 0
    torch.manual_seed(123)
    for _ in range(state.num_steps):
        torch.rand(3)  # the caller's own draws between steps neither touch the fit's stream ...
        state.step()
    after = torch.get_rng_state()
    torch.manual_seed(123)
    for _ in range(state.num_steps):
        torch.rand(3)
    assert torch.equal(after, torch.get_rng_state())  # ... nor are touched by it
    assert state.step_count == result.num_steps
    assert_same_fit(state.history, state.guide, result)
    assert {k: v for k, v in state.config.items() if k != "kl_weight"} == {
        k: v for k, v in result.config.items() if k != "kl_weight"
    }


def test_steps_leave_the_caller_rng_alone_inside_and_outside_a_session() -> None:
    x, y = regression()
    states = [pb.svi.init(mlp_model(), "meanfield", (x, y), num_steps=20, seed=5) for _ in range(2)]
    torch.manual_seed(7)
    before = torch.get_rng_state()
    for _ in range(20):
        states[0].step()
    with states[1].session():
        for _ in range(20):
            states[1].step()
    assert torch.equal(before, torch.get_rng_state())
    np.testing.assert_array_equal(states[0].history.loss, states[1].history.loss)
    assert "SVIState(guide=MeanFieldGuide, step_count=20, num_steps=20" in repr(states[1])


def test_own_batches_are_checked_converted_and_scaled_to_the_dataset() -> None:
    x, y = regression(n=64)
    state = pb.svi.init(mlp_model(), "map", (x, y), num_particles=1)  # a point mass: the scaling is exact
    with torch.no_grad():
        out = state.model.net.net(x[:16]).squeeze(-1)  # the MAP guide starts at the network's weights
        direct = torch.distributions.Normal(out, 0.1).log_prob(y[:16]).sum().item()
    terms = state.step((x[:16].double().numpy(), y[:16, None].numpy()))  # arrays, float64, y as a column
    assert terms == state.last and state.dataset_size == 64
    assert terms.log_likelihood == pytest.approx(64 / 16 * direct, rel=1e-5)
    with pytest.raises(TypeError, match=r"a batch must be an \(x, y\) pair .*; got a Tensor"):
        state.step(x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x has 16 rows but y has 15"):
        state.step((x[:16], y[:15]))
    assert state.step_count == 1  # refused batches take no step


def test_the_whole_data_as_ones_own_batch_is_the_default_step() -> None:
    x, y = regression()
    result = pb.fit(mlp_model(), "meanfield", (x, y), num_steps=15, progress=False)
    state = pb.svi.init(mlp_model(), "meanfield", (x, y), num_steps=15)
    for _ in range(15):
        state.step((x, y))
    assert_same_fit(state.history, state.guide, result)


def test_early_stopping_and_going_on_where_the_loop_stopped() -> None:
    x, y = regression()
    result = pb.fit(mlp_model(), "meanfield", (x, y), num_steps=30, batch_size=16, progress=False)
    state = pb.svi.init(mlp_model(), "meanfield", (x, y), num_steps=30, batch_size=16)
    while True:
        terms = state.step()
        if state.step_count == 12:  # a stopping rule met: the state is a consistent, usable fit
            break
    assert len(state.history) == 12 and state.history.loss[-1] == terms.loss
    np.testing.assert_array_equal(state.history.loss, result.history.loss[:12])
    pred = pb.Posterior(state.model, state.guide).predict(x, num_samples=5, seed=0)
    assert torch.isfinite(pred.mean).all()
    for _ in range(18):  # ... and a stopped loop goes on exactly where it was
        state.step()
    assert_same_fit(state.history, state.guide, result)


def test_kl_weight_and_learning_rate_can_be_changed_between_steps() -> None:
    x, y = regression()
    state = pb.svi.init(mlp_model(), "meanfield", (x, y), num_steps=10, lr_decay=1.0)
    for _ in range(5):
        state.step()
    state.kl_weight = 0.5
    state.scheduler.base_lrs = [0.001 for _ in state.scheduler.base_lrs]  # LambdaLR: rate = base × multiplier
    for _ in range(5):
        state.step()
    h = state.history
    assert np.all(h.kl_weight[:5] == 1.0) and np.all(h.kl_weight[5:] == 0.5)
    assert h.lr[:6] == pytest.approx([0.01] * 6) and h.lr[6:] == pytest.approx([0.001] * 4)


def test_divergence_through_the_step_restores_the_last_finite_parameters() -> None:
    x, y = regression()
    state = pb.svi.init(mlp_model("learn"), "meanfield", (x, y), num_steps=200, lr=1e6)
    started_from = []  # the parameters each step started from
    message = r"the loss became nan at step \d+ \(last finite loss: .*learning rate too high \(lr=1000000\.0\)"
    with pytest.raises(pb.FitError, match=message) as err:
        for _ in range(state.num_steps):
            started_from.append({k: v.clone() for k, v in state.guide.state_dict().items()})
            state.step()
    step = err.value.step
    assert step >= 1 and state.step_count == step and len(err.value.history) == step
    assert np.isfinite(err.value.history.loss).all()
    np.testing.assert_array_equal(state.history.loss, err.value.history.loss)
    assert state.last is not None and f"last finite loss: {state.last.loss:.6g}" in str(err.value)
    # Back to the parameters the last step with a finite loss started from, not the diverged ones.
    restored = state.guide.state_dict()
    assert all(torch.equal(restored[k], started_from[step - 1][k]) for k in restored)
    assert math.isfinite(pb.ELBO(4).loss(state.model, state.guide, x, y))


def test_a_low_rank_factor_gone_non_finite_is_a_divergence_not_a_linalg_error() -> None:
    # With a huge learning rate the low-rank factor can overflow before the loss does; the next step's
    # Cholesky of the capacitance matrix then fails inside torch. That is the fit diverging too.
    x, y = regression()
    state = pb.svi.init(mlp_model("learn"), "lowrank", (x, y), num_steps=10, lr=0.01)
    state.step()
    before = {k: v.clone() for k, v in state.guide.state_dict().items()}  # what the next step starts from
    state.step()
    with torch.no_grad():
        state.guide.auto.cov_factor.fill_(math.inf)
    with pytest.raises(pb.FitError, match=r"a factorisation failed \(.*\) at step 2 \(last finite loss") as err:
        state.step()
    assert isinstance(err.value.__cause__, torch.linalg.LinAlgError) and err.value.step == 2
    assert state.step_count == 2 and len(err.value.history) == 2
    restored = state.guide.state_dict()
    assert all(torch.equal(restored[k], before[k]) for k in restored)  # the last finite parameters


def test_init_refuses_what_fit_refuses() -> None:
    x, y = regression()
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        pb.svi.init(mlp_model(), "meanfield", (x, y), num_steps=0)
    with pytest.raises(TypeError, match=r"guide options \['rank'\] only apply when guide is a kind string"):
        pb.svi.init(mlp_model(), pb.guides.make_guide("meanfield", mlp_model()), (x, y), rank=2)
    with pytest.raises(TypeError, match=r"fit needs a pb\.BayesianModel, got Linear"):
        pb.svi.init(torch.nn.Linear(3, 1), "meanfield", (x, y))  # type: ignore[arg-type]


def test_init_refuses_fits_loop_options_by_name() -> None:
    # progress and check are pb.fit's loop's; init used to take them for guide options and suggest
    # the very names it had just refused ("'progress' (did you mean progress?)")
    x, y = regression()
    with pytest.raises(TypeError, match=r"pb\.svi\.init takes no progress or check: .* state\.history\.check\(\)"):
        pb.svi.init(mlp_model(), "map", (x, y), progress=False, check=False)
    with pytest.raises(TypeError, match=r"pb\.svi\.init takes no check"):
        pb.svi.init(mlp_model(), pb.guides.make_guide("map", mlp_model()), (x, y), check=False)
