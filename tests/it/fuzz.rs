//! Deterministic mutation fuzzing of every parser that takes outside input: each must return
//! a value or an error for any bytes, never panic. Seeds are valid inputs; mutations flip,
//! insert, delete, duplicate and truncate bytes. The generator is seeded, so a failure
//! reproduces exactly. The TURN core is held to more than not panicking: garbage creates no
//! allocation, and nothing is relayed where the relay policy says no.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rtcbox::auth::delayed_leave::{DelegateLeave, Delegation, DelegationError};
use rtcbox::auth::{AuthConfig, AuthService, OpenIdVerifier};
use rtcbox::config::{ApiKey, FullAccess, PublicUrl, parse_bind};
use rtcbox::livekit::token;
use rtcbox::matrix::{AddressPolicy, ServerName, UserInfoError, parse_userinfo};
use rtcbox::net::stun;
use rtcbox::rooms::RoomRegistry;
use rtcbox::secret::Secret;

const ROUNDS: usize = 20_000;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting bytes for JSON, URLs and server names.
const DICTIONARY: &[u8] = b"{}[]\":,.@!#/\\[]0123456789-_:\x00\xff\xc3\xa9 \n\tnulltruefalse";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let byte = if rng.below(2) == 0 {
                    DICTIONARY[rng.below(DICTIONARY.len())]
                } else {
                    rng.next() as u8
                };
                data.insert(rng.below(len + 1), byte);
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(8) + 1).min(len);
                data.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(16) + 1).min(len);
                let chunk = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, chunk);
            }
            4 => data.truncate(rng.below(len + 1)),
            _ => {
                let i = rng.below(len + 1);
                data.insert(i, DICTIONARY[rng.below(DICTIONARY.len())]);
            }
        }
    }
    data
}

