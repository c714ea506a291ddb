"""The Matrix adapter against a real Synapse (tests/support/synapse.py), with the real daemon,
the tiny real model and a real Store. The other side of every conversation is a real
matrix-nio client.

Every test here runs with the logs captured at debug level (ours, nio's, aiohttp's) and ends
by checking that no password or access token of the test's accounts appears in them.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from nio import (
    KeyVerificationKey,
    KeyVerificationMac,
    ToDeviceMessage,
    UnknownToDeviceEvent,
    UploadResponse,
)
from nio.crypto import Sas
from PIL import Image

import adapters.matrix.state as matrix_state
from adapters.matrix.adapter import MatrixAdapter
from adapters.matrix.format import render_html
from adapters.matrix.state import SESSION_FILE
from bot import logs, texts
from bot.daemon import Daemon
from bot.events import ChatEvent, Outcome
from bot.image_store import IMAGES_DIR
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.prompt.builder import Prompt
from bot.settings import load_settings
from bot.store import Store
from support.hostile import hostile_cases
from support.matrix_reply import padded_table
from support.stored import everything_stored
from support.synapse import (
    SERVER_NAME,
    Account,
    Peer,
    Seen,
    Synapse,
    free_port,
    matrix_section,
    require_synapse,
)

# A real Synapse.
pytestmark = [pytest.mark.slow, pytest.mark.system]

# Passwords and tokens of the current test's accounts: none may appear in the logs.
SECRETS: list[str] = []


@pytest.fixture(autouse=True)
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Our logging set up as `hearthbot run` does (JSON lines), at debug, into a buffer."""
    buffer = io.StringIO()
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", buffer)
    logs.configure("debug", "json")
    SECRETS.clear()
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**structlog_config)
    text = buffer.getvalue()
    if dump := os.environ.get("HEARTHBOT_TEST_LOG"):  # to read a run's logs afterwards
        with open(dump, "a", encoding="utf-8") as out:
            out.write(text)
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, "a password or access token appeared in the logs"


@dataclass
class Bot:
    daemon: Daemon
    adapter: MatrixAdapter
    store: Store
    account: Account
    store_dir: Path

    @property
    def user_id(self) -> str:
        return self.account.user_id

    async def ready(self, timeout: float = 20) -> None:
        await asyncio.wait_for(self.adapter.wait_ready(), timeout)

    async def history(self, room_id: str) -> list[tuple[str, str]]:
        return [(m.role, m.text) for m in await self.store.history(f"matrix:{room_id}")]


@asynccontextmanager
async def running_bot(
    tmp_path: Path,
    model: Path,
    server: Synapse,
    account: Account,
    worker: bool = True,
    mmproj: Path | None = None,
    **matrix: Any,
) -> AsyncIterator[Bot]:
    """The daemon as `hearthbot run` wires it. Without `worker` messages are taken (saved as
    pending, typing shown) but nothing answers them: a bot stopped mid-queue."""
    SECRETS.extend([account.password, account.access_token])
    settings = load_settings(
        None, bot={"data_dir": tmp_path}, matrix=matrix_section(server, account, **matrix)
    )
    engine = await LlamaCppBackend.load(model, n_ctx=2048, n_threads=2, mmproj=mmproj)
    store = await Store.open(tmp_path / "hearthbot.db")
    adapter = MatrixAdapter(settings.matrix, settings.bot)
    daemon = Daemon(settings, store, engine, load_personas(None), {"matrix": adapter})  # type: ignore[dict-item]
    try:
        if worker:
            await daemon.start()
        else:
            await adapter.start(daemon.handle)
        yield Bot(daemon, adapter, store, account, adapter.store_dir)
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
        session = adapter.store_dir / SESSION_FILE
        if session.exists():
            SECRETS.append(json.loads(session.read_text())["access_token"])


@asynccontextmanager
async def peer(server: Synapse, tmp_path: Path, prefix: str = "alice") -> AsyncIterator[Peer]:
    account = await server.register(prefix)
    SECRETS.extend([account.password, account.access_token])
    person = Peer(server, account, tmp_path / f"peer-{account.localpart}")
    await person.start()
    try:
        yield person
    finally:
        await person.stop()


@asynccontextmanager
async def alice_and_bot(
    server: Synapse, tmp_path: Path, model: Path, mmproj: Path | None = None, **matrix: Any
) -> AsyncIterator[tuple[Peer, Bot]]:
    """Where most tests start: Alice's client and a bot running on a fresh account."""
    account = await server.register("bot")
    async with (
        peer(server, tmp_path) as alice,
        running_bot(tmp_path, model, server, account, mmproj=mmproj, **matrix) as bot,
    ):
        yield alice, bot


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def dm_with(alice: Peer, bot: Bot, encrypted: bool = False) -> str:
    await bot.ready()
    room = await alice.create_room(invite=[bot.user_id], direct=True, encrypted=encrypted)
    await alice.wait_for(lambda: alice.joined(room, bot.user_id))
    return room


