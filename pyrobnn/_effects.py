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

from collections.abc import Collection, Mapping
from typing import Protocol

import torch
from pyro.poutine.runtime import effectful

__all__ = ["LINEAR_OVERRIDE", "LOCAL_REPARAM", "LinearOverride", "linear_override"]

#: Key of a guide site's ``infer`` dict marking a Normal whose draws may become pre-activation draws.
LOCAL_REPARAM = "local_reparam"

#: Type of the message :func:`linear_override` sends (a handler's method ``_pyro_linear_override``).
LINEAR_OVERRIDE = "linear_override"


class LinearOverride(Protocol):
    """What the ``nn.Linear`` layers a handler took over compute, for one run of a lifted network.

    It states the mathematics only. A covered layer (one of :attr:`layers`) runs at
    :attr:`values`, the same for every draw (what was drawn at those sites is
    ignored), and :meth:`perturb` turns its output there into its output. How the
    network runs with it, in batched products or in a forward pass per draw, is
    the lifted network's business (``pyrobnn/lift/_run.py``): it calls
    :meth:`perturb` once per covered layer and pass, on that layer's input of one
    row per observation, and raises where a forward pass shows that it cannot
    (a layer called twice or not at all, an input that is not a table of rows).
    """

    @property
    def layers(self) -> Collection[str]:
        """Module paths of the covered layers (a subset of those offered)."""
        ...

    @property
    def values(self) -> Mapping[str, torch.Tensor]:
        """Values of the covered layers' random parameters, by site name, shared by every draw."""
        ...

    def perturb(self, path: str, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The output of covered layer ``path`` on input ``h``, given ``out``, its output at :attr:`values`.

        ``h`` is ``(N, in)`` (one input shared by every draw) or ``(num, N, in)``;
        ``out`` is ``(N, out)`` (one draw) or ``(num, N, out)``, already shaped as
        the result is: whatever is random is drawn here, one value per element of
        ``out``, independently.
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
