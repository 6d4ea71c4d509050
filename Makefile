# resnet_lab: `make train` and `make test` each set up .venv first (pinned versions from
# requirements.lock), so either works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install train test test-slow test-all lint format clean

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

lint: install
	$(VENV)/bin/ruff check resnet_lab tests

format: install
	$(VENV)/bin/ruff format resnet_lab tests

# Removes the environment and build artefacts; never outputs/ (your runs) or data/.
clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
