"""A table comparing fitted guides on held-out data: :func:`compare`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, cast

import torch

from pyrobnn.evaluate.diagnostics import psis_khat
from pyrobnn.evaluate.metrics import expected_calibration_error, reference_distance, summarize
from pyrobnn.infer.fit import FitResult
from pyrobnn.posterior import ChainSource, Posterior

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
        Indexed by name, sorted by ``test_log_likelihood``, best first. Columns:

        - ``guide``; ``final_elbo``: mean over the last 5% of steps of a
          FitResult's history (NaN for a posterior or a point mass, whose
          objective is not a bound); for a Laplace approximation its estimate
          of the log evidence (``log_evidence``), which stands where an ELBO
          does, not the log joint its MAP phase maximised;
        - ``test_log_likelihood``: mean over test points of
          log (1/S) Σ_s p(yᵢ | xᵢ, θ_s), in original units (shifted by
          −log(``y_scale``) per scalar target);
        - ``rmse`` (original units) and ``coverage``, or ``accuracy`` and ``ece``;
        - ``<metric>_se`` for ``test_log_likelihood``, ``rmse``, ``coverage``
          and ``accuracy``: its standard error over the test points (see
          :func:`pyrobnn.evaluate.metrics.summarize`);
        - ``khat``, ``fit_seconds``, ``num_variational_params``, and with a
          ``reference`` its distance columns.

        With ``train``, PSIS-LOO on the training data (ArviZ's ``az.loo``):

        - ``elpd_loo`` (the sum over training points, like ArviZ's, but in
          original units: the standardised value − n·log(``y_scale``) per scalar
          target, the Jacobian of y = ``y_scale``·z) and ``elpd_loo_se``, its
          standard error;
        - ``elpd_loo_per_point`` and ``elpd_loo_per_point_se``: both divided by
          the n training points, on the scale of ``test_log_likelihood`` (a
          mean per test point);
        - ``p_loo``, the effective number of parameters;
        - ``loo_bad_khat``: the share of training points whose Pareto k of the
          LOO importance weights exceeds ArviZ's threshold min(1 − 1/log₁₀ S, 0.7)
          for S draws (0.7 from S ≈ 2200 on; 0.67 at the default 1000): there
          PSIS-LOO is unreliable (Vehtari et al. 2024);
        - ``loo_rank`` and ``loo_weight`` from ``az.compare`` (stacking).

        A point-mass source (``source.point_mass``, e.g. a MAP guide) has none of these
        (NaN), is left out of ``az.compare``, and gets no ``khat``: PSIS-LOO
        over copies of one θ̂ is the in-sample fit (p_loo 0) and would rank it
        first. A source without a density (``source.has_density`` false: the
        draws of :func:`pyrobnn.mcmc`) gets no ``khat`` (NaN) and no
        ``final_elbo``; one with chains (``source.has_chains``) has the
        sampler's time as ``fit_seconds``.

        ``table.attrs`` holds ``"loo"`` (each posterior's ``ELPDData``, on the
        standardised scale the model was fitted on), ``"az_compare"`` (the full
        ``az.compare`` table, same scale) and ``"test_log_likelihood_pointwise"``
        (each row's per-point values, in original units, for paired differences).

    Notes
    -----
    LOO here is PSIS-LOO (Vehtari, Gelman & Gabry 2017) on the training data,
    with the variational draws standing in for posterior draws. For a whole
    network's posterior many Pareto k exceed 0.7 (``loo_bad_khat`` > 0) and
    ``p_loo`` then comes out large: there ``elpd_loo`` is unreliable, and the
    held-out metrics are the ones to compare by.

    References
    ----------
    Vehtari, Gelman & Gabry (2017). Practical Bayesian model evaluation using
    leave-one-out cross-validation and WAIC. Statistics and Computing 27.

    Vehtari, Simpson, Gelman, Yao & Gabry (2024). Pareto smoothed importance
    sampling. Journal of Machine Learning Research 25.
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
    pointwise = {}
    for name, (post, result) in pairs.items():
        source = post.source
        spread = not source.point_mass
        has_density = spread and source.has_density
        pred = post.predict(x_test, num_samples=num_samples, seed=seed)
        row: dict[str, Any] = {"name": name, "guide": type(source).__name__}
        row["final_elbo"] = math.nan  # a point estimate's end objective is its log joint, no ELBO
        evidence = getattr(source, "log_evidence", None)  # a Laplace approximation's estimate of log p(y)
        if result is not None and has_density:
            row["final_elbo"] = result.end_objective()  # the ELBO, or a Laplace fit's log evidence
        elif evidence is not None and spread:  # a Laplace posterior passed without its fit
            row["final_elbo"] = float(evidence)
        row.update(summarize(post, pred, y_test, y_scale=y_scale, level=level, se=True))
        pointwise[name] = _pointwise_log_likelihood(post, pred, y_test, y_scale)
        if post.model.likelihood.predicts_classes:
            row["ece"] = expected_calibration_error(pred, y_test)
        if ref_pred is not None:
            distance = reference_distance(pred, ref_pred)
            if "w1" in distance:
                distance["w1"] *= y_scale
            row.update(distance)
        row["khat"] = math.nan
        if train is not None and has_density:
            row["khat"] = psis_khat(post, *train, num_samples=num_samples, seed=seed, warn=False)
        if source.has_chains:
            row["fit_seconds"] = float(cast(ChainSource, source).seconds.sum())
        else:
            row["fit_seconds"] = result.elapsed_s if result is not None else math.nan
        parameters = getattr(source, "parameters", None)
        row["num_variational_params"] = sum(p.numel() for p in parameters() if p.requires_grad) if parameters else 0
        rows.append(row)
        if train is not None and spread:
            from pyrobnn.export import to_arviz

            idatas[name] = to_arviz(post, *train, num_samples=num_samples, seed=seed)
    table = pd.DataFrame(rows).set_index("name").sort_values("test_log_likelihood", ascending=False)
    if train is not None:
        table = _with_loo(table, idatas, _num_scalars(train[1]), y_scale)
    table.attrs["test_log_likelihood_pointwise"] = pointwise
    return table


def _pointwise_log_likelihood(post: Posterior, pred: Any, y: Any, y_scale: float) -> Any:
    """Per test point log (1/S) Σ_s p(yᵢ | xᵢ, θ_s) in original units, as a numpy array."""
    y = post.model.likelihood.prepare_y(pred.output_shape, torch.as_tensor(y, device=pred.output.device))
    per_obs = y[0].numel() if y.dim() > 1 else 1
    return (pred.log_prob(y).double() - per_obs * math.log(y_scale)).cpu().numpy()


def _num_scalars(y: Any) -> int:
    """How many scalar targets ``y`` holds (rows × outputs): the n of the LOO Jacobian."""
    return int(torch.as_tensor(y).numel())


def _posterior(name: str, item: Any) -> tuple[Posterior, FitResult | None]:
    if isinstance(item, FitResult):
        return item.posterior(), item
    if isinstance(item, Posterior):
        return item, None
    raise TypeError(f"compare[{name!r}] must be a pb.FitResult or pb.Posterior, got {type(item).__name__}")


def _with_loo(table: Any, idatas: dict[str, Any], num_scalars: int, y_scale: float) -> Any:
    """PSIS-LOO columns for the posteriors with spread (``idatas``); NaN for the rest."""
    import arviz as az
    import numpy as np

    columns = [
        "elpd_loo",
        "elpd_loo_se",
        "elpd_loo_per_point",
        "elpd_loo_per_point_se",
        "p_loo",
        "loo_bad_khat",
        "loo_rank",
        "loo_weight",
    ]
    loo_rows: dict[str, dict[str, float]] = {}
    loos = {}
    with warnings.catch_warnings():
        # ArviZ warns per model when some Pareto k of the LOO weights is high; the table's
        # loo_bad_khat column records the same, so the warning itself would only repeat it.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto", category=UserWarning)
        for name, idata in idatas.items():
            loo = az.loo(idata, pointwise=True)
            loos[name] = loo
            n = int(loo.n_data_points)
            elpd = float(loo.elpd_loo) - num_scalars * math.log(y_scale)
            loo_rows[name] = {
                "elpd_loo": elpd,
                "elpd_loo_se": float(loo.se),
                "elpd_loo_per_point": elpd / n,
                "elpd_loo_per_point_se": float(loo.se) / n,
                "p_loo": float(loo.p_loo),
                "loo_bad_khat": float(np.mean(np.asarray(loo.pareto_k) > getattr(loo, "good_k", 0.7))),
            }
        ranked = az.compare(idatas, ic="loo") if len(idatas) >= 2 else None
    for name in loo_rows:
        rank, weight = (0, 1.0) if ranked is None else (ranked.loc[name, "rank"], ranked.loc[name, "weight"])
        loo_rows[name].update(loo_rank=float(rank), loo_weight=float(weight))
    table = table.join(_loo_frame(loo_rows, columns))
    table.attrs["loo"] = loos
    if ranked is not None:
        table.attrs["az_compare"] = ranked
    return table


def _loo_frame(rows: dict[str, dict[str, float]], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)
