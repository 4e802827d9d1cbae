use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, options};
use serde_json::json;
use tokio::net::TcpListener;

use super::evaluate::*;
use super::*;
use crate::setup::model::{
    Endpoints, Network, Ports, ProxyKind, PublicOrigin, Running, SynapseVersion, TlsMode,
};
use crate::sfu::SfuSockets;
use crate::turn::client::{Allocated, Answer, ProbeError, ProbeReport};

/// What a check observed: a response or why there is none.
type Observed = Result<Fetched, FetchError>;
/// name, redirects followed, answer, the same file on the client API's host, expected, needle.
type WellKnownCase<'a> = (
    &'a str,
    &'a [String],
    Observed,
    Option<Observed>,
    Status,
    &'a str,
);

const OURS: &str = "https://rtc.example.org/livekit/jwt";
const WELL_KNOWN: &str = "https://example.org/.well-known/matrix/client";
const BASE: &str = "https://matrix.example.org";

fn deployment() -> Deployment {
    Deployment {
        server_name: "example.org".into(),
        client_base_url: BASE.into(),
        synapse_version: Some(SynapseVersion::new(1, 163, 2)),
        existing_well_known: None,
        endpoints: Endpoints::OneHost(PublicOrigin {
            tls: true,
            host: "rtc.example.org".into(),
            port: None,
        }),
        tls: TlsMode::ReverseProxy {
            proxy: ProxyKind::Nginx,
        },
        network: Network {
            lan_ip: "192.168.1.20".parse().unwrap(),
            public_ip: Some("203.0.113.7".parse().unwrap()),
            follows_public_ip: false,
            ports: Ports::default(),
        },
        legacy_turn: None,
        running: Running::default(),
    }
}

