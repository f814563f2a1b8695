"""Module paths from before the stages became packages (0.1.0 and earlier), deprecated.

``from pyrobnn.elbo import Terms`` still works until :data:`REMOVED_IN`, with a
``DeprecationWarning`` naming the module's new path. Three of the old paths are also
the names of functions at the top level (``pb.fit``, ``pb.mcmc``, ``pb.compare``), and
an attribute wins over a module path in ``import pyrobnn.fit as m`` (which therefore
binds the function): only the ``from ... import`` form reaches those modules.
``pyrobnn.svi``, ``pyrobnn.metrics`` and ``pyrobnn.diagnostics`` are public modules of
the top level, not deprecated.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

__all__ = ["ALIASES", "MOVED", "REMOVED_IN", "install"]

#: The version that removes the old module paths.
REMOVED_IN = "0.4.0"

#: Old module path (under ``pyrobnn.``) -> the module's path now.
MOVED = {
    "elbo": "pyrobnn.infer.elbo",
    "fit": "pyrobnn.infer.fit",
    "history": "pyrobnn.infer.history",
    "distributed": "pyrobnn.infer.distributed",
    "mcmc": "pyrobnn.infer.mcmc",
    "compare": "pyrobnn.evaluate.compare",
}


#: Top-level modules of the package that are also importable by their own path (``import pyrobnn.svi``).
ALIASES = {
    "svi": "pyrobnn.infer.svi",
    "metrics": "pyrobnn.evaluate.metrics",
    "diagnostics": "pyrobnn.evaluate.diagnostics",
}


class MovedModule(types.ModuleType):
    """Stands at an old module path; each attribute read warns and reads the module at its new path."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old, f"Deprecated: the module is {new} since 0.2.0; this path goes in {REMOVED_IN}.")
        self.__moved_to__ = new

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        warnings.warn(
            f"{self.__name__} is deprecated and will be removed in pyrobnn {REMOVED_IN}: "
            f"import {name} from {self.__moved_to__} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(sys.modules[self.__moved_to__], name)

    def __dir__(self) -> list[str]:
        return dir(sys.modules[self.__moved_to__])


def install(package: str) -> dict[str, MovedModule]:
    """Make the :data:`ALIASES` importable and put a :class:`MovedModule` at each old path; return those."""
    for name, module in ALIASES.items():
        sys.modules.setdefault(f"{package}.{name}", sys.modules[module])
    shims = {}
    for old, new in MOVED.items():
        shims[old] = sys.modules.setdefault(f"{package}.{old}", MovedModule(f"{package}.{old}", new))
    return shims  # type: ignore[return-value]
