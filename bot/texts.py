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
NOTE_KEPT = "Noted. I'll keep it in mind when you talk to me here ({count} of {most} notes)."
NOTE_TOO_LONG = (
    "That note is too long ({chars:,} characters; at most {limit:,}). Please shorten it."
)
NOTES_FULL = "You have {most} notes here already. Clear them with !notes clear first."
NOTES_OFF = "Notes are off here: I neither keep nor use them."
NO_NOTES = "I keep no notes about you here. Add one with !remember <text>."
NOTES_CLEARED = "Deleted your {count} notes here."
NO_SUMMARY = "No summary here: nothing has left my context yet, or it is being rebuilt."
SUMMARY_OFF = "Summaries are off here."
# What the model is asked when it summarizes what left a channel's context window.
SUMMARIZE = (
    "You keep a short running summary of a chat conversation. Rewrite the summary so that it "
    "also covers the new messages: who said what, facts, decisions, open questions. Plain "
    "sentences, no preamble, at most {words} words."
)
# An image refused before any model work (bot.images.ImageProblem names the key).
IMAGE_REFUSED = {
    "too_many_bytes": "I can't look at {name}: it is larger than {limit_mb:g} MB.",
    "unreadable": "I can't look at {name}: it is not a PNG, JPEG, WebP or GIF image I can read.",
    "truncated": "I can't look at {name}: the image is cut off (incomplete file).",
    "huge_dimensions": "I can't look at {name}: it is too large ({width}x{height} pixels).",
    "decompression_bomb": "I can't look at {name}: it has too many pixels ({width}x{height}).",
    "not_downloaded": "I can't look at {name}: I could not download it. Please try again.",
}
# A picture named in a message's text: while the model cannot see it, and once it has left the
# prompt (older than [images] max_images_in_context); beside a picture shown, its label.
IMAGE_PLACEHOLDER = "[image: {name}]"
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
AUTOTHREAD_SHOW = {
    True: "Here a mention opens a thread, answered there (change with !autothread on|off).",
    False: "Here a mention is answered in place (change with !autothread on|off).",
}
AUTOTHREAD_SET = {
    True: "From now on a mention opens a thread in this channel.",
    False: "From now on a mention is answered in place in this channel.",
}
AUTOTHREAD_ELSEWHERE = "Threads are opened only in server channels on Discord."
AUTOTHREAD_IN_THREAD = (
    "In a thread a mention is answered here; !autothread is set in the channel the thread"
    " belongs to."
)
# Said by one platform's adapter: a slash command where the bot is not for the user, or
# while the daemon takes none; a Matrix message the bot's device has no key for.
COMMAND_NOT_ALLOWED = "You can't use hearthbot here."
COMMANDS_PAUSED = "hearthbot isn't taking commands right now; please try again in a minute."
UNDECRYPTABLE = (
    "🔒 I couldn't read your message: it was encrypted with a key my device doesn't have. "
    "I've asked your devices for it; if I don't answer, please send it again."
)
# !usage and !status: what replies cost (bot.commands.usage).
USAGE_NONE = "no replies"
USAGE_TOKENS = (
    "{generated:,} tokens generated ({evaluated:,} prompt tokens read, {reused:,} reused)"
)
USAGE_UNMEASURED = "energy not measured (a remote model server)"
LAST_REPLY = (
    "Last reply here: {evaluated:,} prompt tokens read, {reused:,} reused, {generated:,} "
    "generated, {model_s:.1f} s on the model, {energy}"
)
LAST_REPLY_NONE = "Last reply here: none since the start"

NOTE_STOPPED = "stopped on request"
NOTE_MAX_TOKENS = "reply cut at {max_tokens} tokens"
NOTE_TRIMMED = "only the last {kept} messages fit in my context"
NOTE_CANNOT_SEE_IMAGES = "this model cannot see images; I read only the text"


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


def notes_list(notes: list[str]) -> str:
    """What `!notes` shows: the person's notes here, numbered."""
    lines = [f"{i}. {text}" for i, text in enumerate(notes, start=1)]
    return "\n".join(["Notes I keep about you here (delete with !notes clear):", *lines])


def with_notes(author: str, notes: list[str], turn: str) -> str:
    """What the model reads of a speaker's latest turn when they asked it to keep notes:
    the notes, marked as theirs, just before the turn."""
    kept = "\n".join(f"- {text}" for text in notes)
    return f"(Notes {author} asked me to keep about them:)\n{kept}\n\n{turn}"


def summary_request(previous: str | None, transcript: str) -> str:
    """The summarizer's task: the summary so far and the messages that left the window."""
    return f"Summary so far:\n{previous or '(none)'}\n\nNew messages:\n{transcript}"


def with_summary(system_prompt: str, summary: str) -> str:
    """The system prompt with the channel's summary right after it."""
    return f"{system_prompt}\n\nEarlier in this conversation (a summary):\n{summary}"


def show_summary(summary: str, tokens: int) -> str:
    """What `!summary` shows."""
    return f"Summary of what left my context here ({tokens:,} tokens):\n{summary}"


def footnote(notes: list[str]) -> str:
    """What the model could not see or say, as llmcord does: brief and after the answer."""
    return f"\n\n⚠️ ({'; '.join(notes)})" if notes else ""
