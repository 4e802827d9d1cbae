//! The checks' judgement: pure functions from what was observed (responses, probe results) to a
//! [`Check`]. No IO here, so every branch is tested with canned data.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use super::{Check, Status, ids};
use crate::net::Cidr;
use crate::setup::fetch::{FetchError, Fetched};
use crate::setup::model::{Deployment, ProxyKind, SynapseVersion, TlsMode};
use crate::turn::client::{Allocated, Answer, ProbeError, ProbeReport};
use crate::turn::status::Transport;

/// Synapse serves `rtc/transports` from this release on.
pub const TRANSPORTS_SINCE: SynapseVersion = SynapseVersion::new(1, 140, 0);
/// Synapse advertises `org.matrix.msc4143` in `/versions` from this release on.
pub const MSC4143_FLAG_SINCE: SynapseVersion = SynapseVersion::new(1, 156, 0);

/// Collects what is wrong; the worst finding decides the status.
#[derive(Default)]
struct Findings {
    status: Option<Status>,
    details: Vec<String>,
    fixes: Vec<String>,
}

impl Findings {
    fn fail(&mut self, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(Status::Fail, detail.into(), Some(fix.into()));
    }

    fn warn(&mut self, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(Status::Warn, detail.into(), Some(fix.into()));
    }

    fn add(&mut self, status: Status, detail: String, fix: Option<String>) {
        if self.status.is_none_or(|s| status.severity() > s.severity()) {
            self.status = Some(status);
        }
        self.details.push(detail);
        if let Some(fix) = fix.filter(|f| !f.is_empty() && !self.fixes.contains(f)) {
            self.fixes.push(fix);
        }
    }

    /// What worked, added to the details when only warnings were found (a failure speaks for
    /// itself; a pass shows it anyway).
    fn context(&mut self, what_worked: &str) {
        if self.status == Some(Status::Warn) {
            self.details.push(what_worked.to_owned());
        }
    }

    fn is_failed(&self) -> bool {
        self.status == Some(Status::Fail)
    }

    /// The check: `pass` when nothing was found.
    fn finish(self, id: &'static str, pass: String) -> Check {
        match self.status {
            None => Check::new(id, Status::Pass, pass, None),
            Some(status) => Check::new(
                id,
                status,
                self.details.join("\n"),
                (!self.fixes.is_empty()).then(|| self.fixes.join("\n")),
            ),
        }
    }
}

/// What the well-known check compares against.
pub struct WellKnownExpect<'a> {
    /// `https://<server name host>/.well-known/matrix/client`.
    pub url: &'a str,
    /// The server name's host, where the file must be published.
    pub host: &'a str,
    pub livekit_service_url: &'a str,
    pub client_base_url: &'a str,
}

/// One fetch, possibly after following redirects: the URLs visited before the final answer.
pub struct Followed<'a> {
    pub redirects: &'a [String],
    pub result: &'a Result<Fetched, FetchError>,
}

/// `well-known`: reachable over HTTPS at the server name's host, 200, JSON, CORS `*`,
/// `m.homeserver.base_url`, and `org.matrix.msc4143.rtc_foci` naming our service first.
/// `alternate` is the same file on the client API's host, fetched to recognise a file published
/// on the wrong host.
pub fn well_known(
    expect: &WellKnownExpect<'_>,
    primary: Followed<'_>,
    alternate: Option<(&str, &Result<Fetched, FetchError>)>,
) -> Check {
    let mut findings = Findings::default();
    let url = expect.url;
    let ours = expect.livekit_service_url;
    let focus_fix = format!(
        "Publish the well-known from the wizard at {url}: it must contain \
         \"org.matrix.msc4143.rtc_foci\": [{{\"type\": \"livekit\", \"livekit_service_url\": \"{ours}\"}}]."
    );
    let wrong_host = alternate.and_then(|(alt_url, result)| {
        let fetched = result.as_ref().ok().filter(|f| f.status == 200)?;
        let object = fetched.json_object().ok()?;
        livekit_urls(&object, FOCI_KEY)
            .iter()
            .any(|u| same_url(u, ours))
            .then(|| alt_url.to_owned())
    });
    let wrong_host_note = |findings: &mut Findings| {
        if let Some(alt_url) = &wrong_host {
            findings.fail(
                format!(
                    "rtc_foci is published at {alt_url} instead: clients only read it from \
                     {url}, the server name's host."
                ),
                format!("Move the well-known to the web server for {}.", expect.host),
            );
        }
    };

    if !primary.redirects.is_empty() {
        findings.warn(
            format!(
                "{url} redirects ({}). Most clients follow redirects, but every hop must send \
                 Access-Control-Allow-Origin: * or Element Call in a web view cannot read it.",
                primary.redirects.join(" → ")
            ),
            format!("Serve the file directly at {url}."),
        );
    }
    let fetched = match primary.result {
        Ok(fetched) => fetched,
        Err(error) => {
            findings.fail(
                format!("{url} cannot be fetched: {error}."),
                reach_fix(error, &format!("the web server for {}", expect.host)),
            );
            wrong_host_note(&mut findings);
            return findings.finish(ids::WELL_KNOWN, String::new());
        }
    };
    match fetched.status {
        200 => {}
        404 => {
            findings.fail(
                format!("{url} does not exist (HTTP 404)."),
                focus_fix.clone(),
            );
            wrong_host_note(&mut findings);
            return findings.finish(ids::WELL_KNOWN, String::new());
        }
        status @ 300..=399 => {
            findings.fail(
                format!("{url} redirects (HTTP {status}) more than 3 times or without a location."),
                format!("Serve the file directly at {url}."),
            );
            return findings.finish(ids::WELL_KNOWN, String::new());
        }
        status => {
            findings.fail(
                format!("{url} answered HTTP {status} instead of 200."),
                focus_fix.clone(),
            );
            return findings.finish(ids::WELL_KNOWN, String::new());
        }
    }

    let content_type = fetched.header("content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let served = if content_type.is_empty() {
            "without a Content-Type".to_owned()
        } else {
            format!("as {content_type}")
        };
        findings.warn(
            format!("It is served {served}; some clients only accept application/json."),
            "Serve it with Content-Type: application/json (nginx: `default_type application/json;` in its location).",
        );
    }
    cors(
        &mut findings,
        fetched,
        "the well-known",
        &format!("the web server for {}", expect.host),
    );

    let object = match fetched.json_object() {
        Ok(object) => object,
        Err(problem) => {
            findings.fail(format!("{url}: {problem}."), focus_fix);
            return findings.finish(ids::WELL_KNOWN, String::new());
        }
    };

    match object
        .get("m.homeserver")
        .and_then(|h| h.get("base_url"))
        .and_then(Value::as_str)
    {
        None => findings.fail(
            "It has no m.homeserver.base_url, so clients cannot find the homeserver.",
            format!(
                "Add \"m.homeserver\": {{\"base_url\": \"{}\"}} (the wizard's well-known has it).",
                expect.client_base_url
            ),
        ),
        Some(base) if !same_url(base, expect.client_base_url) => findings.warn(
            format!(
                "m.homeserver.base_url is {base}, but the wizard uses {} for the homeserver.",
                expect.client_base_url
            ),
            "Make the wizard's homeserver URL and the well-known agree.",
        ),
        Some(_) => {}
    }

    let foci = livekit_urls(&object, FOCI_KEY);
    let alias = livekit_urls(&object, FOCI_ALIAS_KEY);
    match (object.get(FOCI_KEY), foci.first()) {
        (None, _) if alias.iter().any(|u| same_url(u, ours)) => findings.warn(
            format!("The focus is listed only under {FOCI_ALIAS_KEY}, which few clients read."),
            format!("Also publish it as \"{FOCI_KEY}\"."),
        ),
        (None, _) => {
            findings.fail(format!("It has no {FOCI_KEY}."), focus_fix);
            wrong_host_note(&mut findings);
        }
        (Some(value), None) => {
            let what = if value.is_array() {
                "lists no livekit focus"
            } else {
                "is not a list"
            };
            findings.fail(format!("{FOCI_KEY} {what}."), focus_fix);
        }
        (Some(_), Some(first)) if same_url(first, ours) => {}
        (Some(_), Some(first)) if foci.iter().any(|u| same_url(u, ours)) => findings.warn(
            format!("rtc_foci lists {first} before {ours}; clients use the first."),
            format!("Put {ours} first in {FOCI_KEY}."),
        ),
        (Some(_), Some(_)) => findings.fail(
            format!("rtc_foci points at {} instead of {ours}.", foci.join(", ")),
            format!("Replace the livekit_service_url in {FOCI_KEY} with {ours}."),
        ),
    }
    findings.finish(
        ids::WELL_KNOWN,
        format!(
            "{url} is served as JSON with Access-Control-Allow-Origin: *, names the homeserver \
             and lists {ours} in rtc_foci."
        ),
    )
}

