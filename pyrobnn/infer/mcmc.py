"""A gold standard to compare guides against: :func:`mcmc`, Pyro's NUTS on the same model.

The sampler is Pyro's ``pyro.infer.NUTS``, driven with a potential
energy written for the model: the network runs once per evaluation as a plain
torch function (JIT-traced), with no Pyro trace around it. Chains run one after
another; their draws come back as a :class:`MCMCDraws`, which stands where a
fitted guide stands, so ``predict``, :func:`pyrobnn.to_arviz` (with the real
chains), :func:`pyrobnn.compare` and :func:`pyrobnn.save` take the result like
any other posterior.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, eval_mode, model_device, model_dtype
from pyrobnn._warnings import DiagnosticWarning
from pyrobnn.guides import Guide
from pyrobnn.infer._batching import prepare_targets
from pyrobnn.infer._nuts import Potential, refuse_if_too_long, run_chain
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Posterior

__all__ = ["DivergenceWarning", "MCMCDraws", "mcmc"]


class DivergenceWarning(DiagnosticWarning):
    """Some of the sampler's trajectories diverged: the draws may miss part of the posterior."""


#: Latent dimensions up to which the mass matrix is dense by default.
FULL_MASS_MAX_DIM = 200


class MCMCDraws(Guide):
    r"""The draws of an MCMC run over every latent site, in the place of a fitted guide.

    Built by :func:`mcmc`. ``sample(n)`` returns ``n`` of the stored draws picked at
    random across chains (without replacement while ``n`` is at most the number
    stored, with replacement beyond), so predictions treat them as what they
    are: draws from the posterior. :attr:`chains` gives them in chain order.

    Attributes
    ----------
    diverging
        ``(num_chains, num_draws)``: draws whose trajectory diverged.
    num_steps
        ``(num_chains, num_draws)``: leapfrog steps (gradient evaluations) per draw.
    step_size
        ``(num_chains,)``: the adapted step size of each chain.
    seconds
        ``(num_chains,)``: wall time of each chain, warm-up included.
    """

    def __init__(self, model: BayesianModel, *, num_chains: int, num_draws: int) -> None:
        super().__init__(model)
        dtype, device = model_dtype(model), model_device(model)
        shape = (num_chains, num_draws)
        self.register_buffer("values", torch.zeros((*shape, self.num_latent), dtype=dtype, device=device))
        self.register_buffer("diverging", torch.zeros(shape, dtype=torch.bool, device=device))
        self.register_buffer("num_steps", torch.zeros(shape, dtype=torch.long, device=device))
        self.register_buffer("step_size", torch.zeros(num_chains, dtype=dtype, device=device))
        self.register_buffer("seconds", torch.zeros(num_chains, dtype=torch.float64, device=device))
        self.values: torch.Tensor
        self.diverging: torch.Tensor
        self.num_steps: torch.Tensor
        self.step_size: torch.Tensor
        self.seconds: torch.Tensor

    @property
    def num_chains(self) -> int:
        return int(self.values.shape[0])

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return int(self.values.shape[1])

    @property
    def chains(self) -> dict[str, torch.Tensor]:
        """The draws per site in chain order, each ``(num_chains, num_draws, *shape)``."""
        return self._unflatten(self.values)

    def chain(self, c: int, num_samples: int | None = None) -> MCMCDraws:
        """Chain ``c`` alone, thinned evenly to ``num_samples`` draws (default: all), order kept."""
        keep = torch.arange(self.num_draws, device=self.values.device)
        if num_samples is not None and num_samples < self.num_draws:
            keep = torch.linspace(0, self.num_draws - 1, num_samples, device=keep.device).round().long()
        one = copy.copy(self)
        one._buffers = {
            **{name: getattr(self, name)[c : c + 1, keep] for name in ("values", "diverging", "num_steps")},
            "step_size": self.step_size[c : c + 1],
            "seconds": self.seconds[c : c + 1],
        }
        return one

    def in_order(self) -> dict[str, torch.Tensor]:
        """Every draw, chains one after another, each ``(num_chains * num_draws, *shape)``."""
        return self._unflatten(self.values.reshape(-1, self.num_latent))

    # ---------------------------------------------------------- interface
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise TypeError(
            "MCMC draws are fixed: there is nothing to fit. Use the posterior that pb.mcmc returned "
            "for predict, to_arviz, compare and save; fit a guide with pb.fit(model, 'meanfield', ...)."
        )

    def _sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        flat = self.values.reshape(-1, self.num_latent)
        total = len(flat)
        if num_samples <= total:
            index = torch.randperm(total, device=flat.device)[:num_samples]
        else:
            index = torch.randint(total, (num_samples,), device=flat.device)
        return self._unflatten(flat[index])

    def median(self) -> dict[str, torch.Tensor]:
        return {name: v.median(0).values for name, v in self.in_order().items()}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        q = torch.as_tensor(qs, dtype=self.values.dtype, device=self.values.device).reshape(-1)
        return {name: torch.quantile(v, q, dim=0) for name, v in self.in_order().items()}

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(
            "MCMC draws have no density q(θ): importance weights and PSIS k̂ do not apply to them "
            "(R̂ and ESS, from pb.to_arviz, are their diagnostics)."
        )

    def param_groups(self) -> list[dict[str, Any]]:
        return []

    def spec(self) -> dict[str, Any]:
        """``{"kind": "mcmc", ...}``: the buffers' sizes. No guide kind: ``MCMCDraws(model, **options)`` rebuilds it."""
        return self._spec(MCMCDraws, "mcmc", {"num_chains": self.num_chains, "num_draws": self.num_draws})

    # ------------------------------------------------------------- helpers
    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        lead = flat.shape[:-1]
        sizes = [site.shape.numel() for site in self._sites.values()]
        return {
            name: part.reshape((*lead, *site.shape))
            for (name, site), part in zip(self._sites.items(), torch.split(flat, sizes, dim=-1), strict=True)
        }

    def _device(self) -> torch.device:
        return self.values.device

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chains={self.num_chains}, draws={self.num_draws}"


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
        Its guide is an :class:`MCMCDraws` holding ``num_chains × num_samples``
        draws with their divergences, steps and step sizes.

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
        ``diverging`` and in ArviZ's ``sample_stats``). A diagnostic, not an error:
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
    draws = MCMCDraws(model, num_chains=num_chains, num_draws=num_samples)
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
            draws.values[c] = torch.cat([value.reshape(num_samples, -1) for value in theta.values()], dim=-1)
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
