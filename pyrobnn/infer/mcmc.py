"""A gold standard to compare guides against: :func:`mcmc`, HMC on the same model.

Two kernels sample the same potential energy (:class:`~pyrobnn.infer._potential.BatchedPotential`):

- ``"chees"`` (the default): ChEES-HMC (Hoffman, Radul and Sountsov 2021), tens of
  chains moved as one batch through the network's particle path, the pass the
  ELBO's particles take, so one forward and backward pass moves every chain; its
  warm-up adapts step size, trajectory length and a diagonal mass matrix from the
  whole ensemble (:mod:`pyrobnn.infer._chees`);
- ``"nuts"``: Pyro's ``pyro.infer.NUTS``, chain after chain, the exactness check.

The draws come back in a :class:`~pyrobnn.MCMCDraws`, the source of draws of the
:class:`~pyrobnn.Posterior` it returns (``post.source``): no guide, but draws in
chains that declare what they can do (no density, the sampler's statistics), so
``predict``, :func:`pyrobnn.to_arviz` (with the real chains), :func:`pyrobnn.compare`
and :func:`pyrobnn.save` take the result like any other posterior. ``MCMCDraws``
is importable from here as before.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, eval_mode, model_device, model_dtype
from pyrobnn._warnings import DiagnosticWarning
from pyrobnn.infer._batching import prepare_targets
from pyrobnn.infer._chees import run_chees
from pyrobnn.infer._mcmc_checks import (
    KERNELS,
    check_arguments,
    refuse_if_too_big,
    refuse_if_too_long_batched,
    resolve_defaults,
)
from pyrobnn.infer._nuts import Potential, refuse_if_too_long, run_chain
from pyrobnn.infer._potential import BatchedPotential
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import MCMCDraws, Posterior

__all__ = ["KERNELS", "DivergenceWarning", "MCMCDraws", "mcmc"]


class DivergenceWarning(DiagnosticWarning):
    """Some of the sampler's trajectories diverged: the draws may miss part of the posterior."""


#: Latent dimensions up to which NUTS's mass matrix is dense by default.
FULL_MASS_MAX_DIM = 200


