"""Fitting a guide by stochastic variational inference: :func:`fit` and :class:`FitResult`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyrobnn import distributed as _dist
from pyrobnn._data import Batches, as_tensor, check_pair, model_device, model_dtype, prepare_targets
from pyrobnn._rng import seeded
from pyrobnn.elbo import ELBO, Terms
from pyrobnn.guides import Guide, make_guide
from pyrobnn.model import BayesianModel

if TYPE_CHECKING:
    from pyrobnn.posterior import Posterior

__all__ = ["FitError", "FitResult", "History", "estimate_elbo", "fit", "linear_annealing"]

OptimizerSpec = torch.optim.Optimizer | Callable[[Iterable[Any]], torch.optim.Optimizer]
KLWeight = float | Callable[[int], float]


class FitError(RuntimeError):
    """The fit diverged: the loss became NaN or infinite.

    ``step`` is the step at which it happened and ``history`` the record up to
    it (the failed step's row is NaN).
    """

    def __init__(self, message: str, *, step: int, history: History) -> None:
        super().__init__(message)
        self.step = step
        self.history = history


@dataclass(frozen=True)
class History:
    """Per-step record of a fit (numpy arrays of length ``num_steps``).

    ``loss`` is the minimised objective −(log_likelihood − kl_weight · kl);
    ``log_likelihood`` the expected log-likelihood scaled to the dataset;
    ``kl`` the KL(q‖p) estimate (closed form where available).
    """

    loss: np.ndarray
    log_likelihood: np.ndarray
    kl: np.ndarray
    kl_weight: np.ndarray
    lr: np.ndarray

    @property
    def elbo(self) -> np.ndarray:
        """The ELBO per step at KL weight 1."""
        return self.log_likelihood - self.kl

    def __len__(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "loss": self.loss,
            "log_likelihood": self.log_likelihood,
            "kl": self.kl,
            "kl_weight": self.kl_weight,
            "lr": self.lr,
            "elbo": self.elbo,
        }


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
        from pyrobnn.posterior import Posterior

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
        and use the ``"nccl"`` backend. See :mod:`pyrobnn.distributed`.

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

    Notes
    -----
    The objective at each step is −(N/n · Σᵢ E_q log p(yᵢ | θ) − β KL(q‖p)) for a
    minibatch of n out of N observations (see :class:`pyrobnn.elbo.ELBO`). The
    parameters live on the model and guide modules (Pyro's module-local
    parameters) and are trained with a ``torch.optim`` optimiser on the ELBO
    module ``ELBO(...)(model, guide)``. Pyro's shape validation runs on the
    first step only.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError(f"fit needs a pb.BayesianModel, got {type(model).__name__}")
    if num_steps is not None and epochs is not None:
        raise ValueError("give num_steps or epochs, not both")
    if num_particles is not None and not (isinstance(num_particles, int) and num_particles >= 1):
        raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}")
    rank, world_size = _dist.process_group() if distributed else (0, 1)
    target = torch.device(device) if device is not None else model_device(model)
    model.to(target)

    with seeded(seed, target), pyro.settings.context(module_local_params=True):
        if isinstance(guide, str):
            guide = make_guide(guide, model, **guide_options)
        elif guide_options:
            raise TypeError(f"guide options {sorted(guide_options)} only apply when guide is a kind string")
        if not isinstance(guide, Guide):
            raise TypeError(f"guide must be a pyrobnn guide or a kind string, got {type(guide).__name__}")
        if not any(p.requires_grad for p in guide.parameters()):
            raise TypeError(
                f"the guide {type(guide).__name__} has no parameters to fit. Draws from pb.mcmc are a finished "
                "posterior: pass pb.mcmc's result to predict, compare, to_arviz or save as it is. To fit, "
                "start from a guide kind: pb.fit(model, 'fullrank', data)."
            )
        num_particles = guide.num_particles if num_particles is None else num_particles
        guide.to(target)
        shard = (rank, world_size) if distributed else None
        batches = Batches(data, model, batch_size=batch_size, device=target, seed=seed, shard=shard)
        if epochs is not None:
            if not (isinstance(epochs, int) and epochs >= 1):
                raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
            num_steps = epochs * batches.steps_per_epoch
        num_steps = 1000 if num_steps is None else num_steps
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")

        elbo = ELBO(num_particles, vectorize_particles, _kl_at(kl_weight, 0))
        loss_fn = elbo(model, guide)
        params: list[torch.Tensor] = [p for p in loss_fn.parameters() if p.requires_grad]
        # DDP gives every process rank 0's parameters, then averages the gradients.
        step_fn: torch.nn.Module = _dist.wrap(loss_fn, target) if distributed else loss_fn
        if distributed:  # after the common initialisation, each process draws its own particles
            torch.manual_seed(_dist.rank_seed(seed, rank))
        # The model's deterministic parameters at lr; a guide may train some of its own groups
        # at a fraction of it (a flow's conditioner networks), applied through the schedule.
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
        groups = [g for g in groups + guide.param_groups() if g["params"]]
        opt = _make_optimizer(optimizer, groups, lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, [_decay(num_steps, lr_decay, g.get("lr_scale", 1.0)) for g in opt.param_groups]
        )
        snapshot = [p.detach().clone() for p in params]

        record = np.full((5, num_steps), np.nan)
        show = progress and rank == 0
        bar = tqdm(total=num_steps, desc=f"fit {type(guide).__name__}", unit="step", disable=not show)
        refresh = max(1, num_steps // 200)
        last_finite = math.nan
        start = time.perf_counter()
        batch_iter = iter(batches)
        validate = pyro.infer.util.is_validation_enabled()
        for step in range(num_steps):
            x, y = next(batch_iter)
            elbo.kl_weight = _kl_at(kl_weight, step)
            # Pyro's shape checks on the first step (as the caller has them), then off for speed.
            with pyro.validation_enabled(validate and step == 0):
                loss = step_fn(x, y, dataset_size=batches.size)
            terms = elbo.last
            assert terms is not None
            if distributed:  # one record for all processes; a divergence anywhere stops all of them
                values = _dist.mean_over_processes([terms.loss, terms.log_likelihood, terms.kl], target)
                terms = Terms(values[0], values[1], values[2], terms.kl_weight)
            if not math.isfinite(terms.loss):
                with torch.no_grad():
                    torch._foreach_copy_(params, snapshot)
                bar.close()
                raise FitError(
                    f"the loss became {terms.loss} at step {step} (last finite loss: {last_finite:.6g}). "
                    "The guide was restored to its last finite state. Likely causes: a learning "
                    f"rate too high (lr={lr}), an initial scale too large, or inputs on a wildly "
                    "different scale than the prior (standardise x and y).",
                    step=step,
                    history=History(*record[:, :step]),
                )
            with torch.no_grad():
                torch._foreach_copy_(snapshot, params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            schedule.step()
            record[:, step] = (terms.loss, terms.log_likelihood, terms.kl, terms.kl_weight, lr_now)
            last_finite = terms.loss
            if step % refresh == 0 or step == num_steps - 1:
                bar.set_postfix(loss=f"{terms.loss:.4g}", refresh=False)
                bar.update(step + 1 - bar.n)
        bar.close()
        elapsed = time.perf_counter() - start

    history = History(*record)
    config = MappingProxyType(
        {
            "guide": type(guide).__name__,
            "num_steps": num_steps,
            "epochs": epochs,
            "batch_size": batch_size,
            "dataset_size": batches.size,
            "num_particles": num_particles,
            "vectorize_particles": vectorize_particles,
            "lr": lr,
            "lr_decay": lr_decay,
            "optimizer": type(opt).__name__,
            "kl_weight": kl_weight if isinstance(kl_weight, (int, float)) else repr(kl_weight),
            "device": str(target),
            "seed": seed,
            "distributed": distributed,
            "world_size": world_size,
        }
    )
    return FitResult(model, guide, history, num_steps, seed, elapsed, config)


def _kl_at(kl_weight: KLWeight, step: int) -> float:
    value = float(kl_weight(step)) if callable(kl_weight) else float(kl_weight)
    if not value >= 0:
        raise ValueError(f"the KL weight must be >= 0, got {value} at step {step}")
    return value


def _decay(num_steps: int, factor: float, scale: float = 1.0) -> Callable[[int], float]:
    half = num_steps // 2
    span = max(num_steps - 1 - half, 1)

    def multiplier(step: int) -> float:
        return scale * (1.0 if step <= half else factor ** ((step - half) / span))

    return multiplier


def _make_optimizer(spec: OptimizerSpec | None, params: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    if spec is None:
        # Fused: one kernel for all parameters' updates instead of several per tensor. On CPU it
        # took a 13-50-1 guide's update from 0.15 ms to 0.04 and an MNIST-sized MLP's from 2.1 ms
        # to 1.4. Where torch has no fused kernel for these tensors (a device or dtype it lacks),
        # the plain loop.
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.Adam(params, lr=lr)
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec):
        return spec(params)
    raise TypeError(f"optimizer must be a torch optimizer or a callable params -> optimizer, got {spec!r}")


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
