"""Local reparameterisation (``MeanFieldGuide(local_reparam=True)``) checked against closed forms.

For one ``nn.Linear(d, 1)`` under a Gaussian likelihood with known noise σ and a
mean-field q with locations m and scales s, every quantity the estimator targets
has a closed form:

    E_q[log p(y | x, θ)] = Σᵢ log N(yᵢ | m·xᵢ + m_b, σ²) − (Σⱼ xᵢⱼ² sⱼ² + s_b²) / (2σ²),

the KL is the Gaussian one, and the variance of the log-likelihood estimator is
that of a quadratic form in Gaussians (see :func:`log_lik_variances`). The
references are computed in float64 inside each test; Monte Carlo tolerances are
in standard errors computed from the samples themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyrobnn as pb
from pyrobnn._globs import module_key as _key
from pyrobnn.guides import MeanFieldGuide
from pyrobnn.infer._local_reparam import LocalReparamMessenger

SIGMA = 0.5  # the likelihood's known noise scale
PRIOR_SCALE = 0.7  # not 1, so that a KL ignoring the prior's scale is caught


# --------------------------------------------------------------------------- helpers
def regression_data(n: int = 64, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with a common offset (so the rows' errors correlate under a shared weight draw)."""
    g = torch.Generator().manual_seed(seed)
    x = 1.0 + torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.linspace(-1.0, 1.0, d, dtype=torch.float64) + SIGMA * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def gaussian_model(net: nn.Module, **lift_options: Any) -> pb.BayesianModel:
    bnet = pb.lift(net, prior=pb.priors.Normal(0.0, PRIOR_SCALE), **lift_options)
    return pb.BayesianModel(bnet, pb.likelihoods.Gaussian(scale=SIGMA)).double()


def set_guide(guide: MeanFieldGuide, seed: int = 1, scales: tuple[float, float] = (0.2, 0.6)) -> None:
    """Give every site random locations and scales in ``scales`` (the scales set through softplus⁻¹)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = scales
    with torch.no_grad():
        for name in guide.site_names:
            loc, raw = guide.loc[_key(name)], guide.raw_scale[_key(name)]
            loc.copy_(0.5 * torch.randn(loc.shape, generator=g, dtype=loc.dtype))
            scale = lo + (hi - lo) * torch.rand(raw.shape, generator=g, dtype=raw.dtype)
            raw.copy_(scale.expm1().log())


def copy_guide(guide: MeanFieldGuide, model: pb.BayesianModel, **options: Any) -> MeanFieldGuide:
    """A guide with the same parameters, built with other options (default: weights drawn)."""
    other = MeanFieldGuide(model, **options)
    other.load_state_dict(guide.state_dict())
    return other


def linear_q(guide: MeanFieldGuide) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(m_w, m_b, s_w, s_b) of a single-Linear model's guide, differentiable in its parameters."""
    weight, bias = (next(n for n in guide.site_names if n.endswith(part)) for part in ("weight", "bias"))
    m_w, m_b = guide.loc[_key(weight)].reshape(-1), guide.loc[_key(bias)]
    s_w, s_b = (F.softplus(guide.raw_scale[_key(name)]).reshape(-1) for name in (weight, bias))
    return m_w, m_b, s_w, s_b


