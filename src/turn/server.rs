//! The TURN server core (RFC 8656), sans-IO: datagrams and time go in through `handle_*`,
//! datagrams to send and sockets to open come out of [`Server::poll_output`], and
//! [`Server::poll_timeout`] says when [`Server::handle_timeout`] must run next. No clock, no
//! sockets, no locks inside.
//!
//! Run-loop invariant for the driver: after every `handle_*` call, drain `poll_output` until it
//! returns `None`, then re-arm the timer from `poll_timeout`.
//!
//! Scope: UDP to clients and peers; the long-term credential mechanism with coturn's REST
//! usernames ([`credentials`]); Allocate, Refresh, CreatePermission, ChannelBind, Send, Data and
//! ChannelData, plus plain Binding. Every peer passes [`RelayPolicy::check`] before a permission
//! or channel is installed and again before a Send indication is relayed.
//!
//! Relay addresses: the core picks a free port from [`Config::relay_ports`] on
//! [`Config::relay_ip`] itself and emits [`Output::Bind`] before the success response; the driver
//! binds it and, if that fails, calls [`Server::handle_bind_failed`], which drops the allocation
//! again. [`Output::Unbind`] closes a relay socket when its allocation ends.
//!
//! Nonces are stateless: `"<expiry hex>-<MAC>"`, the MAC keyed with a per-server random key, so
//! unauthenticated requests never create state.
//!
//! Peer garbage never panics and never creates state: malformed STUN is dropped, malformed
//! requests get an error response, indications and ChannelData are dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use rtc_stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_DATA, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_TRANSPORT, ATTR_UNKNOWN_ATTRIBUTES, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS, ATTR_XORMAPPED_ADDRESS, AttrType,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::error_code::{
    CODE_ALLOC_MISMATCH, CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN,
    CODE_INSUFFICIENT_CAPACITY, CODE_STALE_NONCE, CODE_UNAUTHORIZED, CODE_UNKNOWN_ATTRIBUTE,
    CODE_UNSUPPORTED_TRANS_PROTO, CODE_WRONG_CREDENTIALS, ErrorCode, ErrorCodeAttribute,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH,
    METHOD_SEND, Message, MessageClass, MessageType, Setter as _, TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use sha1::Sha1;

use crate::net::canonical;
use crate::net::stun::{MAGIC_COOKIE, binding_success, decode};
use crate::secret::Secret;
use crate::turn::credentials::{check_rest_username, long_term_key};
use crate::turn::policy::{Denied, RelayPolicy};
pub use crate::turn::status::Stats;

/// IANA protocol number of UDP, the only REQUESTED-TRANSPORT supported.
const TRANSPORT_UDP: u8 = 17;
/// Permissions last five minutes (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel bindings last ten minutes (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Most peers one allocation may hold permissions for (bounds the state one credential creates).
pub const MAX_PERMISSIONS: usize = 1000;
/// The comprehension-required attributes (below 0x8000) this server implements; a request with
/// any other gets 420 Unknown Attribute.
const UNDERSTOOD: [u16; 9] = [
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0014, // REALM
    0x0015, // NONCE
    0x0019, // REQUESTED-TRANSPORT
];
/// Valid channel numbers (RFC 8656 §12).
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;

/// How one server runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub realm: String,
    /// coturn's `static-auth-secret`: REST passwords are derived from it.
    pub shared_secret: Secret,
    pub policy: RelayPolicy,
    /// The address relay sockets are bound on and advertised as XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    /// Ports relay sockets may use.
    pub relay_ports: Range<u16>,
    pub max_allocations_total: usize,
    pub max_allocations_per_username: usize,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub nonce_lifetime: Duration,
}

