-- The admin panel: one admin account, its sessions, and the setup wizard's answers.

-- A single row (id = 1). Until a password is chosen, a one-time setup token unlocks the
-- "choose a password" page; only SHA-256 hashes of the token are stored, the password as argon2id.
CREATE TABLE admin_account (
    id                  INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    password_hash       TEXT,             -- PHC string; NULL until the first password is chosen
    setup_token_hash    TEXT,             -- hex SHA-256; NULL once used
    setup_token_expires INTEGER,          -- unix seconds
    updated_at          INTEGER NOT NULL  -- unix seconds
) STRICT;

-- Logged-in browsers. The cookie holds a random id; the table holds its SHA-256, so a copy of
-- the database does not give away live sessions. Each session has its own CSRF token.
CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY NOT NULL,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- The wizard's answers, one row per step: the form as entered (JSON) and whether it validated.
CREATE TABLE wizard_steps (
    step       TEXT PRIMARY KEY NOT NULL,
    data       TEXT NOT NULL,
    complete   INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
) STRICT;
