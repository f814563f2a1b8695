"""Variational families (guides) and :func:`make_guide`, the one way to build them.

Every guide has one interface: ``sample(num_samples, seed=)``, ``median()``,
``quantiles(qs)``, ``log_prob(draws)``, and ``state_dict()`` /
``load_state_dict()`` from ``torch.nn.Module``.

=================  =======================================================  ====================
kind               q(θ)                                                     cost per step
=================  =======================================================  ====================
``"meanfield"``    independent Normals; closed-form KL for Normal priors    O(D)
``"lowrank"``      Normal with covariance W Wᵀ + diag (``rank=``, √D ≤ 25)  O(D · rank)
``"fullrank"``     Normal with a dense covariance (D ≤ 5000)                O(D³)
``"flow"``         normalizing flow on ``sites``, mean-field elsewhere      depends on the sites
``"map"``          a point mass (MAP estimate, for comparison)              O(D)
``"laplace"``      a MAP fit, then N(θ*, P⁻¹) from the curvature there      MAP's, then one pass
=================  =======================================================  ====================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pyrobnn.guides._base import Guide
from pyrobnn.guides._effective import effective_parameters
from pyrobnn.guides._list import GuideList
from pyrobnn.guides.flow import FlowGuide, make_flow_guide
from pyrobnn.guides.fullrank import FullRankGuide
from pyrobnn.guides.laplace import LaplaceGuide
from pyrobnn.guides.lowrank import LowRankGuide
from pyrobnn.guides.map import MAPGuide
from pyrobnn.guides.meanfield import MeanFieldGuide
from pyrobnn.model import BayesianModel

__all__ = [
    "GUIDE_KINDS",
    "FlowGuide",
    "FullRankGuide",
    "Guide",
    "GuideList",
    "LaplaceGuide",
    "LowRankGuide",
    "MAPGuide",
    "MeanFieldGuide",
    "effective_parameters",
    "guide_options",
    "make_guide",
]

_FACTORIES: dict[str, Callable[..., Guide]] = {
    "meanfield": MeanFieldGuide,
    "lowrank": LowRankGuide,
    "fullrank": FullRankGuide,
    "flow": make_flow_guide,
    "map": MAPGuide,
    "laplace": LaplaceGuide,
}

#: Guide kinds accepted by :func:`make_guide` and :func:`pyrobnn.fit`.
GUIDE_KINDS: tuple[str, ...] = tuple(_FACTORIES)

# The class whose constructor takes each kind's options (a factory may pass them on).
_CLASSES: dict[str, type[Guide]] = {
    "meanfield": MeanFieldGuide,
    "lowrank": LowRankGuide,
    "fullrank": FullRankGuide,
    "flow": FlowGuide,
    "map": MAPGuide,
    "laplace": LaplaceGuide,
}


def guide_options(kind: str) -> tuple[str, ...]:
    """The keyword options :func:`make_guide` takes for a guide ``kind``, in the constructor's order.

    >>> pb.guides.guide_options("map")
    ('init',)
    """
    if not isinstance(kind, str) or kind.lower() not in _CLASSES:
        raise ValueError(f"unknown guide kind {kind!r}; valid kinds are {', '.join(GUIDE_KINDS)}")
    params = inspect.signature(_CLASSES[kind.lower()]).parameters
    return tuple(name for name, p in params.items() if name != "model" and p.kind is not p.VAR_KEYWORD)


def make_guide(kind: str, model: BayesianModel, **options: Any) -> Guide:
    """Build a guide of the given kind for ``model``.

    Parameters
    ----------
    kind
        ``"meanfield"``, ``"lowrank"``, ``"fullrank"``, ``"flow"``, ``"map"`` or ``"laplace"``.
    model
        The model whose latent sites the guide covers.
    **options
        Passed to the guide: ``init_scale`` and ``init`` for all but ``"map"``
        (which takes ``init``); ``kl`` for ``"meanfield"`` (and the mean-field
        part of a flow over some of the sites); ``local_reparam`` for
        ``"meanfield"`` (and the same part of a flow); ``rank`` for
        ``"lowrank"`` (round(√D) up to 25 unless told); ``max_dim`` for ``"fullrank"``; ``sites`` (``"all"``,
        ``"last_layer"`` or globs), ``flow``, ``num_layers`` and
        ``hidden_dims`` for ``"flow"`` (see :class:`FlowGuide`); ``sites``, ``curvature``,
        ``structure``, ``prior_precision``, ``noise``, ``predictive``, ``max_dim`` and ``rank`` for
        ``"laplace"`` (see :class:`LaplaceGuide`).

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> model = pb.BayesianModel(pb.lift(net), pb.likelihoods.Gaussian(0.1))
    >>> pb.guides.make_guide("lowrank", model, rank=2).num_latent
    33
    >>> type(pb.guides.make_guide("flow", model, sites="last_layer")).__name__
    'FlowGuide'
    """
    if not isinstance(kind, str) or kind.lower() not in _FACTORIES:
        raise ValueError(f"unknown guide kind {kind!r}; valid kinds are {', '.join(GUIDE_KINDS)}")
    factory = _FACTORIES[kind.lower()]
    try:
        return factory(model, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"guide {kind!r}: {err}") from err
        raise
