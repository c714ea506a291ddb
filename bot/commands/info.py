"""!help and !status: what the bot can do, and what it is running with here."""

from __future__ import annotations

from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command, help_text
from bot.commands.usage import last_reply_line
from bot.events import Incoming
from bot.model.types import ModelInfo
from bot.status import DaemonStatus


async def show_help(ctx: CommandContext, command: Command, message: Incoming) -> str:
    return help_text(set(ctx.live.settings.bot.admin_commands))


async def show_status(ctx: CommandContext, command: Command, message: Incoming) -> str:
    info = ctx.model.info
    current = await ctx.resolved(message)
    sampling = current.sampling
    used = await ctx.context_tokens(message.channel_key, current.persona.system_prompt)
    seed = current.fixed_seed
    return "\n".join(
        [
            f"Model: {info.name} — {info.params_text} parameters, "
            f"{info.quantization or 'unknown'} quantization ({info.description})",
            *([runs_line(info)] if info.runs_on else []),
            f"Context: {used:,} / {info.n_ctx:,} tokens "
            f"(up to {sampling.max_tokens:,} more for the reply)",
            f"Persona: {current.persona.name} — {current.persona.description}",
            f"Temperature: {sampling.temperature:g} · top_p {sampling.top_p:g} · top_k "
            f"{sampling.top_k} · min_p {sampling.min_p:g} · repeat penalty "
            f"{sampling.repeat_penalty:g}",
            f"Seed: {seed if seed is not None else 'random (fresh each reply)'}",
            f"Cache: {ctx.model.cache_state(message.channel_key)}; last reply reused "
            f"{ctx.reused_tokens(message.channel_key):,} prompt tokens",
            slots_line(ctx.status()),
            last_reply_line(ctx.last_usage(message.channel_key)),
        ]
    )


def runs_line(info: ModelInfo) -> str:
    """Where the in-process model runs and how it keeps its KV cache."""
    return f"Runs on: {info.runs_on}; KV cache {info.kv_type or 'f16'}"


def slots_line(status: DaemonStatus) -> str:
    """How busy the model is: its slots in use, its speed when the engine says, the queue."""
    engine = status.engine
    speed = f" ({engine.tokens_per_s:.1f} tokens/s)" if engine and engine.tokens_per_s else ""
    return (
        f"Replying: {status.answering} of {status.slots} slots busy{speed}; {status.queued} waiting"
    )


HANDLERS: dict[str, Handler] = {"help": show_help, "status": show_status}
