# resnet_lab: `make train` and `make test` each set up .venv first (pinned versions from
# requirements.lock), so either works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install train test test-slow test-all gpu-check lint format clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint requirements.lock --editable ".[dev]"
	@touch $@

install: $(STAMP)

# The quickstart: ResNet-20 on scikit-learn's bundled digits, no download needed.
train: install
	$(PY) -m resnet_lab experiment=quickstart

# The test suite without the tests marked slow (a few minutes on 2 CPU cores).
test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Only the slow tests: real-data accuracy, multi-process DDP, end-to-end sweeps.
test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Every GPU path in one command: bench rows, training under each precision with channels_last
# and compile, the JPEG path with CPU and GPU decoding, Fashion-MNIST ResNet-18 to 94.9 %.
# Writes outputs/gpu_check/gpu_check.{json,log}. On a GPU machine whose python3 has torch and
# the wheels of requirements.lock (docs/BENCHMARKS.md, "GPU check"): make gpu-check.
# DEVICE=cpu runs it at tiny sizes in .venv (CI does, so it keeps working).
DEVICE ?= cuda
GPU_CHECK_ARGS ?=
gpu-check: $(if $(filter cpu,$(DEVICE)),install)
	$(if $(filter cpu,$(DEVICE)),$(PY),$(PYTHON)) -m resnet_lab.bench.gpu_check --device $(DEVICE) $(GPU_CHECK_ARGS)

lint: install
	$(VENV)/bin/ruff check resnet_lab tests

format: install
	$(VENV)/bin/ruff format resnet_lab tests

# Removes the environment and build artefacts; never outputs/ (your runs) or data/.
clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
