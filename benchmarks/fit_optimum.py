"""Does a default fit reach its family's optimum? The ELBO of each guide's default fit against the best
that a MAP start, 4 restarts, 4 times the steps or the best of 4 MAP-started fits find for the same family.

On the built-in datasets with the command line's model (1-50-1 tanh, N(0, 1) priors, learned
noise, standardised data; ``gap1d`` is ``make demo``'s), per guide kind and seed:

- ``default``: ``pb.fit(model, kind, data, num_steps=--steps, seed=seed)``; under ``auto`` (the
  default) the low-rank, full-rank and flow fits here and below begin with ``pb.fit``'s KL warm-up
  (``benchmarks/kl_warm_up.py``), and the low-rank and full-rank defaults are the better of two
  fits, from the network's weights and from a MAP fit's (``benchmarks/two_starts.py``);
- ``MAP start``: the same from ``init=map_fit.guide.median()``, a MAP fit of the same length;
- ``best of 4 restarts``: four fits from ``init="reset"`` under seeds ``seed, seed + 1000, ...``,
  the best ELBO kept;
- ``4x steps``: one fit of four times the default's own number of steps, with the default's KL
  weight (a fixed length would otherwise hold it at 1);
- ``best of 4 MAP starts``: ``pb.ensemble(model, kind, data, num_members=4).best()``, four fits
  each started at a MAP fit of its own from independent weights, the best kept by the fits' own
  end-of-fit ELBO (``EnsembleResult.best``), then measured like the others.

Every ELBO is estimated with ``--particles`` (4096) draws, ± its Monte Carlo standard error. The
table gives the default's shortfall to the best of the five and whether it is within 1 nat, and
whether each joint guide's default reaches mean-field's default (its family contains
mean-field's).

    OMP_NUM_THREADS=1 python benchmarks/fit_optimum.py --datasets gap1d     # hours; --kinds for fewer guides
    OMP_NUM_THREADS=1 python benchmarks/fit_optimum.py --datasets friedman --kinds lowrank --ways "MAP start"
    python benchmarks/fit_optimum.py --quick                                 # smoke run

``--rank`` sets the low-rank guide's rank in every column (its default otherwise), to measure
another rank's family the same way.

``--ways`` measures only some of the columns (the default is always measured); the table then
gives the shortfall to the best of those, and the file's name says which.

Writes ``fit-optimum.md`` (``fit-optimum-DATASETS.md`` for other datasets, ``-steps-N`` added for
a fixed length) into ``--out``, after every row, so a run cut short keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import pyrobnn as pb
from pyrobnn.cli import DEFAULT_STEPS, build_model
from pyrobnn.infer._optim import fit_kl_weight

ROOT = Path(__file__).resolve().parent.parent


def elbo(
    args: argparse.Namespace, data: Any, kind: str, seed: int, steps: int | str, **options: Any
) -> tuple[float, float, int, float]:
    """(ELBO, its se, the steps the fit took, its seconds)."""
    model = build_model(data, args.hidden, seed)
    options = {**guide_options(args, kind), **options}
    result = pb.fit(model, kind, (data.x_train, data.y_train), num_steps=steps, seed=seed, progress=False, **options)
    terms, se = pb.estimate_elbo(model, result.guide, data.x_train, data.y_train, num_particles=args.particles)
    return float(terms.elbo), float(se), result.num_steps, result.elapsed_s


def guide_options(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """``rank=--rank`` for the low-rank guide when the command line sets one, else the guide's default."""
    return {"rank": args.rank} if kind == "lowrank" and args.rank is not None else {}


def best_of_map_starts(args: argparse.Namespace, data: Any, kind: str, seed: int) -> tuple[float, float, int, float]:
    """(ELBO, its se, the steps, the seconds) of the best of 4 members started at their own MAP fits."""
    model = build_model(data, args.hidden, seed)
    # pb.ensemble's default start: a MAP fit of each member's own (MAP and Laplace members fit one themselves)
    train = (data.x_train, data.y_train)
    runs = pb.ensemble(
        model, kind, train, num_members=4, num_steps=args.steps, seed=seed, progress=False, **guide_options(args, kind)
    )
    best = runs.best()
    terms, se = pb.estimate_elbo(model, best.guide, data.x_train, data.y_train, num_particles=args.particles)
    return float(terms.elbo), float(se), best.num_steps, runs.elapsed_s


def default_kl_weight(args: argparse.Namespace, data: Any, kind: str, seed: int) -> Any:
    """The KL weight ``pb.fit`` gives this kind by default at ``--steps``."""
    guide = pb.guides.make_guide(kind, build_model(data, args.hidden, seed))
    return fit_kl_weight(None, guide.correlates, args.steps)


