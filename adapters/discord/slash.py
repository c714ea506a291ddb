"""Slash commands: the core's command table as Discord application commands.

Each slash command becomes the same `!name arg` text a user could type, so both paths run
the core's one implementation (permissions included). Read-only answers are ephemeral (only
the asker sees them); changes to a channel's settings are shown to the channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import discord
import structlog
from discord import app_commands

from adapters.discord.text import command_text
from bot.commands.parse import COMMANDS
from bot.triggers import TRIGGERS

log = structlog.get_logger(__name__)

# (interaction, "!name arg" text, ephemeral) → answered through the core
RunCommand = Callable[[discord.Interaction, str, bool], Awaitable[None]]
MAX_CHOICES = 25  # Discord's limit for autocomplete


def matching(names: list[str], typed: str) -> list[str]:
    """Autocomplete: names starting with what was typed first, then names containing it."""
    typed = typed.strip().lower()
    starts = [n for n in names if n.startswith(typed)]
    contains = [n for n in names if typed in n and n not in starts]
    return (starts + contains)[:MAX_CHOICES]


def _summary(name: str) -> str:
    return COMMANDS[name].summary[:100]  # Discord's description limit


class SlashCommands(app_commands.CommandTree):
    """hearthbot's slash commands, registered on one client (discord.py's command tree)."""

    def __init__(
        self,
        client: discord.Client,
        run: RunCommand,
        persona_names: list[str],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        super().__init__(client)
        self._on_failure = on_failure

        @self.command(name="help", description=_summary("help"))
        async def help_(interaction: discord.Interaction) -> None:
            await run(interaction, command_text("help"), True)

        @self.command(name="status", description=_summary("status"))
        async def status(interaction: discord.Interaction) -> None:
            await run(interaction, command_text("status"), True)

        @self.command(name="usage", description=_summary("usage"))
        async def usage(interaction: discord.Interaction) -> None:
            await run(interaction, command_text("usage"), True)

        @self.command(name="reset", description=_summary("reset"))
        async def reset(interaction: discord.Interaction) -> None:
            await run(interaction, command_text("reset"), False)

        @self.command(name="persona", description=_summary("persona"))
        @app_commands.describe(name="the persona to switch to (empty: list them)")
        async def persona(interaction: discord.Interaction, name: str | None = None) -> None:
            await run(interaction, command_text("persona", name), name is None)

        @persona.autocomplete("name")
        async def persona_choices(
            interaction: discord.Interaction, typed: str
        ) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=n, value=n) for n in matching(persona_names, typed)]

        @self.command(name="temperature", description=_summary("temperature"))
        @app_commands.describe(value="0 = predictable, 1 = as trained, 2 = wild (empty: show)")
        async def temperature(
            interaction: discord.Interaction,
            value: app_commands.Range[float, 0.0, 2.0] | None = None,
        ) -> None:
            await run(interaction, command_text("temperature", value), value is None)

        @self.command(name="seed", description=_summary("seed"))
        @app_commands.describe(value="a whole number, or `random` (empty: show)")
        async def seed(interaction: discord.Interaction, value: str | None = None) -> None:
            await run(interaction, command_text("seed", value), value is None)

        @self.command(name="trigger", description=_summary("trigger"))
        @app_commands.describe(mode="mention, all (every message), name, off (empty: show)")
        @app_commands.choices(mode=[app_commands.Choice(name=m, value=m) for m in TRIGGERS])
        async def trigger(interaction: discord.Interaction, mode: str | None = None) -> None:
            await run(interaction, command_text("trigger", mode), mode is None)

        @self.command(name="autothread", description=_summary("autothread"))
        @app_commands.describe(state="on: a mention opens a thread here; off: not (empty: show)")
        @app_commands.choices(state=[app_commands.Choice(name=s, value=s) for s in ("on", "off")])
        async def autothread(interaction: discord.Interaction, state: str | None = None) -> None:
            await run(interaction, command_text("autothread", state), state is None)

        @self.command(name="forget", description=_summary("forget"))
        @app_commands.describe(user="admins: whose messages to delete (empty: yours)")
        async def forget(
            interaction: discord.Interaction, user: discord.User | None = None
        ) -> None:
            await run(interaction, command_text("forget", user.id if user else None), True)

        # Long memory (docs/memory.md): about the asker, so only the asker sees the answers.
        @self.command(name="remember", description=_summary("remember"))
        @app_commands.describe(text="what to keep about you (used where you say it)")
        async def remember(interaction: discord.Interaction, text: str) -> None:
            await run(interaction, command_text("remember", text), True)

        @self.command(name="notes", description=_summary("notes"))
        @app_commands.describe(action="clear: delete your notes here (empty: list them)")
        @app_commands.choices(action=[app_commands.Choice(name="clear", value="clear")])
        async def notes(interaction: discord.Interaction, action: str | None = None) -> None:
            await run(interaction, command_text("notes", action), True)

        @self.command(name="summary", description=_summary("summary"))
        async def summary(interaction: discord.Interaction) -> None:
            await run(interaction, command_text("summary"), True)

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        log.error("discord slash command failed", error=str(error), exc_info=error)
        self._on_failure(error)
