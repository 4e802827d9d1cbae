//! The verification page: live checks of a deployment, each saying pass/fail, what was seen and
//! exactly what to change.
//!
//! [`run_all`] looks at the deployment from this machine as a client would: the client
//! well-known, Synapse's `/versions` and `rtc/transports`, the authorization service and the
//! SFU's WebSocket through the reverse proxy, the certificates, the public address (STUN), and
//! the media ports (STUN binding to rtcbox's own UDP and ICE-TCP ports, at the public address and
//! on the LAN), and the TURN server (a real TURN client, [`crate::turn::client`], allocating over
//! UDP, TCP and TLS with the SFU's participant credentials and, for legacy 1:1 calls, with
//! Synapse-style credentials; at the public address and on the LAN). The checks run concurrently; each is bounded by [`CHECK_TIMEOUT`], so the whole
//! run takes at most that long. The judgement lives in [`evaluate`] as pure functions of what was
//! observed; this file only gathers the observations.

pub mod causes;
pub mod evaluate;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use serde::Serialize;
use tokio::sync::OnceCell;

use self::evaluate::{
    Followed, LegacyExpect, Proto, PublicProbe, TurnExpect, TurnPublic, WellKnownExpect,
};
use super::discover::{self, STUN_TIMEOUT};
use super::fetch::{FetchError, Fetched, HttpClient};
use super::model::Deployment;
use crate::config::ApiKey;
use crate::livekit::token::{self, VideoGrant};
use crate::matrix::ServerName;
use crate::rooms::RoomOptions;
use crate::secret::Secret;
use crate::sfu::SfuHandle;
use crate::turn::client::{self as turn_client, Dial, ProbeReport, ProbeSpec};
use crate::turn::credentials::{rest_password, rest_username};
use crate::turn::{Transport, TurnHandle};

/// No check takes longer than this.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(6);

/// The checks' ids, in the order [`run_all`] returns them.
pub mod ids {
    pub const WELL_KNOWN: &str = "well-known";
    pub const SYNAPSE_VERSIONS: &str = "synapse-versions";
    pub const RTC_TRANSPORTS: &str = "rtc-transports";
    pub const AUTH_HEALTHZ: &str = "auth-healthz";
    pub const SFU_WEBSOCKET: &str = "sfu-websocket";
    pub const TLS: &str = "tls";
    pub const PUBLIC_IP: &str = "public-ip";
    pub const MEDIA_UDP: &str = "media-udp";
    pub const MEDIA_TCP: &str = "media-tcp";
    pub const TURN_UDP: &str = "turn-udp";
    pub const TURN_TCP: &str = "turn-tcp";
    pub const TURN_TLS: &str = "turn-tls";
    pub const TURN_LEGACY: &str = "turn-legacy";

    /// Every id, in order.
    pub const ALL: [&str; 13] = [
        WELL_KNOWN,
        SYNAPSE_VERSIONS,
        RTC_TRANSPORTS,
        AUTH_HEALTHZ,
        SFU_WEBSOCKET,
        TLS,
        PUBLIC_IP,
        MEDIA_UDP,
        MEDIA_TCP,
        TURN_UDP,
        TURN_TCP,
        TURN_TLS,
        TURN_LEGACY,
    ];
}

/// The human title of check `id` (e.g. to show placeholders while the checks run).
pub fn title(id: &str) -> &'static str {
    match id {
        ids::WELL_KNOWN => "Client well-known (rtc_foci)",
        ids::SYNAPSE_VERSIONS => "Synapse features (/versions)",
        ids::RTC_TRANSPORTS => "Synapse rtc/transports endpoint",
        ids::AUTH_HEALTHZ => "Authorization service through the proxy",
        ids::SFU_WEBSOCKET => "SFU WebSocket through the proxy",
        ids::TLS => "HTTPS certificates",
        ids::PUBLIC_IP => "Public IP address",
        ids::MEDIA_UDP => "Media port (UDP)",
        ids::MEDIA_TCP => "Media port (ICE-TCP)",
        ids::TURN_UDP => "TURN over UDP",
        ids::TURN_TCP => "TURN over TCP",
        ids::TURN_TLS => "TURN over TLS (turns:)",
        ids::TURN_LEGACY => "TURN for legacy 1:1 calls (Synapse's credentials)",
        _ => "Check",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    /// Not available yet in this version, or cannot be checked from here (the detail says why).
    Unavailable,
}

