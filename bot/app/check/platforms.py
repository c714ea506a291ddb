"""Checks of the chat platforms: credentials are set, and with `--online` they work (a login
over plain HTTP; bot/ never imports discord.py or nio)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from adapters.matrix.rules import config_warnings
from bot import logs
from bot.app.check.report import Check, Report
from bot.settings import MatrixSettings, Settings

ONLINE_TIMEOUT_S = 15.0


async def adapter_checks(settings: Settings, online: bool, report: Report) -> None:
    discord, matrix = settings.discord, settings.matrix
    if not discord.enabled and not matrix.enabled:
        report.checks.append(Check("adapters", True, "none configured: the console"))
    if discord.enabled:
        assert discord.token is not None
        if online:
            token = discord.token.get_secret_value()
            report.checks.append(await discord_login(discord.api_base, token))
        else:
            report.checks.append(Check("discord", True, "token set (--online logs in)"))
    if matrix.enabled:
        report.checks.append(await matrix_login(matrix) if online else matrix_offline(matrix))
    # The adapter's own rules: an access list that lets nobody in, or everybody.
    report.warnings += config_warnings(matrix.allowed_users, matrix.homeserver)


@contextlib.asynccontextmanager
async def _session(headers: dict[str, str] | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=ONLINE_TIMEOUT_S)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, trust_env=False) as s:
        yield s


def _unreachable(name: str, url: str, exc: Exception) -> Check:
    from bot.model.openai.errors import connect_reason

    if isinstance(exc, TimeoutError):
        return Check(name, False, f"{url} did not answer within {ONLINE_TIMEOUT_S:g}s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Check(name, False, f"cannot reach {url}: {connect_reason(exc)}")
    return Check(name, False, f"{url} failed: {logs.scrub(str(exc)) or type(exc).__name__}")


async def discord_login(api_base: str, token: str) -> Check:
    """GET /users/@me with the bot token: the cheapest call that proves the token works."""
    url = f"{api_base.rstrip('/')}/users/@me"
    headers = {"Authorization": f"Bot {token}", "User-Agent": "DiscordBot (hearthbot, 0.1)"}
    try:
        async with _session(headers) as http, http.get(url) as response:
            body = await _json_or_empty(response)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unreachable("discord", url, exc)
    if status == 200:
        return Check("discord", True, f"logged in as {body.get('username')} (id {body.get('id')})")
    if status == 401:
        return Check(
            "discord", False, "Discord refused the token (HTTP 401): set a valid [discord] token"
        )
    return Check("discord", False, f"{url} answered HTTP {status}: {body.get('message', '')}")


def matrix_offline(matrix: MatrixSettings) -> Check:
    if problem := _matrix_credentials_problem(matrix):
        return Check("matrix", False, problem)
    who = matrix.user_id or "(the access token's user)"
    return Check("matrix", True, f"{who} on {matrix.homeserver} (--online logs in)")


def _matrix_credentials_problem(matrix: MatrixSettings) -> str | None:
    if not (matrix.homeserver or "").startswith(("http://", "https://")):
        return f"homeserver must be an http(s) URL (got {matrix.homeserver!r})"
    if matrix.access_token is not None and matrix.access_token.get_secret_value():
        return None
    if matrix.password is None or not matrix.password.get_secret_value():
        return "set [matrix] password (used once) or access_token"
    if not matrix.user_id:
        return "set [matrix] user_id, e.g. @hearthbot:example.org"
    return None


async def matrix_login(matrix: MatrixSettings) -> Check:
    """With an access token: whoami. With a password: log in as a throwaway device and log
    out again, so the check leaves no session behind."""
    if problem := _matrix_credentials_problem(matrix):
        return Check("matrix", False, problem)
    base = f"{(matrix.homeserver or '').rstrip('/')}/_matrix/client/v3"
    try:
        if matrix.access_token is not None and matrix.access_token.get_secret_value():
            token = matrix.access_token.get_secret_value()
            async with (
                _session({"Authorization": f"Bearer {token}"}) as http,
                http.get(f"{base}/account/whoami") as response,
            ):
                body = await _json_or_empty(response)
                if response.status != 200:
                    return Check(
                        "matrix", False, f"the homeserver refused the access token: {_mx(body)}"
                    )
                return Check("matrix", True, f"access token works for {body.get('user_id')}")
        assert matrix.password is not None
        login = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": matrix.user_id},
            "password": matrix.password.get_secret_value(),
            "initial_device_display_name": "hearthbot check",
        }
        async with _session() as http:
            async with http.post(f"{base}/login", json=login) as response:
                body = await _json_or_empty(response)
                if response.status != 200:
                    return Check(
                        "matrix", False, f"login as {matrix.user_id} was refused: {_mx(body)}"
                    )
            token = str(body.get("access_token", ""))
            logs.register_secret(token)
            bearer = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{base}/logout", headers=bearer, json={}) as response:
                logged_out = response.status == 200
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _unreachable("matrix", matrix.homeserver or "", exc)
    after = "and out again" if logged_out else "but the logout failed"
    return Check("matrix", True, f"logged in as {body.get('user_id')} with the password {after}")


async def _json_or_empty(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _mx(body: dict[str, Any]) -> str:
    code, error = body.get("errcode", ""), body.get("error", "")
    return f"{code}: {error}" if code or error else "no reason given"
