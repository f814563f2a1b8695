"""The report's reading of ``pb.compare``'s table: how far LOO holds, and which guide to trust."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pyrobnn.cli._figures import LEVEL, REFERENCE
from pyrobnn.cli._usage import form_of

__all__ = ["listing", "loo_text", "trust_text"]


def loo_text(frame: Any) -> str:
    """Where PSIS-LOO can be read, and where its Pareto k say it cannot."""
    if "loo_bad_khat" not in frame.columns:
        return ""
    rows = frame[frame["loo_bad_khat"].notna()]
    bad = rows[rows["loo_bad_khat"] > 0]
    if rows.empty:
        return ""
    if bad.empty:
        return (
            "**LOO.** Every Pareto k of PSIS-LOO is below ArviZ's threshold for "
            f"{listing(list(rows.index))}: their elpd_loo can be read (± its standard error)."
        )
    shares = ", ".join(
        f"{name} {bad.loc[name, 'loo_bad_khat']:.0%} (p_loo {bad.loc[name, 'p_loo']:.3g})" for name in bad.index
    )
    return (
        f"**LOO is unreliable for {listing(list(bad.index))}** (⚠ in the table): the share of training points "
        f"whose Pareto k is above ArviZ's threshold is {shares}. There the leave-one-out posteriors are too far "
        "from the full one for importance sampling from the draws, so elpd_loo is biased and p_loo inflated "
        "(a p_loo near the number of points is the mark). For a variational posterior over a whole network this "
        "is common; read those rows' elpd_loo as unreliable and compare the guides by the held-out numbers."
    )


def trust_text(frame: Any, task: str, point_mass: Sequence[str] = (), reference: str | None = None) -> str:
    """A paragraph on which guide to trust and why, read from the numbers in ``frame``.

    ``reference`` names the kernel of the reference posterior (``"ChEES-HMC"``, ``"NUTS"``)
    when the table has one.
    """
    guides = frame.drop(index=REFERENCE) if REFERENCE in frame.index else frame
    if guides.empty:
        return ""
    best = guides.index[0]  # the table is sorted by test log-likelihood
    row = guides.loc[best]
    lines = [
        f"**Which guide to trust.** Best held-out log-likelihood: **{best}** "
        f"({row['test_log_likelihood']:.4g} ± {row['test_log_likelihood_se']:.2g} per test point)."
    ]
    pointwise = frame.attrs.get("test_log_likelihood_pointwise", {})
    diffs, close = [], []
    for name in guides.index[1:]:
        if best in pointwise and name in pointwise:
            diff = pointwise[name] - pointwise[best]
            se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
            diffs.append(f"{name} {float(diff.mean()):+.3g} ± {se:.2g}")
            if abs(float(diff.mean())) <= 2 * se:
                close.append(name)
    if diffs:
        lines.append(f"The others' differences from it, paired over the test points: {', '.join(diffs)}.")
    if close:
        verb = "is" if len(close) == 1 else "are"
        lines.append(f"{listing(close)} {verb} within two standard errors of it: this test set cannot tell them apart.")
    if task == "regression" and "coverage" in guides.columns:
        n = len(next(iter(pointwise.values()))) if pointwise else 0
        tol = 2 * math.sqrt(LEVEL * (1 - LEVEL) / n) if n else 0.0
        narrow = [k for k in guides.index if guides.loc[k, "coverage"] < LEVEL - tol]
        wide = [k for k in guides.index if guides.loc[k, "coverage"] > LEVEL + tol]
        if narrow:
            lines.append(
                f"{listing(narrow)}: coverage below {LEVEL:.0%} by more than two binomial standard "
                "errors, intervals too narrow."
            )
        if wide:
            lines.append(
                f"{listing(wide)}: coverage above {LEVEL:.0%} by more than two binomial standard "
                "errors, intervals too wide."
            )
    elif "ece" in guides.columns:
        calm = guides["ece"].idxmin()
        lines.append(f"Best calibrated: {calm} (ECE {guides.loc[calm, 'ece']:.3g}).")
    khat = guides["khat"].dropna() if "khat" in guides.columns else guides.iloc[:0, 0]
    if len(khat) and (khat > 0.7).all():
        lines.append(
            f"k̂ is above 0.7 for every guide with a density ({khat.min():.2g} to {khat.max():.2g}). For a whole "
            "network this is expected (Yao et al. 2018): no tractable family is a good importance proposal for "
            "the full posterior in this many dimensions, so k̂ does not rank these guides; the held-out numbers "
            + (f"and the distance to the {reference} reference below do." if reference else "do.")
        )
    elif reference:
        lines.append(
            f"The distance to the {reference} reference below says which guide comes closest to the posterior itself."
        )
    points = [k for k in point_mass if k in guides.index and form_of(k) != "ensemble"]
    mixed = [k for k in point_mass if k in guides.index and form_of(k) == "ensemble"]
    if points:
        lines.append(
            f"{listing(points)} {'is a point estimate' if len(points) == 1 else 'are point estimates'}: "
            f"{'its' if len(points) == 1 else 'their'} intervals carry only the noise, not the weights' "
            f"uncertainty, and {'it has' if len(points) == 1 else 'they have'} no k̂ or LOO."
        )
    if mixed:
        lines.append(
            f"{listing(mixed)} {'mixes' if len(mixed) == 1 else 'mix'} point estimates: the intervals carry the "
            "noise and the spread between the members, not each member's uncertainty, and there is no k̂ or LOO."
        )
    return " ".join(lines)


def listing(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
