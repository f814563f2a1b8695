"""The guide interface every kind must honour, and the mean-field guide's specifics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrobnn as pb
from pyrobnn._globs import module_key as _key


def small_model(likelihood: pb.likelihoods.Likelihood | None = None) -> pb.BayesianModel:
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    return pb.BayesianModel(pb.lift(net), likelihood or pb.likelihoods.Gaussian(scale="learn"))


X = torch.randn(30, 3)
Y = X.sum(-1)


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 3, kernel_size=2)
        self.head = torch.nn.Linear(3 * 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x.unsqueeze(1))).flatten(1))


NETS = {
    "mlp": lambda: torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)),
    "no-bias": lambda: torch.nn.Sequential(
        torch.nn.Linear(3, 5, bias=False), torch.nn.Tanh(), torch.nn.Linear(5, 1, bias=False)
    ),
    "conv": ConvNet,
    "batchnorm": lambda: torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 1)
    ),
}

KINDS = {
    "meanfield": {},
    "meanfield-mc": {"kl": "mc"},
    "lowrank": {"rank": 2},
    "fullrank": {},
    "flow-iaf": {"flow": "iaf"},
    "flow-affine-last": {"flow": "affine_coupling", "sites": "last_layer"},
    "flow-spline": {"flow": "spline_coupling", "num_layers": 1},
    "map": {},
}


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_guide_contract(kind_name: str, net_name: str) -> None:
    torch.manual_seed(0)
    model = pb.BayesianModel(pb.lift(NETS[net_name]()), pb.likelihoods.Gaussian(scale="learn"))
    kind = kind_name.split("-")[0]
    guide = pb.guides.make_guide(kind, model, **KINDS[kind_name])
    sites = model.latent_sites()
    assert guide.site_names == list(sites) and sites["likelihood.scale"].shape == ()
    if net_name == "batchnorm":
        assert not any(name.startswith("1.") for name in sites)  # normalisation stays deterministic

    loss = pb.ELBO(num_particles=4)(model, guide)(X, Y)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in guide.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name

    draws = guide.sample(6, seed=0)
    assert {k: v.shape for k, v in draws.items()} == {k: (6, *s.shape) for k, s in sites.items()}
    assert torch.all(draws["likelihood.scale"] > 0)  # constrained sites are drawn on their support
    assert {k: v.shape for k, v in guide.median().items()} == {k: s.shape for k, s in sites.items()}
    q = guide.quantiles([0.05, 0.5, 0.95])
    assert {k: v.shape for k, v in q.items()} == {k: (3, *s.shape) for k, s in sites.items()}
    assert all(torch.all(v[0] <= v[1]) and torch.all(v[1] <= v[2]) for v in q.values())
    for k, v in q.items():
        torch.testing.assert_close(v[1], guide.median()[k])
    log_q = guide.log_prob(draws)
    assert log_q.shape == (6,)
    if kind == "map":
        assert torch.all(log_q == 0)  # draws sit on the point mass
    else:
        assert torch.isfinite(log_q).all()

    # state_dict round trip: a fresh guide loaded from it gives the identical loss under the same seed
    fresh = pb.guides.make_guide(kind, model, **{**KINDS[kind_name], "init": "prior"})
    fresh.load_state_dict(guide.state_dict())
    losses = []
    for g in (guide, fresh):
        torch.manual_seed(11)
        losses.append(pb.ELBO(num_particles=4).loss(model, g, X, Y))
    assert losses[0] == losses[1]
    assert repr(guide)

    result = pb.fit(model, guide, (X, Y), num_steps=3, num_particles=2, progress=False)
    assert np.isfinite(result.history.loss).all()


def test_joint_guide_log_prob_is_the_density_of_its_draws() -> None:
    """log q of a joint guide on the constrained scale: check it against a change of variables."""
    model = small_model()
    guide = pb.guides.make_guide("fullrank", model, init_scale=0.2)
    draws = guide.sample(5, seed=3)
    latent, log_det = guide.layout.pack(draws)  # type: ignore[union-attr]
    mvn = guide.posterior()  # type: ignore[operator]
    # likelihood.scale = exp(u): log q(θ) = log q(u) − log θ for that coordinate
    expected = mvn.log_prob(latent) - draws["likelihood.scale"].log()
    torch.testing.assert_close(guide.log_prob(draws), expected)
    torch.testing.assert_close(log_det, -draws["likelihood.scale"].log())


def test_flow_scope_and_size_errors() -> None:
    model = small_model()
    guide = pb.guides.make_guide("flow", model, sites="last_layer")
    assert [part.site_names for part in guide.guides] == [  # type: ignore[attr-defined]
        ["2.weight", "2.bias"],
        ["0.weight", "0.bias", "likelihood.scale"],
    ]
    assert pb.guides.make_guide("flow", model, sites=["0.*"]).guides[0].site_names == ["0.weight", "0.bias"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown flow 'maf'; valid flows are iaf, affine_coupling, spline_coupling"):
        pb.guides.make_guide("flow", model, flow="maf")
    with pytest.raises(ValueError, match=r"sites pattern 'head\.\*' matches no parameter"):
        pb.guides.make_guide("flow", model, sites="head.*")
    with pytest.raises(ValueError, match="a flow needs at least 2 latent dimensions in its scope, got D = 1"):
        pb.guides.make_guide("flow", model, sites="likelihood.scale")
    big = pb.BayesianModel(pb.lift(torch.nn.Linear(80, 40)), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(
        ValueError, match=r"an IAF over D = 3240 latent dimensions needs hidden width ≥ D.*sites='last_layer'"
    ):
        pb.guides.make_guide("flow", big, flow="iaf")
    with pytest.raises(
        ValueError, match=r"a full-rank guide over D = 3240 .*limit max_dim=1000\). Use make_guide\('lowrank'"
    ):
        pb.guides.make_guide("fullrank", big, max_dim=1000)
    mnist = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    wide = pb.BayesianModel(pb.lift(mnist), pb.likelihoods.Categorical())
    message = r"a flow \(affine_coupling\) over D = 407050 .* GiB with gradients and Adam state .*sites='last_layer'"
    with pytest.raises(ValueError, match=message):
        pb.guides.make_guide("flow", wide)
    with pytest.raises(ValueError, match="rank must be a positive integer, got 0"):
        pb.guides.make_guide("lowrank", model, rank=0)


@pytest.mark.parametrize(("hidden", "rank"), [(5, 4), (50, 12), (60, 13), (120, 19), (400, 25)])
def test_the_low_rank_default_is_root_d_up_to_25(hidden: int, rank: int) -> None:
    # round(√D) as Pyro's own default, capped: D = 3h + 1 + 1 (noise) latent values for 1-h-1 with a learned noise
    net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))
    guide = pb.guides.make_guide("lowrank", model)
    assert guide.num_latent == 3 * hidden + 2
    assert guide.rank == rank == min(round((3 * hidden + 2) ** 0.5), 25)
    assert guide.posterior().cov_factor.shape == (3 * hidden + 2, rank)
    assert guide.spec()["options"]["rank"] == rank  # a checkpoint rebuilds the rank chosen, not a new default


def test_a_flow_guide_is_a_flow_guide_over_any_sites() -> None:
    model = small_model()
    for sites in ("all", "last_layer", ["0.*"], None):
        guide = pb.guides.make_guide("flow", model, num_layers=1, **({} if sites is None else {"sites": sites}))
        assert type(guide) is pb.guides.FlowGuide and guide.site_names == list(model.latent_sites())
    whole = pb.guides.FlowGuide(model, num_layers=1)
    assert [part.site_names for part in whole.guides] == [list(model.latent_sites())]
    assert whole.hidden_dims == [54] and whole.layout.dim == 27 and whole.covariance().shape == (27, 27)


def test_scope_is_a_deprecated_alias_of_sites() -> None:
    model = small_model()
    with pytest.warns(DeprecationWarning, match=r"scope= is deprecated; use sites=.*since 0\.2\.0") as record:
        old = pb.guides.make_guide("flow", model, scope="last_layer", num_layers=1)
    assert record[0].filename == __file__  # the warning points at the caller, not at pyrobnn
    new = pb.guides.make_guide("flow", model, sites="last_layer", num_layers=1)
    assert type(old) is type(new)
    assert [p.site_names for p in old.guides] == [p.site_names for p in new.guides]  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"scope pattern 'head\.\*' matches no"):
        pb.guides.FlowGuide(model, scope="head.*")
    with pytest.raises(TypeError, match=r"both sites= and scope="):
        pb.guides.make_guide("flow", model, sites="last_layer", scope="last_layer")


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_a_guide_spec_rebuilds_the_guide(kind_name: str) -> None:
    model = small_model()
    kind = kind_name.split("-")[0]
    guide = pb.guides.make_guide(kind, model, **KINDS[kind_name])
    spec = guide.spec()
    assert spec["kind"] == kind
    rebuilt = pb.guides.make_guide(spec["kind"], model, **spec["options"])
    assert type(rebuilt) is type(guide) and rebuilt.spec() == spec
    rebuilt.load_state_dict(guide.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(guide.sample(3, seed=0)), guide.log_prob(guide.sample(3, seed=0)))


def test_a_guide_without_a_spec() -> None:
    model = small_model()

    class Wider(pb.guides.MeanFieldGuide):
        pass

    with pytest.raises(NotImplementedError, match=r"Wider inherits MeanFieldGuide\.spec, .*override spec"):
        Wider(model).spec()
    parts = [pb.guides.MeanFieldGuide(model, sites=[name]) for name in model.latent_sites()]
    with pytest.raises(NotImplementedError, match=r"GuideList has no spec"):
        pb.guides.GuideList(model, parts).spec()


def test_meanfield_log_prob_matches_a_direct_normal_density() -> None:
    model = small_model(pb.likelihoods.Gaussian(0.1))
    guide = pb.guides.make_guide("meanfield", model, init_scale=0.3)
    draws = guide.sample(5, seed=1)
    direct = sum(
        torch.distributions.Normal(guide.loc[_key(n)], guide.scales()[n]).log_prob(v).flatten(1).sum(1)
        for n, v in draws.items()
    )
    torch.testing.assert_close(guide.log_prob(draws), direct)


def test_pretrained_init_starts_at_the_network_weights() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(0.1))
    guide = pb.guides.make_guide("meanfield", model, init="pretrained", init_scale=0.05)
    for name, param in net.named_parameters():
        torch.testing.assert_close(guide.median()[name], param.detach())
        torch.testing.assert_close(guide.scales()[name], torch.full_like(param, 0.05))
    other = pb.guides.make_guide("meanfield", model, init="prior")
    assert not torch.equal(other.median()["0.weight"], net[0].weight.detach())


def test_analytic_kl_cuts_the_variance_of_the_elbo() -> None:
    model = small_model(pb.likelihoods.Gaussian(0.5))
    guide = pb.guides.make_guide("meanfield", model, init_scale=0.2)
    spread = {}
    for kl in ("analytic", "mc"):
        guide.analytic_kl = kl == "analytic"
        elbo = pb.ELBO(num_particles=1)
        terms = []
        for _ in range(200):
            elbo.loss(model, guide, X, Y)
            assert elbo.last is not None
            terms.append(elbo.last.kl)
        spread[kl] = np.std(terms)
    assert spread["analytic"] == 0.0  # closed form: no Monte Carlo noise at all
    assert spread["mc"] > 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "options"), [("lowrank", {"rank": 10}), ("flow", {"sites": "last_layer"})])
def test_guides_scale_to_an_mnist_sized_mlp(kind: str, options: dict) -> None:
    """784-512-512-10 (670k weights): built and stepped within memory (timing: benchmarks/guide_step_time.py)."""
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)
    )
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Categorical())
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    result = pb.fit(model, kind, (x, y), num_steps=2, num_particles=4, progress=False, **options)
    assert np.isfinite(result.history.loss).all()
    assert result.guide.num_latent == 669_706
