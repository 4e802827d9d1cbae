//! The vocabulary the TURN server shares with its driver and the admin panel: who a client is
//! (transport and address) and what the server reports about itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::turn::credentials::CredentialKind;
use crate::turn::policy::Denied;

/// How a client reaches the TURN server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        })
    }
}

/// One client of the server: its transport and its address. Over TCP and TLS the address is
/// the connection's remote end, so it names the connection as long as that is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Client {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Client {
    pub fn udp(addr: SocketAddr) -> Client {
        Client {
            transport: Transport::Udp,
            addr,
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.transport, self.addr)
    }
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations alive now.
    pub allocations: usize,
    /// Payload bytes relayed in either direction.
    pub bytes_relayed: u64,
    /// Peers refused, per reason.
    pub denials: BTreeMap<Denied, u64>,
    /// Requests refused for bad or expired credentials (401 answers to requests that carried
    /// MESSAGE-INTEGRITY).
    pub auth_failures: u64,
    /// Error answers not sent because a source exceeded its rate.
    pub errors_suppressed: u64,
    /// Packets dropped because an allocation exceeded its bandwidth cap.
    pub dropped_over_bandwidth: u64,
    /// Allocations refused because the identity or the client address held its quota (486).
    pub quota_refusals: u64,
    /// Allocations refused because the server was full or no relay port was free (508).
    pub capacity_refusals: u64,
}

/// One live allocation, for the admin panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationInfo {
    pub client: Client,
    /// The username without its expiry (a participant identity or a Matrix user ID).
    pub user: String,
    pub kind: CredentialKind,
    /// The relayed transport address as advertised to the client.
    pub relay: SocketAddr,
    pub age: Duration,
    pub expires_in: Duration,
    /// Payload bytes relayed for this allocation, both directions.
    pub bytes: u64,
    pub permissions: usize,
    pub channels: usize,
}

/// One listener and whether it could be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The public HTTPS port, which carries TURN over TLS besides HTTPS.
    pub https: bool,
    /// Why the listener is not running (e.g. the port is taken by coturn).
    pub error: Option<String>,
}

/// Everything the admin panel shows about TURN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnStatus {
    pub listeners: Vec<ListenerStatus>,
    /// The address relays are advertised on, and their port range (inclusive).
    pub relay_ip: Option<IpAddr>,
    pub relay_ports: (u16, u16),
    /// Whether Synapse's shared-secret credentials are accepted (legacy 1:1 calls).
    pub legacy_calls: bool,
    /// `RTCBOX_TURN_ALLOW_PEERS`, as configured.
    pub allow_peers: Vec<String>,
    pub stats: Stats,
    pub allocations: Vec<AllocationInfo>,
    /// TCP and TLS connections (TURN's own listeners and the HTTPS port's TURN streams).
    pub streams: StreamStats,
}

/// TURN's TCP and TLS connections: open now, and turned away since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub open: usize,
    /// Refused because their address held the per-address cap already.
    pub refused_per_address: u64,
    /// Refused because the shared cap was reached.
    pub refused_full: u64,
    /// Closed because no authenticated allocation came within the pre-authentication time.
    pub closed_unauthenticated: u64,
}
