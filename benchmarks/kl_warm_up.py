"""What the KL warm-up under ``num_steps="auto"`` does: each guide's default fit against the same fit
with the KL weight held at 1 from the first step.

On the built-in regression datasets with the command line's model (one hidden layer of 50 tanh
units, N(0, 1) priors, learned noise, standardised data; ``gap1d`` is ``make demo``'s), per
guide kind and seed:

- ``default``: ``pb.fit(model, kind, data, num_steps="auto", seed=seed, init="pretrained")``, one
  fit from the network's weights (the default's first start, ``two_starts.py``): for the guides that
  correlate the sites (low-rank, full-rank, flow) the KL weight rises from 0 to 1 over the
  first 3000 steps (``pyrobnn.infer._optim.AUTO_WARM_UP``); mean-field's stays at 1;
- the other: for those guides the same with ``kl_weight=1.0`` (no warm-up); for mean-field,
  whose default has none, the same with ``kl_weight=pb.linear_annealing(3000)``.

Every ELBO is estimated with ``--particles`` (4096) draws, ± its Monte Carlo standard error.

    OMP_NUM_THREADS=1 python benchmarks/kl_warm_up.py --datasets gap1d          # minutes per row
    python benchmarks/kl_warm_up.py --quick                                      # smoke run

Writes ``kl-warm-up-DATASETS-seeds-SEEDS.md`` into ``--out`` after every row.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import pyrobnn as pb
from pyrobnn.cli import build_model
from pyrobnn.infer._optim import AUTO_WARM_UP

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace, data: Any, kind: str, seed: int, **options: Any) -> tuple[float, float, int, float]:
    """(ELBO, its se, the steps the fit took, its seconds) of one fit from the network's weights.

    ``init="pretrained"`` keeps it one fit: under ``num_steps="auto"`` a low-rank or full-rank guide
    given no ``init`` is fitted from two starts and the better kept (``benchmarks/two_starts.py``),
    which would mix the luck of the start into what a setting does to one fit.
    """
    model = build_model(data, args.hidden, seed)
    steps, options = args.steps, {"init": "pretrained", **options}
    result = pb.fit(model, kind, (data.x_train, data.y_train), num_steps=steps, seed=seed, progress=False, **options)
    terms, se = pb.estimate_elbo(model, result.guide, data.x_train, data.y_train, num_particles=args.particles)
    return float(terms.elbo), float(se), result.num_steps, result.elapsed_s


def cell(value: tuple[float, float, int, float]) -> str:
    return f"{value[0]:.1f} ± {value[1]:.2f} ({value[2]}, {value[3]:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gap1d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["lowrank", "fullrank", "flow", "meanfield"])
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, a 1-4-1 net, 64 particles")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.steps = "auto"
    if args.quick:  # a fixed length has no warm-up: this only shows the script runs
        args.steps, args.particles, args.hidden, args.kinds = 20, 64, 4, [args.kinds[0], "meanfield"]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", pb.FitWarning)  # unsettled fits are what is measured
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"kl-warm-up-{'-'.join(args.datasets)}-seeds-{'-'.join(map(str, args.seeds))}"
    path = out / f"{stem}{'-quick' if args.quick else ''}.md"
    lines = [
        "# The KL warm-up of num_steps='auto'",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/kl_warm_up.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d')}), "
        f"one hidden layer of {args.hidden} tanh units, learned noise, num_steps={args.steps!r}; "
        f"ELBO from {args.particles} particles ± se "
        "(the fit's steps, its seconds).",
        "",
        "| data | seed | guide | default | the other | which | default − other |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.datasets:
        data = pb.datasets.standardize(pb.datasets.load(name))
        for seed in args.seeds:
            for kind in args.kinds:
                default = run(args, data, kind, seed)
                if pb.guides.make_guide(kind, build_model(data, args.hidden, seed)).correlates:
                    other, which = run(args, data, kind, seed, kl_weight=1.0), "β = 1"
                else:
                    warm = pb.linear_annealing(AUTO_WARM_UP)
                    other, which = run(args, data, kind, seed, kl_weight=warm), f"warm-up {AUTO_WARM_UP}"
                lines.append(
                    f"| {name} | {seed} | {kind} | {cell(default)} | {cell(other)} | {which} | "
                    f"{default[0] - other[0]:+.1f} |"
                )
                print(lines[-1], file=sys.stderr)
                path.write_text("\n".join(lines) + "\n")  # after every row: a run cut short keeps its rows
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
