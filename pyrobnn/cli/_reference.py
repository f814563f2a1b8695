"""The reference posterior of ``pyrobnn compare/fit --reference {chees,nuts}``: its settings, its run, its reading.

Two kernels of :func:`pyrobnn.mcmc` can sample it. ``chees`` (ChEES-HMC, many chains
moved as one batch, superchains for nested R̂) is fast; ``nuts`` (Pyro's NUTS, chain
after chain) is the slow exactness check. Either way the row and the file are named
:data:`~pyrobnn.cli._figures.REFERENCE`, and the report says which kernel ran, with
what settings, and whether its chains mixed: the largest R̂ of the predictions at the
test points (nested R̂ over superchains, Margossian et al. 2022; classic R̂ where every
chain started on its own).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from pyrobnn.cli._figures import REFERENCE
from pyrobnn.cli._trust import listing
from pyrobnn.cli._usage import UsageError
from pyrobnn.datasets import Standardized
from pyrobnn.evaluate import nested_rhat
from pyrobnn.infer.mcmc import KERNELS, mcmc
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import ChainSource, Posterior

__all__ = [
    "KERNEL_LABELS",
    "MIXED",
    "NUTS_DEFAULTS",
    "Reference",
    "add_reference_options",
    "mixing_text",
    "prediction_rhat",
    "reference_options",
    "reference_text",
    "sample_reference",
]

#: How the report and the help name each kernel of ``--reference``.
KERNEL_LABELS = {"chees": "ChEES-HMC", "nuts": "NUTS"}
#: The command's NUTS settings (shorter than pb.mcmc's 4 × 1000 after 1000: NUTS runs chain after chain).
NUTS_DEFAULTS = {"num_chains": 2, "warmup": 500, "num_samples": 500}
#: The largest R̂ of the predictions at which the chains count as mixed (Vehtari et al. 2021's threshold).
MIXED = 1.01
_WHAT = (("chains", "num_chains"), ("warmup", "warmup"), ("samples", "num_samples"))
#: The options of each kernel: argparse destination, flag, and pb.mcmc's argument.
_OPTIONS = {
    kernel: [(f"{kernel}_{what}", f"--{kernel}-{what}", name) for what, name in _WHAT] for kernel in KERNEL_LABELS
}


@dataclass(frozen=True)
class Reference:
    """A reference posterior sampled by the command, with what the report says of it."""

    posterior: Posterior
    #: ``"chees"`` or ``"nuts"``, the kernel of ``pb.mcmc`` that sampled it.
    kernel: str
    #: Warm-up iterations per chain (discarded), as passed to pb.mcmc.
    warmup: int
    #: The largest R̂ of the predictions at the test points over every point (and class);
    #: None with fewer than two superchains (chains) to compare, nan where none is defined.
    rhat: float | None

    @property
    def source(self) -> ChainSource:
        return cast(ChainSource, self.posterior.source)

    @property
    def superchain_size(self) -> int:
        return int(getattr(self.source, "superchain_size", 1))


def add_reference_options(group: Any, positive: Callable[[str], int]) -> None:
    """``--reference`` and the options of each kernel (read as ``positive`` integers) on an argparse group."""
    group.add_argument(
        "--reference",
        choices=list(KERNEL_LABELS),
        help="also sample the posterior with pb.mcmc, as the row 'reference' (file reference.nc), and measure "
        "every guide's distance to it. chees: ChEES-HMC, many chains moved as one batch, fast; the choice for a "
        "reference. nuts: Pyro's NUTS, chain after chain, the exactness check; far slower",
    )
    chees, nuts = KERNELS["chees"], NUTS_DEFAULTS
    texts = {
        "--chees-chains": f"ChEES only: chains, moved as one batch; in superchains of 4 where that makes 2 or more "
        f"({chees['num_chains']})",
        "--chees-warmup": f"ChEES only: warm-up iterations, discarded ({chees['warmup']})",
        "--chees-samples": f"ChEES only: draws kept per chain ({chees['num_samples']})",
        "--nuts-chains": f"NUTS only: chains, run one after another ({nuts['num_chains']})",
        "--nuts-warmup": f"NUTS only: warm-up iterations per chain, discarded ({nuts['warmup']})",
        "--nuts-samples": f"NUTS only: draws kept per chain ({nuts['num_samples']})",
    }
    for flag, text in texts.items():
        group.add_argument(flag, type=positive, help=text)


def reference_options(args: argparse.Namespace) -> dict[str, int] | None:
    """``num_chains``, ``warmup`` and ``num_samples`` for pb.mcmc: those given, the kernel's defaults otherwise.

    None without ``--reference``. Options of the other kernel (or of either, without
    ``--reference``) are refused, so that none is silently ignored.
    """
    for kernel, options in _OPTIONS.items():
        given = [flag for dest, flag, _ in options if getattr(args, dest, None) is not None]
        if given and args.reference != kernel:
            now = f"not --reference {args.reference}" if args.reference else "add --reference " + kernel
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{', '.join(given)} only {verb} to --reference {kernel}; {now}")
    if args.reference is None:
        return None
    defaults = KERNELS["chees"] if args.reference == "chees" else NUTS_DEFAULTS
    return {
        name: defaults[name] if getattr(args, dest) is None else getattr(args, dest)
        for dest, _, name in _OPTIONS[args.reference]
    }


def sample_reference(args: argparse.Namespace, model: BayesianModel, data: Standardized) -> Reference:
    """Sample the posterior of ``model`` with the kernel of ``--reference``, and check its mixing at the test points."""
    options = reference_options(args)
    assert options is not None  # the caller asks only with --reference
    how = "many chains as one batch" if args.reference == "chees" else "chain after chain"
    print(
        f"sampling the reference posterior with {KERNEL_LABELS[args.reference]} ({how}: {options['num_chains']} "
        f"chains × {options['num_samples']} draws after {options['warmup']} warm-up) on {data.dataset.name} ...",
        file=sys.stderr,
    )
    post = mcmc(
        model,
        (data.x_train, data.y_train),
        kernel=args.reference,
        num_samples=options["num_samples"],
        warmup=options["warmup"],
        num_chains=options["num_chains"],
        seed=args.seed,
        progress=not args.quiet,
    )
    ref = Reference(post, args.reference, options["warmup"], prediction_rhat(post, data.x_test))
    print(f"reference: {mixing_text(ref, len(data.x_test), data.dataset.task)}", file=sys.stderr)
    return ref


def prediction_rhat(post: Posterior, x: torch.Tensor) -> float | None:
    """The largest R̂ over the predictions at ``x`` (E[y | θ] per point; class probabilities).

    Nested R̂ over the superchains of ``post.source`` (its ``superchain_size``), the
    classic R̂ across chains where each chain is its own superchain. None where there
    are fewer than two superchains, nan where R̂ is defined at no point (constant draws).
    """
    source = post.source
    if not source.has_chains:
        return None
    chains = cast(ChainSource, source)
    size = int(getattr(chains, "superchain_size", 1))
    if chains.num_chains // size < 2:
        return None
    mean = post.predict_draws(chains.in_order(), x, seed=0).conditional_mean  # (chains · draws, N, ...)
    per_chain = mean.reshape(chains.num_chains, chains.num_draws, *mean.shape[1:])
    rhat = nested_rhat(per_chain.double().cpu().numpy(), size)
    defined = rhat[~np.isnan(rhat)]
    return float(defined.max()) if defined.size else math.nan


def mixing_text(ref: Reference, points: int, task: str) -> str:
    """The reference's settings and whether its chains mixed, in one sentence's worth."""
    source, label = ref.source, KERNEL_LABELS[ref.kernel]
    stats = source.sample_stats()
    total, divergent = source.num_chains * source.num_draws, int(stats["diverging"].sum())
    text = (
        f'{label} (`pb.mcmc`, kernel "{ref.kernel}"): {source.num_chains} chains × {source.num_draws} draws '
        f"after {ref.warmup} warm-up iterations, {float(source.seconds.sum()):.0f} s, {divergent} of {total} "
        "draws divergent; "
    )
    what = "E[y | θ]" if task == "regression" else "the class probabilities"
    size, fix = ref.superchain_size, _FIX[ref.kernel]
    if ref.rhat is None:
        return text + f"one chain, so no R̂ says whether it mixed ({fix})"
    groups = source.num_chains // size
    kind = f"nested R̂ ({groups} superchains of {size} chains)" if size > 1 else f"R̂ ({source.num_chains} chains)"
    if math.isnan(ref.rhat):
        return text + f"{kind} of {what} is undefined at all {points} test points (the draws are constant)"
    text += f"{kind} of {what} at the {points} test points at most {ref.rhat:.3g}"
    if ref.rhat <= MIXED:
        return text + f": within {MIXED}, the chains mixed"
    return (
        text + f": above {MIXED}, so the chains did not mix; the reference is itself uncertain and the distances "
        f"to it are rough ({fix})"
    )


_FIX = {
    "chees": "more warm-up or draws: --chees-warmup, --chees-samples",
    "nuts": "more chains, warm-up or draws: --nuts-chains, --nuts-warmup, --nuts-samples",
}


def reference_text(ref: Reference, frame: Any, task: str, points: int) -> str:
    """The paragraph that reads the distances to the reference (at ``points`` test points): which guide is
    closest, and why the others are not."""
    guides = frame.drop(index=REFERENCE)
    label = KERNEL_LABELS[ref.kernel]
    lines = [
        f"**Against the reference.** The row *{REFERENCE}* is the posterior each guide approximates, sampled by "
        f"{mixing_text(ref, points, task)}.",
    ]
    if task == "regression":
        best = guides["w1"].idxmin()
        lines += [
            "*w1*: Wasserstein-1 distance between a guide's predictive draws of y and the reference's at each test "
            "point, averaged (original units); *sd_ratio*: predictive standard deviation over the reference's, "
            "averaged over test points.",
            "",
            f"Closest to the {label} reference: **{best}** (w1 {guides.loc[best, 'w1']:.3g}, sd_ratio "
            f"{guides.loc[best, 'sd_ratio']:.2f}). {_WHY_CLOSEST.get(best, '')}",
        ]
        narrow = [name for name in guides.index if guides.loc[name, "sd_ratio"] < 0.9]
        if narrow:
            lines.append(
                f"{listing(narrow)} predict{'s' if len(narrow) == 1 else ''} narrower than the reference (sd_ratio "
                "< 0.9): maximising the ELBO minimises KL(q‖p), which costs q nothing for missing posterior mass, "
                "so q settles inside the posterior's bulk. The fewer correlations a family can hold (mean-field "
                "none, low-rank a few directions, full-rank all), the narrower it is where the data say little, "
                "and MAP, a single point, keeps only the noise."
            )
        wide = [name for name in guides.index if guides.loc[name, "sd_ratio"] > 1.1]
        if wide:
            lines.append(
                f"{listing(wide)} predict{'s' if len(wide) == 1 else ''} wider than the reference (sd_ratio > 1.1), "
                "the mark of a variational fit that explains part of the signal as noise: weights kept near "
                "their prior cost less KL than the fit they would need, so with a learned noise scale the ELBO "
                "favours a larger one than the posterior holds. Check that the ELBO curve has levelled off (more "
                "steps help only if it has not), and that the reference mixed (its R̂ above)."
            )
    else:
        best = guides["total_variation"].idxmin()
        lines += [
            "*agreement*: share of test points where a guide predicts the same class as the reference; "
            "*total_variation*: ½ Σ_c |p_c − p_ref,c| per test point, averaged.",
            "",
            f"Closest to the {label} reference: **{best}** (total variation "
            f"{guides.loc[best, 'total_variation']:.3g}, agreement {guides.loc[best, 'agreement']:.1%}).",
        ]
    return "\n".join(lines)


_WHY_CLOSEST = {
    "map": "A point estimate comes closest when most test points lie among the data, where the posterior "
    "predictive is mostly the noise and the weights' uncertainty adds little; where the data say little it "
    "is too narrow, so read its sd_ratio there before trusting it.",
    "fullrank": "Its family holds every correlation between the weights, so it can follow the posterior's "
    "bulk around one mode.",
    "lowrank": "Its family holds the strongest correlations between the weights, which mean-field misses.",
    "flow": "Its family can bend and skew where a Gaussian cannot.",
    "meanfield": "Here the correlations the richer families can hold did not matter for the predictions.",
}
