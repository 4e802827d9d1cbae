//! The client against scripted servers over UDP, TCP and TLS: the whole exchange, the answers a
//! TURN server can give, and garbage. The client against rtcbox's real TURN server runs in the
//! integration tests.

use std::sync::{Arc, Mutex};

use rtc_stun::error_code::ErrorCode;
use tokio::net::TcpListener;

use super::*;
use crate::setup::fetch::testcert::CA_PEM;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

const REALM: &str = "rtcbox.test";
const PASSWORD: &str = "correct horse";

fn relay() -> SocketAddr {
    "198.51.100.7:49170".parse().unwrap()
}

fn sfu() -> SocketAddr {
    "198.51.100.7:8882".parse().unwrap()
}

fn lan() -> SocketAddr {
    "192.168.1.20:8089".parse().unwrap()
}

/// How the scripted server behaves.
#[derive(Clone, Debug)]
enum Behaviour {
    /// A TURN server allowing `sfu()` and refusing everything else with 403.
    Good,
    /// Like `Good`, but the first authenticated request gets 438 with a new nonce.
    StaleOnce,
    /// Every answer preceded by noise: another transaction's answer, ChannelData, an indication.
    Noisy,
    /// Allocates without asking for credentials.
    Open,
    /// Refuses the authenticated Allocate with this code.
    Reject(u16),
    /// Signs its answers with another key.
    WrongKey,
    /// A success without XOR-RELAYED-ADDRESS.
    NoRelay,
    /// Never answers.
    Silent,
    /// Answers everything with these bytes.
    Fixed(Vec<u8>),
    /// The right answers, damaged by a seeded generator.
    Mangled(u64),
    /// Answers the challenge, then nothing.
    ChallengeOnly,
}

struct Fake {
    behaviour: Behaviour,
    nonce: String,
    stale_sent: bool,
    rng: u64,
    /// (method, peer) of every authenticated request.
    seen: Vec<(Method, Option<SocketAddr>)>,
}

type Shared = Arc<Mutex<Fake>>;

