use super::*;

use std::collections::BTreeMap;

use crate::net::Cidr;
use crate::turn::credentials::{participant_username, rest_password, rest_username};

const UNIX: u64 = 1_700_000_000;
const REALM: &str = "turn.example.org";
const SHARED: &str = "s3cret";
const PARTICIPANT: &str = "p4rticipant";

fn client() -> Client {
    Client::udp("203.0.113.5:5000".parse().unwrap())
}

fn tcp(addr: &str) -> Client {
    Client {
        transport: Transport::Tcp,
        addr: addr.parse().unwrap(),
    }
}

fn public_peer() -> SocketAddr {
    "93.184.216.34:7000".parse().unwrap()
}

/// The SFU's media socket as advertised (this host's public address).
fn sfu() -> SocketAddr {
    "81.2.69.160:8882".parse().unwrap()
}

const RELAY_IP: &str = "192.0.2.1";

fn config() -> Config {
    let mut config = Config::new(
        REALM,
        Secret::new(PARTICIPANT),
        Some(Secret::new(SHARED)),
        RELAY_IP.parse().unwrap(),
    );
    config.relay_ports = 50000..50010;
    config.policy.host_addresses = vec![sfu().ip()];
    config.policy.sfu_media = vec![sfu()];
    config
}

/// The password a client holding the right secret derives for `username`.
fn password_for(username: &str) -> String {
    let secret = match credentials::kind(username) {
        CredentialKind::Participant => PARTICIPANT,
        CredentialKind::Rest => SHARED,
    };
    rest_password(&Secret::new(secret), username)
}

/// A test client: a virtual clock, a server and the credentials a client holds.
struct Harness {
    server: Server,
    start: Instant,
    now: Instant,
    unix: u64,
    /// Who sends the requests.
    client: Client,
    username: String,
    /// The password a client uses; the right one unless a test says otherwise.
    password: Option<String>,
    nonce: Option<String>,
    /// Answer every Bind with `handle_bound`, as a driver whose binds succeed.
    auto_bind: bool,
    /// The last port handed out for a participant relay.
    local_ports: u16,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let start = Instant::now();
        Harness {
            server: Server::new(config),
            start,
            now: start,
            unix: UNIX,
            client: client(),
            username: rest_username(UNIX + 3600, "alice"),
            password: None,
            nonce: None,
            auto_bind: true,
            local_ports: 40000,
        }
    }

    fn participant(config: Config) -> Harness {
        let mut h = Harness::new(config);
        h.username = participant_username(UNIX + 3600, "PA_test", "alice");
        h
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.unix += by.as_secs();
        self.server.handle_timeout(self.now);
    }

    /// Everything the server emitted, binding relays on the way when `auto_bind` is set.
    fn outputs(&mut self) -> Vec<Output> {
        let mut all = Vec::new();
        while let Some(output) = self.server.poll_output() {
            match (self.auto_bind, &output) {
                (true, Output::Bind(relay)) => self.server.handle_bound(*relay),
                (true, Output::BindLocal { client, .. }) => {
                    // An OS-chosen port, outside the relay range.
                    self.local_ports += 1;
                    let relay = SocketAddr::new(RELAY_IP.parse().unwrap(), self.local_ports);
                    self.server.handle_bound_local(*client, relay);
                }
                _ => {}
            }
            all.push(output);
        }
        all
    }

    /// Sends `bytes` from `from`, returns the decoded STUN answers and the other outputs.
    fn send_from(&mut self, from: Client, bytes: &[u8]) -> (Vec<Message>, Vec<Output>) {
        self.server.handle_client(self.now, self.unix, from, bytes);
        self.answers_to(from)
    }

    /// The pending outputs: STUN answers to `to` decoded, the rest as they are.
    fn answers_to(&mut self, to: Client) -> (Vec<Message>, Vec<Output>) {
        let mut answers = Vec::new();
        let mut others = Vec::new();
        for output in self.outputs() {
            match &output {
                Output::ToClient { to: t, bytes } if *t == to && bytes.first() < Some(&0x40) => {
                    answers.push(decode(bytes).expect("the server sends valid STUN"))
                }
                _ => others.push(output),
            }
        }
        (answers, others)
    }

    /// A request as a client builds it; authenticated when a nonce is known.
    fn request(&self, method: Method, attributes: &[(AttrType, Vec<u8>)]) -> Vec<u8> {
        let mut message = Message::new();
        message.typ = MessageType::new(method, CLASS_REQUEST);
        message.transaction_id = TransactionId::new();
        message.write_header();
        for (typ, value) in attributes {
            if *typ == PEER_MARKER {
                let peer: SocketAddr = String::from_utf8_lossy(value).parse().unwrap();
                add_raw_xor_address(&mut message, peer);
            } else {
                message.add(*typ, value);
            }
        }
        if let Some(nonce) = &self.nonce {
            TextAttribute::new(ATTR_USERNAME, self.username.clone())
                .add_to(&mut message)
                .unwrap();
            TextAttribute::new(ATTR_REALM, REALM.into())
                .add_to(&mut message)
                .unwrap();
            TextAttribute::new(ATTR_NONCE, nonce.clone())
                .add_to(&mut message)
                .unwrap();
            let password = self
                .password
                .clone()
                .unwrap_or_else(|| password_for(&self.username));
            MessageIntegrity::new_long_term_integrity_with_provider(
                self.username.clone(),
                REALM.into(),
                password,
                &RingCrypto,
            )
            .unwrap()
            .add_to(&mut message)
            .unwrap();
        }
        FINGERPRINT.add_to(&mut message).unwrap();
        message.raw
    }

    /// Sends a request from `self.client`, learning the nonce from a 401/438 and retrying once.
    fn call(
        &mut self,
        method: Method,
        attributes: &[(AttrType, Vec<u8>)],
    ) -> (Message, Vec<Output>) {
        for _ in 0..2 {
            let request = self.request(method, attributes);
            let (mut answers, others) = self.send_from(self.client, &request);
            assert_eq!(answers.len(), 1, "one answer");
            let answer = answers.remove(0);
            let code = error_code(&answer);
            let fresh_nonce = TextAttribute::get_from_as(&answer, ATTR_NONCE)
                .ok()
                .map(|nonce| nonce.text)
                .filter(|nonce| self.nonce.as_deref() != Some(nonce.as_str()));
            if let (Some(401 | 438), Some(nonce)) = (code, fresh_nonce) {
                self.nonce = Some(nonce);
                continue;
            }
            return (answer, others);
        }
        panic!("no answer after a new nonce");
    }

    /// Learns a nonce without an answer to `self.client` (over TCP, which is never limited).
    fn learn_nonce(&mut self) {
        let request = self.request(METHOD_ALLOCATE, &[udp()]);
        let other = tcp("198.51.100.77:1");
        let (answers, _) = self.send_from(other, &request);
        self.nonce = Some(
            TextAttribute::get_from_as(&answers[0], ATTR_NONCE)
                .unwrap()
                .text,
        );
    }

    fn allocate(&mut self) -> SocketAddr {
        let (answer, others) = self.call(METHOD_ALLOCATE, &[udp()]);
        assert_eq!(
            answer.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{:?}",
            error_code(&answer)
        );
        let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).unwrap();
        let bind = match credentials::kind(&self.username) {
            CredentialKind::Participant => Output::BindLocal {
                client: self.client,
                even: false,
            },
            CredentialKind::Rest => Output::Bind(relay),
        };
        assert_eq!(others, [bind]);
        relay
    }

    fn create_permission(&mut self, peer: SocketAddr) -> Option<u16> {
        let (answer, _) = self.call(METHOD_CREATE_PERMISSION, &[peer_attr(peer)]);
        error_code(&answer)
    }

    fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Option<u16> {
        let mut value = number.to_be_bytes().to_vec();
        value.extend_from_slice(&[0, 0]);
        let (answer, _) = self.call(
            METHOD_CHANNEL_BIND,
            &[(ATTR_CHANNEL_NUMBER, value), peer_attr(peer)],
        );
        error_code(&answer)
    }

    /// A Send indication from `self.client`; returns what the server emits.
    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<Output> {
        let mut message = Message::new();
        message.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
        message.transaction_id = TransactionId::new();
        message.write_header();
        add_raw_xor_address(&mut message, peer);
        message.add(ATTR_DATA, data);
        self.server
            .handle_client(self.now, self.unix, self.client, &message.raw);
        self.outputs()
    }

    /// A datagram from `peer` arriving on `relay`; returns what the server emits.
    fn peer_sends(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Vec<Output> {
        self.server.handle_peer(self.now, relay, peer, data);
        self.outputs()
    }

    fn denials(&self) -> u64 {
        self.server.stats().denials.values().sum()
    }
}

