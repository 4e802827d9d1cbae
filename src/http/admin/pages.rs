//! The panel's pages other than login, the wizard, verification and logs: dashboard, generated
//! configuration and settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Redirect, Response};
use livekit_protocol as proto;

use super::auth::{self, Session};
use super::views::{self, Errors, Field, FormData, Layout};
use super::wizard::{deployment, load_steps};
use super::{AdminState, unix_now};
use crate::config::{self, Layers, SettingKey, Settings};
use crate::db;
use crate::net::Cidr;
use crate::net::public_ip::{Mode, Status};
use crate::net::{Special, special};
use crate::setup::model::TlsMode;
use crate::setup::outputs::{self, Output};
use crate::setup::wizard::Step;
use crate::turn::TurnStatus;
use crate::turn::credentials::CredentialKind;
use crate::turn::status::AllocationInfo;

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub layout: Layout,
    pub pending_restart: Vec<&'static str>,
    pub restart_by: Option<&'static str>,
    /// The health summary at the top.
    pub health: Vec<super::health::Item>,
    pub rooms: Option<Vec<RoomView>>,
    pub facts: Vec<(String, String)>,
    /// Per stream listener: connections open and refused.
    pub connections: Vec<(String, String)>,
    /// Whether the certificate row offers "Renew now" (the certificate comes from ACME).
    pub renew_certificate: bool,
    /// Whether the public IP row offers "Check now" (the public IP is followed).
    pub check_public_ip: bool,
    /// The TURN server; `None` when it does not run in this process.
    pub turn: Option<TurnView>,
    pub last_import: Option<ImportView>,
}

/// The most recent `rtcbox import`, on the dashboard and the settings page.
pub struct ImportView {
    pub when: String,
    pub sources: String,
    pub settings: Vec<String>,
}

impl ImportView {
    fn new(record: db::imports::ImportRecord) -> Self {
        ImportView {
            when: utc_minute(record.imported_at),
            sources: record.sources,
            settings: record.settings,
        }
    }
}

/// `2026-12-04 13:10 UTC`.
pub(super) fn utc_minute(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "an unknown time".to_owned(),
    }
}

/// The last import, or an error page when the database cannot be read.
async fn last_import(state: &AdminState) -> Result<Option<ImportView>, Response> {
    db::imports::last(&state.pool)
        .await
        .map(|record| record.map(ImportView::new))
        .map_err(|e| views::internal_error("reading the last import", &e))
}

/// The TURN section of the dashboard. No secrets: usernames only (a participant identity or a
/// Matrix user ID), never passwords.
pub struct TurnView {
    pub listeners: Vec<ListenerView>,
    pub relay: String,
    pub legacy_calls: bool,
    pub allow_peers: Vec<String>,
    /// Allow-list entries that open private, loopback or link-local addresses to credential
    /// holders.
    pub risky_allow: Vec<String>,
    pub counters: Vec<(String, String)>,
    pub allocations: Vec<AllocationView>,
}

pub struct ListenerView {
    pub transport: String,
    pub addr: String,
    /// Why it is not running.
    pub error: Option<String>,
}

pub struct AllocationView {
    pub client: String,
    pub user: String,
    pub kind: &'static str,
    pub relay: String,
    pub age: String,
    pub expires_in: String,
    pub bytes: String,
    pub state: String,
}

pub struct RoomView {
    pub name: String,
    pub created: String,
    pub participants: Vec<ParticipantView>,
}

pub struct ParticipantView {
    pub identity: String,
    pub joined: String,
    pub tracks: Vec<String>,
}

#[derive(Template)]
#[template(path = "outputs.html")]
pub struct OutputsPage {
    pub layout: Layout,
    pub applied: bool,
    /// Who supervises rtcbox, when the panel can restart it ("Restart now").
    pub restart_by: Option<&'static str>,
    pub missing: Vec<Step>,
    pub outputs: Vec<Output>,
    /// Reverse-proxy configurations other than the chosen one, shown folded.
    pub others: Vec<Output>,
    pub forwards: Vec<outputs::ports::PortForward>,
    /// rtcbox could not read the current well-known document: offer a box to paste it.
    pub paste_well_known: bool,
    /// A pasted document was just stored.
    pub pasted: bool,
    /// A refused paste: what was wrong, and the text as pasted.
    pub paste_error: Option<String>,
    pub paste_text: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    pub layout: Layout,
    pub restart_by: Option<&'static str>,
    pub groups: Vec<super::settings_form::Group>,
    pub pending_restart: Vec<&'static str>,
    pub flash: Option<String>,
    pub keys_pinned: bool,
    pub api_key: String,
    pub password_errors: Errors,
    pub last_import: Option<ImportView>,
}

