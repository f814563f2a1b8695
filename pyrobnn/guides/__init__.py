"""Variational families (guides) and :func:`make_guide`, the one way to build them.

Every guide has one interface: ``sample(num_samples, seed=)``, ``median()``,
``quantiles(qs)``, ``log_prob(draws)``, and ``state_dict()`` /
``load_state_dict()`` from ``torch.nn.Module``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyrobnn.guides._base import Guide
from pyrobnn.guides.map import MAPGuide
from pyrobnn.guides.meanfield import MeanFieldGuide
from pyrobnn.model import BayesianModel

__all__ = ["GUIDE_KINDS", "Guide", "MAPGuide", "MeanFieldGuide", "make_guide"]

_FACTORIES: dict[str, Callable[..., Guide]] = {
    "meanfield": MeanFieldGuide,
    "map": MAPGuide,
}

#: Guide kinds accepted by :func:`make_guide` and :func:`pyrobnn.fit`.
GUIDE_KINDS: tuple[str, ...] = tuple(_FACTORIES)


def make_guide(kind: str, model: BayesianModel, **options: Any) -> Guide:
    """Build a guide of the given kind for ``model``.

    Parameters
    ----------
    kind
        ``"meanfield"`` (:class:`MeanFieldGuide`) or ``"map"`` (:class:`MAPGuide`).
    model
        The model whose latent sites the guide covers.
    **options
        Passed to the guide's constructor (e.g. ``init_scale``, ``init``, ``kl``).
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
