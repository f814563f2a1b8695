"""Which guide gets close to the posterior? Every guide against NUTS on the same lifted model.

Task: a 1-20-1 tanh regression with N(0, 1) priors on every weight and bias,
Gaussian noise of known sd 0.1, and 40 training points in two clusters,
x in [-2, -0.5] ∪ [0.5, 2], y = sin(3x) + noise; 200 test points over all of [-2, 2], the
gap included. NUTS (``pb.mcmc``) is the reference; each guide is fitted with
``pb.fit(model, kind, data, num_steps=5000)`` and library defaults, nothing tuned.

Reported per guide (the metrics of the NeurIPS 2021 approximate-inference competition):
W1 between its predictive draws of y and NUTS's at each test point, averaged; the ratio of
its predictive sd to NUTS's inside the gap (|x| < 0.5) and over all test points; the test
log-likelihood; the fit's seconds.

Second check, on ``make demo`` (gap1d, 1-50-1, learned noise, 3000 steps): the final ELBO
of every guide, estimated with 4096 particles and its Monte Carlo standard error. The
families of low-rank, full-rank and flow contain mean-field's, so a converged fit of any
of them should reach at least mean-field's ELBO.

    python benchmarks/guides_vs_nuts.py                          # NUTS 4 x 1000, then every guide
    python benchmarks/guides_vs_nuts.py --nuts-cache nuts.pt     # sample once, reuse after
    python benchmarks/guides_vs_nuts.py --nuts-samples 100 --nuts-warmup 100 --nuts-chains 2 --steps 200 --skip-demo

Writes ``guides-vs-nuts.md`` into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pyrobnn as pb

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ("meanfield", "lowrank", "fullrank", "flow", "map")


def gap_task(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """40 training points in two clusters with a gap, 200 test points over the whole range."""
    g = torch.Generator().manual_seed(seed)

    def draw(n: int, gap: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if gap:
            side = torch.randint(0, 2, (n, 1), generator=g)
            left, right = -2 + 1.5 * torch.rand(n, 1, generator=g), 0.5 + 1.5 * torch.rand(n, 1, generator=g)
            x = torch.where(side == 0, left, right)
        else:
            x = -2 + 4 * torch.rand(n, 1, generator=g)
        return x, torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(n, generator=g)

    x_train, y_train = draw(40, True)
    x_test, y_test = draw(200, False)
    return x_train, y_train, x_test, y_test


def gap_model(seed: int = 0) -> pb.BayesianModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(1, 20), nn.Tanh(), nn.Linear(20, 1))
    return pb.BayesianModel(pb.lift(net, prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian(0.1))


def reference(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> pb.Posterior:
    cache = Path(args.nuts_cache) if args.nuts_cache else None
    if cache is not None and cache.is_file():
        print(f"NUTS draws read from {cache}", file=sys.stderr)
        return pb.load(cache, gap_model())
    post = pb.mcmc(
        gap_model(),
        (x, y),
        kernel="nuts",
        num_samples=args.nuts_samples,
        warmup=args.nuts_warmup,
        num_chains=args.nuts_chains,
        seed=args.seed,
        progress=not args.quiet,
    )
    if cache is not None:
        pb.save(cache, post)
    return post


def nuts_summary(post: pb.Posterior, x_test: torch.Tensor) -> dict[str, Any]:
    """Sampler health: time, steps, divergences, R̂ and ESS of the predictions at the test points."""
    import arviz as az

    draws = post.source
    assert isinstance(draws, pb.MCMCDraws)
    idata = pb.to_arviz(post, x_test, num_samples=draws.num_draws, seed=0)
    mean_fn = idata.posterior_predictive["obs"]
    return {
        "chains": draws.num_chains,
        "draws": draws.num_draws,
        "seconds": float(draws.seconds.sum()),
        "steps_per_draw": float(draws.num_steps.double().mean()),
        "divergent": int(draws.diverging.sum()),
        "rhat_pred_max": float(az.rhat(mean_fn).to_array().max()),
        "ess_pred_min": float(az.ess(mean_fn).to_array().min()),
    }


def guide_rows(
    args: argparse.Namespace, ref: pb.Posterior, data: tuple[torch.Tensor, ...]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    x, y, x_test, y_test = data
    results: dict[str, Any] = {"nuts": ref}
    for kind in args.guides:
        results[kind] = pb.fit(gap_model(), kind, (x, y), num_steps=args.steps, seed=args.seed, progress=not args.quiet)
    table = pb.compare(results, x_test, y_test, reference="nuts", num_samples=args.samples, seed=args.seed)
    gap = x_test.abs().squeeze(-1) < 0.5
    ref_gap = ref.predict(x_test[gap], num_samples=args.samples, seed=args.seed)
    rows = []
    for name in ["nuts", *args.guides]:
        post = results[name] if name == "nuts" else results[name].posterior()
        pred_gap = post.predict(x_test[gap], num_samples=args.samples, seed=args.seed)
        rows.append(
            {
                "guide": name,
                "w1": table.loc[name, "w1"],
                "sd_ratio_gap": pb.metrics.reference_distance(pred_gap, ref_gap)["sd_ratio"],
                "sd_ratio": table.loc[name, "sd_ratio"],
                "test_ll": table.loc[name, "test_log_likelihood"],
                "seconds": table.loc[name, "fit_seconds"],
            }
        )
    return rows, {"gap_points": int(gap.sum())}


def demo_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The fits of ``make demo`` (pyrobnn compare on gap1d), each with a precise ELBO estimate."""
    from pyrobnn.cli import DEFAULT_STEPS, build_model

    data = pb.datasets.standardize(pb.datasets.load("gap1d"))
    rows = []
    for kind in (k for k in args.guides if k != "map"):  # MAP's objective is not a bound
        model = build_model(data, 50, args.seed)
        train = (data.x_train, data.y_train)
        result = pb.fit(model, kind, train, num_steps=DEFAULT_STEPS, seed=args.seed, progress=False)
        terms, se = pb.estimate_elbo(model, result.guide, data.x_train, data.y_train, num_particles=4096)
        rows.append({"guide": kind, "elbo": terms.elbo, "se": se, "history": result.final_elbo()})
    return rows


