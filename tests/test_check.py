"""`hearthbot check` (bot/app/check/): good and bad setups with the real tiny model, a real
llama_cpp.server for the openai backend, and fake login endpoints on 127.0.0.1 for --online."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app.check import diagnose
from bot.app.check.config import admin_command_warnings, secrets_in_file
from bot.app.check.host import port_free
from bot.app.check.report import Report
from bot.settings import Settings, load_settings
from support.llama_server import free_port, llama_server

TOKEN = "discord-token-0123456789abcdef"
PASSWORD = "matrix-password-0123"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HEARTHBOT_") or name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings_for(
    tmp_path: Path, gguf: Path, config: Path | None = None, **sections: dict[str, Any]
) -> Settings:
    sections["bot"] = {"data_dir": tmp_path / "data", **sections.get("bot", {})}
    sections["model"] = {"path": gguf, "n_ctx": 2048, "n_threads": 2, **sections.get("model", {})}
    # A free port, so the result never depends on what else runs on this machine.
    sections.setdefault("health", {"listen": f"127.0.0.1:{free_port()}"})
    return load_settings(config, **sections)


def by_name(report: Report) -> dict[str, tuple[bool, str]]:
    return {check.name: (check.ok, check.detail) for check in report.checks}


async def test_a_good_setup_passes_every_check(tmp_path: Path, tiny_model: Path) -> None:
    report = await diagnose(settings_for(tmp_path, tiny_model), None)
    checks = by_name(report)
    assert all(ok for ok, _ in checks.values()), report.lines()
    assert report.exit_code() == 0 and report.lines()[-1] == "ok"
    assert set(checks) == {
        "config",
        "personas",
        "data_dir",
        "memory",
        "model",
        "context",
        "size",
    } | {
        "adapters",
        "health",
        "device",
        "vram",
        "offload",
        "energy",
    }
    source, why = checks["energy"][1].split(": ", 1)
    assert source in ("rapl", "nvml", "estimated") and why
    assert "hearthbot-tiny-test" in checks["model"][1] and "F16" in checks["model"][1]
    assert "parameters" in checks["model"][1]
    assert checks["context"][1] == "2,048 tokens, 2 threads"
    assert "GiB available" in checks["memory"][1] and "needs about" in checks["memory"][1]
    assert "assistant" in checks["personas"][1]
    assert report.warnings == []
    assert report.lines()[0].startswith("✓ config: ")


def occupied_port() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("setup", "failed", "expected", "exit_code"),
    [
        # A regular file where the data directory should be (root could write anywhere else).
        ("data_dir_is_a_file", "data_dir", "is not writable: not a directory", 1),
        ("missing_model", "model", "model file not found", 1),
        ("corrupt_model", "model", "corrupt or not a GGUF", 1),
        ("occupied_health_port", "health", "address already in use", 1),
        ("unknown_default_persona", "personas", "no persona named 'nobody'", 2),
        ("matrix_without_password", "matrix", "set [matrix] password", 1),
        ("openai_server_down", "server", "connection refused", 1),
    ],
)
async def test_bad_setups_fail_with_a_clear_line(
    tmp_path: Path, tiny_model: Path, setup: str, failed: str, expected: str, exit_code: int
) -> None:
    sections: dict[str, Any] = {}
    held: socket.socket | None = None
    if setup == "data_dir_is_a_file":
        (tmp_path / "file").write_text("x")
        sections["bot"] = {"data_dir": tmp_path / "file"}
    elif setup == "missing_model":
        sections["model"] = {"path": tmp_path / "nope.gguf"}
    elif setup == "corrupt_model":
        (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 10)
        sections["model"] = {"path": tmp_path / "bad.gguf"}
    elif setup == "occupied_health_port":
        held, listen = occupied_port()
        sections["health"] = {"listen": listen}
    elif setup == "unknown_default_persona":
        sections["bot"] = {"default_persona": "nobody"}
    elif setup == "matrix_without_password":
        sections["matrix"] = {"homeserver": "http://127.0.0.1:1", "allowed_users": ["@a:x"]}
    elif setup == "openai_server_down":
        url = f"http://127.0.0.1:{free_port()}/v1"
        sections["model"] = {"backend": "openai", "base_url": url}
    try:
        report = await diagnose(settings_for(tmp_path, tiny_model, **sections), None)
    finally:
        if held is not None:
            held.close()
    checks = by_name(report)
    ok, detail = checks[failed]
    assert not ok and expected in detail, report.lines()
    assert [c.name for c in report.failed] == [failed]
    assert report.exit_code() == exit_code
    assert f"✗ {failed}: {detail}" in report.lines()
    assert report.lines()[-1] == "1 check failed"


async def test_world_readable_config_with_a_token_is_a_warning(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = tmp_path / "hearthbot.toml"
    config.write_text(f'[discord]\ntoken = "{TOKEN}"\n[model]\napi_key = "sk-abcd"\n')
    config.chmod(0o644)
    report = await diagnose(settings_for(tmp_path, tiny_model, config), config)
    (warning,) = report.warnings
    assert "discord.token, model.api_key" in warning and "mode 0644" in warning
    assert "chmod 600" in warning
    assert report.exit_code() == 0  # a warning, not a failure
    assert by_name(report)["discord"] == (True, "token set (--online logs in)")
    assert TOKEN not in "\n".join(report.lines())
    # Private again: no warning.
    config.chmod(0o600)
    assert (await diagnose(settings_for(tmp_path, tiny_model, config), config)).warnings == []


def test_secrets_in_file_ignores_other_keys_and_empty_values(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[matrix]\npassword = ""\naccess_token = "t0k3n"\nuser_id = "@a:b"\n'
        '[discord]\napi_base = "http://x"\n[nosuch]\ntoken = "x"\n'
    )
    assert secrets_in_file(config) == ["matrix.access_token"]


@pytest.mark.parametrize(
    ("allowed_users", "warning"),
    [
        ([], "[matrix] allowed_users is empty: the bot joins no room and answers nobody"),
        (["@*:*"], "[matrix] allowed_users lets in everyone on every homeserver"),
        (["@alice:x", "*"], "[matrix] allowed_users lets in everyone on every homeserver"),
        (["@*:example.org"], None),
    ],
)
async def test_matrix_allowed_users_warnings(
    tmp_path: Path, tiny_model: Path, allowed_users: list[str], warning: str | None
) -> None:
    matrix = {
        "homeserver": "http://127.0.0.1:1",
        "user_id": "@bot:x",
        "password": PASSWORD,
        "allowed_users": allowed_users,
    }
    report = await diagnose(settings_for(tmp_path, tiny_model, matrix=matrix), None)
    assert report.warnings == ([warning] if warning else [])
    assert by_name(report)["matrix"] == (True, "@bot:x on http://127.0.0.1:1 (--online logs in)")
    if warning:
        assert f"warning: {warning}" in report.lines()


def test_port_free() -> None:
    held, listen = occupied_port()
    try:
        busy = port_free(listen)
    finally:
        held.close()
    assert not busy.ok and "hearthbot already running?" in busy.detail
    assert port_free(f"127.0.0.1:{free_port()}").ok
    assert not port_free("nonsense").ok


# -- the openai backend: a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(tiny_model, tmp_path_factory.mktemp("server")) as url:
        yield url


async def test_openai_backend_server_is_reached(
    tmp_path: Path, tiny_model: Path, server: str
) -> None:
    model = {"backend": "openai", "base_url": server, "model": "other", "api_key": "sk-1234"}
    report = await diagnose(settings_for(tmp_path, tiny_model, model=model), None)
    checks = by_name(report)
    assert report.exit_code() == 0, report.lines()
    assert checks["server"] == (True, f"{server} answers; models: {tiny_model}")
    assert "vocabulary and template only" in checks["tokenizer"][1]
    assert "memory" not in checks and "model" not in checks  # nothing is loaded here
    assert checks["energy"] == (True, "not measured: a remote server generates")
    assert checks["context"] == (True, "2,048 tokens (must not exceed the server's)")
    assert report.warnings == [
        f"[model] model = 'other' is not among the server's models ({tiny_model})"
    ]


async def test_openai_chat_api_says_its_counts_are_approximate(
    tmp_path: Path, tiny_model: Path, server: str
) -> None:
    model = {"backend": "openai", "base_url": server, "openai_api": "chat"}
    report = await diagnose(settings_for(tmp_path, tiny_model, model=model), None)
    assert report.exit_code() == 0, report.lines()
    assert by_name(report)["context"] == (
        True,
        "2,048 tokens (must not exceed the server's; counts approximate: openai_api = chat)",
    )


# -- --online: fake login endpoints -----------------------------------------------------------


@pytest.fixture
async def fake_platforms() -> AsyncIterator[str]:
    """/users/@me like Discord's REST API and the Matrix client API's login endpoints."""

    async def users_me(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return web.json_response({"id": "42", "username": "hearthbot", "bot": True})

    async def whoami(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer good-token":
            body = {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}
            return web.json_response(body, status=401)
        return web.json_response({"user_id": "@bot:x", "device_id": "D"})

    logged_out: list[str] = []

    async def login(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("password") != PASSWORD:
            error = {"errcode": "M_FORBIDDEN", "error": "Invalid username or password"}
            return web.json_response(error, status=403)
        user = body["identifier"]["user"]
        return web.json_response({"user_id": user, "access_token": "fresh", "device_id": "T"})

    async def logout(request: web.Request) -> web.Response:
        logged_out.append(request.headers.get("Authorization", ""))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v10/users/@me", users_me)
    app.router.add_get("/_matrix/client/v3/account/whoami", whoami)
    app.router.add_post("/_matrix/client/v3/login", login)
    app.router.add_post("/_matrix/client/v3/logout", logout)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
    assert all(header == "Bearer fresh" for header in logged_out)


@pytest.mark.parametrize(
    ("token", "ok", "detail"),
    [
        (TOKEN, True, "logged in as hearthbot (id 42)"),
        ("revoked-" + TOKEN, False, "Discord refused the token (HTTP 401)"),
    ],
)
async def test_online_discord_login(
    tmp_path: Path, tiny_model: Path, fake_platforms: str, token: str, ok: bool, detail: str
) -> None:
    discord = {"token": token, "api_base": f"{fake_platforms}/api/v10"}
    report = await diagnose(settings_for(tmp_path, tiny_model, discord=discord), None, online=True)
    check_ok, check_detail = by_name(report)["discord"]
    assert check_ok is ok and detail in check_detail
    assert report.exit_code() == (0 if ok else 1)
    assert token not in "\n".join(report.lines())
    if not ok:
        assert "✗ discord: Discord refused the token (HTTP 401)" in "\n".join(report.lines())


@pytest.mark.parametrize(
    ("matrix", "ok", "detail"),
    [
        ({"access_token": "good-token"}, True, "access token works for @bot:x"),
        (
            {"access_token": "bad-token"},
            False,
            "the homeserver refused the access token: M_UNKNOWN_TOKEN: Invalid access token "
            "passed.",
        ),
        (
            {"user_id": "@bot:x", "password": PASSWORD},
            True,
            "logged in as @bot:x with the password and out again",
        ),
        (
            {"user_id": "@bot:x", "password": "wrong"},
            False,
            "login as @bot:x was refused: M_FORBIDDEN: Invalid username or password",
        ),
    ],
)
async def test_online_matrix_login(
    tmp_path: Path,
    tiny_model: Path,
    fake_platforms: str,
    matrix: dict[str, str],
    ok: bool,
    detail: str,
) -> None:
    matrix = {"homeserver": fake_platforms, "allowed_users": ["@a:x"], **matrix}
    report = await diagnose(settings_for(tmp_path, tiny_model, matrix=matrix), None, online=True)
    assert by_name(report)["matrix"] == (ok, detail)


async def test_online_platform_unreachable(tmp_path: Path, tiny_model: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    discord = {"token": TOKEN, "api_base": url}
    report = await diagnose(settings_for(tmp_path, tiny_model, discord=discord), None, online=True)
    ok, detail = by_name(report)["discord"]
    assert not ok and detail.startswith(f"cannot reach {url}/users/@me")


# -- the command ---------------------------------------------------------------------------------


def test_check_command_exits_non_zero_with_a_cross(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHBOT_")} | {
        "HOME": str(tmp_path),
        "HEARTHBOT_MODEL__PATH": str(tiny_model),
        "HEARTHBOT_MODEL__N_CTX": "2048",
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path / "file"),
        "HEARTHBOT_HEALTH__LISTEN": f"127.0.0.1:{free_port()}",
        "HEARTHBOT_DISCORD__TOKEN": TOKEN,
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot.app.cli", "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("✗ data_dir: ") for line in lines)
    assert any(line.startswith("✓ model: ") for line in lines)
    assert lines[-1] == "1 check failed"
    assert '"token": "**********"' in result.stdout and TOKEN not in result.stdout


@pytest.mark.parametrize(
    ("admin_commands", "opened"),
    [
        (["persona", "temperature", "seed", "trigger", "autothread"], ""),
        (["persona", "temperature", "seed", "trigger", "autothread", "forget"], ""),
        (["persona", "temperature", "seed", "trigger"], "!autothread"),  # written before it
        ([], "!persona, !temperature, !seed, !trigger, !autothread"),
    ],
)
def test_a_setting_command_left_open_is_warned_about(
    admin_commands: list[str], opened: str
) -> None:
    (warning,) = admin_command_warnings(admin_commands) or [""]
    assert warning.startswith(f"[bot] admin_commands leaves {opened} open to everyone") == bool(
        opened
    )
    assert warning == "" or warning.endswith("add them to keep them for admins")
