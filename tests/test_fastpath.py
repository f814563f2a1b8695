"""The MLP fast path (:class:`pyrobnn.lift._fastpath.MLPPlan`) against the ``vmap`` path it stands in for.

``BayesianNet.run_batched`` runs a plain ``nn.Sequential`` of ``nn.Linear`` layers and
elementwise activations as batched matrix products; everything else runs under
``vmap(functional_call)``, and ``bnet.fast_path = False`` sends a plain MLP there too.
For the same draws both must give the same outputs and gradients (compared in float64);
with a handler's override of some layers (``pyrobnn/_effects.py``) the same outputs for
a deterministic override, and under local reparameterisation, the same outputs from the
same seed and the distribution of drawn weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.func import functional_call

import pyrobnn as pb
from pyrobnn.infer._local_reparam import LocalReparamMessenger
from pyrobnn.lift._fastpath import ELEMENTWISE, MLPPlan

S = 5  # draws in the exact comparisons


# --------------------------------------------------------------------------- helpers
def prior_draws(bnet: pb.BayesianNet, num: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``num`` joint draws from the prior, each site shaped ``(num, *param.shape)``."""
    torch.manual_seed(seed)
    return {site.name: site.prior.distribution(site.shape).sample((num,)) for site in bnet.sites}


def run_vmap(bnet: pb.BayesianNet, draws: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``run_batched`` with the fast path switched off."""
    bnet.fast_path = False
    try:
        return bnet.run_batched(draws, x)
    finally:
        bnet.fast_path = True


def run_each(bnet: pb.BayesianNet, draws: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """One plain ``functional_call`` per draw (hooks included): the reference for both paths."""
    num = next(iter(draws.values())).shape[0]
    return torch.stack([functional_call(bnet.net, {k: v[i] for k, v in draws.items()}, (x,)) for i in range(num)])


@pytest.fixture
def fast_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records every pass through the fast path (so a test knows which path ran; it changes nothing)."""
    runs: list[int] = []
    original = MLPPlan.run

    def counted(self: MLPPlan, *args: Any, **kwargs: Any) -> torch.Tensor:
        runs.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MLPPlan, "run", counted)
    return runs


def mlp(*hidden: nn.Module, bias: bool = True) -> nn.Sequential:
    """Linear(3, 6), the given layers, Linear(6, 2)."""
    return nn.Sequential(nn.Linear(3, 6, bias=bias), *hidden, nn.Linear(6, 2, bias=bias))


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class MySequential(nn.Sequential):
    """A subclass may override forward: it gets no plan."""


class MyLinear(nn.Linear):
    """A subclass may override forward: it gets no plan."""


def shared_linear() -> nn.Sequential:
    """One Linear instance at positions 0 and 2."""
    lin = nn.Linear(3, 3)
    return nn.Sequential(lin, nn.Tanh(), lin, nn.Linear(3, 2))


def shared_activation() -> nn.Sequential:
    """One Tanh instance after each hidden layer: a common way to write an MLP."""
    act = nn.Tanh()
    return nn.Sequential(nn.Linear(3, 6), act, nn.Linear(6, 6), act, nn.Linear(6, 2))


# --------------------------------------------------------------------------- 1. which nets get a plan
@pytest.mark.parametrize("activation", ELEMENTWISE, ids=lambda kind: kind.__name__)
def test_a_sequential_of_linear_and_elementwise_layers_gets_a_plan(activation: type[nn.Module]) -> None:
    net = mlp(activation())
    plan = MLPPlan.of(net)
    assert plan is not None
    assert [name for name, _ in plan.layers] == ["0", "1", "2"]
    assert [module for _, module in plan.layers] == list(net)


