//! Name resolution for every outgoing connection, through hickory's resolver rather than the C
//! library's `getaddrinfo`.
//!
//! The release binary is linked statically, and a static glibc cannot load the NSS modules
//! `getaddrinfo` depends on; in a `FROM scratch` image there is no C library to ask at all. So
//! nothing in rtcbox calls `tokio::net::lookup_host` or `ToSocketAddrs` with a name: names go
//! through [`lookup`], which reads `/etc/hosts` and `/etc/resolv.conf` itself (container engines
//! write both). Without a resolv.conf only `localhost`, IP literals and `/etc/hosts` entries
//! resolve; rtcbox never falls back to a public DNS server of its own choosing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::name_server::TokioConnectionProvider;

/// Per query; the resolver tries each configured server once.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolver configured from this system's `/etc/resolv.conf` and `/etc/hosts`. The second
/// value is false when there is no usable resolv.conf: the resolver then knows `/etc/hosts` only.
pub fn system_resolver() -> (TokioResolver, bool) {
    let (mut builder, configured) = match TokioResolver::builder_tokio() {
        Ok(builder) => (builder, true),
        Err(error) => {
            tracing::debug!(%error, "no DNS configuration; names resolve from /etc/hosts only");
            (
                TokioResolver::builder_with_config(
                    ResolverConfig::new(),
                    TokioConnectionProvider::default(),
                ),
                false,
            )
        }
    };
    let opts = builder.options_mut();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    (builder.build(), configured)
}

/// The addresses of `host` (a name, an IP literal, or a bracketed IPv6 literal) with `port`.
/// The error says why, for a message that names the host itself.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Some(addrs) = literal(host, port) {
        return Ok(addrs);
    }
    let (resolver, configured) = system_resolver();
    lookup_with(&resolver, configured, host, port).await
}

/// [`lookup`] with a resolver the caller keeps (from [`system_resolver`]).
pub async fn lookup_with(
    resolver: &TokioResolver,
    configured: bool,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    if let Some(addrs) = literal(host, port) {
        return Ok(addrs);
    }
    match resolver.lookup_ip(host).await {
        Ok(found) => {
            let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            if addrs.is_empty() {
                Err("it has no address".to_owned())
            } else {
                Ok(addrs)
            }
        }
        Err(_) if !configured => Err("this system has no DNS configuration (/etc/resolv.conf), \
                                      and /etc/hosts does not name it"
            .to_owned()),
        Err(error) => Err(error.to_string()),
    }
}

/// IP literals and `localhost` (RFC 6761: always loopback, never asked of a DNS server).
fn literal(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(host: &str, expected: Option<&[&str]>) {
        let got = literal(host, 443).map(|addrs| {
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<String>>()
        });
        let expected = expected.map(|e| e.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(got, expected, "{host}");
    }

    #[test]
    fn literals_and_localhost_need_no_resolver() {
        check("192.0.2.1", Some(&["192.0.2.1:443"]));
        check("[2001:db8::1]", Some(&["[2001:db8::1]:443"]));
        check("2001:db8::1", Some(&["[2001:db8::1]:443"]));
        check("localhost", Some(&["127.0.0.1:443", "[::1]:443"]));
        check("LocalHost.", Some(&["127.0.0.1:443", "[::1]:443"]));
        check("rtc.localhost", Some(&["127.0.0.1:443", "[::1]:443"]));
        check("example.org", None);
        check("localhost.example.org", None);
        check("[not-an-ip]", None);
    }

    #[tokio::test]
    async fn names_from_hosts_or_a_clear_error_without_dns() {
        // A resolver with no servers answers from /etc/hosts only; a made-up name under the
        // reserved .invalid TLD (RFC 6761) is in no hosts file, so no packet is sent anywhere.
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::new(),
            TokioConnectionProvider::default(),
        )
        .build();
        let error = lookup_with(&resolver, false, "rtcbox-test.invalid", 80)
            .await
            .expect_err("no server, no hosts entry");
        assert!(error.contains("no DNS configuration"), "{error}");
    }
}