def closed_form_terms(guide: MeanFieldGuide, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact E_q[log-likelihood] and KL(q ‖ p) of a single-Linear model."""
    m_w, m_b, s_w, s_b = linear_q(guide)
    mean = x @ m_w + m_b
    var = x.square() @ s_w.square() + s_b.square()
    log_lik = (torch.distributions.Normal(mean, SIGMA).log_prob(y) - var / (2 * SIGMA**2)).sum()
    m, s = torch.cat([m_w, m_b]), torch.cat([s_w, s_b])
    kl = (math.log(PRIOR_SCALE) - s.log() + (s.square() + m.square()) / (2 * PRIOR_SCALE**2) - 0.5).sum()
    return log_lik, kl


def log_lik_variances(guide: MeanFieldGuide, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Exact variances of the single-particle log-likelihood estimate: (local, weight-sampled).

    The residuals e = y − X̃θ (X̃ = [x, 1]) are Normal with mean r = y − X̃m and
    covariance A = X̃ diag(s²) X̃ᵀ when the weights are drawn once for the batch, so
    Var(Σ eᵢ²) = 2 tr(A²) + 4 rᵀAr. Local reparameterisation draws each row's
    pre-activation independently: the same with A replaced by its diagonal.
    The log-likelihood is −Σ eᵢ² / (2σ²) plus a constant.
    """
    with torch.no_grad():
        m_w, m_b, s_w, s_b = linear_q(guide)
        design = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        a = (design * torch.cat([s_w, s_b]).square()) @ design.T
        r = y - design @ torch.cat([m_w, m_b])
        v = a.diagonal()
        local = (2 * v.square() + 4 * r.square() * v).sum() / (4 * SIGMA**4)
        weight = (2 * (a @ a).trace() + 4 * r @ a @ r) / (4 * SIGMA**4)
    return local.item(), weight.item()


def elbo_draws(
    model: pb.BayesianModel,
    guide: MeanFieldGuide,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_particles: int,
    num_batches: int,
    grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``num_batches`` independent estimates: log-likelihoods, KLs and (optionally) ∇ELBO per batch.

    Each batch averages ``num_particles`` vectorized particles; the gradient is of
    the ELBO (−loss) with respect to the guide's parameters, flattened.
    """
    elbo = pb.ELBO(num_particles=num_particles, vectorize_particles=True)
    params = list(guide.parameters())
    log_liks, kls, grads = [], [], []
    with pyro.settings.context(module_local_params=True), torch.set_grad_enabled(grad):
        for _ in range(num_batches):
            loss = elbo.differentiable_loss(model, guide, x, y)
            assert elbo.last is not None
            log_liks.append(elbo.last.log_likelihood)
            kls.append(elbo.last.kl)
            if grad:
                grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(-loss, params)]))
    log_lik, kl = torch.tensor(log_liks, dtype=torch.float64), torch.tensor(kls, dtype=torch.float64)
    return log_lik, kl, torch.stack(grads) if grad else None


def standard_error(values: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean over dim 0."""
    return values.std(0) / math.sqrt(values.shape[0])


def variance_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Sample variance and its standard error, sqrt((m₄ − var²)/n), from the samples' fourth moment."""
    centred = values - values.mean()
    var = centred.square().mean()
    m4 = centred.pow(4).mean()
    return var.item(), ((m4 - var.square()) / len(values)).sqrt().item()


#: The single-Linear model on the vmap path (a bare nn.Linear), on the MLP fast path (an
#: nn.Sequential of it), and as one non-vectorized particle per evaluation (neither).
SINGLE_LINEAR = {
    "vmap": (lambda: nn.Linear(3, 1), 64),
    "fastpath": (lambda: nn.Sequential(nn.Linear(3, 1)), 64),
    "one-particle": (lambda: nn.Linear(3, 1), 1),
}


def single_linear(path: str) -> tuple[pb.BayesianModel, MeanFieldGuide, int]:
    make_net, num_particles = SINGLE_LINEAR[path]
    model = gaussian_model(make_net())
    guide = MeanFieldGuide(model, local_reparam=True)
    set_guide(guide)
    return model, guide, num_particles


# --------------------------------------------------------------------------- 1. the estimator
@pytest.mark.parametrize("path", list(SINGLE_LINEAR))
def test_the_expected_log_likelihood_is_the_closed_form(path: str) -> None:
    model, guide, num_particles = single_linear(path)
    assert model.net.fast_path == (path == "fastpath")
    x, y = regression_data()
    num_batches = 200 if num_particles > 1 else 1000
    log_lik, _, _ = elbo_draws(model, guide, x, y, num_particles=num_particles, num_batches=num_batches)
    exact, _ = closed_form_terms(guide, x, y)
    m_w, m_b, _, _ = linear_q(guide)
    plug_in = torch.distributions.Normal(x @ m_w + m_b, SIGMA).log_prob(y).sum()
    mean, se = log_lik.mean(), standard_error(log_lik)
    # The weight uncertainty costs plug_in − exact = 126 nats here, 58 standard errors or more:
    # an estimator that dropped or mis-scaled the pre-activation noise would be far off.
    assert plug_in - exact > 40 * se
    # Unbiased: within 5 standard errors (se = 0.64 nats from 12,800 particles, 2.2 from 1,000
    # single particles; observed |z| ≤ 0.61; a false alarm has probability 6e-7).
    assert abs(mean - exact) < 5 * se


@pytest.mark.parametrize("path", list(SINGLE_LINEAR))
def test_the_kl_is_the_closed_form_gaussian_kl(path: str) -> None:
    model, guide, num_particles = single_linear(path)
    x, y = regression_data()
    _, kl, _ = elbo_draws(model, guide, x, y, num_particles=num_particles, num_batches=3)
    _, exact = closed_form_terms(guide, x, y)
    torch.testing.assert_close(kl, exact.detach().expand(3))  # float64: no Monte Carlo in it
    # …and the KL a weight-drawing guide with the same parameters uses.
    _, kl_drawn, _ = elbo_draws(model, copy_guide(guide, model), x, y, num_particles=num_particles, num_batches=1)
    torch.testing.assert_close(kl_drawn, kl[:1])


@pytest.mark.parametrize("path", ["vmap", "fastpath"])
def test_the_elbo_gradient_is_unbiased(path: str) -> None:
    model, guide, _ = single_linear(path)
    x, y = regression_data()
    _, _, grads = elbo_draws(model, guide, x, y, num_particles=64, num_batches=200, grad=True)
    assert grads is not None
    log_lik, kl = closed_form_terms(guide, x, y)
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(log_lik - kl, list(guide.parameters()))])
    mean, se = grads.mean(0), standard_error(grads)
    assert (se > 0).all()  # every location and scale gets a noisy likelihood gradient
    # Each of the 8 components within 5 of its standard errors (observed |z| ≤ 2.2; family-wise
    # false alarm < 5e-6); the exact components are 6 to 1,400 standard errors from zero.
    assert ((mean - exact).abs() / se).max() < 5
    # The likelihood's part matters: the KL's gradient alone is far from the estimate.
    _, kl_only = closed_form_terms(guide, x, y)
    kl_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(-kl_only, list(guide.parameters()))])
    assert ((mean - kl_grad).abs() / se).max() > 20


