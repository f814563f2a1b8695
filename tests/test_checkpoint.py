"""pb.save / pb.load: state dicts and a plain config, never a pickled object."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch

import pyrobnn as pb

X = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
Y = torch.sin(X.sum(-1))

GUIDES = [
    ("meanfield", {}),
    ("meanfield", {"kl": "mc"}),
    ("meanfield", {"local_reparam": True}),
    ("lowrank", {"rank": 3}),
    ("fullrank", {}),
    ("flow", {}),
    ("flow", {"sites": "last_layer", "flow": "spline_coupling", "num_layers": 1}),
    ("flow", {"sites": "last_layer", "local_reparam": True}),
    ("map", {}),
]


def build(hidden: int = 6, *, sites: str | None = None, prior_scale: float = 1.0, scale: float | str = "learn"):  # type: ignore[no-untyped-def]
    """The same recipe each time; the net's own starting weights come from the global RNG."""
    net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    # 0.bias stays deterministic: a point estimate trained in the model, restored from its state.
    bnet = pb.lift(net, prior=pb.priors.Normal(0.0, prior_scale), sites=sites, exclude="0.bias")
    return pb.BayesianModel(bnet, pb.likelihoods.Gaussian(scale=scale))


def fitted(kind: str = "meanfield", **options) -> pb.FitResult:  # type: ignore[no-untyped-def]
    return pb.fit(build(), kind, (X, Y), num_steps=5, lr=0.05, progress=False, **options)


def _parts(guide: torch.nn.Module) -> list[torch.nn.Module]:
    return list(getattr(guide, "guides", [guide]))


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


@pytest.mark.parametrize(("kind", "options"), GUIDES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in GUIDES])
def test_save_load_predict_is_identical(tmp_path: Path, kind: str, options: dict) -> None:
    result = fitted(kind, **options)
    before = result.posterior().predict(X, num_samples=20, seed=3)
    path = tmp_path / "fit.pt"
    pb.save(path, result.posterior())

    torch.manual_seed(99)  # the new model starts from other weights; the checkpoint must override them
    model = build()
    rng = torch.get_rng_state()
    post = pb.load(path, model)
    assert torch.equal(rng, torch.get_rng_state())  # rebuilding a flow draws nothing from the caller's RNG
    assert type(post.guide) is type(result.guide) and post.guide.site_names == result.guide.site_names
    parts = [(p, q) for p, q in zip(_parts(post.guide), _parts(result.guide), strict=True)]
    assert all(getattr(p, "local_sites", None) == getattr(q, "local_sites", None) for p, q in parts)
    after = post.predict(X, num_samples=20, seed=3)
    assert torch.equal(before.samples, after.samples) and torch.equal(before.mean, after.mean)
    assert torch.equal(model.net.net[0].bias, result.model.net.net[0].bias)  # the deterministic part too

    # Only tensors and plain values: it reads with weights_only=True, the config is plain data.
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["guide"]["kind"] == kind and _plain(raw["config"])
    assert all(isinstance(v, torch.Tensor) for part in ("model", "guide") for v in raw[part].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt"]  # no partial file left behind


def test_save_takes_a_fit_result_and_records_the_options(tmp_path: Path) -> None:
    result = fitted("flow", sites="last_layer", kl="mc", flow="affine_coupling", num_layers=1, hidden_dims=[8])
    pb.save(tmp_path / "fit.pt", result)  # a FitResult is saved as its posterior
    config = torch.load(tmp_path / "fit.pt", weights_only=True)["config"]
    assert config["guide"] == {
        "kind": "flow",
        "options": {
            "sites": ["2.weight", "2.bias"],
            "flow": "affine_coupling",
            "num_layers": 1,
            "hidden_dims": [8],
            "max_dim": 7,
            "max_memory_gib": 2.0,
            "conditioner_lr": 1 / 8,  # the default, 1 / (last hidden width)
            "kl": "mc",
        },
    }
    assert config["sites"]["0.weight"] == {"shape": [6, 3], "prior": "Normal(loc=0, scale=1)"}
    assert config["likelihood"] == "Gaussian(scale ~ HalfNormal(scale=1))"
    loaded = pb.load(tmp_path / "fit.pt", build())
    assert not loaded.guide.guides[1].analytic_kl  # type: ignore[attr-defined]
    # The fit's settings, as FitResult.config records them: what checkpoints and results share.
    assert config["fit"] == dict(result.config) and config["fit"]["lr"] == 0.05 and config["fit"]["num_steps"] == 5
    pb.save(tmp_path / "post.pt", result.posterior())  # a Posterior knows no fit
    assert torch.load(tmp_path / "post.pt", weights_only=True)["config"]["fit"] == {}


def test_a_flow_built_past_the_defaults_loads_as_built(tmp_path: Path) -> None:
    """A raised memory limit and a chosen conditioner learning rate are part of the flow's spec."""
    model = build()
    guide = pb.guides.make_guide("flow", model, num_layers=1, hidden_dims=[8], conditioner_lr=0.05, max_memory_gib=1e-5)
    with pytest.raises(ValueError, match="max_memory_gib=2e-06"):  # the limit it was built past refuses it
        pb.guides.make_guide("flow", model, num_layers=1, hidden_dims=[8], max_memory_gib=2e-6)
    pb.save(tmp_path / "flow.pt", pb.Posterior(model, guide))
    loaded = pb.load(tmp_path / "flow.pt", build()).guide
    assert loaded.conditioner_lr == 0.05 and loaded.spec() == guide.spec()  # type: ignore[attr-defined]


@pytest.mark.parametrize("options", [{}, {"sites": "last_layer", "kl": "mc"}], ids=["all", "last_layer"])
def test_a_version_1_checkpoint_still_loads(tmp_path: Path, options: dict) -> None:
    """Version 1 named a flow's sites ``scope``, and kept a flow over every site's state at the top level."""
    result = fitted("flow", num_layers=1, **options)
    path = tmp_path / "fit.pt"
    pb.save(path, result)
    checkpoint = torch.load(path, weights_only=True)
    config = checkpoint["config"]
    config["version"] = 1
    config["guide"]["options"] = {("scope" if k == "sites" else k): v for k, v in config["guide"]["options"].items()}
    if not options:  # written as the flow part itself: layers.0..., loc_scale.loc, reverse
        checkpoint["guide"] = {k.removeprefix("parts.0."): v for k, v in checkpoint["guide"].items()}
        assert "loc_scale.loc" in checkpoint["guide"]
    torch.save(checkpoint, path)

    post = pb.load(path, build())
    assert type(post.guide) is pb.guides.FlowGuide and post.guide.spec() == result.guide.spec()
    before = result.posterior().predict(X, num_samples=20, seed=3)
    after = post.predict(X, num_samples=20, seed=3)
    assert torch.equal(before.samples, after.samples)


class _Payload:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.write_text, (self.marker, "this ran"))


