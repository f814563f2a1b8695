"""Which MAP fits interpolate their data? The effective number of parameters against a noise scale that keeps falling.

For each task, a MAP fit of the command line's model (1-50-1 tanh, N(0, 1) priors, the noise
scale learned, standardised data) under ``num_steps="auto"``, then the same fit from the same
start for four times as many steps. The table gives, at the ``auto`` fit's point, the learned
noise scale σ, MacKay's effective number of parameters γ (``pb.guides.effective_parameters``)
and γ / N, whether ``pb.fit`` warned that the fit interpolates (γ > 0.75 N), and σ after four
times the steps, with γ / N there: a fit whose log joint has a maximum keeps its σ, one that
interpolates lets it fall further. Tasks: the built-in regressions (``gap1d``, ``hetero1d``, ``friedman``; ``--seeds``
are the datasets' seeds), UCI datasets from ``--data-dir`` (``uci:NAME``, the seed is the split)
and ``small``, a 1-10-1 net on 20 points of a sine (31 weights for 20 observations).

    OMP_NUM_THREADS=1 python benchmarks/interpolation.py                 # about 35 minutes on one core
    python benchmarks/interpolation.py --quick                           # smoke run

Writes ``interpolation.md`` (``-seeds-...`` for other seeds) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import pyrobnn as pb
from pyrobnn.cli import build_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "uci"
TASKS = ["gap1d", "hetero1d", "friedman", "uci:energy", "uci:yacht", "uci:bostonHousing", "small"]


def task(name: str, seed: int, data_dir: Path) -> tuple[pb.BayesianModel, torch.Tensor, torch.Tensor]:
    """The model and its training data ``(x, y)``."""
    if name == "small":
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(20, 1, generator=g) * 4 - 2
        y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(20, generator=g)
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(1, 10), torch.nn.Tanh(), torch.nn.Linear(10, 1))
        return pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(scale="learn")), x, y
    if name.startswith("uci:"):
        data = pb.datasets.standardize(pb.datasets.load_uci(data_dir / name[4:], seed))
    else:
        data = pb.datasets.standardize(pb.datasets.load(name, seed=seed))
    return build_model(data, 50, seed), data.x_train, data.y_train


def row(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    model, x, y = task(name, seed, args.data_dir)
    start = {key: value.clone() for key, value in model.state_dict().items()}
    begin = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = pb.fit(model, "map", (x, y), num_steps=args.steps, seed=seed, progress=False)
    warned = any("interpolates the training data" in str(w.message) for w in caught)
    point = fit.guide.median()
    gamma = pb.guides.effective_parameters(model, point, x, y)
    model.load_state_dict(start)  # the longer fit from the same weights
    longer = pb.fit(model, "map", (x, y), num_steps=4 * fit.num_steps, seed=seed, progress=False, check=False)
    longer_point = longer.guide.median()
    return {
        "task": name,
        "seed": seed,
        "n": len(y),
        "d": sum(model.latent_sites()[site].shape.numel() for site in model.net.site_names),
        "steps": fit.num_steps,
        "sigma": float(point["likelihood.scale"]),
        "gamma": gamma,
        "warned": warned,
        "sigma_4x": float(longer_point["likelihood.scale"]),
        "gamma_4x": pb.guides.effective_parameters(model, longer_point, x, y),
        "seconds": time.perf_counter() - begin,
    }


def markdown(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Which MAP fits interpolate their data?",
        "",
        f"Command: `{' '.join(['python benchmarks/interpolation.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d')}), "
        f"{torch.get_num_threads()} thread(s). MAP fits of the command line's model under `num_steps={args.steps!r}`; "
        "γ is MacKay's effective number of parameters at the fit's point; σ at 4× is the noise scale after "
        "four times the steps from the same start.",
        "",
        "| task | seed | N | D | steps | σ | γ | γ / N | warned | σ at 4× steps | σ at 4× / σ | γ / N at 4× | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gamma = "—" if r["gamma"] is None else f"{r['gamma']:.1f}"
        ratio = "—" if r["gamma"] is None else f"{r['gamma'] / r['n']:.3f}"
        ratio_4x = "—" if r["gamma_4x"] is None else f"{r['gamma_4x'] / r['n']:.3f}"
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['n']} | {r['d']} | {r['steps']} | {r['sigma']:.4f} | {gamma} | "
            f"{ratio} | {'yes' if r['warned'] else 'no'} | {r['sigma_4x']:.4f} | {r['sigma_4x'] / r['sigma']:.2f} | "
            f"{ratio_4x} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", nargs="+", default=TASKS, help=f"of {', '.join(TASKS)} (uci:NAME for any UCI folder)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder of the UCI dataset folders")
    parser.add_argument("--quick", action="store_true", help="smoke run: the small task, 50 steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.steps = "auto"
    if args.quick:
        args.tasks, args.seeds, args.steps = ["small"], [0], 50
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "interpolation" + ("" if args.quick or args.seeds == [0, 1] else "-seeds-" + "-".join(map(str, args.seeds)))
    path = out / f"{stem}{'-quick' if args.quick else ''}.md"
    rows: list[dict[str, Any]] = []
    text = ""
    for name in args.tasks:
        for seed in args.seeds:
            rows.append(row(name, seed, args))
            text = markdown(args, rows)
            path.write_text(text)  # after every row: a run cut short keeps the rows it finished
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
