"""Checkpoints of a fitted posterior: :func:`save` and :func:`load`.

A checkpoint holds state dicts (tensors) and a plain config (strings, numbers,
lists, dicts) and nothing else: no pickled Python object, so reading one runs
no code. :func:`load` reads it with ``torch.load(weights_only=True)`` and
rebuilds the guide with :func:`pyrobnn.guides.make_guide` from the kind and the
options the config records, into a model the caller built the same way.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pyrobnn._rng import seeded
from pyrobnn._tensors import model_device
from pyrobnn._version import __version__
from pyrobnn.guides import make_guide
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import DrawSource, Ensemble, MCMCDraws, Posterior

if TYPE_CHECKING:
    from pyrobnn.infer.fit import FitResult

__all__ = ["FORMAT", "VERSION", "load", "save"]

#: The ``format`` entry of every checkpoint written by :func:`save`.
FORMAT = "pyrobnn-checkpoint"
#: The checkpoint layout's version; :func:`load` reads this version and older. Version 2 records
#: the sites a flow covers as ``sites`` (the option's name since pyrobnn 0.2.0); version 1 as ``scope``.
#: Version 3 (pyrobnn 0.3.0) records the kernel of MCMC draws; older ones were NUTS's. Ensembles
#: (kind ``"ensemble"``, each member's spec in ``members``) need no new version: older files hold none.
VERSION = 3

PathLike = str | os.PathLike[str]


def save(path: PathLike, posterior: Posterior | FitResult) -> None:
    """Write a fitted posterior to ``path``: state dicts and a plain config, no pickled objects.

    Parameters
    ----------
    path
        The file to write (conventionally ``*.pt``). It is written to a
        temporary file first and moved into place, so an interrupted save
        never leaves a truncated checkpoint behind.
    posterior
        A :class:`pyrobnn.Posterior` (or the :class:`pyrobnn.FitResult` of
        :func:`pyrobnn.fit`) whose guide was built by
        :func:`pyrobnn.guides.make_guide` (any kind), the draws of
        :func:`pyrobnn.mcmc`, or an ensemble of :func:`pyrobnn.ensemble`
        (every member, and the weights).

    Notes
    -----
    The file holds the model's ``state_dict`` (the deterministic parameters
    trained as point estimates, the priors' and likelihood's buffers), the
    guide's ``state_dict``, and a config recording the guide kind and options
    (:meth:`pyrobnn.guides.Guide.spec`), each latent site's shape and prior,
    and the likelihood; saved from a :class:`pyrobnn.FitResult`, also the
    fit's settings (its ``config``, under ``"fit"``; empty from a
    ``Posterior``). Neither the network nor the guide is pickled:
    :func:`load` needs the model rebuilt by the caller.

    Examples
    --------
    >>> pb.save("fit.pt", result.posterior())          # doctest: +SKIP
    >>> post = pb.load("fit.pt", model)                 # doctest: +SKIP
    """
    fit_record = _plain(getattr(posterior, "config", None) or {})  # a FitResult's settings, resolved
    if not isinstance(posterior, Posterior):
        to_posterior = getattr(posterior, "posterior", None)
        made = to_posterior() if callable(to_posterior) else None
        if not isinstance(made, Posterior):
            raise TypeError(f"save needs a pb.Posterior or the pb.FitResult of pb.fit, got {type(posterior).__name__}")
        posterior = made
    model, source = posterior.model, posterior.source
    state = source.state_dict()
    config = {
        "format": FORMAT,
        "version": VERSION,
        "pyrobnn_version": __version__,
        "guide": _source_spec(source),
        "sites": _site_table(model),
        "likelihood": _describe(model.likelihood),
        "dtype": str(next(iter(state.values())).dtype),
        "fit": fit_record,
    }
    checkpoint = {
        "config": config,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "guide": {k: v.detach().cpu().clone() for k, v in state.items()},
    }
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def load(path: PathLike, model: BayesianModel) -> Posterior:
    """Read a checkpoint written by :func:`save` into ``model``; return the posterior.

    Parameters
    ----------
    path
        A file written by :func:`save`.
    model
        A :class:`pyrobnn.BayesianModel` built the same way as the one that
        was saved (same network architecture, ``sites``/``exclude``, priors
        and likelihood). Its state (deterministic parameters, buffers) is
        overwritten with the saved one; the guide is rebuilt on its device.

    Returns
    -------
    Posterior
        The restored posterior; ``predict`` with a seed gives the same numbers
        as the saved posterior did with that seed.

    Raises
    ------
    ValueError
        If the file carries a pickled Python object (refused without running
        it), is not a pyrobnn checkpoint, or was saved for a different
        architecture (the mismatched sites are named).
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"load needs the pb.BayesianModel to restore into, got {type(model).__name__}")
    device = model_device(model)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:  # not a pickled object: a file that is not a torch checkpoint at all
            raise ValueError(
                f"cannot read {os.fspath(path)!r} as a checkpoint (torch's weights-only reader stopped: "
                f"{_reason(err)}); write one with pb.save(path, posterior)."
            ) from err
        raise ValueError(
            f"refusing to load {os.fspath(path)!r}: it carries a pickled Python object ({found.group(1)}), "
            "and unpickling it could run arbitrary code; nothing in it was run. pyrobnn checkpoints hold "
            "only tensors and plain values: re-save the fitted posterior with pb.save(path, posterior)."
        ) from err
    except RuntimeError as err:
        raise ValueError(
            f"cannot read {os.fspath(path)!r} as a checkpoint ({_reason(err)}); "
            "write one with pb.save(path, posterior)."
        ) from err
    config = _check_format(checkpoint, path)
    _check_same_model(config, checkpoint["model"], model, path)

    spec = _saved_spec(config)
    with torch.no_grad():
        model.load_state_dict(checkpoint["model"])
    # Building a guide may draw random numbers (a flow's initial weights): keep them off the caller's RNG.
    with seeded(0, device):
        source = _rebuild(spec, model)
    source.to(device)
    try:
        source.load_state_dict(checkpoint["guide"])
    except RuntimeError as err:
        raise ValueError(
            f"the guide state in {os.fspath(path)!r} does not fit a {spec['kind']!r} guide with options "
            f"{spec['options']} on this model: {err}"
        ) from err
    return Posterior(model, source)


