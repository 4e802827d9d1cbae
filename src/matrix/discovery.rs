//! Federation server discovery: which host, port and TLS name serve a Matrix server name.
//!
//! The procedure of the Matrix server-server specification ("Resolving server names"), written
//! against a [`Lookup`] so it runs with canned answers in tests and with the network in
//! [`super::FederationClient`]:
//!
//! 1. an IP literal: that IP, the given port or 8448;
//! 2. an explicit port: that host and port, TLS name = host;
//! 3. `localhost` names skip steps 4-6 (RFC 6761: never looked up outside this machine);
//! 4. `https://<host>/.well-known/matrix/server` gives `m.server`, resolved again by 1, 2, 5, 6, 7
//!    with the delegated name as TLS name and Host header;
//! 5. SRV `_matrix-fed._tcp.<host>`, then 6. SRV `_matrix._tcp.<host>`, TLS name = host;
//! 7. `<host>:8448`.

use std::future::Future;

use super::server_name::{Host, ServerName};

/// The federation port when nothing else says otherwise.
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;

/// One place to send a federation request; [`discover`] returns them in the order to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What to connect to: an IP, or a DNS name still to be resolved to addresses.
    pub host: Host,
    pub port: u16,
    /// The name the server's certificate must be valid for.
    pub tls_name: String,
    /// The HTTP Host header.
    pub host_header: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub target: String,
    pub port: u16,
}

/// The two network questions discovery asks.
pub trait Lookup {
    /// `m.server` of `https://<host>/.well-known/matrix/server`, or `None` when there is none
    /// (any error, non-200, bad JSON, invalid name).
    fn well_known(&self, host: &str) -> impl Future<Output = Option<ServerName>> + Send;
    /// The SRV records of `name`; empty when there are none or the lookup failed.
    fn srv(&self, name: &str) -> impl Future<Output = Vec<SrvRecord>> + Send;
}

/// Where to reach `name`'s federation API, best first. Never empty.
pub async fn discover(name: &ServerName, lookup: &impl Lookup) -> Vec<Endpoint> {
    if let Some(direct) = direct(name, name.as_str()) {
        return vec![direct];
    }
    let host = name.tls_name();
    if name.is_localhost() {
        return vec![default_port(&host, name.as_str())];
    }
    if let Some(delegated) = lookup.well_known(&host).await {
        if let Some(direct) = direct(&delegated, delegated.as_str()) {
            return vec![direct];
        }
        let delegated_host = delegated.tls_name();
        return via_srv_or_default(&delegated_host, delegated.as_str(), lookup).await;
    }
    via_srv_or_default(&host, name.as_str(), lookup).await
}

/// Steps 1 and 2: names that need no lookup.
fn direct(name: &ServerName, host_header: &str) -> Option<Endpoint> {
    match (name.host(), name.port()) {
        (Host::Ip(ip), port) => Some(Endpoint {
            host: Host::Ip(*ip),
            port: port.unwrap_or(DEFAULT_FEDERATION_PORT),
            tls_name: ip.to_string(),
            host_header: host_header.to_owned(),
        }),
        (Host::Dns(dns), Some(port)) => Some(Endpoint {
            host: Host::Dns(dns.clone()),
            port,
            tls_name: dns.clone(),
            host_header: host_header.to_owned(),
        }),
        (Host::Dns(_), None) => None,
    }
}

async fn via_srv_or_default(host: &str, host_header: &str, lookup: &impl Lookup) -> Vec<Endpoint> {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        let mut records = lookup.srv(&format!("{service}.{host}")).await;
        // A target of "." means "no service here" (RFC 2782); such records are skipped.
        records.retain(|r| !r.target.trim_end_matches('.').is_empty());
        if records.is_empty() {
            continue;
        }
        // Lowest priority first; among equals, the heaviest first (deterministic, no random draw).
        records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
        return records
            .into_iter()
            .map(|r| Endpoint {
                host: Host::Dns(r.target.trim_end_matches('.').to_owned()),
                port: r.port,
                tls_name: host.to_owned(),
                host_header: host_header.to_owned(),
            })
            .collect();
    }
    vec![default_port(host, host_header)]
}

