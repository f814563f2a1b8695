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
:class:`pyrobnn.lift.BayesianNet` decides which layers qualify; the checks that
only a forward pass can make (how often a layer ran, on what shape) are made
here, on every pass.

How the pieces meet, all inside one ELBO evaluation (:func:`scope`):

1. the mean-field guide, built with ``local_reparam=True``, registers ``(loc, scale)``
   of each covered site with the scope and samples a :class:`LocalNormal` there, a
   placeholder whose "draw" is its mean: the traces keep their sites and the
   closed-form KL sees the guide's true Normal;
2. the lifted network, run by the model in the same scope, gives the covered layers
   their means and adds the pre-activation noise with forward hooks
   (:func:`linear_noise`).

Outside a scope (prediction, any other Pyro inference) the guide draws weights as usual.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

__all__: list[str] = []

_state = threading.local()


class Scope:
    """The guide's Normal parameters of the sites it left for the network to reparameterise."""

    def __init__(self) -> None:
        self.sites: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


@contextlib.contextmanager
def scope() -> Iterator[Scope]:
    """Open a scope for one guide pass and the model pass replaying it."""
    previous = getattr(_state, "scope", None)
    _state.scope = Scope()
    try:
        yield _state.scope
    finally:
        _state.scope = previous


def current() -> Scope | None:
    """The innermost open scope, or ``None`` outside the ELBO."""
    return getattr(_state, "scope", None)


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


@contextlib.contextmanager
def linear_noise(
    net: nn.Module,
    layers: Mapping[str, tuple[str | None, str | None]],
    variances: Mapping[str, torch.Tensor],
    num_rows: int,
) -> Iterator[None]:
    """Add each covered layer's pre-activation noise to its output, for one forward pass.

    ``layers`` maps a module path to the site names of its weight and bias (``None``
    where not random); ``variances`` holds q's elementwise variances of the sites to
    reparameterise.
    The layers themselves must run with the locs as their parameters, so that their
    output is the mean of the pre-activation. Enter it once per pass (inside the
    function ``vmap`` batches); it raises if a covered layer ran other than once in
    the pass or saw anything but one row per observation.
    """
    calls: dict[str, int] = {}
    handles = []
    for path, (weight, bias) in layers.items():
        weight_var = variances.get(weight) if weight is not None else None
        bias_var = variances.get(bias) if bias is not None else None
        if weight_var is None and bias_var is None:
            continue
        calls[path] = 0
        hook = _noise_hook(path, weight_var, bias_var, num_rows, calls)
        handles.append(net.get_submodule(path).register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    wrong = {path: count for path, count in calls.items() if count != 1}
    if wrong:
        path, count = next(iter(wrong.items()))
        why = (
            "its weights are used without calling the layer (e.g. F.linear(x, layer.weight)), or not at all"
            if count == 0
            else "weights used more than once per pass are shared across those uses"
        )
        raise ValueError(
            f"local reparameterisation needs each nn.Linear layer it covers to run once per forward "
            f"pass, but layer {path!r} ran {count} times: {why}, and must be drawn. Build the guide "
            "with local_reparam=False, or exclude that layer from the prior."
        )


def _noise_hook(
    path: str,
    weight_var: torch.Tensor | None,
    bias_var: torch.Tensor | None,
    num_rows: int,
    calls: dict[str, int],
) -> Any:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        calls[path] += 1
        (h,) = inputs
        if h.dim() != 2 or h.shape[0] != num_rows:
            raise ValueError(
                f"local reparameterisation draws one pre-activation per observation, but layer {path!r} "
                f"got an input of shape {tuple(h.shape)} for {num_rows} observations (it needs "
                f"({num_rows}, in_features)): its weights are shared across positions within an "
                "observation and must be drawn. Build the guide with local_reparam=False."
            )
        return output + pre_activation_std(h, weight_var, bias_var) * torch.randn_like(output)

    return hook


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
