"""Carries out parsed commands. Parsing (bot.commands.parse) decides what a message means; this
module acts on it and words the answer (with bot.texts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot import texts
from bot.commands.parse import Command, help_text, may_run
from bot.events import Incoming
from bot.scopes import Resolved, resolve_for
from bot.store import RANDOM_SEED

if TYPE_CHECKING:
    from bot.daemon import Daemon


class CommandRunner:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def run(self, command: Command, message: Incoming) -> str:
        admin_commands = self.daemon.settings.bot.admin_commands
        is_admin = self.daemon.is_admin(message)
        if not may_run(command, admin_commands, message.is_direct, is_admin):
            return texts.NOT_ADMIN.format(name=command.name)
        handler = getattr(self, f"_{command.name}")
        return await handler(command, message)

    async def _help(self, command: Command, message: Incoming) -> str:
        return help_text(set(self.daemon.settings.bot.admin_commands))

    async def _reset(self, command: Command, message: Incoming) -> str:
        count = await self.daemon.store.reset_channel(message.channel_key)
        await self.daemon.backend.forget(message.channel_key)
        return texts.RESET_DONE.format(count=count)

    async def _persona(self, command: Command, message: Incoming) -> str:
        personas = self.daemon.personas
        current = await self._resolved(message)
        if command.arg is None:
            lines = ["Personas (switch with !persona NAME):"]
            for name in personas.names():
                persona = personas.personas[name]
                mark = "▶" if name == current.persona.name else "•"
                lines.append(
                    f"{mark} {name} (temperature {persona.temperature:g}) — {persona.description}"
                )
            return "\n".join(lines)
        name = str(command.arg)
        persona = personas.get(name)
        if persona is None:
            return texts.UNKNOWN_PERSONA.format(name=name, names=", ".join(personas.names()))
        # A persona brings its own temperature: drop this channel's override.
        await self.daemon.store.update_scope(
            f"channel:{message.channel_key}", persona=name, temperature=None
        )
        return texts.PERSONA_SET.format(name=name, description=persona.description)

    async def _temperature(self, command: Command, message: Incoming) -> str:
        if command.arg is None:
            current = await self._resolved(message)
            return texts.TEMPERATURE_SHOW.format(value=current.sampling.temperature)
        value = float(command.arg)
        await self.daemon.store.update_scope(f"channel:{message.channel_key}", temperature=value)
        return texts.TEMPERATURE_SET.format(value=value)

    async def _seed(self, command: Command, message: Incoming) -> str:
        if command.arg is None:
            seed = (await self._resolved(message)).fixed_seed
            if seed is None:
                return texts.SEED_SHOW_RANDOM
            return texts.SEED_SHOW_FIXED.format(value=seed)
        scope = f"channel:{message.channel_key}"
        if command.arg == "random":
            await self.daemon.store.update_scope(scope, seed=RANDOM_SEED)
            return texts.SEED_RANDOM
        await self.daemon.store.update_scope(scope, seed=int(command.arg))
        return texts.SEED_FIXED.format(value=int(command.arg))

    async def _status(self, command: Command, message: Incoming) -> str:
        daemon = self.daemon
        info = daemon.backend.info
        current = await self._resolved(message)
        used = await daemon.context.usage(message.channel_key, current.persona.system_prompt)
        seed = current.fixed_seed
        return "\n".join(
            [
                f"Model: {info.name} — {info.params_text} parameters, "
                f"{info.quantization or 'unknown'} quantization ({info.description})",
                f"Context: {used:,} / {info.n_ctx:,} tokens "
                f"(up to {current.sampling.max_tokens:,} more for the reply)",
                f"Persona: {current.persona.name} — {current.persona.description}",
                f"Temperature: {current.sampling.temperature:g} · top_p "
                f"{current.sampling.top_p:g} · top_k {current.sampling.top_k} · min_p "
                f"{current.sampling.min_p:g} · repeat penalty {current.sampling.repeat_penalty:g}",
                f"Seed: {seed if seed is not None else 'random (fresh each reply)'}",
                f"Cache: {daemon.backend.cache_state(message.channel_key)}; last reply reused "
                f"{daemon.responder.reused_tokens(message.channel_key):,} prompt tokens",
                f"Queue: {len(daemon.queue)} waiting",
            ]
        )

    async def _forget(self, command: Command, message: Incoming) -> str:
        if command.arg is None:
            who = message.user_key
        elif not self.daemon.is_admin(message):
            return texts.NOT_ADMIN.format(name="forget <user>")
        else:
            target = str(command.arg)
            qualified = target.split(":", 1)[0] in self.daemon.adapters
            who = target if qualified else f"{message.platform}:{target}"
        self.daemon.forget_queued(who)
        count = await self.daemon.store.forget_user(who)
        await self.daemon.backend.forget()  # their words may sit in any channel's cached KV
        return texts.FORGET_DONE.format(count=count, who="you" if who == message.user_key else who)

    async def _resolved(self, message: Incoming) -> Resolved:
        daemon = self.daemon
        return await resolve_for(
            daemon.store, message, daemon.personas, daemon.settings.bot.default_persona
        )
