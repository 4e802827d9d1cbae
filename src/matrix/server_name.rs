//! Matrix server names (`example.org`, `example.org:8448`, `1.2.3.4`, `[::1]:8448`), parsed once.
//! Grammar from the Matrix specification's appendix: `hostname [ ":" port ]`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerName {
    raw: String,
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid Matrix server name")]
pub struct InvalidServerName(pub String);

impl ServerName {
    pub fn parse(raw: &str) -> Result<Self, InvalidServerName> {
        let invalid = || InvalidServerName(raw.chars().take(300).collect());
        if raw.is_empty() || raw.len() > 255 + 6 {
            return Err(invalid());
        }
        let (host_part, port) = split_port(raw).ok_or_else(invalid)?;
        let host = if let Some(inner) = host_part.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(invalid)?;
            Host::Ip(IpAddr::V6(
                inner.parse::<Ipv6Addr>().map_err(|_| invalid())?,
            ))
        } else if let Ok(v4) = host_part.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(v4))
        } else if is_dns_name(host_part) {
            Host::Dns(host_part.to_owned())
        } else {
            return Err(invalid());
        };
        Ok(ServerName {
            raw: raw.to_owned(),
            host,
            port,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The host as it goes into a TLS SNI / certificate check (no brackets, no port).
    pub fn tls_name(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Dns(name) => name.clone(),
        }
    }

    /// `localhost` and `*.localhost` always mean this machine (RFC 6761); they are never looked up in DNS.
    pub fn is_localhost(&self) -> bool {
        match &self.host {
            Host::Dns(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
            Host::Ip(_) => false,
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits an optional `:port` off, leaving IPv6 brackets intact. `None` for a malformed port.
fn split_port(raw: &str) -> Option<(&str, Option<u16>)> {
    let port_start = if raw.starts_with('[') {
        let close = raw.find(']')?;
        match &raw[close + 1..] {
            "" => return Some((raw, None)),
            rest if rest.starts_with(':') => close + 1,
            _ => return None,
        }
    } else {
        match raw.rfind(':') {
            Some(i) => i,
            None => return Some((raw, None)),
        }
    };
    let digits = &raw[port_start + 1..];
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = digits.parse().ok()?;
    if port == 0 {
        return None;
    }
    Some((&raw[..port_start], Some(port)))
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        let check = |raw: &str, host: Host, port: Option<u16>| {
            let name = ServerName::parse(raw).unwrap();
            assert_eq!(name.host(), &host, "{raw}");
            assert_eq!(name.port(), port, "{raw}");
            assert_eq!(name.as_str(), raw);
        };
        check("example.org", Host::Dns("example.org".into()), None);
        check(
            "matrix.example.org:8448",
            Host::Dns("matrix.example.org".into()),
            Some(8448),
        );
        check("localhost", Host::Dns("localhost".into()), None);
        check("1.2.3.4", Host::Ip("1.2.3.4".parse().unwrap()), None);
        check(
            "1.2.3.4:1234",
            Host::Ip("1.2.3.4".parse().unwrap()),
            Some(1234),
        );
        check(
            "[1234:5678::abcd]",
            Host::Ip("1234:5678::abcd".parse().unwrap()),
            None,
        );
        check("[::1]:8448", Host::Ip("::1".parse().unwrap()), Some(8448));
    }

    #[test]
    fn invalid_names() {
        for raw in [
            "",
            ":8448",
            "example.org:",
            "example.org:port",
            "example.org:65536",
            "example.org:0",
            "exa mple.org",
            "example.org/path",
            "https://example.org",
            "[::1",
            "[::1]x",
            "::1",
            "[not-ipv6]",
            "a..b",
            ".example.org",
            "@alice:example.org",
            "example.org:123456",
        ] {
            assert!(ServerName::parse(raw).is_err(), "{raw:?} must be refused");
        }
        assert!(ServerName::parse(&"a".repeat(300)).is_err());
    }

    #[test]
    fn localhost_names() {
        assert!(ServerName::parse("localhost:8448").unwrap().is_localhost());
        assert!(ServerName::parse("hs.localhost").unwrap().is_localhost());
        assert!(
            !ServerName::parse("localhost.example.org")
                .unwrap()
                .is_localhost()
        );
        assert!(!ServerName::parse("127.0.0.1").unwrap().is_localhost());
    }

    #[test]
    fn display_and_tls_name() {
        let v6 = ServerName::parse("[::1]:8448").unwrap();
        assert_eq!(v6.tls_name(), "::1");
        assert_eq!(v6.host().to_string(), "[::1]");
    }
}