@pytest.mark.parametrize(
    "make_net",
    [
        lambda: nn.Linear(3, 2),
        TwoLayer,
        lambda: MySequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)),
        lambda: nn.Sequential(MyLinear(3, 6), nn.ReLU(), nn.Linear(6, 2)),
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(3, 2)),
        lambda: nn.Sequential(nn.Linear(3, 6), nn.Sequential(nn.ReLU(), nn.Linear(6, 2))),
        lambda: nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Linear(6, 2)),
        lambda: nn.Sequential(nn.Linear(3, 6), nn.PReLU(), nn.Linear(6, 2)),
        lambda: nn.Sequential(nn.ReLU(), nn.Tanh()),
        shared_linear,  # tied weights: one site, two uses
    ],
    ids=[
        "linear",
        "custom-module",
        "sequential-subclass",
        "linear-subclass",
        "conv",
        "nested-sequential",
        "layernorm",
        "prelu",
        "no-linear",
        "same-linear-twice",
    ],
)
def test_other_nets_get_no_plan(make_net: Callable[[], nn.Module]) -> None:
    assert MLPPlan.of(make_net()) is None


def test_a_plan_applies_to_a_table_of_rows_only() -> None:
    plan = MLPPlan.of(mlp(nn.ReLU()))
    assert plan is not None
    assert plan.applies(torch.randn(5, 3))
    assert not plan.applies(torch.randn(3))
    assert not plan.applies(torch.randn(4, 5, 3))


@pytest.mark.parametrize(
    ("make_net", "on"),
    [(lambda: mlp(nn.Tanh()), True), (shared_activation, True), (TwoLayer, False), (shared_linear, False)],
    ids=["mlp", "shared-activation", "custom-module", "same-linear-twice"],
)
def test_fast_path_is_on_exactly_for_the_nets_with_a_plan(make_net: Callable[[], nn.Module], on: bool) -> None:
    net = make_net()
    assert pb.lift(net).fast_path is on
    assert (MLPPlan.of(net) is not None) is on


def test_the_switch_sends_a_plain_mlp_through_vmap_and_back(fast_runs: list[int]) -> None:
    torch.manual_seed(0)
    bnet = pb.lift(mlp(nn.Tanh())).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    draws = prior_draws(bnet, S)
    fast = bnet.run_batched(draws, x)
    assert len(fast_runs) == 1
    bnet.fast_path = False
    assert not bnet.fast_path
    vmapped = bnet.run_batched(draws, x)
    assert len(fast_runs) == 1  # vmap ran it
    bnet.fast_path = True
    assert bnet.fast_path
    torch.testing.assert_close(bnet.run_batched(draws, x), fast, rtol=0, atol=0)
    assert len(fast_runs) == 2
    torch.testing.assert_close(vmapped, fast)


@pytest.mark.parametrize(
    ("make_net", "message"),
    [
        (TwoLayer, r"this network is a TwoLayer"),
        (shared_linear, r"this network is an nn\.Sequential of Linear, Tanh, Linear, Linear"),
    ],
    ids=["custom-module", "same-linear-twice"],
)
def test_the_fast_path_cannot_be_switched_on_for_another_net(make_net: Callable[[], nn.Module], message: str) -> None:
    bnet = pb.lift(make_net())
    with pytest.raises(ValueError, match=rf"fast_path=True needs an nn\.Sequential of nn\.Linear layers.*{message}"):
        bnet.fast_path = True
    assert not bnet.fast_path
    bnet.fast_path = False  # what it is already: nothing to refuse


# --------------------------------------------------------------------------- 2. same draws, same outputs
#: name -> (network factory, lift options)
CASES: dict[str, tuple[Callable[[], nn.Module], dict[str, Any]]] = {
    "all-random": (lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2)), {}),
    "last-layer-only": (
        lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2)),
        {"sites": "4.*"},
    ),
    "first-layer-deterministic": (lambda: mlp(nn.Tanh()), {"exclude": "0.*"}),
    "weights-random-biases-not": (lambda: mlp(nn.Tanh()), {"exclude": "**.bias"}),
    "biases-random-weights-not": (lambda: mlp(nn.Tanh()), {"sites": "**.bias"}),
    "bias-free": (lambda: mlp(nn.ELU(), bias=False), {}),
    "dropout-eval": (lambda: mlp(nn.ReLU(), nn.Dropout(0.5)).eval(), {}),
    "starts-with-activation": (lambda: nn.Sequential(nn.Tanh(), nn.Linear(3, 2)), {}),
    "single-linear": (lambda: nn.Sequential(nn.Linear(3, 2)), {}),
    "shared-activation": (shared_activation, {}),
}