impl Config {
    /// A configuration with the RFC's lifetimes and generous quotas.
    pub fn new(realm: &str, shared_secret: Secret, relay_ip: IpAddr) -> Config {
        Config {
            realm: realm.to_owned(),
            shared_secret,
            policy: RelayPolicy::default(),
            relay_ip,
            relay_ports: 49152..65535,
            max_allocations_total: 1000,
            max_allocations_per_username: 10,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` from the TURN listener to a client.
    ToClient { to: SocketAddr, bytes: Vec<u8> },
    /// Send `bytes` from the relay socket `relay` to a peer.
    ToPeer {
        relay: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Open a relay socket on this address.
    Bind(SocketAddr),
    /// Close this relay socket.
    Unbind(SocketAddr),
}

/// The TURN server state machine.
pub struct Server {
    config: Config,
    nonce_key: [u8; 32],
    /// By client 5-tuple (UDP: the client's address).
    allocations: HashMap<SocketAddr, Allocation>,
    /// Relay address → client.
    relays: HashMap<SocketAddr, SocketAddr>,
    next_port: u16,
    outputs: VecDeque<Output>,
    bytes_relayed: u64,
    denials: BTreeMap<Denied, u64>,
}

struct Allocation {
    relay: SocketAddr,
    username: String,
    expires: Instant,
    /// The Allocate request that created it, so a retransmission gets the same answer.
    allocate_transaction: [u8; 12],
    lifetime: Duration,
    /// Canonical peer IP → expiry.
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
}

struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// A request that passed authentication.
struct Authenticated {
    username: String,
    key: [u8; 16],
}

impl Server {
    pub fn new(config: Config) -> Server {
        let mut nonce_key = [0u8; 32];
        // Should the OS generator fail, nonces are still unforgeable: the key then derives from
        // the shared secret alone.
        let _ = getrandom::fill(&mut nonce_key);
        let mut mac = hmac_sha1(config.shared_secret.expose().as_bytes());
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
            bytes_relayed: 0,
            denials: BTreeMap::new(),
        }
    }

    /// A datagram from a client on the TURN listener: STUN or ChannelData. `now_unix` is the
    /// wall clock in seconds, for REST username expiry and nonces.
    pub fn handle_client(&mut self, now: Instant, now_unix: u64, from: SocketAddr, bytes: &[u8]) {
        match bytes.first() {
            Some(0x00..=0x3F) => self.handle_stun(now, now_unix, from, bytes),
            Some(0x40..=0x4F) => self.handle_channel_data(now, from, bytes),
            _ => {}
        }
    }

    /// A datagram that arrived on relay socket `relay` from `from_peer`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        from_peer: SocketAddr,
        bytes: &[u8],
    ) {
        let Some(client) = self.relays.get(&relay).copied() else {
            return;
        };
        let Some(allocation) = self.allocations.get(&client) else {
            return;
        };
        if now >= allocation.expires {
            return;
        }
        let ip = canonical(from_peer.ip());
        if allocation.permissions.get(&ip).is_none_or(|e| now >= *e) {
            return;
        }
        let channel = allocation
            .channels
            .iter()
            .find(|(_, c)| c.peer == from_peer && now < c.expires)
            .map(|(number, _)| *number);
        let out = match channel {
            Some(number) => {
                let Ok(length) = u16::try_from(bytes.len()) else {
                    return;
                };
                let mut out = Vec::with_capacity(4 + bytes.len());
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(bytes);
                out
            }
            None => {
                let mut message = Message::new();
                message.typ = MessageType::new(METHOD_DATA, CLASS_INDICATION);
                message.transaction_id = TransactionId::new();
                message.write_header();
                if add_xor_address(&mut message, ATTR_XOR_PEER_ADDRESS, from_peer).is_none() {
                    return;
                }
                message.add(ATTR_DATA, bytes);
                message.raw
            }
        };
        self.bytes_relayed += bytes.len() as u64;
        self.outputs.push_back(Output::ToClient {
            to: client,
            bytes: out,
        });
    }

    /// The driver could not bind `relay`: the allocation using it ends.
    pub fn handle_bind_failed(&mut self, relay: SocketAddr) {
        if let Some(client) = self.relays.remove(&relay) {
            self.allocations.remove(&client);
        }
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<SocketAddr> = self
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

    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocations.len(),
            bytes_relayed: self.bytes_relayed,
            denials: self.denials.clone(),
            ..Stats::default()
        }
    }

    fn handle_stun(&mut self, now: Instant, now_unix: u64, from: SocketAddr, bytes: &[u8]) {
        let Ok(mut message) = decode(bytes) else {
            return;
        };
        let class = message.typ.class;
        let method = message.typ.method;
        if class == CLASS_INDICATION {
            if method == METHOD_SEND {
                self.handle_send(now, from, &message);
            }
            return;
        }
        if class != CLASS_REQUEST {
            return;
        }
        if method == METHOD_BINDING {
            let answer = binding_success(&message.transaction_id.0, from);
            self.queue_to_client(from, answer);
            return;
        }
        let known = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            self.reply_error(from, &message, CODE_BAD_REQUEST, None);
            return;
        }
        let Some(auth) = self.authenticate(now_unix, from, &mut message) else {
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
            // implement (EVEN-PORT, RESERVATION-TOKEN, DONT-FRAGMENT, REQUESTED-ADDRESS-FAMILY…).
            let mut reply = response(&message, CLASS_ERROR_RESPONSE);
            if error_attribute(CODE_UNKNOWN_ATTRIBUTE)
                .add_to(&mut reply)
                .is_ok()
            {
                reply.add(ATTR_UNKNOWN_ATTRIBUTES, &unknown);
                self.finish(from, reply, Some(&auth.key));
            }
            return;
        }
        if method == METHOD_ALLOCATE {
            self.handle_allocate(now, from, &message, auth);
            return;
        }
        let Some(allocation) = self.allocations.get(&from) else {
            self.reply_error(from, &message, CODE_ALLOC_MISMATCH, Some(&auth.key));
            return;
        };
        if now >= allocation.expires {
            self.remove_allocation(from);
            self.reply_error(from, &message, CODE_ALLOC_MISMATCH, Some(&auth.key));
            return;
        }
        if allocation.username != auth.username {
            self.reply_error(from, &message, CODE_WRONG_CREDENTIALS, Some(&auth.key));
            return;
        }
        if method == METHOD_REFRESH {
            self.handle_refresh(now, from, &message, &auth);
        } else if method == METHOD_CREATE_PERMISSION {
            self.handle_create_permission(now, from, &message, &auth);
        } else {
            self.handle_channel_bind(now, from, &message, &auth);
        }
    }

    /// The long-term credential mechanism (RFC 8489 §9.2.4); answers the failures itself.
    fn authenticate(
        &mut self,
        now_unix: u64,
        from: SocketAddr,
        message: &mut Message,
    ) -> Option<Authenticated> {
        if !message.contains(ATTR_MESSAGE_INTEGRITY) {
            self.reply_challenge(now_unix, from, message, CODE_UNAUTHORIZED);
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
            self.reply_error(from, message, CODE_BAD_REQUEST, None);
            return None;
        };
        if realm != self.config.realm {
            self.reply_challenge(now_unix, from, message, CODE_UNAUTHORIZED);
            return None;
        }
        if !self.nonce_valid(&nonce, now_unix) {
            self.reply_challenge(now_unix, from, message, CODE_STALE_NONCE);
            return None;
        }
        let Ok(password) = check_rest_username(&self.config.shared_secret, &username, now_unix)
        else {
            self.reply_challenge(now_unix, from, message, CODE_UNAUTHORIZED);
            return None;
        };
        let key = long_term_key(&username, &self.config.realm, &password);
        let integrity_ok = message
            .get(ATTR_MESSAGE_INTEGRITY)
            .is_ok_and(|value| value.len() == 20)
            && integrity_is_last(message)
            && MessageIntegrity::check(message, &key, &RingCrypto).is_ok();
        if !integrity_ok {
            self.reply_challenge(now_unix, from, message, CODE_UNAUTHORIZED);
            return None;
        }
        Some(Authenticated { username, key })
    }

    fn handle_allocate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &Message,
        auth: Authenticated,
    ) {
        let key = auth.key;
        if let Some(existing) = self.allocations.get(&from) {
            if existing.allocate_transaction == request.transaction_id.0 && now < existing.expires {
                // A retransmission: the same answer again.
                let (relay, lifetime) = (existing.relay, existing.lifetime);
                self.reply_allocated(from, request, relay, lifetime, &key);
            } else {
                self.reply_error(from, request, CODE_ALLOC_MISMATCH, Some(&key));
            }
            return;
        }
        match request.get(ATTR_REQUESTED_TRANSPORT) {
            Ok(value) if value.len() == 4 => {
                if value.first() != Some(&TRANSPORT_UDP) {
                    self.reply_error(from, request, CODE_UNSUPPORTED_TRANS_PROTO, Some(&key));
                    return;
                }
            }
            _ => {
                self.reply_error(from, request, CODE_BAD_REQUEST, Some(&key));
                return;
            }
        }
        let Some(lifetime) = self.requested_lifetime(request) else {
            self.reply_error(from, request, CODE_BAD_REQUEST, Some(&key));
            return;
        };
        let per_user = self
            .allocations
            .values()
            .filter(|a| a.username == auth.username)
            .count();
        if per_user >= self.config.max_allocations_per_username {
            self.reply_error(from, request, CODE_ALLOC_QUOTA_REACHED, Some(&key));
            return;
        }
        if self.allocations.len() >= self.config.max_allocations_total {
            self.reply_error(from, request, CODE_INSUFFICIENT_CAPACITY, Some(&key));
            return;
        }
        let Some(relay) = self.free_relay() else {
            self.reply_error(from, request, CODE_INSUFFICIENT_CAPACITY, Some(&key));
            return;
        };
        let lifetime = if lifetime.is_zero() {
            self.config.default_lifetime
        } else {
            lifetime
        };
        self.allocations.insert(
            from,
            Allocation {
                relay,
                username: auth.username,
                expires: now + lifetime,
                allocate_transaction: request.transaction_id.0,
                lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
            },
        );
        self.relays.insert(relay, from);
        self.outputs.push_back(Output::Bind(relay));
        self.reply_allocated(from, request, relay, lifetime, &key);
    }

    fn handle_refresh(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &Message,
        auth: &Authenticated,
    ) {
        let Some(lifetime) = self.requested_lifetime(request) else {
            self.reply_error(from, request, CODE_BAD_REQUEST, Some(&auth.key));
            return;
        };
        if lifetime.is_zero() {
            self.remove_allocation(from);
        } else if let Some(allocation) = self.allocations.get_mut(&from) {
            allocation.expires = now + lifetime;
            allocation.lifetime = lifetime;
        }
        let lifetime_secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        self.reply_success(
            from,
            request,
            &[(ATTR_LIFETIME, lifetime_secs.to_be_bytes().to_vec())],
            &auth.key,
        );
    }

    fn handle_create_permission(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &Message,
        auth: &Authenticated,
    ) {
        let peers: Vec<Option<SocketAddr>> = request
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
            .map(|a| decode_xor_address(&a.value, &request.transaction_id.0))
            .collect();
        let Some(peers) = peers.into_iter().collect::<Option<Vec<_>>>() else {
            self.reply_error(from, request, CODE_BAD_REQUEST, Some(&auth.key));
            return;
        };
        if peers.is_empty() {
            self.reply_error(from, request, CODE_BAD_REQUEST, Some(&auth.key));
            return;
        }
        for peer in &peers {
            if let Err(denied) = self.config.policy.check(*peer) {
                *self.denials.entry(denied).or_default() += 1;
                self.reply_error(from, request, CODE_FORBIDDEN, Some(&auth.key));
                return;
            }
        }
        let Some(allocation) = self.allocations.get_mut(&from) else {
            return;
        };
        let new_peers = peers
            .iter()
            .filter(|p| !allocation.permissions.contains_key(&canonical(p.ip())))
            .count();
        if allocation.permissions.len() + new_peers > MAX_PERMISSIONS {
            self.reply_error(from, request, CODE_INSUFFICIENT_CAPACITY, Some(&auth.key));
            return;
        }
        {
            for peer in peers {
                allocation
                    .permissions
                    .insert(canonical(peer.ip()), now + PERMISSION_LIFETIME);
            }
        }
        self.reply_success(from, request, &[], &auth.key);
    }

    fn handle_channel_bind(
        &mut self,
        now: Instant,
        from: SocketAddr,
        request: &Message,
        auth: &Authenticated,
    ) {
        let number = request
            .get(ATTR_CHANNEL_NUMBER)
            .ok()
            .filter(|v| v.len() == 4)
            .and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?])))
            .filter(|n| CHANNELS.contains(n));
        let peer = request
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| decode_xor_address(&v, &request.transaction_id.0));
        let (Some(number), Some(peer)) = (number, peer) else {
            self.reply_error(from, request, CODE_BAD_REQUEST, Some(&auth.key));
            return;
        };
        if let Err(denied) = self.config.policy.check(peer) {
            *self.denials.entry(denied).or_default() += 1;
            self.reply_error(from, request, CODE_FORBIDDEN, Some(&auth.key));
            return;
        }
        let Some(allocation) = self.allocations.get_mut(&from) else {
            return;
        };
        // A channel stays with its peer and a peer with its channel (RFC 8656 §12.2).
        let conflict = allocation
            .channels
            .iter()
            .any(|(n, c)| (*n == number && c.peer != peer) || (*n != number && c.peer == peer));
        if conflict {
            self.reply_error(from, request, CODE_BAD_REQUEST, Some(&auth.key));
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
            .insert(canonical(peer.ip()), now + PERMISSION_LIFETIME);
        self.reply_success(from, request, &[], &auth.key);
    }

    fn handle_send(&mut self, now: Instant, from: SocketAddr, message: &Message) {
        let Some(allocation) = self.allocations.get(&from) else {
            return;
        };
        if now >= allocation.expires {
            return;
        }
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
        let permitted = allocation
            .permissions
            .get(&canonical(peer.ip()))
            .is_some_and(|e| now < *e);
        let relay = allocation.relay;
        if let Err(denied) = self.config.policy.check(peer) {
            *self.denials.entry(denied).or_default() += 1;
            return;
        }
        if !permitted {
            return;
        }
        self.relay_to_peer(relay, peer, data);
    }

    fn handle_channel_data(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let (Some(header), Some(rest)) = (bytes.get(..4), bytes.get(4..)) else {
            return;
        };
        let number = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let Some(data) = rest.get(..length) else {
            return;
        };
        let Some(allocation) = self.allocations.get(&from) else {
            return;
        };
        if now >= allocation.expires {
            return;
        }
        let Some(channel) = allocation.channels.get(&number) else {
            return;
        };
        let peer = channel.peer;
        let permitted = now < channel.expires
            && allocation
                .permissions
                .get(&canonical(peer.ip()))
                .is_some_and(|e| now < *e);
        if permitted {
            let relay = allocation.relay;
            self.relay_to_peer(relay, peer, data.to_vec());
        }
    }

    fn relay_to_peer(&mut self, relay: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.bytes_relayed += bytes.len() as u64;
        self.outputs.push_back(Output::ToPeer { relay, to, bytes });
    }

    fn remove_allocation(&mut self, client: SocketAddr) {
        if let Some(allocation) = self.allocations.remove(&client) {
            self.relays.remove(&allocation.relay);
            self.outputs.push_back(Output::Unbind(allocation.relay));
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

    fn free_relay(&mut self) -> Option<SocketAddr> {
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
            if !self.relays.contains_key(&relay) {
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

    fn reply_challenge(
        &mut self,
        now_unix: u64,
        to: SocketAddr,
        request: &Message,
        code: ErrorCode,
    ) {
        let nonce = self.nonce(now_unix);
        let realm = self.config.realm.clone();
        let mut message = response(request, CLASS_ERROR_RESPONSE);
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

    fn reply_error(
        &mut self,
        to: SocketAddr,
        request: &Message,
        code: ErrorCode,
        key: Option<&[u8; 16]>,
    ) {
        let mut message = response(request, CLASS_ERROR_RESPONSE);
        if error_attribute(code).add_to(&mut message).is_ok() {
            self.finish(to, message, key);
        }
    }

    fn reply_allocated(
        &mut self,
        to: SocketAddr,
        request: &Message,
        relay: SocketAddr,
        lifetime: Duration,
        key: &[u8; 16],
    ) {
        let mut message = response(request, CLASS_SUCCESS_RESPONSE);
        let lifetime_secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        let ok = add_xor_address(&mut message, ATTR_XOR_RELAYED_ADDRESS, relay).is_some()
            && add_xor_address(&mut message, ATTR_XORMAPPED_ADDRESS, to).is_some();
        if ok {
            message.add(ATTR_LIFETIME, &lifetime_secs.to_be_bytes());
            self.finish(to, message, Some(key));
        }
    }

    fn reply_success(
        &mut self,
        to: SocketAddr,
        request: &Message,
        attributes: &[(AttrType, Vec<u8>)],
        key: &[u8; 16],
    ) {
        let mut message = response(request, CLASS_SUCCESS_RESPONSE);
        for (typ, value) in attributes {
            message.add(*typ, value);
        }
        self.finish(to, message, Some(key));
    }

    /// Adds MESSAGE-INTEGRITY (when a key is known) and FINGERPRINT, and queues the message.
    fn finish(&mut self, to: SocketAddr, mut message: Message, key: Option<&[u8; 16]>) {
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

    fn queue_to_client(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.outputs.push_back(Output::ToClient { to, bytes });
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length")
}

fn response(request: &Message, class: MessageClass) -> Message {
    let mut message = Message::new();
    message.typ = MessageType::new(request.typ.method, class);
    message.transaction_id = request.transaction_id;
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
        441 => b"Wrong Credentials",
        442 => b"Unsupported Transport Protocol",
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
