"""Where every guide starts: the initial value of each latent site."""

from __future__ import annotations

import torch

from pyrobnn._tensors import model_device, model_dtype
from pyrobnn.model import BayesianModel

__all__ = ["INIT_KINDS", "initial_values"]

#: The values ``init=`` takes in every guide.
INIT_KINDS = ("pretrained", "prior")


def initial_values(model: BayesianModel, init: str) -> dict[str, torch.Tensor]:
    """Starting values per latent site, on the constrained scale.

    ``"pretrained"``: the network's current weights (for a freshly built net,
    torch's default initialisation, the usual Bayes-by-backprop start) and the
    likelihood's default for its own latents. ``"prior"``: one draw from the prior.
    """
    sites = model.latent_sites()
    dtype, device = model_dtype(model), model_device(model)
    if init == "pretrained":
        values = {name: site.init.detach() for name, site in sites.items()}
    elif init == "prior":
        with torch.no_grad():
            values = {name: site.prior.distribution(site.shape).sample() for name, site in sites.items()}
    else:
        raise ValueError(f"init must be one of {INIT_KINDS}, got {init!r}")
    return {name: value.to(device=device, dtype=dtype).clone() for name, value in values.items()}
