"""Where every guide starts: the initial value of each latent site."""

from __future__ import annotations

import torch

from pyrobnn._tensors import model_device, model_dtype
from pyrobnn.model import BayesianModel

__all__ = ["INIT_KINDS", "initial_values"]

#: The values ``init=`` takes in every guide.
INIT_KINDS = ("pretrained", "reset", "prior")


def initial_values(model: BayesianModel, init: str) -> dict[str, torch.Tensor]:
    """Starting values per latent site, on the constrained scale.

    ``"pretrained"``: the network's current weights, whatever set them: a user's
    trained weights, or for a freshly built net torch's default initialisation,
    drawn from torch's global RNG when the net was built (not by any ``seed`` here).
    ``"reset"``: torch's default initialisation drawn afresh, each layer's
    ``reset_parameters()`` (:meth:`pyrobnn.BayesianNet.reset_values`), the usual
    Bayes-by-backprop start. ``"prior"``: one draw from the prior. Both draw from
    torch's global RNG, which :func:`pyrobnn.fit` seeds with its ``seed``. The
    likelihood's own latents start at its default under ``"pretrained"`` and
    ``"reset"``.
    """
    sites = model.latent_sites()
    dtype, device = model_dtype(model), model_device(model)
    if init == "pretrained":
        values = {name: site.init.detach() for name, site in sites.items()}
    elif init == "reset":
        values = {name: site.init.detach() for name, site in sites.items()}
        values.update(model.net.reset_values())
    elif init == "prior":
        with torch.no_grad():
            values = {name: site.prior.distribution(site.shape).sample() for name, site in sites.items()}
    else:
        raise ValueError(f"init must be one of {INIT_KINDS}, got {init!r}")
    return {name: value.to(device=device, dtype=dtype).clone() for name, value in values.items()}