const FOCI_KEY: &str = "org.matrix.msc4143.rtc_foci";
const FOCI_ALIAS_KEY: &str = "m.rtc_foci";

/// The `livekit_service_url`s of the livekit entries in the list under `key`, in order.
fn livekit_urls(object: &Map<String, Value>, key: &str) -> Vec<String> {
    object
        .get(key)
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e.get("type").and_then(Value::as_str) == Some("livekit"))
                .filter_map(|e| e.get("livekit_service_url")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `Access-Control-Allow-Origin` must be exactly one `*`.
fn cors(findings: &mut Findings, fetched: &Fetched, what: &str, server: &str) {
    let values = fetched.header_values("access-control-allow-origin");
    let joined = values.join(", ");
    match values.as_slice() {
        [] => findings.fail(
            format!(
                "The answer for {what} has no Access-Control-Allow-Origin header: Element Call \
                 in a browser or in Element's web view cannot read it."
            ),
            format!("Make {server} add the header Access-Control-Allow-Origin: * to it."),
        ),
        ["*"] => {}
        _ if joined.split(',').filter(|v| v.trim() == "*").count() > 1 => findings.fail(
            format!(
                "The answer for {what} carries Access-Control-Allow-Origin twice ({joined}); \
                 browsers reject that."
            ),
            "Set the CORS headers in one place only: remove them from the reverse proxy if the \
             server behind it sends them already.",
        ),
        _ => findings.fail(
            format!("The answer for {what} has Access-Control-Allow-Origin: {joined}, not *."),
            format!("Make {server} send Access-Control-Allow-Origin: * instead."),
        ),
    }
}

/// `synapse-versions`: MSC4140 (delayed events) and MSC4222 (`state_after`) advertised, and on
/// Synapse ≥ 1.156 MSC4143.
pub fn synapse_versions(
    url: &str,
    result: &Result<Fetched, FetchError>,
    synapse: Option<SynapseVersion>,
) -> Check {
    let mut findings = Findings::default();
    let fetched = match result {
        Ok(fetched) if fetched.status == 200 => fetched,
        Ok(fetched) => {
            findings.fail(
                format!("{url} answered HTTP {} instead of 200.", fetched.status),
                "Check the homeserver URL in the wizard's homeserver step.",
            );
            return findings.finish(ids::SYNAPSE_VERSIONS, String::new());
        }
        Err(error) => {
            findings.fail(
                format!("{url} cannot be fetched: {error}."),
                reach_fix(error, "the homeserver"),
            );
            return findings.finish(ids::SYNAPSE_VERSIONS, String::new());
        }
    };
    let unstable = match fetched.json_object() {
        Ok(object) => object
            .get("unstable_features")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        Err(problem) => {
            findings.fail(
                format!("{url}: {problem}; is this a Matrix homeserver?"),
                "Check the homeserver URL in the wizard's homeserver step.",
            );
            return findings.finish(ids::SYNAPSE_VERSIONS, String::new());
        }
    };
    let on = |feature: &str| unstable.get(feature).and_then(Value::as_bool) == Some(true);
    if !on("org.matrix.msc4140") {
        findings.fail(
            "Delayed events (org.matrix.msc4140) are off: clients refuse to join calls or leave \
             ghost participants behind.",
            "Set `max_event_delay_duration: 24h` at the top level of homeserver.yaml (not under \
             experimental_features) and restart Synapse.",
        );
    }
    let expects_4143 = synapse.is_some_and(|v| v >= MSC4143_FLAG_SINCE);
    if expects_4143 && !on("org.matrix.msc4143") {
        findings.fail(
            "org.matrix.msc4143 is not advertised: the rtc/transports endpoint is off.",
            "Add `msc4143_enabled: true` under `experimental_features:` together with the \
             `matrix_rtc:` transports block from the wizard's homeserver.yaml snippet, and restart \
             Synapse.",
        );
    }
    // Synapse never lists msc4222 in unstable_features, even when it is on (seen on 1.163), so
    // its absence proves nothing; it is only named, never judged.
    let msc4222 = if on("org.matrix.msc4222") {
        "org.matrix.msc4222 (state_after in sync) is advertised as on."
    } else {
        "org.matrix.msc4222 (state_after in sync) cannot be seen from outside: Synapse does not \
         advertise it. Make sure homeserver.yaml has `msc4222_enabled: true` under \
         experimental_features, as the wizard's snippet does."
    };
    let mut pass = format!("{url} advertises org.matrix.msc4140");
    if on("org.matrix.msc4143") {
        pass.push_str(" and org.matrix.msc4143");
    }
    pass.push_str(".\n");
    pass.push_str(msc4222);
    let mut check = findings.finish(ids::SYNAPSE_VERSIONS, pass);
    if check.status != Status::Pass {
        check.detail.push('\n');
        check.detail.push_str(msc4222);
    }
    check
}

/// `rtc-transports` before fetching: Synapse older than 1.140 has no such endpoint.
pub fn transports_unavailable(synapse: Option<SynapseVersion>) -> Option<Check> {
    let version = synapse.filter(|v| *v < TRANSPORTS_SINCE)?;
    Some(Check::new(
        ids::RTC_TRANSPORTS,
        Status::Unavailable,
        format!(
            "Synapse {version} has no rtc/transports endpoint (it arrived in {TRANSPORTS_SINCE}); \
             clients use the well-known alone."
        ),
        Some(format!(
            "Upgrade Synapse to {TRANSPORTS_SINCE} or newer, then enable msc4143 with the \
             wizard's matrix_rtc settings."
        )),
    ))
}

/// `rtc-transports`: `GET …/org.matrix.msc4143/rtc/transports` lists our service first.
pub fn rtc_transports(
    url: &str,
    result: &Result<Fetched, FetchError>,
    had_token: bool,
    synapse: Option<SynapseVersion>,
    ours: &str,
) -> Check {
    let mut findings = Findings::default();
    let enable_fix = format!(
        "Add `msc4143_enabled: true` under `experimental_features:` and, at the top level, \
         `matrix_rtc: {{transports: [{{type: livekit, livekit_service_url: \"{ours}\"}}]}}` (the \
         wizard's homeserver.yaml snippet), then restart Synapse. Never enable msc4143 with an \
         empty matrix_rtc."
    );
    let fetched = match result {
        Ok(fetched) => fetched,
        Err(error) => {
            findings.fail(
                format!("{url} cannot be fetched: {error}."),
                reach_fix(error, "the homeserver"),
            );
            return findings.finish(ids::RTC_TRANSPORTS, String::new());
        }
    };
    let object = fetched.json_object().ok();
    let errcode = object
        .as_ref()
        .and_then(|o| o.get("errcode")?.as_str().map(str::to_owned));
    let errcode_shown = errcode
        .as_deref()
        .map(|e| format!(" {e}"))
        .unwrap_or_default();
    match fetched.status {
        200 => {}
        404 | 400 | 405 => {
            let maybe_old = if synapse.is_none() {
                format!(", or Synapse is older than {TRANSPORTS_SINCE}")
            } else {
                String::new()
            };
            findings.fail(
                format!(
                    "{url} answered HTTP {}{errcode_shown}: the endpoint is off \
                     (msc4143_enabled is not set{maybe_old}).",
                    fetched.status
                ),
                enable_fix,
            );
            return findings.finish(ids::RTC_TRANSPORTS, String::new());
        }
        401 | 403 if !had_token => {
            findings.warn(
                format!(
                    "The endpoint is on (it asks for a login: HTTP {}{errcode_shown}); give an \
                     access token to check what it publishes.",
                    fetched.status
                ),
                "Paste the access token of any user of the homeserver (Element: Settings → Help \
                 & About → Access Token) and run the checks again. It is used for this check only \
                 and not stored.",
            );
            return findings.finish(ids::RTC_TRANSPORTS, String::new());
        }
        401 | 403 => {
            findings.fail(
                format!(
                    "The homeserver refused the access token (HTTP {}{errcode_shown}).",
                    fetched.status
                ),
                "Paste a current access token of a user of this homeserver (Element: Settings → \
                 Help & About → Access Token).",
            );
            return findings.finish(ids::RTC_TRANSPORTS, String::new());
        }
        status => {
            findings.fail(
                format!("{url} answered HTTP {status}{errcode_shown}."),
                "Check that the reverse proxy passes /_matrix/client/ to Synapse.",
            );
            return findings.finish(ids::RTC_TRANSPORTS, String::new());
        }
    }
    let transports = object
        .as_ref()
        .and_then(|o| o.get("rtc_transports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let listed: Vec<String> = transports
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("livekit"))
        .filter_map(|t| t.get("livekit_service_url")?.as_str().map(str::to_owned))
        .collect();
    match listed.first() {
        None if transports.is_empty() => findings.fail(
            format!(
                "The endpoint answers 200 with no transports ({}): matrix_rtc.transports is \
                 empty. Clients that ask this endpoint take that as \"no MatrixRTC here\" and do \
                 not fall back to the well-known.",
                fetched.body_excerpt()
            ),
            enable_fix,
        ),
        None => findings.fail("The endpoint lists no livekit transport.", enable_fix),
        Some(first) if same_url(first, ours) => {}
        Some(first) if listed.iter().any(|u| same_url(u, ours)) => findings.warn(
            format!("It lists {first} before {ours}; clients use the first."),
            format!("Put {ours} first in matrix_rtc.transports."),
        ),
        Some(_) => findings.fail(
            format!("It lists {} instead of {ours}.", listed.join(", ")),
            format!(
                "Set livekit_service_url in matrix_rtc.transports to {ours} and restart Synapse."
            ),
        ),
    }
    findings.finish(
        ids::RTC_TRANSPORTS,
        format!("The homeserver publishes {ours} as its MatrixRTC transport."),
    )
}

/// `auth-healthz`: `<livekit_service_url>/healthz` answers 200 through the proxy, and a CORS
/// preflight of `/sfu/get` allows any origin.
pub fn auth_healthz(
    deployment: &Deployment,
    healthz_url: &str,
    healthz: &Result<Fetched, FetchError>,
    preflight: Option<&Result<Fetched, FetchError>>,
) -> Check {
    let mut findings = Findings::default();
    let route_fix = route_fix(deployment, &deployment.endpoints.livekit_service_url());
    match healthz {
        Err(error) => {
            findings.fail(
                format!("{healthz_url} cannot be fetched: {error}."),
                reach_fix(error, "the reverse proxy"),
            );
            return findings.finish(ids::AUTH_HEALTHZ, String::new());
        }
        Ok(fetched) => match fetched.status {
            200 => {}
            404 => {
                findings.fail(
                    format!("{healthz_url} answered 404: the reverse proxy does not send this path to rtcbox."),
                    route_fix,
                );
                return findings.finish(ids::AUTH_HEALTHZ, String::new());
            }
            status @ 502..=504 => {
                findings.fail(
                    format!("{healthz_url} answered HTTP {status}: the reverse proxy cannot reach rtcbox."),
                    unreachable_backend_fix(deployment),
                );
                return findings.finish(ids::AUTH_HEALTHZ, String::new());
            }
            status => {
                findings.fail(
                    format!("{healthz_url} answered HTTP {status} instead of 200."),
                    route_fix,
                );
                return findings.finish(ids::AUTH_HEALTHZ, String::new());
            }
        },
    }
    match preflight {
        None => {}
        Some(Err(error)) => findings.warn(
            format!("The CORS preflight (OPTIONS) of /sfu/get failed: {error}."),
            "Let the reverse proxy pass OPTIONS requests to rtcbox.",
        ),
        Some(Ok(fetched)) if !(200..300).contains(&fetched.status) => findings.fail(
            format!(
                "The CORS preflight (OPTIONS) of /sfu/get answered HTTP {}: browsers cannot ask \
                 for call tokens.",
                fetched.status
            ),
            "Let the reverse proxy pass OPTIONS requests to rtcbox instead of answering them.",
        ),
        Some(Ok(fetched)) => cors(
            &mut findings,
            fetched,
            "the token endpoint's preflight",
            "the reverse proxy (rtcbox sends it)",
        ),
    }
    findings.finish(
        ids::AUTH_HEALTHZ,
        format!(
            "{healthz_url} answers 200 through the proxy, and the token endpoint allows \
             browsers from any origin."
        ),
    )
}

/// `sfu-websocket`: the signaling URL switches to WebSocket (101) through every proxy.
pub fn sfu_websocket(
    deployment: &Deployment,
    shown_url: &str,
    result: &Result<Fetched, FetchError>,
) -> Check {
    let mut findings = Findings::default();
    let upgrade_fix = websocket_fix(deployment);
    match result {
        Err(error) => findings.fail(
            format!("{shown_url} cannot be reached: {error}."),
            reach_fix(error, "the reverse proxy"),
        ),
        Ok(fetched) => match fetched.status {
            101 => {}
            404 if fetched.body_excerpt().contains("needs a WebSocket upgrade") => findings.fail(
                format!(
                    "{shown_url} reached rtcbox without the Upgrade headers: the reverse proxy \
                     does not pass WebSocket upgrades."
                ),
                upgrade_fix,
            ),
            404 => findings.fail(
                format!(
                    "{shown_url} answered 404: the reverse proxy does not send this path to rtcbox."
                ),
                route_fix(deployment, &deployment.endpoints.sfu_url()),
            ),
            401 | 403 => findings.fail(
                format!(
                    "{shown_url} refused the check's token (HTTP {}: {}): this URL reaches a \
                     different LiveKit server, not this rtcbox.",
                    fetched.status,
                    fetched.body_excerpt()
                ),
                route_fix(deployment, &deployment.endpoints.sfu_url()),
            ),
            status @ 502..=504 => findings.fail(
                format!(
                    "{shown_url} answered HTTP {status}: the reverse proxy cannot reach rtcbox."
                ),
                unreachable_backend_fix(deployment),
            ),
            status => findings.fail(
                format!(
                    "{shown_url} answered HTTP {status} instead of switching to WebSocket (101): \
                     the reverse proxy does not pass WebSocket upgrades."
                ),
                upgrade_fix,
            ),
        },
    }
    findings.finish(
        ids::SFU_WEBSOCKET,
        format!(
            "{shown_url} switches to WebSocket (101) through the proxy and rtcbox admits the call."
        ),
    )
}

/// What rtcbox's own HTTPS serves now and what its ACME task is doing, for the `tls` check.
#[derive(Clone, Debug, Default)]
pub struct OwnTls {
    pub served: Option<crate::tls::CertificateInfo>,
    pub acme: Option<crate::acme::AcmeStatus>,
    /// Unix seconds.
    pub now: i64,
}

/// A certificate warns this many days before its end.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// `tls`: the public URLs answer over HTTPS with certificates this machine trusts (judged from
/// the `auth-healthz` and `sfu-websocket` fetches, which verify chain, names and dates as a
/// browser does). When rtcbox serves HTTPS itself (ACME, files) also the certificate it serves
/// now (names, end) and the ACME state.
pub fn tls(
    deployment: &Deployment,
    healthz: &Result<Fetched, FetchError>,
    websocket: Option<&Result<Fetched, FetchError>>,
    own: &OwnTls,
) -> Check {
    let mut findings = Findings::default();
    let https_port = deployment.network.ports.https;
    let who = match &deployment.tls {
        TlsMode::ReverseProxy { proxy } => proxy.label().to_owned(),
        TlsMode::SelfSigned => {
            return Check::new(
                ids::TLS,
                Status::Unavailable,
                "Not checked: rtcbox serves HTTPS with its self-signed certificate, which browsers \
                 and Element Call do not trust."
                    .into(),
                Some(
                    "Choose Let's Encrypt or certificate files (or a reverse proxy) in the \
                     wizard's HTTPS step."
                        .into(),
                ),
            );
        }
        TlsMode::Acme { .. } | TlsMode::Files { .. } => {
            own_certificate(deployment, own, &mut findings);
            "rtcbox".to_owned()
        }
    };
    for origin in deployment.endpoints.origins() {
        if !origin.tls {
            let local = origin
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
                || origin.host == "localhost";
            let detail = format!(
                "{} is plain HTTP: browsers refuse calls from an https page to it.",
                origin.https_url()
            );
            let fix = format!("Publish rtcbox as https:// through {who} with a certificate.");
            if local {
                findings.warn(detail, fix);
            } else {
                findings.fail(detail, fix);
            }
        }
    }
    let mut reached = 0;
    let results = std::iter::once(healthz).chain(websocket);
    let total = 1 + usize::from(websocket.is_some());
    for result in results {
        match result {
            Ok(_) => reached += 1,
            Err(error @ FetchError::Certificate { host, .. }) => {
                let fix = match &deployment.tls {
                    TlsMode::ReverseProxy { proxy } => format!(
                        "Give {} a certificate for {host} from a public CA such as Let's Encrypt.",
                        proxy.label()
                    ),
                    TlsMode::Files { cert, .. } => format!(
                        "Put a certificate for {host} from a public CA into {cert} (with its \
                         chain), and make sure port 443 on your router leads to rtcbox's HTTPS \
                         port {https_port}, not to another server."
                    ),
                    _ => format!(
                        "Make sure port 443 on your router leads to rtcbox's HTTPS port \
                         {https_port}, not to another server, and see the dashboard's ACME row."
                    ),
                };
                findings.fail(format!("{error}."), fix)
            }
            Err(error @ FetchError::Tls { .. }) => {
                let fix = match &deployment.tls {
                    TlsMode::ReverseProxy { proxy } => {
                        format!("Make {} serve HTTPS on this address.", proxy.label())
                    }
                    _ => format!(
                        "Forward port 443 on your router to rtcbox's HTTPS port {https_port}."
                    ),
                };
                findings.fail(format!("{error}."), fix)
            }
            Err(_) => {}
        }
    }
    if findings.status.is_none() && reached < total {
        return Check::new(
            ids::TLS,
            Status::Unavailable,
            "The public URLs could not be reached, so their certificates could not be checked \
             (see the checks above)."
                .into(),
            None,
        );
    }
    let hosts: Vec<String> = deployment
        .endpoints
        .origins()
        .iter()
        .map(|o| o.authority())
        .collect();
    let mut pass = format!(
        "{} answer over HTTPS with certificates this machine trusts.",
        hosts.join(" and ")
    );
    if let (TlsMode::Acme { .. } | TlsMode::Files { .. }, Some(served)) =
        (&deployment.tls, &own.served)
    {
        pass += &format!(
            " rtcbox's certificate ({}) is valid for {} more days.",
            served.names.join(", "),
            (served.not_after - own.now) / 86_400
        );
    }
    findings.finish(ids::TLS, pass)
}

/// The certificate rtcbox serves itself: there is one, it names every public host, it is not
/// near its end, and ACME (when it is the source) is not failing.
fn own_certificate(deployment: &Deployment, own: &OwnTls, findings: &mut Findings) {
    let acme = matches!(deployment.tls, TlsMode::Acme { .. });
    if let Some(status) = own.acme.as_ref().filter(|_| acme) {
        let retry = status
            .next_attempt
            .map(|at| {
                format!(
                    " rtcbox tries again in {} min by itself.",
                    ((at - own.now).max(0) + 59) / 60
                )
            })
            .unwrap_or_default();
        match (status.state, &status.last_error) {
            ("failed", Some(error)) => findings.fail(
                format!("Let's Encrypt: {error}.{retry}"),
                "Fix what the CA reported (the dashboard's ACME row says the same), then run the \
                 checks again.",
            ),
            ("starting" | "ordering" | "", _)
                if own.served.as_ref().is_none_or(|s| s.source != "acme") =>
            {
                findings.warn(
                    "rtcbox is still getting its certificate from Let's Encrypt; until then it \
                     serves a self-signed one.",
                    "Wait a minute, then run the checks again.",
                )
            }
            _ => {}
        }
        for record in status.pending_dns.iter().filter(|r| r.by_hand) {
            findings.warn(
                format!(
                    "Let's Encrypt waits for the TXT record {} with the value {} (DNS-01 by hand).",
                    record.name, record.value
                ),
                "Create it at your DNS provider; rtcbox tells the CA once it can see it.",
            );
        }
    }
    let Some(served) = &own.served else {
        findings.fail(
            "rtcbox serves no certificate of its own.",
            "Turn on its HTTPS listener (RTCBOX_HTTPS_BIND, e.g. 0.0.0.0:8443).",
        );
        return;
    };
    for origin in deployment.endpoints.origins() {
        if !covers(&served.names, &origin.host) {
            let fix = if acme {
                format!(
                    "Add {} to RTCBOX_ACME_DOMAINS (the wizard's Apply does).",
                    origin.host
                )
            } else {
                format!("Use a certificate that names {}.", origin.host)
            };
            findings.fail(
                format!(
                    "The certificate rtcbox serves is for {}, not {}.",
                    served.names.join(", "),
                    origin.host
                ),
                fix,
            );
        }
    }
    let days_left = (served.not_after - own.now).div_euclid(86_400);
    let renew = if acme {
        "rtcbox renews it by itself when a third of its lifetime is left; see the dashboard's \
         ACME row for why it has not."
    } else {
        "Renew it with the tool that made it; rtcbox re-reads the files within a minute."
    };
    if served.not_after <= own.now {
        findings.fail("rtcbox's certificate has expired.", renew);
    } else if days_left < EXPIRY_WARNING_DAYS {
        findings.warn(
            format!("rtcbox's certificate ends in {days_left} days."),
            renew,
        );
    }
}

/// Whether certificate `names` cover `host` (exactly, or by a one-label `*.` wildcard).
fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    names.iter().any(|name| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(base) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
            None => name == host,
        }
    })
}