pub async fn dashboard(State(state): State<Arc<AdminState>>, session: Session) -> Response {
    let steps = match load_steps(&state).await {
        Ok(steps) => steps,
        Err(response) => return response,
    };
    let pending_restart = match pending_restart(&state).await {
        Ok(keys) => keys,
        Err(response) => return response,
    };
    let last_import = match last_import(&state).await {
        Ok(last) => last,
        Err(response) => return response,
    };
    let rooms = match &state.sfu {
        Some(sfu) => sfu.call(|core, _| snapshot(core)).await.ok(),
        None => None,
    };
    let now_ms = unix_now() * 1000;
    let rooms = rooms.map(|rooms| {
        rooms
            .into_iter()
            .map(|(room, participants)| RoomView {
                name: room.name,
                created: ago(now_ms, room.creation_time_ms.max(room.creation_time * 1000)),
                participants: participants
                    .into_iter()
                    .map(|p| ParticipantView {
                        identity: p.identity,
                        joined: ago(now_ms, p.joined_at_ms.max(p.joined_at * 1000)),
                        tracks: p.tracks.iter().map(track_label).collect(),
                    })
                    .collect(),
            })
            .collect()
    });
    let mut facts = vec![("rtcbox version".to_owned(), crate::VERSION_LINE.to_owned())];
    if let Some(hs) = &steps.homeserver {
        facts.push(("Homeserver".to_owned(), hs.server_name.clone()));
        let version = if hs.synapse_version.is_empty() {
            hs.discovered
                .synapse_version
                .clone()
                .unwrap_or_else(|| "unknown".into())
        } else {
            hs.synapse_version.clone()
        };
        facts.push(("Synapse version".to_owned(), version));
    }
    facts.push((
        "Public URL for clients".to_owned(),
        state.settings.public_url.to_string(),
    ));
    let public_ip = state.public_ip.as_ref().map(|handle| handle.status());
    facts.push((
        PUBLIC_IP_FACT.to_owned(),
        public_ip_fact(public_ip.as_ref(), state.settings.node_ip, unix_now()),
    ));
    let media = live_media(&state).await;
    let addresses = |list: &[std::net::SocketAddr]| {
        if list.is_empty() {
            "—".to_owned()
        } else {
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    facts.push(("Media (UDP)".to_owned(), addresses(&media.udp)));
    facts.push(("Media (ICE-TCP)".to_owned(), addresses(&media.tcp)));
    if let Some(sfu) = &state.sfu {
        facts.extend(media_facts(&sfu.counters()));
    }
    facts.extend(certificate_facts(
        state.certificates.as_ref().map(|c| c.info()).as_ref(),
        state.acme.as_ref().map(|a| a.status()).as_ref(),
        unix_now(),
    ));
    // Connection counters get a card of their own: with them, "This server" grew taller than
    // a laptop screen.
    let mut connections = Vec::new();
    for caps in &state.connection_caps {
        let refused = caps.refusals();
        connections.push((
            capitalised(caps.name()),
            format!(
                "{} open; refused since start: {} (too many from one address), {} (all {} taken)",
                caps.open(),
                refused.per_address,
                refused.full,
                caps.limits().total
            ),
        ));
    }
    views::render(&DashboardPage {
        layout: session.layout("Dashboard", "dashboard"),
        health: super::health::summary(&super::health::Inputs {
            setup_done: steps.is_complete(Step::Review),
            next_step: steps.first_incomplete(),
            pending_restart: &pending_restart,
            public_ip: public_ip.as_ref(),
            tls_mode: state.running().tls_mode,
            certificate: state.certificates.as_ref().map(|c| c.info()).as_ref(),
            acme: state.acme.as_ref().map(|a| a.status()).as_ref(),
            turn_failures: state
                .turn
                .as_ref()
                .map(|t| {
                    t.status()
                        .listeners
                        .iter()
                        .filter_map(|l| {
                            let error = l.error.as_ref()?;
                            Some((format!("TURN over {}", l.transport), error.clone()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            last_checks: state
                .last_checks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|last| {
                    let failed = last
                        .checks
                        .iter()
                        .filter(|c| c.status == crate::setup::verify::Status::Fail)
                        .count();
                    (failed, last.checks.len(), last.at)
                }),
            now: unix_now(),
        }),
        pending_restart,
        restart_by: restart_by(&state),
        rooms,
        facts,
        connections,
        renew_certificate: state.acme.is_some(),
        check_public_ip: public_ip.is_some_and(|s| s.mode == Mode::Automatic),
        turn: state.turn.as_ref().map(|turn| turn_view(&turn.status())),
        last_import,
    })
}

/// What the dashboard shows of the TURN server's status.
pub fn turn_view(status: &TurnStatus) -> TurnView {
    let listeners = status
        .listeners
        .iter()
        .map(|l| ListenerView {
            transport: if l.https {
                format!("HTTPS and TURN over {}", l.transport)
            } else {
                l.transport.to_string()
            },
            addr: l.addr.to_string(),
            error: l.error.as_ref().map(|e| listener_problem(e, l.addr.port())),
        })
        .collect();
    let (min, max) = status.relay_ports;
    let relay = match (status.relay_ip, min, max) {
        (_, 0, 0) => "—".to_owned(),
        (Some(ip), ..) => format!("{ip}, UDP ports {min}-{max}"),
        (None, ..) => format!("address not known yet, UDP ports {min}-{max}"),
    };
    let stats = &status.stats;
    let mut counters = vec![
        ("Allocations now".to_owned(), stats.allocations.to_string()),
        ("Relayed".to_owned(), human_bytes(stats.bytes_relayed)),
    ];
    if stats.denials.is_empty() {
        counters.push(("Peers refused".to_owned(), "none".to_owned()));
    }
    for (reason, count) in &stats.denials {
        counters.push((format!("Peers refused: {reason}"), count.to_string()));
    }
    counters.push((
        "Requests with bad or expired credentials".to_owned(),
        stats.auth_failures.to_string(),
    ));
    counters.push((
        "Error answers held back (rate limit)".to_owned(),
        stats.errors_suppressed.to_string(),
    ));
    counters.push((
        "Packets dropped over the bandwidth cap".to_owned(),
        stats.dropped_over_bandwidth.to_string(),
    ));
    counters.push((
        "Allocations refused: quota of the user or address reached".to_owned(),
        stats.quota_refusals.to_string(),
    ));
    counters.push((
        "Allocations refused: server full or no relay port free".to_owned(),
        stats.capacity_refusals.to_string(),
    ));
    let streams = &status.streams;
    counters.push((
        "TCP/TLS connections open".to_owned(),
        streams.open.to_string(),
    ));
    counters.push((
        "TCP/TLS connections refused (too many from one address)".to_owned(),
        streams.refused_per_address.to_string(),
    ));
    counters.push((
        "TCP/TLS connections refused (all taken)".to_owned(),
        streams.refused_full.to_string(),
    ));
    counters.push((
        "TCP/TLS connections closed without authenticating".to_owned(),
        streams.closed_unauthenticated.to_string(),
    ));
    let mut allocations: Vec<&AllocationInfo> = status.allocations.iter().collect();
    allocations.sort_by_key(|a| std::cmp::Reverse(a.age));
    TurnView {
        listeners,
        relay,
        legacy_calls: status.legacy_calls,
        allow_peers: status.allow_peers.clone(),
        risky_allow: status
            .allow_peers
            .iter()
            .filter(|raw| opens_the_lan(raw))
            .cloned()
            .collect(),
        counters,
        allocations: allocations.into_iter().map(allocation_view).collect(),
    }
}

fn allocation_view(a: &AllocationInfo) -> AllocationView {
    // The status names users as people read them (a participant's identity, a Matrix user ID).
    let user = if a.user.is_empty() {
        "—".to_owned()
    } else {
        a.user.clone()
    };
    let kind = match a.kind {
        CredentialKind::Participant => "call participant (LiveKit)",
        CredentialKind::Rest => "legacy 1:1 call (Synapse)",
    };
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    AllocationView {
        client: a.client.to_string(),
        user,
        kind,
        relay: a.relay.to_string(),
        age: duration(a.age),
        expires_in: duration(a.expires_in),
        bytes: human_bytes(a.bytes),
        state: format!(
            "{}, {}",
            plural(a.permissions, "permission", "permissions"),
            plural(a.channels, "channel", "channels")
        ),
    }
}

/// A listener's error, with the likely cause when the port is taken.
fn listener_problem(error: &str, port: u16) -> String {
    let lower = error.to_ascii_lowercase();
    if lower.contains("in use") && !lower.contains("coturn") {
        format!("{error} (port {port} is taken: is coturn still running?)")
    } else {
        error.to_owned()
    }
}

/// Whether an allow-list entry reaches loopback, private, carrier-grade NAT, link-local or
/// unspecified addresses.
fn opens_the_lan(raw: &str) -> bool {
    let Ok(cidr) = Cidr::parse(raw) else {
        return false;
    };
    let inside = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "fe80::1",
    ];
    let network = cidr
        .to_string()
        .split('/')
        .next()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    let lan_class = network.and_then(special).is_some_and(|class| {
        matches!(
            class,
            Special::Loopback
                | Special::Private
                | Special::SharedCgnat
                | Special::LinkLocal
                | Special::Unspecified
        )
    });
    lan_class
        || inside
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .any(|ip| cidr.contains(ip))
}

/// `512 B`, `1.5 KiB`, `12.3 MiB`, `4.0 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The SFU's traffic, from the counters `/metrics` exposes: bitrates over the last 2 s and
/// totals since start.
pub fn media_facts(c: &crate::sfu::counters::SfuCounters) -> Vec<(String, String)> {
    vec![
        (
            "Media now (last 2 s)".to_owned(),
            format!(
                "{} received from publishers, {} forwarded to subscribers",
                human_bitrate(c.bitrate_received.get()),
                human_bitrate(c.bitrate_forwarded.get())
            ),
        ),
        (
            "Media forwarded since start".to_owned(),
            format!(
                "{} packets, {}",
                c.packets_forwarded.get(),
                human_bytes(c.bytes_forwarded.get())
            ),
        ),
    ]
}

/// `0 kbit/s`, `850 kbit/s`, `2.4 Mbit/s`.
fn human_bitrate(bits_per_second: u64) -> String {
    if bits_per_second < 1_000_000 {
        format!("{} kbit/s", bits_per_second.div_ceil(1000))
    } else {
        format!("{:.1} Mbit/s", bits_per_second as f64 / 1e6)
    }
}

/// `45 s`, `3 min 5 s`, `2 h 4 min`.
fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

type RoomSnapshot = Vec<(proto::Room, Vec<proto::ParticipantInfo>)>;

fn snapshot(core: &crate::sfu::Sfu) -> RoomSnapshot {
    core.list_rooms(&[])
        .into_iter()
        .map(|room| {
            let participants = core.participants_of(&room.name).unwrap_or_default();
            (room, participants)
        })
        .collect()
}

fn track_label(track: &proto::TrackInfo) -> String {
    let kind = match proto::TrackType::try_from(track.r#type) {
        Ok(proto::TrackType::Audio) => "audio",
        Ok(proto::TrackType::Video) => "video",
        Ok(proto::TrackType::Data) => "data",
        Err(_) => "track",
    };
    let mut label = kind.to_owned();
    if !track.mime_type.is_empty() {
        label.push_str(&format!(" ({})", track.mime_type));
    }
    let layers = track
        .codecs
        .iter()
        .map(|c| c.layers.len())
        .max()
        .unwrap_or(0);
    if layers > 1 {
        label.push_str(&format!(", {layers} simulcast layers"));
    }
    if track.muted {
        label.push_str(", muted");
    }
    label
}

/// Who supervises rtcbox, when this panel can restart it.
pub fn restart_by(state: &AdminState) -> Option<&'static str> {
    state.restart.as_ref().map(|_| crate::restart::supervisor())
}

/// "Restart now": answers with a page that reloads the dashboard once rtcbox is back, then
/// stops every listener; `main` starts rtcbox again in the same process.
pub async fn restart(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    if let Err(rejected) = session.check_csrf(&form.0) {
        return rejected;
    }
    let Some(restarter) = state.restart.clone() else {
        return views::error_response(
            StatusCode::CONFLICT,
            "This panel cannot restart rtcbox here; restart it the way it was started.",
        );
    };
    restarter.request_soon();
    let mut response = views::render(&RestartingPage {
        layout: session.layout("Restarting", "dashboard"),
        supervisor: crate::restart::supervisor(),
    });
    response
        .headers_mut()
        .insert("refresh", HeaderValue::from_static("4; url=/"));
    response
}

#[derive(Template)]
#[template(path = "restarting.html")]
pub struct RestartingPage {
    pub layout: Layout,
    pub supervisor: &'static str,
}

/// Where media is advertised now: it follows the public IP.
pub(super) async fn live_media(state: &AdminState) -> super::MediaAddresses {
    match &state.sfu {
        Some(sfu) => match sfu.candidates().await {
            Ok(c) => super::MediaAddresses {
                udp: c.udp,
                tcp: c.tcp,
            },
            Err(_) => state.media.clone(),
        },
        None => state.media.clone(),
    }
}

/// The dashboard row naming the public IP (the template puts "Check now" beside it).
pub const PUBLIC_IP_FACT: &str = "Public IP";

/// What the dashboard says about the public IP: which one is advertised, how it was chosen,
/// when it was checked and when it last changed.
fn public_ip_fact(status: Option<&Status>, fixed: Option<std::net::IpAddr>, now: i64) -> String {
    let Some(status) = status else {
        return fixed.map_or_else(
            || "automatic (not followed in this process)".to_owned(),
            |ip| format!("{ip} (fixed)"),
        );
    };
    let checked = |at: Option<i64>| at.map_or_else(String::new, |at| ago(now * 1000, at * 1000));
    let mut text = match (status.mode, status.current) {
        (Mode::Fixed(ip), _) => {
            return format!(
                "{ip}, fixed (RTCBOX_NODE_IP): not checked; clear it to follow the public IP \
                 automatically"
            );
        }
        (Mode::Automatic, Some(ip)) => {
            format!("{ip}, automatic: checked {}", checked(status.checked_at))
        }
        (Mode::Automatic, None) if status.checked_at.is_none() => {
            "automatic: being detected…".to_owned()
        }
        (Mode::Automatic, None) => format!(
            "not known yet (automatic): clients outside your network cannot reach media until a \
             STUN server answers; checked {}",
            checked(status.checked_at)
        ),
    };
    if let (Some(at), Some(previous)) = (status.changed_at, status.previous) {
        text += &format!("; changed from {previous} at {}", utc_minute(at));
    }
    if let Some(error) = &status.last_error {
        text += &format!(
            "; the last check failed ({error}){}",
            if status.current.is_some() {
                ", so the address above stays in use"
            } else {
                ": check RTCBOX_STUN_SERVERS (Settings) or set a fixed IP"
            }
        );
    }
    text
}

/// Dashboard → "Check now": asks the public IP monitor to check at once.
pub async fn check_public_ip(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    if let Err(rejected) = session.check_csrf(&form.0) {
        return rejected;
    }
    let Some(public_ip) = &state.public_ip else {
        return views::error_response(
            StatusCode::CONFLICT,
            "The public IP is not followed in this process, so there is nothing to check.",
        );
    };
    if public_ip.status().mode != Mode::Automatic {
        return views::error_response(
            StatusCode::CONFLICT,
            "The public IP is fixed (RTCBOX_NODE_IP), so it is not checked. Clear that setting to \
             follow the public IP automatically.",
        );
    }
    public_ip.check_now();
    Redirect::to("/").into_response()
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "—".to_owned();
    }
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        _ => format!("{} h {} min ago", secs / 3600, (secs % 3600) / 60),
    }
}

/// Settings stored since start that the running process does not use yet.
async fn pending_restart(state: &AdminState) -> Result<Vec<&'static str>, Response> {
    let next = next_start_settings(state, &[]).await?;
    let Ok(next) = next else {
        return Ok(Vec::new());
    };
    let running = state.running();
    Ok(SettingKey::ALL
        .into_iter()
        .filter(|key| next.value(*key) != running.value(*key))
        .map(SettingKey::env_name)
        .collect())
}

/// What the next start would resolve, optionally with one stored setting replaced
/// (`Some((key, None))` deletes it).
pub(super) async fn next_start_settings(
    state: &AdminState,
    replace: &[(SettingKey, Option<String>)],
) -> Result<Result<Settings, config::ConfigError>, Response> {
    let mut stored = db::settings::all(&state.pool)
        .await
        .map_err(|e| views::internal_error("reading the settings", &e))?;
    for (key, value) in replace {
        match value {
            Some(value) => stored.insert(key.db_key().to_owned(), value.clone()),
            None => stored.remove(key.db_key()),
        };
    }
    let env = state.env.clone();
    Ok(config::resolve(&Layers {
        flags: &state.flags,
        env: &move |name| env(name),
        stored: &stored,
    }))
}

#[derive(serde::Deserialize)]
pub struct OutputsQuery {
    applied: Option<String>,
    pasted: Option<String>,
}

pub async fn outputs(
    State(state): State<Arc<AdminState>>,
    session: Session,
    Query(query): Query<OutputsQuery>,
) -> Response {
    outputs_page(
        &state,
        &session,
        query.applied.is_some(),
        query.pasted.is_some(),
        None,
    )
    .await
}

/// The admin's current well-known document, pasted on the configuration page when rtcbox could
/// not read it: stored with the homeserver step's discovery, so the generated document keeps
/// every key of it. Anything but a JSON object is refused with the reason and stores nothing.
pub async fn paste_well_known(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    let form = form.0;
    if let Err(rejected) = session.check_csrf(&form) {
        return rejected;
    }
    let text = form.get("current").map(|t| t.trim()).unwrap_or_default();
    let refuse =
        |why: String| outputs_page(&state, &session, false, false, Some((why, text.to_owned())));
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) => {
            return refuse(
                "This is JSON, but not an object ({ … }), which a well-known document is.".into(),
            )
            .await;
        }
        Err(error) => {
            return refuse(format!(
                "This is not valid JSON ({error}). Paste the whole file, from {{ to }}."
            ))
            .await;
        }
    };
    let steps = match load_steps(&state).await {
        Ok(steps) => steps,
        Err(response) => return response,
    };
    let Some(mut homeserver) = steps.homeserver else {
        return views::error_response(
            StatusCode::CONFLICT,
            "Answer the wizard's homeserver step first; nothing was changed.",
        );
    };
    homeserver.discovered.well_known = Some(object);
    let data = serde_json::to_string(&homeserver).expect("wizard steps serialise");
    if let Err(error) =
        db::admin::save_wizard_step(&state.pool, "homeserver", &data, true, unix_now()).await
    {
        return views::internal_error("saving the pasted well-known document", &error);
    }
    Redirect::to("/outputs?pasted=1#well-known-client").into_response()
}

