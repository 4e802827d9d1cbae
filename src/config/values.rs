//! Typed setting values, each parsed once ("parse, don't validate").

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use axum::http::Uri;

/// A listen address. Accepts `host:port`, `[v6]:port`, Go's `:port` (all interfaces, as
/// `LIVEKIT_JWT_BIND` allows), a bare port, and `localhost:port`.
pub fn parse_bind(raw: &str) -> Result<SocketAddr, String> {
    let raw = raw.trim();
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("'{raw}' has no valid port"))
    };
    if let Some(port) = raw.strip_prefix(':') {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port_of(port)?)));
    }
    if let Some(port) = raw.strip_prefix("localhost:") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(port)?)));
    }
    if let Ok(port) = raw.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    Err(format!(
        "'{raw}' is not a listen address (expected e.g. 0.0.0.0:8880, [::]:8880 or :8880)"
    ))
}

/// The LiveKit URL handed to clients in token responses (`LIVEKIT_URL`), returned verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let uri: Uri = raw.parse().map_err(|_| {
            format!("'{raw}' is not a URL (expected e.g. wss://rtc.example.org/livekit/sfu)")
        })?;
        match uri.scheme_str() {
            Some("ws" | "wss" | "http" | "https") => {}
            _ => {
                return Err(format!(
                    "'{raw}' must start with wss:// (or ws://, https://, http://), \
                     e.g. wss://rtc.example.org/livekit/sfu"
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("'{raw}' has no host name"));
        }
        if uri.query().is_some() {
            return Err(format!("'{raw}' must not have a query string"));
        }
        Ok(PublicUrl(raw.to_owned()))
    }

    /// Without configuration, clients on this machine can reach the SFU on the HTTP listener.
    pub fn default_for(http_bind: SocketAddr) -> Self {
        PublicUrl(format!("ws://localhost:{}", http_bind.port()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The port of a `wss://`/`https://` URL (443 unless it names one); `None` for plain ones.
    pub fn tls_port(&self) -> Option<u16> {
        let uri = self.0.parse::<Uri>().ok()?;
        match uri.scheme_str() {
            Some("wss" | "https") => Some(uri.port_u16().unwrap_or(443)),
            _ => None,
        }
    }

    /// The host clients reach rtcbox by (an IPv6 literal keeps its brackets).
    pub fn host(&self) -> String {
        self.0
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.host().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A LiveKit API key: the `iss` of every token we mint and accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let key = raw.trim();
        if key.is_empty() || key.len() > 256 {
            return Err("the API key must be 1 to 256 characters".into());
        }
        if key
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        {
            return Err("the API key must not contain spaces, control characters or ':'".into());
        }
        Ok(ApiKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The homeservers whose users may create rooms on this SFU (`LIVEKIT_FULL_ACCESS_HOMESERVERS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FullAccess {
    /// `*` alone: every homeserver.
    Any,
    /// Exact `server_name`s, compared byte for byte with the OpenID token's `matrix_server_name`.
    Only(BTreeSet<String>),
}

impl FullAccess {
    /// No homeserver: nobody creates rooms.
    pub fn none() -> Self {
        FullAccess::Only(BTreeSet::new())
    }

    /// A comma- and/or whitespace-separated list of server names, or `*` alone.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let names: Vec<&str> = raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return Err("the list of full-access homeservers is empty".into());
        }
        if names.contains(&"*") {
            return if names.len() == 1 {
                Ok(FullAccess::Any)
            } else {
                Err("'*' allows every homeserver and cannot be combined with names".into())
            };
        }
        for name in &names {
            if name.contains("://") || name.contains('/') {
                return Err(format!(
                    "'{name}' looks like a URL; give the homeserver's server_name, e.g. example.org"
                ));
            }
            if name.starts_with('@') || name.starts_with('!') || name.starts_with('#') {
                return Err(format!(
                    "'{name}' looks like a Matrix ID; give only the server_name after the ':', e.g. example.org"
                ));
            }
            if crate::matrix::ServerName::parse(name).is_err() {
                return Err(format!("'{name}' is not a valid Matrix server name"));
            }
        }
        Ok(FullAccess::Only(
            names.into_iter().map(str::to_owned).collect(),
        ))
    }

    pub fn contains(&self, server_name: &str) -> bool {
        match self {
            FullAccess::Any => true,
            FullAccess::Only(names) => names.contains(server_name),
        }
    }
}

impl fmt::Display for FullAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FullAccess::Any => f.write_str("*"),
            FullAccess::Only(names) => {
                let list: Vec<&str> = names.iter().map(String::as_str).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// Where the certificate of the HTTPS listener and TURN over TLS comes from
/// (`RTCBOX_TLS_MODE`). A new mode is one variant here, its name in [`TlsMode::NAMES`], and its
/// arm in `app`'s certificate setup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// A reverse proxy terminates TLS for HTTPS; rtcbox's own listeners use a self-signed
    /// certificate (stored, see `tls`).
    #[default]
    Proxy,
    /// rtcbox serves HTTPS itself with its self-signed certificate.
    SelfSigned,
    /// A certificate chain and key from files (e.g. exported from DSM), reloaded on change.
    Files,
    /// A certificate from an ACME CA (Let's Encrypt), obtained and renewed by rtcbox.
    Acme,
}

impl TlsMode {
    /// Every mode by its setting value.
    pub const NAMES: [(&'static str, TlsMode); 4] = [
        ("proxy", TlsMode::Proxy),
        ("self-signed", TlsMode::SelfSigned),
        ("files", TlsMode::Files),
        ("acme", TlsMode::Acme),
    ];

    pub fn parse(raw: &str) -> Result<Self, String> {
        let wanted = raw.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(name, _)| *name).collect();
                format!(
                    "'{}' is not a TLS mode (use {})",
                    raw.trim(),
                    names.join(", ")
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("proxy", |(name, _)| name)
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the ACME CA checks that rtcbox controls the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// The CA fetches `http://<name>/.well-known/acme-challenge/<token>` on port 80.
    Http01,
    /// The CA opens TLS to `<name>:443` offering `acme-tls/1` (RFC 8737); rtcbox's HTTPS
    /// listener answers.
    TlsAlpn01,
    /// The CA looks up the TXT record `_acme-challenge.<name>`, which rtcbox publishes through
    /// the [`DnsProvider`]: no port needs to be reachable, and wildcards work.
    Dns01,
}

impl AcmeChallenge {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "http-01" => Ok(AcmeChallenge::Http01),
            "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
            "dns-01" => Ok(AcmeChallenge::Dns01),
            other => Err(format!(
                "'{other}' is not an ACME challenge (use http-01, tls-alpn-01 or dns-01)"
            )),
        }
    }
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Dns01 => "dns-01",
        })
    }
}

/// Who publishes DNS-01's TXT records (`RTCBOX_ACME_DNS_PROVIDER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsProvider {
    /// A DNS server that takes dynamic updates (RFC 2136) signed with a TSIG key.
    Rfc2136,
    /// Cloudflare's API, with an API token.
    Cloudflare,
    /// The admin creates the record by hand; the panel shows it, rtcbox waits until it is seen.
    Manual,
}

