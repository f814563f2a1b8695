"""Lift an ordinary ``nn.Module`` into a Bayesian network: priors on chosen parameters.

The lifted net (:class:`BayesianNet`) holds a *deterministic twin* of the
user's network and one prior per random parameter. Its forward pass draws every
random parameter with ``pyro.sample`` at a site named by the parameter's path
(``"0.weight"``), flattens whatever particle dimensions Pyro put in front, and
runs the twin on all draws at once through
``torch.func.vmap(torch.func.functional_call)``. Sampling happens outside
``vmap``; only deterministic code runs inside it. This is what lets one forward
pass serve any number of vectorized particles. A plain ``nn.Sequential`` MLP runs
its draws as a chain of batched matrix products instead (``pyrobnn/lift/_fastpath.py``),
with the same results, faster (:attr:`BayesianNet.fast_path` switches it).

The package: this module is its public surface (:func:`lift`, :func:`lift_`);
``_convert.py`` chooses the random parameters and makes the twin, ``_net.py`` is
:class:`BayesianNet` (its sites, priors and sampling), ``_run.py`` runs the twin on
many draws (``vmap``, the MLP fast path in ``_fastpath.py``, or a loop) and
``_sites.py`` is the conversion report.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from pyrobnn._globs import sites_keyword
from pyrobnn.lift import _convert, _run
from pyrobnn.lift._net import BayesianNet
from pyrobnn.lift._sites import Site, SiteTable
from pyrobnn.priors import Normal, PriorSpec

__all__ = ["NORM_LAYERS", "UNBATCHABLE", "BayesianNet", "Site", "SiteTable", "lift", "lift_"]

#: Module types whose parameters stay deterministic unless ``sites`` names them.
NORM_LAYERS: tuple[type[nn.Module], ...] = _convert.NORM_LAYERS

#: Module types ``torch.func.vmap`` has no batching rule for (``aten::lstm``, ``aten::gru``,
#: ``aten::rnn_tanh``; pytorch#105982): nets holding one run their particles in a loop.
UNBATCHABLE: tuple[type[nn.Module], ...] = _run.UNBATCHABLE


def lift(
    net: nn.Module,
    prior: PriorSpec | None = None,
    *,
    sites: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    include: str | Sequence[str] | None = None,
) -> BayesianNet:
    """Return a Bayesian version of ``net``, leaving ``net`` itself untouched.

    Parameters
    ----------
    net
        Any ``torch.nn.Module`` whose forward takes one tensor and returns one tensor.
    prior
        A pyrobnn prior (default ``pb.priors.Normal(0.0, 1.0)``), a Pyro/torch
        distribution with scalar batch shape (applied i.i.d. to every element),
        a dict ``{glob: prior}`` (the first matching pattern wins), or a callable
        ``(name, param) -> prior`` that may return ``None`` to keep a parameter
        deterministic.
    sites, exclude
        Glob patterns over parameter names (``"0.weight"``, ``"**.bias"``;
        ``*`` is one name segment, ``**`` any dotted path): ``sites`` chooses
        the random parameters, ``exclude`` keeps some of them deterministic.
        By default every parameter is random except those of normalisation
        layers and frozen ones (``requires_grad=False``, e.g. a pretrained
        backbone). Excluded parameters stay deterministic and are trained as
        point estimates (frozen ones stay fixed).
    include
        Deprecated since 0.2.0: the old name of ``sites``, with the same
        meaning. Passing it issues a ``DeprecationWarning``; passing both is a
        ``TypeError``.

    Returns
    -------
    BayesianNet
        A new module; ``.sites`` is the conversion report.

    Examples
    --------
    >>> import torch, pyrobnn as pb
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> bnet = pb.lift(net, prior=pb.priors.Normal(0.0, 1.0), exclude="**.bias")
    >>> bnet.sites.names
    ['0.weight', '2.weight']
    >>> pb.lift(net, sites="2.*").sites.names  # only the output layer is Bayesian
    ['2.weight', '2.bias']
    """
    sites = sites_keyword("lift", sites, include, old="include")
    if not isinstance(net, nn.Module):
        raise TypeError(f"lift expects a torch.nn.Module, got {type(net).__name__}")
    return lift_(copy.deepcopy(net), prior, sites=sites, exclude=exclude)


def lift_(
    net: nn.Module,
    prior: PriorSpec | None = None,
    *,
    sites: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    include: str | Sequence[str] | None = None,
) -> BayesianNet:
    """In-place :func:`lift`: ``net`` itself becomes the deterministic twin.

    Its random parameters are turned into buffers (holding their current values,
    used by ``init="pretrained"``); do not keep training ``net`` on its own.
    ``sites``, ``exclude`` and the deprecated ``include`` are those of :func:`lift`.
    """
    sites = sites_keyword("lift_", sites, include, old="include")
    if isinstance(net, BayesianNet):
        raise TypeError("this network is already lifted; lift the original nn.Module")
    return BayesianNet(net, Normal(0.0, 1.0) if prior is None else prior, sites, exclude)
