"""!help and !status: what the bot can do, and what it is running with here."""

from __future__ import annotations

from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command, help_text
from bot.commands.usage import last_reply_line
from bot.events import Incoming
from bot.model.types import ModelInfo
from bot.notes import notes_scope
from bot.prompt.window import ContextUse
from bot.status import DaemonStatus
from bot.summaries import with_summary


async def show_help(ctx: CommandContext, command: Command, message: Incoming) -> str:
    return help_text(set(ctx.live.settings.bot.admin_commands))


async def show_status(ctx: CommandContext, command: Command, message: Incoming) -> str:
    info = ctx.model.info
    current = await ctx.resolved(message)
    sampling = current.sampling
    memory = ctx.live.settings.memory
    summaries_on = current.persona.memory and memory.summary_tokens > 0
    summary = await ctx.store.summary(message.channel_key) if summaries_on else None
    shown = summary.shown if summary else None
    used = await ctx.context_tokens(
        message.channel_key, with_summary(current.persona.system_prompt, shown)
    )
    seed = current.fixed_seed
    notes = len(await ctx.store.notes(message.user_key, notes_scope(message)))
    on = current.persona.memory and memory.notes_per_person > 0
    if not summaries_on:
        summary_line = "Summary: off here"
    elif summary is None or not summary.text:
        summary_line = "Summary: none in use"
    elif not shown:
        summary_line = f"Summary: {summary.tokens:,} tokens, used from the next trim"
    else:
        summary_line = (
            f"Summary: in use, {summary.shown_tokens:,} / {memory.summary_tokens:,} tokens"
        )
    return "\n".join(
        [
            f"Model: {info.name} — {info.params_text} parameters, "
            f"{info.quantization or 'unknown'} quantization ({info.description})",
            *([runs_line(info)] if info.runs_on else []),
            f"Context: {used.tokens:,} / {info.n_ctx:,} tokens{images_part(used)} "
            f"(up to {sampling.max_tokens:,} more for the reply)",
            f"Persona: {current.persona.name} — {current.persona.description}",
            f"Temperature: {sampling.temperature:g} · top_p {sampling.top_p:g} · top_k "
            f"{sampling.top_k} · min_p {sampling.min_p:g} · repeat penalty "
            f"{sampling.repeat_penalty:g}",
            f"Seed: {seed if seed is not None else 'random (fresh each reply)'}",
            f"Cache: {ctx.model.cache_state(message.channel_key)}; last reply reused "
            f"{ctx.reused_tokens(message.channel_key):,} prompt tokens",
            summary_line,
            f"Notes: {notes} of yours apply here" if on else "Notes: off here",
            slots_line(ctx.status()),
            last_reply_line(ctx.last_usage(message.channel_key)),
        ]
    )


def images_part(used: ContextUse) -> str:
    """The pictures' share of the context, when it holds any."""
    if not used.images:
        return ""
    pictures = "1 image" if used.images == 1 else f"{used.images} images"
    return f", of which {pictures}: {used.image_tokens:,} tokens"


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
