"""bot.scheduler: the fair, bounded queue in front of the model worker (fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from bot.scheduler import RATE_WINDOW_S, FairQueue, Refusal, Ticket, commands_per_minute


class Clock:
    def __init__(self) -> None:
        self.now = [1000.0]

    def __call__(self) -> float:
        return self.now[0]

    def advance(self, seconds: float) -> None:
        self.now[0] += seconds


def make_queue(
    clock: Clock,
    max_pending: int = 100,
    per_user_per_minute: int = 1000,
    notice_interval_s: float = 60.0,
) -> FairQueue[str]:
    return FairQueue(
        max_pending=max_pending,
        per_user_per_minute=per_user_per_minute,
        notice_interval_s=notice_interval_s,
        clock=clock,
    )


def enqueue(q: FairQueue[str], channel: str, job: str, user: str = "u") -> None:
    ticket = q.admit(user)
    assert isinstance(ticket, Ticket), ticket
    q.put(ticket, channel, job)


def drain_order(q: FairQueue[str]) -> list[str]:
    jobs: list[str] = []
    while (job := q.next_nowait()) is not None:
        jobs.append(job)
    return jobs


@pytest.fixture
def clock() -> Clock:
    return Clock()


# ---------------------------------------------------------------- fairness


def test_busy_channel_does_not_starve_a_quiet_one(clock: Clock) -> None:
    q = make_queue(clock)
    for i in range(20):
        enqueue(q, "A", f"A{i}")
    enqueue(q, "B", "B0")
    order = drain_order(q)
    assert order.index("B0") < order.index("A1")
    assert order[:3] == ["A0", "B0", "A1"]
    assert [job for job in order if job.startswith("A")] == [f"A{i}" for i in range(20)]


def test_quiet_channel_arriving_while_serving_is_next(clock: Clock) -> None:
    """B arrives while A's backlog is being served: B waits only for the reply in progress."""
    q = make_queue(clock)
    for i in range(5):
        enqueue(q, "A", f"A{i}")
    assert q.next_nowait() == "A0"
    assert q.next_nowait() == "A1"
    enqueue(q, "B", "B0")
    assert q.next_nowait() == "B0"
    assert q.next_nowait() == "A2"


def test_emptying_and_refilling_does_not_jump_the_queue(clock: Clock) -> None:
    q = make_queue(clock)
    for channel in ("A", "B", "C"):
        enqueue(q, channel, f"{channel}0")
        enqueue(q, channel, f"{channel}1")
    enqueue(q, "D", "D0")
    assert [q.next_nowait() for _ in range(4)] == ["A0", "B0", "C0", "D0"]
    enqueue(q, "D", "D1")  # D just had its turn: it waits for this round's A1, B1, C1
    assert [q.next_nowait() for _ in range(4)] == ["A1", "B1", "C1", "D1"]
    assert q.next_nowait() is None


def test_round_robin_across_three_channels(clock: Clock) -> None:
    q = make_queue(clock)
    for channel, count in (("A", 4), ("B", 2), ("C", 3)):
        for i in range(count):
            enqueue(q, channel, f"{channel}{i}")
    assert len(q) == 9
    assert drain_order(q) == ["A0", "B0", "C0", "A1", "B1", "C1", "A2", "C2", "A3"]
    assert len(q) == 0
    assert q.next_nowait() is None


def test_channels_being_answered_are_skipped_and_keep_their_place(clock: Clock) -> None:
    q = make_queue(clock)
    for job, channel in [("a0", "A"), ("a1", "A"), ("b0", "B"), ("c0", "C"), ("b1", "B")]:
        q.restore(channel, job)
    assert q.next_nowait(skip={"A"}) == "b0"
    assert q.next_nowait(skip={"A", "B"}) == "c0"
    assert q.next_nowait(skip={"A", "B", "C"}) is None
    assert len(q) == 3
    # A waited in front all along: its next message comes first once it is free.
    assert q.next_nowait(skip={"B"}) == "a0"
    assert q.next_nowait(skip={"A"}) == "b1"
    assert q.next_nowait() == "a1"


