//! Settings: every value resolved once, at start, from four layers, and parsed into types.
//!
//! Precedence, highest first: command-line flag > environment variable > stored setting (SQLite,
//! written by first start or, later, the admin panel) > built-in default. Within the environment,
//! rtcbox's own `RTCBOX_*` name wins over the lk-jwt-service/LiveKit aliases, which are accepted so
//! that an existing lk-jwt-service environment works unchanged (see [`SettingKey::env_sources`]).
//!
//! Nothing outside this module reads the environment for settings; everything else receives a
//! [`Settings`] value. The data directory is the one exception resolved separately
//! ([`data_dir`]), because the stored layer lives inside it.

mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use values::{
    AcmeChallenge, AcmeDirectory, ApiKey, DnsProvider, DnsServer, FullAccess, PublicUrl, TlsMode,
    TsigAlgorithm, parse_bind,
};

use crate::net::Cidr;
use crate::secret::Secret;

/// The data directory when neither `--data-dir` nor `RTCBOX_DATA_DIR` is given.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The public HTTP listener when nothing else is configured.
pub const DEFAULT_HTTP_BIND: &str = "0.0.0.0:8880";
/// The public HTTPS listener (own certificate; TURN over TLS on the same port).
pub const DEFAULT_HTTPS_BIND: &str = "0.0.0.0:8443";
/// LiveKit refuses API secrets shorter than this; so do we.
pub const MIN_SECRET_LEN: usize = 32;
/// WebRTC media over UDP, every peer on this one port.
pub const DEFAULT_RTC_UDP_PORT: u16 = 8882;
/// Passive ICE-TCP, for clients whose network blocks UDP.
pub const DEFAULT_RTC_TCP_PORT: u16 = 8881;
/// The admin panel: on every interface, because it is opened from another machine on the LAN.
pub const DEFAULT_ADMIN_BIND: &str = "0.0.0.0:8089";
/// Public STUN servers asked for this network's public IP address.
pub const DEFAULT_STUN_SERVERS: [&str; 2] = ["stun.cloudflare.com:3478", "stun.l.google.com:19302"];
/// How often the public IP is re-checked when it is not fixed: a changed address is followed
/// within a minute, for two small STUN requests.
pub const DEFAULT_PUBLIC_IP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// TURN over UDP and TCP.
pub const DEFAULT_TURN_PORT: u16 = 3478;
/// TURN over TLS.
pub const DEFAULT_TURN_TLS_PORT: u16 = 5349;
/// Cloudflare's API; `RTCBOX_ACME_CLOUDFLARE_API` points tests at a loopback stand-in.
pub const DEFAULT_CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4";
/// Relay ports for legacy 1:1 calls (inclusive), forwarded by the router.
pub const DEFAULT_TURN_RELAY_PORTS: (u16, u16) = (49160, 49200);

/// A setting that can come from a flag, the environment, the settings store or a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SettingKey {
    HttpBind,
    PublicUrl,
    ApiKey,
    ApiSecret,
    FullAccessHomeservers,
    MatrixCaFile,
    DangerousAllowPrivateHomeservers,
    RtcUdpPort,
    RtcTcpPort,
    NodeIp,
    PublicIpInterval,
    PublicIpDns,
    AutoCreateRooms,
    AdminBind,
    AdminTls,
    TrustedProxies,
    StunServers,
    TurnSharedSecret,
    TurnPort,
    TurnTlsPort,
    TurnRelayPorts,
    TurnAllowPeers,
    HttpsBind,
    TlsMode,
    TlsCertFile,
    TlsKeyFile,
    AcmeDomains,
    AcmeEmail,
    AcmeChallenge,
    AcmeDirectory,
    AcmeCaFile,
    AcmeDnsProvider,
    AcmeDnsServer,
    AcmeDnsZone,
    AcmeDnsTsigKey,
    AcmeDnsTsigAlgorithm,
    AcmeDnsTsigSecret,
    AcmeCloudflareToken,
    AcmeCloudflareApi,
    MetricsToken,
}

