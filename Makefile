# kocap: `make demo` runs the lifecycle on the embedded sample; `make test` runs the test suite.
# Both create .venv and install everything on first use (a cold install takes a few minutes).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kocap-installed

# The offline defaults (analytics off, Hugging Face offline, PREFECT_HOME and the MLflow DB in the project)
# live in kocap/env.py: every kocap command and the test suite apply them, so nothing is restated here.

.PHONY: install demo test test-fast lint style clean ui ui-stop

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/kocap run
	$(BIN)/kocap summary

# two pytest-xdist workers; tests/conftest.py gives each cores/2 torch threads (and so every subprocess)
# each test file goes whole to one worker, longest first: a module's tests share one project (tests/conftest.py)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=40 tests

test-fast: $(STAMP)
	$(BIN)/pytest -q -m 'not slow' tests

# ruff (settings in pyproject.toml): `make lint` checks, `make style` rewrites.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

style: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .prefect .dvc-remote .dvc/cache mlflow.db data/raw data/*.parquet data/rejects reports/*.json dvc.lock

# The Prefect UI (127.0.0.1:4200) and the MLflow UI (127.0.0.1:5000), in the background.
ui: $(STAMP)
	$(BIN)/kocap ui start

ui-stop: $(STAMP)
	$(BIN)/kocap ui stop
