//! The LiveKit wire format: access tokens, signaling sessions (WebSocket + protobuf) and the
//! Twirp room service. The SFU core uses the protocol's message types as its vocabulary; the
//! encoding, the HTTP surface and the token rules live here.

pub mod keepalive;
pub mod room_service;
pub mod signal;
pub mod token;
pub mod twirp;
