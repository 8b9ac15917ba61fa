# Quick start: `make run` serves everything on the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench docs screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "roleferry needs Python 3.11 or newer (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	HOST=$(HOST) PORT=$(PORT) $(BIN)/roleferry serve

# Test files run in parallel (a file's tests stay in one process, with its module fixtures):
# most tests wait on servers, so more processes than cores pays. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 4
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# Rewrites tests/contracts/stripe/fields.json from the installed stripe SDK, then runs the
# contract tests (docs/sandbox.md, "Contract tests").
.PHONY: contracts
contracts: install
	$(BIN)/python -m tests.contracts.stripe_sdk
	$(BIN)/pytest tests/contracts -q

bench: install
	@for script in bench/[!_]*.py; do \
		echo "== $$script"; $(BIN)/python "$$script" || exit 1; \
	done

# The console's pages as PNGs in docs/console/ (docs/console.md shows them), taken by the browser
# tests as they walk each flow; needs /usr/bin/chromium.
screenshots: install
	ROLEFERRY_SCREENSHOTS=docs/console $(BIN)/pytest tests/web/test_console_browser.py -q

docs: install
	$(BIN)/python -m roleferry.providers.docs

clean:
	rm -rf $(VENV) .roleferry .pytest_cache .mypy_cache .ruff_cache
