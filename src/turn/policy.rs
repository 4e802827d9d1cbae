//! Which peers a TURN allocation may relay to. A TURN credential must never become a way into
//! the machine's own services or the LAN behind it: peers on loopback, private, CGNAT,
//! link-local, multicast, reserved or unspecified addresses are refused, also when written as
//! IPv4 inside IPv6 (mapped, compatible, translated `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`; local-use NAT64 `64:ff9b:1::/48` and Teredo `2001::/32` are refused whole), and so is
//! every address of this host except the SFU's own media ports. An operator allow-list of CIDRs
//! (`RTCBOX_TURN_ALLOW_PEERS`; tests allow loopback) overrides the refusals.
//!
//! Credentials the SFU mints for its participants are narrower still: they relay only to the
//! SFU's media sockets ([`RelayPolicy::check_for`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::net::{Cidr, Special, canonical, special};
use crate::turn::credentials::CredentialKind;

/// Why a peer is refused; counted per reason for the admin panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Denied {
    /// A special-purpose address (also when written as IPv4 inside IPv6).
    Special(Special),
    /// One of this host's own addresses, on a port that is not the SFU's.
    ThisHost,
    /// Participant credentials, and a peer that is not one of the SFU's media sockets.
    NotSfu,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Special(class) => class.fmt(f),
            Denied::ThisHost => f.write_str("this host's own address"),
            Denied::NotSfu => f.write_str("participant credentials relay only to the SFU"),
        }
    }
}

/// The relay rules of one running server.
#[derive(Clone, Debug, Default)]
pub struct RelayPolicy {
    /// Blocks the operator explicitly allows.
    pub allow: Vec<Cidr>,
    /// This host's addresses.
    pub host_addresses: Vec<IpAddr>,
    /// The SFU's media sockets: relaying to them is the point of the embedded TURN server.
    pub sfu_media: Vec<SocketAddr>,
}

impl RelayPolicy {
    /// `Ok` when an allocation may send to `peer`.
    pub fn check(&self, peer: SocketAddr) -> Result<(), Denied> {
        let ip = canonical(peer.ip());
        if self.allow.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        if self.is_sfu(peer) {
            return Ok(());
        }
        if let Some(class) = special(ip) {
            return Err(Denied::Special(class));
        }
        if self.host_addresses.iter().any(|own| canonical(*own) == ip) {
            return Err(Denied::ThisHost);
        }
        Ok(())
    }

    /// `Ok` when an allocation made with credentials of `kind` may send to `peer`: participants
    /// only to the SFU's media sockets (exact address and port), everyone else by
    /// [`RelayPolicy::check`].
    pub fn check_for(&self, kind: CredentialKind, peer: SocketAddr) -> Result<(), Denied> {
        match kind {
            CredentialKind::Rest => self.check(peer),
            CredentialKind::Participant if self.is_sfu(peer) => Ok(()),
            CredentialKind::Participant => Err(Denied::NotSfu),
        }
    }

    fn is_sfu(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        self.sfu_media
            .iter()
            .any(|sfu| canonical(sfu.ip()) == ip && sfu.port() == peer.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(raw: &str) -> SocketAddr {
        match raw.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 40000),
            Err(_) => raw.parse().unwrap(),
        }
    }

