"""Discord text in and out, as pure functions: mentions, attachments, slash-command text.

Discord writes mentions as `<@123>`; the model should read names, and must never see its own
mention (it is how people address it, not part of the question).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot import texts
from bot.commands.parse import PREFIX

LIMIT = 2000  # Discord's message length limit (characters)

REFUSED_EMOJI = "⏳"

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_EMOJI = re.compile(r"<a?:(\w+):\d+>")
# A mention at the very start, with the punctuation people put after a name ("@bot, hi").
_LEADING = r"^\s*{mention}\s*[,:;]?\s*"
_INNER = r"[ \t]*{mention}"


def _strip(text: str, mention: str, inner: bool = True) -> str:
    text = re.sub(_LEADING.format(mention=mention), "", text)
    if inner:
        text = re.sub(_INNER.format(mention=mention), "", text)
    return text


def plain_text(
    content: str,
    bot_id: int,
    users: Mapping[int, str],
    roles: Mapping[int, str] | None = None,
    channels: Mapping[int, str] | None = None,
    bot_role_id: int | None = None,
) -> str:
    """The bot's own mention (and its managed role, which people pick by accident) removed;
    other mentions turned into names; custom emoji into :name:. In a command (`!name …`
    after the bot's mention) a user mention becomes the user's ID instead: a command names
    people by ID, as slash commands do, since anyone can change a display name."""
    roles, channels = roles or {}, channels or {}
    me, my_role = rf"<@!?{bot_id}>", rf"<@&{bot_role_id}>" if bot_role_id is not None else None
    addressed = _strip(content, me, inner=False)
    if my_role is not None:
        addressed = _strip(addressed, my_role, inner=False)
    command = addressed.lstrip().startswith(PREFIX)
    if command:  # only the mention that addresses the bot goes; `!forget <@bot>` names it
        text = addressed
    else:
        text = _strip(content, me)
        if my_role is not None:
            text = _strip(text, my_role)
    text = _USER.sub(
        lambda m: m.group(1) if command else "@" + users.get(int(m.group(1)), "unknown-user"),
        text,
    )
    text = _ROLE.sub(lambda m: "@" + roles.get(int(m.group(1)), "unknown-role"), text)
    text = _CHANNEL.sub(lambda m: "#" + channels.get(int(m.group(1)), "unknown-channel"), text)
    text = _EMOJI.sub(r":\1:", text)
    return text.strip()


_FOOTNOTE = re.compile(r"\n\n⚠️ \([^\n]*\)$")


def without_footnote(text: str) -> str:
    """The bot's own message as the core stored it: the note after an answer (stopped, cut
    at max_tokens, history trimmed; bot.texts.footnote) is for readers, not for history."""
    return _FOOTNOTE.sub("", text)


# fmt: off
TEXT_EXTENSIONS = frozenset({
    "txt", "md", "markdown", "rst", "log", "csv", "tsv", "json", "jsonl", "yaml", "yml", "toml",
    "ini", "cfg", "conf", "xml", "html", "htm", "css", "js", "ts", "jsx", "tsx", "py", "rb", "go",
    "rs", "java", "kt", "c", "h", "cc", "cpp", "hpp", "cs", "php", "sh", "bash", "zsh", "ps1",
    "sql", "lua", "r", "swift", "diff", "patch", "tex",
})
# fmt: on
_TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/toml")


def is_text_attachment(filename: str, content_type: str | None) -> bool:
    """Discord turns long pastes into `message.txt` (text/plain); code files count too."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith("text/") or kind in _TEXT_TYPES:
        return True
    return "." in filename and filename.rsplit(".", 1)[1].lower() in TEXT_EXTENSIONS


# Pictures a chat client shows inline, as the image intake (bot.images) reads them.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp", "gif"})


def is_image_attachment(filename: str, content_type: str | None) -> bool:
    """A picture: by its content type, or by its extension when Discord gave none."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind:
        return kind in IMAGE_TYPES
    return "." in filename and filename.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KB"


def attachment_named(filename: str, content_type: str | None, size: int) -> str:
    """An attachment not read as text: a picture as the core names pictures on every platform
    (bot.texts.IMAGE_PLACEHOLDER), anything else with its type and size."""
    if is_image_attachment(filename, content_type):
        return texts.IMAGE_PLACEHOLDER.format(name=filename)
    kind = (content_type or "unknown type").split(";")[0]
    return f"[attachment {filename}: {kind}, {_size(size)}, not read]"


def attachment_read(filename: str, body: str, cut_kb: int | None) -> str:
    """A text attachment as the model reads it; `cut_kb`: the per-message cap that cut it."""
    cut = f"\n[… cut: {cut_kb} KB of attachments read per message]" if cut_kb is not None else ""
    return f"[attachment {filename}]\n{body.rstrip()}{cut}"


def with_attachments(text: str, parts: list[str]) -> str:
    return "\n\n".join(part for part in [text, *parts] if part)


def decode_text(raw: bytes) -> str | None:
    """UTF-8 text, or None for something binary that only claimed to be text."""
    if b"\x00" in raw:
        return None
    return raw.decode("utf-8", errors="replace")


def command_text(name: str, arg: str | float | int | None = None) -> str:
    """A slash command as the core's `!` command, so both run the same code."""
    if arg is None or arg == "":
        return f"!{name}"
    if isinstance(arg, float):
        arg = f"{arg:g}"
    return f"!{name} {arg}"
