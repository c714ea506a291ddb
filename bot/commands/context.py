"""What command handlers may use: a narrow view of the running daemon, which builds it.

Handlers get this instead of the daemon, so a command cannot reach past what it is for, and
bot.commands never imports bot.daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bot.commands.parse import Command
from bot.events import Incoming
from bot.live import Live
from bot.model.types import ModelInfo
from bot.prompt.window import ContextUse
from bot.scopes import Resolved, resolve_for
from bot.status import DaemonStatus
from bot.store import Store
from bot.usage import ReplyUsage


class ModelControls(Protocol):
    """The part of a backend that commands use: its facts, and its cached state per channel."""

    @property
    def info(self) -> ModelInfo: ...

    def cache_state(self, key: str) -> str: ...

    async def forget(self, key: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Everything a command handler may touch."""

    live: Live  # settings, personas and admins as of the last reload
    store: Store
    model: ModelControls
    status: Callable[[], DaemonStatus]
    forget_queued: Callable[[str], int]  # user key → queued messages dropped
    # Stops the answers in flight to matching messages; returns once they have ended.
    stop_answers: Callable[[Callable[[Incoming], bool]], Awaitable[None]]
    reused_tokens: Callable[[str], int]  # channel → prompt tokens its last reply reused
    context_tokens: Callable[[str, str], Awaitable[ContextUse]]  # (channel, system prompt)
    last_usage: Callable[[str], ReplyUsage | None]  # channel → its last reply's figures

    async def resolved(self, message: Incoming) -> Resolved:
        """The persona and sampling in effect where `message` was sent."""
        live = self.live
        return await resolve_for(
            self.store, message, live.personas, live.settings.bot.default_persona
        )


Handler = Callable[[CommandContext, Command, Incoming], Awaitable[str]]
