"""Settings: a TOML file, overridden by HEARTHBOT_<SECTION>__<KEY> env vars and by a secrets
directory (systemd credentials). Unknown keys are errors, so a typo is never silently ignored.

Longer than most modules, on purpose: every section model is a page of field descriptions
(the source of docs/settings.md), and they read best beside the one loader that merges them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from bot.masking import mask_url

# When the bot answers in a server's channel or a group room (bot.triggers decides).
Trigger = Literal["mention", "all", "name", "off"]

ENV_PREFIX = "HEARTHBOT_"
ENV_DELIMITER = "__"
DEFAULT_CONFIG_NAME = "hearthbot.toml"


def default_data_dir() -> Path:
    # systemd's StateDirectory= sets STATE_DIRECTORY; otherwise follow XDG.
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "hearthbot"


class Section(BaseModel):
    """One [section] of the config: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSettings(Section):
    """[model]: the GGUF, its context and threads, and which backend generates."""

    path: Path | None = Field(
        None, description="GGUF file. Empty: the newest .gguf in data_dir/models/."
    )
    mmproj: Path | None = Field(
        None,
        description="The vision projector (an mmproj GGUF made for this model): the model then "
        "sees posted pictures (llama_cpp backend). Empty: text only.",
    )
    n_ctx: int = Field(4096, ge=256, le=1_048_576, description="Context window in tokens.")
    n_threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for generation. Empty: all cores."
    )
    n_batch: int = Field(
        512,
        ge=8,
        le=65536,
        description="Tokens per model step: each generating reply's next token plus a chunk of "
        "prompt.",
    )
    parallel: int = Field(4, ge=1, le=64, description="Replies generated at once (slots).")
    kv_pool_tokens: int = Field(
        0,
        ge=0,
        le=16_777_216,
        description="The shared KV cache of the pool layout (kv_layout), for the replies being "
        "generated and the channels kept warm, in tokens (0: n_ctx × parallel, so every slot can "
        "hold a full window).",
    )
    kv_layout: Literal["slots", "pool"] = Field(
        "slots",
        description="slots: each slot's KV cache is a window of its own (n_ctx), and a reply "
        "attends only to its own conversation: fastest when replies generate together. pool: "
        "one cache of kv_pool_tokens shared by the replies and by more channels kept warm than "
        "there are slots; each token then attends over every resident conversation "
        "(docs/performance.md). Empty: pool if kv_pool_tokens is set, else slots.",
    )
    kv_cache_mb: int = Field(
        256,
        ge=0,
        le=1_048_576,
        description="Memory for keeping the KV state of channels evicted from the pool warm "
        "between turns (0: off).",
    )
    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        le=100_000,
        description="Layers offloaded to the GPU (-1: all). Empty: all when llama.cpp was built "
        "with a GPU backend (`make run GPU=cuda`), else 0.",
    )
    main_gpu: int = Field(
        0, ge=0, le=255, description="The GPU that holds the model when tensor_split is empty."
    )
    tensor_split: list[float] = Field(
        default_factory=list,
        max_length=16,
        description="Share of the layers per GPU, e.g. [3, 1] for two cards. Empty: llama.cpp "
        "splits by free memory.",
    )
    flash_attn: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Flash attention. auto: llama.cpp decides when layers run on a GPU or a "
        "quantized kv_type needs it; on the CPU alone off (faster with several replies).",
    )
    kv_type: Literal["f16", "q8_0", "q4_0"] = Field(
        "f16",
        description="How the KV cache stores keys and values: q8_0 takes 0.53 and q4_0 0.28 of "
        "f16's memory, so more channels stay warm. Needs flash_attn auto or on, which on the "
        "CPU alone slows replies generated together (docs/performance.md).",
    )
    pull_repo: str = Field(
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF", description="Hugging Face repo for `model pull`."
    )
    pull_file: str = Field(
        "qwen2.5-1.5b-instruct-q4_k_m.gguf", description="File in pull_repo for `model pull`."
    )
    backend: Literal["llama_cpp", "openai"] = Field(
        "llama_cpp",
        description="llama_cpp: the model runs in this process. openai: an OpenAI-compatible "
        "server generates (llama-server, vLLM, Ollama); `path` still names the same GGUF, for "
        "its tokenizer and chat template, and n_ctx must not exceed the server's context.",
    )
    base_url: str | None = Field(
        None, description='openai backend: the server, e.g. "http://gpu-box:8080/v1".'
    )
    api_key: SecretStr | None = Field(
        None, description="openai backend: sent as a Bearer token (better: env or credentials)."
    )
    model: str | None = Field(
        None, description="openai backend: the model name the server expects (Ollama, vLLM)."
    )
    timeout_s: float = Field(
        60,
        gt=0,
        le=3600,
        description="openai backend: seconds to wait for a connection or the next piece of text.",
    )
    openai_api: Literal["completions", "chat"] = Field(
        "completions",
        description="openai backend: completions: the prompt is rendered and counted here and "
        "sent to /v1/completions (exact token counts; pictures only to a llama-server whose "
        "/props says it sees them). chat: the messages go to /v1/chat/completions, pictures as "
        "image_url parts, for servers without llama-server's prompt object; the server applies "
        "its own template, so token counts are approximate (README).",
    )
    openai_vision: bool = Field(
        False,
        description='openai backend with openai_api = "chat": the served model sees images, so '
        "posted pictures are sent (such servers cannot be asked); each picture's tokens are a "
        "guess (docs/images.md).",
    )

    @field_validator("base_url")
    @classmethod
    def _server_named(cls, value: str | None, info: ValidationInfo) -> str | None:
        # backend is declared first, so it is validated by now.
        if info.data.get("backend") == "openai" and not value:
            raise ValueError('needed with backend = "openai", e.g. "http://127.0.0.1:8080/v1"')
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("openai_vision")
    @classmethod
    def _vision_needs_chat(cls, value: bool, info: ValidationInfo) -> bool:
        # openai_api is declared first, so it is validated by now. With completions, a
        # llama-server's /props says whether it sees images: a setting would be ignored.
        if value and info.data.get("openai_api") != "chat":
            raise ValueError(
                'only with openai_api = "chat"; with "completions" a llama-server\'s /props '
                "says whether it sees images"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _layout_of_a_sized_pool(cls, data: Any) -> Any:
        # A config that sizes the pool means the pool, unless it names a layout.
        if isinstance(data, dict) and data.get("kv_pool_tokens") and "kv_layout" not in data:
            return {**data, "kv_layout": "pool"}
        return data

    @field_validator("kv_layout")
    @classmethod
    def _pool_size_needs_the_pool(cls, value: str, info: ValidationInfo) -> str:
        # kv_pool_tokens is declared first, so it is validated by now.
        if value == "slots" and info.data.get("kv_pool_tokens"):
            raise ValueError(
                'kv_pool_tokens sizes the shared cache of kv_layout = "pool"; with "slots" each '
                'slot holds n_ctx: remove kv_pool_tokens or set kv_layout = "pool"'
            )
        return value

    @field_validator("tensor_split")
    @classmethod
    def _shares(cls, value: list[float]) -> list[float]:
        if any(share < 0 for share in value):
            raise ValueError("shares must not be negative")
        if value and not sum(value):
            raise ValueError("at least one GPU needs a share above 0")
        return value

    @field_validator("kv_type")
    @classmethod
    def _v_cache_needs_flash_attn(cls, value: str, info: ValidationInfo) -> str:
        # flash_attn is declared first, so it is validated by now. Else llama.cpp fails with a
        # generic "Failed to create llama_context".
        if value != "f16" and info.data.get("flash_attn") == "off":
            raise ValueError(
                f'kv_type = "{value}" quantizes the V cache, which needs flash attention, but '
                'flash_attn = "off": set flash_attn = "auto" or "on", or kv_type = "f16"'
            )
        return value

    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1

    def pool_tokens(self) -> int:
        """KV cells of the in-process backend's cache: a window per slot, or the pool's size
        (at least one full window)."""
        return max(self.kv_pool_tokens or self.n_ctx * self.parallel, self.n_ctx)


class BotSettings(Section):
    """[bot]: data, personas, admins, and how the daemon catches up, forgets and stops."""

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="History database and models. Default: $STATE_DIRECTORY or "
        "$XDG_DATA_HOME/hearthbot.",
    )
    personas_dir: Path | None = Field(
        None, description="Extra persona files; a name here overrides a bundled persona."
    )
    default_persona: str = Field("assistant", min_length=1, description="Persona of new channels.")
    admin_commands: list[str] = Field(
        default_factory=lambda: ["persona", "temperature", "seed", "trigger", "autothread"],
        description="Commands only admins may use (anyone may in a direct chat).",
    )
    admins: list[str] = Field(
        default_factory=list,
        description='Admins as "platform:user_id", e.g. "discord:1234". The console user is '
        "always an admin.",
    )
    catch_up_window_s: float = Field(
        600, ge=0, description="After a restart, pending messages younger than this are answered."
    )
    retention_days: float | None = Field(
        None, gt=0, description="Delete history older than this many days. Empty: keep it."
    )
    show_thinking: bool = Field(
        False, description="Show a reasoning model's <think> text above the answer."
    )
    trigger: Trigger = Field(
        "mention",
        description="When the bot answers in servers and group rooms: mention, all (every "
        "message), name (its name or a keyword) or off (commands only); DMs always. "
        "`!trigger` sets it per channel.",
    )
    keywords: list[str] = Field(
        default_factory=list,
        description="Words that call the bot in `name` mode, besides its name (whole words).",
    )
    burst_max: int = Field(
        8,
        ge=1,
        le=100,
        description="In `all` mode, messages answered together at most: those arriving while "
        "the channel's answer is still queued join it.",
    )
    reply_chain_tokens: int = Field(
        512,
        ge=0,
        le=100_000,
        description="A reply shows the message it quotes and, above that, the reply chain "
        "that message is part of, up to this many tokens. 0: the quoted message only.",
    )
    shutdown_grace_s: float = Field(
        15,
        ge=0,
        le=3600,
        description="On SIGTERM the answers in flight may finish for this long; then they "
        "are stopped (they stay pending and are answered after the restart).",
    )