def measure(
    way: str,
    args: argparse.Namespace,
    data: Any,
    kind: str,
    seed: int,
    default: tuple[float, float, int, float],
    map_fit: pb.FitResult,
) -> tuple[float, float, int, float]:
    """The ELBO (with its se, steps and seconds) that one of the ``WAYS`` finds for ``kind``."""
    if way == "MAP start":
        return elbo(args, data, kind, seed, args.steps, init=map_fit.guide.median())
    if way == "best of 4 restarts":
        restarts = (elbo(args, data, kind, seed + 1000 * r, args.steps, init="reset") for r in range(4))
        return max(restarts, key=lambda run: run[0])
    if way == "4x steps":
        # four times the default's own length, with the default's KL weight (a fixed length alone
        # would hold it at 1 where the default under "auto" warms it up)
        weight = default_kl_weight(args, data, kind, seed)
        return elbo(args, data, kind, seed, 4 * default[2], kl_weight=weight)
    return best_of_map_starts(args, data, kind, seed)


def rows_for(args: argparse.Namespace, name: str, seed: int) -> Iterator[dict[str, Any]]:
    data = pb.datasets.standardize(pb.datasets.load(name))
    train = (data.x_train, data.y_train)
    map_fit = pb.fit(
        build_model(data, args.hidden, seed), "map", train, num_steps=args.steps, seed=seed, progress=False
    )
    for kind in args.kinds:
        default = elbo(args, data, kind, seed, args.steps)
        runs = {
            "default": default,
            **{way: measure(way, args, data, kind, seed, default, map_fit) for way in args.ways},
        }
        print(
            f"{name} seed {seed} {kind}: " + ", ".join(f"{k} {v[0]:.1f} ({v[2]} steps)" for k, v in runs.items()),
            file=sys.stderr,
        )
        yield {"data": name, "seed": seed, "kind": kind, **runs}


#: The ways to a family's best that the default is measured against, in the table's order.
WAYS = ("MAP start", "best of 4 restarts", "4x steps", "best of 4 MAP starts")


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    ways = ("default", *args.ways)
    lines = [
        "# Does a default fit reach its family's optimum?",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/fit_optimum.py', *sys.argv[1:]])}` "
        f"({time.strftime('%Y-%m-%d')}), "
        f"1-{args.hidden}-1 tanh, learned noise, {args.steps} steps"
        + ("" if args.rank is None else f", low-rank guides of rank {args.rank}")
        + f"; ELBO from {args.particles} particles ± se."
        + ("" if len(args.ways) == len(WAYS) else " Only some ways measured: the shortfall is to the best of these."),
        "",
        "| data | seed | guide | " + " | ".join(ways) + " | default's steps, s | default's shortfall | within 1 nat "
        "| ≥ mean-field |",
        "|---|---|---|" + "---|" * (len(ways) + 4),
    ]
    for r in rows:
        best = max(r[w][0] for w in ways)
        shortfall = best - r["default"][0]
        mf = next(
            (m for m in rows if m["data"] == r["data"] and m["seed"] == r["seed"] and m["kind"] == "meanfield"), None
        )
        above_mf = (
            "—" if mf is None or r["kind"] == "meanfield" else ("yes" if r["default"][0] >= mf["default"][0] else "no")
        )
        cells = " | ".join(f"{r[w][0]:.1f} ± {r[w][1]:.2f}" for w in ways)
        lines.append(
            f"| {r['data']} | {r['seed']} | {r['kind']} | {cells} | {r['default'][2]}, {r['default'][3]:.0f} | "
            f"{shortfall:.1f} | "
            f"{'yes' if shortfall <= 1 else 'no'} | {above_mf} |"
        )
    return "\n".join(lines) + "\n"


def _steps(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gap1d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["meanfield", "lowrank", "fullrank", "flow"])
    parser.add_argument("--steps", type=_steps, default=DEFAULT_STEPS, help="an integer, or 'auto'")
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--rank", type=int, default=None, help="the low-rank guide's rank (default: the guide's)")
    parser.add_argument(
        "--ways", nargs="+", default=list(WAYS), choices=WAYS, help="the ways besides the default (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 steps, 64 particles, a 1-8-1 net")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.particles, args.hidden, args.kinds = 10, 64, 8, args.kinds[:2]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", pb.FitWarning)  # unsettled fits are what is measured
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "fit-optimum" + ("" if args.datasets == ["gap1d"] else "-" + "-".join(args.datasets))
    stem += "" if args.seeds == [0] else "-seeds-" + "-".join(map(str, args.seeds))
    stem += "" if args.steps == DEFAULT_STEPS or args.quick else f"-steps-{args.steps}"
    stem += "" if len(args.ways) == len(WAYS) else "-" + "-".join(w.replace(" ", "-").lower() for w in args.ways)
    stem += "" if args.rank is None else f"-rank-{args.rank}"
    path = out / f"{stem}{'-quick' if args.quick else ''}.md"
    rows: list[dict[str, Any]] = []
    text = ""
    for row in (row for name in args.datasets for seed in args.seeds for row in rows_for(args, name, seed)):
        rows.append(row)
        text = markdown(args, rows)
        path.write_text(text)  # after every row: a run cut short keeps the rows it finished
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
