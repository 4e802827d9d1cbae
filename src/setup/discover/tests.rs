use std::net::Ipv4Addr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use super::*;
use crate::sfu::{SfuHandle, SfuSockets};

/// An SFU on 127.0.0.1 with system-picked media ports: (handle, UDP port, TCP port).
async fn sfu() -> (SfuHandle, SocketAddr, SocketAddr) {
    str0m::crypto::from_feature_flags().install_process_default();
    let sockets = SfuSockets::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), None, 0, 0)
        .await
        .unwrap();
    let udp = sockets.udp_advertised()[0];
    let tcp = sockets.tcp_advertised()[0];
    (SfuHandle::spawn(sockets, false, None), udp, tcp)
}

/// Serves the router `make` builds for the server's own address.
async fn serve(make: impl FnOnce(SocketAddr) -> Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = make(addr);
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A port nothing listens on (TCP and, very likely, UDP).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn lan_addresses_are_ranked() {
    let check = |interfaces: &[(&str, &str)], expected: &[&str]| {
        let ranked = rank_addresses(
            interfaces
                .iter()
                .map(|(name, ip)| (*name, ip.parse::<IpAddr>().unwrap())),
        );
        let expected: Vec<IpAddr> = expected.iter().map(|ip| ip.parse().unwrap()).collect();
        assert_eq!(ranked, expected, "{interfaces:?}");
    };
    check(
        &[
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "2001:db8::5"),
            ("eth0", "fe80::1"),
            ("docker0", "172.17.0.1"),
            ("eth0", "203.0.113.5"),
            ("eth0", "192.168.1.20"),
            ("eth0", "fd00::20"),
            ("eth1", "169.254.3.3"),
            ("tailscale0", "100.101.102.103"),
            ("ovs_eth0", "192.168.1.20"),
        ],
        &[
            "192.168.1.20",
            "203.0.113.5",
            "fd00::20",
            "2001:db8::5",
            "172.17.0.1",
            "100.101.102.103",
        ],
    );
    check(&[("lo", "127.0.0.1")], &[]);
    // Whatever this machine has, the list holds no loopback and no duplicates.
    let real = lan_addresses();
    assert!(real.iter().all(|ip| !ip.is_loopback()));
    assert_eq!(suggested_lan_ip(), real.first().copied());
}

#[tokio::test]
async fn stun_servers_resolve() {
    let check = async |server: &str, expected: &str| {
        assert_eq!(
            resolve_stun_server(server).await,
            Ok(expected.parse().unwrap()),
            "{server}"
        );
    };
    check("127.0.0.1:5", "127.0.0.1:5").await;
    check("127.0.0.1", "127.0.0.1:3478").await;
    check("[::1]:5", "[::1]:5").await;
    check("::1", "[::1]:3478").await;
    check("[::1]", "[::1]:3478").await;
    check("localhost:7", "127.0.0.1:7").await;
    check("localhost", "127.0.0.1:3478").await;
    assert!(resolve_stun_server("no-such-host.invalid:1").await.is_err());
}

/// The SFU's media ports are STUN servers: `public_ip` and both probes get our own address.
#[tokio::test]
async fn public_ip_and_probes_against_the_media_ports() {
    let (_sfu, udp, tcp) = sfu().await;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);

    assert_eq!(public_ip(&[udp.to_string()]).await, Ok(localhost));
    // A dead server first does not delay the answer of a live one.
    let dead = closed_port().await;
    let started = std::time::Instant::now();
    assert_eq!(
        public_ip(&[dead.to_string(), udp.to_string()]).await,
        Ok(localhost)
    );
    assert!(started.elapsed() < STUN_TIMEOUT);

    let error = public_ip(&[dead.to_string(), "no-such-host.invalid:3478".into()])
        .await
        .unwrap_err();
    assert!(
        error.starts_with("no STUN server answered (")
            && error.contains(&format!("{dead}: no answer within 2 s"))
            && error.contains("no-such-host.invalid:3478: cannot resolve it"),
        "{error}"
    );
    assert!(public_ip(&[]).await.is_err());

    assert_eq!(
        stun_probe_udp(udp, STUN_TIMEOUT).await.map(|a| a.ip()),
        Ok(localhost)
    );
    assert_eq!(
        stun_probe_tcp(tcp, STUN_TIMEOUT).await.map(|a| a.ip()),
        Ok(localhost)
    );
    assert_eq!(
        stun_probe_tcp(dead, STUN_TIMEOUT).await,
        Err("connection refused".into())
    );
}

