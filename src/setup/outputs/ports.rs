//! The router's port forwards and the DSM firewall rules, both from the configured ports.
//!
//! Media ports are forwarded to the same port number: rtcbox announces its address and port in
//! ICE candidates, so a router that translates the port sends callers nowhere.

use std::net::IpAddr;

use super::{Output, public_origins, socket, underline, wrap};
use crate::setup::model::{AcmeChallenge, Deployment, ProxyKind, TlsMode};

pub const FORWARDS_ID: &str = "port-forwards";
pub const FIREWALL_ID: &str = "dsm-firewall";

/// One row of the router's port-forward table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortForward {
    /// `"UDP"` or `"TCP"`.
    pub protocol: &'static str,
    /// The port on the router's public address: `"8882"` or a range `"49160-49200"`.
    pub external: String,
    /// Where it goes: `"192.168.1.20:8882"`, `"192.168.1.20:49160-49200"`, or a description
    /// when the target is not rtcbox's machine (a reverse proxy elsewhere).
    pub internal: String,
    /// What the port carries.
    pub purpose: String,
    /// What the user sees when it is missing.
    pub breaks_without: String,
    /// How much the configured features need it.
    pub need: Need,
}

/// How much a deployment needs a forward. The HTML table and the text file show the same word,
/// and a row's "without it" text describes what its word promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Calls (or the certificate) do not work without it.
    Required,
    /// Calls work, but some callers' networks fail without it.
    Recommended,
    /// Only for something that can be done another way.
    Optional,
}

impl Need {
    pub fn label(self) -> &'static str {
        match self {
            Need::Required => "required",
            Need::Recommended => "recommended",
            Need::Optional => "optional",
        }
    }

    /// What the word means, for the table's legend.
    pub const LEGEND: &'static str = "Required: calls fail without it. Recommended: calls \
                                      work, but callers on some networks fail. Optional: needed \
                                      only for what its row says.";
}

/// The forwards this deployment needs, HTTPS first, then media, then TURN (its relay range
/// only for legacy 1:1 calls).
pub fn port_forwards(d: &Deployment) -> Vec<PortForward> {
    rows(d).into_iter().map(|row| row.forward).collect()
}

pub fn forwards(d: &Deployment) -> Output {
    Output {
        id: FORWARDS_ID,
        title: "Router port forwards".to_owned(),
        filename: "port-forwards.txt".to_owned(),
        media_type: "text/plain",
        intro: format!(
            "Create these port forwards on your internet router; rtcbox runs on {}. Media ports \
             keep the same number outside and inside.{}",
            d.network.lan_ip,
            if d.running.tls_trusted {
                String::new()
            } else {
                format!(
                    " TURN over TLS (port {}) joins the table once rtcbox serves a certificate \
                     browsers trust.",
                    d.network.ports.turns
                )
            }
        ),
        text: forwards_text(d),
    }
}

pub fn dsm_firewall(d: &Deployment) -> Output {
    Output {
        id: FIREWALL_ID,
        title: "Synology DSM firewall".to_owned(),
        filename: "dsm-firewall.txt".to_owned(),
        media_type: "text/plain",
        intro: "If DSM's firewall is on, add these allow rules (Control Panel > Security > \
                Firewall) and place them above any rule that denies."
            .to_owned(),
        text: firewall_text(d),
    }
}

/// A forward plus, when it ends on rtcbox's machine, the local port or range (for the firewall).
struct Row {
    forward: PortForward,
    local_port: Option<String>,
}

