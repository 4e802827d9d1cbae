//! rtcbox: the whole MatrixRTC backend of a homeserver in one binary.
//!
//! See docs/ARCHITECTURE.md for the codemap and the invariants each module keeps.
#![forbid(unsafe_code)]

/// The release, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (short hash), or `unknown` (see build.rs).
pub const GIT_COMMIT: &str = env!("RTCBOX_GIT_COMMIT");
/// `0.1.0 (git 1a2b3c4d5e6f)`: what `rtcbox --version` prints after the name.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("RTCBOX_GIT_COMMIT"),
    ")"
);

pub mod acme;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod import;
pub mod live;
pub mod livekit;
pub mod loadtest;
pub mod logbuf;
pub mod matrix;
pub mod metrics;
pub mod net;
pub mod restart;
pub mod rooms;
pub mod secret;
pub mod setup;
pub mod sfu;
pub mod tls;
pub mod turn;
