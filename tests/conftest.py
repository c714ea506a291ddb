"""Shared fixtures: the tiny generated GGUF (real llama.cpp, real weights, a few hundred KB)
and the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fake_discord import FakeDiscord, checked_calls
from tinymodel import tiny_model_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_path(tmp_path_factory.mktemp("model"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1. Afterwards, in every test: everything the bot sent had
    allowed_mentions none, and the fake itself raised nothing."""
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()
    checked_calls(fake)
