-- The ACME account rtcbox orders certificates with: one per directory URL, created once. The
-- credentials are instant-acme's JSON (account URL and private key, PKCS#8): a secret, like the
-- certificates' keys; the data directory is the secret store.
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY NOT NULL,
    credentials TEXT NOT NULL,
    created_at  INTEGER NOT NULL  -- unix seconds
) STRICT;
