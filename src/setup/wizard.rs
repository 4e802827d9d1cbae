//! The wizard's steps: what each stores, how its form is validated (field-level messages), and
//! how the stored steps become a [`Deployment`]. Pure: discovery and storage happen in the
//! admin handlers, which call into this module before and after.
//!
//! Each step is stored as the form was entered (so a rejected form re-renders exactly as typed
//! and the wizard is resumable) together with whether it validated.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::{
    AcmeChallenge, Deployment, Endpoints, LegacyTurn, Network, Ports, ProxyKind, PublicOrigin,
    Running, SynapseVersion, TlsMode,
};
use crate::matrix::ServerName;
use crate::secret::Secret;

/// The steps in order; the ids are URL path segments and database keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Homeserver,
    Endpoints,
    Tls,
    Network,
    Turn,
    Review,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Homeserver,
        Step::Endpoints,
        Step::Tls,
        Step::Network,
        Step::Turn,
        Step::Review,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Step::Homeserver => "homeserver",
            Step::Endpoints => "endpoints",
            Step::Tls => "tls",
            Step::Network => "network",
            Step::Turn => "turn",
            Step::Review => "review",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Step::Homeserver => "Homeserver",
            Step::Endpoints => "Public endpoints",
            Step::Tls => "HTTPS",
            Step::Network => "Network",
            Step::Turn => "Legacy 1:1 calls",
            Step::Review => "Review",
        }
    }

    pub fn from_id(id: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.id() == id)
    }

    pub fn next(self) -> Option<Step> {
        let i = Step::ALL.iter().position(|s| *s == self)?;
        Step::ALL.get(i + 1).copied()
    }

    pub fn previous(self) -> Option<Step> {
        let i = Step::ALL.iter().position(|s| *s == self)?;
        i.checked_sub(1).map(|i| Step::ALL[i])
    }
}

/// Field name → message, for re-rendering a rejected form.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// A submitted form: field name → value (the last one wins).
pub type Form = HashMap<String, String>;

fn field(form: &Form, name: &str) -> String {
    form.get(name)
        .map(|v| v.trim().chars().take(2048).collect())
        .unwrap_or_default()
}

/// Step 1: which homeserver, and what discovery found out about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HomeserverStep {
    pub server_name: String,
    /// Entered by the admin; empty means "use what discovery found".
    pub client_base_url: String,
    /// Entered by the admin; empty means "use what discovery found".
    pub synapse_version: String,
    #[serde(default)]
    pub discovered: Discovered,
}

/// What the homeserver step learned from the network (filled in by the handler).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    pub client_base_url: Option<String>,
    pub synapse_version: Option<String>,
    pub server_software: Option<String>,
    pub well_known: Option<serde_json::Map<String, serde_json::Value>>,
    pub versions: Vec<String>,
    pub unstable_features: BTreeMap<String, bool>,
    pub notes: Vec<String>,
}

impl HomeserverStep {
    pub fn from_form(form: &Form) -> Self {
        HomeserverStep {
            server_name: field(form, "server_name"),
            client_base_url: field(form, "client_base_url")
                .trim_end_matches('/')
                .to_owned(),
            synapse_version: field(form, "synapse_version"),
            discovered: Discovered::default(),
        }
    }

    /// The server name alone, checked before discovery runs.
    pub fn validate_server_name(&self) -> Result<ServerName, FieldErrors> {
        let raw = self.server_name.as_str();
        let message = if raw.is_empty() {
            Some("Enter your homeserver's server name, e.g. example.org.".to_owned())
        } else if raw.contains("://") || raw.contains('/') {
            Some(format!(
                "'{raw}' looks like a URL; enter only the server name (the part after ':' in your user IDs, e.g. example.org)."
            ))
        } else if raw.starts_with('@') || raw.starts_with('!') || raw.starts_with('#') {
            Some(format!(
                "'{raw}' looks like a Matrix ID; enter only the part after the ':' (e.g. example.org)."
            ))
        } else {
            None
        };
        if let Some(message) = message {
            return Err(FieldErrors::from([("server_name", message)]));
        }
        ServerName::parse(raw).map_err(|_| {
            FieldErrors::from([(
                "server_name",
                format!("'{raw}' is not a valid Matrix server name (e.g. example.org or example.org:8448)."),
            )])
        })
    }

