"""The conversion report of :func:`pyrobnn.lift`: the random sites, their shapes and priors.

:class:`Site` is one random parameter and :class:`SiteTable` all of them, with
the parameters that stayed deterministic; ``bnet.sites`` builds the table from
the lifted net and prints it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pyrobnn.priors import Prior

__all__ = ["Site", "SiteTable"]


@dataclass(frozen=True)
class Site:
    """One random parameter: its site name (the parameter path), shape and prior."""

    name: str
    shape: torch.Size
    prior: Prior

    @property
    def numel(self) -> int:
        return self.shape.numel()


class SiteTable(Sequence[Site]):
    """The conversion report of :func:`lift`: which parameters became random, with what prior.

    Prints as a table; indexable like a list of :class:`Site` and by site name.
    """

    def __init__(self, sites: Sequence[Site], deterministic: Mapping[str, torch.Size]) -> None:
        self._sites = list(sites)
        self.deterministic = dict(deterministic)

    def __len__(self) -> int:
        return len(self._sites)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for site in self._sites:
                if site.name == key:
                    return site
            raise KeyError(f"no random site {key!r}; sites: {[s.name for s in self._sites]}")
        return self._sites[key]

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites)

    @property
    def names(self) -> list[str]:
        return [site.name for site in self._sites]

    @property
    def num_random(self) -> int:
        """Total number of random scalars (the dimension D of the posterior over weights)."""
        return sum(site.numel for site in self._sites)

    def __str__(self) -> str:
        rows = [(s.name, str(tuple(s.shape)), str(s.numel), _describe(s.prior)) for s in self._sites]
        rows += [(n, str(tuple(shape)), str(shape.numel()), "deterministic") for n, shape in self.deterministic.items()]
        header = ("site", "shape", "size", "prior")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        line = "  ".join
        out = [line(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        out.append(line("-" * w for w in widths))
        out += [line(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        num_det = sum(shape.numel() for shape in self.deterministic.values())
        out.append(f"{self.num_random} random scalars in {len(self)} sites; {num_det} deterministic")
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)


def _describe(prior: Prior) -> str:
    return f"{type(prior).__name__}({prior.extra_repr()})"
