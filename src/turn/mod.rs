//! The embedded TURN server (RFC 8656), replacing coturn: the sans-IO core ([`server`]), the
//! pure parts it uses (credentials, relay policy), and the types it shares with its driver and
//! the admin panel ([`status`]).

pub mod credentials;
pub mod framing;
pub mod handle;
pub mod policy;
pub mod server;
pub mod status;

pub use handle::{TurnHandle, TurnUrls};
pub use status::{Client, Transport, TurnStatus};
