"""The teaching notebooks: committed with the outputs of a current full run, and runnable.

``make notebooks`` (``notebooks/make_notebooks.py``) runs each notebook full-length and
stores its outputs and figures, which the documentation shows, with the hashes of the
library and of the notebook's code that made them. The fast tests here fail when a
notebook is committed without outputs, or when either hash no longer matches: the
outputs would then describe code that no longer exists.

The slow tests execute every notebook with ``PYROBNN_SMOKE=1``, which shrinks its step
counts and draws so that it runs in seconds; the numbers are then rough, but every cell
runs, and the assertions a full run makes on the numbers its prose quotes are skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

HERE = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
FIX = "run `make notebooks` (or `python notebooks/make_notebooks.py <name>`) and commit the result"


def _make_notebooks():  # notebooks/make_notebooks.py, which is a script, not a module of the package
    spec = importlib.util.spec_from_file_location("make_notebooks", HERE / "make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_current_outputs(path: Path) -> None:
    made = _make_notebooks()
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    # One uninterrupted run in one kernel numbers the cells 1, 2, 3, ...
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not run top to bottom in one go; {FIX}"
    assert any(cell.get("outputs") for cell in code), f"{path.name} has no outputs; {FIX}"
    errors = [o for cell in code for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} is committed with an error output; {FIX}"

    stamp = nb.metadata.get("pyrobnn")
    assert stamp is not None, f"{path.name} has no record of the library that ran it; {FIX}"
    assert stamp["code_hash"] == made.code_hash(nb), f"{path.name}'s code was edited after its outputs were made; {FIX}"
    assert stamp["library_hash"] == made.library_hash(), (
        f"{path.name}'s outputs were made by pyrobnn {stamp['version']} as it was before the last change "
        f"under pyrobnn/; {FIX}"
    )


def test_the_hashes_see_a_change(tmp_path: Path) -> None:
    made = _make_notebooks()
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    before = made.library_hash(package)
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert made.library_hash(package) != before
    (package / "sub" / "b.py").write_text("y = 2\n")
    assert made.library_hash(package) == before

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1"), nbformat.v4.new_markdown_cell("text")])
    before = made.code_hash(nb)
    nb.cells[1].source = "other text"  # prose is not code: only a code change invalidates outputs
    assert made.code_hash(nb) == before
    nb.cells[0].source = "a = 2"
    assert made.code_hash(nb) != before


@pytest.mark.slow  # about 3 minutes for all notebooks on a 2-core machine
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
