"""Explicit randomness: run code under a seed without touching the caller's RNG state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Fork torch's RNG (CPU, and the CUDA device if any) and seed it.

    With ``seed=None`` the code draws from (and advances) the global RNG, as
    torch itself would.
    """
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(int(seed))
        yield