async fn outputs_page(
    state: &AdminState,
    session: &Session,
    applied: bool,
    pasted: bool,
    paste_refused: Option<(String, String)>,
) -> Response {
    let (all, forwards, chosen_proxy, missing, paste_well_known) = match deployment(state).await {
        Ok(d) => {
            let chosen = match &d.tls {
                TlsMode::ReverseProxy { proxy } => Some(format!("proxy-{}", proxy.slug())),
                _ => None,
            };
            (
                outputs::all(&d),
                outputs::ports::port_forwards(&d),
                chosen,
                Vec::new(),
                d.existing_well_known.is_none(),
            )
        }
        Err(missing) => (Vec::new(), Vec::new(), None, missing, false),
    };
    let (outputs, others): (Vec<Output>, Vec<Output>) = all
        .into_iter()
        .partition(|o| !o.id.starts_with("proxy-") || chosen_proxy.as_deref() == Some(o.id));
    let refused = paste_refused.is_some();
    let (paste_error, paste_text) =
        paste_refused.map_or((None, String::new()), |(e, t)| (Some(e), t));
    let mut response = views::render(&OutputsPage {
        restart_by: restart_by(state),
        layout: session.layout("Configuration", "outputs"),
        applied,
        missing,
        outputs,
        others,
        forwards,
        paste_well_known: paste_well_known || refused,
        pasted,
        paste_error,
        paste_text,
    });
    if refused && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    response
}

