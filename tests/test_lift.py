"""Tests for :func:`pyrobnn.lift`: priors, glob selection, the site report and vectorized forwards."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.func import functional_call

import pyrobnn as pb
from pyrobnn import _globs

S = 4  # particles in the vectorized checks


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def sample_sites(trace: poutine.Trace) -> dict[str, torch.Tensor]:
    return {name: node["value"] for name, node in trace.nodes.items() if node["type"] == "sample"}


def prior_draws(bnet: pb.BayesianNet, num: int) -> dict[str, torch.Tensor]:
    """``num`` joint draws from the prior, each site shaped ``(num, *param.shape)``."""
    return {site.name: site.prior.distribution(site.shape).sample((num,)) for site in bnet.sites}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.norm = nn.LayerNorm(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.tanh(self.lin(x)))


class Nested(nn.Module):
    """Parameters: block.lin.{weight,bias}, block.norm.{weight,bias}, layers.{0,2}.{weight,bias}."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.layers = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.block(x))


NESTED_NAMES = [
    "block.lin.weight",
    "block.lin.bias",
    "block.norm.weight",
    "block.norm.bias",
    "layers.0.weight",
    "layers.0.bias",
    "layers.2.weight",
    "layers.2.bias",
]


class Recurrent(nn.Module):
    """An LSTM or GRU whose last hidden state feeds a linear head."""

    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = cell(3, 5, batch_first=True)
        self.head = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(x)
        if isinstance(hidden, tuple):  # LSTM: (h, c)
            hidden = hidden[0]
        return self.head(hidden[-1])


class Attention(nn.Module):
    """Self-attention (batch first, an even number of heads: eligible for torch's fast path)."""

    def __init__(self) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.att(x, x, x, need_weights=False)
        return self.head(out.mean(dim=1))


RNN_NAMES = ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.weight", "head.bias"]

# name -> (network factory, input factory, expected random sites)
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], list[str]]] = {
    "linear": (lambda: nn.Linear(3, 2), lambda: torch.randn(5, 3), ["weight", "bias"]),
    "conv1d": (
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 1)),
        lambda: torch.randn(5, 2, 8),
        ["0.weight", "0.bias", "3.weight", "3.bias"],
    ),
    "conv2d": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()),
        lambda: torch.randn(5, 2, 5, 5),
        ["0.weight", "0.bias"],
    ),
    "embedding": (
        lambda: nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(12, 2)),
        lambda: torch.randint(0, 10, (5, 4)),
        ["0.weight", "2.weight", "2.bias"],
    ),
    "lstm": (lambda: Recurrent(nn.LSTM), lambda: torch.randn(5, 6, 3), RNN_NAMES),
    "gru": (lambda: Recurrent(nn.GRU), lambda: torch.randn(5, 6, 3), RNN_NAMES),
    "attention": (
        Attention,
        lambda: torch.randn(5, 6, 4),
        [
            "att.in_proj_weight",
            "att.in_proj_bias",
            "att.out_proj.weight",
            "att.out_proj.bias",
            "head.weight",
            "head.bias",
        ],
    ),
    "nested": (Nested, lambda: torch.randn(5, 3), [n for n in NESTED_NAMES if ".norm." not in n]),
    "batchnorm": (
        lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)),
        lambda: torch.randn(5, 3),
        ["0.weight", "0.bias", "3.weight", "3.bias"],
    ),
}


