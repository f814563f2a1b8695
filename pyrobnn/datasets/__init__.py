"""Datasets: small built-ins generated on the fly, readers for UCI splits and CSV files, standardisation.

The built-ins exist for the demo, the tests and teaching; nothing is downloaded
or shipped. :func:`load_uci` reads the standard UCI regression splits from a
folder the user provides, :func:`load_csv` a CSV file with a header row, and
:func:`standardize` puts any of them on the scale a network is fitted on.
"""

from __future__ import annotations

# The modules behind this surface, each private to the package: _dataset.py (Dataset, TASKS),
# _builtin.py (the synthetic built-ins), _uci.py and _csv.py (the two readers), _standardize.py.
from pyrobnn.datasets import _csv, _dataset
from pyrobnn.datasets._builtin import describe, load, names
from pyrobnn.datasets._csv import csv_columns, load_csv
from pyrobnn.datasets._dataset import Dataset
from pyrobnn.datasets._standardize import Standardized, standardize
from pyrobnn.datasets._uci import load_uci, uci_num_splits

__all__ = [
    "Dataset",
    "Standardized",
    "csv_columns",
    "describe",
    "load",
    "load_csv",
    "load_uci",
    "names",
    "standardize",
    "uci_num_splits",
]

# Public constants outside __all__ (the command line reads TASKS; the API pages document
# MAX_INFERRED_CLASSES), bound here so that their doc comments belong to this module.

#: The two tasks a dataset can have.
TASKS = _dataset.TASKS
#: :func:`load_csv` infers classification for a whole-number target with at most this many distinct values.
MAX_INFERRED_CLASSES = _csv.MAX_INFERRED_CLASSES
