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

use hickory_resolver::config::ResolverConfig;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, TokioResolver};

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
        Err(error) => Err(explain(&error)),
    }
}

/// Why a lookup failed, in words that say what to check (hickory's own text is a debug dump of
/// the query).
fn explain(error: &ResolveError) -> String {
    use hickory_resolver::proto::ProtoErrorKind as K;
    use hickory_resolver::proto::op::ResponseCode;
    match error.proto().map(|proto| proto.kind()) {
        Some(K::NoRecordsFound {
            response_code: ResponseCode::NXDomain,
            ..
        }) => "the name does not exist in DNS: check its spelling, and that its DNS record is \
               published"
            .to_owned(),
        Some(K::NoRecordsFound {
            response_code: ResponseCode::NoError,
            ..
        }) => "the name exists in DNS but has no address (no A or AAAA record)".to_owned(),
        Some(K::NoRecordsFound { response_code, .. }) => format!(
            "the DNS server could not look it up (it answered {response_code}): check the DNS \
             server this machine uses (/etc/resolv.conf)"
        ),
        Some(K::Timeout) => "the DNS server did not answer: check this machine's network \
                             connection and the DNS server it uses (/etc/resolv.conf)"
            .to_owned(),
        Some(K::Io(io)) => format!(
            "the DNS server cannot be reached ({}); check the DNS server this machine uses \
             (/etc/resolv.conf)",
            super::explain::io_error(io)
        ),
        Some(K::NoConnections) => {
            "no DNS server is configured (/etc/resolv.conf lists none)".to_owned()
        }
        _ => format!("the DNS lookup failed ({error})"),
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

    #[tokio::test]
    async fn a_dns_server_that_does_not_answer_is_named_as_such() {
        use hickory_resolver::config::{NameServerConfig, ResolverOpts};
        use hickory_resolver::proto::xfer::Protocol;
        // A loopback port where no DNS server listens: the query is refused or times out.
        let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let config = ResolverConfig::from_parts(
            None,
            vec![],
            vec![NameServerConfig::new(addr, Protocol::Udp)],
        );
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = ResolverOpts::default();
        builder.options_mut().timeout = Duration::from_millis(300);
        builder.options_mut().attempts = 1;
        let resolver = builder.build();
        // (Not under .invalid, which hickory answers itself; the query only goes to `addr`.)
        let error = lookup_with(&resolver, true, "matrix.example.org", 80)
            .await
            .expect_err("nobody answers");
        assert!(
            error.starts_with("the DNS server did not answer")
                || error.starts_with("the DNS server cannot be reached"),
            "{error}"
        );
        assert!(error.contains("/etc/resolv.conf"), "{error}");
        assert!(!error.contains("Query {"), "{error}");
    }

    #[test]
    fn dns_answers_say_what_to_check() {
        use hickory_resolver::proto::op::{Query, ResponseCode};
        use hickory_resolver::proto::rr::{Name, RecordType};
        use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
        let no_records = |response_code| {
            let kind = ProtoErrorKind::NoRecordsFound {
                query: Box::new(Query::query(
                    Name::from_ascii("matrix.example.org.").unwrap(),
                    RecordType::A,
                )),
                soa: None,
                ns: None,
                negative_ttl: None,
                response_code,
                trusted: true,
                authorities: None,
            };
            explain(&ResolveError::from(ProtoError::from(kind)))
        };
        assert!(
            no_records(ResponseCode::NXDomain)
                .contains("does not exist in DNS: check its spelling")
        );
        assert!(no_records(ResponseCode::NoError).contains("no A or AAAA record"));
        assert!(no_records(ResponseCode::ServFail).contains("answered"));
        let timeout = explain(&ResolveError::from(ProtoError::from(
            ProtoErrorKind::Timeout,
        )));
        assert!(
            timeout.starts_with("the DNS server did not answer"),
            "{timeout}"
        );
    }
}
