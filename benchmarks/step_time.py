"""Median milliseconds per SVI step: pyrobnn against a hand-written floor and plain Pyro.

Methods, on the same MLP, data and batch, all with the same optimiser (torch's fused Adam,
as ``pb.fit`` uses; plain Pyro's per-parameter Adam with ``fused=True``):

* ``floor``  — hand-written vectorized Bayes-by-backprop in pure torch: weights drawn as
  ``[S, out, in]``, ``baddbmm``, closed-form KL, Adam. The reference every ratio is to.
* ``pyro``   — plain Pyro: ``PyroModule`` + ``PyroSample`` + ``AutoNormal`` + ``Trace_ELBO``
  with particles looped (``SVI``).
* ``meanfield`` / ``lowrank(10)`` / ``flow(last layer)`` — pyrobnn guides, vectorized
  particles, one step of the ELBO module with Adam (what ``pb.fit`` does per step after
  the first: Pyro's validation checks off); ``meanfield(local)`` and
  ``flow(last layer, local)`` with ``local_reparam=True`` (pre-activations drawn instead
  of weights, in the mean-field part).
* ``meanfield(svi.step)`` — the mean-field guide through ``pb.svi``'s ``SVIState.step``, the step
  ``pb.fit`` takes: the ELBO step above plus the divergence check and its parameter snapshot,
  the learning-rate schedule and the history row, called from a loop of one's own (outside
  ``state.session()``: the step's random stream swapped in and out each time).
* ``torch_blue`` / ``torch_blue(analytic)`` — torch_blue 1.1 (``pip install -e '.[bench]'``):
  ``convert_to_vimodule``, ``samples=S``, ``KullbackLeiblerLoss`` (its quickstart's Monte
  Carlo KL) or ``AnalyticalKullbackLeiblerLoss``, Adam. Skipped when not installed.

Tasks: ``small`` (13-50-1 regression) and ``mnist`` (784-512-512-10 classification), batch
128, random data. Rounds are interleaved so the machine's drift hits every method alike.

    python benchmarks/step_time.py --tasks small mnist --particles 1 10 32 --rounds 5 --device cpu

Each round times every method for at least ``--steps`` steps and ``--round-seconds``
seconds; the table shows the median over rounds of the mean time per step.

After the timings it measures each method's peak memory for the MNIST-sized MLP at S = 32
(``--memory-particles``), each in a fresh process: the growth of the peak resident set
over the process's size once the data exist (on CUDA: peak allocated GPU memory).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from torch import nn

import pyrobnn as pb

TASKS = {"small": ([13, 50, 1], "regression"), "mnist": ([784, 512, 512, 10], "classification")}
N_TRAIN = 60_000


def make_net(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def adam(params: Any) -> torch.optim.Optimizer:
    """Every method's optimiser: Adam with torch's fused kernel, which pb.fit uses by default."""
    return torch.optim.Adam(params, lr=1e-3, fused=True)


def floor_step(sizes: list[int], task: str, x: torch.Tensor, y: torch.Tensor, s: int) -> Callable[[], None]:
    """Hand-written vectorized Bayes-by-backprop (closed-form KL against N(0, 1))."""
    shapes = [((b, a), (b,)) for a, b in itertools.pairwise(sizes)]
    params = []
    for w_shape, b_shape in shapes:
        for shape in (w_shape, b_shape):
            params += [
                torch.randn(shape, device=x.device).mul_(0.05).requires_grad_(),
                torch.full(shape, math.log(math.expm1(0.01)), device=x.device, requires_grad=True),
            ]
    opt = adam(params)

    def step() -> None:
        opt.zero_grad()
        h = x.expand(s, *x.shape)
        kl = 0.0
        for i in range(len(shapes)):
            wm, wr, bm, br = params[4 * i : 4 * i + 4]
            ws, bs = F.softplus(wr), F.softplus(br)
            w = wm + ws * torch.randn((s, *wm.shape), device=x.device)
            b = bm + bs * torch.randn((s, *bm.shape), device=x.device)
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < len(shapes) - 1:
                h = F.relu(h)
            for m, sd in ((wm, ws), (bm, bs)):
                kl = kl + (0.5 * (sd**2 + m**2 - 1) - sd.log()).sum()
        if task == "regression":
            loglik = dist.Normal(h.squeeze(-1), 0.1).log_prob(y).sum(-1).mean()
        else:
            loglik = -F.cross_entropy(h.reshape(-1, h.shape[-1]), y.repeat(s), reduction="sum") / s
        loss = -(N_TRAIN / len(x) * loglik - kl)
        loss.backward()
        opt.step()

    return step


def pyro_step(sizes: list[int], task: str, x: torch.Tensor, y: torch.Tensor, s: int) -> Callable[[], None]:
    """Plain Pyro: PyroModule + PyroSample priors, AutoNormal, Trace_ELBO with looped particles."""
    pyro.clear_param_store()
    net = make_net(sizes).to(x.device)
    pyro.nn.module.to_pyro_module_(net)
    for module in net.modules():
        for name, value in list(module.named_parameters(recurse=False)):
            prior = dist.Normal(torch.zeros((), device=x.device), 1.0).expand(value.shape).to_event(value.dim())
            setattr(module, name, PyroSample(prior))

    class Model(PyroModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
            out = self.net(x)
            with pyro.plate("data", N_TRAIN, subsample=torch.arange(len(x), device=x.device)):
                if task == "regression":
                    pyro.sample("obs", dist.Normal(out.squeeze(-1), 0.1), obs=y)
                else:
                    pyro.sample("obs", dist.Categorical(logits=out), obs=y)

    model = Model()
    guide = AutoNormal(model, init_scale=0.01)
    svi = SVI(
        model, guide, pyro.optim.Adam({"lr": 1e-3, "fused": True}), Trace_ELBO(num_particles=s, max_plate_nesting=1)
    )
    return lambda: svi.step(x, y) and None


def pyrobnn_step(
    sizes: list[int], task: str, x: torch.Tensor, y: torch.Tensor, s: int, kind: str, **options: object
) -> Callable[[], None]:
    likelihood = pb.likelihoods.Gaussian(0.1) if task == "regression" else pb.likelihoods.Categorical()
    model = pb.BayesianModel(pb.lift(make_net(sizes)), likelihood).to(x.device)
    guide = pb.guides.make_guide(kind, model, **options).to(x.device)
    loss_fn = pb.ELBO(s)(model, guide)
    opt = adam([g for g in guide.param_groups() if g["params"]])

    def step() -> None:
        opt.zero_grad()
        with pyro.validation_enabled(False):  # as pb.fit after its first step
            loss_fn(x, y, dataset_size=N_TRAIN).backward()
        opt.step()

    return step


def svi_step(sizes: list[int], task: str, x: torch.Tensor, y: torch.Tensor, s: int, kind: str) -> Callable[[], None]:
    """pb.fit's whole step, through the public building blocks (pb.svi.init, SVIState.step)."""
    likelihood = pb.likelihoods.Gaussian(0.1) if task == "regression" else pb.likelihoods.Categorical()
    model = pb.BayesianModel(pb.lift(make_net(sizes)), likelihood).to(x.device)
    # The batch is the data here (N = 128, not N_TRAIN: the likelihood's scale costs the same).
    state = pb.svi.init(model, kind, (x, y), num_steps=10**9, num_particles=s, optimizer=adam, seed=0)
    state.step()  # the first step runs Pyro's validation, as in pb.fit; the timed ones do not
    return lambda: state.step() and None


