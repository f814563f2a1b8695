"""A gold standard to compare guides against: :func:`mcmc`, Pyro's NUTS on the same model.

The sampler is Pyro's ``pyro.infer.NUTS``, driven with a potential
energy written for the model: the network runs once per evaluation as a plain
torch function (JIT-traced), with no Pyro trace around it. Chains run one after
another; their draws come back in a :class:`~pyrobnn.MCMCDraws`, the
source of draws of the :class:`~pyrobnn.Posterior` it returns (``post.source``):
no guide, but draws in chains that declare what they can do (no density, the
sampler's statistics), so ``predict``, :func:`pyrobnn.to_arviz` (with the real
chains), :func:`pyrobnn.compare` and :func:`pyrobnn.save` take the result like
any other posterior. ``MCMCDraws`` is importable from here as before.
"""

from __future__ import annotations

import warnings
from typing import Any

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, eval_mode, model_device, model_dtype
from pyrobnn._warnings import DiagnosticWarning
from pyrobnn.infer._batching import prepare_targets
from pyrobnn.infer._nuts import Potential, refuse_if_too_long, run_chain
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import MCMCDraws, Posterior

__all__ = ["DivergenceWarning", "MCMCDraws", "mcmc"]


class DivergenceWarning(DiagnosticWarning):
    """Some of the sampler's trajectories diverged: the draws may miss part of the posterior."""


#: Latent dimensions up to which the mass matrix is dense by default.
FULL_MASS_MAX_DIM = 200


def mcmc(
    model: BayesianModel,
    data: tuple[Any, Any],
    *,
    num_samples: int = 1000,
    warmup: int = 1000,
    num_chains: int = 4,
    seed: int = 0,
    max_tree_depth: int = 8,
    target_accept: float = 0.8,
    full_mass: bool | None = None,
    init: str = "prior",
    jit: bool = True,
    max_hours: float = 1.0,
    progress: bool = True,
) -> Posterior:
    r"""Sample the posterior of ``model`` with NUTS: the reference the guides approximate.

    Parameters
    ----------
    model
        The :class:`pyrobnn.BayesianModel` the guides fit, priors and likelihood included.
    data
        ``(x, y)``, the whole training set (NUTS uses every point at every step).
    num_samples, warmup
        Draws kept per chain, and warm-up iterations per chain before them (step
        size and mass matrix adaptation; discarded).
    num_chains
        Independent chains, run one after another; with two or more,
        :func:`pyrobnn.to_arviz` reports R̂ across them.
    seed
        Chain ``c`` is seeded with ``seed + c``; the caller's RNG is left unchanged.
    max_tree_depth
        NUTS doubles its trajectory at most this many times: at most
        2^depth − 1 gradient evaluations per draw. Pyro's default of 10 costs 4×
        as much on a network posterior, whose trajectories rarely stop turning
        back early.
    target_accept
        The acceptance probability the step size is adapted to.
    full_mass
        Adapt a dense mass matrix (better for correlated weights, O(D²) per
        step); default: dense up to ``FULL_MASS_MAX_DIM`` (200) latent dimensions.
    init
        ``"prior"`` (each chain starts at its own draw from the prior),
        ``"reset"`` (each chain starts at its own draw of torch's default
        initialisation, every layer's ``reset_parameters()``) or ``"pretrained"``
        (every chain starts at the network's current weights).
    jit
        JIT-trace the potential energy (``torch.jit.trace``): about twice as fast
        for nets on the MLP fast path (an ``nn.Sequential`` of ``Linear`` and
        elementwise layers); other nets run eagerly.
    max_hours
        Refuse runs estimated to take longer than this (see Raises).
    progress
        Show Pyro's progress bar per chain.

    Returns
    -------
    Posterior
        Its source (``post.source``) is an :class:`~pyrobnn.MCMCDraws`
        holding ``num_chains × num_samples`` draws with their divergences, steps
        and step sizes (``kernel="nuts"``).

    Raises
    ------
    ValueError
        When the run would take more than ``max_hours`` at the worst case of
        every trajectory at ``max_tree_depth``, estimated from the measured
        time of one gradient of the potential; the message names the size of
        the model and data and what to do instead.

    Warns
    -----
    DivergenceWarning
        When some draws ended a divergent trajectory (counted in the result's
        ``source.diverging`` and in ArviZ's ``sample_stats``). A diagnostic, not an error:
        one trajectory's floating-point path can decide it.

    Notes
    -----
    The potential energy is U(u) = −log p(y | x, θ) − log p(θ) − log|∂θ/∂u| on the
    unconstrained vector u of all latent sites (θ = T(u), T the bijection to each
    prior's support), the density NUTS samples. The network runs in evaluation
    mode (no dropout). Pyro draws the chains one after another on one process;
    on a machine with more cores, running separate processes with different
    seeds and combining them is the way to parallelise.

    Examples
    --------
    >>> ref = pb.mcmc(model, (x, y), num_samples=1000, warmup=1000, num_chains=4)   # doctest: +SKIP
    >>> pb.compare({"meanfield": fit_mf, "nuts": ref}, x_test, y_test, reference="nuts")  # doctest: +SKIP
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"mcmc needs a pb.BayesianModel, got {type(model).__name__}")
    for name, value in (("num_samples", num_samples), ("num_chains", num_chains), ("max_tree_depth", max_tree_depth)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if init not in ("prior", "reset", "pretrained"):
        raise ValueError(f"init must be 'prior', 'reset' or 'pretrained', got {init!r}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("mcmc needs the whole data as a pair (x, y); NUTS uses every point at every step")
    dtype, device = model_dtype(model), model_device(model)
    x = as_tensor(data[0], "x", dtype=dtype, device=device)
    y = as_tensor(data[1], "y", dtype=dtype, device=device)
    check_pair(x, y)
    potential = Potential(model, x, prepare_targets(model, model.output_shape(x), y))
    draws = MCMCDraws(model, num_chains=num_chains, num_draws=num_samples, kernel="nuts")
    if full_mass is None:
        full_mass = potential.dim <= FULL_MASS_MAX_DIM

    with eval_mode(model), seeded(seed, device):
        energy = potential.compiled() if jit else potential
        refuse_if_too_long(energy, potential, x, warmup + num_samples, num_chains, max_tree_depth, max_hours)
        for c in range(num_chains):
            with seeded(seed + c, device):
                start = potential.initial(init)
                chain_seconds, u, steps, divergent, step_size = run_chain(
                    energy, start, num_samples, warmup, max_tree_depth, target_accept, full_mass, progress
                )
            theta = potential.constrained(u)
            draws.values[c] = draws.layout.join(theta)
            draws.num_steps[c] = steps
            draws.diverging[c, divergent] = True
            draws.step_size[c] = step_size
            draws.seconds[c] = chain_seconds
            if progress:
                _say(c, num_chains, draws)
    total = int(draws.diverging.sum())
    if total:
        warnings.warn(
            f"{total} of {draws.diverging.numel()} NUTS draws diverged: the sampler missed part of the "
            "posterior. Raise target_accept (e.g. 0.95), or check the priors' scales.",
            DivergenceWarning,
            stacklevel=2,
        )
    return Posterior(model, draws)


def _say(c: int, num_chains: int, draws: MCMCDraws) -> None:
    steps = draws.num_steps[c].double()
    print(
        f"pyrobnn.mcmc: chain {c + 1}/{num_chains} took {float(draws.seconds[c]):.1f} s: "
        f"{float(steps.mean()):.0f} leapfrog steps per draw, step size {float(draws.step_size[c]):.2e}, "
        f"{int(draws.diverging[c].sum())} divergent draws"
    )
