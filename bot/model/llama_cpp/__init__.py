"""The in-process backend: llama.cpp through llama-cpp-python, on one thread."""
