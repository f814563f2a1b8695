"""Turning a user's ``nn.Module`` into the deterministic twin of a :class:`BayesianNet`.

Which parameters become random (:func:`choose_random`: the ``sites=`` and
``exclude=`` globs, by default all but those of normalisation layers and frozen
ones), whether they can (:func:`check_liftable`), the parameters the twin keeps
as buffers (:func:`make_twin`), and the ``nn.Linear`` layers it may offer to an
effect handler for local reparameterisation (:func:`local_layers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyrobnn import _globs

__all__ = ["NORM_LAYERS", "check_liftable", "choose_random", "local_layers", "make_twin", "owner"]

# Documented (with a `#:` comment) where it is public: pyrobnn/lift/__init__.py.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def choose_random(
    net: nn.Module,
    params: Mapping[str, torch.Tensor],
    sites: str | Sequence[str] | None,
    exclude: str | Sequence[str] | None,
) -> list[str]:
    """The names of the parameters that become random, in the order of ``params``."""
    names = list(params)
    if sites is None:
        norm = {
            f"{prefix}.{p}" if prefix else p
            for prefix, module in net.named_modules()
            if isinstance(module, NORM_LAYERS)
            for p, _ in module.named_parameters(recurse=False)
        }
        # Frozen parameters (a pretrained backbone) stay fixed unless named by sites.
        chosen = [n for n in names if n not in norm and params[n].requires_grad]
    else:
        chosen = _globs.select(sites, names, argument="sites")
    if exclude is not None:
        dropped = set(_globs.select(exclude, names, argument="exclude"))
        chosen = [n for n in chosen if n not in dropped]
    return chosen


def check_liftable(name: str, param: torch.Tensor) -> None:
    """Refuse a parameter no prior can cover (integer or complex)."""
    if not param.dtype.is_floating_point or param.is_complex():
        raise TypeError(
            f"parameter {name!r} has dtype {param.dtype}; only real floating-point "
            f"parameters can have a prior. Keep it deterministic with exclude=[{name!r}]."
        )


def make_twin(net: nn.Module, params: Mapping[str, nn.Parameter], random: Mapping[str, Any]) -> dict[int, list[str]]:
    """Make ``net`` (in place) the deterministic twin of a net whose ``random`` parameters have priors.

    Returns the names each parameter goes by, keyed by the ``id`` of the parameter.
    """
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
        if name in random or not param.requires_grad:
            value = param.detach().clone()
            for alias in aliases[id(param)]:
                _to_buffer(net, alias, value)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        # Running statistics are updated in place, which vmap cannot batch;
        # such layers then always normalise with the statistics of the batch.
        torch.func.replace_all_batch_norm_modules_(net)
    return aliases


def local_layers(
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


def owner(net: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule holding parameter or buffer ``name``, and its attribute name there."""
    path, _, attr = name.rpartition(".")
    return (net.get_submodule(path) if path else net), attr


def _to_buffer(net: nn.Module, name: str, value: torch.Tensor) -> None:
    module, attr = owner(net, name)
    module._parameters.pop(attr, None)  # absent: a module used twice, already converted under its other path
    module.register_buffer(attr, value)