impl Status {
    /// For display: "pass", "fail", "warning", "not available".
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warning",
            Status::Unavailable => "not available",
        }
    }

    /// Pass < Unavailable < Warn < Fail.
    fn severity(self) -> u8 {
        match self {
            Status::Pass => 0,
            Status::Unavailable => 1,
            Status::Warn => 2,
            Status::Fail => 3,
        }
    }
}

/// One check's result. `detail` is what was observed, `fix` exactly what to change; either may
/// hold several sentences on separate lines (`\n`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
    /// Why it did not pass, as far as its observations show ([`causes::group`] finds the ones
    /// several checks share); empty for a pass.
    pub causes: Vec<causes::Cause>,
}

impl Check {
    pub fn new(id: &'static str, status: Status, detail: String, fix: Option<String>) -> Check {
        Check {
            id,
            title: title(id),
            status,
            detail,
            fix,
            causes: Vec::new(),
        }
    }

    /// The check with `causes` attached, unless it passed.
    fn caused_by(mut self, causes: impl IntoIterator<Item = Option<causes::Cause>>) -> Check {
        if self.status != Status::Pass {
            for cause in causes.into_iter().flatten() {
                if !self.causes.contains(&cause) {
                    self.causes.push(cause);
                }
            }
        }
        self
    }
}

/// Where [`run_all_reporting`] sends each check as it finishes.
pub type Progress = tokio::sync::mpsc::UnboundedSender<Check>;

/// What the checks compare the live deployment against.
#[derive(Clone, Debug)]
pub struct VerifyInput {
    pub deployment: Deployment,
    /// A Matrix access token of any user of the homeserver, to read `rtc/transports` as a client
    /// does. Optional; used for that one request, never shown or logged.
    pub access_token: Option<Secret>,
    /// The running SFU's advertised media addresses (`SfuSockets::udp_advertised`/`tcp_advertised`);
    /// empty when unknown.
    pub advertised_udp: Vec<SocketAddr>,
    pub advertised_tcp: Vec<SocketAddr>,
    /// `host:port` STUN servers for the public-address check
    /// ([`discover::DEFAULT_STUN_SERVERS`] unless the admin chose others).
    pub stun_servers: Vec<String>,
    /// The certificate rtcbox serves itself and the ACME state, for the `tls` check.
    pub own_tls: evaluate::OwnTls,
}

/// The running SFU and the API credentials, for the WebSocket check: it creates a throwaway room
/// (`rtcbox-check-…`), mints a hidden, receive-nothing token for it, and deletes the room after.
#[derive(Clone)]
pub struct SfuAccess {
    pub handle: SfuHandle,
    pub api_key: ApiKey,
    pub api_secret: Secret,
}

/// The running TURN server and the shared secret rtcbox runs with, for the TURN checks: they
/// allocate with credentials minted for the check (`rtcbox-verify`, valid for five minutes) and
/// end each allocation again.
#[derive(Clone)]
pub struct TurnAccess {
    pub handle: TurnHandle,
    /// `RTCBOX_TURN_SHARED_SECRET` as rtcbox runs with it (legacy 1:1 calls).
    pub shared_secret: Option<Secret>,
    /// Whether the environment or the command line sets it.
    pub shared_secret_pinned: bool,
}

/// Runs every check concurrently and returns them in the order of [`ids::ALL`]. Takes at most
/// [`CHECK_TIMEOUT`] (plus scheduling). Without `sfu`, `sfu-websocket` is `Unavailable`; without
/// `turn`, the TURN checks are.
pub async fn run_all(
    input: &VerifyInput,
    http: &HttpClient,
    sfu: Option<&SfuAccess>,
    turn: Option<&TurnAccess>,
) -> Vec<Check> {
    run_with(
        &Targets::of(&input.deployment),
        input,
        http,
        sfu,
        turn,
        None,
    )
    .await
}

/// [`run_all`], sending each check to `progress` the moment it finishes (in any order).
pub async fn run_all_reporting(
    input: &VerifyInput,
    http: &HttpClient,
    sfu: Option<&SfuAccess>,
    turn: Option<&TurnAccess>,
    progress: &Progress,
) -> Vec<Check> {
    let targets = Targets::of(&input.deployment);
    run_with(&targets, input, http, sfu, turn, Some(progress)).await
}