fn homeserver_router(well_known: String, admin_version: bool) -> Router {
    let mut router = Router::new()
        .route(
            "/.well-known/matrix/client",
            get(move || async move { ([("content-type", "application/json")], well_known) }),
        )
        .route(
            "/_matrix/client/versions",
            get(|| async {
                axum::Json(serde_json::json!({
                    "versions": ["v1.11", "v1.12"],
                    "unstable_features": {"org.matrix.msc4140": true, "org.matrix.msc4222": false, "weird": "x"}
                }))
            }),
        );
    if admin_version {
        router = router.route(
            "/_synapse/admin/v1/server_version",
            get(|| async { axum::Json(serde_json::json!({"server_version": "1.163.2"})) }),
        );
    }
    router
}

#[tokio::test]
async fn homeserver_discovery_from_well_known() {
    let addr = serve(|addr| {
        let well_known = format!(
            r#"{{"m.homeserver":{{"base_url":"http://{addr}/"}},"io.element.e2ee":{{"default":false}}}}"#
        );
        homeserver_router(well_known, true)
    })
    .await;
    let http = HttpClient::new(None).unwrap();
    let federation = FederationClient::new(None).unwrap();
    let url = format!("http://{addr}/.well-known/matrix/client");

    let info = homeserver_at(&http, &federation, " localhost:1 ", Some(&url), None).await;
    assert_eq!(info.server_name, "localhost:1");
    assert_eq!(info.well_known_problem, None);
    assert!(
        info.well_known
            .as_ref()
            .unwrap()
            .contains_key("io.element.e2ee")
    );
    assert_eq!(info.client_base_url, Some(format!("http://{addr}")));
    assert_eq!(info.versions, ["v1.11", "v1.12"]);
    assert_eq!(
        info.unstable_features,
        BTreeMap::from([
            ("org.matrix.msc4140".to_owned(), true),
            ("org.matrix.msc4222".to_owned(), false)
        ])
    );
    assert_eq!(info.synapse_version, Some(SynapseVersion::new(1, 163, 2)));
    assert_eq!(info.server_software.as_deref(), Some("Synapse 1.163.2"));
    assert!(info.notes.is_empty(), "{:?}", info.notes);
}

#[tokio::test]
async fn homeserver_discovery_problems_become_notes() {
    let addr = serve(|_| homeserver_router("<html>not json</html>".into(), false)).await;
    let http = HttpClient::new(None).unwrap();
    let federation = FederationClient::new(None).unwrap();
    let url = format!("http://{addr}/.well-known/matrix/client");

    // Broken well-known, base URL given by the admin, no admin API, no federation.
    let base = format!("http://{addr}/");
    let info = homeserver_at(&http, &federation, "localhost:1", Some(&url), Some(&base)).await;
    assert!(
        info.well_known_problem
            .as_deref()
            .unwrap()
            .contains("not valid JSON"),
        "{info:?}"
    );
    assert_eq!(info.well_known, None);
    assert_eq!(info.client_base_url, Some(format!("http://{addr}")));
    assert_eq!(info.synapse_version, None);
    assert_eq!(info.notes.len(), 1, "{:?}", info.notes);
    assert!(
        info.notes[0].contains("The Synapse version could not be detected"),
        "{:?}",
        info.notes
    );

    // Nothing answers at all.
    let dead = closed_port().await;
    let url = format!("http://{dead}/.well-known/matrix/client");
    let info = homeserver_at(&http, &federation, "localhost:1", Some(&url), None).await;
    assert!(
        info.well_known_problem
            .as_deref()
            .unwrap()
            .contains("refused"),
        "{info:?}"
    );
    assert_eq!(info.client_base_url, None);
    assert_eq!(info.notes.len(), 3, "{:?}", info.notes);
    assert!(info.notes[0].contains("trying https://localhost"));
    assert!(info.notes[1].contains("did not answer as a Matrix client API"));

    let info = homeserver(&http, &federation, "not a name!", None).await;
    assert!(
        info.notes[0].contains("not a valid server name"),
        "{info:?}"
    );
}
