"""Does a point estimate with a learned noise scale interpolate its data? The check after a MAP fit.

With a learned noise scale σ, the log joint of a network that can pass through every training
point has no maximum: log p(y | θ, σ) grows like −N log σ as the fit drives the residuals and σ
to zero together, and a MAP fit (or a Laplace approximation's MAP phase) only stops because its
length runs out. :func:`pyrobnn.fit` and :func:`pyrobnn.ensemble` then warn, by the effective
number of parameters γ at the fit's point (:func:`pyrobnn.guides.effective_parameters`): the
data leave N − γ degrees of freedom for the noise, and a fit with γ > ``INTERPOLATING`` · N has
next to none. A guide with a spread does not collapse (its KL term holds σ) and is not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pyrobnn.guides import Guide, LaplaceGuide, effective_parameters
from pyrobnn.likelihoods import SCALE_SITE
from pyrobnn.model import BayesianModel

__all__ = ["INTERPOLATING", "interpolation_message"]

#: γ / N above which a point estimate counts as interpolating. Measured on the command line's
#: 1-50-1 tanh model (learned noise, N(0, 1) priors) under num_steps="auto", seeds 0 and 1
#: (benchmarks/interpolation.py): fits whose σ holds over four times the steps are at 0.02-0.07
#: (gap1d, hetero1d) and 0.29-0.40 (a 1-10-1 net on 20 points); fits stopped while σ still falls
#: slowly at 0.29-0.39 (UCI energy and yacht; 0.40-0.46 after four times the steps); fits whose σ
#: collapses (to 0.13-0.18 of itself over four times the steps) at 0.968-0.999 (UCI Boston, friedman).
INTERPOLATING = 0.75


def interpolation_message(
    model: BayesianModel,
    guides: Sequence[Guide],
    data: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    who: str,
    numbers: Sequence[int] = (),
) -> str | None:
    """What to say about the point estimates among ``guides`` that interpolate their data, or ``None``.

    ``guides`` are fits of ``model`` (one, or an ensemble's members); ``data()`` gives the whole
    training data ``(x, y)``, ``y`` as the likelihood observes it, and is called only where a
    guide is checked; ``who`` begins the message, its ``{members}`` replaced by the ``numbers`` of
    the guides found (by default their positions from 1). Only MAP fits and Laplace
    approximations' MAP points with a learned likelihood scale are checked.
    """
    points = [n for n, guide in enumerate(guides) if guide.point_mass or isinstance(guide, LaplaceGuide)]
    if not points or SCALE_SITE not in model.likelihood.latent_priors():
        return None
    sites = model.latent_sites()
    dim = sum(sites[name].shape.numel() for name in model.net.site_names)
    x, y = data()
    observed = y.numel()
    if dim < INTERPOLATING * observed:  # γ ≤ D: this network cannot interpolate these data
        return None
    found = []
    for number in points:
        point = guides[number].median()
        gamma = effective_parameters(model, point, x, y)
        if gamma is not None and gamma > INTERPOLATING * observed:
            found.append((number, gamma, float(point[SCALE_SITE])))
    if not found:
        return None
    number, gamma, sigma = found[0]
    numbers = numbers or range(1, len(guides) + 1)
    subject = who.format(members=", ".join(str(numbers[n]) for n, *_ in found))
    where = "the fit's point" if len(guides) == 1 else f"member {numbers[number]}'s point"
    laplace = isinstance(guides[number], LaplaceGuide)
    return (
        f"{subject}: the point estimate interpolates the training data. At {where} the data "
        f"determine γ = {gamma:.1f} effective parameters of the network's {dim} for {observed} observations "
        f"(MacKay's count), leaving {observed - gamma:.1f} degrees of freedom for the noise, and the log joint "
        f"has no maximum in the learned noise scale: it rises without bound as the residuals and σ fall together, "
        f"so σ = {sigma:.3g} here is where the fit stopped, not an estimate of the noise, and a longer fit makes "
        "it smaller still. Predictions from this point claim a precision the data do not support"
        + (
            " (the Laplace approximation re-tunes σ by its evidence but keeps this point as its mean)"
            if laplace
            else ""
        )
        + ". Fit a guide with a spread ('meanfield', 'lowrank', 'fullrank': the KL term holds σ), fix the noise "
        "scale (likelihoods.Gaussian(scale=...)), or use a smaller network."
    )
