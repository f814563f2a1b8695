"""The standard UCI regression splits: :func:`load_uci` reads one split of a folder in their layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from pyrobnn.datasets._dataset import Dataset

__all__ = ["load_uci", "uci_num_splits"]

_UCI_FILES = ("data.txt", "index_features.txt", "index_target.txt")
_UCI_LAYOUT = (
    "data.txt (whitespace-separated numbers, one row per example), index_features.txt and "
    "index_target.txt (0-based column indices), index_train_<k>.txt and index_test_<k>.txt "
    "(0-based row indices of split k)"
)


def uci_num_splits(directory: str | Path) -> int:
    """The number of train/test splits in a UCI-layout folder: the ``index_train_<k>.txt`` files, k = 0, 1, …"""
    folder = _uci_folder(directory)
    found = {int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"index_train_(\d+)\.txt", p.name))}
    count = 0
    while count in found:
        count += 1
    return count


def _uci_folder(directory: str | Path) -> Path:
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"UCI data folder {str(folder)!r} does not exist; it should hold {_UCI_LAYOUT}")
    missing = [f for f in _UCI_FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"UCI data folder {str(folder)!r} lacks {', '.join(missing)}; it should hold {_UCI_LAYOUT}")
    return folder


def _indices(path: Path, size: int, what: str) -> np.ndarray:
    try:
        values = np.loadtxt(path, ndmin=1)
    except ValueError as err:
        raise ValueError(f"{path}: expected whole numbers, one per line ({err})") from err
    if values.size == 0 or np.any(values != np.round(values)):
        raise ValueError(f"{path}: expected 0-based {what} indices, whole numbers one per line")
    idx = values.astype(np.int64)
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise ValueError(f"{path}: {what} index {int(bad[0])} out of range; data.txt has {size} {what}s")
    return idx


def load_uci(directory: str | Path, split: int) -> Dataset:
    """Read split ``split`` of a dataset in the standard UCI regression layout.

    Parameters
    ----------
    directory
        A folder holding ``data.txt`` (whitespace-separated numbers, one row per
        example), ``index_features.txt`` and ``index_target.txt`` (0-based column
        indices, one per line) and, for each split k = 0, 1, …,
        ``index_train_<k>.txt`` and ``index_test_<k>.txt`` (0-based row indices).
        This is the layout of Hernández-Lobato & Adams (2015) and Gal &
        Ghahramani (2016), whose 20 fixed 90/10 splits most BNN papers report on.
    split
        Which split, ``0 … n_splits − 1``.

    Returns
    -------
    Dataset
        Named after the folder, task ``"regression"``, in torch's default dtype
        and in the file's units (see :func:`standardize`).

    Examples
    --------
    >>> import pyrobnn as pb
    >>> ds = pb.datasets.load_uci("../shared/data/uci/yacht", split=0)   # doctest: +SKIP
    >>> ds.x_train.shape, ds.x_test.shape                                 # doctest: +SKIP
    (torch.Size([277, 6]), torch.Size([31, 6]))
    """
    folder = _uci_folder(directory)
    count = uci_num_splits(folder)
    if not (isinstance(split, int) and 0 <= split < count):
        have = f"{count} splits (0-{count - 1})" if count else "no index_train_<k>.txt files"
        raise ValueError(f"split {split!r} is out of range: {folder.name} has {have}")
    test_file = folder / f"index_test_{split}.txt"
    if not test_file.is_file():
        raise ValueError(f"UCI data folder {str(folder)!r} has index_train_{split}.txt but no {test_file.name}")
    try:
        data = np.loadtxt(folder / "data.txt", ndmin=2)
    except ValueError as err:
        raise ValueError(f"{folder / 'data.txt'}: expected whitespace-separated numbers ({err})") from err
    if not np.all(np.isfinite(data)):
        row, col = np.argwhere(~np.isfinite(data))[0]
        raise ValueError(f"{folder / 'data.txt'}: row {row + 1}, column {col} is {data[row, col]}, not a finite number")
    features = _indices(folder / "index_features.txt", data.shape[1], "column")
    target = _indices(folder / "index_target.txt", data.shape[1], "column")
    if target.size != 1:
        raise ValueError(f"{folder / 'index_target.txt'}: expected one target column, got {target.size}")
    train = _indices(folder / f"index_train_{split}.txt", data.shape[0], "row")
    test = _indices(test_file, data.shape[0], "row")
    dtype = torch.get_default_dtype()
    x, y = torch.as_tensor(data[:, features], dtype=dtype), torch.as_tensor(data[:, target[0]], dtype=dtype)
    text = (
        f"UCI {folder.name}, split {split} of {count}: {len(data)} rows, {len(features)} inputs, "
        f"target column {int(target[0])}"
    )
    return Dataset(folder.name, "regression", x[train], y[train], x[test], y[test], text)
