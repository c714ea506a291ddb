"""!persona, !temperature, !seed, !trigger and !autothread: show or change how this channel is
answered."""

from __future__ import annotations

from collections.abc import Mapping

from bot import texts
from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command
from bot.events import Adapter, AutoThreads, Incoming
from bot.scopes import scopes_for, trigger_of
from bot.store import RANDOM_SEED, Store


def _scope(message: Incoming) -> str:
    return f"channel:{message.channel_key}"


async def persona(ctx: CommandContext, command: Command, message: Incoming) -> str:
    personas = ctx.live.personas
    if command.arg is None:
        current = await ctx.resolved(message)
        lines = ["Personas (switch with !persona NAME):"]
        for name in personas.names():
            listed = personas.personas[name]
            mark = "▶" if name == current.persona.name else "•"
            lines.append(
                f"{mark} {name} (temperature {listed.temperature:g}) — {listed.description}"
            )
        return "\n".join(lines)
    name = str(command.arg)
    chosen = personas.get(name)
    if chosen is None:
        return texts.UNKNOWN_PERSONA.format(name=name, names=", ".join(personas.names()))
    # A persona brings its own temperature: drop this channel's override.
    await ctx.store.update_scope(_scope(message), persona=name, temperature=None)
    return texts.PERSONA_SET.format(name=name, description=chosen.description)


async def temperature(ctx: CommandContext, command: Command, message: Incoming) -> str:
    if command.arg is None:
        current = await ctx.resolved(message)
        return texts.TEMPERATURE_SHOW.format(value=current.sampling.temperature)
    value = float(command.arg)
    await ctx.store.update_scope(_scope(message), temperature=value)
    return texts.TEMPERATURE_SET.format(value=value)


async def seed(ctx: CommandContext, command: Command, message: Incoming) -> str:
    if command.arg is None:
        fixed = (await ctx.resolved(message)).fixed_seed
        if fixed is None:
            return texts.SEED_SHOW_RANDOM
        return texts.SEED_SHOW_FIXED.format(value=fixed)
    if command.arg == "random":
        await ctx.store.update_scope(_scope(message), seed=RANDOM_SEED)
        return texts.SEED_RANDOM
    await ctx.store.update_scope(_scope(message), seed=int(command.arg))
    return texts.SEED_FIXED.format(value=int(command.arg))


async def trigger(ctx: CommandContext, command: Command, message: Incoming) -> str:
    if message.is_direct:
        return texts.TRIGGER_DIRECT
    if command.arg is None:
        layers = await ctx.store.scope_settings(scopes_for(message))
        mode = trigger_of(layers, message, ctx.live.settings)
        return texts.TRIGGER_SHOW.format(what=texts.TRIGGER_WHAT[mode])
    await ctx.store.update_scope(_scope(message), trigger=str(command.arg))
    return texts.TRIGGER_SET.format(what=texts.TRIGGER_WHAT[str(command.arg)])


async def autothread(ctx: CommandContext, command: Command, message: Incoming) -> str:
    adapter = ctx.live.adapters.get(message.platform)
    if message.is_direct or not isinstance(adapter, AutoThreads):
        return texts.AUTOTHREAD_ELSEWHERE
    if adapter.auto_threads.is_thread(message.channel_id):
        return texts.AUTOTHREAD_IN_THREAD
    if command.arg is None:
        return texts.AUTOTHREAD_SHOW[adapter.auto_threads.on(message.channel_id)]
    on = command.arg == "on"
    await ctx.store.update_scope(_scope(message), auto_thread=on)
    adapter.auto_threads.choose(message.channel_id, on)
    return texts.AUTOTHREAD_SET[on]


async def restore_auto_threads(store: Store, adapters: Mapping[str, Adapter]) -> None:
    """At start: each adapter that opens threads learns the channels' `!autothread` choices."""
    for name, adapter in adapters.items():
        if isinstance(adapter, AutoThreads):
            for channel_id, on in (await store.auto_thread_channels(name)).items():
                adapter.auto_threads.choose(channel_id, on)


HANDLERS: dict[str, Handler] = {
    "persona": persona,
    "temperature": temperature,
    "seed": seed,
    "trigger": trigger,
    "autothread": autothread,
}