async def answer_to(
    alice: Peer, bot: Bot, asked: str, timeout: float = 30, command: bool = False
) -> Seen:
    """The bot's reply to `asked`, once its final text is showing (the daemon is idle)."""
    reply = await alice.wait_for(lambda: alice.reply_to(bot.user_id, asked), timeout)
    await asyncio.wait_for(bot.daemon.wait_idle(), timeout)
    await asyncio.wait_for(_delivered(bot), timeout)
    await alice.caught_up(reply.room_id, timeout)
    if not command and content_of(reply)["msgtype"] == "m.text":
        # An answer from the model: what shows in the end is what the store keeps.
        relation = content_of(reply)["m.relates_to"]
        channel = reply.room_id
        if relation.get("rel_type") == "m.thread":
            channel += f"|{relation['event_id']}"
        stored = [text for role, text in await bot.history(channel) if role == "assistant"]
        # The stored answer, perhaps with a note after it ("reply cut at 768 tokens").
        await alice.wait_for(
            lambda: any(alice.latest_text(reply.event.event_id).startswith(t) for t in stored),
            timeout,
        )
    return reply


async def command_answer(alice: Peer, bot: Bot, asked: str) -> str:
    return alice.latest_text((await answer_to(alice, bot, asked, command=True)).event.event_id)


async def _delivered(bot: Bot) -> None:
    """Until every reply's delivery task (final edits included) has finished."""
    while tasks := [t for t in bot.adapter._tasks if t.get_name() == "matrix-reply"]:
        await asyncio.wait(tasks)


def content_of(seen: Seen) -> dict[str, Any]:
    return dict(seen.event.source["content"])


def replies_from(alice: Peer, bot: Bot, event_id: str) -> list[Seen]:
    out = []
    for seen in alice.messages_from(bot.user_id, alice._room_of(event_id)):
        relation = content_of(seen).get("m.relates_to") or {}
        if (relation.get("m.in_reply_to") or {}).get("event_id") == event_id:
            out.append(seen)
    return out


# -- DMs ---------------------------------------------------------------------------------------


async def test_dm_is_answered_by_a_reply_streamed_in_edits_with_typing_and_html(
    synapse: Synapse, tmp_path: Path, tiny_model: Path, captured_logs: io.StringIO
) -> None:
    async with alice_and_bot(synapse, tmp_path, tiny_model, edit_interval_s=0.2) as (alice, bot):
        room = await dm_with(alice, bot)  # invite → join
        asked = await alice.send(room, "hello, who are you?")
        answer = await answer_to(alice, bot, asked)
        content = content_of(answer)
        assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": asked}}
        assert content["m.mentions"] == {}
        assert content["msgtype"] == "m.text"
        edits = alice.edits_of(answer.event.event_id)
        assert edits, "the answer should stream by m.replace edits"
        (user, asked_text), (assistant, answer_text) = await bot.history(room)
        assert (user, asked_text, assistant) == ("user", "hello, who are you?", "assistant")
        assert alice.latest_text(answer.event.event_id).startswith(answer_text)
        for edit in edits:
            new = content_of(edit)["m.new_content"]
            assert new["formatted_body"] == render_html(new["body"])
            assert new["format"] == "org.matrix.custom.html"
            assert content_of(edit)["m.mentions"] == {} == new["m.mentions"]
        # Typing showed before the first text, and was withdrawn at the end.
        typing = alice.typing_by(bot.user_id, room)
        assert typing and typing[0].at <= answer.at
        await alice.wait_for(lambda: bot.user_id not in alice.typing[-1].event.users)
        assert bot.adapter.is_connected()
    assert '"matrix connected"' in captured_logs.getvalue()  # the log capture works


