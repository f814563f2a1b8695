"""The UCI regression benchmark: pyrobnn guides against the published table.

Protocol (``../shared/data/uci/PUBLISHED.md``): the 20 standard 90/10 splits of each
dataset; one hidden layer of 50 ReLU units; inputs and target standardised on the
training split; RMSE of the predictive mean and the test log-likelihood (log-mean-exp
of the Gaussian densities over posterior draws, per point) in original units; mean ±
standard error over splits.

Model and fit, the same for every dataset: N(0, 1) priors on every weight and bias,
a Gaussian likelihood whose noise scale is learned with a HalfNormal(1) prior on the
standardised scale (``Gaussian(scale="learn")``), and ``pb.fit``'s defaults (Adam at
1e-2 with its decay over the second half, 8 vectorized particles, guide defaults)
for a fixed number of minibatch steps. Nothing is tuned per dataset.

    python benchmarks/uci.py                                   # mean-field, all 6 x 20 splits
    python benchmarks/uci.py --splits 3 --datasets yacht energy
    python benchmarks/uci.py --guides meanfield lowrank --out benchmarks/results
    python benchmarks/uci.py --guides laplace laplace-tune    # τ by the Laplace evidence too

The fits are independent and tiny (one 50-unit layer), so they run in ``--workers``
processes (default: one per core) with one torch thread each, which is faster than
one process using every core for such small matrices.

Writes ``uci-<guides>.csv`` (one row per dataset, guide and split) and
``uci-<guides>.md`` (the summary beside the published numbers) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

import pyrobnn as pb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "uci"
DATASETS = ("bostonHousing", "concrete", "energy", "kin8nm", "naval-propulsion-plant", "yacht")
PEERS = ("VI", "PBP", "MC dropout", "deep ensembles")
#: Guides with options, by the name ``--guides`` takes: (kind, options to ``pb.fit``).
VARIANTS = {"laplace-tune": ("laplace", {"prior_precision": "tune"})}


@dataclass(frozen=True)
class Settings:
    """One set of choices for every dataset (the protocol fixes the network).

    3000 steps of 256 points is the budget that fits all 6 x 20 splits in about 45
    minutes on a 2-core machine (a step of this tiny net costs ~13 ms, nearly all of it
    fixed per-step overhead, so a larger batch is almost free): 36 epochs of naval,
    the largest dataset, and over 800 of the small ones.
    """

    hidden: int = 50
    num_steps: int = 3000
    batch_size: int = 256
    num_particles: int = 8
    num_samples: int = 1000  # posterior draws for the test metrics


@dataclass(frozen=True)
class Row:
    dataset: str
    guide: str
    split: int
    rmse: float
    test_ll: float
    noise_scale: float  # posterior median of σ, original units
    fit_seconds: float
    num_steps: int
    epochs: float
    num_particles: int
    batch_size: int


def run_split(directory: Path, split: int, guide: str, settings: Settings) -> Row:
    data = pb.datasets.standardize(pb.datasets.load_uci(directory, split))
    torch.manual_seed(split)  # the network's initial weights: the guide's starting means
    net = nn.Sequential(nn.Linear(data.x_train.shape[1], settings.hidden), nn.ReLU(), nn.Linear(settings.hidden, 1))
    model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn"))
    kind, options = VARIANTS.get(guide, (guide, {}))
    result = pb.fit(
        model,
        kind,
        (data.x_train, data.y_train),
        num_steps=settings.num_steps,
        batch_size=settings.batch_size,
        num_particles=settings.num_particles,
        seed=split,
        progress=False,
        **options,
    )
    post = result.posterior()
    scores = pb.metrics.evaluate(
        post, data.x_test, data.y_test, num_samples=settings.num_samples, seed=split, y_scale=data.y_scale
    )
    noise = float(post.guide.median()["likelihood.scale"]) * data.y_scale
    return Row(
        dataset=directory.name,
        guide=guide,
        split=split,
        rmse=scores["rmse"],
        test_ll=scores["test_log_likelihood"],
        noise_scale=noise,
        fit_seconds=result.elapsed_s,
        num_steps=settings.num_steps,
        epochs=settings.num_steps * settings.batch_size / len(data.x_train),
        num_particles=settings.num_particles,
        batch_size=settings.batch_size,
    )


# ----------------------------------------------------------------- published table
def published(path: Path) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """``{"rmse" | "ll": {dataset: {peer: (mean, ±)}}}`` parsed from PUBLISHED.md's two tables ({} if absent)."""
    tables: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    if not path.is_file():
        return tables
    metric = None
    for line in path.read_text().splitlines():
        if line.startswith("## Test RMSE"):
            metric = "rmse"
        elif line.startswith("## Test log-likelihood"):
            metric = "ll"
        elif line.startswith("## "):
            metric = None
        elif metric and line.startswith("| ") and not line.startswith("| dataset"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            values = [_plus_minus(c) for c in cells[1:]]
            tables.setdefault(metric, {})[cells[0]] = dict(zip(PEERS, values, strict=True))
    return tables


def _plus_minus(cell: str) -> tuple[float, float]:
    mean, _, err = cell.replace("−", "-").partition("±")
    return float(mean), float(err)


# ----------------------------------------------------------------------- summary
def mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def summary(rows: Sequence[Row], table: dict, settings: Settings, command: str, wall_s: float, workers: int) -> str:
    guides = sorted({r.guide for r in rows}, key=[r.guide for r in rows].index)
    datasets = sorted({r.dataset for r in rows}, key=[r.dataset for r in rows].index)
    fmt = {"rmse": "{:.3f} ± {:.3f}", "ll": "{:.2f} ± {:.2f}"}
    lines = [
        "# UCI regression benchmark",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}, torch {torch.__version__}.",
        f"Network {settings.hidden} ReLU units; {settings.num_steps} steps of batch {settings.batch_size}, "
        f"{settings.num_particles} particles, {settings.num_samples} posterior draws for the metrics; "
        f"total wall time {wall_s / 60:.1f} min ({workers} worker processes).",
        "Mean ± standard error over splits; published columns from PUBLISHED.md.",
        "",
    ]
    for metric, field, title in (("rmse", "rmse", "Test RMSE (lower is better)"), ("ll", "test_ll", "Test LL")):
        lines += [f"## {title}", ""]
        head = ["dataset", "splits", *guides, *PEERS]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for ds in datasets:
            cells = [ds, str(len({r.split for r in rows if r.dataset == ds}))]
            for g in guides:
                values = [getattr(r, field) for r in rows if r.dataset == ds and r.guide == g]
                cells.append(fmt[metric].format(*mean_se(values)) if values else "")
            peers = table.get(metric, {}).get(ds, {})
            cells += [fmt[metric].format(*peers[p]) if p in peers else "" for p in PEERS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Per dataset",
        "",
        "| dataset | guide | epochs | fit s / split | noise σ (median) |",
        "|---|---|---|---|---|",
    ]
    for ds in datasets:
        for g in guides:
            sel = [r for r in rows if r.dataset == ds and r.guide == g]
            if sel:
                lines.append(
                    f"| {ds} | {g} | {sel[0].epochs:.3g} | {statistics.fmean(r.fit_seconds for r in sel):.1f} | "
                    f"{statistics.median(r.noise_scale for r in sel):.4g} |"
                )
    lines += ["", *targets(rows, table, guides, datasets)]
    return "\n".join(lines) + "\n"


