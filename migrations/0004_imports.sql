-- `rtcbox import`: one row per import that stored settings, so the admin panel can say where
-- the settings came from. Names only: the values are in the settings table.
CREATE TABLE imports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    imported_at INTEGER NOT NULL, -- unix seconds
    sources     TEXT NOT NULL,    -- what was read, e.g. "livekit.yaml (/etc/livekit/livekit.yaml)"
    settings    TEXT NOT NULL     -- the settings it stored: environment names, comma-separated
) STRICT;
