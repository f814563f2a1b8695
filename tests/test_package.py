"""The package's surface and its manners: layering, global state, public names."""

from __future__ import annotations

import subprocess
import sys

import pyro
import torch

import pyrobnn as pb


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
