//! What the rest of rtcbox holds on the running TURN server: the status the driver publishes,
//! the minting of per-session participant credentials for JoinResponse.ice_servers, and the
//! SFU's word that a session ended (its allocations then end too).

use std::sync::{Arc, Mutex};

use livekit_protocol as proto;
use tokio::sync::mpsc;

use crate::secret::Secret;
use crate::tls::TlsCertificates;
use crate::turn::credentials::{participant_username, rest_password};
use crate::turn::status::TurnStatus;

/// Where clients reach the TURN listeners, as written into ICE server URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnUrls {
    /// The public host name (or address) clients use for rtcbox; TLS clients check the
    /// certificate against it.
    pub host: String,
    /// TURN over UDP and TCP, when that listener runs.
    pub port: Option<u16>,
    /// TURN over TLS, when that listener runs.
    pub tls_port: Option<u16>,
    /// The public port of rtcbox's own HTTPS listener, which carries TURN over TLS too (a
    /// router that forwards only 443), when it runs and serves the public URL.
    pub https_port: Option<u16>,
}

impl TurnUrls {
    /// `turn:` URLs for UDP and TCP, then, with `tls`, the `turns:` ones; empty when no
    /// listener runs.
    pub fn urls(&self, tls: bool) -> Vec<String> {
        let host = &self.host;
        let mut urls = Vec::new();
        if let Some(port) = self.port {
            urls.push(format!("turn:{host}:{port}?transport=udp"));
            urls.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        if tls {
            let mut tls_ports: Vec<u16> = self.tls_port.into_iter().collect();
            tls_ports.extend(self.https_port.filter(|p| Some(*p) != self.tls_port));
            for port in tls_ports {
                urls.push(format!("turns:{host}:{port}?transport=tcp"));
            }
        }
        urls
    }
}

/// Where the SFU's media is advertised after the public IP moved: the relay address and the
/// relay policy follow it ([`crate::turn::server::Server::readdress`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readdress {
    pub relay_ip: std::net::IpAddr,
    pub sfu_media: Vec<std::net::SocketAddr>,
    pub sfu_routes: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// A change to the running server.
#[derive(Clone, Debug)]
pub(crate) enum Control {
    Readdress(Readdress),
    /// coturn's REST secret (legacy 1:1 calls) changed in the admin panel; `None` turns them off.
    SharedSecret(Option<Secret>),
}

/// A cheap, cloneable handle on the TURN server.
#[derive(Clone)]
pub struct TurnHandle {
    shared: Arc<Shared>,
}

struct Shared {
    status: Mutex<TurnStatus>,
    /// Where [`TurnHandle::readdress`] and [`TurnHandle::set_shared_secret`] reach the running
    /// server (set by the driver).
    control: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Control>>,
    participant_secret: Secret,
    urls: TurnUrls,
    /// The certificate TURN over TLS serves; `turns:` is offered only while browsers trust it.
    certificates: Option<TlsCertificates>,
    /// SFU sessions that ended, to the driver; it takes the receiver when it starts.
    ended_tx: mpsc::UnboundedSender<String>,
    ended_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl TurnHandle {
    /// Tells the running server that the public address moved; nothing when it does not run.
    pub fn readdress(&self, readdress: Readdress) {
        self.control(Control::Readdress(readdress));
    }

    /// A new REST secret for Synapse's credentials (`None`: legacy calls off), from the next
    /// request on.
    pub fn set_shared_secret(&self, secret: Option<Secret>) {
        self.control(Control::SharedSecret(secret));
    }

    fn control(&self, control: Control) {
        if let Some(tx) = self.shared.control.get() {
            let _ = tx.send(control);
        }
    }

    /// The driver's end of [`Self::readdress`] and [`Self::set_shared_secret`].
    pub(crate) fn take_control(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Control>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared.control.set(tx).ok()?;
        Some(rx)
    }

    pub fn new(
        participant_secret: Secret,
        urls: TurnUrls,
        certificates: Option<TlsCertificates>,
    ) -> TurnHandle {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        TurnHandle {
            shared: Arc::new(Shared {
                status: Mutex::new(TurnStatus::default()),
                control: std::sync::OnceLock::new(),
                participant_secret,
                urls,
                certificates,
                ended_tx,
                ended_rx: Mutex::new(Some(ended_rx)),
            }),
        }
    }

    /// The SFU session `session` (a participant sid) ended: the driver ends its allocations.
    /// Never blocks; the order of calls is kept.
    pub fn session_ended(&self, session: &str) {
        let _ = self.shared.ended_tx.send(session.to_owned());
    }

    /// For the driver, once: where [`TurnHandle::session_ended`] arrives.
    pub(crate) fn take_ended_sessions(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        match self.shared.ended_rx.lock() {
            Ok(mut rx) => rx.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// Whether `turns:` URLs are handed out: only while the served certificate is one browsers
    /// accept (from the ACME CA, or files whose chain the system's roots verify). Browsers
    /// give up on a `turns:` server whose certificate they reject, so a self-signed one would
    /// only add a failing candidate.
    pub fn offers_tls(&self) -> bool {
        self.shared
            .certificates
            .as_ref()
            .is_some_and(|c| c.info().publicly_trusted)
    }

    /// The URLs handed to clients now.
    pub fn offered_urls(&self) -> Vec<String> {
        self.shared.urls.urls(self.offers_tls())
    }

    /// The latest status the driver published.
    pub fn status(&self) -> TurnStatus {
        match self.shared.status.lock() {
            Ok(status) => status.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Lets the driver update the published status.
    pub fn publish(&self, update: impl FnOnce(&mut TurnStatus)) {
        let mut status = match self.shared.status.lock() {
            Ok(status) => status,
            Err(poisoned) => poisoned.into_inner(),
        };
        update(&mut status);
    }

    pub fn urls(&self) -> &TurnUrls {
        &self.shared.urls
    }

    /// Credentials for one participant session (its sid; empty for none), valid until
    /// `expires` (unix seconds), that may relay only to the SFU.
    pub fn participant_credentials(
        &self,
        session: &str,
        identity: &str,
        expires: u64,
    ) -> (String, Secret) {
        let username = participant_username(expires, session, identity);
        let password = Secret::new(rest_password(&self.shared.participant_secret, &username));
        (username, password)
    }

    /// The ICE servers for a JoinResponse: every TURN URL with one participant session's
    /// credentials.
    pub fn ice_servers(
        &self,
        session: &str,
        identity: &str,
        expires: u64,
    ) -> Vec<proto::IceServer> {
        let urls = self.offered_urls();
        if urls.is_empty() {
            return Vec::new();
        }
        let (username, password) = self.participant_credentials(session, identity, expires);
        vec![proto::IceServer {
            urls,
            username,
            credential: password.expose().to_owned(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::credentials::{
        CredentialKind, check_rest_username, kind, participant_session,
    };

    fn urls(tls_port: Option<u16>, https_port: Option<u16>) -> TurnUrls {
        TurnUrls {
            host: "rtc.example.org".into(),
            port: Some(3478),
            tls_port,
            https_port,
        }
    }

    /// A certificate for rtc.example.org that came from `source`.
    fn certificate(source: &str) -> TlsCertificates {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["rtc.example.org".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        TlsCertificates::from_pem(&cert.pem(), &key.serialize_pem(), source).unwrap()
    }

    #[test]
    fn ice_servers_carry_participant_credentials_for_every_listener() {
        let secret = Secret::new("participant-secret");
        let handle = TurnHandle::new(
            secret.clone(),
            urls(Some(5349), Some(443)),
            Some(certificate("acme")),
        );
        let servers = handle.ice_servers("PA_x", "alice", 2_000_000_000);
        assert_eq!(servers.len(), 1);
        let server = &servers[0];
        assert_eq!(
            server.urls,
            [
                "turn:rtc.example.org:3478?transport=udp",
                "turn:rtc.example.org:3478?transport=tcp",
                "turns:rtc.example.org:5349?transport=tcp",
                "turns:rtc.example.org:443?transport=tcp",
            ]
        );
        assert_eq!(kind(&server.username), CredentialKind::Participant);
        assert_eq!(participant_session(&server.username), Some("PA_x"));
        let expected = check_rest_username(&secret, &server.username, 1_999_999_999).unwrap();
        assert_eq!(server.credential, expected.expose());
    }

    #[test]
    fn turns_is_offered_only_with_a_certificate_browsers_trust() {
        let offered = |certificates: Option<TlsCertificates>| {
            TurnHandle::new(Secret::new("s"), urls(Some(5349), Some(443)), certificates)
                .offered_urls()
        };
        let plain = [
            "turn:rtc.example.org:3478?transport=udp",
            "turn:rtc.example.org:3478?transport=tcp",
        ];
        assert_eq!(offered(None), plain);
        assert_eq!(offered(Some(certificate("self-signed"))), plain);
        // A files-mode certificate is trusted only when the system's roots verify its chain;
        // this one is self-signed.
        assert_eq!(offered(Some(certificate("/etc/rtcbox/cert.pem"))), plain);
        assert_eq!(offered(Some(certificate("acme"))).len(), 4);
        // The HTTPS port is not offered twice when it is the TURN-TLS port.
        let same = TurnHandle::new(
            Secret::new("s"),
            urls(Some(443), Some(443)),
            Some(certificate("acme")),
        );
        assert_eq!(
            same.offered_urls()[2..],
            ["turns:rtc.example.org:443?transport=tcp"]
        );
    }

    #[test]
    fn no_listener_no_ice_servers() {
        let none = TurnUrls {
            host: "h".into(),
            port: None,
            tls_port: None,
            https_port: None,
        };
        let handle = TurnHandle::new(Secret::new("s"), none, Some(certificate("acme")));
        assert!(handle.ice_servers("PA_x", "alice", 1).is_empty());
        let tls_only = TurnUrls {
            host: "h".into(),
            port: None,
            tls_port: Some(443),
            https_port: None,
        };
        assert_eq!(tls_only.urls(true), ["turns:h:443?transport=tcp"]);
        assert!(tls_only.urls(false).is_empty());
    }
}