fn udp() -> (AttrType, Vec<u8>) {
    (ATTR_REQUESTED_TRANSPORT, vec![TRANSPORT_UDP, 0, 0, 0])
}

/// XOR-PEER-ADDRESS values depend on the transaction id; [`Harness::request`] assigns a new
/// one, so peer attributes are encoded through this marker and fixed up there.
fn peer_attr(peer: SocketAddr) -> (AttrType, Vec<u8>) {
    (PEER_MARKER, peer.to_string().into_bytes())
}

const PEER_MARKER: AttrType = AttrType(0x7FF0);

/// XOR-PEER-ADDRESS exactly as written, IPv4-mapped IPv6 included (the server's own encoder
/// would canonicalize it).
fn add_raw_xor_address(message: &mut Message, peer: SocketAddr) {
    XorMappedAddress {
        ip: peer.ip(),
        port: peer.port(),
    }
    .add_to_as(message, ATTR_XOR_PEER_ADDRESS)
    .unwrap();
}

fn error_code(message: &Message) -> Option<u16> {
    let mut attribute = ErrorCodeAttribute::default();
    use rtc_stun::message::Getter as _;
    attribute.get_from(message).ok().map(|_| attribute.code.0)
}

fn xor(message: &Message, typ: AttrType) -> Option<SocketAddr> {
    decode_xor_address(&message.get(typ).ok()?, &message.transaction_id.0)
}

fn to_peers(outputs: &[Output]) -> Vec<(SocketAddr, Vec<u8>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToPeer { to, bytes, .. } => Some((*to, bytes.clone())),
            _ => None,
        })
        .collect()
}

