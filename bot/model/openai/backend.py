"""The scale-out backend: an OpenAI-compatible server generates, everything else stays here.

The prompt is rendered and counted locally with the GGUF's own template and vocabulary
(opened `vocab_only`: no weights in memory) and sent to `/v1/completions` as token ids, so a
server that serves the same GGUF evaluates exactly the tokens the context builder counted, and
marker syntax typed in a message stays text (bot.model.template). A server that takes only a
text prompt (`python -m llama_cpp.server` refuses token ids) gets the rendered text instead, and
parses such syntax again: a warning says so once. `/v1/chat/completions` would let the server
template the messages its own way, and trimming to the context window would become a guess.

Text streams back as server-sent events into the same `Generation` the in-process backend
uses. Stop strings go to the server and are also scanned here, so another speaker's turn
never shows even where a server ignores them. Up to `parallel` replies stream at once, for
servers that batch them (llama-server with -np, vLLM, Ollama with OLLAMA_NUM_PARALLEL).
Pictures go only to a llama-server whose /props says it sees images (bot.model.openai.pictures),
or, with `openai_api = "chat"`, as `image_url` parts to /v1/chat/completions, where counts are
approximate (bot.model.openai.chat).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import llama_cpp
import structlog

from bot import logs
from bot.masking import mask_url
from bot.model.gguf import ModelFileError, inspect_model
from bot.model.openai import chat, pictures
from bot.model.openai.errors import ServerError, refusal, server_at, server_errors
from bot.model.openai.fields import shared_fields
from bot.model.openai.pictures import ServerVision, count
from bot.model.openai.sse import json_object, read_chunk, sse_data
from bot.model.template import ChatText, UsesChatText, open_vocab
from bot.model.types import (
    EngineStats,
    FinishReason,
    Generation,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
)
from bot.model.writer import GenerationWriter, Throughput

log = structlog.get_logger(__name__)

# How a server that takes only text refuses a prompt of token ids: 400 or 422 (its
# validation error); llama_cpp.server says 500.
IDS_REFUSED = (400, 422, 500)
PROPS_TIMEOUT_S = 5.0  # /props at load: a server that stalls delays a start this long at most


@dataclass(eq=False)
class StreamingGeneration(Generation):
    """A Generation fed by an HTTP stream: cancelling also cancels the request, which closes
    the connection, and the server stops generating."""

    task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        super().cancel()
        if self.task is not None:
            # Like Generation.cancel, safe from any thread.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs anyway
                self.loop.call_soon_threadsafe(self.task.cancel)


def api_root(base_url: str) -> str:
    """`http://host:8080` and `http://host:8080/v1/` both mean `http://host:8080/v1`."""
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


class OpenAIBackend(UsesChatText):
    """The backend that has an OpenAI-compatible server generate. Create with
    `await OpenAIBackend.load(...)`."""

    def __init__(
        self,
        vocab: llama_cpp.Llama,
        text: ChatText,
        info: ModelInfo,
        base_url: str,
        api_key: str | None,
        model: str | None,
        timeout_s: float,
        parallel: int = 1,
        api: Literal["completions", "chat"] = "completions",
    ) -> None:
        self._vocab = vocab
        self._text = text
        self.info = info
        self.base_url = base_url
        self.root = api_root(base_url)
        self.model = model
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # sock_read bounds the wait for every piece, so a stalled server is noticed mid-reply
        # too; there is no total limit, since a long reply legitimately takes minutes.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        # trust_env=False: no proxy from the environment; only base_url is ever contacted.
        self._session = aiohttp.ClientSession(headers=headers, timeout=timeout, trust_env=False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._count_warned = False
        self.slots = parallel
        # More replies than slots wait here, not on the server's side of a connection.
        self._streams = asyncio.Semaphore(parallel)
        self._streaming = 0
        self._meter = Throughput()
        self.ids_accepted = False  # the server took a prompt of token ids
        self.text_only = False  # it refused one and took text: it gets text from now on
        self.vision = ServerVision()  # what its /props says of pictures (asked at load)
        self.api = api
        self.endpoint = chat.ENDPOINT if api == "chat" else "completions"

    @classmethod
    async def load(
        cls,
        path: Path,
        base_url: str,
        n_ctx: int,
        api_key: str | None = None,
        model: str | None = None,
        timeout_s: float = 60.0,
        parallel: int = 1,
        api: Literal["completions", "chat"] = "completions",
        vision: bool = False,
    ) -> OpenAIBackend:
        """Open the GGUF's vocabulary (fast, no weights), and ask the server's /props whether
        it sees images (the chat `api`: `vision` says). A server down at start is reported per
        reply, not as a failed start (it is then text only until the next start)."""
        logs.register_secret(api_key)
        summary = await asyncio.to_thread(inspect_model, path)
        try:
            vocab = await asyncio.to_thread(open_vocab, path)
        except Exception as exc:
            problem = f"llama.cpp could not read the vocabulary of {path}: {exc}"
            raise ModelFileError(problem) from None
        text = ChatText(vocab)
        info = ModelInfo(
            path=path,
            name=model or vocab.metadata.get("general.name") or path.stem,
            description=f"served by {mask_url(base_url)}",  # shown by !status
            n_params=int(llama_cpp.llama_model_n_params(vocab.model)),
            size_bytes=summary.size_bytes,
            n_ctx=n_ctx,
            n_threads=0,  # the server's business
            quantization=text.quantization,
        )
        backend = cls(vocab, text, info, base_url, api_key, model, timeout_s, parallel, api)
        if api == "chat":  # a generic server has no /props to ask
            backend.vision = ServerVision(sees_images=vision)
            backend.info = chat.chat_info(info, base_url, vision)
        else:
            await backend.ask_vision()
        return backend

    async def ask_vision(self) -> None:
        """llama-server's /props (at the server's root, beside /v1): whether it sees images
        and its media marker. Any failure (another server, none there) means text only."""
        url = f"{self.root.removesuffix('/v1')}/props"
        wait = aiohttp.ClientTimeout(total=min(self.timeout_s, PROPS_TIMEOUT_S))
        try:
            async with self._session.get(url, timeout=wait) as response:
                props = await response.json(content_type=None) if response.status == 200 else {}
        except Exception as exc:  # down, not JSON, refused: no pictures, and the reply says why
            log.info("the model server's /props did not answer", error=type(exc).__name__)
            props = None
        self.vision = pictures.read_props(props if isinstance(props, dict) else {})
        self.info = pictures.seen_by(self.info, self.vision)

    # -- text: the same template and vocabulary as the served GGUF --------------------------

    def prompt_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The rendered prompt as the server should get it: servers add BOS themselves when
        the vocabulary asks for it (as our tokenize does), so a BOS the template wrote is
        dropped rather than doubled."""
        text = self.render(messages)
        bos = self._text.bos_text
        return text.removeprefix(bos) if bos else text

    # -- the server's side of the cache ------------------------------------------------------

    async def forget(self, key: str | None = None) -> None:
        """The prompts' tokens kept here go; the server's prompt cache is its own."""
        self.forget_text()

    def cache_state(self, key: str) -> str:
        return "kept by the model server"

    def stats(self) -> EngineStats:
        """Streams open and text pieces per second; how the server batches them is its own."""
        return EngineStats(self._streaming, batch_size=0, tokens_per_s=self._meter.per_s())

    # -- generation ------------------------------------------------------------------------

    def payload(self, request: GenerationRequest, as_text: bool = False) -> dict[str, Any]:
        """The /v1/completions body for a request: its prompt as token ids, or `as_text` for
        a server that takes only text; or the chat API's, its messages."""
        fields = shared_fields(request, self.model, self._text.eog_tokens)
        if self.api == "chat":
            messages = chat.chat_messages(request, self.vision.sees_images, self.base_url)
            return {"messages": messages, **fields}
        prompt: Any = self.prompt_text(request.messages) if as_text else None
        if request.images:  # llama-server's prompt object, the only way pictures go
            prompt = pictures.prompt_object(request, self.vision, self.base_url, self.prompt_text)
        elif not as_text:
            prompt = self.request_tokens(request)
        return {"prompt": prompt, **fields}

    def start(self, request: GenerationRequest) -> Generation:
        generation = StreamingGeneration(request, asyncio.get_running_loop())
        task = asyncio.create_task(self._generate(generation), name="hearthbot-openai")
        generation.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return generation

    async def _generate(self, gen: StreamingGeneration) -> None:
        writer = GenerationWriter(gen, self._meter)
        try:
            request, shown = gen.request, count(gen.request.images)
            text = self.prompt_tokens(request.messages) if shown else self.request_tokens(request)
            gen.result.prompt_tokens = len(text) + shown * self.info.image_tokens
            async with self._streams:
                self._streaming += 1
                try:
                    gen.result.finish = await self._stream(gen, writer)
                finally:
                    self._streaming -= 1
        except asyncio.CancelledError:  # gen.cancel(), or shutting down
            gen.result.finish = "cancelled"
        except ServerError as exc:
            writer.fail(str(exc))
        except Exception as exc:  # whatever breaks, the reply ends as an error, never complete
            writer.fail(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()

    async def _stream(self, gen: StreamingGeneration, writer: GenerationWriter) -> FinishReason:
        """Read the reply; `generated_tokens` is the server's count when it reports one, else
        the streamed pieces (servers send one per token, or fewer while holding back text). A
        stream that ends before the server says why was cut short: an error."""
        finish: FinishReason | None = None
        with server_errors(self.base_url, self.timeout_s):
            async with await self._post(gen.request) as response:
                if response.status != 200:
                    raise ServerError(await self._refusal(response, self.endpoint))
                async for data in sse_data(response.content):
                    chunk = read_chunk(data, self.base_url)
                    if chunk is None:
                        break
                    for piece in chunk.texts:
                        if writer.write(piece):
                            # The model began another turn: hang up, the server stops.
                            response.close()
                            return "stop"
                    finish = chunk.finish or finish
                    if chunk.usage:
                        self._note_usage(gen.result, chunk.usage, gen.request)
                    if gen.cancelled:
                        response.close()
                        return "cancelled"
        if finish is None:
            raise ServerError(f"{server_at(self.base_url)} ended the reply without saying why")
        return finish

    async def _post(self, request: GenerationRequest) -> aiohttp.ClientResponse:
        """Send the request with its prompt as token ids. A server that refuses those before
        it ever took them (IDS_REFUSED), and takes the text instead, gets text from then on."""
        url = f"{self.root}/{self.endpoint}"
        if request.images or self.api == "chat":  # a prompt object or messages: not token ids
            return await self._session.post(url, json=self.payload(request))
        if not self.text_only:
            response = await self._session.post(url, json=self.payload(request))
            if self.ids_accepted or response.status not in IDS_REFUSED:
                self.ids_accepted = response.status == 200 or self.ids_accepted
                return response
            response.release()
        response = await self._session.post(url, json=self.payload(request, as_text=True))
        if response.status == 200 and not self.text_only:
            self.text_only = True
            log.warning(
                "the model server takes prompts only as text: turn markers typed in messages"
                " (e.g. <|im_start|>) become control tokens there; llama-server and vLLM take"
                " token ids",
                base_url=self.base_url,
            )
        return response

    async def _refusal(self, response: aiohttp.ClientResponse, endpoint: str) -> str:
        body = (await response.text(errors="replace"))[:2000]
        url = f"{self.root}/{endpoint}"
        return refusal(response.status, body, response.reason, self.base_url, url)

    def _note_usage(
        self, result: GenerationResult, usage: dict[str, Any], request: GenerationRequest
    ) -> None:
        if isinstance(n := usage.get("completion_tokens"), int):
            result.generated_tokens = n
        details = usage.get("prompt_tokens_details") or {}
        if isinstance(cached := details.get("cached_tokens"), int):
            result.reused_tokens = cached
        counted = usage.get("prompt_tokens")
        if self.api == "chat" and isinstance(counted, int):  # its template's count: the truer one
            result.prompt_tokens = counted
            return
        if request.images and isinstance(counted, int):  # exact: the server's, with pictures
            result.prompt_tokens = counted
            text = len(self.prompt_tokens(request.messages))
            self.info = pictures.learned(self.info, counted - text, count(request.images))
            return
        if isinstance(counted, int) and counted != result.prompt_tokens and not self._count_warned:
            # Another model or tokenizer on the server: trimming is an estimate now.
            self._count_warned = True
            log.warning(
                "the model server counts prompts differently; is it serving the same GGUF?",
                server_count=counted,
                local_count=result.prompt_tokens,
            )

    async def models(self) -> list[str]:
        """The model names the server lists (GET /v1/models). Raises ServerError."""
        with server_errors(self.base_url, self.timeout_s):
            async with self._session.get(f"{self.root}/models") as response:
                if response.status != 200:
                    raise ServerError(await self._refusal(response, "models"))
                listing = json_object(await response.text(), self.base_url)
        return [str(m.get("id")) for m in listing.get("data") or () if isinstance(m, dict)]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()
        self._vocab.close()
