"""Shared fixtures: the tiny generated GGUF (real llama.cpp, real weights, a few hundred KB),
the fake Discord and a real Synapse."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.fake_discord import FakeDiscord, checked_calls
from support.synapse import Synapse, require_synapse
from support.tinymodel import tiny_model_path
from support.tinyprojector import require_mtmd, tiny_projector_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_path(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def tiny_model_heads32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with heads of 32 values: a q8_0 or q4_0 KV block each."""
    return tiny_model_path(tmp_path_factory.mktemp("model32"), wide_heads=True)


@pytest.fixture(scope="session")
def tiny_projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's projector: skips without libmtmd, fails in CI."""
    require_mtmd()
    return tiny_projector_path(tmp_path_factory.mktemp("mmproj"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1. Afterwards, in every test: everything the bot sent had
    allowed_mentions none, and the fake itself raised nothing."""
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()
    checked_calls(fake)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """One real Synapse on 127.0.0.1 for the session (a fresh SQLite db starts in ~1.5 s)."""
    require_synapse()
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()