/// Where a resolved value came from; shown in logs and (later) as "locked by environment" in the panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    Stored,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "command-line flag {flag}"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Stored => f.write_str("stored setting"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// How one environment variable supplies a setting.
#[derive(Clone, Copy, Debug)]
enum EnvSource {
    /// The variable holds the value.
    Value(&'static str),
    /// The variable holds the path of a file that holds the value (trimmed of whitespace).
    File(&'static str),
    /// lk-jwt-service's `LIVEKIT_KEY_FILE`: a file `"<key>: <secret>"`; this source takes one half.
    KeyPairFile(&'static str, KeyPairHalf),
    /// lk-jwt-service's deprecated `LIVEKIT_JWT_PORT`: a bare port on all interfaces.
    Port(&'static str),
}

#[derive(Clone, Copy, Debug)]
enum KeyPairHalf {
    Key,
    Secret,
}

impl EnvSource {
    fn name(self) -> &'static str {
        match self {
            EnvSource::Value(name)
            | EnvSource::File(name)
            | EnvSource::KeyPairFile(name, _)
            | EnvSource::Port(name) => name,
        }
    }
}

impl SettingKey {
    pub const ALL: [SettingKey; 40] = [
        SettingKey::HttpBind,
        SettingKey::PublicUrl,
        SettingKey::ApiKey,
        SettingKey::ApiSecret,
        SettingKey::FullAccessHomeservers,
        SettingKey::MatrixCaFile,
        SettingKey::DangerousAllowPrivateHomeservers,
        SettingKey::RtcUdpPort,
        SettingKey::RtcTcpPort,
        SettingKey::NodeIp,
        SettingKey::PublicIpInterval,
        SettingKey::PublicIpDns,
        SettingKey::AutoCreateRooms,
        SettingKey::AdminBind,
        SettingKey::AdminTls,
        SettingKey::TrustedProxies,
        SettingKey::StunServers,
        SettingKey::TurnSharedSecret,
        SettingKey::TurnPort,
        SettingKey::TurnTlsPort,
        SettingKey::TurnRelayPorts,
        SettingKey::TurnAllowPeers,
        SettingKey::HttpsBind,
        SettingKey::TlsMode,
        SettingKey::TlsCertFile,
        SettingKey::TlsKeyFile,
        SettingKey::AcmeDomains,
        SettingKey::AcmeEmail,
        SettingKey::AcmeChallenge,
        SettingKey::AcmeDirectory,
        SettingKey::AcmeCaFile,
        SettingKey::AcmeDnsProvider,
        SettingKey::AcmeDnsServer,
        SettingKey::AcmeDnsZone,
        SettingKey::AcmeDnsTsigKey,
        SettingKey::AcmeDnsTsigAlgorithm,
        SettingKey::AcmeDnsTsigSecret,
        SettingKey::AcmeCloudflareToken,
        SettingKey::AcmeCloudflareApi,
        SettingKey::MetricsToken,
    ];

    /// The key of this setting in the settings table.
    pub fn db_key(self) -> &'static str {
        match self {
            SettingKey::HttpBind => "http_bind",
            SettingKey::PublicUrl => "public_url",
            SettingKey::ApiKey => "api_key",
            SettingKey::ApiSecret => "api_secret",
            SettingKey::FullAccessHomeservers => "full_access_homeservers",
            SettingKey::MatrixCaFile => "matrix_ca_file",
            SettingKey::DangerousAllowPrivateHomeservers => "dangerous_allow_private_homeservers",
            SettingKey::RtcUdpPort => "rtc_udp_port",
            SettingKey::RtcTcpPort => "rtc_tcp_port",
            SettingKey::NodeIp => "node_ip",
            SettingKey::PublicIpInterval => "public_ip_interval",
            SettingKey::PublicIpDns => "public_ip_dns",
            SettingKey::AutoCreateRooms => "auto_create_rooms",
            SettingKey::AdminBind => "admin_bind",
            SettingKey::AdminTls => "admin_tls",
            SettingKey::TrustedProxies => "trusted_proxies",
            SettingKey::StunServers => "stun_servers",
            SettingKey::TurnSharedSecret => "turn_shared_secret",
            SettingKey::TurnPort => "turn_port",
            SettingKey::TurnTlsPort => "turn_tls_port",
            SettingKey::TurnRelayPorts => "turn_relay_ports",
            SettingKey::TurnAllowPeers => "turn_allow_peers",
            SettingKey::HttpsBind => "https_bind",
            SettingKey::TlsMode => "tls_mode",
            SettingKey::TlsCertFile => "tls_cert_file",
            SettingKey::TlsKeyFile => "tls_key_file",
            SettingKey::AcmeDomains => "acme_domains",
            SettingKey::AcmeEmail => "acme_email",
            SettingKey::AcmeChallenge => "acme_challenge",
            SettingKey::AcmeDirectory => "acme_directory",
            SettingKey::AcmeCaFile => "acme_ca_file",
            SettingKey::AcmeDnsProvider => "acme_dns_provider",
            SettingKey::AcmeDnsServer => "acme_dns_server",
            SettingKey::AcmeDnsZone => "acme_dns_zone",
            SettingKey::AcmeDnsTsigKey => "acme_dns_tsig_key",
            SettingKey::AcmeDnsTsigAlgorithm => "acme_dns_tsig_algorithm",
            SettingKey::AcmeDnsTsigSecret => "acme_dns_tsig_secret",
            SettingKey::AcmeCloudflareToken => "acme_cloudflare_token",
            SettingKey::AcmeCloudflareApi => "acme_cloudflare_api",
            SettingKey::MetricsToken => "metrics_token",
        }
    }

    /// rtcbox's own environment variable for this setting (the first of [`Self::env_sources`]).
    pub fn env_name(self) -> &'static str {
        self.env_sources()[0].name()
    }

    /// The command-line flag for this setting.
    pub fn flag(self) -> &'static str {
        match self {
            SettingKey::HttpBind => "--http-bind",
            SettingKey::PublicUrl => "--public-url",
            SettingKey::ApiKey => "--api-key",
            SettingKey::ApiSecret => "--api-secret",
            SettingKey::FullAccessHomeservers => "--full-access-homeservers",
            SettingKey::MatrixCaFile => "--matrix-ca-file",
            SettingKey::DangerousAllowPrivateHomeservers => "--dangerous-allow-private-homeservers",
            SettingKey::RtcUdpPort => "--rtc-udp-port",
            SettingKey::RtcTcpPort => "--rtc-tcp-port",
            SettingKey::NodeIp => "--node-ip",
            SettingKey::PublicIpInterval => "--public-ip-interval",
            SettingKey::PublicIpDns => "--public-ip-dns",
            SettingKey::AutoCreateRooms => "--auto-create-rooms",
            SettingKey::AdminBind => "--admin-bind",
            SettingKey::AdminTls => "--admin-tls",
            SettingKey::TrustedProxies => "--trusted-proxies",
            SettingKey::StunServers => "--stun-servers",
            SettingKey::TurnSharedSecret => "--turn-shared-secret",
            SettingKey::TurnPort => "--turn-port",
            SettingKey::TurnTlsPort => "--turn-tls-port",
            SettingKey::TurnRelayPorts => "--turn-relay-ports",
            SettingKey::TurnAllowPeers => "--turn-allow-peers",
            SettingKey::HttpsBind => "--https-bind",
            SettingKey::TlsMode => "--tls-mode",
            SettingKey::TlsCertFile => "--tls-cert-file",
            SettingKey::TlsKeyFile => "--tls-key-file",
            SettingKey::AcmeDomains => "--acme-domains",
            SettingKey::AcmeEmail => "--acme-email",
            SettingKey::AcmeChallenge => "--acme-challenge",
            SettingKey::AcmeDirectory => "--acme-directory",
            SettingKey::AcmeCaFile => "--acme-ca-file",
            SettingKey::AcmeDnsProvider => "--acme-dns-provider",
            SettingKey::AcmeDnsServer => "--acme-dns-server",
            SettingKey::AcmeDnsZone => "--acme-dns-zone",
            SettingKey::AcmeDnsTsigKey => "--acme-dns-tsig-key",
            SettingKey::AcmeDnsTsigAlgorithm => "--acme-dns-tsig-algorithm",
            SettingKey::AcmeDnsTsigSecret => "--acme-dns-tsig-secret",
            SettingKey::AcmeCloudflareToken => "--acme-cloudflare-token",
            SettingKey::AcmeCloudflareApi => "--acme-cloudflare-api",
            SettingKey::MetricsToken => "--metrics-token",
        }
    }