fn to_clients(outputs: &[Output]) -> Vec<(Client, Vec<u8>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToClient { to, bytes } => Some((*to, bytes.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn unauthenticated_allocate_is_challenged() {
    let mut h = Harness::new(config());
    let request = h.request(METHOD_ALLOCATE, &[udp()]);
    let (answers, others) = h.send_from(client(), &request);
    assert!(others.is_empty());
    let answer = &answers[0];
    assert_eq!(answer.typ.class, CLASS_ERROR_RESPONSE);
    assert_eq!(error_code(answer), Some(401));
    assert_eq!(
        TextAttribute::get_from_as(answer, ATTR_REALM).unwrap().text,
        REALM
    );
    assert!(TextAttribute::get_from_as(answer, ATTR_NONCE).is_ok());
    assert_eq!(h.server.stats().allocations, 0);
    // A request without MESSAGE-INTEGRITY is not an authentication failure.
    assert_eq!(h.server.stats().auth_failures, 0);
}

#[test]
fn authenticated_allocate_succeeds_with_integrity() {
    let mut h = Harness::new(config());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
    let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert!((50000..50010).contains(&relay.port()));
    assert_eq!(relay.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(xor(&answer, ATTR_XORMAPPED_ADDRESS), Some(client().addr));
    assert_eq!(answer.get(ATTR_LIFETIME).unwrap(), 600u32.to_be_bytes());
    let key = long_term_key(&h.username, REALM, &Secret::new(password_for(&h.username)));
    let mut answer = answer;
    MessageIntegrity::check(&mut answer, &key, &RingCrypto).unwrap();
    assert_eq!(h.server.stats().allocations, 1);

    // A second Allocate from the same 5-tuple: 437.
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(437));
    // Only UDP.
    let mut other = Harness::new(config());
    let (answer, _) = other.call(
        METHOD_ALLOCATE,
        &[(ATTR_REQUESTED_TRANSPORT, vec![6, 0, 0, 0])],
    );
    assert_eq!(error_code(&answer), Some(442));
}

#[test]
fn binding_is_answered_without_auth() {
    let mut h = Harness::new(config());
    let request = crate::net::stun::binding_request(&[7; 12]);
    let (answers, _) = h.send_from(client(), &request);
    assert_eq!(
        xor(&answers[0], ATTR_XORMAPPED_ADDRESS),
        Some(client().addr)
    );
}

#[test]
fn loopback_is_refused_by_default_and_allowed_by_the_allow_list() {
    let loopback: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut h = Harness::new(config());
    h.allocate();
    assert_eq!(h.create_permission(loopback), Some(403));
    assert!(to_peers(&h.send_indication(loopback, b"hi")).is_empty());
    assert!(h.denials() >= 2);

    let mut config = config();
    config.policy.allow = vec![Cidr::parse("127.0.0.0/8").unwrap()];
    let mut h = Harness::new(config);
    h.allocate();
    assert_eq!(h.create_permission(loopback), None);
    assert_eq!(
        to_peers(&h.send_indication(loopback, b"hi")),
        [(loopback, b"hi".to_vec())]
    );
    assert_eq!(h.server.stats().bytes_relayed, 2);
}

#[test]
fn the_denial_matrix() {
    let this_host_other_port = SocketAddr::new(sfu().ip(), 22);
    let special = [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "::",
        "0.0.0.0",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "10.0.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "224.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "fe80::",
        "fc00::",
        "ff02::1",
        "240.0.0.1",
        "255.255.255.255",
    ]
    .map(|raw| SocketAddr::new(raw.parse().unwrap(), 4000));
    for peer in special.into_iter().chain([this_host_other_port]) {
        for transport in [Transport::Udp, Transport::Tcp] {
            // A relay of the peer's family, so the policy (not 443) answers.
            let mut config = config();
            if !normalize(peer).is_ipv4() {
                config.relay_ip = "2001:db8::1".parse().unwrap();
            }
            let mut h = Harness::new(config);
            h.client.transport = transport;
            let what = format!("{peer} over {transport}");
            h.allocate();
            assert_eq!(
                h.create_permission(peer),
                Some(403),
                "CreatePermission {what}"
            );
            assert_eq!(
                h.channel_bind(0x4000, peer),
                Some(403),
                "ChannelBind {what}"
            );
            assert!(
                to_peers(&h.send_indication(peer, b"x")).is_empty(),
                "Send {what}"
            );
            let channel_data = [0x40, 0x00, 0x00, 0x01, b'x', 0, 0, 0];
            let (_, others) = h.send_from(h.client, &channel_data);
            assert!(to_peers(&others).is_empty(), "ChannelData {what}");
            assert_eq!(h.denials(), 3, "{what}");
            assert_eq!(h.server.stats().bytes_relayed, 0, "{what}");
        }
    }
}

#[test]
fn peer_data_comes_back_as_data_indication_then_channel_data() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    let peer = public_peer();
    // No permission yet: dropped, and not counted as a denial.
    assert!(h.peer_sends(relay, peer, b"early").is_empty());
    assert_eq!(h.denials(), 0);

    assert_eq!(h.create_permission(peer), None);
    assert_eq!(
        to_peers(&h.send_indication(peer, b"out")),
        [(peer, b"out".to_vec())]
    );
    let outputs = h.peer_sends(relay, peer, b"back");
    let [Output::ToClient { to, bytes }] = outputs.as_slice() else {
        panic!("{outputs:?}");
    };
    assert_eq!(*to, client());
    let data = decode(bytes).unwrap();
    assert_eq!(data.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    assert_eq!(xor(&data, ATTR_XOR_PEER_ADDRESS), Some(peer));
    assert_eq!(data.get(ATTR_DATA).unwrap(), b"back");

    assert_eq!(h.channel_bind(0x4001, peer), None);
    assert_eq!(
        h.peer_sends(relay, peer, b"chan"),
        [Output::ToClient {
            to: client(),
            bytes: vec![0x40, 0x01, 0x00, 0x04, b'c', b'h', b'a', b'n'],
        }]
    );
    // Over UDP ChannelData is not padded.
    assert_eq!(
        to_clients(&h.peer_sends(relay, peer, b"odd")),
        [(client(), vec![0x40, 0x01, 0x00, 0x03, b'o', b'd', b'd'])]
    );
    let (_, others) = h.send_from(client(), &[0x40, 0x01, 0x00, 0x02, b'o', b'k', 0, 0]);
    assert_eq!(to_peers(&others), [(peer, b"ok".to_vec())]);
    // A peer written as IPv4-mapped IPv6 (a dual-stack relay socket) is the same peer.
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(93, 184, 216, 34).to_ipv6_mapped()),
        7000,
    );
    assert_eq!(to_clients(&h.peer_sends(relay, mapped, b"m")).len(), 1);

    // Rebinding rules and bad numbers.
    let other: SocketAddr = "93.184.216.35:7000".parse().unwrap();
    assert_eq!(h.channel_bind(0x4001, other), Some(400));
    assert_eq!(h.channel_bind(0x4002, peer), Some(400));
    assert_eq!(h.channel_bind(0x4001, peer), None);
    assert_eq!(h.channel_bind(0x3FFF, other), Some(400));
    assert_eq!(h.channel_bind(0x7FFF, other), Some(400));
    assert_eq!(h.channel_bind(0x8000, other), Some(400));
    // RFC 5766's numbers above 0x4FFF still work (coturn's client uses them).
    assert_eq!(h.channel_bind(0x61A9, other), None);
}

#[test]
fn data_indications_built_in_place_are_what_rtc_stun_builds() {
    let peers = ["93.184.216.34:7000", "[2001:db8::7]:7000"];
    for (peer, len) in peers.iter().flat_map(|p| (0..9).map(move |len| (p, len))) {
        let peer: SocketAddr = peer.parse().unwrap();
        let payload: Vec<u8> = (1..=len).map(|b| b as u8).collect();
        // Garbage around the payload: the header and padding must overwrite it.
        let mut buf = vec![0xAA; PEER_HEADROOM + len + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + len].copy_from_slice(&payload);
        let range = data_indication_in_place(&mut buf, peer, len).expect("room enough");
        let ours = &buf[range];

        let decoded = decode(ours).expect("valid STUN");
        let mut expected = Message::new();
        expected.typ = MessageType::new(METHOD_DATA, CLASS_INDICATION);
        expected.transaction_id = decoded.transaction_id;
        expected.write_header();
        add_xor_address(&mut expected, ATTR_XOR_PEER_ADDRESS, peer).unwrap();
        expected.add(ATTR_DATA, &payload);
        assert_eq!(ours, expected.raw.as_slice(), "{peer}, {len} bytes");
    }
}

#[test]
fn relayed_channel_data_is_borrowed_from_the_message() {
    let mut h = Harness::new(config());
    h.allocate();
    let peer = public_peer();
    assert_eq!(h.channel_bind(0x4001, peer), None);
    let message = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
    let FromClient::Relay(relayed) = h.server.relay_from_client(h.now, h.client, &message) else {
        panic!("not relayed");
    };
    assert_eq!((relayed.to, relayed.bytes), (peer, &b"abc"[..]));
    // No copy: the payload is the message's own bytes.
    assert!(std::ptr::eq(relayed.bytes.as_ptr(), message[4..].as_ptr()));
    assert!(h.outputs().is_empty(), "the fast path queues nothing");
    assert_eq!(h.server.stats().bytes_relayed, 3);
    // An unbound channel is dropped there, not handed on.
    let unbound = [0x40, 0x02, 0x00, 0x01, b'x', 0, 0, 0];
    assert_eq!(
        h.server.relay_from_client(h.now, h.client, &unbound),
        FromClient::Dropped
    );
}

#[test]
fn send_indications_are_read_in_place_unless_they_carry_a_fingerprint() {
    let mut h = Harness::new(config());
    h.allocate();
    let peer = public_peer();
    assert_eq!(h.create_permission(peer), None);
    let indication = |fingerprint: bool| {
        let mut message = Message::new();
        message.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
        message.transaction_id = TransactionId::new();
        message.write_header();
        add_raw_xor_address(&mut message, peer);
        message.add(ATTR_DATA, b"hello");
        if fingerprint {
            FINGERPRINT.add_to(&mut message).unwrap();
        }
        message.raw
    };

    let plain = indication(false);
    let FromClient::Relay(relayed) = h.server.relay_from_client(h.now, h.client, &plain) else {
        panic!("not relayed");
    };
    assert_eq!((relayed.to, relayed.bytes), (peer, &b"hello"[..]));
    let data_at = plain.windows(5).position(|w| w == b"hello").unwrap();
    assert!(std::ptr::eq(
        relayed.bytes.as_ptr(),
        plain[data_at..].as_ptr()
    ));
    // Truncated or with a length that does not match: not read in place, and the full decode
    // drops it.
    for bad in [&plain[..plain.len() - 4], &plain[..19]] {
        assert_eq!(
            h.server.relay_from_client(h.now, h.client, bad),
            FromClient::Other
        );
        let (_, others) = h.send_from(h.client, bad);
        assert!(to_peers(&others).is_empty());
    }

    // With FINGERPRINT the full decode checks it: a good one is relayed, a bad one dropped.
    let mut signed = indication(true);
    assert_eq!(
        h.server.relay_from_client(h.now, h.client, &signed),
        FromClient::Other
    );
    let (_, others) = h.send_from(h.client, &signed);
    assert_eq!(to_peers(&others), [(peer, b"hello".to_vec())]);
    *signed.last_mut().unwrap() ^= 1;
    let (_, others) = h.send_from(h.client, &signed);
    assert!(to_peers(&others).is_empty());
}

#[test]
fn stream_clients_get_padded_channel_data_and_lose_their_allocation_on_close() {
    let mut h = Harness::new(config());
    h.client = tcp("203.0.113.5:40000");
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
    // XOR-MAPPED-ADDRESS is the connection's remote end.
    assert_eq!(xor(&answer, ATTR_XORMAPPED_ADDRESS), Some(h.client.addr));
    let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).unwrap();
    // The same address over UDP is another client.
    let request = h.request(METHOD_REFRESH, &[]);
    let (answers, _) = h.send_from(Client::udp(h.client.addr), &request);
    assert_eq!(error_code(&answers[0]), Some(437));

    let peer = public_peer();
    assert_eq!(h.channel_bind(0x4001, peer), None);
    assert_eq!(
        to_clients(&h.peer_sends(relay, peer, b"odd")),
        [(h.client, vec![0x40, 0x01, 0x00, 0x03, b'o', b'd', b'd', 0])]
    );
    assert_eq!(
        to_clients(&h.peer_sends(relay, peer, b"four")),
        [(
            h.client,
            vec![0x40, 0x01, 0x00, 0x04, b'f', b'o', b'u', b'r']
        )]
    );
    // A padded frame from the client is taken without its padding.
    let (_, others) = h.send_from(h.client, &[0x40, 0x01, 0x00, 0x03, b'o', b'k', b'!', 0]);
    assert_eq!(to_peers(&others), [(peer, b"ok!".to_vec())]);

    h.server.handle_client_closed(h.client);
    assert_eq!(h.outputs(), [Output::Unbind(relay)]);
    assert_eq!(h.server.stats().allocations, 0);
    assert!(h.peer_sends(relay, peer, b"late").is_empty());
    // Closing again, or a client without an allocation: nothing.
    h.server.handle_client_closed(h.client);
    h.server.handle_client_closed(tcp("198.51.100.1:1"));
    assert!(h.outputs().is_empty());
}