    /// The whole step, after discovery filled in `discovered`.
    pub fn validate(&self) -> Result<ValidHomeserver, FieldErrors> {
        let mut errors = self.validate_server_name().err().unwrap_or_default();
        let base = if self.client_base_url.is_empty() {
            self.discovered.client_base_url.clone()
        } else {
            Some(self.client_base_url.clone())
        };
        let client_base_url = match base {
            None => {
                errors.insert(
                    "client_base_url",
                    "rtcbox could not discover the client URL (see the notes above); enter the URL \
                     your Matrix clients use, e.g. https://matrix.example.org."
                        .into(),
                );
                None
            }
            Some(url) => match parse_origin(&url) {
                Ok(_) => Some(url.trim_end_matches('/').to_owned()),
                Err(message) => {
                    errors.insert("client_base_url", message);
                    None
                }
            },
        };
        let version_raw = if self.synapse_version.is_empty() {
            self.discovered.synapse_version.clone().unwrap_or_default()
        } else {
            self.synapse_version.clone()
        };
        let synapse_version = if version_raw.is_empty() {
            None
        } else {
            match SynapseVersion::parse(&version_raw) {
                Some(v) => Some(v),
                None => {
                    errors.insert(
                        "synapse_version",
                        format!(
                            "'{version_raw}' is not a Synapse version (e.g. 1.163.2); leave it empty if you do not know it."
                        ),
                    );
                    None
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidHomeserver {
            server_name: self.server_name.clone(),
            client_base_url: client_base_url.expect("set when there are no errors"),
            synapse_version,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidHomeserver {
    pub server_name: String,
    pub client_base_url: String,
    pub synapse_version: Option<SynapseVersion>,
}

/// Step 2: where the public reaches rtcbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsStep {
    /// `one` or `two`.
    pub mode: String,
    pub rtc_url: String,
    pub jwt_url: String,
    pub sfu_url: String,
}

impl EndpointsStep {
    pub fn from_form(form: &Form) -> Self {
        EndpointsStep {
            mode: field(form, "mode"),
            rtc_url: field(form, "rtc_url"),
            jwt_url: field(form, "jwt_url"),
            sfu_url: field(form, "sfu_url"),
        }
    }

    /// A first suggestion: `https://matrixrtc.<server name host>`.
    pub fn suggested(server_name: &str) -> Self {
        let host = server_name
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(server_name, |(host, _)| host);
        EndpointsStep {
            mode: "one".into(),
            rtc_url: if host.is_empty() {
                String::new()
            } else {
                format!("https://matrixrtc.{host}")
            },
            jwt_url: String::new(),
            sfu_url: String::new(),
        }
    }

    pub fn validate(&self) -> Result<Endpoints, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut origin = |name: &'static str, raw: &str| -> Option<PublicOrigin> {
            if raw.is_empty() {
                errors.insert(
                    name,
                    "Enter a URL such as https://matrixrtc.example.org.".into(),
                );
                return None;
            }
            parse_origin(raw)
                .map_err(|message| errors.insert(name, message))
                .ok()
        };
        let endpoints = match self.mode.as_str() {
            "one" => origin("rtc_url", &self.rtc_url).map(Endpoints::OneHost),
            "two" => {
                let jwt = origin("jwt_url", &self.jwt_url);
                let sfu = origin("sfu_url", &self.sfu_url);
                match (jwt, sfu) {
                    (Some(jwt), Some(sfu)) if jwt == sfu => {
                        errors.insert(
                            "sfu_url",
                            "Both services have the same URL; choose \"one hostname\" instead."
                                .into(),
                        );
                        None
                    }
                    (Some(jwt), Some(sfu)) => Some(Endpoints::TwoHosts { jwt, sfu }),
                    _ => None,
                }
            }
            _ => {
                errors.insert("mode", "Choose one hostname or two hostnames.".into());
                None
            }
        };
        match endpoints {
            Some(endpoints) if errors.is_empty() => Ok(endpoints),
            _ => Err(errors),
        }
    }
}

/// `https://host[:port]` with nothing after it. Plain `http://` only for this machine (testing):
/// browsers running Element Call over https refuse insecure WebSockets and fetches.
pub fn parse_origin(raw: &str) -> Result<PublicOrigin, String> {
    let raw = raw.trim().trim_end_matches('/');
    let (tls, rest) = if let Some(rest) = raw.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = raw.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "'{raw}' must start with https:// (e.g. https://matrixrtc.example.org)."
        ));
    };
    if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
        return Err(format!(
            "'{raw}' must be only a scheme and a host name (and a port if needed), without a path."
        ));
    }
    let name =
        ServerName::parse(rest).map_err(|_| format!("'{raw}' does not have a valid host name."))?;
    let host = name.tls_name();
    if !tls && !is_local_host(&host) {
        return Err(format!(
            "'{raw}' uses plain http://; use https:// (only localhost may use http, for testing)."
        ));
    }
    Ok(PublicOrigin {
        tls,
        host,
        port: name.port(),
    })
}

