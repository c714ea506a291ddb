"""`hearthbot check`: everything a start needs, one ✓/✗ line each, plus warnings.

Each check is a small function that returns a Check (never raises for an expected problem),
so a table of setups can be tested without a terminal. Network is touched only where the
setup itself points: the openai backend's server, and with `--online` the chat platforms'
login endpoints, over plain HTTP (no discord.py or nio in bot/).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import stat
import tempfile
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, SecretStr

from bot import logs
from bot.model.gguf import (
    OVERHEAD_BYTES,
    GgufSummary,
    ModelFileError,
    available_memory,
    inspect_model,
)
from bot.settings import ConfigError, MatrixSettings, ModelSettings, Settings

if TYPE_CHECKING:
    from bot.model.openai.backend import OpenAIBackend

ONLINE_TIMEOUT_S = 15.0
GIB = 2**30
# A failure of one of these is a configuration problem (exit 2, like a bad config file).
CONFIG_CHECKS = ("config", "personas")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    @property
    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


@dataclass(slots=True)
class Report:
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def exit_code(self) -> int:
        if any(c.name in CONFIG_CHECKS for c in self.failed):
            return 2
        return 1 if self.failed else 0

    def lines(self) -> list[str]:
        out = [c.line for c in self.checks]
        out += [f"warning: {w}" for w in self.warnings]
        failed = len(self.failed)
        out.append("ok" if not failed else f"{failed} check{'s' * (failed > 1)} failed")
        return out


async def diagnose(settings: Settings, config_file: Path | None, online: bool = False) -> Report:
    report = Report()
    report.checks.append(
        Check("config", True, str(config_file or "(none: defaults and environment)"))
    )
    report.warnings += config_file_warnings(config_file)
    report.checks.append(personas_check(settings))
    report.checks.append(writable_dir(settings.bot.data_dir))
    await model_checks(settings, report)
    await adapter_checks(settings, online, report)
    if listen := health_listen(settings):
        report.checks.append(port_free(listen))
    return report


# -- config and files --------------------------------------------------------------------------


def secrets_in_file(path: Path) -> list[str]:
    """Which secret settings (by "section.key") a TOML file sets."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    found = []
    for section, table in data.items():
        model = _section_model(section)
        if model is None or not isinstance(table, dict):
            continue
        for key, value in table.items():
            info = model.model_fields.get(key)
            if info is not None and value and SecretStr in (get_args(info.annotation) or ()):
                found.append(f"{section}.{key}")
    return found


def _section_model(section: str) -> type[BaseModel] | None:
    info = Settings.model_fields.get(section)
    model = info.annotation if info is not None else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def config_file_warnings(config_file: Path | None) -> list[str]:
    if config_file is None:
        return []
    try:
        mode = stat.S_IMODE(config_file.stat().st_mode)
    except OSError:
        return []
    held = secrets_in_file(config_file)
    if not (mode & 0o077 and held):
        return []
    return [
        f"{config_file} holds {', '.join(held)} and other users may read it (mode "
        f"{mode:04o}): chmod 600 it, or move the secret to the environment or a credentials file"
    ]


def personas_check(settings: Settings) -> Check:
    from bot.app.cli import checked_personas
    from bot.personas import PersonaError

    try:
        personas = checked_personas(settings)
    except (ConfigError, PersonaError) as exc:
        return Check("personas", False, str(exc))
    names = ", ".join(personas.names())
    return Check("personas", True, f"{names} (default {settings.bot.default_persona})")


