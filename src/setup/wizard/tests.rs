use super::*;

fn form(pairs: &[(&str, &str)]) -> Form {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `Ok(())` when the form validates, otherwise the fields with a message.
fn fields<T>(result: Result<T, FieldErrors>) -> Result<(), Vec<&'static str>> {
    result.map(|_| ()).map_err(|e| e.keys().copied().collect())
}

#[test]
fn server_names() {
    let check = |raw: &str, ok: bool| {
        let step = HomeserverStep::from_form(&form(&[("server_name", raw)]));
        assert_eq!(step.validate_server_name().is_ok(), ok, "{raw}");
    };
    check("example.org", true);
    check("localhost:8448", true);
    check(" example.org ", true);
    check("", false);
    check("https://example.org", false);
    check("@alice:example.org", false);
    check("exa mple.org", false);
    check("example.org/matrix", false);
}

#[test]
fn homeserver_uses_discovery_unless_overridden() {
    let mut step = HomeserverStep::from_form(&form(&[("server_name", "example.org")]));
    // Nothing discovered, nothing entered: the base URL is asked for.
    assert_eq!(fields(step.validate()), Err(vec!["client_base_url"]));
    step.discovered.client_base_url = Some("https://matrix.example.org".into());
    step.discovered.synapse_version = Some("1.163.2".into());
    let valid = step.validate().unwrap();
    assert_eq!(valid.client_base_url, "https://matrix.example.org");
    assert_eq!(valid.synapse_version, Some(SynapseVersion::new(1, 163, 2)));
    step.client_base_url = "https://hs.example.org/".into();
    step.synapse_version = "1.130.0".into();
    let valid = step.validate().unwrap();
    assert_eq!(valid.client_base_url, "https://hs.example.org");
    assert_eq!(valid.synapse_version, Some(SynapseVersion::new(1, 130, 0)));
    step.synapse_version = "latest".into();
    step.client_base_url = "matrix.example.org".into();
    assert_eq!(
        fields(step.validate()),
        Err(vec!["client_base_url", "synapse_version"])
    );
}

#[test]
fn endpoints() {
    let check = |pairs: &[(&str, &str)], expected: Result<(), Vec<&'static str>>| {
        assert_eq!(
            fields(EndpointsStep::from_form(&form(pairs)).validate()),
            expected,
            "{pairs:?}"
        );
    };
    check(
        &[("mode", "one"), ("rtc_url", "https://rtc.example.org")],
        Ok(()),
    );
    check(
        &[
            ("mode", "one"),
            ("rtc_url", "https://rtc.example.org:8443/"),
        ],
        Ok(()),
    );
    check(
        &[("mode", "one"), ("rtc_url", "http://127.0.0.1:8880")],
        Ok(()),
    );
    check(
        &[("mode", "one"), ("rtc_url", "http://rtc.example.org")],
        Err(vec!["rtc_url"]),
    );
    check(
        &[("mode", "one"), ("rtc_url", "rtc.example.org")],
        Err(vec!["rtc_url"]),
    );
    check(
        &[
            ("mode", "one"),
            ("rtc_url", "https://rtc.example.org/livekit"),
        ],
        Err(vec!["rtc_url"]),
    );
    check(
        &[("mode", "one"), ("rtc_url", "https://u@rtc.example.org")],
        Err(vec!["rtc_url"]),
    );
    check(&[("mode", "one"), ("rtc_url", "")], Err(vec!["rtc_url"]));
    check(
        &[
            ("mode", "two"),
            ("jwt_url", "https://jwt.example.org"),
            ("sfu_url", "https://sfu.example.org"),
        ],
        Ok(()),
    );
    check(
        &[
            ("mode", "two"),
            ("jwt_url", "https://a.example.org"),
            ("sfu_url", "https://a.example.org"),
        ],
        Err(vec!["sfu_url"]),
    );
    check(
        &[("mode", "two"), ("jwt_url", "nope")],
        Err(vec!["jwt_url", "sfu_url"]),
    );
    check(&[("mode", "three")], Err(vec!["mode"]));
    assert_eq!(
        EndpointsStep::suggested("example.org:8448").rtc_url,
        "https://matrixrtc.example.org"
    );
}