fn is_local_host(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Step 3: how HTTPS is done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStep {
    /// `reverse-proxy`, `acme`, `files` or `self-signed`.
    pub mode: String,
    /// A [`ProxyKind`] slug.
    pub proxy: String,
    /// An [`AcmeChallenge`] slug.
    pub challenge: String,
    pub email: String,
    /// `files` mode: the certificate chain and the key, absolute paths on rtcbox's machine.
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
}

impl TlsStep {
    pub fn from_form(form: &Form) -> Self {
        TlsStep {
            mode: field(form, "mode"),
            proxy: field(form, "proxy"),
            challenge: field(form, "challenge"),
            email: field(form, "email"),
            cert_file: field(form, "cert_file"),
            key_file: field(form, "key_file"),
        }
    }

    pub fn suggested() -> Self {
        TlsStep {
            mode: "reverse-proxy".into(),
            proxy: ProxyKind::SynologyDsm.slug().into(),
            challenge: AcmeChallenge::Dns01.slug().into(),
            email: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
        }
    }

    pub fn validate(&self) -> Result<TlsMode, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mode = match self.mode.as_str() {
            "reverse-proxy" => match ProxyKind::from_slug(&self.proxy) {
                Some(proxy) => Some(TlsMode::ReverseProxy { proxy }),
                None => {
                    errors.insert("proxy", "Choose the reverse proxy you use.".into());
                    None
                }
            },
            "acme" => {
                let challenge = AcmeChallenge::from_slug(&self.challenge);
                if challenge.is_none() {
                    errors.insert(
                        "challenge",
                        "Choose how Let's Encrypt validates the name.".into(),
                    );
                }
                if !is_plausible_email(&self.email) {
                    errors.insert(
                        "email",
                        "Enter the e-mail address Let's Encrypt sends expiry warnings to.".into(),
                    );
                }
                challenge.map(|challenge| TlsMode::Acme {
                    challenge,
                    email: self.email.clone(),
                })
            }
            "self-signed" => Some(TlsMode::SelfSigned),
            "files" => {
                for (name, value, what, example) in [
                    (
                        "cert_file",
                        &self.cert_file,
                        "certificate chain (PEM)",
                        "fullchain.pem",
                    ),
                    (
                        "key_file",
                        &self.key_file,
                        "private key (PEM)",
                        "privkey.pem",
                    ),
                ] {
                    if !value.trim().starts_with('/') {
                        errors.insert(
                            name,
                            format!(
                                "Enter the absolute path of the {what} on rtcbox's machine, e.g. \
                                 /volume1/certs/{example}."
                            ),
                        );
                    }
                }
                Some(TlsMode::Files {
                    cert: self.cert_file.trim().to_owned(),
                    key: self.key_file.trim().to_owned(),
                })
            }
            _ => {
                errors.insert("mode", "Choose how HTTPS is provided.".into());
                None
            }
        };
        match mode {
            Some(mode) if errors.is_empty() => Ok(mode),
            _ => Err(errors),
        }
    }
}

fn is_plausible_email(raw: &str) -> bool {
    let Some((local, domain)) = raw.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && raw.len() <= 254
        && !raw.contains(char::is_whitespace)
        && !domain.contains('@')
}

