"""Carries out parsed commands. Parsing (bot.commands.parse) decides what a message means; the
handlers, one module per group of commands, act on it and word the answer (with bot.texts)."""

from __future__ import annotations

from bot import texts
from bot.commands import info, memory, tuning, usage
from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command, may_run
from bot.events import Incoming

# Every command in bot.commands.parse.COMMANDS has its handler here (a test checks).
HANDLERS: dict[str, Handler] = {
    **info.HANDLERS,
    **tuning.HANDLERS,
    **memory.HANDLERS,
    **usage.HANDLERS,
}


class CommandRunner:
    """Runs a parsed command for a message: checks that its sender may, then its handler."""

    def __init__(self, context: CommandContext) -> None:
        self.context = context

    async def run(self, command: Command, message: Incoming) -> str:
        live = self.context.live
        is_admin = live.is_admin(message)
        if not may_run(command, live.settings.bot.admin_commands, message.is_direct, is_admin):
            return texts.NOT_ADMIN.format(name=command.name)
        return await HANDLERS[command.name](self.context, command, message)
