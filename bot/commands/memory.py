"""!reset and !forget: delete what the bot remembers, a channel's or a person's."""

from __future__ import annotations

from bot import texts
from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command
from bot.events import Incoming
from bot.prompt.quotes import forget_author


async def reset(ctx: CommandContext, command: Command, message: Incoming) -> str:
    count = await ctx.store.reset_channel(message.channel_key)
    await ctx.model.forget(message.channel_key)
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
    forget_author(ctx.live.adapters, who)  # the adapter's cached copies of their messages
    for channel in spoke_in:  # only these channels' cached KV can hold their words
        await ctx.model.forget(channel)
    return texts.FORGET_DONE.format(count=count, who="you" if who == message.user_key else who)


HANDLERS: dict[str, Handler] = {"reset": reset, "forget": forget}
