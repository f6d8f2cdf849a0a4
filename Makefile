# Newcomer entry points: `make demo` (the main job, embedded) and `make test` (the suite CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: install demo serve test protos bench clean

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

install: $(STAMP) $(NODE_STAMP)

demo: install
	$(BIN)/cartwise demo

serve: install
	$(BIN)/cartwise serve

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

protos: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. protos/cartwise/v1/search.proto protos/cartwise/v1/admin.proto

bench: install
	$(BIN)/cartwise bench search --json
	$(BIN)/cartwise bench freshness --json

clean:
	rm -rf $(VENV) node_modules .data
