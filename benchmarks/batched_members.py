"""What fitting K ensemble members as one batch saves: K members in one batch against K separate fits and one fit.

On the built-in regression datasets with the command line's model (one hidden layer of 50 tanh
units, N(0, 1) priors, learned noise, standardised data; ``gap1d`` is ``make demo``'s), per guide
kind, in one process and in this order, ``--rounds`` times:

- ``one fit``: ``pb.fit(model, kind, data, num_steps=--steps)``;
- ``K batched``: ``pb.ensemble(model, kind, data, num_members=K, num_steps=--steps, init="reset")``,
  the members trained as one batch (:mod:`pyrobnn.infer._batched`; for Laplace members their MAP
  fits, each Gaussian then built on its own);
- ``K separate``: the same with ``batched=False``, the members one ``pb.fit`` after another.

The seconds are the fits' own (``elapsed_s``: training, not the ensemble's weights), the median
over the rounds; the ratios are taken within each round and their median reported, so that a
machine's drift between rounds cancels. Members start from torch's initialisation, so that
no MAP stage is timed.

    OMP_NUM_THREADS=1 python benchmarks/batched_members.py --datasets gap1d     # about 12 minutes
    python benchmarks/batched_members.py --quick                                 # smoke run

Writes ``batched-members-DATASETS.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import pyrobnn as pb
from pyrobnn.cli import build_model

ROOT = Path(__file__).resolve().parent.parent


def seconds(args: argparse.Namespace, data: pb.datasets.Dataset, kind: str) -> tuple[float, float, float]:
    """(one fit, K members batched, K members separately), the fits' own seconds."""
    train = (data.x_train, data.y_train)
    length = {"num_steps": args.steps, "progress": False}
    one = pb.fit(build_model(data, args.hidden, 0), kind, train, seed=0, **length).elapsed_s
    runs = {}
    for batched in (True, False):
        model = build_model(data, args.hidden, 0)
        result = pb.ensemble(model, kind, train, num_members=args.members, init="reset", batched=batched, **length)
        assert result.config["batched"] is batched
        runs[batched] = result.elapsed_s
    return one, runs[True], runs[False]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gap1d"])
    parser.add_argument("--kinds", nargs="+", default=["map", "meanfield", "lowrank", "fullrank", "laplace"])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, a 1-4-1 net, one round")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hidden, args.rounds, args.members = 20, 4, 1, 2
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", pb.FitWarning)  # short fits are what is timed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"batched-members-{'-'.join(args.datasets)}{'-quick' if args.quick else ''}.md"
    k = args.members
    command = shlex.join(["python", "benchmarks/batched_members.py", *sys.argv[1:]])
    lines = [
        "# K ensemble members as one batch",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}), one hidden layer of {args.hidden} tanh units, "
        f"learned noise, {args.steps} steps per fit, one torch thread; seconds are medians over "
        f"{args.rounds} rounds, ratios the medians of each round's ratio.",
        "",
        f"| data | guide | one fit, s | {k} batched, s | {k} separate, s | separate / batched | batched / one fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.datasets:
        data = pb.datasets.standardize(pb.datasets.load(name))
        for kind in args.kinds:
            rounds = [seconds(args, data, kind) for _ in range(args.rounds)]
            one, batch, separate = (statistics.median(r[i] for r in rounds) for i in range(3))
            speedup = statistics.median(r[2] / r[1] for r in rounds)
            overhead = statistics.median(r[1] / r[0] for r in rounds)
            lines.append(
                f"| {name} | {kind} | {one:.1f} | {batch:.1f} | {separate:.1f} | {speedup:.1f}× | {overhead:.2f}× |"
            )
            print(lines[-1], flush=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