/// Runs `check` on ROUNDS mutations of the seeds (and on the seeds themselves).
fn fuzz(name: &str, seeds: &[&[u8]], mut check: impl FnMut(&[u8])) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    for seed in seeds {
        check(seed);
    }
    for _ in 0..ROUNDS {
        let seed = seeds[rng.below(seeds.len())];
        check(&mutate(&mut rng, seed));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn server_names() {
    fuzz(
        "server names",
        &[
            b"example.org",
            b"matrix.example.org:8448",
            b"[::1]:8448",
            b"1.2.3.4",
        ],
        |input| {
            if let Ok(name) = ServerName::parse(&text(input)) {
                // Whatever parses must render and reparse to the same thing.
                assert_eq!(ServerName::parse(name.as_str()).unwrap(), name);
                let _ = (
                    name.tls_name(),
                    name.is_localhost(),
                    name.host().to_string(),
                );
            }
        },
    );
}

#[test]
fn userinfo_answers() {
    fuzz(
        "userinfo",
        &[
            br#"{"sub":"@alice:example.org"}"#,
            br#"{"sub":"@a:b:1","x":[1,{"y":null}]}"#,
        ],
        |input| {
            if let Ok(user) = parse_userinfo(input, "example.org") {
                assert!(
                    user.starts_with('@') && user.ends_with(":example.org"),
                    "{user}"
                );
            }
        },
    );
}

#[test]
fn settings_values() {
    fuzz(
        "settings",
        &[
            b"wss://rtc.example.org/livekit/sfu",
            b"example.org, b.example *",
            b"[::]:8880",
            b":8080",
        ],
        |input| {
            let input = text(input);
            let _ = PublicUrl::parse(&input);
            let _ = FullAccess::parse(&input);
            let _ = ApiKey::parse(&input);
            let _ = parse_bind(&input);
        },
    );
}

#[test]
fn access_tokens() {
    let key = ApiKey::parse("APIfuzz").unwrap();
    let secret = Secret::new("f".repeat(32));
    let good = token::mint(
        &key,
        &secret,
        "id",
        token::VideoGrant::default(),
        std::time::Duration::from_secs(60),
        4_000_000_000,
    )
    .unwrap();
    fuzz(
        "tokens",
        &[good.as_bytes(), b"e30.e30.", b"a.b.c"],
        |input| {
            let _ = token::verify(&text(input), &key, &secret);
        },
    );
}

/// Confirms one token so fuzzed bodies can get past the OpenID step and exercise everything.
struct Fixed;

impl OpenIdVerifier for Fixed {
    fn verify<'a>(
        &'a self,
        server_name: &'a str,
        _: &'a Secret,
        _: AddressPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<String, UserInfoError>> + Send + 'a>> {
        let answer = parse_userinfo(br#"{"sub":"@alice:home.example"}"#, server_name);
        Box::pin(async move { answer })
    }
}

/// Takes every delegation.
struct AcceptAll;

impl DelegateLeave for AcceptAll {
    fn delegate(
        &self,
        _: Delegation,
    ) -> Pin<Box<dyn Future<Output = Result<(), DelegationError>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

#[test]
fn token_request_bodies() {
    let service = AuthService::new(
        AuthConfig {
            public_url: PublicUrl::parse("wss://rtc.home.example").unwrap(),
            api_key: ApiKey::parse("APIfuzz").unwrap(),
            api_secret: Secret::new("f".repeat(32)),
            full_access: FullAccess::parse("home.example").unwrap(),
            dangerous_allow_private_homeservers: false,
        },
        Arc::new(Fixed),
        Arc::new(Mutex::new(RoomRegistry::new())),
        Arc::new(AcceptAll),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seeds: &[&[u8]] = &[
        br#"{"room":"!r:home.example","openid_token":{"access_token":"t","matrix_server_name":"home.example"},"device_id":"D"}"#,
        br#"{"room_id":"!r:h","slot_id":"m.call#ROOM","openid_token":{"access_token":"t","matrix_server_name":"home.example"},"member":{"id":"m","claimed_user_id":"@alice:home.example","claimed_device_id":"D"},"delay_id":"x","delay_timeout":10}"#,
    ];
    let mut accepted = 0;
    let mut delegated = 0;
    fuzz("token requests", seeds, |input| {
        match rt.block_on(service.delegate_delayed_leave(input)) {
            Ok(()) => delegated += 1,
            Err(error) => assert!(error.status.is_client_error(), "{error:?}"),
        }
        for result in [
            rt.block_on(service.sfu_get(input)),
            rt.block_on(service.get_token(input)),
        ] {
            match result {
                Ok(response) => {
                    accepted += 1;
                    assert!(!response.jwt.is_empty());
                }
                Err(error) => assert!(
                    error.status.is_client_error() || error.status.as_u16() == 500,
                    "{error:?}"
                ),
            }
        }
    });
    assert!(accepted > 0, "the seeds must reach the success path");
    assert!(delegated > 0, "the seeds must reach the delegation");
}

#[test]
fn v1_join_requests() {
    use base64::Engine as _;
    use livekit_protocol as proto;
    use prost::Message as _;
    let inner = proto::JoinRequest {
        participant_sid: "PA_abc".into(),
        publisher_offer: Some(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".into(),
            id: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let plain = proto::WrappedJoinRequest {
        compression: 0,
        join_request: inner.clone(),
    }
    .encode_to_vec();
    let gzipped = proto::WrappedJoinRequest {
        compression: 1,
        join_request: {
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&inner).expect("in memory");
            gz.finish().expect("in memory")
        },
    }
    .encode_to_vec();
    fuzz("v1 join requests", &[&plain, &gzipped], |input| {
        // Whatever decodes re-encodes to a request that decodes the same.
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(input);
        if let Ok(request) = rtcbox::livekit::signal::decode_join_request(&encoded) {
            let again = proto::WrappedJoinRequest {
                compression: 0,
                join_request: request.encode_to_vec(),
            }
            .encode_to_vec();
            let again = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(again);
            assert_eq!(
                rtcbox::livekit::signal::decode_join_request(&again),
                Ok(request)
            );
        }
    });
}

#[test]
fn stun_messages() {
    let tid = [7u8; 12];
    let request = stun::binding_request(&tid);
    let answer = stun::binding_success(&tid, "203.0.113.9:4000".parse().unwrap());
    let answer_v6 = stun::binding_success(&tid, "[2001:db8::9]:4000".parse().unwrap());
    let source = "192.0.2.1:5000".parse().unwrap();
    fuzz("stun", &[&request, &answer, &answer_v6], |input| {
        let _ = stun::parse_binding_request(input);
        let _ = stun::parse_binding_success(input, &tid);
        if let Some(reply) = stun::answer_plain_binding(input, source) {
            // No amplification, and the reply says where the request came from.
            assert!(reply.len() <= input.len() + 32);
            let tid: [u8; 12] = input[8..20].try_into().unwrap();
            assert_eq!(stun::parse_binding_success(&reply, &tid), Ok(source));
        }
    });
}

/// DNS answers to DNS-01's queries and updates: knot's signed answer to an UPDATE (the vector
/// of `acme::dns01::tsig`'s tests), a TXT answer with compressed names, an unsigned refusal.
/// Whatever the bytes, the parser and the update check return; an update counts as applied
/// only when nothing the TSIG covers was changed.
#[test]
fn dns_answers() {
    use rtcbox::acme::dns01::{rfc2136, tsig, wire};
    use rtcbox::config::TsigAlgorithm;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
    let signed = hex(
        "7e61a800000100000000000103727463047465737400000600010a727463626f782d6b65790000fa00ff\
         00000000003d0b686d61632d7368613235360000006b12da76012c00202486ff026bba3275250309b0c9f6\
         d06e09fe9394f4a3d2b63dce02689fcb44837e6100000000",
    );
    let request_mac = hex("51cc6d24193c36aa50622ef3a009000dcafce70540cb224263045912c41f49a3");
    let key = tsig::TsigKey::new(
        wire::Name::parse("rtcbox-key.").unwrap(),
        TsigAlgorithm::HmacSha256,
        (0u8..32).collect(),
    );
    let zone = wire::Name::parse("rtc.test").unwrap();
    let name = wire::Name::parse("_acme-challenge.rtc.test").unwrap();
    let mut txt = wire::query(7, &name, wire::TYPE_TXT);
    txt[2] = 0x84;
    txt[7] = 1;
    txt[9] = 1;
    txt.extend_from_slice(&[
        0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 4, 3, b'x', b'y', b'z',
    ]);
    txt.extend_from_slice(&[0xc0, 28, 0, 6, 0, 1, 0, 0, 0, 60, 0, 0]);
    let mut refused = wire::update_txt(0x7e61, &zone, &name, "v", wire::Change::Delete);
    refused[2] |= 0x80;
    refused[3] = 5;
    let covered = wire::parse(&signed).unwrap().tsig.unwrap().start;
    let mut applied = 0;
    fuzz("dns", &[&signed, &txt, &refused], |input| {
        if let Ok(response) = wire::parse(input) {
            for record in response.answers.iter().chain(&response.authority) {
                let _ = record.txt();
                let _ = record.name.to_string();
            }
        }
        let outcome =
            rfc2136::update_outcome(input, 0x7e61, &key, &request_mac, 0x6b12_da76, &zone, &name);
        if outcome.is_ok() {
            applied += 1;
            assert_eq!(input.get(..covered), signed.get(..covered), "{input:?}");
        }
    });
    assert!(applied > 0, "the signed seed must reach the success path");
}

#[test]
fn verification_answers() {
    use rtcbox::setup::fetch::Fetched;
    use rtcbox::setup::model::SynapseVersion;
    use rtcbox::setup::verify::evaluate;

    let ours = "https://rtc.example.org/livekit/jwt";
    let expect = evaluate::WellKnownExpect {
        url: "https://example.org/.well-known/matrix/client",
        host: "example.org",
        livekit_service_url: ours,
        client_base_url: "https://matrix.example.org",
    };
    let answer = |body: &[u8]| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("access-control-allow-origin", "*".parse().unwrap());
        Ok(Fetched {
            status: 200,
            headers,
            body: body.to_vec().into(),
        })
    };
    let synapse = Some(SynapseVersion::new(1, 163, 2));
    fuzz(
        "verification answers",
        &[
            br#"{"m.homeserver":{"base_url":"https://matrix.example.org"},"org.matrix.msc4143.rtc_foci":[{"type":"livekit","livekit_service_url":"https://rtc.example.org/livekit/jwt"}]}"#,
            br#"{"versions":["v1.12"],"unstable_features":{"org.matrix.msc4140":true,"org.matrix.msc4222":true}}"#,
            br#"{"rtc_transports":[{"type":"livekit","livekit_service_url":"https://rtc.example.org/livekit/jwt"}]}"#,
            br#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
        ],
        |input| {
            let fetched = answer(input);
            let followed = evaluate::Followed {
                redirects: &[],
                result: &fetched,
            };
            let alternate = Some(("https://matrix.example.org/.well-known/matrix/client", &fetched));
            let checks = [
                evaluate::well_known(&expect, followed, alternate),
                evaluate::synapse_versions("u", &fetched, synapse),
                evaluate::rtc_transports("u", &fetched, true, synapse, ours),
            ];
            for check in checks {
                assert!(!check.detail.is_empty());
            }
        },
    );
}

/// TURN over a stream: whatever bytes arrive, the framer says Incomplete, Invalid or a length
/// that fits the buffer, the limit and the 4-byte alignment, and more bytes never change its
/// mind about a frame.
#[test]
fn turn_stream_frames() {
    use rtcbox::turn::framing::Frame;

    let (seeds, _) = turn::Seeds::new();
    let mut stream = Vec::new();
    for (_, seed) in &seeds.all {
        stream.extend_from_slice(seed);
    }
    let mut refs: Vec<&[u8]> = seeds.all.iter().map(|(_, seed)| seed.as_slice()).collect();
    refs.push(&stream);
    let mut complete = 0;
    fuzz("turn frames", &refs, |input| {
        if let Frame::Complete(_) = crate::turn_fuzzing::checked_frame(input) {
            complete += 1;
        }
    });
    assert!(complete > 1000, "the seeds are frames: {complete}");
}

/// The TURN core, fed from clients on every transport (streams through the framer) and from
/// peers: raw mutations of valid messages, mutations with a repaired FINGERPRINT (so they get
/// past the codec), and correctly signed requests with random attribute values. It never
/// panics; only signed Allocate requests create allocations; nothing reaches a peer the policy
/// refuses, and participant allocations exchange data with the SFU only.
#[test]
fn turn_core() {
    use rtcbox::turn::framing::{Frame, next_frame};
    use rtcbox::turn::server::{Output, Server};
    use rtcbox::turn::{Client, Transport};
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use turn::{Group, Made};

    let (seeds, mut server) = turn::Seeds::new();
    let client = |transport, addr: &str| Client {
        transport,
        addr: addr.parse().unwrap(),
    };
    let clients = |group: Group| match group {
        Group::Common => vec![
            client(Transport::Udp, "203.0.113.5:5000"),
            client(Transport::Tcp, "203.0.113.6:5001"),
        ],
        Group::Rest => vec![
            client(Transport::Udp, "203.0.113.5:5000"),
            client(Transport::Tcp, "203.0.113.5:5001"),
            client(Transport::Tls, "203.0.113.5:5002"),
        ],
        Group::Participant => vec![
            client(Transport::Udp, "203.0.113.6:5000"),
            client(Transport::Tcp, "203.0.113.6:5001"),
        ],
    };
    let participant =
        |c: &Client| c.addr.ip() == "203.0.113.6".parse::<std::net::IpAddr>().unwrap();
    let sfu: SocketAddr = turn::SFU.parse().unwrap();
    let sfu_local: SocketAddr = turn::SFU_LOCAL.parse().unwrap();
    let peers: [SocketAddr; 4] = [
        turn::PEER.parse().unwrap(),
        sfu_local,
        "10.0.0.1:7000".parse().unwrap(),
        SocketAddr::new(sfu.ip(), 22),
    ];
    let mut now = Instant::now();
    let mut relays: HashMap<SocketAddr, Client> = HashMap::new();
    let mut rng = Rng(0x7075_726e_0000_0001);
    let mut seen = HashMap::<&str, usize>::new();
    for round in 0..ROUNDS {
        let (group, input, made) = seeds.input(&mut rng, round);
        let genuine = made != Made::Mutated || seeds.all.iter().any(|(_, s)| *s == input);
        now += Duration::from_millis(5);
        // Carries out the outputs as a driver would; binds fail now and then.
        let drain = |server: &mut Server,
                     from: Option<Client>,
                     relays: &mut HashMap<SocketAddr, Client>,
                     rng: &mut Rng,
                     seen: &mut HashMap<&str, usize>| {
            while let Some(output) = server.poll_output() {
                match output {
                    Output::Bind(relay) => {
                        *seen.entry("bind").or_default() += 1;
                        let from = from.expect("binds follow client requests");
                        assert!(genuine, "an allocation from mutated bytes: {input:02x?}");
                        assert_eq!(input.get(..2), Some(&[0x00, 0x03][..]), "not an Allocate");
                        if rng.below(4) == 0 {
                            server.handle_bind_failed(relay);
                        } else {
                            relays.insert(relay, from);
                            server.handle_bound(relay);
                        }
                    }
                    Output::BindLocal { client, .. } => {
                        *seen.entry("bind").or_default() += 1;
                        assert_eq!(Some(client), from, "binds follow client requests");
                        assert!(genuine, "an allocation from mutated bytes: {input:02x?}");
                        assert_eq!(input.get(..2), Some(&[0x00, 0x03][..]), "not an Allocate");
                        assert!(participant(&client), "a participant relay for {client}");
                        if rng.below(4) == 0 {
                            server.handle_bind_local_failed(client);
                        } else {
                            // A port the OS chose, outside the relay range.
                            let relay = SocketAddr::new(
                                "192.0.2.1".parse().unwrap(),
                                40000 + rng.below(1000) as u16,
                            );
                            if let std::collections::hash_map::Entry::Vacant(free) =
                                relays.entry(relay)
                            {
                                free.insert(client);
                                server.handle_bound_local(client, relay);
                            }
                        }
                    }
                    Output::Unbind(relay) => {
                        relays.remove(&relay);
                    }
                    Output::ToPeer { relay, to, bytes } => {
                        *seen.entry("to peer").or_default() += 1;
                        assert!(bytes.len() <= input.len());
                        crate::turn_fuzzing::assert_may_relay(participant(&relays[&relay]), to);
                    }
                    Output::ToClient { to, .. } => {
                        *seen.entry("to client").or_default() += 1;
                        if let Some(from) = from {
                            assert_eq!(to, from, "answered someone else");
                        }
                    }
                }
            }
        };
        for from in clients(group) {
            if from.transport == Transport::Udp {
                server.handle_client(now, turn::UNIX, from, &input);
                drain(&mut server, Some(from), &mut relays, &mut rng, &mut seen);
            } else {
                let mut rest = input.as_slice();
                while let Frame::Complete(n) = next_frame(rest) {
                    server.handle_client(now, turn::UNIX, from, &rest[..n]);
                    drain(&mut server, Some(from), &mut relays, &mut rng, &mut seen);
                    rest = &rest[n..];
                }
                server.handle_client(now, turn::UNIX, from, rest);
                drain(&mut server, Some(from), &mut relays, &mut rng, &mut seen);
            }
        }
        let known: Vec<(SocketAddr, Client)> = relays.iter().map(|(r, c)| (*r, *c)).collect();
        for (relay, owner) in known {
            for peer in peers {
                server.handle_peer(now, relay, peer, &input);
                let mut answered = false;
                while let Some(output) = server.poll_output() {
                    assert!(matches!(output, Output::ToClient { to, .. } if to == owner));
                    answered = true;
                }
                if answered {
                    *seen.entry("from peer").or_default() += 1;
                    assert!(
                        !participant(&owner) || peer == sfu_local,
                        "{peer} reached a participant"
                    );
                    assert!(peer != peers[2], "{peer} reached a client");
                }
            }
        }
        if round % 1000 == 999 {
            for gone in clients(Group::Rest).into_iter().skip(1) {
                server.handle_client_closed(gone);
            }
            server.handle_timeout(now);
            drain(&mut server, None, &mut relays, &mut rng, &mut seen);
        }
        assert!(server.stats().allocations <= 5);
        let _ = server.allocations(now);
    }
    let stats = server.stats();
    for (what, least) in [
        ("bind", 20),
        ("to peer", 200),
        ("from peer", 200),
        ("to client", 2000),
    ] {
        let count = seen.get(what).copied().unwrap_or(0);
        assert!(count >= least, "{what}: {count} ({seen:?}, {stats:?})");
    }
    assert!(
        stats.auth_failures > 20 && stats.errors_suppressed > 0,
        "{stats:?}"
    );
    assert!(
        !stats.denials.is_empty() && stats.dropped_over_bandwidth > 0,
        "{stats:?}"
    );
}

/// Valid TURN traffic to mutate, and the ways to mutate it.
mod turn {
    use std::net::SocketAddr;
    use std::time::Instant;

    use rtc_stun::attributes::*;
    use rtc_stun::message::*;
    use rtcbox::turn::credentials::{participant_username, rest_username};

    use crate::turn_fuzzing::{PARTICIPANT_SECRET, SHARED_SECRET, config, learn_nonce, sign};
    use rtcbox::turn::server::{Config, Server};

    use super::{Rng, mutate};

    pub const UNIX: u64 = 1_700_000_000;
    pub use crate::turn_fuzzing::{PEER, PEERS, REALM, SFU, SFU_LOCAL};

    /// Whose traffic a seed is: sent from that group's clients.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Group {
        Common,
        Rest,
        Participant,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Made {
        Seed,
        /// Bytes changed after signing.
        Mutated,
        /// Random attribute values, signed with the right credentials.
        Signed,
    }

    /// A message before encoding.
    #[derive(Clone)]
    struct Spec {
        group: Group,
        method: Method,
        class: MessageClass,
        attributes: Vec<(AttrType, Vec<u8>)>,
        peer: Option<SocketAddr>,
    }

    pub struct Seeds {
        config: Config,
        nonce: String,
        specs: Vec<Spec>,
        pub all: Vec<(Group, Vec<u8>)>,
    }

    impl Seeds {
        /// The seeds, and the server whose nonce they carry (nonces are checked under a
        /// per-server key).
        pub fn new() -> (Seeds, Server) {
            let config = config(50000..50008);
            let mut seeds = Seeds {
                config,
                nonce: String::new(),
                specs: Vec::new(),
                all: Vec::new(),
            };
            // Learn a nonce the way a client does (over TCP, which is not rate-limited).
            let challenge = Spec {
                group: Group::Common,
                method: METHOD_ALLOCATE,
                class: CLASS_REQUEST,
                attributes: vec![(ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
                peer: None,
            };
            let challenge = seeds.build(&challenge, false);
            let mut server = Server::new(seeds.config.clone());
            seeds.nonce = learn_nonce(&mut server, Instant::now(), UNIX, &challenge);

            for (group, peer) in [(Group::Rest, PEER), (Group::Participant, SFU)] {
                let peer = Some(peer.parse().unwrap());
                let spec = |method, class, attributes: &[(AttrType, Vec<u8>)], peer| Spec {
                    group,
                    method,
                    class,
                    attributes: attributes.to_vec(),
                    peer,
                };
                seeds.specs.extend([
                    spec(
                        METHOD_ALLOCATE,
                        CLASS_REQUEST,
                        &[
                            (ATTR_REQUESTED_TRANSPORT, vec![17, 0, 0, 0]),
                            (ATTR_REQUESTED_ADDRESS_FAMILY, vec![1, 0, 0, 0]),
                            (ATTR_LIFETIME, 900u32.to_be_bytes().to_vec()),
                        ],
                        None,
                    ),
                    spec(
                        METHOD_REFRESH,
                        CLASS_REQUEST,
                        &[(ATTR_LIFETIME, 600u32.to_be_bytes().to_vec())],
                        None,
                    ),
                    spec(METHOD_CREATE_PERMISSION, CLASS_REQUEST, &[], peer),
                    spec(
                        METHOD_CHANNEL_BIND,
                        CLASS_REQUEST,
                        &[(ATTR_CHANNEL_NUMBER, vec![0x40, 0x01, 0, 0])],
                        peer,
                    ),
                    spec(
                        METHOD_SEND,
                        CLASS_INDICATION,
                        &[(ATTR_DATA, b"media".to_vec())],
                        peer,
                    ),
                ]);
            }
            let specs = seeds.specs.clone();
            seeds.all = specs
                .iter()
                .map(|spec| (spec.group, seeds.build(spec, true)))
                .collect();
            seeds.all.extend([
                (Group::Common, challenge),
                (Group::Common, rtcbox::net::stun::binding_request(&[5; 12])),
                (
                    Group::Common,
                    vec![
                        0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0,
                    ],
                ),
            ]);
            // The repaired FINGERPRINT is the codec's.
            let (_, seed) = &seeds.all[0];
            assert_eq!(refingerprint(seed[..seed.len() - 8].to_vec()), *seed);
            while server.poll_output().is_some() {}
            (seeds, server)
        }

        /// The input for one round: the seeds as they are every few hundred rounds (so the
        /// allocation paths stay reachable), otherwise one of three kinds of mutation.
        pub fn input(&self, rng: &mut Rng, round: usize) -> (Group, Vec<u8>, Made) {
            if let Some((group, seed)) = self.all.get(round % 300) {
                return (*group, seed.clone(), Made::Seed);
            }
            let (group, seed) = &self.all[rng.below(self.all.len())];
            match rng.below(3) {
                0 => (*group, mutate(rng, seed), Made::Mutated),
                1 => (*group, refingerprint(mutate(rng, seed)), Made::Mutated),
                _ => {
                    let mut spec = self.specs[rng.below(self.specs.len())].clone();
                    randomize(rng, &mut spec);
                    let signed = spec.class == CLASS_REQUEST;
                    (spec.group, self.build(&spec, signed), Made::Signed)
                }
            }
        }

        fn build(&self, spec: &Spec, signed: bool) -> Vec<u8> {
            let mut message = Message::new();
            message.typ = MessageType::new(spec.method, spec.class);
            message.transaction_id = TransactionId::new();
            message.write_header();
            for (typ, value) in &spec.attributes {
                message.add(*typ, value);
            }
            if let Some(peer) = spec.peer {
                rtc_stun::xoraddr::XorMappedAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }
                .add_to_as(&mut message, ATTR_XOR_PEER_ADDRESS)
                .unwrap();
            }
            if signed && spec.group != Group::Common {
                let (username, secret) = match spec.group {
                    Group::Participant => (
                        participant_username(UNIX + 3600, "PA_test", "alice"),
                        PARTICIPANT_SECRET,
                    ),
                    _ => (
                        rest_username(UNIX + 3600, "@alice:example.org"),
                        SHARED_SECRET,
                    ),
                };
                assert!(sign(&mut message, &username, secret, REALM, &self.nonce));
            }
            rtc_stun::fingerprint::FINGERPRINT
                .add_to(&mut message)
                .unwrap();
            message.raw
        }
    }

    /// Random values for a message's attributes, its peer, and sometimes an extra attribute.
    fn randomize(rng: &mut Rng, spec: &mut Spec) {
        for (_, value) in spec.attributes.iter_mut() {
            match rng.below(3) {
                0 => {}
                1 => *value = (0..rng.below(9)).map(|_| rng.next() as u8).collect(),
                _ => {
                    if let Some(byte) = value.get_mut(rng.below(4)) {
                        *byte = rng.next() as u8;
                    }
                }
            }
        }
        if rng.below(2) == 0 {
            spec.peer = Some(PEERS[rng.below(PEERS.len())].parse().unwrap());
        }
        if rng.below(4) == 0 {
            const TYPES: &[u16] = &[
                0x000C, 0x000D, 0x0012, 0x0013, 0x0017, 0x0018, 0x0019, 0x001A, 0x0022, 0x8000,
                0x8022, 0x7FFF,
            ];
            let value = (0..rng.below(9)).map(|_| rng.next() as u8).collect();
            spec.attributes
                .push((AttrType(TYPES[rng.below(TYPES.len())]), value));
        }
    }

    /// Mutated bytes made to pass the codec's outer checks again: padded to 4, the length field
    /// fixed, and a correct FINGERPRINT appended (after whatever the mutation left).
    fn refingerprint(mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.len() < 20 {
            return bytes;
        }
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        let Ok(length) = u16::try_from(bytes.len() - 20 + 8) else {
            return bytes;
        };
        bytes[2..4].copy_from_slice(&length.to_be_bytes());
        let fingerprint = crc32(&bytes) ^ 0x5354_554E;
        bytes.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        bytes.extend_from_slice(&fingerprint.to_be_bytes());
        bytes
    }

    /// CRC-32 (IEEE), as STUN's FINGERPRINT uses.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

#[test]
fn import_files() {
    use rtcbox::import::{Sources, coturn, env_file, livekit_yaml, plan, render, rows};
    let seeds: [&[u8]; 3] = [
        include_bytes!("../data/import/livekit.yaml"),
        include_bytes!("../data/import/lk-jwt.env"),
        include_bytes!("../data/import/turnserver.conf"),
    ];
    let no_files = |_: &str| Err::<String, String>("not here".into());
    fuzz("import files", &seeds, |bytes| {
        let text = text(bytes);
        let sources = Sources {
            livekit: livekit_yaml::parse("livekit.yaml", &text).ok(),
            env: Some(env_file::parse("jwt.env", &text)),
            coturn: Some(coturn::parse("turnserver.conf", &text)),
        };
        if let Ok(plan) = plan(&sources, &Default::default(), &no_files) {
            render(&rows(&plan, &Default::default()), &plan);
        }
    });
}

#[test]
fn backup_files() {
    use rtcbox::db::backup::Snapshot;
    let snapshot = Snapshot {
        settings: [
            ("api_key", "APIfuzzkey1234"),
            ("api_secret", "fuzz-secret-0123456789abcdef0123456789abcdef"),
            ("full_access_homeservers", "example.org"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Snapshot::default()
    };
    let file = rtcbox::backup::write(snapshot.clone(), 1_796_000_000);
    let flags = std::collections::BTreeMap::new();
    let stored = std::collections::BTreeMap::new();
    let layers = rtcbox::config::Layers {
        flags: &flags,
        env: &|_| None,
        stored: &stored,
    };
    fuzz(
        "backup files",
        &[&file, b"{}", b"{\"format\":\"rtcbox-backup\"}"],
        |bytes| {
            // Whatever gets through the checksum holds exactly what was backed up.
            if let Ok(read) = rtcbox::backup::read(bytes, &layers) {
                assert_eq!(read, snapshot);
            }
        },
    );
}
