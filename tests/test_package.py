"""The package's surface and its manners: layering, global state, public names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pyro
import torch

import pyrobnn as pb

PACKAGE = Path(pb.__file__).parent

#: The model side (the stages left of the ELBO) and the training side it must not import:
#: where training changes how a model computes, it applies an effect handler to it.
MODEL_SIDE = ("pyrobnn.lift", "pyrobnn.model", "pyrobnn.guides")
TRAINING_SIDE = {"pyrobnn.infer.elbo", "pyrobnn.infer.fit", "pyrobnn.infer.distributed", "pyrobnn.infer._local_reparam"}


def test_core_imports_without_the_export_and_plotting_stack() -> None:
    code = (
        "import sys\n"
        "for name in ('arviz', 'xarray', 'matplotlib', 'pandas', 'scipy'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "import pyrobnn\n"
        "print(sorted(m for m in ('arviz', 'xarray', 'matplotlib') if sys.modules.get(m)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_and_fit_leave_pyro_settings_alone() -> None:
    before = (pyro.settings.get("module_local_params"), pyro.infer.util.is_validation_enabled())
    x = torch.randn(10, 2)
    model = pb.BayesianModel(pb.lift(torch.nn.Linear(2, 1)), pb.likelihoods.Gaussian(0.1))
    pb.fit(model, "meanfield", (x, x.sum(-1)), num_steps=3, progress=False)
    assert (pyro.settings.get("module_local_params"), pyro.infer.util.is_validation_enabled()) == before
    assert len(pyro.get_param_store()) == 0  # nothing leaks into Pyro's global parameter store


def test_public_names_exist() -> None:
    for name in pb.__all__:
        assert hasattr(pb, name), name
    for module in (pb.priors, pb.likelihoods, pb.guides, pb.datasets):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def _module_file(name: str) -> Path | None:
    """The source file of a pyrobnn module or package, or ``None`` if ``name`` is not one."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _pyrobnn_imports(name: str) -> set[str]:
    """The pyrobnn modules that module ``name``'s own import statements name, deferred ones included."""
    file = _module_file(name)
    assert file is not None, name
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            # `from pyrobnn import _globs` imports a module; `from pyrobnn.lift import lift` a name
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found.update({m for m in submodules if _module_file(m)} or {node.module})
    return {m for m in found if m.split(".")[0] == "pyrobnn"}


def _reachable(start: str) -> set[str]:
    """Every pyrobnn module that ``start`` imports, directly or through others.

    Python runs ``pyrobnn/__init__.py`` before any of its submodules, and it imports every
    stage; so the layering is a property of the modules' own import statements, read here
    from their syntax trees, not of ``sys.modules`` after an import.
    """
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = _module_file(name)
        if file is not None and file.name == "__init__.py" and name != "pyrobnn":  # a package: its modules too
            todo += [f"{name}.{f.stem}" for f in file.parent.glob("*.py") if f.stem != "__init__"]
        todo += sorted(_pyrobnn_imports(name))
    return seen - {start}


def test_the_model_side_imports_nothing_from_the_training_side() -> None:
    """lift, model and the guides know no ELBO: local reparameterisation reaches them as a Pyro effect."""
    # The check sees an import of the training side where there is one (the ELBO imports its handler).
    assert "pyrobnn.infer._local_reparam" in _reachable("pyrobnn.infer.elbo")
    for start in MODEL_SIDE:
        reached = _reachable(start)
        assert "pyrobnn.priors" in reached  # it follows imports at all
        assert not reached & TRAINING_SIDE, (start, sorted(reached & TRAINING_SIDE))
        assert "pyrobnn" not in reached, start  # `from pyrobnn import fit` would import every stage