# --------------------------------------------------------------------------- 1. the user's net
def test_lift_returns_a_new_module_and_leaves_the_users_net_untouched() -> None:
    net = mlp()
    net[2].bias.requires_grad_(False)
    before = {name: (param.detach().clone(), param.requires_grad) for name, param in net.named_parameters()}
    ids = {name: id(param) for name, param in net.named_parameters()}

    bnet = pb.lift(net, exclude=["0.bias", "2.bias"])

    assert isinstance(bnet, pb.BayesianNet)
    assert bnet.net is not net
    assert bnet.sites.names == ["0.weight", "2.weight"]
    after = dict(net.named_parameters())
    assert list(after) == list(before)
    for name, param in after.items():
        assert type(param) is nn.Parameter, name
        assert id(param) == ids[name], name
        assert param.requires_grad == before[name][1], name
        assert torch.equal(param, before[name][0]), name
    assert list(net.named_buffers()) == []

    # Train the twin's one deterministic parameter; the user's copy must not move.
    x = torch.randn(8, 3)
    assert [name for name, _ in bnet.named_parameters()] == ["net.0.bias"]
    optimizer = torch.optim.SGD(bnet.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        bnet(x).pow(2).sum().backward()
        optimizer.step()
    assert not torch.equal(bnet.net[0].bias, before["0.bias"][0])
    for name, param in net.named_parameters():
        assert torch.equal(param, before[name][0]), name
        assert param.grad is None, name


def test_lift_leaves_the_users_batchnorm_statistics_alone() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bnet = pb.lift(net)
    bnet(torch.randn(8, 3))
    assert net[1].track_running_stats
    assert torch.equal(net[1].running_mean, torch.zeros(4))
    assert int(net[1].num_batches_tracked) == 0


def test_lift_rejects_what_is_not_a_plain_module() -> None:
    with pytest.raises(TypeError, match=r"lift expects a torch\.nn\.Module, got function"):
        pb.lift(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"already lifted; lift the original nn\.Module"):
        pb.lift(pb.lift(mlp()))


def test_random_parameters_become_buffers_holding_the_users_values() -> None:
    net = mlp()
    bnet = pb.lift(net, exclude="**.bias")
    buffers = dict(bnet.net.named_buffers())
    assert set(buffers) == {"0.weight", "2.weight"}
    assert torch.equal(bnet.initial_value("0.weight"), net[0].weight)
    assert not bnet.initial_value("0.weight").requires_grad


# --------------------------------------------------------------------------- 2. prior forms
@pytest.mark.parametrize(
    ("prior", "expected"),
    [
        (pb.priors.Normal(0.5, 2.0), dist.Normal(0.5, 2.0)),
        (pb.priors.Laplace(0.0, 0.5), dist.Laplace(0.0, 0.5)),
        (pb.priors.StudentT(3.0, 0.0, 1.5), dist.StudentT(3.0, 0.0, 1.5)),
        (dist.Normal(0.0, 2.0), dist.Normal(0.0, 2.0)),
        (torch.distributions.Laplace(0.0, 1.0), dist.Laplace(0.0, 1.0)),
    ],
    ids=["Normal", "Laplace", "StudentT", "pyro-Normal", "torch-Laplace"],
)
def test_a_shared_prior_is_iid_over_every_element(prior: pb.priors.PriorSpec, expected: dist.Distribution) -> None:
    bnet = pb.lift(mlp(), prior=prior)
    assert bnet.sites.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for site in bnet.sites:
        d = site.prior.distribution(site.shape)
        assert d.batch_shape == torch.Size()
        assert d.event_shape == site.shape
        value = torch.randn(site.shape)
        torch.testing.assert_close(d.log_prob(value), expected.log_prob(value).sum())
    # every site owns its prior (no shared buffers)
    assert bnet.prior("0.weight") is not bnet.prior("2.weight")
    # and the forward pass samples from it, as a Pyro site
    trace = poutine.trace(bnet).get_trace(torch.randn(5, 3))
    assert list(sample_sites(trace)) == bnet.sites.names


def test_fan_in_normal_binds_scale_gain_over_sqrt_fan_in() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Conv1d(2, 2, 5))
    bnet = pb.lift(net, prior=pb.priors.FanInNormal(gain=2.0))
    expected = {"0.weight": 2.0 / math.sqrt(3), "2.weight": 2.0 / math.sqrt(4), "3.weight": 2.0 / math.sqrt(2 * 5)}
    for name, scale in expected.items():
        prior = bnet.prior(name)
        assert isinstance(prior, pb.priors.Normal)
        torch.testing.assert_close(prior.scale, torch.tensor(scale))
        torch.testing.assert_close(prior.loc, torch.tensor(0.0))
    # biases (one dimension) get Normal(0, gain)
    torch.testing.assert_close(bnet.prior("0.bias").scale, torch.tensor(2.0))