/// One generated file as a download.
pub async fn download(
    State(state): State<Arc<AdminState>>,
    _session: Session,
    Path(id): Path<String>,
) -> Response {
    let Ok(d) = deployment(&state).await else {
        return views::error_response(
            StatusCode::CONFLICT,
            "Finish the setup wizard first; the configuration files are generated from its answers.",
        );
    };
    let Some(output) = outputs::by_id(&d, &id) else {
        return views::error_response(
            StatusCode::NOT_FOUND,
            "There is no such configuration file.",
        );
    };
    let mut response = output.text.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("{}; charset=utf-8", output.media_type)) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", output.filename))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The dashboard's certificate rows: what is served, and what ACME is doing.
fn certificate_facts(
    served: Option<&crate::tls::CertificateInfo>,
    acme: Option<&crate::acme::AcmeStatus>,
    now: i64,
) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(info) = served {
        let source = match info.source.as_str() {
            "acme" => "from the ACME CA",
            "self-signed" => "self-signed (browsers do not trust it)",
            other => other,
        };
        rows.push((
            "Certificate".to_owned(),
            format!(
                "{} — {source}, valid until {} ({})",
                info.names.join(", "),
                utc_minute(info.not_after),
                until(now, info.not_after)
            ),
        ));
        rows.push((
            "turns: for clients".to_owned(),
            if info.publicly_trusted {
                "offered: browsers trust this certificate".to_owned()
            } else {
                "not offered: browsers would reject this certificate (TURN over TLS is handed \
                 out once one from a CA is installed: ACME or files)"
                    .to_owned()
            },
        ));
    }
    if let Some(status) = acme {
        let state = match status.state {
            "" | "starting" => "starting",
            "ordering" => "ordering a certificate",
            "valid" => "certificate valid",
            "failed" => "failed, retry scheduled",
            other => other,
        };
        let next = status
            .next_attempt
            .map(|at| format!("; next attempt {} ({})", utc_minute(at), until(now, at)))
            .unwrap_or_default();
        rows.push(("ACME".to_owned(), format!("{state}{next}")));
        for record in &status.pending_dns {
            let (label, note) = if record.by_hand {
                (
                    "DNS record to create",
                    "create it at your DNS provider; rtcbox tells the CA once it is visible",
                )
            } else {
                (
                    "DNS record published",
                    "rtcbox tells the CA once the DNS server serves it",
                )
            };
            rows.push((
                label.to_owned(),
                format!("{} TXT \"{}\" — {note}", record.name, record.value),
            ));
        }
        if let Some(error) = &status.last_error {
            rows.push(("ACME last error".to_owned(), error.clone()));
        }
    }
    rows
}

