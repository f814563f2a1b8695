"""pyrobnn: Bayesian neural networks on Pyro, lifted from ordinary PyTorch modules.

The pipeline, one stage per module or package (``docs/architecture.md``)::

    lift ─▶ BayesianModel ─▶ guides.make_guide ─▶ infer.fit ─▶ Posterior ─▶ predict
                        ├──────────▶ infer.ensemble (K fits, mixed) ─────▶ Posterior
                        └──────────▶ infer.mcmc (NUTS, the reference) ──▶ Posterior
                                        ─▶ export.to_arviz, evaluate (metrics, k̂, nested R̂, compare), plots
"""

import sys as _sys

from pyrobnn import datasets, guides, likelihoods, plots, priors
from pyrobnn._version import __version__ as __version__
from pyrobnn._warnings import DiagnosticWarning
from pyrobnn.checkpoint import load, save
from pyrobnn.evaluate import diagnostics, metrics, nested_rhat
from pyrobnn.evaluate.compare import compare
from pyrobnn.export import to_arviz
from pyrobnn.infer import svi
from pyrobnn.infer.elbo import ELBO
from pyrobnn.infer.ensemble import EnsembleResult, ensemble
from pyrobnn.infer.fit import FitError, FitResult, FitWarning, History, estimate_elbo, fit, linear_annealing
from pyrobnn.infer.mcmc import mcmc
from pyrobnn.lift import BayesianNet, lift, lift_
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Ensemble, MCMCDraws, Posterior, Prediction

__all__ = [
    "ELBO",
    "BayesianModel",
    "BayesianNet",
    "DiagnosticWarning",
    "Ensemble",
    "EnsembleResult",
    "FitError",
    "FitResult",
    "FitWarning",
    "History",
    "MCMCDraws",
    "Posterior",
    "Prediction",
    "compare",
    "datasets",
    "diagnostics",
    "ensemble",
    "estimate_elbo",
    "fit",
    "guides",
    "lift",
    "lift_",
    "likelihoods",
    "linear_annealing",
    "load",
    "mcmc",
    "metrics",
    "nested_rhat",
    "plots",
    "priors",
    "save",
    "svi",
    "to_arviz",
]

# Module paths from before the stages became packages (0.1.0 and earlier) still import the
# same module objects: `from pyrobnn.diagnostics import psis_khat` keeps working.
for _old, _new in {
    "elbo": "infer.elbo",
    "svi": "infer.svi",
    "fit": "infer.fit",
    "history": "infer.history",
    "distributed": "infer.distributed",
    "mcmc": "infer.mcmc",
    "metrics": "evaluate.metrics",
    "diagnostics": "evaluate.diagnostics",
    "compare": "evaluate.compare",
}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _sys.modules[f"{__name__}.{_new}"])
del _old, _new
