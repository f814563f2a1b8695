"""The benchmark scripts stay runnable: each runs for a step or two (their numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, check=True, timeout=600
    )
    return out.stdout


def test_step_time_smoke() -> None:
    out = run("step_time.py", "--tasks", "small", "--particles", "2", "--rounds", "1", "--steps", "1")
    for method in ("floor", "pyro", "meanfield", "lowrank(10)", "flow(last layer)"):
        assert method in out
    assert "small (13-50-1), S = 2" in out and "peak resident memory" in out


@pytest.mark.slow
def test_guide_step_time_smoke() -> None:
    out = run("guide_step_time.py", "--rounds", "1", "--steps", "1", "--particles", "2")
    assert "lowrank(10)" in out and "flow(last layer)" in out and "669706 latent dims" in out
