"""SIGHUP hands new platform sections to the adapters: access lists change without a restart."""

from __future__ import annotations

from pathlib import Path

from adapters.discord.adapter import DiscordAdapter
from adapters.matrix.adapter import MatrixAdapter
from adapters.matrix.rules import matches
from bot.settings import load_settings
from support.persona_files import only_persona


def test_discord_takes_new_access_lists(tmp_path: Path) -> None:
    before = load_settings(
        None, bot={"data_dir": tmp_path}, discord={"token": "x" * 30, "allowed_users": [1]}
    )
    adapter = DiscordAdapter(before.discord, before.bot)
    assert adapter.access.allows_user(1) and not adapter.access.allows_user(2)
    personas = only_persona(tmp_path, "newcomer", max_tokens=8)
    after = load_settings(
        None,
        bot={"data_dir": tmp_path, "admins": ["discord:3"], **personas},
        discord={"token": "x" * 30, "blocked_users": [1], "edit_interval_s": 2.5},
    )
    names = adapter.persona_names  # the list slash-command autocomplete reads
    adapter.update_settings(after.discord, after.bot)
    assert adapter.access.allows_user(2) and not adapter.access.allows_user(1)
    assert adapter.reader.access is adapter.access
    assert adapter.edit_interval_s == 2.5
    assert adapter.access.is_admin(3)  # `[bot] admins` reach Discord's access too
    assert "newcomer" in names


def test_matrix_takes_new_access_lists(tmp_path: Path) -> None:
    section = {"homeserver": "http://127.0.0.1:1", "user_id": "@bot:localhost"}
    before = load_settings(
        None,
        bot={"data_dir": tmp_path},
        matrix={**section, "allowed_users": ["@a:localhost"], "admins": ["@a:localhost"]},
    )
    adapter = MatrixAdapter(before.matrix, before.bot)
    assert not matches("@b:localhost", adapter.settings.allowed_users)
    after = load_settings(
        None,
        bot={"data_dir": tmp_path},
        matrix={**section, "allowed_users": ["@*:localhost"], "admins": ["@b:localhost"]},
    )
    adapter.update_settings(after.matrix, after.bot)
    assert matches("@b:localhost", adapter.settings.allowed_users)
    # Only admins may verify the bot's device: the verifier must know the new list too.
    assert matches("@b:localhost", adapter.crypto.verifier.admins)
    assert not matches("@a:localhost", adapter.crypto.verifier.admins)