#[test]
fn tls_modes() {
    let check = |pairs: &[(&str, &str)], expected: Result<(), Vec<&'static str>>| {
        assert_eq!(
            fields(TlsStep::from_form(&form(pairs)).validate()),
            expected,
            "{pairs:?}"
        );
    };
    check(&[("mode", "reverse-proxy"), ("proxy", "nginx")], Ok(()));
    check(
        &[("mode", "reverse-proxy"), ("proxy", "iis")],
        Err(vec!["proxy"]),
    );
    check(
        &[
            ("mode", "acme"),
            ("challenge", "dns-01"),
            ("email", "admin@example.org"),
        ],
        Ok(()),
    );
    check(
        &[
            ("mode", "acme"),
            ("challenge", "carrier-pigeon"),
            ("email", "admin"),
        ],
        Err(vec!["challenge", "email"]),
    );
    check(&[("mode", "self-signed")], Ok(()));
    check(
        &[
            ("mode", "files"),
            ("cert_file", "/volume1/certs/fullchain.pem"),
            ("key_file", " /volume1/certs/privkey.pem "),
        ],
        Ok(()),
    );
    check(
        &[("mode", "files"), ("cert_file", "fullchain.pem")],
        Err(vec!["cert_file", "key_file"]),
    );
    let files = TlsStep::from_form(&form(&[
        ("mode", "files"),
        ("cert_file", "/c.pem"),
        ("key_file", " /k.pem"),
    ]))
    .validate();
    assert_eq!(
        files,
        Ok(TlsMode::Files {
            cert: "/c.pem".into(),
            key: "/k.pem".into()
        })
    );
    check(&[], Err(vec!["mode"]));
}

fn network_form(overrides: &[(&str, &str)]) -> Form {
    let mut f = form(&[
        ("lan_ip", "192.168.1.20"),
        ("public_ip", "203.0.113.7"),
        ("http", "8880"),
        ("https", "8443"),
        ("admin", "8089"),
        ("rtc_udp", "8882"),
        ("rtc_tcp", "8881"),
        ("turn", "3478"),
        ("turns", "5349"),
        ("relay_min", "49160"),
        ("relay_max", "49200"),
    ]);
    for (k, v) in overrides {
        f.insert((*k).to_owned(), (*v).to_owned());
    }
    f
}

#[test]
fn network() {
    let check = |overrides: &[(&str, &str)], expected: Result<(), Vec<&'static str>>| {
        assert_eq!(
            fields(NetworkStep::from_form(&network_form(overrides)).validate()),
            expected,
            "{overrides:?}"
        );
    };
    check(&[], Ok(()));
    check(&[("public_ip", "")], Ok(()));
    check(&[("lan_ip", "::1"), ("public_ip", "2001:db8::7")], Ok(()));
    check(&[("lan_ip", "nas.local")], Err(vec!["lan_ip"]));
    check(&[("lan_ip", "0.0.0.0")], Err(vec!["lan_ip"]));
    check(&[("public_ip", "banana")], Err(vec!["public_ip"]));
    check(&[("http", "443")], Err(vec!["http"]));
    check(&[("http", "70000")], Err(vec!["http"]));
    check(&[("admin", "8880")], Err(vec!["admin"]));
    // The same number on UDP and TCP is fine.
    check(&[("rtc_udp", "8881")], Ok(()));
    check(&[("relay_min", "49300")], Err(vec!["relay_max"]));
    check(
        &[("relay_min", "8000"), ("relay_max", "9000")],
        Err(vec!["relay_min"]),
    );
    let net = NetworkStep::from_form(&network_form(&[("rtc_udp", "9000")]))
        .validate()
        .unwrap();
    assert_eq!(net.ports.rtc_udp, 9000);
}

#[test]
fn lan_ip_doubts() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let host = [ip("192.168.1.20"), ip("fd00::20")];
    let check = |lan: &str, host: &[IpAddr], expected: Option<&str>| {
        let doubt = lan_ip_doubt(ip(lan), host);
        match (expected, &doubt) {
            (None, None) => {}
            (Some(needle), Some(text)) => assert!(text.contains(needle), "{lan}: {text}"),
            _ => panic!("{lan} on {host:?}: {doubt:?}, expected {expected:?}"),
        }
    };
    // One of this machine's addresses: fine.
    check("192.168.1.20", &host, None);
    check("fd00::20", &host, None);
    // Loopback is never what a router forwards to, whatever the machine has; the message
    // offers the machine's addresses.
    check(
        "127.0.0.1",
        &host,
        Some("This machine has 192.168.1.20, fd00::20."),
    );
    check("127.0.0.53", &[], Some("loopback"));
    check("::1", &host, Some("loopback"));
    // Not this machine's: a typo, the router, another machine, or a container's host.
    check(
        "192.168.1.21",
        &host,
        Some("not an address of this machine"),
    );
    check("192.168.1.21", &host, Some("bridge mode"));
    // Without a list of the machine's addresses only loopback can be judged.
    check("192.168.1.21", &[], None);
}

