//! What the TURN fuzzers share: the seeded fuzz loop (`fuzz.rs`) and the cargo-fuzz TURN
//! targets (the fuzz crate includes this file). The server's configuration and the peers
//! requests name, the nonce a server hands out, long-term credentials added to a message, and
//! the properties every output and every stream frame must have.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use rtc_stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Message, Setter as _};
use rtc_stun::textattrs::TextAttribute;
use rtcbox::secret::Secret;
use rtcbox::turn::credentials::rest_password;
use rtcbox::turn::framing::{Frame, MAX_FRAME_LEN, next_frame};
use rtcbox::turn::server::{Config, Output, Server};
use rtcbox::turn::{Client, Transport};

pub const REALM: &str = "turn.fuzz.example";
/// The SFU's media socket as advertised (behind a NAT), and where it really is.
pub const SFU: &str = "81.2.69.160:8882";
pub const SFU_LOCAL: &str = "127.0.0.1:8882";
/// A public peer, and the peers requests name: public, the SFU (advertised and local), the
/// LAN, this host, IPv4 inside IPv6, NAT64, unspecified and broadcast.
pub const PEER: &str = "93.184.216.34:7000";
pub const PEERS: &[&str] = &[
    PEER,
    SFU,
    SFU_LOCAL,
    "81.2.69.160:22",
    "10.0.0.1:7000",
    "[::1]:7000",
    "[::ffff:127.0.0.1]:7000",
    "[::ffff:93.184.216.34]:7000",
    "[2606:4700::1111]:7000",
    "[64:ff9b::7f00:1]:7000",
    "0.0.0.0:0",
    "255.255.255.255:9",
];
/// The secrets of participant and of REST (Synapse) credentials.
pub const PARTICIPANT_SECRET: &str = "participant";
pub const SHARED_SECRET: &str = "shared";

/// Relays advertised on 192.0.2.1 with `relay_ports`, the SFU behind a NAT route, and a
/// bandwidth cap low enough for fuzzed traffic to reach it.
pub fn config(relay_ports: Range<u16>) -> Config {
    let mut config = Config::new(
        REALM,
        Secret::new(PARTICIPANT_SECRET),
        Some(Secret::new(SHARED_SECRET)),
        "192.0.2.1".parse().unwrap(),
    );
    config.relay_ports = relay_ports;
    config.policy.sfu_media = vec![SFU.parse().unwrap()];
    config.sfu_routes = vec![(SFU.parse().unwrap(), SFU_LOCAL.parse().unwrap())];
    config.max_allocation_bitrate = 300_000;
    config
}

/// The NONCE of `server`'s answer to `challenge` (an unauthenticated request), sent over TCP,
/// where answers are not rate-limited.
pub fn learn_nonce(server: &mut Server, now: Instant, unix: u64, challenge: &[u8]) -> String {
    let learner = Client {
        transport: Transport::Tcp,
        addr: "198.51.100.1:1".parse().unwrap(),
    };
    server.handle_client(now, unix, learner, challenge);
    let Some(Output::ToClient { bytes, .. }) = server.poll_output() else {
        panic!("no challenge");
    };
    let mut answer = Message::new();
    answer.unmarshal_binary(&bytes).unwrap();
    TextAttribute::get_from_as(&answer, ATTR_NONCE)
        .unwrap()
        .text
}

/// Adds USERNAME, REALM, NONCE and MESSAGE-INTEGRITY to `message`, with the password coturn's
/// REST scheme derives from `secret` for `username`; false when they do not fit.
pub fn sign(message: &mut Message, username: &str, secret: &str, realm: &str, nonce: &str) -> bool {
    for (typ, text) in [
        (ATTR_USERNAME, username),
        (ATTR_REALM, realm),
        (ATTR_NONCE, nonce),
    ] {
        if TextAttribute::new(typ, text.to_owned())
            .add_to(message)
            .is_err()
        {
            return false;
        }
    }
    let password = rest_password(&Secret::new(secret), username);
    MessageIntegrity::new_long_term_integrity_with_provider(
        username.to_owned(),
        realm.to_owned(),
        password,
        &rtc_stun::crypto::providers::RingCrypto,
    )
    .is_ok_and(|integrity| integrity.add_to(message).is_ok())
}

/// Where a relay may send: a participant's only to the SFU (its local socket, by the NAT
/// route), anyone else's to public addresses or the SFU.
pub fn assert_may_relay(participant: bool, to: SocketAddr) {
    let sfu_local: SocketAddr = SFU_LOCAL.parse().unwrap();
    if participant {
        assert_eq!(to, sfu_local, "a participant relayed to {to}");
    } else {
        assert!(
            rtcbox::net::is_public(to.ip()) || to == sfu_local,
            "relayed to {to}"
        );
    }
}

/// What the framer says about `input`, after checking it: a complete frame's length fits the
/// buffer, the limit and the 4-byte alignment, and a frame cut short is incomplete; more bytes
/// never make an invalid stream valid.
pub fn checked_frame(input: &[u8]) -> Frame {
    let frame = next_frame(input);
    match frame {
        Frame::Complete(n) => {
            assert!(n >= 4 && n <= input.len() && n <= MAX_FRAME_LEN && n % 4 == 0);
            assert_eq!(next_frame(&input[..n]), Frame::Complete(n));
            for cut in [0, 1, 3, 4, 7, 8, 19, 20, n / 2, n - 1] {
                if cut < n {
                    assert_eq!(next_frame(&input[..cut]), Frame::Incomplete, "{cut} of {n}");
                }
            }
        }
        Frame::Incomplete => assert!(input.len() < MAX_FRAME_LEN),
        Frame::Invalid => {
            let mut longer = input.to_vec();
            longer.extend_from_slice(&[0; 64]);
            assert_eq!(next_frame(&longer), Frame::Invalid);
        }
    }
    frame
}
