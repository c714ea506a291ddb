"""Matrix decisions as pure functions: who may talk, is this room a DM, is a message addressed
to the bot, which conversation (room or thread) it belongs to. No I/O, no nio: table-tested."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from adapters.matrix.format import BOT_MARKER
from bot import texts

# A thread is its own conversation: channel_id = room + this separator + the thread root.
# Neither room ids nor event ids use it.
THREAD_SEPARATOR = "|"


def matches(identifier: str, patterns: Iterable[str]) -> bool:
    """Whether an MXID or room id matches one of the globs (`*`, `?`, `[...]`). Case matters:
    Matrix ids are case-sensitive, and a case-folding match could widen access."""
    return any(fnmatchcase(identifier, pattern) for pattern in patterns)


def room_allowed(room_id: str, allowed_rooms: list[str]) -> bool:
    """An empty list allows every room the bot was let into."""
    return not allowed_rooms or matches(room_id, allowed_rooms)


def is_direct(marked_members: int | None, member_count: int) -> bool:
    """A DM is a room with just the user and the bot, or one the inviter marked direct while
    it has no more members than when the bot first looked (`marked_members`; None: not
    marked). A direct chat someone invites more people to is a group room from then on,
    where the bot answers only when spoken to."""
    if member_count == 2:
        return True
    return marked_members is not None and member_count <= marked_members


def channel_id(room_id: str, thread_root: str | None) -> str:
    return f"{room_id}{THREAD_SEPARATOR}{thread_root}" if thread_root else room_id


def split_channel(channel: str) -> tuple[str, str | None]:
    room_id, _, root = channel.partition(THREAD_SEPARATOR)
    return room_id, root or None


def _relation(content: Mapping[str, Any]) -> Mapping[str, Any]:
    relation = content.get("m.relates_to")
    return relation if isinstance(relation, Mapping) else {}


def thread_root(content: Mapping[str, Any]) -> str | None:
    relation = _relation(content)
    if relation.get("rel_type") == "m.thread" and isinstance(relation.get("event_id"), str):
        return str(relation["event_id"])
    return None


def edited_event(content: Mapping[str, Any]) -> str | None:
    """The event an `m.replace` edit replaces, or None for a normal message."""
    relation = _relation(content)
    if relation.get("rel_type") == "m.replace" and isinstance(relation.get("event_id"), str):
        return str(relation["event_id"])
    return None


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """The event a Matrix message replies to."""

    event_id: str
    # In a thread, clients point m.in_reply_to at the thread's latest event for old clients'
    # sake ("falling back"): not a reply the user chose, but still the conversation's flow.
    falling_back: bool


def reply_target(content: Mapping[str, Any]) -> ReplyTarget | None:
    relation = _relation(content)
    in_reply_to = relation.get("m.in_reply_to")
    if not isinstance(in_reply_to, Mapping) or not isinstance(in_reply_to.get("event_id"), str):
        return None
    return ReplyTarget(str(in_reply_to["event_id"]), bool(relation.get("is_falling_back")))


def strip_reply_fallback(body: str) -> str:
    """Remove the quoted "> <@user> text" block that older clients put before a reply."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i < len(lines) and lines[i] == "":
        i += 1
    return "\n".join(lines[i:])


def localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id


def _name_pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    # "@" is optional in front of every name (and so not part of any): "@hearthbot:x.org" and
    # "hearthbot:x.org" both name the bot.
    stripped = {n.strip().removeprefix("@") for n in names}
    alternatives = sorted((n for n in stripped if n), key=len, reverse=True)
    if not alternatives:
        return None
    joined = "|".join(re.escape(n) for n in alternatives)
    # A whole word: "hearthbot" must not match inside "hearthbotany".
    return re.compile(rf"(?<![\w@])@?(?:{joined})(?![\w])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Addressing:
    """Whether a Matrix message mentions the bot, and its text without that mention."""

    mentioned: bool
    text: str  # the message with a leading mention of the bot removed


def addressing(
    content: Mapping[str, Any], text: str, bot_id: str, bot_names: Iterable[str]
) -> Addressing:
    """Is the bot mentioned? A client that sends `m.mentions` says exactly whom it mentions
    (intentional mentions); only without it do we look for the bot's MXID, display name or
    localpart in the body, as older clients only put the name there."""
    names = [bot_id, localpart(bot_id), *bot_names]
    pattern = _name_pattern(names)
    mentions = content.get("m.mentions")
    if isinstance(mentions, Mapping):
        user_ids = mentions.get("user_ids")
        mentioned = isinstance(user_ids, list) and bot_id in user_ids
    else:
        mentioned = pattern is not None and pattern.search(text) is not None
    return Addressing(mentioned, strip_leading_mention(text, pattern) if mentioned else text)


def strip_leading_mention(text: str, pattern: re.Pattern[str] | None) -> str:
    """ "Hearthbot: what is 2+2?" → "what is 2+2?"; a mention inside a sentence stays."""
    if pattern is None:
        return text
    found = pattern.match(text.lstrip())
    if found is None:
        return text
    rest = text.lstrip()[found.end() :]
    return re.sub(r"^[\s:,]+", "", rest) if rest.strip() else ""


def picture(content: Mapping[str, Any]) -> tuple[str, str] | None:
    """An `m.image` message's file name and caption ("" when none: the body is the file
    name), or None for any other kind of message."""
    if content.get("msgtype") != "m.image":
        return None
    body = content.get("body")
    body = body if isinstance(body, str) else ""
    filename = content.get("filename")
    if isinstance(filename, str) and filename and filename != body:
        return filename, body  # a caption (Matrix 1.10): the body is the text
    return body or "image", ""


def picture_text(name: str, caption: str) -> str:
    """What the model reads of a picture: its caption, then its name (beside the picture
    itself while the model sees it and the picture is among the newest)."""
    named = texts.IMAGE_PLACEHOLDER.format(name=name)
    return f"{caption}\n{named}" if caption else named


def sent_by_a_bot(content: Mapping[str, Any]) -> bool:
    """A hearthbot's own message (any instance): never answered, so bots cannot loop."""
    return bool(content.get(BOT_MARKER))


def should_answer(direct: bool, mentioned: bool, replies_to_bot: bool) -> bool:
    """A DM is answered always; a group room only when the bot is spoken to."""
    return direct or mentioned or replies_to_bot


def redaction_applies(redactor: str, author: str | None, redactor_moderates: bool) -> bool:
    """Whether a redaction deletes the bot's copy: the author's own (allowed or not: their
    words), or a room moderator's (the room removed it). Anyone else's, or one of a message
    the bot cannot place (`author` None), is nothing to do: the server does not apply it
    either, and no participant acts for another."""
    return redactor_moderates or (author is not None and redactor == author)


def within_window(origin_server_ts_ms: int, now_s: float, window_s: float) -> bool:
    """Whether a message is young enough to answer (it may have arrived while we were down)."""
    return now_s - origin_server_ts_ms / 1000 <= window_s


def config_warnings(allowed_users: list[str], homeserver: str | None) -> list[str]:
    """What `hearthbot check` points out about the Matrix access lists (nothing when Matrix is
    not configured)."""
    if not homeserver:
        return []
    if not allowed_users:
        return ["[matrix] allowed_users is empty: the bot joins no room and answers nobody"]
    if any(matches("@anyone:any.server", [pattern]) for pattern in allowed_users):
        return ["[matrix] allowed_users lets in everyone on every homeserver"]
    return []