def torch_blue_step(
    sizes: list[int], task: str, x: torch.Tensor, y: torch.Tensor, s: int, analytic: bool = False
) -> Callable[[], None]:
    """torch_blue 1.1: the same MLP converted in place, mean-field Normal, N(0, 1) prior."""
    from torch_blue import vi
    from torch_blue.vi.distributions import Categorical, MeanFieldNormal

    # Its Gaussian predictive takes a std over the samples, which warns at samples=1.
    warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom", category=UserWarning)

    net = make_net(sizes).to(x.device)
    vi.convert_to_vimodule(net)
    predictive = MeanFieldNormal() if task == "regression" else Categorical()
    if analytic:
        loss_fn = vi.AnalyticalKullbackLeiblerLoss(net, predictive, dataset_size=N_TRAIN)
    else:
        loss_fn = vi.KullbackLeiblerLoss(predictive, dataset_size=N_TRAIN)
    target = y.unsqueeze(-1) if task == "regression" else y
    opt = adam(net.parameters())

    def step() -> None:
        opt.zero_grad()
        loss_fn(net(x, samples=s), target).backward()
        opt.step()

    return step


METHODS: dict[str, Callable[..., Callable[[], None]]] = {
    "floor": floor_step,
    "pyro": pyro_step,
    "meanfield": lambda *a: pyrobnn_step(*a, "meanfield"),
    "meanfield(local)": lambda *a: pyrobnn_step(*a, "meanfield", local_reparam=True),
    "meanfield(svi.step)": lambda *a: svi_step(*a, "meanfield"),
    "lowrank(10)": lambda *a: pyrobnn_step(*a, "lowrank", rank=10),
    "flow(last layer)": lambda *a: pyrobnn_step(*a, "flow", sites="last_layer"),
    "flow(last layer, local)": lambda *a: pyrobnn_step(*a, "flow", sites="last_layer", local_reparam=True),
}
if importlib.util.find_spec("torch_blue") is not None:
    METHODS["torch_blue"] = torch_blue_step
    METHODS["torch_blue(analytic)"] = lambda *a: torch_blue_step(*a, analytic=True)


