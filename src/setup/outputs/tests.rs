//! Golden files for four deployments, plus properties the goldens alone would not guard.
//!
//! The goldens are written by the code: `UPDATE_GOLDEN=1 cargo test --lib setup::outputs`
//! rewrites them; review the diff and commit it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::secret::Secret;
use crate::setup::model::{
    AcmeChallenge, Endpoints, LegacyTurn, Network, Ports, ProxyKind, PublicOrigin, Running,
    SynapseVersion, TlsMode,
};
use crate::setup::outputs::ports::Need::{self, Optional, Recommended, Required};

const TURN_SECRET_A: &str = "TurnSecretAlphaOnlyInHomeserverYaml0123456789";
const TURN_SECRET_D: &str = "tricky\"secret\\with:yaml#chars";

fn origin(host: &str, port: Option<u16>) -> PublicOrigin {
    PublicOrigin {
        tls: true,
        host: host.to_owned(),
        port,
    }
}

fn ip(raw: &str) -> IpAddr {
    raw.parse().expect("test addresses are valid")
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// (a) One host behind DSM's reverse proxy, Synapse 1.163.2, legacy TURN on, an existing
/// well-known document with extra keys, a foreign focus and rtcbox's own URL with a slash.
fn one_host_dsm() -> Deployment {
    Deployment {
        server_name: "example.org".into(),
        client_base_url: "https://matrix.example.org".into(),
        synapse_version: Some(SynapseVersion::new(1, 163, 2)),
        existing_well_known: Some(object(json!({
            "m.homeserver": {"base_url": "https://matrix.example.org"},
            "m.identity_server": {"base_url": "https://vector.im"},
            "io.element.e2ee": {"default": true, "secure_backup_required": false},
            "org.matrix.msc4143.rtc_foci": [
                {"type": "livekit", "livekit_service_url": "https://livekit-jwt.call.example.net"},
                {"type": "livekit", "livekit_service_url": "https://rtc.example.org/livekit/jwt/"}
            ]
        }))),
        endpoints: Endpoints::OneHost(origin("rtc.example.org", None)),
        tls: TlsMode::ReverseProxy {
            proxy: ProxyKind::SynologyDsm,
        },
        network: Network {
            lan_ip: ip("192.168.1.20"),
            public_ip: Some(ip("203.0.113.10")),
            follows_public_ip: false,
            ports: Ports::default(),
        },
        legacy_turn: Some(LegacyTurn {
            shared_secret: Secret::new(TURN_SECRET_A),
        }),
        // The Synology package's data directory, owned by its package user.
        running: Running {
            data_dir: Some("/volume1/@appdata/rtcbox".into()),
            data_owner: Some((196613, 65536)),
            // DSM's Let's Encrypt certificate, exported to files mode.
            tls_trusted: true,
            ..Running::default()
        },
    }
}

/// (b) Two hosts behind nginx, Synapse 1.145.0 (rtc/transports yes, MSC3266 still a flag),
/// legacy TURN off, no well-known yet, public IP unknown.
fn two_hosts_nginx() -> Deployment {
    Deployment {
        server_name: "example.net:8448".into(),
        client_base_url: "https://synapse.example.net".into(),
        synapse_version: Some(SynapseVersion::new(1, 145, 0)),
        existing_well_known: None,
        endpoints: Endpoints::TwoHosts {
            jwt: origin("jwt.example.net", None),
            sfu: origin("sfu.example.net", None),
        },
        tls: TlsMode::ReverseProxy {
            proxy: ProxyKind::Nginx,
        },
        network: Network {
            lan_ip: ip("10.0.0.5"),
            public_ip: None,
            follows_public_ip: false,
            ports: Ports::default(),
        },
        legacy_turn: None,
        // systemd, listeners on the LAN address only, one setting pinned by the environment.
        running: Running {
            data_dir: Some("/var/lib/rtcbox".into()),
            data_owner: Some((998, 998)),
            http_bind_ip: ip("10.0.0.5"),
            admin_bind_ip: ip("10.0.0.5"),
            pinned: vec!["RTCBOX_MATRIX_CA_FILE"],
            tls_trusted: false,
        },
    }
}

/// (c) Synapse 1.130.0 (no rtc/transports endpoint), rtcbox's own ACME certificate by HTTP-01,
/// a well-known document with only m.homeserver (without base_url).
fn old_synapse_acme() -> Deployment {
    Deployment {
        server_name: "example.com".into(),
        client_base_url: "https://example.com".into(),
        synapse_version: Some(SynapseVersion::new(1, 130, 0)),
        existing_well_known: Some(object(json!({"m.homeserver": {}}))),
        endpoints: Endpoints::OneHost(origin("call.example.com", None)),
        tls: TlsMode::Acme {
            challenge: AcmeChallenge::Http01,
            email: "admin@example.com".into(),
        },
        network: Network {
            lan_ip: ip("192.168.178.40"),
            public_ip: Some(ip("198.51.100.7")),
            follows_public_ip: false,
            ports: Ports::default(),
        },
        legacy_turn: None,
        // Already in this image's container.
        running: Running {
            data_dir: Some("/data".into()),
            data_owner: Some((65532, 65532)),
            // The certificate has been issued.
            tls_trusted: true,
            ..Running::default()
        },
    }
}

/// (d) Synapse version unknown, IPv6, self-signed, a public port other than 443, every port
/// moved, and a TURN secret full of YAML syntax.
fn ipv6_self_signed() -> Deployment {
    Deployment {
        server_name: "example.dev".into(),
        client_base_url: "https://hs.example.dev:8448".into(),
        synapse_version: None,
        existing_well_known: Some(object(json!({
            "m.homeserver": {"base_url": "https://hs.example.dev:8448"},
            "org.example.custom": "it's $5 {literally} `ok`\n"
        }))),
        endpoints: Endpoints::OneHost(origin("rtc.example.dev", Some(8444))),
        tls: TlsMode::SelfSigned,
        network: Network {
            lan_ip: ip("2001:db8:10::20"),
            public_ip: Some(ip("2001:db8:10::20")),
            follows_public_ip: false,
            ports: Ports {
                http: 9080,
                https: 9443,
                admin: 9089,
                rtc_udp: 50000,
                rtc_tcp: 50001,
                turn: 3479,
                turns: 5350,
                relay_min: 40000,
                relay_max: 40099,
            },
        },
        legacy_turn: Some(LegacyTurn {
            shared_secret: Secret::new(TURN_SECRET_D),
        }),
        // As root, in a folder whose name needs quoting; the admin panel on one address.
        running: Running {
            data_dir: Some("/root/rtc box/$data".into()),
            data_owner: Some((0, 0)),
            http_bind_ip: ip("::"),
            admin_bind_ip: ip("2001:db8:10::20"),
            pinned: Vec::new(),
            tls_trusted: false,
        },
    }
}

fn cases() -> Vec<(&'static str, Deployment)> {
    vec![
        ("one-host-dsm", one_host_dsm()),
        ("two-hosts-nginx", two_hosts_nginx()),
        ("old-synapse-acme", old_synapse_acme()),
        ("ipv6-self-signed", ipv6_self_signed()),
    ]
}

// ---- goldens ----

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/setup/outputs/golden")
}

