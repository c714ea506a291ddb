"""bot/logs.py: secrets never reach a log line, from structlog or from stdlib library loggers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bot import logs
from support.log_config import restored_logging


@pytest.fixture(autouse=True)
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_known_secrets", set())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    with restored_logging():
        yield


LONG_DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz012345"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (
            "GET https://m.org/_matrix/client/v3/sync?since=s1&access_token=syt_abc123&timeout=0",
            "syt_abc123",
            ["since=s1", "access_token=***", "&timeout=0"],
        ),
        ("url?token=t0ps3cret", "t0ps3cret", ["token=***"]),
        ("login password=hunter22 ok", "hunter22", ["password=***", " ok"]),
        ("x?API_KEY=k-99&y=1", "k-99", ["&y=1"]),
        ("Authorization: Bearer xyz.abc-123", "xyz.abc-123", ["Authorization: Bearer ***"]),
        ("header Bot " + LONG_DISCORD_TOKEN, LONG_DISCORD_TOKEN, ["header Bot ***"]),
        (
            "cannot reach http://bot:pw-in-url@gpu-box:8080/v1: refused",
            "pw-in-url",
            ["http://***@gpu-box:8080/v1: refused"],
        ),
        ("URL('https://user:pass@host/v1/models')", "user:pass", ["https://***@host/v1/models"]),
    ],
)
def test_scrub_patterns(text: str, secret: str, kept: list[str]) -> None:
    scrubbed = logs.scrub(text)
    assert secret not in scrubbed
    for part in kept:
        assert part in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "Bot is ready",  # "Bot" followed by a short word is not a token
        "prompt_tokens=512 reused_tokens=100",
        "nothing secret here",
    ],
)
def test_scrub_leaves_ordinary_text(text: str) -> None:
    assert logs.scrub(text) == text


def test_registered_secret_is_scrubbed_anywhere() -> None:
    logs.register_secret("s3cr3t-value")
    logs.register_secret("abc")  # too short to register: would mangle ordinary words
    logs.register_secret(None)
    assert logs.scrub("connecting with s3cr3t-value, then s3cr3t-value") == (
        "connecting with ***, then ***"
    )
    assert logs.scrub("abc def") == "abc def"


@pytest.mark.parametrize(
    ("key", "redacted"),
    [
        ("token", True),
        ("password", True),
        ("access_token", True),
        ("api_key", True),
        ("bot_token", True),
        ("Authorization", True),
        ("prompt_tokens", False),
        ("reused_tokens", False),
        ("generated_tokens", False),
        ("tokenizer", False),
        ("event", False),
    ],
)
def test_redact_by_key(key: str, redacted: bool) -> None:
    value = 1234 if key.endswith("tokens") else "plain-value"
    event = logs.redact(None, "info", {key: value})
    assert (event[key] == logs.REDACTED) is redacted
    if not redacted:
        assert event[key] == value


def test_redact_scrubs_values_of_other_keys() -> None:
    logs.register_secret("registered-secret")
    event = logs.redact(
        None,
        "info",
        {
            "event": "sync failed",
            "url": "https://h/x?access_token=SECRET",
            "note": "registered-secret",
        },
    )
    assert event == {"event": "sync failed", "url": "https://h/x?access_token=***", "note": "***"}


def json_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_configured_json_output_has_no_secrets(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.register_secret("registered-secret-1")
    logs.configure("info", "json")
    log = structlog.get_logger("hearthbot.test")
    log.info(
        "connected",
        access_token="SECRET1",
        homeserver="https://h/_matrix?access_token=SECRET2",
        detail="with registered-secret-1",
        prompt_tokens=12,
    )
    log.debug("hidden below info")
    logging.getLogger("x").warning("url https://h/_matrix?access_token=SECRET3")
    logging.getLogger("x").warning("auth %s", "Bearer SECRET4")  # formatted with its args

    captured = capsys.readouterr()
    assert captured.out == ""
    for secret in ("SECRET1", "SECRET2", "SECRET3", "SECRET4", "registered-secret-1"):
        assert secret not in captured.err
    first, second, third = json_lines(captured.err)  # one JSON object per line
    assert first["event"] == "connected"
    assert first["level"] == "info"
    assert first["logger"] == "hearthbot.test"
    assert first["access_token"] == logs.REDACTED
    assert first["homeserver"] == "https://h/_matrix?access_token=***"
    assert first["prompt_tokens"] == 12
    assert "timestamp" in first
    assert second["event"] == "url https://h/_matrix?access_token=***"
    assert (second["level"], second["logger"]) == ("warning", "x")
    assert third["event"] == "auth Bearer ***"


def test_configure_replaces_root_handlers_and_sets_level(restore_logging: None) -> None:
    logs.configure("warning", "json")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.WARNING
    logs.configure("debug", "console")  # configuring again does not stack handlers
    assert len(root.handlers) == 1
    assert root.level == logging.DEBUG


def test_exception_text_is_scrubbed(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info", "json")
    try:
        raise RuntimeError("request to https://h/?access_token=SECRET5 failed")
    except RuntimeError:
        structlog.get_logger("t").exception("boom")
    err = capsys.readouterr().err
    assert "SECRET5" not in err
    [line] = json_lines(err)
    assert "RuntimeError" in line["exception"]


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("{'access_token': 'syt_abc_def', 'device_id': 'X'}", "syt_abc_def"),
        ('{"password": "hunter2hunter2"}', "hunter2hunter2"),
        ('response {"refresh_token" : "rt_secret_1"}', "rt_secret_1"),
    ],
)
def test_scrub_redacts_secrets_printed_as_dicts(text: str, leaked: str) -> None:
    assert leaked not in logs.scrub(text)
    assert logs.REDACTED in logs.scrub(text)


def test_redact_descends_into_nested_values() -> None:
    event = {
        "event": "request",
        "headers": {"Authorization": "Bearer abc.def.ghi", "Accept": "json"},
        "urls": ["https://h/x?access_token=zzz"],
        "prompt_tokens": 12,
    }
    out = logs.redact(None, "info", event)
    assert out["headers"]["Authorization"] == logs.REDACTED
    assert out["headers"]["Accept"] == "json"
    assert "zzz" not in out["urls"][0]
    assert out["prompt_tokens"] == 12


def test_a_logger_follows_logging_configured_again(restore_logging: None) -> None:
    """A module's logger used once keeps following the configuration: cached on first use, it
    went on writing through the first one, so a later capture (and every later test's) saw
    nothing of it."""
    log = structlog.get_logger("hearthbot.test.reconfigured")
    logs.configure("info", "json")
    log.info("first")
    logs.configure("info", "console")  # as a test restoring the configuration did
    with structlog.testing.capture_logs() as captured:
        log.info("second", answered=1)
    assert [(e["event"], e.get("answered")) for e in captured] == [("second", 1)]
