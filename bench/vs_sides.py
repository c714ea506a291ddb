"""The two sides bench.vs_server compares, behind one `ask(channel, text)`: hearthbot's whole
daemon, and llama-server's `/completion` fed the prompts hearthbot rendered.

llama-server gets, for a channel's k-th question, the exact messages of hearthbot's k-th
request in that channel (persona, seeded history, the questions), with hearthbot's replies to
the benchmark's earlier questions swapped for llama-server's own (as a bot in front of it would
send), rendered and tokenized with the model's template by hearthbot's ChatText and sent as
token ids: the same prompt, token for token, where the conversations agree.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import RESULTS
from bench.pipeline import Bench
from bot.model.template import ChatText
from bot.model.types import GenerationRequest
from bot.personas import Sampling
from bot.store import Store

# What the persona in bench.pipeline samples with (its defaults), sent to llama-server as such.
PENALTY_LAST_N = 64


@dataclass
class Answer:
    """One question's timings: sent, first text shown, done (perf_counter), tokens generated,
    and prompt tokens evaluated (not found in the KV cache)."""

    sent: float
    first: float
    done: float
    tokens: int
    evaluated: int

    @property
    def ttft(self) -> float:
        return self.first - self.sent


class HearthbotSide:
    """The whole daemon (queue, context builder, engine), as `hearthbot run` wires it."""

    name = "hearthbot"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.bench.engine.force = {"ban_eos": True}  # every reply is max_tokens long
        self.finals: dict[str, list[str]] = defaultdict(list)  # each channel's stored replies

    async def settle(self) -> None:
        """Until the daemon's model is idle, with nothing left to read ahead: before either
        side is timed, so that neither shares the cores with the other (reading ahead after
        hearthbot's burst made llama-server's next burst 3x slower)."""
        while not self.bench.engine.quiet():  # noqa: ASYNC110 (the model thread sets no event)
            await asyncio.sleep(0.05)
        await self.bench.engine.ping()

    async def seed(self, channel: str, pairs: Sequence[tuple[str, str]]) -> None:
        """An earlier conversation, stored as the daemon would have (no model time)."""
        store: Store = self.bench.daemon.store
        for question, answer in pairs:
            message = self.bench.message(channel, "ana", question)
            row = await store.accept(message, question)
            assert row is not None
            await store.complete(row, message.channel_key, answer)

    async def ask(self, channel: str, text: str, shown: asyncio.Event | None = None) -> Answer:
        message = self.bench.message(channel, "ana", text)
        sent = time.perf_counter()
        await self.bench.daemon.handle(message)
        reply = self.bench.adapter.replies[message.message_id]
        while shown is not None and reply.first_at is None:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if shown is not None:
            shown.set()
        await reply.done.wait()
        done = time.perf_counter()
        stored = await self.bench.daemon.store.history(message.channel_key)
        self.finals[channel].append(next(m.text for m in reversed(stored) if m.role == "assistant"))
        generation = self.requests(channel)[-1]
        assert reply.first_at is not None
        result = generation.result
        evaluated = result.prompt_tokens - result.reused_tokens
        return Answer(sent, reply.first_at, done, result.generated_tokens, evaluated)

    def requests(self, channel: str) -> list[Any]:
        return [
            g for g in self.bench.engine.generations if g.request.cache_key == f"bench:{channel}"
        ]

    def script(self) -> dict[str, list[GenerationRequest]]:
        """Every channel's requests in order, for the other side to replay."""
        out: dict[str, list[GenerationRequest]] = defaultdict(list)
        for g in self.bench.engine.generations:
            assert g.request.cache_key is not None
            out[g.request.cache_key.removeprefix("bench:")].append(g.request)
        return out


class ServerSide:
    """llama-server's /completion with prompt caching, streamed: hearthbot's prompts."""

    name = "llama-server"

    def __init__(
        self,
        url: str,
        text: ChatText,
        script: dict[str, list[GenerationRequest]],
        sampling: Sampling,
    ) -> None:
        self.url = url
        self.text = text
        self.script = script
        self.sampling = sampling
        self.replies: dict[str, list[str]] = defaultdict(list)

    async def seed(self, channel: str, pairs: Sequence[tuple[str, str]]) -> None:
        pass  # the history is in hearthbot's requests

    def replays(self, finals: dict[str, list[str]]) -> tuple[int, int]:
        """With hearthbot's own replies in place of llama-server's, how many of the prompts
        built here equal hearthbot's, of how many: a check of the swapping (no server)."""
        same = total = 0
        for channel, requests in self.script.items():
            for k, request in enumerate(requests):
                self.replies[channel] = finals[channel][:k]
                same += self.prompt(channel) == list(request.prompt or [])
                total += 1
        self.replies.clear()
        return same, total

    def prompt(self, channel: str) -> list[int]:
        """hearthbot's next request in this channel, with llama-server's own earlier replies."""
        own = self.replies[channel]
        request = self.script[channel][len(own)]
        messages = [dict(m) for m in request.messages]
        assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        for index, reply in zip(assistants[len(assistants) - len(own) :], own, strict=True):
            messages[index]["content"] = reply
        return self.text.prompt_tokens(messages)

    async def ask(self, channel: str, text: str, shown: asyncio.Event | None = None) -> Answer:
        prompt = self.prompt(channel)
        body = {
            "prompt": prompt,
            "n_predict": self.sampling.max_tokens,
            "ignore_eos": True,
            "cache_prompt": True,
            "stream": True,
            "temperature": self.sampling.temperature,
            "top_k": self.sampling.top_k,
            "top_p": self.sampling.top_p,
            "min_p": self.sampling.min_p,
            "repeat_penalty": self.sampling.repeat_penalty,
            "repeat_last_n": PENALTY_LAST_N,
            "seed": len(self.replies[channel]) + 7,
        }
        text_so_far = ""
        first: float | None = None
        tokens = evaluated = 0
        sent = time.perf_counter()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/completion", json=body) as response,
        ):
            response.raise_for_status()
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line.removeprefix("data:"))
                text_so_far += event.get("content", "")
                if first is None and text_so_far.lstrip():
                    first = time.perf_counter()  # as the daemon shows text: not whitespace
                    if shown is not None:
                        shown.set()
                if event.get("stop"):
                    tokens = int(event.get("tokens_predicted", 0))
                    evaluated = int(event.get("timings", {}).get("prompt_n", 0))
        done = time.perf_counter()
        self.replies[channel].append(text_so_far.strip())
        return Answer(sent, first or done, done, tokens, evaluated)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A llama-server process: started with the given flags, stopped on exit."""

    def __init__(self, exe: Path, args: list[str]) -> None:
        self.port = free_port()
        self.command = [str(exe), *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Server:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log = open(RESULTS / "llama-server.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
            self.command, stdout=self.log, stderr=subprocess.STDOUT
        )
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"llama-server exited: see {self.log.name}")
                try:
                    async with session.get(f"{self.url}/health") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

    async def __aexit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def version_of(exe: Path) -> str:
    """llama-server's `--version` line (build number and commit)."""
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return next((line for line in lines if line.lower().startswith("version")), "unknown")
