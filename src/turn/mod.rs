//! The embedded TURN server (RFC 8656), replacing coturn. Being built: the sans-IO core
//! ([`server`]) and the pure parts it uses: credentials ([`credentials`]) and the relay policy
//! ([`policy`]). The listeners (the driver) follow.

pub mod credentials;
pub mod policy;
pub mod server;
