"""adapters.discord.catch_up and .positions: which missed messages to pass on, and where
channels were left."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest

import adapters.discord.catch_up as catch_up_module
from adapters.common.state_file import write_private
from adapters.discord.catch_up import CatchUp, Fetched, read_after, to_answer
from adapters.discord.positions import MAX_CHANNELS, STATE_FILE, Hold, Positions
from support.discord_bot import at
from support.fake_discord import FakeDiscord, RecordingSink, connected, make_adapter, until

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


def places(holds: list[Hold]) -> list[tuple[int, int, int | None]]:
    return [(hold.channel_id, hold.after, hold.guild_id) for hold in holds]


def saved(positions: Positions) -> dict[str, list[int | None]]:
    payload = positions.payload()
    assert payload is not None
    write_private(positions.path, payload)
    return payload["channels"]


def test_positions_keep_the_newest_done_per_channel_and_round_trip(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 50)
    positions.saw(100, 1, 40)  # older: a message read back after a newer one
    positions.end(200, None, 60, left=False)  # a DM
    assert saved(positions) == {"100": [50, 1], "200": [60, None]}
    assert positions.payload() is None  # nothing changed since
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600
    again = Positions.load(tmp_path, user_id=7)
    assert places(again.to_read()) == [(200, 60, None), (100, 50, 1)]  # most recent first
    assert Positions.load(tmp_path, user_id=8).to_read() == []  # another account


def test_a_position_never_passes_a_message_not_done_with(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 10)
    positions.begin(100, 1, 20)  # slow: an attachment being read
    positions.begin(100, 1, 30)
    positions.end(100, 1, 30, left=False)
    assert saved(positions)["100"] == [19, 1]  # a crash now reads 20 back
    positions.end(100, 1, 20, left=True)  # not passed on: the adapter was stopping
    positions.begin(100, 1, 40)
    positions.end(100, 1, 40, left=False)
    assert saved(positions)["100"] == [19, 1]  # 20 is read back after the restart


def test_a_new_channels_first_message_left_at_stop_is_read_back(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.begin(300, None, 70)  # a first DM, arriving as the bot stops
    positions.end(300, None, 70, left=True)
    assert saved(positions) == {"300": [69, None]}


def test_a_read_back_holds_its_channel_until_released(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.saw(100, 1, 10)
    (hold,) = positions.to_read()
    assert places([hold]) == [(100, 10, 1)]
    positions.end(100, 1, 99, left=False)  # a live message, while 11..98 are being read
    assert saved(positions)["100"] == [10, 1]
    positions.release(hold)
    assert saved(positions)["100"] == [99, 1]


def test_positions_read_the_most_recent_and_survive_damage(tmp_path: Path) -> None:
    channels: dict[str, object] = {str(c): [1000 + c, 1] for c in range(MAX_CHANNELS + 5)}
    channels |= {"bad": [1, 1], "9999": "not a pair", "9998": {"0": 1}, "9997": [1, "x"]}
    (tmp_path / STATE_FILE).write_text(json.dumps({"user_id": 7, "channels": channels}))
    to_read = places(Positions.load(tmp_path, user_id=7).to_read())
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


# -- CatchUp: snapshots and the read-back, with Discord's answers played by `missed_in` ---------


class Reads:
    """Stands in for reading a channel's history (adapters.discord.catch_up.missed_in): per
    channel, the messages there or the error Discord answers with."""

    def __init__(self, answers: dict[int, list[int] | Exception]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    async def __call__(self, client: object, hold: Hold, until: int, window_s: float) -> list:
        self.asked.append(hold.channel_id)
        answer = self.answers.get(hold.channel_id, [])
        if isinstance(answer, Exception):
            raise answer
        return [SimpleNamespace(id=i, channel=hold.channel_id) for i in answer]


def bot(user_id: int = 7) -> Any:
    return SimpleNamespace(user=SimpleNamespace(id=user_id))


def error(status: int) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="from the test")
    kind = {403: discord.Forbidden, 404: discord.NotFound}.get(status, discord.HTTPException)
    return kind(response, "from the test")  # type: ignore[arg-type]


def catch_up_with(tmp_path: Path, positions: dict[int, int]) -> tuple[CatchUp, list[Any]]:
    passed: list[Any] = []

    async def pass_on(message: Any) -> None:
        passed.append(message.id)

    write_private(
        tmp_path / STATE_FILE,
        {"user_id": 7, "channels": {str(c): [at, 1] for c, at in positions.items()}},
    )
    failures: list[BaseException] = []
    return CatchUp(tmp_path, WINDOW, pass_on, failures.append), passed


async def test_a_read_back_passes_on_and_releases_each_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catch_up, passed = catch_up_with(tmp_path, {100: 10, 200: 20, 300: 30})
    reads = Reads({100: [11, 12], 200: error(404), 300: error(500)})
    monkeypatch.setattr(catch_up_module, "missed_in", reads)
    monkeypatch.setattr(catch_up_module, "READ_ATTEMPTS", 2)
    client = bot()
    catch_up.session_started(client)
    snapshot = catch_up.to_read_now(client)
    assert snapshot is not None and catch_up.to_read_now(client) is None  # once
    await catch_up.read_back(client, snapshot, lambda: True)
    assert passed == [11, 12]
    assert reads.asked == [300, 300, 200, 100]  # most recent first; a 5xx is tried again
    assert catch_up.positions is not None
    catch_up.end(100, 1, 99, left=False)
    catch_up.end(300, 1, 99, left=False)
    # 100 read: it moves on; 200 is gone: forgotten; 300 could not be read: held for later.
    assert saved(catch_up.positions) == {"100": [99, 1], "300": [30, 1]}


async def test_a_newer_session_takes_over_an_unfinished_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catch_up, passed = catch_up_with(tmp_path, {100: 10, 200: 20})
    monkeypatch.setattr(catch_up_module, "missed_in", Reads({100: [11], 200: [21]}))
    first, second = bot(), bot()
    catch_up.session_started(first)
    old = catch_up.to_read_now(first)
    catch_up.session_started(second)  # READY again (a gap too long to resume)
    new = catch_up.to_read_now(second)
    assert old is not None and new is not None
    await catch_up.read_back(first, old, lambda: True)  # too late: reads nothing
    assert passed == []
    assert catch_up.positions is not None
    catch_up.end(100, 1, 50, left=False)  # live, meanwhile
    assert saved(catch_up.positions)["100"] == [10, 1]  # still held by the new snapshot
    # A stop as soon as one message is passed on: the rest waits for the next session.
    await catch_up.read_back(second, new, lambda: not passed)
    assert passed == [21]
    # A third session reads what is still held, even with other channels more recent.
    catch_up.session_started(bot())
    assert {h.channel_id for h in catch_up._held} == {100, 200}


def test_only_channels_the_bot_talks_in_are_read_back(tmp_path: Path) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    for c in range(1, MAX_CHANNELS + 1):
        positions.saw(c, 1, 1000 + c)
    # Newer mentions where the sender may not ask (a channel not allowed): recorded nowhere.
    for c in range(500, 510):
        positions.begin(c, 1, 5000 + c)
        positions.end(c, 1, 5000 + c, left=False, allowed=False)
    positions.begin(1, 1, 6000)  # one in a channel the bot talks in moves nothing either
    positions.end(1, 1, 6000, left=False, allowed=False)
    assert {h.channel_id for h in positions.to_read()} == set(range(1, MAX_CHANNELS + 1))
    assert saved(positions)["1"] == [1001, 1]


@pytest.mark.parametrize("denied_first", [True, False])
def test_a_new_channel_stays_if_anyone_there_was_allowed(
    tmp_path: Path, denied_first: bool
) -> None:
    positions = Positions.load(tmp_path, user_id=7)
    positions.begin(900, 1, 10)  # from a user not allowed
    positions.begin(900, 1, 11)  # from one who is, at the same time
    ends = [(10, False), (11, True)]
    for message_id, allowed in ends if denied_first else ends[::-1]:
        positions.end(900, 1, message_id, left=False, allowed=allowed)
    assert saved(positions) == {"900": [11, 1]}


async def test_a_mention_where_the_bot_may_not_answer_records_no_channel(
    fake: FakeDiscord,
) -> None:
    adapter = make_adapter(fake, allowed_channels=[int(fake.general["id"])])
    try:
        await adapter.start(RecordingSink())
        await connected(adapter, fake)
        denied = await fake.say(fake.alice, fake.other, f"{at(fake)} not allowed here")
        allowed = await fake.say(fake.alice, fake.general, f"{at(fake)} allowed here")
        positions = adapter.catch_up.positions

        def handled(message: dict[str, Any]) -> bool:
            return int(message["id"]) in adapter.catch_up._handled and not positions.open

        await until(lambda: handled(denied) and handled(allowed), what="both handled")
        assert set(positions.done) == {int(fake.general["id"])}
    finally:
        await adapter.stop()
