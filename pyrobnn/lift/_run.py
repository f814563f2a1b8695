"""Running the deterministic twin of the user's network on many draws of its weights at once.

Three ways, chosen per net and input: an ``nn.Sequential`` of ``nn.Linear`` and
elementwise layers on a 2-D input runs as a chain of batched matrix products
(``_fastpath.py``); any other net runs under ``torch.func.vmap(functional_call)``;
a net ``vmap`` cannot batch (:data:`UNBATCHABLE` layers, or code it cannot trace,
found on the first call) runs one draw at a time. :class:`Twin` holds that choice.

A handler's override of some ``nn.Linear`` layers (``pyrobnn/_effects.py``) states
what those layers compute; this module decides where it is called: between the
MLP path's batched products, and in forward hooks (:func:`_perturbed`) on the
other two paths, which also check that the pass lets it be called there.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

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

    ``mlp`` is the MLP fast path's plan, ``None`` for a net that is not a plain MLP
    or where the fast path is switched off (:meth:`use_fast_path`). ``vmap_ok`` is
    false for a net ``vmap`` cannot batch, known from its layers or learned from a
    failed first call (then with a warning); ``vmap_worked`` turns true after the
    first batched pass, after which a ``vmap`` error is the net's own.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.mlp = MLPPlan.of(net)  # plain MLPs run their draws as batched products, without vmap
        self.vmap_ok = not any(isinstance(m, UNBATCHABLE) for m in net.modules())
        self.vmap_worked = False

    def use_fast_path(self, on: bool) -> bool:
        """Switch the MLP fast path on or off; whether it is on (never for a net that is not a plain MLP)."""
        self.mlp = MLPPlan.of(self.net) if on else None
        return self.mlp is not None

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
        with _perturbed(self.net, override, x.shape[0]):
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
def _perturbed(net: nn.Module, override: LinearOverride, num_rows: int) -> Iterator[None]:
    """Pass each covered layer's output through ``override.perturb``, for one forward pass of ``net``.

    The layers themselves must run at ``override.values``. Enter it once per pass
    (inside the function ``vmap`` batches); it raises if a covered layer ran other
    than once in the pass or saw anything but one row per observation, where
    ``perturb``'s draw for each row would not be the layer's output. The messages
    name the fix for the one override pyrobnn has, local reparameterisation.
    """
    calls = dict.fromkeys(override.layers, 0)
    handles = [net.get_submodule(path).register_forward_hook(_hook(override, path, num_rows, calls)) for path in calls]
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


def _hook(override: LinearOverride, path: str, num_rows: int, calls: dict[str, int]) -> Any:
    """The forward hook of covered layer ``path``: count the call, check the input, perturb the output."""

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
        return override.perturb(path, h, output)

    return hook


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
