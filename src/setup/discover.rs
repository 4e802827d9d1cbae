//! What the wizard finds out by itself: the homeserver (client well-known, `/versions`, the
//! Synapse version), this machine's LAN addresses, and its public address (STUN).
//!
//! Nothing here fails: every problem becomes a note in words the admin can act on, and the
//! wizard lets them type what could not be found. The STUN probes are shared with the
//! verification checks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use super::fetch::{Fetched, HttpClient};
use super::model::SynapseVersion;
use crate::matrix::{FederationClient, Host, ServerName};
use crate::net::stun;

/// Public STUN servers asked for this machine's public address, unless the admin sets others.
pub const DEFAULT_STUN_SERVERS: &[&str] = &crate::config::DEFAULT_STUN_SERVERS;
/// One STUN server (or one probed media port) gets this long to answer.
pub const STUN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the wizard learned about a homeserver. Every field may be missing; `notes` say why.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HomeserverInfo {
    pub server_name: String,
    /// The current `/.well-known/matrix/client` object, kept so its other keys survive.
    pub well_known: Option<serde_json::Map<String, Value>>,
    /// Why there is no usable well-known, in words.
    pub well_known_problem: Option<String>,
    /// The client API's base URL, without a trailing slash.
    pub client_base_url: Option<String>,
    /// `versions` from `/_matrix/client/versions`.
    pub versions: Vec<String>,
    /// `unstable_features` from `/_matrix/client/versions`.
    pub unstable_features: BTreeMap<String, bool>,
    pub synapse_version: Option<SynapseVersion>,
    /// What the server says it runs, e.g. `Synapse 1.163.2`.
    pub server_software: Option<String>,
    /// What failed and what it means, one sentence each.
    pub notes: Vec<String>,
}

/// Discovers `server_name`'s homeserver: its client well-known (`https://<host>/.well-known/
/// matrix/client`), its client API (`base_url_override` if given, else the well-known's
/// `m.homeserver.base_url`), the versions and unstable features it advertises, and its Synapse
/// version (the admin API's `server_version`, else federation `/version`).
///
/// Takes at most about 10 s (two rounds of requests of at most 5 s each).
pub async fn homeserver(
    http: &HttpClient,
    federation: &FederationClient,
    server_name: &str,
    base_url_override: Option<&str>,
) -> HomeserverInfo {
    let well_known_url = ServerName::parse(server_name.trim())
        .ok()
        .map(|name| format!("https://{}/.well-known/matrix/client", url_host(&name)));
    homeserver_at(
        http,
        federation,
        server_name,
        well_known_url.as_deref(),
        base_url_override,
    )
    .await
}

/// [`homeserver`] with the well-known's URL given (tests serve it over plain HTTP).
pub(crate) async fn homeserver_at(
    http: &HttpClient,
    federation: &FederationClient,
    server_name: &str,
    well_known_url: Option<&str>,
    base_url_override: Option<&str>,
) -> HomeserverInfo {
    let server_name = server_name.trim();
    let mut info = HomeserverInfo {
        server_name: server_name.to_owned(),
        ..HomeserverInfo::default()
    };
    let (Ok(name), Some(well_known_url)) = (ServerName::parse(server_name), well_known_url) else {
        info.notes.push(format!(
            "'{server_name}' is not a valid server name. It is the part after ':' in your user \
             IDs, e.g. example.org for @alice:example.org."
        ));
        return info;
    };

    let (well_known, federation_version) = tokio::join!(
        http.get(well_known_url, &[("accept", "application/json")]),
        federation.server_version(name.as_str()),
    );
    let well_known_base = match well_known {
        Ok(fetched) => read_well_known(&fetched, well_known_url, &mut info),
        Err(error) => {
            info.well_known_problem =
                Some(format!("{well_known_url} could not be fetched: {error}"));
            None
        }
    };

    let base = match base_url_override.map(trim_url).filter(|b| !b.is_empty()) {
        Some(base) => Some(base),
        None => match well_known_base {
            Some(base) => Some(base),
            None => {
                let guess = format!("https://{}", url_host(&name));
                info.notes.push(format!(
                    "Without a client well-known the homeserver's address is unknown; trying \
                     {guess}. Enter the client API URL (e.g. https://matrix.example.org) if that \
                     is wrong."
                ));
                Some(guess)
            }
        },
    };

    let mut admin_version = None;
    if let Some(base) = base {
        let versions_url = format!("{base}/_matrix/client/versions");
        let admin_url = format!("{base}/_synapse/admin/v1/server_version");
        let (versions, admin) = tokio::join!(
            http.get(&versions_url, &[("accept", "application/json")]),
            http.get(&admin_url, &[("accept", "application/json")]),
        );
        match versions.map_err(|e| e.to_string()).and_then(parse_versions) {
            Ok((versions, unstable)) => {
                info.versions = versions;
                info.unstable_features = unstable;
                info.client_base_url = Some(base);
            }
            Err(problem) => info.notes.push(format!(
                "{versions_url} did not answer as a Matrix client API ({problem}). Check the \
                 homeserver's client URL."
            )),
        }
        admin_version = admin
            .ok()
            .filter(|f| f.status == 200)
            .and_then(|f| f.json_object().ok())
            .and_then(|o| o.get("server_version")?.as_str().map(str::to_owned));
    }

    if let Some(version) = admin_version.as_deref().and_then(SynapseVersion::parse) {
        info.synapse_version = Some(version);
        info.server_software = Some(format!("Synapse {version}"));
        return info;
    }
    match federation_version {
        Ok(software) => {
            info.server_software = Some(
                format!("{} {}", software.name, software.version)
                    .trim()
                    .to_owned(),
            );
            if software.name.eq_ignore_ascii_case("synapse") {
                info.synapse_version = SynapseVersion::parse(&software.version);
                if info.synapse_version.is_none() {
                    info.notes.push(format!(
                        "Synapse reports version '{}', which is not understood; enter the \
                         version by hand.",
                        software.version
                    ));
                }
            } else {
                info.notes.push(format!(
                    "The homeserver runs {}, not Synapse: the generated homeserver.yaml settings \
                     do not apply as they are; set the equivalent options of your server.",
                    software.name
                ));
            }
        }
        Err(error) => info.notes.push(format!(
            "The Synapse version could not be detected (the admin API's server_version is not \
             reachable and federation /version failed: {error}); enter it by hand."
        )),
    }
    info
}

