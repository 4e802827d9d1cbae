//! rtcbox: the whole MatrixRTC backend of a homeserver in one binary.
//!
//! See docs/ARCHITECTURE.md for the codemap and the invariants each module keeps.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod import;
pub mod livekit;
pub mod logbuf;
pub mod matrix;
pub mod net;
pub mod rooms;
pub mod secret;
pub mod setup;
pub mod sfu;
pub mod tls;
pub mod turn;
