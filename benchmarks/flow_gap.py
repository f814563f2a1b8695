"""Does the default flow earn its cost? Flow guides against mean-field, both against the reference.

The tasks are those of ``benchmarks/ensembles.py``, built and measured by its code: ``gap``
(that of ``benchmarks/guides_vs_nuts.py``: 1-20-1 tanh, N(0, 1) priors, known noise 0.1, 40
points in x in [-2, -0.5] ∪ [0.5, 2], y = sin(3x)), ``widegap`` (the same net, y = sin(2x),
x in [-3, -1] ∪ [1, 3]) and ``relu``. The reference is ``pb.mcmc(model, (x, y), seed=0)``,
read from ``--cache`` (``{task}-seed0.pt``) when it is there and written there when it is not.

Each row is a guide kind with options, fitted with ``pb.fit`` for every ``--seeds`` (the
seed of the particles; the start is the net's initial weights either way). Reported, as
the mean over seeds (W1 also per seed): W1 between its predictive draws of y and the
reference's at each test point, averaged; its predictive sd over the reference's in the
gap and over all test points; the test log-likelihood; the ELBO (1024 particles); how far
the flow layers moved from the identity (``moved``: rms of f(z) − z over rms of z for
z ~ N(0, I), the location-scale layer left out; 0 is a mean-field guide); seconds.

A row is ``KIND`` or ``KIND:key=value,...``; keys that ``pb.fit`` takes (``lr``,
``num_particles``, ``num_steps``, ``lr_decay``) go to the fit, the rest to the guide:

    python benchmarks/flow_gap.py --cache refs/                   # the default rows
    python benchmarks/flow_gap.py --cache refs/ --rows meanfield flow flow:conditioner_lr=0.1,num_layers=8
    python benchmarks/flow_gap.py --task widegap --cache refs/ --seeds 0 1 2
    python benchmarks/flow_gap.py --quick                         # smoke run: tiny settings

Writes ``flow-gap.md`` (``flow-gap-{task}.md`` for another task) into ``--out``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro.distributions.transforms import Permute

import pyrobnn as pb

HERE = Path(__file__).resolve().parent
FIT_KEYS = ("lr", "num_particles", "num_steps", "lr_decay")
ROWS = (
    "meanfield",
    "fullrank",
    "flow",
    "flow:conditioner_lr=0.1",
    "flow:conditioner_lr=1.0",
    "flow:num_layers=8",
    "flow:flow='spline_coupling'",
    "flow:flow='iaf'",
    "flow:init_scale=0.1",
    "flow:num_particles=64",
)


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


#: benchmarks/ensembles.py: the gap tasks (``gap`` is guides_vs_nuts.py's), their reference and distances.
ENSEMBLES = _module("ensembles")


def parse_row(row: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``KIND:key=value,...`` -> (kind, fit options, guide options)."""
    kind, _, rest = row.partition(":")
    fit_opts: dict[str, Any] = {}
    guide_opts: dict[str, Any] = {}
    for item in filter(None, rest.split(",")) if rest else []:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        (fit_opts if key in FIT_KEYS else guide_opts)[key] = value
    return kind, fit_opts, guide_opts


def flow_moved(guide: Any, num_draws: int = 1000) -> float:
    """rms of f(z) − z over rms of z, f the flow layers of a flow guide without its location-scale layer."""
    block = getattr(guide, "_flow_part", None)
    if block is None:
        return math.nan
    post = block.posterior()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(num_draws, block.layout.dim, generator=gen, dtype=block.loc_scale.loc.dtype)
    u, ref = z, z  # ref: z through the permutations alone, the identity flow's output
    with torch.no_grad():
        for transform in post.transforms[:-1]:
            u = transform(u)
            if isinstance(transform, Permute):
                ref = transform(ref)
    return float((u - ref).pow(2).mean().sqrt() / z.pow(2).mean().sqrt())


