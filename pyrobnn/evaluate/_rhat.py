r"""Nested R̂ (Margossian et al. 2022): convergence of many short chains grouped by their start."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["nested_rhat"]


def nested_rhat(draws: Any, superchain_size: int) -> np.ndarray:
    r"""Nested R̂ of MCMC draws from many short chains, grouped into superchains.

    Parameters
    ----------
    draws : array_like, shape (chains, draws, \*shape)
        The kept draws of one quantity (a weight, a prediction at each test point, ...), chain
        by chain. Anything ``numpy.asarray`` reads: a NumPy array, a CPU tensor, nested lists.
    superchain_size : int
        M, the number of chains in a superchain. Chains are grouped consecutively: chains
        ``0 .. M-1`` form the first superchain, ``M .. 2M-1`` the second, and so on. The
        chains of a superchain must start from the same point (the nested design); the
        superchains from dispersed points.

    Returns
    -------
    numpy.ndarray, shape ``shape``
        nR̂ of each element (a 0-d array for draws of shape (chains, draws)); at least 1.
        ``nan`` where the draws are not finite, or where every chain is constant and the
        superchains agree (nothing to compare); ``inf`` where every chain is constant but the
        superchains differ.

    Raises
    ------
    ValueError
        Fewer than two dimensions, a ``superchain_size`` below 1 or not dividing the number
        of chains, or fewer than two superchains.

    Notes
    -----
    With K superchains of M chains of N draws, :math:`\bar\theta_{\cdot mk}` the mean of chain
    m of superchain k, :math:`\bar\theta_{\cdot\cdot k}` the superchain's mean and
    :math:`\bar\theta` the mean of those (equations 15-19 of the paper):

    .. math::

        \widehat B = \frac{1}{K-1} \sum_k (\bar\theta_{\cdot\cdot k} - \bar\theta)^2, \qquad
        \widehat W = \frac1K \sum_k (\widetilde B_k + \widetilde W_k), \qquad
        \mathfrak n\widehat R = \sqrt{1 + \widehat B / \widehat W},

    with :math:`\widetilde B_k = \frac{1}{M-1}\sum_m (\bar\theta_{\cdot mk} -
    \bar\theta_{\cdot\cdot k})^2` the variance between the chains of superchain k (0 if
    M = 1) and :math:`\widetilde W_k` the mean over its chains of each chain's variance with
    divisor N − 1 (0 if N = 1). A superchain of M chains plays the part of one long chain:
    once the chains have forgotten their common start, its mean varies like that of
    M·N draws, so for stationary chains :math:`\mathfrak n\widehat R^2 - 1 \approx
    1/(M N_\text{eff})` with :math:`N_\text{eff}` the effective size of one chain, and nR̂
    approaches 1 as the number of chains per superchain grows, however short each chain.
    If the warm-up has not forgotten the start, superchains that began apart disagree and
    nR̂ stays above 1.

    With M = 1 (every chain its own superchain) this is the classic, non-split and not
    rank-normalised R̂ in the form :math:`\sqrt{1 + B/W}`, B the variance of the chain means
    and W the mean within-chain variance. Gelman and Rubin's R̂ (ArviZ's
    ``az.rhat(..., method="identity")``) is :math:`\sqrt{(N-1)/N + B/W}`, so with M = 1
    :math:`\mathfrak n\widehat R^2 = \widehat R^2 + 1/N`: nR̂ is never below 1 (the paper's
    footnote on the difference).

    Which to use: with a few long chains (say 4 × 1000) use ArviZ's default ``az.rhat``, the
    rank-normalised split R̂ of Vehtari et al. (2021): it splits each chain in half to see
    trends, rank-normalises to cope with heavy tails and takes the worse of the bulk and the
    tail, and it needs each chain to be long enough to estimate its own variance and mean
    well. With many short chains (tens to thousands of chains of a few to a few hundred
    draws each, as a batched sampler runs them) classic and split R̂ stay above 1 however
    well the sampler mixes, because each short chain's mean is noisy; nested R̂, on
    superchains that started from common points, is the diagnostic made for that regime.
    Report the classic R̂ beside it (``superchain_size=1``) where chains may sit in
    different modes.

    References
    ----------
    Margossian, C. C., Hoffman, M. D., Sountsov, P., Riou-Durand, L., Vehtari, A. & Gelman, A.
    (2022). Nested R̂: assessing the convergence of Markov chain Monte Carlo when running many
    short chains. arXiv:2110.13017 (*Bayesian Analysis*, 2024).

    Gelman, A. & Rubin, D. B. (1992). Inference from iterative simulation using multiple
    sequences. *Statistical Science* 7, 457-472.

    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C. (2021).
    Rank-normalization, folding, and localization: an improved R̂ for assessing convergence of
    MCMC. *Bayesian Analysis* 16, 667-718.

    Examples
    --------
    Two superchains of two chains, each chain three draws; the second superchain sits higher:

    >>> import numpy as np, pyrobnn as pb
    >>> draws = np.array([[0.0, 1, 2], [1, 2, 3], [3, 4, 5], [4, 5, 6]])
    >>> float(pb.nested_rhat(draws, superchain_size=2))
    2.0
    >>> pb.nested_rhat(np.stack([draws, -draws], axis=-1), superchain_size=2).shape
    (2,)
    """
    try:
        size = operator.index(superchain_size)
    except TypeError:
        raise TypeError(f"superchain_size must be an int, got {type(superchain_size).__name__}") from None
    x = np.asarray(draws, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(
            f"draws must have shape (chains, draws, *shape); got shape {x.shape}. "
            "For one chain's draws of a scalar, a chains axis is missing: pass draws[None, :]"
        )
    chains, n = x.shape[:2]
    if size < 1 or chains % size:
        raise ValueError(
            f"superchain_size={size} does not divide the {chains} chains into whole superchains: "
            f"pass a divisor of {chains} (chains are grouped consecutively, superchain_size at a time)"
        )
    k = chains // size
    if k < 2:
        raise ValueError(
            f"nested R-hat needs at least 2 superchains to compare; {chains} chains in superchains of "
            f"{size} make {k}: run chains from at least 2 different starts, or pass a smaller superchain_size"
        )
    x = x.reshape(k, size, n, *x.shape[2:])
    with np.errstate(invalid="ignore"):  # infinite draws: their nan is the answer
        chain_mean = x.mean(axis=2)  # (K, M, *shape)
        zero = np.zeros_like(chain_mean[0, 0])
        within = x.var(axis=2, ddof=1).mean(axis=1) if n > 1 else zero  # W̃_k
        between_chains = chain_mean.var(axis=1, ddof=1) if size > 1 else zero  # B̃_k
        b = chain_mean.mean(axis=1).var(axis=0, ddof=1)
        w = (between_chains + within).mean(axis=0)
    ratio = b / np.where(w > 0, w, 1.0)
    ratio = np.where(w > 0, ratio, np.where(b > 0, np.inf, np.nan))  # constant chains: nothing to compare
    return np.sqrt(1.0 + np.where(np.isfinite(b) & np.isfinite(w), ratio, np.nan))
