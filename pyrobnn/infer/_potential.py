"""The potential energy of many chains at once, through the network's particle path.

:class:`BatchedPotential` evaluates U(u) = −log p(y, θ = T(u) | x) − log|det ∂T/∂u|
for a batch of unconstrained vectors u, one per chain, with a single vectorized
network pass (``BayesianModel.evaluate``, the path the ELBO's particles take): one
forward and one backward pass move every chain of :func:`pyrobnn.mcmc`'s
batched kernel.
"""

from __future__ import annotations

import pyro
import torch

from pyrobnn.model import BayesianModel

__all__ = ["BatchedPotential"]


class BatchedPotential:
    r"""U(u) and ∇U(u) for ``u`` of shape ``(C, D)``: C chains, D unconstrained latent dimensions.

    Sites whose prior is Normal on the real line (the usual weight prior) contribute
    ½ Σ ((u − μ)/σ)² in closed form, gradient included: autograd runs only through
    the network, the likelihood and the other priors, which halves the operations
    per leapfrog step of a small net (constants of U are dropped; HMC needs none).
    """

    def __init__(self, model: BayesianModel, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model = model
        self.x = x
        self.y = y
        self.sites = model.latent_sites()
        self.layout = model.layout()
        self.transforms = [self.layout.transforms[name] for name in self.sites]
        self.sizes = [self.layout.sizes[name] for name in self.sites]
        self.dim = self.layout.dim
        self.gaussian = [site.normal_prior() for site in self.sites.values()]
        loc = [g[0] if g is not None else torch.zeros(n) for g, n in zip(self.gaussian, self.sizes, strict=True)]
        precision = [g[1] if g is not None else torch.zeros(n) for g, n in zip(self.gaussian, self.sizes, strict=True)]
        self.loc = torch.cat(loc).to(x)
        self.precision = torch.cat(precision).to(x)

    def constrained(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ = T(u) per site, each ``(*lead, *shape)`` for ``u`` of shape ``(*lead, D)``."""
        return self.layout.constrain(u)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """U per chain, ``(C,)``, up to a constant."""
        return self._network_part(u) + self._gaussian_part(u)[0]

    def _gaussian_part(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centred = (u - self.loc) * self.precision
        return 0.5 * ((u - self.loc) * centred).sum(-1), centred

    def _network_part(self, u: torch.Tensor) -> torch.Tensor:
        chains = u.shape[0]
        draws = {}
        log_joint = u.new_zeros(chains)
        parts = torch.split(u, self.sizes, -1)
        for (name, site), t, part, gaussian in zip(
            self.sites.items(), self.transforms, parts, self.gaussian, strict=True
        ):
            value = t(part)
            if gaussian is None:
                log_joint = log_joint + t.log_abs_det_jacobian(part, value).reshape(chains, -1).sum(-1)
                log_prior = site.prior.distribution(site.shape).log_prob(value.reshape((chains, *site.shape)))
                log_joint = log_joint + log_prior.reshape(chains, -1).sum(-1)
            draws[name] = value.reshape((chains, *site.shape))
        out, latents = self.model.evaluate(draws, self.x)
        fn = self.model.likelihood.distribution(out, latents, out.shape[2:])
        return -(log_joint + fn.log_prob(self.y).reshape(chains, -1).sum(-1))

    def value_and_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U per chain ``(C,)`` and its gradient ``(C, D)``; chains are independent, so one
        backward pass of the sum gives every chain's own gradient."""
        # a divergent trajectory carries NaN and inf: they are rejected afterwards, not checked here
        with torch.enable_grad(), pyro.validation_enabled(False):
            u = u.detach().requires_grad_(True)
            energy = self._network_part(u)
            (grad,) = torch.autograd.grad(energy.sum(), u)
        prior, prior_grad = self._gaussian_part(u.detach())
        return energy.detach() + prior, grad + prior_grad

    def initial(self, init: str, chains: int) -> torch.Tensor:
        """``(chains, D)`` starting points: an independent prior draw per chain (``"prior"``), torch's
        default initialisation redrawn per chain (``"reset"``), or the net's weights (``"pretrained"``)."""
        rows = []
        for _ in range(chains if init != "pretrained" else 1):
            reset = self.model.net.reset_values() if init == "reset" else {}
            parts = []
            for name, site, t in zip(self.sites, self.sites.values(), self.transforms, strict=True):
                if init == "prior":
                    value = site.prior.distribution(site.shape).sample()
                else:
                    value = reset.get(name, site.init)
                parts.append(t.inv(value.to(self.x.dtype)).reshape(-1))
            rows.append(torch.cat(parts))
        start = torch.stack(rows).detach()
        return start.expand(chains, -1).clone() if init == "pretrained" else start