#[test]
fn the_allocate_answer_waits_for_the_bind() {
    let mut h = Harness::new(config());
    h.auto_bind = false;
    h.learn_nonce();
    let request = h.request(METHOD_ALLOCATE, &[udp()]);
    let (answers, others) = h.send_from(client(), &request);
    assert!(answers.is_empty(), "no answer before the relay is bound");
    let [Output::Bind(relay)] = others.as_slice() else {
        panic!("{others:?}");
    };
    let relay = *relay;
    assert_eq!(relay.ip(), h.server.config.relay_ip);
    assert_eq!(h.server.stats().allocations, 0);
    assert!(h.server.allocations(h.now).is_empty());

    // A retransmission while the bind is under way: no answer, no second relay.
    let (answers, others) = h.send_from(client(), &request);
    assert!(answers.is_empty() && others.is_empty(), "{others:?}");
    assert_eq!(h.server.allocations.len(), 1);
    // Another Allocate, or requests on the allocation, from that client: 437.
    let other = h.request(METHOD_ALLOCATE, &[udp()]);
    let (answers, _) = h.send_from(client(), &other);
    assert_eq!(error_code(&answers[0]), Some(437));
    let refresh = h.request(METHOD_REFRESH, &[]);
    let (answers, _) = h.send_from(client(), &refresh);
    assert_eq!(error_code(&answers[0]), Some(437));
    assert!(h.peer_sends(relay, public_peer(), b"x").is_empty());

    h.server.handle_bound(relay);
    let (answers, others) = h.answers_to(client());
    assert!(others.is_empty());
    assert_eq!(answers[0].typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(answers[0].transaction_id.0, request[8..20]);
    assert_eq!(xor(&answers[0], ATTR_XOR_RELAYED_ADDRESS), Some(relay));
    assert_eq!(
        xor(&answers[0], ATTR_XORMAPPED_ADDRESS),
        Some(client().addr)
    );
    assert_eq!(h.server.stats().allocations, 1);
    // Binding twice does not answer twice; the retransmission now gets the answer again.
    h.server.handle_bound(relay);
    assert!(h.outputs().is_empty());
    let (answers, others) = h.send_from(client(), &request);
    assert!(others.is_empty());
    assert_eq!(xor(&answers[0], ATTR_XOR_RELAYED_ADDRESS), Some(relay));
    // A failure report for a bound relay changes nothing.
    h.server.handle_bind_failed(relay);
    assert!(h.outputs().is_empty());
    assert_eq!(h.server.stats().allocations, 1);
}

#[test]
fn a_failed_bind_tries_the_next_port() {
    let mut h = Harness::new(config());
    h.auto_bind = false;
    h.learn_nonce();
    let request = h.request(METHOD_ALLOCATE, &[udp()]);
    let (_, others) = h.send_from(client(), &request);
    let [Output::Bind(first)] = others.as_slice() else {
        panic!("{others:?}");
    };
    let first = *first;
    h.server.handle_bind_failed(first);
    let (answers, others) = h.answers_to(client());
    assert!(answers.is_empty());
    let [Output::Bind(second)] = others.as_slice() else {
        panic!("{others:?}");
    };
    let second = *second;
    assert_ne!(first, second);
    // A late report about the first port is ignored.
    h.server.handle_bound(first);
    h.server.handle_bind_failed(first);
    assert!(h.outputs().is_empty());

    h.server.handle_bound(second);
    let (answers, _) = h.answers_to(client());
    assert_eq!(xor(&answers[0], ATTR_XOR_RELAYED_ADDRESS), Some(second));
    // The relay in use is the second one.
    let peer = public_peer();
    h.auto_bind = true;
    assert_eq!(h.create_permission(peer), None);
    assert!(h.peer_sends(first, peer, b"x").is_empty());
    assert_eq!(to_clients(&h.peer_sends(second, peer, b"x")).len(), 1);
}

#[test]
fn bind_failures_end_in_508() {
    let check = |ports: Range<u16>, attempts: usize| {
        let mut config = config();
        config.relay_ports = ports;
        let mut h = Harness::new(config);
        h.auto_bind = false;
        h.learn_nonce();
        let request = h.request(METHOD_ALLOCATE, &[udp()]);
        let (_, mut others) = h.send_from(client(), &request);
        let mut tried = Vec::new();
        loop {
            let [Output::Bind(relay)] = others.as_slice() else {
                panic!("{others:?}");
            };
            assert!(!tried.contains(relay), "{relay} tried twice");
            tried.push(*relay);
            h.server.handle_bind_failed(*relay);
            let (answers, rest) = h.answers_to(client());
            if let Some(answer) = answers.first() {
                assert_eq!(error_code(answer), Some(508));
                assert_eq!(answer.transaction_id.0, request[8..20]);
                assert!(rest.is_empty(), "nothing was bound, nothing to unbind");
                break;
            }
            others = rest;
        }
        assert_eq!(tried.len(), attempts);
        assert!(h.server.allocations.is_empty() && h.server.relays.is_empty());
        // The client may try again from scratch.
        let request = h.request(METHOD_ALLOCATE, &[udp()]);
        let (_, others) = h.send_from(client(), &request);
        assert!(matches!(others.as_slice(), [Output::Bind(_)]));
    };
    check(50000..50100, MAX_BIND_ATTEMPTS);
    check(50000..50003, 3);
}

#[test]
fn a_pending_allocation_ends_with_its_connection() {
    let mut h = Harness::new(config());
    h.auto_bind = false;
    h.client = tcp("203.0.113.5:40000");
    h.learn_nonce();
    let request = h.request(METHOD_ALLOCATE, &[udp()]);
    let (_, others) = h.send_from(h.client, &request);
    let [Output::Bind(relay)] = others.as_slice() else {
        panic!("{others:?}");
    };
    let relay = *relay;
    h.server.handle_client_closed(h.client);
    // Outputs are carried out in order: the Unbind closes what the Bind opened.
    assert_eq!(h.outputs(), [Output::Unbind(relay)]);
    h.server.handle_bound(relay);
    h.server.handle_bind_failed(relay);
    assert!(h.outputs().is_empty());
    assert!(h.server.allocations.is_empty());
}

#[test]
fn participants_relay_only_to_the_sfu() {
    let mut h = Harness::participant(config());
    let relay = h.allocate();
    let info = h.server.allocations(h.now);
    assert_eq!(info[0].kind, CredentialKind::Participant);
    assert_eq!(info[0].user, "alice");

    assert_eq!(h.create_permission(sfu()), None);
    assert_eq!(h.create_permission(public_peer()), Some(403));
    assert_eq!(h.channel_bind(0x4000, public_peer()), Some(403));
    assert_eq!(
        h.server.stats().denials,
        BTreeMap::from([(Denied::NotSfu, 2)])
    );
    assert_eq!(h.channel_bind(0x4000, sfu()), None);
    assert_eq!(
        to_peers(&h.send_indication(sfu(), b"media")),
        [(sfu(), b"media".to_vec())]
    );
    // The SFU's host has a permission now, but only the SFU's port is reachable, either way.
    let other_port = SocketAddr::new(sfu().ip(), 22);
    assert!(to_peers(&h.send_indication(other_port, b"x")).is_empty());
    assert!(h.peer_sends(relay, other_port, b"x").is_empty());
    assert_eq!(h.server.stats().denials[&Denied::NotSfu], 4);
    assert_eq!(to_clients(&h.peer_sends(relay, sfu(), b"x")).len(), 1);
    // Not even a public peer the allow-list names.
    let mut config = config();
    config.policy.allow = vec![Cidr::parse("0.0.0.0/0").unwrap()];
    let mut h = Harness::participant(config);
    h.allocate();
    assert_eq!(h.create_permission(public_peer()), Some(403));
}

#[test]
fn shared_secret_credentials_need_a_shared_secret() {
    let mut config = config();
    config.shared_secret = None;
    let mut h = Harness::new(config.clone());
    let (answer, others) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
    assert!(TextAttribute::get_from_as(&answer, ATTR_NONCE).is_ok());
    assert!(others.is_empty());
    assert_eq!(h.server.stats().auth_failures, 1);
    assert_eq!(h.server.stats().allocations, 0);
    // Participants are unaffected.
    let mut h = Harness::participant(config);
    h.allocate();
    // A participant username signed with the shared secret is refused.
    let mut h = Harness::participant(super::tests::config());
    h.password = Some(rest_password(&Secret::new(SHARED), &h.username));
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
    assert_eq!(h.server.stats().auth_failures, 1);
}

#[test]
fn sfu_routes_translate_both_ways() {
    let local: SocketAddr = "192.168.1.10:8882".parse().unwrap();
    let mut config = config();
    config.sfu_routes = vec![(sfu(), local)];
    let mut h = Harness::participant(config);
    let relay = h.allocate();
    assert_eq!(h.create_permission(sfu()), None);
    // Out: to the SFU's local socket.
    let outputs = h.send_indication(sfu(), b"out");
    assert_eq!(
        outputs,
        [Output::ToPeer {
            relay,
            to: local,
            bytes: b"out".to_vec()
        }]
    );
    // In: from the local socket, as the advertised address.
    let outputs = h.peer_sends(relay, local, b"in");
    let [(_, bytes)] = to_clients(&outputs).try_into().unwrap();
    let data = decode(&bytes).unwrap();
    assert_eq!(xor(&data, ATTR_XOR_PEER_ADDRESS), Some(sfu()));
    // Channels match too, both ways.
    assert_eq!(h.channel_bind(0x4000, sfu()), None);
    assert_eq!(
        to_clients(&h.peer_sends(relay, local, b"ch")),
        [(client(), vec![0x40, 0x00, 0x00, 0x02, b'c', b'h'])]
    );
    let (_, others) = h.send_from(client(), &[0x40, 0x00, 0x00, 0x02, b'o', b'k', 0, 0]);
    assert_eq!(to_peers(&others), [(local, b"ok".to_vec())]);
    // The local address itself is no SFU address for a client (a private address, and not
    // what participants may reach).
    assert_eq!(h.create_permission(local), Some(403));
    assert_eq!(h.denials(), 1);

    // Without a route, the advertised address is used as it is.
    let mut h = Harness::participant(super::tests::config());
    let relay = h.allocate();
    assert_eq!(h.create_permission(sfu()), None);
    assert_eq!(
        to_peers(&h.send_indication(sfu(), b"out")),
        [(sfu(), b"out".to_vec())]
    );
    assert!(h.peer_sends(relay, local, b"in").is_empty());
    assert_eq!(to_clients(&h.peer_sends(relay, sfu(), b"in")).len(), 1);
}

#[test]
fn the_bandwidth_cap_drops_and_counts() {
    let mut config = config();
    config.max_allocation_bitrate = 8_000; // 1000 payload bytes a second
    let mut h = Harness::new(config);
    let relay = h.allocate();
    let peer = public_peer();
    assert_eq!(h.create_permission(peer), None);
    let chunk = [7u8; 200];
    let sent = (0..6)
        .filter(|_| !to_peers(&h.send_indication(peer, &chunk)).is_empty())
        .count();
    assert_eq!(sent, 5, "a second's worth passes");
    assert_eq!(h.server.stats().dropped_over_bandwidth, 1);
    // Both directions draw from the same budget.
    assert!(h.peer_sends(relay, peer, &chunk).is_empty());
    assert_eq!(h.server.stats().dropped_over_bandwidth, 2);
    // Half a second refills half of it.
    h.now += Duration::from_millis(500);
    assert_eq!(to_clients(&h.peer_sends(relay, peer, &chunk)).len(), 1);
    assert_eq!(to_peers(&h.send_indication(peer, &chunk)).len(), 1);
    assert!(to_peers(&h.send_indication(peer, &chunk)).is_empty());
    let stats = h.server.stats();
    assert_eq!(stats.dropped_over_bandwidth, 3);
    assert_eq!(stats.bytes_relayed, 7 * 200);
    assert_eq!(h.server.allocations(h.now)[0].bytes, 7 * 200);
    // Other allocations have their own budget.
    let mut other = Harness::new(h.server.config.clone());
    other.allocate();
    assert_eq!(other.create_permission(peer), None);
    assert_eq!(to_peers(&other.send_indication(peer, &chunk)).len(), 1);

    // 0 is unlimited.
    let mut config = super::tests::config();
    config.max_allocation_bitrate = 0;
    let mut h = Harness::new(config);
    h.allocate();
    assert_eq!(h.create_permission(peer), None);
    let big = vec![1u8; 60_000];
    for _ in 0..100 {
        assert_eq!(to_peers(&h.send_indication(peer, &big)).len(), 1);
    }
    assert_eq!(h.server.stats().dropped_over_bandwidth, 0);
}

#[test]
fn error_answers_to_udp_sources_are_rate_limited() {
    let mut h = Harness::new(config());
    let flood = h.request(METHOD_ALLOCATE, &[udp()]);
    let attacker = Client::udp("198.51.100.9:1234".parse().unwrap());
    let answered = (0..1000)
        .filter(|_| !h.send_from(attacker, &flood).0.is_empty())
        .count();
    assert_eq!(answered as u64, ANSWER_RATE_PER_SOURCE);
    assert_eq!(
        h.server.stats().errors_suppressed,
        1000 - ANSWER_RATE_PER_SOURCE
    );
    // Any port of that address is the same source; Binding counts too.
    let other_port = Client::udp("198.51.100.9:999".parse().unwrap());
    assert!(h.send_from(other_port, &flood).0.is_empty());
    let binding = crate::net::stun::binding_request(&[3; 12]);
    assert!(h.send_from(attacker, &binding).0.is_empty());
    // Others are answered.
    let (answers, _) = h.send_from(Client::udp("198.51.100.10:1".parse().unwrap()), &flood);
    assert_eq!(answers.len(), 1);
    // IPv6 sources are counted per /64.
    for i in 0..ANSWER_RATE_PER_SOURCE {
        let addr = SocketAddr::new(format!("2001:db8:1:2::{i:x}").parse().unwrap(), 1);
        assert_eq!(h.send_from(Client::udp(addr), &flood).0.len(), 1);
    }
    let same_64 = Client::udp("[2001:db8:1:2:ffff::1]:1".parse().unwrap());
    assert!(h.send_from(same_64, &flood).0.is_empty());
    // Streams are never limited: their source cannot be spoofed.
    let stream = tcp("198.51.100.9:1235");
    for _ in 0..1000 {
        assert_eq!(h.send_from(stream, &flood).0.len(), 1);
    }
    // The budget comes back with time.
    h.now += Duration::from_millis(100);
    let answered = (0..10)
        .filter(|_| !h.send_from(attacker, &flood).0.is_empty())
        .count();
    assert_eq!(answered, 2);
}

#[test]
fn answers_to_authenticated_requests_are_never_limited() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    let garbage = h.request(METHOD_REFRESH, &[(ATTR_LIFETIME, vec![1])]);
    for _ in 0..100 {
        h.send_from(client(), &garbage);
    }
    assert!(h.server.stats().errors_suppressed > 0);
    // Successful requests are answered; so is the data path.
    assert_eq!(h.create_permission(public_peer()), None);
    let (answer, _) = h.call(METHOD_REFRESH, &[]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(
        to_clients(&h.peer_sends(relay, public_peer(), b"x")).len(),
        1
    );
    // Authenticated errors are errors.
    let suppressed = h.server.stats().errors_suppressed;
    let request = h.request(
        METHOD_CREATE_PERMISSION,
        &[peer_attr("10.0.0.1:1".parse().unwrap())],
    );
    let (answers, _) = h.send_from(client(), &request);
    assert!(answers.is_empty());
    assert_eq!(h.server.stats().errors_suppressed, suppressed + 1);
}

#[test]
fn the_rate_limiter_stays_small_under_a_spoofed_flood() {
    let mut h = Harness::new(config());
    let flood = h.request(METHOD_ALLOCATE, &[udp()]);
    let mut rng = Rng(0xf100_d5ee_d000_0001);
    let mut answered = 0u64;
    for round in 0..5u64 {
        for _ in 0..20_000 {
            let ip = Ipv4Addr::from(rng.next() as u32);
            let from = Client::udp(SocketAddr::new(IpAddr::V4(ip), 1));
            answered += h.send_from(from, &flood).0.len() as u64;
        }
        assert!(h.server.limiter.sources.len() <= ANSWER_SOURCES_TRACKED);
        // No more than the total budget, a burst plus what a second refills.
        assert!(answered <= ANSWER_RATE_TOTAL * (round + 1), "{answered}");
        h.now += Duration::from_secs(1);
    }
    assert!(answered >= ANSWER_RATE_TOTAL * 4, "{answered}");
    assert_eq!(h.server.stats().errors_suppressed, 100_000 - answered);
    // A legitimate client is still served once the burst has passed.
    h.now += Duration::from_secs(1);
    h.allocate();
}

#[test]
fn address_families() {
    let family = |byte: u8| (ATTR_REQUESTED_ADDRESS_FAMILY, vec![byte, 0, 0, 0]);
    let check = |relay_ip: &str, attribute: (AttrType, Vec<u8>), expected: Option<u16>| {
        let mut config = config();
        config.relay_ip = relay_ip.parse().unwrap();
        let mut h = Harness::new(config);
        let (answer, _) = h.call(METHOD_ALLOCATE, &[udp(), attribute.clone()]);
        assert_eq!(error_code(&answer), expected, "{relay_ip} {attribute:?}");
        if expected.is_none() {
            let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).unwrap();
            assert_eq!(relay.ip(), h.server.config.relay_ip);
        }
    };
    check("192.0.2.1", family(0x01), None);
    check("192.0.2.1", family(0x02), Some(440));
    check("2001:db8::1", family(0x02), None);
    check("2001:db8::1", family(0x01), Some(440));
    check("192.0.2.1", family(0x03), Some(440));
    check(
        "192.0.2.1",
        (ATTR_REQUESTED_ADDRESS_FAMILY, vec![0x01]),
        Some(400),
    );

    // Peers of the other family: 443, and Send drops them.
    let v6_peer: SocketAddr = "[2606:4700::1111]:3478".parse().unwrap();
    let mut h = Harness::new(config());
    h.allocate();
    assert_eq!(h.create_permission(v6_peer), Some(443));
    assert_eq!(h.channel_bind(0x4000, v6_peer), Some(443));
    assert!(to_peers(&h.send_indication(v6_peer, b"x")).is_empty());
    assert_eq!(h.denials(), 0);
    // IPv4-mapped IPv6 is IPv4: allowed when public, and sent to as IPv4.
    let mapped: SocketAddr = "[::ffff:93.184.216.34]:7000".parse().unwrap();
    assert_eq!(h.create_permission(mapped), None);
    assert_eq!(
        to_peers(&h.send_indication(mapped, b"m")),
        [(public_peer(), b"m".to_vec())]
    );
    // …and on an IPv6 relay an IPv4 peer is the mismatch.
    let mut config = config();
    config.relay_ip = "2001:db8::1".parse().unwrap();
    let mut h = Harness::new(config);
    h.allocate();
    assert_eq!(h.create_permission(public_peer()), Some(443));
    assert_eq!(h.create_permission(mapped), Some(443));
    assert_eq!(h.create_permission(v6_peer), None);
}

