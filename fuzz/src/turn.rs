//! See `fuzz_targets/turn.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc_stun::attributes::{ATTR_REQUESTED_TRANSPORT, ATTR_XOR_PEER_ADDRESS, AttrType};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{
    CLASS_INDICATION, CLASS_REQUEST, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND, Message, MessageType, Method,
    Setter as _, TransactionId,
};
use rtc_stun::xoraddr::XorMappedAddress;
use rtcbox::net::is_public;
use rtcbox::turn::credentials::{CredentialKind, participant_username, rest_username};
use rtcbox::turn::framing::{Frame, next_frame};
use rtcbox::turn::server::{Output, Server};
use rtcbox::turn::{Client, Transport};

use crate::turn_fuzzing::{
    PARTICIPANT_SECRET, PEERS, REALM, SFU, SFU_LOCAL, SHARED_SECRET, assert_may_relay, config,
    learn_nonce, sign,
};

const UNIX: u64 = 1_700_000_000;
const MAX_ALLOCATIONS: usize = 4;
/// The SFU session the participant credentials name.
const SESSION: &str = "PA_fuzz";
const METHODS: &[Method] = &[
    METHOD_ALLOCATE,
    METHOD_REFRESH,
    METHOD_CREATE_PERMISSION,
    METHOD_CHANNEL_BIND,
    METHOD_SEND,
    METHOD_BINDING,
];

struct Harness {
    server: Server,
    nonce: String,
    now: Instant,
    next_transaction: u64,
    /// Relay (advertised) → its owner.
    relays: HashMap<SocketAddr, Client>,
    participant_clients: Vec<Client>,
    /// The SFU said [`SESSION`] ended: its credentials get no relay from then on.
    session_ended: bool,
    next_local_port: u16,
}

pub fn run(data: &[u8]) {
    let participant_udp = client(Transport::Udp, "203.0.113.6:5000");
    let stream = client(Transport::Tcp, "203.0.113.6:5001");
    let rest_udp = client(Transport::Udp, "203.0.113.5:5000");
    let rest_tls = client(Transport::Tls, "203.0.113.5:5002");
    let mut h = Harness::new(vec![participant_udp, stream]);
    let mut buffer = Vec::new();
    for (op, record) in crate::records(data) {
        h.now += Duration::from_millis(20);
        match op % 8 {
            0 => h.from_client(participant_udp, record, false, op),
            1 => h.from_client(rest_udp, record, false, op),
            2 => {
                buffer.extend_from_slice(record);
                loop {
                    match next_frame(&buffer) {
                        Frame::Complete(n) => {
                            let frame: Vec<u8> = buffer.drain(..n).collect();
                            h.from_client(stream, &frame, false, op);
                        }
                        Frame::Incomplete => break,
                        Frame::Invalid => {
                            buffer.clear();
                            h.server.handle_client_closed(stream);
                            h.drain(None, false, op);
                            break;
                        }
                    }
                }
            }
            3 => h.signed(participant_udp, true, record, op),
            4 => h.signed(rest_udp, false, record, op),
            5 => h.signed(rest_tls, false, record, op),
            6 => h.from_peer(record),
            _ => {
                let step = record.first().copied().unwrap_or(1);
                h.now += Duration::from_secs(u64::from(step) * 8);
                h.server.handle_timeout(h.now);
                if step % 2 == 1 {
                    h.server.handle_client_closed(rest_tls);
                }
                h.drain(None, false, op);
                if step % 5 == 0 {
                    h.server.handle_session_ended(SESSION);
                    h.session_ended = true;
                    h.drain(None, false, op);
                    let left = h.server.allocations(h.now);
                    assert!(
                        left.iter().all(|a| a.kind == CredentialKind::Rest),
                        "an ended session's allocation: {left:?}"
                    );
                }
            }
        }
        let stats = h.server.stats();
        assert!(stats.allocations <= MAX_ALLOCATIONS, "{stats:?}");
        let _ = h.server.allocations(h.now);
    }
}

fn client(transport: Transport, addr: &str) -> Client {
    Client {
        transport,
        addr: addr.parse().unwrap(),
    }
}