    #[test]
    fn the_denial_matrix() {
        let policy = RelayPolicy::default();
        let check = |raw: &str, expected: Result<(), Denied>| {
            assert_eq!(policy.check(peer(raw)), expected, "{raw}");
        };
        use Special::*;
        for (raw, reason) in [
            ("0.0.0.0", Unspecified),
            ("::", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("::127.0.0.1", Loopback),
            ("64:ff9b::7f00:1", Loopback),
            ("2002:7f00:1::", Loopback),
            ("2002:7f00:1::5", Loopback),
            ("10.0.0.1", Private),
            ("172.16.5.4", Private),
            ("192.168.1.1", Private),
            ("::ffff:192.168.1.1", Private),
            ("64:ff9b::c0a8:101", Private),
            ("2002:c0a8:101::", Private),
            ("fd00::1", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.254", SharedCgnat),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("::ffff:169.254.169.254", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Multicast),
            ("ff02::1", Multicast),
            ("0.1.2.3", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("2001:db8::1", Reserved),
            ("fec0::1", Reserved),
            ("100::1", Reserved),
            ("2002:0:0::", Unspecified),
            ("::ffff:0:7f00:1", Loopback),
            ("::ffff:0:a00:1", Private),
            ("64:ff9b:1::7f00:1", Private),
            ("64:ff9b:1:7f00:1::", Private),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Reserved),
            ("2001::1", Reserved),
            ("2001:2::1", Reserved),
            ("3fff::1", Reserved),
            ("5f00::1", Reserved),
            ("100:0:0:1::1", Reserved),
            ("192.88.99.1", Reserved),
        ] {
            check(raw, Err(Denied::Special(reason)));
        }
        for public in [
            "1.1.1.1",
            "8.8.4.4",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::",
        ] {
            check(public, Ok(()));
        }
    }

    #[test]
    fn this_host_is_refused_except_the_sfu_media_ports() {
        let policy = RelayPolicy {
            allow: Vec::new(),
            host_addresses: vec![
                "81.2.69.160".parse().unwrap(),
                "2606:4700::7".parse().unwrap(),
            ],
            sfu_media: vec!["81.2.69.160:8882".parse().unwrap()],
        };
        assert_eq!(policy.check(peer("81.2.69.160:8882")), Ok(()));
        assert_eq!(policy.check(peer("[::ffff:81.2.69.160]:8882")), Ok(()));
        assert_eq!(
            policy.check(peer("81.2.69.160:8089")),
            Err(Denied::ThisHost)
        );
        assert_eq!(policy.check(peer("81.2.69.160:22")), Err(Denied::ThisHost));
        assert_eq!(
            policy.check(peer("[2606:4700::7]:443")),
            Err(Denied::ThisHost)
        );
        assert_eq!(policy.check(peer("1.1.1.1:8882")), Ok(()));
    }

    #[test]
    fn participants_relay_only_to_the_sfu() {
        let policy = RelayPolicy {
            allow: vec![Cidr::parse("0.0.0.0/0").unwrap()],
            host_addresses: vec!["81.2.69.160".parse().unwrap()],
            sfu_media: vec!["81.2.69.160:8882".parse().unwrap()],
        };
        let participant = |raw: &str| policy.check_for(CredentialKind::Participant, peer(raw));
        assert_eq!(participant("81.2.69.160:8882"), Ok(()));
        assert_eq!(participant("[::ffff:81.2.69.160]:8882"), Ok(()));
        // Not another port of the SFU's host, not the internet, whatever the allow-list says.
        assert_eq!(participant("81.2.69.160:8883"), Err(Denied::NotSfu));
        assert_eq!(participant("1.1.1.1:8882"), Err(Denied::NotSfu));
        assert_eq!(
            policy.check_for(CredentialKind::Rest, peer("1.1.1.1:8882")),
            Ok(())
        );
        assert_eq!(
            Denied::NotSfu.to_string(),
            "participant credentials relay only to the SFU"
        );
    }

    #[test]
    fn the_allow_list_overrides_and_parses_strictly() {
        let policy = RelayPolicy {
            allow: vec![
                Cidr::parse("127.0.0.0/8").unwrap(),
                Cidr::parse("fd00::/8").unwrap(),
                Cidr::parse("192.168.1.50").unwrap(),
            ],
            ..RelayPolicy::default()
        };
        assert_eq!(policy.check(peer("127.0.0.1:3480")), Ok(()));
        assert_eq!(policy.check(peer("[::ffff:127.0.0.1]:3480")), Ok(()));
        assert_eq!(policy.check(peer("[fd12::1]:1")), Ok(()));
        assert_eq!(policy.check(peer("192.168.1.50:1")), Ok(()));
        assert_eq!(
            policy.check(peer("192.168.1.51:1")),
            Err(Denied::Special(Special::Private))
        );
        assert_eq!(
            policy.check(peer("[::1]:1")),
            Err(Denied::Special(Special::Loopback))
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "banana/8",
            "10.0.0/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Cidr::parse(" 10.1.0.0/16 ").unwrap().to_string(),
            "10.1.0.0/16"
        );
        let any = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(any.contains("8.8.8.8".parse().unwrap()));
        assert!(
            !any.contains("::8".parse::<IpAddr>().unwrap())
                || canonical("::8".parse().unwrap()).is_ipv4()
        );
    }
}
