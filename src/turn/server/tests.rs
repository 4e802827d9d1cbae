use super::*;

use crate::turn::credentials::{rest_password, rest_username};
use crate::turn::policy::Cidr;
use rtc_stun::message::Method;

const UNIX: u64 = 1_700_000_000;
const REALM: &str = "turn.example.org";

fn client() -> SocketAddr {
    "203.0.113.5:5000".parse().unwrap()
}

fn public_peer() -> SocketAddr {
    "93.184.216.34:7000".parse().unwrap()
}

fn config() -> Config {
    let mut config = Config::new(REALM, Secret::new("s3cret"), "192.0.2.1".parse().unwrap());
    config.relay_ports = 50000..50010;
    config
}

/// A test client: a virtual clock, a server and the credentials a client holds.
struct Harness {
    server: Server,
    start: Instant,
    now: Instant,
    unix: u64,
    username: String,
    /// The password a client uses; the right one unless a test says otherwise.
    password: Option<String>,
    nonce: Option<String>,
}

impl Harness {
    fn new(config: Config) -> Harness {
        let start = Instant::now();
        Harness {
            server: Server::new(config),
            start,
            now: start,
            unix: UNIX,
            username: rest_username(UNIX + 3600, "alice"),
            password: None,
            nonce: None,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.unix += by.as_secs();
        self.server.handle_timeout(self.now);
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    /// Sends `bytes` from `from`, returns the decoded STUN answers and the other outputs.
    fn send_from(&mut self, from: SocketAddr, bytes: &[u8]) -> (Vec<Message>, Vec<Output>) {
        self.server.handle_client(self.now, self.unix, from, bytes);
        let mut answers = Vec::new();
        let mut others = Vec::new();
        for output in self.outputs() {
            match &output {
                Output::ToClient { to, bytes } if *to == from && bytes.first() < Some(&0x40) => {
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
                add_xor_address(&mut message, ATTR_XOR_PEER_ADDRESS, peer).unwrap();
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
                .unwrap_or_else(|| rest_password(&Secret::new("s3cret"), &self.username));
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

    /// Sends a request from `client()`, learning the nonce from a 401/438 and retrying once.
    fn call(
        &mut self,
        method: Method,
        attributes: &[(AttrType, Vec<u8>)],
    ) -> (Message, Vec<Output>) {
        for _ in 0..2 {
            let request = self.request(method, attributes);
            let (mut answers, others) = self.send_from(client(), &request);
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

    fn allocate(&mut self) -> SocketAddr {
        let (answer, others) = self.call(METHOD_ALLOCATE, &[udp()]);
        assert_eq!(
            answer.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{:?}",
            error_code(&answer)
        );
        let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).unwrap();
        assert_eq!(others, [Output::Bind(relay)]);
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

    /// A Send indication; returns what the server emits.
    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<Output> {
        let mut message = Message::new();
        message.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
        message.transaction_id = TransactionId::new();
        message.write_header();
        let (_, value) = peer_attr_for(peer, &message.transaction_id.0);
        message.add(ATTR_XOR_PEER_ADDRESS, &value);
        message.add(ATTR_DATA, data);
        self.server
            .handle_client(self.now, self.unix, client(), &message.raw);
        self.outputs()
    }
}

fn udp() -> (AttrType, Vec<u8>) {
    (ATTR_REQUESTED_TRANSPORT, vec![TRANSPORT_UDP, 0, 0, 0])
}

/// XOR-PEER-ADDRESS values depend on the transaction id; [`Harness::request`] assigns a new
/// one, so peer attributes are encoded through this marker and fixed up below.
fn peer_attr(peer: SocketAddr) -> (AttrType, Vec<u8>) {
    (PEER_MARKER, peer.to_string().into_bytes())
}

const PEER_MARKER: AttrType = AttrType(0x7FF0);

fn peer_attr_for(peer: SocketAddr, transaction_id: &[u8; 12]) -> (AttrType, Vec<u8>) {
    let mut message = Message::new();
    message.transaction_id = TransactionId(*transaction_id);
    message.write_header();
    add_xor_address(&mut message, ATTR_XOR_PEER_ADDRESS, peer).unwrap();
    (
        ATTR_XOR_PEER_ADDRESS,
        message.get(ATTR_XOR_PEER_ADDRESS).unwrap(),
    )
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
}

#[test]
fn authenticated_allocate_succeeds_with_integrity() {
    let mut h = Harness::new(config());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
    let relay = xor(&answer, ATTR_XOR_RELAYED_ADDRESS).unwrap();
    assert!((50000..50010).contains(&relay.port()));
    assert_eq!(relay.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(xor(&answer, ATTR_XORMAPPED_ADDRESS), Some(client()));
    assert_eq!(answer.get(ATTR_LIFETIME).unwrap(), 600u32.to_be_bytes());
    let key = long_term_key(
        &h.username,
        REALM,
        &Secret::new(rest_password(&Secret::new("s3cret"), &h.username)),
    );
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
    assert_eq!(xor(&answers[0], ATTR_XORMAPPED_ADDRESS), Some(client()));
}

#[test]
fn loopback_is_refused_by_default_and_allowed_by_the_allow_list() {
    let loopback: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut h = Harness::new(config());
    h.allocate();
    assert_eq!(h.create_permission(loopback), Some(403));
    assert!(to_peers(&h.send_indication(loopback, b"hi")).is_empty());
    assert!(h.server.stats().denials.values().sum::<u64>() >= 2);

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
    for raw in [
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
    ] {
        let peer = SocketAddr::new(raw.parse().unwrap(), 4000);
        let mut h = Harness::new(config());
        h.allocate();
        assert_eq!(
            h.create_permission(peer),
            Some(403),
            "CreatePermission {raw}"
        );
        assert_eq!(h.channel_bind(0x4000, peer), Some(403), "ChannelBind {raw}");
        assert!(
            to_peers(&h.send_indication(peer, b"x")).is_empty(),
            "Send {raw}"
        );
        let channel_data = [0x40, 0x00, 0x00, 0x01, b'x', 0, 0, 0];
        let (_, others) = h.send_from(client(), &channel_data);
        assert!(to_peers(&others).is_empty(), "ChannelData {raw}");
        assert_eq!(h.server.stats().denials.values().sum::<u64>(), 3, "{raw}");
    }
}

#[test]
fn peer_data_comes_back_as_data_indication_then_channel_data() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    let peer = public_peer();
    // No permission yet: dropped.
    h.server.handle_peer(h.now, relay, peer, b"early");
    assert!(h.outputs().is_empty());

    assert_eq!(h.create_permission(peer), None);
    assert_eq!(
        to_peers(&h.send_indication(peer, b"out")),
        [(peer, b"out".to_vec())]
    );
    h.server.handle_peer(h.now, relay, peer, b"back");
    let outputs = h.outputs();
    let [Output::ToClient { to, bytes }] = outputs.as_slice() else {
        panic!("{outputs:?}");
    };
    assert_eq!(*to, client());
    let data = decode(bytes).unwrap();
    assert_eq!(data.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
    assert_eq!(xor(&data, ATTR_XOR_PEER_ADDRESS), Some(peer));
    assert_eq!(data.get(ATTR_DATA).unwrap(), b"back");

    assert_eq!(h.channel_bind(0x4001, peer), None);
    h.server.handle_peer(h.now, relay, peer, b"chan");
    assert_eq!(
        h.outputs(),
        [Output::ToClient {
            to: client(),
            bytes: vec![0x40, 0x01, 0x00, 0x04, b'c', b'h', b'a', b'n'],
        }]
    );
    let (_, others) = h.send_from(client(), &[0x40, 0x01, 0x00, 0x02, b'o', b'k', 0, 0]);
    assert_eq!(to_peers(&others), [(peer, b"ok".to_vec())]);

    // Rebinding rules and bad numbers.
    let other: SocketAddr = "93.184.216.35:7000".parse().unwrap();
    assert_eq!(h.channel_bind(0x4001, other), Some(400));
    assert_eq!(h.channel_bind(0x4002, peer), Some(400));
    assert_eq!(h.channel_bind(0x4001, peer), None);
    assert_eq!(h.channel_bind(0x3FFF, other), Some(400));
    assert_eq!(h.channel_bind(0x5000, other), Some(400));
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

    let mut h = Harness::new(super::tests::config());
    h.username = rest_username(UNIX - 1, "alice");
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp()]);
    assert_eq!(error_code(&answer), Some(401));
    assert_eq!(h.server.stats().allocations, 0);

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
}

#[test]
fn per_username_quota() {
    let mut config = config();
    config.max_allocations_per_username = 1;
    let mut h = Harness::new(config);
    h.allocate();
    let request = h.request(METHOD_ALLOCATE, &[udp()]);
    let (answers, _) = h.send_from("203.0.113.9:1".parse().unwrap(), &request);
    assert_eq!(error_code(&answers[0]), Some(486));
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

#[test]
fn bind_failure_drops_the_allocation() {
    let mut h = Harness::new(config());
    let relay = h.allocate();
    h.server.handle_bind_failed(relay);
    assert_eq!(h.server.stats().allocations, 0);
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
        let from = SocketAddr::new("203.0.113.50".parse().unwrap(), 1000 + (i % 7) as u16);
        h.server.handle_client(h.now, h.unix, from, &bytes);
        h.server.handle_peer(h.now, relay, public_peer(), &bytes);
        while let Some(output) = h.server.poll_output() {
            answered += 1;
            assert!(
                !matches!(output, Output::Bind(_) | Output::ToPeer { .. }),
                "{output:?}"
            );
        }
    }
    assert_eq!(h.server.stats().allocations, 0);
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
        let (answers, others) = h.send_from("203.0.113.9:1".parse().unwrap(), &request);
        assert_eq!(error_code(&answers[0]), Some(508));
        assert!(others.is_empty());
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
    let even_port = (AttrType(0x0018), vec![0x80, 0, 0, 0]);
    let (answer, others) = h.call(METHOD_ALLOCATE, &[udp(), even_port]);
    assert_eq!(error_code(&answer), Some(420));
    assert_eq!(answer.get(ATTR_UNKNOWN_ATTRIBUTES).unwrap(), [0x00, 0x18]);
    assert!(others.is_empty());
    // Comprehension-optional ones (SOFTWARE) are ignored.
    let software = (AttrType(0x8022), b"test".to_vec());
    let (answer, _) = h.call(METHOD_ALLOCATE, &[udp(), software]);
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE);
}
