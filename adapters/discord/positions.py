"""Where the bot left each Discord channel: the newest message it is done with there, kept in
`<data_dir>/discord/state.json` for the read-back after a restart (adapters.discord.catch_up).

A position never passes a message still being handled, nor, while a channel is being read
back, the point reading started from: a crash then costs a second look, never a message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.common.state_file import read_json

STATE_FILE = "state.json"
MAX_CHANNELS = 50  # the channels talked in most recently are read back; one REST call each
KEPT_CHANNELS = 1000


@dataclass(eq=False, slots=True)
class Hold:
    """A channel to read back after `after`; its position stays there until released.
    Compared by identity: two snapshots may hold the same channel at the same place."""

    channel_id: int
    after: int
    guild_id: int | None


@dataclass(slots=True)
class Positions:
    """Per channel: the newest message the bot is done with, and the ones it is not done
    with yet (in flight, or a read-back in progress). For one bot account."""

    path: Path
    user_id: int
    done: dict[int, tuple[int, int | None]] = field(default_factory=dict)  # → (id, server)
    open: dict[int, Counter[int]] = field(default_factory=dict)
    # Channels known only from messages still being handled: a channel whose only messages
    # were not allowed is forgotten again, so it never pushes one the bot talks in out of
    # the MAX_CHANNELS read back.
    unconfirmed: set[int] = field(default_factory=set)
    dirty: bool = False

    @classmethod
    def load(cls, folder: Path, user_id: int) -> Positions:
        positions = cls(folder / STATE_FILE, user_id)
        data = read_json(positions.path)
        # Another bot account talks in other channels: it starts afresh.
        if data is None or data.get("user_id") != user_id:
            return positions
        channels = data.get("channels")
        for key, value in (channels if isinstance(channels, dict) else {}).items():
            if not (isinstance(value, list) and len(value) == 2 and str(key).isdecimal()):
                continue  # a damaged entry costs that channel's catch-up, nothing more
            message_id, guild_id = value
            if isinstance(message_id, int) and (guild_id is None or isinstance(guild_id, int)):
                positions.done[int(key)] = (message_id, guild_id)
        return positions

    def begin(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        if channel_id not in self.done:  # a new channel: known from here on, this included
            self.done[channel_id] = (message_id - 1, guild_id)
            self.unconfirmed.add(channel_id)
            self.dirty = True
        self.open.setdefault(channel_id, Counter())[message_id] += 1

    def end(
        self,
        channel_id: int,
        guild_id: int | None,
        message_id: int,
        left: bool,
        allowed: bool = True,
    ) -> None:
        """Done with a message (answered, refused, not for the bot, or failed: a message
        that breaks the handling must not come back at every start). `left`: not passed on
        because the adapter is stopping: its mark stays, so the next start reads it back.
        `allowed`: False when its sender may not ask there (the access lists): it moves no
        position, and a channel known only from such messages is forgotten."""
        if left:
            return
        self._close(channel_id, message_id)
        if allowed:
            self.saw(channel_id, guild_id, message_id)
        elif channel_id in self.unconfirmed and channel_id not in self.open:
            self.unconfirmed.discard(channel_id)
            self.forget(channel_id)

    def saw(self, channel_id: int, guild_id: int | None, message_id: int) -> None:
        """A message there is done with (the bot's own, say)."""
        self.unconfirmed.discard(channel_id)
        known = self.done.get(channel_id)
        if known is None or message_id > known[0]:
            self.done[channel_id] = (message_id, guild_id)
            self.dirty = True

    def to_read(self, also: Iterable[int] = ()) -> list[Hold]:
        """The channels talked in most recently (and `also` these), each held at its
        position until released, so reading it back starts there."""
        ranked = sorted(self.done, key=lambda c: self.done[c][0], reverse=True)
        chosen = ranked[:MAX_CHANNELS] + [c for c in also if c in self.done]
        holds = [Hold(c, self.position(c), self.done[c][1]) for c in dict.fromkeys(chosen)]
        for hold in holds:
            self.begin(hold.channel_id, hold.guild_id, hold.after + 1)
        return holds

    def position(self, channel_id: int) -> int:
        """The newest message done with, held back before any not done with yet."""
        at = self.done[channel_id][0]
        pending = self.open.get(channel_id)
        return min(at, min(pending) - 1) if pending else at

    def release(self, hold: Hold) -> None:
        self._close(hold.channel_id, hold.after + 1)

    def forget(self, channel_id: int) -> None:
        """A channel that is gone, or closed to the bot: not worth a call at every start."""
        if self.done.pop(channel_id, None) is not None:
            self.dirty = True

    def payload(self) -> dict[str, Any] | None:
        """What to write now (None: nothing changed). Taken on the event loop, so writing it
        elsewhere cannot race the next message."""
        if not self.dirty:
            return None
        self.dirty = False
        newest = sorted(self.done.items(), key=lambda item: item[1][0], reverse=True)
        self.done = dict(newest[:KEPT_CHANNELS])
        channels = {str(c): [self.position(c), guild] for c, (_, guild) in self.done.items()}
        return {"user_id": self.user_id, "channels": channels}

    def _close(self, channel_id: int, message_id: int) -> None:
        pending = self.open.get(channel_id)
        if pending is None:
            return
        pending[message_id] -= 1
        if pending[message_id] <= 0:
            del pending[message_id]
        if not pending:
            del self.open[channel_id]
        self.dirty = True  # a position held back may move on now
