"""Commands: one syntax on every platform, `!name args` at the start of a message.

Parsing decides what a message means and nothing else (pure functions, tested by a table);
the daemon acts on the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.triggers import TRIGGERS

PREFIX = "!"
_COMMAND = re.compile(r"^!([A-Za-z][A-Za-z_-]*)(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Command:
    """A well-formed command: its name and its parsed argument (None: none given)."""

    name: str
    arg: str | float | int | None = None


@dataclass(frozen=True, slots=True)
class CommandError:
    """The message is a command but a wrong one; `message` is shown to the user."""

    message: str


def _none(arg: str) -> None:
    if arg:
        raise ValueError("takes no argument")


def _optional_word(arg: str) -> str | None:
    if not arg:
        return None
    if len(arg.split()) != 1:
        raise ValueError("takes one name")
    return arg.lower()


def _temperature(arg: str) -> float | None:
    if not arg:
        return None
    try:
        value = float(arg)
    except ValueError:
        raise ValueError("needs a number from 0 to 2, e.g. !temperature 0.7") from None
    if not 0 <= value <= 2:
        raise ValueError("needs a number from 0 to 2, e.g. !temperature 0.7")
    return value


def _seed(arg: str) -> int | str | None:
    if not arg:
        return None
    if arg.lower() in {"random", "off", "none"}:
        return "random"
    if not arg.isdecimal() or len(arg.lstrip("0")) > 10 or int(arg) > 2**32 - 1:
        raise ValueError("needs a whole number from 0 to 4294967295, or `random`")
    return int(arg)


def _trigger(arg: str) -> str | None:
    if not arg:
        return None
    if arg.lower() not in TRIGGERS:
        raise ValueError(f"takes one of: {', '.join(TRIGGERS)}")
    return arg.lower()


def _on_off(arg: str) -> str | None:
    if not arg:
        return None
    if arg.lower() not in {"on", "off"}:
        raise ValueError("takes `on` or `off`")
    return arg.lower()


def _optional_user(arg: str) -> str | None:
    return arg or None


def _note(arg: str) -> str:
    if not arg:
        raise ValueError("needs the text to keep, e.g. !remember I prefer short answers")
    return arg


def _notes_action(arg: str) -> str | None:
    if not arg:
        return None
    if arg.lower() != "clear":
        raise ValueError("takes nothing, or `clear`")
    return "clear"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command's syntax: how it is written, what !help says, how its argument parses."""

    name: str
    usage: str
    summary: str
    parse_arg: Callable[[str], str | float | int | None]
    changes_bare: bool = False  # changes something even without an argument


COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("help", "!help", "list the commands", _none),
        CommandSpec("reset", "!reset", "clear this channel's history", _none, changes_bare=True),
        CommandSpec(
            "persona", "!persona [name]", "list personas, or switch to one", _optional_word
        ),
        CommandSpec(
            "temperature", "!temperature [x]", "show or set randomness (0-2)", _temperature
        ),
        CommandSpec("seed", "!seed [n|random]", "fix the seed for reproducible replies", _seed),
        CommandSpec(
            "trigger",
            "!trigger [mention|all|name|off]",
            "show or set when I answer in this channel",
            _trigger,
        ),
        CommandSpec(
            "autothread",
            "!autothread [on|off]",
            "show or set whether a mention opens a thread here (Discord)",
            _on_off,
        ),
        CommandSpec("status", "!status", "model, context use, persona and sampling", _none),
        CommandSpec("usage", "!usage", "replies, tokens and energy, today and in all", _none),
        CommandSpec(
            "forget",
            "!forget [user]",
            "delete my messages everywhere (admins: a named user's)",
            _optional_user,
        ),
        CommandSpec("summary", "!summary", "show what I keep of what left my context", _none),
        CommandSpec("remember", "!remember <text>", "keep a note about me, used here", _note),
        CommandSpec("notes", "!notes [clear]", "list my notes here, or delete them", _notes_action),
    )
}


def parse_command(text: str) -> Command | CommandError | None:
    """None when the text is an ordinary message (not starting with `!word`)."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    name = match.group(1).lower()
    spec = COMMANDS.get(name)
    if spec is None:
        return CommandError(f"Unknown command !{name}. Try !help.")
    try:
        arg = spec.parse_arg((match.group(2) or "").strip())
    except ValueError as exc:
        return CommandError(f"{spec.usage} {exc}.")
    return Command(name, arg)


def may_run(command: Command, admin_commands: list[str], is_direct: bool, is_admin: bool) -> bool:
    """An admin command changes things only for admins, and for anyone in their own direct
    chat; showing the current value (no argument) is open to all."""
    spec = COMMANDS.get(command.name)
    changes = command.arg is not None or (spec is not None and spec.changes_bare)
    return not changes or command.name not in admin_commands or is_direct or is_admin


def help_text(admin_commands: frozenset[str] | set[str]) -> str:
    lines = ["Commands:"]
    for spec in COMMANDS.values():
        marker = " (admin)" if spec.name in admin_commands else ""
        lines.append(f"  {spec.usage} — {spec.summary}{marker}")
    return "\n".join(lines)