impl DnsProvider {
    pub const NAMES: [(&'static str, DnsProvider); 3] = [
        ("rfc2136", DnsProvider::Rfc2136),
        ("cloudflare", DnsProvider::Cloudflare),
        ("manual", DnsProvider::Manual),
    ];

    pub fn parse(raw: &str) -> Result<Self, String> {
        pick_name(&Self::NAMES, raw, "a DNS provider")
    }
}

impl fmt::Display for DnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name_of(&Self::NAMES, *self))
    }
}

/// The HMAC of a TSIG key (`RTCBOX_ACME_DNS_TSIG_ALGORITHM`), named as knot and BIND name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TsigAlgorithm {
    #[default]
    HmacSha256,
    HmacSha512,
}

impl TsigAlgorithm {
    pub const NAMES: [(&'static str, TsigAlgorithm); 2] = [
        ("hmac-sha256", TsigAlgorithm::HmacSha256),
        ("hmac-sha512", TsigAlgorithm::HmacSha512),
    ];

    pub fn parse(raw: &str) -> Result<Self, String> {
        pick_name(&Self::NAMES, raw, "a TSIG algorithm rtcbox signs with")
    }

    pub fn as_str(self) -> &'static str {
        name_of(&Self::NAMES, self)
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn pick_name<T: Copy>(names: &[(&'static str, T)], raw: &str, what: &str) -> Result<T, String> {
    let wanted = raw.trim().to_ascii_lowercase();
    names
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let list: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            format!("'{}' is not {what} (use {})", raw.trim(), list.join(", "))
        })
}

fn name_of<T: Copy + PartialEq>(names: &[(&'static str, T)], value: T) -> &'static str {
    names
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("", |(name, _)| name)
}

/// A DNS server to send updates to: `host:port`, `[v6]:port`, or a host alone (port 53).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsServer {
    pub host: String,
    pub port: u16,
}

impl DnsServer {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let bad = || {
            format!("'{raw}' is not a DNS server (expected e.g. ns1.example.org:53 or 192.0.2.53)")
        };
        if let Ok(addr) = raw.parse::<std::net::SocketAddr>() {
            return Ok(DnsServer {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        if let Ok(ip) = raw.parse::<std::net::IpAddr>() {
            return Ok(DnsServer {
                host: ip.to_string(),
                port: 53,
            });
        }
        let (host, port) = match raw.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (raw, 53),
        };
        let valid_host = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid_host || port == 0 {
            return Err(bad());
        }
        Ok(DnsServer {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The ACME directory URL: Let's Encrypt production unless told otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeDirectory(String);

impl AcmeDirectory {
    pub const PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
    pub const STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

    pub fn production() -> Self {
        AcmeDirectory(Self::PRODUCTION.to_owned())
    }

    /// `production`, `staging` (Let's Encrypt's) or any `https://` URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        match raw.to_ascii_lowercase().as_str() {
            "production" | "letsencrypt" => return Ok(Self::production()),
            "staging" => return Ok(AcmeDirectory(Self::STAGING.to_owned())),
            _ => {}
        }
        let uri: Uri = raw.parse().map_err(|_| {
            format!("'{raw}' is not a URL (use production, staging or an https:// URL)")
        })?;
        if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
            return Err(format!(
                "'{raw}' must be an https:// URL (or production, staging)"
            ));
        }
        Ok(AcmeDirectory(raw.to_owned()))
    }

    pub fn url(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AcmeDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
