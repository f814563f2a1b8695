"""Turning what users pass as data into checked tensors on the model's device and dtype."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor", "check_finite", "check_pair", "eval_mode", "model_device", "model_dtype"]


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.get_default_dtype()


def model_device(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def as_tensor(value: Any, name: str, *, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """A tensor from an array-like; real data is converted to the model's float dtype."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a tensor or an array, got {type(value).__name__}") from err
    if tensor.is_complex():
        raise TypeError(f"{name} is complex ({tensor.dtype}); pyrobnn works with real data.")
    if tensor.dtype.is_floating_point and tensor.dtype != dtype:
        if isinstance(value, torch.Tensor) and tensor.dtype.itemsize > dtype.itemsize:
            warnings.warn(
                f"{name} is {tensor.dtype} but the model is {dtype}; converting {name} to {dtype}. "
                f"Convert the model with model.to({dtype}) to keep full precision.",
                UserWarning,
                stacklevel=3,
            )
        tensor = tensor.to(dtype)
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def check_finite(tensor: torch.Tensor, name: str) -> None:
    if tensor.dtype.is_floating_point:
        bad = ~torch.isfinite(tensor)
        if bad.any():
            rows = bad.reshape(len(tensor), -1).any(dim=1).nonzero().flatten()
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or infinite values, in {len(rows)} rows "
                f"(first at row {int(rows[0])}). Remove or impute those rows."
            )


def check_pair(x: torch.Tensor, y: torch.Tensor | None) -> None:
    if x.dim() == 0:
        raise ValueError("x is a scalar; pass a batch of inputs with the observations along dim 0.")
    if len(x) == 0:
        raise ValueError("x is empty: there is nothing to fit.")
    check_finite(x, "x")
    if y is not None:
        if y.dim() == 0:
            raise ValueError("y is a scalar; pass one target per row of x.")
        if len(y) != len(x):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}; they must have the same length.")
        check_finite(y, "y")


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Evaluation mode (no dropout) for the duration, then the caller's mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