CASE_PARAMS = [pytest.param(name, id=name) for name in CASES]


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_the_fast_path_gives_the_vmap_paths_outputs_and_gradients(case: str, fast_runs: list[int]) -> None:
    make_net, options = CASES[case]
    torch.manual_seed(0)
    bnet = pb.lift(make_net(), **options).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    draws = {name: value.requires_grad_() for name, value in prior_draws(bnet, S).items()}
    deterministic = [p for p in bnet.parameters() if p.requires_grad]
    inputs = list(draws.values()) + deterministic
    outputs, grads = {}, {}
    for path, run in [("fast", bnet.run_batched), ("vmap", lambda d, rows: run_vmap(bnet, d, rows))]:
        before = len(fast_runs)
        outputs[path] = run(draws, x)
        assert len(fast_runs) - before == (path == "fast"), path  # the path meant is the path taken
        weights = torch.linspace(-1, 1, outputs[path].numel(), dtype=torch.float64).reshape(outputs[path].shape)
        grads[path] = torch.autograd.grad((outputs[path] * weights).sum(), inputs)
    assert outputs["fast"].shape == (S, 7, 2)
    torch.testing.assert_close(outputs["fast"], outputs["vmap"])
    torch.testing.assert_close(outputs["fast"], run_each(bnet, draws, x))
    names = list(draws) + ["deterministic"] * len(deterministic)
    for name, fast, vmapped in zip(names, grads["fast"], grads["vmap"], strict=True):
        torch.testing.assert_close(fast, vmapped, msg=lambda m, name=name: f"gradient of {name}: {m}")
    assert not torch.allclose(outputs["fast"][0], outputs["fast"][1])  # the draws reached the layers


@pytest.mark.parametrize("activation", ELEMENTWISE, ids=lambda kind: kind.__name__)
def test_every_elementwise_layer_gives_the_vmap_paths_outputs(
    activation: type[nn.Module], fast_runs: list[int]
) -> None:
    torch.manual_seed(0)
    bnet = pb.lift(mlp(activation())).double().eval()
    x = torch.randn(7, 3, dtype=torch.float64)
    draws = prior_draws(bnet, S)
    fast = bnet.run_batched(draws, x)
    assert fast_runs
    torch.testing.assert_close(fast, run_vmap(bnet, draws, x))


def test_run_with_particle_dims_takes_the_fast_path(fast_runs: list[int]) -> None:
    bnet = pb.lift(mlp(nn.Tanh())).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    draws = prior_draws(bnet, S)
    out = bnet.run({name: value.unsqueeze(1) for name, value in draws.items()}, x)  # lead (S, 1)
    assert len(fast_runs) == 1
    torch.testing.assert_close(out, run_vmap(bnet, draws, x))


