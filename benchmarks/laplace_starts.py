"""How much one Laplace approximation's spread in the gap owes to the MAP fit it was built at.

A Laplace approximation is a Gaussian around one MAP fit, and its linearised predictive is
that fit's network plus a band from the curvature there. A different MAP fit of the same
model and data (another starting point) gives another band. This script measures how much,
on each task of ``benchmarks/ensembles.py``: per task and seed, ``"laplace"`` with its
defaults from the model's own initial weights (what ``pb.fit(model, "laplace", data)`` does)
and from ``--starts`` fresh initialisations (``init="reset"``, fit seeds 1..K), the default
start again with ``prior_precision="tune"`` (τ by the Laplace evidence), and the default start
with MAP fits of the other ``--lengths`` (a number of steps, or ``auto``: until the MAP
objective levels off, as the command line fits a single guide), with ``--tune-lengths`` also
with τ tuned at each of those lengths, and with ``--hessian`` the exact Hessian instead of the
GGN at ``--steps`` and at each of them (a point where it is not positive definite is no strict
mode of the log joint, and its row says so). For each:

- ``W1`` to the reference over all test points, and the predictive sd inside the gap over
  the reference's (as in ``ensembles.py``);
- the test log-likelihood;
- the Laplace log evidence, which a user could read to choose between the fits;
- hidden units whose transition point −b/w lies in the gap at the MAP (see
  ``laplace_gap_mean.py``), and how far the transition point nearest to the gap's edges (the
  training inputs closest to the gap on either side) lies from them, over the units the MAP
  left switched on (|v|·‖(w, b)‖ ≥ 1e-3 for input weight w, bias b and output weight v).
  MAP fits of ReLU nets gather their kinks at a few knots; whether one sits at an edge decides
  much of the linearisation's spread across the gap.

    python benchmarks/laplace_starts.py --cache refs/     # about 10 minutes with cached references
    python benchmarks/laplace_starts.py --quick           # smoke run
    python benchmarks/laplace_starts.py --cache refs/ --starts 0 --lengths 10000 auto --name laplace-map-length

Writes ``--name``.md (``laplace-starts.md``) into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensembles import TASKS, distance, reference_at
from laplace_gap_mean import centred_in_gap

import pyrobnn as pb


def edge_distance(point: dict[str, torch.Tensor], edges: tuple[float, float]) -> float:
    """Distance from the gap's edges to the nearest transition point −b/w of a switched-on unit."""
    w, b, v = point["0.weight"][:, 0], point["0.bias"], point["2.weight"][0]
    on = v.abs() * (w**2 + b**2).sqrt() >= 1e-3
    centre = -b[on] / w[on]
    return float(torch.stack([(centre - e).abs() for e in edges]).min())


