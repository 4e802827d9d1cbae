-- TLS certificates rtcbox serves itself (TURN over TLS now; direct HTTPS later). One row per
-- purpose; 'default' is the certificate for the public host. The private key lives here too:
-- the data directory is the secret store (as for the API secret).
CREATE TABLE certificates (
    id         TEXT PRIMARY KEY NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('self-signed', 'acme')),
    names      TEXT NOT NULL,     -- the subject alternative names, comma-separated
    cert_pem   TEXT NOT NULL,     -- leaf first, then the chain
    key_pem    TEXT NOT NULL,     -- PKCS#8
    not_after  INTEGER NOT NULL,  -- unix seconds
    created_at INTEGER NOT NULL   -- unix seconds
) STRICT;