    /// Environment variables for this setting, highest precedence first.
    ///
    /// The `LIVEKIT_*` names and their order among themselves follow lk-jwt-service: a combined
    /// key file beats the per-value files, which beat the plain values.
    fn env_sources(self) -> &'static [EnvSource] {
        use EnvSource::*;
        match self {
            SettingKey::HttpBind => &[
                Value("RTCBOX_HTTP_BIND"),
                Value("LIVEKIT_JWT_BIND"),
                Port("LIVEKIT_JWT_PORT"),
            ],
            SettingKey::PublicUrl => &[Value("RTCBOX_PUBLIC_URL"), Value("LIVEKIT_URL")],
            SettingKey::ApiKey => &[
                Value("RTCBOX_API_KEY"),
                File("RTCBOX_API_KEY_FILE"),
                KeyPairFile("LIVEKIT_KEY_FILE", KeyPairHalf::Key),
                File("LIVEKIT_KEY_FROM_FILE"),
                Value("LIVEKIT_KEY"),
            ],
            SettingKey::ApiSecret => &[
                Value("RTCBOX_API_SECRET"),
                File("RTCBOX_API_SECRET_FILE"),
                KeyPairFile("LIVEKIT_KEY_FILE", KeyPairHalf::Secret),
                File("LIVEKIT_SECRET_FROM_FILE"),
                Value("LIVEKIT_SECRET"),
            ],
            SettingKey::FullAccessHomeservers => &[
                Value("RTCBOX_FULL_ACCESS_HOMESERVERS"),
                Value("LIVEKIT_FULL_ACCESS_HOMESERVERS"),
            ],
            SettingKey::MatrixCaFile => &[Value("RTCBOX_MATRIX_CA_FILE")],
            SettingKey::DangerousAllowPrivateHomeservers => {
                &[Value("RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS")]
            }
            SettingKey::RtcUdpPort => &[Value("RTCBOX_RTC_UDP_PORT")],
            SettingKey::RtcTcpPort => &[Value("RTCBOX_RTC_TCP_PORT")],
            SettingKey::NodeIp => &[Value("RTCBOX_NODE_IP")],
            SettingKey::PublicIpInterval => &[Value("RTCBOX_PUBLIC_IP_INTERVAL")],
            SettingKey::PublicIpDns => &[Value("RTCBOX_PUBLIC_IP_DNS")],
            SettingKey::AutoCreateRooms => &[Value("RTCBOX_AUTO_CREATE_ROOMS")],
            SettingKey::AdminBind => &[Value("RTCBOX_ADMIN_BIND")],
            SettingKey::AdminTls => &[Value("RTCBOX_ADMIN_TLS")],
            SettingKey::TrustedProxies => &[Value("RTCBOX_TRUSTED_PROXIES")],
            SettingKey::StunServers => &[Value("RTCBOX_STUN_SERVERS")],
            SettingKey::TurnSharedSecret => &[
                Value("RTCBOX_TURN_SHARED_SECRET"),
                File("RTCBOX_TURN_SHARED_SECRET_FILE"),
            ],
            SettingKey::TurnPort => &[Value("RTCBOX_TURN_PORT")],
            SettingKey::TurnTlsPort => &[Value("RTCBOX_TURN_TLS_PORT")],
            SettingKey::TurnRelayPorts => &[Value("RTCBOX_TURN_RELAY_PORTS")],
            SettingKey::TurnAllowPeers => &[Value("RTCBOX_TURN_ALLOW_PEERS")],
            SettingKey::HttpsBind => &[Value("RTCBOX_HTTPS_BIND")],
            SettingKey::TlsMode => &[Value("RTCBOX_TLS_MODE")],
            SettingKey::TlsCertFile => &[Value("RTCBOX_TLS_CERT_FILE")],
            SettingKey::TlsKeyFile => &[Value("RTCBOX_TLS_KEY_FILE")],
            SettingKey::AcmeDomains => &[Value("RTCBOX_ACME_DOMAINS")],
            SettingKey::AcmeEmail => &[Value("RTCBOX_ACME_EMAIL")],
            SettingKey::AcmeChallenge => &[Value("RTCBOX_ACME_CHALLENGE")],
            SettingKey::AcmeDirectory => &[Value("RTCBOX_ACME_DIRECTORY")],
            SettingKey::AcmeCaFile => &[Value("RTCBOX_ACME_CA_FILE")],
            SettingKey::AcmeDnsProvider => &[Value("RTCBOX_ACME_DNS_PROVIDER")],
            SettingKey::AcmeDnsServer => &[Value("RTCBOX_ACME_DNS_SERVER")],
            SettingKey::AcmeDnsZone => &[Value("RTCBOX_ACME_DNS_ZONE")],
            SettingKey::AcmeDnsTsigKey => &[Value("RTCBOX_ACME_DNS_TSIG_KEY")],
            SettingKey::AcmeDnsTsigAlgorithm => &[Value("RTCBOX_ACME_DNS_TSIG_ALGORITHM")],
            SettingKey::AcmeDnsTsigSecret => &[
                Value("RTCBOX_ACME_DNS_TSIG_SECRET"),
                File("RTCBOX_ACME_DNS_TSIG_SECRET_FILE"),
            ],
            SettingKey::AcmeCloudflareToken => &[
                Value("RTCBOX_ACME_CLOUDFLARE_TOKEN"),
                File("RTCBOX_ACME_CLOUDFLARE_TOKEN_FILE"),
            ],
            SettingKey::AcmeCloudflareApi => &[Value("RTCBOX_ACME_CLOUDFLARE_API")],
            SettingKey::MetricsToken => &[
                Value("RTCBOX_METRICS_TOKEN"),
                File("RTCBOX_METRICS_TOKEN_FILE"),
            ],
        }
    }

    /// Secrets are never logged, not even their origin's value.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            SettingKey::ApiSecret
                | SettingKey::TurnSharedSecret
                | SettingKey::AcmeDnsTsigSecret
                | SettingKey::AcmeCloudflareToken
                | SettingKey::MetricsToken
        )
    }
}