# [bot] settings that SIGHUP applies at once (`Daemon.reload`); other changes need a restart.
LIVE_BOT_SETTINGS = (
    "admins",
    "admin_commands",
    "default_persona",
    "personas_dir",
    "trigger",
    "keywords",
    "burst_max",
    "reply_chain_tokens",
)


class QueueSettings(Section):
    """[queue]: how much work may wait, and how much of it one user may send."""

    max_pending: int = Field(64, ge=1, le=100_000, description="Messages queued at most.")
    per_user_per_minute: int = Field(
        6, ge=1, le=10_000, description="Messages one user may queue per minute (admins exempt)."
    )


class MemorySettings(Section):
    """[memory]: what the bot keeps beyond the context window (docs/memory.md)."""

    notes_per_person: int = Field(
        10,
        ge=0,
        le=100,
        description="Notes (`!remember`) one person may keep per server or direct chat; "
        "0 turns notes off.",
    )
    note_max_chars: int = Field(
        300, ge=10, le=2000, description="Longest note `!remember` keeps, in characters."
    )
    summary_tokens: int = Field(
        256,
        ge=0,
        le=4096,
        description="Longest summary of what was trimmed out of a channel's context window, "
        "in tokens; 0 turns summaries off.",
    )


class ImageSettings(Section):
    """[images]: the caps a posted picture passes before it is decoded, and how many pictures
    a prompt shows (docs/images.md)."""

    max_kb: int = Field(
        10_240,
        ge=1,
        le=102_400,
        description="Downloaded at most, per image: 10 MB is Discord's upload limit; a phone "
        "photo is 2-6 MB.",
    )
    max_megapixels: float = Field(
        50,
        gt=0,
        le=200,
        description="Width x height at most, read from the header before decoding (the "
        "decompression-bomb cap): a 48 MP phone photo passes; decoding one takes ~150 MB.",
    )
    max_side_px: int = Field(
        16_384,
        ge=16,
        le=65_535,
        description="Longest side at most: longer strips shrink to nothing the model can read.",
    )
    max_images_in_context: int = Field(
        2,
        ge=0,
        le=16,
        description="Pictures the model sees at once, the newest; older ones stay in their "
        "message's text as '[image: name]'. Small: each takes the projector's tokens (hundreds), "
        "and with more, small vision models mix pictures up or describe ones no longer shown.",
    )


