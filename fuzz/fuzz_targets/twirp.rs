//! The Twirp RoomService (src/livekit/twirp.rs) through its router: any body, in protobuf or
//! JSON, to any method, with or without a room-admin token. Refusals are Twirp errors, never
//! a 5xx but 501 for a method not served; the SFU only ever sees authorized calls with valid
//! names, for the token's room where roomAdmin is what authorizes them.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rtcbox_fuzz::twirp::run(data));
