//! The deployment as the wizard describes it: plain data, already validated, that every generated
//! output is a pure function of. Nothing here does IO; the wizard builds a [`Deployment`] from
//! its stored steps and the running settings, and `outputs` turns it into text.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Everything the generated files depend on.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// The homeserver's `server_name` (the part after ':' in user IDs), e.g. `example.org`.
    pub server_name: String,
    /// Where clients reach the homeserver's client API, e.g. `https://matrix.example.org`
    /// (no trailing slash).
    pub client_base_url: String,
    /// The Synapse version, when it could be detected or was entered.
    pub synapse_version: Option<SynapseVersion>,
    /// The current `/.well-known/matrix/client` JSON object, when one was found; its keys are kept.
    pub existing_well_known: Option<serde_json::Map<String, serde_json::Value>>,
    pub endpoints: Endpoints,
    pub tls: TlsMode,
    pub network: Network,
    /// The embedded TURN server for legacy 1:1 calls (Synapse's `turn_shared_secret`), when on.
    pub legacy_turn: Option<LegacyTurn>,
    /// How rtcbox runs now, for the container file.
    pub running: Running,
}

/// A Synapse release, e.g. 1.163.2 (a `rc` suffix is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SynapseVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl SynapseVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        SynapseVersion {
            major,
            minor,
            patch,
        }
    }

    /// Accepts `1.163.2`, `1.163.0rc1`, `1.163`, and Synapse's `server_version` strings such as
    /// `1.163.2 (b=matrix-org-hotfixes,abc123)` or `Synapse/1.163.2`.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let raw = raw.strip_prefix("Synapse/").unwrap_or(raw);
        let core = raw.split([' ', '(', '+']).next()?;
        let mut parts = core.split('.');
        let number = |part: Option<&str>| -> Option<u32> {
            let part = part?;
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() || digits.len() > 6 {
                return None;
            }
            digits.parse().ok()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = match parts.next() {
            Some(p) => number(Some(p))?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(SynapseVersion::new(major, minor, patch))
    }
}

impl fmt::Display for SynapseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Where the public reaches rtcbox's HTTP services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// One origin: the authorization service under `/livekit/jwt`, the SFU under `/livekit/sfu`.
    OneHost(PublicOrigin),
    /// Two origins, each serving its service at the root.
    TwoHosts {
        jwt: PublicOrigin,
        sfu: PublicOrigin,
    },
}

impl Endpoints {
    /// `livekit_service_url`: the authorization service's base URL (no trailing slash), as
    /// published in `rtc_foci` and `matrix_rtc.transports`.
    pub fn livekit_service_url(&self) -> String {
        match self {
            Endpoints::OneHost(origin) => format!("{}/livekit/jwt", origin.https_url()),
            Endpoints::TwoHosts { jwt, .. } => jwt.https_url(),
        }
    }

    /// The LiveKit URL handed to clients (`RTCBOX_PUBLIC_URL`), e.g. `wss://rtc.example.org/livekit/sfu`.
    pub fn sfu_url(&self) -> String {
        match self {
            Endpoints::OneHost(origin) => format!("{}/livekit/sfu", origin.ws_url()),
            Endpoints::TwoHosts { sfu, .. } => sfu.ws_url(),
        }
    }

    /// Every public origin, the SFU's last.
    pub fn origins(&self) -> Vec<&PublicOrigin> {
        match self {
            Endpoints::OneHost(origin) => vec![origin],
            Endpoints::TwoHosts { jwt, sfu } => vec![jwt, sfu],
        }
    }

    /// The host name the TURN URIs use: the SFU's.
    pub fn sfu_host(&self) -> &str {
        match self {
            Endpoints::OneHost(origin) => &origin.host,
            Endpoints::TwoHosts { sfu, .. } => &sfu.host,
        }
    }
}

/// `https://host[:port]`, or `http://` for a loopback test set-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicOrigin {
    pub tls: bool,
    /// A DNS name or an IP literal (IPv6 without brackets).
    pub host: String,
    /// `None` means the scheme's default (443 or 80).
    pub port: Option<u16>,
}

impl PublicOrigin {
    /// `host` or `host:port`, IPv6 bracketed, as it appears in URLs and `Host` headers.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    pub fn https_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.authority())
    }

    /// The port clients connect to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 443 } else { 80 })
    }
}