/// Step 4: addresses and ports, as entered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStep {
    pub lan_ip: String,
    pub public_ip: String,
    pub http: String,
    pub https: String,
    pub admin: String,
    pub rtc_udp: String,
    pub rtc_tcp: String,
    pub turn: String,
    pub turns: String,
    pub relay_min: String,
    pub relay_max: String,
}

impl NetworkStep {
    /// A setting changed on the Settings page: the answers that hold the same value follow it,
    /// so the wizard, the Settings page and the generated files agree. `true` when something
    /// changed.
    pub fn follow_settings(&mut self, settings: &crate::config::Settings) -> bool {
        let before = self.clone();
        self.public_ip = settings
            .node_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        // 0 (system-picked, in tests) is no answer the step can hold.
        let port = |field: &mut String, port: u16| {
            if port != 0 {
                *field = port.to_string();
            }
        };
        port(&mut self.rtc_udp, settings.rtc_udp_port);
        port(&mut self.rtc_tcp, settings.rtc_tcp_port);
        port(&mut self.http, settings.http_bind.port());
        port(&mut self.admin, settings.admin_bind.port());
        // 0 turns a listener off; the step keeps the port it would have.
        if let Some(https) = settings.https_bind {
            port(&mut self.https, https.port());
        }
        port(&mut self.turn, settings.turn_port);
        port(&mut self.turns, settings.turn_tls_port);
        let (relay_min, relay_max) = settings.turn_relay_ports;
        port(&mut self.relay_min, relay_min);
        port(&mut self.relay_max, relay_max);
        *self != before
    }
}

/// The port fields: form name, label.
pub const PORT_FIELDS: [(&str, &str); 9] = [
    ("http", "Public HTTP (behind the reverse proxy)"),
    ("https", "Public HTTPS (built-in TLS)"),
    ("admin", "Admin panel"),
    ("rtc_udp", "WebRTC media (UDP)"),
    ("rtc_tcp", "WebRTC ICE-TCP fallback (TCP)"),
    ("turn", "TURN (UDP and TCP)"),
    ("turns", "TURN over TLS (TCP)"),
    ("relay_min", "TURN relay range: first port (UDP)"),
    ("relay_max", "TURN relay range: last port (UDP)"),
];

impl NetworkStep {
    pub fn from_form(form: &Form) -> Self {
        NetworkStep {
            lan_ip: field(form, "lan_ip"),
            public_ip: field(form, "public_ip"),
            http: field(form, "http"),
            https: field(form, "https"),
            admin: field(form, "admin"),
            rtc_udp: field(form, "rtc_udp"),
            rtc_tcp: field(form, "rtc_tcp"),
            turn: field(form, "turn"),
            turns: field(form, "turns"),
            relay_min: field(form, "relay_min"),
            relay_max: field(form, "relay_max"),
        }
    }

    /// Pre-filled from the running configuration and what was detected.
    pub fn suggested(lan_ip: Option<IpAddr>, public_ip: Option<IpAddr>, ports: &Ports) -> Self {
        NetworkStep {
            lan_ip: lan_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            public_ip: public_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            http: ports.http.to_string(),
            https: ports.https.to_string(),
            admin: ports.admin.to_string(),
            rtc_udp: ports.rtc_udp.to_string(),
            rtc_tcp: ports.rtc_tcp.to_string(),
            turn: ports.turn.to_string(),
            turns: ports.turns.to_string(),
            relay_min: ports.relay_min.to_string(),
            relay_max: ports.relay_max.to_string(),
        }
    }

    pub fn value(&self, name: &str) -> &str {
        match name {
            "lan_ip" => &self.lan_ip,
            "public_ip" => &self.public_ip,
            "http" => &self.http,
            "https" => &self.https,
            "admin" => &self.admin,
            "rtc_udp" => &self.rtc_udp,
            "rtc_tcp" => &self.rtc_tcp,
            "turn" => &self.turn,
            "turns" => &self.turns,
            "relay_min" => &self.relay_min,
            "relay_max" => &self.relay_max,
            _ => "",
        }
    }