/// The URLs the checks fetch.
#[derive(Clone, Debug)]
struct Targets {
    /// `https://<server name host>/.well-known/matrix/client`.
    well_known_url: String,
    /// The server name's host.
    server_host: String,
    /// The same file on the client API's host, when that host differs.
    alternate_well_known_url: Option<String>,
    client_base_url: String,
    livekit_service_url: String,
    sfu_url: String,
}

impl Targets {
    fn of(deployment: &Deployment) -> Targets {
        let server_host = ServerName::parse(&deployment.server_name)
            .map(|name| match name.host() {
                crate::matrix::Host::Dns(host) => host.clone(),
                crate::matrix::Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
                crate::matrix::Host::Ip(ip) => ip.to_string(),
            })
            .unwrap_or_else(|_| deployment.server_name.clone());
        let client_base_url = deployment.client_base_url.trim_end_matches('/').to_owned();
        let alternate_well_known_url = url_authority(&client_base_url)
            .filter(|authority| !authority.eq_ignore_ascii_case(&server_host))
            .map(|authority| format!("https://{authority}/.well-known/matrix/client"));
        Targets {
            well_known_url: format!("https://{server_host}/.well-known/matrix/client"),
            server_host,
            alternate_well_known_url,
            client_base_url,
            livekit_service_url: deployment.endpoints.livekit_service_url(),
            sfu_url: deployment.endpoints.sfu_url(),
        }
    }
}

/// `https://host[:port]/path` → `host[:port]`.
fn url_authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    (!authority.is_empty()).then(|| authority.to_owned())
}

async fn run_with(
    targets: &Targets,
    input: &VerifyInput,
    http: &HttpClient,
    sfu: Option<&SfuAccess>,
    turn: Option<&TurnAccess>,
    progress: Option<&Progress>,
) -> Vec<Check> {
    // Detected at most once, shared by the public-ip and media checks.
    let detected: OnceCell<Result<IpAddr, String>> = OnceCell::new();
    let detect = || detected.get_or_init(|| discover::public_ip(&input.stun_servers));

    let (
        well_known,
        versions,
        transports,
        proxied,
        public_ip,
        udp,
        tcp,
        (turn_udp, turn_tcp, turn_tls, turn_legacy),
    ) = tokio::join!(
        bounded(ids::WELL_KNOWN, check_well_known(targets, http), progress),
        bounded(
            ids::SYNAPSE_VERSIONS,
            check_versions(targets, input, http),
            progress
        ),
        bounded(
            ids::RTC_TRANSPORTS,
            check_transports(targets, input, http),
            progress
        ),
        async {
            let checks =
                match tokio::time::timeout(CHECK_TIMEOUT, check_proxied(targets, input, http, sfu))
                    .await
                {
                    Ok(checks) => checks,
                    Err(_) => [
                        evaluate::timed_out(ids::AUTH_HEALTHZ),
                        evaluate::timed_out(ids::SFU_WEBSOCKET),
                        evaluate::timed_out(ids::TLS),
                    ],
                };
            for check in &checks {
                report(progress, check);
            }
            checks
        },
        bounded(
            ids::PUBLIC_IP,
            async {
                let detected = detect().await;
                evaluate::public_ip(
                    detected,
                    input.deployment.network.public_ip,
                    &input.advertised_udp,
                )
                .caused_by([detected.is_err().then_some(causes::Cause::PublicIpUnknown)])
            },
            progress
        ),
        bounded(
            ids::MEDIA_UDP,
            check_media(Proto::Udp, input, detect),
            progress
        ),
        bounded(
            ids::MEDIA_TCP,
            check_media(Proto::Tcp, input, detect),
            progress
        ),
        // Boxed: the four probes' futures (TLS state included) are large.
        Box::pin(async {
            tokio::join!(
                bounded(
                    ids::TURN_UDP,
                    check_turn(Transport::Udp, input, http, turn, detect),
                    progress
                ),
                bounded(
                    ids::TURN_TCP,
                    check_turn(Transport::Tcp, input, http, turn, detect),
                    progress
                ),
                bounded(
                    ids::TURN_TLS,
                    check_turn(Transport::Tls, input, http, turn, detect),
                    progress
                ),
                bounded(
                    ids::TURN_LEGACY,
                    check_turn_legacy(input, turn, detect),
                    progress
                ),
            )
        }),
    );
    let [healthz, websocket, tls] = proxied;
    vec![
        well_known,
        versions,
        transports,
        healthz,
        websocket,
        tls,
        public_ip,
        udp,
        tcp,
        turn_udp,
        turn_tcp,
        turn_tls,
        turn_legacy,
    ]
}

