"""Which latent sites a guide's ``sites=`` chooses: ``"all"``, ``"last_layer"`` or globs."""

from __future__ import annotations

from collections.abc import Sequence

from pyrobnn import _globs
from pyrobnn.model import BayesianModel

__all__ = ["select_sites"]


def select_sites(model: BayesianModel, sites: str | Sequence[str], argument: str) -> list[str]:
    """The latent sites ``sites`` chooses, in the model's order."""
    names = list(model.latent_sites())
    if sites == "all":
        return names
    if sites == "last_layer":
        net_sites = model.net.site_names
        if not net_sites:
            raise ValueError(f"{argument}='last_layer': the network has no random parameters")
        last = net_sites[-1].rpartition(".")[0]
        return [n for n in net_sites if n.rpartition(".")[0] == last]
    return _globs.select(sites, names, argument=argument)
