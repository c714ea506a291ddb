"""Reply quotes, resolved when a prompt is built.

A stored reply keeps only a reference to what it quotes (bot.store.StoredQuote): the quoted
row when the bot stored that message, else the platform's id of it, which the adapter reads
back (bot.events.QuoteSource) from its bounded cache or the platform. Nothing is copied into
the replier's row, so a message deleted, redacted or forgotten is gone from every later prompt:
its row takes the reference with it, and the adapters drop their cached copy. Above the quoted
message, the reply chain it is part of is followed the same way (`chain_above`), each step
read anew, up to `[bot] reply_chain_tokens`. What is read from the platform and was written by
someone before they had the bot forget them is gone too (bot.forgotten).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from bot.events import Adapter, Quoted, QuoteSource, split_key
from bot.forgotten import ForgottenStore
from bot.history import StoredMessage, StoredQuote
from bot.store import Store

log = structlog.get_logger(__name__)

# A quote read from the platform while a prompt is built must not hold up the answer for long.
FETCH_TIMEOUT_S = 5.0
# Messages above a quoted one followed at most, however short: each may be a platform read.
MAX_CHAIN = 8
# What of a quoted message is shown (and counted), at most.
QUOTE_CHARS = 1000

# (channel key, platform message id) → the quoted message as its platform has it now.
FetchQuote = Callable[[str, str], Awaitable[Quoted | None]]


@dataclass(frozen=True, slots=True)
class Link:
    """One message of a reply chain above a quote: stored (its row) or read from its platform."""

    row: int | None
    author_name: str
    text: str


async def chain_above(
    store: Store,
    fetch: FetchQuote | None,
    channel: str,
    parent: tuple[int | None, str | None],
    count: Callable[[str], int],
    budget: int,
) -> list[Link]:
    """The chain above a quoted message, nearest first, starting at `parent` (its row, else
    its platform id): stored messages from the store (an answer goes on to its question),
    others from the platform, until one is gone, MAX_CHAIN, or `budget` tokens are spent. A
    stored message that is gone is never looked for on the platform (it may be forgotten)."""
    links: list[Link] = []
    row, platform_id = parent
    seen: set[tuple[int | None, str | None]] = set()
    while (row is not None or platform_id) and len(links) < MAX_CHAIN:
        if (row, platform_id) in seen:
            break
        seen.add((row, platform_id))
        stored = await store.chain_link(channel, row, platform_id)
        if stored is not None:
            link = Link(stored.row, stored.author_name, stored.text[:QUOTE_CHARS])
            above = stored.quote
            row, platform_id = (above.row, above.platform_message_id) if above else (None, None)
        elif row is None and platform_id and fetch is not None:
            fetched = await fetch(channel, platform_id)
            if fetched is None or not fetched.text:
                break
            link = Link(None, fetched.author_name, fetched.text[:QUOTE_CHARS])
            row, platform_id = None, fetched.reply_to_id
        else:
            break
        budget -= count(link.text)
        if budget < 0:
            break
        links.append(link)
    return links


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
    adapters: Mapping[str, Adapter], forgotten: ForgottenStore, channel: str, message_id: str
) -> Quoted | None:
    """The replied-to message `message_id` in `channel` (a channel key), from the adapter of
    its platform if that adapter can read one; None otherwise, when it takes too long, or when
    its author had the bot forget them after writing it (then the adapter, which may not know
    since a restart, is told to keep nothing of theirs from before)."""
    platform, channel_id = split_key(channel)
    adapter = adapters.get(platform)
    if not isinstance(adapter, QuoteSource):
        return None
    try:
        fetched = await asyncio.wait_for(
            adapter.fetch_quote(channel_id, message_id), FETCH_TIMEOUT_S
        )
        if fetched is None:
            return None
        before = await forgotten.is_forgotten(platform, fetched)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a quote is a courtesy: never worth failing an answer
        log.info("could not read a quoted message", platform=platform, error=type(exc).__name__)
        return None
    if before is not None:
        adapter.forget_author(fetched.author_id, before)
        return None
    return fetched


def forget_author(adapters: Mapping[str, Adapter], user: str, before: float) -> None:
    """`!forget`: the adapter of the user's platform drops what it keeps of their messages
    written before `before`."""
    platform, author_id = split_key(user)
    adapter = adapters.get(platform)
    if isinstance(adapter, QuoteSource):
        adapter.forget_author(author_id, before)


@dataclass(frozen=True, slots=True)
class Replies:
    """What the replies of a history quote, read when the prompt is built: row → the quoted
    message from its platform (when the bot did not store it), and row → the reply chain
    above the quoted message, nearest first."""

    fetched: dict[int, Quoted] = field(default_factory=dict)
    earlier: dict[int, list[Link]] = field(default_factory=dict)


async def read_replies(
    store: Store,
    fetch_quote: FetchQuote | None,
    channel: str,
    history: Sequence[StoredMessage],
    budget: int,
    count: Callable[[str], int],
) -> Replies:
    """What the history's replies quote: messages the bot did not store read from their
    platform now, so one deleted or redacted there is gone from the prompt; and the reply
    chains above (`chain_above`), up to `budget` tokens each."""
    wanted = {
        m.row: m.quote.platform_message_id
        for m in history
        if m.quote is not None and m.quote.row is None and m.quote.platform_message_id
    }
    fetched: dict[int, Quoted] = {}
    if wanted and fetch_quote is not None:
        found = await asyncio.gather(*(fetch_quote(channel, i) for i in wanted.values()))
        fetched = {row: q for row, q in zip(wanted, found, strict=True) if q is not None}
    replies = Replies(fetched)
    for m in history if budget > 0 else ():
        parent = await _parent_of_quote(store, channel, m, fetched)
        if parent is not None:
            replies.earlier[m.row] = await chain_above(
                store, fetch_quote, channel, parent, count, budget
            )
    return replies


async def _parent_of_quote(
    store: Store, channel: str, message: StoredMessage, fetched: dict[int, Quoted]
) -> tuple[int | None, str | None] | None:
    """What the message a reply quotes replies to in turn, if anything."""
    quote = message.quote
    if quote is None:
        return None
    if quote.row is not None:
        quoted = await store.chain_link(channel, quote.row, None)
        above = quoted.quote if quoted is not None else None
        return (above.row, above.platform_message_id) if above is not None else None
    on_platform = fetched.get(message.row)
    if on_platform is None or on_platform.reply_to_id is None:
        return None
    return None, on_platform.reply_to_id
