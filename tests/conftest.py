"""A strict test environment: Pyro validation on, fixed seeds, warnings as errors (pyproject)."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _strict_and_seeded() -> None:
    pyro.enable_validation(True)
    pyro.clear_param_store()
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    import pyrobnn

    doctest_namespace["pb"] = pyrobnn
    doctest_namespace["torch"] = torch