def run_row(args: argparse.Namespace, row: str, ctx: dict[str, Any], seed: int) -> dict[str, Any]:
    kind, fit_opts, guide_opts = parse_row(row)
    fit_opts.setdefault("num_steps", args.steps)
    if args.lr is not None:
        fit_opts.setdefault("lr", args.lr)
    x, y = ctx["x"], ctx["y"]
    model = ctx["task"].model()
    start = time.perf_counter()
    try:
        result = pb.fit(model, kind, (x, y), seed=seed, progress=False, check=False, **fit_opts, **guide_opts)
    except pb.FitError as err:
        return {"failed": f"diverged at step {err.step}", "seconds": time.perf_counter() - start}
    terms, se = pb.estimate_elbo(model, result.guide, x, y, num_particles=args.elbo_particles)
    return {
        **ENSEMBLES.distance(result.posterior(), ctx["ref"], ctx["shared"]),  # w1, sd_gap, sd_all, test_ll
        "elbo": float(terms.elbo),
        "elbo_se": float(se),
        "moved": flow_moved(result.guide),
        "seconds": float(result.elapsed_s),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "failed" not in r]
    out: dict[str, Any] = {"failed": [r["failed"] for r in runs if "failed" in r], "w1s": [r.get("w1") for r in runs]}
    for key in ("w1", "sd_gap", "sd_all", "test_ll", "elbo", "moved", "seconds"):
        out[key] = float(np.mean([r[key] for r in good])) if good else math.nan
    return out


def markdown(args: argparse.Namespace, rows: dict[str, dict[str, Any]], ctx: dict[str, Any]) -> str:
    lines = [
        f"# Flow guides against mean-field on the {args.task} task",
        "",
        f"Reference: {ctx['ref_label']}. Each row: `pb.fit(model, KIND, (x, y), num_steps={args.steps}, seed=s, "
        f"**options)` for seeds {args.seeds}, library defaults otherwise; {args.samples} predictive draws; "
        f"{int(ctx['gap_points'])} of 200 test points in the gap. Means over seeds (W1 also per seed). "
        "`moved`: rms of f(z) − z over rms of z for the flow layers f (0: the flow is the identity and the "
        "guide a mean-field one). ELBO: estimated with "
        f"{args.elbo_particles} particles. Generated by `python benchmarks/flow_gap.py "
        f"{' '.join(args.argv)}`.",
        "",
        "| row | W1 ↓ | W1 per seed | sd ratio (gap) | sd ratio (all) | test LL | ELBO | moved | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        per_seed = " / ".join("—" if w is None else f"{w:.3f}" for w in r["w1s"])
        note = f" ({'; '.join(r['failed'])})" if r["failed"] else ""
        moved = "—" if math.isnan(r["moved"]) else f"{r['moved']:.3f}"
        lines.append(
            f"| {name}{note} | {r['w1']:.3f} | {per_seed} | {r['sd_gap']:.2f} | {r['sd_all']:.2f} | "
            f"{r['test_ll']:.3f} | {r['elbo']:.1f} | {moved} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="gap", choices=("gap", "widegap", "relu"))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help="KIND or KIND:key=value,... (see above)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=None, help="the fit's learning rate (default: pb.fit's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--samples", type=int, default=1000, help="predictive draws per posterior")
    parser.add_argument("--elbo-particles", type=int, default=1024)
    parser.add_argument("--cache", help="folder of reference draws {task}-seed0.pt (read if there, else written)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny settings")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.steps, args.samples, args.elbo_particles = min(args.steps, 20), min(args.samples, 50), 32
    torch.set_num_threads(1)
    spec = ENSEMBLES.TASKS[args.task]
    x, y, x_test, y_test = spec.data(0)
    lo, hi = spec.gap
    gap = ((x_test > lo) & (x_test < hi)).squeeze(-1)
    # the settings ensembles.py's reference and distance read: reference seed 0, predictions seeded 0
    shared = argparse.Namespace(cache=args.cache, seed=0, quick=args.quick, quiet=args.quiet, samples=args.samples)
    ref_post = ENSEMBLES.reference(shared, spec, x, y)
    draws = ref_post.source
    label = "pb.mcmc, seed 0"
    if isinstance(draws, pb.MCMCDraws):
        label += f" ({draws.num_chains} chains × {draws.num_draws} draws)"
    ref = {
        "x": x_test,
        "x_gap": x_test[gap],
        "pred": ref_post.predict(x_test, num_samples=args.samples, seed=0),
        "gap": ref_post.predict(x_test[gap], num_samples=args.samples, seed=0),
        "y": y_test,
    }
    ctx = {"task": spec, "x": x, "y": y, "ref": ref, "shared": shared, "gap_points": int(gap.sum()), "ref_label": label}
    rows: dict[str, dict[str, Any]] = {}
    for row in args.rows:
        runs = []
        for seed in args.seeds:
            runs.append(run_row(args, row, ctx, seed))
            if not args.quiet:
                print(row, seed, {k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()})
        rows[row] = summarise(runs)
    text = markdown(args, rows, ctx)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("" if args.task == "gap" else f"-{args.task}") + ("-quick" if args.quick else "")
    (out / f"flow-gap{suffix}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
