"""Explicit randomness: run code under a seed without touching the caller's RNG state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["RNGStream", "seeded"]


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


class RNGStream:
    """A torch RNG stream of its own, resumed where it left off each time it is entered.

    :meth:`capture` takes the global RNG's current state (CPU, and the CUDA device's
    if any) as the stream's start; inside :meth:`active` the global RNG draws from the
    stream, and on the way out the stream keeps where it got to and the caller's RNG
    state is put back as it was.
    """

    def __init__(self, cpu: torch.Tensor, cuda: torch.Tensor | None, device: torch.device) -> None:
        self.cpu = cpu
        self.cuda = cuda
        self.device = device

    @classmethod
    def capture(cls, device: torch.device) -> RNGStream:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        cuda = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            try:
                yield
            finally:
                self.cpu = torch.get_rng_state()
                if self.cuda is not None:
                    self.cuda = torch.cuda.get_rng_state(self.device)
