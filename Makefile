# Two commands for a fresh machine: `make run` (chat on the console, or every configured
# platform) and `make test`. Everything lives in .venv; nothing is installed system-wide.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python builds llama.cpp from source here, for the CPU or, with GPU=cuda (vulkan,
# metal, rocm), for that GPU: docker/cmake_args.sh has the flags (CMAKE_EXTRA_ARGS adds to them,
# e.g. -DCMAKE_CUDA_ARCHITECTURES=86).
GPU ?=
VARIANT := $(or $(GPU),cpu)
VARIANT_ARGS := $(shell sh docker/cmake_args.sh $(VARIANT) 2>/dev/null)
ifeq ($(VARIANT_ARGS),)
$(error GPU must be cuda, vulkan, metal or rocm (got $(GPU)))
endif
ifeq ($(GPU),)
export CMAKE_ARGS ?= $(VARIANT_ARGS)
else
export CMAKE_ARGS := $(strip $(VARIANT_ARGS) $(CMAKE_EXTRA_ARGS))
endif
# Which llama.cpp the venv holds: one stamp per variant, the others removed when it changes.
LLAMA_STAMP := $(VENV)/.llama-$(VARIANT)

.PHONY: run test lint bench clean system-tools container-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=77"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# Another variant than the venv's, or a build without libmtmd (images; a venv made before
# docker/cmake_args.sh turned it on, or a wheel pip cached from then): rebuild llama-cpp-python
# alone, at the installed version, past pip's wheel cache (--no-cache-dir) and its "already
# satisfied" (--force-reinstall). A new venv already holds the CPU build.
$(LLAMA_STAMP): $(STAMP)
	@if [ "$(VARIANT)" != cpu ] || ls $(VENV)/.llama-* >/dev/null 2>&1 || \
		! $(BIN)/python -c 'import llama_cpp.mtmd_cpp' >/dev/null 2>&1; then \
		version="$$($(BIN)/python -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')" && \
		echo "building llama-cpp-python $$version for $(VARIANT): CMAKE_ARGS=$$CMAKE_ARGS" && \
		$(BIN)/python -m pip install --quiet --force-reinstall --no-cache-dir --no-deps \
			"llama-cpp-python==$$version"; \
	fi
	rm -f $(VENV)/.llama-*
	touch $@

run: $(LLAMA_STAMP)
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
test: $(LLAMA_STAMP) $(SYNAPSE_STAMP) system-tools container-tools
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
