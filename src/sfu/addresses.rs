//! Where the SFU's media sockets are advertised, and which advertised address a datagram reached.
//!
//! str0m's ICE-lite agent answers a connectivity check only when the datagram's destination is
//! one of its host candidates, so the driver must name, for every datagram, the advertised
//! address it was sent to. The kernel only knows the socket.
//!
//! - **Fixed** (`RTCBOX_NODE_IP`): each socket has exactly one advertised address; every datagram
//!   it receives counts as sent there.
//! - **Automatic** (the default): each socket advertises its own address, and one of them, the
//!   primary (the address the host's default route leaves from: the one a router forwards to),
//!   also stands for the public IP the STUN servers report ([`crate::net::public_ip`]). A
//!   datagram from an internet address that reached the primary socket came through the
//!   router's port forward, so it counts as sent to the public address; anything else as sent to
//!   the socket's own. When the public IP changes, only this table and the candidates change: no
//!   socket is rebound.

use std::net::{IpAddr, SocketAddr};

/// The advertised addresses of the media sockets (see the module documentation).
#[derive(Clone, Debug)]
pub struct Advertised {
    /// Per UDP socket, in the driver's order: the address it advertises.
    udp: Vec<SocketAddr>,
    /// Host candidates for passive ICE-TCP (one listener).
    tcp: Vec<SocketAddr>,
    /// The sockets' own addresses stand for a public IP (automatic mode).
    automatic: bool,
    /// The socket the router forwards to, by the host's default route (automatic mode).
    primary: Option<usize>,
    public: Option<IpAddr>,
}

impl Advertised {
    /// `udp[i]` is socket `i`'s advertised address; `route_source` is where the host's
    /// default route leaves from, when known.
    pub fn new(
        udp: Vec<SocketAddr>,
        tcp: Vec<SocketAddr>,
        automatic: bool,
        route_source: Option<IpAddr>,
    ) -> Self {
        let primary = automatic
            .then(|| {
                route_source
                    .and_then(|ip| udp.iter().position(|a| a.ip() == ip))
                    .or_else(|| udp.iter().position(|a| !a.ip().is_loopback()))
                    .or(if udp.is_empty() { None } else { Some(0) })
            })
            .flatten();
        Advertised {
            udp,
            tcp,
            automatic,
            primary,
            public: None,
        }
    }

    /// The public IP in use, in automatic mode.
    pub fn public(&self) -> Option<IpAddr> {
        self.public
    }

    /// Records the public IP; `true` when the advertised candidates changed. Ignored in fixed
    /// mode, and for an address of another family than the primary socket's.
    pub fn set_public(&mut self, ip: IpAddr) -> bool {
        let Some(primary) = self.primary.and_then(|i| self.udp.get(i)) else {
            return false;
        };
        if !self.automatic || primary.is_ipv4() != ip.to_canonical().is_ipv4() {
            return false;
        }
        let before = self.udp_candidates();
        self.public = Some(ip.to_canonical());
        before != self.udp_candidates()
    }

    /// The public address on the primary socket's port, unless a socket advertises it anyway
    /// (a host that has its public IP on an interface).
    fn public_udp(&self) -> Option<SocketAddr> {
        let port = self.udp.get(self.primary?)?.port();
        let addr = SocketAddr::new(self.public?, port);
        (!self.udp.contains(&addr)).then_some(addr)
    }

    fn public_tcp(&self) -> Option<SocketAddr> {
        let port = self.tcp.first()?.port();
        let addr = SocketAddr::new(self.public?, port);
        (!self.tcp.contains(&addr)).then_some(addr)
    }

    /// The UDP host candidates: every socket's address, then the public one.
    pub fn udp_candidates(&self) -> Vec<SocketAddr> {
        let mut out = self.udp.clone();
        out.extend(self.public_udp());
        out
    }

    /// The passive ICE-TCP host candidates, the public one last.
    pub fn tcp_candidates(&self) -> Vec<SocketAddr> {
        let mut out = self.tcp.clone();
        out.extend(self.public_tcp());
        out
    }

