-- Settings written by first start (the LiveKit key pair) and later by the admin panel.
-- One row per setting; values are text and parsed by src/config on every start.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL -- unix seconds
) STRICT;