@pytest.mark.parametrize("path", list(SINGLE_LINEAR))
def test_the_variances_are_their_closed_forms_and_local_is_lower_on_correlated_rows(path: str) -> None:
    model, local, num_particles = single_linear(path)
    drawn = copy_guide(local, model)
    x, y = regression_data(n=64)
    exact_local, exact_drawn = log_lik_variances(local, x, y)
    # The inputs share an offset, so a shared weight draw moves all 64 residuals together:
    # the exact variances differ by a factor of 18.9 (it grows with the number of rows).
    # (Not a law: where the rows' terms under a shared draw cancel, as at the optimum of a
    # small full-batch fit, the local estimator is the noisier one; notebook 1 shows it.)
    assert exact_drawn / exact_local > 15
    variances = {}
    for name, guide, exact in [("local", local, exact_local), ("drawn", drawn, exact_drawn)]:
        num_batches = 1500 if num_particles == 1 else 600  # sample variances within 6.5% (1 s.e.)
        log_lik, _, _ = elbo_draws(model, guide, x, y, num_particles=num_particles, num_batches=num_batches)
        var, se = variance_and_se(log_lik)
        var, se = var * num_particles, se * num_particles  # a mean of P particles has 1/P of the variance
        # Each estimator's variance is its closed form, within 5 standard errors of the sample
        # variance (from the samples' fourth moment; observed |z| ≤ 1.04).
        # For the local estimator this pins the independence of the rows' noise.
        assert abs(var - exact) < 5 * se, name
        variances[name] = var
    # The factor itself (observed 18.9 to 20.2). Both variances 5 standard errors off in opposite
    # directions would still leave 18.9 · (1 − 5·0.065) / (1 + 5·0.065) = 9.6.
    assert variances["drawn"] / variances["local"] > 8


