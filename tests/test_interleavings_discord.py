"""Issue #13's property test on Discord: the invariants of tests/test_interleavings.py through
real discord.py and the DiscordAdapter on the fake Discord, where the adapter decides who may
steer an answer. A few examples only: each one is a whole bot on a gateway.

Alice, Bob and an admin ask in two channels (sometimes replying to an earlier question),
edit and delete their messages, react ⏹ and 🔁 on any answer (someone else's too) and send
`!forget` (an admin's naming someone by mention). At the end: each question got at most one
reply (exactly one unless refused with ⏳ or taken back); a stop or a regenerate reached the
core only from the asker or the admin, and an answer says "stopped" only where one of them
asked; no deleted or forgotten text is in the database's files; the history holds the
answers shown for the questions still there.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot import texts
from bot.daemon import Daemon
from bot.events import ChatEvent, Incoming, Outcome, RegenerateRequested, StopRequested
from support.discord_bot import at, hearthbot
from support.fake_discord import FakeDiscord, Json, checked_calls
from support.interleavings import stored_answers, stored_text
from support.progress import until_progressing, wait_progressing
from support.stored import everything_stored

PEOPLE = ("alice", "bob", "admin")
QUIET_S = 60.0
REFUSED = r"/channels/\d+/messages/\d+/reactions/.+"

person = st.sampled_from(PEOPLE)
back = st.integers(0, 6)  # an earlier question, counted back from the latest
steps = st.one_of(
    st.tuples(st.just("ask"), person, st.sampled_from(["general", "other"]), st.none() | back),
    st.tuples(st.just("ask"), person, st.just("general"), st.none()),
    st.tuples(st.just("edit"), back),
    st.tuples(st.just("delete"), back),
    st.tuples(st.just("react"), back, person, st.sampled_from(["⏹️", "🔁"])),
    st.tuples(st.just("react"), back, person, st.sampled_from(["⏹️", "🔁"])),
    st.tuples(st.just("forget"), person, st.none() | person),
    st.tuples(st.just("wait"), st.sampled_from(["showing", "idle"])),
)


@dataclass
class Asked:
    """A question posted on the fake Discord, and what became of it."""

    message: Json
    texts: list[str]
    gone: bool = False
    steered_by: set[str] = field(default_factory=set)  # who reacted ⏹ on its answer


class DiscordChat:
    """Steps taken on the fake Discord, with a record of every event the core was handed."""

    def __init__(self, fake: FakeDiscord, daemon: Daemon, sink_owner: object) -> None:
        self.fake = fake
        self.daemon = daemon
        self.people = {"alice": fake.alice, "bob": fake.bob, "admin": fake.admin}
        self.channels = {"general": fake.general, "other": fake.other}
        self.asked: list[Asked] = []
        self.handled: list[tuple[ChatEvent, Outcome]] = []
        self.never_stored: list[str] = []
        self._markers = (f"zd{n}x" for n in itertools.count(1000))
        sink = sink_owner._sink  # type: ignore[attr-defined]

        async def spy(event: ChatEvent) -> Outcome:
            outcome = await sink(event)
            self.handled.append((event, outcome))
            return outcome

        sink_owner._sink = spy  # type: ignore[attr-defined]

    def pick(self, back: object) -> Asked | None:
        """The question `back` places before the latest (modulo their number)."""
        if not self.asked or not isinstance(back, int):
            return None
        return self.asked[-1 - back % len(self.asked)]

    def outcome_of(self, message: Json) -> Outcome | None:
        """What the core did with a posted message, once it was handed over."""
        for event, outcome in self.handled:
            if isinstance(event, Incoming) and event.message_id == message["id"]:
                return outcome
        return None

    async def settle(self) -> None:
        """Until the core has taken every step and answered everything: the gateway delivers
        events in order, but their handlers may finish out of order (a reaction looks its
        answer up), so until a command sent after the rest comes in alone."""
        while True:
            before = len(self.handled)
            last = await self.fake.say(self.fake.admin, self.fake.general, f"{at(self.fake)} !help")
            await self.handed_over(last)
            await wait_progressing(self.daemon.wait_idle(), self.progress, QUIET_S, "answers")
            if len(self.handled) == before + 1:
                return

    def progress(self) -> object:
        return (len(self.fake.calls), len(self.handled))

    async def act(self, step: tuple[object, ...]) -> None:
        kind, *args = step
        fake = self.fake
        if kind == "ask":
            who, channel, quoting = args
            quoted = self.pick(quoting) if quoting is not None else None
            text = f"{next(self._markers)} what now"
            message = await fake.say(
                self.people[str(who)],
                self.channels[str(channel)],
                f"{at(fake)} {text}",
                reply_to=quoted.message if quoted else None,
            )
            self.asked.append(Asked(message, [text]))
        elif kind == "forget":
            who, whom = args
            named = f" {fake.mention(self.people[str(whom)])}" if whom is not None else ""
            said = await fake.say(self.people[str(who)], fake.general, f"{at(fake)} !forget{named}")
            await self.handed_over(said)
            done = self.outcome_of(said) is Outcome.COMMAND  # not refused (too many commands)
            if done and (whom is None or who == "admin"):
                forgotten = self.people[str(whom or who)]["id"]
                for asked in self.asked:
                    if asked.message["author"]["id"] == forgotten:
                        asked.gone = True
        elif kind == "wait":
            if args[0] == "idle":
                await wait_progressing(self.daemon.wait_idle(), self.progress, QUIET_S, "idle")
            else:
                before = len(fake.calls)
                await self.until(
                    lambda: len(fake.calls) > before or not self.daemon.status().queued,
                    "something shown",
                )
        elif (asked := self.pick(args[0])) is not None:
            await self.steer(str(kind), asked, args[1:])

    async def steer(self, kind: str, asked: Asked, args: list[object]) -> None:
        fake = self.fake
        if kind == "edit":
            text = f"{next(self._markers)} edited"
            if asked.gone:
                self.never_stored.append(text)
            asked.texts.append(text)
            await fake.user_edit(asked.message, f"{at(fake)} {text}")
        elif kind == "delete":
            await fake.user_delete(asked.message)
            asked.gone = True
        else:
            who, emoji = str(args[0]), str(args[1])
            replies = fake.replies_to(asked.message)
            if replies:
                if emoji == "⏹️":
                    asked.steered_by.add(who)
                await fake.react(self.people[who], replies[0], emoji)

    async def handed_over(self, message: Json) -> None:
        await self.until(lambda: self.outcome_of(message) is not None, "a message handed over")

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        await until_progressing(condition, self.progress, QUIET_S, what)


def check(chat: DiscordChat, db: Path) -> None:
    fake = chat.fake
    outcomes = {
        event.message_id: outcome for event, outcome in chat.handled if isinstance(event, Incoming)
    }
    expected: Counter[tuple[str, str]] = Counter()
    for asked in chat.asked:
        replies = fake.replies_to(asked.message)
        assert len(replies) <= 1, replies
        outcome = outcomes.get(asked.message["id"])
        if outcome is Outcome.ACCEPTED and not asked.gone:
            assert len(replies) == 1, (asked, outcome)
        elif outcome is Outcome.REFUSED:
            assert not replies, asked
        if replies and texts.NOTE_STOPPED in replies[0]["content"]:
            assert may_have_stopped(chat, asked), asked
        if replies and not asked.gone and outcome is Outcome.ACCEPTED:
            content = replies[0]["content"]
            if not content.endswith(texts.CANCELLED) and (text := stored_text(content)):
                expected[(f"discord:{asked.message['channel_id']}", text)] += 1
    check_notices(chat, outcomes)
    # Only the asker or the admin steered an answer.
    for event, _ in chat.handled:
        if isinstance(event, RegenerateRequested):
            assert event.requester_id in (event.message.author_id, fake.admin["id"]), event
        if isinstance(event, StopRequested):
            (asked,) = [a for a in chat.asked if a.message["id"] == event.message_id]
            assert may_have_stopped(chat, asked), event
    history = stored_answers(db)
    assert not expected - history, "an answer shown is missing from the history"
    rows = everything_stored(db)
    files = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())
    gone = list(chat.never_stored)
    for asked in chat.asked:
        gone += asked.texts if asked.gone else asked.texts[:-1]  # deleted, or edited away
    for text in gone:
        marker = text.split()[0]
        assert marker not in rows and marker.encode() not in files, f"{text!r} is still stored"


def may_have_stopped(chat: DiscordChat, asked: Asked) -> bool:
    """Whether the asker or the admin reacted ⏹ on this answer."""
    allowed = {asked.message["author"]["id"], chat.fake.admin["id"]}
    return bool({chat.people[p]["id"] for p in asked.steered_by} & allowed)


def check_notices(chat: DiscordChat, outcomes: dict[str, Outcome]) -> None:
    """Whoever was refused saw a ⏳, and nobody more than one a minute."""
    fake = chat.fake
    authors = {a.message["id"]: a.message["author"]["id"] for a in chat.asked}
    told: dict[str, list[float]] = {}
    for call in fake.calls_to("PUT", REFUSED):
        message_id = call.path.split("/")[4]
        told.setdefault(authors.get(message_id, "?"), []).append(call.at)
    for times in told.values():
        assert all(b - a >= 60 for a, b in itertools.pairwise(times)), times
    refused = {authors[m] for m, o in outcomes.items() if o is Outcome.REFUSED and m in authors}
    assert refused <= set(told), (refused, told)


async def interleave_on_discord(
    folder: Path, model: Path, chat_steps: list[tuple[object, ...]]
) -> None:
    fake = FakeDiscord()
    await fake.start()
    try:
        async with hearthbot(
            folder,
            model,
            fake,
            chatty_tokens=24,
            queue={"max_pending": 4, "per_user_per_minute": 3},
            admins=[int(fake.admin["id"])],
        ) as (daemon, adapter):
            chat = DiscordChat(fake, daemon, adapter)
            for step in chat_steps:
                await chat.act(step)
            await chat.settle()
    finally:
        await fake.close()
    checked_calls(fake)
    check(chat, folder / "hearthbot.db")
    # What the example exercised (pytest --hypothesis-show-statistics).
    for event, outcome in chat.handled:
        if outcome is not Outcome.IGNORED:
            hypothesis.event(f"{type(event).__name__} {outcome.value}")
    if any(
        a.steered_by
        - {"admin"}
        - {p for p in PEOPLE if chat.people[p]["id"] == a.message["author"]["id"]}
        for a in chat.asked
    ):
        hypothesis.event("someone else reacted ⏹")


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(chat_steps=st.lists(steps, min_size=10, max_size=25))
def test_interleavings_on_discord_keep_the_invariants(
    tiny_model: Path, chat_steps: list[tuple[object, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(interleave_on_discord(Path(folder), tiny_model, chat_steps))
