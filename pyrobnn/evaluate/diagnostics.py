r"""Did the variational fit work? The PSIS k̂ diagnostic of Yao et al. (2018).

For draws θ_s ~ q, the importance ratios w_s = p(θ_s, y) / q(θ_s) would all be
equal if q were the posterior. The Pareto k̂ of their upper tail says how far
from that q is, on a scale that does not depend on the dimension:

========== ==============================================================
k̂ < 0.5    q is close to the posterior; importance sampling from q is fine
0.5 – 0.7  usable, with slower convergence of importance-weighted estimates
k̂ > 0.7    q misses posterior mass (often correlations or heavy tails);
           estimates from q, and q's uncertainty, are not to be trusted
========== ==============================================================

For the weights of a whole neural network expect k̂ far above 0.7 (6–7 on a
305-parameter net): a tractable guide never matches such a posterior. The
diagnostic is informative on small blocks (the noise scale, the last layer),
which ``sites=`` selects.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyrobnn import _globs
from pyrobnn._arviz import psislw
from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, model_device, model_dtype
from pyrobnn._warnings import DiagnosticWarning
from pyrobnn.posterior import Posterior

__all__ = ["KHAT_GOOD", "KHAT_POOR", "PoorFitWarning", "psis_khat", "psis_log_weights"]

#: Below this k̂ the guide is a good importance proposal for the posterior.
KHAT_GOOD = 0.5
#: Above this k̂ the guide is a poor approximation (Yao et al. 2018).
KHAT_POOR = 0.7


class PoorFitWarning(DiagnosticWarning):
    """The variational posterior is a poor approximation (PSIS k̂ above 0.7)."""


def psis_log_weights(
    post: Posterior,
    x: Any,
    y: Any,
    *,
    num_samples: int = 1000,
    sites: str | Sequence[str] | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    r"""Importance log weights log p(θ_s, y | x) − log q(θ_s) for θ_s ~ q, one per draw.

    With ``sites`` (glob patterns over site names), the block θ_B they select
    is drawn from q and every other site is held at the guide's median θ̃; the
    weights are then p(θ_B, θ̃, y) / q(θ_B), the ratio between the block's
    conditional posterior and its marginal under q, up to a constant.

    Raises
    ------
    ValueError
        For a point mass (``source.point_mass``: a MAP guide) or a source with
        no density (``source.has_density`` false: the draws of
        :func:`pyrobnn.mcmc`), or ``sites`` with a guide that cannot give a
        block's marginal density.
    """
    if not isinstance(post, Posterior):
        raise TypeError(f"psis_khat needs a pb.Posterior (result.posterior()), got {type(post).__name__}")
    if post.source.point_mass:
        raise ValueError(
            "a MAP guide is a point mass with no density, so its importance weights and k̂ are undefined; "
            "fit a guide with a density (meanfield, lowrank, fullrank, flow)"
        )
    if not post.source.has_density:
        raise ValueError(
            f"the posterior's draws ({type(post.source).__name__}) have no density q(θ), so importance "
            "weights and PSIS k̂ do not apply to them; for MCMC draws, R̂ and ESS across chains are the "
            "diagnostics (az.rhat, az.ess on pb.to_arviz(post))"
        )
    if not (isinstance(num_samples, int) and num_samples >= 10):
        raise ValueError(f"num_samples must be an integer >= 10 (k̂ fits the tail of the weights), got {num_samples!r}")
    model, guide = post.model, post.source
    dtype, device = model_dtype(model), model_device(model)
    x = as_tensor(x, "x", dtype=dtype, device=device)
    y = as_tensor(y, "y", dtype=dtype, device=device)
    check_pair(x, y)
    block = None if sites is None else _globs.select(sites, guide.site_names, argument="sites")
    if block is not None and len(block) < len(guide.site_names) and not hasattr(guide, "site_distribution"):
        raise ValueError(
            f"sites={list(block)} needs the marginal density of that block under q, which "
            f"{type(guide).__name__} does not provide (it has no site_distribution()). "
            "Use sites=None for the k̂ of all sites together."
        )
    with seeded(seed, device), torch.no_grad():
        chunks = [
            (chunk.log_p - chunk.log_q).double().cpu().numpy()  # type: ignore[operator]
            for chunk in post.chunks(num_samples, x, y, block=block)
        ]
    return np.concatenate(chunks)


def psis_khat(
    post: Posterior,
    x: Any,
    y: Any,
    num_samples: int = 1000,
    sites: str | Sequence[str] | None = None,
    *,
    seed: int | None = 0,
    warn: bool = True,
) -> float:
    r"""The Pareto k̂ of the importance ratios p(θ, y) / q(θ): does q approximate the posterior?

    Parameters
    ----------
    post
        The fitted posterior (``result.posterior()``).
    x, y
        The data the guide was fitted to (the whole training set).
    num_samples
        Draws from q. k̂ is estimated from the largest ``min(S/5, 3√S)`` weights,
        so its own Monte Carlo error shrinks slowly: use at least 1000 when a
        value near a threshold matters.
    sites
        ``None`` for all latent sites together, or glob patterns choosing a block
        (the other sites held at the guide's median; see
        :func:`psis_log_weights`).
    seed
        Seeds the draws (the caller's RNG state is left unchanged).
    warn
        Emit a :class:`PoorFitWarning` when k̂ > 0.7.

    Returns
    -------
    float
        k̂. Below 0.5: good; 0.5–0.7: usable; above 0.7: q is a poor
        approximation and its uncertainty should not be trusted.

    Notes
    -----
    For θ_s ~ q(θ), s = 1..S, the log importance ratios are
    log w_s = log p(θ_s) + Σᵢ log p(yᵢ | xᵢ, θ_s) − log q(θ_s). Pareto-smoothed
    importance sampling (Vehtari, Simpson, Gelman, Yao & Gabry 2015/2024) fits a
    generalized Pareto distribution to the upper tail of the w_s; its shape k
    is finite-variance territory below 0.5, and above 0.7 the importance
    sampling estimate converges impractically slowly. Yao et al. (2018) read it
    as a diagnostic of the variational approximation itself: k̂ measures how
    much of the posterior's mass q misses. Mean-field q on a correlated
    Gaussian posterior with marginal sd ratio r (q's sd / the posterior's along
    the long axis) has k = 1 − r² in that direction. The smoothing itself is
    ArviZ's ``psislw``.

    References
    ----------
    Yao, Vehtari, Simpson & Gelman (2018). Yes, but did it work?: Evaluating
    variational inference. ICML.

    Vehtari, Simpson, Gelman, Yao & Gabry (2024). Pareto smoothed importance
    sampling. JMLR 25(72).

    Examples
    --------
    >>> khat = pb.diagnostics.psis_khat(post, x, y, num_samples=1000)            # doctest: +SKIP
    >>> pb.diagnostics.psis_khat(post, x, y, sites="likelihood.scale")           # doctest: +SKIP
    """
    log_w = psis_log_weights(post, x, y, num_samples=num_samples, sites=sites, seed=seed)
    _, khat = psislw(log_w)
    if warn and khat > KHAT_POOR:
        where = "all latent sites" if sites is None else f"sites {sites!r}"
        warnings.warn(
            f"PSIS k̂ = {khat:.2f} > {KHAT_POOR} for {where}: the guide {type(post.source).__name__} is a poor "
            "approximation of the posterior there (it misses mass, e.g. correlations or tails), so its "
            "uncertainty is not to be trusted. For the weights of a whole network this is the norm; "
            "check small blocks with sites=..., or use a richer guide.",
            PoorFitWarning,
            stacklevel=2,
        )
    return khat
