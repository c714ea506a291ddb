"""Which adapters run: each platform registers here by name. The console runs when no chat
platform is configured (or when asked for with `hearthbot chat`)."""

from __future__ import annotations

import sys

from bot.events import Adapter
from bot.settings import Settings


def build_adapters(settings: Settings, console_only: bool = False) -> dict[str, Adapter]:
    from adapters.console import ConsoleAdapter

    adapters: dict[str, Adapter] = {}
    # Chat platforms (Discord, Matrix) are added here when their section is configured.
    if console_only or not adapters:
        adapters = {"console": ConsoleAdapter(sys.stdin, sys.stdout)}
    return adapters