/// The golden file name of an output: its id plus the download's extension (or the whole
/// download name when it has none, as `Caddyfile`).
fn golden_name(output: &Output) -> String {
    let ext = match output.filename.rsplit_once('.') {
        Some((_, ext)) => ext,
        None => output.filename.as_str(),
    };
    format!("{}.{ext}", output.id)
}

/// Extra generated fragments kept next to the outputs, for tests outside Rust (e.g. `nginx -t`
/// on the well-known location block alone).
fn fragments(d: &Deployment) -> Vec<(&'static str, String)> {
    vec![(
        "well-known-nginx-location.conf",
        well_known::nginx_location(d),
    )]
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn check(case: &str, name: &str, actual: &str) {
    let path = golden_dir().join(case).join(name);
    if updating() {
        std::fs::create_dir_all(
            path.parent()
                .expect("golden files live in a case directory"),
        )
        .expect("create the golden directory");
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test --lib setup::outputs",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the generated text, first at line {}:\n  golden:    {:?}\n  generated: {:?}\n\
             If the change is intended, run UPDATE_GOLDEN=1 cargo test --lib setup::outputs \
             and review the diff.",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

fn check_case(case: &str, d: &Deployment) {
    for output in all(d) {
        check(case, &golden_name(&output), &output.text);
    }
    for (name, text) in fragments(d) {
        check(case, name, &text);
    }
}

#[test]
fn golden_one_host_dsm() {
    check_case("one-host-dsm", &one_host_dsm());
}

#[test]
fn golden_two_hosts_nginx() {
    check_case("two-hosts-nginx", &two_hosts_nginx());
}

#[test]
fn golden_old_synapse_acme() {
    check_case("old-synapse-acme", &old_synapse_acme());
}

#[test]
fn golden_ipv6_self_signed() {
    check_case("ipv6-self-signed", &ipv6_self_signed());
}

#[test]
fn golden_directory_has_no_stale_files() {
    if updating() {
        return;
    }
    let expected_cases: BTreeSet<String> = cases().iter().map(|(c, _)| (*c).to_owned()).collect();
    let mut found_cases = BTreeSet::new();
    for entry in std::fs::read_dir(golden_dir()).expect("the golden directory exists") {
        let entry = entry.expect("readable directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            entry.path().is_dir(),
            "{name}: only case directories belong in golden/"
        );
        found_cases.insert(name);
    }
    assert_eq!(found_cases, expected_cases, "golden case directories");
    for (case, d) in cases() {
        let mut expected: BTreeSet<String> = all(&d).iter().map(golden_name).collect();
        expected.extend(fragments(&d).into_iter().map(|(n, _)| n.to_owned()));
        let found: BTreeSet<String> = std::fs::read_dir(golden_dir().join(case))
            .expect("the case directory exists")
            .map(|e| {
                e.expect("readable directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(found, expected, "files in golden/{case}");
    }
}

// ---- the output list ----

#[test]
fn outputs_have_the_documented_ids_filenames_and_order() {
    let d = one_host_dsm();
    let outputs = all(&d);
    let ids: Vec<&str> = outputs.iter().map(|o| o.id).collect();
    assert_eq!(ids, IDS);
    let filenames: Vec<&str> = outputs.iter().map(|o| o.filename.as_str()).collect();
    assert_eq!(
        filenames,
        [
            "homeserver-rtcbox.yaml",
            "matrix-client-well-known.json",
            "well-known-serving.txt",
            "synology-dsm-reverse-proxy.txt",
            "rtcbox-nginx.conf",
            "Caddyfile",
            "rtcbox-traefik.yml",
            "rtcbox-apache.conf",
            "port-forwards.txt",
            "dsm-firewall.txt",
            "compose.yaml",
        ]
    );
    for output in &outputs {
        assert!(
            !output.title.is_empty() && !output.intro.is_empty(),
            "{}",
            output.id
        );
        assert!(
            output.text.ends_with('\n'),
            "{} ends with a newline",
            output.id
        );
        assert!(
            !output.text.contains('\t') || output.id == proxy::CADDY_ID,
            "{}: tabs only in the Caddyfile",
            output.id
        );
        assert!(
            output.text.lines().all(|l| l == l.trim_end()),
            "{}: no trailing spaces",
            output.id
        );
        assert_eq!(by_id(&d, output.id).as_ref(), Some(output));
    }
    assert_eq!(by_id(&d, "nope"), None);
}

// ---- homeserver.yaml ----

/// The keys set by lines that are not comments, with their indentation.
fn yaml_keys(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let indent = l.len() - l.trim_start().len();
            let body = l.trim_start().trim_start_matches("- ");
            let (key, _) = body.split_once(':')?;
            Some((indent, key.to_owned()))
        })
        .collect()
}

fn with_version(version: Option<SynapseVersion>) -> Deployment {
    Deployment {
        synapse_version: version,
        ..one_host_dsm()
    }
}

fn versions() -> Vec<Option<SynapseVersion>> {
    let mut out = vec![None];
    for (minor, patch) in [
        (99, 0),
        (130, 0),
        (139, 9),
        (140, 0),
        (145, 0),
        (152, 3),
        (153, 0),
        (153, 1),
        (157, 1),
        (163, 2),
    ] {
        out.push(Some(SynapseVersion::new(1, minor, patch)));
    }
    out.push(Some(SynapseVersion::new(2, 0, 0)));
    out
}

#[test]
fn msc3266_only_before_1_153() {
    for version in versions() {
        let text = synapse::homeserver_yaml(&with_version(version)).text;
        let has = yaml_keys(&text).iter().any(|(_, k)| k == "msc3266_enabled");
        let expected = version.is_some_and(|v| v < SynapseVersion::new(1, 153, 0));
        assert_eq!(has, expected, "msc3266_enabled for {version:?}");
    }
}

#[test]
fn msc4143_always_comes_with_a_non_empty_transport_list() {
    for version in versions() {
        let d = with_version(version);
        let text = synapse::homeserver_yaml(&d).text;
        let keys = yaml_keys(&text);
        let enabled = keys.iter().any(|(_, k)| k == "msc4143_enabled");
        let expected = version.is_none_or(|v| v >= SynapseVersion::new(1, 140, 0));
        assert_eq!(enabled, expected, "msc4143_enabled for {version:?}");
        let has_matrix_rtc = keys.iter().any(|(i, k)| *i == 0 && k == "matrix_rtc");
        assert_eq!(has_matrix_rtc, enabled, "matrix_rtc for {version:?}");
        if enabled {
            let block = format!(
                "matrix_rtc:\n  transports:\n    - type: livekit\n      livekit_service_url: \"{}\"\n",
                d.endpoints.livekit_service_url()
            );
            assert!(text.contains(&block), "transports for {version:?}:\n{text}");
        } else {
            assert!(text.contains("needs Synapse 1.140.0 or newer.\n"), "{text}");
        }
    }
}

#[test]
fn synapse_keys_sit_where_synapse_reads_them() {
    for (case, d) in cases() {
        let text = synapse::homeserver_yaml(&d).text;
        let keys = yaml_keys(&text);
        let top: Vec<&str> = keys
            .iter()
            .filter(|(i, _)| *i == 0)
            .map(|(_, k)| k.as_str())
            .collect();
        assert!(
            text.lines().any(|l| l == "max_event_delay_duration: 24h"),
            "{case}: max_event_delay_duration at column 0"
        );
        for key in [
            "max_event_delay_duration",
            "experimental_features",
            "rc_message",
        ] {
            assert_eq!(
                top.iter().filter(|k| **k == key).count(),
                1,
                "{case}: {key} once, at the top level"
            );
        }
        assert!(
            !keys
                .iter()
                .any(|(i, k)| *i > 0 && k == "max_event_delay_duration"),
            "{case}: never nested"
        );
        assert!(
            text.contains("experimental_features:\n  # MSC4222"),
            "{case}: msc4222 under experimental_features"
        );
        assert!(text.contains("  msc4222_enabled: true\n"), "{case}");
        assert!(text.contains("rc_message:\n  per_second: 0.5\n  burst_count: 30\n"));
        assert!(text.contains("rc_delayed_event_mgmt:\n  per_second: 1\n  burst_count: 20\n"));
        let mut unique = top.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            top.len(),
            "{case}: no duplicate top-level keys"
        );
        let turn_keys = top.iter().filter(|k| k.starts_with("turn_")).count();
        assert_eq!(
            turn_keys,
            if d.legacy_turn.is_some() { 4 } else { 0 },
            "{case}: turn keys only with legacy TURN"
        );
    }
}

#[test]
fn turn_settings_use_the_sfu_host_and_the_configured_ports() {
    let text = synapse::homeserver_yaml(&ipv6_self_signed()).text;
    assert!(text.contains("  - \"turn:rtc.example.dev:3479?transport=udp\"\n"));
    assert!(text.contains("  - \"turn:rtc.example.dev:3479?transport=tcp\"\n"));
    // Self-signed: no turns: (browsers would reject it), and the snippet says when it comes.
    assert!(!text.contains("turns:rtc.example.dev"));
    assert!(text.contains("# TURN over TLS (turns:) is added here once rtcbox serves"));
    let mut trusted = ipv6_self_signed();
    trusted.running.tls_trusted = true;
    let text = synapse::homeserver_yaml(&trusted).text;
    assert!(text.contains("  - \"turns:rtc.example.dev:5350?transport=tcp\"\n"));
    assert!(!text.contains("is added here once"));
    assert!(text.contains("turn_shared_secret: \"tricky\\\"secret\\\\with:yaml#chars\"\n"));
    assert!(text.lines().any(|l| l == "turn_user_lifetime: 1h"));
    assert!(text.lines().any(|l| l == "turn_allow_guests: false"));
}

#[test]
fn version_comment_names_the_version_or_says_it_is_unknown() {
    let known = synapse::homeserver_yaml(&one_host_dsm()).text;
    assert!(known.contains("# Generated for Synapse 1.163.2.\n"));
    let unknown = synapse::homeserver_yaml(&ipv6_self_signed()).text;
    assert!(unknown.contains("# Synapse version unknown: assuming a current Synapse"));
    for text in [known, unknown] {
        assert!(text.contains("the last\n# one silently wins"));
        assert!(text.contains("`openid` resource"));
    }
}

#[test]
fn yaml_strings_are_escaped() {
    let check = |raw: &str, expected: &str| assert_eq!(yaml_str(raw), expected, "{raw:?}");
    check("", "\"\"");
    check(
        "https://rtc.example.org/livekit/jwt",
        "\"https://rtc.example.org/livekit/jwt\"",
    );
    check("say \"hi\"", "\"say \\\"hi\\\"\"");
    check("a\\b", "\"a\\\\b\"");
    check("line\nbreak: key", "\"line\\nbreak: key\"");
    check("tab\there", "\"tab\\there\"");
    check("bell\u{7}", "\"bell\\u0007\"");
    check("nel\u{85}", "\"nel\\u0085\"");
    check("sep\u{2028}", "\"sep\\u2028\"");
    check("yes", "\"yes\"");
    check("# not a comment", "\"# not a comment\"");
    check("grüße", "\"grüße\"");
}

#[test]
fn json_values_become_block_yaml() {
    let mut out = String::new();
    yaml_entry(
        &mut out,
        0,
        "extra",
        &json!({"list": [{"a": 1, "b": {"c": "x"}}, "s", []], "yes": null, "empty": {}}),
    );
    assert_eq!(
        out,
        "extra:\n  empty: {}\n  list:\n    - a: 1\n      b:\n        c: \"x\"\n    - \"s\"\n    - []\n  \"yes\": null\n"
    );
}

// ---- well-known ----

#[test]
fn well_known_keeps_existing_keys_and_puts_rtcbox_first() {
    let d = one_host_dsm();
    let doc = well_known::well_known_json(&d);
    let existing = d.existing_well_known.clone().expect("fixture has one");
    for key in existing.keys() {
        assert!(doc.get(key).is_some(), "kept {key}");
    }
    assert_eq!(doc["m.identity_server"], existing["m.identity_server"]);
    assert_eq!(doc["io.element.e2ee"], existing["io.element.e2ee"]);
    assert_eq!(
        doc["m.homeserver"]["base_url"],
        "https://matrix.example.org"
    );
    let foci = doc[well_known::RTC_FOCI_KEY]
        .as_array()
        .expect("rtc_foci is a list");
    assert_eq!(
        foci,
        &vec![
            json!({"type": "livekit", "livekit_service_url": "https://rtc.example.org/livekit/jwt"}),
            json!({"type": "livekit", "livekit_service_url": "https://livekit-jwt.call.example.net"}),
        ],
        "ours first, the foreign one kept, our old spelling (trailing slash) dropped"
    );

    let text = well_known::client_json(&d).text;
    let parsed: Value = serde_json::from_str(&text).expect("the output is JSON");
    assert_eq!(parsed, doc);
    assert!(text.ends_with("}\n") && text.contains("\n  \"m.homeserver\": {\n"));
}

#[test]
fn an_unread_well_known_is_said_and_gets_an_add_only_entry() {
    // Read: the complete document "keeps every entry rtcbox read"; nothing to add by hand.
    let read = one_host_dsm();
    assert!(
        well_known::client_json(&read)
            .intro
            .contains("keeps every entry rtcbox read")
    );
    assert!(well_known::add_only(&read).is_none());
    assert!(!all(&read).iter().any(|o| o.id == well_known::ADD_ID));
    // Not read (discovery failed): no claim to keep anything; the entry to add instead.
    let unread = two_hosts_nginx();
    let intro = well_known::client_json(&unread).intro;
    assert!(
        intro.contains("could not read a current document"),
        "{intro}"
    );
    assert!(!intro.contains("keeps every"), "{intro}");
    let add = well_known::add_only(&unread).expect("an add-only entry");
    assert_eq!(
        all(&unread)
            .iter()
            .map(|o| o.id)
            .position(|id| id == well_known::ADD_ID),
        Some(2),
        "right after the complete document"
    );
    // The entry is valid JSON once it sits in an object.
    let (_, entry) = add.text.split_once("\n\n").expect("prose, then the entry");
    let object: Value = serde_json::from_str(&format!("{{{entry}}}")).expect("{entry}");
    assert_eq!(
        object,
        json!({well_known::RTC_FOCI_KEY: [{"type": "livekit", "livekit_service_url": "https://jwt.example.net"}]})
    );
}

#[test]
fn well_known_base_url_is_kept_or_filled_in() {
    let check = |existing: Option<Value>, expected: Value| {
        let d = Deployment {
            existing_well_known: existing.map(object),
            ..two_hosts_nginx()
        };
        let doc = well_known::well_known_json(&d);
        assert_eq!(doc["m.homeserver"], expected);
        assert_eq!(
            doc[well_known::RTC_FOCI_KEY][0]["livekit_service_url"],
            "https://jwt.example.net"
        );
    };
    let ours = json!({"base_url": "https://synapse.example.net"});
    check(None, ours.clone());
    check(Some(json!({})), ours.clone());
    check(Some(json!({"m.homeserver": {}})), ours.clone());
    check(Some(json!({"m.homeserver": "nonsense"})), ours.clone());
    check(
        Some(json!({"m.homeserver": {"base_url": "https://other.example", "x": 1}})),
        json!({"base_url": "https://other.example", "x": 1}),
    );
    check(
        Some(json!({"m.homeserver": {"server_name": "example.net"}})),
        json!({"base_url": "https://synapse.example.net", "server_name": "example.net"}),
    );
}

#[test]
fn duplicate_foci_are_dropped_once_each() {
    let foreign = json!({"type": "livekit", "livekit_service_url": "https://f.example"});
    let other_kind = json!({"type": "nextgen", "url": "https://n.example"});
    let d = Deployment {
        existing_well_known: Some(object(json!({
            "org.matrix.msc4143.rtc_foci": [
                foreign, other_kind, foreign,
                {"type": "livekit", "livekit_service_url": "https://rtc.example.org/livekit/jwt"}
            ]
        }))),
        ..one_host_dsm()
    };
    let doc = well_known::well_known_json(&d);
    assert_eq!(
        doc[well_known::RTC_FOCI_KEY],
        json!([well_known::our_focus(&d), foreign, other_kind])
    );
}

/// What nginx makes of a single-quoted string: `\\`, `\'` and `\"` lose the backslash, `\n`,
/// `\r` and `\t` become control characters, anything else stays.
fn nginx_unquote(quoted: &str) -> String {
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(n @ ('\\' | '\'' | '"')) => out.push(n),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[test]
fn nginx_location_answers_with_the_exact_document() {
    for (case, d) in cases() {
        let block = well_known::nginx_location(&d);
        assert!(block.starts_with("location = /.well-known/matrix/client {\n"));
        assert!(block.ends_with("}\n"));
        assert!(block.contains("    default_type application/json;\n"));
        assert!(block.contains("    add_header Access-Control-Allow-Origin \"*\" always;\n"));
        let start = block.find("return 200 '").expect("a return line") + "return 200 '".len();
        let end = block.rfind("';\n").expect("the string ends");
        let quoted = &block[start..end];
        assert!(!quoted.contains('$'), "{case}: no nginx variables");
        let mut prev_backslashes = 0;
        for c in quoted.chars() {
            assert!(
                c != '\'' || prev_backslashes % 2 == 1,
                "{case}: no unescaped quote"
            );
            prev_backslashes = if c == '\\' { prev_backslashes + 1 } else { 0 };
        }
        let served: Value =
            serde_json::from_str(&nginx_unquote(quoted)).expect("nginx serves valid JSON");
        assert_eq!(served, well_known::well_known_json(&d), "{case}");
    }
}

#[test]
fn caddy_respond_answers_with_the_exact_document() {
    for (case, d) in cases() {
        let text = well_known::serving(&d).text;
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("respond `"))
            .expect("a respond line");
        let body = line
            .trim()
            .strip_prefix("respond `")
            .and_then(|l| l.strip_suffix("` 200"))
            .expect("respond `...` 200");
        assert!(!body.contains('`'), "{case}");
        assert!(!body.contains("{$"), "{case}: no environment placeholders");
        let served: Value = serde_json::from_str(body).expect("Caddy serves valid JSON");
        assert_eq!(served, well_known::well_known_json(&d), "{case}");
    }
}

#[test]
fn serving_instructions_name_the_base_domain() {
    let text = well_known::serving(&one_host_dsm()).text;
    assert!(text.contains("https://example.org/.well-known/matrix/client"));
    assert!(text.contains("NOT looked up on the host"));
    for header in [
        "Access-Control-Allow-Origin: *",
        "Content-Type: application/json",
    ] {
        assert!(text.contains(header), "{header}");
    }
    assert!(text.contains("extra_well_known_client_content:\n  org.matrix.msc4143.rtc_foci:\n    - livekit_service_url: \"https://rtc.example.org/livekit/jwt\"\n      type: \"livekit\"\n"));
}

// ---- proxies ----

#[test]
fn proxies_forward_whole_hosts_to_the_http_port() {
    for (case, d) in cases() {
        let upstream = upstream(&d);
        let nginx = proxy::nginx(&d).text;
        assert!(
            nginx.contains(&format!("proxy_pass http://{upstream};")),
            "{case}"
        );
        assert!(nginx.contains("proxy_set_header Upgrade $http_upgrade;"));
        assert!(nginx.contains("proxy_set_header Connection $rtcbox_connection_upgrade;"));
        assert!(nginx.starts_with("# rtcbox behind nginx"));
        assert_eq!(
            nginx.matches("server {\n").count(),
            public_origins(&d).len()
                + usize::from(public_origins(&d).iter().any(|o| o.effective_port() == 443)),
            "{case}: one server per host plus the redirect"
        );
        assert!(
            proxy::caddy(&d)
                .text
                .contains(&format!("\treverse_proxy {upstream}\n"))
        );
        assert!(
            proxy::traefik(&d)
                .text
                .contains(&format!("- url: \"http://{upstream}\"\n"))
        );
        let apache = proxy::apache(&d).text;
        assert!(apache.contains(&format!(
            "ProxyPass \"/\" \"http://{upstream}/\" upgrade=websocket timeout=3600"
        )));
        let dsm = proxy::synology_dsm(&d).text;
        assert!(dsm.contains(&format!(
            "Hostname localhost, Port {}",
            d.network.ports.http
        )));
        assert!(dsm.contains("Create > WebSocket"));
        for origin in public_origins(&d) {
            assert!(
                nginx.contains(&format!("server_name {};", origin.host)),
                "{case}"
            );
            assert!(
                dsm.contains(&format!("Hostname {}, Port", origin.host)),
                "{case}"
            );
        }
    }
}

#[test]
fn two_hosts_get_two_rules() {
    let d = two_hosts_nginx();
    let dsm = proxy::synology_dsm(&d).text;
    assert!(dsm.contains("Rule 1 of 2: jwt.example.net (authorization service)"));
    assert!(dsm.contains("Rule 2 of 2: sfu.example.net (SFU)"));
    let traefik = proxy::traefik(&d).text;
    assert!(traefik.contains("rule: \"Host(`jwt.example.net`)\""));
    assert!(traefik.contains("rule: \"Host(`sfu.example.net`)\""));
    assert!(
        proxy::caddy(&d)
            .text
            .contains("\njwt.example.net, sfu.example.net {\n")
    );
    let nginx = proxy::nginx(&d).text;
    assert!(nginx.contains("    server_name jwt.example.net sfu.example.net;\n"));
    assert!(nginx.contains("        return 301 https://$host$request_uri;\n"));
}

#[test]
fn ipv6_upstreams_are_bracketed() {
    let d = ipv6_self_signed();
    assert_eq!(upstream(&d), "[2001:db8:10::20]:9080");
    assert!(proxy::nginx(&d).text.contains("listen 8444 ssl;"));
    assert!(proxy::caddy(&d).text.contains("\nrtc.example.dev:8444 {\n"));
}

// ---- ports ----

#[test]
fn port_forwards_follow_the_configured_ports() {
    let d = ipv6_self_signed();
    let rows: Vec<(&str, String, String, Need)> = ports::port_forwards(&d)
        .into_iter()
        .map(|f| (f.protocol, f.external, f.internal, f.need))
        .collect();
    let v6 = "[2001:db8:10::20]";
    assert_eq!(
        rows,
        vec![
            ("TCP", "8444".into(), format!("{v6}:9443"), Required),
            ("UDP", "50000".into(), format!("{v6}:50000"), Required),
            ("TCP", "50001".into(), format!("{v6}:50001"), Recommended),
            ("UDP", "3479".into(), format!("{v6}:3479"), Required),
            ("TCP", "3479".into(), format!("{v6}:3479"), Recommended),
            (
                "UDP",
                "40000-40099".into(),
                format!("{v6}:40000-40099"),
                Required
            ),
        ]
    );

    let mut moved = one_host_dsm();
    moved.network.ports.rtc_udp = 12345;
    moved.network.ports.rtc_tcp = 12346;
    let forwards = ports::port_forwards(&moved);
    assert!(forwards.iter().any(|f| f.protocol == "UDP"
        && f.external == "12345"
        && f.internal == "192.168.1.20:12345"));
    assert!(forwards.iter().any(|f| f.protocol == "TCP"
        && f.external == "12346"
        && f.internal == "192.168.1.20:12346"));
    let text = ports::forwards(&moved).text;
    assert!(
        text.lines().any(|l| l.split_whitespace().eq([
            "UDP",
            "12345",
            "192.168.1.20:12345",
            "required"
        ])),
        "{text}"
    );
    assert!(!text.contains("8882"));
    let firewall = ports::dsm_firewall(&moved).text;
    assert!(
        firewall
            .lines()
            .any(|l| l.starts_with("UDP") && l.split_whitespace().nth(1) == Some("12345")),
        "{firewall}"
    );
}

#[test]
fn port_forwards_depend_on_the_tls_mode() {
    let external = |d: &Deployment| -> Vec<(&'static str, String, String)> {
        ports::port_forwards(d)
            .into_iter()
            .filter(|f| f.protocol == "TCP" && matches!(f.external.as_str(), "80" | "443"))
            .map(|f| (f.protocol, f.external, f.internal))
            .collect()
    };
    assert_eq!(
        external(&one_host_dsm()),
        vec![
            ("TCP", "443".into(), "192.168.1.20:443".into()),
            ("TCP", "80".into(), "192.168.1.20:80".into()),
        ]
    );
    assert_eq!(
        external(&old_synapse_acme()),
        vec![
            ("TCP", "443".into(), "192.168.178.40:8443".into()),
            ("TCP", "80".into(), "192.168.178.40:8880".into()),
        ]
    );
    for (challenge, rows) in [(AcmeChallenge::TlsAlpn01, 1), (AcmeChallenge::Dns01, 1)] {
        let d = Deployment {
            tls: TlsMode::Acme {
                challenge,
                email: "a@example.com".into(),
            },
            ..old_synapse_acme()
        };
        assert_eq!(external(&d).len(), rows, "{challenge:?}: no port 80");
    }
    let proxied = external(&two_hosts_nginx());
    assert_eq!(proxied[0].2, "your reverse proxy's address, port 443");
    assert!(
        ports::port_forwards(&two_hosts_nginx())
            .iter()
            .all(|f| !f.protocol.is_empty() && !f.breaks_without.is_empty()),
    );
    // Without legacy TURN: the TURN listeners as recommended rows, no relay range.
    let turn_rows = |d: &Deployment| -> Vec<(&'static str, String, Need)> {
        ports::port_forwards(d)
            .into_iter()
            .filter(|f| f.purpose.contains("TURN"))
            .map(|f| (f.protocol, f.external, f.need))
            .collect()
    };
    assert_eq!(
        turn_rows(&two_hosts_nginx()),
        vec![
            ("UDP", "3478".into(), Recommended),
            ("TCP", "3478".into(), Recommended),
        ]
    );
    // TURN over TLS joins once the served certificate is one browsers trust.
    let mut trusted = two_hosts_nginx();
    trusted.running.tls_trusted = true;
    assert_eq!(
        turn_rows(&trusted),
        vec![
            ("UDP", "3478".into(), Recommended),
            ("TCP", "3478".into(), Recommended),
            ("TCP", "5349".into(), Recommended),
        ]
    );
    assert_eq!(
        turn_rows(&one_host_dsm()),
        vec![
            ("UDP", "3478".into(), Required),
            ("TCP", "3478".into(), Recommended),
            ("TCP", "5349".into(), Recommended),
            ("UDP", "49160-49200".into(), Required),
        ]
    );
}

#[test]
fn a_forwards_need_is_one_word_everywhere() {
    for (case, d) in cases() {
        let text = ports::forwards(&d).text;
        let forwards = ports::port_forwards(&d);
        for f in &forwards {
            // The table's word is the only verdict: the prose never names another one (it once
            // said "Strongly recommended" on a row the table called optional).
            let prose = format!("{} {}", f.purpose, f.breaks_without).to_lowercase();
            for word in ["required", "recommended", "optional"] {
                assert!(
                    !prose.contains(word),
                    "{case}: {} {} says {word:?}: {prose}",
                    f.protocol,
                    f.external
                );
            }
            assert!(
                text.lines().any(|l| l.starts_with(f.protocol)
                    && l.contains(&format!(" {} ", f.external))
                    && l.contains(&f.internal)
                    && l.ends_with(&format!("  {}", f.need.label()))),
                "{case}: no table line says {} for {} {}:\n{text}",
                f.need.label(),
                f.protocol,
                f.external
            );
        }
        assert!(
            text.contains("\n\nRequired: calls fail without it. Recommended:"),
            "{text}"
        );
        let need = |external: &str| {
            forwards
                .iter()
                .find(|f| f.external == external)
                .map(|f| f.need)
        };
        assert_eq!(
            need(&d.network.ports.rtc_udp.to_string()),
            Some(Required),
            "{case}"
        );
        assert_eq!(
            need(&d.network.ports.rtc_tcp.to_string()),
            Some(Recommended),
            "{case}"
        );
    }
    // Port 80 for a proxy's own certificate can be replaced by DNS-01 or bought certificates.
    let dsm = ports::port_forwards(&one_host_dsm());
    assert_eq!(
        dsm.iter().find(|f| f.external == "80").map(|f| f.need),
        Some(Optional)
    );
}

#[test]
fn firewall_restricts_the_admin_port_to_the_lan() {
    let text = ports::dsm_firewall(&one_host_dsm()).text;
    assert!(
        text.lines().any(|l| l.starts_with("TCP")
            && l.contains(" 8089 ")
            && l.contains("LAN (192.168.1.0/24)")),
        "{text}"
    );
    assert!(text.contains("IP address 192.168.1.0, Subnet mask 255.255.255.0"));
    let v6 = ports::dsm_firewall(&ipv6_self_signed()).text;
    assert!(v6.contains("LAN (2001:db8:10::/64)"), "{v6}");
}

// ---- compose ----

/// Every case, and each case again with every other way rtcbox may run now.
fn compose_variants() -> Vec<(String, Deployment)> {
    let runs = [
        Running::default(),
        Running {
            data_dir: Some("/srv/a:b/rtcbox".into()),
            data_owner: Some((1000, 100)),
            ..Running::default()
        },
        Running {
            data_dir: Some("/srv/rtcbox".into()),
            data_owner: Some((65532, 65532)),
            http_bind_ip: ip("192.168.1.20"),
            pinned: vec!["RTCBOX_PUBLIC_URL", "RTCBOX_NODE_IP"],
            ..Running::default()
        },
        Running {
            data_dir: Some("/data".into()),
            data_owner: Some((0, 0)),
            admin_bind_ip: ip("127.0.0.1"),
            ..Running::default()
        },
    ];
    let mut out = Vec::new();
    for (case, d) in cases() {
        for (i, running) in runs.iter().enumerate() {
            let variant = Deployment {
                running: running.clone(),
                ..d.clone()
            };
            out.push((format!("{case}/running-{i}"), variant));
        }
        out.push((case.to_owned(), d));
    }
    out
}

/// The lines that are not comments.
fn active_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect()
}

/// The words of every comment, joined by single spaces, for phrases that wrap across lines.
fn prose(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bridge block's port entries: `(host address, outside, inside, protocol)`.
fn bridge_ports(text: &str) -> Vec<(Option<String>, String, String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("    #   - \""))
        .map(|entry| {
            let entry = entry.strip_suffix('"').expect("a quoted entry");
            let (mapping, protocol) = entry.rsplit_once('/').expect("a protocol");
            let (outside, inside) = mapping.rsplit_once(':').expect("outside:inside");
            let (host, outside) = match outside.rsplit_once(':') {
                Some((host, port)) if !port.contains(']') => (Some(host.to_owned()), port),
                _ => (None, outside),
            };
            (
                host,
                outside.to_owned(),
                inside.to_owned(),
                protocol.to_owned(),
            )
        })
        .collect()
}

#[test]
fn compose_pins_nothing_in_host_mode() {
    for (case, d) in compose_variants() {
        let text = compose::compose_yaml(&d).text;
        let active = active_lines(&text);
        for line in &active {
            assert!(!line.contains("RTCBOX_"), "{case}: {line}");
            assert!(!line.trim_start().starts_with("environment:"), "{case}");
            assert!(!line.trim_start().starts_with("ports:"), "{case}");
            assert!(!line.trim_start().starts_with("healthcheck:"), "{case}");
        }
        for line in [
            format!(
                "    image: \"{}:{}\"",
                compose::CONTAINER_IMAGE,
                env!("CARGO_PKG_VERSION")
            ),
            "    container_name: rtcbox".to_owned(),
            "    network_mode: host".to_owned(),
            "    restart: unless-stopped".to_owned(),
            "    stop_grace_period: 30s".to_owned(),
        ] {
            assert_eq!(
                active.iter().filter(|l| **l == line).count(),
                1,
                "{case}: {line}"
            );
        }
        assert!(!text.contains("RTCBOX_HTTPS_BIND"), "{case}");
        assert!(text.contains("`docker logs rtcbox`"), "{case}");
    }
}

#[test]
fn compose_mounts_the_data_directory_at_data() {
    for (case, d) in compose_variants() {
        let text = compose::compose_yaml(&d).text;
        let active = active_lines(&text);
        let host_path = d.running.data_dir.as_deref().filter(|p| *p != "/data");
        match host_path {
            Some(dir) if !dir.contains(':') => assert!(
                active.contains(
                    &format!(
                        "      - {}",
                        yaml_str(&format!("{dir}:/data").replace('$', "$$"))
                    )
                    .as_str()
                ),
                "{case}:\n{text}"
            ),
            Some(dir) => {
                assert!(active.contains(&format!("        source: {}", yaml_str(dir)).as_str()));
                assert!(active.contains(&"        target: /data"), "{case}");
            }
            None => {
                assert!(
                    active.contains(&"        source: \"/path/to/rtcbox-data\""),
                    "{case}"
                );
                assert!(active.contains(&"        target: /data"), "{case}");
                assert!(
                    active.contains(&"          create_host_path: false"),
                    "{case}"
                );
                if d.running.data_dir.is_some() {
                    assert!(
                        prose(&text).contains("the folder you mount at /data now"),
                        "{case}"
                    );
                }
            }
        }
        let user = active.iter().find(|l| l.starts_with("    user: "));
        match d.running.data_owner {
            Some((65532, 65532)) | None => assert_eq!(user, None, "{case}"),
            Some((uid, gid)) => {
                assert_eq!(
                    user,
                    Some(&format!("    user: \"{uid}:{gid}\"").as_str()),
                    "{case}"
                );
                assert_eq!(
                    prose(&text).contains("chown -R 65532:65532"),
                    uid == 0,
                    "{case}"
                );
            }
        }
    }
    let dollar = Deployment {
        running: Running {
            data_dir: Some("/srv/$HOME".into()),
            ..Running::default()
        },
        ..one_host_dsm()
    };
    assert!(
        compose::compose_yaml(&dollar)
            .text
            .contains("      - \"/srv/$$HOME:/data\"\n")
    );
}

#[test]
fn compose_bridge_block_publishes_exactly_the_needed_ports() {
    for (case, d) in compose_variants() {
        let text = compose::compose_yaml(&d).text;
        let ports = d.network.ports;
        let mut expected: Vec<(Option<String>, String, String, String)> = [
            (ports.http, "tcp"),
            (ports.admin, "tcp"),
            (ports.rtc_udp, "udp"),
            (ports.rtc_tcp, "tcp"),
            (ports.turn, "udp"),
            (ports.turn, "tcp"),
            (ports.turns, "tcp"),
        ]
        .into_iter()
        .map(|(port, protocol)| {
            let host = (port == ports.admin).then(|| bracketed_host(&d.network.lan_ip.to_string()));
            (
                host,
                port.to_string(),
                port.to_string(),
                protocol.to_owned(),
            )
        })
        .collect();
        if d.legacy_turn.is_some() {
            let range = format!("{}-{}", ports.relay_min, ports.relay_max);
            expected.push((None, range.clone(), range, "udp".to_owned()));
        }
        let mut found = bridge_ports(&text);
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "{case}");
        assert_eq!(
            text.contains(&format!("{}-{}", ports.relay_min, ports.relay_max)),
            d.legacy_turn.is_some(),
            "{case}: the relay range iff legacy TURN"
        );
        // The bind pins, commented, only for a listener on one address.
        for (name, ip, port) in [
            ("RTCBOX_HTTP_BIND", d.running.http_bind_ip, ports.http),
            ("RTCBOX_ADMIN_BIND", d.running.admin_bind_ip, ports.admin),
        ] {
            let pin = format!("    #   {name}: \"0.0.0.0:{port}\"\n");
            assert_eq!(text.contains(&pin), !ip.is_unspecified(), "{case}: {name}");
        }
        assert_eq!(
            text.contains("    # environment:\n"),
            !d.running.http_bind_ip.is_unspecified() || !d.running.admin_bind_ip.is_unspecified(),
            "{case}"
        );
        if d.network.public_ip.is_none() {
            assert!(
                prose(&text).contains("the public IP, which is not set"),
                "{case}"
            );
        }
        for name in &d.running.pinned {
            assert!(text.contains(name), "{case}: {name} is named");
        }
    }
}

#[test]
fn compose_carries_no_secret() {
    for (case, d) in compose_variants() {
        let output = compose::compose_yaml(&d);
        let all = format!("{}\n{}", output.intro, output.text);
        for forbidden in [
            "API_SECRET",
            "API_KEY",
            "SHARED_SECRET",
            "turn_shared_secret",
        ] {
            assert!(!all.contains(forbidden), "{case}: {forbidden}");
        }
        if let Some(turn) = &d.legacy_turn {
            let secret = turn.shared_secret.expose();
            assert!(!all.contains(secret), "{case}");
            let escaped = yaml_str(secret);
            assert!(!all.contains(&escaped[1..escaped.len() - 1]), "{case}");
        }
    }
}

// ---- secrets ----

#[test]
fn only_the_homeserver_snippet_carries_the_turn_secret() {
    for (case, d) in cases() {
        let secret = d
            .legacy_turn
            .as_ref()
            .map(|t| t.shared_secret.expose().to_owned());
        for output in all(&d) {
            let mut texts = vec![
                output.text.clone(),
                output.intro.clone(),
                output.title.clone(),
            ];
            texts.extend(fragments(&d).into_iter().map(|(_, t)| t));
            for text in texts {
                for forbidden in ["API_SECRET", "LIVEKIT_SECRET", "api_secret"] {
                    assert!(
                        !text.contains(forbidden),
                        "{case}/{}: {forbidden}",
                        output.id
                    );
                }
                if let Some(secret) = &secret
                    && output.id != synapse::ID
                {
                    assert!(!text.contains(secret.as_str()), "{case}/{}", output.id);
                    let escaped = yaml_str(secret);
                    assert!(
                        !text.contains(&escaped[1..escaped.len() - 1]),
                        "{case}/{}",
                        output.id
                    );
                }
            }
        }
        let snippet = synapse::homeserver_yaml(&d).text;
        match secret {
            Some(secret) => assert_eq!(
                snippet
                    .matches(&format!("turn_shared_secret: {}", yaml_str(&secret)))
                    .count(),
                1,
                "{case}"
            ),
            None => assert!(!snippet.contains("turn_shared_secret"), "{case}"),
        }
    }
}

#[test]
fn the_well_known_is_served_on_the_host_without_the_federation_port() {
    let d = two_hosts_nginx();
    assert_eq!(d.server_name, "example.net:8448");
    for output in [well_known::client_json(&d), well_known::serving(&d)] {
        let all = format!("{}\n{}", output.intro, output.text);
        assert!(
            all.contains("https://example.net/.well-known/matrix/client"),
            "{}",
            output.id
        );
        assert!(
            !all.contains("example.net:8448/.well-known"),
            "{}",
            output.id
        );
    }
}
