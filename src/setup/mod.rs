//! The setup wizard's model and everything it produces or checks.
//!
//! - [`model`]: the validated description of a deployment (plain data).
//! - [`outputs`]: generated files (homeserver.yaml snippet, well-known JSON, reverse-proxy
//!   configs, port-forward table, compose.yaml), each a pure function of a [`model::Deployment`]
//!   with golden tests, so the wizard and the docs never drift.
//! - [`fetch`]: the small HTTP(S) client the wizard and the checks use to look at the deployment
//!   from outside.
//! - [`discover`]: homeserver discovery (well-known, versions, Synapse version), LAN addresses
//!   and public IP detection.
//! - [`verify`]: the live checks of the verification page; each says pass/fail and what to change.

pub mod discover;
pub mod fetch;
pub mod model;
pub mod outputs;
pub mod verify;
pub mod wizard;