/// `in 3 days`, `in 5 min`, `2 h ago`.
fn until(now: i64, at: i64) -> String {
    let delta = at - now;
    let span = delta.unsigned_abs();
    let amount = match span {
        0..120 => format!("{span} s"),
        120..7200 => format!("{} min", span / 60),
        7200..172_800 => format!("{} h", span / 3600),
        _ => format!("{} days", span / 86_400),
    };
    if delta >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

pub async fn settings(State(state): State<Arc<AdminState>>, session: Session) -> Response {
    render_settings(&state, &session, None, None, Errors::new(), StatusCode::OK).await
}

async fn render_settings(
    state: &AdminState,
    session: &Session,
    flash: Option<String>,
    rejected: Option<Rejected>,
    password_errors: Errors,
    status: StatusCode,
) -> Response {
    let stored = match db::settings::all(&state.pool).await {
        Ok(stored) => stored,
        Err(error) => return views::internal_error("reading the settings", &error),
    };
    let pending_restart = match pending_restart(state).await {
        Ok(keys) => keys,
        Err(response) => return response,
    };
    let last_import = match last_import(state).await {
        Ok(last) => last,
        Err(response) => return response,
    };
    let running = state.running();
    let next = match next_start_settings(state, &[]).await {
        Ok(Ok(next)) => next,
        Ok(Err(_)) => running.clone(),
        Err(response) => return response,
    };
    let (entered, errors) = match &rejected {
        Some(r) => (Some(&r.form), r.errors.clone()),
        None => (None, BTreeMap::new()),
    };
    let groups = super::settings_form::groups(&running, &next, &stored, entered, &errors);
    let s = &running;
    let mut response = views::render(&SettingsPage {
        restart_by: restart_by(state),
        layout: session.layout("Settings", "settings"),
        groups,
        pending_restart,
        flash,
        keys_pinned: s.is_pinned(SettingKey::ApiKey) || s.is_pinned(SettingKey::ApiSecret),
        api_key: s.api_key.to_string(),
        password_errors,
        last_import,
    });
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}

/// A settings form that was refused: what was typed, and why, by setting.
struct Rejected {
    form: std::collections::HashMap<String, String>,
    errors: BTreeMap<SettingKey, String>,
}

impl Rejected {
    fn one(key: SettingKey, typed: String, message: String) -> Rejected {
        Rejected {
            form: std::collections::HashMap::from([(key.db_key().to_owned(), typed)]),
            errors: BTreeMap::from([(key, message)]),
        }
    }
}

/// The settings page after a successful change, with a message saying what happened.
async fn settings_saved(state: &AdminState, session: &Session, message: String) -> Response {
    render_settings(
        state,
        session,
        Some(message),
        None,
        Errors::new(),
        StatusCode::OK,
    )
    .await
}

/// The settings form: every field at once (`form=all`), or one setting (`key`, `value`: scripts
/// and older pages). Validated by resolving the whole configuration as the next start would; if
/// anything does not resolve, it is refused and nothing is stored.
pub async fn settings_submit(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    let form = form.0;
    if let Err(rejected) = session.check_csrf(&form) {
        return rejected;
    }
    let running = state.running();
    let (changes, typed) = if form.get("form").map(String::as_str) == Some("all") {
        let stored = match db::settings::all(&state.pool).await {
            Ok(stored) => stored,
            Err(error) => return views::internal_error("reading the settings", &error),
        };
        let next = match next_start_settings(&state, &[]).await {
            Ok(Ok(next)) => next,
            Ok(Err(_)) => running.clone(),
            Err(response) => return response,
        };
        let changes = super::settings_form::changes(&form, &running, &next, &stored);
        (changes, form.clone())
    } else {
        let key_name = form.get("key").map(String::as_str).unwrap_or_default();
        let Some(key) = SettingKey::ALL.into_iter().find(|k| k.db_key() == key_name) else {
            return views::error_response(StatusCode::BAD_REQUEST, "There is no such setting.");
        };
        if super::settings_form::meta(key).is_none() || running.is_pinned(key) {
            return views::error_response(
                StatusCode::FORBIDDEN,
                &format!(
                    "{} cannot be changed here (it is locked by the environment or command line, or has its own form).",
                    key.env_name()
                ),
            );
        }
        let value = form
            .get("value")
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        let typed = std::collections::HashMap::from([(key.db_key().to_owned(), value.clone())]);
        (vec![(key, Some(value).filter(|v| !v.is_empty()))], typed)
    };
    if changes.is_empty() {
        return settings_saved(&state, &session, "Nothing was changed.".to_owned()).await;
    }
    let next = match next_start_settings(&state, &changes).await {
        Ok(Ok(next)) => next,
        Ok(Err(error)) => {
            // The refused setting, by the name the error gives; else the first one changed.
            let key = SettingKey::ALL
                .into_iter()
                .find(|k| k.env_name() == error.setting)
                .unwrap_or(changes[0].0);
            let mut rejected = Rejected::one(key, String::new(), error.to_string());
            rejected.form = typed;
            return render_settings(
                &state,
                &session,
                Some("Nothing was saved: one value does not work (marked below).".to_owned()),
                Some(rejected),
                Errors::new(),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
        Err(response) => return response,
    };
    let rows: Vec<(&str, Option<String>)> = changes
        .iter()
        .map(|(key, value)| (key.db_key(), value.clone()))
        .collect();
    if let Err(error) = db::settings::set_many(&state.pool, &rows).await {
        return views::internal_error("saving the settings", &error);
    }
    // One model: the wizard's answers that hold these values follow them, so the generated
    // files describe what rtcbox will run with.
    if let Err(response) = follow_in_wizard(&state, &next).await {
        return response;
    }
    let live = state.apply_live(&next);
    let names: Vec<&'static str> = changes.iter().map(|(key, _)| key.env_name()).collect();
    tracing::info!(settings = ?names, "settings changed in the admin panel");
    let (now, later): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| live.contains(n));
    let message = match (names.as_slice(), now.is_empty()) {
        ([one], true) => format!("Saved {one}. It takes effect when rtcbox restarts."),
        ([one], false) => format!("Saved {one}. It is in effect now."),
        _ => {
            let mut message = format!("Saved {}.", names.join(", "));
            if !now.is_empty() {
                message += &format!(" In effect now: {}.", now.join(", "));
            }
            if !later.is_empty() {
                message += &format!(" Takes effect when rtcbox restarts: {}.", later.join(", "));
            }
            message
        }
    };
    settings_saved(&state, &session, message).await
}

/// Updates the wizard's network answers to the settings the next start resolves.
async fn follow_in_wizard(state: &AdminState, next: &Settings) -> Result<(), Response> {
    let mut steps = load_steps(state).await?;
    let Some(network) = steps.network.as_mut() else {
        return Ok(());
    };
    if !network.follow_settings(next) {
        return Ok(());
    }
    let data = serde_json::to_string(network).unwrap_or_default();
    let complete = steps.is_complete(Step::Network);
    db::admin::save_wizard_step(&state.pool, Step::Network.id(), &data, complete, unix_now())
        .await
        .map_err(|error| views::internal_error("updating the wizard's answers", &error))
}

/// A new LiveKit key pair, used from the next start (tokens signed with the old one stop working then).
pub async fn rotate_keys(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    if let Err(rejected) = session.check_csrf(&form.0) {
        return rejected;
    }
    if state.settings.is_pinned(SettingKey::ApiKey)
        || state.settings.is_pinned(SettingKey::ApiSecret)
    {
        return views::error_response(
            StatusCode::FORBIDDEN,
            "The API key or secret is set in rtcbox's environment or command line; rotate it there.",
        );
    }
    let key = match db::settings::rotate_key_pair(&state.pool).await {
        Ok(key) => key,
        Err(error) => return views::internal_error("storing a new key pair", &error),
    };
    tracing::info!(api_key = %key, "API key pair rotated in the admin panel; used from the next start");
    settings_saved(&state, &session, format!(
            "Generated the new API key {key} and its secret. Restart rtcbox to use them; until then \
             the current pair stays in use."
        )).await
}

/// "Renew now" on the dashboard: wakes the ACME task, which orders a new certificate at once
/// (after a port forward was fixed, say); the dashboard shows how it goes.
pub async fn renew_certificate(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    if let Err(rejected) = session.check_csrf(&form.0) {
        return rejected;
    }
    let Some(acme) = &state.acme else {
        return views::error_response(
            StatusCode::CONFLICT,
            "rtcbox does not get its certificate from an ACME CA (RTCBOX_TLS_MODE is not acme), \
             so there is nothing to renew here.",
        );
    };
    acme.renew_now();
    Redirect::to("/").into_response()
}

pub async fn change_password(
    State(state): State<Arc<AdminState>>,
    session: Session,
    form: FormData,
) -> Response {
    let form = form.0;
    if let Err(rejected) = session.check_csrf(&form) {
        return rejected;
    }
    let current_hash = match db::admin::account(&state.pool).await {
        Ok(db::admin::AccountState::Ready { password_hash }) => password_hash,
        Ok(_) => return Redirect::to("/setup").into_response(),
        Err(error) => return views::internal_error("reading the admin account", &error),
    };
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let mut errors = Errors::new();
    match auth::verify_password(field("current"), current_hash).await {
        Ok(true) => {}
        Ok(false) => {
            errors.insert("current", "That is not the current password.".into());
        }
        Err(error) => return views::internal_error("checking the password", &error),
    }
    if let Some(problems) = auth::password_problems(&field("password"), &field("confirm")) {
        errors.extend(problems);
    }
    if !errors.is_empty() {
        return render_settings(
            &state,
            &session,
            None,
            None,
            errors,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let hash = match auth::hash_password(field("password")).await {
        Ok(hash) => hash,
        Err(error) => return views::internal_error("hashing the new password", &error),
    };
    if let Err(error) =
        db::admin::change_password(&state.pool, &hash, &session.id, unix_now()).await
    {
        return views::internal_error("storing the password", &error);
    }
    tracing::info!("admin password changed; other sessions ended");
    settings_saved(
        &state,
        &session,
        "Password changed. Other browsers were logged out.".into(),
    )
    .await
}

pub async fn not_found() -> Response {
    views::error_response(StatusCode::NOT_FOUND, "There is no such page.")
}

/// Field models for the password form, shared by the template.
pub fn password_fields(errors: &Errors) -> Vec<Field> {
    vec![
        Field::text("current", "Current password", "")
            .kind("password")
            .with_errors(errors),
        Field::text("password", "New password", "")
            .kind("password")
            .help("At least 10 characters.")
            .with_errors(errors),
        Field::text("confirm", "Repeat the new password", "")
            .kind("password")
            .with_errors(errors),
    ]
}

#[cfg(test)]
mod turn_view_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allow_list_entries_that_open_the_lan() {
        for risky in [
            "127.0.0.0/8",
            "192.168.1.50",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "0.0.0.0/0",
            "::1",
            "fd00::/8",
            "::/0",
            "192.0.0.0/2",
        ] {
            assert!(opens_the_lan(risky), "{risky}");
        }
        for harmless in ["8.8.8.8", "203.0.113.0/24", "2606:4700::/32", "not a block"] {
            assert!(!opens_the_lan(harmless), "{harmless}");
        }
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
        assert_eq!(duration(Duration::from_secs(0)), "0 s");
        assert_eq!(duration(Duration::from_secs(605)), "10 min 5 s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 120)), "3 h 2 min");
    }

    #[test]
    fn listener_errors_suggest_coturn_only_when_the_port_is_taken() {
        assert_eq!(
            listener_problem("Address already in use (os error 98)", 3478),
            "Address already in use (os error 98) (port 3478 is taken: is coturn still running?)"
        );
        assert_eq!(
            listener_problem("port 3478 in use — is coturn still running?", 3478),
            "port 3478 in use — is coturn still running?"
        );
        assert_eq!(
            listener_problem("Permission denied (os error 13)", 443),
            "Permission denied (os error 13)"
        );
    }

    #[test]
    fn an_unpublished_status_reads_as_empty() {
        let view = turn_view(&TurnStatus::default());
        assert!(view.listeners.is_empty() && view.allocations.is_empty());
        assert_eq!(view.relay, "—");
        assert!(
            view.counters
                .contains(&("Peers refused".into(), "none".into()))
        );
        assert!(view.risky_allow.is_empty());
    }
}

#[cfg(test)]
mod certificate_facts_tests {
    use super::*;

    #[test]
    fn rows_say_what_is_served_and_what_acme_does() {
        let now = 1_800_000_000;
        let served = crate::tls::CertificateInfo {
            source: "self-signed".into(),
            names: vec!["rtc.example.org".into()],
            not_after: now + 300 * 86_400,
            publicly_trusted: false,
        };
        let failed = crate::acme::AcmeStatus {
            state: "failed",
            next_attempt: Some(now + 120),
            last_error: Some("the CA could not reach …: forward port 80".into()),
            last_success: None,
            pending_dns: vec![crate::acme::PendingRecord {
                name: "_acme-challenge.rtc.example.org".into(),
                value: "gfj9Xq".into(),
                by_hand: true,
            }],
        };
        let rows = certificate_facts(Some(&served), Some(&failed), now);
        let text: Vec<String> = rows.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        assert_eq!(
            text,
            [
                "Certificate: rtc.example.org — self-signed (browsers do not trust it), valid until 2027-11-11 08:00 UTC (in 300 days)",
                "turns: for clients: not offered: browsers would reject this certificate (TURN over TLS is handed out once one from a CA is installed: ACME or files)",
                "ACME: failed, retry scheduled; next attempt 2027-01-15 08:02 UTC (in 2 min)",
                "DNS record to create: _acme-challenge.rtc.example.org TXT \"gfj9Xq\" — create it at your DNS provider; rtcbox tells the CA once it is visible",
                "ACME last error: the CA could not reach …: forward port 80",
            ]
        );
        assert!(certificate_facts(None, None, now).is_empty());
        let trusted = crate::tls::CertificateInfo {
            source: "acme".into(),
            publicly_trusted: true,
            ..served
        };
        let rows = certificate_facts(Some(&trusted), None, now);
        assert_eq!(
            rows[1],
            (
                "turns: for clients".to_owned(),
                "offered: browsers trust this certificate".to_owned()
            )
        );
        assert_eq!(until(now, now - 7200), "2 h ago");
    }
}

/// `text` with its first letter in upper case ("public HTTP" → "Public HTTP").
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
