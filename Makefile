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
	@# the report's browser test (tests/test_report.py) opens pages in Chromium from the distribution
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then apt-get install -y -q chromium; \
	  else echo "note: without Chromium the report's browser test skips: sudo apt-get install -y chromium"; fi
	touch $@

demo: setup
	$(VENV)/bin/edge-lung demo $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q $(ARGS)
