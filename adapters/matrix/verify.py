"""Interactive emoji (SAS) verification of the bot's device, for admins only.

nio implements the SAS exchange itself (start, accept, key, MAC); it does not answer the
`m.key.verification.request` that current clients such as Element send first, nor send the
closing `m.key.verification.done`: both are done here. The bot cannot look at a screen, so it
logs its emoji for the admin to compare and confirms; the admin's confirmation is the check.

Steps are queued by the to-device callback (inside nio's sync) and run after that sync's own
to-device messages went out, so our MAC never overtakes the key nio queued before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from nio import (
    AsyncClient,
    ErrorResponse,
    KeyVerificationCancel,
    KeyVerificationKey,
    KeyVerificationMac,
    KeyVerificationStart,
    LocalProtocolError,
    ToDeviceEvent,
    UnknownToDeviceEvent,
)
from nio.event_builders import ToDeviceMessage

from adapters.matrix.rules import matches

log = structlog.get_logger(__name__)

Step = Callable[[AsyncClient], Awaitable[object]]
SAS = "m.sas.v1"


class Verifier:
    """Answers admins' emoji verification of the bot's device; refuses everyone else."""

    def __init__(self, admins: list[str]) -> None:
        self.admins = admins  # Matrix ID globs; replaced on SIGHUP
        self._steps: list[Step] = []

    def handle(self, event: ToDeviceEvent) -> None:
        """Called from nio's sync for every to-device event: queue what to answer."""
        if isinstance(event, UnknownToDeviceEvent) and event.type == "m.key.verification.request":
            self._on_request(event)
        elif isinstance(event, KeyVerificationStart):
            self._on_start(event)
        elif isinstance(event, KeyVerificationKey):
            transaction = event.transaction_id
            self._steps.append(lambda client: self._confirm(client, transaction))
        elif isinstance(event, KeyVerificationMac):
            transaction = event.transaction_id
            self._steps.append(lambda client: self._done(client, transaction))
        elif isinstance(event, KeyVerificationCancel):
            log.info("key verification cancelled", by=event.sender, reason=event.reason)

    async def run(self, client: AsyncClient) -> None:
        """After a sync, once nio's queued to-device messages are sent."""
        steps, self._steps = self._steps, []
        for step in steps:
            try:
                response = await step(client)
            except LocalProtocolError as exc:  # e.g. the other side cancelled meanwhile
                log.info("key verification step skipped", reason=str(exc))
                continue
            if isinstance(response, ErrorResponse):
                log.warning("key verification step failed", error=str(response))

    def _on_request(self, event: UnknownToDeviceEvent) -> None:
        content = event.source.get("content", {})
        transaction, device = content.get("transaction_id"), content.get("from_device")
        if not matches(event.sender, self.admins):
            log.info("key verification request ignored: not an admin", sender=event.sender)
            return
        if SAS not in (content.get("methods") or []) or not transaction or not device:
            return

        async def ready(client: AsyncClient) -> object:
            content = {"from_device": client.device_id, "methods": [SAS]}
            content["transaction_id"] = transaction
            message = ToDeviceMessage("m.key.verification.ready", event.sender, device, content)
            return await client.to_device(message)

        self._steps.append(ready)

    def _on_start(self, event: KeyVerificationStart) -> None:
        transaction = event.transaction_id
        admin = matches(event.sender, self.admins)
        log.info("key verification started", by=event.sender, accepted=admin)

        async def answer(client: AsyncClient) -> object:
            if transaction not in client.key_verifications:
                return None  # nio did not know that device yet (it queries it); they may retry
            if admin:
                return await client.accept_key_verification(transaction)
            return await client.cancel_key_verification(transaction)

        self._steps.append(answer)

    async def _confirm(self, client: AsyncClient, transaction: str) -> object:
        sas = client.key_verifications.get(transaction)
        if sas is None or sas.canceled:
            return None
        emoji = " ".join(f"{symbol} {name}" for symbol, name in sas.get_emoji())
        log.info("key verification emoji", emoji=emoji, user=sas.other_olm_device.user_id)
        return await client.confirm_short_auth_string(transaction)

    async def _done(self, client: AsyncClient, transaction: str) -> object:
        sas = client.key_verifications.get(transaction)
        if sas is None or not sas.verified:
            return None
        device = sas.other_olm_device
        log.info("key verification done", user=device.user_id, device=device.id)
        content = {"transaction_id": transaction}
        message = ToDeviceMessage("m.key.verification.done", device.user_id, device.id, content)
        return await client.to_device(message)
