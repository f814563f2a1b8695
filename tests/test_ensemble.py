"""Ensembles as posteriors: the mixture, its weights, its members fitted in one batch, and every stage that takes it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_exact import conjugate_regression, linear_model

import pyrobnn as pb
from pyrobnn.infer import _members as members_module
from pyrobnn.infer import ensemble as ensemble_module
from pyrobnn.posterior import Ensemble, MemberSource, stacking_weights


def small_task(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([-2 + 1.5 * torch.rand(15, 1, generator=g), 0.5 + 1.5 * torch.rand(15, 1, generator=g)])
    return x, torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(30, generator=g)


def small_model(seed: int = 0) -> pb.BayesianModel:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))


def point_guides(model: pb.BayesianModel, values: list[float]) -> list[pb.guides.MAPGuide]:
    """MAP guides of the one-weight linear model sitting at the given values."""
    guides = []
    for v in values:
        guide = pb.guides.make_guide("map", model)
        with torch.no_grad():
            for p in guide.value.values():
                p.fill_(v)
        guides.append(guide)
    return guides


def one_weight_model() -> pb.BayesianModel:
    net = torch.nn.Linear(1, 1, bias=False)
    return pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian(scale=0.5))


# ------------------------------------------------------------------ the mixture itself
def test_draws_are_split_by_weight_and_shuffled() -> None:
    model = one_weight_model()
    ens = Ensemble(model, point_guides(model, [-1.0, 2.0, 5.0]), [0.5, 0.3, 0.2])
    draws = ens.sample(10, seed=0)["weight"].reshape(-1)
    # stratified: exactly 5, 3 and 2 of 10 draws (no multinomial noise)
    assert sorted(draws.tolist()) == [-1.0] * 5 + [2.0] * 3 + [5.0] * 2
    assert draws.tolist() != sorted(draws.tolist())  # shuffled, so any prefix is a mixture
    # the remainder goes to the largest fractions: 7 draws at (0.5, 0.3, 0.2) -> 3.5, 2.1, 1.4 -> 4, 2, 1
    assert ens.member_of(7).bincount().tolist() == [4, 2, 1]
    assert ens.point_mass and not ens.has_density and ens.has_members and not ens.has_chains
    assert isinstance(ens, MemberSource)


def test_mixture_density_is_the_weighted_sum_of_the_members() -> None:
    model = one_weight_model()
    members = [pb.guides.make_guide("meanfield", model, init_scale=s) for s in (0.3, 1.5)]
    ens = Ensemble(model, members, [0.25, 0.75])
    assert ens.has_density and not ens.point_mass
    theta = {"weight": torch.linspace(-2, 2, 7).reshape(7, 1, 1)}
    expected = torch.log(0.25 * members[0].log_prob(theta).exp() + 0.75 * members[1].log_prob(theta).exp())
    torch.testing.assert_close(ens.log_prob(theta), expected, rtol=1e-5, atol=1e-5)
    # the mixture's quantiles: its median lies between the members' (both centred at the same loc here)
    assert ens.quantiles([0.1, 0.5, 0.9])["weight"].shape == (3, 1, 1)


def test_stacking_weights_satisfy_the_optimality_conditions() -> None:
    # Concave objective over the simplex: at the optimum, the gradient g_k = mean_i p_ik / p_i(w) is
    # 1 for every member with weight > 0 and <= 1 for the others (the KKT conditions).
    g = torch.Generator().manual_seed(3)
    ell = torch.randn(200, 4, generator=g, dtype=torch.float64)
    ell[:, 3] -= 3.0  # a member worse everywhere gets weight 0
    w = stacking_weights(ell)
    grad = (ell.exp() / (ell.exp() @ w).unsqueeze(-1)).mean(0)
    assert math.isclose(float(w.sum()), 1.0, abs_tol=1e-12)
    assert float(w[3]) < 1e-6
    assert torch.allclose(grad[w > 1e-6], torch.ones(()).double(), atol=1e-5)
    assert (grad <= 1 + 1e-5).all()
    # symmetric members share equally; a member that dominates every point takes all the weight
    sym = torch.tensor([[0.0, -1.0], [-1.0, 0.0]], dtype=torch.float64).repeat(10, 1)
    assert torch.allclose(stacking_weights(sym), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-6)
    dom = torch.tensor([[0.0, -2.0], [0.5, -1.0]], dtype=torch.float64)
    assert float(stacking_weights(dom)[0]) > 1 - 1e-6


@pytest.mark.parametrize(
    ("weights", "match"),
    [([0.5, 0.4], "sum to 0.9"), ([0.5, 0.25, 0.25], "3 weights for 2 members"), ([1.5, -0.5], ">= 0")],
)
def test_bad_weights_are_refused(weights: list[float], match: str) -> None:
    model = one_weight_model()
    with pytest.raises(ValueError, match=match):
        Ensemble(model, point_guides(model, [0.0, 1.0]), weights)


def test_bad_members_are_refused() -> None:
    model = one_weight_model()
    with pytest.raises(ValueError, match="at least 2 members"):
        Ensemble(model, point_guides(model, [0.0]))
    other = small_model()
    with pytest.raises(ValueError, match="members must all be posteriors of this model"):
        Ensemble(model, [*point_guides(model, [0.0]), pb.guides.make_guide("map", other)])
    with pytest.raises(TypeError, match="not a source of draws"):
        Ensemble(model, [*point_guides(model, [0.0]), "map"])  # type: ignore[list-item]


# ------------------------------------------------------------------ fitting the members
def test_batched_members_reach_the_exact_optima_of_a_conjugate_model() -> None:
    x, y, sigma, m, precision, cov, _ = conjugate_regression()
    sd = cov.diag().sqrt()
    result = pb.ensemble(linear_model(sigma), "map", (x, y), num_members=3, num_steps=2000, lr=0.05, progress=False)
    assert result.config["batched"] and len(result.members) == 3
    for member in result.members:
        # the posterior mode is the mean here; a deterministic objective, so only Adam's final
        # steps (lr decayed to 5e-4) are left: observed <= 1e-4 sd, allow 0.01
        loc = member.guide.median()["weight"].reshape(-1).double()
        assert ((loc - m).abs() / sd).max() < 0.01
    result = pb.ensemble(
        linear_model(sigma), "meanfield", (x, y), num_members=3, num_steps=2000, lr=0.05, init_scale=0.1, progress=False
    )
    assert result.config["batched"]
    mf_sd = (1 / precision.diag()).sqrt()
    for member in result.members:
        # the reverse-KL mean-field optimum, with the tolerances of test_exact's single fit
        # (observed here <= 0.02 sd and <= 2% over the three members)
        loc = member.guide.median()["weight"].reshape(-1).double()
        scale = member.guide.scales()["weight"].reshape(-1).double()
        assert ((loc - m).abs() / sd).max() < 0.05
        assert ((scale / mf_sd) - 1).abs().max() < 0.05


def test_batched_map_members_follow_the_path_of_separate_fits() -> None:
    # MAP's objective has no Monte Carlo noise: the batch and K separate pb.fit runs from the same
    # starts take the same Adam steps up to float32 summation order.
    x, y = small_task()
    batched = pb.ensemble(small_model(), "map", (x, y), num_members=3, num_steps=300, progress=False, check=False)
    separate = pb.ensemble(
        small_model(), "map", (x, y), num_members=3, num_steps=300, progress=False, check=False, batched=False
    )
    assert not separate.config["batched"]
    for a, b in zip(batched.members, separate.members, strict=True):
        assert a.seed == b.seed
        for name, value in a.guide.median().items():
            torch.testing.assert_close(value, b.guide.median()[name], rtol=1e-3, atol=1e-3)
        # the histories agree too: the same objective, log p(y | θ) + log p(θ), step by step
        np.testing.assert_allclose(a.history.loss, b.history.loss, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize(("kind", "options"), [("fullrank", {}), ("lowrank", {"rank": 2})])
def test_batched_joint_members_recover_the_exact_posterior_of_a_conjugate_model(kind: str, options: dict) -> None:
    x, y, sigma, m, _, cov, log_evidence = conjugate_regression()
    sd = cov.diag().sqrt()
    corr = (cov[0, 1] / sd.prod()).item()
    result = pb.ensemble(
        linear_model(sigma), kind, (x, y), num_members=3, num_steps=2000, lr=0.05, init_scale=0.1, init="reset",
        progress=False, **options,
    )  # fmt: skip
    assert result.config["batched"] and len(result.members) == 3
    for member in result.members:
        # q's own mean and covariance (the weight site is on the real line: u is θ), so no draws'
        # error: the tolerances of test_exact's single fits, where observed here <= 0.013 sd for the
        # means, 1.2% for the sds and 0.0013 for the correlation of -0.92
        c = member.guide.covariance().double()
        mean = member.guide.median()["weight"].reshape(-1).double()
        s = c.diag().sqrt()
        assert ((mean - m).abs() / sd).max() < 0.06
        assert ((s / sd) - 1).abs().max() < 0.05
        assert abs((c[0, 1] / s.prod()).item() - corr) < 0.02
        # the family contains the posterior: the ELBO reaches the log evidence (observed <= 0.002 nats)
        terms, se = pb.estimate_elbo(member.model, member.guide, x, y, num_particles=4096)
        assert log_evidence - terms.elbo < 0.02 + 4 * se
        assert np.all(member.history.kl_weight == 1.0)  # a fixed length keeps the KL weight at 1, as pb.fit


@pytest.mark.parametrize("kind", ["fullrank", "lowrank"])
def test_the_batch_builds_each_joint_members_own_posterior(kind: str) -> None:
    from pyrobnn.infer._batched import _JointStack

    model = small_model()
    guides = []
    for seed in range(3):
        torch.manual_seed(seed)
        guide = pb.guides.make_guide(kind, model, init="reset")
        with torch.no_grad():  # away from the start, where the scales are all equal and the factor is I
            for p in guide.parameters():
                p.add_(0.3 * torch.randn_like(p))
        guides.append(guide)
    stack = _JointStack(guides, model.layout().names)
    q = stack.posterior(stack.constrained())
    u = torch.randn(5, 3, model.layout().dim)
    with torch.no_grad():
        mine = torch.stack([g.posterior().log_prob(u[:, i]) for i, g in enumerate(guides)], dim=1)
        torch.testing.assert_close(q.log_prob(u), mine)
        # and what the batch trains is written back to the members unchanged
        for p in stack.params:
            p.mul_(0.5)
        stack.write(guides)
        q = stack.posterior(stack.constrained())
        mine = torch.stack([g.posterior().log_prob(u[:, i]) for i, g in enumerate(guides)], dim=1)
        torch.testing.assert_close(q.log_prob(u), mine)


def test_batched_joint_members_warm_up_the_kl_weight_under_auto_as_fit_does() -> None:
    from pyrobnn.infer._batched import fit_batch
    from pyrobnn.infer._optim import AUTO_WARM_UP, fit_kl_weight, kl_weight_at

    x, y, sigma, *_ = conjugate_regression()
    model = linear_model(sigma)
    guides = [pb.guides.make_guide("fullrank", model, init="reset", init_scale=0.1)]
    run = fit_batch(model, guides, x, y, num_steps="auto", lr=0.05, lr_decay=0.01, num_particles=8)
    history = run.histories[0]
    assert history is not None
    schedule = fit_kl_weight(None, True, "auto")
    expected = [kl_weight_at(schedule, step) for step in range(len(history))]
    np.testing.assert_array_equal(history.kl_weight, expected)
    assert history.kl_weight[0] == 0.0 and history.kl_weight[AUTO_WARM_UP] == 1.0
    # the checks of the length start once both quarters lie after the warm-up, as pb.fit's do
    assert len(history) >= 2 * AUTO_WARM_UP
    np.testing.assert_allclose(history.loss, history.kl_weight * history.kl - history.log_likelihood, rtol=1e-5)


def test_batched_laplace_members_are_the_laplace_fits_of_separate_runs() -> None:
    # The MAP phase batches like MAP members (no Monte Carlo noise: the same Adam steps up to float32
    # summation order); each member's Gaussian is then built at its MAP point as pb.fit builds it.
    x, y = small_task()
    options = {"num_members": 3, "num_steps": 300, "progress": False, "check": False}
    batched = pb.ensemble(small_model(), "laplace", (x, y), **options)
    separate = pb.ensemble(small_model(), "laplace", (x, y), batched=False, **options)
    assert batched.config["batched"] and not separate.config["batched"]
    for a, b in zip(batched.members, separate.members, strict=True):
        assert a.guide.fitted and a.seed == b.seed
        for name, value in a.guide.median().items():
            torch.testing.assert_close(value, b.guide.median()[name], rtol=1e-3, atol=1e-3)
        # observed: MAP points within 1e-4, log evidence within 4e-6 nats, covariances within 1.2%
        # (the curvature at points that differ in float32 rounding); allowed 10x, 250x and 4x that
        assert abs(float(a.guide.log_evidence) - float(b.guide.log_evidence)) < 1e-3
        torch.testing.assert_close(a.guide.covariance(), b.guide.covariance(), rtol=0.05, atol=1e-4)


def test_a_laplace_member_whose_gaussian_cannot_be_built_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = small_task()
    real = pb.guides.LaplaceGuide.fit_posterior
    calls = []

    def fails_once(self, model, x, y):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("the Hessian is not positive definite at the MAP fit")
        return real(self, model, x, y)

    monkeypatch.setattr(pb.guides.LaplaceGuide, "fit_posterior", fails_once)
    options = {"num_members": 3, "num_steps": 50, "progress": False, "check": False}
    with pytest.warns(pb.FitWarning, match=r"member 1 of 3 \(laplace\) was left out: .*not positive definite"):
        result = pb.ensemble(small_model(), "laplace", (x, y), **options)
    assert result.config["batched"] and result.config["left_out"] == [1] and len(result.members) == 2


def test_members_start_independently_and_the_seed_fixes_them() -> None:
    x, y = small_task()
    a = pb.ensemble(small_model(), "map", (x, y), num_members=3, num_steps=5, progress=False, check=False, seed=1)
    b = pb.ensemble(small_model(), "map", (x, y), num_members=3, num_steps=5, progress=False, check=False, seed=1)
    seeds = a.config["member_seeds"]
    assert len(set(seeds)) == 3 and seeds == b.config["member_seeds"]
    first = [m.guide.median()["0.weight"] for m in a.members]
    assert not torch.allclose(first[0], first[1])
    torch.testing.assert_close(first[0], b.members[0].guide.median()["0.weight"])


def test_init_map_starts_each_member_at_its_own_map_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = small_task()
    starts = []
    real = members_module.fit_members

    def recording(model, kind, data, seeds, inits, **kwargs):
        if kind != "map":
            starts.extend(inits)
        return real(model, kind, data, seeds, inits, **kwargs)

    monkeypatch.setattr(ensemble_module, "fit_members", recording)
    options = {"num_members": 3, "num_steps": 40, "progress": False, "check": False, "seed": 2}
    result = pb.ensemble(small_model(), "fullrank", (x, y), init="map", **options)
    assert result.config["init"] == "map" and result.config["batched"]
    # the same seeds give the same MAP fits, deterministic: each member started at its own
    maps = pb.ensemble(small_model(), "map", (x, y), **options)
    assert len(starts) == 3 and result.config["member_seeds"] == maps.config["member_seeds"]
    for start, map_fit in zip(starts, maps.members, strict=True):
        for name, value in map_fit.guide.median().items():
            torch.testing.assert_close(start[name], value)
    assert not torch.allclose(starts[0]["0.weight"], starts[1]["0.weight"])
    # the MAP stage's seconds count in the ensemble's: more than the members' own fits
    assert result.elapsed_s > sum(m.elapsed_s for m in result.members)
    # the default: members with a spread start at their MAP fits, MAP members from torch's initialisation
    short = {**options, "num_steps": 2}
    assert pb.ensemble(small_model(), "meanfield", (x, y), **short).config["init"] == "map"
    assert maps.config["init"] == "reset"


def test_members_started_at_their_map_fits_reach_the_exact_posterior() -> None:
    # On the conjugate model every MAP fit finds the one mode, the posterior mean; full-rank members
    # started there (scale init_scale) then fit the exact posterior. Tolerances as test_exact's
    # single full-rank fit: means within 0.06 sd (observed <= 0.020 over seeds 0-2, plus the MC error
    # of 20,000 draws, 0.007 sd), sds within 5% (observed <= 1.6%), the correlation of -0.92 within
    # 0.02 (observed <= 0.002).
    x, y, sigma, m, _, cov, _ = conjugate_regression()
    sd = cov.diag().sqrt()
    corr = (cov[0, 1] / sd.prod()).item()
    result = pb.ensemble(
        linear_model(sigma), "fullrank", (x, y), num_members=2, init="map", num_steps=2000, lr=0.05, progress=False
    )
    for member in result.members:
        draws = member.guide.sample(20000, seed=1)["weight"].reshape(20000, -1).double()
        c = torch.cov(draws.T)
        s = c.diag().sqrt()
        assert ((draws.mean(0) - m).abs() / sd).max() < 0.06
        assert ((s / sd) - 1).abs().max() < 0.05
        assert abs((c[0, 1] / s.prod()).item() - corr) < 0.02


def test_a_member_that_diverges_is_left_out_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = small_task()
    real_fit = members_module.fit
    calls = []

    def fit_that_fails_once(*args, **kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 2:
            raise pb.FitError("the loss became NaN at step 3", step=3, history=pb.History(*[np.zeros(0)] * 5))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(members_module, "fit", fit_that_fails_once)
    with pytest.warns(pb.FitWarning, match="member 1 of 3 .* left out: the loss became NaN"):
        result = pb.ensemble(small_model(), "flow", (x, y), num_members=3, num_steps=3, progress=False, check=False)
    assert dict(result.left_out) == {1: "the loss became NaN at step 3"}
    assert result.guide.num_members == 2
    assert result.config["member_seeds"] == [calls[0], calls[2]]


def test_a_member_whose_map_start_diverges_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = small_task()
    real = ensemble_module.map_starts

    def one_fails(model, data, seeds, *args, **kwargs):
        results, failures, elapsed = real(model, data, seeds, *args, **kwargs)
        return [results[0], results[2]], {**failures, 1: "the loss became NaN at step 7"}, elapsed

    monkeypatch.setattr(ensemble_module, "map_starts", one_fails)
    options = {"num_members": 3, "num_steps": 5, "progress": False, "check": False}
    with pytest.warns(pb.FitWarning, match="member 1 of 3 .* left out: its MAP start diverged: the loss became NaN"):
        result = pb.ensemble(small_model(), "meanfield", (x, y), **options)
    assert list(result.left_out) == [1] and result.guide.num_members == 2
    seeds = pb.ensemble(small_model(), "map", (x, y), **options).config["member_seeds"]
    assert result.config["member_seeds"] == [seeds[0], seeds[2]]


def test_a_diverging_member_of_a_batch_is_frozen_and_left_out() -> None:
    from pyrobnn.infer._batched import fit_batch

    x, y = small_task()
    model = small_model()
    guides = [pb.guides.make_guide("map", model, init="reset") for _ in range(3)]
    with torch.no_grad():
        guides[1].value["0__weight"].fill_(float("nan"))
    y = y.reshape(-1)
    run = fit_batch(model, guides, x, y, num_steps=20, lr=0.01, lr_decay=1.0, num_particles=1)
    assert list(run.failures) == [1] and "step 0" in run.failures[1]
    assert run.histories[1] is None and run.histories[0] is not None
    assert all(np.isfinite(h.loss).all() for h in (run.histories[0], run.histories[2]))
    assert torch.isfinite(guides[0].median()["0.weight"]).all()


def test_a_low_rank_member_whose_covariance_no_longer_factorises_is_left_out() -> None:
    # An infinite factor fails the Cholesky of the whole batch's capacitance matrices inside torch. The
    # fit must find the member, stop it and go on with the others, as for a NaN loss.
    from pyrobnn.infer._batched import fit_batch

    x, y = small_task()
    model = small_model()
    guides = [pb.guides.make_guide("lowrank", model, init="reset") for _ in range(3)]
    with torch.no_grad():
        guides[1].auto.cov_factor.fill_(float("inf"))
    run = fit_batch(model, guides, x, y.reshape(-1), num_steps=20, lr=0.01, lr_decay=1.0, num_particles=4)
    assert list(run.failures) == [1] and "could no longer be factorised at step 0" in run.failures[1]
    assert run.histories[1] is None and all(len(run.histories[m]) == 20 for m in (0, 2))  # type: ignore[arg-type]
    assert all(np.isfinite(run.histories[m].loss).all() for m in (0, 2))  # type: ignore[union-attr]
    assert all(torch.isfinite(guides[m].auto.cov_factor).all() for m in (0, 2))


def test_best_keeps_the_member_with_the_highest_elbo() -> None:
    # Eight mean-field fits of an 8-unit tanh net from independent weights end in optima whose ELBOs
    # differ by far more than their estimates' noise; best() must return the highest, judged again
    # with 4096 fresh particles (se about 0.1 nats per member).
    x, y = small_task()
    model = small_model()
    runs = pb.ensemble(model, "meanfield", (x, y), num_members=8, num_steps=600, init="reset", progress=False)
    ends = runs.member_elbos()
    assert ends.shape == (8,)
    np.testing.assert_allclose(ends, [m.final_elbo() for m in runs.members])
    best = runs.best()
    assert best is runs.members[int(np.argmax(ends))]
    precise = [pb.estimate_elbo(model, m.guide, x, y, num_particles=4096)[0].elbo for m in runs.members]
    assert np.ptp(precise) > 2, "the members found one optimum: the test would not tell a ranking from chance"
    # The fits' own end (the mean of their last 30 step estimates) lies within 0.5 nats of the precise
    # ELBO here, so the member it picks is within 1 nat of the precise best.
    assert precise[runs.members.index(best)] >= max(precise) - 1.0


def test_laplace_members_are_ranked_by_their_log_evidence() -> None:
    x, y = small_task()
    runs = pb.ensemble(small_model(), "laplace", (x, y), num_members=3, num_steps=300, progress=False, check=False)
    evidence = [float(m.guide.log_evidence) for m in runs.members]
    np.testing.assert_allclose(runs.member_elbos(), evidence)
    assert runs.best() is runs.members[int(np.argmax(evidence))]


# ------------------------------------------------------------------ weights
def test_point_masses_weigh_equally_unless_held_out_data_decide() -> None:
    x, y = small_task()
    xv, yv = small_task(seed=1)
    args = (small_model(), "map", (x, y))
    kw = dict(num_members=3, num_steps=200, progress=False, check=False)
    equal = pb.ensemble(*args, **kw)
    assert equal.guide.weights_from == "equal" and equal.guide.equal_weights
    held = pb.ensemble(*args, **kw, holdout=(xv, yv))
    assert held.guide.weights_from == "holdout"
    assert math.isclose(float(held.guide.weights.sum()), 1.0, abs_tol=1e-9)
    with pytest.raises(ValueError, match=r"point masses.*holdout=\(x_val, y_val\)"):
        pb.ensemble(*args, **kw, weights="stacking")
    user = pb.ensemble(*args, **kw, weights=[0.2, 0.3, 0.5])
    assert user.guide.weights_from == "user" and user.guide.weights.tolist() == [0.2, 0.3, 0.5]


def test_stacking_on_loo_where_the_khats_allow_it() -> None:
    # A conjugate linear model: mean-field members have a spread and 40 points leave every LOO
    # Pareto k well below 0.7, so the weights come from PSIS-LOO.
    x, y, sigma, *_ = conjugate_regression()
    result = pb.ensemble(linear_model(sigma), "meanfield", (x, y), num_members=2, num_steps=500, progress=False)
    assert result.guide.weights_from == "loo"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_members": 1}, ValueError, "num_members >= 2"),
        ({"kind": "meanfeild"}, ValueError, "did you mean 'meanfield'"),
        ({"kind": "ensemble"}, ValueError, "unknown member kind"),
        ({"init": "pretrained"}, ValueError, "would not be independent"),
        ({"init": "mode"}, ValueError, r"init must be one of \('reset', 'prior', 'map'\)"),
        ({"init": "map"}, ValueError, "members fit one themselves and start with init='reset'"),
        ({"weights": "best"}, ValueError, "weights must be one of"),
        ({"weights": [0.7, 0.7]}, ValueError, "sum to 1.4"),
        ({"kind": "flow", "batched": True}, ValueError, "batched=True needs members of kind map, meanfield"),
    ],
)
def test_bad_ensemble_arguments(kwargs: dict, error: type, match: str) -> None:
    x, y = small_task()
    kind = kwargs.pop("kind", "map")
    with pytest.raises(error, match=match):
        pb.ensemble(small_model(), kind, (x, y), **{"num_members": 2, "num_steps": 2, "progress": False, **kwargs})


def test_a_model_with_parameters_outside_the_prior_is_refused() -> None:
    x, y = small_task()
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model = pb.BayesianModel(pb.lift(net, exclude="2.*"), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(ValueError, match="lift every parameter"):
        pb.ensemble(model, "map", (x, y), num_members=2, num_steps=2, progress=False)


# ------------------------------------------------------------------ the stages that take it
def test_export_writes_members_as_chains_and_save_load_round_trips(tmp_path) -> None:
    x, y = small_task()
    result = pb.ensemble(small_model(), "map", (x, y), num_members=3, num_steps=50, progress=False, check=False)
    idata = pb.to_arviz(result, x, y, num_samples=20, seed=0)
    assert idata.posterior.sizes["chain"] == 3 and idata.posterior.sizes["draw"] == 20
    assert idata.elbo_history.sizes["chain"] == 3  # each member's own history
    for c, member in enumerate(result.members):
        first = idata.posterior["0.weight"].values[c, 0]
        np.testing.assert_allclose(first, member.guide.median()["0.weight"].numpy(), rtol=1e-6)
    path = tmp_path / "ensemble.pt"
    pb.save(path, result)
    loaded = pb.load(path, small_model())
    assert isinstance(loaded.source, Ensemble) and loaded.source.weights_from == "equal"
    before = result.posterior().predict(x, num_samples=30, seed=4).mean
    torch.testing.assert_close(loaded.predict(x, num_samples=30, seed=4).mean, before)


def test_unequal_weights_export_one_chain_of_the_mixture() -> None:
    x, y = small_task()
    result = pb.ensemble(
        small_model(), "map", (x, y), num_members=2, num_steps=20, progress=False, check=False, weights=[0.9, 0.1]
    )
    idata = pb.to_arviz(result, x, y, num_samples=20, seed=0)
    assert idata.posterior.sizes["chain"] == 1
    assert list(idata.posterior.attrs["ensemble_weights"]) == pytest.approx([0.9, 0.1])
    # 18 of the 20 draws are member 0's point, 2 member 1's
    draws = idata.posterior["2.bias"].values.reshape(-1)
    _, counts = np.unique(draws, return_counts=True)
    assert sorted(counts.tolist()) == [2, 18]


def test_compare_takes_an_ensemble() -> None:
    x, y = small_task()
    xt, yt = small_task(seed=2)
    deep = pb.ensemble(small_model(), "map", (x, y), num_members=2, num_steps=50, progress=False, check=False)
    mf = pb.ensemble(small_model(), "meanfield", (x, y), num_members=2, num_steps=50, progress=False, check=False)
    table = pb.compare({"deep": deep, "mf": mf}, xt, yt, train=(x, y), num_samples=50)
    assert math.isnan(table.loc["deep", "final_elbo"]) and math.isnan(table.loc["mf", "final_elbo"])
    assert table.loc["deep", "fit_seconds"] == pytest.approx(deep.elapsed_s)
    # an ensemble of MAP fits is K point masses: no PSIS-LOO, no k-hat; mean-field members have both
    assert math.isnan(table.loc["deep", "elpd_loo"]) and math.isnan(table.loc["deep", "khat"])
    assert math.isfinite(table.loc["mf", "elpd_loo"]) and math.isfinite(table.loc["mf", "khat"])
