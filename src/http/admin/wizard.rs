//! The setup wizard's pages: one form per step, stored in SQLite as entered, validated with
//! field-level messages, resumable (`/wizard` opens the first step that still needs an answer).
//! A rejected form re-renders as typed and changes nothing; Review's "Apply" writes the
//! settings the deployment implies, all in one transaction.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};

use super::auth::Session;
use super::views::{self, Errors, Field, FormData, Layout};
use super::{AdminState, unix_now};
use crate::config::SettingKey;
use crate::db;
use crate::secret::random_alphanumeric;
use crate::setup::discover;
use crate::setup::model::{AcmeChallenge, Deployment, Ports, ProxyKind, Running};
use crate::setup::wizard::{
    EndpointsStep, FieldErrors, HomeserverStep, NetworkStep, PORT_FIELDS, Step, Steps, TlsStep,
    TurnStep, lan_ip_doubt, warnings,
};

#[derive(Template)]
#[template(path = "wizard.html")]
pub struct StepPage {
    pub layout: Layout,
    pub step: Step,
    pub progress: Vec<ProgressItem>,
    pub intro: Vec<String>,
    /// Facts found out for this step (discovery results), shown above the form.
    pub facts: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub fields: Vec<Field>,
    /// A message for the whole form (e.g. "public IP detected").
    pub flash: Option<String>,
    pub has_errors: bool,
}

#[derive(Template)]
#[template(path = "review.html")]
pub struct ReviewPage {
    pub layout: Layout,
    pub progress: Vec<ProgressItem>,
    pub summary: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub changes: Vec<SettingChange>,
    pub missing: Vec<Step>,
}

pub struct ProgressItem {
    pub step: Step,
    pub complete: bool,
    pub current: bool,
}

/// One setting that Apply writes (or cannot, because the environment pins it).
pub struct SettingChange {
    pub env_name: &'static str,
    pub value: String,
    pub current: String,
    pub pinned: bool,
}

/// `/wizard`: where the admin left off.
pub async fn resume(State(state): State<Arc<AdminState>>, _session: Session) -> Response {
    match load_steps(&state).await {
        Ok(steps) => {
            Redirect::to(&format!("/wizard/{}", steps.first_incomplete().id())).into_response()
        }
        Err(response) => response,
    }
}

pub async fn show(
    State(state): State<Arc<AdminState>>,
    session: Session,
    Path(step): Path<String>,
) -> Response {
    let Some(step) = Step::from_id(&step) else {
        return views::error_response(StatusCode::NOT_FOUND, "There is no such wizard step.");
    };
    let steps = match load_steps(&state).await {
        Ok(steps) => steps,
        Err(response) => return response,
    };
    render_step(
        &state,
        &session,
        &steps,
        step,
        None,
        &Errors::new(),
        StatusCode::OK,
    )
    .await
}

