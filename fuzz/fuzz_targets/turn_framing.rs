//! TURN over a stream (src/turn/framing.rs) and the STUN binding codec (src/net/stun.rs). The
//! framer says Incomplete, Invalid or a length that fits the buffer, the limit and 4-byte
//! alignment; more bytes never change its mind and a frame cut short is Incomplete. A plain
//! Binding answer is no larger than the request plus a fixed amount and decodes to the source.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbox::net::stun;
use rtcbox::turn::framing::{OPENING_LEN, Opening, opening};

fuzz_target!(|data: &[u8]| {
    rtcbox_fuzz::checked_frame(data);
    match opening(data) {
        Opening::Undecided => assert!(data.len() < OPENING_LEN),
        Opening::Turn => {
            assert!(data[0] < 0x40 && data[4..8] == stun::MAGIC_COOKIE.to_be_bytes());
        }
        Opening::Other => {}
    }

    let source = "192.0.2.1:5000".parse().unwrap();
    let _ = stun::parse_binding_request(data);
    if let Some(reply) = stun::answer_plain_binding(data, source) {
        assert!(reply.len() <= data.len() + 32);
        let tid: [u8; 12] = data[8..20].try_into().unwrap();
        assert_eq!(stun::parse_binding_success(&reply, &tid), Ok(source));
    }
    if data.len() >= 12 {
        let tid: [u8; 12] = data[..12].try_into().unwrap();
        let _ = stun::parse_binding_success(&data[12..], &tid);
    }
});
