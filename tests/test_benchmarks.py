"""The benchmark scripts stay runnable: each runs for a step or two (their numbers are not checked here)."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
UCI = BENCHMARKS.parent.parent / "shared" / "data" / "uci"


def run(script: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, check=True, timeout=600
    )
    return out.stdout


def test_step_time_smoke() -> None:
    out = run(
        "step_time.py",
        *("--tasks", "small", "--particles", "2", "--rounds", "1", "--steps", "1", "--round-seconds", "0"),
        *("--memory-task", "small", "--memory-particles", "2"),
    )
    methods = ["floor", "pyro", "meanfield", "meanfield(local)", "lowrank(10)", "flow(last layer)"]
    methods += ["flow(last layer, local)"]
    if importlib.util.find_spec("torch_blue") is not None:
        methods += ["torch_blue", "torch_blue(analytic)"]
    timings, memory = out.split("peak memory")
    assert "small (13-50-1), S = 2" in timings and "small (13-50-1), S = 2" in memory
    for method in methods:
        assert f"  {method} " in timings and f"  {method} " in memory


def test_laplace_lowrank_smoke() -> None:
    out = run("laplace_lowrank.py", "--quick")
    assert "| gap | 0 | 61 | 2 |" in out and "| gap | 0 | 61 | full (floor) |" in out
    assert "8-8-8-1 tanh, D = 153" in out and "| lowrank(3) |" in out and "| diag |" in out


def test_laplace_gap_mean_smoke() -> None:
    out = run("laplace_gap_mean.py", "--quick")
    assert "| gap | 0 | laplace |" in out and "| gap | 0 | ensemble:laplace:2 |" in out


def test_laplace_starts_smoke() -> None:
    out = run("laplace_starts.py", "--quick", "--lengths", "40", "--tune-lengths", "--hessian")
    assert "| gap | 0 | model's weights | 20 |" in out and "| gap | 0 | reset, seed 1 | 20 |" in out
    assert "| gap | 0 | model's weights, 40 steps | 40 |" in out
    assert "| gap | 0 | model's weights, 40 steps, τ tuned | 40 |" in out
    # 40 MAP steps are far from a mode: the exact Hessian's row is reported, not raised
    assert "| gap | 0 | model's weights, 40 steps, Hessian: not positive definite |" in out
    assert "| gap | 0 | model's weights, τ tuned |" in out and "of 2 |" in out


@pytest.mark.skipif(not (UCI / "yacht" / "data.txt").is_file(), reason="needs ../shared/data/uci beside the repo")
def test_uci_smoke(tmp_path: Path) -> None:
    out = run(
        "uci.py",
        *("--datasets", "yacht", "--splits", "2", "--steps", "3", "--samples", "10"),
        *("--workers", "1", "--out", str(tmp_path)),
    )
    with open(tmp_path / "uci-meanfield.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["dataset"], r["split"]) for r in rows] == [("yacht", "0"), ("yacht", "1")]
    assert all(math.isfinite(float(r["rmse"])) and math.isfinite(float(r["test_ll"])) for r in rows)
    report = (tmp_path / "uci-meanfield.md").read_text()
    assert "| yacht | 2 |" in report  # the summary row, with the published columns beside it
    assert "6.890 ± 0.670" in report and "Against the published numbers" in report
    assert report in out


@pytest.mark.slow
def test_guide_step_time_smoke() -> None:
    out = run("guide_step_time.py", "--rounds", "1", "--steps", "1", "--particles", "2")
    assert "lowrank(10)" in out and "lowrank(25)" in out and "flow(last layer)" in out and "669706 latent dims" in out


def test_guides_vs_nuts_smoke(tmp_path: Path) -> None:
    out = run(
        "guides_vs_nuts.py",
        *("--nuts-samples", "10", "--nuts-warmup", "10", "--nuts-chains", "2", "--steps", "5", "--samples", "20"),
        *("--skip-demo", "--quiet", "--out", str(tmp_path), "--nuts-cache", str(tmp_path / "nuts.pt")),
    )
    for guide in ("nuts", "meanfield", "lowrank", "fullrank", "flow", "map"):
        assert f"| {guide} |" in out
    assert (tmp_path / "guides-vs-nuts.md").read_text() in out
    again = run(  # the cached draws are read back, not sampled again
        "guides_vs_nuts.py",
        *("--guides", "map", "--steps", "5", "--samples", "20", "--skip-demo", "--quiet", "--out", str(tmp_path)),
        *("--nuts-cache", str(tmp_path / "nuts.pt")),
    )
    assert "2 chains × 10 draws" in again


def test_nuts_time_smoke() -> None:
    out = run("nuts_time.py", "--hidden", "4", "--warmup", "5", "--samples", "5")
    assert "| 1-4-1 | 13 |" in out


def test_mcmc_speed_smoke(tmp_path: Path) -> None:
    out = run("mcmc_speed.py", "--quick", "--skip-numpyro", "--out", str(tmp_path))
    assert "| pb.mcmc (ChEES, defaults) |" in out and "| pb.mcmc (NUTS, 2 × 10) |" in out
    assert "self-floor" in out
    assert (tmp_path / "mcmc-speed.md").read_text() in out


def test_ensembles_smoke(tmp_path: Path) -> None:
    ensembles = ("map:2", "meanfield:2:reset", "meanfield:2")
    args = ("--quick", "--quiet", "--tasks", "gap", "--singles", "map", "--ensembles", *ensembles)
    out = run("ensembles.py", *args, "--out", str(tmp_path), "--cache", str(tmp_path / "refs"))
    assert "| map |" in out and "| ensemble:meanfield:2 |" in out and "| ensemble:meanfield:2:reset |" in out
    # on the cost task, batched ensembles from torch's initialisation are also fitted one member at
    # a time, for the ratio (not those started at MAP fits, whose MAP stage is a batch either way)
    assert out.count("×) |") == 2 and out.split("| ensemble:meanfield:2 |")[1].splitlines()[0].endswith("|  |")
    assert (tmp_path / "ensembles-quick.md").read_text() in out
    assert (tmp_path / "refs" / "gap-seed0.pt").is_file()
    again = run("ensembles.py", *args, "--out", str(tmp_path), "--cache", str(tmp_path / "refs"))
    # the cached reference is read back, not sampled again: the same draws give the same self-distance row
    ref_row = [line for line in out.splitlines() if line.startswith("| reference")]
    assert len(ref_row) == 1 and ref_row[0] in again.splitlines()


def test_flow_gap_smoke(tmp_path: Path) -> None:
    rows = ("meanfield", "flow:num_layers=2,hidden_dims=[8]", "flow:lr=0.003,num_particles=4")
    args = ("--quick", "--quiet", "--seeds", "0", "--samples", "20", "--rows", *rows)
    out = run("flow_gap.py", *args, "--out", str(tmp_path), "--cache", str(tmp_path / "refs"))
    assert "| meanfield | " in out and "| flow:num_layers=2,hidden_dims=[8] | " in out
    assert "| flow:lr=0.003,num_particles=4 | " in out
    assert "—" in out.split("| meanfield |")[1].splitlines()[0]  # a mean-field row has no flow to move
    assert (tmp_path / "flow-gap-quick.md").read_text() in out
    assert (tmp_path / "refs" / "gap-seed0.pt").is_file()


def test_warm_start_smoke(tmp_path: Path) -> None:
    out = run("warm_start.py", "--quick", "--out", str(tmp_path))
    assert "| gap1d | 0 | meanfield | MAP fit |" in out and "| gap1d | 0 | fullrank:2 | reset |" in out
    assert (tmp_path / "warm-start-quick.md").read_text() == out


def test_fit_optimum_smoke(tmp_path: Path) -> None:
    out = run("fit_optimum.py", "--quick", "--out", str(tmp_path))
    assert "| gap1d | 0 | meanfield |" in out and "| gap1d | 0 | lowrank |" in out
    assert "best of 4 restarts" in out and (tmp_path / "fit-optimum-quick.md").read_text() in out
    # one way alone: the table has the default and that column, and a file of its own
    out = run("fit_optimum.py", "--quick", "--ways", "MAP start", "--out", str(tmp_path))
    assert "| default | MAP start | default's steps, s |" in out and "best of 4 restarts" not in out
    assert (tmp_path / "fit-optimum-map-start-quick.md").read_text() in out


def test_fit_optimum_rank_reaches_every_low_rank_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyrobnn as pb

    spec = importlib.util.spec_from_file_location("fit_optimum", BENCHMARKS / "fit_optimum.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[tuple[str, object]] = []
    fit = pb.fit

    def recording(model: Any, kind: str, data: Any, **options: Any) -> Any:
        calls.append((kind, options.get("rank")))
        return fit(model, kind, data, **options)

    monkeypatch.setattr(pb, "fit", recording)
    argv = ["--quick", "--kinds", "lowrank", "--ways", "MAP start", "best of 4 restarts", "--rank", "3"]
    # main() sets torch's threads and a warnings filter for a process of its own: keep them out of this one
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            assert module.main([*argv, "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    # the MAP fit takes no rank; the default, the MAP start and the four restarts all get rank 3
    assert calls.count(("lowrank", 3)) == 6 and calls.count(("map", None)) == 1, calls
    text = (tmp_path / "fit-optimum-map-start-best-of-4-restarts-rank-3-quick.md").read_text()
    assert "low-rank guides of rank 3" in text


def test_kl_warm_up_smoke(tmp_path: Path) -> None:
    out = run("kl_warm_up.py", "--quick", "--out", str(tmp_path))
    assert "| gap1d | 0 | lowrank |" in out and "| β = 1 |" in out and "| warm-up 3000 |" in out
    assert (tmp_path / "kl-warm-up-gap1d-seeds-0-quick.md").read_text() in out


def test_fit_lr_smoke(tmp_path: Path) -> None:
    # lr 1e6 overflows the loss within the 20 steps: the row reports it and goes on
    out = run("fit_lr.py", "--quick", "--lrs", "0.01", "1e6", "--out", str(tmp_path))
    assert "| gap1d | 0 | lowrank | " in out and "| lr 0.01 | lr 1e+06 |" in out and "diverged at step" in out
    assert (tmp_path / "fit-lr-gap1d-lowrank-seeds-0-quick.md").read_text() in out


def test_batched_members_smoke(tmp_path: Path) -> None:
    out = run("batched_members.py", "--quick", "--kinds", "map", "fullrank", "--out", str(tmp_path))
    assert "| gap1d | map | " in out and "| gap1d | fullrank | " in out and "| 2 batched, s |" in out
    assert (tmp_path / "batched-members-gap1d-quick.md").read_text() in out


def test_interpolation_smoke(tmp_path: Path) -> None:
    out = run("interpolation.py", "--quick", "--out", str(tmp_path))
    assert "| small | 0 | 20 | 31 | 50 |" in out
    assert (tmp_path / "interpolation-quick.md").read_text() in out


def test_two_starts_smoke(tmp_path: Path) -> None:
    out = run("two_starts.py", "--quick", "--out", str(tmp_path))
    assert "| gap1d | 0 | lowrank |" in out
    assert (tmp_path / "two-starts-gap1d-seeds-0-quick.md").read_text() in out
    assert (tmp_path / "two-starts-gap1d-lowrank-seed-0-quick.npz").exists()
