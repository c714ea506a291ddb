"""Who the Discord adapter answers, decided by pure functions (table-tested).

Access is by numeric IDs only: display names can be changed by anyone, IDs cannot. Empty
allow lists mean "everyone in the servers the bot was invited to". With `allowed_guilds`
set, a DM is answered only for someone listed or in one of those servers (membership is
looked up: adapters.discord.membership).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bot.settings import BotSettings, DiscordSettings

PLATFORM = "discord"


@dataclass(frozen=True, slots=True)
class Access:
    """Who may ask the bot on Discord: allowed and blocked IDs, admins, and DMs."""

    allowed_guilds: frozenset[int] = frozenset()
    allowed_channels: frozenset[int] = frozenset()
    allowed_users: frozenset[int] = frozenset()
    blocked_users: frozenset[int] = frozenset()
    admins: frozenset[int] = frozenset()
    allow_dms: bool = True

    @classmethod
    def from_settings(cls, discord: DiscordSettings, bot: BotSettings | None = None) -> Access:
        # `[bot] admins` names admins across platforms as "discord:1234"; both lists count.
        prefix = f"{PLATFORM}:"
        core_admins = [
            int(entry[len(prefix) :])
            for entry in (bot.admins if bot is not None else [])
            if entry.startswith(prefix) and entry[len(prefix) :].isdecimal()
        ]
        return cls(
            allowed_guilds=frozenset(discord.allowed_guilds),
            allowed_channels=frozenset(discord.allowed_channels),
            allowed_users=frozenset(discord.allowed_users),
            blocked_users=frozenset(discord.blocked_users),
            admins=frozenset([*discord.admins, *core_admins]),
            allow_dms=discord.allow_dms,
        )

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admins and user_id not in self.blocked_users

    def allows_user(self, user_id: int) -> bool:
        if user_id in self.blocked_users:
            return False
        return not self.allowed_users or self.listed(user_id)

    def listed(self, user_id: int) -> bool:
        """Named in the config (an allowed user or an admin), so vouched for anywhere."""
        return user_id in self.allowed_users or user_id in self.admins

    def needs_membership(self, user_id: int) -> bool:
        """Whether a DM from `user_id` is answered only if they are in an allowed server:
        with `allowed_guilds` set, sharing some other server with the bot is not enough."""
        return (
            self.allow_dms
            and bool(self.allowed_guilds)
            and self.allows_user(user_id)
            and not self.listed(user_id)
        )

    def allows(
        self,
        user_id: int,
        guild_id: int | None,
        channel_ids: Iterable[int],
        in_allowed_guild: bool = False,
    ) -> bool:
        """`channel_ids`: the channel and, for a thread, its parent (a thread of an allowed
        channel is allowed). `guild_id` None means a direct message; `in_allowed_guild`
        whether its author is a member of an allowed server (asked only when it matters:
        `needs_membership`)."""
        if not self.allows_user(user_id):
            return False
        if guild_id is None:
            return self.allow_dms and (
                not self.allowed_guilds or self.listed(user_id) or in_allowed_guild
            )
        if self.allowed_guilds and guild_id not in self.allowed_guilds:
            return False
        return not self.allowed_channels or any(c in self.allowed_channels for c in channel_ids)


@dataclass(frozen=True, slots=True)
class Addressing:
    """What the adapter knows about a message when deciding whether it is for the bot."""

    is_own: bool = False
    author_is_bot: bool = False
    is_webhook: bool = False
    is_system: bool = False  # joins, pins, boosts: not something anyone said
    is_dm: bool = False
    mentions_bot: bool = False
    replies_to_bot: bool = False


def speaks(message: Addressing) -> bool:
    """A person's message, passed on to the core (whose channel's trigger mode decides);
    never bots, webhooks or ourselves, so two bots can never talk each other into a loop."""
    return not (message.is_own or message.author_is_bot or message.is_webhook or message.is_system)


def addressed(message: Addressing) -> bool:
    """Spoken to: a mention, a reply to the bot, a DM (from a person)."""
    if not speaks(message):
        return False
    return message.is_dm or message.mentions_bot or message.replies_to_bot


STOP_EMOJI = frozenset({"⏹️", "⏹", "🛑"})
REGENERATE_EMOJI = frozenset({"🔁", "🔄"})


def reaction_kind(emoji: str) -> str | None:
    """'stop', 'regenerate' or None for a reaction on one of the bot's replies."""
    if emoji in STOP_EMOJI:
        return "stop"
    if emoji in REGENERATE_EMOJI:
        return "regenerate"
    return None


def may_steer(reactor_id: int, author_id: int | None, access: Access) -> bool:
    """Only the person who asked (or an admin) may stop or regenerate an answer."""
    if not access.allows_user(reactor_id):
        return False
    return reactor_id == author_id or access.is_admin(reactor_id)
