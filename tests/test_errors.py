"""Bad input gets an error that names the problem and the fix; each message is pinned here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyrobnn as pb


def net(d_in: int = 2, d_out: int = 1) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(d_in, 8), torch.nn.Tanh(), torch.nn.Linear(8, d_out))


def model(d_out: int = 1, likelihood: pb.likelihoods.Likelihood | None = None) -> pb.BayesianModel:
    return pb.BayesianModel(pb.lift(net(2, d_out)), likelihood or pb.likelihoods.Gaussian(0.1))


X = torch.randn(20, 2)
Y = X.sum(-1)


def fit(m: pb.BayesianModel, data, **kwargs) -> pb.FitResult:
    return pb.fit(m, "meanfield", data, num_steps=2, progress=False, **kwargs)


@pytest.mark.parametrize(("which", "value"), [("x", float("nan")), ("x", float("inf")), ("y", float("nan"))])
def test_non_finite_data(which: str, value: float) -> None:
    x, y = X.clone(), Y.clone()
    if which == "x":
        x[3, 1] = value
    else:
        y[3] = value
    with pytest.raises(ValueError, match=rf"{which} contains 1 NaN or infinite values, in 1 rows \(first at row 3\)"):
        fit(model(), (x, y))


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="x has 20 rows but y has 19"):
        fit(model(), (X, Y[:19]))


def test_empty_data() -> None:
    with pytest.raises(ValueError, match="x is empty"):
        fit(model(), (X[:0], Y[:0]))


def test_data_must_be_a_pair_or_loader() -> None:
    with pytest.raises(TypeError, match=r"data must be a pair \(x, y\)"):
        fit(model(), X)
    loader = DataLoader(TensorDataset(X, Y), batch_size=5)
    with pytest.raises(ValueError, match="batch_size is set by the DataLoader"):
        fit(model(), loader, batch_size=5)


def test_float64_tensors_are_converted_with_a_note() -> None:
    with pytest.warns(UserWarning, match=r"x is torch.float64 but the model is torch.float32; converting"):
        result = fit(model(), (X.double(), Y))
    assert np.isfinite(result.history.loss).all()


def test_output_shape_against_gaussian_target() -> None:
    with pytest.raises(
        ValueError, match=r"output for one observation has shape \(3,\), so each y\[i\] must have shape"
    ):
        fit(model(d_out=3), (X, Y))


def test_output_shape_against_heteroscedastic() -> None:
    with pytest.raises(ValueError, match=r"its last dim must be even, holding the mean and the raw scale"):
        fit(model(1, pb.likelihoods.HeteroscedasticGaussian()), (X, Y))


def test_categorical_needs_one_logit_per_class() -> None:
    m = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 3)), pb.likelihoods.Categorical())
    labels = torch.randint(0, 3, (20,))
    with pytest.raises(ValueError, match=r"each y\[i\] must have shape \(\)"):
        fit(m, (X, labels[:, None].expand(20, 2)))
    with pytest.raises(TypeError, match=r"needs integer class labels, got y of dtype torch.float32. .*y.long\(\)"):
        fit(m, (X, labels.float()))
    with pytest.raises(
        ValueError, match=r"labels must lie in 0..2 \(the net outputs 3 logits\), but y ranges over 0..5"
    ):
        fit(m, (X, labels.clone().index_fill_(0, torch.tensor([0]), 5)))


def test_gaussian_given_integer_labels() -> None:
    with pytest.raises(TypeError, match=r"needs real-valued targets, got y of dtype torch.int64.*Categorical"):
        fit(model(), (X, torch.randint(0, 3, (20,))))


def test_bernoulli_needs_binary_targets() -> None:
    with pytest.raises(ValueError, match=r"Bernoulli likelihood needs targets in \{0, 1\}; found 2"):
        fit(model(1, pb.likelihoods.Bernoulli()), (X, torch.full((20,), 2.0)))


def test_poisson_needs_counts() -> None:
    with pytest.raises(ValueError, match="non-negative integer counts"):
        fit(model(1, pb.likelihoods.Poisson()), (X, torch.full((20,), -1.0)))


def test_unknown_guide_kind() -> None:
    with pytest.raises(
        ValueError, match=r"unknown guide kind 'meanfeld'; valid kinds are meanfield, lowrank, fullrank, flow, map"
    ):
        pb.fit(model(), "meanfeld", (X, Y), num_steps=1, progress=False)
    with pytest.raises(TypeError, match=r"guide 'meanfield': .*unexpected keyword argument 'rank'"):
        pb.guides.make_guide("meanfield", model(), rank=3)


def test_guide_options() -> None:
    with pytest.raises(ValueError, match=r"kl must be 'analytic' or 'mc'"):
        pb.guides.make_guide("meanfield", model(), kl="exact")
    with pytest.raises(ValueError, match=r"init must be one of \('pretrained', 'reset', 'prior'\)"):
        pb.guides.make_guide("meanfield", model(), init="zeros")
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        pb.guides.make_guide("meanfield", model(), init_scale=0.0)
    with pytest.raises(TypeError, match=r"guide options \['init_scale'\] only apply when guide is a kind string"):
        pb.fit(model(), pb.guides.make_guide("meanfield", model()), (X, Y), num_steps=1, init_scale=0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_particles": 0}, "num_particles must be an integer >= 1, got 0"),
        ({"num_steps": 10, "epochs": 2}, "give num_steps or epochs, not both"),
        ({"num_steps": 0}, 'num_steps must be an integer >= 1 or "auto", got 0'),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"lr_decay": 0.0}, r"lr_decay must be in \(0, 1\]"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0 \(None for the default\)"),
        ({"kl_weight": -1.0}, "kl_weight must be a number >= 0 or a schedule step -> weight, got -1.0"),
        ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
        ({"vectorize_particles": "yes"}, "vectorize_particles must be True or False"),
    ],
)
def test_fit_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pb.fit(model(), "meanfield", (X, Y), progress=False, **kwargs)


def test_model_needs_a_lifted_net_and_a_likelihood() -> None:
    with pytest.raises(TypeError, match=r"needs a lifted network, got Sequential. Lift it first"):
        pb.BayesianModel(net(), pb.likelihoods.Gaussian())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"likelihood must be one of pb\.likelihoods"):
        pb.BayesianModel(pb.lift(net()), torch.distributions.Normal)  # type: ignore[arg-type]


def test_likelihood_options() -> None:
    with pytest.raises(ValueError, match=r"scale must be a positive float, 'learn' or a prior, got 'fit'"):
        pb.likelihoods.Gaussian("fit")
    with pytest.raises(ValueError, match="scale must be > 0"):
        pb.likelihoods.Gaussian(0.0)
    with pytest.raises(ValueError, match="the scale prior must be over the positive reals"):
        pb.likelihoods.Gaussian(pb.priors.Normal(0.0, 1.0))


def test_model_without_latent_variables() -> None:
    m = pb.BayesianModel(pb.lift(net(), exclude="**"), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(ValueError, match="the model has no latent variables"):
        pb.guides.make_guide("meanfield", m)


def test_posterior_needs_matching_guide() -> None:
    g = pb.guides.make_guide("meanfield", model())
    other = pb.BayesianModel(pb.lift(net(), exclude="**.bias"), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"guide and model disagree on the latent sites \['0.bias', '2.bias'\]"):
        pb.Posterior(other, g)


def test_predict_arguments() -> None:
    m = model()
    post = pb.Posterior(m, pb.guides.make_guide("meanfield", m))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        post.predict(X, num_samples=0)
    x = X.clone()
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x contains 1 NaN or infinite values, in 1 rows \(first at row 0\)"):
        post.predict(x)
    pred = post.predict(X, num_samples=5)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        pred.interval(90)
    classes_only = r"probs is defined for likelihoods of class labels \(Bernoulli, Categorical\), not Gaussian"
    with pytest.raises(AttributeError, match=classes_only):
        _ = pred.probs


def test_categorical_labels_below_zero() -> None:
    m = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 3)), pb.likelihoods.Categorical())
    with pytest.raises(ValueError, match=r"labels must lie in 0..2 \(the net outputs 3 logits\), but y ranges over -1"):
        fit(m, (X, torch.full((20,), -1)))


def test_empty_dataloader() -> None:
    loader = DataLoader(TensorDataset(X[:0], Y[:0]), batch_size=5)
    with pytest.raises(
        ValueError, match=r"the DataLoader yields no batches \(its dataset is empty\): there is nothing to fit"
    ):
        fit(model(), loader)


def test_unknown_likelihood() -> None:
    with pytest.raises(TypeError, match=r"likelihood must be one of pb\.likelihoods \(Gaussian, .*\), got str"):
        pb.BayesianModel(pb.lift(net()), "gaussian")  # type: ignore[arg-type]


def test_unknown_prior() -> None:
    with pytest.raises(TypeError, match=r"prior must be a pyrobnn prior, .* a dict \{glob: prior\} .*; got str"):
        pb.lift(net(), prior="normal")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"prior\['\*\*'\] must be a pyrobnn prior \(e.g. pb.priors.Normal\(0.0, 1.0\)\)"
    ):
        pb.lift(net(), prior={"**": "normal"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"(?s)cannot read the parameters of MixtureSameFamily.* Use a pyrobnn prior"):
        pb.lift(
            net(),
            prior=torch.distributions.MixtureSameFamily(
                torch.distributions.Categorical(torch.ones(2)), torch.distributions.Normal(torch.zeros(2), 1.0)
            ),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sites": "3.*"}, r"sites pattern '3\.\*' matches no parameter. Available names: 0.weight, 0.bias"),
        ({"exclude": "**.bais"}, r"exclude pattern '\*\*\.bais' matches no parameter. .*e\.g\. '\*\*\.bias'"),
        ({"prior": {"*.weigth": pb.priors.Normal(0.0, 1.0)}}, r"prior pattern '\*\.weigth' matches no parameter"),
    ],
)
def test_glob_that_matches_nothing(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pb.lift(net(), **kwargs)


def test_flow_scope_that_matches_nothing() -> None:
    with pytest.raises(ValueError, match=r"sites pattern '9\.\*' matches no parameter"):
        pb.guides.make_guide("flow", model(), sites="9.*")


def test_parameter_that_cannot_be_lifted() -> None:
    complex_net = torch.nn.Linear(2, 1, dtype=torch.complex64)
    with pytest.raises(
        TypeError, match=r"parameter 'weight' has dtype torch.complex64; only real .* exclude=\['weight'\]"
    ):
        pb.lift(complex_net)


class _ItemNet(torch.nn.Module):
    """Calls .item() on a weight: fine in a forward pass, impossible under torch.func.vmap."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * (1.0 if self.layer.weight.sum().item() > -1e9 else 0.0)