/// Reads the well-known into `info`; returns its `m.homeserver.base_url`.
fn read_well_known(fetched: &Fetched, url: &str, info: &mut HomeserverInfo) -> Option<String> {
    match fetched.status {
        200 => {}
        404 => {
            info.well_known_problem = Some(format!("{url} does not exist (404)."));
            return None;
        }
        status @ 300..=399 => {
            info.well_known_problem = Some(format!(
                "{url} redirects (HTTP {status}) to {}; serve the file directly.",
                fetched.header("location").unwrap_or("nowhere")
            ));
            return None;
        }
        status => {
            info.well_known_problem = Some(format!("{url} answered HTTP {status}."));
            return None;
        }
    }
    let object = match fetched.json_object() {
        Ok(object) => object,
        Err(problem) => {
            info.well_known_problem = Some(format!("{url}: {problem}."));
            return None;
        }
    };
    let base = object
        .get("m.homeserver")
        .and_then(|h| h.get("base_url"))
        .and_then(Value::as_str)
        .map(trim_url)
        .filter(|b| b.starts_with("https://") || b.starts_with("http://"));
    if base.is_none() {
        info.well_known_problem = Some(format!(
            "{url} has no usable m.homeserver.base_url; it will be added."
        ));
    }
    info.well_known = Some(object);
    base
}