def make_data(sizes: list[int], kind: str, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(batch, sizes[0], device=device)
    if kind == "regression":
        return x, torch.randn(batch, device=device)
    return x, torch.randint(0, sizes[-1], (batch,), device=device)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # Linux: "5" resets VmHWM to the current RSS
        handle.write("5")


def measure_memory(method: str, task: str, s: int, batch: int, device: torch.device) -> float:
    """Peak memory in bytes that ``method`` adds for a few steps (run in a fresh process)."""
    sizes, kind = TASKS[task]
    x, y = make_data(sizes, kind, batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()  # imports peak higher than the data; measure from here
        base = _status_bytes("VmRSS")
    step = METHODS[method](sizes, kind, x, y, s)
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    return float(_status_bytes("VmHWM") - base)


def memory_table(methods: list[str], task: str, s: int, batch: int, device: str) -> None:
    print(
        f"\npeak memory, {task} ({'-'.join(map(str, TASKS[task][0]))}), S = {s}, batch {batch}, each in a fresh process"
    )
    print(f"  {'method':24s} {'GiB':>7s} {'ratio':>7s}")
    peaks = {}
    for name in methods:
        child = ["--memory-of", name, "--tasks", task, "--particles", str(s), "--batch", str(batch), "--device", device]
        out = subprocess.run(
            [sys.executable, __file__, *child],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    base = peaks.get("floor")
    for name, peak in peaks.items():
        ratio = f"{peak / base:7.2f}" if base else "      -"
        print(f"  {name:24s} {peak / 2**30:7.3f} {ratio}")


def time_steps(step: Callable[[], None], least_steps: int, least_seconds: float, sync: Callable[[], None]) -> float:
    """Mean seconds per step over at least ``least_steps`` steps and ``least_seconds`` seconds."""
    count = 0
    sync()
    start = time.perf_counter()
    while True:
        step()
        count += 1
        if count >= least_steps:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= least_seconds:
                return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--particles", nargs="+", type=int, default=[1, 10, 32])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="least timed steps per method per round")
    parser.add_argument(
        "--round-seconds", type=float, default=0.2, help="least time per method per round (small nets take more steps)"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-particles", type=int, default=32, help="S for the memory table; 0 skips it")
    parser.add_argument("--memory-task", default="mnist", choices=list(TASKS))
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one method's peak, in this process
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory_of:
        peak = measure_memory(args.memory_of, args.tasks[0], args.particles[0], args.batch, device)
        print(json.dumps({"peak_bytes": peak}))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(
        f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    if "torch_blue" not in METHODS:
        print("torch_blue is not installed (pip install -e '.[bench]'): its rows are skipped")
    for task in args.tasks:
        sizes, kind = TASKS[task]
        x, y = make_data(sizes, kind, args.batch, device)
        for s in args.particles:
            steps = {name: METHODS[name](sizes, kind, x, y, s) for name in args.methods}
            for step in steps.values():
                for _ in range(3):  # warm-up: allocator caches, Adam's state, lazy initialisation
                    step()
            times: dict[str, list[float]] = {name: [] for name in steps}
            for _ in range(args.rounds):
                for name, step in steps.items():
                    times[name].append(time_steps(step, args.steps, args.round_seconds, sync))
            base = statistics.median(times["floor"]) if "floor" in times else None
            print(f"\n{task} ({'-'.join(map(str, sizes))}), S = {s}")
            print(f"  {'method':24s} {'ms/step':>9s} {'ratio':>7s}")
            for name, values in times.items():
                median = statistics.median(values)
                ratio = f"{median / base:7.2f}" if base else "      -"
                print(f"  {name:24s} {1000 * median:9.2f} {ratio}")
    if args.memory_particles:
        memory_table(args.methods, args.memory_task, args.memory_particles, args.batch, args.device)


if __name__ == "__main__":
    main()
