"""Ensembles against single guides, both against the reference posterior, on three gap tasks.

Tasks (regressions with two clusters of training inputs and a gap between them; N(0, 1)
priors on every weight and bias, known noise; 200 test points over the whole range):

- ``gap``: the task of ``benchmarks/guides_vs_nuts.py``: 1-20-1 tanh, y = sin(3x),
  x in [-2, -0.5] ∪ [0.5, 2], noise 0.1, 40 points; the gap is |x| < 0.5.
- ``widegap``: a wider gap and another function: 1-20-1 tanh, y = sin(2x),
  x in [-3, -1] ∪ [1, 3], noise 0.1, 40 points; the gap is |x| < 1.
- ``relu``: another function, noise and activation: 1-30-1 ReLU, y = x cos(x),
  asymmetric clusters x in [-2, -0.8] ∪ [0.4, 2], noise 0.2, 40 points; the gap is
  -0.8 < x < 0.4.

The reference is ``pb.mcmc(model, (x, y))`` with its defaults (ChEES-HMC). Each single
guide is ``pb.fit(model, kind, data, num_steps=--steps)``; each ensemble ``KIND:K``
``pb.ensemble(model, kind, data, num_members=K, num_steps=--steps)``, library defaults (members
with a spread start at their own MAP fits), and ``KIND:K:INIT`` the same with ``init=INIT``
(``reset``: from torch's initialisation).

Reported per posterior: W1 between its predictive draws of y and the reference's at each
test point, averaged; its predictive sd over the reference's inside the gap and over all
test points; the test log-likelihood; seconds. Per ensemble also: the mean and the best
W1 of its members alone, and R̂ across the members (ArviZ's rank-normalised R̂ of the
predictive draws of y, members as chains) at the gap's test points, median and max: the
measure of how differently the members fill the gap, which says whether pooling them
can pay. On ``--cost-task``, each batched ensemble is also fitted member by member
(``batched=False``), for the cost ratio of K batched members to K separate fits.

    python benchmarks/ensembles.py                           # all tasks (about 20 minutes)
    python benchmarks/ensembles.py --tasks gap --cache refs/  # keep the reference draws
    python benchmarks/ensembles.py --quick                    # smoke run: tiny settings
    python benchmarks/ensembles.py --singles laplace fullrank --ensembles laplace:5 --name laplace

Writes ``ensembles.md`` (``ensembles-seed1.md`` for ``--seed 1``) into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import pyrobnn as pb

ROOT = Path(__file__).resolve().parent.parent
SINGLES = ("meanfield", "lowrank", "fullrank", "flow", "map", "laplace")
ENSEMBLES = ("map:8", "meanfield:8:reset", "meanfield:8", "fullrank:4:reset", "fullrank:4", "laplace:5")


@dataclass(frozen=True)
class Task:
    name: str
    activation: type[nn.Module]
    hidden: int
    noise: float
    clusters: tuple[tuple[float, float], tuple[float, float]]
    fn: Callable[[torch.Tensor], torch.Tensor]

    @property
    def gap(self) -> tuple[float, float]:
        return self.clusters[0][1], self.clusters[1][0]

    def data(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        (a, b), (c, d) = self.clusters
        side = torch.randint(0, 2, (40, 1), generator=g)
        left, right = a + (b - a) * torch.rand(40, 1, generator=g), c + (d - c) * torch.rand(40, 1, generator=g)
        x = torch.where(side == 0, left, right)
        y = self.fn(x).squeeze(-1) + self.noise * torch.randn(40, generator=g)
        x_test = a + (d - a) * torch.rand(200, 1, generator=g)
        y_test = self.fn(x_test).squeeze(-1) + self.noise * torch.randn(200, generator=g)
        return x, y, x_test, y_test

    def model(self, seed: int = 0) -> pb.BayesianModel:
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(1, self.hidden), self.activation(), nn.Linear(self.hidden, 1))
        return pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian(self.noise))


TASKS = {
    "gap": Task("gap", nn.Tanh, 20, 0.1, ((-2.0, -0.5), (0.5, 2.0)), lambda x: torch.sin(3 * x)),
    "widegap": Task("widegap", nn.Tanh, 20, 0.1, ((-3.0, -1.0), (1.0, 3.0)), lambda x: torch.sin(2 * x)),
    "relu": Task("relu", nn.ReLU, 30, 0.2, ((-2.0, -0.8), (0.4, 2.0)), lambda x: x * torch.cos(x)),
}


def reference(args: argparse.Namespace, task: Task, x: torch.Tensor, y: torch.Tensor) -> pb.Posterior:
    cache = Path(args.cache) / f"{task.name}-seed{args.seed}.pt" if args.cache else None
    if cache is not None and cache.is_file():
        return pb.load(cache, task.model())
    options = {"num_samples": 4, "warmup": 20, "num_chains": 8} if args.quick else {}
    post = pb.mcmc(task.model(), (x, y), seed=args.seed, progress=not args.quiet, **options)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        pb.save(cache, post)
    return post


def distance(post: pb.Posterior, ref: dict[str, Any], args: argparse.Namespace, seed: int = 0) -> dict[str, float]:
    """W1 to the reference, sd ratios in the gap and overall, test log-likelihood."""
    pred = post.predict(ref["x"], num_samples=args.samples, seed=args.seed + seed)
    pred_gap = post.predict(ref["x_gap"], num_samples=args.samples, seed=args.seed + seed)
    d, d_gap = pb.metrics.reference_distance(pred, ref["pred"]), pb.metrics.reference_distance(pred_gap, ref["gap"])
    test_ll = float(pred.log_prob(ref["y"]).mean())
    return {"w1": d["w1"], "sd_gap": d_gap["sd_ratio"], "sd_all": d["sd_ratio"], "test_ll": test_ll}


def member_rhat(result: pb.EnsembleResult, x_gap: torch.Tensor, args: argparse.Namespace) -> tuple[float, float]:
    """R̂ across members of the predictive draws of y at the gap's test points: (median, max)."""
    import arviz as az

    members = [m.posterior() for m in result.members]
    idata = pb.to_arviz(members, x_gap, num_samples=min(args.samples, 500), seed=args.seed)
    rhat = np.asarray(az.rhat(idata.posterior_predictive["obs"])["obs"]).reshape(-1)
    return float(np.median(rhat)), float(np.max(rhat))