fn rows(d: &Deployment) -> Vec<Row> {
    let ip = d.network.lan_ip;
    let ports = d.network.ports;
    let mut rows = Vec::new();

    let mut web_ports: Vec<(u16, bool)> = Vec::new();
    for origin in public_origins(d) {
        let entry = (origin.effective_port(), origin.tls);
        if !web_ports.contains(&entry) {
            web_ports.push(entry);
        }
    }
    for &(port, tls) in &web_ports {
        let (internal, local_port, how) = match &d.tls {
            TlsMode::ReverseProxy {
                proxy: ProxyKind::SynologyDsm,
            } => (
                socket(ip, port),
                Some(port.to_string()),
                "through DSM's reverse proxy on the NAS".to_owned(),
            ),
            TlsMode::ReverseProxy { proxy } => (
                format!("your reverse proxy's address, port {port}"),
                None,
                format!("through your reverse proxy ({})", proxy.label()),
            ),
            TlsMode::Acme { challenge, .. } => {
                let alpn = if *challenge == AcmeChallenge::TlsAlpn01 {
                    ", which also proves the domain to Let's Encrypt (TLS-ALPN-01)"
                } else {
                    ""
                };
                let local = if tls { ports.https } else { ports.http };
                (
                    socket(ip, local),
                    Some(local.to_string()),
                    format!("served by rtcbox itself with its Let's Encrypt certificate{alpn}"),
                )
            }
            TlsMode::Files { .. } => {
                let local = if tls { ports.https } else { ports.http };
                (
                    socket(ip, local),
                    Some(local.to_string()),
                    "served by rtcbox itself (RTCBOX_HTTPS_BIND) with the certificate from your \
                     files"
                        .to_owned(),
                )
            }
            TlsMode::SelfSigned => {
                let local = if tls { ports.https } else { ports.http };
                (
                    socket(ip, local),
                    Some(local.to_string()),
                    "served by rtcbox itself (RTCBOX_HTTPS_BIND) with its self-signed certificate"
                        .to_owned(),
                )
            }
        };
        rows.push(Row {
            forward: PortForward {
                protocol: "TCP",
                external: port.to_string(),
                internal,
                purpose: format!(
                    "{} for the authorization service and the SFU's signaling, {how}",
                    if tls { "HTTPS" } else { "HTTP" }
                ),
                breaks_without: "Clients cannot get a call token or open the SFU's WebSocket: \
                                 no call starts (\"Failed to connect\")."
                    .to_owned(),
                need: Need::Required,
            },
            local_port,
        });
    }

    if !web_ports.iter().any(|&(port, _)| port == 80) {
        let port_80 = match &d.tls {
            TlsMode::Acme {
                challenge: AcmeChallenge::Http01,
                ..
            } => Some((
                socket(ip, ports.http),
                Some(ports.http.to_string()),
                format!(
                    "Let's Encrypt's HTTP-01 check for rtcbox's certificate, answered by rtcbox \
                     on port {}",
                    ports.http
                ),
                "rtcbox cannot get or renew its certificate.".to_owned(),
                Need::Required,
            )),
            TlsMode::ReverseProxy {
                proxy: ProxyKind::SynologyDsm,
            } => Some((
                socket(ip, 80),
                Some("80".to_owned()),
                "Let's Encrypt's check for DSM's certificate (DSM answers on port 80)".to_owned(),
                "DSM cannot get or renew a Let's Encrypt certificate (not needed if you bring \
                 your own)."
                    .to_owned(),
                Need::Optional,
            )),
            TlsMode::ReverseProxy { .. } => Some((
                "your reverse proxy's address, port 80".to_owned(),
                None,
                "Let's Encrypt's HTTP-01 check for your proxy's certificate (certbot, Caddy, \
                 Traefik), and the redirect to HTTPS"
                    .to_owned(),
                "The proxy cannot get or renew a certificate by HTTP-01 (not needed with DNS-01 \
                 or your own certificates)."
                    .to_owned(),
                Need::Optional,
            )),
            TlsMode::Acme { .. } | TlsMode::SelfSigned | TlsMode::Files { .. } => None,
        };
        if let Some((internal, local_port, purpose, breaks_without, need)) = port_80 {
            rows.push(Row {
                forward: PortForward {
                    protocol: "TCP",
                    external: "80".to_owned(),
                    internal,
                    purpose,
                    breaks_without,
                    need,
                },
                local_port,
            });
        }
    }

    // TLS-ALPN-01 is always validated on port 443, whatever port the public URLs use.
    let alpn = matches!(
        &d.tls,
        TlsMode::Acme {
            challenge: AcmeChallenge::TlsAlpn01,
            ..
        }
    );
    if alpn && !web_ports.iter().any(|&(port, _)| port == 443) {
        rows.push(Row {
            forward: PortForward {
                protocol: "TCP",
                external: "443".to_owned(),
                internal: socket(ip, ports.https),
                purpose: format!(
                    "Let's Encrypt's TLS-ALPN-01 check for rtcbox's certificate, answered by \
                     rtcbox's HTTPS port {}",
                    ports.https
                ),
                breaks_without: "rtcbox cannot get or renew its certificate.".to_owned(),
                need: Need::Required,
            },
            local_port: Some(ports.https.to_string()),
        });
    }

    let mut to_rtcbox = |protocol, port: String, purpose: &str, breaks: &str, need| {
        rows.push(Row {
            forward: PortForward {
                protocol,
                external: port.clone(),
                internal: format!("{}{port}", socket_prefix(ip)),
                purpose: purpose.to_owned(),
                breaks_without: breaks.to_owned(),
                need,
            },
            local_port: Some(port),
        });
    };
    to_rtcbox(
        "UDP",
        ports.rtc_udp.to_string(),
        "WebRTC media (audio, video, screen sharing), every caller on this one port",
        "Calls connect but stay black and silent (\"Waiting for media\"): no audio or video \
         reaches anyone outside your network.",
        Need::Required,
    );
    to_rtcbox(
        "TCP",
        ports.rtc_tcp.to_string(),
        "WebRTC media over TCP (ICE-TCP), the fallback when UDP is blocked",
        "Callers on networks that block UDP (some offices, hotels, mobile carriers) get no \
         media.",
        Need::Recommended,
    );

    // TURN: for callers whose network blocks the media ports (the SFU hands every participant
    // TURN credentials), and for legacy 1:1 calls, which also need the relay range.
    let legacy = d.legacy_turn.is_some();
    let for_whom = if legacy {
        "for callers behind strict firewalls and for legacy 1:1 calls"
    } else {
        "for callers behind strict firewalls"
    };
    to_rtcbox(
        "UDP",
        ports.turn.to_string(),
        &format!("TURN/STUN {for_whom}"),
        if legacy {
            "Legacy 1:1 calls between two callers behind strict NATs cannot connect; callers \
             whose network blocks the media ports have no relay."
        } else {
            "Callers whose network blocks the media ports but allows TURN have no relay (most \
             still connect over the ICE-TCP port)."
        },
        if legacy {
            Need::Required
        } else {
            Need::Recommended
        },
    );
    to_rtcbox(
        "TCP",
        ports.turn.to_string(),
        &format!("TURN over TCP {for_whom}"),
        "Callers on networks that block UDP cannot use TURN.",
        Need::Recommended,
    );
    // Offered to clients only with a certificate browsers trust (see `Running::tls_trusted`).
    if d.running.tls_trusted {
        to_rtcbox(
            "TCP",
            ports.turns.to_string(),
            &format!("TURN over TLS {for_whom}"),
            "Callers on networks that only allow encrypted connections cannot use TURN.",
            Need::Recommended,
        );
    }
    if legacy {
        to_rtcbox(
            "UDP",
            format!("{}-{}", ports.relay_min, ports.relay_max),
            "TURN relay ports for legacy 1:1 calls (the other caller sends media to them)",
            "Legacy 1:1 calls that need TURN connect but carry no audio or video.",
            Need::Required,
        );
    }
    rows
}

