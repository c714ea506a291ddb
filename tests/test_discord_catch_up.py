"""adapters.discord_catch_up: which missed messages to pass on, and where channels were left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.discord_catch_up import MAX_CHANNELS, STATE_FILE, Fetched, SeenChannels, to_answer

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


def test_seen_channels_round_trip_keep_the_newest_per_channel(tmp_path: Path) -> None:
    seen = SeenChannels.load(tmp_path, user_id=7)
    seen.saw(100, 1, message_id=50)
    seen.saw(100, 1, message_id=40)  # older: a caught-up message read after a newer one
    seen.saw(200, None, message_id=60)  # a DM
    seen.save()
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600
    again = SeenChannels.load(tmp_path, user_id=7)
    assert again.to_read() == [(200, 60, None), (100, 50, 1)]  # most recent first
    assert not again.dirty
    assert SeenChannels.load(tmp_path, user_id=8).to_read() == []  # another account


def test_seen_channels_read_the_most_recent_and_survive_damage(tmp_path: Path) -> None:
    channels = {str(c): [1000 + c, 1] for c in range(MAX_CHANNELS + 5)}
    channels["bad"] = [1, 1]
    channels["9999"] = "not a pair"
    (tmp_path / STATE_FILE).write_text(json.dumps({"user_id": 7, "channels": channels}))
    to_read = SeenChannels.load(tmp_path, user_id=7).to_read()
    assert len(to_read) == MAX_CHANNELS and to_read[0] == (MAX_CHANNELS + 4, 1004 + MAX_CHANNELS, 1)
    (tmp_path / STATE_FILE).write_text("{torn")
    assert SeenChannels.load(tmp_path, user_id=7).to_read() == []