async fn bounded(
    id: &'static str,
    check: impl Future<Output = Check>,
    progress: Option<&Progress>,
) -> Check {
    let check = tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| evaluate::timed_out(id));
    report(progress, &check);
    check
}

fn report(progress: Option<&Progress>, check: &Check) {
    if let Some(progress) = progress {
        // The page may have gone away; the checks finish anyway.
        let _ = progress.send(check.clone());
    }
}

const JSON: (&str, &str) = ("accept", "application/json");

async fn check_well_known(targets: &Targets, http: &HttpClient) -> Check {
    let alternate = async {
        match &targets.alternate_well_known_url {
            Some(url) => Some(http.get(url, &[JSON]).await),
            None => None,
        }
    };
    let ((redirects, primary), alternate) =
        tokio::join!(get_following(http, &targets.well_known_url), alternate);
    let expect = WellKnownExpect {
        url: &targets.well_known_url,
        host: &targets.server_host,
        livekit_service_url: &targets.livekit_service_url,
        client_base_url: &targets.client_base_url,
    };
    let alternate = targets
        .alternate_well_known_url
        .as_deref()
        .zip(alternate.as_ref());
    evaluate::well_known(
        &expect,
        Followed {
            redirects: &redirects,
            result: &primary,
        },
        alternate,
    )
    .caused_by([causes::of_fetch(&primary)])
}

/// GET following up to 3 redirects (as clients do); returns the hops and the final answer.
async fn get_following(http: &HttpClient, url: &str) -> (Vec<String>, Result<Fetched, FetchError>) {
    let mut hops = Vec::new();
    let mut current = url.to_owned();
    loop {
        let result = http.get(&current, &[JSON]).await;
        let location = match &result {
            Ok(f) if (300..400).contains(&f.status) && hops.len() < 3 => {
                f.header("location").map(|l| resolve_location(&current, l))
            }
            _ => None,
        };
        match location {
            Some(next) => {
                hops.push(next.clone());
                current = next;
            }
            None => return (hops, result),
        }
    }
}

/// A `Location` relative to `base`: absolute URLs as they are, `/path` on the same origin.
fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin = match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)),
        None => base.to_owned(),
    };
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        format!("{origin}/{location}")
    }
}

async fn check_versions(targets: &Targets, input: &VerifyInput, http: &HttpClient) -> Check {
    let url = format!("{}/_matrix/client/versions", targets.client_base_url);
    let result = http.get(&url, &[JSON]).await;
    evaluate::synapse_versions(&url, &result, input.deployment.synapse_version)
        .caused_by([causes::of_fetch(&result)])
}

async fn check_transports(targets: &Targets, input: &VerifyInput, http: &HttpClient) -> Check {
    let synapse = input.deployment.synapse_version;
    if let Some(check) = evaluate::transports_unavailable(synapse) {
        return check;
    }
    let url = format!(
        "{}/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
        targets.client_base_url
    );
    let bearer = input
        .access_token
        .as_ref()
        .map(|token| format!("Bearer {}", token.expose()));
    let mut headers = vec![JSON];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let result = http.get(&url, &headers).await;
    evaluate::rtc_transports(
        &url,
        &result,
        input.access_token.is_some(),
        synapse,
        &targets.livekit_service_url,
    )
    .caused_by([causes::of_fetch(&result)])
}

