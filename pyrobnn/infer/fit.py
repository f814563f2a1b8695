"""Fitting a guide by stochastic variational inference: :func:`fit` and :class:`FitResult`.

``fit`` is the one-call front door; it is a short loop over the building blocks of
:mod:`pyrobnn.infer.svi` (``init`` and ``SVIState.step``), which a loop of your own can use too.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, model_device, model_dtype
from pyrobnn.guides import Guide, LaplaceGuide
from pyrobnn.infer import svi as _svi
from pyrobnn.infer._batching import prepare_targets
from pyrobnn.infer._interpolation import interpolation_message
from pyrobnn.infer._optim import KLWeight, LinearAnnealing, OptimizerSpec
from pyrobnn.infer._starts import fit_two_starts, two_starts
from pyrobnn.infer.elbo import ELBO, Terms
from pyrobnn.infer.history import FitError, FitWarning, History
from pyrobnn.infer.settings import FitSettings
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Posterior

__all__ = ["FitError", "FitResult", "FitWarning", "History", "estimate_elbo", "fit", "linear_annealing"]


@dataclass(frozen=True, repr=False)
class FitResult:
    """What :func:`fit` returns: the fitted guide, the model, the history and the settings.

    Attributes
    ----------
    model, guide
        The model and the fitted guide.
    history
        The per-step record (:class:`History`).
    num_steps, seed
        The length of the fit and its seed.
    elapsed_s
        Wall-clock seconds of all ``num_steps`` optimiser steps, the first included
        (building the guide and the optimiser before them is not counted).
    config
        The settings as plain data, with what the fit resolved (the number of
        steps and particles, the guide's kind, the dataset's size);
        :func:`pyrobnn.save` writes it into the checkpoint.
    first_step_s
        Seconds of the first step alone, which is part of ``elapsed_s``. It carries
        one-time costs: Pyro's shape checks, which run on the first step only, and, in
        the first fit of a process, torch's loading and warming of its kernels. For
        the time a step takes once warm, use ``(elapsed_s - first_step_s) / (num_steps - 1)``.
    settings
        The :class:`~pyrobnn.infer.settings.FitSettings` the fit ran with, as given
        (``None`` for a fit made otherwise, e.g. an ensemble member trained in a batch).
    """

    model: BayesianModel
    guide: Guide
    history: History
    num_steps: int
    seed: int
    elapsed_s: float
    config: Mapping[str, Any] = field(default_factory=dict)
    first_step_s: float = math.nan
    settings: FitSettings | None = None

    def __repr__(self) -> str:
        kind = self.config.get("guide", type(self.guide).__name__)
        elbo = self.final_elbo() if len(self.history) else math.nan
        return (
            f"FitResult(guide={kind}, num_steps={self.num_steps}, final_elbo={elbo:.6g}, "
            f"elapsed_s={self.elapsed_s:.3g}, first_step_s={self.first_step_s:.3g}, seed={self.seed})"
        )

    def posterior(self) -> Posterior:
        """The fitted guide as a :class:`pyrobnn.Posterior`: draws and predictions."""
        return Posterior(self.model, self.guide)

    def final_elbo(self, window: float = 0.05) -> float:
        """Mean per-step ELBO over the last ``window`` fraction of steps (a cheap, noisy summary)."""
        k = max(1, int(len(self.history) * window))
        return float(self.history.elbo[-k:].mean())

    def end_objective(self) -> float:
        """What the fit ended at, to rank fits of one model by: a Laplace fit's estimate of the log
        evidence (``guide.log_evidence``), otherwise :meth:`final_elbo` (a point estimate's is its
        log joint density, which ranks point estimates but is no ELBO)."""
        evidence = getattr(self.guide, "log_evidence", None)
        return float(evidence) if evidence is not None else self.final_elbo()


def linear_annealing(warmup_steps: int, start: float = 0.0) -> Callable[[int], float]:
    """A KL weight rising linearly from ``start`` to 1 over ``warmup_steps`` steps, then 1."""
    return LinearAnnealing(warmup_steps, start)


def fit(
    model: BayesianModel,
    guide: Guide | str,
    data: Any,
    *,
    num_steps: int | str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    num_particles: int | None = None,
    vectorize_particles: bool = True,
    lr: float = 1e-2,
    optimizer: OptimizerSpec | None = None,
    lr_decay: float = 0.01,
    kl_weight: KLWeight | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    check: bool = True,
    distributed: bool = False,
    **guide_options: Any,
) -> FitResult:
    r"""Fit ``guide`` to the posterior of ``model`` by maximising the ELBO.

    Parameters
    ----------
    model
        A :class:`pyrobnn.BayesianModel`.
    guide
        A guide from :func:`pyrobnn.guides.make_guide`, or a guide kind
        (``"meanfield"``, ``"map"``) built here with ``**guide_options``
        (e.g. ``init="reset"``; :func:`pyrobnn.guides.guide_options` lists them).
    data
        ``(x, y)`` as tensors or arrays, or a ``DataLoader`` yielding ``(x, y)``.
    num_steps, epochs
        Length of the fit, in optimiser steps or passes over the data (not
        both; default 1000 steps).
    batch_size
        Minibatch size for in-memory data (default: full batch).
    num_particles
        Draws from the guide per step to estimate the ELBO; default: the guide's
        ``num_particles``, 8 for mean-field and MAP, 32 for the joint guides
        (low-rank, full-rank, flow), whose many dependence parameters need the
        quieter gradient to reach their optimum (the measurements are in the concepts
        page, "Why a joint guide fits with more particles").
    vectorize_particles
        Draw all particles at once; the network then runs once per step.
    lr, optimizer
        Adam's learning rate, or an optimiser (an instance, or a callable taking
        parameter groups and returning one). A guide may train some of its
        parameters at a fixed fraction of the rate (see ``Guide.param_groups``).
    lr_decay
        The learning rate falls geometrically over the second half of the fit to
        ``lr * lr_decay``, so the final guide sits at the optimum rather than
        jittering around it. ``1.0`` keeps it constant.
    kl_weight
        β, the weight of the KL term: a number or a schedule ``step -> weight``
        (e.g. :func:`linear_annealing`). Only β = 1 maximises the ELBO. By default
        1, except under ``num_steps="auto"`` for the guides that correlate the
        sites (low-rank, full-rank, flow): there β rises from 0 to 1 over the first
        3000 steps, a warm-up that lets the network fit the data before the prior
        pulls on it (``docs/concepts.md``, "How long a fit runs").
    device
        Where to fit (model and guide are moved there); default: the model's.
    seed
        Seeds the particles, the minibatch order and the draws of the guide's
        starting point under ``init="reset"`` or ``init="prior"``; the caller's
        global torch RNG state is left unchanged. Under the default
        ``init="pretrained"`` the start is the network's current weights, which
        ``seed`` does not set (see Notes).
    progress
        Show a progress bar with the current loss (on rank 0 only when distributed).
    check
        At the end, check the ELBO history (:meth:`History.check`) and issue a
        :class:`FitWarning` naming the fix when the fit diverged to a finite loss or
        had not settled (see Notes). ``False`` skips the check.
    distributed
        Data-parallel fitting on ``torch.distributed``: run the same script in
        every process (e.g. with ``torchrun``) after
        ``torch.distributed.init_process_group``, each passing the whole data.
        The ELBO module is wrapped in ``DistributedDataParallel``; in-memory data
        are split across processes by a ``DistributedSampler`` (``batch_size``
        is then per process; ``None`` means the process's whole shard), and a
        ``DataLoader`` must carry a ``DistributedSampler`` itself. Gradients are
        averaged across processes, so every process holds the same guide after
        each step; the history is the average of the processes' terms. For
        multi-GPU use pass each process its own ``device=f"cuda:{local_rank}"``
        and use the ``"nccl"`` backend. See :mod:`pyrobnn.infer.distributed`.

    Returns
    -------
    FitResult
        A frozen record with ``guide``, ``history``, ``elapsed_s`` and ``config``.

    Raises
    ------
    FitError
        When the loss becomes NaN or infinite; the guide is restored to the last
        state whose loss was finite, and is the error's ``guide``.
    TypeError
        For a keyword that is neither ``fit``'s nor an option of the guide kind
        (the message suggests the nearest name).
    RuntimeError
        With ``distributed=True`` and no initialised process group.

    Warns
    -----
    FitWarning
        When ``check`` and the history shows a fit that went wrong without a
        non-finite loss, or a point estimate interpolates its data (see Notes); and
        when one of two starts diverged and the other's fit is returned (a
        ``FitError`` comes only where both did).

    See Also
    --------
    pyrobnn.infer.svi.init : The building blocks of this loop (``init``, ``SVIState.step``), for a
        training loop of your own; with the same arguments and seed it reproduces ``fit`` from one start.

    Notes
    -----
    The objective at each step is −(N/n · Σᵢ E_q log p(yᵢ | θ) − β KL(q‖p)) for a
    minibatch of n out of N observations (see :class:`pyrobnn.ELBO`). The
    parameters live on the model and guide modules (Pyro's module-local
    parameters) and are trained with a ``torch.optim`` optimiser on the ELBO
    module ``ELBO(...)(model, guide)``. Pyro's shape validation runs on the
    first step only.

    **Where the fit starts.** A guide built here from a kind string starts at the
    guide's ``init``: ``"pretrained"`` (the default) centres it on the network's
    current weights, which ``seed`` does not set: for a freshly built net they are
    torch's default initialisation, drawn from torch's global RNG when the net was
    built, so two scripts that differ only there start, and end, in different
    places. ``init="reset"`` redraws every random weight with its layer's own
    ``reset_parameters()`` under ``seed``, and ``init="prior"`` draws it from the
    prior under ``seed``: then the whole fit is a function of ``seed``, and
    different seeds start from independent weights (what refits used as chains in
    :func:`pyrobnn.to_arviz` need). Parameters kept out of the prior (trained as
    point estimates) start from the network's values whatever ``init`` is.

    **Two starts for a joint guide.** Under ``num_steps="auto"``, a ``"lowrank"`` or
    ``"fullrank"`` guide built here with no ``init`` given is fitted twice, from the
    network's weights and from a MAP fit's (``init=map_fit.guide.median()``), and the fit
    that ended with the higher ELBO is returned, its ``config["start"]`` saying which,
    ``config["start_elbos"]`` both ends: these ELBOs have optima tens of nats apart, and
    neither start finds the better one on every task (``docs/concepts.md``, "Two starts for
    the joint guides"). It costs about twice one fit. ``init="pretrained"`` fits from the one
    start.

    **The end-of-fit check** (``check=True``) compares stretches of the per-step
    ELBO, with standard errors from batch means (:meth:`History.check`). It warns
    when the mean over the last tenth of the steps is below that over the first
    tenth by more than 5 standard errors and 1 nat (the fit diverged without
    overflowing: lower ``lr``), and, in fits of 200 steps or more, when the last
    eighth's mean exceeds the fifth eighth's by more than 5 standard errors,
    1 nat and 10% of the final |ELBO| (still rising: more steps or a higher
    ``lr``). The learning rate's decay over the second half (``lr_decay``) lifts
    the end a little in a settled fit too, which the last two thresholds leave
    room for; a fit that passes may still gain from more steps. Under
    ``num_steps="auto"``, which holds the rate for two thirds of the fit, the
    eighths are those of the steps before the decay. A MAP fit, or a Laplace
    fit's MAP phase, with a learned noise scale is also checked for interpolating
    its data: the warning comes where the parameters the data determine at the
    fit's point (:func:`pyrobnn.guides.effective_parameters`) exceed 0.75 N, since
    the log joint then has no maximum in the noise scale.
    """
    settings = FitSettings.of_call(locals())
    if isinstance(guide, str) and two_starts(model, guide, settings, guide_options):
        return fit_two_starts(fit_one, model, guide, data, settings, guide_options)
    return fit_one(model, guide, data, settings, guide_options)


def fit_one(
    model: BayesianModel, guide: Guide | str, data: Any, settings: FitSettings, guide_options: Any, label: str = ""
) -> FitResult:
    """:func:`fit` from one start, its settings held; ``label`` is added to the progress bar's name."""
    state = _svi.start(model, guide, data, settings, guide_options)
    refresh = max(1, state.num_steps // 200)
    show = settings.progress and state.rank == 0
    desc = f"fit {type(state.guide).__name__}{label}"
    bar = tqdm(total=state.num_steps, desc=desc, unit="step", disable=not show)
    with bar, state.session():
        start = time.perf_counter()
        first = math.nan
        while state.step_count < state.num_steps:
            terms = state.step()
            step = state.step_count - 1
            if step == 0:
                first = time.perf_counter() - start
            if bar.total != state.num_steps:  # num_steps="auto" has just placed the end of the fit
                bar.total = state.num_steps
            if step % refresh == 0 or step == state.num_steps - 1:
                bar.set_postfix(loss=f"{terms.loss:.4g}", refresh=False)
                bar.update(step + 1 - bar.n)
        total = state.num_steps
        whole_data = functools.cache(state._batches.all)  # one pass over a DataLoader for both uses below
        interpolating = None  # checked at the MAP point, before a Laplace phase moves it
        if settings.check and state.rank == 0:
            interpolating = interpolation_message(
                state.model, [state.guide], whole_data, f"fitting {state.config['guide']}"
            )
        if isinstance(state.guide, LaplaceGuide):  # the second phase: the curvature at the MAP
            bar.set_postfix(loss=f"{terms.loss:.4g}", phase="curvature", refresh=True)
            try:
                state.guide.fit_posterior(state.model, *whole_data())
            except ValueError as err:
                raise FitError(
                    f"{err}. The MAP fit is kept: it is this error's guide; set its curvature (or other "
                    "option) and call guide.fit_posterior(model, x, y) again.",
                    step=total,
                    history=state.history,
                    guide=state.guide,
                ) from err
        elapsed = time.perf_counter() - start
    history = state.history
    if settings.check and state.rank == 0:
        problem = history.check()
        if problem is not None:
            warnings.warn(f"fitting {state.config['guide']}: {problem}", FitWarning, stacklevel=3)
        if interpolating is not None:
            warnings.warn(interpolating, FitWarning, stacklevel=3)
    return FitResult(model, state.guide, history, total, settings.seed, elapsed, state.config, first, settings)


def estimate_elbo(
    model: BayesianModel,
    guide: Guide,
    x: Any,
    y: Any,
    *,
    num_particles: int = 256,
    seed: int | None = 0,
) -> tuple[Terms, float]:
    """A precise full-data ELBO estimate and its Monte Carlo standard error.

    Draws ``num_particles`` particles in 16 vectorized batches; the standard
    error is that of the mean over the batches' estimates.
    """
    dtype, device = model_dtype(model), model_device(model)
    x = as_tensor(x, "x", dtype=dtype, device=device)
    y = as_tensor(y, "y", dtype=dtype, device=device)
    check_pair(x, y)
    y = prepare_targets(model, model.output_shape(x), y)
    num_batches = 16
    per_batch = max(1, num_particles // num_batches)
    elbo = ELBO(num_particles=per_batch, vectorize_particles=True)
    terms = []
    with seeded(seed, device), torch.no_grad(), pyro.settings.context(module_local_params=True):
        for _ in range(num_batches):
            elbo.differentiable_loss(model, guide, x, y)
            assert elbo.last is not None
            terms.append(elbo.last)
    log_lik = np.array([t.log_likelihood for t in terms])
    kl = np.array([t.kl for t in terms])
    mean = Terms(float(-(log_lik - kl).mean()), float(log_lik.mean()), float(kl.mean()), 1.0)
    se = float(np.std(log_lik - kl, ddof=1) / math.sqrt(num_batches))
    return mean, se
