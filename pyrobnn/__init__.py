"""pyrobnn: Bayesian neural networks on Pyro, lifted from ordinary PyTorch modules.

The pipeline, one stage per module::

    lift ─▶ BayesianModel ─▶ guides.make_guide ─▶ fit ─▶ Posterior ─▶ predict
                        └──────────▶ mcmc (NUTS, the reference) ──▶ Posterior
"""

from pyrobnn import datasets, diagnostics, guides, likelihoods, plots, priors, svi
from pyrobnn.checkpoint import load, save
from pyrobnn.compare import compare
from pyrobnn.elbo import ELBO
from pyrobnn.export import to_arviz
from pyrobnn.fit import FitError, FitResult, History, estimate_elbo, fit, linear_annealing
from pyrobnn.lift import BayesianNet, lift, lift_
from pyrobnn.mcmc import MCMCDraws, mcmc
from pyrobnn.model import BayesianModel
from pyrobnn.posterior import Posterior, Prediction

__version__ = "0.1.0"

__all__ = [
    "ELBO",
    "BayesianModel",
    "BayesianNet",
    "FitError",
    "FitResult",
    "History",
    "MCMCDraws",
    "Posterior",
    "Prediction",
    "compare",
    "datasets",
    "diagnostics",
    "estimate_elbo",
    "fit",
    "guides",
    "lift",
    "lift_",
    "likelihoods",
    "linear_annealing",
    "load",
    "mcmc",
    "plots",
    "priors",
    "save",
    "svi",
    "to_arviz",
]
