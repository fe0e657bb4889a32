# ajo-exports: `make run` (the main job on the embedded default) and `make test`, on a fresh Debian machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AJO_EXPORTS_HOME ?= $(CURDIR)/.ajo
export DAGSTER_HOME := $(AJO_EXPORTS_HOME)/dagster
# Nothing leaves the machine: no cloud metadata lookups, no Dagster telemetry.
export AWS_EC2_METADATA_DISABLED := true
export NO_GCE_CHECK := true
export DAGSTER_DISABLE_TELEMETRY := 1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := openssh-server chromium gnupg procps postgresql redis-server

.PHONY: install test-servers run ui test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PY) -m pip --version >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-pip; }
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install -q uv || $(PY) -m pip install -q --break-system-packages uv
	@[ -x $(BIN)/python ] || $(PY) -m uv venv -q $(VENV) -p $(PY)
	$(PY) -m uv pip install -q --python $(BIN)/python -e '.[test]'
	@touch $@

# The real servers the destination and UI tests start: Azurite (npm), OpenSSH's sshd and Chromium (Debian).
test-servers:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi
	@[ -x node_modules/.bin/azurite-blob ] || npm ci --no-audit --no-fund --loglevel=error

run: install
	@mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/ajo-exports lake seed --rows 2000 --batches 4
	$(BIN)/ajo-exports run

ui: install
	@mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/dagster dev -w workspace.yaml

lint: install
	$(BIN)/ruff check ajo_exports ajo_exports_tests bench

test: install test-servers lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The benchmark (bench/run.py): the `bench` extra (dlt, psutil) on top of `test` (moto, the GCS emulator), and the
# servers the tests use (Azurite, sshd). Flags pass through: make bench BENCH_ARGS="--rows 200000 --reps 1".
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m uv pip install -q --python $(BIN)/python -e '.[test,bench]'
	@touch $@

bench: $(VENV)/.bench-installed test-servers
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(AJO_EXPORTS_HOME) $(VENV) node_modules
