"""What a source of draws declares: :class:`DrawSource`, and :class:`ChainSource` for draws in chains.

A :class:`pyrobnn.Posterior` holds a model and a source of draws of its latent
sites: a fitted guide (q(θ), which can be sampled afresh and has a density) or
the stored draws of a sampler (a finite set, in chains, with no density). The
stages that use a posterior (prediction, the export, the diagnostics, the
comparison table, checkpoints) ask the source what it can do through the flags
below, never what type it is: NumPyro's ``Predictive(guide=...)`` beside
``Predictive(posterior_samples=...)``, two sources of draws, neither posing as
the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ChainSource", "DrawSource", "MemberSource"]


@runtime_checkable
class DrawSource(Protocol):
    """A source of draws of every latent site of a model, and what it can do.

    Every pyrobnn guide is one (:class:`pyrobnn.guides.Guide` declares the
    flags), and so is :class:`pyrobnn.MCMCDraws`. A source is a
    :class:`torch.nn.Module` whose state (``state_dict``) and :meth:`spec`
    are what :func:`pyrobnn.save` writes.

    Attributes
    ----------
    has_density
        Whether :meth:`log_prob` gives log q(θ): then importance weights
        log p(θ, y) − log q(θ), PSIS k̂ and the export's ``log_q`` apply.
        Without it (stored draws) ``log_prob`` raises, and R̂ and ESS across
        chains are the diagnostics.
    point_mass
        Whether the draws are made of point masses: every draw the same θ̂ (a
        MAP guide), or one of K such θ̂ (an ensemble of MAP fits). Measures
        built on the spread of the draws (PSIS-LOO, k̂, an ELBO as a bound) do
        not apply.
    has_chains
        Whether the draws come in chains, in the order a sampler produced them:
        the source is then a :class:`ChainSource`, and the export hands ArviZ
        the chains as they are, with the sampler's ``sample_stats``.

    A source that mixes several sources (an ensemble of fits) also sets
    ``has_members`` true and is then a :class:`MemberSource`; the attribute is
    optional, so sources written before ensembles existed still qualify, and
    the stages read it as ``getattr(source, "has_members", False)``.

    A source whose draws belong to a linearised network (the Laplace
    approximation's, :class:`pyrobnn.guides.LaplaceGuide`) sets ``linearized``
    true and has ``linearized_outputs(model, draws, x)``, the outputs
    f(x, θ*) + J(x)(θ − θ*); predictions, and every stage built on them, then
    use those instead of the network at θ. The attribute is optional too
    (read as ``getattr(source, "linearized", False)``).
    """

    has_density: bool
    point_mass: bool
    has_chains: bool

    @property
    def site_names(self) -> list[str]:
        """The latent sites, in the model's order."""
        ...

    @property
    def num_latent(self) -> int:
        """The dimension D of the latent space."""
        ...

    def sample(self, num_samples: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` draws per site, each ``(num_samples, *shape)``, constrained."""
        ...

    def median(self) -> dict[str, torch.Tensor]:
        """The median of each site's marginal."""
        ...

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Marginal quantiles per site, each ``(len(qs), *shape)``."""
        ...

    def log_prob(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """log q(θ) per draw, ``(num_samples,)``; raises unless :attr:`has_density`."""
        ...

    def spec(self) -> dict[str, Any]:
        """``{"kind": ..., "options": {...}}``, plain data: what rebuilds the source's structure."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class ChainSource(DrawSource, Protocol):
    """A :class:`DrawSource` whose draws come in chains (``has_chains`` is true): a sampler's output.

    Attributes
    ----------
    seconds
        ``(num_chains,)``: the wall time of each chain, warm-up included.
    """

    seconds: torch.Tensor

    @property
    def num_chains(self) -> int: ...

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        ...

    def chain(self, c: int, num_samples: int | None = None) -> ChainSource:
        """Chain ``c`` alone (a source of one chain), thinned evenly to ``num_samples`` draws, order kept."""
        ...

    def in_order(self) -> dict[str, torch.Tensor]:
        """Every draw, chains one after another, each ``(num_chains * num_draws, *shape)``."""
        ...

    def sample_stats(self) -> dict[str, torch.Tensor]:
        """Per-draw sampler statistics, each ``(num_chains, num_draws)``, named as ArviZ names them.

        ``diverging`` (bool), ``n_steps`` (leapfrog steps), ``step_size``, and
        ``tree_depth`` where the kernel builds trees (NUTS).
        """
        ...


@runtime_checkable
class MemberSource(DrawSource, Protocol):
    """A :class:`DrawSource` that mixes member sources (``has_members`` is true): an ensemble.

    Attributes
    ----------
    weights
        ``(num_members,)``: each member's share of the draws, summing to one.
    weights_from
        Where the weights came from: ``"equal"``, ``"loo"``, ``"holdout"`` or ``"user"``.
    """

    has_members: bool
    weights: torch.Tensor
    weights_from: str

    @property
    def sources(self) -> list[DrawSource]:
        """The members, each a source of draws of the same model."""
        ...

    @property
    def num_members(self) -> int: ...

    @property
    def equal_weights(self) -> bool:
        """Whether every member weighs 1/K."""
        ...