def test_a_dict_prior_takes_the_first_matching_pattern() -> None:
    bnet = pb.lift(
        mlp(),
        prior={
            "0.*": pb.priors.Laplace(0.0, 1.0),
            "**.weight": dist.Normal(0.0, 3.0),
            "**": pb.priors.Normal(0.0, 1.0),
        },
    )
    assert isinstance(bnet.prior("0.weight"), pb.priors.Laplace)  # "0.*" comes before "**.weight"
    assert isinstance(bnet.prior("0.bias"), pb.priors.Laplace)
    weight = bnet.prior("2.weight")
    assert isinstance(weight, pb.priors.DistributionPrior)
    torch.testing.assert_close(weight.base().stddev, torch.tensor(3.0))
    assert isinstance(bnet.prior("2.bias"), pb.priors.Normal)


def test_a_dict_pattern_that_matches_nothing_lists_the_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"prior pattern '1\.\*' matches no parameter\. Available names: 0\.weight, 0\.bias, 2\.weight, 2\.bias",
    ):
        pb.lift(mlp(), prior={"1.*": pb.priors.Normal(), "**": pb.priors.Normal()})


def test_a_dict_that_leaves_a_parameter_uncovered_names_it() -> None:
    with pytest.raises(ValueError, match=r"no prior pattern matches parameter '0\.bias'.*exclude=\['0\.bias'\]"):
        pb.lift(mlp(), prior={"**.weight": pb.priors.Normal(), "2.bias": pb.priors.Normal()})
    # excluded parameters need no prior
    bnet = pb.lift(mlp(), prior={"**.weight": pb.priors.Normal()}, exclude="**.bias")
    assert bnet.sites.names == ["0.weight", "2.weight"]


def test_a_dict_value_must_be_a_prior() -> None:
    with pytest.raises(TypeError, match=r"prior\['\*\*'\] must be a pyrobnn prior .* got float"):
        pb.lift(mlp(), prior={"**": 1.0})  # type: ignore[dict-item]


def test_a_callable_prior_may_keep_parameters_deterministic() -> None:
    def prior(name: str, param: torch.Tensor) -> pb.priors.Prior | None:
        if name.endswith("bias"):
            return None
        return pb.priors.Normal(0.0, 1.0 / param.shape[-1])

    bnet = pb.lift(mlp(), prior=prior)
    assert bnet.sites.names == ["0.weight", "2.weight"]
    torch.testing.assert_close(bnet.prior("0.weight").scale, torch.tensor(1.0 / 3))
    torch.testing.assert_close(bnet.prior("2.weight").scale, torch.tensor(1.0 / 4))
    assert bnet.sites.deterministic == {"0.bias": torch.Size([4]), "2.bias": torch.Size([2])}
    assert isinstance(bnet.net[0].bias, nn.Parameter)
    assert isinstance(dict(bnet.net.named_buffers())["0.weight"], torch.Tensor)


def test_a_callable_prior_may_return_a_parameter_shaped_distribution() -> None:
    bnet = pb.lift(mlp(), prior=lambda name, param: dist.Normal(param.detach().clone(), 0.1))
    site = bnet.sites["0.weight"]
    d = site.prior.distribution(site.shape)
    assert d.event_shape == (4, 3)
    torch.testing.assert_close(d.mean, bnet.initial_value("0.weight"))