def test_a_file_carrying_a_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    path, marker = tmp_path / "evil.pt", tmp_path / "ran.txt"
    pb.save(path, fitted())
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["extra"] = _Payload(marker)  # an otherwise valid checkpoint
    torch.save(checkpoint, path)

    with pytest.raises(
        ValueError,
        match=r"refusing to load .*evil\.pt': it carries a pickled Python object \(\S+\), .*nothing in it was run",
    ):
        pb.load(path, build())
    assert not marker.exists()
    # The payload is live: an unguarded torch.load would have run it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "this ran"


def test_a_checkpoint_for_another_architecture_names_the_mismatched_sites(tmp_path: Path) -> None:
    path = tmp_path / "fit.pt"
    pb.save(path, fitted())
    shapes = r"site '0\.weight': shape \(6, 3\) in the checkpoint, \(8, 3\) in the model; site '2\.weight': shape"
    with pytest.raises(ValueError, match=rf"saved for a differently built model: {shapes}.*Build the model exactly"):
        pb.load(path, build(hidden=8))
    with pytest.raises(ValueError, match=r"sites in the checkpoint but not in the model: \['0\.weight'\]"):
        pb.load(path, build(sites="2.*"))
    with pytest.raises(ValueError, match=r"site '0\.weight' has prior Normal\(loc=0, scale=1\) in the checkpoint but"):
        pb.load(path, build(prior_scale=2.0))
    with pytest.raises(
        ValueError,
        match=r"sites in the checkpoint but not in the model: \['likelihood\.scale'\]; the likelihood is Gaussian",
    ):
        pb.load(path, build(scale=0.1))


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    not_ours = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, not_ours)
    with pytest.raises(ValueError, match=r"weights\.pt' is not a pyrobnn checkpoint .*write one with pb\.save"):
        pb.load(not_ours, build())
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(
        ValueError,
        match=r"cannot read .*garbage\.pt' as a checkpoint \(torch's weights-only reader stopped: Unsupported operand",
    ):
        pb.load(garbage, build())
    newer = tmp_path / "newer.pt"
    pb.save(newer, fitted())
    checkpoint = torch.load(newer, weights_only=True)
    checkpoint["config"]["version"] = pb.checkpoint.VERSION + 1
    torch.save(checkpoint, newer)
    version = pb.checkpoint.VERSION
    with pytest.raises(
        ValueError, match=rf"format version {version + 1}, newer than this pyrobnn reads \(version {version}\); upgrade"
    ):
        pb.load(newer, build())


def test_save_and_load_arguments(tmp_path: Path) -> None:
    result = fitted()
    with pytest.raises(TypeError, match=r"save needs a pb\.Posterior or the pb\.FitResult of pb\.fit, got dict"):
        pb.save(tmp_path / "fit.pt", {"guide": result.guide})  # type: ignore[arg-type]
    model = result.model
    parts = [pb.guides.MeanFieldGuide(model, sites=[name]) for name in model.latent_sites()]
    handmade = pb.Posterior(model, pb.guides.GuideList(model, parts))
    with pytest.raises(TypeError, match=r"pb\.save can rebuild the guides made by pb\.guides\.make_guide .*GuideList"):
        pb.save(tmp_path / "fit.pt", handmade)
    pb.save(tmp_path / "fit.pt", result)
    with pytest.raises(TypeError, match=r"load needs the pb\.BayesianModel to restore into, got Sequential"):
        pb.load(tmp_path / "fit.pt", model.net.net)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_checkpoint_saved_on_cuda_loads_on_the_cpu(tmp_path: Path) -> None:
    result = pb.fit(build(), "lowrank", (X, Y), num_steps=5, rank=2, device="cuda", progress=False)
    pb.save(tmp_path / "fit.pt", result)
    post = pb.load(tmp_path / "fit.pt", build())
    assert all(p.device.type == "cpu" for p in post.guide.parameters())
    for name, value in result.guide.median().items():
        torch.testing.assert_close(post.guide.median()[name], value.cpu())