def serve_with_slots(q: FairQueue[str], slots: int) -> tuple[list[str], list[list[str]]]:
    """Runs the queue like the responder does: free slots go to the next channels in order,
    skipping those with a reply in flight; then the oldest reply in flight ends. Returns the
    jobs in the order they started, and the jobs in flight after each filling of slots."""
    in_flight: list[str] = []  # oldest first; a job's channel is its first letter
    started: list[str] = []
    steps: list[list[str]] = []
    while True:
        while len(in_flight) < slots:
            job = q.next_nowait(skip={job[0] for job in in_flight})
            if job is None:
                break
            in_flight.append(job)
            started.append(job)
        if not in_flight:
            return started, steps
        steps.append(list(in_flight))
        in_flight.pop(0)


def test_fairness_with_slots_a_busy_channel_holds_at_most_one(clock: Clock) -> None:
    """Issue 14: a channel with 20 queued messages holds at most one slot while the other
    channels get the rest."""
    q = make_queue(clock)
    for i in range(20):
        q.restore("A", f"A{i}")
    for channel in "BCD":
        for i in range(3):
            q.restore(channel, f"{channel}{i}")
    started, steps = serve_with_slots(q, slots=4)
    assert steps[0] == ["A0", "B0", "C0", "D0"]
    for in_flight in steps:
        channels = [job[0] for job in in_flight]
        assert len(channels) == len(set(channels)), in_flight  # one reply per channel
    assert sorted(started) == sorted(
        [f"A{i}" for i in range(20)] + [f"{c}{i}" for c in "BCD" for i in range(3)]
    )
    # While B, C and D have work, all four slots are busy, A holding one of them.
    assert all(len(step) == 4 for step in steps[:9])
    # B, C and D never wait behind A's backlog: their three replies come before A's fourth.
    assert max(started.index(f"{c}2") for c in "BCD") < started.index("A3")


def test_one_slot_serves_in_the_same_order_as_before(clock: Clock) -> None:
    q = make_queue(clock)
    for i in range(3):
        q.restore("A", f"A{i}")
    q.restore("B", "B0")
    assert serve_with_slots(q, slots=1)[0] == ["A0", "B0", "A1", "A2"]


# ---------------------------------------------------------------- bound and tickets


def test_bound_counts_queued_and_reserved(clock: Clock) -> None:
    q = make_queue(clock, max_pending=3)
    enqueue(q, "A", "a1")
    enqueue(q, "A", "a2")
    reserved = q.admit("x")
    assert isinstance(reserved, Ticket)
    assert q.admit("y") is Refusal.BUSY  # 2 queued + 1 reserved
    q.put(reserved, "B", "b1")
    assert q.admit("y") is Refusal.BUSY  # 3 queued
    assert q.next_nowait() == "a1"
    assert isinstance(q.admit("y"), Ticket)  # room again after a get
    assert q.admit("z") is Refusal.BUSY


async def test_bound_frees_after_async_get(clock: Clock) -> None:
    q = make_queue(clock, max_pending=1)
    enqueue(q, "A", "a1")
    assert q.admit("y") is Refusal.BUSY
    assert await q.get() == "a1"
    assert isinstance(q.admit("y"), Ticket)


def test_cancel_releases_the_reservation(clock: Clock) -> None:
    q = make_queue(clock, max_pending=1)
    ticket = q.admit("u")
    assert isinstance(ticket, Ticket)
    assert q.admit("v") is Refusal.BUSY
    q.cancel(ticket)
    assert len(q) == 0
    assert isinstance(q.admit("v"), Ticket)


@pytest.mark.parametrize(
    ("first", "second"),
    [("cancel", "cancel"), ("put", "cancel"), ("cancel", "put"), ("put", "put")],
)
def test_releasing_a_ticket_twice_raises(clock: Clock, first: str, second: str) -> None:
    q = make_queue(clock)
    ticket = q.admit("u")
    assert isinstance(ticket, Ticket)

    def release(how: str) -> None:
        if how == "cancel":
            q.cancel(ticket)
        else:
            q.put(ticket, "A", "job")

    release(first)
    with pytest.raises(RuntimeError, match="released twice"):
        release(second)


# ---------------------------------------------------------------- rate limit and notices


