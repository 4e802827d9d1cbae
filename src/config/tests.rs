use std::collections::{BTreeMap, HashMap};

use super::*;

const SECRET_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SECRET_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A stored layer as first start leaves it: a generated key pair and nothing else.
fn stored_pair() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("api_key".to_owned(), "APIstored".to_owned()),
        ("api_secret".to_owned(), SECRET_A.to_owned()),
    ])
}

fn resolve_with(
    flags: &[(SettingKey, &str)],
    env: &[(&str, &str)],
    stored: BTreeMap<String, String>,
) -> Result<Settings, ConfigError> {
    let flags: BTreeMap<SettingKey, String> =
        flags.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env_fn = move |name: &str| env.get(name).cloned();
    resolve(&Layers {
        flags: &flags,
        env: &env_fn,
        stored: &stored,
    })
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let s = resolve_with(&[], &[], stored_pair()).unwrap();
    assert_eq!(s.http_bind.to_string(), "0.0.0.0:8880");
    assert_eq!(s.public_url.as_str(), "ws://localhost:8880");
    assert_eq!(s.api_key.as_str(), "APIstored");
    assert_eq!(s.origins[&SettingKey::ApiKey], Origin::Stored);
    assert_eq!(s.origins[&SettingKey::HttpBind], Origin::Default);
    assert!(s.full_access_homeservers.is_none());
    // Unset: nobody has full access (rooms are joined, never created) until the wizard sets it.
    assert!(!s.full_access().contains("example.org"));
    assert_eq!(s.admin_bind.to_string(), "0.0.0.0:8089");
    assert_eq!(s.stun_servers.len(), 2);
    assert!(s.turn_shared_secret.is_none());
    assert!(!s.dangerous_allow_private_homeservers);
}

#[test]
fn flag_beats_environment_beats_stored_beats_default() {
    let mut stored = stored_pair();
    stored.insert("http_bind".into(), "127.0.0.1:1000".into());
    let check = |flags: &[(SettingKey, &str)], env: &[(&str, &str)], want: &str, origin: Origin| {
        let s = resolve_with(flags, env, stored.clone()).unwrap();
        assert_eq!(s.http_bind.to_string(), want);
        assert_eq!(s.origins[&SettingKey::HttpBind], origin);
    };
    check(&[], &[], "127.0.0.1:1000", Origin::Stored);
    check(
        &[],
        &[("RTCBOX_HTTP_BIND", "127.0.0.1:2000")],
        "127.0.0.1:2000",
        Origin::Env("RTCBOX_HTTP_BIND"),
    );
    check(
        &[(SettingKey::HttpBind, "127.0.0.1:3000")],
        &[("RTCBOX_HTTP_BIND", "127.0.0.1:2000")],
        "127.0.0.1:3000",
        Origin::Flag("--http-bind"),
    );
    // The default is used only when no layer has a value.
    let s = resolve_with(&[], &[], stored_pair()).unwrap();
    assert_eq!(s.http_bind.to_string(), DEFAULT_HTTP_BIND);
}

#[test]
fn own_names_beat_lk_jwt_service_aliases() {
    let s = resolve_with(
        &[],
        &[
            ("LIVEKIT_URL", "wss://alias.example/livekit/sfu"),
            ("RTCBOX_PUBLIC_URL", "wss://own.example"),
        ],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.public_url.as_str(), "wss://own.example");
    assert_eq!(
        s.origins[&SettingKey::PublicUrl],
        Origin::Env("RTCBOX_PUBLIC_URL")
    );
}

#[test]
fn lk_jwt_service_environment_is_accepted_unchanged() {
    let s = resolve_with(
        &[],
        &[
            ("LIVEKIT_URL", "wss://rtc.example.org/livekit/sfu"),
            ("LIVEKIT_KEY", "devkey"),
            ("LIVEKIT_SECRET", SECRET_B),
            (
                "LIVEKIT_FULL_ACCESS_HOMESERVERS",
                "example.org, example.com",
            ),
            ("LIVEKIT_JWT_BIND", ":8080"),
        ],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.public_url.as_str(), "wss://rtc.example.org/livekit/sfu");
    assert_eq!(s.api_key.as_str(), "devkey");
    assert_eq!(s.api_secret.expose(), SECRET_B);
    assert_eq!(s.http_bind.to_string(), "0.0.0.0:8080");
    let full = s.full_access();
    assert!(full.contains("example.org") && full.contains("example.com"));
    assert!(!full.contains("example.net"));
    assert_eq!(
        s.origins[&SettingKey::ApiSecret],
        Origin::Env("LIVEKIT_SECRET")
    );
}

