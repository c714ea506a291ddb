"""Matrix message content: Markdown rendered to HTML (`formatted_body`) with the plain text in
`body`, reply and thread relations, `m.replace` edits. `m.mentions` is always empty, so an
answer never pings anyone (no @room, no user pills), whatever the model writes. The HTML
shows no image (a client would load it, an `mxc://` one from the homeserver) and no link
whose text hides where it goes: its target is shown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

HTML_FORMAT = "org.matrix.custom.html"
# Marks every message hearthbot sends, so that another hearthbot in the same room ignores it:
# two bots can never answer each other in a loop, even in a room where both answer everything.
BOT_MARKER = "org.hearthbot.bot"

# Raw HTML in the model's output is shown as text, never passed through; single newlines are
# line breaks, as people (and models) mean them in chat.
_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
    ["table", "strikethrough"]
)


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
    html = _markdown.render(text).strip()
    # A single paragraph needs no <p>: clients then show it like any typed line.
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        html = html[3:-4]
    return html


def _body(text: str, msgtype: str) -> dict[str, Any]:
    return {
        "msgtype": msgtype,
        "body": text,
        "format": HTML_FORMAT,
        "formatted_body": render_html(text),
        "m.mentions": {},
        BOT_MARKER: True,
    }


def message_content(
    text: str,
    *,
    reply_to: str | None = None,
    thread_root: str | None = None,
    msgtype: str = "m.text",
) -> dict[str, Any]:
    """A new message, replying to `reply_to` (in the thread `thread_root`, if any)."""
    content = _body(text, msgtype)
    relation: dict[str, Any] = {}
    if thread_root:
        relation = {"rel_type": "m.thread", "event_id": thread_root}
        if reply_to:
            relation["is_falling_back"] = False
    if reply_to:
        relation["m.in_reply_to"] = {"event_id": reply_to}
    if relation:
        content["m.relates_to"] = relation
    return content


def edit_content(original: str, text: str, msgtype: str = "m.text") -> dict[str, Any]:
    """Replace the text of our message `original`. The outer body is what clients without
    edit support show; it carries no HTML, so the event stays well under the size limit."""
    return {
        "msgtype": msgtype,
        "body": f"* {text}",
        "m.new_content": _body(text, msgtype),
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        "m.mentions": {},
        BOT_MARKER: True,
    }
