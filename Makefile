# Everyday commands. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve

.PHONY: install serve test test-fast test-serve lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu,export,triton,plots,dev]'
	touch $(STAMP)

install: $(STAMP)  ## the project with every extra needed by the tests (CPU onnxruntime)

# The serving side without the export extra: no torch (whose Linux wheels bring ~4 GB of CUDA).
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu,triton,plots,dev]'
	touch $(SERVE_STAMP)

serve: $(STAMP)  ## serve the bundled default model on :8000 with the embedded store
	$(BIN)/clipserve serve

test: install  ## install everything the tests need, then run them all
	bash .ci/install-deploy-tools.sh
	bash .ci/install-triton.sh
	bash .ci/install-image-tools.sh
	bash .ci/install-browser.sh
	$(BIN)/python -m training.fetch_data  # the default model's evaluation data (~90 MB, once)
	$(BIN)/python -m pytest

test-fast: install  ## skip the slow tests (a local shortcut; CI runs everything)
	$(BIN)/python -m training.fetch_data
	$(BIN)/python -m pytest -m "not slow"

test-serve: $(SERVE_STAMP)  ## the serving side only: no export extra, no deploy validators
	bash .ci/install-triton.sh
	bash .ci/install-browser.sh
	$(BIN)/python -m pytest -m "not export and not deploy" --ignore-glob='tests/test_export_*.py'

lint: install
	$(BIN)/ruff check service tests training benchmarks
	$(BIN)/ruff format --check service tests training benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix service tests training benchmarks
	$(BIN)/ruff format service tests training benchmarks

bench: install  ## load-test a server already running on :8000
	$(BIN)/clipserve bench --modality text
	$(BIN)/clipserve bench --modality image

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache *.egg-info
