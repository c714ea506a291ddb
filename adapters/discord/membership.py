"""Whether a DM's author belongs to an allowed server, for `allowed_guilds` to hold in DMs.

Discord tells a bot who is in a server only with the privileged Server Members intent (the
whole member list, streamed and kept up to date), or one member at a time on request (GET
/guilds/{id}/members/{user}). hearthbot asks per DM author and remembers the answer for
MEMBER_TTL_S, so it needs no privileged intent and no member list, at the cost of one
request per author per server every few minutes; someone who leaves a server keeps DM
access at most that long. When Discord cannot say (an outage), the DM is not answered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import aiohttp
import discord
import structlog

from adapters.common.failure import describe

log = structlog.get_logger(__name__)

MEMBER_TTL_S = 300.0
REMEMBERED = 10_000  # (server, user) answers kept; the oldest go first


class Remembered:
    """Answers that expire after `ttl_s`, at most `size` of them (the least recently used
    go first): bounded however many people write."""

    def __init__(
        self, ttl_s: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.size, self._clock = ttl_s, size, clock
        self._items: OrderedDict[tuple[int, int], tuple[float, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[int, int]) -> bool | None:
        """The answer, or None when it was never given or has expired."""
        found = self._items.get(key)
        if found is None:
            return None
        expires, answer = found
        if expires <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return answer

    def put(self, key: tuple[int, int], answer: bool) -> None:
        self._items[key] = (self._clock() + self.ttl_s, answer)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class Membership:
    """Asks Discord whether a user is in a server, one member at a time, and remembers."""

    def __init__(self, known: Remembered | None = None) -> None:
        self.known = known or Remembered(MEMBER_TTL_S, REMEMBERED)

    async def in_any(self, client: discord.Client, user_id: int, guilds: Iterable[int]) -> bool:
        for guild_id in sorted(guilds):
            if await self.is_member(client, guild_id, user_id):
                return True
        return False

    async def is_member(self, client: discord.Client, guild_id: int, user_id: int) -> bool:
        known = self.known.get((guild_id, user_id))
        if known is not None:
            return known
        answer = await _ask(client, guild_id, user_id)
        if answer is None:
            return False  # Discord could not say: not answered now, asked again next time
        self.known.put((guild_id, user_id), answer)
        return answer


async def _ask(client: discord.Client, guild_id: int, user_id: int) -> bool | None:
    guild = client.get_guild(guild_id)
    if guild is None:
        return None  # not in that server, or it is not available yet: nobody there can vouch
    try:
        await guild.fetch_member(user_id)
    except discord.NotFound:  # Unknown Member, Unknown User
        return False
    except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("discord: could not look up a server member", error=describe(exc))
        return None
    return True