fn with_proxy(proxy: ProxyKind) -> Deployment {
    Deployment {
        tls: TlsMode::ReverseProxy { proxy },
        ..deployment()
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Observed {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Ok(Fetched {
        status,
        headers: map,
        body: body.to_owned().into(),
    })
}

fn json_response(status: u16, body: serde_json::Value) -> Observed {
    response(
        status,
        &[
            ("content-type", "application/json"),
            ("access-control-allow-origin", "*"),
        ],
        &body.to_string(),
    )
}

fn refused() -> Observed {
    Err(FetchError::Refused {
        addr: "203.0.113.7:443".parse().unwrap(),
    })
}

/// The status is `expected`, and the detail or the fix mentions `needle`.
#[track_caller]
fn check(check: Check, expected: Status, needle: &str) {
    let text = format!("{}\n{}", check.detail, check.fix.as_deref().unwrap_or(""));
    assert_eq!(check.status, expected, "{text}");
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    assert_eq!(check.title, title(check.id));
    if check.status != Status::Pass {
        assert!(!check.detail.is_empty());
    }
}

fn good_well_known() -> serde_json::Value {
    json!({
        "m.homeserver": {"base_url": "https://matrix.example.org/"},
        "org.matrix.msc4143.rtc_foci": [{"type": "livekit", "livekit_service_url": "https://rtc.example.org/livekit/jwt/"}],
        "io.element.e2ee": {"default": true}
    })
}

#[test]
fn well_known_cases() {
    let expect = WellKnownExpect {
        url: WELL_KNOWN,
        host: "example.org",
        livekit_service_url: OURS,
        client_base_url: BASE,
    };
    let alt_url = "https://matrix.example.org/.well-known/matrix/client";
    let foci = |list: serde_json::Value| {
        let mut body = good_well_known();
        body["org.matrix.msc4143.rtc_foci"] = list;
        json_response(200, body)
    };
    let without = |key: &str| {
        let mut body = good_well_known();
        body.as_object_mut().unwrap().remove(key);
        json_response(200, body)
    };
    let body = good_well_known().to_string();
    let old =
        json!([{"type": "livekit", "livekit_service_url": "https://old.example.org/livekit/jwt"}]);
    let ours_second = json!([
        {"type": "livekit", "livekit_service_url": "https://old.example.org/livekit/jwt"},
        {"type": "livekit", "livekit_service_url": OURS}
    ]);
    let alias_only = {
        let mut body = good_well_known();
        let list = body
            .as_object_mut()
            .unwrap()
            .remove("org.matrix.msc4143.rtc_foci")
            .unwrap();
        body["m.rtc_foci"] = list;
        json_response(200, body)
    };
    let mut other_base = good_well_known();
    other_base["m.homeserver"]["base_url"] = json!("https://other.example.org");
    let no_redirects: &[String] = &[];
    let one_redirect = ["https://www.example.org/.well-known/matrix/client".to_owned()];

    let table: Vec<WellKnownCase> = vec![
        (
            "good",
            no_redirects,
            json_response(200, good_well_known()),
            None,
            Status::Pass,
            "lists https://rtc.example.org/livekit/jwt in rtc_foci",
        ),
        (
            "404",
            no_redirects,
            response(404, &[], "nope"),
            None,
            Status::Fail,
            "does not exist (HTTP 404)",
        ),
        (
            "published on the base host",
            no_redirects,
            response(404, &[], ""),
            Some(json_response(200, good_well_known())),
            Status::Fail,
            "published at https://matrix.example.org/.well-known/matrix/client instead",
        ),
        (
            "foci missing, present on base host",
            no_redirects,
            without("org.matrix.msc4143.rtc_foci"),
            Some(json_response(200, good_well_known())),
            Status::Fail,
            "Move the well-known to the web server for example.org",
        ),
        (
            "unreachable",
            no_redirects,
            refused(),
            None,
            Status::Fail,
            "forward TCP 443",
        ),
        (
            "no DNS",
            no_redirects,
            Err(FetchError::Dns {
                host: "example.org".into(),
                reason: "NXDOMAIN".into(),
            }),
            None,
            Status::Fail,
            "Create a DNS record for example.org",
        ),
        (
            "bad certificate",
            no_redirects,
            Err(FetchError::Certificate {
                host: "example.org".into(),
                reason: "it has expired: renew it".into(),
            }),
            None,
            Status::Fail,
            "the certificate for example.org is not trusted: it has expired",
        ),
        (
            "500",
            no_redirects,
            response(500, &[], ""),
            None,
            Status::Fail,
            "answered HTTP 500",
        ),
        (
            "too many redirects",
            no_redirects,
            response(302, &[], ""),
            None,
            Status::Fail,
            "redirects (HTTP 302)",
        ),
        (
            "text/plain",
            no_redirects,
            response(
                200,
                &[
                    ("content-type", "text/plain"),
                    ("access-control-allow-origin", "*"),
                ],
                &body,
            ),
            None,
            Status::Warn,
            "served as text/plain",
        ),
        (
            "no content type",
            no_redirects,
            response(200, &[("access-control-allow-origin", "*")], &body),
            None,
            Status::Warn,
            "without a Content-Type",
        ),
        (
            "json with charset",
            no_redirects,
            response(
                200,
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("access-control-allow-origin", "*"),
                ],
                &body,
            ),
            None,
            Status::Pass,
            "served as JSON",
        ),
        (
            "no CORS",
            no_redirects,
            response(200, &[("content-type", "application/json")], &body),
            None,
            Status::Fail,
            "has no Access-Control-Allow-Origin header",
        ),
        (
            "CORS twice",
            no_redirects,
            response(
                200,
                &[
                    ("content-type", "application/json"),
                    ("access-control-allow-origin", "*"),
                    ("access-control-allow-origin", "*"),
                ],
                &body,
            ),
            None,
            Status::Fail,
            "carries Access-Control-Allow-Origin twice",
        ),
        (
            "CORS joined",
            no_redirects,
            response(
                200,
                &[
                    ("content-type", "application/json"),
                    ("access-control-allow-origin", "*, *"),
                ],
                &body,
            ),
            None,
            Status::Fail,
            "twice",
        ),
        (
            "CORS one origin",
            no_redirects,
            response(
                200,
                &[
                    ("content-type", "application/json"),
                    ("access-control-allow-origin", "https://app.element.io"),
                ],
                &body,
            ),
            None,
            Status::Fail,
            "https://app.element.io, not *",
        ),
        (
            "not JSON",
            no_redirects,
            response(
                200,
                &[
                    ("content-type", "application/json"),
                    ("access-control-allow-origin", "*"),
                ],
                "<html>",
            ),
            None,
            Status::Fail,
            "not valid JSON",
        ),
        (
            "JSON list",
            no_redirects,
            json_response(200, json!([1])),
            None,
            Status::Fail,
            "not an object",
        ),
        (
            "no base_url",
            no_redirects,
            without("m.homeserver"),
            None,
            Status::Fail,
            "no m.homeserver.base_url",
        ),
        (
            "other base_url",
            no_redirects,
            json_response(200, other_base),
            None,
            Status::Warn,
            "m.homeserver.base_url is https://other.example.org",
        ),
        (
            "no foci",
            no_redirects,
            without("org.matrix.msc4143.rtc_foci"),
            None,
            Status::Fail,
            "has no org.matrix.msc4143.rtc_foci",
        ),
        (
            "old foci",
            no_redirects,
            foci(old),
            None,
            Status::Fail,
            "rtc_foci points at https://old.example.org/livekit/jwt instead of",
        ),
        (
            "ours second",
            no_redirects,
            foci(ours_second),
            None,
            Status::Warn,
            "before https://rtc.example.org/livekit/jwt; clients use the first",
        ),
        (
            "foci not a list",
            no_redirects,
            foci(json!({"type": "livekit"})),
            None,
            Status::Fail,
            "rtc_foci is not a list",
        ),
        (
            "no livekit focus",
            no_redirects,
            foci(json!([{"type": "nextgen"}])),
            None,
            Status::Fail,
            "lists no livekit focus",
        ),
        (
            "alias only",
            no_redirects,
            alias_only,
            None,
            Status::Warn,
            "only under m.rtc_foci",
        ),
        (
            "redirected",
            &one_redirect,
            json_response(200, good_well_known()),
            None,
            Status::Warn,
            "redirects (https://www.example.org/.well-known/matrix/client)",
        ),
    ];
    for (name, redirects, primary, alternate, status, needle) in table {
        let alternate = alternate.as_ref().map(|a| (alt_url, a));
        let result = well_known(
            &expect,
            Followed {
                redirects,
                result: &primary,
            },
            alternate,
        );
        assert_eq!(result.id, ids::WELL_KNOWN);
        assert_eq!(result.status, status, "case {name}: {}", result.detail);
        check(result, status, needle);
    }
}

#[test]
fn versions_cases() {
    let url = "https://matrix.example.org/_matrix/client/versions";
    let features = |features: serde_json::Value| {
        json_response(
            200,
            json!({"versions": ["v1.12"], "unstable_features": features}),
        )
    };
    let all =
        json!({"org.matrix.msc4140": true, "org.matrix.msc4222": true, "org.matrix.msc4143": true});
    let v = |minor| Some(SynapseVersion::new(1, minor, 0));
    let table: Vec<(Observed, Option<SynapseVersion>, Status, &str)> = vec![
        (
            features(all.clone()),
            v(163),
            Status::Pass,
            "msc4140 and org.matrix.msc4143.\norg.matrix.msc4222 (state_after in sync) is advertised as on",
        ),
        (
            features(
                json!({"org.matrix.msc4140": false, "org.matrix.msc4222": true, "org.matrix.msc4143": true}),
            ),
            v(163),
            Status::Fail,
            "`max_event_delay_duration: 24h` at the top level",
        ),
        (
            // Synapse does not advertise msc4222 even when it is on: named, not judged.
            features(json!({"org.matrix.msc4140": true, "org.matrix.msc4143": true})),
            v(163),
            Status::Pass,
            "cannot be seen from outside",
        ),
        (
            features(json!({"org.matrix.msc4140": true, "org.matrix.msc4222": true})),
            v(156),
            Status::Fail,
            "`msc4143_enabled: true`",
        ),
        (
            features(json!({"org.matrix.msc4140": true, "org.matrix.msc4222": true})),
            v(150),
            Status::Pass,
            "advertises",
        ),
        (
            features(json!({"org.matrix.msc4140": true, "org.matrix.msc4222": true})),
            None,
            Status::Pass,
            "advertises",
        ),
        (
            features(json!({"org.matrix.msc4140": "yes", "org.matrix.msc4222": true})),
            None,
            Status::Fail,
            "Delayed events",
        ),
        (
            json_response(200, json!({"versions": []})),
            None,
            Status::Fail,
            "Delayed events",
        ),
        (
            response(404, &[], ""),
            None,
            Status::Fail,
            "answered HTTP 404",
        ),
        (
            response(200, &[], "<html>"),
            None,
            Status::Fail,
            "is this a Matrix homeserver?",
        ),
        (refused(), None, Status::Fail, "cannot be fetched"),
    ];
    for (result, synapse, status, needle) in table {
        check(synapse_versions(url, &result, synapse), status, needle);
    }
}

#[test]
fn transports_cases() {
    let url =
        "https://matrix.example.org/_matrix/client/unstable/org.matrix.msc4143/rtc/transports";
    let synapse = Some(SynapseVersion::new(1, 163, 2));
    let transports = |list: serde_json::Value| json_response(200, json!({"rtc_transports": list}));
    let livekit = |u: &str| json!({"type": "livekit", "livekit_service_url": u});
    let unrecognized = json_response(
        404,
        json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
    );
    let missing_token = json_response(401, json!({"errcode": "M_MISSING_TOKEN"}));
    let unknown_token = json_response(401, json!({"errcode": "M_UNKNOWN_TOKEN"}));
    let table: Vec<(Observed, bool, Option<SynapseVersion>, Status, &str)> = vec![
        (
            transports(json!([livekit(OURS)])),
            true,
            synapse,
            Status::Pass,
            "publishes https://rtc.example.org/livekit/jwt",
        ),
        (
            transports(json!([livekit("https://rtc.example.org/livekit/jwt/")])),
            true,
            synapse,
            Status::Pass,
            "publishes",
        ),
        (
            transports(json!([livekit("https://old.example.org"), livekit(OURS)])),
            true,
            synapse,
            Status::Warn,
            "lists https://old.example.org before",
        ),
        (
            transports(json!([livekit("https://old.example.org")])),
            true,
            synapse,
            Status::Fail,
            "lists https://old.example.org instead of",
        ),
        (
            json_response(200, json!({})),
            true,
            synapse,
            Status::Fail,
            "answers 200 with no transports ({})",
        ),
        (
            transports(json!([{"type": "other"}])),
            true,
            synapse,
            Status::Fail,
            "lists no livekit transport",
        ),
        (
            unrecognized.clone(),
            false,
            synapse,
            Status::Fail,
            "HTTP 404 M_UNRECOGNIZED: the endpoint is off (msc4143_enabled is not set).",
        ),
        (
            unrecognized,
            false,
            None,
            Status::Fail,
            "or Synapse is older than 1.140.0",
        ),
        (
            missing_token,
            false,
            synapse,
            Status::Warn,
            "give an access token",
        ),
        (
            unknown_token,
            true,
            synapse,
            Status::Fail,
            "refused the access token (HTTP 401 M_UNKNOWN_TOKEN)",
        ),
        (
            response(502, &[], "bad gateway"),
            true,
            synapse,
            Status::Fail,
            "answered HTTP 502",
        ),
        (refused(), true, synapse, Status::Fail, "cannot be fetched"),
    ];
    for (result, had_token, synapse, status, needle) in table {
        let result = rtc_transports(url, &result, had_token, synapse, OURS);
        assert_eq!(result.id, ids::RTC_TRANSPORTS);
        check(result, status, needle);
    }
    check(
        transports_unavailable(Some(SynapseVersion::new(1, 139, 9))).unwrap(),
        Status::Unavailable,
        "Synapse 1.139.9 has no rtc/transports endpoint (it arrived in 1.140.0)",
    );
    assert_eq!(
        transports_unavailable(Some(SynapseVersion::new(1, 140, 0))),
        None
    );
    assert_eq!(transports_unavailable(None), None);
}

#[test]
fn healthz_cases() {
    let url = "https://rtc.example.org/livekit/jwt/healthz";
    let ok = response(200, &[("access-control-allow-origin", "*")], "");
    let cors = |values: &[&str]| {
        let headers: Vec<(&str, &str)> = values
            .iter()
            .map(|v| ("access-control-allow-origin", *v))
            .collect();
        response(200, &headers, "")
    };
    let table: Vec<(Deployment, Observed, Option<Observed>, Status, &str)> = vec![
        (
            deployment(),
            ok.clone(),
            Some(cors(&["*"])),
            Status::Pass,
            "answers 200 through the proxy",
        ),
        (deployment(), ok.clone(), None, Status::Pass, "answers 200"),
        (
            deployment(),
            response(404, &[], ""),
            None,
            Status::Fail,
            "In nginx, forward https://rtc.example.org/livekit/jwt (and everything below it) to rtcbox at http://192.168.1.20:8880",
        ),
        (
            with_proxy(ProxyKind::SynologyDsm),
            response(404, &[], ""),
            None,
            Status::Fail,
            "Synology DSM reverse proxy",
        ),
        (
            deployment(),
            response(502, &[], ""),
            None,
            Status::Fail,
            "cannot reach rtcbox",
        ),
        (
            deployment(),
            response(503, &[], ""),
            None,
            Status::Fail,
            "Point the reverse proxy at http://192.168.1.20:8880",
        ),
        (
            deployment(),
            response(401, &[], ""),
            None,
            Status::Fail,
            "HTTP 401 instead of 200",
        ),
        (
            deployment(),
            refused(),
            None,
            Status::Fail,
            "forward TCP 443",
        ),
        (
            deployment(),
            ok.clone(),
            Some(cors(&[])),
            Status::Fail,
            "preflight has no Access-Control-Allow-Origin",
        ),
        (
            deployment(),
            ok.clone(),
            Some(cors(&["*", "*"])),
            Status::Fail,
            "remove them from the reverse proxy",
        ),
        (
            deployment(),
            ok.clone(),
            Some(response(405, &[], "")),
            Status::Fail,
            "pass OPTIONS requests to rtcbox",
        ),
        (
            deployment(),
            ok,
            Some(refused()),
            Status::Warn,
            "preflight (OPTIONS) of /sfu/get failed",
        ),
    ];
    for (deployment, healthz, preflight, status, needle) in table {
        check(
            auth_healthz(&deployment, url, &healthz, preflight.as_ref()),
            status,
            needle,
        );
    }
}

#[test]
fn websocket_cases() {
    let url = "wss://rtc.example.org/livekit/sfu/rtc";
    let table: Vec<(Deployment, Observed, Status, &str)> = vec![
        (
            deployment(),
            response(101, &[("upgrade", "websocket")], ""),
            Status::Pass,
            "switches to WebSocket (101)",
        ),
        (
            deployment(),
            response(200, &[], "<html>"),
            Status::Fail,
            "proxy_set_header Upgrade $http_upgrade;",
        ),
        (
            with_proxy(ProxyKind::SynologyDsm),
            response(200, &[], ""),
            Status::Fail,
            "edit the rule for rtc.example.org → Custom Header → Create → WebSocket",
        ),
        (
            with_proxy(ProxyKind::Apache),
            response(400, &[], ""),
            Status::Fail,
            "mod_proxy_wstunnel",
        ),
        (
            with_proxy(ProxyKind::Caddy),
            response(426, &[], ""),
            Status::Fail,
            "Caddy passes WebSocket upgrades by itself",
        ),
        (
            with_proxy(ProxyKind::Traefik),
            response(200, &[], ""),
            Status::Fail,
            "Traefik",
        ),
        (
            deployment(),
            response(404, &[], "not found: /rtc needs a WebSocket upgrade"),
            Status::Fail,
            "reached rtcbox without the Upgrade headers",
        ),
        (
            deployment(),
            response(404, &[], "nginx 404"),
            Status::Fail,
            "forward https://rtc.example.org/livekit/sfu (and everything below it)",
        ),
        (
            deployment(),
            response(401, &[], "invalid authorization token"),
            Status::Fail,
            "a different LiveKit server",
        ),
        (
            deployment(),
            response(502, &[], ""),
            Status::Fail,
            "cannot reach rtcbox",
        ),
        (deployment(), refused(), Status::Fail, "cannot be reached"),
    ];
    for (deployment, result, status, needle) in table {
        check(sfu_websocket(&deployment, url, &result), status, needle);
    }
}

#[test]
fn tls_cases() {
    let ok = response(200, &[], "");
    let bad_cert = Err(FetchError::Certificate {
        host: "rtc.example.org".into(),
        reason: "it has expired: renew it".into(),
    });
    let acme = Deployment {
        tls: TlsMode::Acme {
            challenge: crate::setup::model::AcmeChallenge::Http01,
            email: "a@example.org".into(),
        },
        ..deployment()
    };
    let self_signed = Deployment {
        tls: TlsMode::SelfSigned,
        ..deployment()
    };
    let none = OwnTls::default();
    let plain = |host: &str| Deployment {
        endpoints: Endpoints::OneHost(PublicOrigin {
            tls: false,
            host: host.into(),
            port: Some(8880),
        }),
        ..deployment()
    };
    check(
        tls(&self_signed, &ok, None, &none),
        Status::Unavailable,
        "Let's Encrypt or certificate files",
    );
    check(
        tls(&deployment(), &ok, Some(&ok), &none),
        Status::Pass,
        "rtc.example.org answer over HTTPS",
    );
    check(tls(&deployment(), &ok, None, &none), Status::Pass, "trusts");
    check(
        tls(&deployment(), &ok, Some(&bad_cert), &none),
        Status::Fail,
        "Give nginx a certificate for rtc.example.org",
    );
    check(
        tls(
            &deployment(),
            &Err(FetchError::Tls {
                host: "rtc.example.org".into(),
                reason: "x".into(),
            }),
            None,
            &none,
        ),
        Status::Fail,
        "serve HTTPS",
    );
    check(
        tls(&deployment(), &refused(), Some(&ok), &none),
        Status::Unavailable,
        "could not be reached",
    );
    check(
        tls(&plain("rtc.example.org"), &ok, None, &none),
        Status::Fail,
        "http://rtc.example.org:8880 is plain HTTP",
    );
    check(
        tls(&plain("127.0.0.1"), &ok, None, &none),
        Status::Warn,
        "plain HTTP",
    );

    // rtcbox's own certificate (ACME): what it serves and what ACME does count too.
    let now = 1_800_000_000;
    let day = 86_400;
    let served = |names: &[&str], days_left: i64| crate::tls::CertificateInfo {
        source: "acme".into(),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        not_after: now + days_left * day,
        publicly_trusted: true,
    };
    let status = |state: &'static str, error: Option<&str>| crate::acme::AcmeStatus {
        state,
        next_attempt: Some(now + 600),
        last_error: error.map(str::to_owned),
        last_success: None,
        pending_dns: Vec::new(),
    };
    let own = |served: Option<crate::tls::CertificateInfo>, acme| OwnTls {
        served,
        acme: Some(acme),
        now,
    };
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(
                Some(served(&["rtc.example.org"], 80)),
                status("valid", None),
            ),
        ),
        Status::Pass,
        "rtcbox's certificate (rtc.example.org) is valid for 80 more days",
    );
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(Some(served(&["*.example.org"], 80)), status("valid", None)),
        ),
        Status::Pass,
        "answer over HTTPS",
    );
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(
                Some(served(&["rtc.example.org"], 80)),
                status(
                    "failed",
                    Some("the CA could not reach http://rtc.example.org/…"),
                ),
            ),
        ),
        Status::Fail,
        "Let's Encrypt: the CA could not reach http://rtc.example.org/…. rtcbox tries again in 10 min",
    );
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(
                Some(served(&["old.example.org"], 80)),
                status("valid", None),
            ),
        ),
        Status::Fail,
        "is for old.example.org, not rtc.example.org",
    );
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(Some(served(&["rtc.example.org"], 5)), status("valid", None)),
        ),
        Status::Warn,
        "ends in 5 days",
    );
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(
                Some(served(&["rtc.example.org"], -1)),
                status("valid", None),
            ),
        ),
        Status::Fail,
        "has expired",
    );
    let self_signed_meanwhile = crate::tls::CertificateInfo {
        source: "self-signed".into(),
        publicly_trusted: false,
        ..served(&["rtc.example.org"], 300)
    };
    check(
        tls(
            &acme,
            &bad_cert,
            None,
            &own(Some(self_signed_meanwhile), status("ordering", None)),
        ),
        Status::Fail,
        "still getting its certificate",
    );
    check(
        tls(&acme, &ok, None, &own(None, status("valid", None))),
        Status::Fail,
        "serves no certificate",
    );
    check(
        tls(
            &acme,
            &bad_cert,
            None,
            &own(
                Some(served(&["rtc.example.org"], 80)),
                status("valid", None),
            ),
        ),
        Status::Fail,
        "port 443 on your router leads to rtcbox's HTTPS port 8443",
    );
    // DNS-01 by hand: the record to create is named.
    let mut waiting = status("ordering", None);
    waiting.pending_dns.push(crate::acme::PendingRecord {
        name: "_acme-challenge.rtc.example.org".into(),
        value: "abc123".into(),
        by_hand: true,
    });
    check(
        tls(
            &acme,
            &ok,
            Some(&ok),
            &own(Some(served(&["rtc.example.org"], 80)), waiting),
        ),
        Status::Warn,
        "TXT record _acme-challenge.rtc.example.org with the value abc123",
    );
    let files = Deployment {
        tls: TlsMode::Files {
            cert: "/volume1/certs/fullchain.pem".into(),
            key: "/volume1/certs/privkey.pem".into(),
        },
        ..deployment()
    };
    check(
        tls(
            &files,
            &bad_cert,
            None,
            &own(
                Some(served(&["rtc.example.org"], 80)),
                status("valid", None),
            ),
        ),
        Status::Fail,
        "into /volume1/certs/fullchain.pem",
    );
}

