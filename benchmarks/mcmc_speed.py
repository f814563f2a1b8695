"""A reference posterior in seconds: pb.mcmc's batched ChEES-HMC against its NUTS, and NumPyro's.

Task: the gap task of ``benchmarks/guides_vs_nuts.py`` (a 1-20-1 tanh net, N(0, 1)
priors, noise sd 0.1, 40 training points in two clusters, 200 test points over
[-2, 2]). Measured, in one process:

1. ``pb.mcmc(model, (x, y))`` with its defaults (ChEES, 64 chains × 32 draws after
   400 warm-up iterations, superchains of 4): wall time, leapfrog steps per draw,
   divergences, and for the network's prediction f(x) at every test point the bulk
   ESS (ArviZ), classic R̂ (ArviZ's rank-normalised split R̂) and nested R̂ over the
   superchains (``pb.nested_rhat``), each at its worst test point.
2. Its predictive W1 (averaged over test points) to a long reference, two long ChEES
   runs (``--long-draws`` per chain) with other seeds, against that reference's
   self-floor (the W1 of one long run to the other).
3. Today's ``pb.mcmc(kernel="nuts")`` for the ratio: a short run (``--nuts-*``), its
   seconds per bulk ESS (worst test point) against ChEES's.
4. Where NumPyro is installed (``pip install -e '.[numpyro]'``): NumPyro's NUTS on the same
   network, priors and data (4 chains × 1000 after 1000 warm-up, tree depth 10,
   chains one after another on the CPU), its seconds per bulk ESS.

    python benchmarks/mcmc_speed.py                      # everything (several minutes)
    python benchmarks/mcmc_speed.py --quick              # smoke run: tiny settings

Writes ``mcmc-speed.md`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pyrobnn as pb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guides_vs_nuts import gap_model, gap_task

ROOT = Path(__file__).resolve().parent.parent


def predictions(post: pb.Posterior, x: torch.Tensor) -> np.ndarray:
    """f(x) per chain and draw: ``(chains, draws, points)``."""
    source = post.source
    chains = source.chains
    c, s = source.num_chains, source.num_draws
    flat = {name: value.reshape(c * s, *value.shape[2:]) for name, value in chains.items()}
    with torch.no_grad():
        out = post.model.evaluate(flat, x)[0]
    return out.reshape(c, s, -1).double().numpy()


def health(post: pb.Posterior, x: torch.Tensor, seconds: float) -> dict[str, Any]:
    import arviz as az

    source = post.source
    f = predictions(post, x)
    data = az.convert_to_dataset({"f": f})
    ess = az.ess(data)["f"].values
    rhat = az.rhat(data)["f"].values
    row = {
        "seconds": seconds,
        "chains": source.num_chains,
        "draws": source.num_draws,
        "kept": source.num_chains * source.num_draws,
        "steps_per_draw": float(source.num_steps.double().mean()),
        "divergent": int(source.diverging.sum()),
        "ess_min": float(ess.min()),
        "rhat_max": float(rhat.max()),
        "nested_rhat_max": float("nan"),
    }
    if source.superchain_size > 1:
        row["nested_rhat_max"] = float(pb.nested_rhat(f, source.superchain_size).max())
    row["seconds_per_ess"] = seconds / row["ess_min"]
    return row


def timed_mcmc(x: torch.Tensor, y: torch.Tensor, **options: Any) -> tuple[pb.Posterior, float]:
    began = time.perf_counter()
    post = pb.mcmc(gap_model(), (x, y), progress=False, **options)
    return post, time.perf_counter() - began


def w1(a: pb.Posterior, b: pb.Posterior, x: torch.Tensor, samples: int) -> float:
    pa = a.predict(x, num_samples=samples, seed=1)
    pb_ = b.predict(x, num_samples=samples, seed=2)
    return float(pb.metrics.reference_distance(pa, pb_)["w1"])


def numpyro_row(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """NumPyro's NUTS on the same 1-20-1 tanh net, N(0, 1) priors, noise sd 0.1."""
    import arviz as az
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    numpyro.set_host_device_count(1)
    xj, yj, xt = jnp.asarray(x.numpy()), jnp.asarray(y.numpy()), jnp.asarray(x_test.numpy())

    def model(xs: Any, ys: Any = None) -> None:
        w1_ = numpyro.sample("w1", dist.Normal(0, 1).expand([1, 20]).to_event(2))
        b1 = numpyro.sample("b1", dist.Normal(0, 1).expand([20]).to_event(1))
        w2 = numpyro.sample("w2", dist.Normal(0, 1).expand([20, 1]).to_event(2))
        b2 = numpyro.sample("b2", dist.Normal(0, 1).expand([1]).to_event(1))
        f = (jnp.tanh(xs @ w1_ + b1) @ w2 + b2)[:, 0]
        numpyro.sample("y", dist.Normal(f, 0.1), obs=ys)

    kernel = NUTS(model, max_tree_depth=10)
    sampler = MCMC(
        kernel,
        num_warmup=args.numpyro_warmup,
        num_samples=args.numpyro_samples,
        num_chains=args.numpyro_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    began = time.perf_counter()
    sampler.run(jax.random.PRNGKey(0), xj, yj, extra_fields=("num_steps", "diverging"))
    seconds = time.perf_counter() - began
    s = sampler.get_samples(group_by_chain=True)
    f = np.asarray(jnp.tanh(xt @ s["w1"] + s["b1"][..., None, :]) @ s["w2"] + s["b2"][..., None, :])[..., 0]
    data = az.convert_to_dataset({"f": f})
    extra = sampler.get_extra_fields()
    ess = float(az.ess(data)["f"].values.min())
    return {
        "seconds": seconds,
        "chains": args.numpyro_chains,
        "draws": args.numpyro_samples,
        "kept": args.numpyro_chains * args.numpyro_samples,
        "steps_per_draw": float(np.mean(extra["num_steps"])),
        "divergent": int(np.sum(extra["diverging"])),
        "ess_min": ess,
        "rhat_max": float(az.rhat(data)["f"].values.max()),
        "nested_rhat_max": float("nan"),
        "seconds_per_ess": seconds / ess,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script runs")
    parser.add_argument("--long-draws", type=int, default=256, help="draws per chain of each long run (256)")
    parser.add_argument("--nuts-samples", type=int, default=100)
    parser.add_argument("--nuts-warmup", type=int, default=100)
    parser.add_argument("--nuts-chains", type=int, default=2)
    parser.add_argument("--numpyro-samples", type=int, default=1000)
    parser.add_argument("--numpyro-warmup", type=int, default=1000)
    parser.add_argument("--numpyro-chains", type=int, default=4)
    parser.add_argument("--skip-numpyro", action="store_true", help="leave NumPyro out even where installed")
    parser.add_argument("--samples", type=int, default=2000, help="predictive draws for W1 (2000)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    small: dict[str, Any] = {}
    if args.quick:
        small = {"num_chains": 8, "warmup": 30, "num_samples": 8}
        args.long_draws, args.nuts_samples, args.nuts_warmup, args.samples = 16, 10, 10, 200
        args.numpyro_samples = args.numpyro_warmup = 50
    x, y, x_test, _ = gap_task()
    rows: dict[str, dict[str, Any]] = {}

    post, seconds = timed_mcmc(x, y, seed=0, **small)
    rows["pb.mcmc (ChEES, defaults)"] = health(post, x_test, seconds)
    long_options = {**small, "num_samples": args.long_draws}
    long_a, seconds_a = timed_mcmc(x, y, seed=101, **long_options)
    long_b, _ = timed_mcmc(x, y, seed=202, **long_options)
    rows[f"pb.mcmc (ChEES, {args.long_draws} draws per chain)"] = health(long_a, x_test, seconds_a)
    distance = {"run": w1(post, long_a, x_test, args.samples), "floor": w1(long_b, long_a, x_test, args.samples)}

    nuts, nuts_seconds = timed_mcmc(
        x,
        y,
        kernel="nuts",
        seed=0,
        num_samples=args.nuts_samples,
        warmup=args.nuts_warmup,
        num_chains=args.nuts_chains,
    )
    rows[f"pb.mcmc (NUTS, {args.nuts_chains} × {args.nuts_samples})"] = health(nuts, x_test, nuts_seconds)
    try:
        if not args.skip_numpyro:
            rows["NumPyro NUTS"] = numpyro_row(x, y, x_test, args)
    except ImportError:
        print("NumPyro is not installed: its row is left out (pip install -e '.[numpyro]')", file=sys.stderr)
    text = report(args, rows, distance)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcmc-speed.md").write_text(text)
    return 0


def report(args: argparse.Namespace, rows: dict[str, dict[str, Any]], distance: dict[str, float]) -> str:
    chees = next(iter(rows.values()))
    lines = [
        "# A reference posterior in seconds",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/mcmc_speed.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d')}),"
        f" torch threads: {torch.get_num_threads()}.",
        "",
        "Gap task (1-20-1 tanh, N(0, 1) priors, noise 0.1, 40 points). ESS and R̂ are of the network's "
        "prediction f(x) at each of the 200 test points, the worst point reported; nested R̂ over superchains "
        "of 4 (Margossian et al. 2022).",
        "",
        "| run | seconds | kept draws | steps / draw | divergent | bulk ESS (min) | R̂ (max) | nested R̂ (max) "
        "| s per ESS | × ChEES |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        nested = "—" if np.isnan(r["nested_rhat_max"]) else f"{r['nested_rhat_max']:.3f}"
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['kept']} | {r['steps_per_draw']:.0f} | {r['divergent']} "
            f"| {r['ess_min']:.0f} | {r['rhat_max']:.3f} | {nested} | {r['seconds_per_ess']:.3g} "
            f"| {r['seconds_per_ess'] / chees['seconds_per_ess']:.1f} |"
        )
    ratio = distance["run"] / distance["floor"]
    lines += [
        "",
        f"Predictive W1 of the default run to a long run: {distance['run']:.4f}; the long run's self-floor "
        f"(another long run with another seed against it): {distance['floor']:.4f}; ratio {ratio:.2f} "
        "(target: at most 2).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
