//! The SFU: rooms, participants and media forwarding.
//!
//! [`core::Sfu`] is sans-IO: it owns every room, participant and str0m `Rtc`, takes time as an
//! input and emits [`Output`]s (datagrams to send, signaling messages to deliver). It never
//! touches a socket, a clock or a lock. [`driver`] owns the sockets (one UDP port for every peer,
//! one passive ICE-TCP listener), the timers and the channels to signaling sessions, and is the
//! only place the core is driven from.
//!
//! The run-loop invariant, inherited from str0m: after any input to the core, drain
//! [`core::Sfu::poll_output`] until it returns `None`, then sleep until
//! [`core::Sfu::poll_timeout`] or the next input.

pub mod addresses;
pub mod core;
pub mod counters;
pub mod driver;
pub mod forward;
#[cfg(test)]
mod harness;
pub mod ids;
pub mod keyframe;
pub mod presence;

pub use self::core::{
    ConnId, IceServers, JoinError, JoinRequest, Output, ResumeError, ResumeRequest, Sfu, SfuConfig,
};
pub use driver::{MediaCandidates, SfuHandle, SfuSockets};
pub use presence::PresenceEvent;