class TwoLayer(nn.Module):
    """Linear-ReLU-Linear, not an nn.Sequential: it runs on the vmap path."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


@pytest.mark.parametrize(
    "make_net",
    [lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), TwoLayer],
    ids=["fastpath", "vmap"],
)
def test_a_two_layer_net_has_the_same_expected_log_likelihood_with_weights_drawn(
    make_net: Callable[[], nn.Module],
) -> None:
    """No closed form beyond one layer; unbiasedness means agreeing with the weight-drawing estimator."""
    model = gaussian_model(make_net())
    local = MeanFieldGuide(model, local_reparam=True)
    assert local.local_sites == model.net.site_names  # every site: both layers run on their means plus noise
    set_guide(local, scales=(0.1, 0.4))
    drawn = copy_guide(local, model)
    x, y = regression_data()
    estimates = {}
    for name, guide in [("local", local), ("drawn", drawn)]:
        log_lik, _, _ = elbo_draws(model, guide, x, y, num_particles=64, num_batches=100)
        estimates[name] = (log_lik.mean(), standard_error(log_lik))
    (mean_local, se_local), (mean_drawn, se_drawn) = estimates["local"], estimates["drawn"]
    se = math.hypot(se_local, se_drawn)
    # At the locations the net fits 305 nats better (35 of these standard errors), so the
    # check has power: a pre-activation std 10% too large moves the local estimate 9 of them.
    with torch.no_grad():
        at_loc = model.net.run(local.median(), x).squeeze(-1)
    plug_in = torch.distributions.Normal(at_loc, SIGMA).log_prob(y).sum()
    assert plug_in - mean_local > 20 * se
    # Both unbiased for the same expectation: within 5 standard errors of their difference
    # (se ≈ 8.8 nats, mostly the weight-drawing estimator's; observed |z| = 1.4).
    assert abs(mean_local - mean_drawn) < 5 * se


def test_an_all_zero_input_row_gives_finite_gradients() -> None:
    """A zero row with a deterministic bias has zero pre-activation variance: no sqrt(0) gradient."""
    model = gaussian_model(nn.Linear(3, 1), exclude="bias")
    guide = MeanFieldGuide(model, local_reparam=True)
    x, y = regression_data(n=8)
    x[0] = 0.0
    loss = pb.ELBO(num_particles=4).differentiable_loss(model, guide, x, y)
    grads = torch.autograd.grad(loss, list(guide.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------- 2. which layers
class Tied(nn.Module):
    """Two Linear layers sharing one weight tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(torch.tanh(self.a(x))))


class Bilinear(nn.Linear):
    """A Linear subclass: it may use its weight outside forward, so it is never covered."""


@pytest.mark.parametrize(
    ("make_net", "lift_options", "expected"),
    [
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)),
            {},
            ["0.weight", "0.bias", "2.weight", "2.bias"],
        ),
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)),
            {"exclude": "0.bias"},
            ["0.weight", "2.weight", "2.bias"],
        ),
        (lambda: nn.Sequential(nn.Conv1d(2, 1, 3), nn.Flatten(), nn.Linear(3, 1)), {}, ["2.weight", "2.bias"]),
        (lambda: nn.Sequential(Bilinear(3, 4), nn.Tanh(), nn.Linear(4, 1)), {}, ["2.weight", "2.bias"]),
        (Tied, {}, ["head.weight", "head.bias"]),
        (
            lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)),
            {},
            ["0.weight", "0.bias", "2.weight", "2.bias"],
        ),
    ],
    ids=["mlp", "deterministic-bias", "conv-then-linear", "linear-subclass", "tied", "layernorm"],
)
def test_local_sites_are_the_random_parameters_of_plain_untied_linear_layers(
    make_net: Callable[[], nn.Module], lift_options: dict[str, Any], expected: list[str]
) -> None:
    model = gaussian_model(make_net(), **lift_options)
    assert model.net.local_sites == expected
    assert model.net.no_local_reason is None
    guide = MeanFieldGuide(model, local_reparam=True)
    assert guide.local_sites == expected
    assert f"local_reparam={len(expected)} sites" in repr(guide)
    assert MeanFieldGuide(model).local_sites == []  # off by default


# --------------------------------------------------------------------------- 3. guards
def test_local_reparameterisation_needs_the_analytic_kl() -> None:
    model = gaussian_model(nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"local_reparam=True needs kl='analytic'.*no value for a Monte Carlo KL"):
        MeanFieldGuide(model, kl="mc", local_reparam=True)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            lambda: gaussian_model(nn.Sequential(nn.Conv1d(2, 1, 3), nn.Flatten())),
            r"no nn\.Linear layer \(with untied parameters\) has a random parameter",
        ),
        (
            lambda: gaussian_model(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))),
            "batch normalisation makes the rows of a batch interact",
        ),
        (
            lambda: gaussian_model(nn.Sequential(nn.Conv1d(2, 1, 3), nn.Flatten(), nn.Linear(3, 1)), sites="0.*"),
            r"no nn\.Linear layer \(with untied parameters\) has a random parameter",
        ),
    ],
    ids=["conv-only", "batchnorm", "linear-deterministic"],
)
def test_a_net_without_eligible_layers_is_refused_with_the_reason(
    model: Callable[[], pb.BayesianModel], reason: str
) -> None:
    with pytest.raises(
        ValueError, match=rf"found no layer to reparameterise locally \({reason}\).*local_reparam=False"
    ):
        MeanFieldGuide(model(), local_reparam=True)


