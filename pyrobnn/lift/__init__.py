"""Lift an ordinary ``nn.Module`` into a Bayesian network: priors on chosen parameters.

The lifted net (:class:`BayesianNet`) holds a *deterministic twin* of the
user's network and one prior per random parameter. Its forward pass draws every
random parameter with ``pyro.sample`` at a site named by the parameter's path
(``"0.weight"``), flattens whatever particle dimensions Pyro put in front, and
runs the twin on all draws at once through
``torch.func.vmap(torch.func.functional_call)``. Sampling happens outside
``vmap``; only deterministic code runs inside it. This is what lets one forward
pass serve any number of vectorized particles. A plain ``nn.Sequential`` MLP runs
its draws as a chain of batched matrix products instead (``pyrobnn/_fastpath.py``),
with the same results, faster.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from torch import nn
from torch.func import functional_call, vmap

from pyrobnn import _globs
from pyrobnn._effects import LinearOverride, linear_override
from pyrobnn._globs import module_key
from pyrobnn.lift._fastpath import MLPPlan
from pyrobnn.priors import Normal, Prior, PriorSpec, resolve

__all__ = ["NORM_LAYERS", "UNBATCHABLE", "BayesianNet", "Site", "SiteTable", "lift", "lift_"]

#: Module types whose parameters stay deterministic unless ``include`` names them.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


#: Module types ``torch.func.vmap`` has no batching rule for (``aten::lstm``, ``aten::gru``,
#: ``aten::rnn_tanh``; pytorch#105982): nets holding one run their particles in a loop.
UNBATCHABLE: tuple[type[nn.Module], ...] = (nn.RNNBase,)


@dataclass(frozen=True)
class Site:
    """One random parameter: its site name (the parameter path), shape and prior."""

    name: str
    shape: torch.Size
    prior: Prior

    @property
    def numel(self) -> int:
        return self.shape.numel()


class SiteTable(Sequence[Site]):
    """The conversion report of :func:`lift`: which parameters became random, with what prior.

    Prints as a table; indexable like a list of :class:`Site` and by site name.
    """

    def __init__(self, sites: Sequence[Site], deterministic: Mapping[str, torch.Size]) -> None:
        self._sites = list(sites)
        self.deterministic = dict(deterministic)

    def __len__(self) -> int:
        return len(self._sites)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for site in self._sites:
                if site.name == key:
                    return site
            raise KeyError(f"no random site {key!r}; sites: {[s.name for s in self._sites]}")
        return self._sites[key]

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites)

    @property
    def names(self) -> list[str]:
        return [site.name for site in self._sites]

    @property
    def num_random(self) -> int:
        """Total number of random scalars (the dimension D of the posterior over weights)."""
        return sum(site.numel for site in self._sites)

    def __str__(self) -> str:
        rows = [(s.name, str(tuple(s.shape)), str(s.numel), _describe(s.prior)) for s in self._sites]
        rows += [(n, str(tuple(shape)), str(shape.numel()), "deterministic") for n, shape in self.deterministic.items()]
        header = ("site", "shape", "size", "prior")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        line = "  ".join
        out = [line(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        out.append(line("-" * w for w in widths))
        out += [line(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        num_det = sum(shape.numel() for shape in self.deterministic.values())
        out.append(f"{self.num_random} random scalars in {len(self)} sites; {num_det} deterministic")
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)


def _describe(prior: Prior) -> str:
    return f"{type(prior).__name__}({prior.extra_repr()})"


def lift(
    net: nn.Module,
    prior: PriorSpec | None = None,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> BayesianNet:
    """Return a Bayesian version of ``net``, leaving ``net`` itself untouched.

    Parameters
    ----------
    net
        Any ``torch.nn.Module`` whose forward takes one tensor and returns one tensor.
    prior
        A pyrobnn prior (default ``pb.priors.Normal(0.0, 1.0)``), a Pyro/torch
        distribution with scalar batch shape (applied i.i.d. to every element),
        a dict ``{glob: prior}`` (the first matching pattern wins), or a callable
        ``(name, param) -> prior`` that may return ``None`` to keep a parameter
        deterministic.
    include, exclude
        Glob patterns over parameter names (``"0.weight"``, ``"**.bias"``;
        ``*`` is one name segment, ``**`` any dotted path). By default every
        parameter is random except those of normalisation layers and frozen
        ones (``requires_grad=False``, e.g. a pretrained backbone). Excluded
        parameters stay deterministic and are trained as point estimates
        (frozen ones stay fixed).

    Returns
    -------
    BayesianNet
        A new module; ``.sites`` is the conversion report.

    Examples
    --------
    >>> import torch, pyrobnn as pb
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> bnet = pb.lift(net, prior=pb.priors.Normal(0.0, 1.0), exclude="**.bias")
    >>> bnet.sites.names
    ['0.weight', '2.weight']
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"lift expects a torch.nn.Module, got {type(net).__name__}")
    return lift_(copy.deepcopy(net), prior, include=include, exclude=exclude)


