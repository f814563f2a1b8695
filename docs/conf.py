"""Sphinx configuration for the pyrobnn documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -n -E``): every warning,
an unresolved cross-reference included, fails the build. The site is built
offline: cross-references to Python, NumPy, PyTorch, Pyro and ArviZ resolve
through the small inventories in ``_inventories/`` (regenerate them with
``python docs/_inventories/make_inventories.py``), and the notebooks are
rendered with the outputs of the full-length run stored in them (``make notebooks``);
the build does not execute them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path
from typing import Any

from sphinx.util import logging

import pyrobnn

logger = logging.getLogger("pyrobnn.docs")

HERE = Path(__file__).resolve().parent

# -- Project -------------------------------------------------------------------

project = "pyrobnn"
author = "the pyrobnn authors"
copyright = "the pyrobnn authors, Apache-2.0"
release = version = pyrobnn.__version__

extensions = [
    "myst_nb",  # MyST markdown pages and the notebooks
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_inventories", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
root_doc = "index"

html_theme = "alabaster"
html_title = f"pyrobnn {release}"
html_theme_options = {
    "description": "Bayesian neural networks on Pyro, lifted from ordinary PyTorch modules",
    "fixed_sidebar": True,
}

# -- MyST and the notebooks ----------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# notebooks/ is linked into the source tree as docs/notebooks (a symlink), so
# the notebooks are rendered from where they live, never copied.
# They are committed with the outputs and figures of a full-length run, which take
# minutes to make: `make notebooks` makes them, and tests/test_notebooks.py fails when
# they are missing or older than the library. The build shows them as stored.
nb_execution_mode = "off"
nb_merge_streams = True

# -- API reference: autodoc, autosummary, numpydoc ----------------------------------

autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # nn.Module's own docstrings are not pyrobnn's API

numpydoc_show_class_members = False  # the class template lists members with autodoc
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

# -- Cross-references to other projects, offline ----------------------------------

# Each entry names the site the links go to and a local inventory of the objects
# these pages reference (made by _inventories/make_inventories.py), so the build
# never needs the network.
intersphinx_mapping = {
    name: (url, str(HERE / "_inventories" / f"{name}.inv"))
    for name, url in {
        "python": "https://docs.python.org/3/",
        "numpy": "https://numpy.org/doc/stable/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "pyro": "https://docs.pyro.ai/en/stable/",
        "arviz": "https://python.arviz.org/en/stable/",
    }.items()
}

nitpicky = True  # make docs passes -n as well; every reference must resolve
nitpick_ignore = [
    # pyrobnn.checkpoint's alias for ``str | os.PathLike[str]``: save/load's signatures show it
    # by name because their other annotations only import under TYPE_CHECKING.
    ("py:class", "PathLike"),
    # Private helpers in the signature of SVIState's constructor, which pb.svi.init calls
    # (users build the state with init, never by hand).
    ("py:class", "pyrobnn.infer._batching.Batches"),
    ("py:class", "pyrobnn.infer._optim.UntilConverged"),
    ("py:class", "pyrobnn._rng.RNGStream"),
    # Private modules the module docstrings of pb.mcmc and the CLI point a maintainer to (no API
    # page by design). Stop-gap: reword those docstrings as plain ``literals`` at the next
    # library change, which reruns the notebooks anyway.
    ("py:class", "pyrobnn.infer._potential.BatchedPotential"),
    ("py:mod", "pyrobnn.infer._chees"),
    ("py:mod", "pyrobnn.cli._reference"),
]

# -- Every public name has an API page -------------------------------------------

#: The modules whose ``__all__`` is pyrobnn's public API.
PUBLIC_MODULES = [
    "pyrobnn",
    "pyrobnn.priors",
    "pyrobnn.likelihoods",
    "pyrobnn.lift",
    "pyrobnn.model",
    "pyrobnn.guides",
    "pyrobnn.posterior",
    "pyrobnn.infer.elbo",
    "pyrobnn.infer.history",
    "pyrobnn.infer.svi",
    "pyrobnn.infer.fit",
    "pyrobnn.infer.distributed",
    "pyrobnn.infer.mcmc",
    "pyrobnn.export",
    "pyrobnn.evaluate.metrics",
    "pyrobnn.evaluate.diagnostics",
    "pyrobnn.evaluate.compare",
    "pyrobnn.checkpoint",
    "pyrobnn.plots",
    "pyrobnn.datasets",
    "pyrobnn.cli",
]


def _public_objects() -> list[tuple[str, str, object]]:
    """``(module, name, object)`` for every name in a public ``__all__`` (submodules left out)."""
    found = []
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.ismodule(obj):
                found.append((modname, name, obj))
    return found


def _check_api_coverage(app: Any, env: Any) -> None:
    """Warn (an error under ``-W``) for a name in a public ``__all__`` without an API page.

    A name counts as documented under its own module (``pyrobnn.priors.Normal``)
    or under the top-level re-export of the same object (``pyrobnn.fit``).
    """
    documented = set(env.domains["py"].objects)
    for modname, name, obj in _public_objects():
        candidates = {f"{modname}.{name}"}
        if getattr(pyrobnn, name, None) is obj:
            candidates.add(f"pyrobnn.{name}")
        if not candidates & documented:
            logger.warning(
                "%s.%s is public (in __all__) but has no API page: add it to the autosummary "
                "list of its pipeline stage in docs/api/",
                modname,
                name,
                type="pyrobnn",
                subtype="api-coverage",
            )


# -- Short references to re-exported objects -------------------------------------

# A docstring in pyrobnn.checkpoint says :func:`save`, which Sphinx looks for as
# pyrobnn.checkpoint.save; the API pages document that function once, as
# pyrobnn.save. This resolves such a reference through the object it names:
# look the target up from the referring module (and class), and link to the
# page that documents the same object. A target that is not an attribute there
# (a constant named from another module's docstring) resolves when exactly one
# documented object has that last name.


def _getattr_path(root: object, dotted: str) -> object | None:
    obj = root
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def _documented_by_object(app: Any, env: Any) -> dict[int, str]:
    """Documented classes, functions and methods, keyed by ``id`` of the object (once per build)."""
    cache = getattr(app, "_pyrobnn_documented", None)
    if cache is None:
        cache = {}
        for name, entry in env.domains["py"].objects.items():
            if entry.objtype not in {"class", "exception", "function", "method", "property"} or entry.aliased:
                continue
            modname, _, rest = name.partition(".")
            obj = _getattr_path(importlib.import_module(modname), rest) if rest else None
            if obj is not None and (inspect.isroutine(obj) or inspect.isclass(obj)):
                cache.setdefault(id(obj), name)
        app._pyrobnn_documented = cache
    return cache


def _resolve_short_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    modname, clsname, target = node.get("py:module"), node.get("py:class"), node["reftarget"]
    if not modname or not modname.startswith("pyrobnn") or target.startswith("pyrobnn."):
        return None
    domain = env.domains["py"]
    found = None
    module = importlib.import_module(modname)
    for dotted in ([f"{clsname}.{target}"] if clsname else []) + [target]:
        obj = _getattr_path(module, dotted)
        if obj is not None:
            found = _documented_by_object(app, env).get(id(obj))
            if found:
                break
    if found is None:
        suffix = "." + target
        matches = [name for name in domain.objects if name.endswith(suffix) and not domain.objects[name].aliased]
        if len(matches) == 1:
            found = matches[0]
    if found is None:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found, node, contnode)


# -- Dataclass fields with a default factory -------------------------------------


def _factory_defaults(
    app: Any, what: str, name: str, obj: object, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None] | None:
    """Show ``config: Mapping[str, Any] = dict()`` where Python's signature says ``= <factory>``.

    ``<factory>`` is not an expression, so Sphinx could not parse the signature
    and would leave its annotations unlinked.
    """
    if what != "class" or not signature or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    factories = [f.default_factory for f in dataclasses.fields(obj) if f.default_factory is not dataclasses.MISSING]
    for factory in factories:  # the signature lists the fields in order
        signature = signature.replace("<factory>", f"{getattr(factory, '__name__', 'factory')}()", 1)
    return signature, return_annotation


# -- Base classes: show the public ones --------------------------------------------


def _public_bases(app: Any, name: str, obj: object, options: Any, bases: list[type]) -> None:
    """Show public bases only: a private pyrobnn base (``_Scaled``, ``JointGuide``) gives way to its own."""
    public = {id(o) for _, _, o in _public_objects()}

    def expand(base: type) -> list[type]:
        if not base.__module__.startswith("pyrobnn") or id(base) in public:
            return [base]
        return [b for parent in base.__bases__ for b in expand(parent)]

    bases[:] = list(dict.fromkeys(b for base in bases for b in expand(base)))


def setup(app: Any) -> None:
    app.connect("env-check-consistency", _check_api_coverage)
    app.connect("missing-reference", _resolve_short_reference)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-signature", _factory_defaults)


# Docstrings write the absolute value of the ELBO as |ELBO|, which reStructuredText reads as a
# substitution reference: define it to stand for itself.
rst_prolog = r"""
.. |ELBO| replace:: \|ELBO\|
"""
