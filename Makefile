# Two commands do everything on a fresh machine:
#   make demo   - installs into .venv, then runs the whole pipeline end to end
#   make test   - installs into .venv, then lint + the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build on this project's machines; users with GPUs
# install their own torch into the venv first and this step leaves it alone.
TORCH ?= torch==2.13.0

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[train,export,dev]"
	touch $@

demo: setup
	$(VENV)/bin/edge-lung demo $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q $(ARGS)
