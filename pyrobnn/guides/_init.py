"""Where every guide starts: the initial value of each latent site."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import torch

from pyrobnn._tensors import model_device, model_dtype
from pyrobnn.model import BayesianModel, LatentSite

__all__ = ["INIT_KINDS", "Init", "initial_values"]

#: The values ``init=`` takes in every guide, besides starting values given site by site.
INIT_KINDS = ("pretrained", "reset", "prior")
#: ``init=``: one of :data:`INIT_KINDS`, or ``{site: value}`` on the constrained scale.
Init: TypeAlias = str | Mapping[str, torch.Tensor]


def initial_values(model: BayesianModel, init: Init) -> dict[str, torch.Tensor]:
    """Starting values per latent site, on the constrained scale.

    ``"pretrained"``: the network's current weights, whatever set them: a user's
    trained weights, or for a freshly built net torch's default initialisation,
    drawn from torch's global RNG when the net was built (not by any ``seed`` here).
    ``"reset"``: torch's default initialisation drawn afresh, each layer's
    ``reset_parameters()`` (:meth:`pyrobnn.BayesianNet.reset_values`), the usual
    Bayes-by-backprop start. ``"prior"``: one draw from the prior. Both draw from
    torch's global RNG, which :func:`pyrobnn.fit` seeds with its ``seed``. The
    likelihood's own latents start at its default under ``"pretrained"`` and
    ``"reset"``. A mapping ``{site: value}`` gives every latent site's start
    itself, on the constrained scale, e.g. a MAP fit's ``guide.median()``.
    """
    sites = model.latent_sites()
    dtype, device = model_dtype(model), model_device(model)
    if isinstance(init, Mapping):
        values = _given_values(sites, init)
    elif init == "pretrained":
        values = {name: site.init.detach() for name, site in sites.items()}
    elif init == "reset":
        values = {name: site.init.detach() for name, site in sites.items()}
        values.update(model.net.reset_values())
    elif init == "prior":
        with torch.no_grad():
            values = {name: site.prior.distribution(site.shape).sample() for name, site in sites.items()}
    else:
        raise ValueError(f"init must be one of {INIT_KINDS} or {{site: value}}, got {init!r}")
    return {name: value.to(device=device, dtype=dtype).clone() for name, value in values.items()}


def _given_values(sites: Mapping[str, LatentSite], init: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Starting values given site by site: every latent site, each of its shape, finite."""
    missing, unknown = [n for n in sites if n not in init], [n for n in init if n not in sites]
    if missing or unknown:
        raise ValueError(
            f"init as {{site: value}} must give every latent site and no other: missing {missing}, unknown "
            f"{unknown}; the latent sites are {list(sites)} (a fit's guide.median() of the same model has them)"
        )
    values = {}
    for name, site in sites.items():
        value = torch.as_tensor(init[name]).detach()
        shape = tuple(site.shape)
        if tuple(value.shape) != shape:
            raise ValueError(f"init[{name!r}] has shape {tuple(value.shape)}; the site's shape is {shape}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"init[{name!r}] holds a NaN or an infinity; starting values must be finite")
        support = site.prior.distribution(site.shape).support
        if support is not None and not bool(support.check(value.to(site.init.dtype)).all()):
            raise ValueError(
                f"init[{name!r}] lies outside the site's support ({support}); values are on the constrained "
                "scale, as a guide's median() gives them"
            )
        values[name] = value
    return values
