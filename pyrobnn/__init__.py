"""pyrobnn: Bayesian neural networks on Pyro, lifted from ordinary PyTorch modules.

The pipeline, one stage per module or package (``docs/architecture.md``)::

    lift ─▶ BayesianModel ─▶ guides.make_guide ─▶ infer.fit ─▶ Posterior ─▶ predict
                        ├──────────▶ infer.ensemble (K fits, mixed) ─────▶ Posterior
                        └──────────▶ infer.mcmc (NUTS, the reference) ──▶ Posterior
                                        ─▶ export.to_arviz, evaluate (metrics, k̂, nested R̂, compare), plots
"""

from pyrobnn import _moved, datasets, guides, likelihoods, plots, priors
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

# Module paths from before the stages became packages: deprecated (pyrobnn/_moved.py).
_MOVED = _moved.install(__name__)


def __getattr__(name: str) -> object:
    """``pyrobnn.elbo`` after ``import pyrobnn.elbo``: the deprecated path, which warns when read."""
    if name in _MOVED:
        return _MOVED[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