def test_a_callable_prior_of_the_wrong_shape_errors() -> None:
    with pytest.raises(
        ValueError, match=r"prior for '0\.weight' has batch shape \(3,\), but the parameter has shape \(4, 3\)"
    ):
        pb.lift(mlp(), prior=lambda name, param: dist.Normal(torch.zeros(3), 1.0))
    with pytest.raises(TypeError, match=r"prior returned for '0\.weight' must be a pyrobnn prior .* got str"):
        pb.lift(mlp(), prior=lambda name, param: "normal")  # type: ignore[arg-type,return-value]


def test_a_shared_prior_must_have_scalar_batch_shape() -> None:
    with pytest.raises(ValueError, match=r"shared by all parameters must have scalar batch shape, got \(3,\)"):
        pb.lift(mlp(), prior=dist.Normal(torch.zeros(3), 1.0))


def test_a_prior_must_be_scalar() -> None:
    with pytest.raises(ValueError, match=r"scalar distribution applied to each weight.*event_shape \(2,\)"):
        pb.lift(mlp(), prior=dist.MultivariateNormal(torch.zeros(2), torch.eye(2)))


@pytest.mark.parametrize(
    "prior", [dist.HalfNormal(1.0), pb.priors.HalfNormal(1.0), pb.priors.LogNormal()], ids=["pyro", "pb", "lognormal"]
)
def test_a_prior_for_a_weight_must_live_on_the_real_line(prior: pb.priors.PriorSpec) -> None:
    with pytest.raises(ValueError, match=r"prior for '0\.weight' has support .*a network weight is real-valued"):
        pb.lift(mlp(), prior=prior)


class MyNormal(torch.distributions.Normal):
    """A user's torch distribution: Pyro has no wrapper class for it."""


def test_a_torch_distribution_without_a_pyro_counterpart_errors() -> None:
    with pytest.raises(
        TypeError, match=r"MyNormal is a torch distribution with no Pyro counterpart.*pyro\.distributions"
    ):
        pb.lift(mlp(), prior=MyNormal(0.0, 1.0))


def test_a_prior_distribution_is_rebuilt_whenever_what_it_reads_changes() -> None:
    """The model reuses each site's prior distribution between steps, but never a stale one."""
    prior = pb.priors.Normal(0.0, 2.0)
    shape = torch.Size([3, 2])
    first = prior.distribution(shape)
    assert prior.distribution(shape) is first  # unchanged: reused
    assert prior.distribution(torch.Size([4])).event_shape == (4,)  # another shape: its own

    with torch.no_grad():
        prior.scale.fill_(0.5)  # in place, as load_state_dict does
    assert prior.distribution(shape).base_dist.scale.unique().item() == 0.5
    assert prior.double().distribution(shape).base_dist.loc.dtype == torch.float64  # moved: new tensors
    prior.scale = torch.tensor(3.0, dtype=torch.float64)  # a reassigned buffer
    assert prior.distribution(shape).base_dist.scale.unique().item() == 3.0
    with pyro.validation_enabled(not torch.distributions.Distribution._validate_args):
        assert prior.distribution(shape)._validate_args == torch.distributions.Distribution._validate_args

    class Learned(pb.priors.Prior):  # a prior with a trained hyperparameter: a new graph every step
        def __init__(self) -> None:
            super().__init__()
            self.log_scale = torch.nn.Parameter(torch.zeros(()))

        def base(self) -> dist.Distribution:
            return dist.Normal(torch.zeros(()), self.log_scale.exp())

    learned = Learned()
    assert learned.distribution(shape) is not learned.distribution(shape)