def reference_at(args: argparse.Namespace, task: Task) -> tuple[pb.Posterior, dict[str, Any]]:
    """The reference of ``task`` at ``args.seed`` and what :func:`distance` measures against:
    its predictive draws at the test points and at those inside the gap."""
    x, y, x_test, y_test = task.data(args.seed)
    lo, hi = task.gap
    gap = ((x_test > lo) & (x_test < hi)).squeeze(-1)
    ref_post = reference(args, task, x, y)
    ref = {
        "x": x_test,
        "x_gap": x_test[gap],
        "pred": ref_post.predict(x_test, num_samples=args.samples, seed=args.seed),
        "gap": ref_post.predict(x_test[gap], num_samples=args.samples, seed=args.seed),
        "y": y_test,
    }
    return ref_post, ref


def run_task(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    x, y, _, _ = task.data(args.seed)
    ref_post, ref = reference_at(args, task)
    # the chains' own wall time (stored with the draws, so a cached reference reports it too)
    ref_seconds = float(ref_post.source.seconds.sum())
    # the reference against fresh draws of itself: the Monte Carlo floor of every W1 below
    rows = [{"name": "reference (ChEES), new draws", **distance(ref_post, ref, args, seed=1), "seconds": ref_seconds}]
    length = {"num_steps": args.steps, "progress": not args.quiet}
    for kind in args.singles:
        result = pb.fit(task.model(), kind, (x, y), seed=args.seed, **length)
        rows.append({"name": kind, **distance(result.posterior(), ref, args), "seconds": result.elapsed_s})
    for spec in args.ensembles:
        kind, k, *start = spec.split(":")
        init = {"init": start[0]} if start else {}
        result = pb.ensemble(task.model(), kind, (x, y), num_members=int(k), seed=args.seed, **init, **length)
        row = {"name": f"ensemble:{spec}", **distance(result.posterior(), ref, args)}
        row["seconds"] = result.elapsed_s
        alone = [distance(m.posterior(), ref, args)["w1"] for m in result.members]
        row.update(members_w1=float(np.mean(alone)), best_member_w1=float(np.min(alone)))
        row["rhat_gap_median"], row["rhat_gap_max"] = member_rhat(result, ref["x_gap"], args)
        row["weights_from"] = result.guide.weights_from
        if task.name == args.cost_task and result.config["batched"] and result.config["init"] != "map":
            separate = pb.ensemble(
                task.model(), kind, (x, y), num_members=int(k), seed=args.seed, batched=False, **init, **length
            )
            row["separate_seconds"] = separate.elapsed_s
        rows.append(row)
    return {"task": task, "rows": rows, "gap_points": len(ref["x_gap"])}


def markdown(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    lines = [
        "# Ensembles and single guides against the reference posterior",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/ensembles.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d')}), "
        f"{args.steps} steps per fit and per member, seed {args.seed}, {args.samples} predictive draws.",
    ]
    for res in results:
        task = res["task"]
        lines += [
            "",
            f"## {task.name}: 1-{task.hidden}-1 {task.activation.__name__}, noise {task.noise}, clusters "
            f"{task.clusters[0]} and {task.clusters[1]}, {res['gap_points']} test points in the gap",
            "",
            "| posterior | W1 | sd ratio (gap) | sd ratio (all) | test log-lik | seconds | members' W1 (mean / best) "
            "| R̂ across members, gap (median / max) | weights | separate fits, seconds (ratio) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            members = f"{r['members_w1']:.3f} / {r['best_member_w1']:.3f}" if "members_w1" in r else ""
            rhat = f"{r['rhat_gap_median']:.2f} / {r['rhat_gap_max']:.2f}" if "rhat_gap_max" in r else ""
            cost = ""
            if "separate_seconds" in r:
                cost = f"{r['separate_seconds']:.1f} ({r['separate_seconds'] / r['seconds']:.1f}×)"
            lines.append(
                f"| {r['name']} | {r['w1']:.3f} | {r['sd_gap']:.2f} | {r['sd_all']:.2f} | {r['test_ll']:.2f} "
                f"| {r['seconds']:.1f} | {members} | {rhat} | {r.get('weights_from', '')} | {cost} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--singles", nargs="*", default=list(SINGLES), choices=SINGLES)
    parser.add_argument(
        "--ensembles", nargs="*", default=list(ENSEMBLES), help="KIND:K or KIND:K:INIT, e.g. map:8, fullrank:4:map"
    )
    parser.add_argument("--steps", type=int, default=3000, help="steps per fit and per member (3000)")
    parser.add_argument("--samples", type=int, default=1000, help="predictive draws per posterior (1000)")
    parser.add_argument(
        "--cost-task", default="gap", help="the task on which batched ensembles are also fitted member by member"
    )
    parser.add_argument("--cache", help="directory for the reference draws (read if there, written if not)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 steps, a tiny reference")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="ensembles", help="the results file's name, before -seedN and .md")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.samples = 30, 50
    torch.set_num_threads(args.threads)
    results = []
    for name in args.tasks:
        results.append(run_task(args, TASKS[name]))
        print(markdown(args, results[-1:]), file=sys.stderr)
    text = markdown(args, results)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name + (f"-seed{args.seed}" if args.seed else "") + ("-quick" if args.quick else "")
    (out / f"{name}.md").write_text(text)
    return 0 if all(math.isfinite(r["w1"]) for res in results for r in res["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
