r"""Local reparameterisation of mean-field ``nn.Linear`` layers (Kingma, Salimans & Welling 2015).

Under a mean-field Normal guide the pre-activation of a linear layer for one
input row :math:`h` is itself Normal:

.. math:: a = W h + b,\quad W_{kj} \sim \mathcal N(\mu_{kj}, \sigma_{kj}^2),\ b_k \sim \mathcal N(\nu_k, \tau_k^2)
          \;\Rightarrow\; a_k \sim \mathcal N\big(\textstyle\sum_j \mu_{kj} h_j + \nu_k,\;
          \sum_j \sigma_{kj}^2 h_j^2 + \tau_k^2\big).

Drawing ``a`` from this Normal, independently for every row, instead of drawing
``W`` and ``b`` once for the whole batch, gives each row's log-likelihood the
same distribution, hence the same expected log-likelihood and an unbiased ELBO,
without any ``(particles, out, in)`` weight tensor. The rows' estimates no longer
share a weight draw, so their covariances vanish: usually a large cut in variance on
minibatches, where those covariances are positive, but not always (see
``docs/concepts.md``).

It is exact only where each row's output depends on the weights through this one
product: a layer used once per forward pass, on an input of one row per
observation, in a network whose rows do not interact (no batch normalisation).
:class:`pyrobnn.lift.BayesianNet` offers only the layers that can qualify, and
makes the checks that only a forward pass can make (how often a layer ran, on
what shape) on every pass it runs with an override.

This is the training side's half; neither the network nor the guide knows it.
:class:`LocalReparamMessenger` is a Pyro effect handler that :class:`pyrobnn.ELBO`
wraps around its guide and its model, and it acts on the two effects of
``pyrobnn/_effects.py``:

1. at a guide sample site marked ``infer={"local_reparam": True}`` (a mean-field
   guide built with ``local_reparam=True`` marks the ``nn.Linear`` sites it
   covers) it keeps q's ``(loc, scale)`` and samples a :class:`LocalNormal`
   instead, a placeholder whose "draw" is its mean: the traces keep their sites,
   and the closed-form KL sees the guide's true Normal;
2. when the lifted network, run by the model under the same handler, offers its
   ``nn.Linear`` layers (``linear_override``), it takes over those whose sites it
   kept: they run at q's means, and :meth:`PreActivations.perturb` adds each
   row's pre-activation noise to their outputs (the network decides where it
   calls it: between the MLP path's batched products, or in forward hooks).

Outside this handler (prediction, any other Pyro inference) the guide draws weights
and the network uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger

from pyrobnn._effects import LOCAL_REPARAM

__all__ = ["LocalNormal", "LocalReparamMessenger", "is_local"]

#: Per layer path: the site names of its weight and bias (``None``: drawn or deterministic).
Layers = Mapping[str, tuple[str | None, str | None]]


class LocalReparamMessenger(Messenger):
    """Effect handler that fits marked mean-field ``nn.Linear`` sites by local reparameterisation.

    One instance must cover a guide pass and the model pass that replays it: it
    keeps state from the first to the second. :class:`pyrobnn.ELBO` wraps its guide
    and model in one, inside its particle plate (so that it sees each site's q
    before the plate broadcasts it), and clears :attr:`sites` before each estimate.
    As a context manager around plates (as below) it works too, but then takes q's
    parameters from their broadcast copies, whose gradient costs a tensor the size
    of all particles' weights.

    Attributes
    ----------
    sites
        q's ``(loc, scale)`` of each site taken over, by site name, with the shape
        of the parameter (any plate broadcasting removed).

    Examples
    --------
    >>> import torch, pyro, pyrobnn as pb
    >>> from pyrobnn.infer._local_reparam import LocalReparamMessenger
    >>> model = pb.BayesianModel(pb.lift(torch.nn.Linear(3, 1)), pb.likelihoods.Gaussian(scale=0.1))
    >>> guide = pb.guides.make_guide("meanfield", model, local_reparam=True)
    >>> with LocalReparamMessenger() as handler, pyro.plate("particles", 8, dim=-2):
    ...     guide()["weight"].shape, model.net(torch.randn(5, 3)).shape
    (torch.Size([8, 1, 1, 3]), torch.Size([8, 5, 1]))
    >>> sorted(handler.sites)
    ['bias', 'weight']
    """

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _pyro_sample(self, msg: Any) -> None:
        # Only a guide's own draw: a model site replayed from the guide carries the same
        # infer dict but already has its value.
        if not msg["infer"].get(LOCAL_REPARAM) or msg["is_observed"] or msg["value"] is not None:
            return
        name, fn = msg["name"], msg["fn"]
        base = fn
        while isinstance(base, torch.distributions.Independent):
            base = base.base_dist
        if not isinstance(base, dist.Normal):
            raise TypeError(
                f"site {name!r} is marked infer={{{LOCAL_REPARAM!r}: True}}, which needs q to be a Normal "
                f"(possibly .to_event), but it is {type(base).__name__}"
            )
        event_dim = len(fn.event_shape)
        self.sites[name] = (_unbroadcast(name, base.loc, event_dim), _unbroadcast(name, base.scale, event_dim))
        msg["fn"] = LocalNormal(base.loc, base.scale).to_event(event_dim)

    def _pyro_linear_override(self, msg: Any) -> None:
        if msg["value"] is not None or not self.sites:  # an inner handler answered; or nothing to take over
            return
        (layers,) = msg["args"]
        covered: dict[str, tuple[str | None, str | None]] = {}
        for path, (weight, bias) in layers.items():
            kept = (weight if weight in self.sites else None, bias if bias in self.sites else None)
            if kept != (None, None):
                covered[path] = kept
        if covered:
            msg["value"] = PreActivations(covered, self.sites)


class PreActivations:
    """The layers a :class:`LocalReparamMessenger` took over: q's means plus each row's noise.

    Implements ``pyrobnn._effects.LinearOverride`` for one run of a network.

    Attributes
    ----------
    layers
        Module path of each covered layer -> the site names of its weight and bias
        taken over (``None`` where that parameter is drawn or deterministic).
    values
        q's locations of those sites, by site name: the covered layers run at them.
    """

    def __init__(self, layers: Layers, sites: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.layers = dict(layers)
        names = [site for pair in self.layers.values() for site in pair if site is not None]
        self.values = {name: sites[name][0] for name in names}
        self.variances = {name: sites[name][1].square() for name in names}

    def perturb(self, path: str, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Layer ``path``'s pre-activations: ``out`` (their mean, at q's locations) plus Normal noise.

        The noise has the standard deviation :func:`pre_activation_std` gives for
        the input row ``h`` of each element of ``out`` (``h`` may lack ``out``'s
        leading dim of draws), and is drawn here, independently for every element.
        """
        weight, bias = self.layers[path]
        std = pre_activation_std(
            h,
            None if weight is None else self.variances[weight],
            None if bias is None else self.variances[bias],
        )
        return out + std * torch.randn(out.shape, dtype=out.dtype, device=out.device)


