#!/bin/sh
# Installs hearthbot into a fresh venv: the image's one install step (Dockerfile, builder
# stage) and the systemd service's (README); tests/test_docker.py runs it both ways.
#
#   docker/install.sh VENV [SOURCE]      SOURCE: the source tree (default: this checkout)
#
# A regular (non-editable) install, so the bundled personas ship as package data inside the
# venv. llama-cpp-python compiles llama.cpp here unless pip's wheel cache has it already.
set -eu

venv="${1:?usage: install.sh VENV [SOURCE]}"
source_dir="${2:-$(dirname "$0")/..}"
python="${PYTHON:-python3}"
# llama.cpp's CMake flags: for the CPU, or for $GPU (cuda, vulkan, metal, rocm).
export CMAKE_ARGS="${CMAKE_ARGS:-$(sh "$(dirname "$0")/cmake_args.sh" "${GPU:-cpu}")}"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip>=24" "setuptools>=77"
"$venv/bin/python" -m pip install --quiet "$source_dir"
# A llama-cpp-python wheel that pip cached from a build without libmtmd (images) is compiled
# again, alone, past the cache.
if ! "$venv/bin/python" -c "import llama_cpp.mtmd_cpp" >/dev/null 2>&1; then
    version="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
    "$venv/bin/python" -m pip install --quiet --force-reinstall --no-cache-dir --no-deps \
        "llama-cpp-python==$version"
fi
# llama-cpp-python also installs llama.cpp's own libraries, headers and CMake files at the top
# of site-packages (33 MB); llama_cpp loads its copies in llama_cpp/lib.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')"
rm -rf "$site/lib" "$site/include"

# Smoke check from outside the source tree: the package, llama.cpp with libmtmd and the bundled personas
# load from the venv alone.
cd /
"$venv/bin/python" -c "import llama_cpp, llama_cpp.mtmd_cpp, aiohttp, prometheus_client, PIL"
personas="$("$venv/bin/hearthbot" personas)"
case "$personas" in
    *assistant*) ;;
    *) echo "install.sh: the bundled personas are missing" >&2; exit 1 ;;
esac
echo "hearthbot installed in $venv"
