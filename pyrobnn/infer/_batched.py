"""K fits of one model at once: the member as a leading batch dimension, like the particles.

For MAP, mean-field, low-rank and full-rank guides over a full batch of data, the
K members of an ensemble train as one problem: their unconstrained parameters are
stacked along a leading member dimension, every member's particles go through the network in one
vectorized pass (``BayesianModel.evaluate``, the ELBO's particle path), and one
backward pass of the sum of the members' losses gives each member its own
gradient (the members share no parameter, and Adam's update is elementwise).
Each member optimises exactly the objective :func:`pyrobnn.fit` gives its guide:

- MAP, and the MAP fit that a Laplace member starts with: −log p(y | θ) − log p(θ) at θ = T(u)
  (no Jacobian: a point mass has none); the caller then builds each Laplace member's Gaussian;
- mean-field: −E_q[log p(y | θ)] + KL(q ‖ p), with q a Normal on u pushed through T;
  the KL in closed form for Normal priors on the real line, Monte Carlo elsewhere;
- low-rank and full-rank: −E_q[log p(y | θ)] + β · E_q[log q(u) − log|det ∂θ/∂u| − log p(θ)], q the
  member's Pyro autoguide posterior built from its stacked parameters, the KL by Monte Carlo as the
  ELBO estimates it for a joint guide, and β the KL weight ``pb.fit`` gives the guide (a warm-up
  under ``num_steps="auto"``, :func:`~pyrobnn.infer._optim.fit_kl_weight`).

The member guides are built by :func:`pyrobnn.guides.make_guide` (so each starts
where ``pb.fit`` would start it under its seed), trained here, and written back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from torch.distributions import Normal, constraints, transform_to

from pyrobnn._globs import module_key
from pyrobnn.guides import FullRankGuide, Guide, LaplaceGuide, LowRankGuide, MAPGuide
from pyrobnn.infer._batched_q import JOINT_POSTERIORS, auto_of, rsample, unfactorisable
from pyrobnn.infer._optim import UntilConverged, fit_kl_weight, kl_weight_at, lr_decay_schedule
from pyrobnn.infer.history import History
from pyrobnn.model import BayesianModel, LatentSite

__all__ = ["BATCHED_OPTIONS", "BatchRun", "fit_batch"]

#: The guide kinds whose members :func:`fit_batch` trains together, and the options it honours for each
#: (any other option, such as mean-field's ``local_reparam``, changes the estimator: those fit one by one).
BATCHED_OPTIONS: dict[str, tuple[str, ...]] = {
    "map": (),
    "meanfield": ("init_scale",),
    "lowrank": ("rank", "init_scale"),
    "fullrank": ("init_scale", "max_dim"),
    # the MAP phase only (a point mass over every site); the caller builds each member's Gaussian after it
    "laplace": ("sites", "curvature", "structure", "prior_precision", "noise", "predictive", "max_dim", "rank"),
}


@dataclass
class BatchRun:
    """What :func:`fit_batch` did: per member its history (``None`` if it diverged) and why it stopped."""

    histories: list[History | None]
    failures: dict[int, str]
    elapsed_s: float
    first_step_s: float


class _Terms:
    """log p(y | θ) and log p(θ) for a batch of unconstrained vectors, through one network pass."""

    def __init__(self, model: BayesianModel, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.layout = model.layout()
        self.sites = model.latent_sites()
        # (μ, σ) of the Normal priors on the real line, whose KL from a Normal is closed-form
        self.normal = {name: _normal_prior(site) for name, site in self.sites.items()}

    def log_likelihood(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        out, latents = self.model.evaluate(theta, self.x)
        fn = self.model.likelihood.distribution(out, latents, out.shape[2:])
        return fn.log_prob(self.y).reshape(out.shape[0], -1).sum(-1)  # type: ignore[no-any-return]

    def log_prior(self, name: str, value: torch.Tensor, batch: int) -> torch.Tensor:
        site = self.sites[name]
        return site.prior.distribution(site.shape).log_prob(value).reshape(batch, -1).sum(-1)  # type: ignore[no-any-return]


def fit_batch(
    model: BayesianModel,
    guides: Sequence[Guide],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_steps: int | str,
    lr: float,
    lr_decay: float,
    num_particles: int,
    progress: Callable[[int, float, int], None] | None = None,
) -> BatchRun:
    """Train ``guides`` (all of one kind in :data:`BATCHED_OPTIONS`, over every site of ``model``) as one batch.

    Under ``num_steps="auto"`` each member has its own length and rate schedule
    (:class:`~pyrobnn.infer._optim.UntilConverged` on its own ELBO): Adam steps all members at
    ``lr`` and each member's move is scaled by its own schedule's multiplier, which is Adam
    at that member's rate, since Adam's moments do not depend on the rate. A member whose fit
    has ended stays where it is while the others go on. ``progress(step, loss, end)`` gets
    the step, the running members' mean loss and the last step planned so far.
    """
    terms = _Terms(model, x, y)
    stack = _stack(guides, terms.layout.names)
    params = stack.params
    first_param = params[0]
    k = len(guides)
    try:
        opt = torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        opt = torch.optim.Adam(params, lr=lr)
    kl_weight = fit_kl_weight(None, guides[0].correlates, num_steps)  # what pb.fit gives the guide
    lengths = [UntilConverged(lr_decay) for _ in range(k)] if num_steps == "auto" else []
    horizon = lengths[0].num_steps if lengths else int(num_steps)
    sched = None if lengths else torch.optim.lr_scheduler.LambdaLR(opt, lr_decay_schedule(horizon, lr_decay))
    schedules = [length.multiplier() for length in lengths]
    record = {key: np.full((k, horizon), np.nan) for key in ("loss", "log_likelihood", "kl", "kl_weight", "lr")}
    ends = [horizon] * k
    running = torch.ones(k, dtype=torch.bool, device=first_param.device)  # neither diverged nor ended
    failures: dict[int, str] = {}
    start = time.perf_counter()
    first = math.nan
    step = 0
    while step < max(ends) and bool(running.any()):
        saved = [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=False)
        beta = kl_weight_at(kl_weight, step)
        with pyro.validation_enabled(False):  # a diverging member carries NaN: caught below, member by member
            try:
                log_lik, kl = stack.objective(terms, num_particles)
            except torch.linalg.LinAlgError:  # a member's q no longer factorises: it diverged; retry without it
                if not _stop_unfactorisable(cast(_JointStack, stack), running, failures, ends, step, lr):
                    raise  # the batch's factorisation failed but no member's alone: not a divergence
                continue
        loss = beta * kl - log_lik
        finite = torch.isfinite(loss)
        torch.where(running & finite, loss, torch.zeros_like(loss)).sum().backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        grads_ok = torch.stack([torch.isfinite(g).reshape(k, -1).all(-1) for g in grads]).all(0)
        for member in (~(finite & grads_ok) & running).nonzero().flatten().tolist():
            why = "loss" if not bool(finite[member]) else "gradient"
            failures[member] = f"the {why} became NaN or infinite at step {step} (lr={lr})"
            running[member], ends[member] = False, step
        for p in params:
            p.grad[~running] = 0.0  # type: ignore[index]
        rate = opt.param_groups[0]["lr"]
        rates = [rate * schedule(step) for schedule in schedules] if schedules else [rate] * k
        opt.step()
        with torch.no_grad():  # each member's move at its own rate; a stopped one stays at its last state
            scale = torch.tensor(rates, dtype=first_param.dtype, device=first_param.device) / rate * running
            for p, before in zip(params, saved, strict=True):
                shape = (-1, *([1] * (p.dim() - 1)))  # where() and not a weight of 0, which turns inf into NaN
                p.copy_(torch.where(running.view(shape), torch.lerp(before, p, scale.view(shape)), before))
        if sched is not None:
            sched.step()
        record["loss"][:, step] = loss.detach().cpu().numpy()
        record["log_likelihood"][:, step] = log_lik.detach().cpu().numpy()
        record["kl"][:, step] = kl.detach().cpu().numpy()
        record["kl_weight"][:, step] = beta
        record["lr"][:, step] = rates
        for member, length in enumerate(lengths):
            if bool(running[member]):
                length.record(-float(record["loss"][member, step]), beta)
                ends[member] = length.num_steps
                if step + 1 >= length.num_steps:
                    running[member] = False
        if step == 0:
            first = time.perf_counter() - start
        if progress is not None:
            mean_loss = float(loss.detach()[running].mean()) if bool(running.any()) else math.nan
            progress(step, mean_loss, max(ends))
        step += 1
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        stack.write(guides)
    histories: list[History | None] = []
    for member in range(k):
        if member in failures:
            histories.append(None)
            continue
        n = ends[member]
        histories.append(
            History(*(record[key][member, :n] for key in ("loss", "log_likelihood", "kl", "kl_weight", "lr")))
        )
    return BatchRun(histories, failures, elapsed, first)


def _stop_unfactorisable(
    stack: _JointStack, running: torch.Tensor, failures: dict[int, str], ends: list[int], step: int, lr: float
) -> bool:
    """Stop the members whose q no longer factorises, and fill their slots with one that does; False if none."""
    bad = unfactorisable(stack.posterior, stack.constrained()).to(running.device)
    if not bool(bad.any()):
        return False
    for member in (bad & running).nonzero().flatten().tolist():
        failures[member] = f"its covariance could no longer be factorised at step {step} (lr={lr})"
        running[member], ends[member] = False, step
    good = (~bad).nonzero().flatten().tolist()
    with torch.no_grad():  # left out of the ensemble; the slot only has to keep the batch factorisable
        for p in stack.params:
            p[bad] = p[good[0]].clone() if good else 0.0
    return True


class _Stack:
    """The members' parameters stacked along a leading dimension, and their objective per member."""

    params: list[torch.Tensor]

    def objective(self, terms: _Terms, num_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per member: log p(y | θ) (a Monte Carlo mean where q has a spread) and the KL term the loss weighs."""
        raise NotImplementedError

    def write(self, guides: Sequence[Guide]) -> None:
        """Copy each member's trained parameters back into its guide."""
        raise NotImplementedError


def _stack(guides: Sequence[Guide], names: Sequence[str]) -> _Stack:
    """The stack for the members' kind (all of one kind: :func:`pyrobnn.ensemble` builds them so)."""
    if isinstance(guides[0], (MAPGuide, LaplaceGuide)):  # Laplace's first phase is a MAP fit
        return _PointStack(guides, names)
    if isinstance(guides[0], (LowRankGuide, FullRankGuide)):
        return _JointStack(guides, names)
    return _MeanFieldStack(guides, names)


class _PointStack(_Stack):
    """MAP (and Laplace's MAP phase): u per member; log p(y | θ̂ₖ) and −log p(θ̂ₖ) (the point mass's "KL")."""

    def __init__(self, guides: Sequence[Guide], names: Sequence[str]) -> None:
        self.names = names
        self.loc = torch.stack([_flat(g, "value", names) for g in guides]).requires_grad_(True)
        self.params = [self.loc]

    def objective(self, terms: _Terms, num_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.loc.shape[0]
        theta = terms.layout.constrain(self.loc)
        log_prior = sum(terms.log_prior(name, value, k) for name, value in theta.items())
        return terms.log_likelihood(theta), -log_prior  # type: ignore[return-value,operator]

    def write(self, guides: Sequence[Guide]) -> None:
        for member, guide in enumerate(guides):
            _write(guide, "value", self.names, self.loc[member])


class _MeanFieldStack(_Stack):
    """Mean-field members: E_q[log p(y | θ)] (``num_particles`` per member) and KL(qₖ ‖ p) per member."""

    def __init__(self, guides: Sequence[Guide], names: Sequence[str]) -> None:
        self.names = names
        self.loc = torch.stack([_flat(g, "loc", names) for g in guides]).requires_grad_(True)
        self.raw = torch.stack([_flat(g, "raw_scale", names) for g in guides]).requires_grad_(True)
        self.params = [self.loc, self.raw]

    def objective(self, terms: _Terms, num_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.loc
        k, dim = loc.shape
        scale = F.softplus(self.raw)
        eps = torch.randn((k, num_particles, dim), dtype=loc.dtype, device=loc.device)
        u = (loc.unsqueeze(1) + scale.unsqueeze(1) * eps).reshape(k * num_particles, dim)
        theta, log_det = terms.layout.constrain_with_log_det(u)
        log_lik = terms.log_likelihood(theta).reshape(k, num_particles).mean(1)
        kl = loc.new_zeros(k)
        locs, scales = terms.layout.split(loc), terms.layout.split(scale)
        mc = loc.new_zeros(k * num_particles)
        has_mc = False
        for name in terms.layout.names:
            normal = terms.normal[name]
            if normal is not None:  # closed form, as the ELBO uses for a Normal guide site and prior
                q = Normal(locs[name], scales[name])
                p = Normal(normal[0].to(loc), normal[1].to(loc))
                kl = kl + torch.distributions.kl_divergence(q, p).reshape(k, -1).sum(-1)
                continue
            has_mc = True  # log q(θ) − log p(θ), q the Normal on u pushed through T
            base = Normal(locs[name].unsqueeze(1), scales[name].unsqueeze(1))
            u_site = terms.layout.split(u.reshape(k, num_particles, dim))[name]
            mc = mc + base.log_prob(u_site).reshape(k * num_particles, -1).sum(-1)
            mc = mc - terms.log_prior(name, theta[name], k * num_particles)
        if has_mc:
            # log q(θ) = log N(u) − log|det ∂θ/∂u|; the Jacobian is all the Monte Carlo sites' (the
            # closed-form ones live on the real line, where T is the identity)
            kl = kl + (mc - log_det).reshape(k, num_particles).mean(1)
        return log_lik, kl

    def write(self, guides: Sequence[Guide]) -> None:
        for member, guide in enumerate(guides):
            _write(guide, "loc", self.names, self.loc[member])
            _write(guide, "raw_scale", self.names, self.raw[member])


class _JointStack(_Stack):
    """Low-rank and full-rank members: their Pyro autoguides' parameters stacked, q(u) rebuilt as a batch.

    The KL term is the ELBO's Monte Carlo estimate for a joint guide, log q(u) − log|det ∂θ/∂u| −
    log p(θ) at each particle (:class:`~pyrobnn.guides._joint.JointGuide` puts the Jacobian on its
    point masses), averaged over the particles.
    """

    def __init__(self, guides: Sequence[Guide], names: Sequence[str]) -> None:
        joint = [cast(LowRankGuide | FullRankGuide, g) for g in guides]
        autos = [auto_of(g) for g in joint]
        if list(joint[0].layout.names) != list(names):
            raise ValueError(
                f"batched members must cover every latent site of the model, in its order ({list(names)}); "
                "fit members over fewer sites one after another (batched=False)"
            )
        self.constraints = dict(autos[0]._pyro_params)
        self.keys = [name for name, _ in autos[0].named_parameters()]
        self.params = [
            torch.stack([dict(a.named_parameters())[key].detach() for a in autos]).clone().requires_grad_(True)
            for key in self.keys
        ]
        self.posterior = JOINT_POSTERIORS[type(autos[0]).__name__]

    def constrained(self) -> dict[str, torch.Tensor]:
        """The stacked parameters as the autoguide uses them: each PyroParam through its constraint."""
        values = {}
        for key, raw in zip(self.keys, self.params, strict=True):
            base = key.removesuffix("_unconstrained")
            values[base] = transform_to(self.constraints[base][0])(raw) if base in self.constraints else raw
        return values

    def objective(self, terms: _Terms, num_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.posterior(self.constrained())  # batch (K,), event (D,)
        u = rsample(q, num_particles)  # (K, P, D)
        log_q = q.log_prob(u.transpose(0, 1)).T  # (K, P)
        k, dim = u.shape[0], u.shape[2]
        u = u.reshape(k * num_particles, dim)
        theta, log_det = terms.layout.constrain_with_log_det(u)
        log_lik = terms.log_likelihood(theta).reshape(k, num_particles).mean(1)
        log_prior = sum(terms.log_prior(name, value, k * num_particles) for name, value in theta.items())
        kl = (log_q.reshape(-1) - log_det - log_prior).reshape(k, num_particles).mean(1)  # type: ignore[operator]
        return log_lik, kl

    def write(self, guides: Sequence[Guide]) -> None:
        for member, guide in enumerate(guides):
            own = dict(auto_of(cast(LowRankGuide | FullRankGuide, guide)).named_parameters())
            for key, stacked in zip(self.keys, self.params, strict=True):
                own[key].copy_(stacked[member])


def _normal_prior(site: LatentSite) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(μ, σ) shaped like the site, when its prior is a Normal on the real line; else None."""
    support = site.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is not constraints.real:
        return None
    prior = site.prior.distribution(site.shape)
    base = getattr(prior, "base_dist", prior)
    if not isinstance(base, Normal):
        return None
    return base.loc.expand(site.shape).detach(), base.scale.expand(site.shape).detach()


def _flat(guide: Guide, attribute: str, names: Sequence[str]) -> torch.Tensor:
    table = getattr(guide, attribute)
    return torch.cat([table[module_key(name)].detach().reshape(-1) for name in names]).clone()


def _write(guide: Guide, attribute: str, names: Sequence[str], flat: torch.Tensor) -> None:
    table = getattr(guide, attribute)
    pos = 0
    for name in names:
        param = table[module_key(name)]
        size = param.numel()
        param.copy_(flat[pos : pos + size].reshape(param.shape))
        pos += size
