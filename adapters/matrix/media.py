"""Pictures posted on Matrix, downloaded when the core asks (bot.events.ImageReader): from the
homeserver's media repository (authenticated media), never more than the cap, and for an
encrypted room's media (`file` instead of `url`) decrypted with nio's attachment helper, which
also checks the file's hash. Decoding is the core's."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlparse

import aiohttp
import structlog
from nio.api import MATRIX_MEDIA_API_PATH
from nio.crypto.attachments import decrypt_attachment
from nio.exceptions import EncryptionError

from adapters.common.download import read_capped
from adapters.common.failure import describe
from adapters.matrix.account import Account
from bot.events import Fetched, Incoming

log = structlog.get_logger(__name__)

KEPT = 256  # messages whose picture the core may still ask for
DOWNLOAD_TIMEOUT_S = 30.0


def media_path(mxc: str) -> str | None:
    """The download path of an `mxc://server/media_id` URI (None: not one)."""
    parsed = urlparse(mxc)
    media_id = parsed.path.lstrip("/")
    if parsed.scheme != "mxc" or not parsed.netloc or not media_id or "/" in media_id:
        return None
    return f"{MATRIX_MEDIA_API_PATH}/download/{quote(parsed.netloc, safe='')}/{quote(media_id)}"


class MatrixImages:
    """The pictures of recent m.image events, by event id, and their download."""

    def __init__(self, account: Account) -> None:
        self._account = account
        self._sources: OrderedDict[str, Mapping[str, Any]] = OrderedDict()

    def saw(self, event_id: str, content: Mapping[str, Any]) -> None:
        """An m.image event's content (its `url`, or its encrypted `file`)."""
        self._sources[event_id] = content
        self._sources.move_to_end(event_id)
        while len(self._sources) > KEPT:
            self._sources.popitem(last=False)

    async def read_image(self, message: Incoming, index: int, max_bytes: int) -> Fetched:
        """The picture's bytes, decrypted; an m.image carries one picture."""
        content = self._sources.get(message.message_id)
        if content is None or index != 0:
            return Fetched(None)
        info = content.get("info")
        declared = info.get("size") if isinstance(info, Mapping) else None
        if isinstance(declared, int) and declared > max_bytes:
            return Fetched(None, over_cap=True)  # as its sender says: not even downloaded
        file = content.get("file")
        mxc = file.get("url") if isinstance(file, Mapping) else content.get("url")
        path = media_path(mxc) if isinstance(mxc, str) else None
        got = await self._download(path, max_bytes) if path is not None else None
        if got is None:
            return Fetched(None)
        data, over = got
        if over:
            return Fetched(None, over_cap=True)
        if isinstance(file, Mapping):
            return Fetched(await asyncio.to_thread(_decrypted, data, file))
        return Fetched(data)

    async def _download(self, path: str, cap: int) -> tuple[bytes, bool] | None:
        client = self._account.client
        if client is None or client.client_session is None:
            return None
        headers = {"Authorization": f"Bearer {client.access_token}"}
        try:
            response = await client.send("GET", path, headers=headers, timeout=DOWNLOAD_TIMEOUT_S)
            try:
                if response.status != 200:
                    log.info("matrix picture not downloaded", status=response.status)
                    return None
                return await read_capped(response, cap, whole=True)
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("matrix picture not downloaded", error=describe(exc))
            return None


def _decrypted(ciphertext: bytes, file: Mapping[str, Any]) -> bytes | None:
    """Encrypted media's plaintext; None when its keys are missing or wrong, or the hash
    does not match (nio checks it before decrypting)."""
    try:
        key, digest, iv = file["key"]["k"], file["hashes"]["sha256"], file["iv"]
        return bytes(decrypt_attachment(ciphertext, key, digest, iv))
    except (EncryptionError, KeyError, TypeError, ValueError) as exc:
        log.warning("matrix picture not decrypted", error=type(exc).__name__)
        return None