    /// The advertised address a datagram from `source` that socket `socket` received was sent
    /// to.
    pub fn udp_destination(&self, socket: usize, source: SocketAddr) -> SocketAddr {
        let own = self.udp.get(socket).copied().unwrap_or(source);
        match self.public_udp() {
            Some(public) if Some(socket) == self.primary && crate::net::is_public(source.ip()) => {
                public
            }
            _ => own,
        }
    }

    /// The advertised address an ICE-TCP frame from `remote` on a connection accepted as
    /// `local` was sent to.
    pub fn tcp_destination(&self, local: SocketAddr, remote: SocketAddr) -> SocketAddr {
        match self.public_tcp() {
            Some(public) if crate::net::is_public(remote.ip()) => public,
            _ => local,
        }
    }

    /// The socket a datagram from the advertised address `source` leaves by.
    pub fn socket_for(&self, source: SocketAddr) -> Option<usize> {
        if Some(source) == self.public_udp() {
            return self.primary;
        }
        self.udp.iter().position(|a| *a == source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn automatic() -> Advertised {
        Advertised::new(
            vec![addr("172.17.0.1:8882"), addr("192.168.1.10:8882")],
            vec![addr("172.17.0.1:8881"), addr("192.168.1.10:8881")],
            true,
            Some("192.168.1.10".parse().unwrap()),
        )
    }

    #[test]
    fn automatic_adds_the_public_address_and_follows_it() {
        let mut a = automatic();
        assert_eq!(a.udp_candidates().len(), 2);
        assert!(a.set_public("203.0.113.7".parse().unwrap()));
        assert_eq!(a.udp_candidates().last(), Some(&addr("203.0.113.7:8882")));
        assert_eq!(a.tcp_candidates().last(), Some(&addr("203.0.113.7:8881")));
        // The same answer again changes nothing.
        assert!(!a.set_public("203.0.113.7".parse().unwrap()));
        // An internet client came through the router to the primary (LAN) socket.
        let internet = addr("9.9.9.9:50000");
        assert_eq!(a.udp_destination(1, internet), addr("203.0.113.7:8882"));
        // A LAN client reached the socket directly; the other socket is never the public one.
        let lan = addr("192.168.1.33:50000");
        assert_eq!(a.udp_destination(1, lan), addr("192.168.1.10:8882"));
        assert_eq!(a.udp_destination(0, internet), addr("172.17.0.1:8882"));
        assert_eq!(a.socket_for(addr("203.0.113.7:8882")), Some(1));
        assert_eq!(a.socket_for(addr("172.17.0.1:8882")), Some(0));
        assert_eq!(
            a.tcp_destination(addr("192.168.1.10:8881"), internet),
            addr("203.0.113.7:8881")
        );
        // The address moves: the old one is no longer advertised or answered.
        assert!(a.set_public("198.51.100.9".parse().unwrap()));
        assert_eq!(a.udp_candidates().last(), Some(&addr("198.51.100.9:8882")));
        assert_eq!(a.socket_for(addr("203.0.113.7:8882")), None);
        assert_eq!(a.udp_destination(1, internet), addr("198.51.100.9:8882"));
    }

    #[test]
    fn a_public_ip_the_host_has_is_not_doubled() {
        let mut a = Advertised::new(
            vec![addr("203.0.113.7:8882")],
            vec![addr("203.0.113.7:8881")],
            true,
            None,
        );
        assert!(!a.set_public("203.0.113.7".parse().unwrap()));
        assert_eq!(a.udp_candidates(), vec![addr("203.0.113.7:8882")]);
        assert_eq!(a.public(), Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn fixed_mode_ignores_detection_and_other_families() {
        let mut fixed = Advertised::new(
            vec![addr("203.0.113.7:8882")],
            vec![addr("203.0.113.7:8881")],
            false,
            None,
        );
        assert!(!fixed.set_public("198.51.100.9".parse().unwrap()));
        assert_eq!(fixed.udp_candidates(), vec![addr("203.0.113.7:8882")]);
        assert_eq!(
            fixed.udp_destination(0, addr("198.51.100.20:1")),
            addr("203.0.113.7:8882")
        );
        let mut a = automatic();
        assert!(!a.set_public("2001:db8::1".parse().unwrap()));
        assert_eq!(a.public(), None);
    }
}