#[test]
fn public_ip_cases() {
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    let advertised = ["203.0.113.7:8882".parse().unwrap()];
    let lan_only = ["192.168.1.20:8882".parse().unwrap()];
    check(
        public_ip(&Ok(public), Some(public), &advertised),
        Status::Pass,
        "sees this machine as 203.0.113.7",
    );
    check(
        public_ip(&Ok(public), Some(public), &[]),
        Status::Pass,
        "the wizard and the SFU use it",
    );
    check(
        public_ip(
            &Err("no STUN server answered (a: no answer)".into()),
            Some(public),
            &advertised,
        ),
        Status::Unavailable,
        "could not be detected: no STUN server answered (a: no answer). The wizard's public address is 203.0.113.7.",
    );
    check(
        public_ip(&Ok(public), None, &advertised),
        Status::Warn,
        "Enter 203.0.113.7 as the public address",
    );
    check(
        public_ip(
            &Ok(public),
            Some("198.51.100.1".parse().unwrap()),
            &advertised,
        ),
        Status::Fail,
        "but the wizard says 198.51.100.1",
    );
    check(
        public_ip(&Ok(public), Some(public), &lan_only),
        Status::Fail,
        "Set RTCBOX_NODE_IP=203.0.113.7",
    );
}

#[test]
fn media_cases() {
    let public: SocketAddr = "203.0.113.7:8882".parse().unwrap();
    let lan: SocketAddr = "192.168.1.20:8882".parse().unwrap();
    let mapped: Result<SocketAddr, String> = Ok("203.0.113.7:40000".parse().unwrap());
    let silent: Result<SocketAddr, String> = Err("no answer within 2 s".into());
    let probed = |r: &Result<SocketAddr, String>| PublicProbe::Probed(public, r.clone());
    let unknown = || PublicProbe::Unknown("no STUN server answered".into());

    check(
        media_port(
            Proto::Udp,
            8882,
            Some(8882),
            &probed(&mapped),
            (lan, &mapped),
        ),
        Status::Pass,
        "UDP 203.0.113.7:8882 (the public address) answers: the router forwards the port",
    );
    check(
        media_port(
            Proto::Udp,
            8882,
            Some(8882),
            &probed(&silent),
            (lan, &mapped),
        ),
        Status::Warn,
        "Either the router does not forward UDP 8882 to 192.168.1.20, or it lacks hairpin NAT",
    );
    check(
        media_port(Proto::Tcp, 8882, None, &probed(&silent), (lan, &mapped)),
        Status::Warn,
        "test from a phone on mobile data",
    );
    check(
        media_port(
            Proto::Udp,
            8882,
            Some(8882),
            &probed(&silent),
            (lan, &silent),
        ),
        Status::Fail,
        "Control Panel → Security → Firewall",
    );
    check(
        media_port(Proto::Udp, 8882, Some(8882), &unknown(), (lan, &mapped)),
        Status::Unavailable,
        "the public address is unknown (no STUN server answered)",
    );
    check(
        media_port(Proto::Tcp, 8881, Some(8881), &unknown(), (lan, &silent)),
        Status::Fail,
        "does not answer on its own TCP port",
    );
    check(
        media_port(
            Proto::Udp,
            8882,
            Some(9000),
            &probed(&mapped),
            (lan, &mapped),
        ),
        Status::Fail,
        "set RTCBOX_RTC_UDP_PORT=8882 or change the wizard's port to 9000",
    );
    check(
        media_port(Proto::Tcp, 8881, Some(9001), &unknown(), (lan, &mapped)),
        Status::Fail,
        "RTCBOX_RTC_TCP_PORT=8881",
    );
    // No NAT: the LAN address is the public one.
    let direct = PublicProbe::Probed(lan, mapped.clone());
    check(
        media_port(Proto::Udp, 8882, Some(8882), &direct, (lan, &mapped)),
        Status::Pass,
        "this machine has the public address itself",
    );
}

