"""A table comparing fitted guides on held-out data: :func:`compare`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from pyrobnn.evaluate.diagnostics import psis_khat
from pyrobnn.evaluate.metrics import expected_calibration_error, reference_distance, summarize
from pyrobnn.guides import MAPGuide
from pyrobnn.infer.fit import FitResult
from pyrobnn.infer.mcmc import MCMCDraws
from pyrobnn.likelihoods import Bernoulli, Categorical
from pyrobnn.posterior import Posterior

__all__ = ["compare"]


def compare(
    posts: Mapping[str, Posterior | FitResult],
    x_test: Any,
    y_test: Any,
    *,
    train: tuple[Any, Any] | None = None,
    num_samples: int = 1000,
    seed: int | None = 0,
    level: float = 0.9,
    y_scale: float = 1.0,
    reference: str | Posterior | None = None,
) -> Any:
    r"""Compare fitted guides: one row each, sorted by test log-likelihood (best first).

    Parameters
    ----------
    posts
        ``{name: result}``: fit results (which carry the ELBO history, the fit's
        seconds and settings) or posteriors.
    x_test, y_test
        Held-out data.
    train
        ``(x_train, y_train)``, the data the guides were fitted to. With it the
        table adds the PSIS k̂ of each guide over all its sites and ArviZ's LOO
        comparison (``elpd_loo``, ``p_loo``, ``loo_rank``, ``loo_weight``; the
        full ``az.compare`` table is in ``table.attrs["az_compare"]``).
    num_samples, seed
        Posterior draws per guide, and their seed.
    level
        The central predictive interval whose coverage is reported.
    y_scale
        The standard deviation a regression target was divided by (see
        :func:`pyrobnn.evaluate.metrics.evaluate`).
    reference
        A gold-standard posterior to measure every row against: the name of one
        of ``posts`` (its own row then reads 0 and 1) or a posterior, usually
        from :func:`pyrobnn.mcmc`. Adds the columns of
        :func:`pyrobnn.evaluate.metrics.reference_distance`: ``w1`` and ``sd_ratio``
        for real targets, ``agreement`` and ``total_variation`` for classes.

    Returns
    -------
    pandas.DataFrame
        Indexed by name, columns ``guide``, ``final_elbo`` (mean over the last
        5% of steps of a FitResult's history; NaN for a posterior or a MAP
        guide, whose objective is not a bound), ``test_log_likelihood`` (mean over
        test points of log (1/S) Σ_s p(yᵢ | xᵢ, θ_s)), ``rmse`` and ``coverage``
        or ``accuracy`` and ``ece``, ``khat``, ``fit_seconds``,
        ``num_variational_params``, and with a ``reference`` its distance columns.
        MCMC draws (:func:`pyrobnn.mcmc`) have no density, so their ``khat`` is
        NaN, and their ``fit_seconds`` is the sampler's time.

    Notes
    -----
    LOO here is PSIS-LOO (Vehtari, Gelman & Gabry 2017) on the training data,
    with the variational draws standing in for posterior draws; its Pareto k
    warnings (in ``az_compare``'s ``warning`` column) say where that fails.

    References
    ----------
    Vehtari, Gelman & Gabry (2017). Practical Bayesian model evaluation using
    leave-one-out cross-validation and WAIC. Statistics and Computing 27.
    """
    import pandas as pd

    if not posts:
        raise ValueError("compare needs at least one posterior: compare({'meanfield': result, ...}, x, y)")
    pairs = {name: _posterior(name, item) for name, item in posts.items()}
    ref_pred = None
    if isinstance(reference, str):
        if reference not in pairs:
            raise ValueError(f"reference={reference!r} is not one of the compared posteriors {list(pairs)}")
        ref_pred = pairs[reference][0].predict(x_test, num_samples=num_samples, seed=seed)
    elif isinstance(reference, Posterior):
        ref_pred = reference.predict(x_test, num_samples=num_samples, seed=seed)
    elif reference is not None:
        raise TypeError(f"reference must be a name in posts or a pb.Posterior, got {type(reference).__name__}")
    rows = []
    idatas = {}
    for name, (post, result) in pairs.items():
        has_density = not isinstance(post.guide, (MAPGuide, MCMCDraws))
        pred = post.predict(x_test, num_samples=num_samples, seed=seed)
        row: dict[str, Any] = {"name": name, "guide": type(post.guide).__name__}
        row["final_elbo"] = result.final_elbo() if result is not None and has_density else math.nan
        row.update(summarize(post, pred, y_test, y_scale=y_scale, level=level))
        if isinstance(post.model.likelihood, (Categorical, Bernoulli)):
            row["ece"] = expected_calibration_error(pred, y_test)
        if ref_pred is not None:
            distance = reference_distance(pred, ref_pred)
            if "w1" in distance:
                distance["w1"] *= y_scale
            row.update(distance)
        row["khat"] = math.nan
        if train is not None and has_density:
            row["khat"] = psis_khat(post, *train, num_samples=num_samples, seed=seed, warn=False)
        if isinstance(post.guide, MCMCDraws):
            row["fit_seconds"] = float(post.guide.seconds.sum())
        else:
            row["fit_seconds"] = result.elapsed_s if result is not None else math.nan
        row["num_variational_params"] = sum(p.numel() for p in post.guide.parameters() if p.requires_grad)
        rows.append(row)
        if train is not None:
            from pyrobnn.export import to_arviz

            idatas[name] = to_arviz(post, *train, num_samples=num_samples, seed=seed)
    table = pd.DataFrame(rows).set_index("name").sort_values("test_log_likelihood", ascending=False)
    if len(idatas) >= 2:
        table = _with_loo(table, idatas)
    return table


def _posterior(name: str, item: Any) -> tuple[Posterior, FitResult | None]:
    if isinstance(item, FitResult):
        return item.posterior(), item
    if isinstance(item, Posterior):
        return item, None
    raise TypeError(f"compare[{name!r}] must be a pb.FitResult or pb.Posterior, got {type(item).__name__}")


def _with_loo(table: Any, idatas: dict[str, Any]) -> Any:
    import arviz as az

    with warnings.catch_warnings():
        # ArviZ warns per model when some Pareto k of the LOO weights is high; the table's
        # "warning" column records the same, so the warning itself would only repeat it.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        loo = az.compare(idatas, ic="loo")
    table = table.join(
        loo[["elpd_loo", "p_loo", "rank", "weight"]].rename(columns={"rank": "loo_rank", "weight": "loo_weight"})
    )
    table.attrs["az_compare"] = loo
    return table
