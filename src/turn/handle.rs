//! What the rest of rtcbox holds on the running TURN server: the status the driver publishes,
//! and the minting of per-participant credentials for JoinResponse.ice_servers.

use std::sync::{Arc, Mutex};

use livekit_protocol as proto;

use crate::secret::Secret;
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
}

impl TurnUrls {
    /// `turn:` URLs for UDP and TCP, then `turns:`; empty when no listener runs.
    pub fn urls(&self) -> Vec<String> {
        let host = &self.host;
        let mut urls = Vec::new();
        if let Some(port) = self.port {
            urls.push(format!("turn:{host}:{port}?transport=udp"));
            urls.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        if let Some(port) = self.tls_port {
            urls.push(format!("turns:{host}:{port}?transport=tcp"));
        }
        urls
    }
}

/// A cheap, cloneable handle on the TURN server.
#[derive(Clone)]
pub struct TurnHandle {
    shared: Arc<Shared>,
}

struct Shared {
    status: Mutex<TurnStatus>,
    participant_secret: Secret,
    urls: TurnUrls,
}

impl TurnHandle {
    pub fn new(participant_secret: Secret, urls: TurnUrls) -> TurnHandle {
        TurnHandle {
            shared: Arc::new(Shared {
                status: Mutex::new(TurnStatus::default()),
                participant_secret,
                urls,
            }),
        }
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

    /// Credentials for one participant, valid until `expires` (unix seconds), that may relay
    /// only to the SFU.
    pub fn participant_credentials(&self, identity: &str, expires: u64) -> (String, Secret) {
        let username = participant_username(expires, identity);
        let password = Secret::new(rest_password(&self.shared.participant_secret, &username));
        (username, password)
    }

    /// The ICE servers for a JoinResponse: every TURN URL with one participant's credentials.
    pub fn ice_servers(&self, identity: &str, expires: u64) -> Vec<proto::IceServer> {
        let urls = self.shared.urls.urls();
        if urls.is_empty() {
            return Vec::new();
        }
        let (username, password) = self.participant_credentials(identity, expires);
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
    use crate::turn::credentials::{CredentialKind, check_rest_username, kind};

    #[test]
    fn ice_servers_carry_participant_credentials_for_every_listener() {
        let secret = Secret::new("participant-secret");
        let handle = TurnHandle::new(
            secret.clone(),
            TurnUrls {
                host: "rtc.example.org".into(),
                port: Some(3478),
                tls_port: Some(5349),
            },
        );
        let servers = handle.ice_servers("alice", 2_000_000_000);
        assert_eq!(servers.len(), 1);
        let server = &servers[0];
        assert_eq!(
            server.urls,
            [
                "turn:rtc.example.org:3478?transport=udp",
                "turn:rtc.example.org:3478?transport=tcp",
                "turns:rtc.example.org:5349?transport=tcp",
            ]
        );
        assert_eq!(kind(&server.username), CredentialKind::Participant);
        let expected = check_rest_username(&secret, &server.username, 1_999_999_999).unwrap();
        assert_eq!(server.credential, expected.expose());
    }

    #[test]
    fn no_listener_no_ice_servers() {
        let handle = TurnHandle::new(
            Secret::new("s"),
            TurnUrls {
                host: "h".into(),
                port: None,
                tls_port: None,
            },
        );
        assert!(handle.ice_servers("alice", 1).is_empty());
        let tls_only = TurnUrls {
            host: "h".into(),
            port: None,
            tls_port: Some(443),
        };
        assert_eq!(tls_only.urls(), ["turns:h:443?transport=tcp"]);
    }
}