fn turn_report(
    transport: Transport,
    target: &str,
    outcome: Result<Allocated, ProbeError>,
) -> ProbeReport {
    ProbeReport {
        transport,
        target: target.parse().unwrap(),
        software: None,
        outcome,
    }
}

const TURN_SFU: &str = "203.0.113.7:8882";
const TURN_ADMIN: &str = "192.168.1.20:8089";

fn allocated() -> Allocated {
    Allocated {
        relayed: "203.0.113.7:49170".parse().unwrap(),
        mapped: Some("203.0.113.7:50000".parse().unwrap()),
        allowed: Some((TURN_SFU.parse().unwrap(), Answer::Success)),
        denied: Some((
            TURN_ADMIN.parse().unwrap(),
            Answer::Error {
                code: 403,
                reason: "Forbidden".into(),
            },
        )),
        released: Answer::Success,
    }
}

fn turn_expect<'a>(
    transport: Transport,
    errors: &'a [String],
    allow: &'a [String],
) -> TurnExpect<'a> {
    let port = if transport == Transport::Tls {
        5349
    } else {
        3478
    };
    TurnExpect {
        transport,
        wizard_port: port,
        listening_port: port,
        listener_errors: errors,
        host: "rtc.example.org",
        allow_peers: allow,
    }
}