def _rebuild(spec: Mapping[str, Any], model: BayesianModel) -> DrawSource:
    """An empty source of draws of the saved kind and structure (an untrained guide), for the saved state to fill."""
    if spec["kind"] == "mcmc":  # draws of pb.mcmc: buffers of a known size, no make_guide kind
        # before 0.3.0 the spec had no kernel: those draws came from NUTS, MCMCDraws' default
        return MCMCDraws(model, **spec["options"])
    if spec["kind"] == "ensemble":  # members rebuilt one by one; the weights are in the saved state
        options = spec["options"]
        members = [_rebuild(member, model) for member in options["members"]]
        return Ensemble(model, members, weights_from=options["weights_from"])
    return make_guide(spec["kind"], model, **spec["options"])


def _reason(err: Exception) -> str:
    """The informative line of a torch.load error."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found is not None:
        return found.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ----------------------------------------------------------------- config
def _describe(module: torch.nn.Module) -> str:
    return f"{type(module).__name__}({module.extra_repr()})"


def _site_table(model: BayesianModel) -> dict[str, dict[str, Any]]:
    return {
        name: {"shape": list(site.shape), "prior": _describe(site.prior)} for name, site in model.latent_sites().items()
    }


def _source_spec(source: DrawSource) -> dict[str, Any]:
    """The kind and options that rebuild ``source``'s structure (see :meth:`pyrobnn.guides.Guide.spec`)."""
    try:
        return source.spec()
    except NotImplementedError as err:
        raise TypeError(
            f"pb.save can rebuild the guides made by pb.guides.make_guide (meanfield, lowrank, fullrank, "
            f"flow, map), the draws of pb.mcmc and ensembles of them, not a {type(source).__name__}: {err}. Save "
            "guide.state_dict() with torch.save yourself and load it into a guide built the same way."
        ) from err


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``record`` that a checkpoint can hold without pickling (plain values, lists of them)."""
    simple = (str, int, float, bool, type(None))
    return {
        key: list(value) if isinstance(value, (list, tuple)) else value
        for key, value in record.items()
        if isinstance(value, simple) or (isinstance(value, (list, tuple)) and all(isinstance(v, simple) for v in value))
    }


def _saved_spec(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The guide spec of a checkpoint, in this version's terms."""
    spec = config["guide"]
    if config["version"] < 2 and spec["kind"] == "flow" and "scope" in spec["options"]:
        # version 1 named the flow's sites `scope`; its state dict loads as it is (FlowGuide reads the old layout)
        options = {("sites" if key == "scope" else key): value for key, value in spec["options"].items()}
        return {"kind": "flow", "options": options}
    return spec