def test_rate_limit_per_user(clock: Clock) -> None:
    q = make_queue(clock, per_user_per_minute=3)
    for _ in range(3):
        assert isinstance(q.admit("alice"), Ticket)
        clock.advance(10)
    assert q.admit("alice") is Refusal.RATE_LIMITED
    assert isinstance(q.admit("bob"), Ticket)  # other users are not affected
    clock.advance(29.5)  # 59.5 s after the first
    assert q.admit("alice") is Refusal.RATE_LIMITED
    clock.advance(0.5)  # the first hit leaves the window
    assert isinstance(q.admit("alice"), Ticket)
    assert q.admit("alice") is Refusal.RATE_LIMITED


def test_refusals_do_not_count_against_the_limit(clock: Clock) -> None:
    q = make_queue(clock, per_user_per_minute=1)
    assert isinstance(q.admit("alice"), Ticket)
    for _ in range(50):
        clock.advance(1)
        assert q.admit("alice") is Refusal.RATE_LIMITED
    clock.advance(RATE_WINDOW_S - 50)
    assert isinstance(q.admit("alice"), Ticket)


def test_rate_exempt_bypasses_the_limit_but_not_the_bound(clock: Clock) -> None:
    q = make_queue(clock, max_pending=5, per_user_per_minute=1)
    assert isinstance(q.admit("admin"), Ticket)
    assert q.admit("admin") is Refusal.RATE_LIMITED
    for _ in range(4):
        assert isinstance(q.admit("admin", rate_exempt=True), Ticket)
    assert q.admit("admin", rate_exempt=True) is Refusal.BUSY


@pytest.mark.parametrize(("messages", "commands"), [(1, 12), (6, 12), (7, 14), (10_000, 20_000)])
def test_commands_per_minute(messages: int, commands: int) -> None:
    assert commands_per_minute(messages) == commands


def test_commands_have_their_own_limit(clock: Clock) -> None:
    q = make_queue(clock, max_pending=0, per_user_per_minute=1)
    for _ in range(12):
        assert q.admit_command("alice") is None  # a full queue does not matter
    assert q.admit_command("alice") is Refusal.RATE_LIMITED
    assert q.admit_command("bob") is None
    assert q.admit_command("alice", rate_exempt=True) is None
    q.max_pending = 1
    assert isinstance(q.admit("alice"), Ticket)  # messages count separately
    clock.advance(RATE_WINDOW_S)
    assert q.admit_command("alice") is None
    q.per_user_per_minute = 10  # lifting the message limit lifts the command limit
    for _ in range(19):
        assert q.admit_command("alice") is None
    assert q.admit_command("alice") is Refusal.RATE_LIMITED


def test_busy_is_reported_before_rate_limited(clock: Clock) -> None:
    q = make_queue(clock, max_pending=1, per_user_per_minute=1)
    assert isinstance(q.admit("u"), Ticket)
    assert q.admit("u") is Refusal.BUSY


def test_should_notify_once_per_interval(clock: Clock) -> None:
    q = make_queue(clock, max_pending=0, notice_interval_s=60)
    notices = 0
    for _ in range(100):
        assert q.admit("spammer") is Refusal.BUSY
        notices += q.should_notify("spammer")
        clock.advance(0.5)  # 100 refusals over 50 s
    assert notices == 1
    assert q.should_notify("other")  # per user
    clock.advance(9.5)  # 59.5 s after the notice
    assert not q.should_notify("spammer")
    clock.advance(0.5)
    assert q.should_notify("spammer")
    assert not q.should_notify("spammer")


# ---------------------------------------------------------------- restore, remove, get


def test_restore_ignores_bound_and_limit(clock: Clock) -> None:
    q = make_queue(clock, max_pending=2, per_user_per_minute=1)
    for i in range(5):
        q.restore("A", f"a{i}")
    q.restore("B", "b0")
    assert len(q) == 6
    assert q.admit("u") is Refusal.BUSY
    assert drain_order(q) == ["a0", "b0", "a1", "a2", "a3", "a4"]


def test_remove_drops_matching_jobs_and_keeps_order(clock: Clock) -> None:
    q = make_queue(clock)
    for job, channel in [
        ("alice:1", "A"),
        ("bob:1", "A"),
        ("alice:2", "A"),
        ("bob:2", "B"),
        ("alice:3", "C"),
        ("carol:1", "C"),
    ]:
        q.restore(channel, job)
    removed = q.remove(lambda job: not job.startswith("alice:"))
    assert removed == 3
    assert len(q) == 3
    assert drain_order(q) == ["bob:1", "bob:2", "carol:1"]


