r"""ChEES-HMC: jittered HMC over many chains at once, adapted from the ensemble.

One iteration moves every chain with the same number of leapfrog steps, so a
step is one batched gradient of :class:`~pyrobnn.infer._potential.BatchedPotential`.
Warm-up adapts, pooling across chains:

- the step size ε, by dual averaging (Hoffman and Gelman 2014) of the harmonic
  mean of the chains' acceptance probabilities towards ``target_accept``
  (divergent proposals left out of the mean, as in BlackJAX);
- the trajectory length T, by stochastic approximation on log T of the root of the
  gradient of the ChEES criterion ¼ E[(‖θ′ − E θ′‖² − ‖θ − E θ‖²)²] (Hoffman, Radul
  and Sountsov 2021; they use Adam, see :class:`_TrajectoryLength` for why not here),
  each iteration's length jittered as T·hᵢ with hᵢ a van der Corput sequence in (0, 1);
- a diagonal mass matrix: the variance of each coordinate over every chain and
  iteration of a window of warm-up iterations, in Stan's doubling windows.

At the start of the mass-matrix windows and at the end of each, a chain stuck far
above the ensemble's potential (a start in a region of negligible mass, from which
every proposal diverges) is moved to the state of a healthy chain: warm-up only, so
the kept draws still come from each chain's own kernel. Sampling then runs with ε,
T and the mass matrix fixed (their averages over the last warm-up iterations).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from pyrobnn.infer._potential import BatchedPotential

__all__ = ["ChainsRun", "run_chees"]

#: An energy error beyond this many nats marks a trajectory as divergent (Stan's threshold).
DIVERGENCE_NATS = 1000.0
#: Largest change of log T in one warm-up iteration, and the clip of one update (as TFP and BlackJAX).
TRAJECTORY_LR = 0.1
LOG_UPDATE_CLIP = 0.35


@dataclass
class ChainsRun:
    """What :func:`run_chees` returns: draws in chain order with their statistics."""

    u: torch.Tensor  # (C, S, D) unconstrained draws
    diverging: torch.Tensor  # (C, S) bool
    accept: torch.Tensor  # (C, S) acceptance probabilities
    num_steps: torch.Tensor  # (S,) leapfrog steps of each sampling iteration (all chains alike)
    step_size: float
    trajectory_length: float
    scale: torch.Tensor  # (D,) the adapted sd of each coordinate (the inverse mass matrix's root)
    warmup_steps: int  # leapfrog steps spent in warm-up
    restarted: int  # chains moved, in warm-up, from a stuck state to another chain's
    seconds: float


def van_der_corput(i: int) -> float:
    """The i-th point (i ≥ 1) of the base-2 van der Corput sequence, in (0, 1)."""
    out, denom = 0.0, 1.0
    while i:
        denom *= 2
        i, bit = divmod(i, 2)
        out += bit / denom
    return out


def mass_windows(warmup: int) -> list[int]:
    """Warm-up iterations at whose end the mass matrix is re-estimated (Stan's schedule:
    a 15% start buffer, windows doubling from 25 iterations, a 10% end buffer)."""
    if warmup < 20:
        return []
    start, end = int(0.15 * warmup), warmup - int(0.1 * warmup)
    ends, width, pos = [], 25, start
    while pos + width < end:
        nxt = pos + width
        if nxt + 2 * width > end:  # the last window runs to the end buffer
            nxt = end
        ends.append(nxt)
        pos, width = nxt, 2 * width
    return ends or [end]


class _DualAveraging:
    """Nesterov dual averaging of log ε (Hoffman and Gelman 2014, Stan's constants)."""

    def __init__(self, step_size: float, target: float) -> None:
        self.target = target
        self.restart(step_size)

    def restart(self, step_size: float) -> None:
        self.mu = math.log(10 * step_size)
        self.t, self.h_bar, self.log_eps, self.log_eps_bar = 0, 0.0, math.log(step_size), 0.0

    def update(self, accept_stat: float) -> float:
        self.t += 1
        eta = 1 / (self.t + 10)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept_stat)
        self.log_eps = self.mu - math.sqrt(self.t) / 0.05 * self.h_bar
        weight = self.t**-0.75
        self.log_eps_bar = weight * self.log_eps + (1 - weight) * self.log_eps_bar
        return math.exp(self.log_eps)

    @property
    def final(self) -> float:
        return math.exp(self.log_eps_bar)