class DiscordSettings(Section):
    """Discord runs when `token` is set. Access lists take numeric IDs only."""

    token: SecretStr | None = Field(None, description="Bot token (better: env or credentials).")
    allowed_guilds: list[int] = Field(default_factory=list, description="Empty: every server.")
    allowed_channels: list[int] = Field(default_factory=list, description="Empty: every channel.")
    allowed_users: list[int] = Field(default_factory=list, description="Empty: everyone.")
    blocked_users: list[int] = Field(default_factory=list, description="Never answered.")
    admins: list[int] = Field(default_factory=list, description="May use admin commands.")
    allow_dms: bool = Field(True, description="Answer direct messages.")
    edit_interval_s: float = Field(1.2, ge=0.2, le=60, description="At most one edit per this.")
    command_guilds: list[int] = Field(
        default_factory=list, description="Sync slash commands to these servers only (fast)."
    )
    attachment_max_kb: int = Field(
        256, ge=0, le=8192, description="Text attachments read up to, per message (all together)."
    )
    catch_up_window_s: float = Field(
        600, ge=0, description="Messages sent while the bot was away are answered if this young."
    )
    trigger: Trigger | None = Field(
        None, description="When the bot answers in servers (see [bot] trigger). Empty: that."
    )
    auto_thread_channels: list[int] = Field(
        default_factory=list,
        description="Channels where a mention opens a thread from it, answered there; the "
        "bot's threads then answer every message, no mention needed.",
    )
    api_base: str = Field("https://discord.com/api/v10", description="REST base (proxies).")
    gateway_url: str = Field("wss://gateway.discord.gg/", description="Gateway URL (proxies).")

    @property
    def enabled(self) -> bool:
        return self.token is not None and bool(self.token.get_secret_value())