/// `public-ip`: what STUN servers see, against the wizard's public address and what the SFU
/// advertises to clients.
pub fn public_ip(
    detected: &Result<IpAddr, String>,
    configured: Option<IpAddr>,
    advertised: &[SocketAddr],
) -> Check {
    let mut findings = Findings::default();
    let ip = match detected {
        Ok(ip) => *ip,
        Err(why) => {
            let known = configured
                .map(|c| format!(" The wizard's public address is {c}."))
                .unwrap_or_default();
            return Check::new(
                ids::PUBLIC_IP,
                Status::Unavailable,
                format!("The public address could not be detected: {why}.{known}"),
                Some(
                    "Allow outgoing UDP to the STUN servers, or check the public address by hand \
                     (your router's status page shows its internet/WAN address)."
                        .into(),
                ),
            );
        }
    };
    match configured {
        None => findings.warn(
            format!(
                "The internet sees this machine as {ip}, but the wizard has no public address."
            ),
            format!("Enter {ip} as the public address in the wizard's network step."),
        ),
        Some(configured) if configured != ip => findings.fail(
            format!("The internet sees this machine as {ip}, but the wizard says {configured}."),
            format!(
                "Set the public address in the wizard's network step (and RTCBOX_NODE_IP, if you \
                 set it) to {ip}."
            ),
        ),
        Some(_) => {}
    }
    if !advertised.is_empty() && !advertised.iter().any(|a| a.ip() == ip) {
        let listed: Vec<String> = advertised.iter().map(|a| a.ip().to_string()).collect();
        findings.fail(
            format!(
                "The SFU tells clients to send media to {}, not to {ip}: clients outside your \
                 network cannot reach it.",
                listed.join(", ")
            ),
            format!(
                "Set RTCBOX_NODE_IP={ip} (the network step's public address) and restart rtcbox."
            ),
        );
    }
    findings.finish(
        ids::PUBLIC_IP,
        format!("The internet sees this machine as {ip}; the wizard and the SFU use it."),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

/// What was probed at the public address.
pub enum PublicProbe {
    /// No public address to probe, and why.
    Unknown(String),
    Probed(SocketAddr, Result<SocketAddr, String>),
}

/// `media-udp` / `media-tcp`: the media port answers STUN at the public address (the port
/// forward works), else on the LAN (then the forward or hairpin NAT is missing), else not at all
/// (a host firewall). The wizard's port and the SFU's must be the same, since the router must
/// forward it unchanged.
pub fn media_port(
    proto: Proto,
    wizard_port: u16,
    listening_port: Option<u16>,
    public: &PublicProbe,
    lan: (SocketAddr, &Result<SocketAddr, String>),
) -> Check {
    let id = match proto {
        Proto::Udp => ids::MEDIA_UDP,
        Proto::Tcp => ids::MEDIA_TCP,
    };
    let p = proto.label();
    let mut findings = Findings::default();
    if let Some(listening) = listening_port.filter(|l| *l != wizard_port) {
        let setting = match proto {
            Proto::Udp => "RTCBOX_RTC_UDP_PORT",
            Proto::Tcp => "RTCBOX_RTC_TCP_PORT",
        };
        findings.fail(
            format!(
                "rtcbox listens for media on {p} {listening}, but the wizard's port table uses \
                 {wizard_port}."
            ),
            format!(
                "Use one port everywhere: set {setting}={wizard_port} or change the wizard's port \
                 to {listening}, and forward it unchanged (external port = internal port)."
            ),
        );
    }
    let port = listening_port.unwrap_or(wizard_port);
    let (lan_addr, lan_result) = lan;
    let lan_ip = lan_addr.ip();
    let firewall_fix = format!(
        "Allow {p} {port} in this machine's firewall (DSM: Control Panel → Security → Firewall → \
         Edit Rules → Create → Ports: {p} {port} → Allow), and check rtcbox's LAN address \
         ({lan_ip}) in the network step."
    );
    let forward_fix = format!(
        "Forward {p} {port} on the router to {lan_ip}, port {port} (the same port), and allow it \
         in this machine's firewall (DSM: Control Panel → Security → Firewall; this machine's \
         probes of itself may not pass through it). If both are done, test a call from a phone on \
         mobile data."
    );
    match (public, lan_result) {
        (PublicProbe::Probed(addr, Ok(_)), _) => {
            let pass = if addr.ip() == lan_ip {
                format!(
                    "{p} {addr} answers; this machine has the public address itself, so nothing \
                     needs forwarding."
                )
            } else {
                format!(
                    "{p} {addr} (the public address) answers: the router forwards the port to rtcbox."
                )
            };
            return findings.finish(id, pass);
        }
        (PublicProbe::Probed(addr, Err(why)), Ok(_)) if addr.ip() != lan_ip => findings.warn(
            format!(
                "rtcbox answers on the LAN at {lan_addr} but not at the public address {addr} \
                 ({why}). Either the router does not forward {p} {port} to {lan_ip}, or it lacks \
                 hairpin NAT; then this cannot be checked from inside your network: test from a \
                 phone on mobile data."
            ),
            forward_fix,
        ),
        // The public address is the LAN one, so both probes were one: it answered.
        (PublicProbe::Probed(_, Err(_)), Ok(_)) => {
            return findings.finish(id, format!("{p} {lan_addr} answers."));
        }
        (PublicProbe::Unknown(why), Ok(_)) => {
            if !findings.is_failed() {
                return Check::new(
                    id,
                    Status::Unavailable,
                    format!(
                        "rtcbox answers on the LAN at {lan_addr}, but the public address is \
                         unknown ({why}), so the port forward cannot be checked."
                    ),
                    Some("Enter the public address in the wizard's network step.".into()),
                );
            }
        }
        (_, Err(why)) => findings.fail(
            format!(
                "rtcbox does not answer on its own {p} port at {lan_addr} ({why}): a firewall on \
                 this machine blocks it, or rtcbox does not listen on that address."
            ),
            firewall_fix,
        ),
    }
    findings.finish(id, String::new())
}

/// What was probed at the public address for a TURN check.
#[derive(Clone, Debug)]
pub enum TurnPublic {
    /// No public address to probe, and why.
    Unknown(String),
    /// The probe of the public address (the LAN probe again when both addresses are one).
    Probed(Box<ProbeReport>),
}

/// What a TURN listener check compares against.
pub struct TurnExpect<'a> {
    pub transport: Transport,
    /// The wizard's port for this listener (the router forwards it).
    pub wizard_port: u16,
    /// The port rtcbox's listener runs on.
    pub listening_port: u16,
    /// Why rtcbox's listeners for this transport are not running, as the TURN server says.
    pub listener_errors: &'a [String],
    /// The public host: turns: URLs name it and TLS certificates must be valid for it.
    pub host: &'a str,
    /// `RTCBOX_TURN_ALLOW_PEERS` as configured.
    pub allow_peers: &'a [String],
}

fn turn_id(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => ids::TURN_UDP,
        Transport::Tcp => ids::TURN_TCP,
        Transport::Tls => ids::TURN_TLS,
    }
}

