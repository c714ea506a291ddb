"""`hearthbot` as a user runs it: a subprocess with piped stdin, real model, real SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app.cli import parser

CLI = [sys.executable, "-m", "bot.app.cli"]


def run(
    args: list[str], env: dict[str, str], stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=env["HOME"],
    )


@pytest.fixture
def env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHBOT_")}
    clean.pop("CREDENTIALS_DIRECTORY", None)
    clean.pop("STATE_DIRECTORY", None)
    home = tmp_path / "home"
    home.mkdir()
    return clean | {
        "HOME": str(home),
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "HEARTHBOT_MODEL__PATH": str(tiny_model),
        "HEARTHBOT_MODEL__N_CTX": "2048",
        "HEARTHBOT_BOT__DATA_DIR": str(tmp_path / "data"),
    }


def test_chat_with_piped_stdin(env: dict[str, str], tmp_path: Path) -> None:
    lines = ["hello there", "!seed 7", "how are you?", "", "!status", "tell me more"]
    result = run(["chat"], env, "\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "Seed is now 7" in out
    assert "/ 2,048 tokens" in out and "hearthbot-tiny-test" in out
    # Logs are JSON lines on stderr, never mixed into the answers on stdout.
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line.strip()]
    assert events.count("answered") == 3
    assert "answered" not in out and '"event"' not in out
    # A restart forgets nothing: the history is in SQLite.
    assert (tmp_path / "data" / "hearthbot.db").exists()
    again = run(["chat"], env, "!status\n")
    used_before = _context_used(out)
    used_after = _context_used(again.stdout)
    assert used_after > used_before > 0


def test_the_console_answers_every_message_whatever_the_trigger(env: dict[str, str]) -> None:
    """The console is a direct chat: `[bot] trigger = "off"` and `!trigger` change nothing."""
    lines = ["!trigger", "!trigger off", "hello there", "!trigger all"]
    result = run(["chat"], env | {"HEARTHBOT_BOT__TRIGGER": "off"}, "\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("In a direct chat I answer every message.") == 3
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line.strip()]
    assert events.count("answered") == 1


def _context_used(out: str) -> int:
    line = next(line for line in out.splitlines() if line.startswith("Context:"))
    return int(line.split()[1].replace(",", ""))


def test_run_without_platforms_is_the_console(env: dict[str, str]) -> None:
    result = run(["run"], env, "hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_check_prints_a_summary(env: dict[str, str]) -> None:
    result = run(["check"], env)
    assert result.returncode == 0, result.stderr
    assert "hearthbot-tiny-test" in result.stdout
    assert "assistant" in result.stdout and result.stdout.rstrip().endswith("ok")


def test_personas_lists_bundled_ones(env: dict[str, str]) -> None:
    result = run(["personas"], env)
    assert result.returncode == 0
    for name in ("assistant", "coder", "storyteller", "goofy"):
        assert name in result.stdout


COMMANDS = [["run"], ["chat"], ["check"], ["personas"], ["model", "pull"], ["model", "suggest"]]


@pytest.mark.parametrize(
    "argv",
    [
        *(["--config", "my.toml", *command] for command in COMMANDS),
        *([*command, "--config", "my.toml"] for command in COMMANDS),
        ["model", "--config", "my.toml", "pull"],
        ["run", "--pull-missing", "--config", "my.toml"],
        ["check", "--config", "my.toml", "--online"],
        ["model", "pull", "--config", "my.toml", "some/repo", "some.gguf"],
        ["model", "pull", "qwen2.5-3b:q8_0", "--config", "my.toml"],
        ["model", "pull", "--no-projector", "--config", "my.toml", "some/repo", "some.gguf"],
        ["model", "suggest", "--no-measure", "--config", "my.toml"],
    ],
    ids=" ".join,
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert args.config == "my.toml"
    assert args.command in argv


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_without_global_options_keeps_the_defaults(command: list[str]) -> None:
    assert parser().parse_args(command).config is None


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ("[model]\nn_ctx = 'big'\n", "model.n_ctx"),
        ("[queue]\nmax_pendingg = 3\n", "queue.max_pendingg"),
        ("[bot]\ndefault_persona = 'nobody'\n", "bot.default_persona"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_field(
    env: dict[str, str], tmp_path: Path, config: str, field: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config)
    # The environment would override the file's bad value.
    env = {k: v for k, v in env.items() if k != "HEARTHBOT_MODEL__N_CTX"}
    result = run(["--config", str(path), "check"], env)
    assert result.returncode == 2
    # A file that does not load is reported on stderr; a bad persona is check's ✗ line.
    assert field in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_missing_config_file_is_an_error(env: dict[str, str], tmp_path: Path, before: bool) -> None:
    option = ["--config", str(tmp_path / "nope.toml")]
    result = run([*option, "check"] if before else ["check", *option], env)
    assert result.returncode == 2 and "not found" in result.stderr
    env_named = env | {"HEARTHBOT_CONFIG": str(tmp_path / "gone.toml")}
    result = run(["check"], env_named)
    assert result.returncode == 2 and "gone.toml" in result.stderr


@pytest.mark.parametrize("content", [b"", b"not a model at all" * 100])
def test_bad_model_is_one_clear_line(env: dict[str, str], tmp_path: Path, content: bytes) -> None:
    model = tmp_path / "bad.gguf"
    model.write_bytes(content)
    result = run(["chat"], env | {"HEARTHBOT_MODEL__PATH": str(model)}, "hi\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(model) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_model_explains_how_to_get_one(env: dict[str, str]) -> None:
    no_model = {k: v for k, v in env.items() if k != "HEARTHBOT_MODEL__PATH"}
    result = run(["chat"], no_model, "hi\n")
    assert result.returncode == 1
    assert "model pull" in result.stderr and "Traceback" not in result.stderr


def test_model_in_data_dir_is_found(env: dict[str, str], tmp_path: Path, tiny_model: Path) -> None:
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    (models / "tiny.gguf").write_bytes(tiny_model.read_bytes())
    no_path = {k: v for k, v in env.items() if k != "HEARTHBOT_MODEL__PATH"}
    result = run(["check"], no_path)
    assert result.returncode == 0, result.stderr
    assert str(models / "tiny.gguf") in result.stdout


def test_output_closed_early_is_not_a_traceback(env: dict[str, str]) -> None:
    # `hearthbot personas | head -1`: the reader goes away after one line.
    proc = subprocess.Popen(
        [*CLI, "personas"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=env["HOME"],
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_chat_ends_when_its_output_is_closed(env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [*CLI, "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=env["HOME"],
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody will read the answers
    proc.stdin.write(b"hello\nare you there?\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0  # no hang waiting for an answer nobody can see
    assert b"Traceback" not in proc.stderr.read()
