"""What :func:`pyrobnn.mcmc` checks before it samples: its arguments, the model, the cost.

Every refusal names the problem and the fix, and comes before the first draw.
"""

from __future__ import annotations

import difflib
import time
from typing import Any

import torch

from pyrobnn.infer._potential import BatchedPotential
from pyrobnn.model import BayesianModel

__all__ = ["KERNELS", "check_arguments", "refuse_if_too_big", "refuse_if_too_long_batched", "resolve_defaults"]

#: The kernels :func:`pyrobnn.mcmc` runs, and the defaults of each.
KERNELS: dict[str, dict[str, Any]] = {
    "chees": {"num_samples": 32, "warmup": 400, "num_chains": 64, "target_accept": 0.651},
    "nuts": {"num_samples": 1000, "warmup": 1000, "num_chains": 4, "target_accept": 0.8},
}


def resolve_defaults(kernel: Any, **given: Any) -> dict[str, Any]:
    """The kernel's defaults for every argument left at None; an unknown kernel refused by name."""
    if kernel not in KERNELS:
        close = difflib.get_close_matches(str(kernel), list(KERNELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown MCMC kernel {kernel!r}; pb.mcmc runs {', '.join(map(repr, KERNELS))} "
            f"('chees': many chains as one batch, the default; 'nuts': Pyro's NUTS, chain by chain).{hint}"
        )
    return {name: KERNELS[kernel][name] if value is None else value for name, value in given.items()}


def check_arguments(model: BayesianModel, kernel: str, options: dict[str, Any]) -> None:
    """Refuse bad counts, a ChEES run with too few chains, bad superchains and discrete latents."""
    for name in ("num_samples", "num_chains", "max_tree_depth", "max_leapfrog", "superchain_size"):
        value = options[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(options["warmup"], int) and options["warmup"] >= 0):
        raise ValueError(f"warmup must be a non-negative integer, got {options['warmup']!r}")
    if not 0 < options["target_accept"] < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {options['target_accept']}")
    if options["init"] not in ("prior", "reset", "pretrained"):
        raise ValueError(f"init must be 'prior', 'reset' or 'pretrained', got {options['init']!r}")
    chains, size = options["num_chains"], options["superchain_size"]
    if kernel == "chees" and chains < 2:
        raise ValueError(
            f"kernel='chees' adapts its step size, trajectory length and mass matrix from the spread "
            f"across chains, and R̂ compares chains: it needs num_chains >= 2 (got {chains}); the default "
            "is 64. For one chain, pass kernel='nuts'."
        )
    if chains % size or (size > 1 and chains // size < 2):
        raise ValueError(
            f"superchain_size={size} must divide num_chains={chains} into at least 2 superchains "
            "(nested R̂ compares superchains); pass e.g. num_chains=64, superchain_size=4, or superchain_size=1"
        )
    if kernel == "nuts" and size != 1:
        raise ValueError("superchain_size applies to kernel='chees'; NUTS chains each start on their own")
    discrete = [name for name, site in model.latent_sites().items() if getattr(site.support, "is_discrete", False)]
    if discrete:
        raise ValueError(
            f"the latent sites {discrete} are discrete: HMC moves only on continuous parameters. "
            "Give them a continuous prior, or fix them (exclude them from the prior when lifting)."
        )


def gradient_seconds(potential: BatchedPotential, u: torch.Tensor) -> float:
    """Seconds of one batched gradient of the potential at ``u``: the fastest of five, after two
    warm-up calls (a guard should not refuse a run because the machine was busy for a moment)."""
    for _ in range(2):
        potential.value_and_grad(u)
    times = []
    for _ in range(5):
        began = time.perf_counter()
        potential.value_and_grad(u)
        times.append(time.perf_counter() - began)
    return min(times)


def refuse_if_too_long_batched(
    potential: BatchedPotential, u: torch.Tensor, iterations: int, max_leapfrog: int, max_hours: float
) -> None:
    """Refuse a ChEES run whose worst case exceeds ``max_hours``: the trajectory length at its cap
    from the first iteration, so that the jittered lengths average ``max_leapfrog / 2`` steps."""
    per_step = gradient_seconds(potential, u)
    worst = per_step * max_leapfrog / 2 * iterations
    if worst > 3600 * max_hours:
        raise ValueError(
            f"ChEES-HMC on this model would take up to {worst / 3600:.1f} hours (D = {potential.dim} latent "
            f"dimensions, N = {len(potential.x)} data points, {len(u)} chains: {per_step * 1e3:.2f} ms per "
            f"batched gradient, {max_leapfrog // 2} per iteration on average at most, {iterations} iterations), over "
            f"max_hours={max_hours}. Fit a guide instead (pb.fit(model, 'fullrank', data)), lift fewer "
            "parameters, or pass fewer chains, warm-up iterations or a smaller max_leapfrog."
        )


def refuse_if_too_big(potential: BatchedPotential, u: torch.Tensor, num_samples: int, max_gib: float) -> None:
    """Refuse a run whose stored draws plus one batched gradient's saved activations exceed ``max_gib``.

    The activations are measured: every tensor autograd saves during one gradient of
    all chains is counted (an upper bound, as views share storage)."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        potential.value_and_grad(u)
    chains, dim = u.shape
    draws = chains * num_samples * dim * u.element_size()
    state = 8 * chains * dim * u.element_size()  # positions, momenta, gradients of the state and the proposal
    total = (draws + saved[0] + state) / 2**30
    if total > max_gib:
        raise ValueError(
            f"pb.mcmc would hold about {total:.1f} GiB ({chains} chains × {num_samples} draws × D = {dim} "
            f"stored: {draws / 2**30:.1f} GiB; one batched gradient over N = {len(potential.x)} points: "
            f"{saved[0] / 2**30:.2f} GiB), over max_gib={max_gib}. Pass fewer chains or draws, or a "
            "larger max_gib if the machine has the memory."
        )