# ----------------------------------------------------------------- checks
def _check_format(checkpoint: Any, path: PathLike) -> Mapping[str, Any]:
    where = repr(os.fspath(path))
    config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    if not isinstance(config, Mapping) or config.get("format") != FORMAT:
        raise ValueError(f"{where} is not a pyrobnn checkpoint (no {FORMAT!r} config); write one with pb.save.")
    version = config.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{where} is a checkpoint of format version {version!r}, newer than this pyrobnn reads "
            f"(version {VERSION}); upgrade pyrobnn to load it."
        )
    for entry in ("model", "guide"):
        if not isinstance(checkpoint.get(entry), Mapping):
            raise ValueError(f"{where} has no {entry} state; it is not a complete pyrobnn checkpoint.")
    return config


def _check_same_model(
    config: Mapping[str, Any], saved_state: Mapping[str, torch.Tensor], model: BayesianModel, path: PathLike
) -> None:
    """Refuse a model built differently from the saved one, naming every difference."""
    saved, current = config["sites"], _site_table(model)
    problems = []
    if only := [name for name in saved if name not in current]:
        problems.append(f"sites in the checkpoint but not in the model: {only}")
    if only := [name for name in current if name not in saved]:
        problems.append(f"sites in the model but not in the checkpoint: {only}")
    for name in (n for n in saved if n in current):
        was, now = saved[name], current[name]
        if list(was["shape"]) != now["shape"]:
            problems.append(
                f"site {name!r}: shape {tuple(was['shape'])} in the checkpoint, {tuple(now['shape'])} in the model"
            )
        elif was["prior"] != now["prior"]:
            problems.append(f"site {name!r} has prior {was['prior']} in the checkpoint but {now['prior']} in the model")
    if config["likelihood"] != _describe(model.likelihood):
        problems.append(
            f"the likelihood is {config['likelihood']} in the checkpoint but {_describe(model.likelihood)} in the model"
        )
    if not problems:  # the same latent sites; the deterministic parts must match too
        state = model.state_dict()
        if only := [k for k in saved_state if k not in state]:
            problems.append(f"model tensors in the checkpoint but not in the model: {only}")
        if only := [k for k in state if k not in saved_state]:
            problems.append(f"model tensors in the model but not in the checkpoint: {only}")
        problems += [
            f"model tensor {k!r}: shape {tuple(saved_state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model"
            for k, v in state.items()
            if k in saved_state and saved_state[k].shape != v.shape
        ]
    if problems:
        raise ValueError(
            f"{os.fspath(path)!r} was saved for a differently built model: "
            + "; ".join(problems)
            + ". Build the model exactly as when saving (same network, sites/exclude, priors and "
            "likelihood), then call pb.load(path, model)."
        )
