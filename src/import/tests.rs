use std::collections::BTreeMap;

use super::*;
use crate::config::{Origin, SettingKey};

const LIVEKIT: &str = include_str!("../../tests/data/import/livekit.yaml");
const ENV: &str = include_str!("../../tests/data/import/lk-jwt.env");
const COTURN: &str = include_str!("../../tests/data/import/turnserver.conf");

/// Files a source names, for `LIVEKIT_KEY_FILE` and `key_file`.
fn files(path: &str) -> Result<String, String> {
    match path {
        "/run/secrets/lk-keys" => Ok("lkfile: 0123456789abcdefghijklmnopqrstuvwxyzABCD\n".into()),
        "/etc/livekit/keys.yaml" => {
            Ok("first: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'\nsecond: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n".into())
        }
        _ => Err("No such file or directory (os error 2)".into()),
    }
}

fn sources(livekit: &str, env: &str, coturn: &str) -> Result<Sources, ImportError> {
    Ok(Sources {
        livekit: (!livekit.is_empty())
            .then(|| livekit_yaml::parse("livekit.yaml", livekit))
            .transpose()?,
        env: (!env.is_empty()).then(|| env_file::parse("jwt.env", env)),
        coturn: (!coturn.is_empty()).then(|| coturn::parse("turnserver.conf", coturn)),
    })
}

fn plan_of(livekit: &str, env: &str, coturn: &str) -> Result<Plan, ImportError> {
    plan(&sources(livekit, env, coturn)?, &BTreeMap::new(), &files)
}

/// `expected` lists every change as `SET NAME=value <- from` (exactly these, in order), and
/// warnings and notes as `WARN`/`NOTE` followed by a part of their text.
fn check(livekit: &str, env: &str, coturn: &str, expected: &[&str]) {
    let plan = plan_of(livekit, env, coturn).unwrap_or_else(|e| panic!("refused: {e}"));
    let changes: Vec<String> = plan
        .changes
        .iter()
        .map(|c| format!("SET {}={} <- {}", c.key.env_name(), c.value, c.from))
        .collect();
    let summary = format!(
        "{}\nWARN {}\nNOTE {}",
        changes.join("\n"),
        plan.warnings.join("\nWARN "),
        plan.notes.join("\nNOTE ")
    );
    let expected_changes: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|e| e.starts_with("SET "))
        .collect();
    assert_eq!(changes, expected_changes, "\n{summary}");
    for needle in expected.iter().filter(|e| !e.starts_with("SET ")) {
        let (kind, text) = needle.split_once(' ').unwrap();
        let found = match kind {
            "WARN" => plan.warnings.iter().any(|w| w.contains(text)),
            "NOTE" => plan.notes.iter().any(|n| n.contains(text)),
            _ => panic!("expected lines start with SET, WARN or NOTE: {needle}"),
        };
        assert!(found, "{needle:?} not in\n{summary}");
    }
}

/// The import is refused with a message containing `expected`.
fn check_refused(livekit: &str, env: &str, coturn: &str, expected: &str) {
    match plan_of(livekit, env, coturn) {
        Ok(plan) => panic!("not refused: {plan:?}"),
        Err(error) => assert!(
            error.to_string().contains(expected),
            "{expected:?} not in {error}"
        ),
    }
}