def test_dropout_in_training_draws_a_mask_per_draw(fast_runs: list[int]) -> None:
    """The same weights in every draw: the outputs differ only through dropout, and average out."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.5), nn.Linear(16, 1))
    bnet = pb.lift(net, sites="2.*").double()  # the first layer is deterministic: its output is shared
    x = torch.randn(4, 3, dtype=torch.float64)
    num = 4000
    draws = {name: value.expand(num, *value.shape[1:]) for name, value in prior_draws(bnet, 1).items()}
    out = bnet.run_batched(draws, x).squeeze(-1)
    assert fast_runs
    assert out.shape == (num, 4)
    assert out.std(0).min() > 0  # different masks across draws
    # Inverted dropout is unbiased: the mean over draws is the eval-mode output, within 5 standard errors.
    with torch.no_grad():
        expected = run_each(bnet.eval(), {k: v[:1] for k, v in draws.items()}, x)[0].squeeze(-1)
    z = (out.mean(0) - expected) / (out.std(0) / math.sqrt(num))
    assert z.abs().max() < 5


# --------------------------------------------------------------------------- 3. hooks turn it off
def _double_output(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return 2 * output


def _shift_input(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (inputs[0] + 1.0,)


HOOKS: dict[str, Callable[[nn.Sequential], Any]] = {
    "forward-hook-on-linear": lambda net: net[0].register_forward_hook(_double_output),
    "forward-hook-on-activation": lambda net: net[1].register_forward_hook(_double_output),
    "pre-hook-on-linear": lambda net: net[2].register_forward_pre_hook(_shift_input),
    "forward-hook-on-the-sequential": lambda net: net.register_forward_hook(_double_output),
    "global-forward-hook": lambda net: nn.modules.module.register_module_forward_hook(_double_output),
    "global-pre-hook": lambda net: nn.modules.module.register_module_forward_pre_hook(_shift_input),
}


@pytest.mark.parametrize("hook", list(HOOKS))
def test_a_forward_hook_turns_the_fast_path_off_and_is_honoured(hook: str, fast_runs: list[int]) -> None:
    torch.manual_seed(0)
    bnet = pb.lift(mlp(nn.Tanh())).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    draws = prior_draws(bnet, S)
    plain = bnet.run_batched(draws, x)
    assert len(fast_runs) == 1
    handle = HOOKS[hook](bnet.net)
    try:
        assert bnet.fast_path  # on, but this pass cannot take it
        hooked = bnet.run_batched(draws, x)
        reference = run_each(bnet, draws, x)
    finally:
        handle.remove()
    assert len(fast_runs) == 1  # vmap ran the hooked pass
    torch.testing.assert_close(hooked, reference)
    assert not torch.allclose(hooked, plain)  # the hook's effect is in the output
    # Removed, the hook no longer blocks the fast path.
    torch.testing.assert_close(bnet.run_batched(draws, x), plain)
    assert len(fast_runs) == 2


@pytest.mark.parametrize("random", ["all", "untied-only"])
def test_a_linear_used_twice_runs_on_the_vmap_path(random: str, fast_runs: list[int]) -> None:
    torch.manual_seed(0)
    bnet = pb.lift(shared_linear(), sites="3.*" if random == "untied-only" else None).double()
    assert not bnet.fast_path  # tied weights are one site used twice: not a chain of independent layers
    x = torch.randn(7, 3, dtype=torch.float64)
    draws = prior_draws(bnet, S)
    out = bnet.run_batched(draws, x)
    assert not fast_runs
    torch.testing.assert_close(out, run_each(bnet, draws, x))
    assert not torch.allclose(out[0], out[1])


def test_a_sequence_input_runs_on_the_vmap_path(fast_runs: list[int]) -> None:
    bnet = pb.lift(mlp(nn.Tanh())).double()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    draws = prior_draws(bnet, S)
    out = bnet.run_batched(draws, x)
    assert not fast_runs
    torch.testing.assert_close(out, run_each(bnet, draws, x))


# --------------------------------------------------------------------------- 4. local reparameterisation
LOCAL = {
    "every-site": ["0.weight", "0.bias", "2.weight", "2.bias"],
    "first-layer": ["0.weight", "0.bias"],
    "last-layer": ["2.weight", "2.bias"],
    "weights-only": ["0.weight", "2.weight"],
    "one-bias": ["2.bias"],
}


def _moments(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-element mean and variance over draws (dim 0), each with its standard error."""
    num = out.shape[0]
    mean, centred = out.mean(0), out - out.mean(0)
    var = centred.square().mean(0)
    m4 = centred.pow(4).mean(0)
    return mean, (var / num).sqrt(), var, ((m4 - var.square()) / num).sqrt()