/// `auth-healthz`, `sfu-websocket` and `tls`, which judges the other two's connections.
async fn check_proxied(
    targets: &Targets,
    input: &VerifyInput,
    http: &HttpClient,
    sfu: Option<&SfuAccess>,
) -> [Check; 3] {
    let deployment = &input.deployment;
    let healthz_url = format!("{}/healthz", targets.livekit_service_url);
    let preflight_url = format!("{}/sfu/get", targets.livekit_service_url);
    let preflight_headers = [
        ("origin", "https://call.element.io"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let ((healthz, preflight), websocket) = tokio::join!(
        async {
            tokio::join!(
                http.get(&healthz_url, &[]),
                http.request(Method::OPTIONS, &preflight_url, &preflight_headers),
            )
        },
        probe_websocket(&targets.sfu_url, http, sfu),
    );
    let preflight = healthz
        .as_ref()
        .is_ok_and(|f| f.status == 200)
        .then_some(&preflight);
    let healthz_check = evaluate::auth_healthz(deployment, &healthz_url, &healthz, preflight)
        .caused_by([causes::of_fetch(&healthz)]);
    let (websocket_check, websocket_result) = match &websocket {
        Some((shown, result)) => (
            evaluate::sfu_websocket(deployment, shown, result)
                .caused_by([causes::of_fetch(result)]),
            Some(result),
        ),
        None => (
            Check::new(
                ids::SFU_WEBSOCKET,
                Status::Unavailable,
                "The SFU is not running in this process, so its WebSocket cannot be tested.".into(),
                None,
            ),
            None,
        ),
    };
    let tls_check = evaluate::tls(deployment, &healthz, websocket_result, &input.own_tls)
        .caused_by(
            [&healthz]
                .into_iter()
                .chain(websocket_result)
                .map(|result| {
                    causes::of_fetch(result)
                        .filter(|c| matches!(c, causes::Cause::UntrustedCertificate { .. }))
                }),
        );
    [healthz_check, websocket_check, tls_check]
}

/// Creates a throwaway room, probes `<sfu_url>/rtc` with a token for it, deletes the room.
/// Returns the URL as shown (no token) and the handshake's result.
async fn probe_websocket(
    sfu_url: &str,
    http: &HttpClient,
    sfu: Option<&SfuAccess>,
) -> Option<(String, Result<Fetched, FetchError>)> {
    let sfu = sfu?;
    let shown = format!("{sfu_url}/rtc");
    let room = format!(
        "rtcbox-check-{}",
        crate::secret::random_alphanumeric(12).to_ascii_lowercase()
    );
    let options = RoomOptions {
        empty_timeout: Duration::from_secs(30),
        departure_timeout: Duration::from_secs(1),
        max_participants: 1,
    };
    let name = room.clone();
    let created = sfu
        .handle
        .call(move |core, now| core.create_room(now, &name, options, None).map(|_| ()))
        .await;
    let _cleanup = DeleteRoomOnDrop {
        handle: sfu.handle.clone(),
        room: room.clone(),
    };
    if let Err(error) = created.unwrap_or(Err(crate::rooms::RoomError::Unavailable)) {
        return Some((
            shown,
            Err(FetchError::BadRequest(format!(
                "the SFU could not create the check's room: {error}"
            ))),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let grant = VideoGrant {
        room_join: true,
        room: room.clone(),
        can_publish: Some(false),
        can_subscribe: Some(false),
        can_publish_data: Some(false),
        hidden: true,
        ..VideoGrant::default()
    };
    let jwt = match token::mint(
        &sfu.api_key,
        &sfu.api_secret,
        "rtcbox-check",
        grant,
        Duration::from_secs(60),
        now,
    ) {
        Ok(jwt) => jwt,
        Err(error) => {
            return Some((
                shown,
                Err(FetchError::BadRequest(format!(
                    "no token for the check: {error}"
                ))),
            ));
        }
    };
    let url = format!("{shown}?access_token={jwt}&auto_subscribe=0&sdk=rtcbox-check");
    let result = http.websocket_handshake(&url).await;
    Some((shown, result))
}

/// Deletes the check's room however the check ends (also when its timeout drops it).
struct DeleteRoomOnDrop {
    handle: SfuHandle,
    room: String,
}

impl Drop for DeleteRoomOnDrop {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let room = std::mem::take(&mut self.room);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = handle
                    .call(move |core, now| core.delete_room(now, &room))
                    .await;
            });
        }
    }
}

/// `media-udp` / `media-tcp`: STUN to the media port at the public address and on the LAN.
async fn check_media<'a, F, Fut>(proto: Proto, input: &'a VerifyInput, detect: F) -> Check
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = &'a Result<IpAddr, String>>,
{
    let network = &input.deployment.network;
    let (wizard_port, advertised) = match proto {
        Proto::Udp => (network.ports.rtc_udp, &input.advertised_udp),
        Proto::Tcp => (network.ports.rtc_tcp, &input.advertised_tcp),
    };
    let listening_port = advertised.first().map(|a| a.port());
    let port = listening_port.unwrap_or(wizard_port);
    let public_ip = match network.public_ip {
        Some(ip) => Ok(ip),
        None => detect().await.clone(),
    };
    let lan = SocketAddr::new(network.lan_ip, port);
    let probe = async |target: SocketAddr| match proto {
        Proto::Udp => discover::stun_probe_udp(target, STUN_TIMEOUT).await,
        Proto::Tcp => discover::stun_probe_tcp(target, STUN_TIMEOUT).await,
    };
    let (public, lan_result) = match public_ip {
        Ok(ip) if ip == network.lan_ip => {
            let result = probe(lan).await;
            (PublicProbe::Probed(lan, result.clone()), result)
        }
        Ok(ip) => {
            let public = SocketAddr::new(ip, port);
            let (public_result, lan_result) = tokio::join!(probe(public), probe(lan));
            (PublicProbe::Probed(public, public_result), lan_result)
        }
        Err(why) => (PublicProbe::Unknown(why), probe(lan).await),
    };
    evaluate::media_port(
        proto,
        wizard_port,
        listening_port,
        &public,
        (lan, &lan_result),
    )
    .caused_by([causes::of_media(proto, port, &public, (lan, &lan_result))])
}

