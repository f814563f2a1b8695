"""The lifted net, :class:`BayesianNet`: its random sites, their priors, and sampling them.

Its forward pass draws every random parameter with ``pyro.sample`` (outside
``vmap``), offers its plain ``nn.Linear`` layers to effect handlers
(``pyrobnn/_effects.py``), and hands the draws to its :class:`~pyrobnn.lift._run.Twin`,
which runs the deterministic twin of the user's network on all of them at once.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import pyro
import torch
from torch import nn

from pyrobnn._effects import LinearOverride, linear_override
from pyrobnn._globs import module_key
from pyrobnn.lift._convert import check_liftable, choose_random, local_layers, make_twin, owner
from pyrobnn.lift._run import Twin
from pyrobnn.lift._sites import Site, SiteTable
from pyrobnn.priors import Prior, PriorSpec, resolve

__all__ = ["BayesianNet"]


class BayesianNet(nn.Module):
    """A network with priors on some of its parameters; build it with :func:`lift`.

    Calling it inside a Pyro model samples every random parameter at a site named
    by its path and returns the network output. Outside any plate the output has
    the shape of the original net's output; under Pyro plates the leading batch
    dimensions of the sampled weights come first, aligned so that the data
    dimension of the output sits at plate dim ``-1``.

    A plain MLP runs its draws as batched matrix products rather than under
    ``torch.func.vmap``; :attr:`fast_path` says whether it does, and switches it.
    """

    def __init__(
        self,
        net: nn.Module,
        prior: PriorSpec,
        sites: str | Sequence[str] | None,
        exclude: str | Sequence[str] | None,
    ) -> None:
        super().__init__()
        params = dict(net.named_parameters())
        random_names = choose_random(net, params, sites, exclude)
        for name in random_names:
            check_liftable(name, params[name])
        priors = resolve(prior, {name: params[name].detach() for name in random_names})
        random_names = [name for name in random_names if name in priors]
        aliases = make_twin(net, params, priors)

        self.net = net
        self.priors = nn.ModuleDict({module_key(name): priors[name] for name in random_names})
        self._names = list(random_names)
        self._shapes = {name: params[name].shape for name in random_names}
        self._deterministic = {n: p.shape for n, p in params.items() if n not in priors and p.requires_grad}
        self._linear_layers, self._no_local_reason = local_layers(net, aliases, priors)
        self._twin = Twin(net)

    # ------------------------------------------------------------------ report
    @property
    def sites(self) -> SiteTable:
        """The conversion report: each random site with its shape and prior."""
        sites = [Site(name, self._shapes[name], self.prior(name)) for name in self._names]
        return SiteTable(sites, self._deterministic)

    def prior(self, name: str) -> Prior:
        return self.priors[module_key(name)]  # type: ignore[return-value]

    def initial_value(self, name: str) -> torch.Tensor:
        """The twin's value of a random parameter (the user's weights at lift time)."""
        module, attr = owner(self.net, name)
        return getattr(module, attr)  # type: ignore[no-any-return]

    def reset_values(self) -> dict[str, torch.Tensor]:
        """Fresh starting values of the random parameters: torch's default initialisation, redrawn.

        Calls ``reset_parameters()`` of every layer that has one (``nn.Linear``'s
        Kaiming-uniform, and so on) on a copy of the twin, drawing from torch's global
        RNG; the twin and the user's network are left as they are. This is
        ``init="reset"`` of the guides (:func:`pyrobnn.fit` draws it under its ``seed``).

        Raises
        ------
        ValueError
            When a random parameter belongs to no layer with a ``reset_parameters()`` that
            redraws it (a parameter set in a module's own ``__init__``).
        """
        twin = copy.deepcopy(self.net)
        # The random parameters are buffers of the twin; a layer's reset_parameters() may
        # find them through self.parameters() (nn.LSTM does), so make them parameters again.
        tensors = {}
        for name in self._names:
            module, attr = owner(twin, name)
            tensors[name] = getattr(module, attr)
        as_param = {id(t): nn.Parameter(t, requires_grad=False) for t in tensors.values()}
        for name, buffer in list(twin.named_buffers(remove_duplicate=False)):
            if id(buffer) in as_param:  # every alias of a tied parameter: one parameter under all its names
                module, attr = owner(twin, name)
                delattr(module, attr)
                setattr(module, attr, as_param[id(buffer)])
        versions = {name: as_param[id(t)]._version for name, t in tensors.items()}
        with torch.no_grad():
            for module in twin.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        params = {name: as_param[id(t)] for name, t in tensors.items()}
        missed = [name for name, p in params.items() if p._version == versions[name]]
        if missed:
            raise ValueError(
                f"init='reset' redraws each random parameter with its layer's reset_parameters(), but no "
                f"layer's reset_parameters() redraws {missed}. Give the module that owns them a "
                "reset_parameters() method, or start from the prior (init='prior') or from the network's "
                "weights (init='pretrained')."
            )
        return {name: p.detach() for name, p in params.items()}

    # ----------------------------------------------------------------- compute
    @property
    def site_names(self) -> list[str]:
        """Names of the random sites (parameter paths), in sampling order."""
        return list(self._names)

    @property
    def local_sites(self) -> list[str]:
        """Sites a mean-field guide may locally reparameterise (see :class:`pyrobnn.guides.MeanFieldGuide`).

        The weights and biases of plain ``nn.Linear`` layers whose parameters are not
        tied to others, in a network whose rows do not interact (no batch normalisation).
        """
        return [name for pair in self._linear_layers.values() for name in pair if name is not None]

    @property
    def fast_path(self) -> bool:
        """Whether the draws run as a chain of batched matrix products (the MLP fast path).

        It is on by default for an ``nn.Sequential`` of ``nn.Linear`` layers, each
        used once, and elementwise layers (activations, ``nn.Dropout``); such a net
        then runs a 2-D input without forward hooks that way instead of under
        ``torch.func.vmap``, which is faster. Any other net, and any other input,
        runs under ``vmap``. Set it to ``False`` to run every pass under ``vmap``
        (to time or check one path against the other); ``True`` turns it back on.

        Both paths give the same outputs and gradients for the same draws, up to
        floating-point rounding. Under local reparameterisation
        (``MeanFieldGuide(local_reparam=True)``) they draw the same pre-activation
        noise from the same seed, except where ``vmap`` cannot batch the net and its
        draws run one at a time.

        Raises
        ------
        ValueError
            On setting it to ``True`` for a net that is not such an ``nn.Sequential``.

        Examples
        --------
        >>> import torch, pyrobnn as pb
        >>> bnet = pb.lift(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)))
        >>> bnet.fast_path
        True
        >>> bnet.fast_path = False  # every pass under torch.func.vmap
        >>> pb.lift(torch.nn.Linear(3, 1)).fast_path
        False
        """
        return self._twin.mlp is not None

    @fast_path.setter
    def fast_path(self, on: bool) -> None:
        if not self._twin.use_fast_path(on) and on:
            raise ValueError(
                "fast_path=True needs an nn.Sequential of nn.Linear layers, each used once, and elementwise "
                f"layers (activations, nn.Dropout), but this network is {_describe(self.net)}; it runs under "
                "torch.func.vmap. Leave fast_path False."
            )

    @property
    def no_local_reason(self) -> str | None:
        """Why no site can be locally reparameterised, if none can."""
        return self._no_local_reason

    def sample_params(self) -> dict[str, torch.Tensor]:
        """Draw every random parameter from its prior with ``pyro.sample`` (inside a model)."""
        return {name: pyro.sample(name, self.prior(name).distribution(self._shapes[name])) for name in self._names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sample every random parameter (``pyro.sample``) and run the net on ``x``."""
        return self.run(self.sample_params(), x)

    def run(self, draws: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run the net on ``x`` with given parameter values, batched over leading dims.

        Each value in ``draws`` has shape ``lead + param.shape`` with the same
        ``lead`` for all. For ``lead == ()`` this is one ordinary forward pass.
        Otherwise ``lead`` is right-aligned with Pyro's plate dims, its last entry
        (the data plate's dim) must be 1, and the result has shape
        ``lead[:-1] + output.shape``.

        Before running, it offers the layers of :attr:`local_sites` to Pyro's effect
        handlers (``linear_override`` in ``pyrobnn/_effects.py``). A handler that
        takes some over decides how they run, and the values of their sites in
        ``draws`` are ignored: under :class:`pyrobnn.ELBO` with a locally
        reparameterised guide, those layers run at the guide's means and draw their
        pre-activations. Without one, every layer runs its drawn weights.
        """
        if not self._names:
            return self.net(x)  # type: ignore[no-any-return]
        lead = self.batch_shape(draws)
        override: LinearOverride | None = linear_override(self._linear_layers) if self._linear_layers else None
        shared = override.values if override is not None else {}
        if not lead:
            return self._twin.single({name: value for name, value in draws.items() if name not in shared}, x, override)
        if lead[-1] != 1:
            raise ValueError(
                f"weights were sampled with batch shape {tuple(lead)}; pyrobnn puts the "
                "data plate at dim -1, so the last batch dim must be 1. Run the model "
                "with max_plate_nesting=1 (pb.fit does) or use BayesianNet.run_batched."
            )
        flat = {name: value.reshape((-1, *self._shapes[name])) for name, value in draws.items() if name not in shared}
        out = self._twin.batched(flat, lead[:-1].numel(), x, override)
        return out.reshape(lead[:-1] + out.shape[1:])

    def run_batched(self, draws: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run the net once per row of ``draws`` (each ``(P, *param.shape)``): ``(P, *output)``.

        Notes
        -----
        The rows run at once under ``torch.func.vmap``, except for nets holding a
        layer that ``vmap`` cannot batch (:data:`UNBATCHABLE`: LSTM, GRU and RNN
        have no batching rule, pytorch#105982) or code it cannot trace: those
        run one row at a time, the latter found on the first call, with a warning.
        An ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations
        on a 2-D input runs as a chain of batched matrix products instead, which
        is faster and gives the same result (unless :attr:`fast_path` is off).
        """
        num = self.batch_shape(draws)[0] if draws else 0
        return self._twin.batched(dict(draws), num, x, None)

    def batch_shape(self, draws: Mapping[str, torch.Tensor]) -> torch.Size:
        """The leading (batch) shape shared by all draws, checked against the parameter shapes."""
        lead = None
        for name in self._names:
            if name not in draws:
                raise KeyError(f"no value for random site {name!r}")
            value = draws[name]
            shape = self._shapes[name]
            this = value.shape[: value.dim() - len(shape)]
            if value.shape[value.dim() - len(shape) :] != shape:
                raise ValueError(
                    f"value for site {name!r} has shape {tuple(value.shape)}, which does not "
                    f"end in the parameter shape {tuple(shape)}"
                )
            if lead is None:
                lead = this
            elif this != lead:
                raise ValueError(
                    f"all sites need the same batch shape; {name!r} has {tuple(this)}, others {tuple(lead)}"
                )
        return torch.Size(lead or ())

    def extra_repr(self) -> str:
        return f"random sites: {len(self._names)} ({self.sites.num_random} scalars)"


def _describe(net: nn.Module) -> str:
    """What a network is, for an error message: its type, and for an ``nn.Sequential`` its layers' types."""
    if type(net) is nn.Sequential:
        return "an nn.Sequential of " + ", ".join(type(m).__name__ for m in net._modules.values() if m is not None)
    return f"a {type(net).__name__}"
