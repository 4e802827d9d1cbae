//! The Settings page's one form: every setting that is not pinned, grouped by purpose, under a
//! human name (the environment name beside it), with toggles for yes/no, pickers for choices
//! and write-only fields for secrets. One Save checks the whole set as the next start would
//! read it; nothing is stored unless all of it resolves.
//!
//! Pure: the page handler reads the stored settings and writes what [`changes`] returns.

use std::collections::{BTreeMap, HashMap};

use crate::config::{SettingKey, Settings};

use super::views::Field;

/// How a setting is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `true`/`false`, as a checkbox.
    Toggle,
    /// One of these (value, label); "" is "not set".
    Pick(&'static [(&'static str, &'static str)]),
    /// Never shown; an empty field keeps the stored value.
    Secret,
}

/// Where a setting appears and how.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub group: usize,
    pub label: &'static str,
    pub kind: Kind,
    /// Shown only while another field has this value (`tls_mode=acme`).
    pub show_when: &'static str,
}

/// The groups, in page order: title, what they are for.
pub const GROUPS: [(&str, &str); 6] = [
    (
        "Calls",
        "Who may start calls, and the address clients are sent to.",
    ),
    (
        "Public IP and media",
        "Where callers send media. Leave the fixed IP empty to let rtcbox detect your public IP and follow it.",
    ),
    (
        "Listeners and proxies",
        "The addresses rtcbox listens on, and the reverse proxies whose forwarding headers it believes.",
    ),
    (
        "TURN",
        "The embedded TURN server: relays for callers behind strict firewalls and for legacy 1:1 calls.",
    ),
    (
        "Certificate",
        "Where the certificate for rtcbox's own HTTPS (and TURN over TLS) comes from.",
    ),
    (
        "Monitoring",
        "Access to the Prometheus metrics at /metrics on the admin listener.",
    ),
];

const TLS_MODES: &[(&str, &str)] = &[
    ("proxy", "A reverse proxy in front (self-signed here)"),
    ("self-signed", "Self-signed"),
    ("files", "Certificate files"),
    ("acme", "Let's Encrypt (ACME)"),
];
const CHALLENGES: &[(&str, &str)] = &[
    ("http-01", "HTTP-01 (port 80)"),
    ("tls-alpn-01", "TLS-ALPN-01 (port 443)"),
    ("dns-01", "DNS-01 (a TXT record)"),
];
const DNS_PROVIDERS: &[(&str, &str)] = &[
    ("", "none"),
    ("rfc2136", "RFC 2136 dynamic update"),
    ("cloudflare", "Cloudflare"),
    ("manual", "By hand (the dashboard shows the record)"),
];
const TSIG: &[(&str, &str)] = &[
    ("hmac-sha256", "HMAC-SHA256"),
    ("hmac-sha512", "HMAC-SHA512"),
];

/// A setting's place on the form; `None` for those with a form of their own (the API key
/// pair) or that are never changed from the panel (letting any homeserver reach the LAN).
pub fn meta(key: SettingKey) -> Option<Meta> {
    use Kind::*;
    use SettingKey as K;
    let m = |group, label, kind| Meta {
        group,
        label,
        kind,
        show_when: "",
    };
    let acme = |label, kind| Meta {
        group: 4,
        label,
        kind,
        show_when: "tls_mode=acme",
    };
    Some(match key {
        K::ApiKey | K::ApiSecret | K::DangerousAllowPrivateHomeservers => return None,
        K::PublicUrl => m(0, "LiveKit URL handed to clients", Text),
        K::FullAccessHomeservers => m(0, "Homeservers whose users may start calls", Text),
        K::AutoCreateRooms => m(
            0,
            "Create a room when someone joins one that does not exist",
            Toggle,
        ),
        K::MatrixCaFile => m(0, "Extra CA certificates for homeservers (PEM file)", Text),
        K::NodeIp => m(1, "Fixed public IP (empty: detect and follow)", Text),
        K::StunServers => m(1, "STUN servers asked for the public IP", Text),
        K::PublicIpInterval => m(1, "Seconds between public IP checks", Text),
        K::PublicIpDns => m(
            1,
            "Or a DNS name that points at your public IP (dynamic DNS)",
            Text,
        ),
        K::RtcUdpPort => m(1, "Media port (UDP)", Text),
        K::RtcTcpPort => m(1, "Media fallback port (ICE-TCP)", Text),
        K::HttpBind => m(2, "Public HTTP listener", Text),
        K::HttpsBind => m(2, "Public HTTPS listener (0: off)", Text),
        K::AdminBind => m(2, "Admin panel listener", Text),
        K::AdminTls => m(2, "Serve the admin panel over HTTPS", Toggle),
        K::TrustedProxies => m(
            2,
            "Trusted reverse proxies (addresses or CIDR blocks)",
            Text,
        ),
        K::TurnPort => m(3, "TURN over UDP and TCP (0: off)", Text),
        K::TurnTlsPort => m(3, "TURN over TLS (0: off)", Text),
        K::TurnRelayPorts => m(3, "Relay ports for legacy 1:1 calls (first-last)", Text),
        K::TurnSharedSecret => m(3, "Shared secret for Synapse's turn_shared_secret", Secret),
        K::TurnAllowPeers => m(
            3,
            "Private or loopback blocks TURN may relay to anyway",
            Text,
        ),
        K::TlsMode => m(4, "Certificate source", Pick(TLS_MODES)),
        K::TlsCertFile => Meta {
            show_when: "tls_mode=files",
            ..m(4, "Certificate chain (PEM file)", Text)
        },
        K::TlsKeyFile => Meta {
            show_when: "tls_mode=files",
            ..m(4, "Private key (PEM file)", Text)
        },
        K::AcmeDomains => acme("Names on the certificate", Text),
        K::AcmeEmail => acme("Contact e-mail for the CA", Text),
        K::AcmeChallenge => acme("How the CA checks the names", Pick(CHALLENGES)),
        K::AcmeDirectory => acme("ACME directory (production, staging or a URL)", Text),
        K::AcmeCaFile => acme("Extra CA certificates for the ACME server (PEM file)", Text),
        K::AcmeDnsProvider => acme("DNS-01: who publishes the record", Pick(DNS_PROVIDERS)),
        K::AcmeDnsServer => acme("DNS-01 (RFC 2136): DNS server", Text),
        K::AcmeDnsZone => acme("DNS-01: zone (empty: found by itself)", Text),
        K::AcmeDnsTsigKey => acme("DNS-01 (RFC 2136): TSIG key name", Text),
        K::AcmeDnsTsigAlgorithm => acme("DNS-01 (RFC 2136): TSIG algorithm", Pick(TSIG)),
        K::AcmeDnsTsigSecret => acme("DNS-01 (RFC 2136): TSIG secret", Secret),
        K::AcmeCloudflareToken => acme("DNS-01 (Cloudflare): API token", Secret),
        K::AcmeCloudflareApi => acme("DNS-01 (Cloudflare): API address", Text),
        K::MetricsToken => m(5, "Bearer token for /metrics", Secret),
    })
}