def targets(rows: Sequence[Row], table: dict, guides: Sequence[str], datasets: Sequence[str]) -> list[str]:
    """How the guides stand against issue 5's targets (on the datasets run)."""

    def mean(ds: str, g: str, field: str) -> float:
        return statistics.fmean(getattr(r, field) for r in rows if r.dataset == ds and r.guide == g)

    known = [ds for ds in datasets if ds in table.get("rmse", {}) and ds in table.get("ll", {})]
    if not known:
        return []
    datasets = known
    out = ["## Against the published numbers", ""]
    for g in guides:
        vi = [
            ds
            for ds in datasets
            if mean(ds, g, "rmse") < table["rmse"][ds]["VI"][0] and mean(ds, g, "test_ll") > table["ll"][ds]["VI"][0]
        ]
        pbp = [ds for ds in datasets if mean(ds, g, "test_ll") >= table["ll"][ds]["PBP"][0]]
        mcd = [ds for ds in datasets if mean(ds, g, "test_ll") > table["ll"][ds]["MC dropout"][0]]
        out += [
            f"- {g}: beats VI on both RMSE and LL on {len(vi)}/{len(datasets)} ({', '.join(vi) or 'none'}); "
            f"LL at least PBP's on {len(pbp)}/{len(datasets)} ({', '.join(pbp) or 'none'}); "
            f"LL above MC dropout's on {len(mcd)}/{len(datasets)} ({', '.join(mcd) or 'none'}).",
        ]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder of the UCI dataset folders")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--guides", nargs="+", default=["meanfield"], choices=[*pb.guides.GUIDE_KINDS, *VARIANTS])
    parser.add_argument("--splits", type=int, default=None, help="run the first K splits only (default: all)")
    parser.add_argument("--steps", type=int, default=Settings.num_steps, help="SVI steps per split")
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size, help="minibatch size")
    parser.add_argument("--samples", type=int, default=Settings.num_samples, help="posterior draws for the metrics")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel fits (default: cores)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (1)")
    args = parser.parse_args(argv)
    missing = [d for d in args.datasets if not (args.data_dir / d / "data.txt").is_file()]
    if missing:
        parser.error(f"no UCI data for {', '.join(missing)} under {args.data_dir}; pass --data-dir")
    settings = Settings(num_steps=args.steps, batch_size=args.batch_size, num_samples=args.samples)
    splits = {ds: pb.datasets.uci_num_splits(args.data_dir / ds) for ds in args.datasets}
    jobs = [
        (ds, g, k)
        for ds in args.datasets
        for g in args.guides
        for k in range(min(args.splits or splits[ds], splits[ds]))
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"uci-{'-'.join(args.guides)}"
    rows: list[Row] = []
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # no fork of a process that has started torch threads
    with (
        open(f"{stem}.csv", "w", newline="") as handle,
        ProcessPoolExecutor(
            args.workers, mp_context=context, initializer=torch.set_num_threads, initargs=(args.threads,)
        ) as pool,
    ):
        writer = csv.DictWriter(handle, fieldnames=list(Row.__dataclass_fields__))
        writer.writeheader()
        futures = [pool.submit(run_split, args.data_dir / ds, k, g, settings) for ds, g, k in jobs]
        for future in tqdm(futures, unit="fit", desc="UCI fits"):  # in job order, so the CSV is too
            rows.append(future.result())
            writer.writerow(asdict(rows[-1]))
            handle.flush()
    wall = time.perf_counter() - start
    command = " ".join(["python benchmarks/uci.py", *(sys.argv[1:] if argv is None else argv)])
    text = summary(rows, published(args.data_dir / "PUBLISHED.md"), settings, command, wall, args.workers)
    Path(f"{stem}.md").write_text(text)
    print(text)
    print(f"wrote {stem}.csv and {stem}.md")


if __name__ == "__main__":
    main()
