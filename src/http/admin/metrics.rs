//! `GET /metrics`: the counters of every component in the Prometheus text format (0.0.4), on
//! the admin listener (docs/metrics.md).
//!
//! Who may read it:
//! - with `RTCBOX_METRICS_TOKEN` set, a request with `Authorization: Bearer <token>` (what a
//!   Prometheus scrape job sends);
//! - without a token, a client on this machine (loopback) whose request came through no proxy
//!   (no forwarding header at all: a reverse proxy on the same host would make everyone look
//!   local);
//! - always, a logged-in admin (to look at it in the browser).
//!
//! Anyone else gets a plain-text 401 (token set) or 403 (none set) saying what to do. The
//! metrics carry counts only: no room names, identities, addresses or secrets.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts as _, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

use super::AdminState;
use super::auth::{Session, constant_time_eq};
use crate::http::forwarded::Client;
use crate::metrics::{self, Exposition, Kind};

/// Headers that show a request came through a proxy.
const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

pub async fn metrics(
    State(state): State<Arc<AdminState>>,
    client: Client,
    request: Request<Body>,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(refusal) = allowed(&state, &client, &parts.headers) {
        // An admin's browser is let in by its session (looked up only when needed).
        if Session::from_request_parts(&mut parts, &state)
            .await
            .is_err()
        {
            return refusal;
        }
    }
    let mut response = render(&state).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// Whether the request may read the metrics without a session; the refusal says what to do.
fn allowed(state: &AdminState, client: &Client, headers: &HeaderMap) -> Result<(), Response> {
    match &state.settings.metrics_token {
        Some(token) => {
            let sent = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .trim();
            if constant_time_eq(sent.as_bytes(), token.expose().as_bytes()) {
                return Ok(());
            }
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "/metrics needs the bearer token set in RTCBOX_METRICS_TOKEN \
                 (Authorization: Bearer <token>).\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rtcbox metrics\""),
            );
            Err(response)
        }
        None => {
            let proxied = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
            if client.ip.is_loopback() && !proxied {
                return Ok(());
            }
            Err((
                StatusCode::FORBIDDEN,
                "/metrics answers only this machine (loopback) while no token is set. To scrape \
                 it from elsewhere, set RTCBOX_METRICS_TOKEN and send it as a bearer token \
                 (docs/metrics.md).\n",
            )
                .into_response())
        }
    }
}

/// Every family, from the components' own counters.
fn render(state: &AdminState) -> String {
    let mut e = Exposition::new();
    e.family(
        "rtcbox_build_info",
        Kind::Gauge,
        "The running rtcbox: version and git commit.",
    )
    .sample(
        &[("version", crate::VERSION), ("commit", crate::GIT_COMMIT)],
        1,
    );
    if let Some(sfu) = &state.sfu {
        sfu_families(&mut e, &sfu.counters());
    }
    if let Some(turn) = &state.turn {
        turn_families(&mut e, &turn.status());
    }
    connection_families(&mut e, state);
    e.family(
        "rtcbox_rate_limited_total",
        Kind::Counter,
        "Requests refused by a per-client rate limit since start.",
    )
    .sample(
        &[("endpoint", "admin_login")],
        metrics::LOGIN_RATE_LIMITED.get(),
    )
    .sample(&[("endpoint", "token")], metrics::TOKEN_RATE_LIMITED.get());
    e.single(
        "rtcbox_public_ip_changes_total",
        Kind::Counter,
        "Times the advertised public IP address changed since start.",
        metrics::PUBLIC_IP_CHANGES.get(),
    );
    tls_families(&mut e, state);
    e.finish()
}

fn sfu_families(e: &mut Exposition, c: &crate::sfu::counters::SfuCounters) {
    let gauges = [
        ("rtcbox_sfu_rooms", "Rooms open now.", c.rooms.get()),
        (
            "rtcbox_sfu_participants",
            "Participants in rooms now.",
            c.participants.get(),
        ),
        ("rtcbox_sfu_tracks", "Tracks published now.", c.tracks.get()),
        (
            "rtcbox_sfu_subscriptions",
            "Subscriptions now (one per subscriber and track).",
            c.subscriptions.get(),
        ),
    ];
    for (name, help, value) in gauges {
        e.single(name, Kind::Gauge, help, value);
    }
    let counters = [
        (
            "rtcbox_sfu_packets_received_total",
            "RTP packets received from publishers.",
            c.packets_received.get(),
        ),
        (
            "rtcbox_sfu_received_bytes_total",
            "RTP payload bytes received from publishers.",
            c.bytes_received.get(),
        ),
        (
            "rtcbox_sfu_packets_forwarded_total",
            "RTP packets forwarded to subscribers (one per subscriber).",
            c.packets_forwarded.get(),
        ),
        (
            "rtcbox_sfu_forwarded_bytes_total",
            "RTP payload bytes forwarded to subscribers.",
            c.bytes_forwarded.get(),
        ),
        (
            "rtcbox_sfu_subscriber_packets_lost_total",
            "Packets subscribers reported lost on the way to them (RTCP receiver reports).",
            c.packets_lost_to_subscribers.get(),
        ),
        (
            "rtcbox_sfu_keyframe_requests_total",
            "Keyframe requests (PLI/FIR) sent to publishers.",
            c.keyframe_requests.get(),
        ),
    ];
    for (name, help, value) in counters {
        e.single(name, Kind::Counter, help, value);
    }
    e.family(
        "rtcbox_sfu_nacks_total",
        Kind::Counter,
        "NACKs (retransmission requests): sent by subscribers to us, and by us to publishers.",
    )
    .sample(
        &[("direction", "from_subscribers")],
        c.nacks_from_subscribers.get(),
    )
    .sample(
        &[("direction", "to_publishers")],
        c.nacks_to_publishers.get(),
    );
    e.family(
        "rtcbox_sfu_bitrate_bits_per_second",
        Kind::Gauge,
        "RTP payload bitrate over the last 2 s, received from publishers and forwarded.",
    )
    .sample(&[("direction", "received")], c.bitrate_received.get())
    .sample(&[("direction", "forwarded")], c.bitrate_forwarded.get());
}

