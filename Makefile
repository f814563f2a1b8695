# make demo  - set up .venv and run the main job (compare guides on a built-in dataset)
# make test  - set up .venv and run lint, type checks, the whole test suite and the docs build
# make test-arviz1 - the torch-free ArviZ export core against arviz 1.x (Python 3.12, small env)
# make docs  - build the documentation site into docs/_build/html (warnings are errors)
# make notebooks - run every notebook full-length and store its outputs (minutes; after any change to pyrobnn/)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) python3.12)
VENV_AZ1  ?= .venv-arviz1

.PHONY: setup demo test lint typecheck pytest test-arviz1 docs notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,docs,bench]'
	touch $(STAMP)

demo: setup
	$(BIN)/pyrobnn compare --data builtin:gap1d --guides meanfield,lowrank,fullrank,flow,map,laplace --out demo-report

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy pyrobnn

pytest: setup
	$(BIN)/python -m pytest

# arviz 1.x needs Python >= 3.12; this env has numpy, arviz 1.x, netCDF I/O and pytest, no torch.
$(VENV_AZ1)/.installed:
	test -x $(VENV_AZ1)/bin/python || $(PYTHON312) -m venv $(VENV_AZ1)
	$(VENV_AZ1)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_AZ1)/bin/python -m pip install --quiet numpy 'arviz>=1' h5netcdf h5py pytest
	touch $@

test-arviz1: $(VENV_AZ1)/.installed
	$(VENV_AZ1)/bin/python -m pytest -q -p no:cacheprovider --noconftest -o filterwarnings=error tests/test_arviz_core.py

# -n: every cross-reference must resolve; -E: reread every page, so no warning hides in a
# cached one. The notebooks are shown with the outputs stored in them (`make notebooks`).
docs: setup
	rm -rf docs/api/generated
	$(BIN)/sphinx-build -b html -W --keep-going -n -E docs docs/_build/html

# Full-length runs, outputs and figures written into notebooks/*.ipynb with the hash of
# the library that made them (tests/test_notebooks.py checks it). `make notebooks NB=05`
# runs only the notebooks whose names start with 05.
notebooks: setup
	$(BIN)/python notebooks/make_notebooks.py $(NB)

test: lint typecheck pytest test-arviz1 docs

clean:
	rm -rf $(VENV) $(VENV_AZ1) demo-report .pytest_cache .mypy_cache .ruff_cache docs/_build docs/api/generated