/// A setting that could not be resolved, with the place it came from so the operator knows what to fix.
#[derive(Debug)]
pub struct ConfigError {
    pub setting: &'static str,
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            // Nothing supplied a value: there is no origin worth naming.
            Origin::Default => write!(f, "{} {}", self.setting, self.message),
            _ => write!(
                f,
                "{} (from {}): {}",
                self.setting, self.origin, self.message
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The inputs of resolution. Tests build this by hand; `app` builds it from the process.
pub struct Layers<'a> {
    pub flags: &'a BTreeMap<SettingKey, String>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub stored: &'a BTreeMap<String, String>,
}

/// Every setting, parsed.
#[derive(Clone, Debug)]
pub struct Settings {
    pub http_bind: SocketAddr,
    pub public_url: PublicUrl,
    pub api_key: ApiKey,
    pub api_secret: Secret,
    /// `None` when unset; see [`Settings::full_access`].
    pub full_access_homeservers: Option<FullAccess>,
    pub matrix_ca_file: Option<PathBuf>,
    /// Lets the OpenID check reach homeservers on private addresses that are not full-access.
    pub dangerous_allow_private_homeservers: bool,
    pub rtc_udp_port: u16,
    pub rtc_tcp_port: u16,
    /// A fixed address advertised in ICE candidates and TURN relays. `None` (the default)
    /// means automatic: the host's own addresses plus the public IP the STUN servers report,
    /// re-checked every [`Settings::public_ip_interval`] (`net::public_ip`).
    pub node_ip: Option<IpAddr>,
    /// How often the public IP is re-checked in automatic mode.
    pub public_ip_interval: std::time::Duration,
    /// A DNS name whose address is the public IP (a dynamic DNS name): resolved at every check
    /// instead of asking the STUN servers.
    pub public_ip_dns: Option<String>,
    /// Whether joining a room that does not exist creates it (LiveKit's `room.auto_create`).
    /// Off by default: in MatrixRTC only full-access homeservers create rooms.
    pub auto_create_rooms: bool,
    /// The admin panel's listener.
    pub admin_bind: SocketAddr,
    /// Whether the admin panel is served over TLS with rtcbox's certificate (the one the HTTPS
    /// and TURN-TLS listeners serve, followed when it is renewed).
    pub admin_tls: bool,
    /// Reverse proxies whose `X-Forwarded-For`/`-Proto` are believed (on the public and admin
    /// listeners); from anyone else these headers are ignored. Empty by default.
    pub trusted_proxies: Vec<Cidr>,
    /// `host:port` of STUN servers that tell rtcbox its public IP address.
    pub stun_servers: Vec<String>,
    /// coturn's REST secret for Synapse's `turn_shared_secret` (legacy 1:1 calls).
    pub turn_shared_secret: Option<Secret>,
    /// TURN over UDP and TCP; 0 turns both listeners off.
    pub turn_port: u16,
    /// TURN over TLS; 0 turns the listener off.
    pub turn_tls_port: u16,
    /// Relay ports for peers other than the SFU, inclusive.
    pub turn_relay_ports: (u16, u16),
    /// Peers TURN may relay to although the relay policy refuses them (e.g. loopback in tests).
    pub turn_allow_peers: Vec<Cidr>,
    /// The public HTTPS listener; `None` = off.
    pub https_bind: Option<SocketAddr>,
    /// Where the certificate rtcbox serves comes from.
    pub tls_mode: TlsMode,
    /// `files` mode: the PEM certificate chain (leaf first) and its private key.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The names an ACME certificate is ordered for; by default the public URL's host.
    pub acme_domains: Vec<String>,
    /// The ACME account's contact address, if any.
    pub acme_email: Option<String>,
    pub acme_challenge: AcmeChallenge,
    pub acme_directory: AcmeDirectory,
    /// Extra roots (PEM) trusted for the ACME server's own HTTPS (a test CA such as pebble).
    pub acme_ca_file: Option<PathBuf>,
    /// DNS-01: who publishes the TXT records; required with `dns-01`.
    pub acme_dns_provider: Option<DnsProvider>,
    /// rfc2136: the server taking the updates.
    pub acme_dns_server: Option<DnsServer>,
    /// rfc2136 and cloudflare: the zone holding the records; found by itself when unset.
    pub acme_dns_zone: Option<String>,
    /// rfc2136: the TSIG key's name, algorithm and secret (base64 text, checked to decode).
    pub acme_dns_tsig_key: Option<String>,
    pub acme_dns_tsig_algorithm: TsigAlgorithm,
    pub acme_dns_tsig_secret: Option<Secret>,
    /// cloudflare: an API token with Zone.DNS edit on the zone.
    pub acme_cloudflare_token: Option<Secret>,
    /// The bearer token `/metrics` asks for; without one it answers loopback only.
    pub metrics_token: Option<Secret>,
    /// cloudflare: the API's base URL (a loopback stand-in in tests).
    pub acme_cloudflare_api: String,
    pub origins: BTreeMap<SettingKey, Origin>,
}

impl Settings {
    /// The value of one setting as text, in the form the settings store holds it; `None` when
    /// unset. Secrets included: use [`Settings::display`] for anything shown.
    pub fn value(&self, key: SettingKey) -> Option<String> {
        Some(match key {
            SettingKey::HttpBind => self.http_bind.to_string(),
            SettingKey::PublicUrl => self.public_url.to_string(),
            SettingKey::ApiKey => self.api_key.to_string(),
            SettingKey::ApiSecret => self.api_secret.expose().to_owned(),
            SettingKey::FullAccessHomeservers => self.full_access_homeservers.as_ref()?.to_string(),
            SettingKey::MatrixCaFile => self.matrix_ca_file.as_ref()?.display().to_string(),
            SettingKey::DangerousAllowPrivateHomeservers => {
                self.dangerous_allow_private_homeservers.to_string()
            }
            SettingKey::RtcUdpPort => self.rtc_udp_port.to_string(),
            SettingKey::RtcTcpPort => self.rtc_tcp_port.to_string(),
            SettingKey::NodeIp => self.node_ip?.to_string(),
            SettingKey::PublicIpInterval => self.public_ip_interval.as_secs().to_string(),
            SettingKey::PublicIpDns => self.public_ip_dns.clone()?,
            SettingKey::AutoCreateRooms => self.auto_create_rooms.to_string(),
            SettingKey::AdminBind => self.admin_bind.to_string(),
            SettingKey::AdminTls => self.admin_tls.to_string(),
            SettingKey::TrustedProxies => {
                if self.trusted_proxies.is_empty() {
                    return None;
                }
                let blocks: Vec<String> =
                    self.trusted_proxies.iter().map(Cidr::to_string).collect();
                blocks.join(",")
            }
            SettingKey::StunServers => self.stun_servers.join(","),
            SettingKey::TurnSharedSecret => self.turn_shared_secret.as_ref()?.expose().to_owned(),
            SettingKey::TurnPort => self.turn_port.to_string(),
            SettingKey::TurnTlsPort => self.turn_tls_port.to_string(),
            SettingKey::TurnRelayPorts => {
                format!("{}-{}", self.turn_relay_ports.0, self.turn_relay_ports.1)
            }
            SettingKey::TurnAllowPeers => {
                if self.turn_allow_peers.is_empty() {
                    return None;
                }
                let blocks: Vec<String> =
                    self.turn_allow_peers.iter().map(Cidr::to_string).collect();
                blocks.join(",")
            }
            SettingKey::HttpsBind => match self.https_bind {
                Some(bind) => bind.to_string(),
                None => "0".to_owned(),
            },
            SettingKey::TlsMode => self.tls_mode.to_string(),
            SettingKey::TlsCertFile => self.tls_cert_file.as_ref()?.display().to_string(),
            SettingKey::TlsKeyFile => self.tls_key_file.as_ref()?.display().to_string(),
            SettingKey::AcmeDomains => self.acme_domains.join(","),
            SettingKey::AcmeEmail => self.acme_email.clone()?,
            SettingKey::AcmeChallenge => self.acme_challenge.to_string(),
            SettingKey::AcmeDirectory => self.acme_directory.to_string(),
            SettingKey::AcmeCaFile => self.acme_ca_file.as_ref()?.display().to_string(),
            SettingKey::AcmeDnsProvider => self.acme_dns_provider?.to_string(),
            SettingKey::AcmeDnsServer => self.acme_dns_server.as_ref()?.to_string(),
            SettingKey::AcmeDnsZone => self.acme_dns_zone.clone()?,
            SettingKey::AcmeDnsTsigKey => self.acme_dns_tsig_key.clone()?,
            SettingKey::AcmeDnsTsigAlgorithm => self.acme_dns_tsig_algorithm.to_string(),
            SettingKey::AcmeDnsTsigSecret => {
                self.acme_dns_tsig_secret.as_ref()?.expose().to_owned()
            }
            SettingKey::MetricsToken => self.metrics_token.as_ref()?.expose().to_owned(),
            SettingKey::AcmeCloudflareToken => {
                self.acme_cloudflare_token.as_ref()?.expose().to_owned()
            }
            SettingKey::AcmeCloudflareApi => self.acme_cloudflare_api.clone(),
        })
    }

    /// The value as shown to an admin: secrets only say whether they are set.
    pub fn display(&self, key: SettingKey) -> String {
        match self.value(key) {
            Some(_) if key.is_secret() => "(set, hidden)".to_owned(),
            Some(value) => value,
            None => "(not set)".to_owned(),
        }
    }

    /// Takes `key`'s value (and origin) from `other`, for the settings that apply while rtcbox
    /// runs (`live`); `false` for the others, which only a restart changes.
    pub fn adopt(&mut self, other: &Settings, key: SettingKey) -> bool {
        match key {
            SettingKey::PublicUrl => self.public_url = other.public_url.clone(),
            SettingKey::FullAccessHomeservers => {
                self.full_access_homeservers = other.full_access_homeservers.clone()
            }
            SettingKey::TurnSharedSecret => {
                self.turn_shared_secret = other.turn_shared_secret.clone()
            }
            SettingKey::StunServers => self.stun_servers = other.stun_servers.clone(),
            SettingKey::PublicIpInterval => self.public_ip_interval = other.public_ip_interval,
            SettingKey::PublicIpDns => self.public_ip_dns = other.public_ip_dns.clone(),
            SettingKey::TrustedProxies => self.trusted_proxies = other.trusted_proxies.clone(),
            _ => return false,
        }
        if let Some(origin) = other.origins.get(&key) {
            self.origins.insert(key, origin.clone());
        }
        true
    }

    /// Whether a flag or the environment sets this key, so the panel cannot change it.
    pub fn is_pinned(&self, key: SettingKey) -> bool {
        matches!(
            self.origins.get(&key),
            Some(Origin::Flag(_) | Origin::Env(_))
        )
    }