async def test_a_picture_in_a_dm_is_answered_with_the_note_that_it_goes_unseen(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """No projector: an m.image (plain, and encrypted media in an encrypted room) is named to
    the model and the answer says, once per room per hour, that the picture went unseen."""
    picture = {"msgtype": "m.image", "body": "cat.png", "info": {"mimetype": "image/png"}}
    encrypted_file = {
        "url": "mxc://localhost/notdownloaded",
        "key": {"kty": "oct", "alg": "A256CTR", "ext": True, "k": "a" * 43},
        "iv": "AAAAAAAAAAAAAAAAAAAAAA",
        "hashes": {"sha256": "b" * 43},
        "v": "v2",
    }
    async with alice_and_bot(synapse, tmp_path, tiny_model) as (alice, bot):
        for encrypted in (False, True):
            room = await dm_with(alice, bot, encrypted=encrypted)
            # As in the other encrypted tests: a command first, so the room's keys are shared
            # before the picture (an undecryptable first message gets a notice instead).
            await answer_to(alice, bot, await alice.send(room, "!seed"), command=True)
            media = {"file": encrypted_file} if encrypted else {"url": "mxc://localhost/cat"}
            asked = await alice.send_content(room, picture | media)
            answer = await answer_to(alice, bot, asked)
            assert texts.NOTE_CANNOT_SEE_IMAGES in alice.latest_text(answer.event.event_id)
            assert answer.event.decrypted is encrypted
            ((user, said), _) = await bot.history(room)
            assert (user, said) == ("user", "[image: cat.png]")
            again = await alice.send_content(room, picture | media)
            answer = await answer_to(alice, bot, again)  # once per room per hour
            assert texts.NOTE_CANNOT_SEE_IMAGES not in alice.latest_text(answer.event.event_id)


async def upload_picture(alice: Peer, body: bytes, encrypted: bool) -> dict[str, Any]:
    """Alice's picture in the homeserver's media repository: the m.image content's `url`, or
    for an encrypted room its `file` (encrypted by nio, with its key, iv and hash)."""
    response, keys = await alice.client.upload(
        io.BytesIO(body), "image/png", "cat.png", encrypt=encrypted, filesize=len(body)
    )
    assert isinstance(response, UploadResponse), response
    if encrypted:
        return {"file": {"url": response.content_uri, **(keys or {})}}
    return {"url": response.content_uri}


async def test_a_picture_seen_is_downloaded_decrypted_stored_and_redacted(
    synapse: Synapse, tmp_path: Path, tiny_model: Path, tiny_projector: Path
) -> None:
    """The tiny model with its projector (real libmtmd): an m.image is downloaded from the
    real Synapse (plain, and encrypted media in an encrypted DM, decrypted with nio), stored
    in data_dir/images, and deleted with its redaction; encrypted media whose hash does not
    match gets a notice and nothing else."""
    images = tmp_path / IMAGES_DIR
    async with alice_and_bot(synapse, tmp_path, tiny_model, tiny_projector) as (alice, bot):
        assert bot.daemon.backend.info.image_side_px == 32
        for encrypted, colour in ((False, (255, 0, 0)), (True, (0, 0, 255))):
            room = await dm_with(alice, bot, encrypted=encrypted)
            await answer_to(alice, bot, await alice.send(room, "!seed"), command=True)
            out = io.BytesIO()
            Image.new("RGB", (64, 48), colour).save(out, "PNG")
            body = out.getvalue()
            media = await upload_picture(alice, body, encrypted)
            picture = {"msgtype": "m.image", "body": "cat.png",
                       "info": {"mimetype": "image/png", "size": len(body)}}  # fmt: skip
            asked = await alice.send_content(room, picture | media)
            answer = await answer_to(alice, bot, asked)
            assert texts.NOTE_CANNOT_SEE_IMAGES not in alice.latest_text(answer.event.event_id)
            assert answer.event.decrypted is encrypted
            ((user, said), _) = await bot.history(room)
            assert (user, said) == ("user", "[image: cat.png]")
            (file,) = images.iterdir()
            assert file.stat().st_size == 32 * 24 * 3
            assert file.read_bytes()[:3] == bytes(colour)  # decrypted, decoded, shrunk
            await alice.client.room_redact(room, asked)
            await eventually(lambda: _no_files(images))
        tampered = media["file"] | {"hashes": {"sha256": "A" * 43}}
        before = await bot.history(room)
        asked = await alice.send_content(room, picture | {"file": tampered})
        refused = await answer_to(alice, bot, asked, command=True)
        notice = texts.IMAGE_REFUSED["not_downloaded"].format(name="cat.png")
        assert alice.latest_text(refused.event.event_id) == notice
        assert await bot.history(room) == before  # not stored
        assert not any(images.iterdir())
        # Said to be larger than [images] max_kb (10 MB): refused by its declared size.
        large = picture | {"info": {"mimetype": "image/png", "size": 11 << 20}} | media
        refused = await answer_to(alice, bot, await alice.send_content(room, large), command=True)
        notice = texts.IMAGE_REFUSED["too_many_bytes"].format(name="cat.png", limit_mb=10)
        assert alice.latest_text(refused.event.event_id) == notice
        assert await bot.history(room) == before


async def _no_files(folder: Path) -> bool:
    return not any(folder.iterdir())


async def test_encrypted_dm_restart_keeps_the_device_and_catches_up_within_the_window(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    window = 2.0
    async with peer(synapse, tmp_path) as alice:
        async with running_bot(
            tmp_path, tiny_model, synapse, account, catch_up_window_s=window
        ) as bot:
            room = await dm_with(alice, bot, encrypted=True)
            command = await alice.send(room, "!seed")  # answered, never stored
            await answer_to(alice, bot, command, command=True)
            first = await alice.send(room, "a secret question")
            answer = await answer_to(alice, bot, first)
            assert answer.event.decrypted, "the bot must answer encrypted in an encrypted room"
            assert [role for role, _ in await bot.history(room)] == ["user", "assistant"]
            device = bot.adapter.client.device_id
        async with running_bot(tmp_path, tiny_model, synapse, account, worker=False) as bot:
            waiting = await alice.send(room, "taken, then the bot stopped")
            await eventually(lambda: _has_pending(bot))
        # While the bot is down: one message that will be too old, one that will not.
        too_old = await alice.send(room, "sent long before the restart")
        await asyncio.sleep(window + 0.5)
        fresh = await alice.send(room, "sent just before the restart")
        async with running_bot(
            tmp_path, tiny_model, synapse, account, catch_up_window_s=window
        ) as bot:
            await bot.ready()
            assert bot.adapter.client.device_id == device
            await answer_to(alice, bot, waiting)  # restored from the store, a reply as ever
            await answer_to(alice, bot, fresh)  # decrypted with the keys kept in the store
            later = await alice.send(room, "and after it")
            await answer_to(alice, bot, later)
            assert replies_from(alice, bot, too_old) == []
            assert len(replies_from(alice, bot, first)) == 1
            devices = await bot.adapter.client.devices()
            # One login ever (the other device is the registration's, not the bot's).
            assert {d.id for d in devices.devices} - {account.device_id} == {device}
            users = [text for role, text in await bot.history(room) if role == "user"]
            assert users == [
                "a secret question",
                "taken, then the bot stopped",
                "sent just before the restart",
                "and after it",
            ]
            for asked in (command, first, waiting, fresh, later):
                assert len(replies_from(alice, bot, asked)) == 1


async def test_redactions_and_edits_reach_the_store(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    async with alice_and_bot(synapse, tmp_path, tiny_model) as (alice, bot):
        room = await dm_with(alice, bot)
        asked = await alice.send(room, "remember the word apple")
        await answer_to(alice, bot, asked)
        await alice.send(
            room,
            "* remember the word pear",
            **{
                "m.new_content": {"msgtype": "m.text", "body": "remember the word pear"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": asked},
            },
        )

        async def edited() -> bool:
            return ("user", "remember the word pear") in await bot.history(room)

        await eventually(edited)
        await alice.client.room_redact(room, asked, reason="oops")

        async def redacted() -> bool:
            return [role for role, _ in await bot.history(room)] == ["assistant"]

        await eventually(redacted)


async def test_undecryptable_message_gets_one_notice_and_the_bot_stays(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    async with alice_and_bot(synapse, tmp_path, tiny_model) as (alice, bot):
        room = await dm_with(alice, bot, encrypted=True)
        bogus_session = "hearthbot-test-session-" + uuid.uuid4().hex
        sent = [await send_undecryptable(synapse, alice, room, bogus_session) for _ in range(2)]
        notice = await alice.wait_for(lambda: alice.reply_to(bot.user_id, sent[0]))
        assert content_of(notice)["msgtype"] == "m.notice"
        assert content_of(notice)["body"] == texts.UNDECRYPTABLE
        assert bogus_session in bot.adapter.client.outgoing_key_requests  # keys requested
        # Still in the room and still answering; the second bad message got no second notice.
        asked = await alice.send(room, "can you read this one?")
        await answer_to(alice, bot, asked)
        assert alice.joined(room, bot.user_id)
        notices = [
            s
            for s in alice.messages_from(bot.user_id, room)
            if content_of(s)["msgtype"] == "m.notice"
        ]
        assert len(notices) == 1


async def test_a_message_whose_key_arrives_late_is_answered_then(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    async with alice_and_bot(synapse, tmp_path, tiny_model) as (alice, bot):
        room = await dm_with(alice, bot, encrypted=True)
        await answer_to(alice, bot, await alice.send(room, "hello"))  # an Olm session exists
        client, olm = alice.client, alice.client.olm
        assert olm is not None
        device = client.device_store[bot.user_id][bot.adapter.client.device_id]
        # A new room key that Alice's client does not share with the bot (yet).
        olm.outbound_group_sessions.pop(room)
        olm.create_outbound_group_session(room)
        session = olm.outbound_group_sessions[room]
        key = {  # taken before the first message moves the ratchet on
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room,
            "session_id": session.id,
            "session_key": session.session_key,
        }
        client.blacklist_device(device)
        late = await alice.send(room, "did you get this one?")
        notice = await alice.wait_for(lambda: alice.reply_to(bot.user_id, late))
        assert content_of(notice)["body"] == texts.UNDECRYPTABLE
        # Now the key arrives, as a key forward from Alice's device would bring it.
        olm_session = olm.session_store.get(device.curve25519)
        encrypted = olm._olm_encrypt(olm_session, device, "m.room_key", key)
        await client.to_device(
            ToDeviceMessage("m.room.encrypted", bot.user_id, device.id, encrypted)
        )
        await alice.wait_for(lambda: len(replies_from(alice, bot, late)) == 2, timeout=30)
        users = [text for role, text in await bot.history(room) if role == "user"]
        assert users == ["hello", "did you get this one?"]


async def send_undecryptable(synapse: Synapse, alice: Peer, room: str, session: str) -> str:
    """An m.room.encrypted event whose Megolm session was never shared with anyone."""
    olm = alice.client.olm
    assert olm is not None
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEpABb2YgdGhpcyBjaXBoZXJ0ZXh0IGlzIG5vdCByZWFs",
        "sender_key": olm.account.identity_keys["curve25519"],
        "session_id": session,
        "device_id": alice.client.device_id,
    }
    url = f"{synapse.url}/_matrix/client/v3/rooms/{room}/send/m.room.encrypted/{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {alice.account.access_token}"}
    async with aiohttp.ClientSession() as http, http.put(url, json=content, headers=headers) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["event_id"])


# -- group rooms, threads, commands, access ----------------------------------------------------


async def group_room(alice: Peer, bot: Bot, *others: Peer) -> str:
    await bot.ready()
    room = await alice.create_room(invite=[bot.user_id, *(o.user_id for o in others)])
    for other in others:
        await other.wait_for(lambda o=other: room in o.client.invited_rooms)
        await other.join(room)
    await alice.wait_for(lambda: alice.joined(room, bot.user_id))
    for other in others:
        await alice.wait_for(lambda o=other: alice.joined(room, o.user_id))
    return room


async def test_group_room_answers_only_mentions_and_replies_to_the_bot(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    await synapse.set_displayname(account, "Hearthbot")
    SECRETS.append(account.access_token)
    async with (
        peer(synapse, tmp_path) as alice,
        peer(synapse, tmp_path, "carol") as carol,
        running_bot(tmp_path, tiny_model, synapse, account) as bot,
    ):
        room = await group_room(alice, bot, carol)
        localpart = account.localpart
        chatting = await alice.send(room, "just chatting, nothing for the bot")
        not_named = await alice.send(room, "hey all", **{"m.mentions": {"user_ids": []}})
        # Intentional mentions say whom a message mentions: the name alone does not count.
        named_only = await alice.send(
            room, "Hearthbot is nice, isn't it", **{"m.mentions": {"user_ids": [carol.user_id]}}
        )
        mentioned = await alice.send(
            room, "Hearthbot: what is up?", **{"m.mentions": {"user_ids": [bot.user_id]}}
        )
        answer = await answer_to(alice, bot, mentioned)
        for ignored in (chatting, not_named, named_only):
            assert replies_from(alice, bot, ignored) == []
        # Older clients: no m.mentions at all, the display name or the localpart in the body.
        by_name = await alice.send(room, "Hearthbot, tell me a story")
        await answer_to(alice, bot, by_name)
        by_localpart = await carol.send(room, f"what do you think, {localpart}?")
        await answer_to(alice, bot, by_localpart)
        # A reply to the bot's message needs no mention.
        reply = await alice.send(
            room,
            "and then?",
            **{
                "m.mentions": {},
                "m.relates_to": {"m.in_reply_to": {"event_id": answer.event.event_id}},
            },
        )
        await answer_to(alice, bot, reply)
        users = [text for role, text in await bot.history(room) if role == "user"]
        assert users == [
            "what is up?",  # the leading mention is not part of what the model sees
            "tell me a story",
            f"what do you think, {localpart}?",
            "and then?",
        ]
        stored = await bot.store.history(f"matrix:{room}")
        assert {m.author_id for m in stored if m.role == "user"} == {
            f"matrix:{alice.user_id}",
            f"matrix:{carol.user_id}",
        }


async def test_two_hearthbots_in_one_room_never_talk_to_each_other(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """Alice starts one direct chat with two hearthbots (Element's "start chat" with two
    people). To both it is a DM, where every message is answered: without the marker on what
    hearthbot sends, each would answer the other's answer, for ever. Each answers Alice once."""
    accounts = [await synapse.register("bot"), await synapse.register("bot")]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        peer(synapse, tmp_path) as alice,
        running_bot(tmp_path / "a", tiny_model, synapse, accounts[0], edit_interval_s=0.2) as a,
        running_bot(tmp_path / "b", tiny_model, synapse, accounts[1], edit_interval_s=0.2) as b,
    ):
        for bot in (a, b):
            await bot.ready()
        room = await alice.create_room(invite=[a.user_id, b.user_id], direct=True, encrypted=True)
        await alice.wait_for(
            lambda: alice.joined(room, a.user_id) and alice.joined(room, b.user_id)
        )
        asked = await alice.send(room, "hello, both of you")
        for bot in (a, b):
            answer = await answer_to(alice, bot, asked)
            assert answer.event.decrypted
        await asyncio.sleep(3)  # room for a loop to start, if there were one
        for bot in (a, b):
            await asyncio.wait_for(bot.daemon.wait_idle(), 20)
            assert [role for role, _ in await bot.history(room)] == ["user", "assistant"]
            assert len(alice.messages_from(bot.user_id, room)) == 1  # the answer, nothing else


async def test_a_thread_is_its_own_conversation_answered_in_the_thread(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    async with (
        peer(synapse, tmp_path) as alice,
        peer(synapse, tmp_path, "carol") as carol,
        running_bot(tmp_path, tiny_model, synapse, account) as bot,
    ):
        room = await group_room(alice, bot, carol)
        root = await alice.send(room, "a topic for a thread")
        in_thread = await alice.send(
            room,
            "what do you say?",
            **{
                "m.mentions": {"user_ids": [bot.user_id]},
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": root},
                },
            },
        )
        answer = await answer_to(alice, bot, in_thread)
        relation = content_of(answer)["m.relates_to"]
        assert relation["rel_type"] == "m.thread" and relation["event_id"] == root
        assert relation["m.in_reply_to"] == {"event_id": in_thread}
        # Going on in the thread: clients point the fallback reply at its latest event, ours.
        follow_up = await alice.send(
            room,
            "go on",
            **{
                "m.mentions": {},
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": answer.event.event_id},
                },
            },
        )
        await alice.wait_for(
            lambda: any(
                (content_of(s).get("m.relates_to") or {}).get("m.in_reply_to")
                == {"event_id": follow_up}
                for s in alice.messages_from(bot.user_id, room)
            ),
            timeout=30,
        )
        await bot.daemon.wait_idle()
        thread = await bot.store.history(f"matrix:{room}|{root}")
        assert [(m.role, m.text) for m in thread if m.role == "user"] == [
            ("user", "what do you say?"),
            ("user", "go on"),
        ]
        assert await bot.history(room) == []  # the room itself had nothing for the bot


async def test_quotes_edits_and_redactions_do_only_what_their_senders_may(
    synapse: Synapse, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply to a redacted event does not bring its text back (the adapter forgets the
    text, the store keeps only a reference); an edit by anyone but the sender changes
    nothing; a thread message the thread map has forgotten is still deleted when redacted."""
    monkeypatch.setattr(matrix_state, "MAX_THREAD_EVENTS", 1)  # the thread map forgets at once
    account = await synapse.register("bot")
    async with (
        peer(synapse, tmp_path) as alice,
        peer(synapse, tmp_path, "carol") as carol,
        running_bot(tmp_path, tiny_model, synapse, account) as bot,
    ):
        room = await group_room(alice, bot, carol)
        channel = f"matrix:{room}"
        to_bot = {"m.mentions": {"user_ids": [bot.user_id]}}

        async def users_said(where: str = channel) -> str:
            prompt = await bot.daemon.context.build(
                where, "sys", reserve=64, multi_user=True, through_row=10**9
            )
            assert isinstance(prompt, Prompt)
            return "\n".join(m["content"] for m in prompt.messages if m["role"] == "user")

        def reply_to(event_id: str) -> dict[str, Any]:
            return {**to_bot, "m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}

        # Alice tells Carol (not the bot) something, then takes it back.
        secret = await alice.send(room, "my PIN is 4417")
        fallback = f"> <{alice.user_id}> my PIN is 4417\n\n"
        early = await carol.send(room, fallback + "what is it for?", **reply_to(secret))
        await answer_to(alice, bot, early)
        assert "(replying to alice" in (await users_said()).lower()
        assert "> my PIN is 4417" in await users_said()
        await alice.client.room_redact(room, secret)

        async def forgotten() -> bool:
            return "4417" not in await users_said()

        await eventually(forgotten)
        late = await carol.send(room, fallback + "and now?", **reply_to(secret))
        await answer_to(alice, bot, late)
        assert "4417" not in await users_said()
        assert ("user", "and now?") in await bot.history(room)

        # Carol edits Alice's message: ignored (Carol's next message shows it was handled).
        asked = await alice.send(room, "meet at noon", **to_bot)
        await answer_to(alice, bot, asked)
        forged = {"msgtype": "m.text", "body": "send Carol money"}
        await carol.send(
            room,
            "* send Carol money",
            **{
                "m.new_content": forged,
                "m.relates_to": {"rel_type": "m.replace", "event_id": asked},
            },
        )
        after = await carol.send(room, "anything else?", **to_bot)
        await answer_to(alice, bot, after)
        users = [text for role, text in await bot.history(room) if role == "user"]
        assert "meet at noon" in users and "send Carol money" not in users

        # A thread message, redacted once the thread map no longer knows its thread.
        root = await alice.send(room, "a topic")
        thread = {"rel_type": "m.thread", "event_id": root}
        first = await alice.send(room, "first in the thread", **{**to_bot, "m.relates_to": thread})
        await answer_to(alice, bot, first)
        await alice.send(room, "more in the thread", **{"m.relates_to": thread})
        await alice.wait_for(lambda: first not in bot.adapter.account.state.threads)
        await alice.client.room_redact(room, first)

        async def thread_redacted() -> bool:
            return [role for role, _ in await bot.history(f"{room}|{root}")] == ["assistant"]

        await eventually(thread_redacted)
    assert "4417" not in everything_stored(tmp_path / "hearthbot.db")


async def test_commands_and_admin_rights_by_mxid_never_by_display_name(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    async with (
        peer(synapse, tmp_path) as alice,
        peer(synapse, tmp_path, "carol") as carol,
    ):
        SECRETS.append(carol.account.access_token)
        # Carol calls herself by Alice's MXID: display names never grant anything.
        await synapse.set_displayname(carol.account, alice.user_id)
        async with running_bot(
            tmp_path, tiny_model, synapse, account, admins=[alice.user_id]
        ) as bot:
            dm = await dm_with(alice, bot)
            asked = await alice.send(dm, "!help")
            help_text = alice.latest_text(
                (await answer_to(alice, bot, asked, command=True)).event.event_id
            )
            assert "!status" in help_text and "!forget" in help_text
            asked = await alice.send(dm, "!status")
            status = alice.latest_text(
                (await answer_to(alice, bot, asked, command=True)).event.event_id
            )
            assert "hearthbot-tiny-test" in status
            room = await group_room(alice, bot, carol)
            mention = {"m.mentions": {"user_ids": [bot.user_id]}}
            command = f"{account.localpart}: !persona coder"  # as a client's mention pill
            asked = await carol.send(room, command, **mention)
            refused = alice.latest_text(
                (await answer_to(alice, bot, asked, command=True)).event.event_id
            )
            assert refused == texts.NOT_ADMIN.format(name="persona")
            asked = await alice.send(room, command, **mention)
            done = alice.latest_text(
                (await answer_to(alice, bot, asked, command=True)).event.event_id
            )
            assert done.startswith("Persona is now coder")
            assert await bot.history(room) == []  # commands are not conversation


async def test_users_not_allowed_are_ignored_and_their_invites_not_joined(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    async with (
        peer(synapse, tmp_path) as alice,
        peer(synapse, tmp_path, "mallory") as mallory,
        running_bot(tmp_path, tiny_model, synapse, account, allowed_users=[alice.user_id]) as bot,
    ):
        await bot.ready()
        uninvited = await mallory.create_room(invite=[bot.user_id], direct=True)
        room = await group_room(alice, bot, mallory)  # Alice's invite is joined meanwhile
        mention = {"m.mentions": {"user_ids": [bot.user_id]}}
        ignored = await mallory.send(room, f"{account.localpart}, answer me", **mention)
        asked = await alice.send(room, f"{account.localpart}, answer her", **mention)
        await answer_to(alice, bot, asked)
        assert replies_from(alice, bot, ignored) == []
        assert uninvited in bot.adapter.client.invited_rooms
        assert uninvited not in bot.adapter.client.rooms
        assert not mallory.joined(uninvited, bot.user_id)
        assert [text for role, text in await bot.history(room) if role == "user"] == ["answer her"]


# -- failures ----------------------------------------------------------------------------------


async def test_synapse_restart_mid_answer_the_bot_recovers(
    synapse: Synapse, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with alice_and_bot(synapse, tmp_path, tiny_model, edit_interval_s=0.2) as (alice, bot):
        room = await dm_with(alice, bot, encrypted=True)
        # Hold the answer until the homeserver is down, so it is written during the outage.
        gate = asyncio.Event()
        build = bot.daemon.context.build

        async def held(*args: Any, **kwargs: Any) -> Any:
            await gate.wait()
            return await build(*args, **kwargs)

        monkeypatch.setattr(bot.daemon.context, "build", held)
        asked = await alice.send(room, "tell me something")
        await alice.wait_for(lambda: alice.typing_by(bot.user_id, room))  # taken
        await asyncio.to_thread(synapse.stop)
        gate.set()
        await eventually(lambda: _true(not bot.adapter.is_connected()), timeout=30)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(synapse.start)
        first = await answer_to(alice, bot, asked, timeout=60)
        stored = [text for role, text in await bot.history(room) if role == "assistant"]
        assert alice.latest_text(first.event.event_id).startswith(stored[0])
        await eventually(lambda: _true(bot.adapter.is_connected()), timeout=30)
        again = await alice.send(room, "are you back?")
        await answer_to(alice, bot, again)


async def _true(value: bool) -> bool:
    return value


async def _has_pending(bot: Bot) -> bool:
    return bool(await bot.store.pending())


async def test_default_rate_limits_slow_the_edits_but_the_answer_completes(
    tmp_path: Path, tiny_model: Path
) -> None:
    # Synapse exactly as shipped (rc_message: 0.2/s, burst 10), in its own instance.
    require_synapse()
    server = Synapse(tmp_path / "synapse-default", rate_limits="default")
    await asyncio.to_thread(server.start)
    try:
        account = await server.register("bot")
        SECRETS.append(account.access_token)
        async with peer(server, tmp_path) as alice:
            # Use up the bot's burst first, from another session of the same account.
            room = await alice.create_room(invite=[account.user_id], direct=True)
            await join_and_flood(server, account, room, count=10)
            async with running_bot(
                tmp_path, tiny_model, server, account, edit_interval_s=0.2
            ) as bot:
                await bot.ready()
                asked = await alice.send(room, "hello despite the limits")
                answer = await answer_to(alice, bot, asked, timeout=90)
                stored = [text for role, text in await bot.history(room) if role == "assistant"]
                assert alice.latest_text(answer.event.event_id).startswith(stored[0])
                assert bot.adapter.outbox.edit_interval > 0.2  # widened by itself after a 429
    finally:
        await asyncio.to_thread(server.stop)


async def join_and_flood(server: Synapse, account: Account, room: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {account.access_token}"}
    base = f"{server.url}/_matrix/client/v3/rooms/{room}"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/join", json={}) as r:
            assert r.status == 200, await r.text()
        for i in range(count):
            body = {"msgtype": "m.notice", "body": f"warming up {i}"}
            async with http.put(f"{base}/send/m.room.message/{uuid.uuid4()}", json=body) as r:
                assert r.status in (200, 429), await r.text()


async def never(event: ChatEvent) -> Outcome:
    raise AssertionError(f"nothing should arrive: {event}")


async def test_wrong_password_and_bad_token_fail_with_one_clear_line(
    synapse: Synapse, tmp_path: Path
) -> None:
    account = await synapse.register("bot")
    wrong = "not-the-password-" + uuid.uuid4().hex
    SECRETS.append(wrong)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"password": wrong}, "refused"),
        ({"password": None, "access_token": "syt_bogus_" + uuid.uuid4().hex}, "access token"),
    ]
    for i, (credentials, expected) in enumerate(cases):
        settings = load_settings(
            None,
            bot={"data_dir": tmp_path / str(i)},
            matrix=matrix_section(synapse, account, **credentials),
        )
        if settings.matrix.access_token:
            SECRETS.append(settings.matrix.access_token.get_secret_value())
        adapter = MatrixAdapter(settings.matrix, settings.bot)
        await adapter.start(never)
        try:
            reason = await asyncio.wait_for(adapter.failure, 20)
        finally:
            await adapter.stop()
        assert expected in reason and "\n" not in reason
        assert wrong not in reason
        assert not adapter.is_connected()


async def test_homeserver_down_at_boot_does_not_block_start(tmp_path: Path) -> None:
    port_nobody_listens_on = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(
        None,
        bot={"data_dir": tmp_path},
        matrix={
            "homeserver": port_nobody_listens_on,
            "user_id": f"@bot:{SERVER_NAME}",
            "password": "irrelevant-password",
        },
    )
    adapter = MatrixAdapter(settings.matrix, settings.bot)
    started = time.monotonic()
    await adapter.start(never)
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(1.5)  # login attempts fail and are retried, quietly
    assert not adapter.failure.done()
    assert not adapter.is_connected()
    await adapter.stop()
    await adapter.stop()  # safe twice


# -- key verification ----------------------------------------------------------------------------


async def test_an_admin_verifies_the_bots_device_with_emoji(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    account = await synapse.register("bot")
    async with (
        peer(synapse, tmp_path) as alice,
        running_bot(tmp_path, tiny_model, synapse, account, admins=[alice.user_id]) as bot,
    ):
        room = await dm_with(alice, bot, encrypted=True)
        await answer_to(alice, bot, await alice.send(room, "hi"))  # devices are known now
        client = alice.client
        device = client.device_store[bot.user_id][bot.adapter.client.device_id]
        transaction = uuid.uuid4().hex
        # Element's way: a request first, the bot answers "ready", then SAS starts.
        request = ToDeviceMessage(
            "m.key.verification.request",
            bot.user_id,
            device.id,
            {
                "from_device": client.device_id,
                "methods": ["m.sas.v1"],
                "timestamp": int(time.time() * 1000),
                "transaction_id": transaction,
            },
        )
        await client.to_device(request)
        await alice.wait_for(lambda: _to_device(alice, "m.key.verification.ready"))
        olm = client.olm
        assert olm is not None
        sas = Sas(
            client.user_id,
            client.device_id,
            olm.account.identity_keys["ed25519"],
            device,
            transaction,
        )
        olm.key_verifications[transaction] = sas
        await client.to_device(sas.start_verification())
        await alice.wait_for(
            lambda: any(isinstance(e, KeyVerificationKey) for e in alice.to_device)
        )
        theirs = bot.adapter.client.key_verifications[transaction]
        assert sas.get_emoji() == theirs.get_emoji()  # what the admin compares
        await client.confirm_short_auth_string(transaction)
        await alice.wait_for(
            lambda: any(isinstance(e, KeyVerificationMac) for e in alice.to_device)
        )
        await alice.wait_for(lambda: sas.verified)
        assert client.device_store[bot.user_id][device.id].verified
        await alice.wait_for(lambda: _to_device(alice, "m.key.verification.done"))


def _to_device(peer: Peer, kind: str) -> bool:
    return any(isinstance(e, UnknownToDeviceEvent) and e.type == kind for e in peer.to_device)


# -- hostile input ------------------------------------------------------------------------------


MATRIX_BODY_BYTES = 16_000


async def test_hostile_corpus_in_an_encrypted_dm(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """Every case of tests/data/hostile_inputs.json, sent by a real client into an encrypted DM:
    each gets an answer or a clear refusal, m.mentions stays empty (nobody pinged), and the
    bot still answers a normal message afterwards."""
    async with alice_and_bot(synapse, tmp_path, tiny_model, edit_interval_s=0.2) as (alice, bot):
        bot.daemon.queue.per_user_per_minute = 10_000  # the rate limit is tested elsewhere
        room = await dm_with(alice, bot, encrypted=True)
        for case_id, text in hostile_cases():
            # An event is at most 64 KiB (encrypted: less): send what a client can deliver.
            while len(json.dumps(text)) > MATRIX_BODY_BYTES:  # as escaped, then encrypted
                text = text[: len(text) // 2]
            asked = await alice.send(room, text or " ")  # Matrix needs a non-empty body
            reply = await answer_to(alice, bot, asked, timeout=60, command=True)
            assert content_of(reply)["m.mentions"] == {}, case_id
            assert alice.latest_text(reply.event.event_id).strip(), case_id
        asked = await alice.send(room, "hello, still there?")
        assert alice.latest_text((await answer_to(alice, bot, asked)).event.event_id).strip()


# -- bounds: event size, one room's wait -------------------------------------------------------


async def test_an_answer_whose_html_would_be_over_the_event_limit_arrives(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """4,000 characters of table rendered to 669 KB of HTML: every edit and the final text
    were refused (M_TOO_LARGE), so the answer never showed. The reply is driven here as the
    daemon drives it, with that text."""
    account = await synapse.register("bot")
    async with (
        peer(synapse, tmp_path) as alice,
        running_bot(tmp_path, tiny_model, synapse, account, worker=False) as bot,
    ):
        room = await dm_with(alice, bot, encrypted=True)
        asked = await alice.send(room, "a table, please")
        await eventually(lambda: _has_pending(bot))
        (pending,) = await bot.store.pending()
        table = padded_table(600)
        reply = bot.adapter.open_reply(pending.message)
        await reply.update(table[:1000])
        await reply.update(table)
        await reply.finish(table)
        await asyncio.wait_for(reply.done.wait(), 60)
        answer = await alice.wait_for(lambda: alice.reply_to(bot.user_id, asked))
        assert answer.event.decrypted
        await alice.wait_for(lambda: alice.latest_text(answer.event.event_id) == table, 30)


async def test_a_room_waiting_on_the_daemon_holds_up_no_other_room(
    synapse: Synapse, tmp_path: Path, tiny_model: Path
) -> None:
    """Events were handed over one at a time for all rooms: a `!forget` waiting for the model
    froze every room. Now a room waits alone (its own events stay in order)."""
    async with alice_and_bot(synapse, tmp_path, tiny_model) as (alice, bot):
        slow_room, other_room = await dm_with(alice, bot), await dm_with(alice, bot)
        release = asyncio.Event()
        sink = bot.adapter.sync.sink
        assert sink is not None

        async def slow_in_one_room(event: ChatEvent) -> Outcome:
            if getattr(event, "channel_id", None) == slow_room:
                await release.wait()
            return await sink(event)

        bot.adapter.sync.sink = slow_in_one_room
        held = [await alice.send(slow_room, "first, held"), await alice.send(slow_room, "second")]
        await alice.wait_for(lambda: bot.adapter.sync.dispatcher.waiting >= 1)
        asked = await alice.send(other_room, "and here?")
        await answer_to(alice, bot, asked)
        assert all(replies_from(alice, bot, event_id) == [] for event_id in held)
        release.set()
        for event_id in held:
            await answer_to(alice, bot, event_id)
        users = [text for role, text in await bot.history(slow_room) if role == "user"]
        assert users == ["first, held", "second"]
