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
    # 2: a reply keeps a reference to what it quotes, never a copy of its text (see
    # `StoredQuote`). Rows from v1 had the quote copied in front of the reply: the copy is
    # dropped, as it may hold words deleted or forgotten since; the reply's own text stays.
    # A pending message's reference is taken from its saved Incoming.
    """
    ALTER TABLE messages ADD COLUMN reply_to_id TEXT;    -- platform id of the message quoted
    ALTER TABLE messages ADD COLUMN reply_to_row INTEGER; -- its row, when it is stored
    ALTER TABLE messages ADD COLUMN reply_to_author TEXT; -- its author's user key, if known
    CREATE INDEX messages_by_platform_id ON messages (platform_message_id)
        WHERE platform_message_id IS NOT NULL;
    CREATE INDEX messages_by_reply_id ON messages (reply_to_id) WHERE reply_to_id IS NOT NULL;
    CREATE INDEX messages_by_reply_row ON messages (reply_to_row)
        WHERE reply_to_row IS NOT NULL;
    CREATE INDEX messages_by_reply_author ON messages (reply_to_author)
        WHERE reply_to_author IS NOT NULL;
    -- However a row goes (deleted, redacted, forgotten, reset, purged), no reply quotes it
    -- any more: not from the store, and not fetched from the platform instead.
    CREATE TRIGGER messages_unquote AFTER DELETE ON messages BEGIN
        UPDATE messages SET reply_to_id = NULL, reply_to_row = NULL, reply_to_author = NULL
            WHERE reply_to_row = OLD.id;
    END;
    UPDATE messages SET text = substr(text, instr(text, char(10, 10)) + 2)
        WHERE role = 'user' AND substr(text, 1, 16) = '(replying to:)' || char(10) || '>'
            AND instr(text, char(10, 10)) > 0;
    UPDATE messages SET reply_to_id = (
            SELECT json_extract(p.incoming, '$.reply_to_id') FROM pending p
            WHERE p.message_row = messages.id)
        WHERE id IN (SELECT message_row FROM pending);
    UPDATE pending SET incoming = json_remove(incoming, '$.reply_to_text');
    """,
    # 3: row ids are never used twice (AUTOINCREMENT). A question deleted or forgotten while
    # its answer was written freed its id for the next message; the old answer then completed
    # that message's pending mark (`Store.complete` finds it by row) and took its place.
    # SQLite cannot change a primary key in place, so the tables are rebuilt: pending first,
    # pointing at the new table, so that dropping the old one cascades to nothing.
    """
    CREATE TABLE messages_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        platform_message_id TEXT,
        author_id TEXT NOT NULL,
        author_name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL,
        created_at REAL NOT NULL,
        reply_to_id TEXT,
        reply_to_row INTEGER,
        reply_to_author TEXT
    );
    INSERT INTO messages_v3 (id, channel, platform_message_id, author_id, author_name, role,
            text, created_at, reply_to_id, reply_to_row, reply_to_author)
        SELECT id, channel, platform_message_id, author_id, author_name, role, text,
            created_at, reply_to_id, reply_to_row, reply_to_author FROM messages;
    CREATE TABLE pending_v3 (
        message_row INTEGER PRIMARY KEY REFERENCES messages_v3 (id) ON DELETE CASCADE,
        incoming TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    INSERT INTO pending_v3 SELECT message_row, incoming, created_at FROM pending;
    DROP TABLE pending;
    DROP TABLE messages;
    -- Renaming updates pending's reference to the new name.
    ALTER TABLE messages_v3 RENAME TO messages;
    ALTER TABLE pending_v3 RENAME TO pending;
    CREATE INDEX messages_by_channel ON messages (channel, id);
    CREATE INDEX messages_by_author ON messages (author_id);
    CREATE UNIQUE INDEX messages_platform_id ON messages (channel, platform_message_id)
        WHERE role = 'user' AND platform_message_id IS NOT NULL;
    CREATE INDEX messages_by_platform_id ON messages (platform_message_id)
        WHERE platform_message_id IS NOT NULL;
    CREATE INDEX messages_by_reply_id ON messages (reply_to_id) WHERE reply_to_id IS NOT NULL;
    CREATE INDEX messages_by_reply_row ON messages (reply_to_row)
        WHERE reply_to_row IS NOT NULL;
    CREATE INDEX messages_by_reply_author ON messages (reply_to_author)
        WHERE reply_to_author IS NOT NULL;
    CREATE TRIGGER messages_unquote AFTER DELETE ON messages BEGIN
        UPDATE messages SET reply_to_id = NULL, reply_to_row = NULL, reply_to_author = NULL
            WHERE reply_to_row = OLD.id;
    END;
    """,
    # 4: an answer names the question it answers, so a regenerate replaces that answer only.
    # Before, it dropped the answers between its question and the next one, which in a busy
    # channel are other people's (Bob's 🔁 dropped Alice's answer) and may miss its own.
    # Answers saved before v4 have none, and are found by position as before.
    """
    ALTER TABLE messages ADD COLUMN answer_to INTEGER; -- the question's row, for an answer
    CREATE INDEX messages_by_answer_to ON messages (answer_to) WHERE answer_to IS NOT NULL;
    """,
    # 5: what replies cost, totalled per channel and day (bot.usage). No text and no user:
    # retention, !reset and !forget leave it.
    """
    CREATE TABLE usage (
        channel TEXT NOT NULL,
        day TEXT NOT NULL,                  -- the box's local date, YYYY-MM-DD
        replies INTEGER NOT NULL,
        evaluated_tokens INTEGER NOT NULL,  -- prompt tokens the model read
        reused_tokens INTEGER NOT NULL,     -- prompt tokens taken from the KV cache
        generated_tokens INTEGER NOT NULL,
        model_s REAL NOT NULL,              -- time in the model's steps
        joules REAL NOT NULL,
        estimated_joules REAL NOT NULL,     -- the part of joules that is an estimate
        unmeasured INTEGER NOT NULL,        -- replies without an energy figure
        PRIMARY KEY (channel, day)
    );
    """,
    # 6: notes people ask the bot to keep about them (`!remember`), each in the scope where it
    # was said: a server, or a channel (a DM, a Matrix room). Only their author adds or
    # deletes them; `!forget` deletes them with the author's messages.
    """
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_key TEXT NOT NULL,             -- Incoming.user_key of the person it is about
        scope TEXT NOT NULL,                -- bot.notes.notes_scope: where it applies
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX notes_by_user ON notes (user_key, scope, id);
    """,
    # 7: a rolling summary per channel of the messages trimmed out of its context window
    # (bot.summarizer). It covers the channel's messages up to `through_row`; when one of them
    # is deleted, edited, forgotten or purged, the summary goes in the same transaction (it
    # may hold those words) and is rebuilt later from what remains.
    """
    CREATE TABLE summaries (
        channel TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        through_row INTEGER NOT NULL,       -- the newest message it covers
        tokens INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        shown TEXT,                         -- what prompts show: `text` as of the last trim
        shown_tokens INTEGER
    );
    ALTER TABLE channel_window ADD COLUMN doomed_row INTEGER; -- the next trim drops up to it
    CREATE TRIGGER summaries_drop_deleted AFTER DELETE ON messages BEGIN
        DELETE FROM summaries WHERE channel = OLD.channel AND through_row >= OLD.id;
    END;
    CREATE TRIGGER summaries_drop_edited AFTER UPDATE OF text ON messages BEGIN
        DELETE FROM summaries WHERE channel = OLD.channel AND through_row >= OLD.id;
    END;
    """,
    # 8: when the bot answers in a scope (bot.triggers: mention, all, name, off; NULL inherits).
    """
    ALTER TABLE scope_settings ADD COLUMN trigger_mode TEXT;
    """,
    # 9: who had the bot forget them, and until when (bot.forgotten): a reply chain's links
    # read from the platform, written by them before that, stay out of prompts. No text.
    """
    CREATE TABLE forgotten (
        user_key TEXT PRIMARY KEY,          -- Incoming.user_key: platform and platform id
        before REAL NOT NULL                -- their messages sent before this are forgotten
    );
    """,
    # 10: whether a mention opens a thread in a channel (`!autothread`; NULL: the platform's
    # config, [discord] auto_thread_channels).
    """
    ALTER TABLE scope_settings ADD COLUMN auto_thread INTEGER;
    """,
    # 11: the pictures of a message, decoded for a model that sees images (bot.image_store):
    # the bitmap is a file in data_dir/images named by its content hash, this row links it to
    # its message while that is in the channel's context window. However the message goes,
    # its rows go with it, and the file once no row names it.
    """
    CREATE TABLE images (
        message_row INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,          -- its place among the message's pictures
        name TEXT NOT NULL,                 -- the file name as posted
        digest TEXT NOT NULL,               -- DecodedImage.digest: the file's name
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        source_format TEXT NOT NULL,
        PRIMARY KEY (message_row, position)
    );
    CREATE INDEX images_by_digest ON images (digest);
    """,
)
