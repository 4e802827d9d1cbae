//! Generated files: each a pure function of a [`Deployment`], checked by golden tests.
//!
//! Nothing here does IO or reads the clock, so the same deployment always yields byte-identical
//! text; the goldens under `golden/` are written by the code itself (`UPDATE_GOLDEN=1`).
//!
//! Secrets: the only secret any output contains is the legacy TURN shared secret, and only in the
//! homeserver.yaml snippet, whose purpose is to hand it to Synapse. The LiveKit API key pair
//! never leaves rtcbox's data directory.

pub mod compose;
pub mod ports;
pub mod proxy;
pub mod synapse;
pub mod well_known;

use std::net::IpAddr;

use super::model::{Deployment, PublicOrigin};

/// One generated file, as the admin panel shows it (with copy and download).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Stable identifier used in URLs (`/outputs/{id}`), e.g. `homeserver-yaml`.
    pub id: &'static str,
    /// Heading shown above it.
    pub title: String,
    /// Download file name.
    pub filename: String,
    /// Content type of the download.
    pub media_type: &'static str,
    /// Where it goes and what to do with it, in one or two sentences.
    pub intro: String,
    pub text: String,
}

/// Every output id, in the order [`all`] returns them.
pub const IDS: [&str; 11] = [
    synapse::ID,
    well_known::JSON_ID,
    well_known::SERVING_ID,
    proxy::DSM_ID,
    proxy::NGINX_ID,
    proxy::CADDY_ID,
    proxy::TRAEFIK_ID,
    proxy::APACHE_ID,
    ports::FORWARDS_ID,
    ports::FIREWALL_ID,
    compose::ID,
];

/// Every output for this deployment, in the order the admin panel shows them.
pub fn all(deployment: &Deployment) -> Vec<Output> {
    let mut all = vec![
        synapse::homeserver_yaml(deployment),
        well_known::client_json(deployment),
    ];
    all.extend(well_known::add_only(deployment));
    all.extend([
        well_known::serving(deployment),
        proxy::synology_dsm(deployment),
        proxy::nginx(deployment),
        proxy::caddy(deployment),
        proxy::traefik(deployment),
        proxy::apache(deployment),
        ports::forwards(deployment),
        ports::dsm_firewall(deployment),
        compose::compose_yaml(deployment),
    ]);
    all
}

/// One output by its id.
pub fn by_id(deployment: &Deployment, id: &str) -> Option<Output> {
    all(deployment).into_iter().find(|o| o.id == id)
}

/// A YAML double-quoted scalar holding exactly `value`: backslashes, quotes, control characters
/// and the characters YAML does not allow literally are escaped, so no value can end the string
/// early, start a new key, or be read as a number, boolean or null.
pub fn yaml_str(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0 and C1 controls, DEL, the line and paragraph separators and the byte-order mark
            // are either forbidden in YAML text or folded by some parsers: always escape them.
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Appends `key: value` in block style at `indent` spaces, every string double-quoted; for
/// carrying JSON values (such as existing well-known entries) into YAML files.
fn yaml_entry(out: &mut String, indent: usize, key: &str, value: &serde_json::Value) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    let key = yaml_key(key);
    match value {
        Value::Object(map) if !map.is_empty() => {
            *out += &format!("{pad}{key}:\n");
            for (k, v) in map {
                yaml_entry(out, indent + 2, k, v);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            *out += &format!("{pad}{key}:\n");
            for item in items {
                yaml_item(out, indent + 2, item);
            }
        }
        scalar => *out += &format!("{pad}{key}: {}\n", yaml_scalar(scalar)),
    }
}

/// Appends `- item` at `indent` spaces.
fn yaml_item(out: &mut String, indent: usize, item: &serde_json::Value) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match item {
        Value::Object(map) if !map.is_empty() => {
            let mut entries = String::new();
            for (k, v) in map {
                yaml_entry(&mut entries, indent + 2, k, v);
            }
            // The first entry goes on the dash's line: "    a: 1" becomes "  - a: 1".
            *out += &format!("{pad}- {}", &entries[indent + 2..]);
        }
        other => *out += &format!("{pad}- {}\n", yaml_scalar(other)),
    }
}

/// A scalar, or a nested empty/array value in flow style (JSON is valid flow YAML).
fn yaml_scalar(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(s) => yaml_str(s),
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// A mapping key: plain when it is an ordinary identifier-like word, else double-quoted.
fn yaml_key(key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain { key.to_owned() } else { yaml_str(key) }
}

/// `ip:port`, an IPv6 address in brackets, as in URLs and proxy configurations.
fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// A host name or IP literal as it appears before `:port` (IPv6 in brackets).
fn bracketed_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The plain-HTTP address reverse proxies forward to: rtcbox's public HTTP listener on the LAN.
fn upstream(deployment: &Deployment) -> String {
    socket(deployment.network.lan_ip, deployment.network.ports.http)
}

/// The distinct public host names, in [`Endpoints::origins`](super::model::Endpoints::origins)
/// order (the authorization service's first).
fn public_origins(deployment: &Deployment) -> Vec<&PublicOrigin> {
    let mut seen: Vec<&PublicOrigin> = Vec::new();
    for origin in deployment.endpoints.origins() {
        if !seen
            .iter()
            .any(|o| o.host == origin.host && o.effective_port() == origin.effective_port())
        {
            seen.push(origin);
        }
    }
    seen
}

/// What a public origin serves, for comments next to its proxy rule.
fn label_for(deployment: &Deployment, origin: &PublicOrigin) -> &'static str {
    use super::model::Endpoints;
    match &deployment.endpoints {
        Endpoints::OneHost(_) => "authorization service and SFU",
        Endpoints::TwoHosts { jwt, sfu } if jwt.host == sfu.host => "authorization service and SFU",
        Endpoints::TwoHosts { jwt, .. } if jwt == origin => "authorization service",
        Endpoints::TwoHosts { .. } => "SFU",
    }
}

/// `text` wrapped at `width` columns: the first line starts with `first`, the others with
/// `rest` (usually spaces as wide as `first`). Words longer than a line stay whole.
fn wrap(text: &str, width: usize, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(first);
    let mut line_has_words = false;
    for word in text.split_whitespace() {
        if line_has_words && line.chars().count() + 1 + word.chars().count() > width {
            out += line.trim_end();
            out.push('\n');
            line = String::from(rest);
            line_has_words = false;
        }
        if line_has_words {
            line.push(' ');
        }
        line += word;
        line_has_words = true;
    }
    out += line.trim_end();
    out.push('\n');
    out
}

/// A line of `ch` as long as `text`, for plain-text headings.
fn underline(text: &str, ch: char) -> String {
    let mut out = String::from(text);
    out.push('\n');
    out.extend(std::iter::repeat_n(ch, text.chars().count()));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