#[test]
fn deprecated_port_variable_binds_all_interfaces() {
    let s = resolve_with(&[], &[("LIVEKIT_JWT_PORT", "8081")], stored_pair()).unwrap();
    assert_eq!(s.http_bind.to_string(), "0.0.0.0:8081");
    let err = resolve_with(&[], &[("LIVEKIT_JWT_PORT", "eighty")], stored_pair()).unwrap_err();
    assert_eq!(err.origin, Origin::Env("LIVEKIT_JWT_PORT"));
}

#[test]
fn key_files_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let pair = dir.path().join("keys.yaml");
    std::fs::write(&pair, format!("filekey: {SECRET_B}\n")).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "  fromfile\r\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET_A}\n")).unwrap();

    // The combined file beats the per-value files and the plain values, as in lk-jwt-service.
    let s = resolve_with(
        &[],
        &[
            ("LIVEKIT_KEY_FILE", pair.to_str().unwrap()),
            ("LIVEKIT_KEY_FROM_FILE", key.to_str().unwrap()),
            ("LIVEKIT_KEY", "plain"),
        ],
        BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(s.api_key.as_str(), "filekey");
    assert_eq!(s.api_secret.expose(), SECRET_B);

    let s = resolve_with(
        &[],
        &[
            ("LIVEKIT_KEY_FROM_FILE", key.to_str().unwrap()),
            ("LIVEKIT_SECRET_FROM_FILE", secret.to_str().unwrap()),
        ],
        BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(s.api_key.as_str(), "fromfile");
    assert_eq!(s.api_secret.expose(), SECRET_A);
}

#[test]
fn unreadable_or_malformed_key_files_name_the_variable() {
    let err = resolve_with(
        &[],
        &[("LIVEKIT_KEY_FILE", "/nonexistent/keys")],
        stored_pair(),
    )
    .unwrap_err();
    assert_eq!(err.setting, "RTCBOX_API_KEY");
    assert_eq!(err.origin, Origin::Env("LIVEKIT_KEY_FILE"));
    assert!(err.to_string().contains("cannot read file"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("keys");
    std::fs::write(&bad, "a: b: c").unwrap();
    let err = resolve_with(
        &[],
        &[("LIVEKIT_KEY_FILE", bad.to_str().unwrap())],
        stored_pair(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("exactly one line"), "{err}");
}

#[test]
fn short_secret_is_refused_with_a_clear_message() {
    let err = resolve_with(&[], &[("LIVEKIT_SECRET", "tooshort")], stored_pair()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("RTCBOX_API_SECRET (from environment variable LIVEKIT_SECRET)"),
        "{text}"
    );
    assert!(
        text.contains("8 bytes") && text.contains("at least 32 bytes"),
        "{text}"
    );
    assert!(
        !text.contains("tooshort"),
        "the secret itself must not be echoed: {text}"
    );
    // Exactly 32 bytes is enough.
    let ok = "x".repeat(32);
    assert!(resolve_with(&[], &[("RTCBOX_API_SECRET", &ok)], stored_pair()).is_ok());
}

#[test]
fn empty_environment_values_count_as_unset() {
    let s = resolve_with(
        &[],
        &[("RTCBOX_API_KEY", ""), ("LIVEKIT_KEY", "  ")],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.api_key.as_str(), "APIstored");
}

#[test]
fn bad_values_are_refused_with_their_origin() {
    let check = |env: (&'static str, &str), needle: &str| {
        let err = resolve_with(&[], &[env], stored_pair()).unwrap_err();
        assert_eq!(err.origin, Origin::Env(env.0));
        assert!(err.to_string().contains(needle), "{err}");
    };
    check(("RTCBOX_HTTP_BIND", "everywhere"), "not a listen address");
    check(("LIVEKIT_URL", "rtc.example.org"), "must start with wss://");
    check(
        ("LIVEKIT_URL", "ftp://rtc.example.org"),
        "must start with wss://",
    );
    check(("LIVEKIT_KEY", "has space"), "must not contain");
    check(
        ("LIVEKIT_FULL_ACCESS_HOMESERVERS", "*,example.org"),
        "cannot be combined",
    );
    check(
        (
            "LIVEKIT_FULL_ACCESS_HOMESERVERS",
            "https://matrix.example.org",
        ),
        "looks like a URL",
    );
    check(
        ("LIVEKIT_FULL_ACCESS_HOMESERVERS", "@alice:example.org"),
        "looks like a Matrix ID",
    );
    check(("LIVEKIT_FULL_ACCESS_HOMESERVERS", " , "), "empty");
    check(
        ("RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS", "maybe"),
        "not a boolean",
    );
}

#[test]
fn full_access_star_alone_means_everyone() {
    assert_eq!(FullAccess::parse("*").unwrap(), FullAccess::Any);
    assert!(FullAccess::parse("*").unwrap().contains("anything.example"));
    let list = FullAccess::parse("a.example b.example,c.example:8448").unwrap();
    assert!(list.contains("c.example:8448"));
    assert!(!list.contains("c.example"), "a port is compared literally");
    assert_eq!(list.to_string(), "a.example,b.example,c.example:8448");
}

#[test]
fn bind_forms() {
    let check =
        |raw: &str, want: &str| assert_eq!(parse_bind(raw).unwrap().to_string(), want, "{raw}");
    check("127.0.0.1:8880", "127.0.0.1:8880");
    check("[::1]:8880", "[::1]:8880");
    check(":8080", "0.0.0.0:8080");
    check("8080", "0.0.0.0:8080");
    check("localhost:9", "127.0.0.1:9");
    assert!(parse_bind("example.org:80").is_err());
    assert!(parse_bind(":99999").is_err());
}

#[test]
fn data_dir_precedence() {
    let env = |name: &str| (name == "RTCBOX_DATA_DIR").then(|| "/from/env".to_owned());
    let none = |_: &str| None;
    assert_eq!(
        data_dir(Some(Path::new("/flag")), &env),
        PathBuf::from("/flag")
    );
    assert_eq!(data_dir(None, &env), PathBuf::from("/from/env"));
    assert_eq!(data_dir(None, &none), PathBuf::from("./data"));
}

#[test]
fn ignored_variables_are_reported() {
    let env = |name: &str| {
        (name == "LIVEKIT_INSECURE_SKIP_VERIFY_TLS")
            .then(|| "YES_I_KNOW_WHAT_I_AM_DOING".to_owned())
    };
    let warnings = ignored_env_warnings(&env);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("RTCBOX_MATRIX_CA_FILE"));
}

#[test]
fn turn_settings_parse_and_refuse_garbage() {
    let s = resolve_with(&[], &[], stored_pair()).unwrap();
    assert_eq!((s.turn_port, s.turn_tls_port), (3478, 5349));
    assert_eq!(s.turn_relay_ports, (49160, 49200));
    assert!(s.turn_allow_peers.is_empty());
    assert_eq!(s.value(SettingKey::TurnAllowPeers), None);
    assert!(
        s.trusted_proxies.is_empty(),
        "no proxy is trusted by default"
    );
    let s = resolve_with(
        &[],
        &[("RTCBOX_TRUSTED_PROXIES", " 127.0.0.1, 172.17.0.0/16 ,::1")],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(
        s.value(SettingKey::TrustedProxies).as_deref(),
        Some("127.0.0.1/32,172.17.0.0/16,::1/128")
    );
    assert!(s.is_pinned(SettingKey::TrustedProxies));

    let s = resolve_with(
        &[],
        &[
            ("RTCBOX_TURN_PORT", "0"),
            ("RTCBOX_TURN_RELAY_PORTS", " 50000 - 50010 "),
            ("RTCBOX_TURN_ALLOW_PEERS", "127.0.0.1/32, ::1,"),
        ],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.turn_port, 0);
    assert_eq!(s.turn_relay_ports, (50000, 50010));
    assert_eq!(
        s.value(SettingKey::TurnAllowPeers).as_deref(),
        Some("127.0.0.1/32,::1/128")
    );
    assert_eq!(
        s.value(SettingKey::TurnRelayPorts).as_deref(),
        Some("50000-50010")
    );

    for (name, raw, says) in [
        ("RTCBOX_TURN_PORT", "70000", "not a port number"),
        ("RTCBOX_TURN_RELAY_PORTS", "49200-49160", "not below it"),
        ("RTCBOX_TURN_RELAY_PORTS", "0-10", "not below it"),
        ("RTCBOX_TURN_RELAY_PORTS", "49160", "not a port range"),
        ("RTCBOX_TURN_ALLOW_PEERS", "10.0.0.0/33", "prefix length"),
        ("RTCBOX_TURN_ALLOW_PEERS", "lan", "not an address block"),
        (
            "RTCBOX_TRUSTED_PROXIES",
            "localhost",
            "not an address block",
        ),
        ("RTCBOX_TRUSTED_PROXIES", "::1/129", "prefix length"),
    ] {
        let error = resolve_with(&[], &[(name, raw)], stored_pair()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(name) && text.contains(says),
            "{name}={raw}: {text}"
        );
    }
}

#[test]
fn https_and_tls_mode_settings() {
    let s = resolve_with(&[], &[], stored_pair()).unwrap();
    assert_eq!(s.https_bind.unwrap().to_string(), "0.0.0.0:8443");
    assert_eq!(s.tls_mode, TlsMode::Proxy);
    for off in ["0", " 0 "] {
        let s = resolve_with(&[], &[("RTCBOX_HTTPS_BIND", off)], stored_pair()).unwrap();
        assert_eq!(s.https_bind, None, "{off}");
        assert_eq!(s.value(SettingKey::HttpsBind).as_deref(), Some("0"));
    }
    let s = resolve_with(&[(SettingKey::HttpsBind, "")], &[], stored_pair()).unwrap();
    assert_eq!(s.https_bind, None);
    let s = resolve_with(&[(SettingKey::HttpsBind, ":9443")], &[], stored_pair()).unwrap();
    assert_eq!(s.https_bind.unwrap().to_string(), "0.0.0.0:9443");
    for (raw, mode) in TlsMode::NAMES {
        let s = resolve_with(
            &[],
            &[
                ("RTCBOX_TLS_MODE", &raw.to_uppercase()),
                ("RTCBOX_TLS_CERT_FILE", "/c.pem"),
                ("RTCBOX_TLS_KEY_FILE", "/k.pem"),
                ("RTCBOX_ACME_DOMAINS", "rtc.example.org"),
            ],
            stored_pair(),
        )
        .unwrap();
        assert_eq!(s.tls_mode, mode);
        assert_eq!(s.value(SettingKey::TlsMode).as_deref(), Some(raw));
        assert_eq!(s.tls_cert_file.as_deref(), Some(Path::new("/c.pem")));
    }
    let refused = |env: &[(&str, &str)], want: &str| {
        let e = resolve_with(&[], env, stored_pair())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    };
    refused(
        &[("RTCBOX_TLS_MODE", "acme-ish")],
        "proxy, self-signed, files",
    );
    refused(&[("RTCBOX_HTTPS_BIND", "https")], "RTCBOX_HTTPS_BIND");
    refused(
        &[
            ("RTCBOX_TLS_MODE", "files"),
            ("RTCBOX_TLS_CERT_FILE", "/c.pem"),
        ],
        "RTCBOX_TLS_KEY_FILE is not set",
    );
    refused(
        &[("RTCBOX_TLS_MODE", "files")],
        "RTCBOX_TLS_CERT_FILE is not set",
    );
}

#[test]
fn tls_and_acme_settings_parse_with_defaults_and_clear_refusals() {
    let s = resolve_with(
        &[],
        &[("RTCBOX_PUBLIC_URL", "wss://RTC.example.org/livekit/sfu")],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.tls_mode, TlsMode::Proxy);
    assert_eq!(s.acme_domains, ["rtc.example.org"]);
    assert_eq!(s.acme_challenge, AcmeChallenge::Http01);
    assert_eq!(s.acme_directory.url(), AcmeDirectory::PRODUCTION);
    assert!(s.acme_email.is_none() && s.acme_ca_file.is_none());

    let s = resolve_with(
        &[],
        &[
            ("RTCBOX_TLS_MODE", "acme"),
            (
                "RTCBOX_ACME_DOMAINS",
                "rtc.example.org, turn.example.org,rtc.example.org",
            ),
            ("RTCBOX_ACME_EMAIL", "admin@example.org"),
            ("RTCBOX_ACME_DIRECTORY", "staging"),
            ("RTCBOX_ACME_CA_FILE", "/tmp/pebble.pem"),
        ],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.tls_mode, TlsMode::Acme);
    assert_eq!(s.acme_domains, ["rtc.example.org", "turn.example.org"]);
    assert_eq!(s.acme_email.as_deref(), Some("admin@example.org"));
    assert_eq!(s.acme_directory.url(), AcmeDirectory::STAGING);
    assert_eq!(
        s.value(SettingKey::AcmeDomains).unwrap(),
        "rtc.example.org,turn.example.org"
    );

    // tls-alpn-01, in any case, with the HTTPS listener on; off is fine outside acme mode.
    for (raw, https_bind, mode) in [
        ("tls-alpn-01", "0.0.0.0:8443", "acme"),
        (" TLS-ALPN-01 ", "127.0.0.1:9443", "acme"),
        ("tls-alpn-01", "0", "proxy"),
    ] {
        let s = resolve_with(
            &[],
            &[
                ("RTCBOX_TLS_MODE", mode),
                ("RTCBOX_ACME_DOMAINS", "rtc.example.org"),
                ("RTCBOX_ACME_CHALLENGE", raw),
                ("RTCBOX_HTTPS_BIND", https_bind),
            ],
            stored_pair(),
        )
        .unwrap();
        assert_eq!(s.acme_challenge, AcmeChallenge::TlsAlpn01, "{raw:?}");
        assert_eq!(
            s.value(SettingKey::AcmeChallenge).as_deref(),
            Some("tls-alpn-01")
        );
    }

    let refused = |env: &[(&str, &str)], expected: &str| {
        let e = resolve_with(&[], env, stored_pair())
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{e:?} lacks {expected:?}");
    };
    refused(
        &[("RTCBOX_ACME_CHALLENGE", "smoke")],
        "'smoke' is not an ACME challenge (use http-01, tls-alpn-01 or dns-01)",
    );
    // TLS-ALPN-01 is answered on the HTTPS listener: without it, acme mode cannot start.
    refused(
        &[
            ("RTCBOX_TLS_MODE", "acme"),
            ("RTCBOX_ACME_DOMAINS", "rtc.example.org"),
            ("RTCBOX_ACME_CHALLENGE", "tls-alpn-01"),
            ("RTCBOX_HTTPS_BIND", "0"),
        ],
        "RTCBOX_HTTPS_BIND (from environment variable RTCBOX_HTTPS_BIND): is 0 (off), but \
         RTCBOX_ACME_CHALLENGE=tls-alpn-01 is answered on rtcbox's HTTPS listener",
    );
    refused(&[("RTCBOX_ACME_DOMAINS", "192.0.2.1")], "is an IP address");
    refused(&[("RTCBOX_ACME_DOMAINS", "*.example.org")], "wildcard");
    refused(&[("RTCBOX_ACME_DOMAINS", "localhost")], "not a DNS name");
    refused(&[("RTCBOX_ACME_EMAIL", "nobody")], "not an e-mail address");
    refused(
        &[("RTCBOX_ACME_DIRECTORY", "http://ca.example/dir")],
        "must be an https:// URL",
    );
    refused(
        &[
            ("RTCBOX_TLS_MODE", "acme"),
            ("RTCBOX_PUBLIC_URL", "ws://[::1]:8880"),
            ("RTCBOX_ACME_DOMAINS", " "),
        ],
        "RTCBOX_ACME_DOMAINS",
    );
}

#[test]
fn dns01_settings_parse_and_name_what_each_provider_needs() {
    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let with = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("RTCBOX_TLS_MODE", "acme"),
            ("RTCBOX_ACME_DOMAINS", "rtc.example.org,*.rtc.example.org"),
            ("RTCBOX_ACME_CHALLENGE", "DNS-01"),
        ];
        env.extend_from_slice(extra);
        resolve_with(&[], &env, stored_pair())
    };
    let s = with(&[
        ("RTCBOX_ACME_DNS_PROVIDER", "rfc2136"),
        ("RTCBOX_ACME_DNS_SERVER", "NS1.example.org"),
        ("RTCBOX_ACME_DNS_ZONE", "Example.org."),
        ("RTCBOX_ACME_DNS_TSIG_KEY", "RTCBOX-key."),
        ("RTCBOX_ACME_DNS_TSIG_SECRET", SECRET),
    ])
    .unwrap();
    assert_eq!(s.acme_challenge, AcmeChallenge::Dns01);
    assert_eq!(s.acme_domains, ["rtc.example.org", "*.rtc.example.org"]);
    assert_eq!(s.acme_dns_provider, Some(DnsProvider::Rfc2136));
    assert_eq!(
        s.acme_dns_server
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("ns1.example.org:53")
    );
    assert_eq!(s.acme_dns_zone.as_deref(), Some("example.org"));
    assert_eq!(s.acme_dns_tsig_key.as_deref(), Some("rtcbox-key"));
    assert_eq!(s.acme_dns_tsig_algorithm, TsigAlgorithm::HmacSha256);
    assert_eq!(s.acme_cloudflare_api, DEFAULT_CLOUDFLARE_API);
    // The secret is kept, never shown.
    assert_eq!(
        s.acme_dns_tsig_secret.as_ref().map(Secret::expose),
        Some(SECRET)
    );
    assert_eq!(s.display(SettingKey::AcmeDnsTsigSecret), "(set, hidden)");
    assert!(!format!("{s:?}").contains(SECRET));

    let s = with(&[
        ("RTCBOX_ACME_DNS_PROVIDER", "cloudflare"),
        ("RTCBOX_ACME_CLOUDFLARE_TOKEN", "cf-token-123"),
        (
            "RTCBOX_ACME_CLOUDFLARE_API",
            "http://127.0.0.1:9/client/v4/",
        ),
        ("RTCBOX_ACME_DNS_SERVER", "[2001:db8::53]:5353"),
        ("RTCBOX_ACME_DNS_TSIG_ALGORITHM", "hmac-SHA512"),
    ])
    .unwrap();
    assert_eq!(s.acme_dns_provider, Some(DnsProvider::Cloudflare));
    assert_eq!(s.acme_cloudflare_api, "http://127.0.0.1:9/client/v4");
    assert_eq!(s.display(SettingKey::AcmeCloudflareToken), "(set, hidden)");
    assert_eq!(
        s.value(SettingKey::AcmeDnsServer).unwrap(),
        "[2001:db8::53]:5353"
    );
    assert_eq!(s.acme_dns_tsig_algorithm, TsigAlgorithm::HmacSha512);
    let s = with(&[("RTCBOX_ACME_DNS_PROVIDER", "manual")]).unwrap();
    assert_eq!(s.acme_dns_provider, Some(DnsProvider::Manual));
    // Without ACME, DNS-01 settings are not demanded.
    resolve_with(&[], &[("RTCBOX_ACME_CHALLENGE", "dns-01")], stored_pair()).unwrap();

    let refused = |extra: &[(&str, &str)], expected: &str| {
        let e = with(extra).unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        assert!(
            !e.contains("c2VjcmV0") && !e.contains("tok en"),
            "{e:?} shows a secret"
        );
    };
    refused(
        &[],
        "RTCBOX_ACME_DNS_PROVIDER is not set: RTCBOX_ACME_CHALLENGE=dns-01",
    );
    refused(
        &[("RTCBOX_ACME_DNS_PROVIDER", "rfc2136")],
        "is rfc2136, but RTCBOX_ACME_DNS_SERVER is not set",
    );
    refused(
        &[
            ("RTCBOX_ACME_DNS_PROVIDER", "rfc2136"),
            ("RTCBOX_ACME_DNS_SERVER", "192.0.2.53"),
            ("RTCBOX_ACME_DNS_TSIG_KEY", "k"),
        ],
        "RTCBOX_ACME_DNS_TSIG_SECRET is not set",
    );
    refused(
        &[("RTCBOX_ACME_DNS_PROVIDER", "cloudflare")],
        "RTCBOX_ACME_CLOUDFLARE_TOKEN is not set",
    );
    refused(
        &[("RTCBOX_ACME_DNS_PROVIDER", "route53")],
        "rfc2136, cloudflare, manual",
    );
    refused(
        &[("RTCBOX_ACME_DNS_TSIG_SECRET", "c2VjcmV0!")],
        "RTCBOX_ACME_DNS_TSIG_SECRET (from environment variable RTCBOX_ACME_DNS_TSIG_SECRET): is not base64",
    );
    refused(
        &[("RTCBOX_ACME_CLOUDFLARE_TOKEN", "tok en")],
        "without spaces",
    );
    refused(
        &[("RTCBOX_ACME_DNS_TSIG_ALGORITHM", "hmac-md5")],
        "hmac-sha256, hmac-sha512",
    );
    refused(
        &[("RTCBOX_ACME_DNS_SERVER", "ns1.example.org:99999")],
        "not a DNS server",
    );
    refused(
        &[("RTCBOX_ACME_DNS_ZONE", "exa mple.org")],
        "not a DNS name",
    );
    refused(&[("RTCBOX_ACME_CLOUDFLARE_API", "ftp://x")], "https://");
    // A wildcard needs dns-01.
    let e = resolve_with(
        &[],
        &[
            ("RTCBOX_ACME_DOMAINS", "*.example.org"),
            ("RTCBOX_ACME_CHALLENGE", "http-01"),
        ],
        stored_pair(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("only the dns-01 challenge can prove one"), "{e}");
}

#[test]
fn the_public_ip_follows_stun_or_a_dns_name_unless_fixed() {
    let s = resolve_with(&[], &[], stored_pair()).unwrap();
    assert_eq!(s.node_ip, None, "automatic by default");
    assert_eq!(s.public_ip_interval, std::time::Duration::from_secs(60));
    assert_eq!(s.public_ip_dns, None);
    let s = resolve_with(
        &[],
        &[
            ("RTCBOX_PUBLIC_IP_DNS", "Home.Example.org."),
            ("RTCBOX_PUBLIC_IP_INTERVAL", "300"),
        ],
        stored_pair(),
    )
    .unwrap();
    assert_eq!(s.public_ip_dns.as_deref(), Some("home.example.org"));
    assert_eq!(s.public_ip_interval.as_secs(), 300);
    // A single label (a LAN name) is a name too; an address is not.
    let s = resolve_with(&[], &[("RTCBOX_PUBLIC_IP_DNS", "nas")], stored_pair()).unwrap();
    assert_eq!(s.public_ip_dns.as_deref(), Some("nas"));
    for bad in ["203.0.113.7", "a..b", "-home.example.org", "ho me"] {
        let error = resolve_with(&[], &[("RTCBOX_PUBLIC_IP_DNS", bad)], stored_pair())
            .unwrap_err()
            .to_string();
        assert!(error.contains("RTCBOX_PUBLIC_IP_DNS"), "{bad}: {error}");
    }
    for bad in ["0", "86401", "soon"] {
        let error = resolve_with(&[], &[("RTCBOX_PUBLIC_IP_INTERVAL", bad)], stored_pair())
            .unwrap_err()
            .to_string();
        assert!(error.contains("between 1 and 86400"), "{bad}: {error}");
    }
}
