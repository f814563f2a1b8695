"""How long ``pb.mcmc`` (Pyro's NUTS) takes on nets of 50 to 1000 weights.

Each size is a 1-H-1 tanh net with N(0, 1) priors and Gaussian noise of sd 0.1 on the
gap task's 40 points (``guides_vs_nuts.py``); H = 16, 50, 100, 333 gives 49, 151, 301
and 1000 weights. One chain runs ``--warmup`` + ``--samples`` iterations; reported are
the time per gradient of the potential (traced, and eager), the leapfrog steps per draw,
the seconds per iteration, and the projection to the reference run of
``guides_vs_nuts.py`` (4 chains × 2000 iterations), beside the worst case ``pb.mcmc``
refuses above ``max_hours``.

    python benchmarks/nuts_time.py
    python benchmarks/nuts_time.py --hidden 16 50 --warmup 100 --samples 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

import pyrobnn as pb
from pyrobnn.infer._nuts import Potential, worst_case_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guides_vs_nuts import gap_task

#: The reference run of guides_vs_nuts.py: 4 chains of 1000 warm-up + 1000 sampling iterations.
REFERENCE_CHAINS, REFERENCE_ITERATIONS = 4, 2000


def gradient_seconds(fn: object, dim: int, repeats: int = 200) -> float:
    """Best of 5 rounds of ``repeats`` gradients of ``fn`` at a random point."""
    u = torch.randn(dim, requires_grad=True)
    for _ in range(10):
        torch.autograd.grad(fn(u), u)  # type: ignore[operator]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.autograd.grad(fn(u), u)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 50, 100, 333])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--depth", type=int, default=8, help="max_tree_depth (8, pb.mcmc's default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y, _, _ = gap_task()
    lines = [
        f"Command: `{' '.join(['python', 'benchmarks/nuts_time.py', *sys.argv[1:]])}`",
        "",
        "| net | D | gradient, traced (ms) | eager (ms) | steps per draw | s per iteration "
        "| 4 chains × 2000 (min) | worst case (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for hidden in args.hidden:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        model = pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian(0.1))
        potential = Potential(model.eval(), x, y)
        traced = gradient_seconds(potential.compiled(), potential.dim)
        eager = gradient_seconds(potential, potential.dim)
        post = pb.mcmc(
            model,
            (x, y),
            kernel="nuts",
            num_samples=args.samples,
            warmup=args.warmup,
            num_chains=1,
            max_tree_depth=args.depth,
            progress=False,
        )
        draws = post.source
        assert isinstance(draws, pb.MCMCDraws)
        per_iteration = float(draws.seconds[0]) / (args.warmup + args.samples)
        steps = float(draws.num_steps.double().mean())
        projected = per_iteration * REFERENCE_ITERATIONS * REFERENCE_CHAINS
        worst = worst_case_seconds(traced, args.depth, REFERENCE_ITERATIONS, REFERENCE_CHAINS)
        lines.append(
            f"| 1-{hidden}-1 | {potential.dim} | {traced * 1e3:.2f} | {eager * 1e3:.2f} | {steps:.0f} "
            f"| {per_iteration:.3f} | {projected / 60:.0f} | {worst / 60:.0f} |"
        )
        print(lines[-1], file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
