//! The embedded TURN server (RFC 8656), replacing coturn: the sans-IO core ([`server`]), the
//! pure parts it and its driver use (credentials, relay policy, TCP/TLS stream [`framing`]), the
//! types it shares with its driver and the admin panel ([`status`]), and the [`handle`] the rest
//! of rtcbox holds, and the tokio [`driver`] with the listeners and relay sockets.

pub mod client;
pub mod credentials;
pub mod driver;
pub mod framing;
pub mod handle;
pub mod policy;
mod relays;
pub mod server;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;

pub use handle::{TurnHandle, TurnUrls};
pub use status::{Client, Transport, TurnStatus};
