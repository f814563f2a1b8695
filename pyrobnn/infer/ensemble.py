"""Ensembles as posteriors: :func:`ensemble` fits K members from independent starts and mixes them.

A deep ensemble (K MAP fits) or an ensemble of any guide kind is one
:class:`pyrobnn.Posterior` whose source is a :class:`pyrobnn.Ensemble`:
its draws mix the members with equal weights or with stacking weights.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pyrobnn._arviz import psislw
from pyrobnn.guides import GUIDE_KINDS
from pyrobnn.infer._batched import BATCHED_OPTIONS
from pyrobnn.infer._members import Init, data_pair, fit_members, map_starts
from pyrobnn.infer.fit import FitResult
from pyrobnn.infer.history import FitError, FitWarning, History
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Ensemble, Posterior, stacking_weights

__all__ = ["MEMBER_INITS", "WEIGHT_RULES", "EnsembleResult", "ensemble", "member_weights"]

#: Where members start (``"pretrained"`` would start them all at the same weights).
MEMBER_INITS = ("reset", "prior", "map")
#: Kinds whose fit is a MAP fit, or starts with one of its own: their members start from ``"reset"``.
OWN_MAP = ("map", "laplace")
#: What ``weights=`` takes besides explicit weights.
WEIGHT_RULES = ("auto", "stacking", "equal")
#: Draws per member behind the LOO or held-out densities that stacking weighs.
STACKING_DRAWS = 1000


@dataclass(frozen=True, repr=False)
class EnsembleResult(FitResult):
    """What :func:`ensemble` returns: a :class:`FitResult` whose ``guide`` is the :class:`~pyrobnn.Ensemble`.

    Attributes
    ----------
    members
        The members' own :class:`FitResult` (histories, seeds), the kept ones in
        the ensemble's order.
    left_out
        ``{member index: reason}`` for the members that diverged and were left out.
    history
        The first kept member's history (each member's is in ``members``; the
        ensemble as a whole has no ELBO of its own).
    elapsed_s
        Seconds of every member's fit together (one batch, or one after another).
    """

    members: tuple[FitResult, ...] = ()
    left_out: Mapping[int, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        source = self.guide
        assert isinstance(source, Ensemble)
        return (
            f"EnsembleResult(guide={self.config.get('guide')}, members={source.num_members}, "
            f"left_out={len(self.left_out)}, weights_from={source.weights_from!r}, elapsed_s={self.elapsed_s:.3g})"
        )

    def final_elbo(self, window: float = 0.05) -> float:
        """NaN: a mixture's ELBO is none of its members' (see ``members`` for theirs)."""
        return math.nan

    def member_elbos(self) -> np.ndarray:
        """Each kept member's objective at the end of its fit, in ``members``' order.

        :meth:`FitResult.end_objective`: the ELBO at the end of the fit (for MAP members the
        log joint), or for Laplace members the Laplace estimate of the log evidence.
        Differences under about a nat are within its noise; :func:`pyrobnn.estimate_elbo`
        measures a member precisely.
        """
        return np.array([member.end_objective() for member in self.members])

    def best(self) -> FitResult:
        """The member that reached the highest ELBO (:meth:`member_elbos`): restarts that keep the best.

        Where the ELBO has several optima, independent starts end in different ones and
        one fit may stop tens of nats below the best of a few. The spread of
        :meth:`member_elbos` shows whether the search paid: members level with each other
        found one optimum. ``benchmarks/README.md`` (``fit_optimum.py``) has the measurements.

        Examples
        --------
        >>> import torch, pyrobnn as pb
        >>> model = pb.BayesianModel(pb.lift(torch.nn.Linear(1, 1)), pb.likelihoods.Gaussian(scale=0.1))
        >>> x = torch.linspace(-1, 1, 20).unsqueeze(-1)
        >>> runs = pb.ensemble(model, "meanfield", (x, 2 * x.squeeze(-1)), num_members=3,
        ...                    num_steps=500, lr=0.05, init="reset", progress=False)
        >>> bool(runs.best().final_elbo() == runs.member_elbos().max())
        True
        """
        return self.members[int(np.argmax(self.member_elbos()))]


def ensemble(
    model: BayesianModel,
    kind: str,
    data: Any,
    *,
    num_members: int = 8,
    weights: str | Sequence[float] = "auto",
    holdout: tuple[Any, Any] | None = None,
    num_steps: int | str | None = None,
    batched: bool | None = None,
    init: str | None = None,
    lr: float = 1e-2,
    lr_decay: float = 0.01,
    num_particles: int | None = None,
    seed: int = 0,
    progress: bool = True,
    check: bool = True,
    **fit_options: Any,
) -> EnsembleResult:
    r"""Fit ``num_members`` guides of one kind from independent starts and mix them as one posterior.

    Parameters
    ----------
    model
        A :class:`pyrobnn.BayesianModel`; every member is a posterior of it.
    kind
        The members' guide kind (any of :data:`pyrobnn.guides.GUIDE_KINDS`;
        ``"map"`` gives a deep ensemble).
    data
        ``(x, y)`` tensors or arrays (or a ``DataLoader``: the members are then
        fitted one after another).
    num_members
        K ≥ 2.
    weights
        ``"auto"`` (default): stacking weights where the data can decide them
        (below), equal weights otherwise; ``"stacking"``: stacking weights or an
        error saying why none can be had; ``"equal"``; or K weights summing to one.
    holdout
        ``(x, y)`` not used for fitting, on which stacking weighs the members'
        predictive densities.
    num_steps, lr, lr_decay, num_particles, seed, progress, check, \*\*fit_options
        As for :func:`pyrobnn.fit`, per member. ``seed`` seeds the members'
        own seeds, drawn from it. Under ``num_steps="auto"`` each member (and
        each member's MAP start) runs until its own ELBO levels off, in a
        batch too: a member that has ended waits for the others.
    batched
        Train the members as one batch (the member as a leading dimension,
        one network pass for all): possible for ``"map"``, ``"meanfield"``,
        ``"lowrank"`` and ``"fullrank"`` members over every site, and for the
        MAP fits of ``"laplace"`` members (each Gaussian is then built at its
        own MAP point), on in-memory data, with no fit options but the guide's
        own (``init_scale``; ``rank`` for low-rank, ``max_dim`` for full-rank;
        Laplace's ``sites``, ``curvature`` and the rest): not ``sites`` for the
        others, ``local_reparam``, ``kl="mc"``, ``batch_size``, ``optimizer``,
        ``kl_weight``, ...; ``None`` (default) batches where possible, and
        fits the members one after another otherwise.
    init
        Where each member starts: ``"reset"`` (torch's initialisation drawn
        afresh under the member's seed), ``"prior"``, or ``"map"``: at a MAP
        fit of its own (``num_steps`` from ``"reset"`` under the member's seed,
        all members' MAP fits as one batch), its scale at ``init_scale``, a
        warm start that puts each member in the mode its MAP fit found. The
        default is ``"map"`` for members with a spread and ``"reset"`` for
        MAP and Laplace members, whose fits begin with a MAP fit of their own
        (see Notes). ``"pretrained"`` would start every member at
        the same weights, and is refused.

    Returns
    -------
    EnsembleResult
        ``result.posterior()`` is the mixture; ``result.guide`` the
        :class:`~pyrobnn.Ensemble`; ``result.members`` each fit.

    Raises
    ------
    ValueError
        For K < 2, an unknown kind, ``init="pretrained"`` (or ``"map"`` for MAP
        members), weights of the wrong length or not summing to one,
        ``weights="stacking"`` where no stacking weights can be had, or a model
        with parameters trained outside the prior.
    FitError
        When fewer than two members survive their fits.

    Warns
    -----
    FitWarning
        For each member whose fit diverged: it is left out, the rest kept.

    Notes
    -----
    **Weights.** Stacking (Yao, Vehtari, Simpson & Gelman 2018; Yao, Vehtari &
    Gelman 2022, for computations that do not mix) picks the weights that
    maximise Σᵢ log Σₖ wₖ pₖ(yᵢ), where pₖ(yᵢ) is member k's predictive density
    of a point it was not fitted to (:func:`pyrobnn.posterior.stacking_weights`).
    From PSIS-LOO on the training data when every member has a spread and every
    Pareto k̂ of every member's LOO weights is at most 0.7; otherwise from
    ``holdout``. Never from the LOO of point masses: a MAP member's "LOO" is its
    in-sample fit, and would favour the member that overfits most; an ensemble
    of MAP fits therefore weighs its members equally unless ``holdout`` decides.
    The source of the weights is ``result.guide.weights_from``.

    **Where members start.** A member fitted from torch's initialisation
    spends its steps finding a mode and settling its spread at once, and
    mean-field members end far from the posterior's predictive; started at
    their own MAP fits, which cost little as one batch, they keep the modes
    those fits found and only learn the spread. On the gap tasks of
    ``benchmarks/ensembles.py`` this brought mean-field members much closer
    to the reference posterior's predictive, and full-rank members closer
    or level, hence the default (the numbers are in ``benchmarks/README.md``).
    """
    if not (isinstance(num_members, int) and num_members >= 2):
        raise ValueError(
            f"an ensemble needs num_members >= 2, got {num_members!r}; for one fit use pb.fit(model, kind, data)"
        )
    kind = _check_kind(kind)
    if init is None:  # members with a spread come closer to the posterior from their own MAP fits (Notes)
        init = "reset" if kind in OWN_MAP else "map"
    if init not in MEMBER_INITS:
        raise ValueError(
            f"init must be one of {MEMBER_INITS}, got {init!r}"
            + (
                ": 'pretrained' would start every member at the network's current weights, so the members "
                "would not be independent fits"
                if init == "pretrained"
                else ""
            )
        )
    if init == "map" and kind in OWN_MAP:
        raise ValueError(
            f"init='map' starts each member at a MAP fit of its own; {kind!r} members fit one themselves and "
            "start with init='reset'"
        )
    if any(p.requires_grad for p in model.parameters()):
        trained = [n for n, p in model.named_parameters() if p.requires_grad]
        raise ValueError(
            f"the model trains parameters outside the prior ({', '.join(trained[:3])}...), which the members "
            "would share and overwrite in turn; lift every parameter (no exclude=) to fit an ensemble"
        )
    if isinstance(weights, str) and weights not in WEIGHT_RULES:
        raise ValueError(f"weights must be one of {WEIGHT_RULES} or K numbers summing to one, got {weights!r}")
    if not isinstance(weights, str):
        Ensemble.check_weights(weights, num_members, model)
    fit_options = {key: value for key, value in fit_options.items() if value is not None}  # fit's defaults
    generator = torch.Generator().manual_seed(int(seed))
    seeds = [int(s) for s in torch.randint(0, 2**31 - 1, (num_members,), generator=generator)]
    unbatched = sorted(set(fit_options) - set(BATCHED_OPTIONS.get(kind, ())))
    can_batch = kind in BATCHED_OPTIONS and isinstance(data, (tuple, list)) and not unbatched
    if batched and not can_batch:
        raise ValueError(
            f"batched=True needs members of kind {', '.join(BATCHED_OPTIONS)}, (x, y) data in memory "
            f"and no options but {BATCHED_OPTIONS} (got kind {kind!r}, {type(data).__name__} data, "
            f"options {unbatched}); pass batched=None to fit them one after another"
        )
    options = dict(lr=lr, lr_decay=lr_decay, num_particles=num_particles, check=check, **fit_options)
    members, failures, elapsed = list(range(num_members)), dict[int, str](), 0.0
    inits: list[Init] = [init] * num_members
    if init == "map":  # each member from its own MAP fit, the MAP fits as one batch
        maps, failed, elapsed = map_starts(model, data, seeds, num_steps, options, progress=progress)
        failures = {k: f"its MAP start diverged: {reason}" for k, reason in failed.items()}
        members = [k for k in range(num_members) if k not in failures]
        inits = [m.guide.median() for m in maps]
    results: list[FitResult] = []
    if len(members) >= 2:
        results, more_failures, more_elapsed = fit_members(
            model,
            kind,
            data,
            [seeds[k] for k in members],
            inits,
            num_steps=num_steps,
            options=options,
            guide_options=fit_options,
            batched=can_batch and batched is not False,
            progress=progress,
            members=members,
        )
        failures, elapsed = {**failures, **more_failures}, elapsed + more_elapsed
    for member, reason in failures.items():
        warnings.warn(
            f"ensemble member {member} of {num_members} ({kind}) was left out: {reason}; the other members are kept",
            FitWarning,
            stacklevel=2,
        )
    if len(results) < 2:
        raise FitError(
            f"{len(failures)} of {num_members} {kind} members diverged ({'; '.join(failures.values())}), "
            f"leaving {len(results)}: lower lr than {lr}",
            step=-1,
            history=results[0].history if results else History(*(np.empty(0) for _ in range(5))),
        )
    guides = [r.guide for r in results]
    first_steps = results[0].num_steps
    w, weights_from = member_weights(model, guides, data, weights, holdout, seed=seed)
    source = Ensemble(model, guides, w, weights_from=weights_from)
    config = {
        "guide": f"ensemble:{kind}:{num_members}",
        "kind": kind,
        "num_members": num_members,
        "member_seeds": [r.seed for r in results],
        "left_out": sorted(failures),
        "batched": can_batch and batched is not False,
        "weights_from": weights_from,
        "init": init,
        "num_steps": first_steps,
        **{key: value for key, value in options.items() if isinstance(value, (int, float, str, type(None)))},
    }
    first = results[0]
    config["num_particles"] = first.config.get("num_particles")  # per member: the kind's default unless given
    return EnsembleResult(
        model,
        source,  # type: ignore[arg-type]  # a FitResult whose "guide" is the mixture of the members' guides
        first.history,
        first_steps,
        seed,
        elapsed,
        config,
        first.first_step_s,
        members=tuple(results),
        left_out=dict(failures),
    )


def member_weights(
    model: BayesianModel,
    members: Sequence[Any],
    data: Any,
    weights: str | Sequence[float],
    holdout: tuple[Any, Any] | None,
    *,
    seed: int = 0,
) -> tuple[torch.Tensor | None, str]:
    """The members' weights and where they came from (``Ensemble.weights_from``), by the rule of :func:`ensemble`."""
    if not isinstance(weights, str):
        return torch.as_tensor(weights, dtype=torch.float64), "user"
    if weights == "equal":
        return None, "equal"
    reasons = []
    point_mass = any(m.point_mass for m in members)
    if point_mass:
        reasons.append("the members are point masses, whose LOO is their in-sample fit")
    elif isinstance(data, (tuple, list)):
        loo, worst = _loo_densities(model, members, *data_pair(model, *data), seed=seed)
        if worst <= 0.7:
            return stacking_weights(loo), "loo"
        reasons.append(f"a Pareto k̂ of the members' PSIS-LOO reached {worst:.2f} (> 0.7)")
    else:
        reasons.append("the training data come from a loader, on which PSIS-LOO is not computed")
    if holdout is not None:
        return stacking_weights(_held_out_densities(model, members, *data_pair(model, *holdout), seed=seed)), "holdout"
    if weights == "stacking":
        raise ValueError(
            f"no stacking weights: {'; '.join(reasons)}. Pass holdout=(x_val, y_val), data the members "
            "were not fitted to, or weights='equal'"
        )
    return None, "equal"


def _loo_densities(
    model: BayesianModel, members: Sequence[Any], x: torch.Tensor, y: torch.Tensor, *, seed: int
) -> tuple[torch.Tensor, float]:
    """PSIS-LOO log predictive density of every training point under every member, ``(N, K)``, and the worst k̂."""
    columns, worst = [], 0.0
    for k, member in enumerate(members):
        log_lik = Posterior(model, member).log_likelihood(x, y, num_samples=STACKING_DRAWS, seed=seed + k)
        ll = log_lik.double().cpu().numpy()
        column = np.empty(ll.shape[1])
        for i in range(ll.shape[1]):
            smoothed, khat = psislw(-ll[:, i])
            worst = max(worst, khat)
            column[i] = np.logaddexp.reduce(smoothed + ll[:, i])
        columns.append(column)
    return torch.as_tensor(np.stack(columns, axis=1)), worst


def _held_out_densities(
    model: BayesianModel, members: Sequence[Any], x: torch.Tensor, y: torch.Tensor, *, seed: int
) -> torch.Tensor:
    """log (1/S) Σ_s p(yᵢ | θ_s) of every held-out point under every member, ``(N, K)``."""
    columns = []
    for k, member in enumerate(members):
        pred = Posterior(model, member).predict(x, num_samples=STACKING_DRAWS, seed=seed + k)
        columns.append(pred.log_prob(y).double().cpu())
    return torch.stack(columns, dim=1)


def _check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind.lower() not in GUIDE_KINDS:
        near = difflib.get_close_matches(str(kind).lower(), GUIDE_KINDS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        valid = ", ".join(GUIDE_KINDS)
        raise ValueError(f"unknown member kind {kind!r}{hint}; an ensemble's members are one of {valid}")
    return kind.lower()
