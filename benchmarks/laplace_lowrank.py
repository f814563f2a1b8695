"""The low-rank Laplace structure: what truncating the curvature loses, and what it costs on a large net.

Part 1, truncation. On the three gap tasks of ``benchmarks/ensembles.py`` (1-20-1 and 1-30-1
nets, D = 61 and 91), one MAP fit per task and seed, then around the same point the full
Laplace approximation and ``structure="lowrank"`` at several ranks. Against the full one (the
thing the low rank approximates; the reference posterior is ``ensembles.py``'s business):
W1 between the predictive draws of y at 200 test points, averaged; the predictive sd over the
full one's inside the gap; the log evidence's excess over the full one's (never negative, by
Cauchy interlacing); the seconds of the second phase (``fit_posterior``) over the full one's.

Part 2, scale. A regression with 8 inputs and 2000 points (y = sin(x₁) + x₂ x₃/2 + noise 0.1,
500 more points for testing), an 8-128-128-1 tanh net: D = 17,793, beyond a full precision's
``max_dim``. One MAP fit, then ``"diag"`` and ``"lowrank"`` at several ranks around it, each
with its noise scale by type-II maximum likelihood. Per structure: seconds of the second
phase over the MAP fit's seconds, the log evidence, the test log-likelihood of the
linearised predictive (MAP: of the point prediction with the noise at its MAP value) and the
mean predictive sd on the test points.

    python benchmarks/laplace_lowrank.py                 # both parts, about 10 minutes
    python benchmarks/laplace_lowrank.py --quick         # smoke run: tiny settings

Writes ``laplace-lowrank.md`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensembles import TASKS

import pyrobnn as pb
from pyrobnn.guides import LaplaceGuide, make_guide


def laplace_around(model: pb.BayesianModel, point: dict[str, torch.Tensor], data: Any, **options: Any) -> tuple:
    """A Laplace guide built around ``point`` with ``options``, and the seconds its second phase took."""
    guide = make_guide("laplace", model, init=point, **options)
    assert isinstance(guide, LaplaceGuide)
    start = time.perf_counter()
    guide.fit_posterior(model, *data)
    return guide, time.perf_counter() - start


def truncation(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.tasks:
        task = TASKS[name]
        for seed in args.seeds:
            x, y, x_test, _ = task.data(seed)
            lo, hi = task.gap
            in_gap = ((x_test > lo) & (x_test < hi)).squeeze(-1)
            model = task.model(seed)
            point = pb.fit(model, "map", (x, y), num_steps=args.steps, seed=seed, progress=False).guide.median()
            laplace_around(model, point, (x, y), structure="full")  # warm: torch.func's first call compiles
            full, full_s = laplace_around(model, point, (x, y), structure="full")
            full_post = pb.Posterior(model, full)
            truth = full_post.predict(x_test, num_samples=args.samples, seed=seed)
            truth_gap = full_post.predict(x_test[in_gap], num_samples=args.samples, seed=seed)
            for rank in args.ranks:
                guide, seconds = laplace_around(model, point, (x, y), structure="lowrank", rank=rank)
                post = pb.Posterior(model, guide)
                pred = post.predict(x_test, num_samples=args.samples, seed=seed + 1)
                pred_gap = post.predict(x_test[in_gap], num_samples=args.samples, seed=seed + 1)
                rows.append(
                    {
                        "task": name,
                        "seed": seed,
                        "dim": full.layout.dim,
                        "rank": rank,
                        "w1": pb.metrics.reference_distance(pred, truth)["w1"],
                        "sd_gap": pb.metrics.reference_distance(pred_gap, truth_gap)["sd_ratio"],
                        "excess": float(guide.log_evidence) - float(full.log_evidence),
                        "time": seconds / full_s,
                    }
                )
            # the floor: the full Laplace against itself with other draws
            again = full_post.predict(x_test, num_samples=args.samples, seed=seed + 1)
            rows.append({"task": name, "seed": seed, "dim": full.layout.dim, "rank": "full (floor)",
                         "w1": pb.metrics.reference_distance(again, truth)["w1"], "sd_gap": 1.0,
                         "excess": 0.0, "time": 1.0})  # fmt: skip
    return rows


def scale_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.1 * torch.randn(n, generator=g)
    return x, y


def scale(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    x, y = scale_data(args.points, 0)
    x_test, y_test = scale_data(500, 1)
    torch.manual_seed(0)
    width = args.width
    net = nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
    model = pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian("learn"))
    start = time.perf_counter()
    point = pb.fit(model, "map", (x, y), num_steps=args.steps, progress=False).guide.median()
    map_s = time.perf_counter() - start
    map_post = pb.Posterior(model, make_guide("map", model, init=point))
    pred = map_post.predict(x_test, num_samples=1, seed=0)
    rows = [{"structure": "MAP", "time": 1.0, "log_z": math.nan, "test_ll": float(pred.log_prob(y_test).mean()),
             "sd": float(pred.std.mean())}]  # fmt: skip
    structures = [("diag", {"structure": "diag"})]
    structures += [(f"lowrank({r})", {"structure": "lowrank", "rank": r}) for r in args.scale_ranks]
    dim = 0
    for label, options in structures:
        guide, seconds = laplace_around(model, point, (x, y), **options)
        dim = guide.layout.dim
        pred = pb.Posterior(model, guide).predict(x_test, num_samples=args.samples, seed=0)
        rows.append({"structure": label, "time": seconds / map_s, "log_z": float(guide.log_evidence),
                     "test_ll": float(pred.log_prob(y_test).mean()), "sd": float(pred.std.mean())})  # fmt: skip
        print(f"  {label}: {seconds:.1f} s", flush=True)
    print(f"  MAP fit: {map_s:.1f} s", flush=True)
    return dim, rows


def markdown(args: argparse.Namespace, part1: list[dict[str, Any]], dim: int, part2: list[dict[str, Any]]) -> str:
    lines = ["# Low-rank Laplace", "", f"`python benchmarks/laplace_lowrank.py{' --quick' if args.quick else ''}`", ""]
    lines += ["## Truncation: low rank against the full Laplace approximation around the same MAP", ""]
    lines += ["| task | seed | D | rank | W1 to full | sd in gap / full's | log Z − full's | time / full's |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for r in part1:
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['dim']} | {r['rank']} | {r['w1']:.4f} | {r['sd_gap']:.2f} | "
            f"{r['excess']:.3f} | {r['time']:.2f} |"
        )
    lines += ["", f"## Scale: {args.points} points, 8-{args.width}-{args.width}-1 tanh, D = {dim}", ""]
    lines += ["| structure | time / MAP fit's | log Z | test LL | mean predictive sd |", "|---|---|---|---|---|"]
    for r in part2:
        lines.append(f"| {r['structure']} | {r['time']:.2f} | {r['log_z']:.1f} | {r['test_ll']:.3f} | {r['sd']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 5, 10, 20])
    parser.add_argument("--scale-ranks", nargs="+", type=int, default=[10, 50, 100])
    parser.add_argument("--steps", type=int, default=3000, help="MAP steps")
    parser.add_argument("--samples", type=int, default=2000, help="predictive draws")
    parser.add_argument("--points", type=int, default=2000, help="part 2's training points")
    parser.add_argument("--width", type=int, default=128, help="part 2's hidden width")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to check that it runs")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds, args.ranks, args.scale_ranks = ["gap"], [0], [2], [3]
        args.steps, args.samples, args.points, args.width = 20, 50, 100, 8
    part1 = truncation(args)
    dim, part2 = scale(args)
    report = markdown(args, part1, dim, part2)
    print(report)
    if not args.quick:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "laplace-lowrank.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
