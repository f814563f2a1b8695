"""How many of a network's weights the data determine at a point: MacKay's effective number of parameters.

At a point θ* with the likelihood's Fisher curvature G = Σᵢ Jᵢᵀ Fᵢ Jᵢ and the priors' precision
P (diagonal), the eigenvalues λⱼ of P^{-1/2} G P^{-1/2} say how much the data sharpen each
direction against the prior, and γ = Σⱼ λⱼ / (λⱼ + 1) counts the well-determined ones (MacKay
1992, "Bayesian interpolation"). The residual sum of squares then has N − γ degrees of freedom,
so σ² ≈ RSS / (N − γ) for a Gaussian likelihood, where the maximum of the log joint in σ is
RSS / N. A fit with γ close to N interpolates its data.

The nonzero λⱼ are those of the smaller of the two Gram matrices, D × D or (N·O) × (N·O), so
the count costs the Jacobian and one symmetric eigendecomposition of the smaller side.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pyrobnn.guides._curvature import Block, data_chunks, forward_mode_ready, gauss_newton_factors, prior_precision
from pyrobnn.model import BayesianModel, LatentLayout

__all__ = ["MAX_GRAM", "MAX_JACOBIAN", "effective_parameters"]

#: The largest Gram matrix side (min(D, N·O)) the count decomposes: a 2000 × 2000 eigenproblem is about a second.
MAX_GRAM = 2000
#: The most numbers the whole Jacobian may hold (N·O·D; 2²⁴ float64 numbers are 128 MiB).
MAX_JACOBIAN = 2**24


def effective_parameters(
    model: BayesianModel, point: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> float | None:
    """γ, the effective number of the network's parameters at ``point``; ``None`` where it is not computed.

    ``point`` holds every latent site's value (a guide's ``median()``); ``y`` as the likelihood
    observes it. The network's sites are the block, the likelihood's latents (a learned noise
    scale) are held at the point. ``None`` when a prior's curvature at the point is not positive
    (no Gaussian approximation to whiten by) or when the Jacobian or the Gram matrix would exceed
    ``MAX_JACOBIAN`` numbers or ``MAX_GRAM`` rows.
    """
    forward_mode_ready()
    sites = model.latent_sites()
    layout = LatentLayout({name: sites[name] for name in model.net.site_names})
    with torch.no_grad():
        block = Block(model, layout, {name: value.detach() for name, value in point.items()})
        observed = y.numel()  # N·O scalar observations
        if min(layout.dim, observed) > MAX_GRAM or observed * layout.dim > MAX_JACOBIAN:
            return None
        precision = prior_precision(block).double()
        if not bool((precision > 0).all()):
            return None
        theta = block.vector()
        rows = []
        for xs, ys in data_chunks(x, y):
            jac, info = gauss_newton_factors(block, theta, xs, ys, "fisher")  # (n, O, D), (n, O, O)
            values, vectors = torch.linalg.eigh(info)  # Fᵢ = Rᵢ Rᵢᵀ with Rᵢ = V diag(√w)
            root = vectors * values.clamp(min=0).sqrt().unsqueeze(-2)
            rows.append((root.mT @ jac).reshape(-1, layout.dim))
        whitened = torch.cat(rows) / precision.sqrt()  # (N·O, D): G's factor, the prior whitened out
        gram = whitened @ whitened.T if whitened.shape[0] <= whitened.shape[1] else whitened.T @ whitened
        eigenvalues = torch.linalg.eigvalsh(gram).clamp(min=0)
    return float((eigenvalues / (eigenvalues + 1)).sum())