fn fake(behaviour: Behaviour) -> Shared {
    let rng = match behaviour {
        Behaviour::Mangled(seed) => seed | 1,
        _ => 1,
    };
    Arc::new(Mutex::new(Fake {
        behaviour,
        nonce: "nonce-1".into(),
        stale_sent: false,
        rng,
        seen: Vec::new(),
    }))
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn key(username: &str) -> [u8; 16] {
    long_term_key(username, REALM, &Secret::new(PASSWORD))
}

fn reply_to(request: &Message, class: rtc_stun::message::MessageClass) -> Message {
    let mut message = Message::new();
    message.typ = MessageType::new(request.typ.method, class);
    message.transaction_id = request.transaction_id;
    message.write_header();
    message
}

fn error(request: &Message, code: u16, with_challenge: Option<&str>) -> Message {
    let mut message = reply_to(request, CLASS_ERROR_RESPONSE);
    ErrorCodeAttribute {
        code: ErrorCode(code),
        reason: b"Scripted".to_vec(),
    }
    .add_to(&mut message)
    .unwrap();
    if let Some(nonce) = with_challenge {
        TextAttribute::new(ATTR_REALM, REALM.into())
            .add_to(&mut message)
            .unwrap();
        TextAttribute::new(ATTR_NONCE, nonce.into())
            .add_to(&mut message)
            .unwrap();
        TextAttribute::new(ATTR_SOFTWARE, "scripted-turn 1.0\u{7}".into())
            .add_to(&mut message)
            .unwrap();
    }
    message
}

fn finish(mut message: Message, key: Option<[u8; 16]>) -> Vec<u8> {
    if let Some(key) = key {
        MessageIntegrity::new_raw_integrity_with_provider(key.to_vec(), &RingCrypto)
            .add_to(&mut message)
            .unwrap();
    }
    FINGERPRINT.add_to(&mut message).unwrap();
    message.raw
}

/// The datagrams (or frames) the scripted server sends for one request from `from`.
fn answers(fake: &Shared, bytes: &[u8], from: SocketAddr) -> Vec<Vec<u8>> {
    let mut fake = fake.lock().unwrap();
    let behaviour = fake.behaviour.clone();
    match &behaviour {
        Behaviour::Silent => return Vec::new(),
        Behaviour::Fixed(bytes) => return vec![bytes.clone()],
        _ => {}
    }
    let Ok(request) = decode(bytes) else {
        return Vec::new();
    };
    let right = right_answer(&mut fake, &request, from);
    match behaviour {
        Behaviour::Noisy => {
            let mut other = request.clone();
            other.transaction_id = TransactionId([7; 12]);
            let mut data = vec![0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
            data.truncate(8);
            let mut indication = Message::new();
            indication.typ = MessageType::new(
                rtc_stun::message::METHOD_DATA,
                rtc_stun::message::CLASS_INDICATION,
            );
            indication.transaction_id = TransactionId([9; 12]);
            indication.write_header();
            vec![
                finish(error(&other, 400, None), None),
                data,
                finish(indication, None),
            ]
            .into_iter()
            .chain(right)
            .collect()
        }
        Behaviour::Mangled(_) => right
            .into_iter()
            .map(|mut answer| {
                let roll = next(&mut fake.rng);
                match roll % 4 {
                    0 => {
                        let cut = (next(&mut fake.rng) as usize) % (answer.len() + 1);
                        answer.truncate(cut);
                    }
                    1 => {
                        for _ in 0..1 + roll % 8 {
                            let at = (next(&mut fake.rng) as usize) % answer.len();
                            answer[at] ^= 1 << (next(&mut fake.rng) % 8);
                        }
                    }
                    2 if answer.len() > 24 => {
                        // A length field that lies.
                        let at = 20 + 2 + (next(&mut fake.rng) as usize) % (answer.len() - 24);
                        answer[at] = 0xFF;
                    }
                    _ => {}
                }
                answer
            })
            .collect(),
        _ => right,
    }
}

fn right_answer(fake: &mut Fake, request: &Message, from: SocketAddr) -> Vec<Vec<u8>> {
    let method = request.typ.method;
    if !request.contains(ATTR_MESSAGE_INTEGRITY) {
        if matches!(fake.behaviour, Behaviour::Open) && method == METHOD_ALLOCATE {
            let mut message = reply_to(request, CLASS_SUCCESS_RESPONSE);
            message.add(
                ATTR_XOR_RELAYED_ADDRESS,
                &xor_address(relay(), &request.transaction_id.0),
            );
            return vec![finish(message, None)];
        }
        let nonce = fake.nonce.clone();
        return vec![finish(error(request, 401, Some(&nonce)), None)];
    }
    if matches!(fake.behaviour, Behaviour::ChallengeOnly) {
        return Vec::new();
    }
    let text = |typ| {
        TextAttribute::get_from_as(request, typ)
            .map(|a| a.text)
            .unwrap_or_default()
    };
    let username = text(ATTR_USERNAME);
    let mut checked = request.clone();
    if text(ATTR_REALM) != REALM || !integrity_ok(&mut checked, &key(&username)) {
        let nonce = fake.nonce.clone();
        return vec![finish(error(request, 401, Some(&nonce)), None)];
    }
    if matches!(fake.behaviour, Behaviour::StaleOnce) && !fake.stale_sent {
        fake.stale_sent = true;
        fake.nonce = "nonce-2".into();
        return vec![finish(error(request, 438, Some("nonce-2")), None)];
    }
    if text(ATTR_NONCE) != fake.nonce {
        let nonce = fake.nonce.clone();
        return vec![finish(error(request, 438, Some(&nonce)), None)];
    }
    let peer = request
        .get(ATTR_XOR_PEER_ADDRESS)
        .ok()
        .and_then(|v| parse_xor_address(&v, &request.transaction_id.0));
    fake.seen.push((method, peer));
    let sign = match fake.behaviour {
        Behaviour::WrongKey => key("someone else"),
        _ => key(&username),
    };
    let tid = request.transaction_id.0;
    let message = if method == METHOD_ALLOCATE {
        if let Behaviour::Reject(code) = fake.behaviour {
            error(request, code, None)
        } else {
            let mut message = reply_to(request, CLASS_SUCCESS_RESPONSE);
            if !matches!(fake.behaviour, Behaviour::NoRelay) {
                message.add(ATTR_XOR_RELAYED_ADDRESS, &xor_address(relay(), &tid));
            }
            message.add(ATTR_XORMAPPED_ADDRESS, &xor_address(from, &tid));
            message.add(ATTR_LIFETIME, &600u32.to_be_bytes());
            message
        }
    } else if method == METHOD_CREATE_PERMISSION {
        if peer == Some(sfu()) {
            reply_to(request, CLASS_SUCCESS_RESPONSE)
        } else {
            error(request, 403, None)
        }
    } else {
        reply_to(request, CLASS_SUCCESS_RESPONSE)
    };
    vec![finish(message, Some(sign))]
}

async fn udp_server(fake: Shared) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            for answer in answers(&fake, &buf[..n], from) {
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    addr
}

/// Serves STUN framed by its length on every accepted stream.
async fn serve_stream(mut io: impl Stream, fake: Shared, from: SocketAddr) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        while let Ok(Some(length)) = frame_length(&buffer) {
            if buffer.len() < length {
                break;
            }
            let rest = buffer.split_off(length);
            let request = std::mem::replace(&mut buffer, rest);
            for answer in answers(&fake, &request, from) {
                if io.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn tcp_server(fake: Shared) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            tokio::spawn(serve_stream(stream, fake.clone(), from));
        }
    });
    addr
}

