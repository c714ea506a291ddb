"""bot/settings.py: TOML < secrets dir < env, every problem named by field, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import ConfigError, Settings, find_config_file, load_settings, shown_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HEARTHBOT_") or name in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # no stray ./hearthbot.toml


def toml(tmp_path: Path, text: str, name: str = "hearthbot.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(config: Path | None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, **kwargs)
    return str(caught.value)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(None)
    assert settings.model.n_ctx == 4096
    assert settings.model.path is None
    assert settings.queue.max_pending == 64
    assert settings.bot.default_persona == "assistant"
    assert settings.bot.admins == []
    assert settings.bot.data_dir == tmp_path / "xdg" / "hearthbot"


def test_toml_values_are_read(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        """
        [model]
        n_ctx = 8192
        path = "/models/x.gguf"
        [bot]
        admins = ["discord:1"]
        default_persona = "coder"
        [queue]
        max_pending = 5
        [log]
        level = "debug"
        """,
    )
    settings = load_settings(config)
    assert settings.model.n_ctx == 8192
    assert settings.model.path == Path("/models/x.gguf")
    assert settings.model.n_batch == 512  # untouched keys of a section keep their default
    assert settings.bot.admins == ["discord:1"]
    assert settings.bot.default_persona == "coder"
    assert settings.queue.max_pending == 5
    assert settings.log.level == "debug"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[model]\nn_ctx = "big"',
            ["model.n_ctx", "HEARTHBOT_MODEL__N_CTX", "'big'"],
            id="bad-type",
        ),
        pytest.param(
            "[model]\nn_ctx = 10", ["model.n_ctx", "greater than or equal to 256"], id="too-small"
        ),
        pytest.param("[queue]\nmax_pending = 0", ["queue.max_pending"], id="zero"),
        pytest.param('[log]\nlevel = "loud"', ["log.level"], id="bad-literal"),
        pytest.param(
            "[model]\nn_ctxx = 1",
            ["model.n_ctxx", "unknown setting", "HEARTHBOT_MODEL__N_CTXX"],
            id="unknown-key",
        ),
        pytest.param("[modle]\nn_ctx = 1", ["modle", "unknown setting"], id="unknown-section"),
        pytest.param("stray = 1", ["stray", "unknown setting"], id="unknown-top-level"),
        pytest.param(
            '[model]\nn_ctx = "big"\n[queue]\nmax_pending = -1',
            ["model.n_ctx", "queue.max_pending"],
            id="every-problem-named",
        ),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    config = toml(tmp_path, text)
    message = load_error(config)
    assert str(config) in message
    for part in expected:
        assert part in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = toml(tmp_path, "[model\nn_ctx = 1")
    message = load_error(config)
    assert str(config) in message
    assert "not valid TOML" in message


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    config = toml(tmp_path, '[model]\naccess_token = "hunter2-secret"')
    message = load_error(config)
    assert "model.access_token" in message
    assert "hunter2-secret" not in message


def test_url_credentials_are_not_echoed(tmp_path: Path) -> None:
    config = toml(tmp_path, '[model]\nbase_url = "ftp://bot:pw-in-url@gpu-box/v1"')
    message = load_error(config)
    assert "model.base_url" in message and "ftp://***@gpu-box/v1" in message
    assert "pw-in-url" not in message


def test_openai_api_defaults_to_completions_without_vision() -> None:
    model = load_settings(None).model
    assert (model.openai_api, model.openai_vision) == ("completions", False)
    chat = load_settings(None, model={"openai_api": "chat", "openai_vision": True}).model
    assert (chat.openai_api, chat.openai_vision) == ("chat", True)


@pytest.mark.parametrize(
    ("given", "layout", "pool_tokens"),
    [
        ({}, "slots", 4096 * 4),
        ({"kv_layout": "pool"}, "pool", 4096 * 4),
        ({"kv_pool_tokens": 32768}, "pool", 32768),  # a sized pool means the pool
        ({"kv_layout": "pool", "kv_pool_tokens": 1000}, "pool", 4096),  # at least one window
        ({"kv_layout": "slots", "n_ctx": 2048, "parallel": 3}, "slots", 2048 * 3),
    ],
)
def test_the_kv_layout_and_its_cells(
    given: dict[str, object], layout: str, pool_tokens: int
) -> None:
    model = load_settings(None, model=given).model
    assert (model.kv_layout, model.pool_tokens()) == (layout, pool_tokens)


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ('[model]\nkv_layout = "unified"', "model.kv_layout", "'slots' or 'pool'"),
        (
            '[model]\nkv_layout = "slots"\nkv_pool_tokens = 8192',
            "model.kv_layout",
            "remove kv_pool_tokens",
        ),
    ],
)
def test_a_bad_kv_layout_names_the_field(tmp_path: Path, text: str, field: str, says: str) -> None:
    message = load_error(toml(tmp_path, text))
    assert field in message and says in message, message


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ('[model]\nopenai_api = "chat_completions"', "model.openai_api", "'chat'"),
        ("[model]\nopenai_vision = true", "model.openai_vision", 'openai_api = "chat"'),
        ('[model]\nopenai_api = "chat"\nopenai_vision = "maybe"', "model.openai_vision", "bool"),
    ],
)
def test_a_bad_openai_api_setting_names_the_field(
    tmp_path: Path, text: str, field: str, says: str
) -> None:
    message = load_error(toml(tmp_path, text))
    assert field in message and says in message, message


def test_shown_settings_mask_secrets_and_url_credentials(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        '[model]\nbackend = "openai"\nbase_url = "http://bot:pw-in-url-1@gpu-box:8080/v1"\n'
        'api_key = "sk-secret-key"\n'
        '[matrix]\nhomeserver = "https://bot:pw-in-url-2@matrix.example.org"\n',
    )
    shown = shown_settings(load_settings(config))
    assert shown["model"]["base_url"] == "http://***@gpu-box:8080/v1"
    assert shown["matrix"]["homeserver"] == "https://***@matrix.example.org"
    assert shown["model"]["api_key"] == "**********"
    for secret in ("pw-in-url", "sk-secret-key"):
        assert secret not in repr(shown)


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        find_config_file(tmp_path / "missing.toml")


def test_config_file_from_env_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTHBOT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="config file not found"):
        find_config_file(None)


def test_find_config_file_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_config_file(None) is None  # nothing named, no ./hearthbot.toml
    local = toml(tmp_path, "")
    assert find_config_file(None) == Path("hearthbot.toml")
    from_env = toml(tmp_path, "[model]\nn_ctx = 1024", name="env.toml")
    monkeypatch.setenv("HEARTHBOT_CONFIG", str(from_env))
    assert find_config_file(None) == from_env
    assert find_config_file(str(local)) == local  # --config beats the env var
    # HEARTHBOT_CONFIG shares the settings prefix but is not taken for a setting
    assert load_settings(find_config_file(None)).model.n_ctx == 1024


def test_env_beats_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = toml(tmp_path, "[model]\nn_ctx = 4096\nn_batch = 256")
    monkeypatch.setenv("HEARTHBOT_MODEL__N_CTX", "2048")
    settings = load_settings(config)
    assert settings.model.n_ctx == 2048
    assert settings.model.n_batch == 256  # the rest of the TOML section still applies


def test_env_nested_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTHBOT_BOT__ADMINS", '["console:x", "discord:2"]')
    assert load_settings(None).bot.admins == ["console:x", "discord:2"]


def test_bad_env_value_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTHBOT_QUEUE__MAX_PENDING", "lots")
    message = load_error(None)
    assert "queue.max_pending" in message
    assert "HEARTHBOT_QUEUE__MAX_PENDING" in message


def test_unknown_env_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTHBOT_MODEL__N_CTXX", "5")
    message = load_error(None)
    assert "model.n_ctxx" in message
    assert "unknown setting" in message


def secrets(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "credentials"
    folder.mkdir()
    for name, value in files.items():
        (folder / name).write_text(value + "\n", encoding="utf-8")  # as `echo` writes them
    return folder


def test_secrets_dir_nested_name(tmp_path: Path) -> None:
    folder = secrets(tmp_path, model__path="/secret/model.gguf", model__n_ctx="2048")
    settings = load_settings(None, secrets_dir=folder)
    assert settings.model.path == Path("/secret/model.gguf")
    assert settings.model.n_ctx == 2048


def test_credentials_directory_env_is_the_default_secrets_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = secrets(tmp_path, model__path="/cred/model.gguf")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    assert load_settings(None).model.path == Path("/cred/model.gguf")


def test_missing_secrets_dir_is_fine(tmp_path: Path) -> None:
    assert load_settings(None, secrets_dir=tmp_path / "absent").model.path is None


@pytest.mark.parametrize(
    ("use_secret", "use_env", "expected"),
    [
        (False, False, "/toml.gguf"),
        (True, False, "/secret.gguf"),
        (False, True, "/env.gguf"),
        (True, True, "/env.gguf"),
    ],
)
def test_precedence_env_then_secrets_then_toml(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    use_secret: bool,
    use_env: bool,
    expected: str,
) -> None:
    config = toml(tmp_path, '[model]\npath = "/toml.gguf"')
    folder = secrets(tmp_path, **({"model__path": "/secret.gguf"} if use_secret else {}))
    if use_env:
        monkeypatch.setenv("HEARTHBOT_MODEL__PATH", "/env.gguf")
    assert load_settings(config, secrets_dir=folder).model.path == Path(expected)


def test_overrides_beat_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTHBOT_QUEUE__MAX_PENDING", "9")
    settings = load_settings(None, queue={"max_pending": 3})
    assert settings.queue.max_pending == 3


@pytest.mark.parametrize(
    ("state", "expected"),
    [("/var/lib/hearthbot", "/var/lib/hearthbot"), ("/var/lib/a:/var/lib/b", "/var/lib/a")],
)
def test_state_directory_is_the_default_data_dir(
    monkeypatch: pytest.MonkeyPatch, state: str, expected: str
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", state)
    assert load_settings(None).bot.data_dir == Path(expected)


def test_data_dir_setting_beats_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/hearthbot")
    config = toml(tmp_path, '[bot]\ndata_dir = "/srv/bot"')
    assert load_settings(config).bot.data_dir == Path("/srv/bot")


def test_loads_do_not_leak_the_toml_path(tmp_path: Path) -> None:
    load_settings(toml(tmp_path, "[model]\nn_ctx = 1024", name="a.toml"))
    assert Settings.toml_path is None
    assert load_settings(None).model.n_ctx == 4096


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # os.environ is already cleaned of HEARTHBOT_* by the autouse fixture.
    return subprocess.run(
        [sys.executable, "-m", "bot.app.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [('[model]\nn_ctx = "big"', "model.n_ctx"), ("[model]\nn_ctxx = 1", "model.n_ctxx")],
)
def test_cli_bad_config_exits_2_without_traceback(tmp_path: Path, text: str, field: str) -> None:
    bad = toml(tmp_path, text, name="bad.toml")
    result = run_cli(tmp_path, "--config", str(bad), "check")
    assert result.returncode == 2, result.stderr
    assert field in result.stderr
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


def test_cli_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--config", str(tmp_path / "nope.toml"), "check")
    assert result.returncode == 2, result.stderr
    assert "config file not found" in result.stderr
    assert "Traceback" not in result.stderr
