"""Run the teaching notebooks full-length and store their outputs: ``make notebooks``.

Each notebook is executed top to bottom in a fresh kernel without ``PYROBNN_SMOKE``, its
outputs and figures are written back into the ``.ipynb``, and its metadata records what
made them (``metadata["pyrobnn"]``)::

    version       pyrobnn.__version__
    library_hash  SHA-256 over the package's source files (pyrobnn/**/*.py)
    code_hash     SHA-256 over the notebook's own code cells

``tests/test_notebooks.py`` recomputes both hashes: a notebook whose outputs were made by
an older library, or whose code was edited after its run, fails the suite, with this
command as the fix. Any change under ``pyrobnn/`` therefore means running it again.

Usage::

    python notebooks/make_notebooks.py                 # all notebooks
    python notebooks/make_notebooks.py 05 07           # those whose names start so
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "pyrobnn"


def library_hash(package: Path = PACKAGE) -> str:
    """SHA-256 over the relative paths and bytes of every ``.py`` file of the package."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def code_hash(nb: Any) -> str:
    """SHA-256 over the sources of a notebook's code cells, in order."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode())
            digest.update(b"\0")
    return digest.hexdigest()


def run(path: Path, timeout: int, stamp: dict[str, str]) -> float:
    """Execute one notebook full-length in place, stamped with ``stamp``; returns the wall time in seconds."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    seconds = time.perf_counter() - start
    nb.metadata["pyrobnn"] = {**stamp, "code_hash": code_hash(nb)}
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose file names start so")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = parser.parse_args(argv)

    paths = sorted(HERE.glob("*.ipynb"))
    if args.prefixes:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in args.prefixes)]
        if not paths:
            parser.error(f"no notebook in {HERE} starts with {' or '.join(args.prefixes)}")
    # A full-length run: the kernel inherits this environment. Figures go inline, so no
    # MPLBACKEND may force a non-interactive backend.
    os.environ.pop("PYROBNN_SMOKE", None)
    os.environ.pop("MPLBACKEND", None)
    # tqdm.auto says, once per kernel, that ipywidgets is missing; the fits run with
    # progress=False, so the notice would only clutter the first output of a notebook.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:IProgress not found")
    # The library as it is when the runs start: a file edited during them would otherwise
    # stamp notebooks with code they never ran.
    import pyrobnn

    stamp = {"version": pyrobnn.__version__, "library_hash": library_hash()}
    for path in paths:
        print(f"{path.name} ...", end=" ", flush=True)
        print(f"{run(path, args.timeout, stamp):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