/// The protocol a router forwards for `transport`.
fn ip_protocol(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "UDP",
        Transport::Tcp | Transport::Tls => "TCP",
    }
}

fn port_setting(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp | Transport::Tcp => "RTCBOX_TURN_PORT",
        Transport::Tls => "RTCBOX_TURN_TLS_PORT",
    }
}

/// Every TURN check when no TURN server runs in this process.
pub fn turn_not_running(id: &'static str) -> Check {
    Check::new(
        id,
        Status::Unavailable,
        "The TURN server is not running in this process, so it cannot be tested.".into(),
        None,
    )
}

/// `turn-udp` / `turn-tcp` / `turn-tls` when the listener is turned off (port 0).
pub fn turn_off(transport: Transport) -> Check {
    let setting = port_setting(transport);
    let detail = match transport {
        Transport::Tls => "TURN over TLS is turned off (RTCBOX_TURN_TLS_PORT=0): callers on \
                           networks that allow only HTTPS-like traffic cannot use TURN."
            .to_owned(),
        _ => format!(
            "TURN over UDP and TCP is turned off ({setting}=0): callers whose network blocks \
             rtcbox's media ports have no relay."
        ),
    };
    Check::new(
        turn_id(transport),
        Status::Unavailable,
        detail,
        Some(format!(
            "To turn it on, remove {setting}=0 (or set it to the wizard's port) and restart rtcbox."
        )),
    )
}

