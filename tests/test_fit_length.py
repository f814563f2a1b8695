"""num_steps="auto": the rate stays up while the ELBO rises, then decays over half as many steps again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrobnn as pb
from pyrobnn.infer import _optim
from pyrobnn.infer._optim import AUTO_CHECK_EVERY, AUTO_CONFIRM, AUTO_MAX_STEPS, AUTO_MIN_STEPS, UntilConverged


def place(elbo: np.ndarray) -> UntilConverged:
    length = UntilConverged(0.01)
    for value in elbo:
        length.record(float(value))
    return length


def test_a_level_elbo_ends_at_the_first_confirmed_check() -> None:
    noise = np.random.default_rng(0).normal(0.0, 1.0, 5000)  # level from the start: sd 1 per step
    length = place(-100 + noise)
    first = AUTO_MIN_STEPS + (AUTO_CONFIRM - 1) * AUTO_CHECK_EVERY
    assert length.decay_start == first and length.num_steps == first + first // 2


def test_a_rising_elbo_keeps_the_rate_up_until_it_levels() -> None:
    steps = np.arange(8000)
    # Rises by 30 nats with a time constant of 800 steps: level (under 0.5 nats a quarter) only late.
    elbo = -100 - 30 * np.exp(-steps / 800) + np.random.default_rng(1).normal(0.0, 0.3, len(steps))
    length = place(elbo)
    assert length.decay_start is not None
    n = length.decay_start
    q = n // 4
    # At the decay the last quarter gained less than the tolerance on the noiseless curve ...
    curve = -30 * np.exp(-steps / 800)
    assert curve[n - q :].mean() - curve[n - 2 * q : n - q].mean() < _optim.AUTO_TOL
    # ... and at the check before the first confirming one it had not: no early stop.
    m = n - AUTO_CONFIRM * AUTO_CHECK_EVERY
    r = m // 4
    assert curve[m - r : m].mean() - curve[m - 2 * r : m - r].mean() > 0.5 * _optim.AUTO_TOL


def test_an_elbo_that_never_levels_decays_at_the_cap() -> None:
    length = place(np.linspace(-1000.0, 0.0, AUTO_MAX_STEPS + 10))
    assert length.decay_start == AUTO_MAX_STEPS


def test_a_warm_up_of_the_kl_weight_is_left_out_of_the_checks() -> None:
    # Over a linear warm-up the objective falls as the KL weight rises, which the checks would take
    # for a level ELBO; they start afresh once the weight stops changing.
    warm, rng = 3000, np.random.default_rng(2)
    weights = np.minimum(1.0, np.arange(warm + 4000) / warm)
    objective = -100 - 50 * weights + rng.normal(0.0, 1.0, len(weights))
    first = AUTO_MIN_STEPS + (AUTO_CONFIRM - 1) * AUTO_CHECK_EVERY
    assert place(objective).decay_start == first  # blind to the weight: level in the warm-up
    length = UntilConverged(0.01)
    for value, weight in zip(objective, weights, strict=True):
        length.record(float(value), float(weight))
    # the weight is 1 from step `warm` on; the first check waits until the fit's last half is too
    # (quarters of the whole fit, as without a warm-up), at 2 * warm
    assert length.decay_start == 2 * warm + (AUTO_CONFIRM - 1) * AUTO_CHECK_EVERY


def test_a_fit_with_a_warm_up_levels_off_only_after_it() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    y = x @ torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(64, generator=g)
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1)), pb.likelihoods.Gaussian(scale=0.3))
    warm = pb.linear_annealing(1500, start=0.01)
    result = pb.fit(model, "meanfield", (x, y), num_steps="auto", kl_weight=warm, progress=False)
    decay_start = int(np.argmax(result.history.lr < result.history.lr[0]))
    assert decay_start >= 1500 + AUTO_MIN_STEPS + (AUTO_CONFIRM - 1) * AUTO_CHECK_EVERY


def test_auto_warms_up_the_kl_weight_for_guides_that_correlate_the_sites() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    y = x @ torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(64, generator=g)
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1)), pb.likelihoods.Gaussian(scale=0.3))
    warm = pb.fit(model, "fullrank", (x, y), num_steps="auto", lr=0.05, init="pretrained", progress=False)
    beta = warm.history.kl_weight
    assert warm.config["kl_weight"] == f"linear_annealing({_optim.AUTO_WARM_UP})"
    np.testing.assert_allclose(beta[: _optim.AUTO_WARM_UP], np.arange(_optim.AUTO_WARM_UP) / _optim.AUTO_WARM_UP)
    assert np.all(beta[_optim.AUTO_WARM_UP :] == 1.0) and len(beta) > _optim.AUTO_WARM_UP + AUTO_MIN_STEPS
    # given a weight, a fixed length, or a guide without correlations: no warm-up
    for kind, options in [("fullrank", {"kl_weight": 1.0}), ("fullrank", {"num_steps": 300}), ("meanfield", {})]:
        options = {"num_steps": "auto", **options}
        result = pb.fit(model, kind, (x, y), lr=0.05, progress=False, **options)  # type: ignore[arg-type]
        assert np.all(result.history.kl_weight == 1.0) and result.config["kl_weight"] == 1.0


def test_the_rate_is_constant_then_falls_to_lr_times_lr_decay() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    y = x @ torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(64, generator=g)
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1)), pb.likelihoods.Gaussian(scale=0.3))
    result = pb.fit(model, "meanfield", (x, y), num_steps="auto", lr=0.02, lr_decay=0.1, progress=False)
    n = result.num_steps
    assert len(result.history) == n < AUTO_MAX_STEPS and result.config["num_steps"] == n
    assert result.settings is not None and result.settings.num_steps == "auto"
    start = n * 2 // 3  # the decay takes the last third: half as many steps as before it
    lr = result.history.lr
    assert np.all(lr[: start + 1] == pytest.approx(0.02))
    assert np.all(np.diff(lr[start:]) < 0) and lr[-1] == pytest.approx(0.002, rel=0.01)


def test_the_command_line_takes_auto_or_a_positive_number_of_steps() -> None:
    import argparse

    from pyrobnn.cli._usage import steps

    assert steps("auto") == "auto" and steps("250") == 250
    for wrong in ("0", "many", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"must be a positive integer or 'auto', got {wrong}"):
            steps(wrong)


def test_the_command_line_runs_each_guide_until_its_elbo_levels_off_by_default(tmp_path: object) -> None:
    from pathlib import Path

    from pyrobnn.cli import main

    out = Path(str(tmp_path))
    argv = ["fit", "--data", "builtin:gap1d", "--guide", "map", "--hidden", "4", "--samples", "40"]
    assert main([*argv, "--export-samples", "20", "--quiet", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    taken = int(report.split("until the ELBO levelled off (")[1].split(" steps)")[0])
    assert taken >= AUTO_MIN_STEPS * 1.5 and "decayed over half as many steps again" in report


def test_the_report_gives_the_range_of_lengths_of_single_fits_and_of_ensemble_members() -> None:
    from types import SimpleNamespace

    from pyrobnn.cli._report import auto_lengths

    def fit(steps: int) -> SimpleNamespace:
        return SimpleNamespace(num_steps=steps)

    def ensemble(*steps: int) -> SimpleNamespace:  # an ensemble's own num_steps is its first member's
        return SimpleNamespace(num_steps=steps[0], members=tuple(fit(n) for n in steps))

    singles = {"meanfield": fit(6150), "fullrank": fit(5700)}
    assert auto_lengths(singles) == "until the ELBO levelled off (5700–6150 steps)"
    assert auto_lengths({"map": fit(4800)}) == "until the ELBO levelled off (4800 steps)"
    both = {**singles, "ensemble:map:3": ensemble(9000, 4650, 7200), "ensemble:meanfield:2": ensemble(3900, 3900)}
    assert auto_lengths(both) == "until the ELBO levelled off (5700–6150 steps; ensemble members 3900–9000)"
    only = {"ensemble:map:2": ensemble(4650, 4650)}
    assert auto_lengths(only) == "until each member's ELBO levelled off (4650 steps)"


def test_an_ensemble_under_auto_fits_each_member_to_its_own_length() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, generator=g)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(40, generator=g)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale=0.1))
    batch = pb.ensemble(model, "map", (x, y), num_members=3, num_steps="auto", progress=False)
    separate = pb.ensemble(model, "map", (x, y), num_members=3, num_steps="auto", batched=False, progress=False)
    assert batch.config["batched"] and not separate.config["batched"]
    for a, b in zip(batch.members, separate.members, strict=True):
        # Each member of the batch keeps its own schedule: the rate at lr until its own ELBO levels
        # off, then down to lr * lr_decay at its own last step.
        assert a.config["num_steps"] == "auto" and a.num_steps == len(a.history) >= AUTO_MIN_STEPS * 1.5
        assert a.history.lr[0] == pytest.approx(1e-2) and a.history.lr[-1] == pytest.approx(1e-4)
        # MAP's objective has no Monte Carlo noise, so the batch takes the steps of separate pb.fit
        # runs from the same starts up to float32 summation order: the same checks find the ELBO
        # level (one check, 100 steps, of slack for a difference at a threshold), and the fits end
        # at the same point (observed within 1e-5).
        assert abs(a.num_steps - b.num_steps) <= 150
        for name, value in a.guide.median().items():
            torch.testing.assert_close(value, b.guide.median()[name], rtol=1e-3, atol=1e-3)