#[test]
fn turn() {
    let secret = "s".repeat(48);
    let on = TurnStep::from_form(&form(&[("legacy_turn", "on")]), &secret);
    assert_eq!(
        on.validate().unwrap().unwrap().shared_secret.expose(),
        secret
    );
    assert_eq!(
        TurnStep::from_form(&form(&[("legacy_turn", "off")]), "").validate(),
        Ok(None)
    );
    assert!(
        TurnStep::from_form(&form(&[("legacy_turn", "on")]), "")
            .validate()
            .is_err()
    );
    assert!(TurnStep::from_form(&form(&[]), "").validate().is_err());
}

#[test]
fn steps_become_a_deployment_when_all_are_complete() {
    let mut stored = BTreeMap::new();
    let steps = Steps::from_stored(&stored);
    assert_eq!(steps.first_incomplete(), Step::Homeserver);
    assert_eq!(steps.deployment(Running::default()).unwrap_err().len(), 5);

    let mut homeserver = HomeserverStep::from_form(&form(&[
        ("server_name", "example.org"),
        ("client_base_url", "https://matrix.example.org"),
    ]));
    homeserver.discovered.well_known = Some(
        serde_json::json!({"m.homeserver": {"base_url": "https://matrix.example.org"}})
            .as_object()
            .unwrap()
            .clone(),
    );
    let json = |v: &dyn erased::Json| v.json();
    stored.insert("homeserver".into(), json(&homeserver));
    stored.insert(
        "endpoints".into(),
        json(&EndpointsStep::from_form(&form(&[
            ("mode", "one"),
            ("rtc_url", "https://rtc.example.org"),
        ]))),
    );
    stored.insert("tls".into(), json(&TlsStep::suggested()));
    let steps = Steps::from_stored(&stored);
    assert_eq!(steps.first_incomplete(), Step::Network);
    stored.insert(
        "network".into(),
        json(&NetworkStep::from_form(&network_form(&[]))),
    );
    stored.insert(
        "turn".into(),
        json(&TurnStep::from_form(&form(&[("legacy_turn", "off")]), "")),
    );
    // Garbage in the database counts as not entered, never as a crash.
    stored.insert("tls".into(), "{not json".into());
    assert_eq!(Steps::from_stored(&stored).first_incomplete(), Step::Tls);
    stored.insert("tls".into(), json(&TlsStep::suggested()));

    let steps = Steps::from_stored(&stored);
    assert_eq!(steps.first_incomplete(), Step::Review);
    let running = Running {
        data_dir: Some("/var/lib/rtcbox".into()),
        ..Running::default()
    };
    let deployment = steps.deployment(running.clone()).unwrap();
    assert_eq!(deployment.running, running);
    assert_eq!(deployment.server_name, "example.org");
    assert_eq!(
        deployment.endpoints.livekit_service_url(),
        "https://rtc.example.org/livekit/jwt"
    );
    assert!(deployment.existing_well_known.is_some());
    let warnings = warnings(&deployment);
    assert!(
        warnings.iter().any(|w| w.contains("version is unknown")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("loopback")),
        "{warnings:?}"
    );
    // A loopback LAN address is allowed (a test on one machine) but named on the review page.
    stored.insert(
        "network".into(),
        json(&NetworkStep::from_form(&network_form(&[(
            "lan_ip",
            "127.0.0.1",
        )]))),
    );
    let looped = Steps::from_stored(&stored).deployment(running).unwrap();
    let warnings = super::warnings(&looped);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("LAN address 127.0.0.1 is the loopback address")),
        "{warnings:?}"
    );
}

/// Serialises any step for the stored map.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }
}

#[test]
fn step_order() {
    assert_eq!(Step::Homeserver.next(), Some(Step::Endpoints));
    assert_eq!(Step::Review.next(), None);
    assert_eq!(Step::Homeserver.previous(), None);
    for step in Step::ALL {
        assert_eq!(Step::from_id(step.id()), Some(step));
    }
    assert_eq!(Step::from_id("../etc"), None);
}