/// `turn-udp` / `turn-tcp` / `turn-tls`: rtcbox's own participant credentials get an allocation
/// at the public address (else on the LAN: port forward or hairpin NAT missing), relaying to the
/// SFU is allowed and to the LAN refused.
pub fn turn_listener(expect: &TurnExpect<'_>, public: &TurnPublic, lan: &ProbeReport) -> Check {
    let transport = expect.transport;
    let id = turn_id(transport);
    let p = transport.to_string();
    let proto = ip_protocol(transport);
    let port = expect.listening_port;
    let setting = port_setting(transport);
    let mut findings = Findings::default();
    if !expect.listener_errors.is_empty() {
        let answering = answering_software(public, lan)
            .map(|s| format!(" Another program answers on {proto} {port}: \"{s}\"."))
            .unwrap_or_default();
        findings.fail(
            format!(
                "rtcbox's TURN listener for {p} is not running: {}.{answering}",
                expect.listener_errors.join("; ")
            ),
            format!(
                "Free {proto} port {port}: stop the program holding it (often a coturn left from \
                 an earlier setup: `systemctl disable --now coturn`, or stop its container or \
                 package), then restart rtcbox. Or move rtcbox's TURN to a free port with \
                 {setting} and the wizard's network step, and forward that port instead."
            ),
        );
        return findings.finish(id, String::new());
    }
    if expect.wizard_port != port {
        findings.fail(
            format!(
                "rtcbox's TURN listens on {p} {port}, but the wizard's port table uses {}.",
                expect.wizard_port
            ),
            format!(
                "Use one port everywhere: apply the wizard (Review → Apply) and restart rtcbox, \
                 which sets {setting}={wizard}; if {setting} is set in rtcbox's environment, \
                 change it there, or change the wizard's port to {port}.",
                wizard = expect.wizard_port
            ),
        );
    }
    let forwarded = format!("{proto} {port}");
    let (report, at_public) = turn_reach(&mut findings, &p, &forwarded, public, lan);
    let addr = report.target;
    let allocated = match &report.outcome {
        Ok(allocated) => allocated,
        Err(ProbeError::Untrusted(why)) => {
            findings.warn(
                format!(
                    "The TLS listener answers at {addr}, but its certificate is not trusted: \
                     {why}. Browsers will not use turns: with it."
                ),
                format!(
                    "TURN over TLS needs a certificate for {} that browsers trust (from a public \
                     CA such as Let's Encrypt). Until rtcbox has one, callers use TURN over UDP \
                     and TCP, which most networks allow.",
                    expect.host
                ),
            );
            return findings.finish(id, String::new());
        }
        Err(error) => {
            turn_failure(&mut findings, &p, &forwarded, setting, report, error);
            return findings.finish(id, String::new());
        }
    };
    let mut pass = if at_public {
        format!("TURN over {p} at {addr} (the public address) works")
    } else {
        format!("TURN over {p} at {addr} works")
    };
    pass.push_str(&format!(
        ": credentials like a call participant's get relay {}",
        allocated.relayed
    ));
    match &allocated.allowed {
        Some((peer, Answer::Success)) => {
            pass.push_str(&format!(", relaying to the SFU ({peer}) is allowed"));
        }
        Some((peer, answer)) => findings.fail(
            format!(
                "The TURN server does not let a caller relay to the SFU's media address {peer} \
                 ({answer}): callers who need TURN get no audio or video."
            ),
            "The SFU's advertised media address must be one of the TURN server's own: set \
             RTCBOX_NODE_IP to the public address the SFU advertises and restart rtcbox.",
        ),
        None => {
            pass.push_str(" (the SFU's media address is unknown, so relaying to it was not tried)")
        }
    }
    judge_lan_peer(&mut findings, &mut pass, allocated, expect.allow_peers);
    judge_release(&mut findings, allocated);
    pass.push('.');
    findings.context(&pass);
    if !at_public {
        // Reached only on the LAN: turn_reach recorded why; a public address was not known.
        if let (TurnPublic::Unknown(why), false) = (public, findings.is_failed()) {
            return Check::new(
                id,
                Status::Unavailable,
                format!(
                    "{pass}\nThe public address is unknown ({why}), so the port forward cannot be checked."
                ),
                Some("Enter the public address in the wizard's network step.".into()),
            );
        }
    }
    findings.finish(id, pass)
}