def writable_dir(path: Path) -> Check:
    """The directory exists (or can be made) and a file can be created in it."""
    if path.exists() and not path.is_dir():
        return Check("data_dir", False, f"{path} is not writable: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hearthbot-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Check("data_dir", False, f"{path} is not writable: {reason.lower()}")
    return Check("data_dir", True, f"{path} is writable")


def health_listen(settings: Settings) -> str:
    """`[health] listen`, if this build has that section (empty: the endpoint is off)."""
    return str(getattr(getattr(settings, "health", None), "listen", "") or "").strip()


def port_free(listen: str) -> Check:
    """Whether `host:port` ("[::1]:9470" for IPv6) can be bound now."""
    try:
        parts = urlsplit(f"//{listen}")
        host, port = parts.hostname or "127.0.0.1", parts.port
    except ValueError:
        port = None
    if port is None:
        return Check("health", False, f"{listen!r} is not host:port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As asyncio's servers do: a port held only by TIME_WAIT counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        busy = exc.errno == errno.EADDRINUSE
        hint = " (another program, or hearthbot already running?)" if busy else ""
        return Check("health", False, f"cannot listen on {listen}: {reason}{hint}")
    return Check("health", True, f"{listen} is free")


# -- the model -----------------------------------------------------------------------------------


async def model_checks(settings: Settings, report: Report) -> None:
    from bot.app.cli import model_path
    from bot.model.backend import load_backend
    from bot.model.openai.backend import OpenAIBackend

    model = settings.model
    remote = model.backend == "openai"
    name = "tokenizer" if remote else "model"
    try:
        path = model_path(settings)
        summary = inspect_model(path)
    except ModelFileError as exc:
        report.checks.append(Check(name, False, str(exc)))
        return
    if not remote:
        memory = memory_check(summary, model)
        report.checks.append(memory)
        if not memory.ok:
            return  # loading would only thrash
    try:
        backend = await load_backend(model, path)
    except ModelFileError as exc:
        report.checks.append(Check(name, False, str(exc)))
        return
    try:
        info = backend.info
        quant = info.quantization or "unknown quantization"
        if isinstance(backend, OpenAIBackend):
            report.checks.append(
                Check(name, True, f"{path} — {info.name}, {quant} (vocabulary and template only)")
            )
            await server_checks(backend, settings, report)
        else:
            report.checks.append(
                Check(
                    name,
                    True,
                    f"{path} — {info.name}, {info.params_text} parameters, {quant} "
                    f"({info.description})",
                )
            )
            report.checks.append(
                Check("context", True, f"{info.n_ctx:,} tokens, {info.n_threads} threads")
            )
    finally:
        await backend.close()


def memory_check(summary: GgufSummary, model: ModelSettings) -> Check:
    """The same estimate LlamaCppBackend.load enforces, itemized."""
    saved = model.kv_cache_mb * 2**20
    needed = summary.needed_bytes(model.n_ctx) + saved
    available = available_memory()
    parts = (
        f"needs about {needed / GIB:.1f} GiB (weights {summary.size_bytes / GIB:.1f} + KV "
        f"cache for {model.n_ctx:,} tokens {summary.kv_bytes(model.n_ctx) / GIB:.1f} + saved "
        f"channels {saved / GIB:.1f} + working memory {OVERHEAD_BYTES / GIB:.2f} GiB)"
    )
    if available is None:
        return Check("memory", True, f"{parts}; available memory unknown")
    if needed > available:
        return Check(
            "memory",
            False,
            f"{parts} but only {available / GIB:.1f} GiB is available: use a smaller "
            "quantization, n_ctx or kv_cache_mb",
        )
    return Check("memory", True, f"{parts}, {available / GIB:.1f} GiB available")


async def server_checks(backend: OpenAIBackend, settings: Settings, report: Report) -> None:
    from bot.model.openai.errors import ServerError

    model = settings.model
    try:
        names = await backend.models()
    except ServerError as exc:
        report.checks.append(Check("server", False, str(exc)))
        return
    listed = ", ".join(names) or "none listed"
    report.checks.append(Check("server", True, f"{model.base_url} answers; models: {listed}"))
    report.checks.append(
        Check("context", True, f"{model.n_ctx:,} tokens (must not exceed the server's)")
    )
    if model.model and names and model.model not in names:
        report.warnings.append(
            f"[model] model = {model.model!r} is not among the server's models ({listed})"
        )
    host = urlsplit(model.base_url or "").hostname or ""
    plain = (model.base_url or "").startswith("http://")
    if model.api_key is not None and plain and host not in ("localhost", "127.0.0.1", "::1"):
        report.warnings.append(f"the api_key goes unencrypted to {host}: use https://")


# -- chat platforms --------------------------------------------------------------------------------


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
        if not matrix.allowed_users:
            report.warnings.append("[matrix] allowed_users is empty: nobody can talk to the bot")


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
