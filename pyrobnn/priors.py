"""Priors over network parameters.

A prior here is a small :class:`torch.nn.Module` whose parameters are *buffers*,
so ``.to(device)`` and ``.to(dtype)`` move it with the network (a distribution
object built once would stay behind). Each prior describes one scalar
distribution applied independently to every element of a parameter tensor;
:meth:`Prior.distribution` turns it into a single event over the whole tensor.

:func:`resolve` turns whatever the user passed to :func:`pyrobnn.lift` (a
pyrobnn prior, a Pyro/torch distribution, a ``{glob: prior}`` dict or a
callable) into one bound prior per parameter.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn
from torch.distributions import Distribution

from pyrobnn import _globs

__all__ = [
    "DistributionPrior",
    "FanInNormal",
    "HalfNormal",
    "Laplace",
    "LogNormal",
    "Normal",
    "Prior",
    "PriorSpec",
    "StudentT",
    "as_prior",
    "resolve",
]


class Prior(nn.Module):
    """Base class: an i.i.d. scalar prior applied to every element of a parameter.

    A subclass implements :meth:`base` from its own buffers (or parameters) alone,
    so that :meth:`distribution` may reuse what it built until one of them changes.
    """

    def base(self) -> Distribution:
        """The scalar (or parameter-shaped) distribution, on the buffers' device."""
        raise NotImplementedError

    def bind(self, name: str, param: torch.Tensor) -> Prior:
        """The prior for one particular parameter (a copy, so sites never share buffers)."""
        return copy.deepcopy(self)

    def distribution(self, shape: torch.Size) -> dist.TorchDistribution:
        """One event over a whole tensor of ``shape`` (the form a weight site needs).

        Built once and reused while the prior's tensors are the same objects with
        the same contents (a model builds it at every step); never reused when one
        of them requires grad, or when the prior has submodules.
        """
        shape = torch.Size(shape)
        tensors = (*self._buffers.values(), *self._parameters.values())
        versions = tuple(t._version for t in tensors if t is not None)
        state = (shape, tensors, versions, Distribution._validate_args)  # validation is fixed at construction
        cached = self.__dict__.get("_cached_distribution")
        if cached is not None and _same_state(cached[0], state):
            return cached[1]  # type: ignore[no-any-return]
        built = self.base().expand(shape).to_event(len(shape))  # type: ignore[attr-defined]
        if not self._modules and not any(t is not None and t.requires_grad for t in tensors):
            self.__dict__["_cached_distribution"] = (state, built)
        return built  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_cached_distribution", None)  # an attribute base() may read has changed
        super().__setattr__(name, value)

    @property
    def support(self) -> Any:
        return self.base().support

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - not callable
        raise TypeError(f"{type(self).__name__} is a prior; call .distribution(shape)")


def _same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Same shape, the very same tensors (not merely equal ones: a moved prior has new ones), same versions."""
    same_tensors = len(a[1]) == len(b[1]) and all(x is y for x, y in zip(a[1], b[1], strict=True))
    return bool(a[0] == b[0] and same_tensors and a[2:] == b[2:])


def _buffer(value: float | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()


class Normal(Prior):
    """Normal(loc, scale) on every element. Pairs with a Normal guide for a closed-form KL."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"Normal prior needs scale > 0, got scale={scale}")
        self.register_buffer("loc", _buffer(loc))
        self.register_buffer("scale", _buffer(scale))

    def base(self) -> Distribution:
        return dist.Normal(self.loc, self.scale)

    def extra_repr(self) -> str:
        return f"loc={self.loc.item():g}, scale={self.scale.item():g}"


class Laplace(Prior):
    """Laplace(loc, scale) on every element: a sparsity-favouring prior (Monte Carlo KL)."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"Laplace prior needs scale > 0, got scale={scale}")
        self.register_buffer("loc", _buffer(loc))
        self.register_buffer("scale", _buffer(scale))

    def base(self) -> Distribution:
        return dist.Laplace(self.loc, self.scale)

    def extra_repr(self) -> str:
        return f"loc={self.loc.item():g}, scale={self.scale.item():g}"


class StudentT(Prior):
    """Student-t(df, loc, scale) on every element: heavy tails (Monte Carlo KL)."""

    df: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, df: float = 3.0, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if not (df > 0 and scale > 0):
            raise ValueError(f"StudentT prior needs df > 0 and scale > 0, got df={df}, scale={scale}")
        self.register_buffer("df", _buffer(df))
        self.register_buffer("loc", _buffer(loc))
        self.register_buffer("scale", _buffer(scale))

    def base(self) -> Distribution:
        return dist.StudentT(self.df, self.loc, self.scale)

    def extra_repr(self) -> str:
        return f"df={self.df.item():g}, loc={self.loc.item():g}, scale={self.scale.item():g}"


class HalfNormal(Prior):
    """HalfNormal(scale): a weakly informative prior for positive quantities (noise scales)."""

    scale: torch.Tensor

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"HalfNormal prior needs scale > 0, got scale={scale}")
        self.register_buffer("scale", _buffer(scale))

    def base(self) -> Distribution:
        return dist.HalfNormal(self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale.item():g}"


class LogNormal(Prior):
    """LogNormal(loc, scale): a prior for positive quantities, Normal on the log scale."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"LogNormal prior needs scale > 0, got scale={scale}")
        self.register_buffer("loc", _buffer(loc))
        self.register_buffer("scale", _buffer(scale))

    def base(self) -> Distribution:
        return dist.LogNormal(self.loc, self.scale)

    def extra_repr(self) -> str:
        return f"loc={self.loc.item():g}, scale={self.scale.item():g}"


