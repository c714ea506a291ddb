"""What replies cost, totalled per channel and day: replies, tokens, time on the model, energy.

The totals live in their own table (schema v5), hold no text and name no user, so retention
purges, !reset and !forget leave them. A reply's usage is added in the same transaction that
saves it (`Store.complete`), so a reply is counted once, and only when it is stored. A day is
the box's local date.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from bot.database import Database
from bot.model.types import GenerationResult

J_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class ReplyUsage:
    """One reply's figures, as totalled: tokens, time on the model, energy and its kind."""

    evaluated_tokens: int = 0  # prompt tokens the model read
    reused_tokens: int = 0  # prompt tokens taken from the KV cache instead
    generated_tokens: int = 0
    model_s: float = 0.0
    joules: float | None = None  # None: not measured (a remote server generated it)
    estimated: bool = False  # from CPU time × watts per core, not a counter

    @classmethod
    def of(cls, result: GenerationResult) -> ReplyUsage:
        return cls(
            evaluated_tokens=max(0, result.prompt_tokens - result.reused_tokens),
            reused_tokens=result.reused_tokens,
            generated_tokens=result.generated_tokens,
            model_s=result.model_s,
            joules=result.energy_j,
            estimated=result.energy_source == "estimated",
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """Replies and their figures added up (one channel or all; one day or all time)."""

    replies: int = 0
    evaluated_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    model_s: float = 0.0
    joules: float = 0.0
    estimated_joules: float = 0.0  # the part of `joules` that is an estimate
    unmeasured: int = 0  # replies without an energy figure


def local_day(when: float | None = None) -> str:
    """The box's local date (its time zone) of a Unix time, e.g. "2026-12-01"."""
    return time.strftime("%Y-%m-%d", time.localtime(when))


def add_usage(db: sqlite3.Connection, channel: str, usage: ReplyUsage | None, day: str) -> None:
    """Add a reply to its channel's totals for the day (inside the caller's transaction);
    nothing when there is no usage to add."""
    if usage is None:
        return
    joules = usage.joules or 0.0
    db.execute(
        "INSERT INTO usage (channel, day, replies, evaluated_tokens, reused_tokens,"
        " generated_tokens, model_s, joules, estimated_joules, unmeasured)"
        " VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel, day) DO UPDATE SET"
        " replies = replies + 1,"
        " evaluated_tokens = evaluated_tokens + excluded.evaluated_tokens,"
        " reused_tokens = reused_tokens + excluded.reused_tokens,"
        " generated_tokens = generated_tokens + excluded.generated_tokens,"
        " model_s = model_s + excluded.model_s, joules = joules + excluded.joules,"
        " estimated_joules = estimated_joules + excluded.estimated_joules,"
        " unmeasured = unmeasured + excluded.unmeasured",
        (
            channel,
            day,
            usage.evaluated_tokens,
            usage.reused_tokens,
            usage.generated_tokens,
            usage.model_s,
            joules,
            joules if usage.estimated else 0.0,
            int(usage.joules is None),
        ),
    )


TOTALS_SQL = (
    "SELECT count(*), sum(replies), sum(evaluated_tokens), sum(reused_tokens),"
    " sum(generated_tokens), sum(model_s), sum(joules), sum(estimated_joules), sum(unmeasured)"
    " FROM usage WHERE (?1 IS NULL OR channel = ?1) AND (?2 IS NULL OR day = ?2)"
)


async def usage_totals(store: Database, channel: str | None, day: str | None) -> Totals:
    """The totals of a channel (None: every channel) on a day (None: all time)."""
    rows = await store.read(TOTALS_SQL, (channel, day))
    row = rows[0] if rows else None
    if row is None or not row[0]:
        return Totals()
    return Totals(
        replies=int(row[1]),
        evaluated_tokens=int(row[2]),
        reused_tokens=int(row[3]),
        generated_tokens=int(row[4]),
        model_s=float(row[5]),
        joules=float(row[6]),
        estimated_joules=float(row[7]),
        unmeasured=int(row[8]),
    )
