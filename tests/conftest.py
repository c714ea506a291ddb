"""Shared fixtures: the tiny generated GGUF (real llama.cpp, real weights, a few hundred KB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinymodel import tiny_model_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_path(tmp_path_factory.mktemp("model"))
