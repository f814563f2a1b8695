"""Evaluation of a fitted posterior: held-out metrics, diagnostics, comparison.

- :mod:`pyrobnn.evaluate.metrics`: log predictive density, RMSE or accuracy, coverage,
  calibration, distance to a reference posterior.
- :mod:`pyrobnn.evaluate.diagnostics`: PSIS k̂ of a guide, for all sites or a block.
- :mod:`pyrobnn.evaluate.compare`: ``compare``, a table of fitted guides on held-out data.
- :func:`nested_rhat`: the convergence of many short MCMC chains grouped by their start.
"""

from pyrobnn.evaluate._rhat import nested_rhat

__all__ = ["nested_rhat"]