/// What the legacy check compares against.
pub struct LegacyExpect<'a> {
    /// The wizard turned legacy 1:1 calls on (Synapse got turn_uris and the shared secret).
    pub wizard_on: bool,
    /// rtcbox runs with a shared secret (`RTCBOX_TURN_SHARED_SECRET`).
    pub running_on: bool,
    /// The running secret is the wizard's.
    pub same_secret: bool,
    /// `RTCBOX_TURN_SHARED_SECRET` is set by the environment or the command line.
    pub pinned: bool,
    /// The TURN UDP/TCP port rtcbox listens on; `None` when turned off.
    pub listening_port: Option<u16>,
    /// The address the internet sees this machine as, when known.
    pub public_ip: Option<IpAddr>,
    /// The relay range the wizard's port table forwards, inclusive.
    pub relay_range: (u16, u16),
    pub allow_peers: &'a [String],
}

/// `turn-legacy`: credentials made from the shared secret the way Synapse makes them get an
/// allocation whose relay the internet can reach, may relay to the internet and not to the LAN.
/// `probes` is `None` when nothing was probed (legacy calls off, or no TURN listener).
pub fn turn_legacy(
    expect: &LegacyExpect<'_>,
    probes: Option<(&TurnPublic, &ProbeReport)>,
) -> Check {
    let id = ids::TURN_LEGACY;
    let mut findings = Findings::default();
    if !expect.wizard_on && !expect.running_on {
        return Check::new(
            id,
            Status::Unavailable,
            "Legacy 1:1 calls through rtcbox's TURN server are off (the wizard's last step), so \
             Synapse hands out no credentials for it."
                .into(),
            None,
        );
    }
    let apply = "Apply the wizard (Review → Apply) and restart rtcbox.";
    if expect.wizard_on && !expect.running_on {
        findings.fail(
            "The wizard turned legacy 1:1 calls on, but rtcbox runs without the shared secret, so \
             it refuses the TURN credentials Synapse hands out.",
            apply,
        );
        return findings.finish(id, String::new());
    }
    if expect.wizard_on && !expect.same_secret {
        let fix = if expect.pinned {
            "RTCBOX_TURN_SHARED_SECRET is set in rtcbox's environment or command line: put its \
             value into Synapse's turn_shared_secret, or set it to the wizard's secret (in the \
             homeserver.yaml snippet), and restart."
        } else {
            apply
        };
        findings.fail(
            "rtcbox runs with another TURN shared secret than the one in the wizard's \
             homeserver.yaml snippet, so it refuses the credentials Synapse hands out.",
            fix,
        );
        return findings.finish(id, String::new());
    }
    let Some(port) = expect.listening_port else {
        findings.fail(
            "TURN over UDP and TCP is turned off (RTCBOX_TURN_PORT=0): legacy 1:1 calls have no \
             TURN server.",
            "Set RTCBOX_TURN_PORT to the wizard's TURN port (3478 by default) and restart rtcbox.",
        );
        return findings.finish(id, String::new());
    };
    let Some((public, lan)) = probes else {
        return Check::new(id, Status::Unavailable, "Nothing was probed.".into(), None);
    };
    let (min, max) = expect.relay_range;
    let forwarded = format!("UDP {port} and the relay ports UDP {min}-{max}");
    let (report, at_public) = turn_reach(&mut findings, "UDP", &forwarded, public, lan);
    let allocated = match &report.outcome {
        Ok(allocated) => allocated,
        Err(ProbeError::Rejected { code: 401, .. }) if report.software.is_none() => {
            findings.fail(
                "The TURN server refuses credentials made from the shared secret the way Synapse \
                 makes them (error 401).",
                "Make Synapse's turn_shared_secret and rtcbox's RTCBOX_TURN_SHARED_SECRET the \
                 same: apply the wizard (Review → Apply), restart rtcbox, and use the wizard's \
                 homeserver.yaml snippet.",
            );
            return findings.finish(id, String::new());
        }
        Err(error) => {
            turn_failure(
                &mut findings,
                "UDP",
                &format!("UDP {port}"),
                "RTCBOX_TURN_PORT",
                report,
                error,
            );
            return findings.finish(id, String::new());
        }
    };
    let relayed = allocated.relayed;
    let mut pass = format!(
        "Credentials made from the shared secret as Synapse makes them get relay {relayed} at {}",
        report.target
    );
    if at_public {
        pass.push_str(" (the public address)");
    }
    if let Some(public_ip) = expect.public_ip
        && relayed.ip().to_canonical() != public_ip.to_canonical()
    {
        findings.fail(
            format!(
                "The relay address is {}, but the internet sees this machine as {public_ip}: the \
                 other caller cannot reach the relay.",
                relayed.ip()
            ),
            format!(
                "Set RTCBOX_NODE_IP={public_ip} (the wizard's public address) and restart rtcbox."
            ),
        );
    }
    if !(min..=max).contains(&relayed.port()) {
        findings.warn(
            format!(
                "The relay port {} is outside the range the router forwards ({min}-{max}).",
                relayed.port()
            ),
            format!(
                "Apply the wizard (Review → Apply) and restart rtcbox, which sets \
                 RTCBOX_TURN_RELAY_PORTS={min}-{max}; if that is set in rtcbox's environment, \
                 change it there."
            ),
        );
    }
    match &allocated.allowed {
        Some((peer, Answer::Success)) => {
            pass.push_str(&format!(", may relay to the internet ({peer})"));
        }
        Some((peer, answer)) => findings.fail(
            format!(
                "Synapse's credentials may not relay to the internet address {peer} ({answer}): \
                 legacy calls through TURN fail."
            ),
            "Check RTCBOX_TURN_ALLOW_PEERS and rtcbox's log.",
        ),
        None => {}
    }
    judge_lan_peer(&mut findings, &mut pass, allocated, expect.allow_peers);
    judge_release(&mut findings, allocated);
    pass.push('.');
    findings.context(&pass);
    if !expect.wizard_on {
        pass.push_str(
            "\nRTCBOX_TURN_SHARED_SECRET is set, but the wizard's homeserver.yaml snippet has no \
             TURN settings: make sure Synapse's turn_shared_secret is the same.",
        );
    }
    findings.finish(id, pass)
}