#[test]
fn turn_listener_cases() {
    use Transport::{Tcp, Tls, Udp};
    let public = |transport: Transport, outcome: Result<Allocated, ProbeError>| {
        let port = if transport == Tls { 5349 } else { 3478 };
        TurnPublic::Probed(Box::new(turn_report(
            transport,
            &format!("203.0.113.7:{port}"),
            outcome,
        )))
    };
    let lan = |transport: Transport, outcome: Result<Allocated, ProbeError>| {
        let port = if transport == Tls { 5349 } else { 3478 };
        turn_report(transport, &format!("192.168.1.20:{port}"), outcome)
    };
    let none: &[String] = &[];
    let good = || Ok(allocated());
    let silent = || Err(ProbeError::NoAnswer);
    let run = |transport, public: &TurnPublic, lan: &ProbeReport| {
        turn_listener(&turn_expect(transport, none, none), public, lan)
    };

    let c = run(Udp, &public(Udp, good()), &lan(Udp, good()));
    check(
        c.clone(),
        Status::Pass,
        "TURN over UDP at 203.0.113.7:3478 (the public address) works",
    );
    check(
        c.clone(),
        Status::Pass,
        "relaying to the SFU (203.0.113.7:8882) is allowed",
    );
    check(
        c,
        Status::Pass,
        "relaying to 192.168.1.20:8089 on the LAN is refused",
    );
    check(
        run(Tcp, &public(Tcp, silent()), &lan(Tcp, good())),
        Status::Warn,
        "Either the router does not forward TCP 3478 to 192.168.1.20, or it lacks hairpin NAT",
    );
    check(
        run(Udp, &public(Udp, silent()), &lan(Udp, silent())),
        Status::Fail,
        "a firewall on this machine blocks it",
    );
    check(
        run(
            Tcp,
            &public(Tcp, Err(ProbeError::Refused)),
            &lan(Tcp, Err(ProbeError::Refused)),
        ),
        Status::Fail,
        "Nothing listens for TURN over TCP at 192.168.1.20:3478",
    );
    // No NAT: one probe is both.
    let direct = lan(Udp, good());
    check(
        run(Udp, &TurnPublic::Probed(Box::new(direct.clone())), &direct),
        Status::Pass,
        "TURN over UDP at 192.168.1.20:3478 works",
    );
    check(
        run(
            Udp,
            &TurnPublic::Unknown("no STUN server answered".into()),
            &lan(Udp, good()),
        ),
        Status::Unavailable,
        "The public address is unknown (no STUN server answered)",
    );

    // The listener could not open its port; something else answers there.
    let errors = vec!["UDP 0.0.0.0:3478: port 3478 in use — is coturn still running?".to_owned()];
    let mut other = lan(
        Udp,
        Err(ProbeError::Rejected {
            code: 401,
            reason: "Unauthorized".into(),
        }),
    );
    other.software = Some("Coturn-4.6.2 'Gorst'".into());
    let c = turn_listener(
        &turn_expect(Udp, &errors, none),
        &public(Udp, silent()),
        &other,
    );
    check(
        c.clone(),
        Status::Fail,
        "port 3478 in use — is coturn still running?",
    );
    check(
        c.clone(),
        Status::Fail,
        "Another program answers on UDP 3478: \"Coturn-4.6.2 'Gorst'\"",
    );
    check(c, Status::Fail, "systemctl disable --now coturn");
    check(
        run(Udp, &public(Udp, silent()), &other),
        Status::Fail,
        "Something other than rtcbox's TURN server answers on UDP 192.168.1.20:3478 (it calls itself",
    );
    check(
        run(
            Tcp,
            &public(Tcp, silent()),
            &lan(
                Tcp,
                Err(ProbeError::NotTurn(
                    "an HTTP server answers on this port".into(),
                )),
            ),
        ),
        Status::Fail,
        "an HTTP server answers on this port",
    );
    check(
        run(
            Udp,
            &public(
                Udp,
                Err(ProbeError::Rejected {
                    code: 401,
                    reason: String::new(),
                }),
            ),
            &lan(Udp, silent()),
        ),
        Status::Fail,
        "refuses the SFU's own participant credentials over UDP (error 401)",
    );
    check(
        run(
            Udp,
            &public(
                Udp,
                Err(ProbeError::Rejected {
                    code: 508,
                    reason: "Insufficient Capacity".into(),
                }),
            ),
            &lan(Udp, silent()),
        ),
        Status::Fail,
        "allocation limit",
    );

    // The wizard and the listener disagree on the port.
    let mut moved = turn_expect(Udp, none, none);
    moved.wizard_port = 3479;
    check(
        turn_listener(&moved, &public(Udp, good()), &lan(Udp, good())),
        Status::Fail,
        "which sets RTCBOX_TURN_PORT=3479",
    );

    // TLS: an untrusted certificate is a warning about turns:, not a dead port.
    let untrusted = || {
        Err(ProbeError::Untrusted(
            "it is issued by an unknown authority (self-signed…)".into(),
        ))
    };
    let c = run(Tls, &public(Tls, untrusted()), &lan(Tls, untrusted()));
    check(
        c.clone(),
        Status::Warn,
        "The TLS listener answers at 203.0.113.7:5349, but its certificate is not trusted",
    );
    check(c.clone(), Status::Warn, "Browsers will not use turns:");
    check(c, Status::Warn, "a certificate for rtc.example.org");
    let c = run(
        Tls,
        &public(Tls, Err(ProbeError::ConnectTimeout)),
        &lan(Tls, untrusted()),
    );
    check(c.clone(), Status::Warn, "does not forward TCP 5349");
    check(c, Status::Warn, "Browsers will not use turns:");
    check(
        run(
            Tls,
            &public(Tls, silent()),
            &lan(Tls, Err(ProbeError::Tls("the answer is not TLS".into()))),
        ),
        Status::Fail,
        "RTCBOX_TURN_TLS_PORT is rtcbox's TURN-over-TLS port",
    );
    check(
        run(Tls, &public(Tls, good()), &lan(Tls, good())),
        Status::Pass,
        "TURN over TLS",
    );

    // Relay policy.
    let with = |f: &dyn Fn(&mut Allocated)| {
        let mut a = allocated();
        f(&mut a);
        Ok(a)
    };
    check(
        run(
            Udp,
            &public(
                Udp,
                with(&|a| {
                    a.allowed = Some((
                        TURN_SFU.parse().unwrap(),
                        Answer::Error {
                            code: 403,
                            reason: "Forbidden".into(),
                        },
                    ))
                }),
            ),
            &lan(Udp, good()),
        ),
        Status::Fail,
        "callers who need TURN get no audio or video",
    );
    check(
        run(
            Udp,
            &public(Udp, with(&|a| a.allowed = None)),
            &lan(Udp, good()),
        ),
        Status::Pass,
        "the SFU's media address is unknown",
    );
    let open = with(&|a| a.denied = Some((TURN_ADMIN.parse().unwrap(), Answer::Success)));
    check(
        run(Udp, &public(Udp, open.clone()), &lan(Udp, good())),
        Status::Fail,
        "The TURN server relays to 192.168.1.20:8089 on your LAN",
    );
    let allow = vec!["192.168.0.0/16".to_owned(), "127.0.0.0/8".to_owned()];
    check(
        turn_listener(
            &turn_expect(Udp, none, &allow),
            &public(Udp, open),
            &lan(Udp, good()),
        ),
        Status::Warn,
        "RTCBOX_TURN_ALLOW_PEERS (192.168.0.0/16) lets anyone with TURN credentials relay to 192.168.1.20:8089",
    );
    check(
        run(
            Udp,
            &public(
                Udp,
                with(&|a| a.released = Answer::Failed("no answer within 2 s".into())),
            ),
            &lan(Udp, good()),
        ),
        Status::Warn,
        "it stays until it expires",
    );

    check(turn_off(Tls), Status::Unavailable, "RTCBOX_TURN_TLS_PORT=0");
    check(turn_off(Udp), Status::Unavailable, "RTCBOX_TURN_PORT=0");
}