#[test]
fn status_lists_allocations_and_counts() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    let peer = public_peer();
    assert_eq!(h.create_permission(peer), None);
    assert_eq!(
        h.channel_bind(0x4000, "93.184.216.35:1".parse().unwrap()),
        None
    );
    h.send_indication(peer, b"12345");
    h.peer_sends(relay, peer, b"123");
    h.advance(Duration::from_secs(10));
    // A participant over TCP.
    h.username = participant_username(UNIX + 3600, "PA_test", "alice");
    h.client = tcp("203.0.113.6:40000");
    let second = h.allocate();

    let list = h.server.allocations(h.now);
    assert_eq!(
        list,
        [
            AllocationInfo {
                client: client(),
                user: "alice".into(),
                kind: CredentialKind::Rest,
                relay,
                age: Duration::from_secs(10),
                expires_in: Duration::from_secs(590),
                bytes: 8,
                permissions: 2,
                channels: 1,
            },
            AllocationInfo {
                client: tcp("203.0.113.6:40000"),
                user: "alice".into(),
                kind: CredentialKind::Participant,
                relay: second,
                age: Duration::ZERO,
                expires_in: Duration::from_secs(600),
                bytes: 0,
                permissions: 0,
                channels: 0,
            },
        ]
    );
    let stats = h.server.stats();
    assert_eq!(stats.allocations, 2);
    assert_eq!(stats.bytes_relayed, 8);
}