class _TrajectoryLength:
    """Stochastic approximation of the root of the ChEES criterion's gradient in log T.

    The gradient estimated over the chains is heavy-tailed while chains still travel
    from their starting points: one far chain outweighs the rest, and Adam's running
    second moment then stalls every later step (measured on a 1-20-1 network: T stayed
    at its first value through 300 warm-up iterations). Each update is instead the gradient
    divided by the chains' mean absolute term, a number in [−1, 1]: how consistently
    the chains ask for a longer (or shorter) trajectory. It vanishes where the
    gradient does, so its fixed point is ChEES's.
    """

    def __init__(self, length: float) -> None:
        self.log_t, self.t = math.log(length), 0
        self.log_t_bar = self.log_t

    def update(self, direction: float) -> float:
        self.t += 1
        self.log_t += max(-LOG_UPDATE_CLIP, min(LOG_UPDATE_CLIP, TRAJECTORY_LR * direction))
        weight = self.t**-0.5  # recent iterations weigh more (BlackJAX's decay_rate 0.5)
        self.log_t_bar = weight * self.log_t + (1 - weight) * self.log_t_bar
        return math.exp(self.log_t)

    @property
    def final(self) -> float:
        return math.exp(self.log_t_bar)


def _leapfrog(
    potential: BatchedPotential,
    u: torch.Tensor,
    p: torch.Tensor,
    grad: torch.Tensor,
    scale: torch.Tensor,
    step_size: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` leapfrog steps in whitened coordinates (u = scale · z): returns u, p, U, ∇U."""
    energy = None
    p = p - 0.5 * step_size * scale * grad
    for i in range(steps):
        u = u + step_size * scale * p
        energy, grad = potential.value_and_grad(u)
        p = p - (0.5 if i == steps - 1 else 1.0) * step_size * scale * grad
    assert energy is not None
    return u, p, energy, grad


def _initial_step_size(potential: BatchedPotential, u: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor) -> float:
    """Stan's heuristic on the ensemble: double or halve ε until one step's median acceptance crosses ½."""
    step_size, scale = 0.1, torch.ones_like(u[0])
    direction = 0
    for _ in range(40):
        p = torch.randn_like(u)
        _, p1, e1, _ = _leapfrog(potential, u, p, grad, scale, step_size, 1)
        log_accept = (energy + 0.5 * (p * p).sum(-1)) - (e1 + 0.5 * (p1 * p1).sum(-1))
        log_accept = torch.nan_to_num(log_accept, nan=-math.inf)
        bigger = float(log_accept.median()) > math.log(0.5)
        if direction == 0:
            direction = 1 if bigger else -1
        elif (direction == 1) != bigger:
            break
        step_size = step_size * 2.0 if direction == 1 else step_size / 2.0
    return step_size


def run_chees(
    potential: BatchedPotential,
    start: torch.Tensor,
    *,
    num_samples: int,
    warmup: int,
    target_accept: float,
    max_leapfrog: int,
    progress: bool,
) -> ChainsRun:
    """Run ChEES-HMC from ``start`` ``(C, D)``; draws under the caller's seed."""
    began = time.perf_counter()
    chains, dim = start.shape
    u = start.clone()
    energy, grad = potential.value_and_grad(u)
    scale = torch.ones(dim, dtype=u.dtype, device=u.device)
    step_size = _initial_step_size(potential, u, energy, grad)
    averaging = _DualAveraging(step_size, target_accept)
    trajectory = _TrajectoryLength(step_size)
    length = step_size
    windows = set(mass_windows(warmup))
    window_sum = torch.zeros_like(u)
    window_sq = torch.zeros_like(u)
    window_n = 0
    mass_from = int(0.15 * warmup) if windows else warmup
    draws = torch.empty((chains, num_samples, dim), dtype=u.dtype, device=u.device)
    diverging = torch.zeros((chains, num_samples), dtype=torch.bool, device=u.device)
    accept = torch.zeros((chains, num_samples), dtype=u.dtype, device=u.device)
    num_steps = torch.zeros(num_samples, dtype=torch.long)
    warmup_steps, restarted = 0, 0
    stuck = torch.zeros(chains, dtype=torch.bool, device=u.device)
    bar = tqdm(total=warmup + num_samples, desc="pyrobnn.mcmc (ChEES)", disable=not progress, leave=False)
    for it in range(warmup + num_samples):
        jitter = van_der_corput(it + 1)
        # jittered below the (capped) length, so that no two iterations need share a trajectory
        steps = max(1, math.ceil(jitter * min(length / step_size, max_leapfrog)))
        p = torch.randn_like(u)
        u1, p1, e1, g1 = _leapfrog(potential, u, p, grad, scale, step_size, steps)
        delta = (e1 + 0.5 * (p1 * p1).sum(-1)) - (energy + 0.5 * (p * p).sum(-1))
        delta = torch.nan_to_num(delta, nan=math.inf)
        divergent = delta > DIVERGENCE_NATS
        prob = torch.exp(-delta.clamp(min=0.0))
        take = torch.rand_like(prob) < prob
        if it < warmup:
            warmup_steps += steps
            kept = ~divergent
            harmonic = float(kept.sum() / (1.0 / prob[kept].clamp(min=1e-10)).sum()) if bool(kept.any()) else 0.0
            step_size = averaging.update(harmonic)
            length = _adapt_length(
                trajectory, u / scale, u1 / scale, p1, prob, divergent, jitter, length, step_size, max_leapfrog
            )
        u = torch.where(take[:, None], u1, u)
        energy = torch.where(take, e1, energy)
        grad = torch.where(take[:, None], g1, grad)
        if it < warmup:
            if it >= mass_from:
                window_sum += u
                window_sq += u * u
                window_n += 1
            if it + 1 == mass_from or it + 1 in windows:
                stuck = _stuck(energy, dim)
                if bool(stuck.any()) and not bool(stuck.all()):
                    restarted += int(stuck.sum())
                    u, energy, grad = _restart(stuck, u, energy, grad)
            if it + 1 in windows:
                scale = _ensemble_scale(window_sum[~stuck], window_sq[~stuck], window_n, int((~stuck).sum()))
                window_sum.zero_(), window_sq.zero_()
                window_n = 0
                averaging.restart(step_size)
            if it + 1 == warmup:
                step_size = averaging.final
                length = min(max(trajectory.final, step_size), max_leapfrog * step_size)
        else:
            s = it - warmup
            draws[:, s], diverging[:, s], accept[:, s], num_steps[s] = u, divergent, prob, steps
        bar.update()
        if it % 10 == 0:
            bar.set_postfix(step_size=f"{step_size:.2e}", steps=steps, accept=f"{float(prob.mean()):.2f}")
    bar.close()
    return ChainsRun(
        draws,
        diverging,
        accept,
        num_steps,
        step_size,
        length,
        scale,
        warmup_steps,
        restarted,
        time.perf_counter() - began,
    )


def _adapt_length(
    trajectory: _TrajectoryLength,
    u0: torch.Tensor,
    u1: torch.Tensor,
    velocity: torch.Tensor,  # all three in whitened coordinates
    prob: torch.Tensor,
    divergent: torch.Tensor,
    jitter: float,
    length: float,
    step_size: float,
    max_leapfrog: int,
) -> float:
    """One step of log T along the ChEES criterion's gradient, estimated over the chains."""
    ok = ~divergent & torch.isfinite(u1).all(-1)
    if not bool(ok.any()):
        return length
    w = prob * ok
    mean1 = (w[:, None] * torch.where(ok[:, None], u1, 0.0)).sum(0) / w.sum().clamp(min=1e-20)
    c1, c0 = torch.where(ok[:, None], u1 - mean1, 0.0), u0 - u0.mean(0)
    per_chain = jitter * length * ((c1 * c1).sum(-1) - (c0 * c0).sum(-1)) * (c1 * velocity).sum(-1)
    per_chain = torch.where(ok, per_chain, 0.0)
    direction = float((w * per_chain).sum() / (w * per_chain.abs()).sum().clamp(min=1e-30))
    if not math.isfinite(direction):
        return length
    return min(max(trajectory.update(direction), step_size), max_leapfrog * step_size)


def _stuck(energy: torch.Tensor, dim: int) -> torch.Tensor:
    """Chains whose potential is not finite, or above the ensemble's median by more than
    max(50, 10 √D) nats: where U's spread over a D-dimensional posterior is about √(D/2),
    such a chain sits in a region of negligible mass (a start it cannot leave, every proposal
    diverging) and would drag the mass matrix and the step size with it."""
    finite = torch.isfinite(energy)
    if not bool(finite.any()):
        return ~finite
    limit = energy[finite].median() + max(50.0, 10.0 * math.sqrt(dim))
    return ~finite | (energy > limit)


def _restart(
    stuck: torch.Tensor, u: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each stuck chain to the state of a healthy chain drawn at random (warm-up only: the
    draws kept afterwards come from each chain's own Markov kernel, so the target is unchanged)."""
    healthy = torch.nonzero(~stuck).squeeze(-1)
    donors = healthy[torch.randint(len(healthy), (int(stuck.sum()),), device=u.device)]
    u, energy, grad = u.clone(), energy.clone(), grad.clone()
    u[stuck], energy[stuck], grad[stuck] = u[donors], energy[donors], grad[donors]
    return u, energy, grad


def _ensemble_scale(total: torch.Tensor, squares: torch.Tensor, n: int, chains: int) -> torch.Tensor:
    """The root of each coordinate's variance over every chain and iteration of a window, shrunk
    towards 10⁻³ as Stan does. Across chains, not within them: chains that barely move early in
    warm-up would otherwise shrink the scale, and a small scale keeps them from moving."""
    count = n * chains
    mean = total.sum(0) / count
    variance = (squares.sum(0) / count - mean * mean) * count / max(count - 1, 1)
    variance = (count / (count + 5.0)) * variance + 1e-3 * (5.0 / (count + 5.0))
    return variance.clamp(min=1e-12).sqrt()