    /// The full-access list. Unset means no homeserver has full access: users can join rooms
    /// that exist but nobody can create one, which is safe until the operator (or the setup
    /// wizard) names the homeserver.
    pub fn full_access(&self) -> FullAccess {
        self.full_access_homeservers
            .clone()
            .unwrap_or_else(FullAccess::none)
    }
}

/// Resolves every setting from the layers.
pub fn resolve(layers: &Layers<'_>) -> Result<Settings, ConfigError> {
    let mut origins = BTreeMap::new();
    let mut pick = |key: SettingKey| -> Result<Option<(String, Origin)>, ConfigError> {
        let found = raw_value(key, layers)?;
        if let Some((_, origin)) = &found {
            origins.insert(key, origin.clone());
        }
        Ok(found)
    };

    let http_bind = parse_http_bind(pick(SettingKey::HttpBind)?)?;
    let public_url = match pick(SettingKey::PublicUrl)? {
        Some((raw, origin)) => {
            PublicUrl::parse(&raw).map_err(|m| error(SettingKey::PublicUrl, origin, m))?
        }
        None => PublicUrl::default_for(http_bind),
    };
    let api_key = match pick(SettingKey::ApiKey)? {
        Some((raw, origin)) => {
            ApiKey::parse(&raw).map_err(|m| error(SettingKey::ApiKey, origin, m))?
        }
        None => return Err(missing(SettingKey::ApiKey)),
    };
    let api_secret = match pick(SettingKey::ApiSecret)? {
        Some((raw, origin)) => {
            parse_secret(raw).map_err(|m| error(SettingKey::ApiSecret, origin, m))?
        }
        None => return Err(missing(SettingKey::ApiSecret)),
    };
    let full_access_homeservers = match pick(SettingKey::FullAccessHomeservers)? {
        Some((raw, origin)) => Some(
            FullAccess::parse(&raw)
                .map_err(|m| error(SettingKey::FullAccessHomeservers, origin, m))?,
        ),
        None => None,
    };
    let matrix_ca_file = pick(SettingKey::MatrixCaFile)?.map(|(raw, _)| PathBuf::from(raw));
    let dangerous_allow_private_homeservers =
        match pick(SettingKey::DangerousAllowPrivateHomeservers)? {
            Some((raw, origin)) => parse_bool(&raw)
                .map_err(|m| error(SettingKey::DangerousAllowPrivateHomeservers, origin, m))?,
            None => false,
        };
    let rtc_udp_port = parse_port(
        pick(SettingKey::RtcUdpPort)?,
        SettingKey::RtcUdpPort,
        DEFAULT_RTC_UDP_PORT,
    )?;
    let rtc_tcp_port = parse_port(
        pick(SettingKey::RtcTcpPort)?,
        SettingKey::RtcTcpPort,
        DEFAULT_RTC_TCP_PORT,
    )?;
    let node_ip = match pick(SettingKey::NodeIp)? {
        Some((raw, origin)) => {
            Some(parse_node_ip(&raw).map_err(|m| error(SettingKey::NodeIp, origin, m))?)
        }
        None => None,
    };
    let public_ip_interval = match pick(SettingKey::PublicIpInterval)? {
        Some((raw, origin)) => {
            parse_interval(&raw).map_err(|m| error(SettingKey::PublicIpInterval, origin, m))?
        }
        None => DEFAULT_PUBLIC_IP_INTERVAL,
    };
    let public_ip_dns = match pick(SettingKey::PublicIpDns)? {
        Some((raw, origin)) => {
            Some(parse_host_name(&raw).map_err(|m| error(SettingKey::PublicIpDns, origin, m))?)
        }
        None => None,
    };
    let auto_create_rooms = match pick(SettingKey::AutoCreateRooms)? {
        Some((raw, origin)) => {
            parse_bool(&raw).map_err(|m| error(SettingKey::AutoCreateRooms, origin, m))?
        }
        None => false,
    };
    let admin_tls = match pick(SettingKey::AdminTls)? {
        Some((raw, origin)) => {
            parse_bool(&raw).map_err(|m| error(SettingKey::AdminTls, origin, m))?
        }
        None => false,
    };
    let admin_bind = match pick(SettingKey::AdminBind)? {
        Some((raw, origin)) => {
            parse_bind(&raw).map_err(|m| error(SettingKey::AdminBind, origin, m))?
        }
        None => DEFAULT_ADMIN_BIND.parse().expect("the default bind parses"),
    };
    let trusted_proxies = match pick(SettingKey::TrustedProxies)? {
        Some((raw, origin)) => {
            parse_cidrs(&raw).map_err(|m| error(SettingKey::TrustedProxies, origin, m))?
        }
        None => Vec::new(),
    };
    let stun_servers = match pick(SettingKey::StunServers)? {
        Some((raw, origin)) => {
            parse_stun_servers(&raw).map_err(|m| error(SettingKey::StunServers, origin, m))?
        }
        None => DEFAULT_STUN_SERVERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let turn_shared_secret = match pick(SettingKey::TurnSharedSecret)? {
        Some((raw, origin)) => {
            Some(parse_secret(raw).map_err(|m| error(SettingKey::TurnSharedSecret, origin, m))?)
        }
        None => None,
    };
    let metrics_token = match pick(SettingKey::MetricsToken)? {
        Some((raw, origin)) => Some(
            parse_metrics_token(&raw).map_err(|m| error(SettingKey::MetricsToken, origin, m))?,
        ),
        None => None,
    };
    let turn_port = parse_port(
        pick(SettingKey::TurnPort)?,
        SettingKey::TurnPort,
        DEFAULT_TURN_PORT,
    )?;
    let turn_tls_port = parse_port(
        pick(SettingKey::TurnTlsPort)?,
        SettingKey::TurnTlsPort,
        DEFAULT_TURN_TLS_PORT,
    )?;
    let turn_relay_ports = match pick(SettingKey::TurnRelayPorts)? {
        Some((raw, origin)) => {
            parse_port_range(&raw).map_err(|m| error(SettingKey::TurnRelayPorts, origin, m))?
        }
        None => DEFAULT_TURN_RELAY_PORTS,
    };
    let turn_allow_peers = match pick(SettingKey::TurnAllowPeers)? {
        Some((raw, origin)) => {
            parse_cidrs(&raw).map_err(|m| error(SettingKey::TurnAllowPeers, origin, m))?
        }
        None => Vec::new(),
    };
    let https_bind = match pick(SettingKey::HttpsBind)? {
        Some((raw, origin)) => {
            parse_optional_bind(&raw).map_err(|m| error(SettingKey::HttpsBind, origin, m))?
        }
        None => Some(DEFAULT_HTTPS_BIND.parse().expect("the default bind parses")),
    };
    let tls_mode_raw = pick(SettingKey::TlsMode)?;
    let tls_mode = match &tls_mode_raw {
        Some((raw, origin)) => {
            TlsMode::parse(raw).map_err(|m| error(SettingKey::TlsMode, origin.clone(), m))?
        }
        None => TlsMode::default(),
    };
    let tls_cert_file = pick(SettingKey::TlsCertFile)?.map(|(raw, _)| PathBuf::from(raw.trim()));
    let tls_key_file = pick(SettingKey::TlsKeyFile)?.map(|(raw, _)| PathBuf::from(raw.trim()));
    if tls_mode == TlsMode::Files {
        let origin = tls_mode_raw.map_or(Origin::Default, |(_, origin)| origin);
        for (path, key) in [
            (&tls_cert_file, SettingKey::TlsCertFile),
            (&tls_key_file, SettingKey::TlsKeyFile),
        ] {
            if path.is_none() {
                return Err(error(
                    SettingKey::TlsMode,
                    origin,
                    format!("is files, but {} is not set", key.env_name()),
                ));
            }
        }
    }
    let acme_domains = match pick(SettingKey::AcmeDomains)? {
        Some((raw, origin)) => {
            parse_domains(&raw).map_err(|m| error(SettingKey::AcmeDomains, origin, m))?
        }
        // The public URL's host, when it is a DNS name (an IP address cannot be proven by HTTP-01).
        None => parse_domains(&public_url.host()).unwrap_or_default(),
    };
    let acme_email = match pick(SettingKey::AcmeEmail)? {
        Some((raw, origin)) => {
            Some(parse_email(&raw).map_err(|m| error(SettingKey::AcmeEmail, origin, m))?)
        }
        None => None,
    };
    let acme_challenge = match pick(SettingKey::AcmeChallenge)? {
        Some((raw, origin)) => {
            AcmeChallenge::parse(&raw).map_err(|m| error(SettingKey::AcmeChallenge, origin, m))?
        }
        None => AcmeChallenge::Http01,
    };
    if tls_mode == TlsMode::Acme
        && acme_challenge == AcmeChallenge::TlsAlpn01
        && https_bind.is_none()
    {
        return Err(error(
            SettingKey::HttpsBind,
            origins
                .get(&SettingKey::HttpsBind)
                .cloned()
                .unwrap_or(Origin::Default),
            "is 0 (off), but RTCBOX_ACME_CHALLENGE=tls-alpn-01 is answered on rtcbox's HTTPS \
             listener: turn it on (e.g. 0.0.0.0:8443, with port 443 forwarded to it) or use \
             RTCBOX_ACME_CHALLENGE=http-01",
        ));
    }
    let acme_directory = match pick(SettingKey::AcmeDirectory)? {
        Some((raw, origin)) => {
            AcmeDirectory::parse(&raw).map_err(|m| error(SettingKey::AcmeDirectory, origin, m))?
        }
        None => AcmeDirectory::production(),
    };
    let acme_ca_file = pick(SettingKey::AcmeCaFile)?.map(|(raw, _)| PathBuf::from(raw.trim()));
    let dns = resolve_dns01(&mut pick)?;
    if tls_mode == TlsMode::Acme && acme_challenge == AcmeChallenge::Dns01 {
        dns.check_complete()?;
    }
    if acme_challenge != AcmeChallenge::Dns01
        && let Some(wildcard) = acme_domains.iter().find(|name| name.starts_with("*."))
    {
        return Err(error(
            SettingKey::AcmeDomains,
            origins
                .get(&SettingKey::AcmeDomains)
                .cloned()
                .unwrap_or(Origin::Default),
            format!(
                "names the wildcard '{wildcard}': only the dns-01 challenge can prove one \
                 (set RTCBOX_ACME_CHALLENGE=dns-01)"
            ),
        ));
    }
    if tls_mode == TlsMode::Acme && acme_domains.is_empty() {
        return Err(error(
            SettingKey::AcmeDomains,
            origins
                .get(&SettingKey::AcmeDomains)
                .cloned()
                .unwrap_or(Origin::Default),
            "is empty: RTCBOX_TLS_MODE=acme needs DNS names to order a certificate for \
             (set RTCBOX_ACME_DOMAINS, or a RTCBOX_PUBLIC_URL with a DNS name)",
        ));
    }
    for key in SettingKey::ALL {
        origins.entry(key).or_insert(Origin::Default);
    }

    Ok(Settings {
        http_bind,
        public_url,
        api_key,
        api_secret,
        full_access_homeservers,
        matrix_ca_file,
        dangerous_allow_private_homeservers,
        rtc_udp_port,
        rtc_tcp_port,
        node_ip,
        public_ip_interval,
        public_ip_dns,
        auto_create_rooms,
        admin_bind,
        admin_tls,
        trusted_proxies,
        stun_servers,
        turn_shared_secret,
        turn_port,
        turn_tls_port,
        turn_relay_ports,
        turn_allow_peers,
        https_bind,
        tls_mode,
        tls_cert_file,
        tls_key_file,
        acme_domains,
        acme_email,
        acme_challenge,
        acme_directory,
        acme_ca_file,
        acme_dns_provider: dns.provider.map(|(provider, _)| provider),
        acme_dns_server: dns.server,
        acme_dns_zone: dns.zone,
        acme_dns_tsig_key: dns.tsig_key,
        acme_dns_tsig_algorithm: dns.tsig_algorithm,
        acme_dns_tsig_secret: dns.tsig_secret,
        acme_cloudflare_token: dns.cloudflare_token,
        acme_cloudflare_api: dns.cloudflare_api,
        metrics_token,
        origins,
    })
}

/// DNS-01's settings, parsed; [`Dns01Settings::check_complete`] asks for what the chosen
/// provider needs.
struct Dns01Settings {
    provider: Option<(DnsProvider, Origin)>,
    server: Option<DnsServer>,
    zone: Option<String>,
    tsig_key: Option<String>,
    tsig_algorithm: TsigAlgorithm,
    tsig_secret: Option<Secret>,
    cloudflare_token: Option<Secret>,
    cloudflare_api: String,
}

fn resolve_dns01(
    pick: &mut dyn FnMut(SettingKey) -> Result<Option<(String, Origin)>, ConfigError>,
) -> Result<Dns01Settings, ConfigError> {
    /// The parsed value of `key` and its origin; a parse error names the setting and origin.
    fn parsed<T>(
        pick: &mut dyn FnMut(SettingKey) -> Result<Option<(String, Origin)>, ConfigError>,
        key: SettingKey,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<(T, Origin)>, ConfigError> {
        match pick(key)? {
            Some((raw, origin)) => match parse(&raw) {
                Ok(value) => Ok(Some((value, origin))),
                Err(message) => Err(error(key, origin, message)),
            },
            None => Ok(None),
        }
    }
    fn value<T>(found: Option<(T, Origin)>) -> Option<T> {
        found.map(|(value, _)| value)
    }
    let provider = parsed(pick, SettingKey::AcmeDnsProvider, DnsProvider::parse)?;
    let server = value(parsed(pick, SettingKey::AcmeDnsServer, DnsServer::parse)?);
    let zone = value(parsed(pick, SettingKey::AcmeDnsZone, parse_dns_name)?);
    let tsig_key = value(parsed(pick, SettingKey::AcmeDnsTsigKey, parse_dns_name)?);
    let tsig_algorithm = value(parsed(
        pick,
        SettingKey::AcmeDnsTsigAlgorithm,
        TsigAlgorithm::parse,
    )?)
    .unwrap_or_default();
    let tsig_secret = value(parsed(pick, SettingKey::AcmeDnsTsigSecret, |raw| {
        parse_tsig_secret(raw).map(|_| Secret::new(raw.trim()))
    })?);
    let cloudflare_token = value(parsed(pick, SettingKey::AcmeCloudflareToken, |raw| {
        parse_api_token(raw).map(|()| Secret::new(raw.trim()))
    })?);
    let cloudflare_api = value(parsed(pick, SettingKey::AcmeCloudflareApi, |raw| {
        parse_api_base(raw).map(|()| raw.trim().trim_end_matches('/').to_owned())
    })?)
    .unwrap_or_else(|| DEFAULT_CLOUDFLARE_API.to_owned());
    Ok(Dns01Settings {
        provider,
        server,
        zone,
        tsig_key,
        tsig_algorithm,
        tsig_secret,
        cloudflare_token,
        cloudflare_api,
    })
}

impl Dns01Settings {
    fn check_complete(&self) -> Result<(), ConfigError> {
        let Some((provider, origin)) = &self.provider else {
            return Err(error(
                SettingKey::AcmeDnsProvider,
                Origin::Default,
                "is not set: RTCBOX_ACME_CHALLENGE=dns-01 needs a provider (rfc2136, cloudflare \
                 or manual)",
            ));
        };
        let needs: &[(bool, SettingKey)] = match provider {
            DnsProvider::Rfc2136 => &[
                (self.server.is_some(), SettingKey::AcmeDnsServer),
                (self.tsig_key.is_some(), SettingKey::AcmeDnsTsigKey),
                (self.tsig_secret.is_some(), SettingKey::AcmeDnsTsigSecret),
            ],
            DnsProvider::Cloudflare => &[(
                self.cloudflare_token.is_some(),
                SettingKey::AcmeCloudflareToken,
            )],
            DnsProvider::Manual => &[],
        };
        match needs.iter().find(|(set, _)| !set) {
            Some((_, key)) => Err(error(
                SettingKey::AcmeDnsProvider,
                origin.clone(),
                format!("is {provider}, but {} is not set", key.env_name()),
            )),
            None => Ok(()),
        }
    }
}

/// The raw value and origin of every setting some layer sets, unparsed (what `rtcbox import`
/// shows as "now"). Fails only when an environment variable names a file that cannot be read.
pub fn raw_values(
    layers: &Layers<'_>,
) -> Result<BTreeMap<SettingKey, (String, Origin)>, ConfigError> {
    let mut values = BTreeMap::new();
    for key in SettingKey::ALL {
        if let Some(found) = raw_value(key, layers)? {
            values.insert(key, found);
        }
    }
    Ok(values)
}

/// Whether `raw` is a usable value for `key`, by the parser [`resolve`] uses for it; the error
/// says why not. For values checked before they are stored (`rtcbox import`).
pub fn check_value(key: SettingKey, raw: &str) -> Result<(), String> {
    use SettingKey::*;
    match key {
        HttpBind | AdminBind => parse_bind(raw).map(drop),
        PublicUrl => values::PublicUrl::parse(raw).map(drop),
        ApiKey => values::ApiKey::parse(raw).map(drop),
        ApiSecret | TurnSharedSecret => parse_secret(raw.to_owned()).map(drop),
        FullAccessHomeservers => FullAccess::parse(raw).map(drop),
        MatrixCaFile | TlsCertFile | TlsKeyFile | AcmeCaFile => Ok(()),
        HttpsBind => parse_optional_bind(raw).map(drop),
        TlsMode => values::TlsMode::parse(raw).map(drop),
        AcmeDomains => parse_domains(raw).map(drop),
        AcmeEmail => parse_email(raw).map(drop),
        AcmeChallenge => values::AcmeChallenge::parse(raw).map(drop),
        AcmeDirectory => values::AcmeDirectory::parse(raw).map(drop),
        AcmeDnsProvider => values::DnsProvider::parse(raw).map(drop),
        AcmeDnsServer => values::DnsServer::parse(raw).map(drop),
        AcmeDnsZone | AcmeDnsTsigKey => parse_dns_name(raw).map(drop),
        AcmeDnsTsigAlgorithm => values::TsigAlgorithm::parse(raw).map(drop),
        AcmeDnsTsigSecret => parse_tsig_secret(raw).map(drop),
        AcmeCloudflareToken => parse_api_token(raw).map(drop),
        AcmeCloudflareApi => parse_api_base(raw).map(drop),
        MetricsToken => parse_metrics_token(raw).map(drop),
        DangerousAllowPrivateHomeservers | AutoCreateRooms | AdminTls => parse_bool(raw).map(drop),
        RtcUdpPort | RtcTcpPort | TurnPort | TurnTlsPort => {
            parse_port(Some((raw.to_owned(), Origin::Default)), key, 0)
                .map(drop)
                .map_err(|e| e.message)
        }
        NodeIp => parse_node_ip(raw).map(drop),
        PublicIpInterval => parse_interval(raw).map(drop),
        PublicIpDns => parse_host_name(raw).map(drop),
        StunServers => parse_stun_servers(raw).map(drop),
        TurnRelayPorts => parse_port_range(raw).map(drop),
        TurnAllowPeers | TrustedProxies => parse_cidrs(raw).map(drop),
    }
}

/// Only the HTTP listener address, for `healthcheck`, which must work without a key pair.
pub fn resolve_http_bind(layers: &Layers<'_>) -> Result<SocketAddr, ConfigError> {
    parse_http_bind(raw_value(SettingKey::HttpBind, layers)?)
}

fn parse_http_bind(raw: Option<(String, Origin)>) -> Result<SocketAddr, ConfigError> {
    match raw {
        Some((raw, origin)) => parse_bind(&raw).map_err(|m| error(SettingKey::HttpBind, origin, m)),
        None => Ok(DEFAULT_HTTP_BIND.parse().expect("the default bind parses")),
    }
}

/// A listener that may be off: `0` or nothing turns it off, anything else is a listen address
/// as [`parse_bind`] reads it.
fn parse_optional_bind(raw: &str) -> Result<Option<SocketAddr>, String> {
    match raw.trim() {
        "" | "0" => Ok(None),
        other => parse_bind(other).map(Some),
    }
}

/// The data directory: `--data-dir` > `RTCBOX_DATA_DIR` > `./data`.
pub fn data_dir(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    match env("RTCBOX_DATA_DIR") {
        Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// Environment variables that lk-jwt-service knew and rtcbox deliberately does not honour, with why.
/// `app` warns about each one that is set, so a migrating operator is not surprised.
pub fn ignored_env_warnings(env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let ignored: [(&str, &str); 3] = [
        (
            "LIVEKIT_INSECURE_SKIP_VERIFY_TLS",
            "rtcbox always verifies the homeserver's TLS certificate; for a private CA set \
             RTCBOX_MATRIX_CA_FILE to its PEM file",
        ),
        (
            "LIVEKIT_LOCAL_HOMESERVERS",
            "removed in lk-jwt-service v0.5.0; use RTCBOX_FULL_ACCESS_HOMESERVERS",
        ),
        (
            "LIVEKIT_SECRET_FILE",
            "lk-jwt-service removed it; use LIVEKIT_SECRET_FROM_FILE or RTCBOX_API_SECRET_FILE",
        ),
    ];
    ignored
        .iter()
        .filter(|(name, _)| env(name).is_some_and(|v| !v.trim().is_empty()))
        .map(|(name, why)| format!("{name} is set but ignored: {why}"))
        .collect()
}

/// The raw value of one setting from the highest layer that has it.
fn raw_value(
    key: SettingKey,
    layers: &Layers<'_>,
) -> Result<Option<(String, Origin)>, ConfigError> {
    if let Some(value) = layers.flags.get(&key) {
        return Ok(Some((value.clone(), Origin::Flag(key.flag()))));
    }
    for source in key.env_sources() {
        let name = source.name();
        let Some(value) = (layers.env)(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let origin = Origin::Env(name);
        let value = match *source {
            EnvSource::Value(_) => value,
            EnvSource::Port(_) => {
                let port: u16 = value.trim().parse().map_err(|_| {
                    error(
                        key,
                        origin.clone(),
                        format!("'{value}' is not a port number"),
                    )
                })?;
                format!("0.0.0.0:{port}")
            }
            EnvSource::File(_) => {
                read_value_file(value.trim()).map_err(|m| error(key, origin.clone(), m))?
            }
            EnvSource::KeyPairFile(_, half) => {
                let content =
                    read_value_file(value.trim()).map_err(|m| error(key, origin.clone(), m))?;
                split_key_pair(&content, half).map_err(|m| error(key, origin.clone(), m))?
            }
        };
        return Ok(Some((value, origin)));
    }
    if let Some(value) = layers.stored.get(key.db_key()) {
        return Ok(Some((value.clone(), Origin::Stored)));
    }
    Ok(None)
}

fn read_value_file(path: &str) -> Result<String, String> {
    let content =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read file '{path}': {e}"))?;
    Ok(content.trim_matches([' ', '\r', '\n', '\t']).to_owned())
}

fn split_key_pair(content: &str, half: KeyPairHalf) -> Result<String, String> {
    let (key, secret) = split_key_file(content)?;
    Ok(match half {
        KeyPairHalf::Key => key,
        KeyPairHalf::Secret => secret,
    })
}

/// `LIVEKIT_KEY_FILE` holds `"<key>: <secret>"` (LiveKit's keys file format), exactly one pair,
/// split as lk-jwt-service splits it: on `:`, exactly two parts, each trimmed.
pub fn split_key_file(content: &str) -> Result<(String, String), String> {
    let trim = |part: &str| part.trim_matches([' ', '\r', '\n', '\t']).to_owned();
    match content.split(':').collect::<Vec<_>>()[..] {
        [key, secret] => Ok((trim(key), trim(secret))),
        _ => Err("the key file must hold exactly one line 'APIkey: secret'".into()),
    }
}

fn parse_secret(raw: String) -> Result<Secret, String> {
    let secret = raw.trim().to_owned();
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the secret is {} bytes long; it must be at least {MIN_SECRET_LEN} bytes \
             (generate one with: openssl rand -base64 48)",
            secret.len()
        ));
    }
    Ok(Secret::new(secret))
}

/// A TSIG secret: base64 (as `keymgr -t`, `tsig-keygen` and `knotc conf-read key` print it).
/// The message never quotes the value.
fn parse_tsig_secret(raw: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| {
            "is not base64 (copy the secret exactly as the DNS server's key file shows it, \
             e.g. from tsig-keygen or keymgr -t)"
                .to_owned()
        })?;
    if bytes.is_empty() {
        return Err("is empty".into());
    }
    Ok(bytes)
}

/// An API token: one word without spaces. The message never quotes the value.
fn parse_api_token(raw: &str) -> Result<(), String> {
    let token = raw.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be one word without spaces (paste the token exactly)".into());
    }
    Ok(())
}

/// A bearer token for `/metrics`: one word of at least 16 visible ASCII characters (a
/// Prometheus `authorization` credential is sent as typed).
fn parse_metrics_token(raw: &str) -> Result<Secret, String> {
    let token = raw.trim();
    if token.len() < 16 || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "must be at least 16 characters without spaces (e.g. `openssl rand -hex 24`)".into(),
        );
    }
    Ok(Secret::new(token))
}

