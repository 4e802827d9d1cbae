//! See `fuzz_targets/signal.rs` and `fuzz_targets/sdp.rs`: a sans-IO SFU core with two
//! participants in one room, fed what a client may send on its signaling socket.

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as In;
use rtcbox::livekit::signal::decode_request;
use rtcbox::livekit::token::VideoGrant;
use rtcbox::sfu::{JoinRequest, Output, Sfu, SfuConfig};

/// The signaling connections of the two participants.
const ALICE: u64 = 1;
const BOB: u64 = 2;

pub struct Room {
    pub sfu: Sfu,
    pub now: Instant,
}

impl Room {
    pub fn new() -> Room {
        let _ = str0m::crypto::from_feature_flags().install_process_default();
        let now = Instant::now();
        let config = SfuConfig {
            udp_candidates: vec!["127.0.0.1:40000".parse().unwrap()],
            tcp_candidates: vec!["127.0.0.1:40001".parse().unwrap()],
            auto_create_rooms: true,
            node_id: "ND_fuzz".into(),
        };
        let mut room = Room {
            sfu: Sfu::new(config, now, 1_700_000_000_000),
            now,
        };
        for (conn, identity) in [(ALICE, "alice"), (BOB, "bob")] {
            let request = JoinRequest {
                conn,
                room: "r".into(),
                identity: identity.into(),
                name: String::new(),
                metadata: String::new(),
                grant: VideoGrant {
                    room_join: true,
                    room: "r".into(),
                    ..Default::default()
                },
                auto_subscribe: true,
                client_protocol: 16,
                ice_servers: Default::default(),
                single_pc: false,
                publisher_offer: None,
                add_tracks: Vec::new(),
            };
            room.sfu.join(now, request).expect("the room takes two");
        }
        room.drain();
        room
    }

    /// One message from `conn`; then the outputs, which name only the two connections. Returns
    /// the signaling messages for `conn`.
    pub fn signal(&mut self, conn: u64, message: In) -> Vec<proto::signal_response::Message> {
        self.sfu.handle_signal(self.now, conn, message);
        self.drain()
            .into_iter()
            .filter(|(to, _)| *to == conn)
            .map(|(_, message)| message)
            .collect()
    }

    pub fn tick(&mut self, by: Duration) {
        self.now += by;
        self.sfu.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) -> Vec<(u64, proto::signal_response::Message)> {
        let mut signals = Vec::new();
        while let Some(output) = self.sfu.poll_output() {
            match output {
                Output::Signal(to, message) => {
                    assert!(to == ALICE || to == BOB, "a message for connection {to}");
                    signals.push((to, *message));
                }
                Output::Close(to) => assert!(to == ALICE || to == BOB, "closed {to}"),
                Output::Transmit(_) | Output::Left { .. } => {}
            }
        }
        signals
    }
}

impl Default for Room {
    fn default() -> Self {
        Room::new()
    }
}

/// Records of signaling frames, each decoded as the session does; what decodes encodes and
/// decodes again to the same message, and goes to the core from Alice or Bob.
pub fn run_signal(data: &[u8]) {
    let mut room = Room::new();
    for (op, frame) in crate::records(data) {
        let Some(message) = decode_request(frame) else {
            continue;
        };
        let encoded = proto::SignalRequest {
            message: Some(message.clone()),
        }
        .encode_to_vec();
        assert_eq!(decode_request(&encoded).as_ref(), Some(&message));
        let conn = if op & 1 == 0 { ALICE } else { BOB };
        room.signal(conn, message);
        if op & 2 != 0 {
            room.tick(Duration::from_millis(u64::from(op) * 10));
        }
    }
}

/// Records of SDP: a publisher offer from Alice, an answer to her subscriber offer, or a
/// trickled candidate. An offer the core accepts gets an answer that parses as SDP again.
pub fn run_sdp(data: &[u8]) {
    let mut room = Room::new();
    for (op, text) in crate::records(data) {
        let text = String::from_utf8_lossy(text).into_owned();
        let description = |kind: &str| proto::SessionDescription {
            r#type: kind.into(),
            sdp: text.clone(),
            id: 1,
            ..Default::default()
        };
        match op % 3 {
            0 => {
                for answer in room.signal(ALICE, In::Offer(description("offer"))) {
                    if let proto::signal_response::Message::Answer(answer) = answer {
                        str0m::change::SdpAnswer::from_sdp_string(&answer.sdp)
                            .expect("our answer is SDP");
                    }
                }
            }
            1 => {
                room.signal(ALICE, In::Answer(description("answer")));
            }
            _ => {
                let trickle = proto::TrickleRequest {
                    candidate_init: text.clone(),
                    target: i32::from(op & 8 != 0),
                    ..Default::default()
                };
                room.signal(ALICE, In::Trickle(trickle));
            }
        }
        room.tick(Duration::from_millis(20));
    }
}
