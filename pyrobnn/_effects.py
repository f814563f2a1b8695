"""The Pyro effects through which pyrobnn's models and guides let inference change their computation.

A lifted network and a guide are ordinary Pyro programs: run alone they draw
weights and compute with them. Inference code that wants them to compute
differently does not reach into them; it applies an effect handler (a
:class:`pyro.poutine.messenger.Messenger`) around them, and the handler
intercepts the messages they send. This module is the model side's half of that
contract, and it knows no handler:

* :data:`LOCAL_REPARAM`, a key of a guide site's ``infer`` dict: q at the site is
  a Normal over the weights or bias of an ``nn.Linear`` layer, and a handler may
  draw that layer's pre-activations instead of these values (Pyro's own
  ``infer={"enumerate": ...}`` marks sites for ``poutine.enum`` the same way);
* :func:`linear_override`, an effectful operation (type :data:`LINEAR_OVERRIDE`)
  that :class:`pyrobnn.BayesianNet` performs before it runs its draws: it offers
  its plain ``nn.Linear`` layers to the handlers, and a handler that takes some
  over answers with a :class:`LinearOverride`. Without such a handler the answer
  is ``None`` and the network runs its drawn weights.

Like any Pyro message, the offer passes through every handler on the stack, and
``poutine.block`` hides it. It is not a sample site: traces do not record it.

pyrobnn's ELBO applies the one handler that answers it,
``pyrobnn.infer._local_reparam.LocalReparamMessenger`` (local reparameterisation).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from pyro.poutine.runtime import effectful
from torch import nn

__all__ = ["LINEAR_OVERRIDE", "LOCAL_REPARAM", "LinearOverride", "linear_override"]

#: Key of a guide site's ``infer`` dict marking a Normal whose draws may become pre-activation draws.
LOCAL_REPARAM = "local_reparam"

#: Type of the message :func:`linear_override` sends (a handler's method ``_pyro_linear_override``).
LINEAR_OVERRIDE = "linear_override"


class LinearOverride(Protocol):
    """How a handler runs the ``nn.Linear`` layers it took over, for one run of a lifted network.

    A covered layer runs at :attr:`values` (the same for every draw; what was
    drawn at those sites is ignored), and its output then goes through
    :meth:`output` (batched draws, the MLP path) or the forward hooks of
    :meth:`hooks` (any other network, one pass per draw).
    """

    @property
    def values(self) -> Mapping[str, torch.Tensor]:
        """Values of the covered layers' random parameters, by site name, shared by every draw."""
        ...

    def output(self, path: str, h: torch.Tensor, out: torch.Tensor, num: int) -> torch.Tensor:
        """The output of layer ``path`` for ``num`` draws at once.

        ``h`` is its input, ``(N, in)`` shared by all draws or ``(num, N, in)``;
        ``out`` its output at :attr:`values`, ``(N, out)`` or ``(num, N, out)``.
        Returns ``(num, N, out)``, or ``out`` itself for a layer not covered.
        """
        ...

    def hooks(self, net: nn.Module, num_rows: int) -> AbstractContextManager[None]:
        """A context for one forward pass of ``net`` on ``num_rows`` observations.

        Inside it the covered layers (submodules of ``net``, by path) give their
        output for one draw; it may raise where the pass shows that they cannot be
        run this way (e.g. a layer called twice).
        """
        ...


@effectful(type=LINEAR_OVERRIDE)
def linear_override(layers: Mapping[str, tuple[str | None, str | None]]) -> LinearOverride | None:
    """Offer a network's ``nn.Linear`` layers to the handlers: the override of some, or ``None``.

    Parameters
    ----------
    layers
        Module path of each layer offered -> site names of its weight and bias
        (``None`` where that parameter is not random). Handlers must not change it.

    Returns
    -------
    LinearOverride or None
        A handler's answer; ``None`` (the default, no handler) runs every layer
        at the drawn values.
    """
    return None
