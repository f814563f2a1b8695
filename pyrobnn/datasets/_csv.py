"""CSV files: :func:`load_csv` reads one with a header row and splits it at random into train and test."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pyrobnn.datasets._dataset import TASKS, Dataset

__all__ = ["MAX_INFERRED_CLASSES", "csv_columns", "load_csv"]

#: :func:`load_csv` infers classification for a whole-number target with at most this many distinct values.
MAX_INFERRED_CLASSES = 10


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
        numbers: a missing, non-numeric, NaN or infinite cell is an error naming
        its line and column, and a column of text is an error naming the
        numeric columns to pass here instead.
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

    Rows are read as they are, with no imputation: a missing target (an empty
    cell, or ``NA``, ``N/A``, ``nan``, ``null``, ``None``, ``?`` among numbers)
    is an error naming its line, and so is a missing input. A target with a
    single distinct value is an error whatever the task: there is nothing to
    learn from it.
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
            cell = row[cols[name]].strip()
            if cell.lower() not in _MISSING and not _is_float(cell):
                _refuse_text(file, line, name, cell, [[row[cols[c]] for _, row in body] for c in inputs], inputs)
            x[r, j] = _number(cell, file, line, name)
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


#: Cells read as a missing value (compared in lower case), as pandas' ``read_csv`` reads most of them.
_MISSING = frozenset({"", "na", "n/a", "nan", "-nan", "null", "none", "#n/a", "<na>", "?"})
#: How to deal with a missing value, for the API and the command line alike.
_FIX_MISSING = "drop the row or fill in the cell"


def _number(cell: str, file: Path, line: int, column: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
        if text and text.lower() not in _MISSING:
            raise ValueError(f"{file}: line {line}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        shown = repr(text) if text else "an empty cell"
        missing = " (a missing value)" if text and text.lower() in _MISSING else ""
        raise ValueError(
            f"{file}: line {line}, column {column!r}: {shown} is not a finite number{missing}; {_FIX_MISSING}"
        )
    return value


def _refuse_text(file: Path, line: int, column: str, cell: str, cells: list[list[str]], inputs: list[str]) -> None:
    """Raise for the text ``cell`` in the feature ``column``: a typo in a column of numbers, or a text column."""
    numeric = [
        name
        for name, col in zip(inputs, cells, strict=True)
        if all(_is_float(v) or v.strip().lower() in _MISSING for v in col)
    ]
    leave_out = (
        f"leave the column out with features={numeric!r} (--features {','.join(numeric)} on the command line)"
        if numeric
        else "drop it (no feature column holds numbers only)"
    )
    if any(_is_float(v) for v in cells[inputs.index(column)]):  # a column of numbers with a bad cell
        raise ValueError(
            f"{file}: line {line}, column {column!r}: {cell!r} is not a number; fix the cell, or {leave_out}"
        )
    raise ValueError(
        f"{file}: feature column {column!r} holds text ({cell!r} on line {line}), but features must be numbers: "
        f"encode it as numbers (one 0/1 column per category) or {leave_out}"
    )


def _target(
    raw: list[str], lines: list[int], file: Path, column: str, task: str | None
) -> tuple[np.ndarray, str, tuple[str, ...] | None]:
    """Target values, the task (inferred when ``None``, see :func:`load_csv`) and the class names."""
    numeric = [_is_float(v) for v in raw]
    missing = [v.lower() in _MISSING for v in raw]
    labels_are_text = any(not (n or m) for n, m in zip(numeric, missing, strict=True))
    for v, line, m in zip(raw, lines, missing, strict=True):
        # "NA" among numbers is a missing value; among text labels it may be a class, and is left to be one
        if not v or (m and not labels_are_text):
            _refuse_missing(file, line, column, v)
    if task is None:
        if not any(numeric):
            task = "classification"  # text labels
        elif not all(numeric):
            i = numeric.index(False)
            raise ValueError(
                f"{file}: line {lines[i]}, column {column!r}: {raw[i]!r} is not a number, though other targets are; "
                "fix the cell, or read every target as a class label with task='classification' "
                "(--task classification on the command line)"
            )
        else:
            values = [_number(v, file, line, column) for v, line in zip(raw, lines, strict=True)]
            few = len(set(values)) <= MAX_INFERRED_CLASSES
            task = "classification" if few and all(v == round(v) for v in values) else "regression"
    if task == "regression":
        values = [_number(v, file, line, column) for v, line in zip(raw, lines, strict=True)]
        _refuse_constant(file, column, values)
        return np.array(values), task, None
    if all(numeric):  # numbers as labels, in numerical order
        values = [_number(v, file, line, column) for v, line in zip(raw, lines, strict=True)]
        _refuse_constant(file, column, values)
        ordered = sorted(set(values))
        index = {v: k for k, v in enumerate(ordered)}
        return np.array([index[v] for v in values]), task, tuple(_label(v) for v in ordered)
    _refuse_constant(file, column, raw)
    labels = sorted(set(raw))
    lookup = {v: k for k, v in enumerate(labels)}
    return np.array([lookup[v] for v in raw]), task, tuple(labels)


def _refuse_missing(file: Path, line: int, column: str, cell: str) -> None:
    shown = f"{cell!r}" if cell else "an empty cell"
    raise ValueError(
        f"{file}: line {line}, column {column!r}: the target is missing ({shown}); {_FIX_MISSING}. "
        "A row without a target cannot be fitted or scored."
    )


def _refuse_constant(file: Path, column: str, values: Sequence[float | str]) -> None:
    """Raise if every row has the same target: there is nothing to learn from it, whatever the task."""
    if len(set(values)) == 1:
        raise ValueError(
            f"{file}: the target column {column!r} is constant: every row has target {values[0]!r}, so there "
            "is nothing to learn; choose another target column (target=... in load_csv, --target on the "
            "command line)"
        )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label(value: float) -> str:
    return str(int(value)) if value == round(value) else str(value)