def test_an_unknown_prior_spec_errors() -> None:
    with pytest.raises(TypeError, match=r"prior must be a pyrobnn prior, a Pyro/torch distribution, .* got float"):
        pb.lift(mlp(), prior=1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 3. glob semantics
@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("0.weight", "0.weight", True),
        ("0.weight", "10.weight", False),
        ("0.weight", "0.weights", False),
        ("*.weight", "0.weight", True),
        ("*.weight", "block.0.weight", False),
        ("*", "weight", True),
        ("*", "0.weight", False),
        ("**.weight", "weight", True),
        ("**.weight", "0.weight", True),
        ("**.weight", "block.0.weight", True),
        ("**.weight", "0.weight_ih", False),
        ("block.**.weight", "block.weight", True),
        ("block.**.weight", "block.a.b.weight", True),
        ("block.**.weight", "blocks.a.weight", False),
        ("layers.**", "layers.0.bias", True),
        ("layers.**", "other.0.bias", False),
        ("**", "a.b.c", True),
        ("rnn.weight_*", "rnn.weight_ih_l0", True),
        ("?.bias", "0.bias", True),
        ("?.bias", "10.bias", False),
    ],
)
def test_glob_semantics(pattern: str, name: str, expected: bool) -> None:
    assert _globs.match(pattern, name) is expected


def test_default_selection_leaves_normalisation_layers_deterministic() -> None:
    bnet = pb.lift(Nested())
    assert bnet.sites.names == [n for n in NESTED_NAMES if ".norm." not in n]
    assert set(bnet.sites.deterministic) == {"block.norm.weight", "block.norm.bias"}


def test_sites_and_exclude_select_by_glob() -> None:
    assert pb.lift(Nested(), sites="layers.**").sites.names == [n for n in NESTED_NAMES if n.startswith("layers.")]
    assert pb.lift(Nested(), sites="**").sites.names == NESTED_NAMES  # sites can pick norm layers
    assert pb.lift(Nested(), sites=["block.*.weight", "layers.2.*"]).sites.names == [
        "block.lin.weight",
        "block.norm.weight",
        "layers.2.weight",
        "layers.2.bias",
    ]
    bnet = pb.lift(Nested(), sites="layers.**", exclude="**.bias")
    assert bnet.sites.names == ["layers.0.weight", "layers.2.weight"]
    assert bnet.sites.deterministic == {
        "block.lin.weight": (3, 3),
        "block.lin.bias": (3,),
        "block.norm.weight": (3,),
        "block.norm.bias": (3,),
        "layers.0.bias": (4,),
        "layers.2.bias": (2,),
    }
    assert pb.lift(Nested(), exclude=["block.**", "*.0.*"]).sites.names == ["layers.2.weight", "layers.2.bias"]


@pytest.mark.parametrize("argument", ["sites", "exclude"])
def test_a_glob_that_matches_nothing_lists_the_available_names(argument: str) -> None:
    available = ", ".join(NESTED_NAMES).replace(".", r"\.")
    with pytest.raises(
        ValueError, match=rf"{argument} pattern 'layer\.\*\*' matches no parameter\. Available names: {available}\."
    ):
        pb.lift(Nested(), **{argument: ["**.bias", "layer.**"]})


@pytest.mark.parametrize("lift", [pb.lift, pb.lift_])
def test_include_is_a_deprecated_alias_of_sites(lift: Callable[..., pb.BayesianNet]) -> None:
    patterns = ["block.*.weight", "layers.2.*"]
    with pytest.warns(DeprecationWarning, match=r"include= is deprecated; use sites=.*since 0\.2\.0") as record:
        old = lift(Nested(), include=patterns, exclude="**.bias")
    assert [w.filename for w in record] == [__file__]  # the warning points at the caller
    new = lift(Nested(), sites=patterns, exclude="**.bias")
    assert old.sites.names == new.sites.names == ["block.lin.weight", "block.norm.weight", "layers.2.weight"]
    assert old.sites.deterministic == new.sites.deterministic


@pytest.mark.parametrize("lift", [pb.lift, pb.lift_])
def test_sites_and_include_together_are_a_type_error(lift: Callable[..., pb.BayesianNet]) -> None:
    with pytest.raises(TypeError, match=r"both sites= and include="):
        lift(Nested(), sites="**", include="**")