    pub fn validate(&self) -> Result<Network, FieldErrors> {
        let mut errors = FieldErrors::new();
        let lan_ip = match self.lan_ip.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                errors.insert("lan_ip", format!("{ip} is not the address of one machine."));
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                errors.insert(
                    "lan_ip",
                    format!(
                        "'{}' is not an IP address; enter this machine's LAN address, e.g. 192.168.1.20.",
                        self.lan_ip
                    ),
                );
                None
            }
        };
        let public_ip = if self.public_ip.is_empty() {
            None
        } else {
            match self.public_ip.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                    errors.insert("public_ip", format!("{ip} cannot be reached by clients."));
                    None
                }
                Ok(ip) => Some(ip),
                Err(_) => {
                    errors.insert(
                        "public_ip",
                        format!(
                            "'{}' is not an IP address; enter your router's internet address or leave it empty.",
                            self.public_ip
                        ),
                    );
                    None
                }
            }
        };
        let mut port = |name: &'static str| -> u16 {
            match self.value(name).parse::<u16>() {
                Ok(p) if p >= 1024 => p,
                Ok(p) if p > 0 => {
                    errors.insert(
                        name,
                        format!(
                            "Port {p} is below 1024, which rtcbox (an unprivileged service) cannot open; \
                             choose 1024 or above and forward the public port to it on the router."
                        ),
                    );
                    0
                }
                _ => {
                    errors.insert(
                        name,
                        format!("'{}' is not a port number (1024-65535).", self.value(name)),
                    );
                    0
                }
            }
        };
        let ports = Ports {
            http: port("http"),
            https: port("https"),
            admin: port("admin"),
            rtc_udp: port("rtc_udp"),
            rtc_tcp: port("rtc_tcp"),
            turn: port("turn"),
            turns: port("turns"),
            relay_min: port("relay_min"),
            relay_max: port("relay_max"),
        };
        if errors.is_empty() {
            port_conflicts(&ports, &mut errors);
        }
        match (lan_ip, errors.is_empty()) {
            (Some(lan_ip), true) => Ok(Network {
                lan_ip,
                public_ip,
                follows_public_ip: self.public_ip.is_empty(),
                ports,
            }),
            _ => Err(errors),
        }
    }
}

/// Why a LAN address that parses is still probably wrong, or `None`. `host` is this machine's
/// own addresses (`discover::lan_addresses`: no loopback, no link-local). The router forwards to
/// this address, the DSM firewall rule's subnet and the hairpin tip are derived from it, so
/// loopback is always doubtful, and so is an address the machine does not have (a typo, the
/// router's address, another machine), unless the machine's addresses are unknown.
pub fn lan_ip_doubt(ip: IpAddr, host: &[IpAddr]) -> Option<String> {
    let found = if host.is_empty() {
        String::new()
    } else {
        format!(
            " This machine has {}.",
            host.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if ip.is_loopback() {
        Some(format!(
            "{ip} is the loopback address: it means \"this machine\" to every machine, so the \
             router cannot forward to it, and the port table, firewall rule and DNS tip would \
             all point at it. Enter the address other devices on your LAN reach this machine \
             at.{found}"
        ))
    } else if !host.is_empty() && !host.contains(&ip) {
        Some(format!(
            "{ip} is not an address of this machine.{found} The router must forward to the \
             machine rtcbox runs on. In a container with its own network (bridge mode) the \
             host's LAN address is right: then confirm it below."
        ))
    } else {
        None
    }
}

/// Two listeners of the same protocol on one port, and a relay range that is empty or
/// overlaps a UDP listener.
fn port_conflicts(ports: &Ports, errors: &mut FieldErrors) {
    let tcp = [
        ("http", ports.http),
        ("https", ports.https),
        ("admin", ports.admin),
        ("rtc_tcp", ports.rtc_tcp),
        ("turn", ports.turn),
        ("turns", ports.turns),
    ];
    let udp = [("rtc_udp", ports.rtc_udp), ("turn", ports.turn)];
    for list in [&tcp[..], &udp[..]] {
        for (i, (name, port)) in list.iter().enumerate() {
            if let Some((other, _)) = list[..i].iter().find(|(_, p)| p == port) {
                errors.entry(name).or_insert_with(|| {
                    format!("Port {port} is already used by the {} field.", label(other))
                });
            }
        }
    }
    if ports.relay_min > ports.relay_max {
        errors.insert(
            "relay_max",
            "The last relay port must not be below the first.".into(),
        );
    } else {
        for (name, port) in udp {
            if (ports.relay_min..=ports.relay_max).contains(&port) {
                errors.insert(
                    "relay_min",
                    format!(
                        "The relay range includes port {port}, used by the {} field.",
                        label(name)
                    ),
                );
            }
        }
    }
}

fn label(name: &str) -> &'static str {
    PORT_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("other", |(_, label)| label)
}

/// Step 5: the embedded TURN server for Synapse's legacy 1:1 calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnStep {
    /// `on` or `off`.
    pub legacy_turn: String,
    /// Generated once when legacy calls are first switched on; kept when switched off and on.
    #[serde(default)]
    pub shared_secret: String,
}