fn turn_families(e: &mut Exposition, status: &crate::turn::TurnStatus) {
    let stats = &status.stats;
    e.single(
        "rtcbox_turn_allocations",
        Kind::Gauge,
        "TURN allocations alive now.",
        stats.allocations,
    );
    e.single(
        "rtcbox_turn_relayed_bytes_total",
        Kind::Counter,
        "Payload bytes relayed by TURN, both directions.",
        stats.bytes_relayed,
    );
    e.family(
        "rtcbox_turn_peers_refused_total",
        Kind::Counter,
        "Relay peers refused by the relay policy, by reason.",
    );
    for (reason, count) in &stats.denials {
        e.sample(&[("reason", &reason.to_string())], count);
    }
    e.family(
        "rtcbox_turn_allocations_refused_total",
        Kind::Counter,
        "TURN allocations refused: quota (the user or the client address held its quota), \
         capacity (the server was full or no relay port was free).",
    )
    .sample(&[("reason", "quota")], stats.quota_refusals)
    .sample(&[("reason", "capacity")], stats.capacity_refusals);
    let counters = [
        (
            "rtcbox_turn_auth_failures_total",
            "TURN requests refused for bad or expired credentials.",
            stats.auth_failures,
        ),
        (
            "rtcbox_turn_error_answers_suppressed_total",
            "TURN error answers held back by the rate limit.",
            stats.errors_suppressed,
        ),
        (
            "rtcbox_turn_dropped_over_bandwidth_total",
            "Packets dropped because an allocation exceeded its bandwidth cap.",
            stats.dropped_over_bandwidth,
        ),
        (
            "rtcbox_turn_connections_closed_unauthenticated_total",
            "TURN TCP/TLS connections closed because no allocation came in time.",
            status.streams.closed_unauthenticated,
        ),
    ];
    for (name, help, value) in counters {
        e.single(name, Kind::Counter, help, value);
    }
}

/// Open connections and refusals of every stream listener, TURN's TCP/TLS ones included.
fn connection_families(e: &mut Exposition, state: &AdminState) {
    let turn = state.turn.as_ref().map(|t| t.status().streams);
    e.family(
        "rtcbox_connections_open",
        Kind::Gauge,
        "Connections open now, per stream listener.",
    );
    for caps in &state.connection_caps {
        e.sample(&[("listener", caps.name())], caps.open());
    }
    if let Some(turn) = &turn {
        e.sample(&[("listener", "TURN TCP/TLS")], turn.open);
    }
    e.family(
        "rtcbox_connections_refused_total",
        Kind::Counter,
        "Connections refused by the connection caps, per listener and reason (per_address: \
         too many from one address; full: every slot taken).",
    );
    for caps in &state.connection_caps {
        let refused = caps.refusals();
        e.sample(
            &[("listener", caps.name()), ("reason", "per_address")],
            refused.per_address,
        )
        .sample(
            &[("listener", caps.name()), ("reason", "full")],
            refused.full,
        );
    }
    if let Some(turn) = &turn {
        e.sample(
            &[("listener", "TURN TCP/TLS"), ("reason", "per_address")],
            turn.refused_per_address,
        )
        .sample(
            &[("listener", "TURN TCP/TLS"), ("reason", "full")],
            turn.refused_full,
        );
    }
}

/// The served certificate and, with ACME, the renewal loop.
fn tls_families(e: &mut Exposition, state: &AdminState) {
    if let Some(certificates) = &state.certificates {
        let info = certificates.info();
        e.single(
            "rtcbox_certificate_expiry_timestamp_seconds",
            Kind::Gauge,
            "When the served certificate expires (unix seconds).",
            info.not_after,
        );
        e.single(
            "rtcbox_certificate_publicly_trusted",
            Kind::Gauge,
            "1 when browsers trust the served certificate (ACME, or files with a public chain).",
            u8::from(info.publicly_trusted),
        );
    }
    let Some(acme) = &state.acme else {
        return;
    };
    let status = acme.status();
    e.family(
        "rtcbox_acme_state",
        Kind::Gauge,
        "The ACME renewal loop's state: 1 for the current one.",
    );
    for s in ["starting", "ordering", "valid", "failed"] {
        e.sample(&[("state", s)], u8::from(status.state == s));
    }
    if let Some(at) = status.next_attempt {
        e.single(
            "rtcbox_acme_next_attempt_timestamp_seconds",
            Kind::Gauge,
            "When the ACME loop orders next: renewal or retry (unix seconds).",
            at,
        );
    }
    if let Some(at) = status.last_success {
        e.single(
            "rtcbox_acme_last_success_timestamp_seconds",
            Kind::Gauge,
            "When this process last obtained a certificate (unix seconds).",
            at,
        );
    }
}
