"""Which latent sites a guide's ``sites=`` chooses: ``"all"``, ``"last_layer"`` or globs."""

from __future__ import annotations

from collections.abc import Sequence

from pyrobnn import _globs
from pyrobnn.model import BayesianModel

__all__ = ["laplace_block", "select_sites"]


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


def laplace_block(model: BayesianModel, sites: str | Sequence[str]) -> list[str]:
    """The network sites a Laplace approximation's ``sites=`` chooses, refusing those it cannot hold."""
    latents = model.likelihood.latent_priors()
    if sites == "all":
        names = list(model.net.site_names)
    else:
        names = select_sites(model, sites, "sites")
        chosen = [name for name in names if name in latents]
        if chosen:
            raise ValueError(
                f"sites {chosen} belong to the likelihood: a learned noise scale is a hyperparameter of "
                "the Laplace evidence (noise='evidence') or held at its MAP (noise='map'), never a "
                "coordinate of the Gaussian. Choose network sites only."
            )
    if not names:
        raise ValueError("the Laplace block is empty: the network has no random parameters")
    latent = model.latent_sites()
    curved = [name for name in names if not latent[name].on_real_line]
    if curved:
        raise ValueError(
            f"the Laplace block may hold only sites whose prior lives on the real line; {curved} do not. "
            "Leave them out of sites=, or give them a prior on the real line."
        )
    return names
