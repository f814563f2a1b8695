"""The package's surface and its manners: layering, global state, public names."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pyro
import torch

import pyrobnn as pb

PACKAGE = Path(pb.__file__).parent

#: The pipeline's stages from left to right, as docs/architecture.md lists them: a stage
#: imports only stages to its left (and itself) and the shared helpers.
STAGES = (
    "pyrobnn.priors",
    "pyrobnn.likelihoods",
    "pyrobnn.lift",
    "pyrobnn.model",
    "pyrobnn.guides",
    "pyrobnn.posterior",
    "pyrobnn.infer",
    "pyrobnn.export",
    "pyrobnn.evaluate",
    "pyrobnn.checkpoint",
    "pyrobnn.plots",
    "pyrobnn.cli",
)
#: Top-level private modules any stage may import; they import no stage.
HELPERS = (
    "pyrobnn._globs",
    "pyrobnn._rng",
    "pyrobnn._tensors",
    "pyrobnn._effects",
    "pyrobnn._arviz",
    "pyrobnn._version",
    "pyrobnn._warnings",
    "pyrobnn._moved",
)
#: Outside the chain: it produces tensors, imports helpers only, and only the command line imports it.
DATASETS = "pyrobnn.datasets"
#: The layout's size rule: no module over this many lines.
MAX_MODULE_LINES = 400

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


def _all_modules() -> list[str]:
    """Every module of the package by dotted name (``pyrobnn/infer/svi.py`` is ``pyrobnn.infer.svi``)."""
    names = []
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _unit(module: str) -> str:
    """The stage, helper or dataset package a module belongs to: its first two name components."""
    return ".".join(module.split(".")[:2])


def _rank(unit: str) -> int:
    """Where a unit stands in the pipeline: helpers first (-1), then the stages left to right."""
    if unit in HELPERS:
        return -1
    assert unit in STAGES or unit == DATASETS, f"{unit} is neither a stage nor a helper: add it to the layering"
    return STAGES.index(unit) if unit in STAGES else -1


def test_every_module_belongs_to_a_stage_or_a_helper() -> None:
    units = {_unit(m) for m in _all_modules()} - {"pyrobnn"}
    assert units == set(STAGES) | set(HELPERS) | {DATASETS}, sorted(units ^ (set(STAGES) | set(HELPERS) | {DATASETS}))


def test_a_stage_imports_only_stages_to_its_left() -> None:
    """docs/architecture.md's rule, on every module's own import statements, deferred ones included."""
    checked = 0
    for module in _all_modules():
        if module == "pyrobnn":  # the package's front imports every stage to re-export its verbs
            continue
        unit = _unit(module)
        for imported in _pyrobnn_imports(module):
            target = _unit(imported)
            if target == unit:
                continue
            checked += 1
            assert target != "pyrobnn", f"{module} imports the package root (every stage); import the stage itself"
            if unit in HELPERS:
                assert target in HELPERS, f"helper {module} imports the stage {imported}"
            elif unit == DATASETS:
                assert target in HELPERS, f"{module} imports {imported}: the datasets know no other stage"
            elif target == DATASETS:
                assert unit == "pyrobnn.cli", f"{module} imports the datasets; only the command line may"
            else:
                assert _rank(target) <= _rank(unit), f"{module} ({unit}) imports {imported}, a stage to its right"
    assert checked > 50  # the check sees the imports at all


def test_private_modules_and_names_stay_inside_their_stage() -> None:
    """A stage's ``_private`` module is imported only within its stage; ``_names`` never cross modules."""
    for module in _all_modules():
        file = _module_file(module)
        assert file is not None
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{module}: relative import; write absolute pyrobnn imports"
                imported = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                names = [a.name for a in node.names if _module_file(f"{node.module}.{a.name}") is None]
                if (node.module or "").startswith("pyrobnn"):
                    private = [n for n in names if n.startswith("_") and not n.endswith("__")]
                    assert not private, f"{module} imports private names {private}"
            else:
                imported = [a.name for a in node.names]
            for target in imported:
                parts = target.split(".")
                if parts[0] != "pyrobnn" or _module_file(target) is None:
                    continue
                private_in_stage = [i for i, p in enumerate(parts) if p.startswith("_") and i >= 2]
                if private_in_stage:
                    owner = ".".join(parts[: private_in_stage[0]])
                    assert module == owner or module.startswith(owner + "."), (
                        f"{module} imports {target}, private to {owner}"
                    )


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {m: len(_module_file(m).read_text().splitlines()) for m in _all_modules()}  # type: ignore[union-attr]
    assert not {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES}, sorted(sizes.items(), key=lambda kv: -kv[1])[
        :5
    ]


def test_prose_and_sources_hold_no_control_characters() -> None:
    # A string written through Python without r"..." turns LaTeX's \approx and \top into a bell
    # and a tab; the rendered page then shows "pprox" and "op". Tabs and newlines are allowed in
    # code, none of the others anywhere.
    root = PACKAGE.parent
    files = [*root.glob("*.md"), *(root / "docs").glob("*.md"), *(root / "benchmarks").rglob("*.md")]
    files += [*PACKAGE.rglob("*.py"), *(root / "benchmarks").glob("*.py"), *(root / "tests").glob("*.py")]
    texts = {path: path.read_text() for path in files}
    for notebook in (root / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        texts[notebook] = "".join("".join(cell["source"]) for cell in cells)
    control = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
    found = {str(path.relative_to(root)): len(control.findall(text)) for path, text in texts.items()}
    assert len(texts) > 20 and not {path: n for path, n in found.items() if n}
    # and no LaTeX whose backslash-t became a tab in prose
    tabbed = {
        str(p.relative_to(root))
        for p, t in texts.items()
        if p.suffix != ".py" and re.search(r"\t(op|au|heta|imes|ext)\b", t)
    }
    assert not tabbed


def test_the_module_paths_from_before_the_packages_warn_and_name_the_removal() -> None:
    """Old paths read the moved modules with a DeprecationWarning naming the new path and the removal version;
    the public top-level modules (``pyrobnn.svi``, ``.metrics``, ``.diagnostics``) import without one."""
    code = (
        "import warnings, pytest\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import pyrobnn as pb, pyrobnn._moved as moved\n"
        "import pyrobnn.svi, pyrobnn.metrics, pyrobnn.diagnostics\n"
        "from pyrobnn.diagnostics import psis_khat\n"
        "assert pyrobnn.svi is pyrobnn.infer.svi and psis_khat is pyrobnn.evaluate.diagnostics.psis_khat\n"
        "for old, new in moved.MOVED.items():\n"
        "    module = __import__(new, fromlist=['__all__'])\n"
        "    name = module.__all__[0]\n"
        "    expected = rf'pyrobnn\\.{old} is deprecated .* removed in pyrobnn {moved.REMOVED_IN}: '\\\n"
        "        rf'import {name} from {new} instead'\n"
        "    with pytest.warns(DeprecationWarning, match=expected):\n"
        "        got = getattr(__import__(f'pyrobnn.{old}', fromlist=[name]), name)\n"
        "    assert got is getattr(module, name)\n"
        "import pyrobnn.elbo\n"
        "with pytest.warns(DeprecationWarning):\n"
        "    assert pyrobnn.elbo.Terms is pyrobnn.infer.elbo.Terms\n"
        "import pyrobnn.fit as bound  # the attribute wins: the function, as _moved.py documents\n"
        "assert bound is pb.fit and callable(pb.fit) and pb.mcmc.__name__ == 'mcmc'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