def test_net_that_cannot_run_under_vmap_falls_back_to_a_loop_with_a_warning() -> None:
    m = pb.BayesianModel(pb.lift(_ItemNet()), pb.likelihoods.Gaussian(0.1))
    calls = []
    m.net.net.register_forward_hook(lambda *_: calls.append(1))
    message = r"the network cannot run under torch.func.vmap \(vmap: .*item\(\).*\); pyrobnn runs its particles"
    with pytest.warns(UserWarning, match=message):
        result = pb.fit(m, "meanfield", (X, Y), num_steps=3, num_particles=4, progress=False)
    assert np.isfinite(result.history.loss).all()
    calls.clear()
    pred = result.posterior().predict(X, num_samples=5, seed=0)  # the loop serves predictions too
    assert len(calls) == 5 and torch.isfinite(pred.mean).all()


def test_fit_arguments_of_the_wrong_type() -> None:
    with pytest.raises(ValueError, match=r"num_particles must be an integer >= 1, got 1\.5"):
        pb.fit(model(), "meanfield", (X, Y), num_particles=1.5, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"fit needs a pb\.BayesianModel, got Sequential"):
        pb.fit(net(), "meanfield", (X, Y), progress=False)  # type: ignore[arg-type]


def test_wrong_number_of_features() -> None:
    m = model()  # Sequential(Linear(2, 8), ...): two features per row
    expected = (
        r"x has 3 features per row but the network's first layer takes 2 \(in_features of '0' nn\.Linear\); "
        r"pass x with 2 columns"
    )
    x3 = torch.randn(20, 3)
    with pytest.raises(ValueError, match=expected):
        fit(m, (x3, Y))
    with pytest.raises(ValueError, match=expected):
        pb.mcmc(m, (x3, Y), num_samples=2, warmup=2, num_chains=2, progress=False)
    with pytest.raises(ValueError, match=expected):
        m(x3, Y)
    post = fit(m, (X, Y)).posterior()
    with pytest.raises(ValueError, match=expected):
        post.predict(x3, num_samples=3)
    with pytest.raises(ValueError, match=r"x has shape \(20,\): one number per row, .* pass x with shape \(20, 2\)$"):
        post.predict(X[:, 0], num_samples=3)