#[test]
fn turn_legacy_cases() {
    let none: &[String] = &[];
    let expect = || LegacyExpect {
        wizard_on: true,
        running_on: true,
        same_secret: true,
        pinned: false,
        listening_port: Some(3478),
        public_ip: Some("203.0.113.7".parse().unwrap()),
        relay_range: (49160, 49200),
        allow_peers: none,
    };
    let internet = || {
        let mut a = allocated();
        a.allowed = Some(("1.1.1.1:443".parse().unwrap(), Answer::Success));
        a
    };
    let public = |outcome| {
        TurnPublic::Probed(Box::new(turn_report(
            Transport::Udp,
            "203.0.113.7:3478",
            outcome,
        )))
    };
    let lan = |outcome| turn_report(Transport::Udp, "192.168.1.20:3478", outcome);
    let good_public = public(Ok(internet()));
    let good_lan = lan(Ok(internet()));

    let c = turn_legacy(&expect(), Some((&good_public, &good_lan)));
    check(
        c.clone(),
        Status::Pass,
        "get relay 203.0.113.7:49170 at 203.0.113.7:3478 (the public address)",
    );
    check(
        c.clone(),
        Status::Pass,
        "may relay to the internet (1.1.1.1:443)",
    );
    check(
        c,
        Status::Pass,
        "relaying to 192.168.1.20:8089 on the LAN is refused",
    );

    let off = LegacyExpect {
        wizard_on: false,
        running_on: false,
        ..expect()
    };
    check(turn_legacy(&off, None), Status::Unavailable, "are off");
    let not_applied = LegacyExpect {
        running_on: false,
        same_secret: false,
        ..expect()
    };
    check(
        turn_legacy(&not_applied, None),
        Status::Fail,
        "Apply the wizard (Review → Apply) and restart rtcbox",
    );
    let other_secret = LegacyExpect {
        same_secret: false,
        ..expect()
    };
    check(
        turn_legacy(&other_secret, None),
        Status::Fail,
        "another TURN shared secret",
    );
    let pinned = LegacyExpect {
        same_secret: false,
        pinned: true,
        ..expect()
    };
    check(
        turn_legacy(&pinned, None),
        Status::Fail,
        "put its value into Synapse's turn_shared_secret",
    );
    let no_listener = LegacyExpect {
        listening_port: None,
        ..expect()
    };
    check(
        turn_legacy(&no_listener, None),
        Status::Fail,
        "RTCBOX_TURN_PORT=0",
    );

    // The secret is set by hand, without the wizard's snippet.
    let by_hand = LegacyExpect {
        wizard_on: false,
        same_secret: false,
        ..expect()
    };
    check(
        turn_legacy(&by_hand, Some((&good_public, &good_lan))),
        Status::Pass,
        "make sure Synapse's turn_shared_secret is the same",
    );

    let lan_relay = {
        let mut a = internet();
        a.relayed = "192.168.1.20:49170".parse().unwrap();
        a
    };
    check(
        turn_legacy(&expect(), Some((&public(Ok(lan_relay)), &good_lan))),
        Status::Fail,
        "Set RTCBOX_NODE_IP=203.0.113.7",
    );
    let outside = {
        let mut a = internet();
        a.relayed = "203.0.113.7:60000".parse().unwrap();
        a
    };
    check(
        turn_legacy(&expect(), Some((&public(Ok(outside)), &good_lan))),
        Status::Warn,
        "RTCBOX_TURN_RELAY_PORTS=49160-49200",
    );
    let closed_to_internet = {
        let mut a = internet();
        a.allowed = Some((
            "1.1.1.1:443".parse().unwrap(),
            Answer::Error {
                code: 403,
                reason: String::new(),
            },
        ));
        a
    };
    check(
        turn_legacy(
            &expect(),
            Some((&public(Ok(closed_to_internet)), &good_lan)),
        ),
        Status::Fail,
        "may not relay to the internet address 1.1.1.1:443",
    );
    let refused = || {
        Err(ProbeError::Rejected {
            code: 401,
            reason: "Unauthorized".into(),
        })
    };
    check(
        turn_legacy(&expect(), Some((&public(refused()), &lan(refused())))),
        Status::Fail,
        "Make Synapse's turn_shared_secret and rtcbox's RTCBOX_TURN_SHARED_SECRET the same",
    );
    check(
        turn_legacy(
            &expect(),
            Some((&public(Err(ProbeError::NoAnswer)), &good_lan)),
        ),
        Status::Warn,
        "Forward UDP 3478 and the relay ports UDP 49160-49200 on the router to 192.168.1.20",
    );
    check(
        turn_legacy(
            &expect(),
            Some((
                &public(Err(ProbeError::NoAnswer)),
                &lan(Err(ProbeError::NoAnswer)),
            )),
        ),
        Status::Fail,
        "a firewall on this machine blocks it",
    );
}

#[test]
fn fixed_checks() {
    check(
        turn_not_running(ids::TURN_TCP),
        Status::Unavailable,
        "not running in this process",
    );
    check(timed_out(ids::TLS), Status::Unavailable, "within 6 s");
    assert_eq!(ids::ALL.len(), 13);
    assert!(ids::ALL.iter().all(|id| title(id) != "Check"));
}

#[test]
fn urls_compare_and_resolve() {
    assert!(same_url("https://RTC.example.org/livekit/jwt/", OURS));
    assert!(same_url(" https://rtc.example.org/livekit/jwt ", OURS));
    assert!(!same_url("https://rtc.example.org/LiveKit/jwt", OURS));
    assert!(!same_url("http://rtc.example.org/livekit/jwt", OURS));
    assert!(!same_url("https://rtc.example.org", OURS));

    let base = "https://example.org/.well-known/matrix/client";
    assert_eq!(resolve_location(base, "/x"), "https://example.org/x");
    assert_eq!(
        resolve_location(base, "https://www.example.org/y"),
        "https://www.example.org/y"
    );
    assert_eq!(resolve_location(base, "z"), "https://example.org/z");
}

#[test]
fn targets_of_a_deployment() {
    let targets = Targets::of(&deployment());
    assert_eq!(targets.well_known_url, WELL_KNOWN);
    assert_eq!(targets.server_host, "example.org");
    assert_eq!(
        targets.alternate_well_known_url.as_deref(),
        Some("https://matrix.example.org/.well-known/matrix/client")
    );
    assert_eq!(targets.livekit_service_url, OURS);
    assert_eq!(targets.sfu_url, "wss://rtc.example.org/livekit/sfu");

    let same_host = Deployment {
        server_name: "example.org:8448".into(),
        client_base_url: "https://example.org/".into(),
        ..deployment()
    };
    let targets = Targets::of(&same_host);
    assert_eq!(targets.well_known_url, WELL_KNOWN);
    assert_eq!(targets.alternate_well_known_url, None);
    assert_eq!(targets.client_base_url, "https://example.org");
}

#[test]
fn run_all_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let input = VerifyInput {
        deployment: deployment(),
        access_token: None,
        advertised_udp: Vec::new(),
        advertised_tcp: Vec::new(),
        stun_servers: Vec::new(),
        own_tls: Default::default(),
    };
    let http = HttpClient::new(None).unwrap();
    let future = run_all(&input, &http, None, None);
    assert_send(&future);
}

/// A homeserver, proxy and rtcbox in one local server: canned Synapse answers, rtcbox's real
/// signaling routes under /livekit/sfu and a real SFU, so every check runs its real fetch path.
struct Stage {
    addr: SocketAddr,
    sfu: SfuAccess,
    udp: SocketAddr,
    tcp: SocketAddr,
}

/// What the staged homeserver's rtc/transports endpoint publishes.
#[derive(Clone, Copy)]
enum Published {
    Ours,
    Nothing,
}

async fn stage(published: Published) -> Stage {
    stage_gated(published, None).await
}

/// A stage whose `/versions` answers only once `gate` is notified.
async fn stage_gated(published: Published, gate: Option<Arc<tokio::sync::Notify>>) -> Stage {
    str0m::crypto::from_feature_flags().install_process_default();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let sockets = SfuSockets::bind(localhost, None, 0, 0).await.unwrap();
    let udp = sockets.udp_advertised()[0];
    let tcp = sockets.tcp_advertised()[0];
    let handle = SfuHandle::spawn(sockets, false, None);
    let sfu = SfuAccess {
        handle: handle.clone(),
        api_key: ApiKey::parse("checkkey").unwrap(),
        api_secret: Secret::new("check-secret-check-secret-check-secret"),
    };
    let signal = crate::livekit::signal::router(Arc::new(crate::livekit::signal::SignalState {
        turn: None,
        sfu: handle,
        key: sfu.api_key.clone(),
        secret: sfu.api_secret.clone(),
    }));

    let listener = TcpListener::bind((localhost, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service_url = format!("http://{addr}/livekit/jwt");
    let well_known = json!({
        "m.homeserver": {"base_url": format!("http://{addr}")},
        "org.matrix.msc4143.rtc_foci": [{"type": "livekit", "livekit_service_url": service_url}]
    });
    let transports = match published {
        Published::Ours => {
            json!({"rtc_transports": [{"type": "livekit", "livekit_service_url": service_url}]})
        }
        Published::Nothing => json!({}),
    };
    let cors = [("access-control-allow-origin", "*")];
    let router = Router::new()
        .route(
            "/.well-known/matrix/client",
            get(move || async move { (cors, axum::Json(well_known)) }),
        )
        .route(
            "/_matrix/client/versions",
            get(move || async move {
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                axum::Json(json!({"versions": ["v1.12"], "unstable_features": {
                    "org.matrix.msc4140": true, "org.matrix.msc4222": true, "org.matrix.msc4143": true
                }}))
            }),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
            get(move |headers: HeaderMap| async move {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer good-token") => axum::Json(transports).into_response(),
                    _ => (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"errcode": "M_MISSING_TOKEN"})),
                    )
                        .into_response(),
                }
            }),
        )
        .route("/livekit/jwt/healthz", get(move || async move { (cors, "") }))
        .route("/livekit/jwt/sfu/get", options(move || async move { (cors, "") }))
        .nest("/livekit/sfu", signal);
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Stage {
        addr,
        sfu,
        udp,
        tcp,
    }
}

