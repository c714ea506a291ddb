"""!reset and !forget: delete what the bot remembers, a channel's or a person's.

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
    forget_author(ctx.live.adapters, who)  # the adapter's cached copies of their messages
    for key in spoke_in:  # only these channels' cached KV can hold their words
        await ctx.model.forget(key)
    return texts.FORGET_DONE.format(count=count, who="you" if who == message.user_key else who)


HANDLERS: dict[str, Handler] = {"reset": reset, "forget": forget}