async fn tls_server(fake: Shared) -> SocketAddr {
    let acceptor = crate::setup::fetch::testcert::localhost_acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let fake = fake.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve_stream(tls, fake, from).await;
                }
            });
        }
    });
    addr
}

fn connector(trust_test_ca: bool) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if trust_test_ca {
        for cert in CertificateDer::pem_slice_iter(CA_PEM) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn spec(target: SocketAddr, dial: Dial) -> ProbeSpec {
    ProbeSpec {
        target,
        dial,
        username: "1999999999:sfu:rtcbox-verify".into(),
        password: Secret::new(PASSWORD),
        allowed_peer: Some(sfu()),
        denied_peer: Some(lan()),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn the_good_outcome(report: &ProbeReport) {
    let allocated = report.outcome.as_ref().expect("an allocation");
    assert_eq!(allocated.relayed, relay());
    assert!(allocated.mapped.is_some_and(|m| m.ip().is_loopback()));
    assert_eq!(allocated.allowed, Some((sfu(), Answer::Success)));
    assert_eq!(
        allocated.denied,
        Some((
            lan(),
            Answer::Error {
                code: 403,
                reason: "Scripted".into()
            }
        ))
    );
    assert_eq!(allocated.released, Answer::Success);
    assert_eq!(report.software.as_deref(), Some("scripted-turn 1.0"));
}

#[tokio::test]
async fn the_whole_exchange_over_udp_tcp_and_tls() {
    let shared = fake(Behaviour::Good);
    let udp = udp_server(shared.clone()).await;
    let report = probe(&spec(udp, Dial::Udp), soon()).await;
    assert_eq!((report.transport, report.target), (Transport::Udp, udp));
    the_good_outcome(&report);
    let seen = std::mem::take(&mut shared.lock().unwrap().seen);
    assert_eq!(
        seen,
        [
            (METHOD_ALLOCATE, None),
            (METHOD_CREATE_PERMISSION, Some(sfu())),
            (METHOD_CREATE_PERMISSION, Some(lan())),
            (METHOD_REFRESH, None),
        ]
    );

    let tcp = tcp_server(fake(Behaviour::Good)).await;
    let report = probe(&spec(tcp, Dial::Tcp), soon()).await;
    assert_eq!(report.transport, Transport::Tcp);
    the_good_outcome(&report);

    let tls = tls_server(fake(Behaviour::Good)).await;
    let dial = Dial::Tls {
        connector: connector(true),
        server_name: "localhost".into(),
    };
    let report = probe(&spec(tls, dial), soon()).await;
    assert_eq!(report.transport, Transport::Tls);
    the_good_outcome(&report);
}

#[tokio::test]
async fn an_untrusted_certificate_is_told_from_a_dead_port() {
    let tls = tls_server(fake(Behaviour::Good)).await;
    let untrusted = Dial::Tls {
        connector: connector(false),
        server_name: "localhost".into(),
    };
    let report = probe(&spec(tls, untrusted), soon()).await;
    match report.outcome {
        Err(ProbeError::Untrusted(why)) => assert!(why.contains("self-signed"), "{why}"),
        other => panic!("{other:?}"),
    }
    let wrong_name = Dial::Tls {
        connector: connector(true),
        server_name: "rtc.example.org".into(),
    };
    let report = probe(&spec(tls, wrong_name), soon()).await;
    assert!(
        matches!(report.outcome, Err(ProbeError::Untrusted(_))),
        "{report:?}"
    );

    // Plain TURN on the TLS port: not a certificate problem.
    let plain = tcp_server(fake(Behaviour::Good)).await;
    let dial = Dial::Tls {
        connector: connector(true),
        server_name: "localhost".into(),
    };
    let report = probe(&spec(plain, dial), soon()).await;
    assert!(
        matches!(report.outcome, Err(ProbeError::Tls(_))),
        "{report:?}"
    );

    // Nothing listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    for dial in [
        Dial::Tcp,
        Dial::Tls {
            connector: connector(true),
            server_name: "localhost".into(),
        },
    ] {
        let report = probe(&spec(closed, dial), soon()).await;
        assert_eq!(report.outcome, Err(ProbeError::Refused));
    }
}

#[tokio::test]
async fn udp_port_unreachable_and_silence() {
    let closed = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let started = std::time::Instant::now();
    let report = probe(&spec(closed, Dial::Udp), soon()).await;
    assert_eq!(report.outcome, Err(ProbeError::Refused));
    assert!(started.elapsed() <= TRANSACTION_TIMEOUT + Duration::from_millis(500));

    let silent = udp_server(fake(Behaviour::Silent)).await;
    let report = probe(&spec(silent, Dial::Udp), soon()).await;
    assert_eq!(report.outcome, Err(ProbeError::NoAnswer));

    // The deadline wins over the transaction timeout.
    let started = std::time::Instant::now();
    let report = probe(
        &spec(silent, Dial::Udp),
        Instant::now() + Duration::from_millis(300),
    )
    .await;
    assert_eq!(report.outcome, Err(ProbeError::NoAnswer));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_answers_a_server_can_give() {
    let case = async |behaviour: Behaviour, dial: Dial| {
        let shared = fake(behaviour);
        let target = match dial {
            Dial::Udp => udp_server(shared).await,
            _ => tcp_server(shared).await,
        };
        probe(&spec(target, dial), soon()).await
    };
    // A stale nonce is renewed once.
    the_good_outcome(&case(Behaviour::StaleOnce, Dial::Udp).await);
    // Noise on the way is skipped.
    the_good_outcome(&case(Behaviour::Noisy, Dial::Udp).await);
    the_good_outcome(&case(Behaviour::Noisy, Dial::Tcp).await);

    let outcome = case(Behaviour::Open, Dial::Udp).await.outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::NoChallenge(why)) if why.contains("open relay")),
        "{outcome:?}"
    );
    assert_eq!(
        case(Behaviour::Reject(486), Dial::Tcp).await.outcome,
        Err(ProbeError::Rejected {
            code: 486,
            reason: "Scripted".into()
        })
    );
    let outcome = case(Behaviour::WrongKey, Dial::Tcp).await.outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::Broken(why)) if why.contains("MESSAGE-INTEGRITY")),
        "{outcome:?}"
    );
    let outcome = case(Behaviour::NoRelay, Dial::Udp).await.outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::Broken(why)) if why.contains("XOR-RELAYED-ADDRESS")),
        "{outcome:?}"
    );
    let outcome = case(Behaviour::ChallengeOnly, Dial::Tcp).await.outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::Broken(why)) if why.contains("not the one with credentials")),
        "{outcome:?}"
    );
    let outcome = case(
        Behaviour::Fixed(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        Dial::Tcp,
    )
    .await
    .outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::NotTurn(why)) if why.contains("HTTP server")),
        "{outcome:?}"
    );
    let outcome = case(Behaviour::Fixed(vec![0x16, 3, 1, 0, 5]), Dial::Tcp)
        .await
        .outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::NotTurn(why)) if why.contains("TLS server")),
        "{outcome:?}"
    );
    let outcome = case(Behaviour::Fixed(vec![1, 1, 0, 4]), Dial::Udp)
        .await
        .outcome;
    assert!(
        matches!(&outcome, Err(ProbeError::NotTurn(_))),
        "{outcome:?}"
    );
    // The wrong password: the server keeps asking.
    let shared = fake(Behaviour::Good);
    let target = udp_server(shared).await;
    let mut wrong = spec(target, Dial::Udp);
    wrong.password = Secret::new("wrong");
    assert_eq!(
        probe(&wrong, soon()).await.outcome,
        Err(ProbeError::Rejected {
            code: 401,
            reason: "Scripted".into()
        })
    );
}

