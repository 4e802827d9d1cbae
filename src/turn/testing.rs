//! rtcbox's real TURN server on loopback for tests, started the way `app` starts it: the driver
//! with UDP, TCP and TLS listeners (a self-signed certificate for `localhost`), relays on
//! loopback, the relay policy with the SFU's media addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::secret::Secret;
use crate::tls::TlsCertificates;
use crate::turn::TurnHandle;
use crate::turn::driver::{TlsStreams, TurnSetup, start};
use crate::turn::policy::RelayPolicy;

/// A running server and what a test needs to reach it.
pub struct LoopbackTurn {
    pub handle: TurnHandle,
    /// TURN over UDP and TCP.
    pub port: u16,
    pub tls_port: u16,
    /// The relay range, inclusive.
    pub relay_ports: (u16, u16),
    /// A connector that trusts the server's self-signed certificate.
    pub trusting: tokio_rustls::TlsConnector,
    /// Where the HTTPS listener hands TURN streams, with the certificate it serves.
    pub tls_streams: TlsStreams,
    pub certificates: TlsCertificates,
    _data: tempfile::TempDir,
}

/// A port free for both UDP and TCP on loopback (as one TURN port serves both).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a TCP port");
        let port = tcp.local_addr().expect("its address").port();
        if std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// Starts the server: relays may reach `sfu_media` (and routes to it locally), legacy calls
/// are on when `shared_secret` is given.
pub async fn loopback_turn(
    sfu_media: Vec<SocketAddr>,
    shared_secret: Option<Secret>,
) -> LoopbackTurn {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let data = tempfile::tempdir().expect("a temporary directory");
    let pool = crate::db::open(data.path()).await.expect("a database");
    let certificates = TlsCertificates::load_or_create(&pool, &["localhost".to_owned()])
        .await
        .expect("a self-signed certificate");
    let (cert_pem,): (String,) = sqlx::query_as("SELECT cert_pem FROM certificates")
        .fetch_one(&pool)
        .await
        .expect("the stored certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("a usable anchor");
    }
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let port = free_port();
    let tls_port = free_port();
    // Below the ephemeral range, so other tests' sockets rarely sit there; taken ports are
    // skipped by the server anyway.
    let relay_base = 20_000 + (std::process::id() % 20_000) as u16;
    let relay_ports = (relay_base, relay_base + 40);
    let (handle, tls_streams) = start(TurnSetup {
        bind_ip: localhost,
        port,
        tls_port,
        certificates: Some(certificates.clone()),
        public_host: "localhost".into(),
        https_port: None,
        realm: "localhost".into(),
        shared_secret,
        relay_ip: localhost,
        relay_ports,
        policy: RelayPolicy {
            allow: Vec::new(),
            host_addresses: vec![localhost],
            sfu_media: sfu_media.clone(),
        },
        sfu_routes: sfu_media.iter().map(|a| (*a, *a)).collect(),
    })
    .await;
    LoopbackTurn {
        handle,
        port,
        tls_port,
        relay_ports,
        trusting: tokio_rustls::TlsConnector::from(Arc::new(client_config)),
        tls_streams,
        certificates,
        _data: data,
    }
}