def lift_(
    net: nn.Module,
    prior: PriorSpec | None = None,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> BayesianNet:
    """In-place :func:`lift`: ``net`` itself becomes the deterministic twin.

    Its random parameters are turned into buffers (holding their current values,
    used by ``init="pretrained"``); do not keep training ``net`` on its own.
    """
    if isinstance(net, BayesianNet):
        raise TypeError("this network is already lifted; lift the original nn.Module")
    return BayesianNet(net, Normal(0.0, 1.0) if prior is None else prior, include, exclude)


class BayesianNet(nn.Module):
    """A network with priors on some of its parameters; build it with :func:`lift`.

    Calling it inside a Pyro model samples every random parameter at a site named
    by its path and returns the network output. Outside any plate the output has
    the shape of the original net's output; under Pyro plates the leading batch
    dimensions of the sampled weights come first, aligned so that the data
    dimension of the output sits at plate dim ``-1``.
    """

    def __init__(
        self,
        net: nn.Module,
        prior: PriorSpec,
        include: str | Sequence[str] | None,
        exclude: str | Sequence[str] | None,
    ) -> None:
        super().__init__()
        params = dict(net.named_parameters())
        random_names = _choose(net, params, include, exclude)
        for name in random_names:
            _check_liftable(name, params[name])
        priors = resolve(prior, {name: params[name].detach() for name in random_names})
        random_names = [name for name in random_names if name in priors]

        # Random parameters become buffers of the twin: their values are kept (for
        # init="pretrained") but they are no longer trained as point estimates.
        # Frozen deterministic parameters become buffers too (Pyro and optimizers
        # would otherwise switch them back on). A tied parameter (one tensor under
        # several names, e.g. tied embeddings) becomes one buffer under all its names,
        # so functional_call still ties them and no alias stays a trained parameter.
        aliases: dict[int, list[str]] = {}
        for name, param in net.named_parameters(remove_duplicate=False):
            aliases.setdefault(id(param), []).append(name)
        for name, param in params.items():
            if name in priors or not param.requires_grad:
                value = param.detach().clone()
                for alias in aliases[id(param)]:
                    _to_buffer(net, alias, value)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
            # Running statistics are updated in place, which vmap cannot batch;
            # such layers then always normalise with the statistics of the batch.
            torch.func.replace_all_batch_norm_modules_(net)

        self.net = net
        self.priors = nn.ModuleDict({module_key(name): priors[name] for name in random_names})
        self._names = list(random_names)
        self._shapes = {name: params[name].shape for name in random_names}
        self._deterministic = {n: p.shape for n, p in params.items() if n not in priors and p.requires_grad}
        self._vmap_ok = not any(isinstance(m, UNBATCHABLE) for m in net.modules())
        self._linear_layers, self._no_local_reason = _local_layers(net, aliases, priors)
        self._mlp = MLPPlan.of(net)  # plain MLPs run their draws as batched products, without vmap
        self._vmap_worked = False  # until the first batched pass succeeds, a vmap error means: loop

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
        module, attr = _owner(self.net, name)
        return getattr(module, attr)  # type: ignore[no-any-return]

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
            if self._mlp is not None:  # as one draw of the batched products, where they apply
                one = {name: value.unsqueeze(0) for name, value in draws.items() if name not in shared}
                out = self._run_mlp(one, 1, x, override)
                if out is not None:
                    return out[0]
            return self._forward({**draws, **shared}, x, override)
        if lead[-1] != 1:
            raise ValueError(
                f"weights were sampled with batch shape {tuple(lead)}; pyrobnn puts the "
                "data plate at dim -1, so the last batch dim must be 1. Run the model "
                "with max_plate_nesting=1 (pb.fit does) or use BayesianNet.run_batched."
            )
        flat = {name: value.reshape((-1, *self._shapes[name])) for name, value in draws.items() if name not in shared}
        out = self._run_batched(flat, lead[:-1].numel(), x, override)
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
        is faster and gives the same result.
        """
        num = self.batch_shape(draws)[0] if draws else 0
        return self._run_batched(dict(draws), num, x, None)

    def _forward(
        self, params: Mapping[str, torch.Tensor], x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor:
        """One functional pass; the layers ``override`` covers run its way."""
        if override is None:
            return functional_call(self.net, dict(params), (x,))  # type: ignore[no-any-return]
        with override.hooks(self.net, x.shape[0]):
            return functional_call(self.net, dict(params), (x,))  # type: ignore[no-any-return]

    def _run_mlp(
        self, draws: Mapping[str, torch.Tensor], num: int, x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor | None:
        """The MLP fast path's ``num`` passes, or ``None`` where it does not apply."""
        if self._mlp is None or not self._mlp.applies(x):
            return None
        return self._mlp.run(draws, num, x, override)

    def _run_batched(
        self, draws: dict[str, torch.Tensor], num: int, x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor:
        """``num`` passes, one per row of ``draws``; the layers ``override`` covers run its way.

        The sites of those layers are not in ``draws``: they take ``override.values``
        in every pass.
        """
        fast = self._run_mlp(draws, num, x, override)
        if fast is not None:
            return fast
        shared = override.values if override is not None else {}

        def one(params: dict[str, torch.Tensor], row: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            return self._forward({**params, **shared}, inputs, override)

        rows = torch.arange(num, device=x.device)  # batched even when every site is shared

        def one_by_one() -> torch.Tensor:
            return torch.stack([one({k: v[i] for k, v in draws.items()}, rows[i], x) for i in range(num)])

        if not self._vmap_ok:
            return one_by_one()
        try:
            with _batchable_attention():
                out = vmap(one, in_dims=(0, 0, None), randomness="different")(draws, rows, x)
        except RuntimeError as err:
            if self._vmap_worked:  # vmap ran this net before: the error is the net's own
                raise
            # vmap cannot batch some code a plain forward pass runs (.item(), Python control
            # flow on tensor values, in-place buffer updates). If the loop fails too, its own
            # error propagates: then it was never vmap's fault.
            looped = one_by_one()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"the network cannot run under torch.func.vmap ({reason}); pyrobnn runs its particles "
                "and predictive draws one at a time instead, which is slower. To vectorize, rewrite the "
                "forward pass without .item(), Python control flow on tensor values or in-place buffer updates.",
                UserWarning,
                stacklevel=3,
            )
            self._vmap_ok = False
            return looped
        self._vmap_worked = True
        return out  # type: ignore[no-any-return]

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


# ---------------------------------------------------------------------- helpers
def _owner(net: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (net.get_submodule(path) if path else net), attr


@contextlib.contextmanager
def _batchable_attention() -> Iterator[None]:
    """Run attention through plain tensor ops that ``vmap`` can batch, for a while.

    ``vmap`` has no batching rule for the fused kernels behind attention: in eval
    mode without gradients ``nn.MultiheadAttention`` (and the Transformer layers)
    call ``aten::_native_multi_head_attention``, and ``F.scaled_dot_product_attention``
    picks a fused kernel (``_scaled_dot_product_flash_attention_for_cpu``). Under
    ``vmap`` both fall back to a slow per-row loop and warn. This turns off the
    attention fast path and restricts SDPA to its math backend; the user's
    settings are restored on exit.
    """
    with contextlib.ExitStack() as stack:
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled"):  # torch >= 2.3
            before = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, before)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # torch < 2.3
            pass
        else:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield


def _local_layers(
    net: nn.Module, aliases: Mapping[int, list[str]], random: Mapping[str, Any]
) -> tuple[dict[str, tuple[str | None, str | None]], str | None]:
    """The ``nn.Linear`` layers local reparameterisation may cover: path -> (weight site, bias site).

    Also returns why there are none, if there are none.
    """
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return {}, "batch normalisation makes the rows of a batch interact"
    tied = {name for names in aliases.values() if len(names) > 1 for name in names}
    layers = {}
    for path, module in net.named_modules():
        if type(module) is not nn.Linear:  # subclasses may use their weights outside forward
            continue
        weight, bias = (f"{path}.{attr}" if path else attr for attr in ("weight", "bias"))
        if weight in tied or bias in tied:
            continue
        pair = (weight if weight in random else None, bias if bias in random else None)
        if pair != (None, None):
            layers[path] = pair
    return layers, None if layers else "no nn.Linear layer (with untied parameters) has a random parameter"


def _to_buffer(net: nn.Module, name: str, value: torch.Tensor) -> None:
    module, attr = _owner(net, name)
    module._parameters.pop(attr, None)  # absent: a module used twice, already converted under its other path
    module.register_buffer(attr, value)


def _choose(
    net: nn.Module,
    params: Mapping[str, torch.Tensor],
    include: str | Sequence[str] | None,
    exclude: str | Sequence[str] | None,
) -> list[str]:
    names = list(params)
    if include is None:
        norm = {
            f"{prefix}.{p}" if prefix else p
            for prefix, module in net.named_modules()
            if isinstance(module, NORM_LAYERS)
            for p, _ in module.named_parameters(recurse=False)
        }
        # Frozen parameters (a pretrained backbone) stay fixed unless named by include.
        chosen = [n for n in names if n not in norm and params[n].requires_grad]
    else:
        chosen = _globs.select(include, names, argument="include")
    if exclude is not None:
        dropped = set(_globs.select(exclude, names, argument="exclude"))
        chosen = [n for n in chosen if n not in dropped]
    return chosen


def _check_liftable(name: str, param: torch.Tensor) -> None:
    if not param.dtype.is_floating_point or param.is_complex():
        raise TypeError(
            f"parameter {name!r} has dtype {param.dtype}; only real floating-point "
            f"parameters can have a prior. Keep it deterministic with exclude=[{name!r}]."
        )