@pytest.mark.parametrize("local", list(LOCAL))
def test_local_noise_has_the_same_distribution_on_both_paths(local: str, fast_runs: list[int]) -> None:
    """Per row, a locally reparameterised output has the distribution of a weight-drawn one.

    The fast path draws the pre-activation noise for all draws in one tensor, the vmap
    path inside vmap: same distribution, different random numbers. Both are compared
    with the weights drawn from the same q, element by element.
    """
    torch.manual_seed(0)
    bnet = pb.lift(mlp(nn.Tanh())).double()
    g = torch.Generator().manual_seed(1)
    q = {
        site.name: (
            torch.randn(site.shape, generator=g, dtype=torch.float64),
            0.2 + 0.4 * torch.rand(site.shape, generator=g, dtype=torch.float64),
        )
        for site in bnet.sites
    }
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x[1] = x[0]  # a repeated row: independent under local noise, identical with weights drawn
    num = 4000
    drawn = {name: torch.distributions.Normal(loc, scale).sample((num, 1)) for name, (loc, scale) in q.items()}
    reference = bnet.run(drawn, x)  # outside a scope: every site as drawn
    assert len(fast_runs) == 1
    outputs = {}
    for path in ("fast", "vmap"):
        draws = {
            name: (q[name][0].expand(num, 1, *value.shape[2:]) if name in LOCAL[local] else value)
            for name, value in drawn.items()
        }
        bnet.fast_path = path == "fast"
        with LocalReparamMessenger() as scope:
            scope.sites.update({name: q[name] for name in LOCAL[local]})
            outputs[path] = bnet.run(draws, x)
    assert len(fast_runs) == 2
    ref_mean, ref_mean_se, ref_var, ref_var_se = _moments(reference)
    for path, out in outputs.items():
        assert out.shape == (num, 4, 2)
        mean, mean_se, var, var_se = _moments(out)
        # 8 elements x 2 moments per path, each within 5 standard errors of the difference
        # (a false alarm has probability < 2e-5 for the lot).
        assert ((mean - ref_mean).abs() / mean_se.hypot(ref_mean_se)).max() < 5, path
        assert ((var - ref_var).abs() / var_se.hypot(ref_var_se)).max() < 5, path
    if local == "every-site":
        # Every layer draws per row: the repeated rows are uncorrelated (|r| < 5/√4000), where
        # drawn weights make them equal.
        assert torch.corrcoef(reference[:, :2, 0].T)[0, 1] > 0.999
        for path, out in outputs.items():
            assert torch.corrcoef(out[:, :2, 0].T)[0, 1].abs() < 5 / math.sqrt(num), path


def test_an_in_place_dropout_on_the_input_runs_and_leaves_the_input_alone(fast_runs: list[int]) -> None:
    torch.manual_seed(0)
    bnet = pb.lift(nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)))
    x = torch.randn(7, 3)
    before = x.clone()
    out = bnet.run_batched(prior_draws(bnet, S), x)
    assert fast_runs and out.shape == (S, 7, 1)
    assert torch.equal(x, before)  # each draw's mask applied to its own copy, not to the caller's tensor


