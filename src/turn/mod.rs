//! The embedded TURN server (RFC 8656), replacing coturn. Being built: so far the pure parts
//! that the sans-IO core will use: credentials ([`credentials`]) and the relay policy
//! ([`policy`]). Listeners and the allocation state machine follow.

pub mod credentials;
pub mod policy;