impl TurnStep {
    pub fn from_form(form: &Form, previous_secret: &str) -> Self {
        TurnStep {
            legacy_turn: field(form, "legacy_turn"),
            shared_secret: previous_secret.to_owned(),
        }
    }

    pub fn validate(&self) -> Result<Option<LegacyTurn>, FieldErrors> {
        match self.legacy_turn.as_str() {
            "on" if self.shared_secret.len() >= 32 => Ok(Some(LegacyTurn {
                shared_secret: Secret::new(self.shared_secret.clone()),
            })),
            "on" => Err(FieldErrors::from([(
                "legacy_turn",
                "The TURN shared secret is missing; submit the step again to generate one.".into(),
            )])),
            "off" => Ok(None),
            _ => Err(FieldErrors::from([(
                "legacy_turn",
                "Choose whether legacy 1:1 calls use rtcbox's TURN server.".into(),
            )])),
        }
    }
}

/// Every stored step, parsed (a step that fails to parse counts as not entered).
#[derive(Clone, Debug, Default)]
pub struct Steps {
    pub homeserver: Option<HomeserverStep>,
    pub endpoints: Option<EndpointsStep>,
    pub tls: Option<TlsStep>,
    pub network: Option<NetworkStep>,
    pub turn: Option<TurnStep>,
}

impl Steps {
    /// From the stored JSON of each step.
    pub fn from_stored(stored: &BTreeMap<String, String>) -> Self {
        fn parse<T: for<'de> Deserialize<'de>>(
            stored: &BTreeMap<String, String>,
            step: Step,
        ) -> Option<T> {
            serde_json::from_str(stored.get(step.id())?).ok()
        }
        Steps {
            homeserver: parse(stored, Step::Homeserver),
            endpoints: parse(stored, Step::Endpoints),
            tls: parse(stored, Step::Tls),
            network: parse(stored, Step::Network),
            turn: parse(stored, Step::Turn),
        }
    }

    /// Whether a step validates (Review: whether every other step does).
    pub fn is_complete(&self, step: Step) -> bool {
        match step {
            Step::Homeserver => self
                .homeserver
                .as_ref()
                .is_some_and(|s| s.validate().is_ok()),
            Step::Endpoints => self
                .endpoints
                .as_ref()
                .is_some_and(|s| s.validate().is_ok()),
            Step::Tls => self.tls.as_ref().is_some_and(|s| s.validate().is_ok()),
            Step::Network => self.network.as_ref().is_some_and(|s| s.validate().is_ok()),
            Step::Turn => self.turn.as_ref().is_some_and(|s| s.validate().is_ok()),
            Step::Review => Step::ALL[..5].iter().all(|s| self.is_complete(*s)),
        }
    }

    /// The first step that still needs an answer; Review when every step is complete.
    pub fn first_incomplete(&self) -> Step {
        Step::ALL
            .into_iter()
            .find(|s| !self.is_complete(*s))
            .unwrap_or(Step::Review)
    }