def markdown(
    args: argparse.Namespace,
    nuts: dict[str, Any],
    rows: list[dict[str, Any]],
    extra: dict[str, float],
    demo: list[dict[str, Any]],
) -> str:
    lines = [
        "# Guides against NUTS on the gap task",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/guides_vs_nuts.py', *sys.argv[1:]])}` "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        f"NUTS (`pb.mcmc`): {nuts['chains']} chains × {nuts['draws']} draws after {args.nuts_warmup} warm-up "
        f"iterations, {nuts['seconds'] / 60:.1f} min, {nuts['steps_per_draw']:.0f} leapfrog steps per draw, "
        f"{nuts['divergent']} divergent; predictions at the test points: R̂ ≤ {nuts['rhat_pred_max']:.3f}, "
        f"bulk ESS ≥ {nuts['ess_pred_min']:.0f}.",
        "",
        f"Guides: `pb.fit(model, kind, data, num_steps={args.steps})`, library defaults. "
        f"sd ratio (gap): over the {extra['gap_points']} test points with |x| < 0.5.",
        "",
        "| guide | W1 to NUTS | sd ratio (gap) | sd ratio (all) | test log-lik | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['guide']} | {r['w1']:.3f} | {r['sd_ratio_gap']:.2f} | {r['sd_ratio']:.2f} | {r['test_ll']:.2f} "
            f"| {r['seconds']:.1f} |"
        )
    if demo:
        mf = next(r for r in demo if r["guide"] == "meanfield")
        lines += [
            "",
            "`make demo` (gap1d, 1-50-1, learned noise, 3000 steps): ELBO of the fitted guide estimated with 4096 "
            "particles ± its Monte Carlo standard error, and the history's mean over the last 5% of steps.",
            "",
            "| guide | ELBO | ± se | history | ≥ mean-field − se |",
            "|---|---|---|---|---|",
        ]
        for r in demo:
            ok = "—" if r["guide"] == "meanfield" else ("yes" if r["elbo"] >= mf["elbo"] - mf["se"] else "no")
            lines.append(f"| {r['guide']} | {r['elbo']:.1f} | {r['se']:.2f} | {r['history']:.1f} | {ok} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=GUIDES)
    parser.add_argument("--steps", type=int, default=5000, help="SVI steps per guide (5000)")
    parser.add_argument("--samples", type=int, default=1000, help="predictive draws per posterior (1000)")
    parser.add_argument("--nuts-samples", type=int, default=1000)
    parser.add_argument("--nuts-warmup", type=int, default=1000)
    parser.add_argument("--nuts-chains", type=int, default=4)
    parser.add_argument("--nuts-cache", help="read the NUTS draws from this pb.save file, or write them there")
    parser.add_argument("--skip-demo", action="store_true", help="leave out the make-demo ELBO check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the tiny net gains nothing)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = gap_task()
    ref = reference(args, data[0], data[1])
    nuts = nuts_summary(ref, data[2])
    rows, extra = guide_rows(args, ref, data)
    demo = [] if args.skip_demo else demo_rows(args)
    text = markdown(args, nuts, rows, extra, demo)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guides-vs-nuts.md").write_text(text)
    return 0 if all(math.isfinite(r["w1"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
