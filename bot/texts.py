"""Every sentence a chat user can see, in one place (short, plain, no pings)."""

from __future__ import annotations

BUSY = "I'm busy with other messages right now; please try again in a minute."
RATE_LIMITED = "You're sending messages faster than I can answer; please wait a minute."
EMPTY_MESSAGE = "Hi! Ask me anything, or send !help for commands."
EMPTY_REPLY = "(The model produced no text. Try rephrasing, or !reset to start fresh.)"
GENERATION_FAILED = "Sorry, something went wrong while answering. Please try again."
TOO_LONG = (
    "Your message is too long for my context ({tokens:,} tokens; at most {limit:,} fit). "
    "Please shorten it."
)
TOO_LONG_TO_READ = (
    "Your message is too long for my context ({chars:,} characters; I read at most {limit:,}). "
    "Please shorten it."
)
MISSED_WHILE_DOWN = "Sorry, I was offline when this arrived and it is too old to answer now."
TRY_AGAIN = "hearthbot is restarting; please try that again in a minute."
SHUTTING_DOWN = "(Stopped: hearthbot is shutting down. I'll answer when I'm back.)"
# Shown once per answer while its saving is retried (e.g. the disk is full); the answer follows.
DELAYED = "(Delayed: I can't save to my memory right now. I'll answer as soon as I can.)"
CANCELLED = "(stopped)"
NOT_ADMIN = "Only an admin can use !{name} here."
RESET_DONE = "Cleared this channel's history ({count} messages)."
FORGET_DONE = "Deleted {count} messages from {who} everywhere."
UNKNOWN_PERSONA = "There is no persona called {name!r}. Available: {names}."
PERSONA_SET = "Persona is now {name}: {description}"
TEMPERATURE_SET = "Temperature is now {value:g} in this channel."
TEMPERATURE_SHOW = "Temperature here is {value:g} (0 = predictable, 1 = as trained, 2 = wild)."
SEED_FIXED = "Seed is now {value}: the same history gives the same reply."
SEED_RANDOM = "Seed is random: each reply draws a fresh one."
SEED_SHOW_FIXED = "Seed here is fixed at {value}."
SEED_SHOW_RANDOM = "Seed here is random (each reply draws a fresh one)."
TRIGGER_SHOW = "Here I answer {what} (change with !trigger mention|all|name|off)."
TRIGGER_SET = "From now on I answer {what} in this channel."
TRIGGER_DIRECT = "In a direct chat I answer every message."
TRIGGER_WHAT = {
    "mention": "when mentioned or replied to",
    "all": "every message",
    "name": "when my name or a keyword is said",
    "off": "commands only",
}
# Said by one platform's adapter: a slash command where the bot is not for the user, or
# while the daemon takes none; a Matrix message the bot's device has no key for.
COMMAND_NOT_ALLOWED = "You can't use hearthbot here."
COMMANDS_PAUSED = "hearthbot isn't taking commands right now; please try again in a minute."
UNDECRYPTABLE = (
    "🔒 I couldn't read your message: it was encrypted with a key my device doesn't have. "
    "I've asked your devices for it; if I don't answer, please send it again."
)

NOTE_STOPPED = "stopped on request"
NOTE_MAX_TOKENS = "reply cut at {max_tokens} tokens"
NOTE_TRIMMED = "only the last {kept} messages fit in my context"


def quote(
    author: str,
    replied_to: str,
    text: str,
    limit: int = 1000,
    earlier: list[tuple[str, str]] | None = None,
) -> str:
    """What the model reads of a reply whose quoted message is not in the prompt otherwise:
    that message above the reply, marked as quoted; above it, oldest first, the `earlier`
    messages of its reply chain ((author, text), nearest first)."""
    if len(replied_to) > limit:
        replied_to = replied_to[:limit] + "…"
    quoted = "\n".join(f"> {line}" for line in replied_to.splitlines())
    who = f" {author}" if author else ""
    above = "".join(
        f"(earlier in the reply chain, {name or 'someone'}:)\n"
        + "\n".join(f"> {line}" for line in said.splitlines())
        + "\n\n"
        for name, said in reversed(earlier or [])
    )
    return f"{above}(replying to{who}:)\n{quoted}\n\n{text}"


def footnote(notes: list[str]) -> str:
    """What the model could not see or say, as llmcord does: brief and after the answer."""
    return f"\n\n⚠️ ({'; '.join(notes)})" if notes else ""
