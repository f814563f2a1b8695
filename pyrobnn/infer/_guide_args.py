"""The guide a fit trains, from :func:`pyrobnn.fit`'s arguments: built from a kind string and
its options (a keyword neither fit's nor the guide's is refused, with the nearest name), or
checked as given; and how messages name it."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pyrobnn.guides import Guide, guide_options, make_guide
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import DrawSource

__all__ = ["build_guide", "check_options", "describe_guide"]


def build_guide(model: BayesianModel, guide: Guide | str, options: Mapping[str, Any], *, own: Sequence[str]) -> Guide:
    """The guide a fit trains: built from a kind string with ``options``, or checked as given."""
    if isinstance(guide, str):
        check_options(guide, options, own)
        guide = make_guide(guide, model, **options)
    elif options:
        raise TypeError(f"guide options {sorted(options)} only apply when guide is a kind string")
    if isinstance(guide, DrawSource) and guide.has_chains:
        raise TypeError(
            f"{type(guide).__name__} holds a sampler's stored draws and has no parameters to fit. Draws "
            "from pb.mcmc are a finished posterior: pass pb.mcmc's result to predict, compare, to_arviz "
            "or save as it is. To fit, start from a guide kind: pb.fit(model, 'fullrank', data)."
        )
    if not isinstance(guide, Guide):
        raise TypeError(f"guide must be a pyrobnn guide or a kind string, got {type(guide).__name__}")
    if not any(p.requires_grad for p in guide.parameters()):
        raise TypeError(
            f"the guide {type(guide).__name__} has no parameters to fit. Draws from pb.mcmc are a finished "
            "posterior: pass pb.mcmc's result to predict, compare, to_arviz or save as it is. To fit, "
            "start from a guide kind: pb.fit(model, 'fullrank', data)."
        )
    return guide


def describe_guide(guide: Guide) -> str:
    """The guide for messages: ``'fullrank' guide (FullRankGuide)``, or its class for one of one's own."""
    try:
        kind = guide.spec()["kind"]
    except NotImplementedError:
        return f"guide {type(guide).__name__}"
    return f"{kind!r} guide ({type(guide).__name__})"


def check_options(kind: str, options: Mapping[str, Any], own: Sequence[str]) -> None:
    """Refuse keywords that are neither fit's nor options of the guide ``kind``, suggesting the nearest."""
    try:
        accepted = guide_options(kind)
    except ValueError:
        return  # an unknown kind: make_guide says so
    unknown = [name for name in options if name not in accepted]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, [*own, *accepted], n=1)
        hints.append(f"{name!r} (did you mean {close[0]}?)" if close else repr(name))
    raise TypeError(
        f"unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(hints)}: pb.fit takes "
        f"{', '.join(own)}, and passes any other keyword to the {kind!r} guide, whose options are "
        f"{', '.join(accepted)}."
    )