#[tokio::test]
async fn mangled_answers_never_panic_and_never_hang() {
    // Concurrently, with short deadlines: the point is that every probe returns, in time.
    let mut probes = tokio::task::JoinSet::new();
    for seed in 1..=80u64 {
        let dial = if seed % 2 == 0 { Dial::Udp } else { Dial::Tcp };
        let shared = fake(Behaviour::Mangled(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let target = match dial {
            Dial::Udp => udp_server(shared).await,
            _ => tcp_server(shared).await,
        };
        probes.spawn(async move {
            let started = std::time::Instant::now();
            let deadline = Instant::now() + Duration::from_millis(600);
            let report = probe(&spec(target, dial), deadline).await;
            assert!(started.elapsed() < Duration::from_secs(2), "seed {seed}");
            if let Ok(allocated) = &report.outcome {
                assert_eq!(allocated.relayed, relay(), "seed {seed}");
            }
        });
    }
    while let Some(done) = probes.join_next().await {
        done.unwrap();
    }
}

#[test]
fn frames_on_a_stream() {
    assert_eq!(frame_length(&[0, 1]), Ok(None));
    let mut stun = vec![0x01, 0x01, 0x00, 0x08];
    stun.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    assert_eq!(frame_length(&stun), Ok(None));
    stun.resize(28, 0);
    assert_eq!(frame_length(&stun), Ok(Some(28)));
    stun.resize(40, 0);
    assert_eq!(frame_length(&stun), Ok(Some(28)));
    assert_eq!(
        frame_length(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]),
        Ok(Some(12))
    );
    assert_eq!(frame_length(&[0x4F, 0xFF, 0x00, 0x00]), Ok(Some(4)));
    assert!(frame_length(&[0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4]).is_err());
    let http = frame_length(b"HTTP/1.1").unwrap_err();
    assert!(http.contains("HTTP server"), "{http}");
    let tls = frame_length(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]).unwrap_err();
    assert!(tls.contains("TLS server"), "{tls}");
    assert!(frame_length(&[0x80, 0, 0, 0]).is_err());
}

