//! Network helpers shared across services.
//!
//! - Address classification for everything that connects out or relays on someone's behalf (the
//!   OpenID check today, TURN later): a request from the internet must not be able to make us
//!   talk to loopback, the LAN or other special-purpose ranges unless the operator allowed it.
//! - [`dns`]: name resolution without the C library (the release binary is static).
//! - [`explain`]: socket errors in words that say what to check.
//! - [`stun`]: the STUN Binding codec (sans-IO) the media ports answer with and the setup checks
//!   probe with.

pub mod dns;
pub mod explain;
pub mod stun;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True for globally routable unicast addresses; false for loopback, private (RFC 1918, ULA),
/// link-local, CGNAT, unspecified, multicast, broadcast, documentation and reserved ranges, and
/// for IPv6 forms that carry an arbitrary IPv4 address (compatible, NAT64, 6to4) whatever it is.
/// IPv4-mapped addresses are judged by the IPv4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() && embedded_ipv4(v6).is_some() => false,
        _ => special(canonical(ip)).is_none(),
    }
}

/// A special-purpose address class: where traffic on someone else's behalf must not go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Special {
    Unspecified,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    Multicast,
    Reserved,
}

impl std::fmt::Display for Special {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Special::Unspecified => "unspecified address",
            Special::Loopback => "loopback address",
            Special::Private => "private (LAN) address",
            Special::SharedCgnat => "carrier-grade NAT address (100.64.0.0/10)",
            Special::LinkLocal => "link-local address",
            Special::Multicast => "multicast or broadcast address",
            Special::Reserved => "reserved or documentation address",
        })
    }
}

/// The special class of `ip` as written (see [`canonical`] for IPv4 inside IPv6), or `None`
/// for globally routable unicast.
pub fn special(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// The IPv4 address an IPv6 address carries: mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`
/// (not `::` and `::1`), NAT64 `64:ff9b::a.b.c.d` or 6to4 `2002:aabb:ccdd::/48`.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        Some(mapped)
    } else if (s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1))
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4])
    {
        // Compatible, or NAT64: the IPv4 address is the last 32 bits.
        Some(v4(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(v4(s[1], s[2]))
    } else {
        None
    }
}

/// IPv4 written inside IPv6 becomes the IPv4 address it carries ([`embedded_ipv4`]).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<Special> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() {
        Some(Special::Unspecified)
    } else if ip.is_loopback() {
        Some(Special::Loopback)
    } else if ip.is_private() {
        Some(Special::Private)
    } else if a == 100 && (64..128).contains(&b) {
        Some(Special::SharedCgnat) // RFC 6598
    } else if ip.is_link_local() {
        Some(Special::LinkLocal)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some(Special::Multicast)
    } else if a == 0 // "this network"
        || a >= 240 // reserved
        || ip.is_documentation()
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b))
    // benchmarking, RFC 2544
    {
        Some(Special::Reserved)
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<Special> {
    let s = ip.segments();
    if ip.is_unspecified() {
        Some(Special::Unspecified)
    } else if ip.is_loopback() {
        Some(Special::Loopback)
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some(Special::Private) // unique local, fc00::/7
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(Special::LinkLocal)
    } else if ip.is_multicast() {
        Some(Special::Multicast)
    } else if (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
    // discard-only
    {
        Some(Special::Reserved)
    } else {
        None
    }
}

/// This host's addresses that another machine could reach: every interface address except
/// loopback, link-local, unspecified and multicast; 127.0.0.1 when there is none.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let check = |ip: &str, public: bool| {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        };
        for private in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc12::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "::127.0.0.1",
        ] {
            check(private, false);
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            check(public, true);
        }
    }
}