impl Harness {
    fn new(participant_clients: Vec<Client>) -> Harness {
        let mut config = config(50000..50006);
        config.max_allocations_total = MAX_ALLOCATIONS;
        config.max_allocations_per_username = 3;
        let mut server = Server::new(config);
        // Learn a nonce the way a client does: an unauthenticated Allocate.
        let mut challenge = Message::new();
        challenge.typ = MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST);
        challenge.transaction_id = TransactionId([1; 12]);
        challenge.write_header();
        challenge.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        FINGERPRINT.add_to(&mut challenge).unwrap();
        let now = Instant::now();
        let nonce = learn_nonce(&mut server, now, UNIX, &challenge.raw);
        Harness {
            server,
            nonce,
            now,
            next_transaction: 0,
            relays: HashMap::new(),
            participant_clients,
            session_ended: false,
            next_local_port: 40000,
        }
    }

    fn from_client(&mut self, from: Client, bytes: &[u8], signed_allocate: bool, op: u8) {
        self.server.handle_client(self.now, UNIX, from, bytes);
        self.drain(Some(from), signed_allocate, op);
    }

    /// A request built from `record` (method, class, peer, then attributes as type, length,
    /// value) and signed with valid credentials.
    fn signed(&mut self, from: Client, participant: bool, record: &[u8], op: u8) {
        let [what, peer, attributes @ ..] = record else {
            return;
        };
        let method = METHODS[usize::from(*what) % METHODS.len()];
        let class = if what & 0x80 != 0 && method == METHOD_SEND {
            CLASS_INDICATION
        } else {
            CLASS_REQUEST
        };
        let mut message = Message::new();
        message.typ = MessageType::new(method, class);
        self.next_transaction += 1;
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.next_transaction.to_be_bytes());
        message.transaction_id = TransactionId(id);
        message.write_header();
        if method == METHOD_ALLOCATE && what & 0x40 == 0 {
            message.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        }
        let mut rest = attributes;
        while let [t0, t1, len, tail @ ..] = rest {
            let (value, tail) = tail.split_at(usize::from(*len).min(tail.len()));
            message.add(AttrType(u16::from_be_bytes([*t0, *t1])), value);
            rest = tail;
        }
        if let Some(peer) = PEERS.get(usize::from(*peer)) {
            let peer: SocketAddr = peer.parse().unwrap();
            XorMappedAddress {
                ip: peer.ip(),
                port: peer.port(),
            }
            .add_to_as(&mut message, ATTR_XOR_PEER_ADDRESS)
            .unwrap();
        }
        if class == CLASS_REQUEST {
            let (username, secret) = if participant {
                (
                    participant_username(UNIX + 3600, SESSION, "alice"),
                    PARTICIPANT_SECRET,
                )
            } else {
                (
                    rest_username(UNIX + 3600, "@alice:example.org"),
                    SHARED_SECRET,
                )
            };
            if !sign(&mut message, &username, secret, REALM, &self.nonce) {
                return;
            }
        }
        if FINGERPRINT.add_to(&mut message).is_err() {
            return;
        }
        let raw = message.raw.clone();
        self.from_client(from, &raw, method == METHOD_ALLOCATE, op);
    }

    /// A datagram from a peer to one of the relays: `record[0]` picks the relay, `record[1]`
    /// the peer.
    fn from_peer(&mut self, record: &[u8]) {
        let [relay, peer, payload @ ..] = record else {
            return;
        };
        let mut relays: Vec<(SocketAddr, Client)> =
            self.relays.iter().map(|(r, c)| (*r, *c)).collect();
        relays.sort();
        let Some((relay, owner)) = relays
            .get(usize::from(*relay) % relays.len().max(1))
            .copied()
        else {
            return;
        };
        let peer: SocketAddr = PEERS[usize::from(*peer) % PEERS.len()].parse().unwrap();
        self.server.handle_peer(self.now, relay, peer, payload);
        while let Some(output) = self.server.poll_output() {
            let Output::ToClient { to, .. } = output else {
                panic!("peer data made {output:?}");
            };
            assert_eq!(to, owner, "peer data for {relay} went to someone else");
            if self.participant_clients.contains(&owner) {
                // The SFU, from its local socket or (hairpinned) its advertised address.
                let sfu = [SFU, SFU_LOCAL].map(|a| a.parse::<SocketAddr>().unwrap());
                assert!(sfu.contains(&peer), "{peer} reached a participant");
            } else {
                assert!(is_public(peer.ip()) || peer == SFU_LOCAL.parse().unwrap());
            }
        }
    }

    /// Carries out the outputs as the driver would; `op` decides whether binds succeed.
    fn drain(&mut self, from: Option<Client>, signed_allocate: bool, op: u8) {
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::Bind(relay) => {
                    assert!(signed_allocate, "a relay without a signed Allocate");
                    let from = from.expect("binds answer requests");
                    if op & 0x10 != 0 {
                        self.server.handle_bind_failed(relay);
                    } else {
                        self.relays.insert(relay, from);
                        self.server.handle_bound(relay);
                    }
                }
                Output::BindLocal { client, .. } => {
                    assert!(signed_allocate, "a relay without a signed Allocate");
                    assert!(!self.session_ended, "a relay for an ended session");
                    assert_eq!(Some(client), from, "a relay for someone else");
                    assert!(
                        self.participant_clients.contains(&client),
                        "{client} is no participant"
                    );
                    if op & 0x10 != 0 {
                        self.server.handle_bind_local_failed(client);
                    } else {
                        // An OS-chosen port outside the range.
                        self.next_local_port += 1;
                        let relay =
                            SocketAddr::new("192.0.2.1".parse().unwrap(), self.next_local_port);
                        self.relays.insert(relay, client);
                        self.server.handle_bound_local(client, relay);
                    }
                }
                Output::Unbind(relay) => {
                    self.relays.remove(&relay);
                }
                Output::ToPeer { relay, to, .. } => {
                    let owner = self.relays[&relay];
                    if let Some(from) = from {
                        assert_eq!(owner, from, "relayed for someone else");
                    }
                    assert_may_relay(self.participant_clients.contains(&owner), to);
                }
                Output::ToClient { to, .. } => {
                    if let Some(from) = from {
                        assert_eq!(to, from, "answered someone else");
                    }
                }
            }
        }
    }
}
