"""A particle-aware forward pass for plain multilayer perceptrons, without ``vmap``.

For an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations,
running ``P`` weight draws is a chain of batched matrix products, which torch
does faster than ``vmap(functional_call)`` can (``benchmarks/step_time.py``; the
numbers are in ``benchmarks/README.md``). :class:`BayesianNet` uses it where it
applies and ``vmap`` everywhere else; both give the same outputs for the same draws (``tests/test_fastpath.py``).

The first layer's input is shared by all draws: a weight-drawn first layer
multiplies it by all ``P`` weight matrices in one product, and one that a handler
took over (``pyrobnn/_effects.py``: local reparameterisation) runs once at its shared
values before the handler's ``perturb`` adds what differs per draw.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pyrobnn._effects import LinearOverride

__all__: list[str] = []

#: Layers that act on each element (or each row) alone: they broadcast over the draws.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
)

#: torch's registries of forward hooks on every module (``register_module_forward_*hook``).
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks")


class MLPPlan:
    """The layers of a plain MLP, ready to run on many draws at once."""

    def __init__(self, net: nn.Sequential, layers: list[tuple[str, nn.Module]]) -> None:
        self.net = net
        self.layers = layers

    @classmethod
    def of(cls, net: nn.Module) -> MLPPlan | None:
        """A plan for ``net`` if it is an ``nn.Sequential`` of Linear and elementwise layers."""
        if type(net) is not nn.Sequential:
            return None
        layers = [(name, module) for name, module in net._modules.items() if module is not None]
        # (not named_children(): it skips a module's second use, and a shared activation is common)
        linears = [id(module) for _, module in layers if type(module) is nn.Linear]
        if len(set(linears)) != len(linears):  # tied weights: one site, several uses
            return None
        kinds = [type(module) for _, module in layers]
        if nn.Linear not in kinds or not all(kind is nn.Linear or kind in ELEMENTWISE for kind in kinds):
            return None
        return cls(net, layers)

    def applies(self, x: torch.Tensor) -> bool:
        """Whether this pass can skip ``vmap``: a table of rows, and no hooks to honour."""
        if x.dim() != 2:
            return False
        modules = [self.net] + [module for _, module in self.layers]
        # Backward hooks do not count: vmap does not run them either.
        if any(m._forward_hooks or m._forward_pre_hooks for m in modules):
            return False
        return not any(getattr(nn.modules.module, name) for name in _GLOBAL_HOOKS)

    def run(
        self,
        draws: Mapping[str, torch.Tensor],
        num: int,
        x: torch.Tensor,
        override: LinearOverride | None = None,
    ) -> torch.Tensor:
        """Outputs ``(num, N, out)`` for ``draws`` (each ``(num, *shape)``) on rows ``x`` ``(N, in)``.

        The layers ``override`` covers run at its values, common to all draws, and
        their outputs, given a leading dim of draws, then go through
        ``override.perturb``. Parameters neither drawn nor overridden keep the net's
        own values.
        """
        shared = override.values if override is not None else {}
        covered = override.layers if override is not None else ()
        h = x  # (N, ·) while no draw has entered, then (num, N, ·)
        for name, module in self.layers:
            if isinstance(module, nn.Linear):
                out = self._linear(name, module, h, draws, shared, num)
                if override is not None and name in covered:
                    out = override.perturb(name, h, out.expand(num, *out.shape) if out.dim() == 2 else out)
                h = out
            elif isinstance(module, nn.Dropout) and module.training and module.p > 0:
                # a mask per draw; never in place, which an expanded input would refuse
                h = F.dropout(h.expand(num, *h.shape) if h.dim() == 2 else h, module.p, training=True)
            else:
                h = module(h)
        return h.expand(num, *h.shape) if h.dim() == 2 else h

    @staticmethod
    def _linear(
        name: str,
        module: nn.Linear,
        h: torch.Tensor,
        draws: Mapping[str, torch.Tensor],
        shared: Mapping[str, torch.Tensor],
        num: int,
    ) -> torch.Tensor:
        weight_name, bias_name = f"{name}.weight", f"{name}.bias"
        weight = draws.get(weight_name)
        if weight is None:
            out = F.linear(h, shared.get(weight_name, module.weight))
        elif h.dim() == 2:  # the shared input times every draw's matrix, in one product
            out = (h @ weight.reshape(-1, weight.shape[-1]).T).reshape(h.shape[0], num, -1).transpose(0, 1)
        else:
            out = torch.bmm(h, weight.transpose(1, 2))
        bias = draws.get(bias_name)
        if bias is not None:
            out = out + bias.unsqueeze(1)
        elif module.bias is not None:
            out = out + shared.get(bias_name, module.bias)
        return out
