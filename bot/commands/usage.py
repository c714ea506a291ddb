"""!usage: what replies cost here and in all, today and all time; and the last reply's
figures for !status. The wording of energy, money and CO₂ is plain functions (table-tested)."""

from __future__ import annotations

from bot import texts
from bot.commands.context import CommandContext, Handler
from bot.commands.parse import Command
from bot.events import Incoming
from bot.settings import FootprintSettings
from bot.usage import J_PER_KWH, ReplyUsage, Totals, local_day, usage_totals


def energy_text(joules: float) -> str:
    """Joules as Wh (kWh from 1,000 Wh), with as many digits as a small figure needs."""
    wh = joules / 3600
    if wh >= 1000:
        return f"{wh / 1000:,.2f} kWh"
    digits = 1 if wh >= 10 else 2 if wh >= 1 else 3 if wh >= 0.1 else 4
    return f"{wh:.{digits}f} Wh"


def energy_kind(joules: float, estimated_joules: float) -> str:
    """How a figure was found: all measured, all estimated, or some of each."""
    if estimated_joules <= 0:
        return "measured"
    return "estimated" if estimated_joules >= joules * 0.999 else "partly estimated"


def cost_and_co2(joules: float, footprint: FootprintSettings) -> list[str]:
    """What the energy cost and emitted, when the settings give a price and an intensity."""
    kwh = joules / J_PER_KWH
    parts = []
    if footprint.price_per_kwh is not None:
        currency = f" {footprint.currency}" if footprint.currency else ""
        parts.append(f"cost {kwh * footprint.price_per_kwh:.4f}{currency}")
    if footprint.grams_co2_per_kwh is not None:
        grams = kwh * footprint.grams_co2_per_kwh
        parts.append(f"{grams / 1000:.2f} kg CO₂" if grams >= 1000 else f"{grams:.1f} g CO₂")
    return parts


def totals_text(totals: Totals, footprint: FootprintSettings) -> str:
    """One line of totals: replies, tokens, energy (and what it cost)."""
    if not totals.replies:
        return texts.USAGE_NONE
    parts = [
        f"{totals.replies:,} repl{'y' if totals.replies == 1 else 'ies'}",
        texts.USAGE_TOKENS.format(
            generated=totals.generated_tokens,
            evaluated=totals.evaluated_tokens,
            reused=totals.reused_tokens,
        ),
    ]
    if totals.unmeasured == totals.replies:
        parts.append(texts.USAGE_UNMEASURED)
    else:
        kind = energy_kind(totals.joules, totals.estimated_joules)
        parts.append(f"{energy_text(totals.joules)} {kind}")
        parts += cost_and_co2(totals.joules, footprint)
    return ", ".join(parts)


def last_reply_line(usage: ReplyUsage | None) -> str:
    """!status: the channel's last reply's figures."""
    if usage is None:
        return texts.LAST_REPLY_NONE
    energy = (
        texts.USAGE_UNMEASURED
        if usage.joules is None
        else f"{energy_text(usage.joules)} {'estimated' if usage.estimated else 'measured'}"
    )
    return texts.LAST_REPLY.format(
        evaluated=usage.evaluated_tokens,
        reused=usage.reused_tokens,
        generated=usage.generated_tokens,
        model_s=usage.model_s,
        energy=energy,
    )


async def show_usage(ctx: CommandContext, command: Command, message: Incoming) -> str:
    footprint = ctx.live.settings.footprint
    today = local_day()
    lines = []
    for where, channel in (("Here", message.channel_key), ("Whole bot", None)):
        for when, day in (("today", today), ("all time", None)):
            totals = await usage_totals(ctx.store, channel, day)
            lines.append(f"{where}, {when}: {totals_text(totals, footprint)}")
    return "\n".join(lines)


HANDLERS: dict[str, Handler] = {"usage": show_usage}