class LocalNormal(dist.Normal):
    """A mean-field site whose weights the network does not draw: its "sample" is its mean.

    Only the ELBO's closed-form KL may use it; a density of its placeholder value
    would be meaningless, so :meth:`log_prob` refuses.
    """

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self.loc.expand(self._extended_shape(sample_shape))

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "a locally reparameterised site has no drawn value to score; the ELBO must use the "
            "closed-form KL for it (MeanFieldGuide(local_reparam=True) requires kl='analytic')"
        )


def is_local(fn: Any) -> bool:
    """Whether a site distribution is a (possibly ``to_event``-wrapped) :class:`LocalNormal`."""
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return isinstance(fn, LocalNormal)


def _unbroadcast(name: str, value: torch.Tensor, event_dim: int) -> torch.Tensor:
    """``value`` without the batch dims that plates broadcast it to (stride 0 or size 1).

    Its gradient then passes through a particle-sized tensor: an ELBO applies the
    handler inside its plates, where there are no such dims.
    """
    batch_dims = value.dim() - event_dim
    if batch_dims == 0:
        return value
    lead = zip(value.shape[:batch_dims], value.stride()[:batch_dims], strict=True)
    if any(size != 1 and stride != 0 for size, stride in lead):
        raise ValueError(
            f"site {name!r}: local reparameterisation needs one q per weight, shared by every draw, "
            f"but q's parameters vary along the batch dims of shape {tuple(value.shape[:batch_dims])}"
        )
    return value[(0,) * batch_dims]


def pre_activation_std(h: torch.Tensor, weight_var: torch.Tensor | None, bias_var: torch.Tensor | None) -> torch.Tensor:
    """The standard deviation of ``W h + b`` under independent Normal ``W`` and ``b``.

    ``weight_var`` and ``bias_var`` are the elementwise variances of the locally
    reparameterised parts (``None`` where that part is drawn or deterministic).
    """
    if weight_var is not None:
        var = F.linear(h.square(), weight_var, bias_var)
    else:
        assert bias_var is not None
        var = bias_var
    # clamp: zero variance (an all-zero input row, no random bias) has no finite sqrt gradient
    return var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
