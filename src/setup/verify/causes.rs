//! Root causes: one problem often fails several checks (a port the router does not forward fails
//! the media check and both TURN checks on it; a name that does not resolve fails every request to
//! it). Each failed check carries the causes its observations show ([`Cause`], attached where the
//! observations are gathered); [`group`] turns the causes shared by more than one check into one
//! explanation with one fix, naming the checks it explains. Pure functions, no IO.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::evaluate::{Proto, PublicProbe, TurnPublic};
use super::{Check, Status};
use crate::setup::fetch::{FetchError, Fetched};
use crate::turn::client::{ProbeError, ProbeReport};

/// Why a check did not pass, as far as its observations show.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// The public address could not be detected, so nothing was probed there.
    PublicIpUnknown,
    /// `proto port` answers on this machine's LAN address but not at the public address: the
    /// router does not forward it, or it lacks hairpin NAT.
    NotForwarded {
        proto: &'static str,
        port: u16,
        public_ip: IpAddr,
        lan_ip: IpAddr,
    },
    /// `proto port` does not answer on this machine's own LAN address: a firewall here, or
    /// nothing listens there.
    NotAnsweringOnLan {
        proto: &'static str,
        port: u16,
        lan_ip: IpAddr,
    },
    /// A host name the checks request does not resolve.
    NameUnresolved { host: String },
    /// Nothing answers at an address the checks connect to.
    Unreachable { addr: SocketAddr },
    /// The certificate a host presents is not trusted.
    UntrustedCertificate { host: String },
}

/// One root cause and the checks it explains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootCause {
    pub title: String,
    pub detail: String,
    pub fix: String,
    /// The ids of the checks it explains, in the order they were given.
    pub checks: Vec<&'static str>,
}

/// The causes more than one not-passing check shares, the one explaining most checks first.
/// Ports the router does not forward are one cause (one fix: the port table), as are ports this
/// machine does not answer on; the others group by host or address.
pub fn group(checks: &[Check]) -> Vec<RootCause> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Key {
        PublicIpUnknown,
        NotForwarded,
        NotAnswering,
        Name(String),
        Addr(SocketAddr),
        Certificate(String),
    }
    let mut groups: BTreeMap<Key, (Vec<&Cause>, Vec<&'static str>)> = BTreeMap::new();
    for check in checks.iter().filter(|c| c.status != Status::Pass) {
        for cause in &check.causes {
            let key = match cause {
                Cause::PublicIpUnknown => Key::PublicIpUnknown,
                Cause::NotForwarded { .. } => Key::NotForwarded,
                Cause::NotAnsweringOnLan { .. } => Key::NotAnswering,
                Cause::NameUnresolved { host } => Key::Name(host.to_ascii_lowercase()),
                Cause::Unreachable { addr } => Key::Addr(*addr),
                Cause::UntrustedCertificate { host } => Key::Certificate(host.to_ascii_lowercase()),
            };
            let (causes, ids) = groups.entry(key).or_default();
            if !causes.contains(&cause) {
                causes.push(cause);
            }
            if !ids.contains(&check.id) {
                ids.push(check.id);
            }
        }
    }
    let mut found: Vec<RootCause> = groups
        .into_values()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(causes, ids)| explain(&causes, ids))
        .collect();
    found.sort_by_key(|g| std::cmp::Reverse(g.checks.len()));
    found
}

