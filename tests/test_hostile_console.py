"""The hostile-input corpus through the console adapter and the real daemon and model."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from adapters.console import ConsoleAdapter
from bot.daemon import Daemon
from bot.events import ChatEvent, Incoming, Outcome
from bot.incoming_text import max_message_chars
from bot.model.llama_cpp.backend import LlamaCppBackend
from bot.personas import load_personas
from bot.settings import load_settings
from bot.store import Store
from support.hostile import hostile_cases
from support.progress import run_progressing, wait_progressing

# The longest a healthy run goes without new output (the model loading; one answer) on a busy box.
QUIET_S = 120


def test_corpus_is_big_enough() -> None:
    cases = hostile_cases()
    assert len(cases) >= 50
    assert len({case_id for case_id, _ in cases}) == len(cases)


async def test_every_case_through_the_console(tmp_path: Path, tiny_model: Path) -> None:
    cases = hostile_cases()
    # The console reads one message per line, so a case's newlines become spaces here.
    lines = [text.replace("\r", " ").replace("\n", " ") for _, text in cases]
    lines.append("FINAL normal question")
    stdin = io.StringIO("\n".join(lines) + "\n")
    stdout = io.StringIO()
    settings = load_settings(None, bot={"data_dir": tmp_path})
    engine = await LlamaCppBackend.load(tiny_model, n_ctx=2048, n_threads=2)
    store = await Store.open(tmp_path / "db.sqlite")
    console = ConsoleAdapter(stdin, stdout, interactive=False)
    daemon = Daemon(settings, store, engine, load_personas(), {"console": console})  # type: ignore[dict-item]
    outcomes: list[tuple[str, Outcome]] = []

    async def sink(event: ChatEvent) -> Outcome:
        outcome = await daemon.handle(event)
        assert isinstance(event, Incoming)
        outcomes.append((event.text, outcome))
        return outcome

    try:
        await daemon.start()
        console._reader.cancel()  # type: ignore[union-attr]  # restart it with our recording sink
        await console.start(sink)

        # However long the corpus takes, as long as answers keep coming.
        def progress() -> tuple[int, int]:
            return len(outcomes), len(stdout.getvalue())

        await wait_progressing(console.finished.wait(), progress, QUIET_S, "the corpus")
        await wait_progressing(daemon.wait_idle(), progress, QUIET_S, "the last answer")
    finally:
        await daemon.stop()
        await store.close()
        await engine.close()
    out = stdout.getvalue()
    # The console skips blank lines in piped mode; every other case got an outcome.
    assert len(outcomes) == sum(1 for line in lines if line.strip())
    # Refused only when too long to read for the context (with a notice, below).
    limit = max_message_chars(2048)
    assert all(
        o in (Outcome.ACCEPTED, Outcome.COMMAND) or (o is Outcome.REFUSED and len(text) > limit)
        for text, o in outcomes
    ), outcomes
    assert outcomes[-1] == ("FINAL normal question", Outcome.ACCEPTED)
    assert "too long for my context" in out  # the 100 kB case is refused clearly
    assert "Only an admin" not in out  # the console user is the owner: an admin
    assert out.rstrip().splitlines()[-1].strip()  # the last question was answered


def test_invalid_utf8_on_stdin_does_not_crash(tmp_path: Path, tiny_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHBOT_")} | {
        "HEARTHBOT_MODEL__PATH": str(tiny_model),
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path),
    }
    payload = b"bad bytes \xff\xfe\xc3\x28 here\n\xed\xa0\x80 lone surrogate\nstill there?\n"
    result = run_progressing(
        [sys.executable, "-m", "bot.app.cli", "chat"], input=payload, env=env, quiet_s=QUIET_S
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"Traceback" not in result.stderr
    assert result.stderr.count(b'"event": "answered"') == 3
