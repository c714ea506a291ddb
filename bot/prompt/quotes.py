"""Reply quotes, resolved when a prompt is built.

A stored reply keeps only a reference to what it quotes (bot.store.StoredQuote): the quoted
row when the bot stored that message, else the platform's id of it, which the adapter reads
back (bot.events.QuoteSource) from its bounded cache or the platform. Nothing is copied into
the replier's row, so a message deleted, redacted or forgotten is gone from every later prompt:
its row takes the reference with it, and the adapters drop their cached copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Mapping

import structlog

from bot.events import Adapter, Quoted, QuoteSource, split_key
from bot.store import StoredQuote

log = structlog.get_logger(__name__)

# A quote read from the platform while a prompt is built must not hold up the answer for long.
FETCH_TIMEOUT_S = 5.0


def shown_quote(
    quote: StoredQuote | None, visible_rows: Container[int], fetched: Quoted | None
) -> tuple[str, str] | None:
    """(author name, text) of the quote to show with a reply, or None. A quoted row the
    prompt already holds is not repeated; a stored row that is gone is not looked for on the
    platform (it may be a message someone had the bot forget)."""
    if quote is None:
        return None
    if quote.row is not None:
        if quote.row in visible_rows or quote.text is None:
            return None
        return quote.author_name or "", quote.text
    if fetched is None or not fetched.text:
        return None
    return fetched.author_name, fetched.text


async def fetch_quote(
    adapters: Mapping[str, Adapter], channel: str, message_id: str
) -> Quoted | None:
    """The replied-to message `message_id` in `channel` (a channel key), from the adapter of
    its platform if that adapter can read one; None otherwise, or when it takes too long."""
    platform, channel_id = split_key(channel)
    adapter = adapters.get(platform)
    if not isinstance(adapter, QuoteSource):
        return None
    try:
        return await asyncio.wait_for(adapter.fetch_quote(channel_id, message_id), FETCH_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a quote is a courtesy: never worth failing an answer
        log.info("could not read a quoted message", platform=platform, error=type(exc).__name__)
        return None


def forget_author(adapters: Mapping[str, Adapter], user: str) -> None:
    """`!forget`: the adapter of the user's platform drops what it keeps of their messages."""
    platform, author_id = split_key(user)
    adapter = adapters.get(platform)
    if isinstance(adapter, QuoteSource):
        adapter.forget_author(author_id)
