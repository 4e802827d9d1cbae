//! The TURN core fed a script of client datagrams, TCP stream bytes, requests the target signs
//! with valid participant or REST credentials (so the fuzzer gets past authentication), peer
//! datagrams and time. Besides never panicking: answers go only to whoever sent the request,
//! relays open only for signed Allocate requests, nothing reaches a peer the relay policy
//! refuses (participants: the SFU only), quotas hold, and a relay's peer data reaches only its
//! owner.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rtcbox_fuzz::turn::run(data));