/// `{"versions": [...], "unstable_features": {...}}`.
fn parse_versions(fetched: Fetched) -> Result<(Vec<String>, BTreeMap<String, bool>), String> {
    if fetched.status != 200 {
        return Err(format!("HTTP {}", fetched.status));
    }
    let object = fetched.json_object()?;
    let versions: Vec<String> = object
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("no \"versions\" list")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let unstable = object
        .get("unstable_features")
        .and_then(Value::as_object)
        .map(|features| {
            features
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_bool()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok((versions, unstable))
}

/// The server name's host as it goes in a URL (no port; IPv6 bracketed).
fn url_host(name: &ServerName) -> String {
    match name.host() {
        Host::Dns(host) => host.clone(),
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        Host::Ip(ip) => ip.to_string(),
    }
}

fn trim_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// This machine's addresses as candidates for "rtcbox's LAN address": no loopback, link-local,
/// multicast or unspecified; private IPv4 first, then other IPv4, then IPv6 (ULA first);
/// container and VPN interfaces (docker0, br-…, veth…, tailscale…, wg…) last.
pub fn lan_addresses() -> Vec<IpAddr> {
    let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
    rank_addresses(interfaces.iter().map(|i| (i.name.as_str(), i.ip())))
}

/// The most likely LAN address: the first of [`lan_addresses`].
pub fn suggested_lan_ip() -> Option<IpAddr> {
    lan_addresses().into_iter().next()
}

fn rank_addresses<'a>(interfaces: impl Iterator<Item = (&'a str, IpAddr)>) -> Vec<IpAddr> {
    const VIRTUAL: &[&str] = &[
        "docker",
        "br-",
        "veth",
        "virbr",
        "lxc",
        "cni",
        "flannel",
        "tailscale",
        "wg",
        "tun",
        "zt",
    ];
    let mut ranked: Vec<((bool, u8), IpAddr)> = interfaces
        .filter(|(_, ip)| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter_map(|(name, ip)| {
            let class = match ip {
                IpAddr::V4(v4) if v4.is_link_local() => return None,
                IpAddr::V4(v4) if v4.is_private() => 0,
                IpAddr::V4(_) => 1,
                IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => return None,
                IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => 2,
                IpAddr::V6(_) => 3,
            };
            let is_virtual = VIRTUAL.iter().any(|prefix| name.starts_with(prefix));
            Some(((is_virtual, class), ip))
        })
        .collect();
    ranked.sort();
    let mut ips: Vec<IpAddr> = Vec::with_capacity(ranked.len());
    for (_, ip) in ranked {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// The address the internet sees this machine as: a STUN Binding to each of `stun_servers`
/// (`host:port`; the port defaults to 3478), all at once, [`STUN_TIMEOUT`] each; the first
/// answer wins. The error lists what was tried and how each failed.
pub async fn public_ip(stun_servers: &[String]) -> Result<IpAddr, String> {
    if stun_servers.is_empty() {
        return Err("no STUN server is configured".into());
    }
    let mut probes = tokio::task::JoinSet::new();
    for (index, server) in stun_servers.iter().enumerate() {
        let server = server.trim().to_owned();
        probes.spawn(async move {
            let result = async {
                let target = resolve_stun_server(&server).await?;
                stun_probe_udp(target, STUN_TIMEOUT).await
            }
            .await;
            (index, server, result)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = probes.join_next().await {
        let Ok((index, server, result)) = joined else {
            continue;
        };
        match result {
            Ok(mapped) => return Ok(mapped.ip()),
            Err(reason) => failures.push((index, format!("{server}: {reason}"))),
        }
    }
    failures.sort();
    let tried: Vec<String> = failures.into_iter().map(|(_, f)| f).collect();
    Err(format!("no STUN server answered ({})", tried.join("; ")))
}

/// `host:port`, `host` (port 3478), `a.b.c.d[:port]` or `[v6][:port]` to one address, IPv4
/// preferred (the public address that matters sits behind an IPv4 NAT).
async fn resolve_stun_server(server: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !port.is_empty() => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("'{port}' is not a port"))?,
        ),
        _ => (server, 3478),
    };
    let addrs = crate::net::dns::lookup(host, port)
        .await
        .map_err(|e| format!("cannot resolve it ({e})"))?;
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "it has no address".into())
}

/// A STUN Binding over UDP to `target`: the address it saw us as. Retransmits after 250, 750 and
/// 1750 ms (inside a `timeout` of 2 s); answers for other transactions are ignored.
pub async fn stun_probe_udp(target: SocketAddr, timeout: Duration) -> Result<SocketAddr, String> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| {
        format!(
            "no local UDP socket ({})",
            crate::net::explain::io_error(&e)
        )
    })?;
    let tid = stun::new_transaction_id();
    let request = stun::binding_request(&tid);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut next_send = tokio::time::Instant::now();
    let mut interval = Duration::from_millis(250);
    let mut buf = [0u8; 1500];
    let mut last_problem = None;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        if now >= next_send {
            if let Err(e) = socket.send_to(&request, target).await {
                last_problem = Some(format!(
                    "cannot send ({})",
                    crate::net::explain::io_error(&e)
                ));
            }
            next_send = now + interval;
            interval *= 2;
        }
        let wake = next_send.min(deadline);
        match tokio::time::timeout_at(wake, socket.recv_from(&mut buf)).await {
            Err(_) => continue,
            // ICMP "port unreachable" from an earlier send: keep listening for the retransmits.
            Ok(Err(e)) => last_problem = Some(crate::net::explain::io_error(&e)),
            // The random transaction id is what ties an answer to this probe (a NAT may
            // rewrite where it seems to come from).
            Ok(Ok((n, _))) => match stun::parse_binding_success(&buf[..n], &tid) {
                Ok(mapped) => return Ok(mapped),
                Err(e) => last_problem = Some(e.to_string()),
            },
        }
    }
    Err(match last_problem {
        Some(problem) => format!("no answer within {} s ({problem})", timeout.as_secs_f32()),
        None => format!("no answer within {} s", timeout.as_secs_f32()),
    })
}

/// A STUN Binding over TCP (RFC 4571 framing, as ICE-TCP) to `target`, within `timeout`.
pub async fn stun_probe_tcp(target: SocketAddr, timeout: Duration) -> Result<SocketAddr, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(target).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "connection refused".to_owned()
            } else {
                format!("cannot connect ({})", crate::net::explain::io_error(&e))
            }
        })?;
        let tid = stun::new_transaction_id();
        let request = stun::binding_request(&tid);
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&(request.len() as u16).to_be_bytes());
        framed.extend_from_slice(&request);
        stream
            .write_all(&framed)
            .await
            .map_err(|e| format!("cannot send ({})", crate::net::explain::io_error(&e)))?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(|e| {
            format!(
                "the connection closed without an answer ({})",
                crate::net::explain::io_error(&e)
            )
        })?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > 1500 {
            return Err(format!("a {len}-byte frame is no STUN answer"));
        }
        let mut answer = vec![0u8; len];
        stream.read_exact(&mut answer).await.map_err(|e| {
            format!(
                "the answer was cut short ({})",
                crate::net::explain::io_error(&e)
            )
        })?;
        stun::parse_binding_success(&answer, &tid).map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs_f32()))?
}

#[cfg(test)]
mod tests;
