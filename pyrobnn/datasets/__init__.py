"""Datasets: small built-ins generated on the fly, readers for UCI splits and CSV files, standardisation.

The built-ins exist for the demo, the tests and teaching; nothing is downloaded
or shipped. :func:`load_uci` reads the standard UCI regression splits from a
folder the user provides, :func:`load_csv` a CSV file with a header row, and
:func:`standardize` puts any of them on the scale a network is fitted on.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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

#: The two tasks a dataset can have.
TASKS = ("regression", "classification")
#: :func:`load_csv` infers classification for a whole-number target with at most this many distinct values.
MAX_INFERRED_CLASSES = 10


@dataclass(frozen=True)
class Dataset:
    """A train/test split: ``task`` is ``"regression"`` or ``"classification"``.

    Regression targets are real tensors of shape ``(n,)``; class labels are
    ``long`` tensors with values ``0 … num_classes − 1``, and ``classes`` (when
    known) names the label each integer stands for.
    """

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    description: str
    classes: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int | None:
        if self.task != "classification":
            return None
        if self.classes is not None:
            return len(self.classes)
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _gap1d(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    side = torch.randint(0, 2, (n, 1), generator=g)
    x = torch.where(side == 0, -2 + 1.5 * torch.rand(n, 1, generator=g), 0.5 + 1.5 * torch.rand(n, 1, generator=g))
    y = torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(n, generator=g)
    return x, y


def _hetero1d(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = 4 * torch.rand(n, 1, generator=g) - 2
    noise = 0.05 + 0.25 * (x.squeeze(-1) + 2) / 4
    y = torch.sin(2 * x).squeeze(-1) + noise * torch.randn(n, generator=g)
    return x, y


def _friedman(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 10, generator=g)
    y = (
        10 * torch.sin(math.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
        + torch.randn(n, generator=g)
    )
    return x, y


def _moons(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.randint(0, 2, (n,), generator=g)
    angle = math.pi * torch.rand(n, generator=g)
    x = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    x = torch.where(label[:, None] == 1, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], dim=1), x)
    return x + 0.15 * torch.randn(n, 2, generator=g), label


def _spirals(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    label = torch.randint(0, 3, (n,), generator=g)
    r = torch.rand(n, generator=g)
    angle = 4 * r + label * (2 * math.pi / 3) + 0.2 * torch.randn(n, generator=g)
    x = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
    return x, label


_REGISTRY: dict[str, tuple[str, Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]], int, int, str]] = {
    "gap1d": (
        "regression",
        _gap1d,
        160,
        200,
        "y = sin(3x) + N(0, 0.1²), x in [-2, -0.5] ∪ [0.5, 2]: a gap in the inputs",
    ),
    "hetero1d": ("regression", _hetero1d, 300, 300, "y = sin(2x) + noise growing from 0.05 to 0.3 over x in [-2, 2]"),
    "friedman": ("regression", _friedman, 500, 500, "Friedman #1: 10 inputs, 5 informative, N(0, 1) noise"),
    "moons": ("classification", _moons, 400, 400, "two interleaved half-moons, 2 classes"),
    "spirals": ("classification", _spirals, 600, 600, "three interleaved spirals, 3 classes"),
}


def names() -> list[str]:
    """The built-in dataset names."""
    return list(_REGISTRY)


def describe(name: str) -> str:
    return _REGISTRY[_check(name)][4]


def _check(name: str) -> str:
    if name not in _REGISTRY:
        raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(_REGISTRY)}")
    return name


def load(name: str, seed: int = 0) -> Dataset:
    """Generate a built-in dataset; the same ``seed`` gives the same data."""
    task, make, n_train, n_test, text = _REGISTRY[_check(name)]
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = make(g, n_train)
    x_test, y_test = make(g, n_test)
    return Dataset(name, task, x_train, y_train, x_test, y_test, text)


# --- the standard UCI regression splits ------------------------------------------------------------

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


# --- CSV files ---------------------------------------------------------------------------------------


def csv_columns(path: str | Path) -> list[str]:
    """The column names in the header row of a CSV file (what :func:`load_csv` can take as ``target``)."""
    return _csv_rows(Path(path))[0]


def _csv_rows(file: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank data rows of a CSV file, each row with its line number."""
    if not file.is_file():
        raise ValueError(f"CSV file {str(file)!r} does not exist")
    with file.open(newline="") as fh:
        rows = [(i, row) for i, row in enumerate(csv.reader(fh), start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{file}: empty file; expected a header row naming the columns, then one row per example")
    return [name.strip() for name in rows[0][1]], rows[1:]


def load_csv(
    path: str | Path,
    target: str,
    *,
    features: Sequence[str] | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    task: str | None = None,
) -> Dataset:
    """Read a CSV file with a header row and split it at random into train and test.

    Parameters
    ----------
    path
        The file: comma-separated, the first row naming the columns; blank lines are skipped.
    target
        The name of the target column.
    features
        The input columns; default: every column but the target. Inputs must be
        numbers (a missing, non-numeric, NaN or infinite cell is an error naming
        its line and column).
    test_fraction
        The share of rows held out, rounded (at least one row each side).
    seed
        Seeds the random split: the same seed gives the same split.
    task
        ``"regression"`` or ``"classification"``; default: inferred (see Notes).

    Returns
    -------
    Dataset
        Named after the file (without its suffix), in torch's default dtype; for
        classification the labels are ``0 … K − 1`` and ``classes`` the original
        values in sorted order (numbers numerically, text alphabetically).

    Notes
    -----
    The inferred task is **classification** when the target holds text, or
    whole numbers only with at most :data:`MAX_INFERRED_CLASSES` (10) distinct
    values; otherwise **regression**. A count or a rating scored 1-5 is
    therefore taken as classes: pass ``task="regression"`` to model it as a
    real number.
    """
    file = Path(path)
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)} (or None to infer it), got {task!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    header, body = _csv_rows(file)
    if len(body) < 2:
        raise ValueError(f"{file}: {len(body)} data row(s); a train/test split needs at least 2")
    available = ", ".join(header)
    if target not in header:
        raise ValueError(f"{file}: no column {target!r}; the columns are: {available}")
    inputs = [c for c in header if c != target] if features is None else list(features)
    unknown = [c for c in inputs if c not in header]
    if unknown:
        raise ValueError(f"{file}: no column(s) {', '.join(map(repr, unknown))}; the columns are: {available}")
    if target in inputs:
        raise ValueError(f"{file}: the target column {target!r} is also listed among the features")
    if not inputs:
        raise ValueError(f"{file}: no feature columns besides the target {target!r}")
    for line, row in body:
        if len(row) != len(header):
            raise ValueError(f"{file}: line {line} has {len(row)} fields, the header has {len(header)}")
    cols = {name: i for i, name in enumerate(header)}
    x = np.empty((len(body), len(inputs)))
    for j, name in enumerate(inputs):
        for r, (line, row) in enumerate(body):
            x[r, j] = _number(row[cols[name]], file, line, name)
    raw = [row[cols[target]].strip() for _, row in body]
    y, task, classes = _target(raw, [line for line, _ in body], file, target, task)
    n = len(body)
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    dtype = torch.get_default_dtype()
    xt = torch.as_tensor(x, dtype=dtype)
    yt = torch.as_tensor(y, dtype=torch.long) if task == "classification" else torch.as_tensor(y, dtype=dtype)
    text = (
        f"{file.name}: {n} rows, {len(inputs)} inputs, target {target!r} ({task}"
        + (f", {len(classes)} classes" if classes else "")
        + f"), {n_test} test rows drawn with seed {seed}"
    )
    return Dataset(file.stem, task, xt[train], yt[train], xt[test], yt[test], text, classes)


def _number(cell: str, file: Path, line: int, column: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
        if text:
            raise ValueError(f"{file}: line {line}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        shown = repr(text) if text else "an empty cell"
        raise ValueError(f"{file}: line {line}, column {column!r}: {shown} is not a finite number")
    return value


def _target(
    raw: list[str], lines: list[int], file: Path, column: str, task: str | None
) -> tuple[np.ndarray, str, tuple[str, ...] | None]:
    """Target values, the task (inferred when ``None``, see :func:`load_csv`) and the class names."""
    numeric = [_is_float(v) for v in raw]
    if task is None:
        if not any(numeric):
            task = "classification"  # text labels
        elif not all(numeric):
            i = numeric.index(False)
            raise ValueError(
                f"{file}: line {lines[i]}, column {column!r}: {raw[i]!r} is not a number, though other targets are; "
                "fix the cell, or pass task='classification' to read every target as a class label"
            )
        else:
            values = [_number(v, file, line, column) for v, line in zip(raw, lines, strict=True)]
            few = len(set(values)) <= MAX_INFERRED_CLASSES
            task = "classification" if few and all(v == round(v) for v in values) else "regression"
    if task == "regression":
        values = [_number(v, file, line, column) for v, line in zip(raw, lines, strict=True)]
        return np.array(values), task, None
    for v, line in zip(raw, lines, strict=True):
        if not v:
            raise ValueError(f"{file}: line {line}, column {column!r}: an empty cell has no class")
    if all(numeric):  # numbers as labels, in numerical order
        values = [_number(v, file, line, column) for v, line in zip(raw, lines, strict=True)]
        ordered = sorted(set(values))
        index = {v: k for k, v in enumerate(ordered)}
        return np.array([index[v] for v in values]), task, tuple(_label(v) for v in ordered)
    labels = sorted(set(raw))
    lookup = {v: k for k, v in enumerate(labels)}
    return np.array([lookup[v] for v in raw]), task, tuple(labels)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label(value: float) -> str:
    return str(int(value)) if value == round(value) else str(value)


# --- standardisation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardized:
    """A dataset put on the scale a network is fitted on, with what it takes to undo it.

    ``x = (x_raw − x_mean) / x_scale`` for both splits; for regression also
    ``y = (y_raw − y_mean) / y_scale`` (class labels are left as they are, with
    ``y_mean = 0`` and ``y_scale = 1``). Pass ``y_scale`` to
    :func:`pyrobnn.evaluate.compare` or :func:`pyrobnn.evaluate.metrics.evaluate` to report RMSE and
    log-likelihood in the original units.
    """

    dataset: Dataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_mean: torch.Tensor
    x_scale: torch.Tensor
    y_mean: float
    y_scale: float


def standardize(ds: Dataset) -> Standardized:
    """Standardise inputs (and a regression target) with the training split's mean and standard deviation.

    The statistics come from the training split only, so nothing about the test
    split leaks into the fit. The standard deviation is the population one
    (``ddof=0``), and a constant column (standard deviation 0, e.g. naval's
    columns 8 and 11) keeps scale 1 — the protocol of the UCI benchmark
    (Hernández-Lobato & Adams 2015). Arithmetic is in float64; the results have
    the dataset's dtype.

    Examples
    --------
    >>> import pyrobnn as pb
    >>> data = pb.datasets.standardize(pb.datasets.load("friedman"))
    >>> bool(data.x_train.mean(0).abs().max() < 1e-5), round(float(data.y_train.std(unbiased=False)), 4)
    (True, 1.0)
    """
    x_mean, x_scale = _moments(ds.x_train.double(), dim=0)
    dtype = ds.x_train.dtype

    def scale_x(x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - x_mean) / x_scale).to(dtype)

    x_train, x_test = scale_x(ds.x_train), scale_x(ds.x_test)
    if ds.task == "classification":
        return Standardized(ds, x_train, ds.y_train, x_test, ds.y_test, x_mean.to(dtype), x_scale.to(dtype), 0.0, 1.0)
    y_mean, y_scale = _moments(ds.y_train.double(), dim=0)
    ydtype = ds.y_train.dtype

    def scale_y(y: torch.Tensor) -> torch.Tensor:
        return ((y.double() - y_mean) / y_scale).to(ydtype)

    return Standardized(
        ds,
        x_train,
        scale_y(ds.y_train),
        x_test,
        scale_y(ds.y_test),
        x_mean.to(dtype),
        x_scale.to(dtype),
        float(y_mean),
        float(y_scale),
    )


def _moments(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = t.mean(dim)
    std = t.std(dim, unbiased=False)
    # a column whose spread is rounding error around its mean is constant: keep it unscaled
    constant = std <= 1e-12 * mean.abs().clamp_min(1.0)
    return mean, torch.where(constant, torch.ones_like(std), std)
