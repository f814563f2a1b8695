"""The settings of a fit, held once: :class:`FitSettings`.

:func:`pyrobnn.fit` and :func:`pyrobnn.infer.svi.init` are the documented front doors and
keep their keywords; each turns them into one frozen, validated ``FitSettings`` as its
first act. Everything after reads that object: the :class:`~pyrobnn.infer.svi.SVIState`
(its ``settings``), the :class:`~pyrobnn.FitResult` (``settings``, and ``config``, the same
settings as plain data with what the fit resolved: the number of steps, particles, the
dataset's size), and :func:`pyrobnn.save`, which writes that record into the checkpoint.
A test holds the front doors' keywords and defaults to this class's fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from pyrobnn.infer._optim import KLWeight, OptimizerSpec

__all__ = ["FitSettings", "plain_kl_weight"]


@dataclass(frozen=True)
class FitSettings:
    """How a fit runs: the keywords of :func:`pyrobnn.fit`, checked once.

    The fields mean what :func:`pyrobnn.fit`'s parameters of the same names mean,
    with the same defaults; ``init`` reads all but ``progress`` and ``check``. A
    guide's own options (``rank=``, ``init_scale=``...) are not settings of the fit:
    they belong to the guide and its :meth:`~pyrobnn.guides.Guide.spec`.

    Raises
    ------
    ValueError
        When built with values no fit can run with, naming the field and the fix.
    TypeError
        For an optimiser that is neither a ``torch.optim.Optimizer`` nor a callable.

    Examples
    --------
    >>> from pyrobnn.infer.settings import FitSettings
    >>> FitSettings(num_steps=2000, lr=5e-3).record(num_steps=2000)["lr"]
    0.005
    """

    num_steps: int | str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    num_particles: int | None = None
    vectorize_particles: bool = True
    lr: float = 1e-2
    optimizer: OptimizerSpec | None = None
    lr_decay: float = 0.01
    kl_weight: KLWeight | None = None
    device: str | torch.device | None = None
    seed: int = 0
    distributed: bool = False
    progress: bool = True
    check: bool = True

    def __post_init__(self) -> None:
        if self.num_steps is not None and self.epochs is not None:
            raise ValueError("give num_steps or epochs, not both")
        for name in ("num_steps", "epochs", "batch_size", "num_particles"):
            value = getattr(self, name)
            if name == "num_steps" and value == "auto":
                continue
            if value is not None and not (_is_int(value) and value >= 1):
                also = ' or "auto"' if name == "num_steps" else ""
                raise ValueError(f"{name} must be an integer >= 1{also}, got {value!r} (None for the default)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.lr_decay, (int, float)) and 0.0 < self.lr_decay <= 1.0):
            raise ValueError(f"lr_decay must be in (0, 1] (1.0 keeps the rate constant), got {self.lr_decay!r}")
        if not (self.kl_weight is None or callable(self.kl_weight)) and not (
            isinstance(self.kl_weight, (int, float)) and self.kl_weight >= 0
        ):
            raise ValueError(f"kl_weight must be a number >= 0 or a schedule step -> weight, got {self.kl_weight!r}")
        if self.optimizer is not None and not (
            isinstance(self.optimizer, torch.optim.Optimizer) or callable(self.optimizer)
        ):
            raise TypeError(
                f"optimizer must be a torch optimizer or a callable params -> optimizer, got {self.optimizer!r}"
            )
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("vectorize_particles", "distributed", "progress", "check"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, in the order of :func:`pyrobnn.fit`'s keywords."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of_call(cls, arguments: Mapping[str, Any]) -> FitSettings:
        """The settings among a front door's arguments (its ``locals()`` on entry); the rest are ignored."""
        return cls(**{name: arguments[name] for name in cls.names() if name in arguments})

    def record(self, **resolved: Any) -> Mapping[str, Any]:
        """The settings as plain data (strings, numbers, booleans, ``None``), read-only.

        ``resolved`` adds or overrides what a fit settled on its way: the number of
        steps and particles, the guide's kind, the dataset's size. An optimiser is
        recorded by its type's name, a schedule of the KL weight by its ``repr``,
        a device as its string.
        """
        plain = {name: getattr(self, name) for name in self.names()}
        plain["optimizer"] = None if self.optimizer is None else _name_of(self.optimizer)
        plain["kl_weight"] = plain_kl_weight(self.kl_weight)
        plain["device"] = None if self.device is None else str(self.device)
        del plain["progress"]  # how the fit was shown, not how it ran
        return MappingProxyType({**plain, **resolved})


def plain_kl_weight(kl_weight: Any) -> Any:
    """A KL weight as plain data: a number or ``None`` as it is, a schedule by its ``repr``."""
    return kl_weight if kl_weight is None or isinstance(kl_weight, (int, float)) else repr(kl_weight)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _name_of(optimizer: Any) -> str:
    return type(optimizer).__name__ if isinstance(optimizer, torch.optim.Optimizer) else repr(optimizer)
