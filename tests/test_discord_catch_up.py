"""adapters.discord_catch_up: which missed messages to pass on, and where channels were left."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import discord
import pytest

from adapters.discord_catch_up import (
    MAX_CHANNELS,
    STATE_FILE,
    Fetched,
    Positions,
    read_after,
    to_answer,
)
from adapters.state_file import write_private

ME = True
WINDOW = 600.0


def fetched(
    message_id: int, age_s: float = 5, mine: bool = False, replies_to: int | None = None
) -> Fetched:
    return Fetched(message_id, age_s, mine, replies_to)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], []),
        ([fetched(1)], [1]),
        ([fetched(3), fetched(1), fetched(2)], [1, 2, 3]),  # oldest first, however read
        ([fetched(1, age_s=WINDOW + 1)], []),  # too old to answer now
        ([fetched(1, age_s=WINDOW)], [1]),  # the edge is still in
        ([fetched(1), fetched(2, mine=ME, replies_to=1)], []),  # answered before it went away
        ([fetched(1), fetched(2, mine=ME)], [1]),  # a message of ours that replies to nothing
        ([fetched(1), fetched(2, replies_to=1)], [1, 2]),  # a person's reply answers nothing
        ([fetched(1, mine=ME)], []),  # never its own
    ],
)
def test_to_answer(history: list[Fetched], expected: list[int]) -> None:
    assert to_answer(history, WINDOW) == expected


def test_reading_starts_after_the_position_but_within_the_window() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    window_start = discord.utils.time_snowflake(now - timedelta(seconds=WINDOW))
    recent = discord.utils.time_snowflake(now - timedelta(seconds=60))
    assert read_after(recent, now, WINDOW) == recent
    assert read_after(42, now, WINDOW) == window_start  # days idle: only the window is read


def saved(positions: Positions) -> dict[str, list[int | None]]:
    payload = positions.payload()
    assert payload is not None
    write_private(positions.path, payload)
    return payload["channels"]


def test_positions_keep_the_newest_done_per_channel_and_round_trip(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 50)
    positions.saw(100, 1, 40)  # older: a message read back after a newer one
    positions.end(200, None, 60, done=True)  # a DM
    assert saved(positions) == {"100": [50, 1], "200": [60, None]}
    assert positions.payload() is None  # nothing changed since
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600
    again = Positions.load(tmp_path, user_id=7)
    assert again.to_read() == [(200, 60, None), (100, 50, 1)]  # most recent first
    assert Positions.load(tmp_path, user_id=8).to_read() == []  # another account


def test_a_position_never_passes_a_message_not_done_with(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 10)
    positions.begin(100, 20)  # slow: an attachment being read
    positions.begin(100, 30)
    positions.end(100, 1, 30, done=True)
    assert saved(positions)["100"] == [19, 1]  # a crash now reads 20 back
    positions.end(100, 1, 20, done=False)  # dropped (stopping): still to be read back
    assert saved(positions)["100"] == [30, 1]  # 20 is read back after a restart


def test_a_read_back_holds_its_channel_until_released(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 10)
    ((channel, after, guild),) = positions.to_read()
    assert (channel, after, guild) == (100, 10, 1)
    positions.end(100, 1, 99, done=True)  # a live message, while 11..98 are being read
    assert saved(positions)["100"] == [10, 1]
    positions.release(100, after)
    assert saved(positions)["100"] == [99, 1]


def test_positions_read_the_most_recent_and_survive_damage(tmp_path: Path) -> None:
    channels: dict[str, object] = {str(c): [1000 + c, 1] for c in range(MAX_CHANNELS + 5)}
    channels |= {"bad": [1, 1], "9999": "not a pair", "9998": {"0": 1}, "9997": [1, "x"]}
    (tmp_path / STATE_FILE).write_text(json.dumps({"user_id": 7, "channels": channels}))
    to_read = Positions.load(tmp_path, user_id=7).to_read()
    assert len(to_read) == MAX_CHANNELS
    assert to_read[0] == (MAX_CHANNELS + 4, 1004 + MAX_CHANNELS, 1)
    (tmp_path / STATE_FILE).write_text("{torn")
    assert Positions.load(tmp_path, user_id=7).to_read() == []


def test_a_channel_gone_is_forgotten(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 10)
    positions.saw(200, 1, 20)
    positions.forget(100)
    assert saved(positions) == {"200": [20, 1]}
