"""Sources of draws: a guide and stored MCMC draws declare what they can do, and the stages ask.

Also the one flattening of the latent sites (``pyrobnn.model.LatentLayout``) and the
compatibility of what 0.2.0 wrote and users reached (checkpoints, ``post.guide``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import pyrobnn as pb
from pyrobnn.model import LatentLayout
from pyrobnn.posterior import ChainSource, DrawSource, MCMCDraws

DATA = Path(__file__).parent / "data"


def linear_model() -> pb.BayesianModel:
    """The model tests/data/mcmc-0.2.0.pt was sampled from (see the test that loads it)."""
    net = torch.nn.Linear(2, 1, bias=False)
    return pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian(scale=0.5))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(20, 2)
    return x, x @ torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(20)


def filled_draws(model: pb.BayesianModel, kernel: str = "nuts", chains: int = 2, draws: int = 30) -> MCMCDraws:
    """Stored draws filled by hand, as a sampler fills them (no sampling: these tests are about the plumbing).

    The draws are near the posterior of ``data()`` (weights about (1, -0.5) ± 0.1), so that
    the LOO of :func:`pyrobnn.compare` has importance weights it can smooth.
    """
    g = torch.Generator().manual_seed(0)
    out = MCMCDraws(model, num_chains=chains, num_draws=draws, kernel=kernel)
    (name, site), *_ = model.latent_sites().items()  # the one site, "weight" (1, 2)
    theta = {name: torch.tensor([1.0, -0.5]) + 0.1 * torch.randn((chains, draws, *site.shape), generator=g)}
    out.values.copy_(out.layout.join(theta))
    out.num_steps.copy_(torch.randint(1, 200, (chains, draws), generator=g))
    out.diverging[0, :3] = True
    out.step_size.copy_(torch.tensor([0.1, 0.2][:chains]))
    out.seconds.copy_(torch.tensor([1.5, 2.5][:chains], dtype=torch.float64))
    return out


# ------------------------------------------------------------------ capabilities
def test_guides_and_stored_draws_declare_their_capabilities() -> None:
    model = linear_model()
    guide = pb.guides.make_guide("meanfield", model)
    point = pb.guides.make_guide("map", model)
    draws = filled_draws(model)
    assert (guide.has_density, guide.point_mass, guide.has_chains) == (True, False, False)
    assert (point.has_density, point.point_mass, point.has_chains) == (True, True, False)
    assert (draws.has_density, draws.point_mass, draws.has_chains) == (False, False, True)
    for source in (guide, point, draws):
        assert isinstance(source, DrawSource)
    assert isinstance(draws, ChainSource) and not isinstance(guide, ChainSource)
    assert not isinstance(draws, pb.guides.Guide)  # stored draws no longer pose as a guide
    # one class under every name users reach it by
    assert pb.MCMCDraws is MCMCDraws is pb.infer.mcmc.MCMCDraws


def test_sample_stats_follow_the_kernel() -> None:
    model = linear_model()
    nuts, chees = filled_draws(model, "nuts"), filled_draws(model, "chees")
    stats = nuts.sample_stats()
    assert set(stats) == {"diverging", "n_steps", "step_size", "tree_depth"}
    assert all(v.shape == (2, 30) for v in stats.values())
    # a tree of n leapfrog steps has depth ceil(log2(n + 1)): 1 step depth 1, 3 steps depth 2, 4 steps depth 3
    assert torch.equal(stats["tree_depth"], torch.ceil(torch.log2(nuts.num_steps.double() + 1)).long())
    assert torch.equal(stats["step_size"][1], torch.full((30,), 0.2))
    assert set(chees.sample_stats()) == {"diverging", "n_steps", "step_size"}  # no trees in ChEES-HMC
    assert nuts.spec() == {"kind": "mcmc", "options": {"num_chains": 2, "num_draws": 30, "kernel": "nuts"}}
    assert chees.spec()["options"]["kernel"] == "chees"
    with pytest.raises(ValueError, match=r"kernel must be the sampler's lower-case name.*'NUTS'"):
        MCMCDraws(model, num_chains=1, num_draws=2, kernel="NUTS")


class Wrapped:
    """Stored draws behind another class: a source the stages know only by what it declares.

    Every member is spelled out: from Python 3.12 a runtime Protocol check looks members up
    statically, so ``__getattr__`` delegation would not count.
    """

    has_density = False
    point_mass = False
    has_chains = True

    def __init__(self, inner: MCMCDraws) -> None:
        self.inner = inner
        self.seconds = inner.seconds
        self.site_names = inner.site_names
        self.num_latent = inner.num_latent
        self.num_chains = inner.num_chains
        self.num_draws = inner.num_draws

    def chain(self, c: int, num_samples: int | None = None) -> Wrapped:
        return Wrapped(self.inner.chain(c, num_samples))

    def sample(self, num_samples: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        return self.inner.sample(num_samples, seed)

    def median(self) -> dict[str, torch.Tensor]:
        return self.inner.median()

    def quantiles(self, qs: Any) -> dict[str, torch.Tensor]:
        return self.inner.quantiles(qs)

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner.log_prob(draws)

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.load_state_dict(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.to(*args, **kwargs)

    def in_order(self) -> dict[str, torch.Tensor]:
        return self.inner.in_order()

    def sample_stats(self) -> dict[str, torch.Tensor]:
        return self.inner.sample_stats()


def test_the_export_and_compare_ask_the_source_not_its_type() -> None:
    model = linear_model()
    x, y = data()
    source = Wrapped(filled_draws(model, "chees", draws=300))
    assert isinstance(source, ChainSource) and not isinstance(source, MCMCDraws)
    post = pb.Posterior(model, source)
    idata = pb.to_arviz(post, x, y, num_samples=10)
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 10
    stats = idata.sample_stats
    assert {"diverging", "n_steps", "step_size", "log_p"} <= set(stats.data_vars)
    assert "log_q" not in stats.data_vars and "tree_depth" not in stats.data_vars
    # chain 0 was thinned from 300 to 10 draws keeping its first one (divergent by construction)
    assert bool(stats["diverging"].values[0, 0]) and not stats["diverging"].values[1].any()
    table = pb.compare({"draws": post}, x, y, train=(x, y), num_samples=300)
    assert math.isnan(table.loc["draws", "khat"]) and math.isnan(table.loc["draws", "final_elbo"])
    assert table.loc["draws", "fit_seconds"] == pytest.approx(4.0)
    assert table.loc["draws", "num_variational_params"] == 0


def test_misuse_of_stored_draws_names_what_applies_instead() -> None:
    model = linear_model()
    x, y = data()
    post = pb.Posterior(model, filled_draws(model))
    with pytest.raises(NotImplementedError, match=r"no density q\(θ\).*PSIS k̂.*R̂ and ESS"):
        post.source.log_prob(post.sample(3, seed=0))
    with pytest.raises(ValueError, match=r"\(MCMCDraws\) have no density.*PSIS k̂.*R̂ and ESS"):
        pb.diagnostics.psis_khat(post, x, y)
    with pytest.raises(TypeError, match="nothing to fit, and they are no guide"):
        post.source(x, y)  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"stored draws and has no parameters to fit.*pb\.mcmc's result"):
        pb.fit(model, post.source, (x, y), num_steps=1, progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Posterior needs a source of draws.*got dict"):
        pb.Posterior(model, {"weight": torch.zeros(1, 2)})  # type: ignore[arg-type]
    # a MAP guide is refused by k̂ as before, now because it declares a point mass
    with pytest.raises(ValueError, match="a MAP guide is a point mass"):
        pb.diagnostics.psis_khat(pb.Posterior(model, pb.guides.make_guide("map", model)), x, y)


# ----------------------------------------------------------------- compatibility
def test_post_guide_of_stored_draws_still_works_with_a_deprecation() -> None:
    model = linear_model()
    post = pb.Posterior(model, filled_draws(model))
    deprecated = r"deprecated since pyrobnn 0\.3\.0.*removed in 0\.4\.0: use post\.source"
    with pytest.warns(DeprecationWarning, match=deprecated):
        assert int(post.guide.diverging.sum()) == 3
    with pytest.warns(DeprecationWarning, match=r"Posterior\(model, guide=\.\.\.\) is deprecated.*0\.4\.0"):
        assert pb.Posterior(model, guide=post.source).source is post.source
    # for a guide, post.guide is the guide, silently
    guide = pb.guides.make_guide("meanfield", model)
    assert pb.Posterior(model, guide).guide is guide


def test_an_mcmc_checkpoint_of_pyrobnn_0_2_0_still_loads() -> None:
    """tests/data/mcmc-0.2.0.pt was written by pyrobnn 0.2.0 (commit 8727983) with::

        torch.manual_seed(0)
        x = torch.randn(20, 2); y = x @ torch.tensor([1.0, -0.5]) + 0.5 * torch.randn(20)
        post = pb.mcmc(linear_model(), (x, y), num_samples=10, warmup=20, num_chains=2, seed=0, progress=False)
        pb.save("tests/data/mcmc-0.2.0.pt", post)

    Its config records ``{"kind": "mcmc", "options": {"num_chains": 2, "num_draws": 10}}``
    (format version 2, no kernel): such draws came from NUTS.
    """
    path = DATA / "mcmc-0.2.0.pt"
    saved = torch.load(path, weights_only=True)
    assert saved["config"]["version"] == 2 and saved["config"]["pyrobnn_version"] == "0.2.0"
    assert saved["config"]["guide"] == {"kind": "mcmc", "options": {"num_chains": 2, "num_draws": 10}}
    post = pb.load(path, linear_model())
    source = post.source
    assert isinstance(source, MCMCDraws) and source.kernel == "nuts"
    assert torch.equal(source.values, saved["guide"]["values"])
    assert torch.equal(source.num_steps, saved["guide"]["num_steps"])
    x, y = data()
    idata = pb.to_arviz(post, x, y)
    assert idata.posterior.sizes["chain"] == 2 and "tree_depth" in idata.sample_stats.data_vars
    assert post.predict(x, num_samples=50, seed=0).samples.shape == (50, 20)


def test_a_checkpoint_saved_now_round_trips_the_kernel(tmp_path: Path) -> None:
    model = linear_model()
    post = pb.Posterior(model, filled_draws(model, "chees"))
    pb.save(tmp_path / "draws.pt", post)
    saved = torch.load(tmp_path / "draws.pt", weights_only=True)
    assert saved["config"]["version"] == pb.checkpoint.VERSION == 3
    loaded = pb.load(tmp_path / "draws.pt", linear_model()).source
    assert isinstance(loaded, MCMCDraws) and loaded.kernel == "chees"
    assert torch.equal(loaded.values, post.source.values)  # type: ignore[attr-defined]
    assert set(loaded.sample_stats()) == {"diverging", "n_steps", "step_size"}


# ------------------------------------------------------------- one flattening
def test_the_latent_layout_is_the_one_flattening() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale=pb.priors.LogNormal(0.0, 1.0)))
    layout = model.layout()
    assert layout.names == list(model.latent_sites()) and layout.dim == 6 + 3 + 3 + 1 + 1
    theta = {name: site.prior.distribution(site.shape).sample((4, 5)) for name, site in model.latent_sites().items()}
    flat = layout.join(theta)
    assert flat.shape == (4, 5, layout.dim)
    assert all(torch.equal(layout.split(flat)[name], value) for name, value in theta.items())
    # constrain with its log-Jacobian inverts pack: θ = T(u), log|det ∂θ/∂u| = −log|det ∂u/∂θ|
    u, log_det_inv = layout.pack(theta)
    back, log_det = layout.constrain_with_log_det(u)
    torch.testing.assert_close(back["likelihood.scale"], theta["likelihood.scale"])
    torch.testing.assert_close(log_det, -log_det_inv)
    part = model.layout(["likelihood.scale", "0.bias"])
    assert part.names == ["likelihood.scale", "0.bias"] and part.dim == 4
    with pytest.raises(ValueError, match=r"unknown latent sites \['3.weight'\]"):
        model.layout(["3.weight"])
    # the joint guides and the stored draws use it
    assert isinstance(pb.guides.make_guide("fullrank", model).layout, LatentLayout)
    assert isinstance(MCMCDraws(model, num_chains=1, num_draws=1).layout, LatentLayout)
