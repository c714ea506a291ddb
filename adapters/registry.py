"""Which adapters run: each platform is built here by name when its section is configured.
The console runs when no chat platform is configured (or when asked for: `hearthbot chat`).
Platform modules are imported only when used, so a console chat never loads discord.py."""

from __future__ import annotations

import sys

from bot.events import Adapter
from bot.settings import Settings


def build_adapters(settings: Settings, console_only: bool = False) -> dict[str, Adapter]:
    adapters: dict[str, Adapter] = {}
    if not console_only and settings.discord.enabled:
        from adapters.discord.adapter import DiscordAdapter

        adapters["discord"] = DiscordAdapter(settings.discord, settings.bot)
    if not console_only and settings.matrix.enabled:
        from adapters.matrix.adapter import MatrixAdapter

        adapters["matrix"] = MatrixAdapter(settings.matrix, settings.bot)
    if not adapters:
        from adapters.console import ConsoleAdapter

        adapters["console"] = ConsoleAdapter(sys.stdin, sys.stdout)
    return adapters