/// The probe to judge, and whether it is the public one: the public probe when rtcbox's TURN
/// answered there, else the LAN probe. Records a warning when only the LAN answers (port forward
/// or hairpin NAT missing).
fn turn_reach<'a>(
    findings: &mut Findings,
    p: &str,
    forwarded: &str,
    public: &'a TurnPublic,
    lan: &'a ProbeReport,
) -> (&'a ProbeReport, bool) {
    let reached = |report: &ProbeReport| {
        matches!(
            report.outcome,
            Ok(_) | Err(ProbeError::Untrusted(_) | ProbeError::Rejected { .. })
        )
    };
    let lan_addr = lan.target;
    let lan_ip = lan_addr.ip();
    let TurnPublic::Probed(report) = public else {
        return (lan, false);
    };
    let report: &ProbeReport = report;
    let elsewhere = report.target.ip() != lan_ip;
    if reached(report) {
        return (report, elsewhere);
    }
    if elsewhere && reached(lan) {
        let why = report
            .outcome
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        findings.warn(
            format!(
                "rtcbox's TURN answers over {p} on the LAN at {lan_addr} but not at the public \
                 address {} ({why}). Either the router does not forward {forwarded} to {lan_ip}, \
                 or it lacks hairpin NAT; then this cannot be checked from inside your network: \
                 test from a phone on mobile data.",
                report.target
            ),
            format!(
                "Forward {forwarded} on the router to {lan_ip} (the same port numbers), and allow \
                 them in this machine's firewall (DSM: Control Panel → Security → Firewall)."
            ),
        );
    }
    (lan, false)
}

/// Why no allocation was made, and what to change.
fn turn_failure(
    findings: &mut Findings,
    p: &str,
    forwarded: &str,
    setting: &str,
    report: &ProbeReport,
    error: &ProbeError,
) {
    let addr = report.target;
    let other_program = |what: String| -> (String, String) {
        let software = report
            .software
            .as_ref()
            .map(|s| format!(" (it calls itself \"{s}\")"))
            .unwrap_or_default();
        (
            format!(
                "Something other than rtcbox's TURN server answers on {p} {addr}{software}: {what}."
            ),
            format!(
                "Stop the program holding {forwarded} (often a coturn left from an earlier setup: \
                 `systemctl disable --now coturn`, or stop its container or package), then \
                 restart rtcbox."
            ),
        )
    };
    let firewall = format!(
        "Allow {forwarded} in this machine's firewall (DSM: Control Panel → Security → Firewall → \
         Edit Rules → Create), and check on the dashboard that rtcbox's TURN listener runs."
    );
    let (detail, fix) = match error {
        ProbeError::Refused => (
            format!("Nothing listens for TURN over {p} at {addr} (the connection was refused)."),
            format!(
                "Check on the dashboard that rtcbox's TURN listener runs on this port ({setting}), \
                 and that this machine's firewall does not reject {forwarded}."
            ),
        ),
        ProbeError::ConnectTimeout | ProbeError::NoAnswer | ProbeError::Connect(_) => (
            format!(
                "rtcbox's TURN does not answer over {p} at {addr} ({error}): a firewall on this \
                 machine blocks it, or rtcbox does not listen on that address."
            ),
            firewall,
        ),
        ProbeError::Tls(why) => (
            format!("The TLS handshake with {addr} failed: {why}."),
            format!(
                "Check that {setting} is rtcbox's TURN-over-TLS port and that no other program \
                 holds it."
            ),
        ),
        ProbeError::NotTurn(what) | ProbeError::NoChallenge(what) => other_program(what.clone()),
        ProbeError::Rejected { code: 401, .. } if report.software.is_some() => {
            other_program("it refuses rtcbox's credentials".into())
        }
        ProbeError::Rejected { code: 401, .. } => (
            format!(
                "rtcbox's TURN server refuses the SFU's own participant credentials over {p} \
                 (error 401)."
            ),
            "Restart rtcbox; if this stays, report it as an rtcbox bug with the log.".into(),
        ),
        ProbeError::Rejected {
            code: 486 | 508, ..
        } => (
            format!("The TURN server at {addr} refused the allocation: {error}."),
            "It is at its allocation limit: see the TURN allocations on the dashboard.".into(),
        ),
        ProbeError::Rejected { .. } | ProbeError::Broken(_) => (
            format!("TURN over {p} at {addr}: {error}."),
            "Check rtcbox's log; if another program (e.g. coturn) holds the port, stop it.".into(),
        ),
        ProbeError::Untrusted(why) => (
            format!("The certificate of {addr} is not trusted: {why}."),
            "Give rtcbox a certificate from a public CA.".into(),
        ),
    };
    findings.fail(detail, fix);
}