/// The base URL of an HTTP API: `https://…` (or `http://` for a loopback test server).
fn parse_api_base(raw: &str) -> Result<(), String> {
    let raw = raw.trim();
    let uri: axum::http::Uri = raw.parse().map_err(|_| format!("'{raw}' is not a URL"))?;
    match uri.scheme_str() {
        Some("https" | "http") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(format!("'{raw}' must be an https:// URL")),
    }
}

/// A DNS name such as `example.org` or a TSIG key name such as `rtcbox-key.`: the trailing dot
/// is dropped, letters are lowered.
fn parse_dns_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid {
        return Err(format!(
            "'{}' is not a DNS name such as example.org",
            raw.trim()
        ));
    }
    Ok(name)
}

/// Comma- or space-separated `host:port` entries (`[v6]:port` for IPv6 literals).
fn parse_stun_servers(raw: &str) -> Result<Vec<String>, String> {
    let servers: Vec<String> = raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if servers.is_empty() {
        return Err("the list of STUN servers is empty".into());
    }
    for server in &servers {
        let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && crate::matrix::ServerName::parse(server).is_ok()
        });
        if !valid {
            return Err(format!(
                "'{server}' is not host:port (e.g. stun.cloudflare.com:3478)"
            ));
        }
    }
    Ok(servers)
}

