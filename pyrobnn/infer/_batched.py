"""K fits of one model at once: the member as a leading batch dimension, like the particles.

For MAP and mean-field guides over a full batch of data, the K members of an
ensemble train as one problem: their unconstrained parameters are stacked into
``(K, D)`` tensors, every member's particles go through the network in one
vectorized pass (``BayesianModel.evaluate``, the ELBO's particle path), and one
backward pass of the sum of the members' losses gives each member its own
gradient (the members share no parameter, and Adam's update is elementwise).
Each member optimises exactly the objective :func:`pyrobnn.fit` gives its guide:

- MAP: −log p(y | θ) − log p(θ) at θ = T(u) (no Jacobian: a point mass has none);
- mean-field: −E_q[log p(y | θ)] + KL(q ‖ p), with q a Normal on u pushed through T;
  the KL in closed form for Normal priors on the real line, Monte Carlo elsewhere.

The member guides are built by :func:`pyrobnn.guides.make_guide` (so each starts
where ``pb.fit`` would start it under its seed), trained here, and written back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from torch.distributions import Normal, constraints

from pyrobnn._globs import module_key
from pyrobnn.guides import Guide, MAPGuide
from pyrobnn.infer._optim import UntilConverged, lr_decay_schedule
from pyrobnn.infer.history import History
from pyrobnn.model import BayesianModel, LatentSite

__all__ = ["BATCHED_OPTIONS", "BatchRun", "fit_batch"]

#: The guide kinds whose members :func:`fit_batch` trains together, and the options it honours for each
#: (any other option, such as mean-field's ``local_reparam``, changes the estimator: those fit one by one).
BATCHED_OPTIONS: dict[str, tuple[str, ...]] = {"map": (), "meanfield": ("init_scale",)}


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
    """Train ``guides`` (all MAP or all mean-field, over every site of ``model``) as one batch, in place.

    Under ``num_steps="auto"`` each member has its own length and rate schedule
    (:class:`~pyrobnn.infer._optim.UntilConverged` on its own ELBO): Adam steps all members at
    ``lr`` and each member's move is scaled by its own schedule's multiplier, which is Adam
    at that member's rate, since Adam's moments do not depend on the rate. A member whose fit
    has ended stays where it is while the others go on. ``progress(step, loss, end)`` gets
    the step, the running members' mean loss and the last step planned so far.
    """
    terms = _Terms(model, x, y)
    kind = "map" if isinstance(guides[0], MAPGuide) else "meanfield"
    names = terms.layout.names
    loc = torch.stack([_flat(g, "value" if kind == "map" else "loc", names) for g in guides]).requires_grad_(True)
    params = [loc]
    raw = None
    if kind == "meanfield":
        raw = torch.stack([_flat(g, "raw_scale", names) for g in guides]).requires_grad_(True)
        params.append(raw)
    k = len(guides)
    try:
        opt = torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        opt = torch.optim.Adam(params, lr=lr)
    lengths = [UntilConverged(lr_decay) for _ in range(k)] if num_steps == "auto" else []
    horizon = lengths[0].num_steps if lengths else int(num_steps)
    sched = None if lengths else torch.optim.lr_scheduler.LambdaLR(opt, lr_decay_schedule(horizon, lr_decay))
    schedules = [length.multiplier() for length in lengths]
    record = {key: np.full((k, horizon), np.nan) for key in ("loss", "log_likelihood", "kl", "lr")}
    ends = [horizon] * k
    running = torch.ones(k, dtype=torch.bool, device=loc.device)  # neither diverged nor ended
    failures: dict[int, str] = {}
    objective = _map_objective if kind == "map" else _meanfield_objective
    start = time.perf_counter()
    first = math.nan
    step = 0
    while step < max(ends) and bool(running.any()):
        saved = [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=False)
        with pyro.validation_enabled(False):  # a diverging member carries NaN: caught below, member by member
            log_lik, kl = objective(terms, loc, raw, num_particles)
        loss = kl - log_lik
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
            scale = torch.tensor(rates, dtype=loc.dtype, device=loc.device) / rate * running
            for p, before in zip(params, saved, strict=True):
                p.copy_(torch.lerp(before, p, scale.view(-1, *([1] * (p.dim() - 1)))))
        if sched is not None:
            sched.step()
        record["loss"][:, step] = loss.detach().cpu().numpy()
        record["log_likelihood"][:, step] = log_lik.detach().cpu().numpy()
        record["kl"][:, step] = kl.detach().cpu().numpy()
        record["lr"][:, step] = rates
        for member, length in enumerate(lengths):
            if bool(running[member]):
                length.record(-float(record["loss"][member, step]))
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
        for member, guide in enumerate(guides):
            _write(guide, "value" if kind == "map" else "loc", names, loc[member])
            if raw is not None:
                _write(guide, "raw_scale", names, raw[member])
    histories: list[History | None] = []
    for member in range(k):
        if member in failures:
            histories.append(None)
            continue
        n = ends[member]
        histories.append(
            History(
                loss=record["loss"][member, :n],
                log_likelihood=record["log_likelihood"][member, :n],
                kl=record["kl"][member, :n],
                kl_weight=np.ones(n),
                lr=record["lr"][member, :n],
            )
        )
    return BatchRun(histories, failures, elapsed, first)


def _map_objective(
    terms: _Terms, loc: torch.Tensor, raw: torch.Tensor | None, num_particles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y | θ̂ₖ) and −log p(θ̂ₖ) per member (the point mass's "KL", as in :class:`MAPGuide`)."""
    k = loc.shape[0]
    theta = terms.layout.constrain(loc)
    log_prior = sum(terms.log_prior(name, value, k) for name, value in theta.items())
    return terms.log_likelihood(theta), -log_prior  # type: ignore[return-value,operator]


def _meanfield_objective(
    terms: _Terms, loc: torch.Tensor, raw: torch.Tensor | None, num_particles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_q[log p(y | θ)] (Monte Carlo over ``num_particles`` per member) and KL(qₖ ‖ p) per member."""
    assert raw is not None
    k, dim = loc.shape
    scale = F.softplus(raw)
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