#[test]
fn xor_addresses_round_trip_and_garbage_is_refused() {
    let tid = [3u8; 12];
    for raw in [
        "203.0.113.9:3478",
        "[2001:db8::1]:5349",
        "[::ffff:10.0.0.1]:1",
    ] {
        let address: SocketAddr = raw.parse().unwrap();
        let expected = SocketAddr::new(address.ip().to_canonical(), address.port());
        assert_eq!(
            parse_xor_address(&xor_address(address, &tid), &tid),
            Some(expected)
        );
    }
    let good = xor_address("203.0.113.9:3478".parse().unwrap(), &tid);
    assert_eq!(parse_xor_address(&good[..7], &tid), None);
    assert_eq!(
        parse_xor_address(&[good.clone(), vec![0]].concat(), &tid),
        None
    );
    assert_eq!(parse_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &tid), None);
    assert_eq!(parse_xor_address(&[], &tid), None);
}

#[test]
fn texts_from_the_server_are_tamed() {
    assert_eq!(printable(" a\u{0}b\nc "), "abc");
    assert_eq!(printable(&"x".repeat(500)).len(), MAX_TEXT);
}

/// The client against rtcbox's own TURN server (the driver, as `app` starts it) on loopback.
mod real_server {
    use super::*;
    use crate::turn::credentials::{rest_password, rest_username};
    use crate::turn::testing::loopback_turn;

    const SFU: &str = "127.0.0.1:40404";
    /// Loopback, but not the SFU's port: refused (the admin panel's address in production).
    const NOT_THE_SFU: &str = "127.0.0.1:8089";

