"""The teaching notebooks run from top to bottom without an error.

Each notebook reads ``PYROBNN_SMOKE=1`` and shrinks its step counts and draws so
that it runs in seconds; the numbers it prints are then rough, but every cell runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.slow  # about 2 minutes for all notebooks on a 2-core machine
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits this process's environment: a smoke run, no display.
    monkeypatch.setenv("PYROBNN_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",  # jupyter_client starts a "python" kernelspec with this interpreter
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing cell
    stored = [cell for cell in nbformat.read(path, as_version=4).cells if cell.get("outputs")]
    assert not stored, f"{path.name} is committed with outputs; clear them to keep git small"
