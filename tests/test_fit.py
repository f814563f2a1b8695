"""pb.fit: vectorized particles, minibatch scaling, schedules, seeds, divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyrobnn as pb


def regression(n: int = 64, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, torch.sin(x.sum(-1)) + 0.1 * torch.randn(n, generator=g)


def mlp_model(d: int = 3, hidden: int = 16, scale: float | str = 0.1) -> pb.BayesianModel:
    net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    return pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale=scale))


def test_vectorized_and_looped_elbo_agree_within_monte_carlo_error() -> None:
    x, y = regression()
    model = mlp_model(scale="learn")
    guide = pb.guides.make_guide("meanfield", model, init_scale=0.3, kl="mc")  # both terms noisy
    estimates = {}
    for vectorize in (True, False):
        elbo = pb.ELBO(num_particles=8, vectorize_particles=vectorize)
        with torch.no_grad():
            estimates[vectorize] = np.array([elbo.loss(model, guide, x, y) for _ in range(300)])
    diff = estimates[True].mean() - estimates[False].mean()
    se = math.sqrt(estimates[True].var(ddof=1) / 300 + estimates[False].var(ddof=1) / 300)
    assert se > 0
    # Independent estimators of the same expectation: |difference| < 4 standard errors
    # (a false alarm once in ~16,000 runs).
    assert abs(diff) < 4 * se, (diff, se)


@pytest.mark.parametrize("num_particles", [1, 8])
def test_closed_form_kl_is_exact_and_counted_once_with_vectorized_particles(num_particles: int) -> None:
    # The vectorized ELBO evaluates a closed-form KL once per site on the per-particle
    # distributions, not on copies broadcast over the particles: it must still report
    # exactly KL(q‖p) of the weights (every latent here has a closed form).
    x, y = regression()
    model = mlp_model(scale=0.1)
    guide = pb.guides.make_guide("meanfield", model, init_scale=0.3)
    with torch.no_grad():
        for loc in guide.loc.values():
            loc.add_(0.2 * torch.randn_like(loc))  # away from the prior mean
        exact = sum(
            torch.distributions.kl_divergence(
                guide.site_distribution(name).base_dist, torch.distributions.Normal(0.0, 1.0)
            )
            .sum()
            .item()
            for name in model.net.site_names
        )
        elbo = pb.ELBO(num_particles=num_particles)
        elbo.differentiable_loss(model, guide, x, y)
    assert elbo.last is not None
    assert exact > 50  # about 0.75 nats for each of the 81 weights: a miscount would show
    # float32 sums of 81 terms: relative error ~1e-7; 1e-5 leaves room and still pins it.
    assert elbo.last.kl == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize(("vectorize", "per_step"), [(True, 1), (False, 16)])
def test_network_runs_once_per_step_when_vectorized(vectorize: bool, per_step: int) -> None:
    x, y = regression()
    calls = []
    model = mlp_model()
    model.net.net.register_forward_hook(lambda *_: calls.append(1))
    counts = []
    for num_steps in (3, 8):
        calls.clear()
        pb.fit(
            model,
            "meanfield",
            (x, y),
            num_steps=num_steps,
            num_particles=16,
            vectorize_particles=vectorize,
            progress=False,
        )
        counts.append(len(calls))
    # The difference removes the one shape probe made before fitting.
    assert (counts[1] - counts[0]) == 5 * per_step


def test_history_records_the_terms_and_the_schedules() -> None:
    x, y = regression()
    result = pb.fit(
        mlp_model(),
        "meanfield",
        (x, y),
        num_steps=100,
        lr=0.01,
        lr_decay=0.1,
        kl_weight=pb.linear_annealing(50),
        progress=False,
    )
    h = result.history
    assert len(h) == result.num_steps == 100
    assert np.all(np.isfinite(h.loss))
    np.testing.assert_allclose(h.loss, -(h.log_likelihood - h.kl_weight * h.kl), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(h.elbo, h.log_likelihood - h.kl)
    assert h.kl_weight[0] == 0.0 and h.kl_weight[25] == 0.5 and np.all(h.kl_weight[50:] == 1.0)
    assert h.lr[0] == pytest.approx(0.01) and h.lr[50] == pytest.approx(0.01)
    assert h.lr[-1] == pytest.approx(0.001, rel=1e-6)
    assert np.all(np.diff(h.lr[50:]) < 0)
    assert result.elapsed_s > 0 and result.config["num_particles"] == 8
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        result.num_steps = 3  # type: ignore[misc]


def test_fit_decreases_the_loss() -> None:
    x, y = regression()
    h = pb.fit(mlp_model(), "meanfield", (x, y), num_steps=300, progress=False).history
    assert h.loss[-20:].mean() < 0.5 * h.loss[:20].mean()


@pytest.mark.parametrize(
    ("kind", "options", "particles"),
    [
        ("meanfield", {}, 8),
        ("map", {}, 8),
        ("lowrank", {}, 32),
        ("fullrank", {}, 32),
        ("flow", {}, 32),
        ("flow", {"sites": "last_layer"}, 32),  # a flow and a mean-field part: the larger count
    ],
)
def test_particles_default_to_the_guides_own(kind: str, options: dict, particles: int) -> None:
    x, y = regression(n=16)
    model = mlp_model(hidden=4)
    guide = pb.guides.make_guide(kind, model, **options)
    assert guide.num_particles == particles
    result = pb.fit(model, guide, (x, y), num_steps=1, progress=False)
    assert result.config["num_particles"] == particles
    chosen = pb.fit(mlp_model(hidden=4), kind, (x, y), num_steps=1, num_particles=3, progress=False, **options)
    assert chosen.config["num_particles"] == 3


def test_minibatch_likelihood_is_scaled_to_the_dataset() -> None:
    x, y = regression(n=50)
    model = mlp_model()
    guide = pb.guides.make_guide("map", model)  # deterministic θ: the scaling is exact
    elbo = pb.ELBO(num_particles=1)
    elbo.differentiable_loss(model, guide, x[:10], y[:10], dataset_size=50)
    assert elbo.last is not None
    with torch.no_grad():
        out = model.net.net(x[:10]).squeeze(-1)
        direct = torch.distributions.Normal(out, 0.1).log_prob(y[:10]).sum().item()
    assert elbo.last.log_likelihood == pytest.approx(5 * direct, rel=1e-5)


def test_epochs_batches_and_dataloader() -> None:
    x, y = regression(n=50)
    result = pb.fit(mlp_model(), "meanfield", (x, y), epochs=3, batch_size=16, progress=False)
    assert result.num_steps == 3 * 4 and result.config["dataset_size"] == 50
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True)
    result = pb.fit(mlp_model(), "meanfield", loader, epochs=2, progress=False)
    assert result.num_steps == 2 * 3 and np.all(np.isfinite(result.history.loss))
    arrays = pb.fit(mlp_model(), "meanfield", (x.numpy().astype(np.float64), y.numpy()), num_steps=5, progress=False)
    assert np.all(np.isfinite(arrays.history.loss))


def test_same_seed_same_fit_and_caller_rng_untouched() -> None:
    x, y = regression()
    models = [mlp_model(), mlp_model(), mlp_model()]  # built first: nn.Linear draws from the global RNG
    torch.manual_seed(123)
    before = torch.get_rng_state()
    # init="prior": the guide starts from a seeded prior draw, not from each net's own weights
    runs = [
        pb.fit(m, "meanfield", (x, y), num_steps=30, batch_size=20, seed=7, init="prior", progress=False)
        for m in models[:2]
    ]
    assert torch.equal(before, torch.get_rng_state())
    np.testing.assert_array_equal(runs[0].history.loss, runs[1].history.loss)
    pred = [r.posterior().predict(x, num_samples=50, seed=3).samples for r in runs]
    assert torch.equal(pred[0], pred[1])
    assert torch.equal(before, torch.get_rng_state())
    other = pb.fit(models[2], "meanfield", (x, y), num_steps=30, batch_size=20, seed=8, init="prior", progress=False)
    assert not np.array_equal(other.history.loss, runs[0].history.loss)


def test_optimizer_can_be_chosen() -> None:
    x, y = regression()
    result = pb.fit(
        mlp_model(),
        "meanfield",
        (x, y),
        num_steps=20,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1e-4),
        progress=False,
    )
    assert result.config["optimizer"] == "SGD"


def test_divergence_stops_with_fit_error_and_keeps_the_last_good_guide() -> None:
    x, y = regression()
    model = mlp_model(scale="learn")
    guide = pb.guides.make_guide("meanfield", model)
    message = r"the loss became nan at step \d+ \(last finite loss: .*learning rate"
    with pytest.raises(pb.FitError, match=message) as err:
        pb.fit(model, guide, (x, y), num_steps=200, lr=1e6, progress=False)
    assert len(err.value.history) == err.value.step and np.isfinite(err.value.history.loss).all()
    assert all(torch.isfinite(p).all() for p in guide.parameters())
    assert math.isfinite(pb.ELBO(4).loss(model, guide, x, y))


def test_deterministic_parameters_are_trained_as_point_estimates() -> None:
    x, y = regression()
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model = pb.BayesianModel(pb.lift(net, exclude="**.bias"), pb.likelihoods.Gaussian(scale=0.1))
    before = model.net.net[0].bias.detach().clone()
    result = pb.fit(model, "meanfield", (x, y), num_steps=20, progress=False)
    assert "0.bias" not in result.guide.site_names
    assert not torch.equal(before, model.net.net[0].bias.detach())
    assert torch.equal(net[0].bias, model.net.net[0].bias) is False


def test_minibatches_draw_one_permutation_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = regression(n=50)
    calls = []
    original = torch.randperm

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting)
    pb.fit(mlp_model(), "meanfield", (x, y), epochs=3, batch_size=10, progress=False)
    assert len(calls) == 3  # 15 steps, 3 epochs: no per-step permutation in the data plate


def test_fit_on_an_explicit_device_and_dtype() -> None:
    x, y = regression()
    model = mlp_model().double()
    result = pb.fit(model, "meanfield", (x.double(), y.double()), num_steps=5, device="cpu", progress=False)
    assert all(p.dtype == torch.float64 for p in result.guide.parameters())
    assert result.config["device"] == "cpu"
    assert result.posterior().predict(x, num_samples=3).mean.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_and_predict_on_cuda() -> None:
    x, y = regression()
    result = pb.fit(mlp_model(scale="learn"), "meanfield", (x, y), num_steps=5, device="cuda", progress=False)
    assert all(p.is_cuda for p in result.guide.parameters())
    assert result.posterior().predict(x, num_samples=3).mean.is_cuda


@pytest.mark.parametrize(
    ("kind", "options"),
    [("lowrank", {"rank": 2}), ("fullrank", {}), ("flow", {"sites": "last_layer"}), ("map", {})],
)
def test_every_guide_kind_is_reproducible_and_leaves_the_caller_rng_alone(kind: str, options: dict) -> None:
    x, y = regression()
    models = [mlp_model(hidden=4), mlp_model(hidden=4)]
    torch.manual_seed(5)
    before = torch.get_rng_state()
    runs = [
        pb.fit(m, kind, (x, y), num_steps=10, batch_size=32, seed=11, init="prior", progress=False, **options)
        for m in models
    ]
    pred = [r.posterior().predict(x, num_samples=20, seed=2).samples for r in runs]
    assert torch.equal(before, torch.get_rng_state())
    np.testing.assert_array_equal(runs[0].history.loss, runs[1].history.loss)
    assert torch.equal(pred[0], pred[1])


def test_a_shuffling_dataloader_is_reproducible_under_the_seed() -> None:
    x, y = regression(n=50)
    models = [mlp_model(), mlp_model()]  # built first: nn.Linear draws from the global RNG
    torch.manual_seed(1)
    before = torch.get_rng_state()
    histories = []
    for model in models:
        # A DataLoader without its own generator shuffles from torch's global RNG: fit's seed governs it.
        loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True)
        result = pb.fit(model, "meanfield", loader, epochs=2, seed=4, init="prior", progress=False)
        histories.append(result.history.loss)
    assert torch.equal(before, torch.get_rng_state())
    np.testing.assert_array_equal(histories[0], histories[1])


def test_divergence_message_names_step_loss_and_causes() -> None:
    x, y = regression()
    model = mlp_model(scale="learn")
    with pytest.raises(pb.FitError) as err:
        pb.fit(model, "meanfield", (x, y), num_steps=200, lr=1e6, progress=False)
    message = str(err.value)
    step = err.value.step
    assert f"at step {step} " in message and step >= 1
    last = err.value.history.loss[-1]
    assert f"last finite loss: {last:.6g}" in message
    assert "lr=1000000.0" in message and "initial scale" in message and "standardise x and y" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["meanfield", "lowrank", "flow", "map"])
def test_priors_and_guide_follow_the_device(kind: str) -> None:
    x, y = regression()
    model = mlp_model(scale="learn")
    rng = torch.cuda.get_rng_state()
    result = pb.fit(model, kind, (x, y), num_steps=5, device="cuda", progress=False)
    assert torch.equal(rng, torch.cuda.get_rng_state())
    assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])  # priors live in buffers
    assert all(t.is_cuda for t in [*result.guide.parameters(), *result.guide.buffers()])
    pred = result.posterior().predict(x, num_samples=4, seed=0)
    assert pred.mean.is_cuda and torch.isfinite(pred.mean).all()


@pytest.mark.parametrize("kind", ["meanfield", "lowrank", "fullrank", "map", "flow"])
def test_a_guide_starts_at_values_given_site_by_site(kind: str) -> None:
    x, y = regression()
    model = mlp_model(scale="learn")
    start = pb.fit(model, "map", (x, y), num_steps=30, progress=False, check=False).guide.median()
    guide = pb.guides.make_guide(kind, model, init=start)
    # a Gaussian's median is its location; the flow starts near the identity, so its median is the
    # location up to the flow's small initial shift (observed 5e-4 at init_scale 1e-2)
    atol = 0.01 if kind == "flow" else 1e-5
    for name, value in guide.median().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=atol)
    # the starting values are copied, not shared with the dict they came from
    first = next(iter(start))
    start[first].add_(1.0)
    assert not torch.allclose(guide.median()[first], start[first])


def test_values_given_site_by_site_are_checked() -> None:
    model = mlp_model(scale="learn")
    good = pb.guides.make_guide("map", model).median()
    name = next(iter(good))
    with pytest.raises(ValueError, match=r"every latent site and no other: missing \['" + name):
        pb.guides.make_guide("meanfield", model, init={k: v for k, v in good.items() if k != name})
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        pb.guides.make_guide("meanfield", model, init={**good, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=rf"init\['{name}'\] has shape \(1,\); the site's shape is"):
        pb.guides.make_guide("fullrank", model, init={**good, name: torch.zeros(1)})
    with pytest.raises(ValueError, match="NaN or an infinity"):
        pb.guides.make_guide("map", model, init={**good, name: torch.full_like(good[name], math.nan)})
    # the learned noise scale is positive: a value on the unconstrained scale is caught
    scale = next(k for k in good if k.startswith("likelihood"))
    with pytest.raises(ValueError, match=rf"init\['{scale}'\] lies outside the site's support"):
        pb.guides.make_guide("meanfield", model, init={**good, scale: -good[scale]})