#[test]
fn refresh_with_lifetime_zero_frees_the_allocation() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    let (answer, others) = h.call(METHOD_REFRESH, &[(ATTR_LIFETIME, vec![0, 0, 0, 0])]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(others, [Output::Unbind(relay)]);
    assert_eq!(h.server.stats().allocations, 0);
    let (answer, _) = h.call(METHOD_REFRESH, &[]);
    assert_eq!(error_code(&answer), Some(437));
}

#[test]
fn stale_nonce_and_expired_username() {
    let mut config = config();
    config.nonce_lifetime = Duration::from_secs(60);
    let mut h = Harness::new(config);
    h.allocate();
    h.advance(Duration::from_secs(120));
    let request = h.request(METHOD_REFRESH, &[]);
    let (answers, _) = h.send_from(client(), &request);
    assert_eq!(error_code(&answers[0]), Some(438));
    assert!(TextAttribute::get_from_as(&answers[0], ATTR_NONCE).is_ok());
    // A forged nonce is stale too.
    h.nonce = Some(format!("{:x}-0000", UNIX + 999_999));
    let request = h.request(METHOD_REFRESH, &[]);
    let (answers, _) = h.send_from(client(), &request);
    assert_eq!(error_code(&answers[0]), Some(438));
    // A stale nonce is part of the normal flow, not an authentication failure.
    assert_eq!(h.server.stats().auth_failures, 0);

    let mut h = Harness::new(super::tests::config());
    h.username = rest_username(UNIX - 1, "alice");
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
    assert_eq!(h.server.stats().allocations, 0);
    assert_eq!(h.server.stats().auth_failures, 1);

    // A wrong password is 401 as well.
    let mut h = Harness::new(super::tests::config());
    h.password = Some("guess".into());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
    assert!(
        h.nonce.is_some(),
        "the nonce was learnt, the password still refused"
    );
    assert_eq!(h.server.stats().allocations, 0);
    assert_eq!(h.server.stats().auth_failures, 1);
}

