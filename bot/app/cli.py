"""`hearthbot run | chat | check | personas | model pull | model suggest`.

Every expected failure (bad config, a broken persona, a model that cannot load, no network
for a pull) is one clear message on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bot import logs
from bot.app.bootstrap import checked_personas, database_path, find_model, model_path, models_dir
from bot.model.gguf import ModelFileError
from bot.personas import PersonaError
from bot.private_files import private_dir
from bot.settings import (
    ConfigError,
    Settings,
    find_config_file,
    load_settings,
    secret_values,
    shown_settings,
)

EXIT_CONFIG = 2
EXIT_FAILURE = 1
PROJECTORS = "projectors"  # models/projectors/: the mmproj files pulled beside vision models


async def serve(
    settings: Settings,
    console_only: bool,
    pull_missing: bool = False,
    config_file: Path | None = None,
) -> int:
    from adapters.registry import build_adapters
    from bot.app.service import Service
    from bot.daemon import Daemon
    from bot.model.backend import load_backend
    from bot.store import Store

    personas = checked_personas(settings)
    if pull_missing and find_model(settings) is None:
        pull(settings, None, None)
    path = model_path(settings)
    service = Service(settings, config_file, checked_personas)  # systemd, signals, health
    async with service.loading(f"model {path.name}"):
        engine = await load_backend(settings.model, path, settings.footprint)
    store = await Store.open(database_path(settings))
    adapters = build_adapters(settings, console_only)
    daemon = Daemon(settings, store, engine, personas, adapters)
    stop = asyncio.Event()
    service.handle_signals(stop)
    try:
        # Health and metrics serve chat platforms; a console chat has none (and so never
        # fights a running service for the port).
        await service.attach(daemon, serve_health=set(adapters) != {"console"})
        await daemon.start()
        service.ready()
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        failures = {asyncio.ensure_future(a.failure): name for name, a in adapters.items()}
        waits += failures
        finished = [a.finished for a in adapters.values() if hasattr(a, "finished")]
        if finished and len(finished) == len(adapters):  # only the console: ends with stdin
            waits.append(asyncio.ensure_future(_all_set(finished)))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if task in failures:
                raise AdapterFailed(f"{failures[task]}: {task.result()}")
        if not stop.is_set():  # stdin ended: answer what was asked, unless told to stop
            await _first(daemon.wait_idle(), stop.wait())
    finally:
        service.stopping()
        await daemon.stop()
        await service.close()
        await store.close()
        await engine.close()
    return 0


class AdapterFailed(Exception):
    """A platform refused the bot for good; the message says which and why."""


async def _all_set(events: list[asyncio.Event]) -> None:
    for event in events:
        await event.wait()


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def check(settings: Settings, config_file: Path | None, online: bool = False) -> int:
    """The effective settings, then every check (bot/app/check/): a ✓/✗ line each, and a
    non-zero exit when one fails."""
    from bot.app.check import diagnose

    print("settings (secrets masked):")
    print(json.dumps(shown_settings(settings), indent=2, sort_keys=True))
    report = await diagnose(settings, config_file, online=online)
    print("\n".join(report.lines()))
    return report.exit_code()


def list_personas(settings: Settings) -> int:
    personas = checked_personas(settings)
    for name in personas.names():
        persona = personas.personas[name]
        default = " (default)" if name == settings.bot.default_persona else ""
        print(f"{name:<14} temperature {persona.temperature:<4g} {persona.description}{default}")
    return 0


def pull(
    settings: Settings, repo: str | None, filename: str | None, with_projector: bool = True
) -> int:
    """`model pull`: a short name of the catalog (`qwen2.5-3b[:q5_k_m]`, its sha256 checked;
    a vision model's projector too), a repo and file (the repo's projector too, if it holds
    one: bot/model/hub_projector.py), or the configured pull_repo / pull_file."""
    from bot.model.catalog import is_short_name, load_catalog, resolve
    from bot.model.pull import PullError
    from bot.model.pull import pull as download

    expected = None
    projector = None
    look_in_repo = with_projector and repo is not None and filename is not None
    if repo is not None and filename is None and is_short_name(repo):
        entry = resolve(repo, load_catalog())
        repo, filename, expected = entry.repo, entry.file, entry.sha256
        projector = entry.projector if with_projector else None
    # models/ goes inside: the folder comes first, owner only (a failure: pull says why).
    with contextlib.suppress(OSError):
        private_dir(settings.bot.data_dir)
    progress = sys.stderr.isatty()

    def pull_projector(repo: str, file: str, sha256: str | None) -> Path:
        # Into a folder of its own: a start that looks for the newest GGUF in models/ never
        # takes it for the model.
        folder = models_dir(settings) / PROJECTORS
        return download(repo, file, folder, progress=progress, expected_sha256=sha256)

    mmproj = None
    if projector is not None:
        # First: a projector that is not the listed one is refused with nothing left behind.
        mmproj = pull_projector(projector.repo, projector.file, projector.sha256)
    path = download(
        repo or settings.model.pull_repo,
        filename or settings.model.pull_file,
        models_dir(settings),
        progress=progress,
        expected_sha256=expected,
    )
    if look_in_repo and repo and filename:
        # After the model: an unreachable hub has failed fast on its HEAD, as before, and a
        # repo that cannot be listed costs only the projector.
        found = _repo_projector(repo, filename)
        if found is not None:
            try:
                mmproj = pull_projector(repo, found, None)
            except PullError as exc:
                raise PullError(
                    f"{exc} ({path.name} is in place; --no-projector skips it)"
                ) from exc
    print(path)
    if mmproj is not None:
        print(mmproj)
        print("a vision model: set both in the config file to have it see pictures")
        print(f"[model]\npath = {json.dumps(str(path))}\nmmproj = {json.dumps(str(mmproj))}")
    return 0


def _repo_projector(repo: str, model_file: str) -> str | None:
    """The projector file that repo holds for model_file, or None (none, or no listing)."""
    from bot.model.hub_projector import choose_projector, repo_files
    from bot.model.pull import PullError

    try:
        found = choose_projector(model_file, repo_files(repo))
    except PullError as exc:
        print(f"hearthbot: {exc} — the model is pulled text-only", file=sys.stderr)
        return None
    if found is not None:
        print(
            f"{repo} holds a vision projector: pulling {found} too (--no-projector skips it)",
            file=sys.stderr,
        )
    return found


def _global_options(default: object) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="TOML config (default: $HEARTHBOT_CONFIG)",
    )
    return options


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="hearthbot",
        description="A self-hosted chatbot answered by a local model.",
        parents=[_global_options(None)],
    )
    # A command's copy of an option sets it only when given there: with a default it would
    # overwrite the value given before the command (`hearthbot --config FILE run`).
    anywhere = [_global_options(argparse.SUPPRESS)]
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", parents=anywhere, help="start every configured adapter (the console if none)"
    )
    run.add_argument(
        "--pull-missing",
        action="store_true",
        help="download the default model first when none is configured or downloaded",
    )
    sub.add_parser("chat", parents=anywhere, help="chat in this terminal (or from piped stdin)")
    check_cmd = sub.add_parser(
        "check",
        parents=anywhere,
        help="check config, personas, model, data dir and platforms; ✓/✗ per check",
    )
    check_cmd.add_argument(
        "--online", action="store_true", help="also log in to each chat platform (and out)"
    )
    sub.add_parser("personas", parents=anywhere, help="list the personas")
    model = sub.add_parser("model", parents=anywhere, help="manage model files")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pull_cmd = model_sub.add_parser(
        "pull", parents=anywhere, help="download a GGUF from the Hugging Face hub"
    )
    pull_cmd.add_argument(
        "repo",
        nargs="?",
        help="a short name of `model suggest` (qwen2.5-3b, qwen2.5-7b:q5_k_m) or a hub repo, "
        "e.g. Qwen/Qwen2.5-1.5B-Instruct-GGUF",
    )
    pull_cmd.add_argument("file", nargs="?", help="e.g. qwen2.5-1.5b-instruct-q4_k_m.gguf")
    pull_cmd.add_argument(
        "--no-projector",
        action="store_true",
        help="do not pull a vision model's projector (mmproj): the catalog's or the repo's",
    )
    suggest_cmd = model_sub.add_parser(
        "suggest",
        parents=anywhere,
        help="which well-known models this box can carry, with the configured KV pool",
    )
    suggest_cmd.add_argument(
        "--no-measure",
        action="store_true",
        help="do not load the configured model to measure its speed (a rough figure instead)",
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = args.command or "run"
    try:
        config_file = find_config_file(args.config)
        settings = load_settings(config_file)
    except ConfigError as exc:
        print(f"hearthbot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log.level, settings.log.format)
    for secret in secret_values(settings):
        logs.register_secret(secret)
    from bot.model.catalog import CatalogError
    from bot.model.pull import PullError

    try:
        if command in ("run", "chat"):
            with contextlib.suppress(KeyboardInterrupt):
                return asyncio.run(
                    serve(
                        settings,
                        console_only=command == "chat",
                        pull_missing=getattr(args, "pull_missing", False),
                        config_file=config_file,
                    )
                )
            return 0
        if command == "check":
            return asyncio.run(check(settings, config_file, args.online))
        if command == "personas":
            return list_personas(settings)
        if args.model_command == "suggest":
            from bot.app.suggest import suggest

            return asyncio.run(suggest(settings, measure=not args.no_measure))
        return pull(settings, args.repo, args.file, not args.no_projector)
    except (ConfigError, PersonaError) as exc:
        print(f"hearthbot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ModelFileError, PullError, CatalogError, AdapterFailed) as exc:
        print(f"hearthbot: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # Whoever read our output went away (`hearthbot personas | head`): not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
