"""Matrix message content: Markdown rendered to HTML (`formatted_body`) with the plain text in
`body`, reply and thread relations, `m.replace` edits. `m.mentions` is always empty, so an
answer never pings anyone (no @room, no user pills), whatever the model writes. The HTML
shows no image (a client would load it, an `mxc://` one from the homeserver) and no link
whose text hides where it goes: its target is shown.

Every event stays within Matrix's 64 KiB, encrypted too: a text is split into parts that fit
even as an edit (the text twice), and its HTML is left out when it would not fit. Rendering
takes bounded time: a table that would be mostly padding is not rendered as a table."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from adapters.common.split import split_message

HTML_FORMAT = "org.matrix.custom.html"
# Marks every message hearthbot sends, so that another hearthbot in the same room ignores it:
# two bots can never answer each other in a loop, even in a room where both answer everything.
BOT_MARKER = "org.hearthbot.bot"
# An event may be 64 KiB. Encrypted, the content is JSON with non-ASCII escaped (up to 12
# bytes a character), then base64 (4/3), in an envelope of ~2 KB: content as nio sends it
# stays under (65,536 - 2,048) * 3/4, with room to spare.
CONTENT_MAX_BYTES = 45_000
# markdown-it pads every row of a table to the header's columns: a wide header over many short
# rows renders a few characters into hundreds of kilobytes, slowly. Past this many cells a
# table stays text.
MAX_TABLE_CELLS = 1000
# The shortest part a text is split into to fit an event (split_message's minimum).
_MIN_PART = 40
_EDIT_ID = "$" + "x" * 43  # an event id as long as a real one, for measuring an edit

# Raw HTML in the model's output is shown as text, never passed through; single newlines are
# line breaks, as people (and models) mean them in chat.
_OPTIONS = {"html": False, "breaks": True}
_markdown = MarkdownIt("commonmark", _OPTIONS).enable(["table", "strikethrough"])
_markdown_without_tables = MarkdownIt("commonmark", _OPTIONS).enable(["strikethrough"])


def table_cells_at_most(text: str) -> int:
    """At most how many cells the tables in `text` render to: for each delimiter row
    (`|---|:-:|`), its columns times the lines up to the next blank line. Linear in `text`."""
    lines = text.split("\n")
    cells, run = 0, 0  # run: the lines from here to the next blank line
    for line in reversed(lines):
        run = run + 1 if line.strip() else 0
        if "|" in line and "-" in line and not line.strip(" \t|:-"):
            cells += (line.strip().strip("|").count("|") + 1) * run
    return cells


def _image(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image is its alt text, never an <img>."""
    return escapeHtml(renderer.renderInlineAsText(tokens[idx].children or [], options, env))


def _link_close_at(tokens: Sequence[Token], idx: int) -> int:
    depth = 0
    for at in range(idx, len(tokens)):
        depth += {"link_open": 1, "link_close": -1}.get(tokens[at].type, 0)
        if depth == 0:
            return at
    return len(tokens) - 1


def _link_open(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """A link whose text is its target stays a link; any other link text is shown as plain
    text followed by the target (the link), so "https://bank…" cannot lead elsewhere."""
    token = tokens[idx]
    href = str(token.attrs.get("href", ""))
    close = _link_close_at(tokens, idx)
    label = renderer.renderInlineAsText(list(tokens[idx + 1 : close]), options, env)
    shown = _markdown.normalizeLinkText(href)
    if token.info == "auto" or label in (href, shown):
        return renderer.renderToken(tokens, idx, options, env)
    tokens[close].meta["target"] = f' (<a href="{escapeHtml(href)}">{escapeHtml(shown)}</a>)'
    return ""


def _link_close(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    target = tokens[idx].meta.get("target")
    return str(target) if target is not None else renderer.renderToken(tokens, idx, options, env)


_markdown.add_render_rule("image", _image)
_markdown.add_render_rule("link_open", _link_open)
_markdown.add_render_rule("link_close", _link_close)


def render_html(text: str) -> str:
    wide = table_cells_at_most(text) > MAX_TABLE_CELLS
    html = (_markdown_without_tables if wide else _markdown).render(text).strip()
    # A single paragraph needs no <p>: clients then show it like any typed line.
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        html = html[3:-4]
    return html


def event_bytes(content: dict[str, Any]) -> int:
    """The content's size as nio sends it, and encrypts it: compact JSON, non-ASCII escaped."""
    return len(json.dumps(content, separators=(",", ":")))


def event_parts(text: str, max_chars: int) -> list[str]:
    """`text` split into parts of at most `max_chars` characters that each fit one event even
    as an edit of plain text (its body twice): 4,000 emoji are 48 KB as escaped JSON."""
    parts: list[str] = []
    for part in split_message(text, max_chars):
        fits = event_bytes(_edit(_EDIT_ID, part, "m.text", None)) <= CONTENT_MAX_BYTES
        if fits or max_chars // 2 < _MIN_PART:
            parts.append(part)
        else:
            parts.extend(event_parts(part, max_chars // 2))
    return parts


def _with_html(build: Callable[[str | None], dict[str, Any]], text: str) -> dict[str, Any]:
    """The content with the text's HTML when that fits in one event, else plain text only."""
    html = render_html(text)
    if len(html) < CONTENT_MAX_BYTES:
        content = build(html)
        if event_bytes(content) <= CONTENT_MAX_BYTES:
            return content
    return build(None)


def _body(text: str, msgtype: str, html: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"msgtype": msgtype, "body": text}
    if html is not None:
        body |= {"format": HTML_FORMAT, "formatted_body": html}
    return body | {"m.mentions": {}, BOT_MARKER: True}


def message_content(
    text: str,
    *,
    reply_to: str | None = None,
    thread_root: str | None = None,
    msgtype: str = "m.text",
) -> dict[str, Any]:
    """A new message, replying to `reply_to` (in the thread `thread_root`, if any)."""
    relation: dict[str, Any] = {}
    if thread_root:
        relation = {"rel_type": "m.thread", "event_id": thread_root}
        if reply_to:
            relation["is_falling_back"] = False
    if reply_to:
        relation["m.in_reply_to"] = {"event_id": reply_to}

    def build(html: str | None) -> dict[str, Any]:
        content = _body(text, msgtype, html)
        return content | {"m.relates_to": relation} if relation else content

    return _with_html(build, text)


def edit_content(original: str, text: str, msgtype: str = "m.text") -> dict[str, Any]:
    """Replace the text of our message `original`. The outer body is what clients without
    edit support show; it carries no HTML, so the event stays well under the size limit."""
    return _with_html(lambda html: _edit(original, text, msgtype, html), text)


def _edit(original: str, text: str, msgtype: str, html: str | None) -> dict[str, Any]:
    return {
        "msgtype": msgtype,
        "body": f"* {text}",
        "m.new_content": _body(text, msgtype, html),
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        "m.mentions": {},
        BOT_MARKER: True,
    }
