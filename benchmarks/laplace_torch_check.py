"""pyrobnn's Laplace approximation against laplace-torch's, on the same network at the same point.

laplace-torch (Daxberger et al. 2021) is the field's library for Laplace approximations of
plain torch modules. This script is the cross-check docs/concepts.md promises: it is not a
dependency of pyrobnn, and the script says how to install it when it is missing
(``pip install laplace-torch``; it pulls in backpack, asdfghjkl, curvlinops and torchvision).

Part 1, the same numbers. The gap task of ``benchmarks/ensembles.py`` (1-20-1 tanh, N(0, 1)
priors, noise 0.1 known), in float64, one MAP fit by pyrobnn, then pyrobnn's full GGN Laplace approximation
(``curvature="ggn"``, ``structure="full"``; its Newton polish moves the point a little) and,
at pyrobnn's final point, laplace-torch's ``FullLaplace`` on the plain ``nn.Sequential`` with
the same weights (``sigma_noise=0.1``, ``prior_precision=1``). Reported: the largest relative
difference of the posterior precisions, the two log evidences, the largest relative difference
of the linearised predictive variances at 200 test points (pyrobnn's J Σ Jᵀ from its
covariance, laplace-torch's ``pred_type="glm"``), and the seconds of each second phase.

Part 2, larger nets. Part 2 of ``benchmarks/laplace_lowrank.py``'s regression (8-128-128-1
tanh, D = 17,793): pyrobnn's ``structure="lowrank"`` beside laplace-torch's Kronecker-factored
``KronLaplace``, both around pyrobnn's MAP fit with the noise scale at its MAP value and prior
precision 1: log evidence, test log-likelihood of the linearised predictive and seconds.

    pip install laplace-torch
    python benchmarks/laplace_torch_check.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensembles import TASKS
from laplace_lowrank import scale_data

import pyrobnn as pb
from pyrobnn.guides import make_guide


def twin(net: nn.Module, point: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of the plain network holding the posterior's point as its weights."""
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(point[name])
    return net


def part_one(laplace: object, args: argparse.Namespace) -> None:
    task = TASKS["gap"]
    x, y, x_test, _ = (t.double() for t in task.data(0))  # float64 throughout: differences are then the methods'
    model = task.model(0).double()
    point = pb.fit(model, "map", (x, y), num_steps=args.steps, progress=False).guide.median()
    guide = make_guide("laplace", model, init=point, curvature="ggn", structure="full")
    guide.fit_posterior(model, x, y)  # warm: torch.func's first call compiles
    guide = make_guide("laplace", model, init=point, curvature="ggn", structure="full")
    start = time.perf_counter()
    guide.fit_posterior(model, x, y)
    ours_s = time.perf_counter() - start
    final = guide.median()
    net = nn.Sequential(nn.Linear(1, task.hidden), task.activation(), nn.Linear(task.hidden, 1)).double()
    net = twin(net, final)
    loader = DataLoader(TensorDataset(x, y[:, None]), batch_size=len(x))
    la = laplace.Laplace(  # type: ignore[attr-defined]
        net,
        "regression",
        subset_of_weights="all",
        hessian_structure="full",
        sigma_noise=task.noise,
        prior_precision=1.0,
    )
    start = time.perf_counter()
    la.fit(loader)
    theirs_s = time.perf_counter() - start
    ours_p = torch.linalg.inv(guide.covariance().double())
    theirs_p = la.posterior_precision.double()
    rel = float((ours_p - theirs_p).abs().max() / theirs_p.abs().max())
    # pyrobnn's linearised predictive variance J Σ Jᵀ, exactly (no Monte Carlo)
    theta = guide.layout.join(final)
    jac = torch.func.jacrev(lambda t: model.evaluate(guide.layout.split(t.unsqueeze(0)), x_test)[0][0, :, 0])(theta)
    ours_var = torch.einsum("nd,de,ne->n", jac.double(), guide.covariance().double(), jac.double())
    _, f_var = la(x_test, pred_type="glm")
    var_rel = float(((ours_var - f_var.reshape(-1).double()) / f_var.reshape(-1).double()).abs().max())
    print("## The same numbers: full GGN Laplace, gap task (1-20-1 tanh, D = 61)\n")
    print("| quantity | pyrobnn | laplace-torch | largest relative difference |")
    print("|---|---|---|---|")
    print(f"| posterior precision (61×61) | | | {rel:.1e} |")
    print(f"| log evidence | {float(guide.log_evidence):.6f} | {float(la.log_marginal_likelihood()):.6f} | |")
    print(f"| linearised predictive variance, 200 points | | | {var_rel:.1e} |")
    print(f"| seconds, second phase | {ours_s:.3f} | {theirs_s:.3f} | |\n")


def part_two(laplace: object, args: argparse.Namespace) -> None:
    x, y = scale_data(args.points, 0)
    x_test, y_test = scale_data(500, 1)
    torch.manual_seed(0)
    w = args.width

    def plain() -> nn.Module:
        return nn.Sequential(nn.Linear(8, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 1))

    model = pb.BayesianModel(pb.lift(plain(), prior=pb.priors.Normal(0.0, 1.0)), pb.likelihoods.Gaussian("learn"))
    point = pb.fit(model, "map", (x, y), num_steps=args.steps, progress=False).guide.median()
    sigma = float(point["likelihood.scale"]) if "likelihood.scale" in point else None
    rows = []
    for rank in args.ranks:
        guide = make_guide("laplace", model, init=point, structure="lowrank", rank=rank, noise="map")
        start = time.perf_counter()
        guide.fit_posterior(model, x, y)
        seconds = time.perf_counter() - start
        pred = pb.Posterior(model, guide).predict(x_test, num_samples=args.samples, seed=0)
        rows.append(
            (f"pyrobnn lowrank({rank})", float(guide.log_evidence), float(pred.log_prob(y_test).mean()), seconds)
        )
    net = twin(plain(), {k: v for k, v in guide.median().items() if k != "likelihood.scale"})
    loader = DataLoader(TensorDataset(x, y[:, None]), batch_size=256)
    la = laplace.Laplace(  # type: ignore[attr-defined]
        net, "regression", subset_of_weights="all", hessian_structure="kron", sigma_noise=sigma, prior_precision=1.0
    )
    start = time.perf_counter()
    la.fit(loader)
    seconds = time.perf_counter() - start
    f_mu, f_var = la(x_test, pred_type="glm")
    sd = (f_var.reshape(-1) + sigma**2).sqrt()
    test_ll = float(torch.distributions.Normal(f_mu.reshape(-1), sd).log_prob(y_test).mean())
    rows.append(("laplace-torch KronLaplace", float(la.log_marginal_likelihood()), test_ll, seconds))
    print(f"## Larger nets: {args.points} points, 8-{w}-{w}-1 tanh, D = {guide.layout.dim}, noise {sigma:.3f}\n")
    print("| approximation | log evidence | test LL | seconds |\n|---|---|---|---|")
    for label, log_z, ll, s in rows:
        print(f"| {label} | {log_z:.1f} | {ll:.3f} | {s:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="MAP steps")
    parser.add_argument("--ranks", nargs="+", type=int, default=[10, 50, 100])
    parser.add_argument("--samples", type=int, default=2000, help="predictive draws")
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    try:
        import laplace
    except ImportError:
        print("laplace-torch is not installed: pip install laplace-torch (this check only; pyrobnn does not need it)")
        return 1
    part_one(laplace, args)
    part_two(laplace, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