def mcmc(
    model: BayesianModel,
    data: tuple[Any, Any],
    *,
    kernel: str = "chees",
    num_samples: int | None = None,
    warmup: int | None = None,
    num_chains: int | None = None,
    superchain_size: int | None = None,
    seed: int = 0,
    target_accept: float | None = None,
    max_leapfrog: int = 512,
    max_tree_depth: int = 8,
    full_mass: bool | None = None,
    init: str = "prior",
    jit: bool = True,
    max_hours: float = 1.0,
    max_gib: float = 4.0,
    progress: bool = True,
) -> Posterior:
    r"""Sample the posterior of ``model`` with HMC: the reference the guides approximate.

    Parameters
    ----------
    model
        The :class:`pyrobnn.BayesianModel` the guides fit, priors and likelihood included.
    data
        ``(x, y)``, the whole training set (HMC uses every point at every step).
    kernel
        ``"chees"`` (default): ChEES-HMC, every chain in one batch, adapted from the
        ensemble (docs/concepts.md, "A reference posterior"). ``"nuts"``: Pyro's NUTS,
        chain after chain (slow; the exactness check).
    num_samples, warmup
        Draws kept per chain, and warm-up iterations before them (adaptation;
        discarded). Defaults: 32 and 400 for ChEES (2048 draws from 64 chains),
        1000 and 1000 for NUTS.
    num_chains
        Chains: 64 by default for ChEES (at least 2: it adapts from their spread),
        4 for NUTS. :func:`pyrobnn.to_arviz` reports R̂ across them.
    superchain_size
        ChEES only: consecutive chains that share a starting point (4 by default
        when that leaves at least 2 superchains, else 1), so that
        :func:`pyrobnn.nested_rhat` can tell whether the chains forgot their start.
    seed
        Seeds the run: ChEES draws every chain's start and momenta from one stream
        seeded with ``seed``; NUTS chain ``c`` is seeded with ``seed + c``. The
        caller's RNG is left unchanged.
    target_accept
        The acceptance the step size is adapted to: for ChEES the harmonic mean
        over chains (default 0.651, optimal for HMC; Beskos et al. 2013), for NUTS
        the mean (default 0.8).
    max_leapfrog
        ChEES only: the most leapfrog steps in one iteration (the trajectory
        length adapted by ChEES is capped at ``max_leapfrog`` × step size).
    max_tree_depth
        NUTS only: at most 2^depth − 1 gradient evaluations per draw. Pyro's
        default of 10 costs 4× as much on a network posterior.
    full_mass
        NUTS only: adapt a dense mass matrix (default: up to ``FULL_MASS_MAX_DIM``
        = 200 latent dimensions). ChEES adapts a diagonal one.
    init
        ``"prior"`` (each chain, or superchain, starts at its own draw from the
        prior), ``"reset"`` (its own draw of torch's default initialisation,
        every layer's ``reset_parameters()``) or ``"pretrained"`` (every chain
        starts at the network's current weights).
    jit
        NUTS only: JIT-trace the potential energy (``torch.jit.trace``).
    max_hours
        Refuse runs estimated to take longer than this in the worst case (see Raises).
    max_gib
        ChEES only: refuse runs whose draws and batched gradients would hold more
        memory than this many GiB (see Raises).
    progress
        Show a progress bar (ChEES: one for the whole batch; NUTS: one per chain).

    Returns
    -------
    Posterior
        Its source (``post.source``) is an :class:`~pyrobnn.MCMCDraws` holding
        ``num_chains × num_samples`` draws with their divergences, leapfrog steps
        and step sizes, and the kernel's name.

    Raises
    ------
    ValueError
        Before any sampling: an unknown kernel; fewer than 2 chains for ChEES; a
        ``superchain_size`` that does not divide the chains into at least 2
        superchains; a discrete latent site; NaN in the data; a run whose worst
        case (every trajectory at its longest, timed from a few gradients of
        the potential) exceeds ``max_hours``, or whose memory exceeds ``max_gib``.

    Warns
    -----
    DivergenceWarning
        When some kept draws ended a divergent trajectory (counted in
        ``source.diverging`` and in ArviZ's ``sample_stats``). A diagnostic, not an
        error: one trajectory's floating-point path can decide it.

    Notes
    -----
    Both kernels sample the potential energy U(u) = −log p(y | x, θ) − log p(θ) −
    log|∂θ/∂u| on the unconstrained vector u of all latent sites (θ = T(u), T the
    bijection to each prior's support). The network runs in evaluation mode (no
    dropout). Check convergence with :func:`pyrobnn.nested_rhat` over the
    superchains (many short chains) and ArviZ's R̂ and ESS (``pb.to_arviz``).

    Examples
    --------
    >>> ref = pb.mcmc(model, (x, y))        # doctest: +SKIP
    >>> pb.compare({"meanfield": fit_mf, "reference": ref}, x_test, y_test, reference="reference")  # doctest: +SKIP
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"mcmc needs a pb.BayesianModel, got {type(model).__name__}")
    options = resolve_defaults(
        kernel, num_samples=num_samples, warmup=warmup, num_chains=num_chains, target_accept=target_accept
    )
    chains = options["num_chains"]
    if superchain_size is None:
        superchain_size = 4 if kernel == "chees" and chains % 4 == 0 and chains >= 8 else 1
    options.update(superchain_size=superchain_size, max_tree_depth=max_tree_depth, max_leapfrog=max_leapfrog, init=init)
    check_arguments(model, kernel, options)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("mcmc needs the whole data as a pair (x, y); HMC uses every point at every step")
    dtype, device = model_dtype(model), model_device(model)
    x = as_tensor(data[0], "x", dtype=dtype, device=device)
    y = as_tensor(data[1], "y", dtype=dtype, device=device)
    check_pair(x, y)
    y = prepare_targets(model, model.output_shape(x), y)
    if kernel == "chees":
        draws = _chees(model, x, y, options, seed, max_hours, max_gib, progress)
    else:
        draws = _nuts(model, x, y, options, seed, full_mass, jit, max_hours, progress)
    total = int(draws.diverging.sum())
    if total:
        fix = "raise target_accept (e.g. 0.8)" if kernel == "chees" else "raise target_accept (e.g. 0.95)"
        warnings.warn(
            f"{total} of {draws.diverging.numel()} {kernel.upper() if kernel == 'nuts' else 'ChEES'} draws "
            f"diverged: the sampler missed part of the posterior. To fix it, {fix}, or check the priors' scales.",
            DivergenceWarning,
            stacklevel=2,
        )
    return Posterior(model, draws)


def _chees(
    model: BayesianModel,
    x: torch.Tensor,
    y: torch.Tensor,
    options: dict[str, Any],
    seed: int,
    max_hours: float,
    max_gib: float,
    progress: bool,
) -> MCMCDraws:
    chains, size, num_samples = options["num_chains"], options["superchain_size"], options["num_samples"]
    potential = BatchedPotential(model, x, y)
    draws = MCMCDraws(model, num_chains=chains, num_draws=num_samples, kernel="chees", superchain_size=size)
    with eval_mode(model), seeded(seed, x.device):
        start = potential.initial(options["init"], chains // size).repeat_interleave(size, dim=0)
        refuse_if_too_big(potential, start, num_samples, max_gib)
        iterations = options["warmup"] + num_samples
        refuse_if_too_long_batched(potential, start, iterations, options["max_leapfrog"], max_hours)
        run = run_chees(
            potential,
            start,
            num_samples=num_samples,
            warmup=options["warmup"],
            target_accept=options["target_accept"],
            max_leapfrog=options["max_leapfrog"],
            progress=progress,
        )
    with torch.no_grad():
        draws.values.copy_(draws.layout.join(potential.constrained(run.u)))
        draws.diverging.copy_(run.diverging)
        draws.num_steps.copy_(run.num_steps.to(draws.num_steps.device).expand(chains, -1))
        draws.step_size.fill_(run.step_size)
        draws.seconds.fill_(run.seconds / chains)  # the batch's time, shared: compare sums the chains
    if progress:
        print(
            f"pyrobnn.mcmc: ChEES-HMC, {chains} chains × {num_samples} draws after {options['warmup']} warm-up "
            f"iterations in {run.seconds:.1f} s: {float(run.num_steps.double().mean()):.0f} leapfrog steps per "
            f"draw (warm-up: {run.warmup_steps} in all), step size {run.step_size:.2e}, trajectory length "
            f"{run.trajectory_length:.3g}, {int(run.diverging.sum())} divergent draws, {run.restarted} chains "
            "restarted in warm-up from a stuck state"
        )
    return draws


def _nuts(
    model: BayesianModel,
    x: torch.Tensor,
    y: torch.Tensor,
    options: dict[str, Any],
    seed: int,
    full_mass: bool | None,
    jit: bool,
    max_hours: float,
    progress: bool,
) -> MCMCDraws:
    chains, num_samples, warmup = options["num_chains"], options["num_samples"], options["warmup"]
    potential = Potential(model, x, y)
    draws = MCMCDraws(model, num_chains=chains, num_draws=num_samples, kernel="nuts")
    if full_mass is None:
        full_mass = potential.dim <= FULL_MASS_MAX_DIM
    depth = options["max_tree_depth"]
    with eval_mode(model), seeded(seed, x.device):
        energy = potential.compiled() if jit else potential
        refuse_if_too_long(energy, potential, x, warmup + num_samples, chains, depth, max_hours)
        for c in range(chains):
            with seeded(seed + c, x.device):
                start = potential.initial(options["init"])
                chain_seconds, u, steps, divergent, step_size = run_chain(
                    energy, start, num_samples, warmup, depth, options["target_accept"], full_mass, progress
                )
            draws.values[c] = draws.layout.join(potential.constrained(u))
            draws.num_steps[c] = steps
            draws.diverging[c, divergent] = True
            draws.step_size[c] = step_size
            draws.seconds[c] = chain_seconds
            if progress:
                _say(c, chains, draws)
    return draws


def _say(c: int, num_chains: int, draws: MCMCDraws) -> None:
    steps = draws.num_steps[c].double()
    print(
        f"pyrobnn.mcmc: NUTS chain {c + 1}/{num_chains} took {float(draws.seconds[c]):.1f} s: "
        f"{float(steps.mean()):.0f} leapfrog steps per draw, step size {float(draws.step_size[c]):.2e}, "
        f"{int(draws.diverging[c].sum())} divergent draws"
    )
