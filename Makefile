# Two commands: `make run` (set up, start the server with the embedded default) and
# `make test` (set up, lint, type-check, run every test, and the fan-out suites again
# with the pure-Python fallback). The virtualenv gets the exact
# versions of requirements-dev.lock (hash-checked); `make lock` compiles the lock files
# again from pyproject.toml's ranges (commit both files).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JS     := tests/js
JSSTAMP := $(JS)/node_modules/.installed
CHAT   := examples/chat
CHATSTAMP := $(CHAT)/node_modules/.installed

.PHONY: run chat test test-redis-cluster lint unit setup bench clean lock

$(STAMP): pyproject.toml setup.py src/clarion/_speedups.c requirements-dev.lock
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

# The example chat's page loads pusher-js from its own pinned npm install.
$(CHATSTAMP): $(CHAT)/package.json $(CHAT)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to install the chat page's pusher-js"; exit 1; }
	cd $(CHAT) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: $(STAMP)
	$(BIN)/clarion serve $(ARGS)

# The example chat (examples/chat/README.md) with an embedded Clarion: http://127.0.0.1:8000/
chat: $(STAMP) $(CHATSTAMP)
	$(BIN)/python -m examples.chat $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy

# `make test` runs every test with the native accelerator (built by setup), then the suites
# that drive fan-out again with the pure-Python fallback forced (CLARION_NO_EXTENSIONS=1).
# FALLBACK_TESTS=tests runs the whole suite both ways; FALLBACK_TESTS= skips the second pass.
FALLBACK_TESTS ?= tests/unit/hub tests/lowlevel tests/integration tests/hostile/test_flood.py
test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)
ifneq ($(strip $(FALLBACK_TESTS)),)
	CLARION_NO_EXTENSIONS=1 $(BIN)/pytest $(PYTEST_ARGS) $(FALLBACK_TESTS)
endif

# The cluster suite again, on a Redis Cluster (three masters, three replicas) through the
# redis-cluster adapter; CI runs it after `make test` (the files that start Redis
# processes of their own already ran there).
test-redis-cluster: setup
	CLARION_TEST_TOPOLOGY=cluster $(BIN)/pytest tests/cluster $(PYTEST_ARGS) \
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
	rm -rf $(VENV) $(JS)/node_modules $(CHAT)/node_modules .pytest_cache .mypy_cache .ruff_cache