def test_a_guide_covering_no_linear_site_is_refused() -> None:
    bnet = pb.lift(nn.Linear(3, 1))
    model = pb.BayesianModel(bnet, pb.likelihoods.Gaussian(scale="learn"))
    with pytest.raises(ValueError, match=r"\(this guide covers none of their random parameters\)"):
        MeanFieldGuide(model, sites=["likelihood.scale"], local_reparam=True)


def test_a_prior_without_a_closed_form_kl_is_refused() -> None:
    bnet = pb.lift(nn.Linear(3, 1), prior=pb.priors.StudentT(3.0, 0.0, 1.0))
    model = pb.BayesianModel(bnet, pb.likelihoods.Gaussian(scale=SIGMA))
    with pytest.raises(
        ValueError, match=r"closed-form KL\(q \|\| p\) at site 'weight'.*prior StudentT.*pb\.priors\.Normal"
    ):
        MeanFieldGuide(model, local_reparam=True)


class Twice(nn.Module):
    """One Linear applied twice in a forward pass: its rows' outputs share one weight draw."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


class Pooled(nn.Module):
    """A Linear applied at every position of a sequence, then averaged."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).mean(dim=1)


class Functional(nn.Module):
    """A Linear whose weights are used through F.linear, never by calling the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.lin.weight, self.lin.bias)


@pytest.mark.parametrize("num_particles", [1, 4], ids=["one-particle", "vectorized"])
@pytest.mark.parametrize(
    ("make_net", "x", "message"),
    [
        (
            Twice,
            torch.randn(6, 3),
            r"each nn\.Linear layer it covers to run once per forward pass, but layer 'lin' ran 2 times",
        ),
        (
            Pooled,
            torch.randn(6, 5, 4),
            r"layer 'lin' got an input of shape \(6, 5, 4\) for 6 observations \(it needs \(6, in_features\)\)",
        ),
        (
            Functional,
            torch.randn(6, 3),
            r"layer 'lin' ran 0 times: its weights are used without calling the layer",
        ),
    ],
    ids=["reused-layer", "sequence-input", "functional-use"],
)
def test_what_only_a_forward_pass_shows_raises_at_the_first_step(
    make_net: Callable[[], nn.Module], x: torch.Tensor, message: str, num_particles: int
) -> None:
    model = pb.BayesianModel(pb.lift(make_net()), pb.likelihoods.Gaussian(scale=SIGMA))
    MeanFieldGuide(model, local_reparam=True)  # the guide cannot know yet
    y = torch.randn(6)
    with pytest.raises(ValueError, match=rf"{message}.*local_reparam=False"):
        pb.fit(model, "meanfield", (x, y), num_steps=1, num_particles=num_particles, local_reparam=True, progress=False)
    # The failed pass left nothing behind: no noise hook on the layer, no handler on Pyro's stack.
    assert not model.net.net.lin._forward_hooks
    assert not pyro.poutine.runtime.am_i_wrapped()
    # …so the same model still fits with weights drawn.
    pb.fit(model, "meanfield", (x, y), num_steps=1, num_particles=num_particles, progress=False)


@pytest.mark.parametrize(
    ("fn", "error", "message"),
    [
        (
            lambda: pyro.distributions.Laplace(torch.zeros(3), 1.0).to_event(1),
            TypeError,
            r"site 'w' is marked infer=\{'local_reparam': True\}, which needs q to be a Normal.*it is Laplace",
        ),
        (
            lambda: pyro.distributions.Normal(torch.zeros(4, 3), 1.0).to_event(1),
            ValueError,
            r"site 'w': local reparameterisation needs one q per weight, shared by every draw.*\(4,\)",
        ),
    ],
    ids=["not-normal", "batched-q"],
)
def test_the_handler_refuses_a_marked_site_it_cannot_reparameterise(
    fn: Callable[[], Any], error: type[Exception], message: str
) -> None:
    """The mark is the guide's promise of one Normal per weight; the handler checks it."""
    with pytest.raises(error, match=message), LocalReparamMessenger():
        pyro.sample("w", fn(), infer={"local_reparam": True})


# --------------------------------------------------------------------------- 4. outside the ELBO
def wide_model() -> tuple[pb.BayesianModel, MeanFieldGuide]:
    model = gaussian_model(nn.Linear(40, 25))  # 1,000 weights: their spread is measurable from one draw
    guide = MeanFieldGuide(model, local_reparam=True)
    set_guide(guide)
    return model, guide


