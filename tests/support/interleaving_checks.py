"""The invariants the interleavings property tests check at the end of a run, on the record
kept by tests/support/interleavings.py's Chat (the recording adapter) or
tests/support/console_chat.py's ConsoleChat (the real console): each names what was sent
(`Sent`) and every reply handle the daemon opened (`Shown`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bot import texts
from bot.events import Outcome
from support.interleavings import Sent, Shown, stored_text
from support.stored import everything_stored

End = tuple[int, str, str]  # (seq, kind, text)


def ends_of(shown: list[Shown]) -> dict[str, list[End]]:
    """Each message's replies' ends, in order, across restarts and regenerates."""
    by_message: dict[str, list[Shown]] = {}
    for one in shown:
        assert len(one.ends) <= 1, f"one reply ended twice: {one.ends}"
        by_message.setdefault(one.record.message.message_id, []).append(one)
    return {
        message_id: sorted(end for one in shown_list for end in one.ends)
        for message_id, shown_list in by_message.items()
    }


def answers_to(sent: Sent, ends: dict[str, list[End]]) -> list[End]:
    """Its replies' ends but shutdown notices: those are no answer (the message stays
    pending, answered after the restart)."""
    return [end for end in ends.get(sent.message.message_id, []) if end[2] != texts.SHUTTING_DOWN]


def check_answers(sent_list: list[Sent], shown: list[Shown]) -> Counter[tuple[str, str]]:
    """Answered exactly once (a regenerate adds one), refused with at most a notice; the
    answers the store should hold."""
    ends = ends_of(shown)
    expected: Counter[tuple[str, str]] = Counter()
    for sent in sent_list:
        answers = answers_to(sent, ends)
        said = (sent.message.text, answers, sent)
        if sent.outcome is Outcome.COMMAND:
            assert len(answers) == 1, said
        elif sent.outcome in (Outcome.ACCEPTED, Outcome.DEFERRED):
            assert len(answers) <= 1 + len(sent.regenerated), said
            if not sent.gone:
                assert len(answers) == 1 + len(sent.regenerated), said
                assert all(end[2] != texts.CANCELLED for end in answers), said
            cut = [e for e in answers if e[1] == "finish" and texts.NOTE_STOPPED in e[2]]
            assert len(cut) <= sent.stops, f"cut without a stop: {said}"
            if not sent.answer_gone:
                expected += last_answer(sent, answers)
        else:  # refused: at most a notice in the reply's place (too long to read)
            assert all(kind == "fail" for _, kind, _ in answers), f"refused, yet answered: {said}"
            assert len(answers) <= 1, said
    return expected


def last_answer(sent: Sent, answers: list[End]) -> Counter[tuple[str, str]]:
    """The answer the history should hold for `sent`: its last one shown, unless a
    regenerate replaced it since (and its new answer never came: taken back meanwhile)."""
    finishes = [end for end in answers if end[1] == "finish"]
    if not finishes or finishes[-1][0] < max(sent.regenerated, default=-1):
        return Counter()
    text = stored_text(finishes[-1][2])
    return Counter({(sent.message.channel_key, text): 1} if text else {})


def check_gone(sent_list: list[Sent], never_stored: list[str], db: Path) -> None:
    """No text that must be gone is in any row, nor anywhere in the database's files."""
    rows = everything_stored(db)
    files = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())
    gone = list(never_stored)
    for sent in sent_list:
        if not sent.is_command:
            gone += sent.versions if sent.gone else sent.versions[:-1]  # edited away
    for text in gone:
        if text.startswith("!"):
            continue
        marker = text.split()[0]
        assert marker not in rows, f"{text!r} is still stored"
        assert marker.encode() not in files, f"{text!r} is still in the database's files"