/// How long a TURN probe may take: within [`CHECK_TIMEOUT`], with room to judge and return.
const TURN_PROBE_TIME: Duration = Duration::from_secs(5);
/// The internet peer Synapse-style credentials must be allowed to reach. Nothing is sent to it:
/// a permission is only state on the TURN server.
const INTERNET_PEER: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(1, 1, 1, 1)), 443);
/// Who the check's credentials are for (shown in the TURN allocations on the dashboard).
const CHECK_IDENTITY: &str = "rtcbox-verify";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `turn-udp` / `turn-tcp` / `turn-tls`: allocate with the SFU's participant credentials at the
/// public address and on the LAN; ask for the SFU's media address (allowed) and the admin panel's
/// (refused).
async fn check_turn<'a, F, Fut>(
    transport: Transport,
    input: &'a VerifyInput,
    http: &HttpClient,
    turn: Option<&TurnAccess>,
    detect: F,
) -> Check
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = &'a Result<IpAddr, String>>,
{
    let deadline = tokio::time::Instant::now() + TURN_PROBE_TIME;
    let id = match transport {
        Transport::Udp => ids::TURN_UDP,
        Transport::Tcp => ids::TURN_TCP,
        Transport::Tls => ids::TURN_TLS,
    };
    let Some(turn) = turn else {
        return evaluate::turn_not_running(id);
    };
    let urls = turn.handle.urls();
    let network = &input.deployment.network;
    let (listening, wizard_port) = match transport {
        Transport::Udp | Transport::Tcp => (urls.port, network.ports.turn),
        Transport::Tls => (urls.tls_port, network.ports.turns),
    };
    let Some(port) = listening else {
        return evaluate::turn_off(transport);
    };
    let status = turn.handle.status();
    let mine: Vec<_> = status
        .listeners
        .iter()
        .filter(|l| l.transport == transport)
        .collect();
    // Errors count when no listener of this transport runs (one of two address families may
    // fail alone).
    let listener_errors: Vec<String> = if mine.iter().any(|l| l.error.is_none()) {
        Vec::new()
    } else {
        mine.iter()
            .filter_map(|l| Some(format!("{} {}: {}", l.transport, l.addr, l.error.as_ref()?)))
            .collect()
    };
    let (username, password) =
        turn.handle
            .participant_credentials("", CHECK_IDENTITY, unix_now() + 300);
    let dial = match transport {
        Transport::Udp => Dial::Udp,
        Transport::Tcp => Dial::Tcp,
        Transport::Tls => Dial::Tls {
            connector: http.tls_connector(),
            server_name: urls.host.clone(),
        },
    };
    let spec = ProbeSpec {
        target: SocketAddr::new(network.lan_ip, port),
        dial,
        username,
        password,
        allowed_peer: input.advertised_udp.first().copied(),
        denied_peer: Some(SocketAddr::new(network.lan_ip, network.ports.admin)),
    };
    let public_ip = match network.public_ip {
        Some(ip) => Ok(ip),
        None => detect().await.clone(),
    };
    let (public, lan) = probe_turn(&spec, public_ip, deadline).await;
    let proto = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp | Transport::Tls => "TCP",
    };
    let cause = causes::of_turn(proto, &public, &lan);
    evaluate::turn_listener(
        &TurnExpect {
            transport,
            wizard_port,
            listening_port: port,
            listener_errors: &listener_errors,
            host: &urls.host,
            allow_peers: &status.allow_peers,
        },
        &public,
        &lan,
    )
    .caused_by([cause])
}

