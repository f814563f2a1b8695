"""Nested R̂ (Margossian et al. 2022) against hand-computed values and its sampling distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pyrobnn as pb


def test_nested_rhat_on_a_tiny_array_is_the_hand_computed_value() -> None:
    # K = 2 superchains of M = 2 chains of N = 2 draws
    draws = np.array([[0.0, 2.0], [1.0, 1.0], [4.0, 6.0], [5.0, 7.0]])
    # chain means 1, 1 | 5, 6; superchain means 1, 5.5 (overall 3.25)
    # W̃_1 = (2 + 0) / 2 = 1, B̃_1 = 0;  W̃_2 = (2 + 2) / 2 = 2, B̃_2 = (0.25 + 0.25) / 1 = 0.5
    # B = (2.25² + 2.25²) / 1 = 10.125, W = ((0 + 1) + (0.5 + 2)) / 2 = 1.75: B / W = 81 / 14
    expected = math.sqrt(1 + 81 / 14)
    assert float(pb.nested_rhat(draws, superchain_size=2)) == pytest.approx(expected, rel=1e-12)
    assert expected > 2.6  # superchains apart: far above any threshold (1.01)
    # one value per element of the trailing shape; nR̂ is unchanged by a shift and a scale
    stacked = np.stack([draws, 100 + 3 * draws, -draws], axis=-1)[:, :, None, :]
    np.testing.assert_allclose(pb.nested_rhat(stacked, 2), np.full((1, 3), expected), rtol=1e-12)


def test_one_chain_per_superchain_is_the_classic_rhat() -> None:
    draws = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 3.0]])
    # chain means 2, 4, 1 (mean 7/3): B = (1/9 + 25/9 + 16/9) / 2 = 7/3;
    # within-chain variances 1, 4, 3: W = 8/3. Classic sqrt(1 + B / W) = sqrt(15 / 8)
    assert float(pb.nested_rhat(draws, superchain_size=1)) == pytest.approx(math.sqrt(15 / 8), rel=1e-12)
    # Gelman and Rubin's sqrt((N - 1)/N + B / W) (ArviZ's method="identity") is nR̂² − 1/N
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(3)
    many = rng.normal(size=(6, 40)) + rng.normal(size=(6, 1))
    classic = float(az.rhat(az.convert_to_dataset(many), method="identity")["x"])
    assert float(pb.nested_rhat(many, 1)) ** 2 - 1 / 40 == pytest.approx(classic**2, rel=1e-10)


def test_converged_superchains_give_nested_rhat_near_one() -> None:
    # iid N(0, 1) draws: K = 8 superchains of M = 16 chains of N = 50 draws, 200 quantities.
    # Each superchain mean is N(0, 1/(MN)), so B ~ χ²₇ / (7 MN), and W is 1 within about 2%
    # (6400 draws), hence nR̂² − 1 ≈ χ²₇ / (7 · 800).
    rng = np.random.default_rng(0)
    k, m, n = 8, 16, 50
    rhat = pb.nested_rhat(rng.normal(size=(k * m, n, 200)), superchain_size=m)
    assert rhat.shape == (200,) and np.all(rhat >= 1)
    # The χ²₇ 99.99% quantile is 29.9, so nR̂² − 1 < 29.9 / 5600 · 1.05 < 0.0057 with probability
    # 0.9999 each, over 200 quantities ≥ 0.98: nR̂ < 1.003
    assert rhat.max() < 1.003
    # E[nR̂² − 1] = 1/(MN): the mean over 200 quantities of MN(nR̂² − 1) is 1 ± sd sqrt(2/7/200) = 0.038;
    # 0.15 is 4 sd (a 1/K instead of 1/(K − 1) would give 0.875, a missing superchain mean 16)
    assert abs(np.mean((rhat**2 - 1) * m * n) - 1) < 0.15


def test_a_superchain_stuck_apart_gives_nested_rhat_well_above_one() -> None:
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(4 * 8, 20))
    draws[:8] += 1.0  # the first superchain's chains never left its start, one sd away
    # superchain means 1, 0, 0, 0 up to sd 1/√160 = 0.08: B ≈ (0.75² + 3 · 0.25²) / 3 = 0.25, and
    # W ≈ 1 (within-chain variances 1, chain means about their superchain's 1/√20 apart): nR̂ ≈ √1.25
    # = 1.12; the noise in B (about ±0.05) keeps it above 1.05, far above the 1.01 threshold
    assert pb.nested_rhat(draws, superchain_size=8) > 1.05


def test_constant_chains_and_non_finite_draws() -> None:
    same = np.ones((4, 3))
    assert np.isnan(pb.nested_rhat(same, 2))  # nothing to compare
    apart = np.concatenate([np.ones((2, 3)), 2 * np.ones((2, 3))])
    assert pb.nested_rhat(apart, 2) == np.inf  # every chain constant, superchains differ
    bad = np.random.default_rng(2).normal(size=(4, 5, 2))
    bad[0, 0, 0] = np.inf
    result = pb.nested_rhat(bad, 2)
    assert np.isnan(result[0]) and np.isfinite(result[1])


@pytest.mark.parametrize(
    ("draws", "size", "error", "match"),
    [
        (np.zeros(5), 1, ValueError, r"shape \(chains, draws, \*shape\); got shape \(5,\).*draws\[None, :\]"),
        (np.zeros((6, 4)), 4, ValueError, r"superchain_size=4 does not divide the 6 chains.*divisor of 6"),
        (np.zeros((6, 4)), 0, ValueError, r"superchain_size=0 does not divide"),
        (np.zeros((4, 4)), 4, ValueError, r"at least 2 superchains.*superchains of 4 make 1.*smaller superchain_size"),
        (np.zeros((1, 4)), 1, ValueError, r"at least 2 superchains"),
        (np.zeros((4, 4)), 2.0, TypeError, r"superchain_size must be an int, got float"),
    ],
)
def test_nested_rhat_errors_say_what_to_pass(draws: np.ndarray, size: int, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        pb.nested_rhat(draws, size)