/// The LAN peer must be refused with 403, unless the operator's allow-list lets it through.
fn judge_lan_peer(
    findings: &mut Findings,
    pass: &mut String,
    allocated: &Allocated,
    allow_peers: &[String],
) {
    let Some((peer, answer)) = &allocated.denied else {
        return;
    };
    match answer {
        Answer::Error { code: 403, .. } => {
            pass.push_str(&format!(", and relaying to {peer} on the LAN is refused"));
        }
        Answer::Success => {
            let allowing: Vec<&String> = allow_peers
                .iter()
                .filter(|raw| Cidr::parse(raw).is_ok_and(|cidr| cidr.contains(peer.ip())))
                .collect();
            if allowing.is_empty() {
                findings.fail(
                    format!(
                        "The TURN server relays to {peer} on your LAN: anyone with TURN \
                         credentials could reach this machine's and your network's services."
                    ),
                    "Turn TURN off until this is fixed (RTCBOX_TURN_PORT=0 and \
                     RTCBOX_TURN_TLS_PORT=0) and report it as an rtcbox bug.",
                );
            } else {
                let list: Vec<&str> = allowing.iter().map(|s| s.as_str()).collect();
                findings.warn(
                    format!(
                        "RTCBOX_TURN_ALLOW_PEERS ({}) lets anyone with TURN credentials relay to \
                         {peer} on your LAN.",
                        list.join(", ")
                    ),
                    "Remove private and loopback blocks from RTCBOX_TURN_ALLOW_PEERS unless you \
                     really need them.",
                );
            }
        }
        other => findings.warn(
            format!("Relaying to {peer} on the LAN was not refused with 403 as expected: {other}."),
            "Check rtcbox's log.",
        ),
    }
}

fn judge_release(findings: &mut Findings, allocated: &Allocated) {
    if allocated.released != Answer::Success {
        findings.add(
            Status::Warn,
            format!(
                "Ending the test allocation (Refresh with lifetime 0) got {}; it stays until it \
                 expires.",
                allocated.released
            ),
            None,
        );
    }
}

/// The SOFTWARE another server named in its answers.
fn answering_software<'a>(public: &'a TurnPublic, lan: &'a ProbeReport) -> Option<&'a str> {
    lan.software.as_deref().or(match public {
        TurnPublic::Probed(report) => report.software.as_deref(),
        TurnPublic::Unknown(_) => None,
    })
}

/// A check that did not finish in time.
pub fn timed_out(id: &'static str) -> Check {
    Check::new(
        id,
        Status::Unavailable,
        format!(
            "The check did not finish within {} s (a lookup or connection hung); run it again.",
            super::CHECK_TIMEOUT.as_secs()
        ),
        None,
    )
}

/// Equal after dropping trailing slashes, with scheme and host compared case-insensitively.
pub fn same_url(a: &str, b: &str) -> bool {
    fn split(url: &str) -> (String, &str) {
        let url = url.trim().trim_end_matches('/');
        let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
        let path_at = url[after_scheme..]
            .find('/')
            .map(|i| i + after_scheme)
            .unwrap_or(url.len());
        (url[..path_at].to_ascii_lowercase(), &url[path_at..])
    }
    split(a) == split(b)
}

/// What to do when a URL cannot be reached, by why.
fn reach_fix(error: &FetchError, what: &str) -> String {
    match error {
        FetchError::Dns { host, .. } => {
            format!("Create a DNS record for {host} pointing at your public address.")
        }
        FetchError::Refused { addr }
        | FetchError::ConnectTimeout { addr }
        | FetchError::Connect { addr, .. } => format!(
            "Make {what} reachable on port {port}: forward TCP {port} on the router to it and allow \
             it in the firewall. If this machine cannot reach its own public address (no hairpin \
             NAT), add a local DNS entry for the name pointing at the proxy's LAN address.",
            port = addr.port()
        ),
        FetchError::Certificate { host, .. } => {
            format!("Give {what} a certificate for {host} from a public CA such as Let's Encrypt.")
        }
        FetchError::Tls { host, .. } => format!("Make {what} serve HTTPS for {host}."),
        FetchError::Timeout { .. } | FetchError::Http { .. } => {
            format!("Check that {what} is up and answers promptly.")
        }
        FetchError::TooLarge { .. } => format!("Check what {what} serves at this URL."),
        FetchError::BadUrl { .. } | FetchError::BadRequest(_) => {
            "Check the URLs in the wizard.".into()
        }
    }
}

/// The proxy must send `public_url`'s path to rtcbox's HTTP port.
fn route_fix(deployment: &Deployment, public_url: &str) -> String {
    let backend = backend(deployment);
    // Proxies are configured with the http(s) form of a WebSocket URL.
    let public_url = match public_url.split_once("://") {
        Some(("wss", rest)) => format!("https://{rest}"),
        Some(("ws", rest)) => format!("http://{rest}"),
        _ => public_url.to_owned(),
    };
    match &deployment.tls {
        TlsMode::ReverseProxy { proxy } => format!(
            "In {}, forward {public_url} (and everything below it) to rtcbox at {backend}, keeping \
             the path; the wizard's {} configuration does exactly that.",
            proxy.label(),
            proxy.label()
        ),
        _ => format!("Make {public_url} reach rtcbox at {backend}."),
    }
}

fn unreachable_backend_fix(deployment: &Deployment) -> String {
    format!(
        "Point the reverse proxy at {}; check that rtcbox is running and that this machine's \
         firewall lets the proxy reach that port.",
        backend(deployment)
    )
}

fn backend(deployment: &Deployment) -> String {
    let network = &deployment.network;
    match network.lan_ip {
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", network.ports.http),
        IpAddr::V4(ip) => format!("http://{ip}:{}", network.ports.http),
    }
}

/// How to let WebSocket upgrades through, per proxy.
fn websocket_fix(deployment: &Deployment) -> String {
    let host = deployment.endpoints.sfu_host();
    match &deployment.tls {
        TlsMode::ReverseProxy { proxy } => match proxy {
            ProxyKind::SynologyDsm => format!(
                "DSM: Control Panel → Login Portal → Advanced → Reverse Proxy → edit the rule for \
                 {host} → Custom Header → Create → WebSocket → Save."
            ),
            ProxyKind::Nginx => "nginx: in the location that proxies to rtcbox, add \
                 `proxy_http_version 1.1;`, `proxy_set_header Upgrade $http_upgrade;` and \
                 `proxy_set_header Connection \"upgrade\";`, then reload nginx."
                .into(),
            ProxyKind::Caddy => format!(
                "Caddy passes WebSocket upgrades by itself: check that `reverse_proxy` for {host} \
                 points at rtcbox and that nothing in front of Caddy (a CDN, another proxy) strips \
                 the Upgrade header."
            ),
            ProxyKind::Traefik => "Traefik passes WebSocket upgrades by itself: check the router \
                 rule and that no middleware or CDN in front strips the Upgrade header."
                .into(),
            ProxyKind::Apache => "Apache: enable mod_proxy_wstunnel and add `upgrade=websocket` \
                 to the ProxyPass line for rtcbox, then reload Apache."
                .into(),
        },
        _ => "Every proxy between clients and rtcbox must pass WebSocket upgrades (the Upgrade \
             and Connection headers)."
            .into(),
    }
}