def test_remove_keeps_channel_positions(clock: Clock) -> None:
    q = make_queue(clock)
    for job, channel in [("a1", "A"), ("b1", "B"), ("c1", "C"), ("a2", "A"), ("c2", "C")]:
        q.restore(channel, job)
    assert q.remove(lambda job: job != "b1") == 1
    assert drain_order(q) == ["a1", "c1", "a2", "c2"]


def test_remove_nothing(clock: Clock) -> None:
    q = make_queue(clock)
    q.restore("A", "a1")
    assert q.remove(lambda job: True) == 0
    assert drain_order(q) == ["a1"]


async def test_get_waits_for_a_put(clock: Clock) -> None:
    q = make_queue(clock)
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()

    async def producer() -> None:
        await asyncio.sleep(0.01)
        enqueue(q, "A", "hello")

    asyncio.create_task(producer())  # noqa: RUF006
    assert await asyncio.wait_for(waiter, timeout=1) == "hello"


async def test_get_times_out_when_empty_and_the_timed_out_get_takes_nothing(clock: Clock) -> None:
    q = make_queue(clock)
    ticket = q.admit("u")  # a reserved place is not work yet: get keeps waiting
    assert isinstance(ticket, Ticket)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), timeout=0.02)
    # The get that was given up on holds nothing: the next one gets the next job.
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.put(ticket, "A", "a1")
    assert await asyncio.wait_for(waiter, timeout=1) == "a1"
    assert len(q) == 0


async def test_get_skips_busy_channels_until_woken(clock: Clock) -> None:
    q = make_queue(clock)
    q.restore("A", "a0")
    busy = {"A"}  # a live view, as the responder passes its channels in flight
    waiter = asyncio.create_task(q.get(skip=busy))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # A's reply is still being generated
    busy.clear()
    q.wake()
    assert await asyncio.wait_for(waiter, 1) == "a0"


async def test_get_returns_queued_work_immediately_and_in_order(clock: Clock) -> None:
    q = make_queue(clock)
    enqueue(q, "A", "a1")
    enqueue(q, "A", "a2")
    enqueue(q, "B", "b1")
    got = [await asyncio.wait_for(q.get(), timeout=1) for _ in range(3)]
    assert got == ["a1", "b1", "a2"]
    # drained: the next get waits again, and wakes for new work
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    q.restore("C", "c1")
    assert await asyncio.wait_for(waiter, timeout=1) == "c1"


# ---------------------------------------------------------------- memory


def test_rate_bookkeeping_is_swept(clock: Clock) -> None:
    q = make_queue(clock, max_pending=10, per_user_per_minute=3)
    for i in range(10_000):
        ticket = q.admit(f"user{i}")
        assert isinstance(ticket, Ticket)
        q.cancel(ticket)
        clock.advance(1.0)  # about 60 users inside the window at any time
        assert len(q._messages) < 3000
    assert len(q._noticed) == 0


def test_notice_bookkeeping_is_swept(clock: Clock) -> None:
    q = make_queue(clock, max_pending=0, notice_interval_s=60)
    for i in range(10_000):
        assert q.admit(f"user{i}") is Refusal.BUSY
        assert q.should_notify(f"user{i}")
        clock.advance(1.0)
        assert len(q._noticed) < 3000
    assert len(q._messages) == 0  # refused as busy: nothing recorded


def test_sweep_keeps_users_inside_the_window(clock: Clock) -> None:
    q = make_queue(clock, max_pending=10, per_user_per_minute=2)
    for _ in range(2):
        ticket = q.admit("alice")
        assert isinstance(ticket, Ticket)
        q.cancel(ticket)
    assert q.should_notify("alice")
    clock.advance(30)
    for i in range(3000):  # enough distinct users to trigger sweeps
        ticket = q.admit(f"user{i}")
        assert isinstance(ticket, Ticket)
        q.cancel(ticket)
        q.should_notify(f"user{i}")
    assert q.admit("alice") is Refusal.RATE_LIMITED
    assert not q.should_notify("alice")
    clock.advance(30)
    assert isinstance(q.admit("alice"), Ticket)
