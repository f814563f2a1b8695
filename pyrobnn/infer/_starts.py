"""Where a joint guide's default fit starts: from the network's own weights and from a MAP fit's.

The ELBO of a low-rank or full-rank guide over a BNN's weights has optima tens of nats apart, and
which one a fit settles in depends on where it starts. Neither start is the better one on every
task: on ``friedman`` the MAP start ends 12-16 nats higher on two of four fits and 6 lower on the
other two, on ``gap1d`` (``make demo``'s data) 17 nats lower, and on ``hetero1d`` it gains
low-rank 1-2 nats of a slow climb (``benchmarks/README.md``, ``two_starts.py``). So under
``num_steps="auto"`` :func:`pyrobnn.fit` fits a joint guide built from its kind from both, and
keeps the one whose fit ended with the higher ELBO: the better of two draws of a lottery, for
about twice the cost of one.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pyrobnn.guides import Guide
from pyrobnn.infer.history import FitError, FitWarning
from pyrobnn.infer.settings import FitSettings
from pyrobnn.model import BayesianModel

if TYPE_CHECKING:
    from pyrobnn.infer.fit import FitResult

__all__ = ["STARTS", "TWO_START_KINDS", "fit_two_starts", "two_starts"]

#: The guide kinds whose default fit under ``num_steps="auto"`` tries both starts. The flow is left
#: out: its fits run to the step cap, and a MAP start has not been measured for it.
TWO_START_KINDS = ("lowrank", "fullrank")
#: The starts, in the order they are fitted: the guide's own default, then a MAP fit's point.
STARTS = ("pretrained", "map")


class FitOne(Protocol):
    def __call__(
        self,
        model: BayesianModel,
        guide: Guide | str,
        data: Any,
        settings: FitSettings,
        guide_options: Any,
        label: str = "",
    ) -> FitResult: ...


def two_starts(
    model: BayesianModel, guide: Guide | str, settings: FitSettings, guide_options: Mapping[str, Any]
) -> bool:
    """Whether :func:`pyrobnn.fit` fits ``guide`` from both :data:`STARTS`.

    Only a guide built from its kind (an instance is fitted as it is), with no ``init`` given
    (which chooses one start), under ``num_steps="auto"``, in one process, on a model whose every
    parameter is in the prior (parameters trained outside it would carry the first fit's
    values into the second's start).
    """
    return (
        isinstance(guide, str)
        and guide in TWO_START_KINDS
        and settings.num_steps == "auto"
        and "init" not in guide_options
        and not settings.distributed
        and not any(p.requires_grad for p in model.parameters())
    )


def fit_two_starts(
    fit_one: FitOne,
    model: BayesianModel,
    kind: str,
    data: Any,
    settings: FitSettings,
    guide_options: Mapping[str, Any],
) -> FitResult:
    """``kind`` fitted from the network's weights and from a MAP fit's; the higher final ELBO kept.

    The MAP fit has the same settings and length rule; each start is then fitted as
    ``pb.fit(..., init=start)`` would fit it, with the same seed. The result is the kept fit's,
    its ``elapsed_s`` the three fits' together, its ``config`` with ``start`` (which was kept)
    and ``start_elbos`` (each start's :meth:`~pyrobnn.FitResult.final_elbo`). A start whose fit
    diverges is reported and the other kept; where both do, the first's error is raised.
    """
    quiet = dataclasses.replace(settings, check=False)
    elapsed = 0.0
    inits: dict[str, Any] = {"pretrained": "pretrained"}
    try:
        map_fit = fit_one(
            model, "map", data, dataclasses.replace(quiet, num_particles=None, kl_weight=None), {}, " (a MAP start)"
        )
        inits["map"], elapsed = map_fit.guide.median(), map_fit.elapsed_s
    except FitError as err:
        _left_out(kind, "map", f"its MAP fit diverged ({err})")
    fits: dict[str, FitResult] = {}
    first_error: FitError | None = None
    for n, (start, init) in enumerate(inits.items()):
        label = f" (start {n + 1} of {len(inits)}: {'the net' if start == 'pretrained' else 'MAP'})"
        try:
            fits[start] = fit_one(model, kind, data, quiet, {**guide_options, "init": init}, label)
        except FitError as err:
            first_error = first_error or err
            _left_out(kind, start, f"its fit diverged ({err})")
            continue
        elapsed += fits[start].elapsed_s
    if not fits:
        assert first_error is not None
        raise first_error
    kept = max(fits, key=lambda start: fits[start].final_elbo())
    result = fits[kept]
    if settings.check and (problem := result.history.check()) is not None:
        warnings.warn(f"fitting {result.config['guide']}: {problem}", FitWarning, stacklevel=3)
    config = {
        **result.config,
        "check": settings.check,  # the starts ran unchecked; the caller's setting, as pb.fit records it
        "start": kept,
        "starts": list(inits),
        "start_elbos": [fits[start].final_elbo() if start in fits else float("nan") for start in inits],
    }
    return dataclasses.replace(result, elapsed_s=elapsed, config=config, settings=settings)


def _left_out(kind: str, start: str, why: str) -> None:
    warnings.warn(
        f"fitting {kind}: the start {start!r} was left out, {why}; the other start's fit is kept",
        FitWarning,
        stacklevel=4,
    )
