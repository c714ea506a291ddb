"""A command's reply and the answers in its channel keep their order: no answer starts in a
channel while a command there runs and shows its reply. So `!reset`'s "cleared" shows before
the answer to a message it kept (still waiting, it is answered after), never after it: the
history then holds exactly what was shown after the notice."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bot.events import Outcome
from support.daemons import answered, daemon_for, model_held
from support.persona_files import only_persona
from support.recording_adapter import message


async def test_reset_shows_before_the_answer_to_a_message_it_kept(
    tmp_path: Path, tiny_model: Path
) -> None:
    persona = only_persona(tmp_path, "short", max_tokens=16)
    async with daemon_for(tmp_path, tiny_model, bot=persona) as (daemon, adapter):
        first, second = message("zq1 first question"), message("zq2 second question")
        reset = message("!reset")
        adapter.gates[reset.message_id] = gate = asyncio.Event()  # a slow platform call
        async with model_held(daemon.backend):
            assert await daemon.handle(first) is Outcome.ACCEPTED
            assert await daemon.handle(second) is Outcome.ACCEPTED  # queued behind it
            while not daemon.status().answering:  # noqa: ASYNC110 (the first takes a slot)
                await asyncio.sleep(0.01)
            resetting = asyncio.create_task(daemon.handle(reset))
            # The reset runs: it stops the first answer and waits for its end.
            while reset.channel_key not in daemon.responder._held:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        (first_reply,) = adapter.for_message(first.message_id)
        await asyncio.wait_for(first_reply.done.wait(), 60)
        (second_reply,) = adapter.for_message(second.message_id)
        # Before the fix the second answer ended here, while the notice was still being sent.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(second_reply.done.wait(), 2)
        gate.set()
        assert await resetting is Outcome.COMMAND
        await answered(second_reply)
        assert adapter.ended.index(reset.message_id) < adapter.ended.index(second.message_id)
        # The reset kept the message still waiting; its answer came after, and stays.
        history = await daemon.store.history(second.channel_key)
        assert [m.role for m in history] == ["user", "assistant"]
        assert history[0].text == second.text