#[test]
fn the_sample_deployment() {
    check(
        LIVEKIT,
        ENV,
        COTURN,
        &[
            "SET RTCBOX_HTTP_BIND=:8080 <- jwt.env: LIVEKIT_JWT_BIND (line 6)",
            "SET RTCBOX_PUBLIC_URL=wss://matrix-rtc.example.org/livekit/sfu <- jwt.env: LIVEKIT_URL (line 2)",
            "SET RTCBOX_API_KEY=lkprod <- livekit.yaml: keys.lkprod (line 17)",
            "SET RTCBOX_API_SECRET=Xq3v9Zr8TmW2kYp6LbN4sHd7JfQ1aEc5RgU0oViM <- livekit.yaml: keys.lkprod (line 17)",
            "SET RTCBOX_FULL_ACCESS_HOMESERVERS=example.org <- jwt.env: LIVEKIT_FULL_ACCESS_HOMESERVERS (line 5)",
            "SET RTCBOX_RTC_UDP_PORT=50000 <- livekit.yaml: rtc.port_range_start (line 8)",
            "SET RTCBOX_RTC_TCP_PORT=7881 <- livekit.yaml: rtc.tcp_port (line 7)",
            "SET RTCBOX_NODE_IP=203.0.113.7 <- livekit.yaml: rtc.node_ip (line 11)",
            "SET RTCBOX_AUTO_CREATE_ROOMS=false <- livekit.yaml: room.auto_create (line 15)",
            "SET RTCBOX_TURN_SHARED_SECRET=9d2b7c4e1f8a6b3d5c0e7f2a9b4d6c8e1f3a5b7c <- turnserver.conf: static-auth-secret (line 7)",
            "SET RTCBOX_TURN_PORT=3478 <- turnserver.conf: listening-port (line 2)",
            "SET RTCBOX_TURN_TLS_PORT=5349 <- turnserver.conf: tls-listening-port (line 3)",
            "SET RTCBOX_TURN_RELAY_PORTS=49160-49200 <- turnserver.conf: min-port (line 4)",
            "WARN rtc.port_range_start/end (line 8) is 50000-60000, one port per peer; rtcbox receives every peer on one UDP port and keeps 50000. The router needs only 50000/udp",
            "WARN port (line 3) 7880: rtcbox serves LiveKit signaling and the authorization service on one listener, :8080",
            "WARN RTCBOX_RTC_TCP_PORT 7881 (from livekit.yaml: rtc.tcp_port (line 7)) is in 7400-7999, which Synology's High Availability reserves",
            "WARN livekit.yaml: webhook (line 18): not carried over",
            "WARN turnserver.conf: cert/pkey (line 10): not carried over",
            "NOTE livekit.yaml: rtcbox has no equivalent of bind_addresses (line 4), logging.level (line 23), logging.pion_level (line 24)",
            "NOTE turnserver.conf: rtcbox has no equivalent of realm (line 8), no-cli (line 12), no-multicast-peers (line 13), denied-peer-ip (line 14)",
        ],
    );
}

