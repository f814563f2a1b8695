"""NUTS on a pyrobnn model: the potential energy over the flat unconstrained vector and one chain.

:func:`pyrobnn.mcmc` drives these with ``kernel="nuts"``: :class:`Potential` is
the batched potential for one chain (JIT-traced where the network allows), :func:`run_chain`
runs Pyro's ``NUTS`` on it, and :func:`refuse_if_too_long` times a few gradients first.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.mcmc import MCMC, NUTS

from pyrobnn.infer._potential import BatchedPotential

__all__ = ["SAMPLER_SECONDS_PER_STEP", "Potential", "refuse_if_too_long", "run_chain", "worst_case_seconds"]

#: Seconds of Pyro's own tree-building work per leapfrog step, measured on a 2-core CPU
#: (a trivial potential, depth-8 trees); added to the measured gradient time in estimates.
SAMPLER_SECONDS_PER_STEP = 3e-4


class Potential(BatchedPotential):
    r"""U(u) on one flat unconstrained vector ``u`` ``(D,)``: the batched potential with one chain."""

    def __call__(self, u: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().__call__(u.unsqueeze(0))[0]

    def compiled(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The potential traced by ``torch.jit.trace`` (the net's Python runs once, not per step)."""
        example = self.initial("pretrained")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trace warnings about Python values: checked below
            try:
                traced = torch.jit.trace(self.__call__, (example,), check_trace=False)
            except RuntimeError:  # torch.func.functional_call refuses tracing: nets off the MLP fast path
                return self
        probe = example + 0.01 * torch.randn_like(example)
        want, got = self(probe), traced(probe)
        if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs()))):
            # the forward pass depends on values in a way a trace cannot record: run it eagerly
            return self
        return traced  # type: ignore[no-any-return]

    def initial(self, init: str, chains: int = 1) -> torch.Tensor:  # type: ignore[override]
        """A starting point ``(D,)`` (see :meth:`BatchedPotential.initial`)."""
        return super().initial(init, 1)[0]


def run_chain(
    energy: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    num_samples: int,
    warmup: int,
    max_tree_depth: int,
    target_accept: float,
    full_mass: bool,
    progress: bool,
) -> tuple[float, torch.Tensor, torch.Tensor, list[int], float]:
    """One NUTS chain: (seconds, unconstrained draws ``(S, D)``, steps per draw, divergent draws, step size)."""
    calls = [0]

    def potential_fn(z: dict[str, torch.Tensor]) -> torch.Tensor:
        calls[0] += 1
        return energy(z["u"])

    steps: list[int] = []
    last = [0]

    def hook(kernel: Any, samples: Any, stage: str, i: int) -> None:
        if stage == "Sample":
            steps.append(calls[0] - last[0])
        last[0] = calls[0]

    kernel = NUTS(
        potential_fn=potential_fn,
        max_tree_depth=max_tree_depth,
        target_accept_prob=target_accept,
        full_mass=full_mass,
    )
    sampler = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=warmup,
        initial_params={"u": start},
        hook_fn=hook,
        disable_progbar=not progress,
    )
    began = time.perf_counter()
    sampler.run()
    seconds = time.perf_counter() - began
    u = sampler.get_samples()["u"]
    divergent = [int(i) for i in sampler.diagnostics()["divergences"]["chain 0"]]
    return seconds, u, torch.tensor(steps, dtype=torch.long), divergent, float(kernel.step_size)


def worst_case_seconds(gradient_seconds: float, max_tree_depth: int, iterations: int, num_chains: int) -> float:
    """Seconds a NUTS run takes if every draw builds the full tree (2^depth − 1 leapfrog steps),
    from the seconds of one gradient of the potential plus ``SAMPLER_SECONDS_PER_STEP``."""
    return (gradient_seconds + SAMPLER_SECONDS_PER_STEP) * (2**max_tree_depth - 1) * iterations * num_chains


def refuse_if_too_long(
    energy: Callable[[torch.Tensor], torch.Tensor],
    potential: Potential,
    x: torch.Tensor,
    iterations: int,
    num_chains: int,
    max_tree_depth: int,
    max_hours: float,
) -> None:
    """Time a few gradients of the potential; refuse when the worst case exceeds ``max_hours``."""
    u = potential.initial("pretrained").requires_grad_(True)
    for _ in range(3):  # warm up the trace and the allocator
        torch.autograd.grad(energy(u), u)
    repeats = 10
    began = time.perf_counter()
    for _ in range(repeats):
        torch.autograd.grad(energy(u), u)
    gradient = (time.perf_counter() - began) / repeats
    per_step = gradient + SAMPLER_SECONDS_PER_STEP
    worst = worst_case_seconds(gradient, max_tree_depth, iterations, num_chains)
    if worst > 3600 * max_hours:
        raise ValueError(
            f"NUTS on this model would take up to {worst / 3600:.1f} hours (D = {potential.dim} latent "
            f"dimensions, N = {len(x)} data points: {per_step * 1e3:.2f} ms per gradient, up to "
            f"{2**max_tree_depth - 1} gradients per draw, {iterations} iterations × {num_chains} chains), "
            f"over max_hours={max_hours}. Fit a guide instead (pb.fit(model, 'fullrank', data) for "
            "D ≤ 5000, 'lowrank' beyond), lift fewer parameters (e.g. only the last layer), or pass "
            "fewer samples, a smaller max_tree_depth or a larger max_hours."
        )
