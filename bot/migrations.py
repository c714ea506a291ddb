"""The SQLite schema of bot.store, as numbered migrations: the Nth script takes a database
from version N-1 (PRAGMA user_version) to N. Never edit a released one: add the next."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,              -- Incoming.channel_key
        platform_message_id TEXT,           -- the platform's id, for edits and deletions
        author_id TEXT NOT NULL,            -- Incoming.user_key, or 'bot'
        author_name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_channel ON messages (channel, id);
    CREATE INDEX messages_by_author ON messages (author_id);
    CREATE UNIQUE INDEX messages_platform_id ON messages (channel, platform_message_id)
        WHERE role = 'user' AND platform_message_id IS NOT NULL;
    CREATE TABLE pending (
        message_row INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        incoming TEXT NOT NULL,             -- Incoming as JSON, to reopen a reply after restart
        created_at REAL NOT NULL
    );
    CREATE TABLE scope_settings (
        scope TEXT PRIMARY KEY,             -- 'global', 'server:<platform>:<id>', 'channel:<key>'
        persona TEXT,
        temperature REAL,
        seed INTEGER                        -- NULL: inherit; -1: random despite the persona
    );
    CREATE TABLE channel_window (
        channel TEXT PRIMARY KEY,
        first_row INTEGER NOT NULL          -- oldest message still in the model's context
    );
    """,
)
