# `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-fast lint schemas fdh-benchmark chaos clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

demo: setup
	$(BIN)/processor demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not broker and not slow"

lint: setup
	$(BIN)/ruff check processor schemas tests
	$(BIN)/ruff format --check processor schemas tests

schemas: setup
	$(BIN)/processor schemas

fdh-benchmark: setup
	$(BIN)/processor evaluate --protocol fdh ../shared/data/fdh-simulated-transactions \
		--json runs/fdh-benchmark.json

# The crash harness (about 10 minutes on 2 cores, so not part of `make test`): SIGKILL
# `processor run` 10 times per delivery mode while 20,000 real transactions stream through.
chaos: setup
	$(BIN)/processor chaos --json runs/chaos.json

clean:
	rm -rf $(VENV) runs artifacts .pytest_cache