fn parse_port(
    raw: Option<(String, Origin)>,
    key: SettingKey,
    default: u16,
) -> Result<u16, ConfigError> {
    let Some((raw, origin)) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<u16>() {
        // 0 means: media ports, the system picks a free one (tests; the advertised candidates
        // use the real one); TURN listeners, off.
        Ok(port) => Ok(port),
        _ => Err(error(
            key,
            origin,
            format!("'{}' is not a port number (0-65535)", raw.trim()),
        )),
    }
}

/// `first-last`, inclusive, e.g. `49160-49200`.
fn parse_port_range(raw: &str) -> Result<(u16, u16), String> {
    let raw = raw.trim();
    let bad = || format!("'{raw}' is not a port range (expected e.g. 49160-49200)");
    let (first, last) = raw.split_once('-').ok_or_else(bad)?;
    let first: u16 = first.trim().parse().map_err(|_| bad())?;
    let last: u16 = last.trim().parse().map_err(|_| bad())?;
    if first == 0 || first > last {
        return Err(format!(
            "'{raw}' must name the first port, then a last port not below it (e.g. 49160-49200)"
        ));
    }
    Ok((first, last))
}

/// Comma-separated address blocks; empty entries are ignored.
fn parse_cidrs(raw: &str) -> Result<Vec<Cidr>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// The advertised address must be one a client can send to: not unspecified or multicast.
fn parse_node_ip(raw: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = raw
        .trim()
        .parse()
        .map_err(|_| format!("'{}' is not an IP address (e.g. 203.0.113.7)", raw.trim()))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "{ip} cannot be advertised to clients; give the address they should reach"
        ));
    }
    Ok(ip)
}

