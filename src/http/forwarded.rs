//! Who sent a request: the peer, unless the peer is a reverse proxy the operator trusts
//! (`RTCBOX_TRUSTED_PROXIES`); only then are `X-Forwarded-For` and `X-Forwarded-Proto` believed.
//!
//! Anyone can write these headers, so believing them from any peer would let one client pose as
//! many (and dodge the per-client rate limits) or claim HTTPS. With no trusted proxy (the
//! default) they are ignored and every request counts against its TCP peer.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::net::Cidr;

/// The reverse proxies whose forwarding headers are believed. Routers carry it as a request
/// extension (`axum::Extension`); a request without one trusts nobody. Clones share the list,
/// which the admin panel replaces without a restart ([`TrustedProxies::set`]).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<std::sync::RwLock<Arc<[Cidr]>>>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> Self {
        TrustedProxies(Arc::new(std::sync::RwLock::new(blocks.into())))
    }

    /// Replaces the list for every clone, from the next request on.
    pub fn set(&self, blocks: Vec<Cidr>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = blocks.into();
    }

    fn blocks(&self) -> Arc<[Cidr]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks().iter().any(|block| block.contains(ip))
    }

    /// The client behind `peer`: the peer itself unless it is trusted; then `X-Forwarded-For`
    /// read from the right (each proxy appends the address it saw), skipping trusted proxies,
    /// up to the first address that is not one. An entry that is not an address stops the walk
    /// at the hop that forwarded it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        if !self.trusts(peer) {
            return client;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("?").split(','))
            .collect();
        for entry in entries.into_iter().rev() {
            match parse_entry(entry) {
                Some(ip) => client = ip,
                None => return client,
            }
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }

    /// Whether a trusted proxy says the browser reached it over HTTPS (`X-Forwarded-Proto`,
    /// the nearest proxy's word: the last entry).
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.trusts(peer)
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .next_back()
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }
}

/// An address as proxies write it: bare, or as `[v6]:port`, `v4:port` (some proxies add ports).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// What a request knows about its sender: the client's address (see
/// [`TrustedProxies::client`]) and whether a trusted proxy says it came over HTTPS.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub ip: IpAddr,
    pub forwarded_https: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let trusted = parts
            .extensions
            .get::<TrustedProxies>()
            .cloned()
            .unwrap_or_default();
        Ok(Client {
            ip: trusted.client(peer, &parts.headers),
            forwarded_https: trusted.forwarded_https(peer, &parts.headers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(blocks.iter().map(|b| Cidr::parse(b).unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_client_address() {
        let proxies = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let check = |peer: &str, xff: &[&str], expected: &str| {
            let pairs: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            let got = proxies.client(peer.parse().unwrap(), &headers(&pairs));
            assert_eq!(got.to_string(), expected, "{peer} {xff:?}");
        };
        // Untrusted peers: the header is never read, whatever it says.
        check("192.168.1.5", &["1.1.1.1"], "192.168.1.5");
        check("127.0.0.2", &["1.1.1.1"], "127.0.0.2");
        check("8.8.8.8", &["1.1.1.1"], "8.8.8.8");
        check("::1", &["1.1.1.1"], "::1");
        // A trusted proxy: the rightmost entry that is not itself a trusted proxy.
        check("127.0.0.1", &["1.1.1.1"], "1.1.1.1");
        check("127.0.0.1", &["9.9.9.9, 1.1.1.1"], "1.1.1.1");
        check("127.0.0.1", &["9.9.9.9", "1.1.1.1, 10.1.2.3"], "1.1.1.1");
        check("::ffff:127.0.0.1", &["1.1.1.1"], "1.1.1.1");
        check("127.0.0.1", &["[2606:4700::1]:4711"], "2606:4700::1");
        check("127.0.0.1", &["1.1.1.1:4711"], "1.1.1.1");
        // Only trusted hops: the leftmost one.
        check("127.0.0.1", &["10.0.0.7, 10.0.0.8"], "10.0.0.7");
        // No header, or garbage: the last hop that can be named.
        check("127.0.0.1", &[], "127.0.0.1");
        check("127.0.0.1", &["garbage"], "127.0.0.1");
        check("127.0.0.1", &["1.1.1.1, unknown, 10.0.0.9"], "10.0.0.9");
        check("127.0.0.1", &[""], "127.0.0.1");
        // Nobody trusted (the default).
        let none = TrustedProxies::default();
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            none.client("127.0.0.1".parse().unwrap(), &spoofed),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn https_only_on_a_trusted_proxy_s_word() {
        let proxies = trusted(&["127.0.0.1"]);
        let check = |peer: &str, xfp: &[&str], expected: bool| {
            let pairs: Vec<_> = xfp.iter().map(|v| ("x-forwarded-proto", *v)).collect();
            let got = proxies.forwarded_https(peer.parse().unwrap(), &headers(&pairs));
            assert_eq!(got, expected, "{peer} {xfp:?}");
        };
        check("127.0.0.1", &["https"], true);
        check("127.0.0.1", &[" HTTPS "], true);
        check("127.0.0.1", &["http"], false);
        check("127.0.0.1", &["https, http"], false);
        check("127.0.0.1", &[], false);
        check("192.168.1.9", &["https"], false);
        check("127.0.0.2", &["https"], false);
    }
}
