#!/bin/sh
# The CMake flags llama-cpp-python builds llama.cpp with, for one variant: the one place that
# maps a GPU name to its flags (the Makefile's GPU=, docker/install.sh's GPU, the Dockerfile's
# GPU build argument).
#
#   docker/cmake_args.sh [cpu|cuda|vulkan|metal|rocm]
set -eu

# libmtmd, llama.cpp's multimodal library (images: docs/images.md), is built and installed
# beside libllama. ON is the option's default; it is spelled out so every variant says it.
base="-DLLAVA_BUILD=ON"
case "${1:-cpu}" in
    "" | cpu) echo "$base" ;;
    cuda) echo "$base -DGGML_CUDA=on" ;;
    vulkan) echo "$base -DGGML_VULKAN=on" ;;
    metal) echo "$base -DGGML_METAL=on" ;;
    rocm) echo "$base -DGGML_HIP=on" ;;
    *) echo "cmake_args.sh: GPU must be cuda, vulkan, metal or rocm (got '$1')" >&2; exit 2 ;;
esac
