"""Logging the Matrix bot in: once with the password, then always the same device.

The first start logs in with the password and saves the access token and device id
(`adapters.matrix.state.Session`); every later start restores that login, so nio finds the device's
keys in its crypto store and people's clients keep trusting the same device. A configured
`access_token` is used as is (its device comes from /whoami).

Failures split in two: the homeserver refusing us (wrong password, revoked token) is
`FatalLogin`, one line for the user; anything else (no connection, a 5xx, a 429) is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import structlog
from nio import AsyncClient, ErrorResponse, LoginResponse, WhoamiResponse

from adapters.common.failure import describe
from adapters.matrix.state import Session
from bot import logs
from bot.settings import MatrixSettings

log = structlog.get_logger(__name__)

RETRY_MAX_S = 15.0


class FatalLogin(Exception):
    """The homeserver refused our credentials for good."""


class SavedLoginRejected(Exception):
    """The saved access token no longer works (e.g. the device was logged out elsewhere)."""


def quiet_library_logs() -> None:
    """nio logs whole responses at debug (a login response holds the access token, every sync
    holds message text) and peewee logs the crypto store's SQL with its parameters (the
    pickled device keys); markdown_it traces every rule. None goes below info, whatever level
    the daemon runs at."""
    for name in ("nio", "peewee", "markdown_it"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def is_transient(response: ErrorResponse) -> bool:
    """Rate limits and server trouble pass; a 4xx about who we are does not."""
    status = getattr(getattr(response, "transport_response", None), "status", None)
    return response.status_code == "M_LIMIT_EXCEEDED" or status is None or status >= 500


def is_token_error(response: ErrorResponse) -> bool:
    return response.status_code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN") or response.soft_logout


def raise_for(response: object, keys: bool = False) -> None:
    """An error response as an exception: SavedLoginRejected when our login is no good (for
    a key upload also any lasting refusal), else ConnectionError (to be retried)."""
    if not isinstance(response, ErrorResponse):
        return
    if is_token_error(response) or (keys and not is_transient(response)):
        # keys: the server holds other keys for this device (our crypto store was lost).
        raise SavedLoginRejected(describe(response))
    raise ConnectionError(describe(response))


async def log_in(
    settings: MatrixSettings,
    homeserver: str,
    store_dir: Path,
    new_client: Callable[[str], AsyncClient],
) -> AsyncClient:
    """A logged-in client with its crypto store loaded. Raises FatalLogin when the homeserver
    refuses us; any other exception is connection trouble, to be retried."""
    session = Session.load(store_dir)
    if session is not None and (
        session.homeserver != homeserver
        or (settings.user_id and session.user_id != settings.user_id)
    ):
        log.warning("saved Matrix session is for another account; logging in afresh")
        session = None
    if session is not None:
        logs.register_secret(session.access_token)
        client = new_client(session.user_id)
        client.restore_login(session.user_id, session.device_id, session.access_token)
        log.info("matrix session restored", user=session.user_id, device=session.device_id)
        return client
    token = settings.access_token.get_secret_value() if settings.access_token else ""
    if token:
        return await _with_token(settings, token, new_client)
    password = settings.password.get_secret_value() if settings.password else ""
    if not password:
        raise FatalLogin("set [matrix] password (used once) or access_token")
    if not settings.user_id:
        raise FatalLogin("set [matrix] user_id, e.g. @hearthbot:example.org")
    client = new_client(settings.user_id)
    try:
        response = await client.login(password, settings.device_name)
    except BaseException:
        await client.close()
        raise
    if not isinstance(response, LoginResponse):
        await client.close()
        if is_transient(response):
            raise ConnectionError(describe(response))
        raise FatalLogin(f"login as {settings.user_id} was refused: {describe(response)}")
    logs.register_secret(response.access_token)
    Session(homeserver, response.user_id, response.device_id, response.access_token).save(store_dir)
    log.info("matrix logged in as a new device", user=response.user_id, device=response.device_id)
    return client


async def _with_token(
    settings: MatrixSettings, token: str, new_client: Callable[[str], AsyncClient]
) -> AsyncClient:
    logs.register_secret(token)
    client = new_client(settings.user_id or "")
    client.access_token = token
    try:
        who = await client.whoami()
    except BaseException:
        await client.close()
        raise
    if not isinstance(who, WhoamiResponse) or not who.device_id:
        await client.close()
        if isinstance(who, ErrorResponse) and is_transient(who):
            raise ConnectionError(describe(who))
        problem = describe(who) if isinstance(who, ErrorResponse) else "it has no device"
        raise FatalLogin(f"the homeserver refused the access token: {problem}")
    client.restore_login(who.user_id, who.device_id, token)
    log.info("matrix access token accepted", user=who.user_id, device=who.device_id)
    return client
