"""FitSettings: the settings of a fit held once, which fit, init, SVIState, FitResult and checkpoints read."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import pyrobnn as pb
from pyrobnn.infer.settings import FitSettings


def _keywords(function: object, skip: tuple[str, ...] = ()) -> dict[str, object]:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name not in skip}


def test_the_front_doors_take_exactly_the_settings_with_their_defaults() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(FitSettings)}
    assert _keywords(pb.fit) == fields
    assert _keywords(pb.svi.init) == {k: v for k, v in fields.items() if k not in ("progress", "check")}
    assert _keywords(pb.ensemble).keys() - {"num_members", "weights", "holdout", "batched", "init"} <= set(fields)


def test_a_fit_and_its_state_hold_the_settings_they_were_given() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(30, 2), torch.randn(30)
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1)), pb.likelihoods.Gaussian(scale=1.0))
    schedule = pb.linear_annealing(5)
    result = pb.fit(model, "meanfield", (x, y), epochs=2, batch_size=10, lr=0.02, kl_weight=schedule, progress=False)
    assert result.settings == FitSettings(epochs=2, batch_size=10, lr=0.02, kl_weight=schedule, progress=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.settings.lr = 1.0  # type: ignore[misc]
    # The record: the settings as plain data plus what the fit resolved from them.
    assert result.config["num_steps"] == result.num_steps == 6 and result.config["epochs"] == 2
    assert result.config["num_particles"] == 8 and result.config["dataset_size"] == 30
    assert result.config["kl_weight"] == repr(schedule) and result.config["optimizer"] == "Adam"
    assert "progress" not in result.config and result.config["check"] is True
    state = pb.svi.init(model, "meanfield", (x, y), num_steps=7, seed=3)
    assert state.settings == FitSettings(num_steps=7, seed=3) and state.config["num_steps"] == 7


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_steps": 1.0}, 'num_steps must be an integer >= 1 or "auto", got 1.0'),
        ({"num_steps": "long"}, "num_steps must be an integer >= 1 or \"auto\", got 'long'"),
        ({"num_particles": True}, "num_particles must be an integer >= 1, got True"),
        ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\] \(1.0 keeps the rate constant\), got 1.5"),
        ({"check": 1}, "check must be True or False, got 1"),
    ],
)
def test_settings_no_fit_can_run_with_are_refused_when_built(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FitSettings(**settings)


def test_an_optimizer_that_is_not_one_is_refused() -> None:
    with pytest.raises(TypeError, match="optimizer must be a torch optimizer or a callable"):
        FitSettings(optimizer="adam")  # type: ignore[arg-type]
