"""How :func:`pyrobnn.ensemble` fits its members: as one batch where the kind allows, one after another
otherwise, each from its own start; and the MAP fits that ``init="map"`` starts them from."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, model_device, model_dtype
from pyrobnn.guides import LaplaceGuide, make_guide
from pyrobnn.infer._batched import fit_batch
from pyrobnn.infer._batching import prepare_targets
from pyrobnn.infer._interpolation import interpolation_message
from pyrobnn.infer.fit import FitResult, fit
from pyrobnn.infer.history import FitError, FitWarning
from pyrobnn.model import BayesianModel

__all__ = ["Init", "Members", "data_pair", "fit_members", "map_starts"]

#: A member's start: a guide's ``init`` (a kind of start, or ``{site: value}``).
Init = str | Mapping[str, torch.Tensor]

#: The kept members' fits, ``{member: reason}`` for the left-out ones, and the seconds of all fits.
Members = tuple[list[FitResult], dict[int, str], float]


def data_pair(model: BayesianModel, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as tensors of the model's dtype and device, checked as a pair."""
    x = as_tensor(x, "x", dtype=model_dtype(model), device=model_device(model))
    y = as_tensor(y, "y", dtype=model_dtype(model), device=model_device(model))
    check_pair(x, y)
    return x, y


def fit_members(
    model: BayesianModel,
    kind: str,
    data: Any,
    seeds: Sequence[int],
    inits: Sequence[Init],
    *,
    num_steps: int | str | None,
    options: dict[str, Any],
    guide_options: dict[str, Any],
    batched: bool,
    progress: bool,
    members: Sequence[int] | None = None,
    interpolation: bool = True,
) -> Members:
    """Member ``members[i]`` fitted from ``inits[i]`` under ``seeds[i]``; failures keyed by member number.

    ``interpolation=False`` leaves out the check of batched point estimates for interpolating
    their data (MAP starts: a start is no member, and the member's KL term holds its noise scale).
    """
    numbers = list(range(len(seeds))) if members is None else list(members)
    if batched:
        steps = 1000 if num_steps is None else num_steps  # fit's default length
        results, failures, elapsed = _fit_batched(
            model, kind, data, seeds, inits, steps, options, progress, guide_options, numbers, interpolation
        )
    else:
        results, failures, elapsed = _fit_each(model, kind, data, seeds, inits, num_steps, options, progress)
    return results, {numbers[i]: reason for i, reason in failures.items()}, elapsed


def map_starts(
    model: BayesianModel,
    data: Any,
    seeds: Sequence[int],
    num_steps: int | str | None,
    options: dict[str, Any],
    *,
    progress: bool,
) -> Members:
    """A MAP fit per member from torch's initialisation under its seed, as one batch on in-memory data."""
    map_options = {key: options[key] for key in ("lr", "lr_decay", "check")}
    map_options["num_particles"] = None
    return fit_members(
        model,
        "map",
        data,
        seeds,
        ["reset"] * len(seeds),
        num_steps=num_steps,
        options=map_options,
        guide_options={},
        batched=isinstance(data, (tuple, list)),
        progress=progress,
        interpolation=False,
    )


def _fit_each(
    model: BayesianModel,
    kind: str,
    data: Any,
    seeds: Sequence[int],
    inits: Sequence[Init],
    steps: int | str | None,
    options: dict[str, Any],
    progress: bool,
) -> Members:
    """Each member by :func:`pyrobnn.fit`, one after another; a diverging one is recorded, not raised."""
    results, failures, elapsed = [], {}, 0.0
    members = tqdm(seeds, desc=f"ensemble of {kind}", unit="member", disable=not progress)
    for member, (member_seed, init) in enumerate(zip(members, inits, strict=True)):
        try:
            result = fit(model, kind, data, num_steps=steps, seed=member_seed, init=init, progress=False, **options)
        except FitError as err:
            failures[member] = str(err)
            continue
        elapsed += result.elapsed_s
        results.append(result)
    return results, failures, elapsed


def _fit_batched(
    model: BayesianModel,
    kind: str,
    data: Any,
    seeds: Sequence[int],
    inits: Sequence[Init],
    steps: int | str,
    options: dict[str, Any],
    progress: bool,
    guide_options: dict[str, Any],
    numbers: Sequence[int],
    interpolation: bool,
) -> Members:
    """Every member in one batch (:func:`pyrobnn.infer._batched.fit_batch`)."""
    x, y = data_pair(model, *data)
    y = prepare_targets(model, model.output_shape(x), y)
    guides = []
    for member_seed, init in zip(seeds, inits, strict=True):  # each starts where pb.fit would under its seed
        with seeded(member_seed, model_device(model)):
            guides.append(make_guide(kind, model, init=init, **guide_options).to(model_device(model)))
    particles = options["num_particles"] or guides[0].num_particles
    bar = tqdm(desc=f"ensemble of {len(seeds)} {kind}", unit="step", disable=not progress)

    def show(step: int, loss: float, end: int) -> None:
        if bar.total != end:  # num_steps="auto": the members' ends are placed as they level off
            bar.total = end
        if step % max(1, end // 200) == 0 or step == end - 1:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(step + 1 - bar.n)

    with bar, seeded(seeds[0], model_device(model)):
        run = fit_batch(
            model,
            guides,
            x,
            y,
            num_steps=steps,
            lr=options["lr"],
            lr_decay=options["lr_decay"],
            num_particles=particles,
            progress=show,
        )
    failures, elapsed = dict(run.failures), run.elapsed_s
    if options["check"] and interpolation:  # at the MAP points, before a Laplace phase moves them
        kept = [member for member in range(len(guides)) if member not in failures]
        who = f"fitting ensemble members {{members}} ({kind})"
        fitted, labels = [guides[member] for member in kept], [numbers[member] for member in kept]
        if (message := interpolation_message(model, fitted, lambda: (x, y), who, labels)) is not None:
            warnings.warn(message, FitWarning, stacklevel=4)
    for member, guide in enumerate(guides):  # a Laplace member's second phase, as pb.fit runs it
        if isinstance(guide, LaplaceGuide) and member not in failures:
            start = time.perf_counter()
            try:
                guide.fit_posterior(model, x, y)
            except ValueError as err:
                failures[member] = f"its Laplace approximation could not be built at the MAP fit: {err}"
            elapsed += time.perf_counter() - start
    results = []
    config = {"guide": kind, "num_steps": steps, "num_particles": particles, "batched": True}
    for member, (guide, history) in enumerate(zip(guides, run.histories, strict=True)):
        if history is None or member in failures:
            continue
        if options["check"] and (problem := history.check()) is not None:
            warnings.warn(f"fitting ensemble member {numbers[member]} ({kind}): {problem}", FitWarning, stacklevel=4)
        share = elapsed / len(guides)
        results.append(
            FitResult(model, guide, history, len(history), seeds[member], share, config, run.first_step_s / len(guides))
        )
    return results, failures, elapsed
