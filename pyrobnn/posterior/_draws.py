"""Stored draws of a sampler, in chains, as a source of draws: :class:`MCMCDraws`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pyrobnn._rng import seeded
from pyrobnn._tensors import model_device, model_dtype
from pyrobnn.model import BayesianModel

__all__ = ["MCMCDraws"]


class MCMCDraws(nn.Module):
    r"""The draws of an MCMC run over every latent site: a finite source of draws, in chains.

    Built by :func:`pyrobnn.mcmc`, which fills its buffers; a
    :class:`pyrobnn.Posterior` takes it as its ``source``. ``sample(n)`` returns
    ``n`` of the stored draws picked at random across chains (without
    replacement while ``n`` is at most the number stored, with replacement
    beyond), so predictions treat them as what they are: draws from the
    posterior. :attr:`chains` gives them in chain order. It is no guide: there
    is nothing to fit and no density q(θ), so its capabilities say so
    (``has_density`` false, ``has_chains`` true; see
    :class:`pyrobnn.posterior.DrawSource`).

    Parameters
    ----------
    model
        The model whose latent sites were sampled.
    num_chains, num_draws
        The sizes of the buffers: chains, and draws kept per chain.
    kernel
        The sampler that produced the draws (``"nuts"``, Pyro's NUTS; ``"chees"``,
        batched ChEES-HMC); recorded in :meth:`spec` and deciding which
        :meth:`sample_stats` exist (``tree_depth`` only for NUTS).
    superchain_size
        Consecutive chains that started from one point (a superchain, for
        :func:`pyrobnn.nested_rhat`); 1 when every chain started on its own.

    Attributes
    ----------
    values
        ``(num_chains, num_draws, D)``: the constrained draws, laid out by
        ``layout``.
    layout
        The model's :class:`~pyrobnn.model.LatentLayout`: ``layout.join`` turns
        draws per site into rows of ``values``, ``layout.split`` turns them back.
    kernel
        The sampler's name, as given.
    diverging
        ``(num_chains, num_draws)``: draws whose trajectory diverged.
    num_steps
        ``(num_chains, num_draws)``: leapfrog steps (gradient evaluations) per draw.
    step_size
        ``(num_chains,)``: the adapted step size of each chain.
    seconds
        ``(num_chains,)``: wall time of each chain, warm-up included.
    """

    has_density = False
    point_mass = False
    has_chains = True
    has_members = False

    def __init__(
        self, model: BayesianModel, *, num_chains: int, num_draws: int, kernel: str = "nuts", superchain_size: int = 1
    ) -> None:
        super().__init__()
        if not isinstance(model, BayesianModel):
            raise TypeError(f"MCMCDraws holds draws of a pb.BayesianModel, got {type(model).__name__}")
        if not (isinstance(kernel, str) and kernel and kernel == kernel.lower()):
            raise ValueError(f"kernel must be the sampler's lower-case name, such as 'nuts' or 'chees'; got {kernel!r}")
        if not (isinstance(superchain_size, int) and superchain_size >= 1 and num_chains % superchain_size == 0):
            raise ValueError(f"superchain_size must be a positive divisor of num_chains, got {superchain_size!r}")
        self.kernel = kernel
        self.superchain_size = superchain_size
        self.layout = model.layout()
        dtype, device = model_dtype(model), model_device(model)
        shape = (num_chains, num_draws)
        self.register_buffer("values", torch.zeros((*shape, self.layout.dim), dtype=dtype, device=device))
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
    def site_names(self) -> list[str]:
        return list(self.layout.names)

    @property
    def num_latent(self) -> int:
        """The dimension D of the latent space."""
        return self.layout.dim

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
        return self.layout.split(self.values)

    def chain(self, c: int, num_samples: int | None = None) -> MCMCDraws:
        """Chain ``c`` alone, thinned evenly to ``num_samples`` draws (default: all), order kept."""
        keep = torch.arange(self.num_draws, device=self.values.device)
        if num_samples is not None and num_samples < self.num_draws:
            keep = torch.linspace(0, self.num_draws - 1, num_samples, device=keep.device).round().long()
        one = copy.copy(self)
        one.superchain_size = 1
        one._buffers = {
            **{name: getattr(self, name)[c : c + 1, keep] for name in ("values", "diverging", "num_steps")},
            "step_size": self.step_size[c : c + 1],
            "seconds": self.seconds[c : c + 1],
        }
        return one

    def in_order(self) -> dict[str, torch.Tensor]:
        """Every draw, chains one after another, each ``(num_chains * num_draws, *shape)``."""
        return self.layout.split(self.values.reshape(-1, self.num_latent))

    def sample_stats(self) -> dict[str, torch.Tensor]:
        """Per-draw sampler statistics, each ``(num_chains, num_draws)``, named as ArviZ names them.

        ``diverging``, ``n_steps`` (leapfrog steps), ``step_size`` (the chain's
        adapted step size, repeated per draw) and, for NUTS, ``tree_depth``
        (the depth a tree of ``n_steps`` leapfrog steps reached: ⌈log₂(n + 1)⌉).
        """
        stats = {
            "diverging": self.diverging,
            "n_steps": self.num_steps,
            "step_size": self.step_size.unsqueeze(-1).expand(self.num_chains, self.num_draws),
        }
        if self.kernel == "nuts":
            stats["tree_depth"] = torch.ceil(torch.log2(self.num_steps.double() + 1)).long()
        return stats

    # ------------------------------------------------- the draw interface
    def sample(self, num_samples: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` of the stored draws at random across chains, each ``(num_samples, *shape)``."""
        flat = self.values.reshape(-1, self.num_latent)
        total = len(flat)
        with seeded(seed, flat.device), torch.no_grad():
            if num_samples <= total:
                index = torch.randperm(total, device=flat.device)[:num_samples]
            else:
                index = torch.randint(total, (int(num_samples),), device=flat.device)
        return self.layout.split(flat[index])

    def median(self) -> dict[str, torch.Tensor]:
        return {name: v.median(0).values for name, v in self.in_order().items()}

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        q = torch.as_tensor(qs, dtype=self.values.dtype, device=self.values.device).reshape(-1)
        return {name: torch.quantile(v, q, dim=0) for name, v in self.in_order().items()}

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(
            "MCMC draws have no density q(θ) (has_density is False): importance weights and PSIS k̂ "
            "do not apply to them. R̂ and ESS across chains, from pb.to_arviz, are their diagnostics."
        )

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise TypeError(
            "MCMC draws are fixed: there is nothing to fit, and they are no guide. Use the posterior that "
            "pb.mcmc returned for predict, to_arviz, compare and save; fit a guide with "
            "pb.fit(model, 'meanfield', ...)."
        )

    def spec(self) -> dict[str, Any]:
        """``{"kind": "mcmc", "options": {...}}``: ``MCMCDraws(model, **options)`` rebuilds the buffers."""
        options = {"num_chains": self.num_chains, "num_draws": self.num_draws, "kernel": self.kernel}
        if self.superchain_size != 1:
            options["superchain_size"] = self.superchain_size
        return {"kind": "mcmc", "options": options}

    def extra_repr(self) -> str:
        return (
            f"sites={len(self.layout.names)}, latent_dim={self.num_latent}, kernel={self.kernel!r}, "
            f"chains={self.num_chains}, draws={self.num_draws}"
        )
