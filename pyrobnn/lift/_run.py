"""Running the deterministic twin of the user's network on many draws of its weights at once.

Three ways, chosen per net and input: an ``nn.Sequential`` of ``nn.Linear`` and
elementwise layers on a 2-D input runs as a chain of batched matrix products
(``_fastpath.py``); any other net runs under ``torch.func.vmap(functional_call)``;
a net ``vmap`` cannot batch (:data:`UNBATCHABLE` layers, or code it cannot trace,
found on the first call) runs one draw at a time. :class:`Twin` holds that choice.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from pyrobnn._effects import LinearOverride
from pyrobnn.lift._fastpath import MLPPlan

__all__ = ["UNBATCHABLE", "Twin"]

# Documented (with a `#:` comment) where it is public: pyrobnn/lift/__init__.py.
UNBATCHABLE: tuple[type[nn.Module], ...] = (nn.RNNBase,)


class Twin:
    """The twin network and how it runs many draws: the MLP fast path, ``vmap``, or a loop.

    ``vmap_ok`` is false for a net ``vmap`` cannot batch, known from its layers or
    learned from a failed first call (then with a warning); ``vmap_worked`` turns
    true after the first batched pass, after which a ``vmap`` error is the net's own.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.mlp = MLPPlan.of(net)  # plain MLPs run their draws as batched products, without vmap
        self.vmap_ok = not any(isinstance(m, UNBATCHABLE) for m in net.modules())
        self.vmap_worked = False

    def single(
        self, draws: Mapping[str, torch.Tensor], x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor:
        """One pass with one value per site; the layers ``override`` covers run its way."""
        if self.mlp is not None:  # as one draw of the batched products, where they apply
            out = self._mlp_path({name: value.unsqueeze(0) for name, value in draws.items()}, 1, x, override)
            if out is not None:
                return out[0]
        shared = override.values if override is not None else {}
        return self.forward({**draws, **shared}, x, override)

    def forward(
        self, params: Mapping[str, torch.Tensor], x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor:
        """One functional pass; the layers ``override`` covers run its way."""
        if override is None:
            return functional_call(self.net, dict(params), (x,))  # type: ignore[no-any-return]
        with override.hooks(self.net, x.shape[0]):
            return functional_call(self.net, dict(params), (x,))  # type: ignore[no-any-return]

    def _mlp_path(
        self, draws: Mapping[str, torch.Tensor], num: int, x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor | None:
        """The MLP fast path's ``num`` passes, or ``None`` where it does not apply."""
        if self.mlp is None or not self.mlp.applies(x):
            return None
        return self.mlp.run(draws, num, x, override)

    def batched(
        self, draws: dict[str, torch.Tensor], num: int, x: torch.Tensor, override: LinearOverride | None
    ) -> torch.Tensor:
        """``num`` passes, one per row of ``draws`` (each ``(num, *shape)``): ``(num, *output)``.

        The layers ``override`` covers run its way; their sites are not in ``draws``
        but take ``override.values`` in every pass.
        """
        fast = self._mlp_path(draws, num, x, override)
        if fast is not None:
            return fast
        shared = override.values if override is not None else {}

        def one(params: dict[str, torch.Tensor], row: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            return self.forward({**params, **shared}, inputs, override)

        rows = torch.arange(num, device=x.device)  # batched even when every site is shared

        def one_by_one() -> torch.Tensor:
            return torch.stack([one({k: v[i] for k, v in draws.items()}, rows[i], x) for i in range(num)])

        if not self.vmap_ok:
            return one_by_one()
        try:
            with _batchable_attention():
                out = vmap(one, in_dims=(0, 0, None), randomness="different")(draws, rows, x)
        except RuntimeError as err:
            if self.vmap_worked:  # vmap ran this net before: the error is the net's own
                raise
            # vmap cannot batch some code a plain forward pass runs (.item(), Python control
            # flow on tensor values, in-place buffer updates). If the loop fails too, its own
            # error propagates: then it was never vmap's fault.
            looped = one_by_one()
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"the network cannot run under torch.func.vmap ({reason}); pyrobnn runs its particles "
                "and predictive draws one at a time instead, which is slower. To vectorize, rewrite the "
                "forward pass without .item(), Python control flow on tensor values or in-place buffer updates.",
                UserWarning,
                stacklevel=3,
            )
            self.vmap_ok = False
            return looped
        self.vmap_worked = True
        return out  # type: ignore[no-any-return]


@contextlib.contextmanager
def _batchable_attention() -> Iterator[None]:
    """Run attention through plain tensor ops that ``vmap`` can batch, for a while.

    ``vmap`` has no batching rule for the fused kernels behind attention: in eval
    mode without gradients ``nn.MultiheadAttention`` (and the Transformer layers)
    call ``aten::_native_multi_head_attention``, and ``F.scaled_dot_product_attention``
    picks a fused kernel (``_scaled_dot_product_flash_attention_for_cpu``). Under
    ``vmap`` both fall back to a slow per-row loop and warn. This turns off the
    attention fast path and restricts SDPA to its math backend; the user's
    settings are restored on exit.
    """
    with contextlib.ExitStack() as stack:
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled"):  # torch >= 2.3
            before = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, before)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # torch < 2.3
            pass
        else:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield
