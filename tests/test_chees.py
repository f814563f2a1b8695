"""pb.mcmc's default kernel, ChEES-HMC over many chains in one batch: exactness, reproducibility, refusals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from test_mcmc import conjugate_regression, linear_model, small_bnn, small_bnn_data

import pyrobnn as pb
from pyrobnn.infer import mcmc as mcmc_module
from pyrobnn.infer._chees import mass_windows, van_der_corput
from pyrobnn.infer._potential import BatchedPotential
from pyrobnn.infer.mcmc import DivergenceWarning


def test_the_batched_potential_is_every_chains_negative_log_joint() -> None:
    """U per chain equals −log p(y, w) up to one constant (the Gaussian priors' normalisers), gradient included."""
    x, y, sigma, _, _ = conjugate_regression()
    potential = BatchedPotential(linear_model(sigma), x, y)
    w = torch.tensor([[0.3, -0.2], [1.0, -0.5], [-2.0, 0.7]])

    def minus_log_joint(v: torch.Tensor) -> torch.Tensor:
        joint = torch.distributions.Normal(0.0, 1.0).log_prob(v).sum()
        return -(joint + torch.distributions.Normal(x @ v, sigma).log_prob(y).sum())

    energy, grad = potential.value_and_grad(w)
    exact = torch.stack([minus_log_joint(v) for v in w])
    constant = energy - exact
    # the Gaussian priors enter without their normalisers, ½ log 2π per dimension: D = 2
    assert torch.allclose(constant, torch.full_like(constant, -math.log(2 * math.pi)), atol=1e-3)
    for c in range(len(w)):
        v = w[c].clone().requires_grad_(True)
        (want,) = torch.autograd.grad(minus_log_joint(v), v)
        assert torch.allclose(grad[c], want, rtol=1e-4, atol=1e-3)


def test_the_schedules() -> None:
    assert [van_der_corput(i) for i in range(1, 6)] == [0.5, 0.25, 0.75, 0.125, 0.625]
    windows = mass_windows(400)
    # Stan's shape: a 15% start buffer, doubling windows, the last running to the 10% end buffer
    assert windows[0] == 60 + 25 and windows[-1] == 360 and windows == sorted(windows)
    assert mass_windows(10) == []


@pytest.mark.slow
def test_chees_recovers_the_exact_conjugate_posterior() -> None:
    """Correlated 2-D Gaussian posterior (ρ ≈ −0.95): mean, covariance and correlation within Monte Carlo error."""
    import arviz as az

    x, y, sigma, mean, cov = conjugate_regression()
    post = pb.mcmc(linear_model(sigma), (x, y), num_samples=128, warmup=300, seed=0, progress=False)
    source = post.source
    assert source.kernel == "chees" and source.num_chains == 64 and source.superchain_size == 4
    chains = source.chains["weight"].reshape(64, 128, 2).double().numpy()
    flat = chains.reshape(-1, 2)
    # many short chains: nested R̂ over the 16 superchains (Margossian et al. 2022), threshold 1.01
    assert pb.nested_rhat(chains, 4).max() < 1.01
    sd = cov.diag().sqrt().numpy()
    for i in range(2):
        ess = float(az.ess(chains[..., i]))
        # Means within 4 Monte Carlo standard errors, sd / sqrt(ESS), ArviZ's ESS.
        assert abs(flat[:, i].mean() - float(mean[i])) < 4 * sd[i] / math.sqrt(ess)
        # Variances within 4 standard errors: for a Gaussian Var((w − m)²) = 2σ⁴, so the relative
        # error of the variance is sqrt(2 / ESS) with the ESS of the squared deviations.
        squares = (chains[..., i] - float(mean[i])) ** 2
        ess_sq = float(az.ess(squares))
        assert abs(squares.mean() / sd[i] ** 2 - 1) < 4 * math.sqrt(2 / ess_sq)
    corr = float(np.corrcoef(flat.T)[0, 1])
    exact = float(cov[0, 1] / cov.diag().sqrt().prod())
    assert exact < -0.9
    # a correlation near −0.95 has sampling error about (1 − ρ²)/sqrt(ESS) < 0.005 with ESS > 400
    assert abs(corr - exact) < 0.03
    assert float(source.diverging.double().mean()) < 0.01


@pytest.mark.slow
def test_chees_matches_nuts_on_a_small_bnn_within_the_references_own_floor() -> None:
    """A 1-2-1 tanh net (7 weights) on 12 noisy points: ChEES against a Pyro-NUTS reference.

    The floor is a second NUTS run of the same size with another seed against the reference:
    how far two exact samplers' draws are by Monte Carlo error alone. Measured (2 × 1000 NUTS
    draws): floor 0.0134, ChEES 0.0141. The bound 1.5 × floor leaves room for the floor's own
    noise (it is one draw of a W1 between finite samples) and fails a sampler off by more.
    """
    x, y = small_bnn_data()

    nuts = {"kernel": "nuts", "num_samples": 800, "warmup": 400, "num_chains": 2, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)  # counted below, not the point here
        ref = pb.mcmc(small_bnn(), (x, y), seed=0, **nuts)
        other = pb.mcmc(small_bnn(), (x, y), seed=10, **nuts)
        chees = pb.mcmc(small_bnn(), (x, y), seed=0, progress=False)
    x_new = torch.linspace(-3, 3, 31).unsqueeze(-1)
    truth = ref.predict(x_new, num_samples=1600, seed=0)
    floor = pb.metrics.reference_distance(other.predict(x_new, num_samples=1600, seed=1), truth)
    got = pb.metrics.reference_distance(chees.predict(x_new, num_samples=1600, seed=1), truth)
    assert got["w1"] <= 1.5 * floor["w1"], (got, floor)
    assert 0.9 < got["sd_ratio"] < 1.1
    assert float(chees.source.diverging.double().mean()) < 0.01


def test_runs_are_reproducible_from_the_seed_and_chains_differ() -> None:
    x, y, sigma, _, _ = conjugate_regression()
    model = linear_model(sigma)

    def run(seed: int) -> torch.Tensor:
        return pb.mcmc(model, (x, y), num_samples=8, warmup=30, num_chains=8, seed=seed, progress=False).source.values

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
    # chains are not copies of each other, even inside a superchain (they share only the start)
    assert not torch.equal(first[0], first[1])
    # the caller's RNG is left alone
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    run(0)
    assert torch.equal(torch.rand(1), before)


def test_superchains_share_their_starting_point(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    real = mcmc_module.run_chees

    def spy(potential, start, **kwargs):  # type: ignore[no-untyped-def]
        seen["start"] = start.clone()
        return real(potential, start, **kwargs)

    monkeypatch.setattr(mcmc_module, "run_chees", spy)
    x, y, sigma, _, _ = conjugate_regression()
    pb.mcmc(linear_model(sigma), (x, y), num_samples=2, warmup=5, num_chains=8, seed=0, progress=False)
    start = seen["start"]
    assert torch.equal(start[0], start[3]) and not torch.equal(start[3], start[4])  # superchains of 4


def test_divergences_are_counted_reported_and_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = mcmc_module.run_chees

    def three_divergent(*args, **kwargs):  # type: ignore[no-untyped-def]
        run = real(*args, **kwargs)
        run.diverging[0, :2] = True
        run.diverging[5, 3] = True
        return run

    monkeypatch.setattr(mcmc_module, "run_chees", three_divergent)
    x, y, sigma, _, _ = conjugate_regression()
    with pytest.warns(DivergenceWarning, match=r"3 of 64 ChEES draws diverged.*raise target_accept"):
        post = pb.mcmc(linear_model(sigma), (x, y), num_samples=8, warmup=20, num_chains=8, progress=False)
    assert int(post.source.diverging.sum()) == 3
    stats = pb.to_arviz(post, x, y).sample_stats
    assert int(stats["diverging"].sum()) == 3
    assert {"n_steps", "step_size"} <= set(stats.data_vars) and "tree_depth" not in stats.data_vars
    with warnings.catch_warnings(record=True):  # a diagnostic, shown by the suite's filter, never raised
        warnings.warn("a diagnostic", DivergenceWarning, stacklevel=1)


def test_bad_input_is_refused_before_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, sigma, _, _ = conjugate_regression()
    model = linear_model(sigma)
    with pytest.raises(ValueError, match=r"unknown MCMC kernel 'chess'.*Did you mean 'chees'"):
        pb.mcmc(model, (x, y), kernel="chess")
    with pytest.raises(ValueError, match=r"needs num_chains >= 2 \(got 1\).*kernel='nuts'"):
        pb.mcmc(model, (x, y), num_chains=1)
    with pytest.raises(ValueError, match=r"superchain_size=3 must divide num_chains=8"):
        pb.mcmc(model, (x, y), num_chains=8, superchain_size=3)
    with pytest.raises(ValueError, match=r"superchain_size=4 must divide num_chains=4 into at least 2"):
        pb.mcmc(model, (x, y), num_chains=4, superchain_size=4)
    with pytest.raises(ValueError, match="NaN"):
        pb.mcmc(model, (x, torch.where(torch.arange(len(y)) == 3, torch.nan, y)))
    with pytest.raises(ValueError, match=r"GiB.*max_gib=1e-06.*fewer chains"):
        pb.mcmc(model, (x, y), max_gib=1e-6, progress=False)
    with pytest.raises(ValueError, match=r"hours.*max_hours"):
        pb.mcmc(model, (x, y), num_samples=10**6, warmup=10**6, progress=False)
    # lift refuses a discrete weight prior; the sampler's own check stands behind it for any other
    # route to a discrete latent (here: the site's prior made discrete after lifting)
    sites = model.latent_sites()
    site = sites["weight"]
    discrete_prior = pb.priors.DistributionPrior(torch.distributions.Poisson(torch.ones(1)))
    patched = {"weight": type(site)(site.name, site.shape, discrete_prior, site.init)}
    monkeypatch.setattr(model, "latent_sites", lambda: patched)
    with pytest.raises(ValueError, match=r"discrete: HMC moves only on continuous"):
        pb.mcmc(model, (x, y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chees_runs_on_cuda() -> None:
    x, y, sigma, mean, _ = conjugate_regression()
    model = linear_model(sigma).to("cuda")
    post = pb.mcmc(model, (x.cuda(), y.cuda()), num_samples=32, warmup=150, seed=0, progress=False)
    assert post.source.values.device.type == "cuda"
    draws = post.source.chains["weight"].reshape(-1, 2).double().cpu()
    assert torch.allclose(draws.mean(0), mean, atol=0.05)  # 2048 draws: the means' error is about 0.005


def test_a_chees_posterior_saves_and_loads_with_its_superchains(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x, y, sigma, _, _ = conjugate_regression()
    post = pb.mcmc(linear_model(sigma), (x, y), num_samples=4, warmup=10, num_chains=8, progress=False)
    pb.save(tmp_path / "ref.pt", post)
    loaded = pb.load(tmp_path / "ref.pt", linear_model(sigma))
    assert loaded.source.kernel == "chees" and loaded.source.superchain_size == 4
    assert torch.equal(loaded.source.values, post.source.values)