# --------------------------------------------------------------------------- 5. any override, both paths
class Shift:
    """A deterministic ``LinearOverride``: covered layers run at fixed values, then add ``tanh(h) @ mix``.

    It records each call's path and the shapes of ``h`` and ``out`` (inside ``vmap``, one draw's).
    """

    def __init__(self, values: dict[str, torch.Tensor], mix: dict[str, torch.Tensor]) -> None:
        self.layers = list(mix)
        self.values = values
        self.mix = mix
        self.calls: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def perturb(self, path: str, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        self.calls.append((path, tuple(h.shape), tuple(out.shape)))
        return out + torch.tanh(h) @ self.mix[path]


class Offer(Messenger):
    """The handler answering a network's offer of its ``nn.Linear`` layers with a given override."""

    def __init__(self, override: Shift) -> None:
        super().__init__()
        self.override = override

    def _pyro_linear_override(self, msg: Any) -> None:
        msg["value"] = self.override


@pytest.mark.parametrize("lead", [(S, 1), ()], ids=["particles", "one-draw"])
def test_an_override_gives_the_same_outputs_and_gradients_on_both_paths(
    lead: tuple[int, ...], fast_runs: list[int]
) -> None:
    """The running is lift's and the same on both paths: covered layers at the shared values, perturbed once."""
    torch.manual_seed(0)
    bnet = pb.lift(mlp(nn.Tanh())).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    # Layer 0 wholly covered; layer 2 covered by its bias only, its weight drawn.
    values = {
        name: torch.randn(bnet.sites[name].shape, generator=g, dtype=torch.float64)
        for name in ("0.weight", "0.bias", "2.bias")
    }
    mix = {
        "0": torch.randn(3, 6, generator=g, dtype=torch.float64),
        "2": torch.randn(6, 2, generator=g, dtype=torch.float64),
    }
    weight = prior_draws(bnet, S)["2.weight"]
    if not lead:
        weight = weight[0]
    inputs = [weight, *values.values(), *mix.values()]
    for tensor in inputs:
        tensor.requires_grad_()
    draws = {site.name: torch.zeros(*lead, *site.shape, dtype=torch.float64) for site in bnet.sites}
    draws["2.weight"] = weight.reshape(*lead, 2, 6)  # the covered sites' draws are ignored
    # The reference, by hand: each draw's layer 2 weight, everything else shared.
    w2 = weight if lead else weight.unsqueeze(0)
    h0 = x @ values["0.weight"].T + values["0.bias"] + torch.tanh(x) @ mix["0"]
    a = torch.tanh(h0)
    expected = a @ w2.transpose(1, 2) + values["2.bias"] + torch.tanh(a) @ mix["2"]
    expected = expected if lead else expected[0]
    outputs, calls = {}, {}
    for path in ("fast", "vmap"):
        bnet.fast_path = path == "fast"
        shift = Shift(values, mix)
        before = len(fast_runs)
        with Offer(shift):
            outputs[path] = bnet.run(draws, x)
        assert len(fast_runs) - before == (path == "fast"), path
        calls[path] = shift.calls
        weights = torch.linspace(-1, 1, expected.numel(), dtype=torch.float64).reshape(expected.shape)
        grads = torch.autograd.grad((outputs[path] * weights).sum(), inputs)
        expected_grads = torch.autograd.grad((expected * weights).sum(), inputs, retain_graph=True)
        for fast, exact in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(fast, exact)
        torch.testing.assert_close(outputs[path], expected.reshape(*lead[:-1], 7, 2))
    # Once per covered layer and pass, on its input rows; the fast path hands it the draws' dim
    # where the output has one (a shared input, its output given the draws' dim first).
    num = S if lead else 1
    assert calls["fast"] == [("0", (7, 3), (num, 7, 6)), ("2", (num, 7, 6), (num, 7, 2))]
    assert calls["vmap"] == [("0", (7, 3), (7, 6)), ("2", (7, 6), (7, 2))]  # one pass, traced once by vmap


@pytest.mark.parametrize("local", list(LOCAL))
def test_local_noise_is_the_same_on_both_paths_from_the_same_seed(local: str, fast_runs: list[int]) -> None:
    """Each covered layer's noise is drawn in one place, as one ``(draws, rows, out)`` tensor on both paths.

    ``vmap(randomness="different")`` draws a random op's batch from the global generator as one
    tensor, as the fast path does: the same seed gives the same outputs and gradients.
    """
    torch.manual_seed(0)
    bnet = pb.lift(mlp(nn.Tanh())).double()
    g = torch.Generator().manual_seed(1)
    q = {
        site.name: (
            torch.randn(site.shape, generator=g, dtype=torch.float64).requires_grad_(),
            (0.2 + 0.4 * torch.rand(site.shape, generator=g, dtype=torch.float64)).requires_grad_(),
        )
        for site in bnet.sites
    }
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    drawn = {name: torch.distributions.Normal(loc, scale).sample((S, 1)) for name, (loc, scale) in q.items()}
    leaves = [t for name in LOCAL[local] for t in q[name]]
    outputs, grads = {}, {}
    for path in ("fast", "vmap"):
        bnet.fast_path = path == "fast"
        torch.manual_seed(2)
        with LocalReparamMessenger() as scope:
            scope.sites.update({name: q[name] for name in LOCAL[local]})
            outputs[path] = bnet.run(drawn, x)
        grads[path] = torch.autograd.grad(outputs[path].sum(), leaves)
    assert len(fast_runs) == 1
    torch.testing.assert_close(outputs["fast"], outputs["vmap"])
    for fast, vmapped in zip(grads["fast"], grads["vmap"], strict=True):
        torch.testing.assert_close(fast, vmapped)
    assert not torch.allclose(outputs["fast"][0], outputs["fast"][1])  # the noise differs across draws