pub async fn submit(
    State(state): State<Arc<AdminState>>,
    session: Session,
    Path(step): Path<String>,
    form: FormData,
) -> Response {
    let form = form.0;
    if let Err(rejected) = session.check_csrf(&form) {
        return rejected;
    }
    let Some(step) = Step::from_id(&step) else {
        return views::error_response(StatusCode::NOT_FOUND, "There is no such wizard step.");
    };
    let mut steps = match load_steps(&state).await {
        Ok(steps) => steps,
        Err(response) => return response,
    };
    if form.get("action").map(String::as_str) == Some("back") {
        let back = step.previous().unwrap_or(step);
        return Redirect::to(&format!("/wizard/{}", back.id())).into_response();
    }
    let saved: Result<String, FieldErrors> = match step {
        Step::Homeserver => {
            let mut entered = HomeserverStep::from_form(&form);
            match entered.validate_server_name() {
                Err(errors) => {
                    steps.homeserver = Some(entered);
                    Err(errors)
                }
                Ok(_) => {
                    entered.discovered = discover_homeserver(&state, &entered).await;
                    let result = entered.validate().map(|_| ());
                    steps.homeserver = Some(entered.clone());
                    result.map(|()| json(&entered))
                }
            }
        }
        Step::Endpoints => {
            let entered = EndpointsStep::from_form(&form);
            let result = entered.validate().map(|_| json(&entered));
            steps.endpoints = Some(entered);
            result
        }
        Step::Tls => {
            let entered = TlsStep::from_form(&form);
            let result = entered
                .validate()
                .and_then(|mode| usable_files(&mode))
                .map(|_| json(&entered));
            steps.tls = Some(entered);
            result
        }
        Step::Network => {
            let mut entered = NetworkStep::from_form(&form);
            if form.get("action").map(String::as_str) == Some("detect") {
                let flash = match detect_public_ip(&state).await {
                    Ok(ip) if entered.public_ip.is_empty() => format!(
                        "The internet sees this machine as {ip}. With the field left empty, \
                         rtcbox advertises that address and follows it when it changes."
                    ),
                    Ok(ip) => {
                        entered.public_ip = ip.to_string();
                        format!(
                            "Detected public IP {ip}, entered as the fixed address. Empty the \
                             field to have rtcbox follow it instead."
                        )
                    }
                    Err(why) => format!("The public IP could not be detected: {why}"),
                };
                steps.network = Some(entered);
                return render_step(
                    &state,
                    &session,
                    &steps,
                    step,
                    Some(flash),
                    &Errors::new(),
                    StatusCode::OK,
                )
                .await;
            }
            let result = entered
                .validate()
                .and_then(|network| confirmed_lan_ip(&state, network.lan_ip, &form))
                .map(|()| json(&entered));
            steps.network = Some(entered);
            result
        }
        Step::Turn => {
            let previous = steps
                .turn
                .as_ref()
                .map(|t| t.shared_secret.clone())
                .filter(|s| s.len() >= 32)
                .unwrap_or_else(|| random_alphanumeric(48));
            let entered = TurnStep::from_form(&form, &previous);
            let mut result = entered.validate().map(|_| json(&entered));
            // The relay range asked here is stored with the network step's answers, checked
            // with them (e.g. against the media port), and saved only when both are valid.
            let relay = (form.get("relay_min"), form.get("relay_max"));
            let mut network_update = None;
            if let (Some(min), Some(max), Some(network)) = (relay.0, relay.1, steps.network.clone())
            {
                let network = NetworkStep {
                    relay_min: min.trim().to_owned(),
                    relay_max: max.trim().to_owned(),
                    ..network
                };
                let relay_errors: FieldErrors = network
                    .validate()
                    .err()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(name, _)| name.starts_with("relay_"))
                    .collect();
                if !relay_errors.is_empty() {
                    let mut errors = result.err().unwrap_or_default();
                    errors.extend(relay_errors);
                    result = Err(errors);
                }
                network_update = Some(network.clone());
                steps.network = Some(network);
            }
            if let (Ok(_), Some(network)) = (&result, network_update)
                && let Err(error) = db::admin::save_wizard_step(
                    &state.pool,
                    Step::Network.id(),
                    &json(&network),
                    true,
                    unix_now(),
                )
                .await
            {
                return views::internal_error("saving a wizard step", &error);
            }
            steps.turn = Some(entered);
            result
        }
        Step::Review => return apply(&state, &steps).await,
    };
    match saved {
        Ok(data) => {
            if let Err(error) =
                db::admin::save_wizard_step(&state.pool, step.id(), &data, true, unix_now()).await
            {
                return views::internal_error("saving a wizard step", &error);
            }
            let next = step.next().unwrap_or(Step::Review);
            Redirect::to(&format!("/wizard/{}", next.id())).into_response()
        }
        Err(errors) => {
            let errors: Errors = errors.into_iter().collect();
            render_step(
                &state,
                &session,
                &steps,
                step,
                None,
                &errors,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// A loopback LAN address, or one this machine does not have, is saved only when the admin
/// ticks "Use this address anyway" (`lan_ip_anyway=yes`), which the step shows with the doubt.
fn confirmed_lan_ip(
    state: &AdminState,
    ip: IpAddr,
    form: &std::collections::HashMap<String, String>,
) -> Result<(), FieldErrors> {
    match lan_ip_doubt(ip, &(state.lan_addresses)()) {
        Some(doubt) if form.get("lan_ip_anyway").map(String::as_str) != Some("yes") => {
            Err(FieldErrors::from([("lan_ip", doubt)]))
        }
        _ => Ok(()),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wizard steps serialise")
}

pub async fn load_steps(state: &AdminState) -> Result<Steps, Response> {
    match db::admin::wizard_steps(&state.pool).await {
        Ok(stored) => {
            let data: BTreeMap<String, String> =
                stored.into_iter().map(|(k, v)| (k, v.data)).collect();
            Ok(Steps::from_stored(&data))
        }
        Err(error) => Err(views::internal_error(
            "reading the wizard's answers",
            &error,
        )),
    }
}

/// The deployment the finished wizard describes, or a page saying which steps are missing.
/// Without a fixed public IP, the outputs name the one rtcbox detected last: they describe
/// what runs.
pub async fn deployment(state: &AdminState) -> Result<Deployment, Vec<Step>> {
    match load_steps(state).await {
        Ok(steps) => steps_deployment(state, &steps),
        Err(_) => Err(Step::ALL[..5].to_vec()),
    }
}

/// The deployment `steps` describe on top of what runs (see [`deployment`]).
fn steps_deployment(state: &AdminState, steps: &Steps) -> Result<Deployment, Vec<Step>> {
    let mut d = steps.deployment(running(state))?;
    if d.network.follows_public_ip {
        d.network.public_ip = state.public_ip.as_ref().and_then(|p| p.status().current);
    }
    Ok(d)
}

/// `files` mode: the files must be readable by rtcbox and hold a certificate and its key, as
/// the start will check; the error names the file and what is wrong with it.
fn usable_files(mode: &crate::setup::model::TlsMode) -> Result<(), FieldErrors> {
    let crate::setup::model::TlsMode::Files { cert, key } = mode else {
        return Ok(());
    };
    let mut files =
        crate::tls::CertFiles::new(std::path::Path::new(cert), std::path::Path::new(key));
    match files.load() {
        Ok(_) => Ok(()),
        Err(error) => {
            let mut errors = FieldErrors::new();
            errors.insert(
                "cert_file",
                format!("rtcbox cannot use these files: {error:#}."),
            );
            Err(errors)
        }
    }
}

/// How this rtcbox runs: its data directory (resolved, with its owner) and listeners, and the
/// settings its environment or flags pin. The IO for the container file happens here, so the
/// generators stay pure.
fn running(state: &AdminState) -> Running {
    use std::os::unix::fs::MetadataExt as _;
    let dir = state
        .data_dir
        .as_deref()
        .and_then(|dir| std::fs::canonicalize(dir).ok());
    let data_owner = dir
        .as_deref()
        .and_then(|dir| std::fs::metadata(dir).ok())
        .map(|meta| (meta.uid(), meta.gid()));
    Running {
        data_dir: dir.and_then(|dir| dir.to_str().map(str::to_owned)),
        data_owner,
        http_bind_ip: state.settings.http_bind.ip(),
        admin_bind_ip: state.settings.admin_bind.ip(),
        pinned: SettingKey::ALL
            .into_iter()
            .filter(|key| state.settings.is_pinned(*key))
            .map(SettingKey::env_name)
            .collect(),
        tls_trusted: state
            .certificates
            .as_ref()
            .is_some_and(|c| c.info().publicly_trusted),
    }
}

async fn discover_homeserver(
    state: &AdminState,
    entered: &HomeserverStep,
) -> crate::setup::wizard::Discovered {
    let Some(net) = &state.net else {
        return crate::setup::wizard::Discovered {
            notes: vec![
                "Discovery is not available here; enter the client URL and version.".into(),
            ],
            ..Default::default()
        };
    };
    let base_override =
        (!entered.client_base_url.is_empty()).then_some(entered.client_base_url.as_str());
    let info = discover::homeserver(
        &net.http,
        &net.federation,
        &entered.server_name,
        base_override,
    )
    .await;
    crate::setup::wizard::Discovered {
        client_base_url: info.client_base_url,
        synapse_version: info.synapse_version.map(|v| v.to_string()),
        server_software: info.server_software,
        well_known: info.well_known,
        versions: info.versions,
        unstable_features: info.unstable_features,
        notes: info.notes,
    }
}

/// The public IP field's help: empty follows the address; what rtcbox sees now.
fn public_ip_help(state: &AdminState) -> String {
    let now = match state.public_ip.as_ref().map(|p| p.status()) {
        Some(status) => match status.current {
            Some(ip) if status.mode == crate::net::public_ip::Mode::Automatic => {
                format!(" rtcbox sees {ip} now.")
            }
            _ => String::new(),
        },
        None => String::new(),
    };
    format!(
        "Leave it empty: rtcbox asks STUN servers for your router's internet address, advertises \
         it to callers for media and follows it when your provider changes it, with no \
         restart.{now} Enter an address only if it never changes (a static IP); it is then \
         advertised as it is and never checked."
    )
}

async fn detect_public_ip(state: &AdminState) -> Result<IpAddr, String> {
    discover::public_ip(&state.settings.stun_servers).await
}

/// What the running configuration says the ports are.
fn running_ports(state: &AdminState) -> Ports {
    let udp = state
        .media
        .udp
        .first()
        .map_or(state.settings.rtc_udp_port, |a| a.port());
    let tcp = state
        .media
        .tcp
        .first()
        .map_or(state.settings.rtc_tcp_port, |a| a.port());
    let defaults = Ports::default();
    let s = &state.settings;
    // A TURN listener turned off (0) is suggested at its default port.
    let on = |port: u16, default: u16| if port == 0 { default } else { port };
    Ports {
        http: s.http_bind.port(),
        admin: s.admin_bind.port(),
        rtc_udp: udp,
        rtc_tcp: tcp,
        turn: on(s.turn_port, defaults.turn),
        turns: on(s.turn_tls_port, defaults.turns),
        relay_min: s.turn_relay_ports.0,
        relay_max: s.turn_relay_ports.1,
        ..defaults
    }
}

async fn render_step(
    state: &AdminState,
    session: &Session,
    steps: &Steps,
    step: Step,
    flash: Option<String>,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    // Progress shows what is saved, not what this (possibly rejected) form holds.
    let saved = match load_steps(state).await {
        Ok(saved) => saved,
        Err(response) => return response,
    };
    let progress = Step::ALL
        .iter()
        .map(|s| ProgressItem {
            step: *s,
            complete: saved.is_complete(*s),
            current: *s == step,
        })
        .collect();
    let layout = session.layout(&format!("Setup: {}", step.title()), "wizard");
    if step == Step::Review {
        return review(state, layout, steps, progress);
    }
    let mut facts = Vec::new();
    let mut notes = Vec::new();
    let (intro, fields): (Vec<&str>, Vec<Field>) = match step {
        Step::Homeserver => {
            let s = steps.homeserver.clone().unwrap_or_default();
            let d = &s.discovered;
            if let Some(url) = &d.client_base_url {
                facts.push(("Client URL found".into(), url.clone()));
            }
            if let Some(software) = &d.server_software {
                facts.push(("Server software".into(), software.clone()));
            }
            if let Some(version) = &d.synapse_version {
                facts.push(("Synapse version found".into(), version.clone()));
            }
            if !d.versions.is_empty() {
                facts.push(("Matrix versions".into(), d.versions.join(", ")));
            }
            let enabled: Vec<&str> = d
                .unstable_features
                .iter()
                .filter(|(k, v)| **v && is_relevant_feature(k))
                .map(|(k, _)| k.as_str())
                .collect();
            if !d.unstable_features.is_empty() {
                facts.push((
                    "Call-related features on".into(),
                    if enabled.is_empty() {
                        "none".into()
                    } else {
                        enabled.join(", ")
                    },
                ));
            }
            notes.extend(d.notes.iter().cloned());
            (
                vec![
                    "rtcbox needs to know your Matrix homeserver. Enter its server name: the part after the ':' in your user IDs (for @alice:example.org it is example.org).",
                    "rtcbox then looks up https://<server name>/.well-known/matrix/client, the client API's /versions, and the Synapse version. Fill in the optional fields only if that lookup fails or is wrong.",
                ],
                vec![
                    Field::text("server_name", "Server name", &s.server_name).placeholder("e.g. example.org").required(),
                    Field::text("client_base_url", "Client URL (optional)", &s.client_base_url)
                        .placeholder("e.g. https://matrix.example.org")
                        .help("Where your Matrix clients reach the homeserver. Leave empty to use what the well-known file says."),
                    Field::text("synapse_version", "Synapse version (optional)", &s.synapse_version)
                        .placeholder("e.g. 1.163.2")
                        .help("Leave empty to use the detected version. It decides which homeserver.yaml settings are generated."),
                ],
            )
        }
        Step::Endpoints => {
            let server_name = steps
                .homeserver
                .as_ref()
                .map(|h| h.server_name.clone())
                .unwrap_or_default();
            let s = steps
                .endpoints
                .clone()
                .unwrap_or_else(|| EndpointsStep::suggested(&server_name));
            // What the homeserver step found, so the admin sees it before going on.
            if let Some(hs) = &steps.homeserver {
                if let Ok(valid) = hs.validate() {
                    facts.push(("Homeserver".into(), valid.server_name.clone()));
                    facts.push(("Client URL".into(), valid.client_base_url.clone()));
                    let version = valid
                        .synapse_version
                        .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
                    facts.push(("Synapse version".into(), version));
                }
                notes.extend(hs.discovered.notes.iter().cloned());
            }
            (
                vec![
                    "Calls reach rtcbox over HTTPS at a public hostname that points at your network. One hostname is simplest: the authorization service answers under /livekit/jwt and the media server (SFU) under /livekit/sfu.",
                    "The hostname must not be your server name's own domain if that already serves other things through a different machine; a subdomain such as matrixrtc.example.org is typical. Create its DNS record (A/AAAA to your public IP, or CNAME to your dynamic DNS name).",
                ],
                vec![
                    Field::choice(
                        "mode",
                        "radio",
                        "Hostnames",
                        &s.mode,
                        &[
                            ("one", "One hostname (recommended)"),
                            (
                                "two",
                                "Two hostnames: one for the authorization service, one for the SFU",
                            ),
                        ],
                    ),
                    Field::text("rtc_url", "Public URL", &s.rtc_url)
                        .placeholder("e.g. https://matrixrtc.example.org")
                        .show_when("mode=one")
                        .help("Scheme and hostname only (add :port if it is not 443)."),
                    Field::text("jwt_url", "Authorization service URL", &s.jwt_url)
                        .placeholder("e.g. https://matrix-jwt.example.org")
                        .show_when("mode=two"),
                    Field::text("sfu_url", "SFU URL", &s.sfu_url)
                        .placeholder("e.g. https://matrix-sfu.example.org")
                        .show_when("mode=two"),
                ],
            )
        }
        Step::Tls => {
            let s = steps.tls.clone().unwrap_or_else(TlsStep::suggested);
            let proxies: Vec<(&str, &str)> = ProxyKind::ALL
                .iter()
                .map(|p| (p.slug(), p.label()))
                .collect();
            let challenges: Vec<(&str, &str)> = AcmeChallenge::ALL
                .iter()
                .map(|c| (c.slug(), c.label()))
                .collect();
            (
                vec![
                    "Browsers only place calls over HTTPS. Either a reverse proxy you already run (Synology DSM's, nginx, Caddy, Traefik, Apache) terminates TLS and forwards to rtcbox, or rtcbox gets its own certificate.",
                    "On a Synology NAS the DSM reverse proxy with DSM's Let's Encrypt certificate is the easiest choice. Without a proxy, rtcbox serves HTTPS itself on its HTTPS port: with a Let's Encrypt certificate it gets and renews by itself (the CA checks the name on port 80 with HTTP-01, on port 443 with TLS-ALPN-01, or through a DNS record with DNS-01, which works behind any router), or with certificate files another tool renews (e.g. exported from DSM).",
                ],
                vec![
                    Field::choice(
                        "mode",
                        "radio",
                        "HTTPS is provided by",
                        &s.mode,
                        &[
                            ("reverse-proxy", "A reverse proxy in front of rtcbox"),
                            ("acme", "rtcbox itself, with a Let's Encrypt certificate"),
                            (
                                "files",
                                "rtcbox itself, with certificate files (e.g. exported from DSM)",
                            ),
                            (
                                "self-signed",
                                "rtcbox itself, self-signed (testing only: browsers warn)",
                            ),
                        ],
                    ),
                    Field::choice("proxy", "select", "Reverse proxy", &s.proxy, &proxies)
                        .show_when("mode=reverse-proxy"),
                    Field::choice(
                        "challenge",
                        "select",
                        "How Let's Encrypt checks the name",
                        &s.challenge,
                        &challenges,
                    )
                    .show_when("mode=acme"),
                    Field::text("email", "E-mail for Let's Encrypt", &s.email)
                        .kind("email")
                        .placeholder("e.g. admin@example.org")
                        .show_when("mode=acme"),
                    Field::text("cert_file", "Certificate chain (PEM file)", &s.cert_file)
                        .placeholder("e.g. /volume1/certs/fullchain.pem")
                        .help("Re-read when it changes; replace it by renaming a new file over it.")
                        .show_when("mode=files"),
                    Field::text("key_file", "Private key (PEM file)", &s.key_file)
                        .placeholder("e.g. /volume1/certs/privkey.pem")
                        .show_when("mode=files"),
                ],
            )
        }
        Step::Network => {
            let lan = (state.lan_addresses)();
            let s = steps.network.clone().unwrap_or_else(|| {
                NetworkStep::suggested(
                    lan.first().copied(),
                    state.settings.node_ip,
                    &running_ports(state),
                )
            });
            let lan_help = if lan.is_empty() {
                "This machine's address on your LAN: your router forwards ports to it.".to_owned()
            } else {
                format!(
                    "This machine's address on your LAN: your router forwards ports to it. Addresses found here (the field offers them): {}.",
                    lan.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            // Shown with the doubt about a saved-but-refused address, so the admin can insist
            // (a test on one machine, a container whose host has the address).
            let doubtful = errors.contains_key("lan_ip")
                && s.lan_ip
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| lan_ip_doubt(ip, &lan).is_some());
            let port = |name: &'static str| {
                let label = PORT_FIELDS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(name, |(_, label)| label);
                Field::text(name, label, s.value(name)).kind("number")
            };
            let mut fields = vec![
                Field::heading("Addresses"),
                Field::text("lan_ip", "LAN address", &s.lan_ip)
                    .placeholder("e.g. 192.168.1.20")
                    .required()
                    .help(&lan_help)
                    .suggestions(lan.iter().map(ToString::to_string)),
            ];
            if doubtful {
                fields.push(
                    Field::text("lan_ip_anyway", "Use this address anyway", "").kind("checkbox"),
                );
            }
            fields.extend([
                Field::text("public_ip", "Fixed public IP (optional)", &s.public_ip)
                    .placeholder("empty: detect and follow it (recommended)")
                    .help(&public_ip_help(state)),
                Field::action("detect", "Detect public IP"),
            ]);
            // The ports: the defaults suit almost everyone, so they wait behind "Ports", open
            // when one of them needs another look or differs from the default.
            let d = Ports::default();
            let defaults = [
                ("http", d.http),
                ("https", d.https),
                ("admin", d.admin),
                ("rtc_udp", d.rtc_udp),
                ("rtc_tcp", d.rtc_tcp),
                ("turn", d.turn),
                ("turns", d.turns),
            ];
            let open = defaults.iter().any(|(name, default)| {
                s.value(name) != default.to_string() || errors.contains_key(name)
            });
            let https_help = if steps
                .tls
                .as_ref()
                .is_some_and(|t| t.mode == "reverse-proxy")
            {
                "Not used with a reverse proxy (your choice in the HTTPS step): rtcbox serves HTTPS itself only in the other modes."
            } else {
                "rtcbox's own HTTPS listener (your choice in the HTTPS step); also TURN over TLS."
            };
            fields.extend([
                Field::advanced("Ports (the defaults avoid Synology DSM's; change them only if another program uses one)", open),
                Field::heading("rtcbox's ports"),
                port("http"),
                port("https").help(https_help),
                port("admin").help("This panel. Keep it on the LAN: never forward it."),
                port("rtc_udp"),
                port("rtc_tcp"),
                Field::heading("TURN ports"),
                port("turn").help("rtcbox's TURN server: callers whose network blocks the media ports relay through it, and legacy 1:1 calls use it."),
                port("turns").help("TURN over TLS, for networks that let only encrypted traffic through."),
            ]);
            // The relay range is asked in the legacy-calls step, the only feature that needs it;
            // here it travels along, shown only when it clashes with a port above.
            for name in ["relay_min", "relay_max"] {
                if errors.contains_key(name) {
                    fields.push(port(name));
                } else {
                    fields.push(Field::text(name, "", s.value(name)).kind("hidden"));
                }
            }
            fields.push(Field::advanced_end());
            (
                vec![
                    "Media (audio and video) does not go through the reverse proxy: callers send it straight to rtcbox's UDP port (or the ICE-TCP port when UDP is blocked). Your router must forward those ports to this machine, with the same port number outside and inside.",
                    "The ports' defaults avoid the ones Synology DSM and its High Availability service use; changing one changes rtcbox's setting when you apply the wizard.",
                ],
                fields,
            )
        }
        Step::Turn => {
            let s = steps.turn.clone().unwrap_or_else(|| TurnStep {
                legacy_turn: "off".into(),
                shared_secret: String::new(),
            });
            (
                vec![
                    "Element Call and Element X do not need this: their media goes through rtcbox's SFU. Older 1:1 calls (Element Web/Desktop's legacy calls, Element Classic on mobile) need a TURN server that Synapse hands out credentials for; rtcbox can be that server, replacing coturn.",
                    "When on, rtcbox generates a shared secret and the homeserver.yaml snippet gets turn_uris and turn_shared_secret, so Synapse hands out credentials for rtcbox's own TURN server.",
                ],
                {
                    let mut fields = vec![Field::choice(
                        "legacy_turn",
                        "radio",
                        "Legacy 1:1 calls through rtcbox's TURN server",
                        &s.legacy_turn,
                        &[("off", "Off"), ("on", "On")],
                    )];
                    // The relay range lives with the network step's answers; it is asked here,
                    // where the only feature that needs it is, once there are such answers
                    // to store it with (otherwise a range typed here would go nowhere).
                    match &steps.network {
                        Some(network) => {
                            let relay = |name: &'static str, label: &str| {
                                Field::text(name, label, network.value(name))
                                    .kind("number")
                                    .show_when("legacy_turn=on")
                            };
                            fields.push(relay("relay_min", "TURN relay range: first port (UDP)").help(
                                "Legacy 1:1 calls relay media through these ports: forward the whole range on your router. Element Call does not need it (rtcbox relays to its own media port inside this machine).",
                            ));
                            fields.push(relay("relay_max", "TURN relay range: last port (UDP)"));
                        }
                        None => notes.push(
                            "The TURN relay port range is asked here once the Network step is answered.".to_owned(),
                        ),
                    }
                    fields
                },
            )
        }
        Step::Review => unreachable!("handled above"),
    };
    let has_errors = !errors.is_empty();
    let running = state.running();
    let fields = fields
        .into_iter()
        .map(|f| locked_note(f, &running).with_errors(errors))
        .collect();
    let page = StepPage {
        layout,
        step,
        progress,
        intro: intro.into_iter().map(str::to_owned).collect(),
        facts,
        notes,
        fields,
        flash,
        has_errors,
    };
    let mut response = views::render(&page);
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}

/// The setting a wizard field ends up in, where it is one setting.
fn field_setting(name: &str) -> Option<SettingKey> {
    Some(match name {
        "public_ip" => SettingKey::NodeIp,
        "http" => SettingKey::HttpBind,
        "https" => SettingKey::HttpsBind,
        "admin" => SettingKey::AdminBind,
        "rtc_udp" => SettingKey::RtcUdpPort,
        "rtc_tcp" => SettingKey::RtcTcpPort,
        "turn" => SettingKey::TurnPort,
        "turns" => SettingKey::TurnTlsPort,
        "relay_min" | "relay_max" => SettingKey::TurnRelayPorts,
        "email" => SettingKey::AcmeEmail,
        "cert_file" => SettingKey::TlsCertFile,
        "key_file" => SettingKey::TlsKeyFile,
        _ => return None,
    })
}

/// A field whose setting a flag or the environment pins says so, with where it comes from:
/// Apply leaves that setting as it is (the review lists it too).
fn locked_note(mut field: Field, running: &crate::config::Settings) -> Field {
    if let Some(key) = field_setting(field.name)
        && running.is_pinned(key)
    {
        let origin = running
            .origins
            .get(&key)
            .map(ToString::to_string)
            .unwrap_or_default();
        let note = format!(
            "Locked: {origin} sets {} to {}; Apply leaves it as it is.",
            key.env_name(),
            running.display(key)
        );
        field.help = if field.help.is_empty() {
            note
        } else {
            format!("{} {note}", field.help)
        };
    }
    field
}

fn is_relevant_feature(name: &str) -> bool {
    [
        "org.matrix.msc4140",
        "org.matrix.msc4222",
        "org.matrix.msc4143",
        "org.matrix.msc3266",
        "org.matrix.msc4354",
    ]
    .contains(&name)
}

fn review(
    state: &AdminState,
    layout: Layout,
    steps: &Steps,
    progress: Vec<ProgressItem>,
) -> Response {
    let (summary, warnings, changes, missing) = match steps_deployment(state, steps) {
        Ok(d) => (
            summary(&d),
            warnings(&d),
            setting_changes(state, &d),
            Vec::new(),
        ),
        Err(missing) => (Vec::new(), Vec::new(), Vec::new(), missing),
    };
    views::render(&ReviewPage {
        layout,
        progress,
        summary,
        warnings,
        changes,
        missing,
    })
}

fn summary(d: &Deployment) -> Vec<(String, String)> {
    let mut out = vec![
        ("Server name".to_owned(), d.server_name.clone()),
        ("Client URL".to_owned(), d.client_base_url.clone()),
        (
            "Synapse version".to_owned(),
            d.synapse_version.map_or_else(
                || "unknown (a current Synapse is assumed)".to_owned(),
                |v| v.to_string(),
            ),
        ),
        (
            "Authorization service (livekit_service_url)".to_owned(),
            d.endpoints.livekit_service_url(),
        ),
        (
            "SFU URL handed to clients".to_owned(),
            d.endpoints.sfu_url(),
        ),
        (
            "HTTPS".to_owned(),
            match &d.tls {
                crate::setup::model::TlsMode::ReverseProxy { proxy } => {
                    format!("reverse proxy: {}", proxy.label())
                }
                crate::setup::model::TlsMode::Acme { challenge, email } => {
                    format!("Let's Encrypt, {} ({email})", challenge.label())
                }
                crate::setup::model::TlsMode::SelfSigned => "self-signed".to_owned(),
                crate::setup::model::TlsMode::Files { cert, .. } => {
                    format!("rtcbox with certificate files ({cert})")
                }
            },
        ),
        ("LAN address".to_owned(), d.network.lan_ip.to_string()),
        (
            "Public IP".to_owned(),
            match (d.network.public_ip, d.network.follows_public_ip) {
                (Some(ip), true) => format!("{ip}, detected and followed"),
                (None, true) => "detected and followed (not known yet)".to_owned(),
                (Some(ip), false) => format!("{ip} (fixed)"),
                (None, false) => "not set".to_owned(),
            },
        ),
        (
            "Media ports".to_owned(),
            format!(
                "UDP {}, ICE-TCP {}",
                d.network.ports.rtc_udp, d.network.ports.rtc_tcp
            ),
        ),
        (
            "Legacy 1:1 calls via TURN".to_owned(),
            if d.legacy_turn.is_some() { "on" } else { "off" }.to_owned(),
        ),
    ];
    out.retain(|(_, v)| !v.is_empty());
    out
}

/// The settings the deployment implies: (setting, value).
fn implied_settings(state: &AdminState, d: &Deployment) -> Vec<(SettingKey, String)> {
    let running = &state.settings;
    let ports = &d.network.ports;
    let mut implied = vec![
        (SettingKey::PublicUrl, d.endpoints.sfu_url()),
        (SettingKey::FullAccessHomeservers, d.server_name.clone()),
        (SettingKey::RtcUdpPort, ports.rtc_udp.to_string()),
        (SettingKey::RtcTcpPort, ports.rtc_tcp.to_string()),
    ];
    // Following the public IP is the absence of a fixed one ("" clears a stored value).
    implied.push((
        SettingKey::NodeIp,
        match d.network.public_ip {
            Some(ip) if !d.network.follows_public_ip => ip.to_string(),
            _ => String::new(),
        },
    ));
    if ports.http != running.http_bind.port() {
        let bind = std::net::SocketAddr::new(running.http_bind.ip(), ports.http);
        implied.push((SettingKey::HttpBind, bind.to_string()));
    }
    if ports.admin != running.admin_bind.port() {
        let bind = std::net::SocketAddr::new(running.admin_bind.ip(), ports.admin);
        implied.push((SettingKey::AdminBind, bind.to_string()));
    }
    // rtcbox's own HTTPS on the port the table forwards to; a self-signed certificate is all it
    // can serve by itself until ACME exists.
    if !matches!(d.tls, crate::setup::model::TlsMode::ReverseProxy { .. }) {
        let ip = running
            .https_bind
            .map_or(running.http_bind.ip(), |bind| bind.ip());
        let bind = std::net::SocketAddr::new(ip, ports.https);
        implied.push((SettingKey::HttpsBind, bind.to_string()));
    }
    match &d.tls {
        crate::setup::model::TlsMode::ReverseProxy { .. } => {
            implied.push((SettingKey::TrustedProxies, local_proxies(d.network.lan_ip)));
        }
        crate::setup::model::TlsMode::SelfSigned => implied.push((
            SettingKey::TlsMode,
            crate::config::TlsMode::SelfSigned.to_string(),
        )),
        crate::setup::model::TlsMode::Files { cert, key } => {
            implied.push((
                SettingKey::TlsMode,
                crate::config::TlsMode::Files.to_string(),
            ));
            implied.push((SettingKey::TlsCertFile, cert.clone()));
            implied.push((SettingKey::TlsKeyFile, key.clone()));
        }
        crate::setup::model::TlsMode::Acme { challenge, email } => {
            implied.push((
                SettingKey::TlsMode,
                crate::config::TlsMode::Acme.to_string(),
            ));
            implied.push((SettingKey::AcmeChallenge, challenge.slug().to_owned()));
            // DNS-01 without a provider yet: the dashboard shows the TXT record to create by
            // hand; an automatic provider (RFC 2136, Cloudflare) stays as configured.
            if *challenge == crate::setup::model::AcmeChallenge::Dns01
                && running.acme_dns_provider.is_none()
            {
                implied.push((
                    SettingKey::AcmeDnsProvider,
                    crate::config::DnsProvider::Manual.to_string(),
                ));
            }
            implied.push((SettingKey::AcmeEmail, email.clone()));
            // Every public host rtcbox serves itself goes on the certificate.
            let mut hosts: Vec<String> = d
                .endpoints
                .origins()
                .iter()
                .map(|o| o.host.clone())
                .collect();
            hosts.dedup();
            implied.push((SettingKey::AcmeDomains, hosts.join(",")));
        }
    }
    // The TURN listeners and relay range the port table forwards.
    implied.push((SettingKey::TurnPort, ports.turn.to_string()));
    implied.push((SettingKey::TurnTlsPort, ports.turns.to_string()));
    implied.push((
        SettingKey::TurnRelayPorts,
        format!("{}-{}", ports.relay_min, ports.relay_max),
    ));
    if let Some(turn) = &d.legacy_turn {
        implied.push((
            SettingKey::TurnSharedSecret,
            turn.shared_secret.expose().to_owned(),
        ));
    }
    implied
}

/// `RTCBOX_TRUSTED_PROXIES` for a reverse proxy on this machine: it connects from loopback
/// (DSM's rule names localhost) or from the LAN address the other configs name. A proxy on
/// another machine or in a container network needs its own address added (docs/configuration.md).
fn local_proxies(lan_ip: std::net::IpAddr) -> String {
    let mut blocks = vec!["127.0.0.1".to_owned(), "::1".to_owned()];
    if !lan_ip.is_loopback() {
        blocks.push(lan_ip.to_string());
    }
    // In the form `Settings::value` shows, so an applied value counts as unchanged.
    let blocks: Vec<String> = blocks
        .iter()
        .filter_map(|raw| crate::net::Cidr::parse(raw).ok())
        .map(|cidr| cidr.to_string())
        .collect();
    blocks.join(",")
}

/// The implied settings that differ from what rtcbox runs with.
fn changed_settings(state: &AdminState, d: &Deployment) -> Vec<(SettingKey, String)> {
    let running = state.running();
    implied_settings(state, d)
        .into_iter()
        .filter(|(key, value)| {
            let current = running.value(*key);
            // Media ports of 0 (system-picked, in tests) count as already matching.
            let picked = matches!(key, SettingKey::RtcUdpPort | SettingKey::RtcTcpPort)
                && current.as_deref() == Some("0");
            current.as_deref().unwrap_or_default() != value.as_str() && !picked
        })
        .collect()
}

fn setting_changes(state: &AdminState, d: &Deployment) -> Vec<SettingChange> {
    let running = state.running();
    changed_settings(state, d)
        .into_iter()
        .map(|(key, value)| SettingChange {
            env_name: key.env_name(),
            value: if key.is_secret() {
                "(a generated secret)".to_owned()
            } else if value.is_empty() {
                "(not set: the default)".to_owned()
            } else {
                value
            },
            current: running.display(key),
            pinned: state.settings.is_pinned(key),
        })
        .collect()
}

/// Review → Apply: every setting the deployment implies, in one transaction, skipping those
/// the environment pins; then on to the generated configuration.
async fn apply(state: &AdminState, steps: &Steps) -> Response {
    let d = match steps_deployment(state, steps) {
        Ok(d) => d,
        Err(missing) => {
            let names: Vec<&str> = missing.iter().map(|s| s.title()).collect();
            return views::error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Finish these steps first: {}. Nothing was changed.",
                    names.join(", ")
                ),
            );
        }
    };
    let writes: Vec<(SettingKey, String)> = changed_settings(state, &d)
        .into_iter()
        .filter(|(key, _)| !state.settings.is_pinned(*key))
        .collect();
    // An empty value clears the stored setting (back to its default).
    let rows: Vec<(&str, Option<String>)> = writes
        .iter()
        .map(|(key, value)| (key.db_key(), Some(value.clone()).filter(|v| !v.is_empty())))
        .collect();
    if let Err(error) = db::settings::set_many(&state.pool, &rows).await {
        return views::internal_error("saving the settings", &error);
    }
    if let Err(error) =
        db::admin::save_wizard_step(&state.pool, Step::Review.id(), "{}", true, unix_now()).await
    {
        return views::internal_error("saving the wizard", &error);
    }
    let names: Vec<&str> = writes.iter().map(|(key, _)| key.env_name()).collect();
    tracing::info!(settings = ?names, "setup wizard applied");
    // What can apply without a restart does so now.
    if let Ok(Ok(next)) = super::pages::next_start_settings(state, &[]).await {
        state.apply_live(&next);
    }
    Redirect::to("/outputs?applied=1").into_response()
}
