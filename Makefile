# Two commands for a fresh machine: `make run` (chat on the console, or every configured
# platform) and `make test`. Everything lives in .venv; nothing is installed system-wide.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python builds llama.cpp from source here; the multimodal part is not needed.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: run test lint bench clean system-tools container-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=77"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: $(STAMP)
	$(BIN)/hearthbot run --pull-missing

# The Matrix tests start a real Synapse from its own venv (the project never imports it).
SYNAPSE_VENV := .venv-synapse
SYNAPSE_STAMP := $(SYNAPSE_VENV)/.installed
SYNAPSE_VERSION ?= 1.163.2

$(SYNAPSE_STAMP):
	test -x $(SYNAPSE_VENV)/bin/python || $(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/python -m pip install --quiet "matrix-synapse==$(SYNAPSE_VERSION)"
	touch $@

# System tools the tests use (strace, unshare, ip: the no-network tests; systemd-analyze: the
# unit file's verify and security tests). Installed only when missing.
system-tools:
	@command -v strace >/dev/null && command -v unshare >/dev/null && \
		command -v ip >/dev/null && command -v systemd-analyze >/dev/null || \
		(apt-get update -qq && \
		apt-get install -y -qq strace util-linux iproute2 systemd >/dev/null)

# The image test (tests/test_docker.py) builds and runs the Dockerfile with podman and a base
# image debootstrapped from the Debian mirror (no Docker engine, no Docker Hub; crun fails on
# hybrid cgroups, hence runc). Installed only when missing.
container-tools:
	@command -v podman >/dev/null && command -v debootstrap >/dev/null && \
		command -v runc >/dev/null || \
		(apt-get update -qq && \
		apt-get install -y -qq podman debootstrap runc >/dev/null)

# The static checks, then the whole suite (the README's test command; .ci/run runs it).
test: $(STAMP) $(SYNAPSE_STAMP) system-tools container-tools
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest

# Style, formatting, the import contracts ([tool.importlinter] in pyproject.toml) and types.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench.run_all --plot

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