#[test]
fn an_ignored_key_is_named_once() {
    let plan = plan_of("", "", COTURN).unwrap();
    assert!(
        plan.notes.iter().all(|n| !n.contains("(line 15)")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn livekit_yaml_alone() {
    // LiveKit's own TURN and a UDP mux port, as in LiveKit's config-sample.
    check(
        "port: 7880\nrtc:\n  udp_port: 7882\n  tcp_port: 7881\n  use_external_ip: true\n\
         turn:\n  enabled: true\n  domain: turn.example.org\n  tls_port: 5349\n  udp_port: 3478\n  \
         external_tls: true\nkeys:\n  devkey: \"0123456789abcdefghijklmnopqrstuvwxyz\"\nredis:\n  address: redis:6379\n",
        "",
        "",
        &[
            "SET RTCBOX_API_KEY=devkey <- livekit.yaml: keys.devkey (line 13)",
            "SET RTCBOX_API_SECRET=0123456789abcdefghijklmnopqrstuvwxyz <- livekit.yaml: keys.devkey (line 13)",
            "SET RTCBOX_RTC_UDP_PORT=7882 <- livekit.yaml: rtc.udp_port (line 3)",
            "SET RTCBOX_RTC_TCP_PORT=7881 <- livekit.yaml: rtc.tcp_port (line 4)",
            "SET RTCBOX_TURN_PORT=3478 <- livekit.yaml: turn.udp_port (line 10)",
            "SET RTCBOX_TURN_TLS_PORT=5349 <- livekit.yaml: turn.tls_port (line 9)",
            "WARN rtc.use_external_ip (line 5): rtcbox does not look up its public IP at every start",
            "WARN turn.external_tls (line 11): TLS for TURN was terminated by a proxy",
            "WARN turn.domain (line 8)",
            "WARN redis (line 14): not carried over",
            "WARN RTCBOX_RTC_UDP_PORT 7882",
            "WARN one listener, 0.0.0.0:8880 (RTCBOX_HTTP_BIND)",
        ],
    );
}

#[test]
fn livekit_yaml_details() {
    check(
        "rtc:\n  udp_port: 7882-7892\n  port_range_start: 50000\n  stun_servers:\n    - stun.example.org:3478\n    \
         - stun.l.google.com:19302\nroom:\n  auto_create: true\n  empty_timeout: 300\nturn:\n  enabled: false\n  udp_port: 3478\n",
        "",
        "",
        &[
            "SET RTCBOX_RTC_UDP_PORT=7882 <- livekit.yaml: rtc.udp_port (line 2)",
            "SET RTCBOX_AUTO_CREATE_ROOMS=true <- livekit.yaml: room.auto_create (line 8)",
            "SET RTCBOX_STUN_SERVERS=stun.example.org:3478,stun.l.google.com:19302 <- livekit.yaml: rtc.stun_servers (line 4)",
            "WARN rtc.udp_port (line 2) is the range 7882-7892; rtcbox receives every peer on one UDP port and keeps 7882",
            "NOTE rtc.port_range_start/end (line 3) are not used",
            "WARN room.auto_create (line 8) is true",
            "NOTE turn.udp_port (line 12) is not used: LiveKit's TURN was off",
            "NOTE LiveKit's TURN was off; rtcbox's TURN server stays on (UDP/TCP 3478, TLS 5349)",
            "NOTE rtcbox has no equivalent of room.empty_timeout (line 9)",
        ],
    );
}

#[test]
fn key_pairs() {
    // lk-jwt-service's key among LiveKit's several: that one is kept, the others named.
    check(
        "keys:\n  old: 'oooooooooooooooooooooooooooooooooooo'\n  lkprod: 'pppppppppppppppppppppppppppppppppppp'\n",
        "LIVEKIT_KEY=lkprod\nLIVEKIT_SECRET=pppppppppppppppppppppppppppppppppppp\n",
        "",
        &[
            "SET RTCBOX_API_KEY=lkprod <- livekit.yaml: keys.lkprod (line 3)",
            "SET RTCBOX_API_SECRET=pppppppppppppppppppppppppppppppppppp <- livekit.yaml: keys.lkprod (line 3)",
            "WARN livekit.yaml has 2 API keys; rtcbox keeps one pair, 'lkprod'. Tokens minted with 'old' stop verifying",
        ],
    );
    // A key LiveKit does not know: LiveKit's first wins.
    check(
        "keys:\n  a: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'\n",
        "LIVEKIT_KEY=zzz\nLIVEKIT_SECRET=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n",
        "",
        &[
            "SET RTCBOX_API_KEY=a <- livekit.yaml: keys.a (line 2)",
            "SET RTCBOX_API_SECRET=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa <- livekit.yaml: keys.a (line 2)",
            "WARN LIVEKIT_KEY 'zzz' is not among livekit.yaml's keys",
        ],
    );
    // Same key, different secret: LiveKit's secret (the verifier's) wins.
    check(
        "keys:\n  k: 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'\n",
        "LIVEKIT_KEY=k\nLIVEKIT_SECRET=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
        "",
        &[
            "SET RTCBOX_API_KEY=k <- livekit.yaml: keys.k (line 2)",
            "SET RTCBOX_API_SECRET=kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk <- livekit.yaml: keys.k (line 2)",
            "WARN LIVEKIT_KEY 'k' has a different secret in livekit.yaml",
        ],
    );
    // lk-jwt-service's key file beats the plain values; a missing one is a warning.
    check(
        "",
        "LIVEKIT_KEY_FILE=/run/secrets/lk-keys\nLIVEKIT_KEY=ignored\nLIVEKIT_SECRET=ignoredignoredignoredignoredignored\n",
        "",
        &[
            "SET RTCBOX_API_KEY=lkfile <- jwt.env: LIVEKIT_KEY_FILE (line 1)",
            "SET RTCBOX_API_SECRET=0123456789abcdefghijklmnopqrstuvwxyzABCD <- jwt.env: LIVEKIT_KEY_FILE (line 1)",
        ],
    );
    check(
        "",
        "LIVEKIT_KEY_FILE=/nowhere\n",
        "",
        &[
            "WARN jwt.env: LIVEKIT_KEY_FILE (line 1) names /nowhere, which cannot be used here (No such file",
        ],
    );
    // livekit.yaml's key_file is read when keys is absent.
    check(
        "key_file: /etc/livekit/keys.yaml\n",
        "",
        "",
        &[
            "SET RTCBOX_API_KEY=first <- /etc/livekit/keys.yaml: first (line 1)",
            "SET RTCBOX_API_SECRET=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa <- /etc/livekit/keys.yaml: first (line 1)",
            "WARN Tokens minted with 'second' stop verifying",
        ],
    );
    check(
        "",
        "LIVEKIT_KEY=only-a-key\n",
        "",
        &["WARN LIVEKIT_KEY (line 1) has no partner"],
    );
}

#[test]
fn lk_jwt_service_environment_forms() {
    check(
        "",
        "# comment\nexport LIVEKIT_URL='wss://rtc.example.org'\n  - LIVEKIT_LOCAL_HOMESERVERS=example.org\n\
         LIVEKIT_JWT_PORT=8081\nLIVEKIT_INSECURE_SKIP_VERIFY_TLS=YES_I_KNOW_WHAT_I_AM_DOING\nnot an assignment\n\
         LIVEKIT_REDIS_URL=redis://x\nTZ=UTC\n",
        "",
        &[
            "SET RTCBOX_HTTP_BIND=0.0.0.0:8081 <- jwt.env: LIVEKIT_JWT_PORT (line 4)",
            "SET RTCBOX_PUBLIC_URL=wss://rtc.example.org <- jwt.env: LIVEKIT_URL (line 2)",
            "SET RTCBOX_FULL_ACCESS_HOMESERVERS=example.org <- jwt.env: LIVEKIT_LOCAL_HOMESERVERS (line 3)",
            "NOTE LIVEKIT_LOCAL_HOMESERVERS (line 3) is lk-jwt-service's old name",
            "WARN LIVEKIT_INSECURE_SKIP_VERIFY_TLS is set but ignored",
            "WARN LIVEKIT_REDIS_URL (line 7): not carried over",
            "NOTE jwt.env line 6: not NAME=value, skipped",
            "NOTE jwt.env: rtcbox has no equivalent of TZ (line 8)",
        ],
    );
}

#[test]
fn coturn_forms() {
    check(
        "",
        "",
        "--listening-port 3479\nstatic-auth-secret=\"ssssssssssssssssssssssssssssssssssss\"\n\
         static-auth-secret=tttttttttttttttttttttttttttttttttttt\nuse-auth-secret\nexternal-ip=198.51.100.9/10.0.0.2\n\
         min-port=49152\nuser=bob:pw\n",
        &[
            "SET RTCBOX_NODE_IP=198.51.100.9 <- turnserver.conf: external-ip (line 5)",
            "SET RTCBOX_TURN_SHARED_SECRET=ssssssssssssssssssssssssssssssssssss <- turnserver.conf: static-auth-secret (line 2)",
            "SET RTCBOX_TURN_PORT=3479 <- turnserver.conf: listening-port (line 1)",
            "WARN static-auth-secret appears 2 times; rtcbox keeps the first (line 2)",
            "WARN min-port (line 6) is not imported without its partner",
            "WARN turnserver.conf: user (line 7): static TURN users are not carried over",
        ],
    );
    // Without use-auth-secret coturn never used the secret.
    check(
        "",
        "",
        "static-auth-secret=ssssssssssssssssssssssssssssssssssss\n",
        &["WARN use-auth-secret is not set, so coturn did not use it"],
    );
    // A separator of more than one byte (the fuzzer found U+0085 once) splits like a space.
    check(
        "",
        "",
        "listening-port\u{85}3479\nmin-port\u{3000}49152\n",
        &[
            "SET RTCBOX_TURN_PORT=3479 <- turnserver.conf: listening-port (line 1)",
            "WARN min-port (line 2) is not imported without its partner",
        ],
    );
    // Synapse's legacy calls go to coturn's port; LiveKit's embedded TURN port gives way.
    check(
        "turn:\n  enabled: true\n  udp_port: 3478\n",
        "",
        "listening-port=3480\n",
        &[
            "SET RTCBOX_TURN_PORT=3480 <- turnserver.conf: listening-port (line 1)",
            "NOTE listening-port (line 1) 3480 replaces 3478 from livekit.yaml: turn.udp_port (line 3)",
        ],
    );
}

#[test]
fn bad_values_are_refused_with_file_line_and_key() {
    check_refused(
        "keys:\n  devkey: secret\n",
        "",
        "",
        "livekit.yaml line 2, keys.devkey: the secret is 6 bytes long; it must be at least 32 bytes",
    );
    check_refused(
        "keys:\n  k: 123456789012345678901234567890123\n",
        "",
        "",
        "livekit.yaml line 2, keys.k: YAML reads this secret as a number or boolean; put it in quotes",
    );
    check_refused(
        "rtc:\n  tcp_port: 70000\n",
        "",
        "",
        "livekit.yaml line 2, rtc.tcp_port: '70000' is not a port number",
    );
    check_refused(
        "rtc:\n  node_ip: my.host\n",
        "",
        "",
        "livekit.yaml line 2, rtc.node_ip: 'my.host' is not an IP address",
    );
    check_refused(
        "",
        "LIVEKIT_URL=sfu.example.org\n",
        "",
        "jwt.env line 1, LIVEKIT_URL: 'sfu.example.org' must start with wss://",
    );
    check_refused(
        "",
        "LIVEKIT_FULL_ACCESS_HOMESERVERS=https://matrix.example.org\n",
        "",
        "looks like a URL",
    );
    check_refused(
        "",
        "",
        "use-auth-secret\nstatic-auth-secret=short\n",
        "turnserver.conf line 2, static-auth-secret: the secret is 5 bytes long; it must be at least 32 bytes (generate one with: openssl rand -base64 48). Synapse's turn_shared_secret must equal it",
    );
    check_refused(
        "",
        "",
        "min-port=50000\nmax-port=40000\n",
        "turnserver.conf line 1, min-port: '50000-40000' must name the first port",
    );
    // Two listeners on one port.
    check_refused(
        "rtc:\n  tcp_port: 3478\n",
        "",
        "listening-port=3478\n",
        "RTCBOX_RTC_TCP_PORT and RTCBOX_TURN_PORT would both use tcp port 3478: RTCBOX_RTC_TCP_PORT comes from livekit.yaml: rtc.tcp_port (line 2), RTCBOX_TURN_PORT comes from turnserver.conf: listening-port (line 1)",
    );
}

#[test]
fn garbage_is_an_error_or_ignored_never_a_panic() {
    for (yaml, expected) in [
        ("[unclosed", "livekit.yaml: not valid YAML"),
        ("- a\n- b\n", "livekit.yaml: the top level is not a mapping"),
        ("just text", "livekit.yaml: the top level is not a mapping"),
        ("a: b\na: c\n", "duplicate mapping key"),
        ("a: &x [*x]", "livekit.yaml: not valid YAML"),
        ("\u{0}\u{1}: :", "livekit.yaml: not valid YAML"),
        ("? [a]\n: b\n", "a key must be a plain name"),
    ] {
        match livekit_yaml::parse("livekit.yaml", yaml) {
            Ok(parsed) => panic!("{yaml:?} parsed: {parsed:?}"),
            Err(e) => assert!(e.to_string().contains(expected), "{yaml:?}: {e}"),
        }
    }
    // An empty file, comments only, a document marker: nothing to import, no error.
    for yaml in ["", "# nothing\n", "---\n", "~\n"] {
        assert_eq!(livekit_yaml::parse("f", yaml).unwrap().entries, vec![]);
    }
    check(
        "",
        "\u{0}\u{1}\u{2}\n=x\n",
        "\u{0}=1\n",
        &["NOTE jwt.env line 2: '' is not a variable name"],
    );
}

/// The table names the keys it does not import as the file spells them; a name that holds a
/// secret's text shows it there (the fuzzer wrote one), but the secret's own value stays masked.
#[test]
fn a_secret_in_an_ignored_key_name_shows_once_as_that_name() {
    let secret = "Xq3v9Zr8TmW2kYp6LbN4sHd7JfQ1aEc5RgU0oViM";
    let livekit = format!("unknown_{secret}: false\nkeys:\n  lkprod: \"{secret}\"\n");
    let plan = plan_of(&livekit, "", "").unwrap();
    let text = render(&rows(&plan, &BTreeMap::new()), &plan);
    assert_eq!(text.matches(secret).count(), 1, "{text}");
    assert!(text.contains(&format!("unknown_{secret}")), "{text}");
    assert!(text.contains("(secret, 40 bytes)"), "{text}");
}

#[test]
fn the_table_masks_secrets_and_shows_locked_settings() {
    let plan = plan_of(LIVEKIT, ENV, COTURN).unwrap();
    let current = BTreeMap::from([
        (SettingKey::ApiKey, ("APIold".to_owned(), Origin::Stored)),
        (
            SettingKey::ApiSecret,
            (
                "old-secret-old-secret-old-secret-x".to_owned(),
                Origin::Stored,
            ),
        ),
        (
            SettingKey::NodeIp,
            ("198.51.100.1".to_owned(), Origin::Env("RTCBOX_NODE_IP")),
        ),
        (SettingKey::RtcTcpPort, ("7881".to_owned(), Origin::Stored)),
    ]);
    let rows = rows(&plan, &current);
    let action = |key| rows.iter().find(|r| r.key == key).unwrap().action.clone();
    assert_eq!(action(SettingKey::ApiKey), Action::Set);
    assert_eq!(action(SettingKey::RtcTcpPort), Action::Unchanged);
    assert_eq!(
        action(SettingKey::NodeIp),
        Action::Locked(Origin::Env("RTCBOX_NODE_IP"))
    );
    let text = render(&rows, &plan);
    for secret in ["Xq3v9Zr8TmW2kYp6", "9d2b7c4e1f8a6b3d", "old-secret"] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    for needle in [
        "RTCBOX_API_SECRET               (secret, 40 bytes)",
        "RTCBOX_API_KEY                  lkprod",
        "APIold (stored setting)",
        "LOCKED, not changed  RTCBOX_NODE_IP",
        "RTCBOX_NODE_IP is locked by environment variable RTCBOX_NODE_IP of this command",
        "Not carried over (what to do instead):\n  - ",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }

    // A pinned key pins its secret too: a pair is never split.
    let current = BTreeMap::from([(
        SettingKey::ApiKey,
        ("k".to_owned(), Origin::Flag("--api-key")),
    )]);
    let rows = super::rows(&plan, &current);
    assert!(
        rows.iter()
            .filter(|r| matches!(r.key, SettingKey::ApiKey | SettingKey::ApiSecret))
            .all(|r| r.action == Action::Locked(Origin::Flag("--api-key")))
    );
}