class MatrixSettings(Section):
    """Matrix runs when `homeserver` is set. Access lists take MXIDs; globs allowed."""

    homeserver: str | None = Field(None, description="e.g. https://matrix.example.org")
    user_id: str | None = Field(None, description="The bot's MXID, e.g. @hearthbot:example.org")
    password: SecretStr | None = Field(None, description="Used once to log in; then the token.")
    access_token: SecretStr | None = Field(None, description="Instead of a password.")
    device_name: str = Field("hearthbot", description="Shown in the bot's session list.")
    store_dir: Path | None = Field(None, description="Crypto store. Default: data_dir/matrix.")
    allowed_users: list[str] = Field(
        default_factory=list, description="Who may invite and talk to it. Empty: nobody."
    )
    allowed_rooms: list[str] = Field(default_factory=list, description="Empty: any joined room.")
    admins: list[str] = Field(default_factory=list, description="May use admin commands.")
    edit_interval_s: float = Field(3.0, ge=0.2, le=60, description="At most one edit per this.")
    catch_up_window_s: float = Field(
        600, ge=0, description="Messages that arrived while down are answered if this young."
    )
    trigger: Trigger | None = Field(
        None, description="When the bot answers in group rooms (see [bot] trigger). Empty: that."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.homeserver)


class HealthSettings(Section):
    """/healthz, /readyz and /metrics (Prometheus) for `hearthbot run` with a chat platform."""

    listen: str = Field(
        "127.0.0.1:9470",
        description='host:port ("[::1]:9470" for IPv6) to serve on. Empty: off.',
    )
    stall_s: float = Field(
        300,
        gt=0,
        le=86_400,
        description="/healthz fails, and the systemd watchdog stops, when the model worker has "
        "neither answered a ping nor produced a token for this long.",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        value = value.strip()
        if value:
            cls.split_listen(value)
        return value

    @staticmethod
    def split_listen(value: str) -> tuple[str, int]:
        """ "127.0.0.1:9470" or "[::1]:9470" → (host, port). Raises ValueError."""
        host, sep, port = value.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError('expected host:port, e.g. "127.0.0.1:9470" or "[::1]:9470"')
        return host, int(port)


class LogSettings(Section):
    """[log]: level and format of the log lines on stderr."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: readable on a terminal, JSON lines otherwise."
    )


class FootprintSettings(Section):
    """[footprint]: what a reply's energy costs, and the estimate where nothing measures it."""

    watts_per_core: float = Field(
        8.0,
        gt=0,
        le=1000,
        description="Power of one busy CPU core, for the estimate used where no energy counter "
        "is readable: a desktop CPU's package power at full load over its cores (65 W / 8). "
        "A laptop is nearer 3-4, a server core 3-5, a Raspberry Pi 1.5.",
    )
    price_per_kwh: float | None = Field(
        None, ge=0, description="Price of a kWh: !usage shows what replies cost. Empty: off."
    )
    currency: str = Field("", max_length=8, description='Shown after a cost, e.g. "EUR".')
    grams_co2_per_kwh: float | None = Field(
        None, ge=0, description="Grid carbon intensity: !usage shows CO₂. Empty: off."
    )


class Settings(BaseSettings):
    """The whole configuration: TOML file, secrets directory and environment, validated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        secrets_prefix="",
        secrets_dir_missing="ok",
        nested_model_default_partial_update=True,
    )

    model: ModelSettings = Field(default_factory=ModelSettings)  # type: ignore[arg-type]
    bot: BotSettings = Field(default_factory=BotSettings)  # type: ignore[arg-type]
    queue: QueueSettings = Field(default_factory=QueueSettings)  # type: ignore[arg-type]
    memory: MemorySettings = Field(default_factory=MemorySettings)  # type: ignore[arg-type]
    images: ImageSettings = Field(default_factory=ImageSettings)  # type: ignore[arg-type]
    discord: DiscordSettings = Field(default_factory=DiscordSettings)  # type: ignore[arg-type]
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)  # type: ignore[arg-type]
    health: HealthSettings = Field(default_factory=HealthSettings)  # type: ignore[arg-type]
    log: LogSettings = Field(default_factory=LogSettings)  # type: ignore[arg-type]
    footprint: FootprintSettings = Field(default_factory=FootprintSettings)  # type: ignore[arg-type]

    # Set on a per-load subclass: pydantic-settings takes the TOML path from the class.
    toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit values > env > secrets dir > TOML file > defaults.
        return (
            init_settings,
            env_settings,
            NestedSecretsSettingsSource(file_secret_settings),
            TomlConfigSettingsSource(
                settings_cls, toml_file=getattr(settings_cls, "toml_path", None)
            ),
        )


def secret_values(model: BaseModel) -> list[str]:
    """Every configured secret, so the log redactor can scrub it wherever it shows up."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found += secret_values(value)
    return [v for v in found if v]


def shown_settings(settings: Settings) -> dict[str, Any]:
    """The settings as `hearthbot check` prints them: secrets as ********** and credentials
    in any URL (`[model] base_url = "http://user:pass@host"`) masked."""
    return _masked(settings.model_dump(mode="json"))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


class ConfigError(Exception):
    """A configuration problem, already worded for the user (one readable block)."""


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """`--config`, else $HEARTHBOT_CONFIG, else ./hearthbot.toml if present. A file that was
    named but does not exist is an error."""
    named = explicit or os.environ.get("HEARTHBOT_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_settings(
    config_file: Path | None = None, secrets_dir: Path | None = None, **overrides: Any
) -> Settings:
    """Load and validate. Raises ConfigError with every problem named by field."""
    if secrets_dir is None and (creds := os.environ.get("CREDENTIALS_DIRECTORY")):
        secrets_dir = Path(creds)  # systemd LoadCredential=
    if config_file is not None:
        _check_toml(config_file)
    configured = type("ConfiguredSettings", (Settings,), {"toml_path": config_file})
    try:
        return configured(_secrets_dir=secrets_dir, **overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, config_file)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {_cause(exc)}") from None


def _check_toml(path: Path) -> None:
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _cause(exc: BaseException) -> str:
    text = str(exc)
    if exc.__cause__ is not None:
        text += f" ({exc.__cause__})"
    return text


def env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in loc)


def format_validation_error(exc: ValidationError, config_file: Path | None) -> str:
    where = f" in {config_file}" if config_file else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        field = ".".join(str(part) for part in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling; see docs/settings.md)"
        else:
            message = err["msg"]
            if "input" in err and not isinstance(err["input"], dict | list):
                message += f" (got {_shown(loc, err['input'])})"
        lines.append(f"  {field}: {message}  [env {env_name(loc)}]")
    return "\n".join(lines)


_SECRET_WORDS = ("token", "password", "secret", "api_key", "access")


def _shown(loc: tuple[str | int, ...], value: object) -> str:
    if any(word in str(part).lower() for part in loc for word in _SECRET_WORDS):
        return "***"
    return mask_url(repr(value))
