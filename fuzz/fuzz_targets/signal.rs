//! The signaling WebSocket's binary frames (src/livekit/signal.rs `decode_request`, then
//! `Sfu::handle_signal`): decoded messages round-trip through protobuf, and the core, with two
//! participants in a room, answers only them and never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rtcbox_fuzz::sfu::run_signal(data));
