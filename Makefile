# Two commands: `make run` (set up, start the server with the embedded default) and
# `make test` (set up, lint, type-check, run every test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JS     := tests/js
JSSTAMP := $(JS)/node_modules/.installed

.PHONY: run test lint unit setup bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Clarion needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

$(JSSTAMP): $(JS)/package.json $(JS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20.19+) is needed for the pusher-js tests"; exit 1; }
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(STAMP) $(JSSTAMP)

run: $(STAMP)
	$(BIN)/clarion serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) $(JS)/node_modules .pytest_cache .mypy_cache .ruff_cache