class FanInNormal(Prior):
    """Normal(0, gain / sqrt(fan_in)), the prior analogue of LeCun/He initialisation.

    ``fan_in`` is the product of a parameter's trailing dimensions (``in_features``
    for a Linear weight, ``in_channels * kernel`` for a convolution). Parameters
    with fewer than two dimensions (biases, embeddings' rows are 2-D) get
    ``Normal(0, gain)``. With ``gain=1`` the pre-activations of a layer drawn from
    the prior keep the variance of its inputs, so prior predictive functions of
    deep nets neither explode nor vanish.
    """

    gain: torch.Tensor

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        if not gain > 0:
            raise ValueError(f"FanInNormal prior needs gain > 0, got gain={gain}")
        self.register_buffer("gain", _buffer(gain))

    def base(self) -> Distribution:
        return dist.Normal(torch.zeros_like(self.gain), self.gain)

    def bind(self, name: str, param: torch.Tensor) -> Prior:
        gain = self.gain.item()
        fan_in = math.prod(param.shape[1:]) if param.dim() >= 2 else 1
        return Normal(0.0, gain / math.sqrt(max(fan_in, 1)))

    def extra_repr(self) -> str:
        return f"gain={self.gain.item():g}"


class DistributionPrior(Prior):
    """A Pyro or torch distribution turned into a device-following prior.

    The distribution's tensor parameters are copied into buffers and the
    distribution is rebuilt from them on each use. Its batch shape must be
    ``()`` (applied i.i.d. to every element) or, for a prior returned by a
    callable for one parameter, equal to that parameter's shape.
    """

    def __init__(self, distribution: Distribution) -> None:
        super().__init__()
        if distribution.event_shape != torch.Size():
            raise ValueError(
                f"a prior must be a scalar distribution applied to each weight, got "
                f"{distribution} with event_shape {tuple(distribution.event_shape)}. "
                "Pass the scalar distribution (pyrobnn makes the whole tensor one event)."
            )
        self._cls = _pyro_class(distribution)
        self._names = []
        params = _read_parameters(distribution)
        for name, value in params.items():
            self.register_buffer(name, value.detach().clone())
            self._names.append(name)

    def base(self) -> Distribution:
        return self._cls(**{name: getattr(self, name) for name in self._names})

    def extra_repr(self) -> str:
        parts = []
        for name in self._names:
            value = getattr(self, name)
            parts.append(f"{name}={value.item():g}" if value.numel() == 1 else f"{name}=<{tuple(value.shape)}>")
        return f"{self._cls.__name__}, " + ", ".join(parts)


def _pyro_class(d: Distribution) -> type[Distribution]:
    """The Pyro class to rebuild ``d`` with: a torch distribution lacks ``.to_event``."""
    cls = type(d)
    if isinstance(d, TorchDistributionMixin):
        return cls
    wrapper = getattr(dist, cls.__name__, None)
    if isinstance(wrapper, type) and issubclass(wrapper, cls):
        return wrapper  # Pyro's subclass of the torch class, e.g. dist.Laplace for torch's Laplace
    raise TypeError(
        f"{cls.__name__} is a torch distribution with no Pyro counterpart, so pyrobnn cannot "
        "sample it at a Pyro site. Use a pyro.distributions class, a pyrobnn prior "
        "(pb.priors.Normal, Laplace, StudentT, ...) or a subclass of pb.priors.Prior."
    )


