"""Prometheus metrics: what the daemon did, counted once per reply (never per token).

The daemon reports through a `bot.observer.Observer`; `Metrics` is the one that counts.
Values that are state rather than events (queue depth, slots in use, the engine's speed,
adapter connections) are read when scraped, so they can never go stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.observer import Observer
from bot.scheduler import Refusal
from bot.status import DaemonStatus

if TYPE_CHECKING:
    from bot.model.types import GenerationResult

# Seconds: a small model on a fast box answers in tens of ms; a big prompt on a Pi in minutes.
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class Metrics(Observer):
    """Counters and histograms in a registry of their own (not prometheus_client's global
    one, so two daemons in one process, as in the tests, never collide)."""

    def __init__(self, status: Callable[[], DaemonStatus]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._answered = Counter(
            "hearthbot_messages_answered", "Messages answered.", ["platform"], registry=r
        )
        self._refused = Counter(
            "hearthbot_messages_refused",
            "Messages refused (queue full or rate limited).",
            ["platform", "reason"],
            registry=r,
        )
        self._generated = Counter(
            "hearthbot_tokens_generated", "Tokens generated in answers.", registry=r
        )
        self._evaluated = Counter(
            "hearthbot_prompt_tokens_evaluated",
            "Prompt tokens the model had to evaluate.",
            registry=r,
        )
        self._reused = Counter(
            "hearthbot_prompt_tokens_reused",
            "Prompt tokens reused from the KV cache instead of evaluated.",
            registry=r,
        )
        self._first_token = Histogram(
            "hearthbot_time_to_first_token_seconds",
            "From the start of generation (prompt evaluation included) to the first token.",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self._speed = Histogram(
            "hearthbot_tokens_per_second",
            "Generation speed of one answer, after its first token.",
            buckets=TOKENS_PER_S_BUCKETS,
            registry=r,
        )
        self._energy = Counter(
            "hearthbot_energy_joules",
            "Energy attributed to answers, by source: rapl or nvml (measured), or estimated.",
            ["source"],
            registry=r,
        )
        self._errors = Counter(
            "hearthbot_errors",
            "Errors by kind (answer, event, reload, store).",
            ["kind"],
            registry=r,
        )
        r.register(_StateCollector(status))
        # Zero-valued series from the start: a rate() over a series that appears late is wrong.
        for platform in status().adapters:
            self._answered.labels(platform)
            for refusal in Refusal:
                self._refused.labels(platform, refusal.value)
        for kind in ("answer", "event", "reload", "store"):
            self._errors.labels(kind)
        if (engine := status().engine) is not None and engine.energy_source:
            self._energy.labels(engine.energy_source)

    def answered(self, platform: str, result: GenerationResult) -> None:
        self._answered.labels(platform).inc()
        self._generated.inc(result.generated_tokens)
        self._evaluated.inc(max(0, result.prompt_tokens - result.reused_tokens))
        self._reused.inc(result.reused_tokens)
        if result.energy_j is not None:
            self._energy.labels(result.energy_source).inc(result.energy_j)
        if result.first_token_s is not None:
            self._first_token.observe(result.first_token_s)
            streaming = result.total_s - result.first_token_s
            if result.generated_tokens > 1 and streaming > 0:
                self._speed.observe((result.generated_tokens - 1) / streaming)

    def refused(self, platform: str, reason: str) -> None:
        self._refused.labels(platform, reason).inc()

    def error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Read at scrape time from the daemon's status snapshot."""

    def __init__(self, status: Callable[[], DaemonStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield GaugeMetricFamily(
            "hearthbot_queue_depth", "Messages waiting for an answer.", value=status.queued
        )
        yield GaugeMetricFamily(
            "hearthbot_generating",
            "Answers being generated now (slots busy).",
            value=status.answering,
        )
        yield GaugeMetricFamily(
            "hearthbot_slots", "Answers that may be generated at once.", value=status.slots
        )
        if (engine := status.engine) is not None:
            yield GaugeMetricFamily(
                "hearthbot_engine_slots_busy",
                "Generations the model engine is running now.",
                value=engine.slots_busy,
            )
            yield GaugeMetricFamily(
                "hearthbot_engine_batch_size",
                "Sequences in the engine's latest decode step (0: not known).",
                value=engine.batch_size,
            )
            yield GaugeMetricFamily(
                "hearthbot_engine_tokens_per_second",
                "Tokens generated per second lately, all answers together.",
                value=engine.tokens_per_s,
            )
        connected = GaugeMetricFamily(
            "hearthbot_adapter_connected",
            "1 when the chat platform connection is up.",
            labels=["platform"],
        )
        for name, up in status.adapters.items():
            connected.add_metric([name], int(up))
        yield connected

    def describe(self) -> Iterator[Metric]:
        return iter(())  # state changes shape (adapters); never pre-described