#: the columns of a row whose Laplace approximation could not be built
NO_ROW = {"map_steps": "—", **dict.fromkeys(["w1", "sd_gap", "test_ll", "log_evidence", "tau", "units", "edge"], nan)}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.tasks:
        task = TASKS[name]
        for seed in args.seeds:
            args.seed = seed
            x, y, _, _ = task.data(seed)
            lo, hi = task.gap
            edges = (float(x[x < lo].max()), float(x[x > hi].min()))
            _, ref = reference_at(args, task)
            starts = [("model's weights", {"seed": seed})]
            starts += [(f"reset, seed {k}", {"seed": k, "init": "reset"}) for k in range(1, args.starts + 1)]
            starts += [("model's weights, τ tuned", {"seed": seed, "prior_precision": "tune"})]
            if args.hessian:
                starts += [("model's weights, Hessian", {"seed": seed, "curvature": "hessian"})]
            for n in args.lengths:
                starts += [(f"model's weights, {n} steps", {"seed": seed, "num_steps": n})]
                if args.tune_lengths:
                    tuned = {"seed": seed, "num_steps": n, "prior_precision": "tune"}
                    starts += [(f"model's weights, {n} steps, τ tuned", tuned)]
                if args.hessian:
                    hessian = {"seed": seed, "num_steps": n, "curvature": "hessian"}
                    starts += [(f"model's weights, {n} steps, Hessian", hessian)]
            for label, options in starts:
                options = {"num_steps": args.steps, **options}
                try:
                    result = pb.fit(task.model(), "laplace", (x, y), progress=False, **options)
                except pb.FitError as error:
                    if "not positive definite" not in str(error):
                        raise
                    # the exact Hessian at a point that is no strict mode: a finding, not a failure
                    rows.append({"task": name, "seed": seed, "start": f"{label}: not positive definite", **NO_ROW})
                    print(rows[-1], flush=True)
                    continue
                point = result.guide.median()
                row = {
                    "task": name,
                    "seed": seed,
                    "start": label,
                    "map_steps": result.num_steps,
                    **distance(result.posterior(), ref, args),
                    "log_evidence": float(result.guide.log_evidence),
                    "tau": float(result.guide.prior_factor),
                    "units": centred_in_gap({site: value.unsqueeze(0) for site, value in point.items()}, task.gap),
                    "edge": edge_distance(point, edges),
                }
                rows.append(row)
                print(row, flush=True)
    return rows


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# One Laplace approximation per MAP fit: what the start changes",
        "",
        f"`python benchmarks/laplace_starts.py{args.command}` ({date.today()}), {args.steps} MAP steps, "
        f"{args.samples} predictive draws",
        "",
        "| task | seed | start | MAP steps | W1 | sd ratio (gap) | test log-lik | log evidence | τ "
        "| units centred in the gap | nearest −b/w to an edge |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['start']} | {r['map_steps']} | {r['w1']:.3f} | {r['sd_gap']:.2f} | "
            f"{r['test_ll']:.3f} | "
            f"{r['log_evidence']:.1f} | {r['tau']:.3g} | {r['units']:.0f} | {r['edge']:.3f} |"
        )
    lines += [
        "",
        f"Per task and seed, over the untuned starts of {args.steps} MAP steps: the sd ratio's range, how many",
        "reach 0.8, and the sd ratio and W1 of the start with the highest log evidence.",
        "",
        "| task | seed | sd ratio (gap): min / max | starts ≥ 0.8 | highest evidence: sd ratio / W1 |",
        "|---|---|---|---|---|",
    ]
    for name in args.tasks:
        for seed in args.seeds:
            own = [r for r in rows if r["task"] == name and r["seed"] == seed and untuned_start(r["start"])]
            if not own:
                continue
            sds = np.array([r["sd_gap"] for r in own])
            chosen = max(own, key=lambda r: r["log_evidence"])
            lines.append(
                f"| {name} | {seed} | {sds.min():.2f} / {sds.max():.2f} | {int((sds >= 0.8).sum())} of {len(own)} | "
                f"{chosen['sd_gap']:.2f} / {chosen['w1']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def untuned_start(label: str) -> bool:
    """Whether a row is one the summary compares: the default start or a reset, at ``--steps``."""
    return label == "model's weights" or label.startswith("reset, seed ")


def steps_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--starts", type=int, default=4, help="fresh initialisations besides the model's own")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument(
        "--lengths", nargs="*", type=steps_or_auto, default=[], help="other MAP lengths for the default start"
    )
    parser.add_argument(
        "--tune-lengths", action="store_true", help="also tune τ by the evidence at each of the --lengths"
    )
    parser.add_argument(
        "--hessian",
        action="store_true",
        help="also the exact Hessian (curvature='hessian') at --steps and at each of the --lengths",
    )
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--name", default="laplace-starts", help="the results file's name, without .md")
    parser.add_argument("--cache", default=None, help="folder for the reference draws")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    args.command = "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    args.quiet = True
    if args.quick:
        args.tasks, args.seeds, args.starts, args.steps, args.samples = ["gap"], [0], 1, 20, 32
    rows = run(args)
    report = markdown(args, rows)
    print(report)
    if not args.quick:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"{args.name}.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
