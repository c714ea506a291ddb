"""The Matrix adapter's parts without a homeserver: content building (Markdown → HTML,
relations, edits), what is kept on disk, how a reply coalesces its edits (driven through a
stand-in for the Outbox, recorded in memory), and how edits slow down after a 429."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from nio import RoomSendError

from adapters.common.state_file import write_private
from adapters.matrix.adapter import MatrixAdapter
from adapters.matrix.format import edit_content, message_content, render_html
from adapters.matrix.reply import MatrixReply
from adapters.matrix.state import (
    MAX_THREAD_EVENTS,
    STATE_FILE,
    Session,
    SyncState,
)
from bot.settings import load_settings
from support.matrix_reply import RecordingOutbox, incoming


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("Hello", "Hello"),
        ("line one\nline two", "line one<br />\nline two"),
        ("**bold** and `code`", "<strong>bold</strong> and <code>code</code>"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("one\n\ntwo", "<p>one</p>\n<p>two</p>"),
        ("```py\nx = 1\n```", '<pre><code class="language-py">x = 1\n</code></pre>'),
        ("~~gone~~", "<s>gone</s>"),
        ("@room look", "@room look"),
        # No images (a client would load them); no link whose text hides its target.
        ("![logo](mxc://evil.org/abc)", "logo"),
        ('a ![](https://t.example/p.gif "x") b', "a  b"),
        (
            "[https://bank.example](https://evil.example/x)",
            'https://bank.example (<a href="https://evil.example/x">https://evil.example/x</a>)',
        ),
        ("[docs](https://x.org)", 'docs (<a href="https://x.org">https://x.org</a>)'),
        ("[![pic](mxc://e/f)](https://x.org)", 'pic (<a href="https://x.org">https://x.org</a>)'),
        ("<https://x.org>", '<a href="https://x.org">https://x.org</a>'),
        ("[https://x.org](https://x.org)", '<a href="https://x.org">https://x.org</a>'),
    ],
)
def test_render_html(markdown: str, html: str) -> None:
    assert render_html(markdown) == html


def test_message_content_reply_thread_and_notice() -> None:
    plain = message_content("**hi**", reply_to="$q")
    assert plain == {
        "msgtype": "m.text",
        "body": "**hi**",
        "format": "org.matrix.custom.html",
        "formatted_body": "<strong>hi</strong>",
        "m.mentions": {},
        "org.hearthbot.bot": True,
        "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
    }
    threaded = message_content("hi", reply_to="$q", thread_root="$root")
    assert threaded["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$q"},
    }
    follow_up = message_content("more", thread_root="$root")
    assert follow_up["m.relates_to"] == {"rel_type": "m.thread", "event_id": "$root"}
    assert "m.relates_to" not in message_content("alone")
    assert message_content("x", msgtype="m.notice")["msgtype"] == "m.notice"


def test_edit_content() -> None:
    edit = edit_content("$orig", "*new* text")
    assert edit["body"] == "* *new* text"
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$orig"}
    assert edit["m.new_content"]["formatted_body"] == "<em>new</em> text"
    assert edit["m.mentions"] == {} == edit["m.new_content"]["m.mentions"]
    assert "formatted_body" not in edit  # the fallback stays small


def test_session_is_private_and_round_trips(tmp_path: Path) -> None:
    store = tmp_path / "matrix"
    session = Session("https://hs", "@b:hs", "DEVICE", "secret-token")
    session.save(store)
    assert Session.load(store) == session
    mode = stat.S_IMODE((store / "session.json").stat().st_mode)
    assert mode == 0o600
    Session.forget(store)
    assert Session.load(store) is None
    (store / "session.json").write_text("{not json")
    assert Session.load(store) is None


def test_sync_state_round_trips_per_account_and_stays_bounded(tmp_path: Path) -> None:
    state = SyncState()
    state.advance("s1")
    state.mark_direct("!dm:hs")
    for i in range(MAX_THREAD_EVENTS + 10):
        state.remember_thread(f"$e{i}", "$root")
    assert len(state.threads) == MAX_THREAD_EVENTS and "$e0" not in state.threads
    write_private(tmp_path / STATE_FILE, state.snapshot("@b:hs"))
    loaded = SyncState.load(tmp_path, "@b:hs")
    assert loaded.next_batch == "s1" and loaded.direct_rooms == {"!dm:hs": 0}
    assert loaded.threads == state.threads
    assert SyncState.load(tmp_path, "@other:hs").next_batch is None


def test_a_direct_room_is_measured_once_and_older_state_still_loads(tmp_path: Path) -> None:
    state = SyncState()
    state.mark_direct("!dm:hs")
    assert state.marked_members("!other:hs", 2) is None
    assert state.marked_members("!dm:hs", 3) == 3  # the first look sets what "direct" holds
    assert state.marked_members("!dm:hs", 4) == 3
    write_private(tmp_path / STATE_FILE, {"user_id": "@b:hs", "direct_rooms": ["!old:hs"]})
    assert SyncState.load(tmp_path, "@b:hs").direct_rooms == {"!old:hs": 2}


async def test_updates_are_coalesced_and_the_final_text_always_lands() -> None:
    outbox = RecordingOutbox(interval=0.2)
    reply = MatrixReply(outbox, incoming())  # type: ignore[arg-type]
    await reply.typing()
    assert outbox.typing["!room:hs"]
    text = ""
    for word in range(30):  # 30 updates in ~0.3 s
        text += f"w{word} "
        await reply.update(text.strip())
        await asyncio.sleep(0.01)
    await reply.finish("the final answer")
    await asyncio.wait_for(reply.done.wait(), 5)
    first, *edits = outbox.sent
    assert first["m.relates_to"] == {"m.in_reply_to": {"event_id": "$question"}}
    assert 1 <= len(edits) <= 4  # the first text, at most ~one edit per interval, the final
    assert edits[-1]["m.new_content"]["body"] == "the final answer"
    assert all(e["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$sent1"} for e in edits)
    assert not outbox.typing["!room:hs"]


async def test_a_quick_answer_is_one_message_and_a_long_one_continues() -> None:
    outbox = RecordingOutbox()
    reply = MatrixReply(outbox, incoming("!room:hs|$root"))  # type: ignore[arg-type]
    long = " ".join(f"word{i}" for i in range(30))
    await reply.finish(long)
    await asyncio.wait_for(reply.done.wait(), 5)
    assert len(outbox.sent) > 1
    assert all(len(c["body"]) <= outbox.max_length for c in outbox.sent)
    assert " ".join(c["body"] for c in outbox.sent).split() == long.split()
    assert outbox.sent[0]["m.relates_to"]["m.in_reply_to"] == {"event_id": "$question"}
    for content in outbox.sent:  # every part stays in the thread
        assert content["m.relates_to"]["rel_type"] == "m.thread"
        assert content["m.relates_to"]["event_id"] == "$root"


async def test_fail_after_partial_text_says_why_and_before_it_sends_a_notice() -> None:
    outbox = RecordingOutbox(interval=0.01)
    reply = MatrixReply(outbox, incoming())  # type: ignore[arg-type]
    await reply.update("partial")
    await asyncio.sleep(0.05)
    await reply.fail("stopped: shutting down")
    await reply.finish("ignored: already concluded")
    await asyncio.wait_for(reply.done.wait(), 5)
    assert outbox.sent[-1]["m.new_content"]["body"] == "partial\n\nstopped: shutting down"
    outbox = RecordingOutbox()
    reply = MatrixReply(outbox, incoming())  # type: ignore[arg-type]
    await reply.fail("busy")
    await asyncio.wait_for(reply.done.wait(), 5)
    assert [(c["msgtype"], c["body"]) for c in outbox.sent] == [("m.notice", "busy")]


async def test_a_reply_waits_for_the_client_and_never_blocks_the_caller() -> None:
    outbox = RecordingOutbox()
    outbox.ready.clear()  # e.g. a reply restored from the store before the first sync
    outbox.send_delay = 0.5
    reply = MatrixReply(outbox, incoming())  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await reply.update("one")
    await reply.finish("two")
    assert loop.time() - started < 0.05
    await asyncio.sleep(0.05)
    assert outbox.sent == []
    outbox.ready.set()
    await asyncio.wait_for(reply.done.wait(), 5)
    assert [c["body"] for c in outbox.sent] == ["two"]


async def test_edit_interval_widens_on_429_and_calms_down(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        bot={"data_dir": tmp_path},
        matrix={"homeserver": "http://127.0.0.1:9", "edit_interval_s": 1},
    )
    adapter = MatrixAdapter(settings.matrix, settings.bot)
    limited = RoomSendError("Too Many Requests", "M_LIMIT_EXCEEDED", retry_after_ms=5000)
    adapter.outbox.rate_limited(RoomSendError("nope", "M_FORBIDDEN"))
    assert adapter.outbox.edit_interval == 1
    adapter.outbox.rate_limited(limited)
    assert adapter.outbox.edit_interval == 5  # at least what the server asked for
    adapter.outbox.rate_limited(limited)
    assert adapter.outbox.edit_interval == 10  # and doubling while it keeps saying so
    seen = []
    for _ in range(5):
        adapter.outbox._limited_at -= 61  # a quiet minute
        seen.append(adapter.outbox.edit_interval)
    assert seen == [5, 2.5, 1.25, 1, 1]
