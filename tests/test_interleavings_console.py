"""Issue #13's property test through the console: the invariants of tests/test_interleavings.py
with the real ConsoleAdapter reading lines from a real pipe and writing answers to its stdout,
the real daemon, the tiny model and real SQLite, restarted on the same database (a restart is
a new `hearthbot chat` process: a new stdin and stdout; tests/support/console_chat.py).

The console has one user (its owner, an admin) in one channel, who types questions and
`!forget`, `!forget local`, `!reset` and other commands (a wrong one, a blank line, a line too
long to read), some while the daemon is stopping. At the end:

- every line handed over was answered exactly once (a command too), or refused with a
  notice; a line never handed over (still unread when its process stopped) is not stored;
- every answer and notice is shown whole on that process's stdout;
- no text forgotten, cleared by `!reset`, refused or never handed over is in any row or in
  the raw database and -wal files;
- the history holds exactly the answers shown for the questions still there, and an answer
  was cut only by a `!reset` or `!forget` given while it was written.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from bot import texts
from bot.events import Outcome
from support.console_chat import ConsoleChat
from support.interleaving_checks import answers_to, check_answers, check_gone, ends_of
from support.interleavings import Sent, stored_answers

Step = tuple[object, ...]
TAKE_BACK = ("!forget", "!forget local", "!reset")
line = st.sampled_from([*TAKE_BACK, "!status", "!nope", "", "!temperature 0.5"])
steps = st.one_of(
    st.just(("ask",)),
    st.just(("ask",)),
    st.just(("ask",)),
    st.tuples(st.just("say"), line),
    st.just(("too long",)),
    st.tuples(st.just("restart"), st.booleans(), st.sampled_from([None, None, "ask", "!forget"])),
    st.tuples(st.just("wait"), st.sampled_from(["handed", "showing", "idle"])),
)


def sent_from(chat: ConsoleChat) -> tuple[list[Sent], list[str]]:
    """What was handed over, as the checks read it, with what each `!forget` and `!reset`
    took back; and the texts the database must never hold (lines never handed over)."""
    shown = [s for _, s in chat.shown]
    ends = ends_of(shown)
    handed_texts = {h.message.text for h in chat.handed}
    never_stored = [  # questions still unread when their process stopped
        text
        for life in chat.lives
        for text in life.lines
        if text.strip() and not text.startswith("!") and text not in handed_texts
    ]
    sent_list: list[Sent] = []
    for handed in chat.handed:
        outcome = handed.outcome
        sent = Sent(handed.message, outcome or Outcome.IGNORED, [handed.message.text])
        if outcome is None and answers_to(sent, ends):
            sent.outcome = Outcome.ACCEPTED  # stored before its hand-over was cut short
        if sent.outcome not in (Outcome.ACCEPTED, Outcome.DEFERRED, Outcome.COMMAND):
            never_stored.append(handed.message.text)
        sent_list.append(sent)
    for handed, sent in zip(chat.handed, sent_list, strict=True):
        if sent.outcome is not Outcome.COMMAND:
            continue
        (said,) = answers_to(sent, ends)
        if not said[2].startswith(("Deleted ", "Cleared ")):
            continue
        questions = [
            (h, s) for h, s in zip(chat.handed, sent_list, strict=True) if not s.is_command
        ]
        for earlier_h, earlier in questions:
            answers = answers_to(earlier, ends)
            if earlier_h.seq < handed.seq and (not answers or handed.seq < answers[-1][0]):
                earlier.stops += 1  # it may be cut: it was being written
            if said[2].startswith("Deleted ") and earlier_h.seq < handed.seq:
                earlier.gone = True
            elif said[2].startswith("Cleared ") and any(end[0] < said[0] for end in answers):
                earlier.gone = earlier.answer_gone = True  # answered, so no longer pending
    return sent_list, never_stored


def check_screens(chat: ConsoleChat) -> None:
    """Each answer and notice is on its process's stdout whole (not broken up by another)."""
    for life_number, shown in chat.shown:
        screen = chat.lives[life_number - 1].screen.getvalue()
        for _, _, text in shown.ends:
            assert text in screen, f"{text!r} is not shown whole:\n{screen}"
    for life_number, notice in chat.notices:
        assert notice in chat.lives[life_number - 1].screen.getvalue(), notice


async def interleave_on_console(folder: Path, model: Path, chat_steps: list[Step]) -> None:
    chat = ConsoleChat(folder, model)
    await chat.run(chat_steps)
    sent_list, never_stored = sent_from(chat)
    outcomes = {(s.is_command, s.outcome) for s in sent_list}
    for is_command, outcome in sorted(outcomes, key=str):  # pytest --hypothesis-show-statistics
        event(f"{'command' if is_command else 'question'} {outcome.value}")
    if any(e[2] == texts.SHUTTING_DOWN for _, s in chat.shown for e in s.ends):
        event("an answer ended by shutdown")
    expected = check_answers(sent_list, [s for _, s in chat.shown])
    check_screens(chat)
    check_gone(sent_list, never_stored, chat.db)
    assert stored_answers(chat.db) == expected, "the history lost or kept the wrong answers"


@pytest.mark.slow
@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,  # the same examples every run: CI time stays bounded
    database=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking a daemon run takes too long
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(chat_steps=st.lists(steps, min_size=6, max_size=16))
# A restart while an answer is written, then `!reset` as it is written again.
@example([("ask",), ("wait", "showing"), ("restart", True, "ask"), ("say", "!reset")])
# `!forget` in the line typed while stopping, and after the restart.
@example([("ask",), ("ask",), ("restart", False, "!forget"), ("ask",), ("say", "!forget")])
def test_console_interleavings_keep_the_invariants(
    tiny_model: Path, chat_steps: list[Step]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(interleave_on_console(Path(folder), tiny_model, chat_steps))
