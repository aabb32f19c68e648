# Two commands do everything on a fresh machine:
#   make demo   - installs into .venv, then runs the whole pipeline end to end
#   make test   - installs into .venv, then lint + the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build on this project's machines; users with GPUs
# install their own torch into the venv first and this step leaves it alone.
TORCH ?= torch==2.13.0
# onnxruntime-node, for the test that runs model.e2e.onnx in a second runtime, installed into
# .node/ (never globally); the CPU binaries ship in the npm package, so the CUDA download is skipped.
ORT_NODE ?= onnxruntime-node@1.30.0

# The real-audio tests (tests/runtime/live/test_pulse.py) run a private PulseAudio daemon and capture it with
# PortAudio through ALSA's `pulse` device. As root on Debian/Ubuntu `make test` installs these;
# otherwise those tests skip and print the command. In CI a failed install fails the run.
AUDIO_PACKAGES := pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins

# `make test` on a developer's machine: lint + every test except those marked slow (training, export, browsers,
# the composition test); CI (CI=true, set by .ci/run) and `make test-all` run every test. Times: README "Quick start".
PYTEST_SELECT := $(if $(CI),,-m "not slow")

.PHONY: setup demo test test-all audio-packages node
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[train,export,dev]"
	@# the report's browser test (tests/runtime/explain/test_report.py) opens pages in Chromium from the distribution
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then apt-get install -y -q chromium; \
	  else echo "note: without Chromium the report's browser test skips: sudo apt-get install -y chromium"; fi
	touch $@

node: .node/node_modules/onnxruntime-node/package.json

.node/node_modules/onnxruntime-node/package.json:
	@if command -v npm >/dev/null 2>&1; then \
		ONNXRUNTIME_NODE_INSTALL=skip npm install --silent --no-save --prefix .node $(ORT_NODE) \
		|| echo "warning: npm could not install $(ORT_NODE); the Node.js runtime test will skip"; \
	else echo "note: npm not found; the Node.js runtime test will skip"; fi

demo: setup
	$(VENV)/bin/edge-lung demo $(ARGS)

audio-packages:
	@if dpkg -s $(AUDIO_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(AUDIO_PACKAGES) for the real-audio tests"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(AUDIO_PACKAGES) >/dev/null; } || \
	  { echo "apt-get install $(AUDIO_PACKAGES) failed"; [ -z "$$CI" ]; }; \
	else echo "note: the real-audio tests will skip; to run them: sudo apt-get install -y $(AUDIO_PACKAGES)"; fi

test: setup audio-packages node
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q $(PYTEST_SELECT) $(ARGS)

test-all: setup audio-packages node
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q $(ARGS)