/// One group as the page draws it.
pub struct Group {
    pub title: &'static str,
    pub intro: &'static str,
    pub fields: Vec<Field>,
    /// Settings a flag or the environment sets: shown, not editable, with the reason.
    pub locked: Vec<Locked>,
}

pub struct Locked {
    pub label: &'static str,
    pub env_name: &'static str,
    pub value: String,
    pub reason: String,
}

/// The form's text for `key` before any edit: the stored value (empty means the default), or
/// for a toggle or a choice the value the next start resolves.
fn shown(
    key: SettingKey,
    kind: Kind,
    next: &Settings,
    stored: &BTreeMap<String, String>,
) -> String {
    match kind {
        Kind::Secret => String::new(),
        Kind::Toggle => {
            if next.value(key).as_deref() == Some("true") {
                "yes".to_owned()
            } else {
                String::new()
            }
        }
        Kind::Pick(_) => next.value(key).unwrap_or_default(),
        Kind::Text => stored.get(key.db_key()).cloned().unwrap_or_default(),
    }
}

/// The page's groups. `running` is what is in effect (shown beside each field), `next` what
/// the next start resolves, `entered` a refused form to show again with `errors`.
pub fn groups(
    running: &Settings,
    next: &Settings,
    stored: &BTreeMap<String, String>,
    entered: Option<&HashMap<String, String>>,
    errors: &BTreeMap<SettingKey, String>,
) -> Vec<Group> {
    let mut groups: Vec<Group> = GROUPS
        .iter()
        .map(|(title, intro)| Group {
            title,
            intro,
            fields: Vec::new(),
            locked: Vec::new(),
        })
        .collect();
    for key in SettingKey::ALL {
        let Some(meta) = meta(key) else { continue };
        let group = &mut groups[meta.group];
        if running.is_pinned(key) {
            group.locked.push(Locked {
                label: meta.label,
                env_name: key.env_name(),
                value: running.display(key),
                reason: format!(
                    "set by {}; change it there",
                    running
                        .origins
                        .get(&key)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            });
            continue;
        }
        let value = match (entered, meta.kind) {
            (Some(form), Kind::Toggle) => if form.contains_key(key.db_key()) {
                "yes"
            } else {
                ""
            }
            .to_owned(),
            (Some(form), Kind::Secret) => {
                let _ = form;
                String::new()
            }
            (Some(form), _) => form.get(key.db_key()).cloned().unwrap_or_default(),
            (None, kind) => shown(key, kind, next, stored),
        };
        let now = format!("now: {}", running.display(key));
        let help = match meta.kind {
            Kind::Secret => format!(
                "{} · {now}. Leave empty to keep it; what you type replaces it.",
                key.env_name()
            ),
            _ => format!("{} · {now}", key.env_name()),
        };
        let mut field = match meta.kind {
            Kind::Text => Field::text(key.db_key(), meta.label, &value),
            Kind::Secret => Field::text(key.db_key(), meta.label, "").kind("password"),
            Kind::Toggle => Field::text(key.db_key(), meta.label, &value).kind("checkbox"),
            Kind::Pick(options) => {
                let mut options: Vec<(&str, &str)> = options.to_vec();
                if !options.iter().any(|(v, _)| *v == value) {
                    options.insert(0, (value.as_str(), value.as_str()));
                }
                Field::choice(key.db_key(), "select", meta.label, &value, &options)
            }
        }
        .help(&help);
        if !meta.show_when.is_empty() {
            field = field.show_when(meta.show_when);
        }
        field.error = errors.get(&key).cloned();
        group.fields.push(field);
    }
    groups.retain(|g| !g.fields.is_empty() || !g.locked.is_empty());
    groups
}

/// What a submitted form changes: (setting, new stored value; `None` clears it back to the
/// default). Pinned settings and those not on the form are never touched.
pub fn changes(
    form: &HashMap<String, String>,
    running: &Settings,
    next: &Settings,
    stored: &BTreeMap<String, String>,
) -> Vec<(SettingKey, Option<String>)> {
    let mut out = Vec::new();
    for key in SettingKey::ALL {
        let Some(meta) = meta(key) else { continue };
        if running.is_pinned(key) {
            continue;
        }
        let typed = form.get(key.db_key()).map(|v| v.trim().to_owned());
        let change = match meta.kind {
            Kind::Toggle => {
                let on = typed.is_some();
                let was = next.value(key).as_deref() == Some("true");
                (on != was).then(|| Some(on.to_string()))
            }
            Kind::Secret => typed.filter(|v| !v.is_empty()).map(Some),
            Kind::Pick(_) => {
                let Some(typed) = typed else { continue };
                let was = next.value(key).unwrap_or_default();
                (typed != was).then(|| Some(typed).filter(|v| !v.is_empty()))
            }
            Kind::Text => {
                // A field missing from the form (an old page) changes nothing.
                let Some(typed) = typed else { continue };
                let was = stored.get(key.db_key()).cloned().unwrap_or_default();
                (typed != was).then(|| Some(typed).filter(|v| !v.is_empty()))
            }
        };
        if let Some(value) = change {
            out.push((key, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layers, resolve};

    fn settings(flags: &[(SettingKey, &str)], stored: &BTreeMap<String, String>) -> Settings {
        let flags: BTreeMap<SettingKey, String> =
            flags.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        resolve(&Layers {
            flags: &flags,
            env: &|_| None,
            stored,
        })
        .unwrap()
    }

    fn stored(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = BTreeMap::from([
            ("api_key".to_owned(), "APIform".to_owned()),
            ("api_secret".to_owned(), "s".repeat(40)),
        ]);
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_setting_but_the_key_pair_and_the_lan_override_is_on_the_form() {
        for key in SettingKey::ALL {
            let expected = !matches!(
                key,
                SettingKey::ApiKey
                    | SettingKey::ApiSecret
                    | SettingKey::DangerousAllowPrivateHomeservers
            );
            assert_eq!(meta(key).is_some(), expected, "{key:?}");
        }
    }

    #[test]
    fn the_form_changes_only_what_was_edited() {
        let st = stored(&[("node_ip", "203.0.113.7"), ("auto_create_rooms", "true")]);
        let s = settings(&[(SettingKey::AdminBind, "127.0.0.1:9999")], &st);
        let groups = groups(&s, &s, &st, None, &BTreeMap::new());
        // Submitting the page as drawn changes nothing.
        let mut drawn: HashMap<String, String> = HashMap::new();
        for field in groups.iter().flat_map(|g| &g.fields) {
            match field.kind {
                "checkbox" if field.value == "yes" => {
                    drawn.insert(field.name.to_owned(), "yes".to_owned());
                }
                "checkbox" => {}
                _ => {
                    drawn.insert(field.name.to_owned(), field.value.clone());
                }
            }
        }
        assert_eq!(changes(&drawn, &s, &s, &st), []);
        // The pinned admin listener is shown locked, with its reason, and never changed.
        let locked: Vec<&Locked> = groups.iter().flat_map(|g| &g.locked).collect();
        assert_eq!(locked.len(), 1);
        assert!(
            locked[0].reason.contains("--admin-bind"),
            "{}",
            locked[0].reason
        );
        drawn.insert("admin_bind".into(), "0.0.0.0:1".into());
        // A cleared text, an unticked toggle, a typed secret, a new choice.
        drawn.insert("node_ip".into(), String::new());
        drawn.remove("auto_create_rooms");
        drawn.insert("metrics_token".into(), "t".repeat(32));
        drawn.insert("tls_mode".into(), "acme".into());
        let mut got = changes(&drawn, &s, &s, &st);
        got.sort();
        assert_eq!(
            got,
            [
                (SettingKey::NodeIp, None),
                (SettingKey::AutoCreateRooms, Some("false".into())),
                (SettingKey::TlsMode, Some("acme".into())),
                (SettingKey::MetricsToken, Some("t".repeat(32))),
            ]
        );
        // An empty secret field keeps the secret; a choice missing from the form stays.
        let mut keep = form(&[("metrics_token", ""), ("auto_create_rooms", "yes")]);
        keep.insert("node_ip".into(), "203.0.113.7".into());
        assert!(changes(&keep, &s, &s, &st).is_empty());
    }
}
