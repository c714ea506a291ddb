"""!reset and !forget: delete what the bot remembers, a channel's or a person's; !remember and
!notes: the notes a person asks it to keep (bot.notes); !summary: what it keeps of what left
the channel's context (bot.summaries).

!reset stops the answer being generated in its channel first (it was written from what is
being deleted), waits for it to end (shown and stored as stopped) and then deletes it with the
rest of the history. !forget deletes the person's messages first, so an answer to one of them
ends without being stored, then stops the answers to them, and drops cached KV state where
they spoke once the answers using it have ended. An answer to someone else goes on: one
person's !forget never cuts another's answer (its text is the model's, and the KV state it
was written from is dropped when it ends).
"""

from __future__ import annotations

from bot import texts
from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command
from bot.events import Incoming
from bot.notes import notes_scope
from bot.prompt.quotes import forget_author


async def reset(ctx: CommandContext, command: Command, message: Incoming) -> str:
    channel = message.channel_key
    await ctx.stop_answers(lambda answered: answered.channel_key == channel)
    count = await ctx.store.reset_channel(channel)
    await ctx.model.forget(channel)
    return texts.RESET_DONE.format(count=count)


async def forget(ctx: CommandContext, command: Command, message: Incoming) -> str:
    if command.arg is None:
        who = message.user_key
    elif not ctx.live.is_admin(message):
        return texts.NOT_ADMIN.format(name="forget <user>")
    else:
        target = str(command.arg)
        qualified = target.split(":", 1)[0] in ctx.live.adapters
        who = target if qualified else f"{message.platform}:{target}"
    ctx.forget_queued(who)
    spoke_in = await ctx.store.channels_of(who)
    count = await ctx.store.forget_user(who)
    await ctx.stop_answers(lambda answered: answered.user_key == who)
    before = await ctx.store.forgotten_before(who)  # set by forget_user (bot.forgotten)
    if before is not None:  # the adapter's cached copies of their messages, also later ones
        forget_author(ctx.live.adapters, who, before)
    for key in spoke_in:  # only these channels' cached KV can hold their words
        await ctx.model.forget(key)
    return texts.FORGET_DONE.format(count=count, who="you" if who == message.user_key else who)


async def notes_on(ctx: CommandContext, message: Incoming) -> bool:
    """Whether notes are kept and used where `message` was sent."""
    if ctx.live.settings.memory.notes_per_person == 0:
        return False
    return (await ctx.resolved(message)).persona.memory


async def remember(ctx: CommandContext, command: Command, message: Incoming) -> str:
    if not await notes_on(ctx, message):
        return texts.NOTES_OFF
    text, memory = str(command.arg), ctx.live.settings.memory
    if len(text) > memory.note_max_chars:
        return texts.NOTE_TOO_LONG.format(chars=len(text), limit=memory.note_max_chars)
    most = memory.notes_per_person
    count = await ctx.store.add_note(message.user_key, notes_scope(message), text, most)
    if count is None:
        return texts.NOTES_FULL.format(most=most)
    return texts.NOTE_KEPT.format(count=count, most=most)


async def notes(ctx: CommandContext, command: Command, message: Incoming) -> str:
    who, scope = message.user_key, notes_scope(message)
    if command.arg == "clear":
        spoke_in = await ctx.store.channels_of(who)
        count = await ctx.store.clear_notes(who, scope)
        for key in spoke_in:  # the notes were in their latest turns there
            await ctx.model.forget(key)
        return texts.NOTES_CLEARED.format(count=count)
    kept = await ctx.store.notes(who, scope)
    if not kept:
        return texts.NO_NOTES if await notes_on(ctx, message) else texts.NOTES_OFF
    return texts.notes_list([note.text for note in kept])


async def summary(ctx: CommandContext, command: Command, message: Incoming) -> str:
    current = await ctx.resolved(message)
    if not current.persona.memory or ctx.live.settings.memory.summary_tokens == 0:
        return texts.SUMMARY_OFF
    found = await ctx.store.summary(message.channel_key)
    if found is None or not found.text:
        return texts.NO_SUMMARY
    return texts.show_summary(found.text, found.tokens)


HANDLERS: dict[str, Handler] = {
    "reset": reset,
    "summary": summary,
    "forget": forget,
    "remember": remember,
    "notes": notes,
}
