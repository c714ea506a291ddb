"""A small, protocol-faithful Discord for tests: REST v10 and the gateway websocket on one
127.0.0.1 port (aiohttp). The real discord.py client talks to it through `api_base` and
`gateway_url`, exactly as it would talk to Discord.

It records every REST call and rejects what Discord rejects (an empty message, 50006; more
than 2000 characters; malformed allowed_mentions; a reply to an unknown message; editing
another user's message), or the tests would prove nothing. Wire facts that discord.py 2.7
depends on, learned the hard way:

- JSON responses carry `Content-Type: application/json` exactly (a charset breaks login).
- A 429 is retried only with a `Via` header and a JSON `retry_after`.
- Login is GET /users/@me and GET /oauth2/applications/@me; a plain Client never asks for
  /gateway/bot. Gateway: HELLO (op 10), IDENTIFY (op 2) → READY with the guild unavailable,
  then GUILD_CREATE; heartbeats op 1 → ACK op 11; RESUME (op 6) to READY's
  resume_gateway_url replays what was missed. Uncompressed text frames are accepted even
  though discord.py asks for zlib-stream.
- INTERACTION_CREATE needs `attachment_size_limit`, members need `flags`, and the interaction
  callback (`?with_response=1`) returns `{interaction: {...}, resource: {type, message}}`.
- Snowflakes arrive as ints in request bodies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

TOKEN = "MTAxMDEwMTAxMDEwMTAxMDEw.FAKE00.fake-discord-token-for-tests-only"
DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT_INTENT = 1 << 15
LIMIT = 2000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
ALL_PERMISSIONS = str((1 << 50) - 1)
DISCONNECT = 0  # a `fail_next` status: the connection is cut instead of an answer

Json = dict[str, Any]
REQUESTER: web.RequestKey[Json] = web.RequestKey(
    "requester", dict
)  # the bot whose token a REST call carries


@dataclass
class Call:
    """One REST call the fake received, and the status it answered."""

    method: str
    path: str  # after /api/v10
    query: dict[str, str]
    body: Any
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """A failure to answer the next `times` matching calls with (`fail_next`)."""

    method: str
    pattern: re.Pattern[str]
    status: int
    body: Json
    headers: dict[str, str]
    times: int


@dataclass
class Session:
    """One bot's gateway session: what was dispatched to it, for a RESUME to replay."""

    id: str
    bot_id: str  # whose connection: several bots may share the fake
    seq: int = 0
    frames: list[Json] = field(default_factory=list)  # every dispatch, for RESUME replays
    ws: web.WebSocketResponse | None = None