/// How HTTPS reaches the public: recorded by the wizard; the outputs depend on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum TlsMode {
    /// A reverse proxy (DSM, nginx, Caddy, Traefik, Apache) terminates TLS and forwards plain
    /// HTTP to rtcbox's public HTTP port.
    ReverseProxy { proxy: ProxyKind },
    /// rtcbox gets its own certificate from Let's Encrypt and serves HTTPS itself.
    Acme {
        challenge: AcmeChallenge,
        email: String,
    },
    /// rtcbox serves HTTPS with a self-signed certificate (testing; browsers will warn).
    SelfSigned,
    /// rtcbox serves HTTPS with a certificate and key from files another tool renews (e.g.
    /// exported from DSM), re-read when they change.
    Files { cert: String, key: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyKind {
    SynologyDsm,
    Nginx,
    Caddy,
    Traefik,
    Apache,
}

impl ProxyKind {
    pub const ALL: [ProxyKind; 5] = [
        ProxyKind::SynologyDsm,
        ProxyKind::Nginx,
        ProxyKind::Caddy,
        ProxyKind::Traefik,
        ProxyKind::Apache,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ProxyKind::SynologyDsm => "Synology DSM reverse proxy",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Caddy => "Caddy",
            ProxyKind::Traefik => "Traefik",
            ProxyKind::Apache => "Apache httpd",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            ProxyKind::SynologyDsm => "synology-dsm",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Caddy => "caddy",
            ProxyKind::Traefik => "traefik",
            ProxyKind::Apache => "apache",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        ProxyKind::ALL.into_iter().find(|k| k.slug() == slug)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// Validated on the public port 80.
    Http01,
    /// Validated on the public port 443.
    TlsAlpn01,
    /// Validated through a DNS TXT record; works behind any NAT.
    Dns01,
}

impl AcmeChallenge {
    pub const ALL: [AcmeChallenge; 3] = [
        AcmeChallenge::Http01,
        AcmeChallenge::TlsAlpn01,
        AcmeChallenge::Dns01,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "HTTP-01 (needs public port 80)",
            AcmeChallenge::TlsAlpn01 => "TLS-ALPN-01 (needs public port 443)",
            AcmeChallenge::Dns01 => "DNS-01 (needs DNS API access; works behind any NAT)",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Dns01 => "dns-01",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        AcmeChallenge::ALL.into_iter().find(|c| c.slug() == slug)
    }
}

/// The machine's addresses and rtcbox's ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The address rtcbox has on the LAN: where the router forwards to and a proxy connects to.
    pub lan_ip: IpAddr,
    /// The address the internet sees (the router's WAN address), when known: the fixed one,
    /// or (following) the one rtcbox detected last.
    pub public_ip: Option<IpAddr>,
    /// No fixed address: rtcbox detects the public IP with STUN and follows it when the
    /// provider changes it (`net::public_ip`); `public_ip` is then what it detected.
    #[serde(default)]
    pub follows_public_ip: bool,
    pub ports: Ports,
}

/// rtcbox's listening ports (defaults in BRIEF.md: they avoid DSM's and Synology HA's ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// Plain HTTP: signaling, auth, Twirp (behind a reverse proxy), ACME HTTP-01.
    pub http: u16,
    /// HTTPS with rtcbox's own certificate (direct mode).
    pub https: u16,
    /// The admin panel (LAN only).
    pub admin: u16,
    /// WebRTC media, every peer on this UDP port.
    pub rtc_udp: u16,
    /// ICE-TCP fallback.
    pub rtc_tcp: u16,
    /// TURN over UDP and TCP.
    pub turn: u16,
    /// TURN over TLS.
    pub turns: u16,
    /// TURN relay ports for legacy 1:1 calls, inclusive.
    pub relay_min: u16,
    pub relay_max: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            http: 8880,
            https: 8443,
            admin: 8089,
            rtc_udp: 8882,
            rtc_tcp: 8881,
            turn: 3478,
            turns: 5349,
            relay_min: 49160,
            relay_max: 49200,
        }
    }
}

/// How rtcbox runs now, as far as `compose.yaml` needs it: the admin panel reads it (the data
/// directory's path and owner, the listeners' addresses) where it builds the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The data directory as an absolute path without symbolic links, when it could be resolved
    /// and is UTF-8. `/data` means rtcbox already runs in a container.
    pub data_dir: Option<String>,
    /// The data directory's owner, (uid, gid), when it could be read.
    pub data_owner: Option<(u32, u32)>,
    /// The address the public HTTP listener binds now (media and TURN bind the same one).
    pub http_bind_ip: IpAddr,
    /// The address the admin panel binds now.
    pub admin_bind_ip: IpAddr,
    /// The environment names of the settings a variable or flag pins now; a container does
    /// not inherit them.
    pub pinned: Vec<&'static str>,
    /// Whether the certificate rtcbox serves now is one browsers trust (from the ACME CA, or
    /// files the system's roots verify): only then are `turns:` URLs and their port offered.
    pub tls_trusted: bool,
}

impl Default for Running {
    /// Nothing known about the data directory; listeners on every interface, nothing pinned.
    fn default() -> Self {
        Running {
            data_dir: None,
            data_owner: None,
            http_bind_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            admin_bind_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            pinned: Vec::new(),
            tls_trusted: false,
        }
    }
}

/// Legacy 1:1 calls through the embedded TURN server, with coturn's REST shared secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyTurn {
    pub shared_secret: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_versions_parse() {
        let check = |raw: &str, expected: Option<(u32, u32, u32)>| {
            assert_eq!(
                SynapseVersion::parse(raw),
                expected.map(|(a, b, c)| SynapseVersion::new(a, b, c)),
                "{raw}"
            );
        };
        check("1.163.2", Some((1, 163, 2)));
        check("1.140.0rc1", Some((1, 140, 0)));
        check("1.153", Some((1, 153, 0)));
        check("Synapse/1.99.0", Some((1, 99, 0)));
        check("1.163.2 (b=develop,abc123)", Some((1, 163, 2)));
        check("1.2.3.4", None);
        check("", None);
        check("v1.2", None);
        check("dendrite", None);
        check("99999999.1.1", None);
        assert!(SynapseVersion::new(1, 140, 0) > SynapseVersion::new(1, 99, 9));
    }

    #[test]
    fn endpoint_urls() {
        let one = Endpoints::OneHost(PublicOrigin {
            tls: true,
            host: "rtc.example.org".into(),
            port: None,
        });
        assert_eq!(
            one.livekit_service_url(),
            "https://rtc.example.org/livekit/jwt"
        );
        assert_eq!(one.sfu_url(), "wss://rtc.example.org/livekit/sfu");
        let two = Endpoints::TwoHosts {
            jwt: PublicOrigin {
                tls: true,
                host: "jwt.example.org".into(),
                port: Some(8448),
            },
            sfu: PublicOrigin {
                tls: false,
                host: "::1".into(),
                port: Some(8880),
            },
        };
        assert_eq!(two.livekit_service_url(), "https://jwt.example.org:8448");
        assert_eq!(two.sfu_url(), "ws://[::1]:8880");
        assert_eq!(two.sfu_host(), "::1");
    }
}
