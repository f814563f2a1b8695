"""A joint guide's default fit under num_steps="auto" starts twice, from the net and from a MAP fit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import pyrobnn as pb
from pyrobnn.infer._starts import STARTS, fit_two_starts, two_starts
from pyrobnn.infer.fit import fit_one
from pyrobnn.infer.history import History
from pyrobnn.infer.settings import FitSettings

OPTIONS: dict[str, Any] = {"lr": 0.05, "progress": False}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    return x, x @ torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(64, generator=g)


def model() -> pb.BayesianModel:
    torch.manual_seed(1)  # the same initial weights each time: the "pretrained" start
    return pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1)), pb.likelihoods.Gaussian(scale="learn"))


def test_each_start_is_the_fit_pb_fit_makes_from_it_and_the_better_is_kept(tmp_path: Path) -> None:
    settings = FitSettings(num_steps=150, lr=0.05, progress=False)
    result = fit_two_starts(fit_one, model(), "lowrank", data(), settings, {})
    elbos = result.config["start_elbos"]
    assert result.config["starts"] == list(STARTS) == ["pretrained", "map"] and len(elbos) == 2
    assert result.config["start"] == STARTS[int(np.argmax(elbos))] and result.final_elbo() == max(elbos)
    assert result.settings == settings and result.config["check"] is True  # the caller's, not the starts'
    # Bit for bit: the MAP fit leaves the network's weights as they were, so the first start is
    # the single fit's, and the second the fit from the MAP fit's point.
    own = pb.fit(model(), "lowrank", data(), num_steps=150, init="pretrained", **OPTIONS)
    assert "start" not in own.config and own.final_elbo() == elbos[0]
    map_fit = pb.fit(model(), "map", data(), num_steps=150, check=False, **OPTIONS)
    warm = pb.fit(model(), "lowrank", data(), num_steps=150, init=map_fit.guide.median(), **OPTIONS)
    assert warm.final_elbo() == elbos[1]
    pb.save(tmp_path / "fit.pt", result)  # which start was kept travels with the checkpoint
    record = torch.load(tmp_path / "fit.pt", weights_only=True)["config"]["fit"]
    assert record["start"] == result.config["start"] and record["start_elbos"] == elbos
    assert pb.load(tmp_path / "fit.pt", model()).predict(data()[0], num_samples=10, seed=0).mean.shape == (64,)


def test_fit_takes_two_starts_only_for_a_joint_kind_under_auto_with_no_init(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def spy(fit: Any, model: Any, kind: str, *args: Any) -> str:
        calls.append(kind)
        return "two starts"

    monkeypatch.setattr("pyrobnn.infer.fit.fit_two_starts", spy)
    for kind in ("lowrank", "fullrank"):
        assert pb.fit(model(), kind, data(), num_steps="auto", progress=False) == "two starts"  # type: ignore[comparison-overlap]
    assert calls == ["lowrank", "fullrank"]
    auto = FitSettings(num_steps="auto")
    m = model()
    assert two_starts(m, "lowrank", auto, {})
    assert not two_starts(m, "lowrank", FitSettings(num_steps=300), {})  # a fixed length
    assert not two_starts(m, "lowrank", auto, {"init": "pretrained"})  # the caller chose the start
    assert not two_starts(m, "meanfield", auto, {}) and not two_starts(m, "flow", auto, {})
    assert not two_starts(m, pb.guides.make_guide("fullrank", m), auto, {})  # an instance is fitted as it is
    assert not two_starts(m, "lowrank", FitSettings(num_steps="auto", distributed=True), {})
    # parameters trained outside the prior would carry the first fit's values into the second start
    torch.manual_seed(1)
    partial = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1), exclude=["bias"]), pb.likelihoods.Gaussian(scale=0.3))
    assert not two_starts(partial, "lowrank", auto, {})


def _diverging(which: str) -> Any:
    """``fit_one``, except that the fits from ``which`` start(s), or the MAP fit, diverge."""

    def fit(model: Any, guide: Any, data: Any, settings: Any, guide_options: Any, label: str = "") -> pb.FitResult:
        init = guide_options.get("init")
        start = "map" if guide == "map" or not isinstance(init, str) else "pretrained"
        if (guide == "map" and which == "map fit") or (guide != "map" and which in ("both", start)):
            history = History(*(np.full(1, np.nan) for _ in range(5)))
            raise pb.FitError(f"the loss became NaN at step 0 ({start})", step=0, history=history)
        return fit_one(model, guide, data, settings, guide_options, label)

    return fit


def test_a_start_that_diverges_is_reported_and_the_other_kept() -> None:
    settings = FitSettings(num_steps=200, lr=0.05, progress=False)
    for start, kept in [("map", "pretrained"), ("pretrained", "map")]:
        with pytest.warns(pb.FitWarning, match=f"the start '{start}' was left out, its fit diverged"):
            result = fit_two_starts(_diverging(start), model(), "lowrank", data(), settings, {})
        assert result.config["start"] == kept
        elbos = dict(zip(result.config["starts"], result.config["start_elbos"], strict=True))
        assert math.isnan(elbos[start]) and elbos[kept] == result.final_elbo()
    with pytest.warns(pb.FitWarning, match="the start 'map' was left out, its MAP fit diverged"):
        result = fit_two_starts(_diverging("map fit"), model(), "lowrank", data(), settings, {})
    assert result.config["starts"] == ["pretrained"] and result.config["start"] == "pretrained"
    with pytest.warns(pb.FitWarning), pytest.raises(pb.FitError, match=r"NaN at step 0 \(pretrained\)"):
        fit_two_starts(_diverging("both"), model(), "lowrank", data(), settings, {})


def test_the_report_says_which_start_each_joint_fit_kept() -> None:
    from types import SimpleNamespace

    from pyrobnn.cli._report import starts_text

    def fit(**config: Any) -> SimpleNamespace:
        return SimpleNamespace(config=config)

    assert starts_text({"meanfield": fit(), "map": fit()}) == ""
    text = starts_text({"meanfield": fit(), "lowrank": fit(start="map"), "fullrank": fit(start="pretrained")})
    assert text.startswith(" lowrank, fullrank: each fitted from the net's initial weights and from a MAP fit's")
    assert text.endswith("(lowrank from a MAP fit's; fullrank from the net's initial weights).")