class DiscordError(Exception):
    """An error answer as Discord gives it: HTTP status, JSON code and message."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def form_error(field_name: str, code: str, message: str) -> DiscordError:
    errors = {field_name: {"_errors": [{"code": code, "message": message}]}}
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Exactly "application/json": discord.py compares the header verbatim.
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts or time.time(), UTC).isoformat()


def check_allowed_mentions(value: Any) -> None:
    """Discord's rules: known keys only; parse ⊆ {users, roles, everyone}; a type may not be
    both parsed and listed."""
    if not isinstance(value, dict):
        raise form_error("allowed_mentions", "MODEL_TYPE_CONVERT", "Must be an object.")
    unknown = set(value) - {"parse", "users", "roles", "replied_user"}
    if unknown:
        raise form_error("allowed_mentions", "UNKNOWN_FIELD", f"Unknown keys {sorted(unknown)}")
    parse = value.get("parse", [])
    if not isinstance(parse, list) or not set(parse) <= {"users", "roles", "everyone"}:
        raise form_error("allowed_mentions.parse", "BASE_TYPE_CHOICES", "Invalid parse type.")
    for kind in ("users", "roles"):
        if kind in value:
            if kind in parse:
                raise form_error("allowed_mentions", "MUTUALLY_EXCLUSIVE", f"parse:{kind} + list")
            if not isinstance(value[kind], list) or len(value[kind]) > 100:
                raise form_error(f"allowed_mentions.{kind}", "BASE_TYPE_MAX_LENGTH", "Too many")
    if not isinstance(value.get("replied_user", False), bool):
        raise form_error("allowed_mentions.replied_user", "BASE_TYPE_BAD", "Must be a bool.")


def check_content(body: Json, creating: bool) -> None:
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise form_error("content", "BASE_TYPE_BAD", "Must be a string.")
    if content is not None and len(content) > LIMIT:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {LIMIT} or fewer in length.")
    has_other = any(body.get(k) for k in ("embeds", "sticker_ids", "attachments", "poll"))
    if (creating or "content" in body) and not (content or "").strip() and not has_other:
        raise DiscordError(400, 50006, "Cannot send an empty message")
    if "allowed_mentions" in body:
        check_allowed_mentions(body["allowed_mentions"])


class FakeDiscord:
    """One guild with two text channels and a thread, a few users, DMs on demand. More bot
    accounts can join (`add_bot`): each gets its own session and what Discord would send it
    (a DM only to the bot in it); slash commands are the first bot's alone."""

    def __init__(self, message_content_enabled: bool = True) -> None:
        self.token = TOKEN
        self._clock_offset_s = 0.0
        self.message_content_enabled = message_content_enabled
        self.calls: list[Call] = []
        self.downloaded: list[str] = []  # attachments read, by file name
        self.errors: list[str] = []  # exceptions inside the fake: bugs in the test, not the bot
        self.faults: list[Fault] = []
        self.identifies = 0
        self.resumes: list[Json] = []
        self.gateway_paths: list[str] = []
        self.sessions: dict[str, Session] = {}
        self.current: dict[str, Session] = {}  # bot id → its live (or resumable) session
        self._dm_bots: dict[int, str] = {}  # DM channel → the bot in it
        self.forbidden_channels: set[int] = set()
        self.dms_closed: set[int] = set()
        self.outsiders: set[str] = set()  # user ids not in the guild (everyone else is)
        self.commands_of: dict[str, dict[str, list[Json]]] = {}  # bot id → scope → commands
        self.interactions: dict[int, Json] = {}
        self.attachments: dict[str, tuple[bytes, str]] = {}
        self.threads_started: list[Json] = []  # by POST .../messages/{id}/threads
        self.messages: dict[int, Json] = {}
        self.sent_frames: list[Json] = []
        self._acks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._last_id = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

        self.bot = self._user("hearthbot", bot=True)
        self.app_id = int(self.bot["id"])
        self.bots: dict[str, Json] = {TOKEN: self.bot}  # token → bot user
        self.users: list[Json] = []  # added by tests, beyond the fixed cast
        self.alice = self._user("alice", "Alice")
        self.bob = self._user("bob", "Bob")
        self.admin = self._user("root", "Admin Person")
        self.other_bot = self._user("otherbot", "Other Bot", bot=True)
        self.guild_id = self.snowflake()
        self.bot_role_id = self.snowflake()
        self.general = self._text_channel("general")
        self.other = self._text_channel("other")
        self.thread = self._thread(self.general, "a thread")
        self.channels: dict[int, Json] = {
            int(c["id"]): c for c in (self.general, self.other, self.thread)
        }

    @property
    def session(self) -> Session | None:
        """The first bot's session: most tests have one bot."""
        return self.current.get(self.bot["id"])

    @property
    def commands(self) -> dict[str, list[Json]]:
        return self.commands_of.setdefault(self.bot["id"], {})

    def add_bot(self, username: str) -> tuple[str, Json]:
        """Another bot account in the same guild (a second hearthbot): its token and user."""
        user = self._user(username, bot=True)
        token = f"{TOKEN}-{user['id']}"
        self.bots[token] = user
        return token, user

    def add_user(self, username: str, member: bool = True) -> Json:
        """Another user; `member=False`: not in the guild (they may still DM the bot, as
        someone sharing another server with it can)."""
        user = self._user(username, username.title())
        self.users.append(user)
        if not member:
            self.outsiders.add(user["id"])
        return user

    def add_channel(self, name: str) -> Json:
        """A text channel, announced in GUILD_CREATE: add it before the client connects."""
        channel = self._text_channel(name)
        self.channels[int(channel["id"])] = channel
        return channel

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume", self._gateway)
        app.router.add_get("/attachments/{key}/{name}", self._attachment)
        api = "/api/v10"
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/users/@me", self._me),
            ("GET", "/oauth2/applications/@me", self._application),
            ("GET", "/channels/{cid}", self._get_channel),
            ("GET", "/guilds/{gid}/members/{uid}", self._get_member),
            ("POST", "/channels/{cid}/typing", self._typing),
            ("POST", "/channels/{cid}/messages", self._create_message),
            ("GET", "/channels/{cid}/messages", self._history),
            ("GET", "/channels/{cid}/messages/{mid}", self._get_message),
            ("PATCH", "/channels/{cid}/messages/{mid}", self._edit_message),
            ("DELETE", "/channels/{cid}/messages/{mid}", self._delete_message),
            ("PUT", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", self._react),
            ("POST", "/channels/{cid}/messages/{mid}/threads", self._start_thread),
            ("PUT", "/applications/{aid}/commands", self._put_commands),
            ("PUT", "/applications/{aid}/guilds/{gid}/commands", self._put_commands),
            ("POST", "/interactions/{iid}/{itoken}/callback", self._callback),
            ("PATCH", "/webhooks/{aid}/{itoken}/messages/@original", self._edit_original),
            ("POST", "/webhooks/{aid}/{itoken}", self._followup),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        for ack in self._acks:
            ack.cancel()
        for session in self.sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- the world ----------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._clock_offset_s

    @property
    def clock_offset_s(self) -> float:
        return self._clock_offset_s

    @clock_offset_s.setter
    def clock_offset_s(self, value: float) -> None:
        """< 0: what happens from now on is dated that far in the past, ids too (discord.py
        reads a message's time from its id). A test must keep its own timeline in order."""
        self._clock_offset_s = value
        self._last_id = 0

    def snowflake(self) -> int:
        now = ((int(self.now() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0xFFF)
        self._last_id = max(now, self._last_id + 1)  # ever increasing, also within one ms
        return self._last_id

    def _user(self, username: str, global_name: str | None = None, bot: bool = False) -> Json:
        user = {
            "id": str(self.snowflake()),
            "username": username,
            "discriminator": "0",
            "global_name": global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        if bot:
            user["bot"] = True
        return user

    def _text_channel(self, name: str) -> Json:
        return {
            "id": str(self.snowflake()),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    def _thread(self, parent: Json, name: str) -> Json:
        return {
            "id": str(self.snowflake()),
            "type": 11,
            "guild_id": str(self.guild_id),
            "parent_id": parent["id"],
            "owner_id": self.alice["id"],
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 2,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso(self.now()),
                "locked": False,
            },
        }

    def unseen_thread(self, parent: Json, name: str) -> Json:
        """A thread the client was never told about (no THREAD_CREATE): it must look it up."""
        thread = self._thread(parent, name)
        self.channels[int(thread["id"])] = thread
        return thread

    def dm_channel(self, user: Json, bot: Json | None = None) -> Json:
        """The DM between `user` and a bot (the first one unless named)."""
        bot_id = (bot or self.bot)["id"]
        for channel_id, dm_bot in self._dm_bots.items():
            channel = self.channels[channel_id]
            if dm_bot == bot_id and channel["recipients"][0]["id"] == user["id"]:
                return channel
        channel = {"id": str(self.snowflake()), "type": 1, "recipients": [user]}
        self.channels[int(channel["id"])] = channel
        self._dm_bots[int(channel["id"])] = bot_id
        return channel

    def _member(self, user: Json, with_user: bool = False) -> Json:
        member: Json = {
            "roles": [str(self.bot_role_id)] if user is self.bot else [],
            "joined_at": iso(self.now()),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
        }
        if with_user:
            member["user"] = user
        return member

    def _guild(self, bot: Json) -> Json:
        everyone = {
            "id": str(self.guild_id),
            "name": "@everyone",
            "permissions": ALL_PERMISSIONS,
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        bot_role = {
            **everyone,
            "id": str(self.bot_role_id),
            "name": "hearthbot",
            "position": 1,
            "managed": True,
            "tags": {"bot_id": self.bot["id"]},
        }
        return {
            "id": str(self.guild_id),
            "name": "Hearth",
            "icon": None,
            "owner_id": self.admin["id"],
            "roles": [everyone, bot_role],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": 5,
            "members": [self._member(bot, with_user=True)],
            "channels": [c for c in self.channels.values() if c["type"] == 0],
            "threads": [self.thread],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "unavailable": False,
            "large": False,
            "joined_at": iso(self.now()),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "system_channel_flags": 0,
            "premium_tier": 0,
            "nsfw_level": 0,
            "preferred_locale": "en-US",
            "premium_progress_bar_enabled": False,
            "description": None,
        }

    def _is_guild_channel(self, channel: Json) -> bool:
        return "guild_id" in channel

    def _message(
        self,
        channel: Json,
        author: Json,
        content: str,
        *,
        reference: Json | None = None,
        attachments: list[Json] | None = None,
        webhook_id: int | None = None,
        extra_mentions: list[Json] | None = None,
        flags: int = 0,
        kind: int | None = None,
    ) -> Json:
        guild = self._is_guild_channel(channel)
        mentioned = [u for u in self._everyone() if f"<@{u['id']}>" in content]
        mentioned += [u for u in extra_mentions or [] if u not in mentioned]
        message: Json = {
            "id": str(self.snowflake()),
            "channel_id": channel["id"],
            "author": author,
            "content": content,
            "timestamp": iso(self.now()),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [{**u, "member": self._member(u)} if guild else u for u in mentioned],
            "mention_roles": [r for r in [str(self.bot_role_id)] if f"<@&{r}>" in content],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": kind if kind is not None else (19 if reference else 0),
            "flags": flags,
            "components": [],
        }
        if guild:
            message["guild_id"] = str(self.guild_id)
            if webhook_id is None:
                message["member"] = self._member(author)
        if webhook_id is not None:
            message["webhook_id"] = str(webhook_id)
        if reference is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": reference["id"],
                "channel_id": reference["channel_id"],
                **({"guild_id": str(self.guild_id)} if guild else {}),
            }
            message["referenced_message"] = reference
        self.messages[int(message["id"])] = message
        return message

    def _everyone(self) -> list[Json]:
        return [*self.bots.values(), self.alice, self.bob, self.admin, self.other_bot, *self.users]

    # -- what tests do as Discord users -------------------------------------------------------

    @staticmethod
    def mention(user: Json) -> str:
        return f"<@{user['id']}>"

    async def say(
        self,
        author: Json,
        channel: Json,
        content: str,
        *,
        reply_to: Json | None = None,
        ping: bool = True,
        attachments: list[Json] | None = None,
        webhook_id: int | None = None,
    ) -> Json:
        """A user posts a message: MESSAGE_CREATE goes out on the gateway."""
        assert self.session is not None, "no gateway session: did the client IDENTIFY?"
        # A reply pings the replied-to author unless the user turned that off.
        extra = [reply_to["author"]] if reply_to is not None and ping else []
        message = self._message(
            channel,
            author,
            content,
            reference=reply_to,
            attachments=attachments,
            webhook_id=webhook_id,
            extra_mentions=extra,
        )
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def user_edit(self, message: Json, content: str) -> Json:
        message.update(content=content, edited_timestamp=iso(self.now()))
        await self.dispatch("MESSAGE_UPDATE", message)
        return message

    async def user_delete(self, message: Json) -> None:
        self.messages.pop(int(message["id"]), None)
        channel = self.channels[int(message["channel_id"])]
        data = {"id": message["id"], "channel_id": message["channel_id"]}
        if self._is_guild_channel(channel):
            data["guild_id"] = str(self.guild_id)
        await self.dispatch("MESSAGE_DELETE", data)

    async def react(self, user: Json, message: Json, emoji: str) -> None:
        channel = self.channels[int(message["channel_id"])]
        data: Json = {
            "user_id": user["id"],
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "emoji": {"id": None, "name": emoji},
            "message_author_id": message["author"]["id"],
            "burst": False,
            "type": 0,
        }
        if self._is_guild_channel(channel):
            data["guild_id"] = str(self.guild_id)
            data["member"] = self._member(user, with_user=True)
        await self.dispatch("MESSAGE_REACTION_ADD", data)

    def attachment(self, filename: str, body: bytes, content_type: str) -> Json:
        key = str(self.snowflake())
        self.attachments[key] = (body, content_type)
        url = f"http://127.0.0.1:{self.port}/attachments/{key}/{filename}"
        return {
            "id": key,
            "filename": filename,
            "size": len(body),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    async def slash(
        self, user: Json, channel: Json, name: str, options: list[Json] | None = None
    ) -> Json:
        """A user runs a slash command (type 2); autocomplete is `autocomplete`."""
        return await self._interaction(2, user, channel, name, options or [])

    async def autocomplete(
        self, user: Json, channel: Json, name: str, option: str, typed: str
    ) -> Json:
        focused = [{"name": option, "type": 3, "value": typed, "focused": True}]
        return await self._interaction(4, user, channel, name, focused)

    async def _interaction(
        self, kind: int, user: Json, channel: Json, name: str, options: list[Json]
    ) -> Json:
        scope = str(self.guild_id) if str(self.guild_id) in self.commands else "global"
        registered = {c["name"]: c for c in self.commands.get(scope, [])}
        if name not in registered:
            raise AssertionError(f"/{name} was not registered (scopes: {list(self.commands)})")
        interaction: Json = {
            "id": str(self.snowflake()),
            "application_id": str(self.app_id),
            "type": kind,
            "token": f"itoken-{self.snowflake()}",
            "version": 1,
            "data": {
                "id": registered[name]["id"],
                "name": name,
                "type": 1,
                "options": options,
            },
            "channel_id": channel["id"],
            "channel": {k: v for k, v in channel.items() if k != "recipients"}
            | ({"recipients": channel["recipients"]} if "recipients" in channel else {}),
            "app_permissions": ALL_PERMISSIONS,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 26_214_400,
            "context": 0 if self._is_guild_channel(channel) else 1,
            "authorizing_integration_owners": {"0": str(self.guild_id)},
        }
        users = [
            u
            for u in self._everyone()
            for o in options
            if o.get("type") == 6 and o.get("value") == u["id"]
        ]
        if users:  # Discord resolves user options into full objects
            resolved: Json = {"users": {u["id"]: u for u in users}}
            if self._is_guild_channel(channel):
                resolved["members"] = {u["id"]: self._member(u) for u in users}
            interaction["data"]["resolved"] = resolved
        if self._is_guild_channel(channel):
            interaction["guild_id"] = str(self.guild_id)
            interaction["guild_locale"] = "en-US"
            interaction["data"]["guild_id"] = str(self.guild_id)
            interaction["member"] = {
                **self._member(user, with_user=True),
                "permissions": ALL_PERMISSIONS,
            }
        else:
            interaction["user"] = user
        self.interactions[int(interaction["id"])] = {"payload": interaction, "responses": []}
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def responses(self, interaction: Json) -> list[Json]:
        return self.interactions[int(interaction["id"])]["responses"]

    # -- faults and connection trouble -------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int,
        body: Json | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` matching calls get `status` (DISCONNECT: the connection is cut
        before any answer, as a network failure would)."""
        self.faults.append(
            Fault(method, re.compile(path_pattern), status, body or {}, headers or {}, times)
        )

    def rate_limit_next(self, method: str, path_pattern: str, retry_after: float) -> None:
        """A genuine Discord 429: JSON retry_after and a Via header (discord.py then waits)."""
        self.fail_next(
            method,
            path_pattern,
            429,
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
            {"Via": "1.1 google", "Retry-After": str(max(1, round(retry_after)))},
        )

    async def drop(self, code: int = 4000) -> None:
        """The gateway connection breaks; later dispatches wait for a RESUME."""
        assert self.session is not None and self.session.ws is not None
        ws, self.session.ws = self.session.ws, None
        await ws.close(code=code, message=b"dropped by the fake")

    def forget_sessions(self) -> None:
        """Discord forgets every session (a gap too long): a RESUME gets op 9, the client
        must IDENTIFY afresh, and what was dispatched meanwhile is never delivered."""
        self.sessions.clear()

    async def request_reconnect(self) -> None:
        """Op 7: Discord asks the client to reconnect and resume."""
        assert self.session is not None and self.session.ws is not None
        ws, self.session.ws = self.session.ws, None
        await ws.send_str(json.dumps({"op": 7, "d": None, "s": None, "t": None}))

    # -- queries for assertions ----------------------------------------------------------------

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        pattern = re.compile(path_pattern)
        return [c for c in self.calls if c.method == method and pattern.fullmatch(c.path)]

    def bot_messages(self, channel: Json, bot: Json | None = None) -> list[Json]:
        author = (bot or self.bot)["id"]
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == channel["id"] and m["author"]["id"] == author
        ]

    def replies_to(self, message: Json, bot: Json | None = None) -> list[Json]:
        author = (bot or self.bot)["id"]
        return [
            m
            for m in self.messages.values()
            if m["author"]["id"] == author
            and m.get("message_reference", {}).get("message_id") == message["id"]
        ]

    @property
    def connected(self) -> bool:
        return self.session is not None and self.session.ws is not None

    # -- gateway --------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: Json) -> None:
        """To every bot's session (none yet: nobody to tell); an event in a DM only to the
        bot in it, an interaction only to its application's bot."""
        channel_id = data.get("channel_id")
        only = self._dm_bots.get(int(channel_id)) if channel_id else None
        if event == "INTERACTION_CREATE":
            only = data["application_id"]
        for bot_id, session in list(self.current.items()):
            if only is None or bot_id == only:
                await self._dispatch_to(session, event, data)

    async def _dispatch_to(self, session: Session, event: str, data: Json) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.frames.append(frame)
        if session.ws is not None and not session.ws.closed:
            await self._send(session.ws, frame)

    async def _send(self, ws: web.WebSocketResponse, frame: Json) -> None:
        self.sent_frames.append(frame)
        await ws.send_str(json.dumps(frame))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.gateway_paths.append(request.path)
        await self._send(ws, {"op": 10, "d": {"heartbeat_interval": 41_250}, "s": None, "t": None})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, data = frame.get("op"), frame.get("d")
            if op == 1:
                # Acked after a network-like delay: discord.py's heartbeat thread stamps its
                # send time only after the send returns, and an instant ACK races that stamp
                # ("Can't keep up ... 41.3s behind").
                ack = asyncio.create_task(self._ack_later(ws))
                self._acks.add(ack)
                ack.add_done_callback(self._acks.discard)
            elif op == 2:
                await self._identify(ws, data)
            elif op == 6:
                await self._resume(ws, data)
        for session in self.sessions.values():
            if session.ws is ws:
                session.ws = None
        return ws

    async def _ack_later(self, ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(0.02)
        if not ws.closed:
            await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))

    async def _identify(self, ws: web.WebSocketResponse, data: Json) -> None:
        self.identifies += 1
        bot = self.bots.get(data.get("token", ""))
        if bot is None:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.message_content_enabled:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = Session(id=f"session-{self.snowflake()}", bot_id=bot["id"], ws=ws)
        self.sessions[session.id] = session
        self.current[bot["id"]] = session
        await self._dispatch_to(
            session,
            "READY",
            {
                "v": 10,
                "user": bot,
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": session.id,
                "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
                "application": {"id": bot["id"], "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        await self._dispatch_to(session, "GUILD_CREATE", self._guild(bot))

    async def _resume(self, ws: web.WebSocketResponse, data: Json) -> None:
        self.resumes.append({k: v for k, v in data.items() if k != "token"})
        session = self.sessions.get(data.get("session_id", ""))
        bot = self.bots.get(data.get("token", ""))
        if session is None or bot is None or bot["id"] != session.bot_id:
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return
        session.ws = ws
        self.current[session.bot_id] = session
        for frame in session.frames:
            if frame["s"] > (data.get("seq") or 0):
                await self._send(ws, frame)
        await self._dispatch_to(session, "RESUMED", {})

    # -- REST -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        path = request.path.removeprefix("/api/v10")
        raw = await request.read()
        body = json.loads(raw) if raw and request.content_type == "application/json" else None
        call = Call(request.method, path, dict(request.query), body)
        self.calls.append(call)
        fault = self._fault(call)
        if fault is not None and fault.status == DISCONNECT:
            assert request.transport is not None
            request.transport.abort()  # no answer at all: the client sees the connection drop
            raise asyncio.CancelledError  # aiohttp's way for a handler to end with its peer
        try:
            if fault is not None:
                response = json_response(fault.body, fault.status, fault.headers)
            else:
                response = await self._handle(request, handler, path)
        except web.HTTPNotFound:
            response = json_response({"message": "404: Not Found", "code": 0}, 404)
        call.status = response.status
        return response

    def _fault(self, call: Call) -> Fault | None:
        for fault in self.faults:
            if fault.times and fault.method == call.method and fault.pattern.fullmatch(call.path):
                fault.times -= 1
                call.status = fault.status
                return fault
        return None

    async def _handle(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        path: str,
    ) -> web.StreamResponse:
        needs_auth = not path.startswith(("/interactions/", "/webhooks/"))
        auth = request.headers.get("Authorization", "")
        bot = self.bots.get(auth.removeprefix("Bot ")) if auth.startswith("Bot ") else None
        if needs_auth and bot is None:
            return json_response({"message": "401: Unauthorized", "code": 0}, 401)
        request[REQUESTER] = bot or self.bot
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except DiscordError as exc:
            body: Json = {"message": exc.message, "code": exc.code}
            if exc.errors:
                body["errors"] = exc.errors
            return json_response(body, exc.status)
        except Exception as exc:
            self.errors.append(f"{request.method} {path}: {exc!r}")
            return json_response({"message": "500: Internal Server Error", "code": 0}, 500)

    def _channel(self, request: web.Request) -> Json:
        channel = self.channels.get(int(request.match_info["cid"]))
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        return channel

    def _writable(self, channel: Json) -> None:
        if int(channel["id"]) in self.forbidden_channels:
            raise DiscordError(403, 50013, "Missing Permissions")
        if channel["type"] == 1 and int(channel["recipients"][0]["id"]) in self.dms_closed:
            raise DiscordError(403, 50007, "Cannot send messages to this user")

    def _stored(self, channel: Json, request: web.Request) -> Json:
        message = self.messages.get(int(request.match_info["mid"]))
        if message is None or message["channel_id"] != channel["id"]:
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    async def _me(self, request: web.Request) -> web.Response:
        return json_response(request[REQUESTER])

    async def _application(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "id": request[REQUESTER]["id"],
                "name": request[REQUESTER]["username"],
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.admin,
                "flags": 0,
            }
        )

    async def _get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request))

    async def _get_member(self, request: web.Request) -> web.Response:
        """One member of the guild (what a bot without the Server Members intent may ask)."""
        if request.match_info["gid"] != str(self.guild_id):
            raise DiscordError(404, 10004, "Unknown Guild")
        user_id = request.match_info["uid"]
        user = next((u for u in self._everyone() if u["id"] == user_id), None)
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        if user_id in self.outsiders:
            raise DiscordError(404, 10007, "Unknown Member")
        return json_response(self._member(user, with_user=True))

    async def _start_thread(self, request: web.Request) -> web.Response:
        """A thread from a message: like Discord, the thread takes the message's id, its
        creator owns it, and THREAD_CREATE (newly_created) reaches the guild's sessions."""
        channel = self._channel(request)
        self._writable(channel)
        message = self._stored(channel, request)
        if channel["type"] != 0:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        if int(message["id"]) in self.channels:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        body = await request.json()
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        thread = self._thread(channel, name) | {
            "id": message["id"],
            "owner_id": request[REQUESTER]["id"],
        }
        self.channels[int(thread["id"])] = thread
        self.threads_started.append(thread)
        await self.dispatch("THREAD_CREATE", thread | {"newly_created": True})
        return json_response(thread, status=201)

    async def _typing(self, request: web.Request) -> web.Response:
        self._writable(self._channel(request))
        return web.Response(status=204)

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._writable(channel)
        body = await request.json()
        check_content(body, creating=True)
        reference = None
        if (ref := body.get("message_reference")) is not None:
            found = self.messages.get(int(ref.get("message_id", 0)))
            if found is not None and found["channel_id"] == channel["id"]:
                reference = found
            elif ref.get("fail_if_not_exists", True):
                raise form_error(
                    "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
        author = request[REQUESTER]
        message = self._message(channel, author, body.get("content") or "", reference=reference)
        await self.dispatch("MESSAGE_CREATE", message)
        return json_response(message)

    async def _history(self, request: web.Request) -> web.Response:
        """Like Discord: newest first, at most `limit` (1–100); with `after`, the messages
        right after it; else the newest (before `before`, if given)."""
        channel = self._channel(request)
        if int(channel["id"]) in self.forbidden_channels:
            raise DiscordError(403, 50001, "Missing Access")
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= 100:
            raise form_error("limit", "NUMBER_TYPE_MAX", "limit must be 1 to 100")
        ids = sorted(
            i
            for i, m in self.messages.items()
            if m["channel_id"] == channel["id"] and not m["flags"] & EPHEMERAL  # never listed
        )
        if "after" in request.query:
            chosen = [i for i in ids if i > int(request.query["after"])][:limit]
        else:
            before = int(request.query.get("before", str(1 << 63)))
            chosen = [i for i in ids if i < before][-limit:]
        return json_response([self.messages[i] for i in reversed(chosen)])

    async def _get_message(self, request: web.Request) -> web.Response:
        return json_response(self._stored(self._channel(request), request))

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._stored(channel, request)
        if message["author"]["id"] != request[REQUESTER]["id"]:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._writable(channel)
        body = await request.json()
        check_content(body, creating=False)
        if "content" in body:
            message.update(content=body["content"], edited_timestamp=iso(self.now()))
        await self.dispatch("MESSAGE_UPDATE", message)
        return json_response(message)

    async def _delete_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        message = self._stored(channel, request)
        if message["author"]["id"] != request[REQUESTER]["id"]:
            raise DiscordError(403, 50013, "Missing Permissions")
        self.messages.pop(int(message["id"]))
        return web.Response(status=204)

    async def _react(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._stored(channel, request)
        self._writable(channel)
        return web.Response(status=204)

    async def _put_commands(self, request: web.Request) -> web.Response:
        if request.match_info["aid"] != request[REQUESTER]["id"]:
            raise DiscordError(403, 50001, "Missing Access")
        body = await request.json()
        for command in body:
            name, description = command.get("name", ""), command.get("description", "")
            if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
                raise form_error("name", "APPLICATION_COMMAND_INVALID_NAME", repr(name))
            if not 1 <= len(description) <= 100:
                raise form_error("description", "BASE_TYPE_BAD_LENGTH", repr(description))
        scope = request.match_info.get("gid", "global")
        registered = [
            {
                **command,
                "id": str(self.snowflake()),
                "application_id": str(self.app_id),
                "version": str(self.snowflake()),
                "type": command.get("type", 1),
                "default_member_permissions": None,
                "nsfw": False,
                **({"guild_id": scope} if scope != "global" else {}),
            }
            for command in body
        ]
        self.commands_of.setdefault(request[REQUESTER]["id"], {})[scope] = registered
        return json_response(registered)

    def _interaction_for(self, request: web.Request) -> Json:
        record = self.interactions.get(int(request.match_info["iid"]))
        if record is None or record["payload"]["token"] != request.match_info["itoken"]:
            raise DiscordError(404, 10062, "Unknown interaction")
        return record

    async def _callback(self, request: web.Request) -> web.Response:
        record = self._interaction_for(request)
        if record["responses"]:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        body = await request.json()
        kind, data = body.get("type"), body.get("data") or {}
        payload = record["payload"]
        answer: Json = {"interaction": {"id": payload["id"], "type": payload["type"]}}
        if kind == 8:
            choices = data.get("choices")
            if not isinstance(choices, list) or len(choices) > 25:
                raise form_error("data.choices", "BASE_TYPE_MAX_LENGTH", "At most 25 choices")
            for choice in choices:
                if not 1 <= len(choice.get("name", "")) <= 100 or "value" not in choice:
                    raise form_error("data.choices", "BASE_TYPE_BAD", repr(choice))
        elif kind in (4, 5):
            if kind == 4:
                check_content(data, creating=True)
            flags = data.get("flags", 0) | (LOADING if kind == 5 else 0)
            channel = self.channels[int(payload["channel_id"])]
            message = self._message(
                channel, self.bot, data.get("content", ""), flags=flags, kind=20
            )
            record["message"] = message
            if kind == 4 and not flags & EPHEMERAL:  # everyone sees it, so it is dispatched
                await self.dispatch("MESSAGE_CREATE", message)
            answer["interaction"] |= {
                "response_message_id": message["id"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & EPHEMERAL),
            }
            answer["resource"] = {"type": kind, "message": message}
        else:
            raise form_error("type", "BASE_TYPE_CHOICES", f"unsupported callback type {kind}")
        record["responses"].append(body)
        return json_response(answer)

    async def _edit_original(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        message = record.get("message")
        if message is None:
            raise DiscordError(404, 10008, "Unknown Message")
        body = await request.json()
        check_content(body, creating=False)
        message.update(content=body.get("content", message["content"]))
        message["flags"] &= ~LOADING
        record["responses"].append({"type": "edit_original", "data": body})
        return json_response(message)

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        if not record["responses"]:
            raise DiscordError(404, 10015, "Unknown Webhook")
        body = await request.json()
        check_content(body, creating=True)
        channel = self.channels[int(record["payload"]["channel_id"])]
        message = self._message(channel, self.bot, body["content"], flags=body.get("flags", 0))
        record["responses"].append({"type": "followup", "data": body})
        return json_response(message)

    def _webhook_interaction(self, request: web.Request) -> Json:
        if int(request.match_info["aid"]) != self.app_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        for record in self.interactions.values():
            if record["payload"]["token"] == request.match_info["itoken"]:
                return record
        raise DiscordError(404, 10015, "Unknown Webhook")

    async def _attachment(self, request: web.Request) -> web.Response:
        self.downloaded.append(request.match_info["name"])
        found = self.attachments.get(request.match_info["key"])
        if found is None:
            return web.Response(status=404)
        body, content_type = found
        return web.Response(body=body, headers={"Content-Type": content_type})


async def until(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll until `condition()` holds (the fake and the bot run in the same loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- the real adapter wired to the fake ---------------------------------------------------------


def discord_section(fake: FakeDiscord, **overrides: Any) -> Json:
    """A `[discord]` config section pointing at the fake."""
    return {
        "token": fake.token,
        "api_base": fake.api_base,
        "gateway_url": fake.gateway_url,
        "edit_interval_s": 0.2,
        **overrides,
    }


def checked_calls(fake: FakeDiscord) -> None:
    """What must hold after any test: every text the bot sent pinged nobody, and nothing
    the fake rejected went unnoticed as a bug in the fake itself."""
    assert not fake.errors, fake.errors
    for call in fake.calls:
        body = call.body
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            body = body["data"]  # an interaction callback
        if isinstance(body, dict) and "content" in body:
            assert body.get("allowed_mentions") == {"parse": []}, (call.method, call.path, body)


class RecordingSink:
    """Stands in for the daemon where a test is about the adapter alone: keeps every event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> Any:
        from bot.events import Outcome

        self.events.append(event)
        return Outcome.ACCEPTED


def make_adapter(fake: FakeDiscord, bot: Json | None = None, **discord: Any) -> Any:
    """The real DiscordAdapter configured for the fake, with discord.py's waits shortened:
    2 s for guilds after READY, 5 s before a re-IDENTIFY, and our login retry backoff."""
    from adapters.discord.adapter import DiscordAdapter
    from bot.settings import load_settings

    settings = load_settings(None, bot=bot or {}, discord=discord_section(fake, **discord))
    return DiscordAdapter(
        settings.discord,
        settings.bot,
        guild_ready_timeout=0.05,
        reidentify_delay_s=0.0,
        retry_s=0.05,
    )


@asynccontextmanager
async def adapter_on(fake: FakeDiscord, sink: RecordingSink, **discord: Any) -> AsyncIterator[Any]:
    """The real DiscordAdapter connected to the fake, its events going to `sink` (no
    daemon); afterwards, no exception was swallowed by discord.py."""
    adapter = make_adapter(fake, **discord)
    try:
        await adapter.start(sink)
        await connected(adapter, fake)
        yield adapter
    finally:
        await adapter.stop()
    assert not adapter.errors, list(adapter.errors)


async def asked(fake: FakeDiscord, sink: RecordingSink, text: str = "question") -> Any:
    """Alice mentions the bot in #general; the adapter's Incoming for it (taken off `sink`)."""
    await fake.say(fake.alice, fake.general, f"{fake.mention(fake.bot)} {text}")
    from bot.events import Incoming

    await until(lambda: bool(sink.events), what="the message at the sink")
    incoming = sink.events.pop()
    assert isinstance(incoming, Incoming)
    return incoming


async def connected(adapter: Any, fake: FakeDiscord) -> None:
    """Until the gateway is up, discord.py has dispatched on_ready (closing the client before
    that makes discord.py dispatch it on a closed client) and slash commands are registered."""
    await until(adapter.is_connected, what="the gateway READY")
    await until(lambda: adapter.client.is_ready(), what="on_ready")
    await until(
        lambda: bool(fake.commands_of.get(str(adapter.client.user.id))),
        what="slash commands synced",
    )


class ThreadedFake:
    """The fake on its own loop in a thread, for code that runs `asyncio.run` itself (the
    CLI)."""

    def __init__(self, **kwargs: Any) -> None:
        self.fake = FakeDiscord(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeDiscord:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
