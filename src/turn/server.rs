//! The TURN server core (RFC 8656), sans-IO: messages and time go in through `handle_*`,
//! messages to send and sockets to open or close come out of [`Server::poll_output`], and
//! [`Server::poll_timeout`] says when [`Server::handle_timeout`] must run next. No clock, no
//! sockets, no locks inside.
//!
//! Run-loop invariant for the driver: after every `handle_*` call, drain `poll_output` until it
//! returns `None` and carry the outputs out in that order, then re-arm the timer from
//! `poll_timeout`.
//!
//! Clients are [`Client`]s: a transport (UDP, TCP, TLS) and an address. Over TCP and TLS the
//! driver cuts the stream into messages with [`next_frame`](crate::turn::framing::next_frame),
//! hands each to [`Server::handle_client`], and reports a closed connection with
//! [`Server::handle_client_closed`], which ends its allocation. ChannelData to stream clients is
//! padded to a multiple of 4 bytes. Relayed transport is UDP only, of [`Config::relay_ip`]'s
//! address family.
//!
//! Authentication is the long-term credential mechanism with coturn's REST usernames
//! ([`credentials`]), under two secrets chosen by [`credentials::kind`]: participant credentials
//! the SFU mints ([`Config::participant_secret`]) relay only to the SFU's media sockets
//! ([`RelayPolicy::check_for`]); Synapse's shared-secret credentials ([`Config::shared_secret`],
//! legacy 1:1 calls, off when `None`) relay to any peer [`RelayPolicy::check`] allows. The
//! policy is applied to every peer: in CreatePermission and ChannelBind, and again on every Send,
//! ChannelData and datagram arriving from a peer.
//!
//! Relay sockets: an Allocate with REST credentials picks a free port from
//! [`Config::relay_ports`] (the forwarded range, for legacy 1:1 calls) and emits
//! [`Output::Bind`] with the advertised address ([`Config::relay_ip`] and that port), holding the
//! answer. The driver binds that port on its own local address and calls [`Server::handle_bound`]
//! (the success answer goes out) or [`Server::handle_bind_failed`] (the next free port is tried,
//! up to [`MAX_BIND_ATTEMPTS`]; then 508 and the allocation is gone). A client never hears of a
//! relay that is not open; until then requests on the allocation get 437 and peer data is
//! dropped, and a Bind never answered waits until the allocation's lifetime ends.
//! [`Output::Unbind`] closes a relay socket when its allocation ends (also one still being bound:
//! outputs are carried out in order). Participant relays never take a port of that range: they
//! only ever talk to the SFU on this host, so [`Output::BindLocal`] asks the driver for a socket
//! on a port the OS chooses outside it, answered with [`Server::handle_bound_local`] or
//! [`Server::handle_bind_local_failed`].
//!
//! Participant sessions: participant credentials name the SFU session they were minted for
//! ([`credentials::participant_session`]). When the SFU says the session ended (it left, or
//! its identity joined again), [`Server::handle_session_ended`] ends its allocations at once,
//! and its credentials allocate nothing more (the last [`ENDED_SESSIONS_TRACKED`] sessions are
//! remembered).
//!
//! SFU routes ([`Config::sfu_routes`]): behind a NAT the SFU advertises an address this host
//! does not have. Datagrams to such an advertised address go to the SFU's local socket instead,
//! and datagrams from that local socket count as coming from the advertised address everywhere.
//!
//! Limits: per-allocation bandwidth ([`Config::max_allocation_bitrate`], a token bucket over
//! payload bytes in both directions). Error answers, challenges and Binding answers to UDP
//! sources are rate-limited per source and in total ([`ANSWER_RATE_PER_SOURCE`],
//! [`ANSWER_RATE_TOTAL`]), so spoofed requests cannot turn the server into a reflector; success
//! answers to authenticated requests, the 508 after failed binds and everything over TCP/TLS
//! are not. Memory stays bounded: quotas on allocations and permissions, a fixed-size table of
//! answered sources ([`ANSWER_SOURCES_TRACKED`]).
//!
//! Nonces are stateless: `"<expiry hex>-<MAC>"`, the MAC keyed with a per-server random key, so
//! unauthenticated requests never create state.
//!
//! Peer garbage never panics and never creates state: malformed STUN is dropped, malformed
//! requests get an error response, indications and ChannelData are dropped.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use rtc_stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_DATA, ATTR_EVEN_PORT, ATTR_FINGERPRINT, ATTR_LIFETIME,
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_REQUESTED_TRANSPORT, ATTR_UNKNOWN_ATTRIBUTES, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS, ATTR_XORMAPPED_ADDRESS, AttrType,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::error_code::{
    CODE_ADDR_FAMILY_NOT_SUPPORTED, CODE_ALLOC_MISMATCH, CODE_ALLOC_QUOTA_REACHED,
    CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, CODE_PEER_ADDR_FAMILY_MISMATCH,
    CODE_STALE_NONCE, CODE_UNAUTHORIZED, CODE_UNKNOWN_ATTRIBUTE, CODE_UNSUPPORTED_TRANS_PROTO,
    CODE_WRONG_CREDENTIALS, ErrorCode, ErrorCodeAttribute,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH,
    METHOD_SEND, Message, MessageClass, MessageType, Method, Setter as _, TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use sha1::Sha1;

use crate::net::stun::{MAGIC_COOKIE, binding_success, decode};
use crate::secret::Secret;
use crate::turn::credentials::{self, CredentialKind, check_rest_username, long_term_key};
use crate::turn::policy::{Denied, RelayPolicy};
pub use crate::turn::status::{AllocationInfo, Client, Stats, Transport};

/// Permissions last five minutes (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel bindings last ten minutes (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Most peers one allocation may hold permissions for (bounds the state one credential creates).
pub const MAX_PERMISSIONS: usize = 1000;
/// Valid channel numbers: RFC 5766's range. RFC 8656 §12 narrowed it to 0x4000-0x4FFF so that
/// ChannelData can share a port with DTLS, RTP and QUIC (RFC 7983); the TURN listeners carry
/// nothing else, so the old numbers, which RFC 5766 clients such as coturn's own still use, are
/// kept working as coturn does.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;
/// Relay ports one Allocate may try before it is answered 508 Insufficient Capacity.
pub const MAX_BIND_ATTEMPTS: usize = 8;
/// Answers per second (and burst) to one UDP source that did not authenticate successfully:
/// errors, challenges, Binding. A source is an IPv4 address or an IPv6 /64.
pub const ANSWER_RATE_PER_SOURCE: u64 = 20;
/// The same, all UDP sources together.
pub const ANSWER_RATE_TOTAL: u64 = 500;
/// Sources the rate limiter tracks one by one; beyond that, new sources share one budget.
pub const ANSWER_SOURCES_TRACKED: usize = 4096;
/// Ended SFU sessions whose credentials are refused; the oldest is forgotten first.
pub const ENDED_SESSIONS_TRACKED: usize = 4096;

/// IANA protocol number of UDP, the only REQUESTED-TRANSPORT supported.
const TRANSPORT_UDP: u8 = 17;
/// The comprehension-required attributes (below 0x8000) this server implements; a request with
/// any other gets 420 Unknown Attribute.
///
/// DONT-FRAGMENT is honoured by the platform: Linux sends UDP with the DF bit set by default
/// (path-MTU discovery, `IP_PMTUDISC_WANT`), so relayed datagrams that fit the path go out
/// unfragmented, which is what the client asks for; coturn's test client sends it by default.
const UNDERSTOOD: [u16; 12] = [
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0014, // REALM
    0x0015, // NONCE
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0019, // REQUESTED-TRANSPORT
    0x0018, // EVEN-PORT (without reservation)
    0x001A, // DONT-FRAGMENT
];
/// The most peer data a Data indication carries: a STUN message holds 65532 attribute bytes, of
/// which XOR-PEER-ADDRESS (IPv6) takes 24 and the DATA header 4.
const MAX_INDICATION_DATA: usize = 0xFFFC - 24 - 4;

/// Room [`Server::relay_from_peer`] needs before a peer's payload for the header it writes
/// there: a Data indication's STUN header (20), XOR-PEER-ADDRESS for IPv6 (24) and DATA's
/// attribute header (4).
pub const PEER_HEADROOM: usize = 20 + 24 + 4;
/// Room [`Server::relay_from_peer`] needs after a peer's payload: padding to 4 bytes.
pub const PEER_TAILROOM: usize = 3;

/// How one server runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub realm: String,
    /// Signs the credentials the SFU mints for its participants ([`CredentialKind::Participant`]).
    pub participant_secret: Secret,
    /// coturn's `static-auth-secret` (Synapse's `turn_shared_secret`), which signs
    /// [`CredentialKind::Rest`] usernames; `None` turns legacy TURN off and such usernames are
    /// challenged like unknown ones.
    pub shared_secret: Option<Secret>,
    pub policy: RelayPolicy,
    /// The address relays are advertised on (XOR-RELAYED-ADDRESS, [`Output::Bind`]); it also
    /// fixes the relays' address family.
    pub relay_ip: IpAddr,
    /// Ports relay sockets of REST credentials (legacy 1:1 calls) may use: the forwarded
    /// range. Participant relays never use them.
    pub relay_ports: Range<u16>,
    /// (SFU media address as advertised, local address to send to instead). Default none.
    pub sfu_routes: Vec<(SocketAddr, SocketAddr)>,
    pub max_allocations_total: usize,
    /// Allocations one identity may hold: the username without its expiry
    /// ([`credentials::user`]) and its kind, so fresh credentials (a new expiry) of the same
    /// participant or Matrix user count against the same quota.
    pub max_allocations_per_username: usize,
    /// Allocations one client address (IPv4 address, IPv6 /64) may hold, whatever credentials
    /// it uses.
    pub max_allocations_per_source: usize,
    /// Payload bits per second one allocation may relay, each direction counted, with a burst
    /// of one second's worth; 0 = unlimited.
    pub max_allocation_bitrate: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub nonce_lifetime: Duration,
}