def test_wrong_number_of_features_in_nested_or_single_layer_nets() -> None:
    nested = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU()), torch.nn.Linear(4, 1))
    m = pb.BayesianModel(pb.lift(nested), pb.likelihoods.Gaussian(0.1))
    expected = r"x has shape \(20,\): .* \(in_features of '0\.0' nn\.Linear\); pass x with shape \(20, 1\), e\.g\."
    with pytest.raises(ValueError, match=expected):
        fit(m, (Y, Y))
    single = pb.BayesianModel(pb.lift(torch.nn.Linear(3, 1)), pb.likelihoods.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"x has 2 features per row but the network's first layer takes 3 \(its in_f"):
        fit(single, (X, Y))


class TwoLayers(torch.nn.Module):
    """A net whose layer order is known only to its forward: no upfront check, torch's error explained."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 1)
        self.body = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


def test_wrong_number_of_features_in_a_custom_net() -> None:
    m = pb.BayesianModel(pb.lift(TwoLayers()), pb.likelihoods.Gaussian(0.1))
    fit(m, (torch.randn(20, 3), Y))  # no false alarm from the first-declared layer, Linear(4, 1)
    with pytest.raises(ValueError, match=r"the network cannot run on x of shape \(20, 2\) \(mat1 and mat2 .*\); check"):
        fit(m, (X, Y))