/// `turn-legacy`: allocate over UDP with credentials made from the shared secret as Synapse
/// makes them; ask for an internet address (allowed) and the admin panel's (refused).
async fn check_turn_legacy<'a, F, Fut>(
    input: &'a VerifyInput,
    turn: Option<&TurnAccess>,
    detect: F,
) -> Check
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = &'a Result<IpAddr, String>>,
{
    let deadline = tokio::time::Instant::now() + TURN_PROBE_TIME;
    let Some(turn) = turn else {
        return evaluate::turn_not_running(ids::TURN_LEGACY);
    };
    let network = &input.deployment.network;
    let wizard_secret = input
        .deployment
        .legacy_turn
        .as_ref()
        .map(|t| &t.shared_secret);
    let running_secret = turn.shared_secret.as_ref();
    let same_secret =
        matches!((wizard_secret, running_secret), (Some(a), Some(b)) if a.expose() == b.expose());
    let listening_port = turn.handle.urls().port;
    let status = turn.handle.status();
    let probe_with = match (wizard_secret, running_secret, listening_port) {
        (Some(secret), Some(_), Some(port)) if same_secret => Some((secret, port)),
        (None, Some(secret), Some(port)) => Some((secret, port)),
        _ => None,
    };
    let mut public_ip = network.public_ip;
    let probes = match probe_with {
        None => None,
        Some((secret, port)) => {
            let user = format!("@{CHECK_IDENTITY}:{}", input.deployment.server_name);
            let username = rest_username(unix_now() + 300, &user);
            let password = Secret::new(rest_password(secret, &username));
            let spec = ProbeSpec {
                target: SocketAddr::new(network.lan_ip, port),
                dial: Dial::Udp,
                username,
                password,
                allowed_peer: Some(INTERNET_PEER),
                denied_peer: Some(SocketAddr::new(network.lan_ip, network.ports.admin)),
            };
            let detected = match network.public_ip {
                Some(ip) => Ok(ip),
                None => detect().await.clone(),
            };
            public_ip = detected.as_ref().ok().copied();
            Some(probe_turn(&spec, detected, deadline).await)
        }
    };
    evaluate::turn_legacy(
        &LegacyExpect {
            wizard_on: wizard_secret.is_some(),
            running_on: running_secret.is_some(),
            same_secret,
            pinned: turn.shared_secret_pinned,
            listening_port,
            public_ip,
            relay_range: (network.ports.relay_min, network.ports.relay_max),
            allow_peers: &status.allow_peers,
        },
        probes.as_ref().map(|(public, lan)| (public, lan)),
    )
    .caused_by([probes
        .as_ref()
        .and_then(|(public, lan)| causes::of_turn("UDP", public, lan))])
}

/// `spec` (aimed at the LAN address) at the public address and on the LAN, concurrently; once
/// when the two are one.
async fn probe_turn(
    spec: &ProbeSpec,
    public_ip: Result<IpAddr, String>,
    deadline: tokio::time::Instant,
) -> (TurnPublic, ProbeReport) {
    let lan_ip = spec.target.ip();
    match public_ip {
        Ok(ip) if ip == lan_ip => {
            let lan = turn_client::probe(spec, deadline).await;
            (TurnPublic::Probed(Box::new(lan.clone())), lan)
        }
        Ok(ip) => {
            let public_spec = ProbeSpec {
                target: SocketAddr::new(ip, spec.target.port()),
                ..spec.clone()
            };
            let (public, lan) = tokio::join!(
                turn_client::probe(&public_spec, deadline),
                turn_client::probe(spec, deadline)
            );
            (TurnPublic::Probed(Box::new(public)), lan)
        }
        Err(why) => (
            TurnPublic::Unknown(why),
            turn_client::probe(spec, deadline).await,
        ),
    }
}

#[cfg(test)]
mod tests;