fn staged_input(stage: &Stage, access_token: Option<&str>) -> (Targets, VerifyInput) {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let deployment = Deployment {
        server_name: "localhost".into(),
        client_base_url: format!("http://{}", stage.addr),
        endpoints: Endpoints::OneHost(PublicOrigin {
            tls: false,
            host: "127.0.0.1".into(),
            port: Some(stage.addr.port()),
        }),
        network: Network {
            lan_ip: localhost,
            public_ip: Some(localhost),
            follows_public_ip: false,
            ports: Ports {
                http: stage.addr.port(),
                rtc_udp: stage.udp.port(),
                rtc_tcp: stage.tcp.port(),
                ..Ports::default()
            },
        },
        ..deployment()
    };
    let mut targets = Targets::of(&deployment);
    targets.well_known_url = format!("http://{}/.well-known/matrix/client", stage.addr);
    targets.alternate_well_known_url = None;
    let input = VerifyInput {
        deployment,
        access_token: access_token.map(Secret::new),
        advertised_udp: vec![stage.udp],
        advertised_tcp: vec![stage.tcp],
        stun_servers: vec![stage.udp.to_string()],
        own_tls: Default::default(),
    };
    (targets, input)
}

async fn rooms(sfu: &SfuAccess) -> Vec<String> {
    sfu.handle
        .call(|core, _| core.list_rooms(&[]).into_iter().map(|r| r.name).collect())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_working_deployment_passes_end_to_end() {
    let stage = stage(Published::Ours).await;
    let (targets, input) = staged_input(&stage, Some("good-token"));
    let http = HttpClient::new(None).unwrap();
    let started = std::time::Instant::now();
    let checks = run_with(&targets, &input, &http, Some(&stage.sfu), None, None).await;
    assert!(started.elapsed() < CHECK_TIMEOUT);
    let got: Vec<&str> = checks.iter().map(|c| c.id).collect();
    assert_eq!(got, ids::ALL);
    for c in &checks {
        let expected = match c.id {
            // Plain http on loopback: honest, not fatal.
            ids::TLS => Status::Warn,
            // No TURN server in this stage (the TURN stage below has one).
            ids::TURN_UDP | ids::TURN_TCP | ids::TURN_TLS | ids::TURN_LEGACY => Status::Unavailable,
            _ => Status::Pass,
        };
        assert_eq!(c.status, expected, "{c:#?}");
    }
    // The throwaway room is gone again.
    for _ in 0..50 {
        if rooms(&stage.sfu).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rooms(&stage.sfu).await, Vec::<String>::new());
}

#[tokio::test]
async fn problems_show_up_end_to_end() {
    let stage = stage(Published::Nothing).await;
    let http = HttpClient::new(None).unwrap();

    // Empty transports, a wizard port that is not the SFU's, a wrong public address.
    let (targets, mut input) = staged_input(&stage, Some("good-token"));
    input.deployment.network.ports.rtc_tcp = 8881;
    input.deployment.network.public_ip = Some("127.0.0.2".parse().unwrap());
    let checks = run_with(&targets, &input, &http, Some(&stage.sfu), None, None).await;
    let by_id = |id: &str| checks.iter().find(|c| c.id == id).unwrap().clone();
    check(by_id(ids::RTC_TRANSPORTS), Status::Fail, "no transports");
    check(
        by_id(ids::MEDIA_TCP),
        Status::Fail,
        "RTCBOX_RTC_TCP_PORT=8881",
    );
    check(
        by_id(ids::PUBLIC_IP),
        Status::Fail,
        "but the wizard says 127.0.0.2",
    );
    // The SFU listens on 127.0.0.1 only: the "public" 127.0.0.2 stays silent, the LAN answers.
    check(
        by_id(ids::MEDIA_UDP),
        Status::Warn,
        "or it lacks hairpin NAT",
    );

    // No token; no SFU in this process.
    let (targets, input) = staged_input(&stage, None);
    let checks = run_with(&targets, &input, &http, None, None, None).await;
    let by_id = |id: &str| checks.iter().find(|c| c.id == id).unwrap().clone();
    check(
        by_id(ids::RTC_TRANSPORTS),
        Status::Warn,
        "give an access token",
    );
    check(
        by_id(ids::SFU_WEBSOCKET),
        Status::Unavailable,
        "not running in this process",
    );
    check(by_id(ids::TLS), Status::Warn, "plain HTTP");
}

/// A real TURN server on loopback next to `stage`, with legacy calls on, and the checks' input
/// describing both.
async fn turn_stage(
    stage: &Stage,
) -> (
    crate::turn::testing::LoopbackTurn,
    TurnAccess,
    Targets,
    VerifyInput,
) {
    let secret = Secret::new("legacy-shared-secret-legacy-shared-secret");
    let turn = crate::turn::testing::loopback_turn(vec![stage.udp], Some(secret.clone())).await;
    let (targets, mut input) = staged_input(stage, Some("good-token"));
    input.deployment.legacy_turn = Some(crate::setup::model::LegacyTurn {
        shared_secret: secret.clone(),
    });
    let ports = &mut input.deployment.network.ports;
    ports.turn = turn.port;
    ports.turns = turn.tls_port;
    (ports.relay_min, ports.relay_max) = turn.relay_ports;
    let access = TurnAccess {
        handle: turn.handle.clone(),
        shared_secret: Some(secret),
        shared_secret_pinned: false,
    };
    (turn, access, targets, input)
}

#[tokio::test]
async fn the_turn_checks_against_the_real_turn_server() {
    let stage = stage(Published::Ours).await;
    let (turn, access, targets, mut input) = turn_stage(&stage).await;
    let http = HttpClient::new(None).unwrap();
    let started = std::time::Instant::now();
    let checks = run_with(
        &targets,
        &input,
        &http,
        Some(&stage.sfu),
        Some(&access),
        None,
    )
    .await;
    assert!(started.elapsed() < CHECK_TIMEOUT);
    let by_id = |id: &str| checks.iter().find(|c| c.id == id).unwrap().clone();
    let sfu = stage.udp;
    check(
        by_id(ids::TURN_UDP),
        Status::Pass,
        &format!(
            "relaying to the SFU ({sfu}) is allowed, and relaying to 127.0.0.1:8089 on the LAN is refused"
        ),
    );
    check(
        by_id(ids::TURN_TCP),
        Status::Pass,
        "TURN over TCP at 127.0.0.1:",
    );
    // Its certificate is self-signed: the listener answers, browsers would not trust it.
    check(
        by_id(ids::TURN_TLS),
        Status::Warn,
        "The TLS listener answers at 127.0.0.1:",
    );
    check(
        by_id(ids::TURN_LEGACY),
        Status::Pass,
        "may relay to the internet (1.1.1.1:443), and relaying to 127.0.0.1:8089 on the LAN is refused",
    );
    // The check's allocations are gone again.
    for _ in 0..50 {
        if turn.handle.status().stats.allocations == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(turn.handle.status().stats.allocations, 0);

    // The wizard's secret is not the one rtcbox runs with; the wizard's TURN port is another.
    input.deployment.legacy_turn = Some(crate::setup::model::LegacyTurn {
        shared_secret: Secret::new("another-secret-another-secret-another"),
    });
    input.deployment.network.ports.turn = turn.port.wrapping_add(1);
    let checks = run_with(
        &targets,
        &input,
        &http,
        Some(&stage.sfu),
        Some(&access),
        None,
    )
    .await;
    let by_id = |id: &str| checks.iter().find(|c| c.id == id).unwrap().clone();
    check(
        by_id(ids::TURN_LEGACY),
        Status::Fail,
        "another TURN shared secret",
    );
    check(
        by_id(ids::TURN_UDP),
        Status::Fail,
        &format!("which sets RTCBOX_TURN_PORT={}", turn.port.wrapping_add(1)),
    );
}

#[tokio::test]
async fn each_check_is_reported_when_it_finishes() {
    // Synapse's /versions answers only after a first result was reported: the run can finish
    // in time only if results are streamed while others still wait.
    let gate = Arc::new(tokio::sync::Notify::new());
    let stage = stage_gated(Published::Ours, Some(gate.clone())).await;
    let (targets, input) = staged_input(&stage, Some("good-token"));
    let http = HttpClient::new(None).unwrap();
    let (progress, mut reported) = tokio::sync::mpsc::unbounded_channel();
    let run = async {
        let checks = run_with(
            &targets,
            &input,
            &http,
            Some(&stage.sfu),
            None,
            Some(&progress),
        )
        .await;
        drop(progress);
        checks
    };
    let watch = async {
        let first = reported.recv().await.expect("a first check");
        gate.notify_one();
        let mut all = vec![first];
        while let Some(check) = reported.recv().await {
            all.push(check);
        }
        all
    };
    let (checks, reported) = tokio::join!(run, watch);
    assert_ne!(reported[0].id, ids::SYNAPSE_VERSIONS);
    let versions = checks
        .iter()
        .find(|c| c.id == ids::SYNAPSE_VERSIONS)
        .unwrap();
    assert_eq!(versions.status, Status::Pass, "{versions:#?}");
    let mut got: Vec<&str> = reported.iter().map(|c| c.id).collect();
    got.sort_unstable();
    let mut all = ids::ALL.to_vec();
    all.sort_unstable();
    assert_eq!(got, all);
    // What was reported is what the run returned.
    for check in &checks {
        assert!(reported.contains(check), "{check:#?}");
    }
}

/// A failed check with `causes`.
fn failed(id: &'static str, causes: Vec<causes::Cause>) -> Check {
    Check {
        causes,
        ..Check::new(id, Status::Fail, "seen".into(), Some("do".into()))
    }
}

#[test]
fn causes_shared_by_several_checks_are_grouped() {
    use causes::{Cause, group};
    let name = |host: &str| Cause::NameUnresolved { host: host.into() };
    let public_ip = "203.0.113.7".parse().unwrap();
    let lan_ip = "192.168.1.20".parse().unwrap();
    let not_forwarded = |proto, port| Cause::NotForwarded {
        proto,
        port,
        public_ip,
        lan_ip,
    };
    let passed = Check {
        causes: vec![name("matrix.example.org")],
        ..Check::new(ids::TLS, Status::Pass, "fine".into(), None)
    };
    let groups = group(&[
        failed(ids::WELL_KNOWN, vec![name("example.org")]),
        failed(ids::SYNAPSE_VERSIONS, vec![name("matrix.example.org")]),
        failed(ids::RTC_TRANSPORTS, vec![name("Matrix.example.org")]),
        failed(ids::MEDIA_UDP, vec![not_forwarded("UDP", 8882)]),
        failed(ids::TURN_UDP, vec![not_forwarded("UDP", 3478)]),
        failed(ids::TURN_LEGACY, vec![not_forwarded("UDP", 3478)]),
        failed(ids::MEDIA_TCP, vec![not_forwarded("TCP", 8881)]),
        passed,
    ]);
    let summary: Vec<(&str, Vec<&str>)> = groups
        .iter()
        .map(|g| (g.title.as_str(), g.checks.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "Not reachable at the public address: UDP 8882, UDP 3478, TCP 8881",
                vec![
                    ids::MEDIA_UDP,
                    ids::TURN_UDP,
                    ids::TURN_LEGACY,
                    ids::MEDIA_TCP
                ]
            ),
            (
                "matrix.example.org does not resolve",
                vec![ids::SYNAPSE_VERSIONS, ids::RTC_TRANSPORTS]
            ),
        ]
    );
    // The fix is said once, with every port; the hairpin caveat with it.
    let ports = &groups[0];
    assert!(
        ports
            .fix
            .contains("Forward UDP 8882, UDP 3478, TCP 8881 on the router to 192.168.1.20"),
        "{}",
        ports.fix
    );
    assert!(ports.detail.contains("hairpin NAT"), "{}", ports.detail);
    // One check alone is no group: its own fix says it.
    assert_eq!(
        group(&[failed(ids::WELL_KNOWN, vec![name("example.org")])]),
        []
    );
    assert_eq!(group(&[]), []);
}

#[test]
fn causes_read_from_the_observations() {
    use causes::{Cause, of_fetch, of_media};
    let addr: SocketAddr = "127.0.0.1:8448".parse().unwrap();
    let cases: Vec<(Observed, Option<Cause>)> = vec![
        (
            Err(FetchError::Dns {
                host: "x.example".into(),
                reason: "no record".into(),
            }),
            Some(Cause::NameUnresolved {
                host: "x.example".into(),
            }),
        ),
        (
            Err(FetchError::Refused { addr }),
            Some(Cause::Unreachable { addr }),
        ),
        (
            Err(FetchError::ConnectTimeout { addr }),
            Some(Cause::Unreachable { addr }),
        ),
        (
            Err(FetchError::Certificate {
                host: "x.example".into(),
                reason: "self-signed".into(),
            }),
            Some(Cause::UntrustedCertificate {
                host: "x.example".into(),
            }),
        ),
        (
            Err(FetchError::Timeout {
                url: "https://x.example/".into(),
            }),
            None,
        ),
    ];
    for (observed, expected) in cases {
        assert_eq!(of_fetch(&observed), expected, "{observed:?}");
    }
    let lan: SocketAddr = "192.168.1.20:8882".parse().unwrap();
    let public: SocketAddr = "203.0.113.7:8882".parse().unwrap();
    let answered: Result<SocketAddr, String> = Ok(public);
    let silent: Result<SocketAddr, String> = Err("no answer".into());
    let probed = |r: &Result<SocketAddr, String>| PublicProbe::Probed(public, r.clone());
    assert_eq!(
        of_media(Proto::Udp, 8882, &probed(&silent), (lan, &answered)),
        Some(Cause::NotForwarded {
            proto: "UDP",
            port: 8882,
            public_ip: public.ip(),
            lan_ip: lan.ip()
        })
    );
    assert_eq!(
        of_media(Proto::Tcp, 8882, &probed(&silent), (lan, &silent)),
        Some(Cause::NotAnsweringOnLan {
            proto: "TCP",
            port: 8882,
            lan_ip: lan.ip()
        })
    );
    assert_eq!(
        of_media(
            Proto::Udp,
            8882,
            &PublicProbe::Unknown("stun".into()),
            (lan, &answered)
        ),
        Some(Cause::PublicIpUnknown)
    );
    assert_eq!(
        of_media(Proto::Udp, 8882, &probed(&answered), (lan, &answered)),
        None
    );
}

#[tokio::test]
async fn ports_not_forwarded_are_one_cause_end_to_end() {
    // The "public" 127.0.0.2 reaches nothing (every listener is on 127.0.0.1): the media and
    // TURN checks each warn, and one root cause explains them with one fix.
    let stage = stage(Published::Ours).await;
    let (turn, access, targets, mut input) = turn_stage(&stage).await;
    input.deployment.network.public_ip = Some("127.0.0.2".parse().unwrap());
    let http = HttpClient::new(None).unwrap();
    let checks = run_with(
        &targets,
        &input,
        &http,
        Some(&stage.sfu),
        Some(&access),
        None,
    )
    .await;
    let groups = causes::group(&checks);
    let forwards = groups
        .iter()
        .find(|g| g.title.starts_with("Not reachable at the public address"))
        .unwrap_or_else(|| panic!("{groups:#?}\n{checks:#?}"));
    let mut explained = forwards.checks.clone();
    explained.sort_unstable();
    let mut expected = vec![
        ids::MEDIA_UDP,
        ids::MEDIA_TCP,
        ids::TURN_UDP,
        ids::TURN_TCP,
        ids::TURN_TLS,
        ids::TURN_LEGACY,
    ];
    expected.sort_unstable();
    assert_eq!(explained, expected, "{checks:#?}");
    for (proto, port) in [
        ("UDP", stage.udp.port()),
        ("TCP", stage.tcp.port()),
        ("UDP", turn.port),
        ("TCP", turn.tls_port),
    ] {
        assert!(
            forwards.title.contains(&format!("{proto} {port}")),
            "{proto} {port} not in {}",
            forwards.title
        );
    }
    assert!(forwards.fix.contains("to 127.0.0.1"), "{}", forwards.fix);
}