# --------------------------------------------------------------------------- 4. the report
def test_the_site_report() -> None:
    bnet = pb.lift(
        mlp(), prior={"0.weight": pb.priors.Laplace(0.0, 0.5), "**": dist.Normal(0.0, 2.0)}, exclude="2.bias"
    )
    sites = bnet.sites
    assert len(sites) == 3
    assert sites.names == ["0.weight", "0.bias", "2.weight"]
    assert [site.shape for site in sites] == [(4, 3), (4,), (2, 4)]
    assert sites[0].name == "0.weight"
    assert sites["2.weight"].numel == 8
    assert sites.num_random == 12 + 4 + 8
    assert sites.deterministic == {"2.bias": (2,)}
    with pytest.raises(KeyError, match=r"no random site '2\.bias'; sites: \['0\.weight', '0\.bias', '2\.weight'\]"):
        sites["2.bias"]

    lines = str(sites).splitlines()
    assert lines[0].split() == ["site", "shape", "size", "prior"]
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert set(rows) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "(4, 3)" in rows["0.weight"] and "12" in rows["0.weight"]
    assert "Laplace(loc=0, scale=0.5)" in rows["0.weight"]
    assert "DistributionPrior(Normal, loc=0, scale=2)" in rows["0.bias"]
    assert "(2, 4)" in rows["2.weight"]
    assert rows["2.bias"].split()[1:] == ["(2,)", "2", "deterministic"]
    assert lines[-1] == "24 random scalars in 3 sites; 2 deterministic"
    assert repr(sites) == str(sites)
    assert "random sites: 3 (24 scalars)" in repr(bnet)


# --------------------------------------------------------------------------- 5. dtype and device
@pytest.mark.parametrize(
    "prior",
    [
        pb.priors.Normal(0.0, 1.0),
        pb.priors.Laplace(0.0, 1.0),
        pb.priors.StudentT(3.0),
        pb.priors.FanInNormal(),
        dist.Normal(0.0, 2.0),
        torch.distributions.Laplace(0.0, 1.0),
    ],
    ids=["Normal", "Laplace", "StudentT", "FanInNormal", "pyro-Normal", "torch-Laplace"],
)
def test_priors_follow_the_dtype_of_the_net(prior: pb.priors.PriorSpec) -> None:
    bnet = pb.lift(mlp(), prior=prior).to(torch.float64)
    for site in bnet.sites:
        d = bnet.prior(site.name).distribution(site.shape)
        assert d.mean.dtype == torch.float64, site.name
        value = d.sample()
        assert value.dtype == torch.float64, site.name
        assert d.log_prob(value).dtype == torch.float64, site.name
    assert all(b.dtype == torch.float64 for b in bnet.buffers())


