# Newcomer entry points: `make demo` (the main job, embedded) and `make test` (the suite CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
# The static checks of compose/ (tests/unit/test_deploy.py): docker-compose validates the compose file
# without an engine, dockerfilelint (pinned by compose/lint/package-lock.json) the Dockerfiles.
COMPOSE_STAMP := $(VENV)/.docker-compose-stamp
LINT_STAMP := compose/lint/node_modules/.installed-stamp
# The playground's browser test (tests/integration/test_playground.py): Debian's chromium and its driver.
BROWSER_STAMP := $(VENV)/.chromium-stamp

.PHONY: install demo serve test test-fast protos bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints.txt pins torch==2.13.0 (the CPU wheel); a looser torch pulls GBs of CUDA wheels.
	$(BIN)/pip install -q -c constraints.txt -e '.[cpu,dev]'
	touch $(STAMP)

# s3rver, the embedded broker's on-disk store (pinned by package-lock.json, patched from patches/ by
# patch-package to write objects atomically; Node 20 and npm are required).
$(NODE_STAMP): package.json package-lock.json $(wildcard patches/*.patch)
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Debian's docker-compose 1.29.2 (its own Python and pins, kept out of .venv); any docker-compose on PATH will do.
$(COMPOSE_STAMP): $(STAMP)
	command -v docker-compose >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	touch $(COMPOSE_STAMP)

$(BROWSER_STAMP): $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } || echo "chromium could not be installed: the browser test will skip"
	touch $(BROWSER_STAMP)

$(LINT_STAMP): compose/lint/package.json compose/lint/package-lock.json
	npm ci --prefix compose/lint --no-audit --no-fund --loglevel=error
	touch $(LINT_STAMP)

install: $(STAMP) $(NODE_STAMP)

demo: install
	$(BIN)/cartwise demo

serve: install
	$(BIN)/cartwise serve

# Two pytest workers, each taking whole modules (their fixtures start a broker or a service once): most of a
# test's time is waiting for the worker, the broker or a consumer group, so two share two cores well
# (the suite in 8 min instead of 13 on two cores). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

test: install $(COMPOSE_STAMP) $(LINT_STAMP) $(BROWSER_STAMP)
	$(BIN)/lint-imports
	$(PYTEST)

# Everything but the tests marked slow (pyproject.toml), without the system tools `make test` installs: the
# compose checks and the browser test skip when their tools are absent.
test-fast: install
	$(BIN)/lint-imports
	$(PYTEST) -m "not slow"

protos: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. protos/cartwise/v1/search.proto protos/cartwise/v1/admin.proto

bench: install
	$(BIN)/cartwise bench search --json
	$(BIN)/cartwise bench freshness --json

clean:
	rm -rf $(VENV) node_modules .data