def _read_parameters(d: Distribution) -> dict[str, torch.Tensor]:
    """The constructor arguments of a distribution, checked by rebuilding it."""
    cls: Callable[..., Distribution] = type(d)
    candidates = [name for name in d.arg_constraints if name in d.__dict__]
    if not candidates:
        candidates = list(d.arg_constraints)
    try:
        params = {name: torch.as_tensor(getattr(d, name)) for name in candidates}
        rebuilt = cls(**params)
        probe = d.sample()
        same = torch.allclose(rebuilt.log_prob(probe), d.log_prob(probe), equal_nan=True)
    except Exception as err:  # any failure means we cannot rebuild it
        raise TypeError(
            f"pyrobnn cannot read the parameters of {d!r} to move it between devices. "
            "Use a pyrobnn prior (pb.priors.Normal, Laplace, StudentT, FanInNormal, ...) "
            "or a subclass of pb.priors.Prior."
        ) from err
    if not same:
        raise TypeError(
            f"rebuilding {d!r} from {candidates} changed its density; "
            "use a pyrobnn prior or a subclass of pb.priors.Prior instead."
        )
    return params


#: What :func:`pyrobnn.lift` accepts as ``prior``: a pyrobnn prior or a Pyro/torch distribution
#: (applied i.i.d. to every element), a ``{glob: prior}`` dict, or a callable ``(name, param) -> prior``
#: that may return ``None`` to keep a parameter deterministic.
PriorSpec = (
    Prior
    | Distribution
    | Mapping[str, Prior | Distribution]
    | Callable[[str, torch.Tensor], Prior | Distribution | None]
)


def as_prior(value: Prior | Distribution, *, what: str) -> Prior:
    """A pyrobnn prior from a prior or a distribution; anything else is an error."""
    if isinstance(value, Prior):
        return value
    if isinstance(value, Distribution):
        return DistributionPrior(value)
    raise TypeError(
        f"{what} must be a pyrobnn prior (e.g. pb.priors.Normal(0.0, 1.0)) or a "
        f"Pyro/torch distribution, got {type(value).__name__}: {value!r}"
    )


def resolve(spec: PriorSpec, params: Mapping[str, torch.Tensor]) -> dict[str, Prior]:
    """Bind a prior specification to each named parameter.

    Returns a new :class:`Prior` per parameter. A callable may return ``None`` to
    keep a parameter deterministic; such parameters are left out of the result.
    """
    bound: dict[str, Prior] = {}
    if isinstance(spec, Mapping):
        patterns = list(spec)
        for pattern in patterns:  # every pattern must be used
            _globs.select(pattern, params, argument="prior")
        for name, param in params.items():
            first = next((p for p in patterns if _globs.match(p, name)), None)
            if first is None:
                raise ValueError(
                    f"no prior pattern matches parameter {name!r} (patterns: {patterns}). "
                    "Add a catch-all such as {'**': pb.priors.Normal(0.0, 1.0)} or "
                    f"exclude it with exclude=[{name!r}]."
                )
            prior = as_prior(spec[first], what=f"prior[{first!r}]")
            bound[name] = _check_bound(prior.bind(name, param), name, param)
        return bound
    if isinstance(spec, (Prior, Distribution)):
        prior = as_prior(spec, what="prior")
        if prior.base().batch_shape != torch.Size():
            raise ValueError(
                f"a prior shared by all parameters must have scalar batch shape, got "
                f"{tuple(prior.base().batch_shape)}; use a callable (name, param) -> prior "
                "for parameter-shaped priors."
            )
        return {name: _check_bound(prior.bind(name, p), name, p) for name, p in params.items()}
    if callable(spec):
        for name, param in params.items():
            value = spec(name, param)
            if value is None:
                continue
            prior = as_prior(value, what=f"prior returned for {name!r}")
            bound[name] = _check_bound(prior.bind(name, param), name, param)
        return bound
    raise TypeError(
        "prior must be a pyrobnn prior, a Pyro/torch distribution, a dict "
        "{glob: prior} or a callable (name, param) -> prior; got "
        f"{type(spec).__name__}"
    )


def _check_bound(prior: Prior, name: str, param: torch.Tensor) -> Prior:
    batch = prior.base().batch_shape
    if batch != torch.Size() and batch != param.shape:
        raise ValueError(
            f"the prior for {name!r} has batch shape {tuple(batch)}, but the parameter "
            f"has shape {tuple(param.shape)}; use a scalar prior or one of that shape."
        )
    support = prior.support
    # A mixture's support wraps its components' (MixtureSameFamilyConstraint(Real())).
    if getattr(support, "base_constraint", support) is not dist.constraints.real:
        raise ValueError(
            f"the prior for {name!r} has support {support}, but a network weight is "
            "real-valued; choose a prior over the real line (Normal, Laplace, StudentT)."
        )
    return prior
