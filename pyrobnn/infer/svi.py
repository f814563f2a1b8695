r"""Stochastic variational inference as building blocks: :func:`init` and :meth:`SVIState.step`.

:func:`pyrobnn.fit` is the front door: one call, a finished :class:`~pyrobnn.FitResult`.
This module is what it is made of, for a training loop of your own — your logging, early
stopping, your own schedule. :func:`init` checks the arguments (the same as ``fit``'s) and
builds an :class:`SVIState`: the guide, the ELBO, the optimiser and its learning-rate
schedule, the minibatches, the step count and the history so far. Each
:meth:`SVIState.step` takes one optimiser step and returns that step's ELBO terms. With the
same arguments and seed, ``num_steps`` calls of ``step()`` reproduce ``fit`` exactly (``fit``
from one start: under ``num_steps="auto"`` it fits a low-rank or full-rank guide given no
``init`` from two starts and keeps the better, see its Notes).

A loop that stops once the ELBO no longer improves (here a Bayesian linear regression):

>>> import torch, pyrobnn as pb
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(100, 3, generator=g)
>>> y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.5 * torch.randn(100, generator=g)
>>> model = pb.BayesianModel(pb.lift(torch.nn.Linear(3, 1)), pb.likelihoods.Gaussian(scale=0.5))
>>> state = pb.svi.init(model, "meanfield", (x, y), num_steps=5000, lr=0.05, seed=0)
>>> best, stale = -float("inf"), 0
>>> while state.step_count < state.num_steps and stale < 3:
...     terms = state.step()                          # one optimiser step; its ELBO terms
...     if state.step_count % 50 == 0:
...         elbo = state.history.elbo[-50:].mean()    # the mean ELBO of the last 50 steps
...         best, stale = (elbo, 0) if elbo > best + 1.0 else (best, stale + 1)
>>> state.step_count < state.num_steps                # stopped: 3 checks without a nat gained
True
>>> post = pb.Posterior(model, state.guide)

Notes
-----
NumPyro's ``SVI.init`` / ``SVI.update`` and BlackJAX's ``init`` / ``step`` thread an
immutable state through pure functions. In PyTorch a fit's state (the parameters, the
optimiser's moments, the scheduler's count) lives in objects updated in place, so a pure
``state, terms = step(state, batch)`` would only pretend to be pure. pyrobnn keeps the split
into a function that builds the state and a step that advances it, a method of the mutable
state as ``torch.optim.Optimizer.step`` is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import numpy as np
import pyro
import torch

from pyrobnn._rng import RNGStream, seeded
from pyrobnn._tensors import model_device
from pyrobnn.guides import Guide
from pyrobnn.infer import distributed as _dist
from pyrobnn.infer._batching import Batches
from pyrobnn.infer._guide_args import build_guide, describe_guide
from pyrobnn.infer._optim import (
    KLWeight,
    OptimizerSpec,
    UntilConverged,
    fit_kl_weight,
    kl_weight_at,
    lr_decay_schedule,
    make_optimizer,
)
from pyrobnn.infer.elbo import ELBO, Terms
from pyrobnn.infer.history import History, divergence
from pyrobnn.infer.settings import FitSettings, plain_kl_weight
from pyrobnn.model import BayesianModel

__all__ = ["SVIState", "init"]


class SVIState:
    """A fit in progress: what :func:`init` builds and :meth:`step` advances.

    Build it with :func:`init`. Everything it holds is the real object, live: read
    it, or change it between steps (set ``kl_weight``, the scheduler's
    ``base_lrs``, save ``guide.state_dict()``).

    Attributes
    ----------
    model, guide
        The :class:`~pyrobnn.BayesianModel` and the guide being fitted (on ``device``).
    elbo
        The :class:`~pyrobnn.ELBO` estimator (its ``num_particles``, its ``last`` terms).
    optimizer, scheduler
        The ``torch.optim`` optimiser over the guide's and the model's trainable
        parameters, and the ``LambdaLR`` that decays its rate over the second half of
        ``num_steps`` (``lr_decay``). The scheduler sets each group's rate at every
        step, to its ``base_lrs`` entry times the decay: to steer the rate yourself,
        change ``base_lrs`` (with ``lr_decay=1.0`` for none of the decay), or put a
        scheduler of your own over ``optimizer`` in ``scheduler``.
    kl_weight
        β: a number or a schedule ``step -> weight``, read at every step.
    num_steps
        The planned length of the fit, the horizon of the learning-rate schedule. Your
        loop may stop before it or go past it. Under ``num_steps="auto"`` it is the
        longest the fit may run until the ELBO levels off, then the step at which the
        rate's decay ends (it changes once, during a step).
    step_count
        The optimiser steps taken so far.
    last
        The :class:`~pyrobnn.infer.elbo.Terms` of the last step (``None`` before the first).
    dataset_size
        N, to which each minibatch's log-likelihood is scaled (by N/n).
    device
        Where the fit runs.
    rank, world_size
        This process's place in a data-parallel fit (0 and 1 otherwise).
    settings
        The :class:`~pyrobnn.infer.settings.FitSettings` it was built with (frozen).
    config
        The same as plain data, with what was resolved (steps, particles, data size),
        as the ``config`` of a :class:`~pyrobnn.FitResult` records them.
    """

    def __init__(
        self,
        *,
        model: BayesianModel,
        guide: Guide,
        elbo: ELBO,
        loss: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        batches: Batches,
        settings: FitSettings,
        kl_weight: KLWeight,
        num_steps: int,
        length: UntilConverged | None,
        rng: RNGStream,
        device: torch.device,
        rank: int,
        world_size: int,
    ) -> None:
        self.model = model
        self.guide = guide
        self.elbo = elbo
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.settings = settings
        self.kl_weight = kl_weight
        self.num_steps = num_steps
        self._length = length
        self.step_count = 0
        self.last: Terms | None = None
        self.dataset_size = batches.size
        self.device = device
        self.rank, self.world_size = rank, world_size
        self._loss = loss  # the ELBO module, in DistributedDataParallel when distributed
        self._batches = batches
        self._next_batch = iter(batches)
        self._rng = rng
        self._validate = pyro.infer.util.is_validation_enabled()  # the caller's, for the first step
        self._params = [p for p in loss.parameters() if p.requires_grad]
        self._last_good = [p.detach().clone() for p in self._params]
        self._rows: list[tuple[float, float, float, float, float]] = []
        self._in_session = False
        self._kind = describe_guide(guide)

    @property
    def config(self) -> Mapping[str, Any]:
        """The settings as plain data, with what the fit resolved (``FitResult.config`` is this)."""
        return self.settings.record(
            guide=type(self.guide).__name__,
            num_steps=self.num_steps,
            dataset_size=self.dataset_size,
            num_particles=self.elbo.num_particles,
            optimizer=type(self.optimizer).__name__,
            device=str(self.device),
            world_size=self.world_size,
            kl_weight=plain_kl_weight(self.kl_weight),
        )

    @property
    def history(self) -> History:
        """The record of the steps taken so far (a new :class:`History` at each access)."""
        columns = np.array(self._rows, dtype=np.float64).reshape(-1, 5).T.copy()
        return History(*columns)

    def step(self, batch: tuple[Any, Any] | None = None) -> Terms:
        """Take one optimiser step on the negative ELBO; return its terms.

        Parameters
        ----------
        batch
            An ``(x, y)`` minibatch of your own (tensors or arrays, checked and moved
            like the data); its log-likelihood is scaled by N/n to the size N of the
            data given to :func:`init`. ``None`` (default): the next minibatch of those data.

        Returns
        -------
        Terms
            The step's loss, expected log-likelihood, KL and KL weight (averaged over
            the processes when distributed), as recorded in :attr:`history`.

        Raises
        ------
        FitError
            When the loss is NaN or infinite, or a joint guide cannot factorise its
            covariance. The guide's and the model's parameters are put back to those the
            previous step started from (its loss was finite) and the step is not counted;
            the optimiser's moments keep the previous step's update.

        Notes
        -----
        Each call draws its particles (and a shuffling ``DataLoader`` its order) from the
        state's own random stream, set by ``seed``, and puts the caller's global torch RNG
        back as it was; Pyro's module-local parameters are on for the step. Inside
        ``with state.session():`` both are arranged once for the whole block instead.
        """
        if self._in_session:
            return self._step(batch)
        with self.session():
            return self._step(batch)

    @contextlib.contextmanager
    def session(self) -> Iterator[SVIState]:
        """A block of steps that sets up their random stream and Pyro's settings once.

        Calling :meth:`step` outside a session costs about 15 µs more per step (the RNG
        state saved and restored, Pyro's setting switched) — a percent of a small
        network's step. Inside the block the global torch RNG *is* the fit's stream:
        anything else drawn from it there moves the fit's draws along too.
        """
        if self._in_session:  # re-entered: the outer block has set everything up
            yield self
            return
        with contextlib.ExitStack() as stack:
            stack.enter_context(pyro.settings.context(module_local_params=True))
            stack.enter_context(self._rng.active())
            self._in_session = True
            try:
                yield self
            finally:
                self._in_session = False

    def _diverged(self, step: int, what: str, cause: BaseException | None = None) -> NoReturn:
        """Put the parameters back to their last finite values and raise :class:`~pyrobnn.FitError` for ``step``."""
        with torch.no_grad():
            for param, good in zip(self._params, self._last_good, strict=True):
                param.copy_(good)
        last = self.last.loss if self.last is not None else math.nan
        raise divergence(
            f"fitting the {self._kind}: {what}", step, last, self.settings.lr, self.history, self.guide
        ) from cause

    def _step(self, batch: tuple[Any, Any] | None) -> Terms:
        x, y = next(self._next_batch) if batch is None else self._batches.prepare(batch)
        step = self.step_count
        self.elbo.kl_weight = kl_weight_at(self.kl_weight, step)
        # Pyro's shape checks on the first step (as the caller has them), then off for speed.
        with pyro.validation_enabled(self._validate and step == 0):
            try:
                loss = self._loss(x, y, dataset_size=self.dataset_size)
            except torch.linalg.LinAlgError as err:  # a joint guide's factor gone non-finite: diverged too
                self._diverged(step, f"a factorisation failed ({str(err).splitlines()[0]})", err)
        terms = self.elbo.last
        assert terms is not None
        if self.settings.distributed:  # one record for all processes; a divergence anywhere stops all of them
            values = _dist.mean_over_processes([terms.loss, terms.log_likelihood, terms.kl], self.device)
            terms = Terms(values[0], values[1], values[2], terms.kl_weight)
        with torch.no_grad():
            if not math.isfinite(terms.loss):
                self._diverged(step, f"the loss became {terms.loss}")
            for good, param in zip(self._last_good, self._params, strict=True):
                good.copy_(param)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr_now = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self._rows.append((terms.loss, terms.log_likelihood, terms.kl, terms.kl_weight, lr_now))
        if self._length is not None:  # num_steps="auto": the length is set once the ELBO levels off
            self._length.record(-terms.loss, terms.kl_weight)
            self.num_steps = self._length.num_steps
        self.last = terms
        self.step_count += 1
        return terms

    def __repr__(self) -> str:
        return (
            f"SVIState(guide={type(self.guide).__name__}, step_count={self.step_count}, "
            f"num_steps={self.num_steps}, last={self.last})"
        )


def init(
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
    distributed: bool = False,
    **guide_options: Any,
) -> SVIState:
    """Check the arguments and build the state of a fit, ready for its first :meth:`~SVIState.step`.

    The arguments are :func:`pyrobnn.fit`'s (but ``progress`` and ``check``) and mean
    the same; they are held as one :class:`~pyrobnn.infer.settings.FitSettings`,
    the state's ``settings``. ``num_steps`` (or ``epochs``) is the horizon of the
    learning-rate schedule, and how long to go on is up to your loop. The guide is
    built (from a kind string), initialised and moved under ``seed``; the caller's
    global torch RNG state is left as it was.

    Returns
    -------
    SVIState
        At step 0, holding the guide, the ELBO, the optimiser and its schedule, and
        the data's minibatches.

    Raises
    ------
    TypeError, ValueError
        For the arguments and data that :func:`pyrobnn.fit` refuses, with the same messages.
    RuntimeError
        With ``distributed=True`` and no initialised process group.
    """
    loop_only = [name for name in ("progress", "check") if name in guide_options]
    if loop_only:
        raise TypeError(
            f"pb.svi.init takes no {' or '.join(loop_only)}: {'they belong' if len(loop_only) > 1 else 'it belongs'} "
            "to pb.fit's loop. A loop of your own shows its own progress (e.g. a tqdm bar around state.step()) "
            "and checks the fit at the end with state.history.check()."
        )
    return start(model, guide, data, FitSettings.of_call(locals()), guide_options)


def start(model: BayesianModel, guide: Guide | str, data: Any, settings: FitSettings, guide_options: Any) -> SVIState:
    """:func:`init` from settings already held: what :func:`pyrobnn.fit` calls."""
    if not isinstance(model, BayesianModel):
        raise TypeError(f"fit needs a pb.BayesianModel, got {type(model).__name__}")
    s = settings
    rank, world_size = _dist.process_group() if s.distributed else (0, 1)
    target = torch.device(s.device) if s.device is not None else model_device(model)
    model.to(target)

    with seeded(s.seed, target), pyro.settings.context(module_local_params=True):
        guide = build_guide(model, guide, guide_options, own=FitSettings.names())
        num_particles = guide.num_particles if s.num_particles is None else s.num_particles
        guide.to(target)
        shard = (rank, world_size) if s.distributed else None
        batches = Batches(data, model, batch_size=s.batch_size, device=target, seed=s.seed, shard=shard)
        length = UntilConverged(s.lr_decay) if s.num_steps == "auto" else None
        if length is not None:
            num_steps = length.num_steps
        elif s.epochs is not None:
            num_steps = s.epochs * batches.steps_per_epoch
        else:
            num_steps = int(s.num_steps or 1000)

        kl_weight = fit_kl_weight(s.kl_weight, guide.correlates, s.num_steps)
        elbo = ELBO(num_particles, s.vectorize_particles, kl_weight_at(kl_weight, 0))
        loss: torch.nn.Module = elbo(model, guide)
        # DDP gives every process rank 0's parameters, then averages the gradients.
        if s.distributed:
            loss = _dist.wrap(loss, target)
            torch.manual_seed(_dist.rank_seed(s.seed, rank))  # each process draws its own particles
        # The model's deterministic parameters at lr; a guide may train some of its own groups
        # at a fraction of it (a flow's conditioner networks), applied through the schedule.
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
        groups = [g for g in groups + guide.param_groups() if g["params"]]
        opt = make_optimizer(s.optimizer, groups, s.lr)
        scales = [g.get("lr_scale", 1.0) for g in opt.param_groups]
        schedules = [
            length.multiplier(scale) if length is not None else lr_decay_schedule(num_steps, s.lr_decay, scale)
            for scale in scales
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedules)
        rng = RNGStream.capture(target)  # the stream the particles are drawn from, from here on

    return SVIState(
        model=model,
        guide=guide,
        elbo=elbo,
        loss=loss,
        optimizer=opt,
        scheduler=scheduler,
        batches=batches,
        settings=settings,
        kl_weight=kl_weight,
        num_steps=num_steps,
        length=length,
        rng=rng,
        device=target,
        rank=rank,
        world_size=world_size,
    )
