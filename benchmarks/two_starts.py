"""The two starts of a joint guide's default fit: what each reaches, which is kept, and the cost.

Under ``num_steps="auto"``, ``pb.fit(model, "lowrank" or "fullrank", data)`` fits the guide from the
network's own weights and from a MAP fit's and keeps the fit that ended with the higher ELBO
(``pyrobnn/infer/_starts.py``). This script runs exactly that, on the command line's model (1-50-1
tanh, N(0, 1) priors, learned noise, standardised data), recording each start's fit, and measures
each with ``--particles`` (4096) draws of the ELBO:

- ``from the net``: the start a single fit takes (``init="pretrained"``), the default before;
- ``from a MAP fit``: ``init=map_fit.guide.median()``, the MAP fit under the same settings;
- ``kept``: the one with the higher end-of-fit ELBO (``FitResult.final_elbo``), what ``pb.fit``
  returns, and its gain over the single fit;
- ``cost``: the seconds of the MAP fit and both starts' fits over those of the single fit.

    OMP_NUM_THREADS=1 python benchmarks/two_starts.py --datasets friedman --seeds 0 --kinds fullrank
    python benchmarks/two_starts.py --quick                                  # smoke run

Writes ``two-starts-DATASETS-seeds-S.md`` into ``--out`` after every row, and saves each start's
per-step ELBO beside it (``.npz``, not committed), to see when the kept start took the lead.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pyrobnn as pb
from pyrobnn.cli import build_model
from pyrobnn.infer._starts import fit_two_starts
from pyrobnn.infer.fit import fit_one
from pyrobnn.infer.settings import FitSettings

ROOT = Path(__file__).resolve().parent.parent


def row(args: argparse.Namespace, name: str, seed: int, kind: str) -> dict[str, Any]:
    data = pb.datasets.standardize(pb.datasets.load(name))
    train = (data.x_train, data.y_train)
    model = build_model(data, args.hidden, seed)
    fits: dict[str, pb.FitResult] = {}

    def recording(
        model: Any, guide: Any, data: Any, settings: FitSettings, guide_options: Any, label: str = ""
    ) -> pb.FitResult:
        result = fit_one(model, guide, data, settings, guide_options, label)
        if guide != "map":  # the MAP fit is a start's means; its seconds are in the kept result's
            fits["net" if isinstance(guide_options.get("init"), str) else "MAP"] = result
        return result

    settings = FitSettings(num_steps=args.steps, seed=seed, progress=False)
    kept = fit_two_starts(recording, model, kind, train, settings, {})
    out: dict[str, Any] = {"data": name, "seed": seed, "kind": kind, "kept": kept.config["start"]}
    for start in ("net", "MAP"):
        result = fits[start]
        terms, se = pb.estimate_elbo(model, result.guide, *train, num_particles=args.particles)
        out[start] = (float(terms.elbo), float(se), result.num_steps, result.elapsed_s)
    out["cost"] = kept.elapsed_s / fits["net"].elapsed_s
    path = Path(args.out) / f"two-starts-{name}-{kind}-seed-{seed}{'-quick' if args.quick else ''}.npz"
    np.savez_compressed(path, **{s: fits[s].history.elbo for s in ("net", "MAP")})
    return out


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# The two starts of a joint guide's default fit",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/two_starts.py', *sys.argv[1:]])}` "
        f"({time.strftime('%Y-%m-%d')}), 1-{args.hidden}-1 tanh, learned noise, {args.steps} steps; "
        f"ELBO from {args.particles} particles ± se, (steps, seconds).",
        "",
        "| data | seed | guide | from the net (the single fit) | from a MAP fit | kept | gain over the single fit "
        "| cost: all three fits / the single fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        net, warm = r["net"], r["MAP"]
        kept = net if r["kept"] == "pretrained" else warm
        cells = [f"{v[0]:.1f} ± {v[1]:.2f} ({v[2]}, {v[3]:.0f})" for v in (net, warm)]
        lines.append(
            f"| {r['data']} | {r['seed']} | {r['kind']} | {cells[0]} | {cells[1]} | "
            f"{'the net' if r['kept'] == 'pretrained' else 'MAP'} | {kept[0] - net[0]:+.1f} | {r['cost']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gap1d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["lowrank", "fullrank"])
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 steps, 64 particles, a 1-8-1 net")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.steps = "auto"
    if args.quick:
        args.steps, args.particles, args.hidden, args.kinds = 200, 64, 8, args.kinds[:1]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", pb.FitWarning)  # unsettled fits are what is measured
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"two-starts-{'-'.join(args.datasets)}-seeds-{'-'.join(map(str, args.seeds))}"
    path = out / f"{name}{'-quick' if args.quick else ''}.md"
    rows: list[dict[str, Any]] = []
    text = ""
    for dataset in args.datasets:
        for seed in args.seeds:
            for kind in args.kinds:
                rows.append(row(args, dataset, seed, kind))
                print(f"{dataset} seed {seed} {kind}: kept {rows[-1]['kept']}", file=sys.stderr)
                text = markdown(args, rows)
                path.write_text(text)  # after every row: a run cut short keeps the rows it finished
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