def test_a_double_model_runs_end_to_end_under_a_particle_plate() -> None:
    bnet = pb.lift(mlp(), exclude="2.bias")
    model = pb.BayesianModel(bnet, pb.likelihoods.Gaussian(scale=0.1)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with pyro.plate("particles", S, dim=-2):
        out = bnet(x)
        trace = poutine.trace(model).get_trace(x, y)
    assert out.shape == (S, 5, 2) and out.dtype == torch.float64
    for name in bnet.sites.names:
        assert trace.nodes[name]["value"].dtype == torch.float64, name
    log_p = trace.log_prob_sum()
    assert log_p.dtype == torch.float64 and torch.isfinite(log_p)


# --------------------------------------------------------------------------- 6. architectures
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_lifted_architectures_run_alone_batched_and_under_a_plate(arch: str) -> None:
    make_net, make_x, names = ARCHITECTURES[arch]
    net, x = make_net().eval(), make_x()  # eval: no dropout, so every pass is deterministic
    bnet = pb.lift(net).eval()
    expected_shape = net(x).shape
    assert bnet.sites.names == names

    # (a) outside any plate: one draw, the net's own output shape
    assert bnet(x).shape == expected_shape

    # (b) vectorized: run_batched equals one functional_call per draw
    draws = prior_draws(bnet, S)
    out = bnet.run_batched(draws, x)
    assert out.shape == (S, *expected_shape)
    for s in range(S):
        draw = {name: value[s] for name, value in draws.items()}
        torch.testing.assert_close(out[s], functional_call(bnet.net, draw, (x,)))
        # and a plain forward of a copy of the twin holding the draw (no reparametrisation)
        twin = copy.deepcopy(bnet.net)
        twin.load_state_dict(draw, strict=False)
        torch.testing.assert_close(out[s], twin(x))
    assert not torch.allclose(out[0], out[1])  # the draws, not stale weights, reached the layers

    # (c) under a particle plate at dim -2: draws are (S, 1, *shape); run drops the data dim
    with pyro.plate("particles", S, dim=-2):
        trace = poutine.trace(bnet).get_trace(x)
    values = sample_sites(trace)
    assert list(values) == names
    for site in bnet.sites:
        assert values[site.name].shape == (S, 1, *site.shape), site.name
    out = trace.nodes["_RETURN"]["value"]
    assert out.shape == (S, *expected_shape)
    for s in range(S):
        torch.testing.assert_close(out[s], bnet.run({n: v[s, 0] for n, v in values.items()}, x))


def test_batchnorm_parameters_are_deterministic_by_default() -> None:
    make_net, make_x, _ = ARCHITECTURES["batchnorm"]
    bnet = pb.lift(make_net())
    assert bnet.sites.deterministic == {"1.weight": (4,), "1.bias": (4,)}
    assert "1.weight" not in bnet.sites.names
    rows = {line.split()[0]: line for line in str(bnet.sites).splitlines()[2:-1]}
    assert rows["1.weight"].endswith("deterministic") and rows["1.bias"].endswith("deterministic")
    # the twin's BatchNorm is trained as a point estimate, through every particle
    with pyro.plate("particles", S, dim=-2):
        bnet(make_x()).sum().backward()
    assert bnet.net[1].weight.grad is not None and torch.isfinite(bnet.net[1].weight.grad).all()


def test_batched_attention_restores_the_fast_path_setting() -> None:
    bnet = pb.lift(Attention()).eval()
    before = torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad():
        bnet.run_batched(prior_draws(bnet, S), torch.randn(5, 6, 4))
    assert torch.backends.mha.get_fastpath_enabled() == before


@pytest.mark.parametrize("arch", ["lstm", "gru", "linear"])
def test_gradients_reach_the_draws(arch: str) -> None:
    make_net, make_x, _ = ARCHITECTURES[arch]
    bnet = pb.lift(make_net())
    draws = {name: value.requires_grad_() for name, value in prior_draws(bnet, S).items()}
    bnet.run_batched(draws, make_x()).sum().backward()
    for name, value in draws.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, name


def test_run_checks_the_shapes_of_the_draws() -> None:
    bnet = pb.lift(mlp(), exclude="**.bias")
    x = torch.randn(5, 3)
    with pytest.raises(KeyError, match=r"no value for random site '2\.weight'"):
        bnet.run({"0.weight": torch.zeros(4, 3)}, x)
    with pytest.raises(
        ValueError, match=r"site '0\.weight' has shape \(3, 4\), which does not end in the parameter shape \(4, 3\)"
    ):
        bnet.run({"0.weight": torch.zeros(3, 4), "2.weight": torch.zeros(2, 4)}, x)
    with pytest.raises(ValueError, match=r"same batch shape; '2\.weight' has \(3, 1\), others \(2, 1\)"):
        bnet.run({"0.weight": torch.zeros(2, 1, 4, 3), "2.weight": torch.zeros(3, 1, 2, 4)}, x)
    with pytest.raises(ValueError, match=r"batch shape \(5,\); .* the last batch dim must be 1"):
        with pyro.plate("data", 5, dim=-1):
            bnet(x)


# --------------------------------------------------------------------------- 7. complex parameters
class WithComplex(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.phase = nn.Parameter(torch.randn(2, dtype=torch.complex64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.lin(x) * self.phase).real


def test_a_complex_parameter_cannot_be_lifted() -> None:
    with pytest.raises(TypeError, match=r"parameter 'phase' has dtype torch\.complex64.*exclude=\['phase'\]"):
        pb.lift(WithComplex())
    bnet = pb.lift(WithComplex(), exclude="phase")
    assert bnet.sites.names == ["lin.weight", "lin.bias"]
    assert bnet.sites.deterministic == {"phase": (2,)}
    with pyro.plate("particles", S, dim=-2):
        assert bnet(torch.randn(5, 3)).shape == (S, 5, 2)


# --------------------------------------------------------------------------- 8. frozen parameters
def test_frozen_deterministic_parameters_become_frozen_buffers() -> None:
    net = mlp()
    net[0].weight.requires_grad_(False)
    net[0].bias.requires_grad_(False)
    bnet = pb.lift(net, sites="2.*")
    assert bnet.sites.names == ["2.weight", "2.bias"]
    assert list(dict(bnet.named_parameters())) == []
    buffers = dict(bnet.net.named_buffers())
    for name in ("0.weight", "0.bias"):
        assert name in buffers and not buffers[name].requires_grad
        assert torch.equal(buffers[name], dict(net.named_parameters())[name])
    assert bnet.sites.deterministic == {}  # frozen: not trained, so not in the report
    # the user's own parameters stay frozen parameters
    assert isinstance(net[0].weight, nn.Parameter) and not net[0].weight.requires_grad
    # nothing switches them back on: a backward pass through the draws leaves them without gradients
    draws = {name: value.requires_grad_() for name, value in prior_draws(bnet, S).items()}
    bnet.run_batched(draws, torch.randn(5, 3)).sum().backward()
    assert draws["2.weight"].grad is not None
    assert not bnet.net[0].weight.requires_grad and bnet.net[0].weight.grad is None


def test_only_trainable_deterministic_parameters_stay_parameters() -> None:
    net = mlp()
    net[2].bias.requires_grad_(False)
    bnet = pb.lift(net, sites="0.weight")
    assert [name for name, _ in bnet.named_parameters()] == ["net.0.bias", "net.2.weight"]
    assert "2.bias" in dict(bnet.net.named_buffers())


# --------------------------------------------------------------------------- tied parameters
class Tied(nn.Module):
    """An encoder and decoder sharing one weight tensor (like tied embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3, 3, bias=False)
        self.dec = nn.Linear(3, 3, bias=False)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.enc(x)))


def test_a_tied_parameter_is_one_random_site_used_everywhere() -> None:
    bnet = pb.lift(Tied())
    assert bnet.sites.names == ["enc.weight"]
    assert list(bnet.named_parameters()) == []  # the alias is not left behind as a trained parameter
    x, weights = torch.randn(5, 3), torch.randn(S, 3, 3)
    out = bnet.run_batched({"enc.weight": weights}, x)
    for s in range(S):
        torch.testing.assert_close(out[s], torch.tanh(x @ weights[s].T) @ weights[s].T)


def test_frozen_parameters_stay_deterministic_by_default() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    net[0].requires_grad_(False)
    bnet = pb.lift(net)
    assert bnet.sites.names == ["2.weight", "2.bias"]
    assert pb.lift(net, sites="**").sites.names == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_a_scale_mixture_prior_is_real_valued() -> None:
    class SpikeAndSlab(pb.priors.Prior):
        def base(self) -> torch.distributions.Distribution:
            weights = torch.tensor([0.5, 0.5])
            return pyro.distributions.MixtureSameFamily(
                pyro.distributions.Categorical(weights),
                pyro.distributions.Normal(torch.zeros(2), torch.tensor([0.1, 1.0])),
            )

    bnet = pb.lift(torch.nn.Linear(2, 1), prior=SpikeAndSlab())
    assert bnet.sites.names == ["weight", "bias"]
    with pyro.poutine.trace() as tr:
        bnet(torch.randn(3, 2))
    assert torch.isfinite(tr.trace.log_prob_sum())