    /// The deployment the steps describe on top of how rtcbox runs now, or the steps still
    /// missing.
    pub fn deployment(&self, running: Running) -> Result<Deployment, Vec<Step>> {
        let missing: Vec<Step> = Step::ALL[..5]
            .iter()
            .copied()
            .filter(|s| !self.is_complete(*s))
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        let homeserver = self.homeserver.as_ref().expect("complete");
        let valid = homeserver.validate().expect("complete");
        Ok(Deployment {
            server_name: valid.server_name,
            client_base_url: valid.client_base_url,
            synapse_version: valid.synapse_version,
            existing_well_known: homeserver.discovered.well_known.clone(),
            endpoints: self
                .endpoints
                .as_ref()
                .and_then(|s| s.validate().ok())
                .expect("complete"),
            tls: self
                .tls
                .as_ref()
                .and_then(|s| s.validate().ok())
                .expect("complete"),
            network: self
                .network
                .as_ref()
                .and_then(|s| s.validate().ok())
                .expect("complete"),
            legacy_turn: self
                .turn
                .as_ref()
                .and_then(|s| s.validate().ok())
                .expect("complete"),
            running,
        })
    }
}

/// Things on the review page that are allowed but probably wrong.
pub fn warnings(deployment: &Deployment) -> Vec<String> {
    let mut out = Vec::new();
    let net = &deployment.network;
    match net.public_ip {
        None if net.follows_public_ip => out.push(
            "rtcbox has not detected the public IP yet (no STUN server answered): until one \
             does, clients outside your LAN are offered only the LAN address for media. Check \
             the STUN servers in Settings, or enter your router's internet address on the \
             Network step."
                .to_owned(),
        ),
        None => out.push(
            "No public IP is set: clients outside your LAN will be offered only the LAN address \
             for media. Detect it on the Network step or enter your router's internet address."
                .to_owned(),
        ),
        Some(ip) if !crate::net::is_public(ip) => out.push(format!(
            "The public IP {ip} is not an internet address; clients outside your network cannot \
             reach it (this is only right for a test on one machine or a LAN-only set-up)."
        )),
        Some(_) => {}
    }
    if net.lan_ip.is_loopback() {
        out.push(format!(
            "The LAN address {} is the loopback address: the router cannot forward to it, so \
             only callers on this machine itself can reach rtcbox (right only for a test on one \
             machine).",
            net.lan_ip
        ));
    }
    let ha = 7400..=7999;
    let ports = &net.ports;
    for (name, port) in [
        ("http", ports.http),
        ("https", ports.https),
        ("admin", ports.admin),
        ("rtc_udp", ports.rtc_udp),
        ("rtc_tcp", ports.rtc_tcp),
    ] {
        if ha.contains(&port) || [5000, 5001, 6690].contains(&port) {
            out.push(format!(
                "Port {port} ({}) is used by Synology DSM or its High Availability service on a NAS.",
                label(name)
            ));
        }
    }
    if let Some(v) = deployment.synapse_version {
        if v < SynapseVersion::new(1, 140, 0) {
            out.push(format!(
                "Synapse {v} cannot advertise rtcbox through the rtc/transports endpoint (needs 1.140 or \
                 newer); clients find it through the well-known file only. Upgrading Synapse is recommended."
            ));
        }
    } else {
        out.push(
            "The Synapse version is unknown: the homeserver.yaml snippet assumes a current Synapse."
                .to_owned(),
        );
    }
    match deployment.tls {
        TlsMode::ReverseProxy { .. } => {}
        TlsMode::SelfSigned => out.push(
            "rtcbox serves HTTPS itself (RTCBOX_HTTPS_BIND) with its self-signed certificate, which \
             browsers do not trust; for a trusted one set RTCBOX_TLS_MODE=files with a certificate \
             and key exported from DSM (or another CA)."
                .to_owned(),
        ),
        TlsMode::Acme { .. } => out.push(
            "rtcbox gets its certificate from Let's Encrypt after the restart; until the CA has \
             validated the name, browsers see its self-signed one. The dashboard shows the ACME \
             state and, if it fails, what to fix. With DNS-01 the dashboard shows the TXT record \
             to create, unless RTCBOX_ACME_DNS_PROVIDER names an automatic provider (rfc2136, \
             cloudflare; see docs/https.md)."
                .to_owned(),
        ),
        TlsMode::Files { .. } => {}
    }
    out
}

#[cfg(test)]
mod tests;