/// Where the plain-text files wrap their prose.
const WIDTH: usize = 92;

/// `192.168.1.20:` or `[2001:db8::20]:`, to put a port or a port range after.
fn socket_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:"),
        IpAddr::V6(v6) => format!("[{v6}]:"),
    }
}

/// A plain-text table with columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out += cell;
            } else {
                out += &format!("{cell:<w$}  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

fn forwards_text(d: &Deployment) -> String {
    let forwards = port_forwards(d);
    let ip = d.network.lan_ip;
    let ports = d.network.ports;
    let mut out = underline("Router port forwards for rtcbox", '=');
    out += &format!(
        "\n\
         On your internet router (often under \"Port forwarding\", \"Virtual servers\" or \"NAT\"),\n\
         forward these ports. rtcbox runs on {ip}.\n\
         \n"
    );
    let rows: Vec<Vec<String>> = forwards
        .iter()
        .map(|f| {
            vec![
                f.protocol.to_owned(),
                f.external.clone(),
                f.internal.clone(),
                f.need.label().to_owned(),
            ]
        })
        .collect();
    out += &table(&["Protocol", "External", "Internal", "Needed"], &rows);
    out += "\n";
    out += &wrap(Need::LEGEND, WIDTH, "", "");
    out += "\n";
    out += &underline("What each one is for, and what breaks without it", '-');
    for f in &forwards {
        out += &format!("\n{} {} -> {}\n", f.protocol, f.external, f.internal);
        out += &wrap(&f.purpose, WIDTH, "  For:     ", "           ");
        out += &wrap(&f.breaks_without, WIDTH, "  Without: ", "           ");
    }
    out += "\n";
    out += &underline("Notes", '-');
    let note = |text: &str| wrap(text, WIDTH, "- ", "  ");
    out += &note(&format!(
        "For media (UDP {}, TCP {}) the external and internal port numbers must be equal: \
         rtcbox announces its address and port to callers (ICE candidates), and a router that \
         maps to another port sends them to a port nobody listens on.",
        ports.rtc_udp, ports.rtc_tcp,
    ));
    let whose = if ip.is_ipv6() {
        "this machine's public IPv6 address"
    } else {
        "your router's public address"
    };
    out += &note(&match d.network.public_ip {
        Some(public) if d.network.follows_public_ip => format!(
            "rtcbox tells callers to send media to {public}, {whose} as its STUN servers see it \
             now. It checks again every minute and, when your provider changes the address, \
             advertises the new one by itself."
        ),
        None if d.network.follows_public_ip => format!(
            "rtcbox has not detected the public address yet (no STUN server answered). It \
             keeps trying; until it succeeds, callers outside your LAN cannot reach it. Check \
             the STUN servers in Settings, or set {whose} as a fixed public IP."
        ),
        Some(public) => format!(
            "rtcbox tells callers to send media to {public} (RTCBOX_NODE_IP). That must be \
             {whose}; it is fixed: if your provider changes it, change it too, or clear it \
             (wizard's Network step) to let rtcbox follow the address by itself."
        ),
        None => format!(
            "The public address was not detected. rtcbox has to tell callers where to send \
             media, so set RTCBOX_NODE_IP (or the wizard's public IP) to {whose}."
        ),
    });
    if ip.is_ipv4() {
        out += &note(
            "If the router's own internet-side address is private (10.x.x.x, 172.16-31.x.x, \
             192.168.x.x, or 100.64-127.x.x: carrier-grade NAT), no forward can reach you. Ask \
             your provider for a public IPv4 address, or use IPv6.",
        );
    }
    out += &note(&format!(
        "TURN ports (UDP and TCP {}, TLS {}) keep their numbers too: callers are told them in \
         their TURN URLs.",
        ports.turn, ports.turns,
    ));
    let hosts: Vec<&str> = public_origins(d).iter().map(|o| o.host.as_str()).collect();
    out += &note(&format!(
        "Inside your network, {hosts} {verb} to the public address. If calls work from outside \
         but not from home, the router lacks \"NAT loopback\" (hairpin NAT): turn it on, or make \
         your local DNS answer {ip} for {hosts}.",
        hosts = hosts.join(" and "),
        verb = if hosts.len() == 1 {
            "resolves"
        } else {
            "resolve"
        },
    ));
    out += &note(&format!(
        "Never forward the admin panel's port {}: it belongs on your LAN only.",
        ports.admin
    ));
    if ip.is_ipv6() {
        out += &note(
            "IPv6 usually has no NAT: instead of forwarding, open the Internal ports for this \
             address in the router's IPv6 firewall. Where External and Internal differ, clients \
             can only reach the Internal port unless your router translates ports for IPv6.",
        );
    }
    out
}

/// Who a firewall rule admits.
enum Source {
    All,
    Lan,
}

fn firewall_text(d: &Deployment) -> String {
    let ip = d.network.lan_ip;
    let ports = d.network.ports;
    let (subnet, subnet_ui) = lan_subnet(ip);
    let mut rules: Vec<(&'static str, String, Source, String)> = Vec::new();
    for row in rows(d) {
        if let Some(port) = row.local_port {
            let purpose = row.forward.purpose;
            let short = purpose.split([';', '(']).next().unwrap_or(&purpose).trim();
            rules.push((row.forward.protocol, port, Source::All, short.to_owned()));
        }
    }
    let proxy_elsewhere =
        matches!(&d.tls, TlsMode::ReverseProxy { proxy } if *proxy != ProxyKind::SynologyDsm);
    if proxy_elsewhere {
        rules.push((
            "TCP",
            ports.http.to_string(),
            Source::Lan,
            "rtcbox's HTTP port, for your reverse proxy (skip if it runs on this NAS)".to_owned(),
        ));
    }
    rules.push((
        "TCP",
        ports.admin.to_string(),
        Source::Lan,
        "rtcbox's admin panel, LAN only".to_owned(),
    ));

    let mut out = underline("Synology DSM firewall rules for rtcbox", '=');
    out += &format!(
        "\n\
         Only needed when DSM's firewall is on (Control Panel > Security > Firewall >\n\
         Enable firewall). DSM checks the rules from the top and applies the first that matches,\n\
         so these must come before any rule that denies.\n\
         \n\
         1. Control Panel > Security > Firewall. Choose the firewall profile in use and click\n\
         \x20  Edit Rules.\n\
         2. For each row below, click Create and set:\n\
         \x20    Ports:     Custom > Custom: Type \"Destination port\", the Protocol and Ports shown\n\
         \x20    Source IP: All; for \"LAN\" rows Specific IP > Select > Subnet,\n\
         \x20               {subnet_ui}\n\
         \x20    Action:    Allow\n\
         \x20  then OK.\n\
         \n"
    );
    let table_rows: Vec<Vec<String>> = rules
        .iter()
        .map(|(protocol, port, source, purpose)| {
            vec![
                (*protocol).to_owned(),
                port.clone(),
                match source {
                    Source::All => "All".to_owned(),
                    Source::Lan => format!("LAN ({subnet})"),
                },
                purpose.clone(),
            ]
        })
        .collect();
    out += &table(&["Protocol", "Ports", "Source IP", "For"], &table_rows);
    out += "\n\
            3. Drag the new rules above every rule whose action is Deny, then click OK.\n\
            4. Below the rules, \"If no rules are matched\" may stay on Deny access: the rules above\n\
            \x20  still let rtcbox's traffic in.\n\
            \n";
    out += &wrap(
        &format!(
            "The LAN subnet {subnet} is a guess from rtcbox's address {ip}; use your network's \
             real subnet if it differs."
        ),
        WIDTH,
        "",
        "",
    );
    if matches!(
        &d.tls,
        TlsMode::ReverseProxy {
            proxy: ProxyKind::SynologyDsm
        }
    ) {
        out += &format!(
            "rtcbox's HTTP port {} needs no rule: DSM's reverse proxy reaches it on the NAS itself.\n",
            ports.http
        );
    }
    out
}

/// A suggested LAN subnet around `ip`: the /24 of an IPv4 address, the /64 of an IPv6 one, as
/// CIDR and as DSM's subnet dialog wants it.
fn lan_subnet(ip: IpAddr) -> (String, String) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            (
                format!("{a}.{b}.{c}.0/24"),
                format!("IP address {a}.{b}.{c}.0, Subnet mask 255.255.255.0"),
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            (
                format!("{prefix}/64"),
                format!("IP address {prefix}, Prefix length 64"),
            )
        }
    }
}
