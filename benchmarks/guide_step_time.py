"""Step time of each guide family on the MNIST-sized MLP, relative to mean-field.

784-512-512-10 MLP (670k random weights), random inputs and labels, batch 128,
Categorical likelihood, ``num_particles`` vectorized. Rounds are interleaved so
that the machine's drift hits every guide alike; the median step time per
guide is reported with its ratio to mean-field, and the peak resident memory.

    python benchmarks/guide_step_time.py --rounds 5 --steps 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from torch import nn

import pyrobnn as pb
from pyrobnn.infer.elbo import ELBO

GUIDES = {
    "meanfield": {},
    "lowrank(10)": {"kind": "lowrank", "rank": 10},
    "lowrank(25)": {"kind": "lowrank", "rank": 25},
    "lowrank(50)": {"kind": "lowrank", "rank": 50},
    "flow(last layer)": {"kind": "flow", "sites": "last_layer"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per guide per round")
    parser.add_argument("--particles", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batch, 784)
    y = torch.randint(0, 10, (args.batch,))
    net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    steps = {}
    for name, options in GUIDES.items():
        model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Categorical())
        opts = dict(options)
        guide = pb.guides.make_guide(opts.pop("kind", "meanfield"), model, **opts)
        loss_fn = ELBO(args.particles)(model, guide)
        opt = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)

        def step(loss_fn=loss_fn, opt=opt) -> None:
            opt.zero_grad()
            loss_fn(x, y, dataset_size=60_000).backward()
            opt.step()

        step()  # warm-up
        steps[name] = step
        print(f"{name}: {guide.num_latent} latent dims, {sum(p.numel() for p in guide.parameters())} parameters")
    times: dict[str, list[float]] = {name: [] for name in GUIDES}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["meanfield"])
    print(f"\n{'guide':18s} {'ms/step':>8s} {'ratio':>6s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:18s} {1000 * median:8.1f} {median / base:6.2f}")
    print(f"\npeak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
