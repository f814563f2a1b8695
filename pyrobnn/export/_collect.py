"""From fitted posteriors to the export dict: draws, predictive, log densities and history as numpy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from pyrobnn import _globs
from pyrobnn._rng import seeded
from pyrobnn._tensors import as_tensor, check_pair, model_device, model_dtype
from pyrobnn.export._core import HISTORY_GROUP, Groups, convert, stack_chains
from pyrobnn.infer.ensemble import EnsembleResult
from pyrobnn.infer.fit import FitResult, History
from pyrobnn.model import OBS, BayesianModel
from pyrobnn.posterior import ChainSource, MemberSource, Posterior

__all__ = ["MAX_DEFAULT_WEIGHTS", "default_site_dims", "default_sites", "to_arviz"]

#: Nets with more random weights than this export only the likelihood's sites and the last layer by default.
MAX_DEFAULT_WEIGHTS = 100_000
#: The dimension of observations in the data-indexed groups.
OBS_DIM = "obs_id"

PosteriorLike = Posterior | FitResult


def to_arviz(
    post: PosteriorLike | Sequence[PosteriorLike],
    x: Any = None,
    y: Any = None,
    *,
    num_samples: int = 1000,
    seed: int | None = None,
    sites: str | Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    var_names: str | Sequence[str] | None = None,
) -> Any:
    r"""Export a fitted posterior (or several, as chains) to ArviZ.

    Parameters
    ----------
    post
        A :class:`pyrobnn.Posterior` or a :class:`pyrobnn.FitResult` (which also
        exports the ELBO history), or a list of them: independent fits of the
        same model become the chains, so ``az.rhat`` and ``az.ess`` across them
        reveal a fit that depends on where it started. Make the fits independent
        starts: ``pb.fit(model, kind, data, init="reset", seed=c)`` for chain
        ``c``, each on a model built the same way. With the default
        ``init="pretrained"`` every refit starts at the same network weights and
        ``seed`` moves only the particles and minibatches, which hides most of
        the spread between starts.
    x, y
        Data to evaluate the posterior on (usually the training data). With
        ``x``: ``posterior_predictive`` and ``constant_data``; with ``y`` too:
        ``log_likelihood`` (pointwise, for ``az.loo``/``az.waic``),
        ``observed_data`` and ``sample_stats.log_p``.
    num_samples
        Draws per chain.
    seed
        Seeds the draws; chain ``c`` uses ``seed + c``. ``None`` draws from
        torch's global RNG.
    sites
        Sites to export in ``posterior``: glob patterns over site names
        (``"2.*"``, ``"**.bias"``), ``"all"``, or ``None`` for every site when
        the net has at most :data:`MAX_DEFAULT_WEIGHTS` random weights and
        otherwise the likelihood's sites and the last layer.
    coords, dims
        ArviZ coordinates and dims, merged over the defaults: each site's axes
        are named ``{site}_out``, ``{site}_in`` (and ``{site}_k0``, …) for
        linear and convolutional layers, ``{site}_dim_i`` otherwise;
        observations run along ``obs_id``.
    var_names
        Deprecated (since 0.2.0) name of ``sites``.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        With groups ``posterior``, ``sample_stats`` (``log_q``, and ``log_p``
        with ``y``), the data groups above, and ``elbo_history`` (per step:
        ``loss``, ``log_likelihood``, ``kl``, ``kl_weight``, ``lr``, ``elbo``;
        dims ``(chain, step)``) when fit results were given.

    Notes
    -----
    A posterior whose source has chains (``source.has_chains``: the draws of
    :func:`pyrobnn.mcmc`) exports its own chains, each evenly thinned to
    ``num_samples`` draws where it holds more (the order kept, so R̂ and ESS
    are those of the sampler); its ``sample_stats`` hold the sampler's
    statistics (``diverging``, ``n_steps``, ``step_size``, and ``tree_depth``
    for NUTS: ``source.sample_stats()``), and ``log_p``. ``log_q`` is there
    only for a source with a density (``source.has_density``).

    An ensemble (``source.has_members``: :func:`pyrobnn.ensemble`) whose members
    weigh the same exports each member as a chain, ``num_samples`` draws each
    (with an :class:`pyrobnn.EnsembleResult`, each member's ELBO history too):
    R̂ across the members then measures how differently the fits from
    independent starts describe the posterior (the multimodality one fit
    misses), and the pooled draws are the ensemble's. An ensemble with unequal
    (stacking) weights is one chain of draws of the weighted mixture, since
    equal chains would weigh the members equally; its weights are in the
    attribute ``ensemble_weights``. To see its members as chains, export
    ``[pb.Posterior(model, m) for m in post.source.sources]``.

    ``log_q`` is the guide's log density log q(θ_s) and ``log_p`` the joint
    log p(θ_s, y | x) = log p(θ_s) + Σᵢ log p(yᵢ | xᵢ, θ_s), both over *all*
    latent sites, so log_p − log_q are the importance log weights of
    :func:`pyrobnn.evaluate.diagnostics.psis_khat`. Draws from a variational posterior
    are independent, so within a chain the effective sample size is the number
    of draws; across chains, R̂ compares independent fits.

    Examples
    --------
    >>> idata = pb.to_arviz(result, x, y, num_samples=500, seed=0)   # doctest: +SKIP
    >>> az.loo(idata)                                                  # doctest: +SKIP
    """
    sites = _globs.sites_keyword("to_arviz", sites, var_names, old="var_names")
    items = list(post) if isinstance(post, (list, tuple)) else [post]
    if not items:
        raise ValueError("to_arviz needs a posterior, or a non-empty list of them (one per chain)")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    posts: list[Posterior] = []
    histories: list[History | None] = []
    weights: list[float] = []
    for i, item in enumerate(items):
        source = item.guide if isinstance(item, FitResult) else getattr(item, "source", None)
        if getattr(source, "has_members", False):
            weights = cast(MemberSource, source).weights.tolist()
        if isinstance(item, EnsembleResult) and cast(MemberSource, item.guide).equal_weights:
            posts += [m.posterior() for m in item.members]  # members as chains, each with its history
            histories += [m.history for m in item.members]
        elif isinstance(item, EnsembleResult):  # one chain of the weighted mixture, which has no history
            posts.append(item.posterior())
            histories.append(None)
        elif isinstance(item, FitResult):
            posts.append(item.posterior())
            histories.append(item.history)
        elif isinstance(item, Posterior):
            posts.append(item)
            histories.append(None)
        else:
            raise TypeError(
                f"to_arviz takes a pb.Posterior or pb.FitResult (or a list of them), got {type(item).__name__}"
                + (f" at position {i}" if len(items) > 1 else "")
            )
    posts, histories = _split_chains(posts, histories, num_samples)
    if any(h is None for h in histories) and not all(h is None for h in histories):
        raise ValueError("mix of FitResults and Posteriors: pass all FitResults (to export the history) or none")
    _check_same_model(posts)
    model = posts[0].model
    names = default_sites(model) if sites is None else _select(sites, model)
    chains = []
    for c, p in enumerate(posts):
        groups = collect(p, x, y, num_samples=num_samples, seed=None if seed is None else seed + c, sites=names)
        history = histories[c]
        if history is not None:
            groups[HISTORY_GROUP] = _history(history)
        chains.append(groups)
    stacked = stack_chains(chains)
    all_dims = default_site_dims(model, names)
    if x is not None:
        x_t = as_tensor(x, "x", dtype=model_dtype(model), device=model_device(model))
        all_dims["x"] = [OBS_DIM] + [f"x_dim_{i}" for i in range(x_t.dim() - 1)]
        event = stacked["posterior_predictive"][OBS].shape[3:]
        all_dims[OBS] = [OBS_DIM] + [f"{OBS}_dim_{i}" for i in range(len(event))]
    all_dims.update({k: list(v) for k, v in (dims or {}).items()})
    attrs = {
        "inference_library": "pyrobnn",
        "guide": ",".join(sorted({type(p.source).__name__ for p in posts})),
        "num_latent": int(posts[0].source.num_latent),
    }
    if weights:
        attrs["ensemble_weights"] = weights
    summaries = [p.source.summary() for p in posts if getattr(p.source, "log_evidence", None) is not None]  # type: ignore[attr-defined]
    if summaries:  # a Laplace approximation: how it was built, what it predicts with, its evidence
        attrs.update({f"laplace_{k}": "" if v is None else v for k, v in summaries[0].items()})
        if summaries[0]["prior_factor"] != 1.0:
            attrs["laplace_note"] = (
                "the prior precision was scaled by laplace_prior_factor (type-II maximum likelihood or given): "
                "this posterior is of a model with other priors than the one pb.mcmc samples"
            )
    return convert(stacked, coords=coords, dims=all_dims, attrs=attrs)


def collect(
    post: Posterior,
    x: Any = None,
    y: Any = None,
    *,
    num_samples: int = 1000,
    seed: int | None = None,
    sites: Sequence[str] | None = None,
) -> Groups:
    """One chain's groups as numpy, sample arrays laid out ``(draw, ...)``."""
    model, source = post.model, post.source
    names = list(source.site_names) if sites is None else list(sites)
    dtype, device = model_dtype(model), model_device(model)
    if y is not None and x is None:
        raise ValueError("y was given without x; pass x=inputs, y=targets")
    x_t = None if x is None else as_tensor(x, "x", dtype=dtype, device=device)
    y_t = None
    if x_t is not None:
        check_pair(x_t, None)
        if y is not None:
            y_t = as_tensor(y, "y", dtype=dtype, device=device)
            check_pair(x_t, y_t)
            y_t = model.likelihood.prepare_y(model.output_shape(x_t), y_t)
    posterior: dict[str, list[np.ndarray]] = {name: [] for name in names}
    log_q, log_p, log_lik, pp = [], [], [], []
    chains = cast(ChainSource, source) if source.has_chains else None
    ordered = chains.in_order() if chains is not None else None
    with seeded(seed, device), torch.no_grad():
        for chunk in post.chunks(num_samples, x_t, y_t, draws=ordered):
            for name in names:
                posterior[name].append(_np(chunk.draws[name]))
            if chunk.log_q is not None:
                log_q.append(_np(chunk.log_q))
            if chunk.prediction is not None:
                pp.append(_np(chunk.prediction.samples))
            if chunk.log_likelihood is not None and chunk.log_p is not None:
                log_lik.append(_np(chunk.log_likelihood))
                log_p.append(_np(chunk.log_p))
    groups: Groups = {"posterior": {name: np.concatenate(v) for name, v in posterior.items()}}
    stats = {} if chains is None else {name: _np(v.reshape(-1)) for name, v in chains.sample_stats().items()}
    if log_q:
        stats["log_q"] = np.concatenate(log_q)
    groups["sample_stats"] = stats
    if log_p:
        groups["sample_stats"]["log_p"] = np.concatenate(log_p)
    if x_t is not None:
        groups["posterior_predictive"] = {OBS: np.concatenate(pp)}
        groups["constant_data"] = {"x": _np(x_t)}
    if y_t is not None:
        groups["log_likelihood"] = {OBS: np.concatenate(log_lik)}
        groups["observed_data"] = {OBS: _np(y_t)}
    return groups


def _split_chains(
    posts: list[Posterior], histories: list[History | None], num_samples: int
) -> tuple[list[Posterior], list[History | None]]:
    """A posterior with chains (an MCMC run) becomes one per chain, each thinned to at most ``num_samples`` draws;
    an ensemble of equally weighted members one per member."""
    out_posts: list[Posterior] = []
    out_histories: list[History | None] = []
    for post, history in zip(posts, histories, strict=True):
        source = post.source
        if source.has_chains:
            chains = cast(ChainSource, source)
            out_posts += [Posterior(post.model, chains.chain(c, num_samples)) for c in range(chains.num_chains)]
            out_histories += [history] * chains.num_chains
        elif getattr(source, "has_members", False) and cast(MemberSource, source).equal_weights:
            members = cast(MemberSource, source).sources
            out_posts += [Posterior(post.model, m) for m in members]
            out_histories += [history] * len(members)
        else:
            out_posts.append(post)
            out_histories.append(history)
    return out_posts, out_histories


def default_sites(model: BayesianModel) -> list[str]:
    """All latent sites for a net of at most :data:`MAX_DEFAULT_WEIGHTS` random weights.

    Larger nets: the likelihood's own sites (e.g. a learned noise scale) and the
    sites of the last layer (the module owning the last random parameter).
    """
    sites = model.latent_sites()
    net_names = list(model.net.site_names)
    if sum(sites[n].shape.numel() for n in net_names) <= MAX_DEFAULT_WEIGHTS:
        return list(sites)
    last_module = net_names[-1].rpartition(".")[0]
    last = [n for n in net_names if n.rpartition(".")[0] == last_module]
    return last + [n for n in sites if n not in net_names]


def default_site_dims(model: BayesianModel, names: Sequence[str]) -> dict[str, list[str]]:
    """Named dims per parameter axis: ``{site}_out``, ``{site}_in``, ``{site}_k0`` … or ``{site}_dim_i``."""
    sites = model.latent_sites()
    dims = {}
    for name in names:
        shape = sites[name].shape
        module = _module_of(model.net, name)
        if isinstance(module, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)) and len(shape) >= 1:
            axes = [f"{name}_out", f"{name}_in"][: len(shape)] + [f"{name}_k{i}" for i in range(len(shape) - 2)]
        else:
            axes = [f"{name}_dim_{i}" for i in range(len(shape))]
        dims[name] = axes
    return dims


def _module_of(net: nn.Module, name: str) -> nn.Module | None:
    inner = getattr(net, "net", None)  # the BayesianNet's deterministic twin
    if not isinstance(inner, nn.Module):
        return None
    path = name.rpartition(".")[0]
    try:
        return inner.get_submodule(path) if path else inner
    except AttributeError:
        return None


def _select(sites: str | Sequence[str], model: BayesianModel) -> list[str]:
    available = list(model.latent_sites())
    if sites == "all":
        return available
    return _globs.select(sites, available, argument="sites")


def _check_same_model(posts: Sequence[Posterior]) -> None:
    ref = {n: s.shape for n, s in posts[0].model.latent_sites().items()}
    for i, p in enumerate(posts[1:], start=1):
        other = {n: s.shape for n, s in p.model.latent_sites().items()}
        if other != ref:
            raise ValueError(
                f"chain {i} comes from a different model (latent sites {other} vs {ref}); "
                "chains must be fits of the same architecture and priors"
            )


def _history(history: History) -> dict[str, np.ndarray]:
    return {name: np.asarray(value, dtype=float) for name, value in history.as_dict().items()}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