#[test]
fn per_username_quota() {
    let mut config = config();
    config.max_allocations_per_username = 1;
    let mut h = Harness::new(config);
    h.allocate();
    let request = h.request(METHOD_ALLOCATE, &[udp()]);
    let (answers, _) = h.send_from(Client::udp("203.0.113.9:1".parse().unwrap()), &request);
    assert_eq!(error_code(&answers[0]), Some(486));
    assert_eq!(h.server.stats().quota_refusals, 1);
}

/// The quota is the identity's, not the username's: credentials minted again (a new expiry,
/// a second token) count against the same quota. Another identity is not affected.
#[test]
fn the_username_quota_binds_fresh_credentials_of_the_same_identity() {
    let mut config = config();
    config.max_allocations_per_username = 2;
    let mut h = Harness::new(config);
    let check = |h: &mut Harness, username: String, from: &str, expected: Option<u16>| {
        h.username = username;
        h.client = Client::udp(from.parse().unwrap());
        let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
        assert_eq!(error_code(&answer), expected, "{}", h.username);
    };
    for (i, from) in ["198.51.100.1:1", "198.51.100.2:1"].into_iter().enumerate() {
        let username = participant_username(
            UNIX + 600 + i as u64,
            &format!("PA_{i}"),
            "@mallory:example.org:DEV",
        );
        check(&mut h, username, from, None);
    }
    let third = participant_username(UNIX + 900, "PA_test", "@mallory:example.org:DEV");
    check(&mut h, third, "198.51.100.3:1", Some(486));
    let rest = rest_username(UNIX + 900, "@mallory:example.org:DEV");
    check(&mut h, rest, "198.51.100.4:1", None); // a REST user is another identity
    let honest = participant_username(UNIX + 600, "PA_test", "@alice:example.org:DEV");
    check(&mut h, honest, "198.51.100.5:1", None);
}

/// One client address holds at most so many allocations, whatever credentials it uses; an
/// IPv6 /64 counts as one address.
#[test]
fn per_source_quota() {
    let mut config = config();
    config.max_allocations_per_source = 2;
    let mut h = Harness::new(config);
    let mut allocate = |username: String, from: &str| {
        h.username = username;
        h.client = Client::udp(from.parse().unwrap());
        error_code(&h.call(METHOD_ALLOCATE, &[udp()]).0)
    };
    let users = ["a", "b", "c", "d", "e", "f"].map(|u| rest_username(UNIX + 600, u));
    assert_eq!(allocate(users[0].clone(), "198.51.100.1:1"), None);
    assert_eq!(allocate(users[1].clone(), "198.51.100.1:2"), None);
    assert_eq!(allocate(users[2].clone(), "198.51.100.1:3"), Some(486));
    assert_eq!(allocate(users[2].clone(), "198.51.100.2:3"), None);
    assert_eq!(allocate(users[3].clone(), "[2001:db8:1:2::1]:1"), None);
    assert_eq!(allocate(users[4].clone(), "[2001:db8:1:2::2]:1"), None);
    assert_eq!(allocate(users[5].clone(), "[2001:db8:1:2::3]:1"), Some(486));
    assert_eq!(allocate(users[5].clone(), "[2001:db8:1:3::3]:1"), None);
    assert_eq!(h.server.stats().quota_refusals, 2);
}

#[test]
fn allocations_expire() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.start + Duration::from_secs(600))
    );
    h.advance(Duration::from_secs(599));
    assert!(h.outputs().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.outputs(), [Output::Unbind(relay)]);
    assert_eq!(h.server.stats().allocations, 0);
    assert_eq!(h.server.poll_timeout(), None);
}

/// A tiny deterministic generator (xorshift), so the fuzz test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn garbage_never_panics_nor_allocates() {
    let mut h = Harness::new(config());
    // Valid-looking seeds, including authenticated ones from a different server (other secret).
    let mut seeds = vec![
        h.request(METHOD_ALLOCATE, &[udp()]),
        h.request(METHOD_REFRESH, &[(ATTR_LIFETIME, vec![0, 0, 0, 9])]),
        h.request(
            METHOD_CHANNEL_BIND,
            &[(ATTR_CHANNEL_NUMBER, vec![0x40, 0, 0, 0])],
        ),
        crate::net::stun::binding_request(&[1; 12]),
        vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4],
    ];
    h.nonce = Some(format!("{:x}-abc", UNIX + 100));
    seeds.push(h.request(METHOD_ALLOCATE, &[udp()]));
    seeds.push(h.request(METHOD_CREATE_PERMISSION, &[]));
    h.username = participant_username(UNIX + 3600, "PA_test", "mallory");
    seeds.push(h.request(
        METHOD_ALLOCATE,
        &[udp(), (ATTR_REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])],
    ));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let relay = SocketAddr::new(h.server.config.relay_ip, 50000);
    let mut answered = 0;
    for i in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let mut bytes = seed.clone();
        match rng.below(5) {
            4 => {} // as is: the full authentication path
            0 => bytes.truncate(rng.below(bytes.len() + 1)),
            1 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len());
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= 1 << rng.below(8);
                    }
                }
            }
            2 => bytes = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            _ => {
                // Keep the header, random attributes with a consistent length field.
                bytes.truncate(20);
                let extra: Vec<u8> = (0..rng.below(16) * 4).map(|_| rng.next() as u8).collect();
                bytes.extend_from_slice(&extra);
                if let Some(len) = bytes.get_mut(2..4) {
                    len.copy_from_slice(&(extra.len() as u16).to_be_bytes());
                }
            }
        }
        let transport = [Transport::Udp, Transport::Tcp, Transport::Tls][i % 3];
        let addr = SocketAddr::new("203.0.113.50".parse().unwrap(), 1000 + (i % 7) as u16);
        let from = Client { transport, addr };
        h.now += Duration::from_millis(10);
        h.server.handle_client(h.now, h.unix, from, &bytes);
        h.server.handle_peer(h.now, relay, public_peer(), &bytes);
        if i % 100 == 0 {
            h.server.handle_client_closed(from);
            h.server.handle_bound(relay);
            h.server.handle_bind_failed(relay);
        }
        while let Some(output) = h.server.poll_output() {
            answered += 1;
            assert!(
                !matches!(output, Output::Bind(_) | Output::ToPeer { .. }),
                "{output:?}"
            );
        }
    }
    assert!(h.server.allocations.is_empty());
    assert!(h.server.relays.is_empty());
    assert!(
        answered > 2000,
        "the STUN paths were reached: {answered} answers"
    );
}

#[test]
fn server_capacity_is_508() {
    let check = |config: Config| {
        let mut h = Harness::new(config);
        h.allocate();
        let request = h.request(METHOD_ALLOCATE, &[udp()]);
        let (answers, others) =
            h.send_from(Client::udp("203.0.113.9:1".parse().unwrap()), &request);
        assert_eq!(error_code(&answers[0]), Some(508));
        assert!(others.is_empty());
        assert_eq!(h.server.stats().capacity_refusals, 1);
    };
    let mut total = config();
    total.max_allocations_total = 1;
    check(total);
    let mut ports = config();
    ports.relay_ports = 50000..50001;
    check(ports);
}

#[test]
fn unknown_comprehension_required_attributes_are_420() {
    let mut h = Harness::new(config());
    let reservation_token = (AttrType(0x0022), vec![0; 8]);
    let (answer, others) = h.call(METHOD_ALLOCATE, &[udp(), reservation_token]);
    assert_eq!(error_code(&answer), Some(420));
    assert_eq!(answer.get(ATTR_UNKNOWN_ATTRIBUTES).unwrap(), [0x00, 0x22]);
    assert!(others.is_empty());
    // DONT-FRAGMENT is understood (the platform sets DF on relayed datagrams).
    let dont_fragment = (AttrType(0x001A), Vec::new());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp(), dont_fragment]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
    let mut h = Harness::new(config());
    // Comprehension-optional ones (SOFTWARE) are ignored.
    let software = (AttrType(0x8022), b"test".to_vec());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp(), software]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
}

