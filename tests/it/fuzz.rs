//! Deterministic mutation fuzzing of every parser that takes outside input: each must return
//! a value or an error for any bytes, never panic. Seeds are valid inputs; mutations flip,
//! insert, delete, duplicate and truncate bytes. The generator is seeded, so a failure
//! reproduces exactly.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

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
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seeds: &[&[u8]] = &[
        br#"{"room":"!r:home.example","openid_token":{"access_token":"t","matrix_server_name":"home.example"},"device_id":"D"}"#,
        br#"{"room_id":"!r:h","slot_id":"m.call#ROOM","openid_token":{"access_token":"t","matrix_server_name":"home.example"},"member":{"id":"m","claimed_user_id":"@alice:home.example","claimed_device_id":"D"},"delay_id":"x","delay_timeout":10}"#,
    ];
    let mut accepted = 0;
    fuzz("token requests", seeds, |input| {
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