/// The words for one group of causes of the same kind.
fn explain(causes: &[&Cause], checks: Vec<&'static str>) -> RootCause {
    let ports = |causes: &[&Cause]| -> String {
        let mut listed: Vec<String> = Vec::new();
        for cause in causes {
            if let Cause::NotForwarded { proto, port, .. }
            | Cause::NotAnsweringOnLan { proto, port, .. } = cause
            {
                let entry = format!("{proto} {port}");
                if !listed.contains(&entry) {
                    listed.push(entry);
                }
            }
        }
        listed.join(", ")
    };
    let (title, detail, fix) = match causes[0] {
        Cause::PublicIpUnknown => (
            "The public address is unknown".to_owned(),
            "No STUN server answered, so no check could probe this machine at its public \
             address."
                .to_owned(),
            "Allow outgoing UDP to the STUN servers (Settings), or enter the public address in \
             the wizard's network step (your router's status page shows its internet/WAN \
             address)."
                .to_owned(),
        ),
        Cause::NotForwarded {
            public_ip, lan_ip, ..
        } => {
            let ports = ports(causes);
            (
                format!("Not reachable at the public address: {ports}"),
                format!(
                    "These ports answer on the LAN at {lan_ip} but not at the public address \
                     {public_ip}. Either the router does not forward them, or it forwards them \
                     but lacks hairpin NAT (then this machine cannot reach itself through the \
                     public address, and only a test from outside can tell: the test call from \
                     a phone on mobile data)."
                ),
                format!(
                    "Forward {ports} on the router to {lan_ip}, each to the same port number \
                     (the port table on the Configuration page lists them), and allow them in \
                     this machine's firewall."
                ),
            )
        }
        Cause::NotAnsweringOnLan { lan_ip, .. } => {
            let ports = ports(causes);
            (
                format!("Blocked on this machine: {ports}"),
                format!(
                    "rtcbox does not answer on {ports} at its own LAN address {lan_ip}: a \
                     firewall on this machine blocks them, or rtcbox does not listen on that \
                     address."
                ),
                format!(
                    "Allow {ports} in this machine's firewall (DSM: Control Panel → Security → \
                     Firewall → Edit Rules → Create), and check the LAN address ({lan_ip}) in \
                     the wizard's network step."
                ),
            )
        }
        Cause::NameUnresolved { host } => (
            format!("{host} does not resolve"),
            format!("The name {host} has no address in DNS (as this machine's resolver sees it)."),
            format!(
                "Create a DNS record for {host} pointing to your public address. If it exists \
                 already, it may not have propagated yet, or this machine uses a DNS server that \
                 does not know it."
            ),
        ),
        Cause::Unreachable { addr } => (
            format!("Nothing answers at {addr}"),
            format!(
                "Connections to {addr} were refused or timed out: nothing listens there, or a \
                 firewall or the router drops them."
            ),
            format!(
                "Check that the reverse proxy (or rtcbox) runs and listens on port {port}, that \
                 the router forwards TCP {port} to it, and that no firewall blocks it.",
                port = addr.port()
            ),
        ),
        Cause::UntrustedCertificate { host } => (
            format!("The certificate for {host} is not trusted"),
            format!("Browsers and apps refuse the certificate {host} presents."),
            format!(
                "Serve a certificate for {host} from a public CA (Let's Encrypt): in the reverse \
                 proxy, or with rtcbox's own HTTPS (the wizard's HTTPS step)."
            ),
        ),
    };
    RootCause {
        title,
        detail,
        fix,
        checks,
    }
}

/// The cause behind a failed HTTP(S) request, if it is one that repeats across checks.
pub fn of_fetch(result: &Result<Fetched, FetchError>) -> Option<Cause> {
    match result.as_ref().err()? {
        FetchError::Dns { host, .. } => Some(Cause::NameUnresolved { host: host.clone() }),
        FetchError::Refused { addr } | FetchError::ConnectTimeout { addr } => {
            Some(Cause::Unreachable { addr: *addr })
        }
        FetchError::Certificate { host, .. } => {
            Some(Cause::UntrustedCertificate { host: host.clone() })
        }
        _ => None,
    }
}

/// The cause behind a media port probe's failure: STUN at `public`, and on the LAN.
pub fn of_media(
    proto: Proto,
    port: u16,
    public: &PublicProbe,
    lan: (SocketAddr, &Result<SocketAddr, String>),
) -> Option<Cause> {
    let proto = match proto {
        Proto::Udp => "UDP",
        Proto::Tcp => "TCP",
    };
    let (lan_addr, lan_result) = lan;
    match (public, lan_result) {
        (_, Err(_)) => Some(Cause::NotAnsweringOnLan {
            proto,
            port,
            lan_ip: lan_addr.ip(),
        }),
        (PublicProbe::Unknown(_), Ok(_)) => Some(Cause::PublicIpUnknown),
        (PublicProbe::Probed(addr, Err(_)), Ok(_)) if addr.ip() != lan_addr.ip() => {
            Some(Cause::NotForwarded {
                proto,
                port,
                public_ip: addr.ip(),
                lan_ip: lan_addr.ip(),
            })
        }
        _ => None,
    }
}

/// The cause behind a TURN probe's failure (`proto` as the router forwards it).
pub fn of_turn(proto: &'static str, public: &TurnPublic, lan: &ProbeReport) -> Option<Cause> {
    // Something that speaks TURN answered (even with a refusal): the port is reachable.
    let reached = |report: &ProbeReport| {
        matches!(
            report.outcome,
            Ok(_) | Err(ProbeError::Untrusted(_) | ProbeError::Rejected { .. })
        )
    };
    let silent = |report: &ProbeReport| {
        matches!(
            report.outcome,
            Err(ProbeError::Refused | ProbeError::ConnectTimeout | ProbeError::NoAnswer)
        )
    };
    let port = lan.target.port();
    let lan_ip = lan.target.ip();
    if silent(lan) {
        return Some(Cause::NotAnsweringOnLan {
            proto,
            port,
            lan_ip,
        });
    }
    match public {
        TurnPublic::Unknown(_) => Some(Cause::PublicIpUnknown),
        TurnPublic::Probed(report)
            if report.target.ip() != lan_ip && silent(report) && reached(lan) =>
        {
            Some(Cause::NotForwarded {
                proto,
                port,
                public_ip: report.target.ip(),
                lan_ip,
            })
        }
        _ => None,
    }
}
