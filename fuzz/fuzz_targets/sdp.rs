//! SDP from clients, where it enters str0m through the SFU core: publisher offers, answers to
//! the subscriber offer, trickled candidates. Never a panic; an accepted offer's answer is SDP.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rtcbox_fuzz::sfu::run_sdp(data));
