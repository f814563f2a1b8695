"""Where the Laplace approximation misses the reference in the gap: its spread, or its centre?

The linearised predictive's mean is exactly the MAP network's output, f(x, θ*): whatever the
Gaussian's covariance, a Laplace approximation cannot move the predictive mean off the one
function its MAP fit found. This script splits the W1 distance to the reference inside the gap
of each task of ``benchmarks/ensembles.py`` into what the centre and what the spread cost.

Per task and seed, at the test points in the gap, for ``"laplace"`` with its defaults and for
``ensemble:laplace:5``:

- ``W1``: as in ``ensembles.py``, between predictive draws of y, averaged over the gap's points;
- ``|mean error| / sd``: the distance between the predictive mean and the reference's, in
  units of the reference's predictive sd, averaged;
- ``W1, centred``: W1 after shifting each point's draws so that their mean is the
  reference's (what W1 would be with the reference's centre and the approximation's spread);
- ``sd ratio``: predictive sd over the reference's;
- ``MAP |mean error| / sd``: the same distance for the MAP fit's own network output;
- ``units centred in the gap``: hidden units whose transition point −b/w (a ReLU's kink, a
  tanh's centre) lies in the gap, for the MAP fit and, averaged over draws, for the reference.
  A network with none there is, across the gap, a function that the unit activity pattern of
  the data's two sides fixes (linear, for ReLU); its linearisation can only move that.

    python benchmarks/laplace_gap_mean.py --cache refs/     # about 10 minutes without a cache
    python benchmarks/laplace_gap_mean.py --quick           # smoke run

Writes ``laplace-gap-mean.md`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensembles import TASKS, reference

import pyrobnn as pb


def w1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between two samples of equal size at each point: ``(S, N)`` each, ``(N,)``."""
    return (a.sort(0).values - b.sort(0).values).abs().mean(0)


def split(pred: pb.Prediction, ref: pb.Prediction) -> dict[str, float]:
    draws, truth = pred.samples.reshape(pred.samples.shape[0], -1), ref.samples.reshape(ref.samples.shape[0], -1)
    mean, ref_mean, ref_sd = draws.mean(0), truth.mean(0), truth.std(0)
    centred = draws - mean + ref_mean
    return {
        "w1": float(w1(draws, truth).mean()),
        "mean_error": float(((mean - ref_mean).abs() / ref_sd).mean()),
        "w1_centred": float(w1(centred, truth).mean()),
        "sd_ratio": float((draws.std(0) / ref_sd).mean()),
    }


def centred_in_gap(draws: dict[str, torch.Tensor], gap: tuple[float, float]) -> float:
    """Hidden units with −b/w in the gap, averaged over draws (a leading draw dim on each site)."""
    centre = -draws["0.bias"] / draws["0.weight"][..., 0]
    return float(((centre > gap[0]) & (centre < gap[1])).double().sum(-1).mean())


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.tasks:
        task = TASKS[name]
        for seed in args.seeds:
            args.seed = seed
            x, y, x_test, _ = task.data(seed)
            lo, hi = task.gap
            x_gap = x_test[((x_test > lo) & (x_test < hi)).squeeze(-1)]
            ref_post = reference(args, task, x, y)
            ref = ref_post.predict(x_gap, num_samples=args.samples, seed=seed)
            ref_units = centred_in_gap(ref_post.sample(args.samples, seed=seed), task.gap)
            length = {"num_steps": args.steps, "progress": False, "seed": seed}
            single = pb.fit(task.model(), "laplace", (x, y), **length)
            mixture = pb.ensemble(task.model(), "laplace", (x, y), num_members=args.members, **length)
            map_pred = pb.Posterior(task.model(), pb.guides.make_guide("map", task.model(), init=single.guide.median()))
            map_mean = map_pred.predict(x_gap, num_samples=1, seed=seed).mean.reshape(-1)
            ref_flat = ref.samples.reshape(ref.samples.shape[0], -1)
            map_error = float(((map_mean - ref_flat.mean(0)).abs() / ref_flat.std(0)).mean())
            point = {name: value.unsqueeze(0) for name, value in single.guide.median().items()}
            units = {"map_units": centred_in_gap(point, task.gap), "ref_units": ref_units}
            for label, post in (
                ("laplace", single.posterior()),
                (f"ensemble:laplace:{args.members}", mixture.posterior()),
            ):
                pred = post.predict(x_gap, num_samples=args.samples, seed=seed + 1)
                row = {"task": name, "seed": seed, "posterior": label, **split(pred, ref), "map_error": map_error}
                rows.append({**row, **units})
            print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Laplace in the gap: centre against spread",
        "",
        f"`python benchmarks/laplace_gap_mean.py`, {args.steps} steps, {args.samples} draws",
        "",
    ]
    lines += [
        "| task | seed | posterior | W1 | W1, centred | \\|mean error\\| / sd | sd ratio | MAP \\|mean error\\| / sd "
        "| units centred in the gap: MAP / reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['posterior']} | {r['w1']:.3f} | {r['w1_centred']:.3f} | "
            f"{r['mean_error']:.2f} | {r['sd_ratio']:.2f} | {r['map_error']:.2f} | {r['map_units']:.0f} / "
            f"{r['ref_units']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--cache", default=None, help="folder for the reference draws")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    args.quiet = True
    if args.quick:
        args.tasks, args.seeds, args.steps, args.members, args.samples = ["gap"], [0], 20, 2, 32
    rows = run(args)
    report = markdown(args, rows)
    print(report)
    if not args.quick:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "laplace-gap-mean.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
