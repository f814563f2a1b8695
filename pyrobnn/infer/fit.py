"""Fitting a guide by stochastic variational inference: :func:`fit` and :class:`FitResult`.

``fit`` is the one-call front door; it is a short loop over the building blocks of
:mod:`pyrobnn.infer.svi` (``init`` and ``SVIState.step``), which a loop of your own can use too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, model_device, model_dtype
from pyrobnn.guides import Guide
from pyrobnn.infer._batching import prepare_targets
from pyrobnn.infer._optim import KLWeight, OptimizerSpec
from pyrobnn.infer.elbo import ELBO, Terms
from pyrobnn.infer.history import FitError, History
from pyrobnn.infer.svi import init
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Posterior

__all__ = ["FitError", "FitResult", "History", "estimate_elbo", "fit", "linear_annealing"]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns: the fitted guide, the model, the history and the settings."""

    model: BayesianModel
    guide: Guide
    history: History
    num_steps: int
    seed: int
    elapsed_s: float
    config: Mapping[str, Any] = field(default_factory=dict)

    def posterior(self) -> Posterior:
        """The fitted guide as a :class:`pyrobnn.Posterior`: draws and predictions."""
        return Posterior(self.model, self.guide)

    def final_elbo(self, window: float = 0.05) -> float:
        """Mean per-step ELBO over the last ``window`` fraction of steps (a cheap, noisy summary)."""
        k = max(1, int(len(self.history) * window))
        return float(self.history.elbo[-k:].mean())


def linear_annealing(warmup_steps: int, start: float = 0.0) -> Callable[[int], float]:
    """A KL weight rising linearly from ``start`` to 1 over ``warmup_steps`` steps, then 1."""
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")

    def weight(step: int) -> float:
        return min(1.0, start + (1.0 - start) * step / warmup_steps)

    return weight


def fit(
    model: BayesianModel,
    guide: Guide | str,
    data: Any,
    *,
    num_steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    num_particles: int | None = None,
    vectorize_particles: bool = True,
    lr: float = 1e-2,
    optimizer: OptimizerSpec | None = None,
    lr_decay: float = 0.01,
    kl_weight: KLWeight = 1.0,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
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
        (``"meanfield"``, ``"map"``) built here with ``**guide_options``.
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
        (e.g. :func:`linear_annealing`). Only β = 1 maximises the ELBO.
    device
        Where to fit (model and guide are moved there); default: the model's.
    seed
        Seeds the particles, the minibatch order and the guide's initialisation;
        the caller's global torch RNG state is left unchanged.
    progress
        Show a progress bar with the current loss (on rank 0 only when distributed).
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
        state whose loss was finite.
    RuntimeError
        With ``distributed=True`` and no initialised process group.

    See Also
    --------
    pyrobnn.infer.svi.init : The building blocks of this loop (``init``, ``SVIState.step``), for a
        training loop of your own; with the same arguments and seed it reproduces ``fit``.

    Notes
    -----
    The objective at each step is −(N/n · Σᵢ E_q log p(yᵢ | θ) − β KL(q‖p)) for a
    minibatch of n out of N observations (see :class:`pyrobnn.ELBO`). The
    parameters live on the model and guide modules (Pyro's module-local
    parameters) and are trained with a ``torch.optim`` optimiser on the ELBO
    module ``ELBO(...)(model, guide)``. Pyro's shape validation runs on the
    first step only.
    """
    state = init(
        model,
        guide,
        data,
        num_steps=num_steps,
        epochs=epochs,
        batch_size=batch_size,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        lr=lr,
        optimizer=optimizer,
        lr_decay=lr_decay,
        kl_weight=kl_weight,
        device=device,
        seed=seed,
        distributed=distributed,
        **guide_options,
    )
    total = state.num_steps
    refresh = max(1, total // 200)
    show = progress and state.rank == 0
    bar = tqdm(total=total, desc=f"fit {type(state.guide).__name__}", unit="step", disable=not show)
    with bar, state.session():
        start = time.perf_counter()
        for step in range(total):
            terms = state.step()
            if step % refresh == 0 or step == total - 1:
                bar.set_postfix(loss=f"{terms.loss:.4g}", refresh=False)
                bar.update(step + 1 - bar.n)
        elapsed = time.perf_counter() - start
    return FitResult(model, state.guide, state.history, total, seed, elapsed, state.config)


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