fn default_port(host: &str, host_header: &str) -> Endpoint {
    Endpoint {
        host: Host::Dns(host.to_owned()),
        port: DEFAULT_FEDERATION_PORT,
        tls_name: host.to_owned(),
        host_header: host_header.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    /// Canned answers; records every question so tests can assert what was (not) asked.
    #[derive(Default)]
    struct Canned {
        well_known: HashMap<&'static str, &'static str>,
        srv: HashMap<&'static str, Vec<SrvRecord>>,
        asked: Mutex<Vec<String>>,
    }

    impl Lookup for Canned {
        async fn well_known(&self, host: &str) -> Option<ServerName> {
            self.asked
                .lock()
                .unwrap()
                .push(format!("well-known {host}"));
            self.well_known
                .get(host)
                .map(|m| ServerName::parse(m).unwrap())
        }
        async fn srv(&self, name: &str) -> Vec<SrvRecord> {
            self.asked.lock().unwrap().push(format!("srv {name}"));
            self.srv.get(name).cloned().unwrap_or_default()
        }
    }

    fn srv(priority: u16, weight: u16, target: &str, port: u16) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            target: target.into(),
            port,
        }
    }

    fn endpoint(host: &str, port: u16, tls: &str, header: &str) -> Endpoint {
        let host = match host.parse() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Dns(host.into()),
        };
        Endpoint {
            host,
            port,
            tls_name: tls.into(),
            host_header: header.into(),
        }
    }

    fn check(lookup: &Canned, name: &str, want: Vec<Endpoint>, asked: &[&str]) {
        let name = ServerName::parse(name).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(discover(&name, lookup));
        assert_eq!(got, want, "{name}");
        assert_eq!(*lookup.asked.lock().unwrap(), asked, "{name}");
    }

    #[test]
    fn ip_literals_and_explicit_ports_need_no_lookup() {
        check(
            &Canned::default(),
            "1.2.3.4",
            vec![endpoint("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")],
            &[],
        );
        check(
            &Canned::default(),
            "[::1]:99",
            vec![endpoint("::1", 99, "::1", "[::1]:99")],
            &[],
        );
        check(
            &Canned::default(),
            "example.org:443",
            vec![endpoint(
                "example.org",
                443,
                "example.org",
                "example.org:443",
            )],
            &[],
        );
    }

    #[test]
    fn localhost_is_never_looked_up() {
        check(
            &Canned::default(),
            "localhost",
            vec![endpoint("localhost", 8448, "localhost", "localhost")],
            &[],
        );
    }

    #[test]
    fn well_known_delegation_with_port() {
        let lookup = Canned {
            well_known: HashMap::from([("example.org", "matrix.example.org:443")]),
            ..Default::default()
        };
        check(
            &lookup,
            "example.org",
            vec![endpoint(
                "matrix.example.org",
                443,
                "matrix.example.org",
                "matrix.example.org:443",
            )],
            &["well-known example.org"],
        );
    }

    #[test]
    fn well_known_delegation_then_srv_of_the_delegated_name() {
        let lookup = Canned {
            well_known: HashMap::from([("example.org", "matrix.example.org")]),
            srv: HashMap::from([(
                "_matrix-fed._tcp.matrix.example.org",
                vec![
                    srv(10, 5, "b.example.net.", 8449),
                    srv(5, 1, "a.example.net.", 8448),
                ],
            )]),
            ..Default::default()
        };
        check(
            &lookup,
            "example.org",
            vec![
                endpoint(
                    "a.example.net",
                    8448,
                    "matrix.example.org",
                    "matrix.example.org",
                ),
                endpoint(
                    "b.example.net",
                    8449,
                    "matrix.example.org",
                    "matrix.example.org",
                ),
            ],
            &[
                "well-known example.org",
                "srv _matrix-fed._tcp.matrix.example.org",
            ],
        );
    }

    #[test]
    fn well_known_delegation_without_srv_uses_8448() {
        let lookup = Canned {
            well_known: HashMap::from([("example.org", "matrix.example.org")]),
            ..Default::default()
        };
        check(
            &lookup,
            "example.org",
            vec![endpoint(
                "matrix.example.org",
                8448,
                "matrix.example.org",
                "matrix.example.org",
            )],
            &[
                "well-known example.org",
                "srv _matrix-fed._tcp.matrix.example.org",
                "srv _matrix._tcp.matrix.example.org",
            ],
        );
    }

    #[test]
    fn srv_keeps_the_original_name_for_tls() {
        let lookup = Canned {
            srv: HashMap::from([(
                "_matrix._tcp.example.org",
                vec![srv(0, 0, "fed.example.net", 443)],
            )]),
            ..Default::default()
        };
        check(
            &lookup,
            "example.org",
            vec![endpoint(
                "fed.example.net",
                443,
                "example.org",
                "example.org",
            )],
            &[
                "well-known example.org",
                "srv _matrix-fed._tcp.example.org",
                "srv _matrix._tcp.example.org",
            ],
        );
    }

    #[test]
    fn srv_weights_break_priority_ties_and_dot_means_none() {
        let lookup = Canned {
            srv: HashMap::from([(
                "_matrix-fed._tcp.example.org",
                vec![
                    srv(1, 1, "light.example", 1),
                    srv(1, 9, "heavy.example", 2),
                    srv(0, 0, ".", 3),
                ],
            )]),
            ..Default::default()
        };
        let name = ServerName::parse("example.org").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(discover(&name, &lookup));
        let hosts: Vec<String> = got.iter().map(|e| e.host.to_string()).collect();
        assert_eq!(hosts, ["heavy.example", "light.example"]);
    }

    #[test]
    fn nothing_found_falls_back_to_8448() {
        check(
            &Canned::default(),
            "example.org",
            vec![endpoint("example.org", 8448, "example.org", "example.org")],
            &[
                "well-known example.org",
                "srv _matrix-fed._tcp.example.org",
                "srv _matrix._tcp.example.org",
            ],
        );
    }
}
