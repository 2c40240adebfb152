# Two commands: `make run` (set up, start the server with the embedded default) and
# `make test` (set up, lint, type-check, run every test). The virtualenv gets the exact
# versions of requirements-dev.lock (hash-checked); `make lock` compiles the lock files
# again from pyproject.toml's ranges (commit both files).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JS     := tests/js
JSSTAMP := $(JS)/node_modules/.installed

.PHONY: test-redis-cluster run test lint unit setup bench clean lock

$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Clarion needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
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

# The cluster suite again, on a Redis Cluster (three masters, three replicas) through the
# redis-cluster adapter; CI runs it after `make test` (the files that start Redis
# processes of their own already ran there).
test-redis-cluster: setup
	CLARION_REDIS_TOPOLOGY=cluster $(BIN)/pytest tests/cluster $(PYTEST_ARGS) \
		--ignore=tests/cluster/test_redis_cluster.py --ignore=tests/cluster/test_redis_connection.py

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

# requirements.lock: what the Docker image installs (Clarion and both database drivers);
# requirements-dev.lock: that plus the dev extra (tests, linters, build tools).
LOCK := $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --all-build-deps --upgrade
lock: $(STAMP)
	$(LOCK) --extra postgres --extra mysql -o requirements.lock pyproject.toml
	$(LOCK) --extra dev -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) $(JS)/node_modules .pytest_cache .mypy_cache .ruff_cache
