"""Credentials in URLs (`http://user:password@host`): bot/masking.py masks them, and no place
that shows a URL shows them: `hearthbot check`, the log of a failed reply, error messages,
`!status`. (Metrics labels carry no URL.)"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot import logs, texts
from bot.app.cli import check
from bot.masking import mask_url
from bot.model.openai.backend import OpenAIBackend
from bot.model.openai.errors import ServerError, refusal, server_at, server_errors
from bot.settings import load_settings
from support.daemons import ask, daemon_for
from support.llama_server import free_port
from support.log_config import restored_logging
from support.recording_adapter import message


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:pass@gpu-box:8080/v1", "http://***@gpu-box:8080/v1"),
        ("https://token@host/v1", "https://***@host/v1"),  # a user alone may be a token
        ("http://u:p%40ss@host", "http://***@host"),  # escaped, as it should be
        ("http://u:p@ss@host/x@y", "http://***@host/x@y"),  # unescaped: up to the last @
        ("HTTP://U:P@H", "HTTP://***@H"),
        ("http://u:p@[::1]:8080/v1", "http://***@[::1]:8080/v1"),
        (
            "cannot reach http://a:b@h1/v1 nor https://c:d@h2",
            "cannot reach http://***@h1/v1 nor https://***@h2",
        ),
        ("URL('http://a:b@h/v1/completions')", "URL('http://***@h/v1/completions')"),
        ('{"base_url": "http://a:b@h/v1", "x": 1}', '{"base_url": "http://***@h/v1", "x": 1}'),
        # Nothing to mask:
        ("http://gpu-box:8080/v1", "http://gpu-box:8080/v1"),
        ("https://h/path/with@sign?to=a@b#c@d", "https://h/path/with@sign?to=a@b#c@d"),
        ("mail alice@example.org", "mail alice@example.org"),
        (
            "@bot:example.org on https://matrix.example.org",
            "@bot:example.org on https://matrix.example.org",
        ),
        ("", ""),
    ],
)
def test_mask_url(text: str, masked: str) -> None:
    assert mask_url(text) == masked


# -- every place a URL is shown ------------------------------------------------------------------

PASSWORD = "pw-in-url-0123"


def with_credentials(url: str) -> str:
    """`http://127.0.0.1:port/v1` with a user and PASSWORD in it."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://hearthbot:{PASSWORD}@{rest}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HEARTHBOT_") or name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """Log lines as JSON on stderr, captured (so the handler writes to capsys' stderr)."""
    with restored_logging():
        logs.configure("info", "json")  # debug: aiosqlite's thread would log after the test
        yield capsys


def test_error_messages_mask_the_url() -> None:
    base = with_credentials("http://gpu-box:8080/v1")
    assert server_at(base) == "the model server at http://***@gpu-box:8080/v1"
    refused = refusal(404, "", "Not Found", base, f"{base}/completions")
    assert PASSWORD not in refused and "http://***@gpu-box:8080/v1/completions" in refused
    with pytest.raises(ServerError) as caught, server_errors(base, 1.0):
        raise aiohttp.ClientPayloadError(f"connection to {base} lost")
    assert PASSWORD not in str(caught.value)
    assert str(caught.value).endswith("connection to http://***@gpu-box:8080/v1 lost")


async def models_server() -> tuple[web.AppRunner, str]:
    """An OpenAI-compatible server that only lists its models."""

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "tiny"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("served", [True, False], ids=["server-answers", "server-down"])
async def test_check_prints_no_url_credentials(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], served: bool
) -> None:
    runner, url = await models_server() if served else (None, f"http://127.0.0.1:{free_port()}/v1")
    settings = load_settings(
        None,
        bot={"data_dir": tmp_path / "data"},
        model={"path": tiny_model, "backend": "openai", "base_url": with_credentials(url)},
        health={"listen": f"127.0.0.1:{free_port()}"},
    )
    try:
        await check(settings, None)
    finally:
        if runner is not None:
            await runner.cleanup()
    out = capsys.readouterr().out
    masked = url.replace("http://", "http://***@")
    assert f'"base_url": "{masked}"' in out  # the settings, as printed
    server_line = (
        f"✓ server: {masked} answers"
        if served
        else f"✗ server: cannot reach the model server at {masked}"
    )
    assert server_line in out
    assert PASSWORD not in out


async def test_a_failed_reply_logs_no_url_credentials(
    tmp_path: Path, tiny_model: Path, json_logs: pytest.CaptureFixture[str]
) -> None:
    url = with_credentials(
        f"http://127.0.0.1:{free_port()}/v1"
    )  # nobody listens: every reply fails
    down = await OpenAIBackend.load(tiny_model, url, n_ctx=2048)
    async with daemon_for(tmp_path, tiny_model, backend=down) as (daemon, adapter):
        for text in ("anyone there?", "hello?"):
            msg = message(text)
            await daemon.handle(msg)
            (record,) = adapter.for_message(msg.message_id)
            await asyncio.wait_for(record.done.wait(), 30)
            assert record.failed == texts.GENERATION_FAILED
        status = await ask(daemon, adapter, "!status")  # names the server it is served by
    captured = json_logs.readouterr()
    assert "http://***@127.0.0.1" in status
    assert '"answering failed"' in captured.err  # the failures were logged
    assert PASSWORD not in status + captured.out + captured.err