    fn expires() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 300
    }

    fn participant(
        server: &crate::turn::testing::LoopbackTurn,
        target: SocketAddr,
        dial: Dial,
    ) -> ProbeSpec {
        let (username, password) =
            server
                .handle
                .participant_credentials("", "rtcbox-verify", expires());
        ProbeSpec {
            target,
            dial,
            username,
            password,
            allowed_peer: Some(SFU.parse().unwrap()),
            denied_peer: Some(NOT_THE_SFU.parse().unwrap()),
        }
    }

    /// A successful probe whose relay port is inside the relay range, or (participants, whose
    /// relays the OS places) outside it.
    fn allocated(report: &ProbeReport, relay_ports: (u16, u16), inside: bool) -> &Allocated {
        let allocated = report
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{} {}: {e}", report.transport, report.target));
        assert_eq!(allocated.relayed.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (relay_ports.0..=relay_ports.1).contains(&allocated.relayed.port()),
            inside,
            "{allocated:?}"
        );
        assert_eq!(allocated.released, Answer::Success, "{report:?}");
        allocated
    }

    #[tokio::test]
    async fn participants_reach_the_sfu_and_nothing_else_over_every_transport() {
        let server = loopback_turn(vec![SFU.parse().unwrap()], None).await;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let udp = SocketAddr::new(localhost, server.port);
        let tls = SocketAddr::new(localhost, server.tls_port);
        let dials = [
            (udp, Dial::Udp),
            (udp, Dial::Tcp),
            (
                tls,
                Dial::Tls {
                    connector: server.trusting.clone(),
                    server_name: "localhost".into(),
                },
            ),
        ];
        for (target, dial) in dials {
            let report = probe(&participant(&server, target, dial), soon()).await;
            let allocated = allocated(&report, server.relay_ports, false);
            assert_eq!(
                allocated.allowed,
                Some((SFU.parse().unwrap(), Answer::Success)),
                "{report:?}"
            );
            assert!(
                matches!(
                    allocated.denied,
                    Some((peer, Answer::Error { code: 403, .. })) if peer == NOT_THE_SFU.parse().unwrap()
                ),
                "{report:?}"
            );
        }
        // Every test allocation was ended again.
        let mut left = usize::MAX;
        for _ in 0..50 {
            left = server.handle.status().stats.allocations;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, 0, "{:?}", server.handle.status().allocations);

        // Its self-signed certificate is not trusted by the system's roots: told apart.
        let untrusting = Dial::Tls {
            connector: connector(false),
            server_name: "localhost".into(),
        };
        let report = probe(&participant(&server, tls, untrusting), soon()).await;
        assert!(
            matches!(report.outcome, Err(ProbeError::Untrusted(_))),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn synapse_style_credentials_reach_the_internet_but_not_the_lan() {
        let secret = Secret::new("legacy-shared-secret-legacy-shared-secret");
        let server = loopback_turn(vec![SFU.parse().unwrap()], Some(secret.clone())).await;
        let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.port);
        let username = rest_username(expires(), "@rtcbox-verify:example.org");
        let spec = ProbeSpec {
            target,
            dial: Dial::Udp,
            password: Secret::new(rest_password(&secret, &username)),
            username,
            allowed_peer: Some("1.1.1.1:443".parse().unwrap()),
            denied_peer: Some(NOT_THE_SFU.parse().unwrap()),
        };
        let report = probe(&spec, soon()).await;
        let allocated = allocated(&report, server.relay_ports, true);
        assert_eq!(
            allocated.allowed,
            Some(("1.1.1.1:443".parse().unwrap(), Answer::Success))
        );
        assert!(
            matches!(allocated.denied, Some((_, Answer::Error { code: 403, .. }))),
            "{report:?}"
        );

        // Another secret: refused as Synapse's credentials would be.
        let mut wrong = spec.clone();
        wrong.password = Secret::new(rest_password(&Secret::new("other"), &wrong.username));
        assert!(matches!(
            probe(&wrong, soon()).await.outcome,
            Err(ProbeError::Rejected { code: 401, .. })
        ));
    }

    #[tokio::test]
    async fn without_legacy_calls_synapse_credentials_are_refused() {
        let server = loopback_turn(vec![SFU.parse().unwrap()], None).await;
        let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.port);
        let secret = Secret::new("anything");
        let username = rest_username(expires(), "@rtcbox-verify:example.org");
        let spec = ProbeSpec {
            target,
            dial: Dial::Tcp,
            password: Secret::new(rest_password(&secret, &username)),
            username,
            allowed_peer: None,
            denied_peer: None,
        };
        let outcome = probe(&spec, soon()).await.outcome;
        assert!(
            matches!(outcome, Err(ProbeError::Rejected { code: 401, .. })),
            "{outcome:?}"
        );
    }
}