/// A host name to resolve (`home.example.org`, or a single label such as a LAN name), not an
/// address.
fn parse_host_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "'{}' is not a DNS name such as home.example.org (for a fixed address use RTCBOX_NODE_IP)",
            raw.trim()
        ))
    }
}

/// Seconds between public IP checks: at least one, at most a day.
fn parse_interval(raw: &str) -> Result<std::time::Duration, String> {
    match raw.trim().parse::<u64>() {
        Ok(secs @ 1..=86_400) => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(format!(
            "'{}' is not a number of seconds between 1 and 86400 (e.g. 60)",
            raw.trim()
        )),
    }
}

/// `rtc.example.org,turn.example.org`: DNS names for a certificate (no IP addresses, which
/// ACME here cannot prove; `*.example.org` parses, and `resolve` allows it only with dns-01).
fn parse_domains(raw: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = name.to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
            return Err(format!(
                "'{name}' is an IP address: ACME certificates here are for DNS names"
            ));
        }
        // A wildcard is `*.` before a name; `resolve` allows it only with dns-01.
        let base = name.strip_prefix("*.").unwrap_or(&name);
        let valid = base.contains('.')
            && base.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!(
                "'{name}' is not a DNS name such as rtc.example.org"
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err("names no domain (expected e.g. rtc.example.org)".into());
    }
    Ok(names)
}

fn parse_email(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    match raw.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !raw.contains(char::is_whitespace) =>
        {
            Ok(raw.to_owned())
        }
        _ => Err(format!("'{raw}' is not an e-mail address")),
    }
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("'{other}' is not a boolean (use true or false)")),
    }
}

fn error(key: SettingKey, origin: Origin, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: key.env_name(),
        origin,
        message: message.into(),
    }
}

fn missing(key: SettingKey) -> ConfigError {
    error(
        key,
        Origin::Default,
        "has no value and none is stored (is the data directory writable?)",
    )
}

#[cfg(test)]
mod tests;
