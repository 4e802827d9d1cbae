//! Network helpers shared across services.
//!
//! - Address classification for everything that connects out or relays on someone's behalf (the
//!   OpenID check today, TURN later): a request from the internet must not be able to make us
//!   talk to loopback, the LAN or other special-purpose ranges unless the operator allowed it.
//! - [`Cidr`]: address blocks in settings.
//! - [`caps`]: per-address and total connection caps for every stream listener.
//! - [`dns`]: name resolution without the C library (the release binary is static).
//! - [`explain`]: socket errors in words that say what to check.
//! - [`stun`]: the STUN Binding codec (sans-IO) the media ports answer with and the setup checks
//!   probe with.

pub mod caps;
mod cidr;
pub mod dns;
pub mod explain;
pub mod public_ip;
pub mod stun;

pub use cidr::Cidr;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True for globally routable unicast addresses; false for loopback, private (RFC 1918, ULA),
/// link-local, CGNAT, unspecified, multicast, broadcast, documentation and reserved ranges (the
/// IANA special-purpose registries, see [`special`]), and for IPv6 forms that carry an arbitrary
/// IPv4 address (compatible, translated, NAT64, 6to4) whatever it is. IPv4-mapped addresses are
/// judged by the IPv4 address they carry.
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
/// for globally routable unicast. Follows the IANA IPv4 and IPv6 special-purpose address
/// registries (entries not "globally reachable"; for IPv4 the whole of 192.0.0.0/24 too), and
/// for IPv6 also the address space registry: only 2000::/3 is global unicast, so anything else
/// that is not one of the named forms (say 5f00::/16, SRv6) is reserved. The forms carrying IPv4
/// are `None` here; callers judge them through [`canonical`] or refuse them ([`is_public`]).
pub fn special(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// The IPv4 address an IPv6 address carries: mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`
/// (not `::` and `::1`), translated `::ffff:0:a.b.c.d` (RFC 2765's SIIT), NAT64
/// `64:ff9b::a.b.c.d` or 6to4 `2002:aabb:ccdd::/48`. Local-use NAT64 (`64:ff9b:1::/48`) and
/// Teredo (`2001::/32`, an obfuscated client address) are not unpacked: [`special`] refuses
/// them whole.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        Some(mapped)
    } else if (s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1))
        || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0)
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4])
    {
        // Compatible, translated or NAT64: the IPv4 address is the last 32 bits.
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
        || (a == 192 && b == 88 && c == 99) // deprecated 6to4 relay anycast, RFC 7526
        || (a == 198 && (18..20).contains(&b))
    // benchmarking, RFC 2544
    {
        Some(Special::Reserved)
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<Special> {
    let bits = ip.to_bits();
    let within = |(network, len): (u128, u32)| bits >> (128 - len) == network >> (128 - len);
    if ip.is_unspecified() {
        Some(Special::Unspecified)
    } else if ip.is_loopback() {
        Some(Special::Loopback)
    } else if embedded_ipv4(ip).is_some() {
        None // judged by the IPv4 address it carries, or refused whole by `is_public`
    } else if within(ULA) || within(LOCAL_NAT64) {
        Some(Special::Private)
    } else if within(LINK_LOCAL) {
        Some(Special::LinkLocal)
    } else if ip.is_multicast() {
        Some(Special::Multicast)
    } else if !within(GLOBAL_UNICAST)
        || (V6_RESERVED.iter().any(|block| within(*block))
            && !V6_GLOBAL_EXCEPTIONS.iter().any(|block| within(*block)))
    {
        Some(Special::Reserved)
    } else {
        None
    }
}

/// IPv6 blocks as (network, prefix length).
type V6Block = (u128, u32);
const ULA: V6Block = (0xfc00 << 112, 7);
/// RFC 8215: IPv4/IPv6 translation inside one operator's network.
const LOCAL_NAT64: V6Block = (0x0064_ff9b_0001 << 80, 48);
const LINK_LOCAL: V6Block = (0xfe80 << 112, 10);
/// RFC 4291 §2.4 and the IANA IPv6 address space: the rest is unassigned or special
/// (discard-only 100::/64, the dummy prefix 100:0:0:1::/64, SRv6 SIDs 5f00::/16, site-local
/// fec0::/10...).
const GLOBAL_UNICAST: V6Block = (0x2000 << 112, 3);
/// Special-purpose blocks inside 2000::/3 that are not globally reachable.
const V6_RESERVED: [V6Block; 3] = [
    (0x2001 << 112, 23),     // IETF protocol assignments, Teredo 2001::/32 among them
    (0x2001_0db8 << 96, 32), // documentation
    (0x3fff << 112, 20),     // documentation, RFC 9637
];
/// The registry's globally reachable entries inside 2001::/23 (anycast services).
const V6_GLOBAL_EXCEPTIONS: [V6Block; 7] = [
    ((0x2001_0001 << 96) | 1, 128), // PCP anycast
    ((0x2001_0001 << 96) | 2, 128), // TURN anycast
    ((0x2001_0001 << 96) | 3, 128), // DNS-SD SRP anycast
    (0x2001_0003 << 96, 32),        // AMT
    (0x2001_0004_0112 << 80, 48),   // AS112-v6
    (0x2001_0020 << 96, 28),        // ORCHIDv2
    (0x2001_0030 << 96, 28),        // Drone Remote ID
];

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
            // IPv4-translated (SIIT), whatever it carries
            "::ffff:0:7f00:1",
            "::ffff:0:101:101",
            // local-use NAT64, RFC 8215, with the IPv4 address at any of its positions
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:7f00:1::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            // Teredo, and the rest of the IETF protocol assignments
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:1::4",
            "2001:1ff:ffff::1",
            "192.88.99.1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "100::1",
            "100:0:0:1::1",
            "5f00::1",
            "fec0::1",
            "4000::1",
            "1::1",
        ] {
            check(private, false);
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.88.98.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "2001:200::1",
            "2001:1::1",
            "2001:1::2",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:30::1",
            "2620:4f:8000::1",
            "3fff:1000::1",
            "2000::1",
            "3ffe:ffff::1",
        ] {
            check(public, true);
        }
    }

    #[test]
    fn forms_carrying_ipv4_are_judged_by_it() {
        let check = |ip: &str, carried: Option<&str>, class: Option<Special>| {
            let ip: IpAddr = ip.parse().unwrap();
            let carried: Option<IpAddr> = carried.map(|c| c.parse().unwrap());
            assert_eq!(
                canonical(ip),
                carried.unwrap_or(ip),
                "canonical form of {ip}"
            );
            assert_eq!(special(canonical(ip)), class, "class of {ip}");
        };
        check(
            "::ffff:127.0.0.1",
            Some("127.0.0.1"),
            Some(Special::Loopback),
        );
        check(
            "::ffff:0:127.0.0.1",
            Some("127.0.0.1"),
            Some(Special::Loopback),
        );
        check(
            "::ffff:0:10.0.0.1",
            Some("10.0.0.1"),
            Some(Special::Private),
        );
        check("::ffff:0:0:0", Some("0.0.0.0"), Some(Special::Unspecified));
        check(
            "64:ff9b::192.168.0.1",
            Some("192.168.0.1"),
            Some(Special::Private),
        );
        check(
            "2002:a9fe:a9fe::1",
            Some("169.254.169.254"),
            Some(Special::LinkLocal),
        );
        // Not unpacked, refused whole.
        check("64:ff9b:1::7f00:1", None, Some(Special::Private));
        check(
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            None,
            Some(Special::Reserved),
        );
        check("2606:4700::1111", None, None);
    }
}