def test_outside_the_elbo_the_guide_draws_real_weights() -> None:
    _, guide = wide_model()
    loc, scale = guide.loc["weight"], guide.scales()["weight"]
    draws = [guide()["weight"].detach(), guide.sample(1, seed=0)["weight"][0]]
    for draw in draws:
        z = ((draw - loc) / scale).reshape(-1)
        # Standardised draws are N(0, 1): 1,000 of them have mean within 5/√1000 = 0.16 of 0
        # and standard deviation within 5·√(1/2000) = 0.11 of 1.
        assert abs(z.mean().item()) < 0.16
        assert abs(z.std().item() - 1) < 0.11
    assert not torch.equal(draws[0], draws[1])
    # Inside an ELBO's scope the same guide leaves the weights at their locations for the network.
    with LocalReparamMessenger() as scope:
        inside = guide()["weight"]
    torch.testing.assert_close(inside, loc)
    assert set(scope.sites) == {"weight", "bias"}
    torch.testing.assert_close(scope.sites["weight"][1], scale)


def test_predictions_draw_weights_shared_by_all_rows() -> None:
    """Two identical rows get identical outputs per draw with real weights, independent ones with local noise."""
    model, guide = wide_model()
    x = torch.randn(1, 40, dtype=torch.float64).expand(2, 40)
    prediction = pb.Posterior(model, guide).predict(x, num_samples=4000, seed=0)
    torch.testing.assert_close(prediction.output[:, 0], prediction.output[:, 1])
    # …with the spread of q: Var(w·x + b) = Σ x² s² + s_b² per output, within 5 standard errors of
    # the sample variance of 4,000 Normal draws (√(2/4000) = 2.2% relative).
    m_w, s_w, s_b = guide.loc["weight"], guide.scales()["weight"], guide.scales()["bias"]
    exact_var = x[0].square() @ s_w.square().T + s_b.square()
    ratio = prediction.output[:, 0].var(0) / exact_var
    assert ((ratio - 1).abs() < 5 * math.sqrt(2 / 4000)).all()
    z = (prediction.mean[0] - (x[0] @ m_w.T + guide.loc["bias"])) / (exact_var / 4000).sqrt()
    assert (z.abs() < 5).all()  # and the mean of q's outputs, within 5 standard errors
    # The same network inside an ELBO's scope: the rows draw their pre-activations independently.
    with LocalReparamMessenger(), pyro.plate("particles", 4000, dim=-2), torch.no_grad():
        guide()
        inside = model.net(x)
    corr = torch.corrcoef(torch.stack([inside[:, 0, 0], inside[:, 1, 0]]))[0, 1]
    assert abs(corr.item()) < 5 / math.sqrt(4000)


# --------------------------------------------------------------------------- 5. fitting
# A local fit reaching the exact mean-field optimum of a conjugate regression is one case of
# tests/test_exact.py::test_meanfield_recovers_the_reverse_kl_optimum (id "local").


def test_the_mean_field_body_of_a_last_layer_flow_can_be_local() -> None:
    """make_flow_guide passes local_reparam to its mean-field part; the ELBO stays unbiased."""
    torch.manual_seed(0)
    model = gaussian_model(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))
    local = pb.guides.make_guide("flow", model, sites="last_layer", local_reparam=True, num_layers=1).double()
    flow, body = local.guides
    assert body.local_sites == ["0.weight", "0.bias"] and flow.site_names == ["2.weight", "2.bias"]
    set_guide(body, scales=(0.1, 0.4))
    drawn = pb.guides.make_guide("flow", model, sites="last_layer", num_layers=1).double()
    drawn.load_state_dict(local.state_dict())
    x, y = regression_data()
    estimates = {}
    for name, guide in [("local", local), ("drawn", drawn)]:
        log_lik, _, _ = elbo_draws(model, guide, x, y, num_particles=64, num_batches=100)
        estimates[name] = (log_lik.mean(), standard_error(log_lik))
    (mean_local, se_local), (mean_drawn, se_drawn) = estimates["local"], estimates["drawn"]
    # Both estimate the same expected log-likelihood: within 5 standard errors of their difference.
    assert abs(mean_local - mean_drawn) < 5 * math.hypot(se_local, se_drawn)
    assert se_local < se_drawn  # and the local one with less noise
    with pytest.raises(ValueError, match=r"applies to the mean-field part of a flow guide.*the flow covers every site"):
        pb.guides.make_guide("flow", model, sites="all", local_reparam=True)
