"""bot.commands.parse: what a message means (pure parsing, table-driven); every command it
knows has a handler."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.commands.parse import COMMANDS, Command, CommandError, help_text, may_run, parse_command
from bot.commands.runner import HANDLERS

RANGE_ERROR = "!temperature [x] needs a number from 0 to 2, e.g. !temperature 0.7."
NOTE_ERROR = "!remember <text> needs the text to keep, e.g. !remember I prefer short answers."
SEED_ERROR = "!seed [n|random] needs a whole number from 0 to 4294967295, or `random`."

# text -> expected parse result (None: an ordinary message, not a command)
TABLE: list[tuple[str, Command | CommandError | None]] = [
    # commands without arguments, case and surrounding whitespace don't matter
    ("!help", Command("help")),
    ("!HELP", Command("help")),
    ("  !reset  ", Command("reset")),
    ("!reset\n", Command("reset")),
    ("!help me", CommandError("!help takes no argument.")),
    # persona: optional single name, lowercased
    ("!persona", Command("persona")),
    ("!persona coder", Command("persona", "coder")),
    ("!persona Coder", Command("persona", "coder")),
    ("!persona   coder  ", Command("persona", "coder")),
    ("!persona two words", CommandError("!persona [name] takes one name.")),
    # temperature: optional number within 0..2
    ("!temperature", Command("temperature")),
    ("!temperature 0.7", Command("temperature", 0.7)),
    ("!temperature 0", Command("temperature", 0.0)),
    ("!temperature 2", Command("temperature", 2.0)),
    ("!temperature 2.5", CommandError(RANGE_ERROR)),
    ("!temperature -0.1", CommandError(RANGE_ERROR)),
    ("!temperature abc", CommandError(RANGE_ERROR)),
    ("!temperature nan", CommandError(RANGE_ERROR)),
    ("!temperature inf", CommandError(RANGE_ERROR)),
    # seed: optional whole number within 32 bits, or random
    ("!seed", Command("seed")),
    ("!seed 42", Command("seed", 42)),
    ("!seed 0", Command("seed", 0)),
    ("!seed 4294967295", Command("seed", 4294967295)),
    ("!seed random", Command("seed", "random")),
    ("!seed RANDOM", Command("seed", "random")),
    ("!seed off", Command("seed", "random")),
    ("!seed -1", CommandError(SEED_ERROR)),
    ("!seed 4294967296", CommandError(SEED_ERROR)),
    ("!seed 99999999999", CommandError(SEED_ERROR)),
    ("!seed 1.5", CommandError(SEED_ERROR)),
    ("!seed ²", CommandError(SEED_ERROR)),  # str.isdigit() is True, int() fails
    ("!seed " + "9" * 5000, CommandError(SEED_ERROR)),  # beyond int()'s digit limit
    # trigger: optional mode, lowercased
    ("!trigger", Command("trigger")),
    ("!trigger all", Command("trigger", "all")),
    ("!trigger NAME", Command("trigger", "name")),
    ("!trigger off", Command("trigger", "off")),
    ("!trigger mention", Command("trigger", "mention")),
    (
        "!trigger sometimes",
        CommandError("!trigger [mention|all|name|off] takes one of: mention, all, name, off."),
    ),
    # autothread: optional on|off, lowercased
    ("!autothread", Command("autothread")),
    ("!autothread ON", Command("autothread", "on")),
    ("!autothread off", Command("autothread", "off")),
    ("!autothread yes", CommandError("!autothread [on|off] takes `on` or `off`.")),
    # status: no argument
    ("!status", Command("status")),
    ("!status extra", CommandError("!status takes no argument.")),
    # forget: optional user, kept as written
    ("!forget", Command("forget")),
    ("!forget 1234", Command("forget", "1234")),
    ("!forget Alice", Command("forget", "Alice")),
    # remember: the note's text, kept as written; notes: nothing, or clear
    ("!remember I like tea", Command("remember", "I like tea")),
    ("!remember  two\nlines ", Command("remember", "two\nlines")),
    ("!remember", CommandError(NOTE_ERROR)),
    ("!notes", Command("notes")),
    ("!notes CLEAR", Command("notes", "clear")),
    ("!notes all", CommandError("!notes [clear] takes nothing, or `clear`.")),
    # unknown commands are errors, named lowercased
    ("!unknown", CommandError("Unknown command !unknown. Try !help.")),
    ("!Unknown stuff", CommandError("Unknown command !unknown. Try !help.")),
    # ordinary text
    ("hello", None),
    ("what does !help do?", None),
    ("!!!", None),
    ("! help", None),
    ("", None),
    ("   ", None),
    ("!123", None),
    ("!", None),
    ("!help!", None),
]


@pytest.mark.parametrize(("text", "expected"), TABLE, ids=[repr(t[:30]) for t, _ in TABLE])
def test_parse_command(text: str, expected: Command | CommandError | None) -> None:
    assert parse_command(text) == expected


def test_argument_types() -> None:
    temperature = parse_command("!temperature 2")
    seed = parse_command("!seed 42")
    assert isinstance(temperature, Command) and type(temperature.arg) is float
    assert isinstance(seed, Command) and type(seed.arg) is int


@given(st.text(max_size=80))
def test_parse_never_raises(text: str) -> None:
    result = parse_command(text)
    assert result is None or isinstance(result, Command | CommandError)
    if not text.strip().startswith("!"):
        assert result is None
    if isinstance(result, Command):
        assert result.name in COMMANDS


# Unicode digits (categories Nd, No) are where str.isdigit() and int() disagree.
digit_heavy = st.text(st.characters(categories=("Nd", "No")) | st.sampled_from("0123456789"))


@given(st.text(max_size=30) | digit_heavy)
def test_seed_argument_is_valid_or_explained(arg: str) -> None:
    result = parse_command("!seed " + arg)
    if isinstance(result, Command):
        assert result.arg is None or result.arg == "random" or 0 <= result.arg <= 2**32 - 1
    else:
        assert result == CommandError(SEED_ERROR)


@given(st.text(max_size=30))
def test_temperature_argument_is_valid_or_explained(arg: str) -> None:
    result = parse_command("!temperature " + arg)
    if isinstance(result, Command):
        assert result.arg is None or 0 <= result.arg <= 2
    else:
        assert result == CommandError(RANGE_ERROR)


def test_help_lists_every_command_and_marks_admin_ones() -> None:
    text = help_text({"reset", "forget"})
    lines = text.splitlines()
    assert lines[0] == "Commands:"
    for name, spec in COMMANDS.items():
        matching = [line for line in lines if line.strip().startswith(spec.usage)]
        assert len(matching) == 1, name
        assert spec.summary in matching[0]
        assert matching[0].endswith("(admin)") == (name in {"reset", "forget"}), name
    assert len(lines) == 1 + len(COMMANDS)
    for name in ("help", "reset", "persona", "temperature", "seed", "status", "forget"):
        assert f"!{name}" in text


def test_help_without_admin_commands_marks_nothing() -> None:
    assert "(admin)" not in help_text(frozenset())


@pytest.mark.parametrize(
    ("command", "is_direct", "is_admin", "allowed"),
    [
        (Command("status"), False, False, True),  # not an admin command
        (Command("persona"), False, False, True),  # showing is open to all
        (Command("persona", "coder"), False, False, False),
        (Command("persona", "coder"), False, True, True),
        (Command("persona", "coder"), True, False, True),  # anyone in their own direct chat
        (Command("reset"), False, False, False),  # changes things without an argument
        (Command("reset"), True, False, True),
        (Command("trigger"), False, False, True),  # showing the mode is open to all
        (Command("trigger", "all"), False, False, False),
        (Command("trigger", "all"), False, True, True),
        (Command("trigger", "all"), True, False, True),
    ],
)
def test_may_run(command: Command, is_direct: bool, is_admin: bool, allowed: bool) -> None:
    assert may_run(command, ["persona", "reset", "trigger"], is_direct, is_admin) is allowed


def test_every_command_has_exactly_one_handler() -> None:
    assert sorted(HANDLERS) == sorted(COMMANDS)
