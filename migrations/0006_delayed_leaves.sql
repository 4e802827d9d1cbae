-- Delayed leave events (MSC4140) delegated to rtcbox by full-access users: one per LiveKit room
-- and participant identity (a new delegation replaces the old one). rtcbox keeps each event from
-- firing while the participant is in the room and sends it when the participant leaves; rows
-- survive a restart so the leave is still sent. The delay id authorises restarting and sending
-- the event without any other credential: a secret, like the other secrets in this database.
CREATE TABLE delayed_leaves (
    room             TEXT NOT NULL,
    identity         TEXT NOT NULL,
    delay_id         TEXT NOT NULL,
    delay_timeout_ms INTEGER NOT NULL CHECK (delay_timeout_ms > 0),
    client_api_url   TEXT NOT NULL,  -- the homeserver's client-server API base URL
    server_name      TEXT NOT NULL,  -- the user's homeserver (its address policy)
    created_at       INTEGER NOT NULL,  -- unix seconds
    PRIMARY KEY (room, identity)
) STRICT;