impl Config {
    /// A configuration with the RFC's lifetimes and generous quotas.
    pub fn new(
        realm: &str,
        participant_secret: Secret,
        shared_secret: Option<Secret>,
        relay_ip: IpAddr,
    ) -> Config {
        Config {
            realm: realm.to_owned(),
            participant_secret,
            shared_secret,
            policy: RelayPolicy::default(),
            relay_ip,
            relay_ports: 49152..65535,
            sfu_routes: Vec::new(),
            max_allocations_total: 1000,
            max_allocations_per_username: 10,
            max_allocations_per_source: 100,
            max_allocation_bitrate: 20_000_000,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` from the TURN listener to a client (over TCP/TLS: on its connection).
    ToClient { to: Client, bytes: Vec<u8> },
    /// Send `bytes` from the relay socket `relay` (as in [`Output::Bind`]) to a peer.
    ToPeer {
        relay: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Open a relay socket on this port; the address is the advertised one. Answer with
    /// [`Server::handle_bound`] or [`Server::handle_bind_failed`].
    Bind(SocketAddr),
    /// Open a participant relay socket for `client`'s allocation on a port the OS chooses,
    /// outside [`Config::relay_ports`] (even when `even`), and answer with
    /// [`Server::handle_bound_local`] or [`Server::handle_bind_local_failed`].
    BindLocal { client: Client, even: bool },
    /// Close this relay socket.
    Unbind(SocketAddr),
}

/// A datagram to send from the relay socket `relay` (as in [`Output::Bind`]) to a peer, its
/// bytes borrowed from the client's message ([`Server::relay_channel_data`]).
#[derive(Debug, PartialEq, Eq)]
pub struct ToPeer<'a> {
    pub relay: SocketAddr,
    pub to: SocketAddr,
    pub bytes: &'a [u8],
}

/// What [`Server::relay_from_client`] made of a client's message.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient<'a> {
    /// Send this from the relay socket.
    Relay(ToPeer<'a>),
    /// ChannelData or a Send indication that is not relayed (dropped, as
    /// [`Server::handle_client`] would drop it).
    Dropped,
    /// Anything else: for [`Server::handle_client`].
    Other,
}

/// The TURN server state machine.
pub struct Server {
    config: Config,
    nonce_key: [u8; 32],
    /// By client (UDP: its address; TCP/TLS: its connection).
    allocations: HashMap<Client, Allocation>,
    /// Relay address (advertised) → client.
    relays: HashMap<SocketAddr, Client>,
    next_port: u16,
    outputs: VecDeque<Output>,
    limiter: AnswerLimiter,
    /// SFU sessions that ended, oldest first, and the same as a set.
    ended_sessions: VecDeque<String>,
    ended_set: std::collections::HashSet<String>,
    /// Counters; `allocations` is filled in by [`Server::stats`].
    stats: Stats,
}

struct Allocation {
    /// The advertised relay address; port 0 while a participant relay waits for its socket.
    relay: SocketAddr,
    username: String,
    kind: CredentialKind,
    /// The SFU session participant credentials were minted for.
    session: Option<String>,
    created: Instant,
    expires: Instant,
    /// The Allocate request that created it, so a retransmission gets the same answer.
    allocate_transaction: [u8; 12],
    lifetime: Duration,
    /// Waiting for the driver to bind `relay`; the Allocate answer is held until then.
    pending: Option<PendingBind>,
    /// Peer IP → expiry.
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    bandwidth: Bucket,
    /// Payload bytes relayed, both directions.
    bytes: u64,
}

struct PendingBind {
    /// To sign the held answer.
    key: [u8; 16],
    /// Ports the driver could not bind for this allocation.
    failed: Vec<u16>,
    /// EVEN-PORT asked for an even port.
    even: bool,
    /// A participant relay: the driver picks the port ([`Output::BindLocal`]).
    local: bool,
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// A request that passed authentication.
struct Authenticated {
    username: String,
    kind: CredentialKind,
    key: [u8; 16],
}

/// What a response answers.
#[derive(Clone, Copy)]
struct Transaction {
    method: Method,
    id: [u8; 12],
}

impl Transaction {
    fn of(message: &Message) -> Transaction {
        Transaction {
            method: message.typ.method,
            id: message.transaction_id.0,
        }
    }
}

impl Server {
    pub fn new(config: Config) -> Server {
        let mut nonce_key = [0u8; 32];
        // Should the OS generator fail, nonces are still unforgeable: the key then derives from
        // the participant secret alone.
        let _ = getrandom::fill(&mut nonce_key);
        let mut mac = hmac_sha1(config.participant_secret.expose().as_bytes());
        mac.update(&nonce_key);
        nonce_key[..20].copy_from_slice(&mac.finalize().into_bytes());
        let next_port = config.relay_ports.start;
        Server {
            config,
            nonce_key,
            allocations: HashMap::new(),
            relays: HashMap::new(),
            next_port,
            outputs: VecDeque::new(),
            limiter: AnswerLimiter::default(),
            ended_sessions: VecDeque::new(),
            ended_set: Default::default(),
            stats: Stats::default(),
        }
    }

    /// One message from a client: a UDP datagram, or one frame of a TCP/TLS stream. STUN or
    /// ChannelData; anything else is dropped. `now_unix` is the wall clock in seconds, for REST
    /// username expiry and nonces.
    /// coturn's REST secret changed (admin panel): every request from now on is checked with it,
    /// so an allocation made with credentials from the old secret cannot be refreshed and its
    /// client allocates again with new ones.
    pub fn set_shared_secret(&mut self, secret: Option<Secret>) {
        self.config.shared_secret = secret;
    }

    /// The public address moved (automatic node IP): new allocations are advertised on
    /// `relay_ip`, and relaying to the SFU follows its new media addresses. Existing allocations
    /// keep the address they were given (it died with the old IP; clients allocate again).
    pub fn readdress(
        &mut self,
        relay_ip: IpAddr,
        sfu_media: Vec<SocketAddr>,
        sfu_routes: Vec<(SocketAddr, SocketAddr)>,
    ) {
        if !self.config.policy.host_addresses.contains(&relay_ip) {
            self.config.policy.host_addresses.push(relay_ip);
        }
        self.config.relay_ip = relay_ip;
        self.config.policy.sfu_media = sfu_media;
        self.config.sfu_routes = sfu_routes;
    }

    pub fn handle_client(&mut self, now: Instant, now_unix: u64, client: Client, bytes: &[u8]) {
        match self.relay_from_client(now, client, bytes) {
            FromClient::Relay(relayed) => self.queue_to_peer(relayed),
            FromClient::Dropped => {}
            FromClient::Other => {
                if let Some(0x00..=0x3F) = bytes.first() {
                    self.handle_stun(now, now_unix, client, bytes);
                }
            }
        }
    }

    /// The fast path of [`Server::handle_client`] for what clients relay: ChannelData, and
    /// Send indications without FINGERPRINT (read in place, not decoded into a message). What
    /// to send is borrowed from `bytes`: no copy, no allocation, no output queued, no timer
    /// changed. [`FromClient::Other`] (everything else) goes to [`Server::handle_client`].
    pub fn relay_from_client<'a>(
        &mut self,
        now: Instant,
        client: Client,
        bytes: &'a [u8],
    ) -> FromClient<'a> {
        let relayed = match bytes.first() {
            Some(0x40..=0x7F) => self.relay_channel_data(now, client, bytes),
            Some(0x00) if bytes.get(1) == Some(&0x16) => match send_indication_parts(bytes) {
                Some((peer, data)) => self.send_to_peer(now, client, peer, data),
                None => return FromClient::Other,
            },
            _ => return FromClient::Other,
        };
        relayed.map_or(FromClient::Dropped, FromClient::Relay)
    }

    /// Whether `client` holds an allocation (one still waiting for its relay socket too), that
    /// is, whether it authenticated an Allocate that is alive.
    pub fn has_allocation(&self, client: Client) -> bool {
        self.allocations.contains_key(&client)
    }

    /// A client's TCP or TLS connection closed: its allocation ends (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, client: Client) {
        self.remove_allocation(client);
    }

    /// A datagram that arrived on relay socket `relay` (as in [`Output::Bind`]) from `from_peer`;
    /// what goes to the client is queued. The driver uses [`Server::relay_from_peer`], which
    /// does the same in place.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        from_peer: SocketAddr,
        bytes: &[u8],
    ) {
        let mut buf = vec![0u8; PEER_HEADROOM + bytes.len() + PEER_TAILROOM];
        if let Some(payload) = buf.get_mut(PEER_HEADROOM..PEER_HEADROOM + bytes.len()) {
            payload.copy_from_slice(bytes);
        }
        if let Some((to, message)) =
            self.relay_from_peer(now, relay, from_peer, &mut buf, bytes.len())
        {
            let bytes = message.to_vec();
            self.outputs.push_back(Output::ToClient { to, bytes });
        }
    }

    /// The fast path of [`Server::handle_peer`]: the peer's datagram was read into
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]` (and `buf` has [`PEER_TAILROOM`] bytes more).
    /// When it may be relayed, the ChannelData or Data indication header is written into the
    /// headroom (and padding after it) and the client and the message to send it are returned:
    /// no copy, no allocation, no output queued, no timer changed.
    pub fn relay_from_peer<'a>(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        from_peer: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
    ) -> Option<(Client, &'a [u8])> {
        let client = *self.relays.get(&relay)?;
        let peer = self.advertised(normalize(from_peer));
        let bitrate = self.config.max_allocation_bitrate;
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.pending.is_some() || now >= allocation.expires {
            return None;
        }
        if allocation
            .permissions
            .get(&peer.ip())
            .is_none_or(|e| now >= *e)
        {
            return None;
        }
        if let Err(denied) = self.config.policy.check_for(allocation.kind, peer) {
            count_denial(&mut self.stats, denied);
            return None;
        }
        let channel = allocation
            .channels
            .iter()
            .find(|(_, c)| c.peer == peer && now < c.expires)
            .map(|(number, _)| *number);
        if channel.is_none() && len > MAX_INDICATION_DATA {
            return None;
        }
        if !admit(allocation, &mut self.stats, now, bitrate, len) {
            return None;
        }
        let range = match channel {
            Some(number) => {
                channel_data_in_place(buf, number, len, client.transport != Transport::Udp)
            }
            None => data_indication_in_place(buf, peer, len),
        }?;
        Some((client, buf.get(range)?))
    }

    /// The driver bound `relay`: the held Allocate answer goes out.
    pub fn handle_bound(&mut self, relay: SocketAddr) {
        let Some(client) = self.relays.get(&relay).copied() else {
            return;
        };
        let Some(allocation) = self.allocations.get_mut(&client) else {
            return;
        };
        if allocation.relay != relay {
            return;
        }
        let Some(pending) = allocation.pending.take() else {
            return;
        };
        let transaction = Transaction {
            method: METHOD_ALLOCATE,
            id: allocation.allocate_transaction,
        };
        let lifetime = allocation.lifetime;
        self.reply_allocated(client, transaction, relay, lifetime, &pending.key);
    }

    /// The driver could not bind `relay`: the allocation waiting for it tries the next free
    /// port, or after [`MAX_BIND_ATTEMPTS`] (or with no port left) is answered 508 and ends.
    /// Ignored for a relay that is bound already.
    pub fn handle_bind_failed(&mut self, relay: SocketAddr) {
        let Some(client) = self.relays.get(&relay).copied() else {
            return;
        };
        let Some(mut pending) = self
            .allocations
            .get_mut(&client)
            .filter(|a| a.relay == relay)
            .and_then(|a| a.pending.take())
        else {
            return;
        };
        self.relays.remove(&relay);
        pending.failed.push(relay.port());
        let next = if pending.failed.len() < MAX_BIND_ATTEMPTS {
            self.free_relay(&pending.failed, pending.even)
        } else {
            None
        };
        match (next, self.allocations.get_mut(&client)) {
            (Some(next), Some(allocation)) => {
                allocation.relay = next;
                allocation.pending = Some(pending);
                self.relays.insert(next, client);
                self.outputs.push_back(Output::Bind(next));
            }
            (_, allocation) => {
                let Some(allocation) = allocation else {
                    return;
                };
                let transaction = Transaction {
                    method: METHOD_ALLOCATE,
                    id: allocation.allocate_transaction,
                };
                self.allocations.remove(&client);
                // Not rate-limited: this answers a request that passed authentication and the
                // quotas, once.
                self.send_error(
                    client,
                    transaction,
                    CODE_INSUFFICIENT_CAPACITY,
                    Some(&pending.key),
                );
            }
        }
    }

    /// The driver opened the participant relay [`Output::BindLocal`] asked for `client`, and
    /// keeps it under the advertised address `relay` (one no other relay has: the driver makes
    /// sure): the held Allocate answer goes out. When that allocation is gone (or has its
    /// relay), `relay` is closed again ([`Output::Unbind`]).
    pub fn handle_bound_local(&mut self, client: Client, relay: SocketAddr) {
        let waiting = self
            .allocations
            .get(&client)
            .and_then(|a| a.pending.as_ref())
            .is_some_and(|p| p.local);
        if !waiting {
            self.outputs.push_back(Output::Unbind(relay));
            return;
        }
        let allocation = self.allocations.get_mut(&client).expect("checked above");
        let pending = allocation.pending.take().expect("checked above");
        allocation.relay = relay;
        let transaction = Transaction {
            method: METHOD_ALLOCATE,
            id: allocation.allocate_transaction,
        };
        let lifetime = allocation.lifetime;
        self.relays.insert(relay, client);
        self.reply_allocated(client, transaction, relay, lifetime, &pending.key);
    }

    /// The driver could not open the participant relay for `client`: 508, and the allocation
    /// ends.
    pub fn handle_bind_local_failed(&mut self, client: Client) {
        let Some(allocation) = self
            .allocations
            .get(&client)
            .filter(|a| a.pending.as_ref().is_some_and(|p| p.local))
        else {
            return;
        };
        let transaction = Transaction {
            method: METHOD_ALLOCATE,
            id: allocation.allocate_transaction,
        };
        let allocation = self.allocations.remove(&client).expect("found above");
        let key = allocation.pending.expect("pending").key;
        self.send_error(client, transaction, CODE_INSUFFICIENT_CAPACITY, Some(&key));
    }

    /// The SFU session `session` ended (the participant left, was removed, or its identity
    /// joined again): its allocations end now, and its credentials allocate nothing more.
    pub fn handle_session_ended(&mut self, session: &str) {
        if session.is_empty() {
            return;
        }
        if self.ended_set.insert(session.to_owned()) {
            self.ended_sessions.push_back(session.to_owned());
            if self.ended_sessions.len() > ENDED_SESSIONS_TRACKED
                && let Some(oldest) = self.ended_sessions.pop_front()
            {
                self.ended_set.remove(&oldest);
            }
        }
        let ended: Vec<Client> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.session.as_deref() == Some(session))
            .map(|(client, _)| *client)
            .collect();
        for client in ended {
            self.remove_allocation(client);
        }
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<Client> = self
            .allocations
            .iter()
            .filter(|(_, a)| now >= a.expires)
            .map(|(client, _)| *client)
            .collect();
        for client in expired {
            self.remove_allocation(client);
        }
        for allocation in self.allocations.values_mut() {
            allocation.permissions.retain(|_, expires| now < *expires);
            allocation.channels.retain(|_, c| now < c.expires);
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.allocations
            .values()
            .flat_map(|a| {
                std::iter::once(a.expires)
                    .chain(a.permissions.values().copied())
                    .chain(a.channels.values().map(|c| c.expires))
            })
            .min()
    }

    /// Counters since start, and the number of allocations whose relay is open.
    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.bound().count(),
            ..self.stats.clone()
        }
    }

    /// The allocations whose relay is open, ordered by client.
    pub fn allocations(&self, now: Instant) -> Vec<AllocationInfo> {
        let mut list: Vec<AllocationInfo> = self
            .bound()
            .map(|(client, a)| AllocationInfo {
                client: *client,
                user: credentials::user(&a.username).to_owned(),
                kind: a.kind,
                relay: a.relay,
                age: now.saturating_duration_since(a.created),
                expires_in: a.expires.saturating_duration_since(now),
                bytes: a.bytes,
                permissions: a.permissions.values().filter(|e| now < **e).count(),
                channels: a.channels.values().filter(|c| now < c.expires).count(),
            })
            .collect();
        list.sort_by_key(|info| info.client);
        list
    }

    fn bound(&self) -> impl Iterator<Item = (&Client, &Allocation)> {
        self.allocations.iter().filter(|(_, a)| a.pending.is_none())
    }

    fn handle_stun(&mut self, now: Instant, now_unix: u64, client: Client, bytes: &[u8]) {
        let Ok(mut message) = decode(bytes) else {
            return;
        };
        let class = message.typ.class;
        let method = message.typ.method;
        if class == CLASS_INDICATION {
            if method == METHOD_SEND {
                self.handle_send(now, client, &message);
            }
            return;
        }
        if class != CLASS_REQUEST {
            return;
        }
        let transaction = Transaction::of(&message);
        if method == METHOD_BINDING {
            if !self.suppressed(now, client) {
                let answer = binding_success(&transaction.id, client.addr);
                self.queue_to_client(client, answer);
            }
            return;
        }
        let known = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, None);
            return;
        }
        let Some(auth) = self.authenticate(now, now_unix, client, &mut message) else {
            return;
        };
        let unknown: Vec<u8> = message
            .attributes
            .0
            .iter()
            .map(|a| a.typ.value())
            .filter(|t| *t < 0x8000 && !UNDERSTOOD.contains(t))
            .flat_map(u16::to_be_bytes)
            .collect();
        if !unknown.is_empty() {
            // RFC 8489 §6.3.1.1: a comprehension-required attribute this server does not
            // implement (EVEN-PORT, RESERVATION-TOKEN…).
            if self.suppressed(now, client) {
                return;
            }
            let mut reply = response(transaction, CLASS_ERROR_RESPONSE);
            if error_attribute(CODE_UNKNOWN_ATTRIBUTE)
                .add_to(&mut reply)
                .is_ok()
            {
                reply.add(ATTR_UNKNOWN_ATTRIBUTES, &unknown);
                self.finish(client, reply, Some(&auth.key));
            }
            return;
        }
        if method == METHOD_ALLOCATE {
            self.handle_allocate(now, client, &message, auth);
            return;
        }
        let key = Some(&auth.key);
        let Some(allocation) = self.allocations.get(&client) else {
            self.reply_error(now, client, transaction, CODE_ALLOC_MISMATCH, key);
            return;
        };
        if allocation.pending.is_some() {
            // The client has not been told of this allocation yet.
            self.reply_error(now, client, transaction, CODE_ALLOC_MISMATCH, key);
            return;
        }
        if now >= allocation.expires {
            self.remove_allocation(client);
            self.reply_error(now, client, transaction, CODE_ALLOC_MISMATCH, key);
            return;
        }
        if allocation.username != auth.username {
            self.reply_error(now, client, transaction, CODE_WRONG_CREDENTIALS, key);
            return;
        }
        if method == METHOD_REFRESH {
            self.handle_refresh(now, client, &message, &auth);
        } else if method == METHOD_CREATE_PERMISSION {
            self.handle_create_permission(now, client, &message, &auth);
        } else {
            self.handle_channel_bind(now, client, &message, &auth);
        }
    }

    /// The long-term credential mechanism (RFC 8489 §9.2.4); answers the failures itself.
    fn authenticate(
        &mut self,
        now: Instant,
        now_unix: u64,
        client: Client,
        message: &mut Message,
    ) -> Option<Authenticated> {
        let transaction = Transaction::of(message);
        if !message.contains(ATTR_MESSAGE_INTEGRITY) {
            self.reply_challenge(now, now_unix, client, transaction, CODE_UNAUTHORIZED);
            return None;
        }
        let text = |t: AttrType| {
            TextAttribute::get_from_as(message, t)
                .ok()
                .map(|attr| attr.text)
        };
        let (Some(username), Some(realm), Some(nonce)) =
            (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
        else {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, None);
            return None;
        };
        if realm != self.config.realm {
            self.stats.auth_failures += 1;
            self.reply_challenge(now, now_unix, client, transaction, CODE_UNAUTHORIZED);
            return None;
        }
        if !self.nonce_valid(&nonce, now_unix) {
            self.reply_challenge(now, now_unix, client, transaction, CODE_STALE_NONCE);
            return None;
        }
        let kind = credentials::kind(&username);
        let secret = match kind {
            CredentialKind::Participant => Some(&self.config.participant_secret),
            CredentialKind::Rest => self.config.shared_secret.as_ref(),
        };
        let password = secret.and_then(|s| check_rest_username(s, &username, now_unix).ok());
        let key = password.map(|p| long_term_key(&username, &self.config.realm, &p));
        let integrity_ok = key.is_some_and(|key| {
            message
                .get(ATTR_MESSAGE_INTEGRITY)
                .is_ok_and(|value| value.len() == 20)
                && integrity_is_last(message)
                && MessageIntegrity::check(message, &key, &RingCrypto).is_ok()
        });
        match key {
            Some(key) if integrity_ok => Some(Authenticated {
                username,
                kind,
                key,
            }),
            _ => {
                self.stats.auth_failures += 1;
                self.reply_challenge(now, now_unix, client, transaction, CODE_UNAUTHORIZED);
                None
            }
        }
    }

    fn handle_allocate(
        &mut self,
        now: Instant,
        client: Client,
        request: &Message,
        auth: Authenticated,
    ) {
        let transaction = Transaction::of(request);
        let key = auth.key;
        if let Some(existing) = self.allocations.get(&client) {
            if existing.allocate_transaction == transaction.id && now < existing.expires {
                // A retransmission: the same answer again, or still none while the relay is
                // being bound.
                if existing.pending.is_none() {
                    let (relay, lifetime) = (existing.relay, existing.lifetime);
                    self.reply_allocated(client, transaction, relay, lifetime, &key);
                }
            } else {
                self.reply_error(now, client, transaction, CODE_ALLOC_MISMATCH, Some(&key));
            }
            return;
        }
        let refusal = match request.get(ATTR_REQUESTED_TRANSPORT) {
            Ok(value) if value.len() == 4 => {
                (value.first() != Some(&TRANSPORT_UDP)).then_some(CODE_UNSUPPORTED_TRANS_PROTO)
            }
            _ => Some(CODE_BAD_REQUEST),
        }
        .or_else(|| self.address_family_refusal(request));
        // EVEN-PORT (RFC 8656 §7.2): an even port is easy; reserving the next one (the R bit,
        // for RTP/RTCP pairs, which WebRTC never asks for) is not offered, which is a 508.
        let (even, refusal) = match request.get(ATTR_EVEN_PORT) {
            Err(_) => (false, refusal),
            Ok(value) => match value.first() {
                Some(flags) if value.len() == 1 && flags & 0x80 == 0 => (true, refusal),
                Some(_) if value.len() == 1 => (true, refusal.or(Some(CODE_INSUFFICIENT_CAPACITY))),
                _ => (false, refusal.or(Some(CODE_BAD_REQUEST))),
            },
        };
        if let Some(code) = refusal {
            self.reply_error(now, client, transaction, code, Some(&key));
            return;
        }
        let Some(lifetime) = self.requested_lifetime(request) else {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, Some(&key));
            return;
        };
        let session = credentials::participant_session(&auth.username).map(str::to_owned);
        if session.as_ref().is_some_and(|s| self.ended_set.contains(s)) {
            self.reply_error(now, client, transaction, CODE_FORBIDDEN, Some(&key));
            return;
        }
        let identity = (auth.kind, credentials::user(&auth.username));
        let per_user = self
            .allocations
            .values()
            .filter(|a| (a.kind, credentials::user(&a.username)) == identity)
            .count();
        let source = source_key(client.addr.ip());
        let per_source = self
            .allocations
            .keys()
            .filter(|other| source_key(other.addr.ip()) == source)
            .count();
        if per_user >= self.config.max_allocations_per_username
            || per_source >= self.config.max_allocations_per_source
        {
            let code = CODE_ALLOC_QUOTA_REACHED;
            self.stats.quota_refusals += 1;
            self.reply_error(now, client, transaction, code, Some(&key));
            return;
        }
        let local = auth.kind == CredentialKind::Participant;
        let relay = if self.allocations.len() >= self.config.max_allocations_total {
            None
        } else if local {
            // Known once the driver has the socket.
            Some(SocketAddr::new(self.config.relay_ip, 0))
        } else {
            self.free_relay(&[], even)
        };
        let Some(relay) = relay else {
            let code = CODE_INSUFFICIENT_CAPACITY;
            self.stats.capacity_refusals += 1;
            self.reply_error(now, client, transaction, code, Some(&key));
            return;
        };
        let lifetime = if lifetime.is_zero() {
            self.config.default_lifetime
        } else {
            lifetime
        };
        let bitrate = self.config.max_allocation_bitrate;
        self.allocations.insert(
            client,
            Allocation {
                relay,
                username: auth.username,
                kind: auth.kind,
                session,
                created: now,
                expires: now + lifetime,
                allocate_transaction: transaction.id,
                lifetime,
                pending: Some(PendingBind {
                    key,
                    failed: Vec::new(),
                    even,
                    local,
                }),
                permissions: HashMap::new(),
                channels: HashMap::new(),
                bandwidth: Bucket::full(bitrate),
                bytes: 0,
            },
        );
        if local {
            self.outputs.push_back(Output::BindLocal { client, even });
        } else {
            self.relays.insert(relay, client);
            self.outputs.push_back(Output::Bind(relay));
        }
    }

    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.1): only the relay address's own family.
    fn address_family_refusal(&self, request: &Message) -> Option<ErrorCode> {
        let value = request.get(ATTR_REQUESTED_ADDRESS_FAMILY).ok()?;
        if value.len() != 4 {
            return Some(CODE_BAD_REQUEST);
        }
        let ipv4 = self.config.relay_ip.to_canonical().is_ipv4();
        match value.first() {
            Some(0x01) if ipv4 => None,
            Some(0x02) if !ipv4 => None,
            _ => Some(CODE_ADDR_FAMILY_NOT_SUPPORTED),
        }
    }

    fn handle_refresh(
        &mut self,
        now: Instant,
        client: Client,
        request: &Message,
        auth: &Authenticated,
    ) {
        let transaction = Transaction::of(request);
        let Some(lifetime) = self.requested_lifetime(request) else {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, Some(&auth.key));
            return;
        };
        if lifetime.is_zero() {
            self.remove_allocation(client);
        } else if let Some(allocation) = self.allocations.get_mut(&client) {
            allocation.expires = now + lifetime;
            allocation.lifetime = lifetime;
        }
        let lifetime_secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        self.reply_success(
            client,
            transaction,
            &[(ATTR_LIFETIME, lifetime_secs.to_be_bytes().to_vec())],
            &auth.key,
        );
    }

    fn handle_create_permission(
        &mut self,
        now: Instant,
        client: Client,
        request: &Message,
        auth: &Authenticated,
    ) {
        let transaction = Transaction::of(request);
        let key = Some(&auth.key);
        let peers: Option<Vec<SocketAddr>> = request
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            .map(|a| decode_xor_address(&a.value, &transaction.id).map(normalize))
            .collect();
        let Some(peers) = peers.filter(|peers| !peers.is_empty()) else {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, key);
            return;
        };
        for peer in &peers {
            if let Err(code) = self.peer_refusal(auth.kind, *peer) {
                self.reply_error(now, client, transaction, code, key);
                return;
            }
        }
        let Some(allocation) = self.allocations.get_mut(&client) else {
            return;
        };
        let new_peers = peers
            .iter()
            .filter(|p| !allocation.permissions.contains_key(&p.ip()))
            .count();
        if allocation.permissions.len() + new_peers > MAX_PERMISSIONS {
            let code = CODE_INSUFFICIENT_CAPACITY;
            self.reply_error(now, client, transaction, code, key);
            return;
        }
        for peer in peers {
            allocation
                .permissions
                .insert(peer.ip(), now + PERMISSION_LIFETIME);
        }
        self.reply_success(client, transaction, &[], &auth.key);
    }

    fn handle_channel_bind(
        &mut self,
        now: Instant,
        client: Client,
        request: &Message,
        auth: &Authenticated,
    ) {
        let transaction = Transaction::of(request);
        let key = Some(&auth.key);
        let number = request
            .get(ATTR_CHANNEL_NUMBER)
            .ok()
            .filter(|v| v.len() == 4)
            .and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?])))
            .filter(|n| CHANNELS.contains(n));
        let peer = request
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| decode_xor_address(&v, &transaction.id))
            .map(normalize);
        let (Some(number), Some(peer)) = (number, peer) else {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, key);
            return;
        };
        if let Err(code) = self.peer_refusal(auth.kind, peer) {
            self.reply_error(now, client, transaction, code, key);
            return;
        }
        let Some(allocation) = self.allocations.get_mut(&client) else {
            return;
        };
        // A channel stays with its peer and a peer with its channel (RFC 8656 §12.2).
        let conflict = allocation
            .channels
            .iter()
            .any(|(n, c)| (*n == number && c.peer != peer) || (*n != number && c.peer == peer));
        if conflict {
            self.reply_error(now, client, transaction, CODE_BAD_REQUEST, key);
            return;
        }
        allocation.channels.insert(
            number,
            Channel {
                peer,
                expires: now + CHANNEL_LIFETIME,
            },
        );
        allocation
            .permissions
            .insert(peer.ip(), now + PERMISSION_LIFETIME);
        self.reply_success(client, transaction, &[], &auth.key);
    }

    /// Why a permission or channel for `peer` is refused: 443 for the other address family,
    /// 403 (counted) for a peer the policy denies.
    fn peer_refusal(&mut self, kind: CredentialKind, peer: SocketAddr) -> Result<(), ErrorCode> {
        if !self.same_family(peer) {
            return Err(CODE_PEER_ADDR_FAMILY_MISMATCH);
        }
        self.config.policy.check_for(kind, peer).map_err(|denied| {
            count_denial(&mut self.stats, denied);
            CODE_FORBIDDEN
        })
    }

    fn handle_send(&mut self, now: Instant, client: Client, message: &Message) {
        let Some(peer) = message
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| decode_xor_address(&v, &message.transaction_id.0))
        else {
            return;
        };
        let Ok(data) = message.get(ATTR_DATA) else {
            return;
        };
        if let Some(relayed) = self.send_to_peer(now, client, peer, &data) {
            self.queue_to_peer(relayed);
        }
    }

    /// Where a Send indication's `data` for `peer` (as written in it) goes, when it may.
    fn send_to_peer<'a>(
        &mut self,
        now: Instant,
        client: Client,
        peer: SocketAddr,
        data: &'a [u8],
    ) -> Option<ToPeer<'a>> {
        let peer = normalize(peer);
        let bitrate = self.config.max_allocation_bitrate;
        let same_family = self.same_family(peer);
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.pending.is_some() || now >= allocation.expires || !same_family {
            return None;
        }
        let permitted = allocation
            .permissions
            .get(&peer.ip())
            .is_some_and(|e| now < *e);
        if let Err(denied) = self.config.policy.check_for(allocation.kind, peer) {
            count_denial(&mut self.stats, denied);
            return None;
        }
        if !permitted || !admit(allocation, &mut self.stats, now, bitrate, data.len()) {
            return None;
        }
        Some(ToPeer {
            relay: allocation.relay,
            to: routed(&self.config.sfu_routes, peer),
            bytes: data,
        })
    }

    fn queue_to_peer(&mut self, relayed: ToPeer<'_>) {
        let (relay, to, bytes) = (relayed.relay, relayed.to, relayed.bytes.to_vec());
        self.outputs.push_back(Output::ToPeer { relay, to, bytes });
    }

    /// Where ChannelData from `client` goes, when it may: the payload borrowed from `bytes`.
    fn relay_channel_data<'a>(
        &mut self,
        now: Instant,
        client: Client,
        bytes: &'a [u8],
    ) -> Option<ToPeer<'a>> {
        let (Some(&[n0, n1, l0, l1]), Some(rest)) = (bytes.get(..4), bytes.get(4..)) else {
            return None;
        };
        let number = u16::from_be_bytes([n0, n1]);
        let length = usize::from(u16::from_be_bytes([l0, l1]));
        let data = rest.get(..length)?;
        let bitrate = self.config.max_allocation_bitrate;
        let allocation = self.allocations.get_mut(&client)?;
        if allocation.pending.is_some() || now >= allocation.expires {
            return None;
        }
        let channel = allocation.channels.get(&number)?;
        let peer = channel.peer;
        let permitted = now < channel.expires
            && allocation
                .permissions
                .get(&peer.ip())
                .is_some_and(|e| now < *e);
        if !permitted {
            return None;
        }
        if let Err(denied) = self.config.policy.check_for(allocation.kind, peer) {
            count_denial(&mut self.stats, denied);
            return None;
        }
        if !admit(allocation, &mut self.stats, now, bitrate, data.len()) {
            return None;
        }
        Some(ToPeer {
            relay: allocation.relay,
            to: routed(&self.config.sfu_routes, peer),
            bytes: data,
        })
    }

    /// Who a datagram that arrived from `from` counts as: the SFU's local socket of a route
    /// counts as its advertised address.
    fn advertised(&self, from: SocketAddr) -> SocketAddr {
        self.config
            .sfu_routes
            .iter()
            .find(|(_, local)| normalize(*local) == from)
            .map_or(from, |(advertised, _)| normalize(*advertised))
    }

    fn same_family(&self, peer: SocketAddr) -> bool {
        peer.is_ipv4() == self.config.relay_ip.to_canonical().is_ipv4()
    }

    fn remove_allocation(&mut self, client: Client) {
        if let Some(allocation) = self.allocations.remove(&client) {
            // A participant relay still waiting for its socket has none to close; the driver
            // closes the socket it opens late (`handle_bound_local`).
            if allocation.relay.port() != 0 {
                self.relays.remove(&allocation.relay);
                self.outputs.push_back(Output::Unbind(allocation.relay));
            }
        }
    }

    /// The LIFETIME a request asks for, clamped to the configured bounds; 0 stays 0 (Refresh's
    /// "delete"); absent means the default. `None` for a malformed attribute.
    fn requested_lifetime(&self, request: &Message) -> Option<Duration> {
        let Ok(value) = request.get(ATTR_LIFETIME) else {
            return Some(self.config.default_lifetime);
        };
        let bytes: [u8; 4] = value.as_slice().try_into().ok()?;
        let requested = Duration::from_secs(u64::from(u32::from_be_bytes(bytes)));
        if requested.is_zero() {
            return Some(Duration::ZERO);
        }
        Some(
            requested
                .max(self.config.default_lifetime)
                .min(self.config.max_lifetime),
        )
    }

    /// A relay port no allocation uses and not in `excluded`, round-robin through the range.
    fn free_relay(&mut self, excluded: &[u16], even: bool) -> Option<SocketAddr> {
        let Range { start, end } = self.config.relay_ports.clone();
        let count = end.saturating_sub(start);
        for _ in 0..count {
            let port = if (start..end).contains(&self.next_port) {
                self.next_port
            } else {
                start
            };
            self.next_port = port.wrapping_add(1);
            let relay = SocketAddr::new(self.config.relay_ip, port);
            if !self.relays.contains_key(&relay)
                && !excluded.contains(&port)
                && (!even || port % 2 == 0)
            {
                return Some(relay);
            }
        }
        None
    }

    fn nonce(&self, now_unix: u64) -> String {
        let expires = now_unix.saturating_add(self.config.nonce_lifetime.as_secs());
        format!("{expires:x}-{}", self.nonce_mac(expires))
    }

    fn nonce_valid(&self, nonce: &str, now_unix: u64) -> bool {
        let Some((raw_expiry, mac)) = nonce.split_once('-') else {
            return false;
        };
        let Ok(expires) = u64::from_str_radix(raw_expiry, 16) else {
            return false;
        };
        format!("{expires:x}") == raw_expiry
            && constant_time_eq(mac.as_bytes(), self.nonce_mac(expires).as_bytes())
            && now_unix < expires
    }

    fn nonce_mac(&self, expires: u64) -> String {
        let mut mac = hmac_sha1(&self.nonce_key);
        mac.update(&expires.to_be_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// True (and counted) when an answer to `to` that did not follow a successful
    /// authentication must not go out: UDP sources are rate-limited, streams are not (their
    /// source address cannot be spoofed).
    fn suppressed(&mut self, now: Instant, to: Client) -> bool {
        if to.transport != Transport::Udp || self.limiter.allow(now, to.addr.ip()) {
            return false;
        }
        self.stats.errors_suppressed += 1;
        true
    }

    fn reply_challenge(
        &mut self,
        now: Instant,
        now_unix: u64,
        to: Client,
        transaction: Transaction,
        code: ErrorCode,
    ) {
        if self.suppressed(now, to) {
            return;
        }
        let nonce = self.nonce(now_unix);
        let realm = self.config.realm.clone();
        let mut message = response(transaction, CLASS_ERROR_RESPONSE);
        let ok = error_attribute(code).add_to(&mut message).is_ok()
            && TextAttribute::new(ATTR_REALM, realm)
                .add_to(&mut message)
                .is_ok()
            && TextAttribute::new(ATTR_NONCE, nonce)
                .add_to(&mut message)
                .is_ok();
        if ok {
            self.finish(to, message, None);
        }
    }

    /// An error response, within the rate limit.
    fn reply_error(
        &mut self,
        now: Instant,
        to: Client,
        transaction: Transaction,
        code: ErrorCode,
        key: Option<&[u8; 16]>,
    ) {
        if !self.suppressed(now, to) {
            self.send_error(to, transaction, code, key);
        }
    }

    fn send_error(
        &mut self,
        to: Client,
        transaction: Transaction,
        code: ErrorCode,
        key: Option<&[u8; 16]>,
    ) {
        let mut message = response(transaction, CLASS_ERROR_RESPONSE);
        if error_attribute(code).add_to(&mut message).is_ok() {
            self.finish(to, message, key);
        }
    }

    fn reply_allocated(
        &mut self,
        to: Client,
        transaction: Transaction,
        relay: SocketAddr,
        lifetime: Duration,
        key: &[u8; 16],
    ) {
        let mut message = response(transaction, CLASS_SUCCESS_RESPONSE);
        let lifetime_secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        let ok = add_xor_address(&mut message, ATTR_XOR_RELAYED_ADDRESS, relay).is_some()
            && add_xor_address(&mut message, ATTR_XORMAPPED_ADDRESS, to.addr).is_some();
        if ok {
            message.add(ATTR_LIFETIME, &lifetime_secs.to_be_bytes());
            self.finish(to, message, Some(key));
        }
    }

    fn reply_success(
        &mut self,
        to: Client,
        transaction: Transaction,
        attributes: &[(AttrType, Vec<u8>)],
        key: &[u8; 16],
    ) {
        let mut message = response(transaction, CLASS_SUCCESS_RESPONSE);
        for (typ, value) in attributes {
            message.add(*typ, value);
        }
        self.finish(to, message, Some(key));
    }

    /// Adds MESSAGE-INTEGRITY (when a key is known) and FINGERPRINT, and queues the message.
    fn finish(&mut self, to: Client, mut message: Message, key: Option<&[u8; 16]>) {
        if let Some(key) = key {
            let integrity =
                MessageIntegrity::new_raw_integrity_with_provider(key.to_vec(), &RingCrypto);
            if integrity.add_to(&mut message).is_err() {
                return;
            }
        }
        if FINGERPRINT.add_to(&mut message).is_err() {
            return;
        }
        self.queue_to_client(to, message.raw);
    }

    fn queue_to_client(&mut self, to: Client, bytes: Vec<u8>) {
        self.outputs.push_back(Output::ToClient { to, bytes });
    }
}

/// Whether `allocation` may relay `len` more payload bytes now (`bitrate` 0 = unlimited);
/// counts them if so and the drop if not.
fn admit(
    allocation: &mut Allocation,
    stats: &mut Stats,
    now: Instant,
    bitrate: u64,
    len: usize,
) -> bool {
    let len = len as u64;
    let rate = Rate {
        per_second: bitrate,
        burst: bitrate,
    };
    if bitrate != 0 && !allocation.bandwidth.take(now, rate, len.saturating_mul(8)) {
        stats.dropped_over_bandwidth += 1;
        return false;
    }
    allocation.bytes += len;
    stats.bytes_relayed += len;
    true
}

fn count_denial(stats: &mut Stats, denied: Denied) {
    *stats.denials.entry(denied).or_default() += 1;
}

/// Where a datagram for `peer` really goes: an advertised SFU address with a route goes to the
/// SFU's local socket.
fn routed(routes: &[(SocketAddr, SocketAddr)], peer: SocketAddr) -> SocketAddr {
    routes
        .iter()
        .find(|(advertised, _)| normalize(*advertised) == peer)
        .map_or(peer, |(_, local)| normalize(*local))
}

/// A Send indication's XOR-PEER-ADDRESS and DATA (the first of each), read where they are:
/// `None` unless the message passes [`decode`]'s header and attribute-length checks, and for one
/// with FINGERPRINT (left to [`decode`], which checks it).
fn send_indication_parts(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let header = bytes.get(..20)?;
    let send = MessageType::new(METHOD_SEND, CLASS_INDICATION).value();
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header[..2] != send.to_be_bytes()
        || header[4..8] != MAGIC_COOKIE.to_be_bytes()
        || length % 4 != 0
        || 20 + length != bytes.len()
    {
        return None;
    }
    let transaction: [u8; 12] = header[8..20].try_into().ok()?;
    let (mut peer, mut data) = (None, None);
    let mut rest = bytes.get(20..)?;
    while let Some(&[t0, t1, l0, l1]) = rest.get(..4) {
        let typ = u16::from_be_bytes([t0, t1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let value = rest.get(4..4 + len)?;
        if typ == ATTR_FINGERPRINT.value() {
            return None;
        }
        if typ == ATTR_XOR_PEER_ADDRESS.value() {
            peer = peer.or(Some(value));
        } else if typ == ATTR_DATA.value() {
            data = data.or(Some(value));
        }
        rest = rest.get((4 + len).next_multiple_of(4)..)?;
    }
    if !rest.is_empty() {
        return None;
    }
    Some((decode_xor_address(peer?, &transaction)?, data?))
}

/// Writes a ChannelData header for the `len` payload bytes at `buf[PEER_HEADROOM..]` into the
/// headroom (and zero padding to 4 bytes after them when `padded`, as streams need); the
/// message's range in `buf`.
fn channel_data_in_place(
    buf: &mut [u8],
    number: u16,
    len: usize,
    padded: bool,
) -> Option<Range<usize>> {
    let length = u16::try_from(len).ok()?;
    let start = PEER_HEADROOM - 4;
    let end = PEER_HEADROOM + len;
    let padded_end = if padded {
        start + (4 + len).next_multiple_of(4)
    } else {
        end
    };
    buf.get_mut(end..padded_end)?.fill(0);
    let header = buf.get_mut(start..PEER_HEADROOM)?;
    header[..2].copy_from_slice(&number.to_be_bytes());
    header[2..].copy_from_slice(&length.to_be_bytes());
    Some(start..padded_end)
}

/// Writes a Data indication's STUN header, XOR-PEER-ADDRESS and DATA attribute header for the
/// `len` payload bytes at `buf[PEER_HEADROOM..]` into the headroom, and DATA's zero padding
/// after them; the message's range in `buf`. Byte for byte what rtc-stun builds (a unit test
/// compares them).
fn data_indication_in_place(buf: &mut [u8], peer: SocketAddr, len: usize) -> Option<Range<usize>> {
    let transaction = TransactionId::new().0;
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(&transaction);
    let (family, octets): (u8, &[u8]) = match peer.ip().to_canonical() {
        IpAddr::V4(v4) => (0x01, &v4.octets()[..]),
        IpAddr::V6(v6) => (0x02, &v6.octets()[..]),
    };
    // The octets borrow a temporary: copy them out first.
    let mut address = [0u8; 16];
    let address = {
        let address = address.get_mut(..octets.len())?;
        for ((a, o), p) in address.iter_mut().zip(octets).zip(pad) {
            *a = o ^ p;
        }
        &*address
    };
    let peer_attribute = 4 + 4 + address.len();
    let header = 20 + peer_attribute + 4;
    let start = PEER_HEADROOM.checked_sub(header)?;
    let padded_len = len.next_multiple_of(4);
    let message_length = u16::try_from(peer_attribute + 4 + padded_len).ok()?;
    let data_length = u16::try_from(len).ok()?;
    buf.get_mut(PEER_HEADROOM + len..PEER_HEADROOM + padded_len)?
        .fill(0);
    let out = buf.get_mut(start..PEER_HEADROOM)?;
    let message_type = MessageType::new(METHOD_DATA, CLASS_INDICATION).value();
    let xor_port = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(to) = out.get_mut(at..at + bytes.len()) {
            to.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(&message_type.to_be_bytes());
    put(&message_length.to_be_bytes());
    put(&MAGIC_COOKIE.to_be_bytes());
    put(&transaction);
    put(&ATTR_XOR_PEER_ADDRESS.value().to_be_bytes());
    put(&(4 + address.len() as u16).to_be_bytes());
    put(&[0, family]);
    put(&xor_port.to_be_bytes());
    put(address);
    put(&ATTR_DATA.value().to_be_bytes());
    put(&data_length.to_be_bytes());
    (at == header).then_some(start..PEER_HEADROOM + padded_len)
}

/// A rate: tokens per second, and how many may accumulate.
#[derive(Clone, Copy)]
struct Rate {
    per_second: u64,
    burst: u64,
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A token bucket in exact integer arithmetic, starting full. Time is an input.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens × 10⁹, so refills for a few nanoseconds are not lost.
    level: u128,
    /// When `level` was last brought up to date; `None` until first used.
    last: Option<Instant>,
}

impl Bucket {
    fn full(burst: u64) -> Bucket {
        Bucket {
            level: u128::from(burst) * NANOS_PER_SECOND,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant, rate: Rate) {
        let cap = u128::from(rate.burst) * NANOS_PER_SECOND;
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let added = elapsed.saturating_mul(u128::from(rate.per_second));
            self.level = self.level.saturating_add(added).min(cap);
        }
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    /// Takes `cost` tokens if there are that many.
    fn take(&mut self, now: Instant, rate: Rate, cost: u64) -> bool {
        self.refill(now, rate);
        let cost = u128::from(cost) * NANOS_PER_SECOND;
        if self.level >= cost {
            self.level -= cost;
            true
        } else {
            false
        }
    }

    /// True when the bucket is full again, i.e. it would behave like a fresh one.
    fn is_full(&mut self, now: Instant, rate: Rate) -> bool {
        self.refill(now, rate);
        self.level >= u128::from(rate.burst) * NANOS_PER_SECOND
    }
}

const PER_SOURCE: Rate = Rate {
    per_second: ANSWER_RATE_PER_SOURCE,
    burst: ANSWER_RATE_PER_SOURCE,
};
const TOTAL: Rate = Rate {
    per_second: ANSWER_RATE_TOTAL,
    burst: ANSWER_RATE_TOTAL,
};

/// Rate limits for answers to UDP sources, per source and in total, in bounded memory: at most
/// [`ANSWER_SOURCES_TRACKED`] sources, idle ones swept out (at most once a second) when the table
/// is full, and sources that find it full sharing one bucket.
struct AnswerLimiter {
    sources: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
    total: Bucket,
    last_sweep: Option<Instant>,
}

impl Default for AnswerLimiter {
    fn default() -> AnswerLimiter {
        AnswerLimiter {
            sources: HashMap::new(),
            overflow: Bucket::full(PER_SOURCE.burst),
            total: Bucket::full(TOTAL.burst),
            last_sweep: None,
        }
    }
}

impl AnswerLimiter {
    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let source = source_key(ip);
        if !self.sources.contains_key(&source) && self.sources.len() >= ANSWER_SOURCES_TRACKED {
            self.sweep(now);
        }
        let per_source = if self.sources.len() < ANSWER_SOURCES_TRACKED {
            self.sources
                .entry(source)
                .or_insert_with(|| Bucket::full(PER_SOURCE.burst))
        } else {
            match self.sources.get_mut(&source) {
                Some(bucket) => bucket,
                None => &mut self.overflow,
            }
        };
        per_source.take(now, PER_SOURCE, 1) && self.total.take(now, TOTAL, 1)
    }

    /// Forgets sources whose bucket has filled up again: they would start afresh anyway.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        self.sources
            .retain(|_, bucket| !bucket.is_full(now, PER_SOURCE));
    }
}

/// What the limiter and the per-source allocation quota count as one source: an IPv4 address,
/// or an IPv6 /64 (one subscriber's network, where any address is the subscriber's to use).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 (as dual-stack sockets and some clients write IPv4) as plain IPv4.
fn normalize(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length")
}

fn response(transaction: Transaction, class: MessageClass) -> Message {
    let mut message = Message::new();
    message.typ = MessageType::new(transaction.method, class);
    message.transaction_id = TransactionId(transaction.id);
    message.write_header();
    message
}

fn error_attribute(code: ErrorCode) -> ErrorCodeAttribute {
    let reason: &[u8] = match code.0 {
        400 => b"Bad Request",
        401 => b"Unauthorized",
        403 => b"Forbidden",
        420 => b"Unknown Attribute",
        437 => b"Allocation Mismatch",
        438 => b"Stale Nonce",
        440 => b"Address Family not Supported",
        441 => b"Wrong Credentials",
        442 => b"Unsupported Transport Protocol",
        443 => b"Peer Address Family Mismatch",
        486 => b"Allocation Quota Reached",
        508 => b"Insufficient Capacity",
        _ => b"Error",
    };
    ErrorCodeAttribute {
        code,
        reason: reason.to_vec(),
    }
}

/// Only FINGERPRINT may follow MESSAGE-INTEGRITY (RFC 8489 §14.5).
fn integrity_is_last(message: &Message) -> bool {
    let mut after = false;
    for attribute in &message.attributes.0 {
        if after && attribute.typ != rtc_stun::attributes::ATTR_FINGERPRINT {
            return false;
        }
        if attribute.typ == ATTR_MESSAGE_INTEGRITY {
            after = true;
        }
    }
    after
}

fn add_xor_address(message: &mut Message, typ: AttrType, address: SocketAddr) -> Option<()> {
    XorMappedAddress {
        ip: address.ip().to_canonical(),
        port: address.port(),
    }
    .add_to_as(message, typ)
    .ok()
}

/// An XOR-…-ADDRESS value: reserved, family, port, address, each XORed (RFC 8489 §14.2). Strict
/// about lengths.
pub(crate) fn decode_xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(transaction_id);
    let address = value.get(4..)?;
    let ip = match (family, address.len()) {
        (0x01, 4) => {
            let mut octets = [0u8; 4];
            for (o, (a, p)) in octets.iter_mut().zip(address.iter().zip(pad)) {
                *o = a ^ p;
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (0x02, 16) => {
            let mut octets = [0u8; 16];
            for (o, (a, p)) in octets.iter_mut().zip(address.iter().zip(pad)) {
                *o = a ^ p;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests;