#[test]
fn even_port_gets_an_even_port_but_no_reservation() {
    let mut h = Harness::new(config());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp(), (AttrType(0x0018), vec![0x00])]);
    let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).expect("allocated");
    assert_eq!(relay.port() % 2, 0, "{relay}");
    // The R bit asks to reserve the next port too: not offered.
    let mut h = Harness::new(config());
    let (answer, others) = h.call(METHOD_ALLOCATE, &[udp(), (AttrType(0x0018), vec![0x80])]);
    assert_eq!(error_code(&answer), Some(508));
    assert!(others.is_empty());
    assert_eq!(h.server.stats().allocations, 0);
}

#[test]
fn a_new_shared_secret_and_a_moved_public_address_apply_to_the_next_allocation() {
    let mut h = Harness::new(config());
    // The admin panel changed Synapse's secret: credentials from the old one are refused...
    h.server.set_shared_secret(Some(Secret::new("n3w-s3cret")));
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
    // ...and those from the new one accepted, on the address the public IP moved to.
    h.password = Some(rest_password(&Secret::new("n3w-s3cret"), &h.username));
    h.server
        .readdress("198.51.100.9".parse().unwrap(), vec![sfu()], Vec::new());
    let relay = h.allocate();
    assert_eq!(relay.ip(), "198.51.100.9".parse::<IpAddr>().unwrap());
    // Legacy calls turned off: REST credentials are refused.
    let mut off = Harness::new(config());
    off.server.set_shared_secret(None);
    let (answer, _) = off.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
}

/// Participant relays only ever talk to the SFU on this host: they take a port the OS chooses
/// (`BindLocal`), never one of the forwarded range, so legacy 1:1 calls keep the whole range
/// however many participants relay. Removing the `local` branch of `handle_allocate` makes the
/// participant take range ports (and, with the range full, get 508).
#[test]
fn participant_relays_do_not_draw_from_the_relay_range() {
    let mut config = config();
    config.relay_ports = 50000..50002;
    let mut h = Harness::new(config);
    let mut rest = Vec::new();
    for from in ["198.51.100.1:1", "198.51.100.2:1"] {
        h.client = Client::udp(from.parse().unwrap());
        rest.push(h.allocate().port());
    }
    assert_eq!(rest, [50000, 50001]);
    // The range is full: another REST allocation gets 508.
    h.client = Client::udp("198.51.100.3:1".parse().unwrap());
    assert_eq!(error_code(&h.call(METHOD_ALLOCATE, &[udp()]).0), Some(508));
    // Participants still get relays, each on a port of its own outside the range.
    h.username = participant_username(UNIX + 3600, "PA_a", "alice");
    let mut local = Vec::new();
    for from in ["198.51.100.4:1", "198.51.100.5:1", "198.51.100.6:1"] {
        h.client = Client::udp(from.parse().unwrap());
        local.push(h.allocate());
    }
    assert!(
        local.iter().all(|r| !(50000..50002).contains(&r.port())),
        "{local:?}"
    );
    assert_eq!(h.server.stats().allocations, 5);
    // And they relay to the SFU as before.
    assert_eq!(h.create_permission(sfu()), None);
    let sent = h.send_indication(sfu(), b"rtp");
    assert_eq!(
        sent,
        [Output::ToPeer {
            relay: local[2],
            to: sfu(),
            bytes: b"rtp".to_vec()
        }]
    );
}

/// A participant's allocations end when the SFU says its session ended (it left, or its
/// identity joined again), and its credentials allocate nothing more; another session of the
/// same identity and other participants keep theirs. Without `handle_session_ended` the
/// allocations would live until their lifetime ends, refreshed by whoever holds the
/// credentials.
#[test]
fn a_participant_session_that_ended_loses_its_allocations() {
    let mut h = Harness::new(config());
    let old = participant_username(UNIX + 3600, "PA_old", "@alice:example.org:DEV");
    let new = participant_username(UNIX + 3600, "PA_new", "@alice:example.org:DEV");
    let bob = participant_username(UNIX + 3600, "PA_bob", "@bob:example.org:DEV");
    let mut relays = BTreeMap::new();
    for (username, from) in [
        (&old, "198.51.100.1:1"),
        (&old, "198.51.100.1:2"),
        (&new, "198.51.100.2:1"),
        (&bob, "198.51.100.3:1"),
    ] {
        h.username = username.clone();
        h.client = Client::udp(from.parse().unwrap());
        relays.insert(from, h.allocate());
    }
    assert_eq!(h.server.stats().allocations, 4);

    h.server.handle_session_ended("PA_old");
    let mut closed: Vec<Output> = h.outputs();
    closed.sort_by_key(|o| format!("{o:?}"));
    let mut expected = vec![
        Output::Unbind(relays["198.51.100.1:1"]),
        Output::Unbind(relays["198.51.100.1:2"]),
    ];
    expected.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(closed, expected);
    assert_eq!(h.server.stats().allocations, 2);
    let users: Vec<String> = h
        .server
        .allocations(h.now)
        .into_iter()
        .map(|a| a.user)
        .collect();
    assert_eq!(users, ["@alice:example.org:DEV", "@bob:example.org:DEV"]);

    // The ended session's credentials are refused from now on, from anywhere.
    h.username = old.clone();
    h.client = Client::udp("198.51.100.1:1".parse().unwrap());
    assert_eq!(error_code(&h.call(METHOD_ALLOCATE, &[udp()]).0), Some(403));
    // Others are not affected, and ending an unknown or empty session changes nothing.
    h.username = bob.clone();
    h.client = Client::udp("198.51.100.3:2".parse().unwrap());
    h.allocate();
    h.server.handle_session_ended("PA_nobody");
    h.server.handle_session_ended("");
    assert!(h.outputs().is_empty());
    assert_eq!(h.server.stats().allocations, 3);
}

/// The driver's answers to `BindLocal`: a socket opened after its allocation ended is closed
/// again; a failed bind is a 508 and the allocation is gone.
#[test]
fn participant_relay_binds_answered_late_or_failed() {
    let mut h = Harness::participant(config());
    h.auto_bind = false;
    let (answers, others) = h.send_from(h.client, &h.request(METHOD_ALLOCATE, &[udp()]));
    // First the challenge.
    assert_eq!(error_code(&answers[0]), Some(401));
    assert!(others.is_empty());
    h.nonce = TextAttribute::get_from_as(&answers[0], ATTR_NONCE)
        .ok()
        .map(|n| n.text);
    let (answers, others) = h.send_from(h.client, &h.request(METHOD_ALLOCATE, &[udp()]));
    assert!(answers.is_empty(), "held until the relay is open");
    assert_eq!(
        others,
        [Output::BindLocal {
            client: h.client,
            even: false
        }]
    );
    h.server.handle_bind_local_failed(h.client);
    let (answers, _) = h.answers_to(h.client);
    assert_eq!(error_code(&answers[0]), Some(508));
    assert_eq!(h.server.stats().allocations, 0);

    let (_, others) = h.send_from(h.client, &h.request(METHOD_ALLOCATE, &[udp()]));
    assert_eq!(others.len(), 1);
    h.server.handle_client_closed(h.client);
    assert!(h.outputs().is_empty(), "no socket yet, nothing to close");
    let late: SocketAddr = "192.0.2.1:40123".parse().unwrap();
    h.server.handle_bound_local(h.client, late);
    assert_eq!(h.outputs(), [Output::Unbind(late)]);
}
