//! A small TURN client (RFC 8656) for the verification page: it does what a browser behind a
//! strict firewall does with rtcbox's TURN server, and reports what it saw.
//!
//! One [`probe`] opens one connection (UDP, TCP or TLS) to one address and runs:
//!
//! 1. Allocate without credentials: a TURN server answers 401 with REALM and NONCE;
//! 2. Allocate with the long-term credentials: XOR-RELAYED-ADDRESS;
//! 3. CreatePermission for a peer that must be allowed (the SFU's media address, or a public
//!    address for Synapse's credentials);
//! 4. CreatePermission for a peer that must be refused with 403 (an address on the LAN, e.g. the
//!    admin panel's own): proof that a credential is no way into the LAN;
//! 5. Refresh with LIFETIME 0, which ends the allocation again.
//!
//! Over UDP requests are retransmitted (250 ms, doubling); over TCP and TLS, STUN messages follow
//! each other on the stream, each framed by its own length field (RFC 8489 §6.2.2), ChannelData
//! padded to 4 bytes. Everything a server sends is untrusted: garbage, truncated frames and
//! answers for other transactions are reported or skipped, never a panic. Every step is bounded
//! by the probe's deadline; a probe that runs out of time reports how far it got.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rtc_stun::attributes::{
    ATTR_FINGERPRINT, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_TRANSPORT, ATTR_SOFTWARE, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS, ATTR_XORMAPPED_ADDRESS, AttrType,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::error_code::ErrorCodeAttribute;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter as _, METHOD_ALLOCATE,
    METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Method, Setter as _,
    TransactionId,
};
use rtc_stun::textattrs::TextAttribute;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::net::stun::{MAGIC_COOKIE, decode, new_transaction_id};
use crate::secret::Secret;
use crate::setup::fetch::{FetchError, tls_error};
use crate::turn::credentials::long_term_key;
use crate::turn::framing::{Frame, next_frame};
use crate::turn::status::Transport;

/// Longest wait for one answer (a lost UDP request is retransmitted inside it).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(2);
/// First UDP retransmission; the interval doubles after each.
const FIRST_RETRANSMIT: Duration = Duration::from_millis(250);
/// IANA protocol number of UDP, for REQUESTED-TRANSPORT.
const TRANSPORT_UDP: u8 = 17;
/// Longest text taken from an answer (reason phrases, SOFTWARE) into a report.
const MAX_TEXT: usize = 80;

/// How to reach the server.
#[derive(Clone)]
pub enum Dial {
    Udp,
    Tcp,
    /// TLS with this trust store; the certificate must be valid for `server_name`.
    Tls {
        connector: tokio_rustls::TlsConnector,
        server_name: String,
    },
}

impl Dial {
    pub fn transport(&self) -> Transport {
        match self {
            Dial::Udp => Transport::Udp,
            Dial::Tcp => Transport::Tcp,
            Dial::Tls { .. } => Transport::Tls,
        }
    }
}

/// One probe: where, how, as whom, and which peers to ask for.
#[derive(Clone)]
pub struct ProbeSpec {
    pub target: SocketAddr,
    pub dial: Dial,
    pub username: String,
    pub password: Secret,
    /// A peer the server must let this allocation reach.
    pub allowed_peer: Option<SocketAddr>,
    /// A peer the server must refuse (403).
    pub denied_peer: Option<SocketAddr>,
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub transport: Transport,
    pub target: SocketAddr,
    /// The SOFTWARE the server named in any answer (e.g. a coturn still holding the port).
    pub software: Option<String>,
    pub outcome: Result<Allocated, ProbeError>,
}

/// An allocation was made; what followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// XOR-RELAYED-ADDRESS: where peers reach this allocation.
    pub relayed: SocketAddr,
    /// XOR-MAPPED-ADDRESS: how the server saw the client, when it said.
    pub mapped: Option<SocketAddr>,
    pub allowed: Option<(SocketAddr, Answer)>,
    pub denied: Option<(SocketAddr, Answer)>,
    /// The Refresh with LIFETIME 0.
    pub released: Answer,
}

/// The answer to one request after the allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Success,
    Error {
        code: u16,
        reason: String,
    },
    /// No usable answer (time ran out, the connection closed, garbage), and why.
    Failed(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Success => f.write_str("success"),
            Answer::Error { code, reason } if reason.is_empty() => write!(f, "error {code}"),
            Answer::Error { code, reason } => write!(f, "error {code} ({reason})"),
            Answer::Failed(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// Why no allocation was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing listens: the TCP connection was refused, or UDP came back "port unreachable".
    Refused,
    /// The TCP connection did not complete in time (packets dropped on the way).
    ConnectTimeout,
    /// Another socket error.
    Connect(String),
    /// The TLS listener answers, but its certificate is not trusted (self-signed, wrong name,
    /// expired…).
    Untrusted(String),
    /// The TLS handshake failed for another reason.
    Tls(String),
    /// No answer to the first Allocate in time.
    NoAnswer,
    /// Something answered, but not STUN/TURN.
    NotTurn(String),
    /// The Allocate without credentials was not answered with 401, REALM and NONCE.
    NoChallenge(String),
    /// The Allocate with credentials was refused.
    Rejected { code: u16, reason: String },
    /// The server stopped answering after the challenge, or its answers were unusable.
    Broken(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Refused => f.write_str("nothing listens there (connection refused)"),
            ProbeError::ConnectTimeout => f.write_str("the connection attempt timed out"),
            ProbeError::Connect(why) => write!(f, "cannot connect ({why})"),
            ProbeError::Untrusted(why) => write!(f, "its certificate is not trusted: {why}"),
            ProbeError::Tls(why) => write!(f, "the TLS handshake failed: {why}"),
            ProbeError::NoAnswer => write!(
                f,
                "no answer within {} s",
                TRANSACTION_TIMEOUT.as_secs_f32()
            ),
            ProbeError::NotTurn(why) => write!(f, "the answer is not TURN ({why})"),
            ProbeError::NoChallenge(what) => {
                write!(
                    f,
                    "it did not ask for credentials as TURN servers do: {what}"
                )
            }
            ProbeError::Rejected { code, reason } if reason.is_empty() => {
                write!(f, "the allocation was refused with error {code}")
            }
            ProbeError::Rejected { code, reason } => {
                write!(f, "the allocation was refused with error {code} ({reason})")
            }
            ProbeError::Broken(why) => write!(f, "{why}"),
        }
    }
}

/// Runs one probe; returns by `deadline` at the latest.
pub async fn probe(spec: &ProbeSpec, deadline: Instant) -> ProbeReport {
    let mut software = None;
    let outcome = run(spec, deadline, &mut software).await;
    ProbeReport {
        transport: spec.dial.transport(),
        target: spec.target,
        software,
        outcome,
    }
}

async fn run(
    spec: &ProbeSpec,
    deadline: Instant,
    software: &mut Option<String>,
) -> Result<Allocated, ProbeError> {
    let mut conn = Conn::open(spec, deadline).await?;
    let requested_transport = vec![TRANSPORT_UDP, 0, 0, 0];

    // 1. The challenge.
    let first = conn
        .transact(
            &Request::new(METHOD_ALLOCATE).with(ATTR_REQUESTED_TRANSPORT, &requested_transport),
            None,
            deadline,
        )
        .await
        .map_err(|e| match e {
            TxError::Timeout { refused: true } | TxError::Unreachable => ProbeError::Refused,
            TxError::Timeout { refused: false } => ProbeError::NoAnswer,
            TxError::Garbage(why) => ProbeError::NotTurn(why),
            TxError::Io(why) => ProbeError::Broken(why),
            TxError::Build(why) => ProbeError::Broken(why),
        })?;
    note_software(&first, software);
    let (realm, nonce) = match first.outcome {
        Outcome::Error { code: 401, .. } => match (&first.realm, &first.nonce) {
            (Some(realm), Some(nonce)) => (realm.clone(), nonce.clone()),
            _ => {
                return Err(ProbeError::NoChallenge(
                    "its 401 answer lacks REALM or NONCE".into(),
                ));
            }
        },
        Outcome::Error { code, reason } => {
            return Err(ProbeError::NoChallenge(format!(
                "it answered error {code}{}",
                shown_reason(&reason)
            )));
        }
        Outcome::Success => {
            return Err(ProbeError::NoChallenge(
                "it allocated a relay without any credentials (an open relay)".into(),
            ));
        }
    };

    let mut auth = Auth {
        username: spec.username.clone(),
        key: long_term_key(&spec.username, &realm, &spec.password),
        realm,
        nonce,
    };

    // 2. The allocation.
    let allocate =
        Request::new(METHOD_ALLOCATE).with(ATTR_REQUESTED_TRANSPORT, &requested_transport);
    let reply = conn
        .transact_authenticated(&allocate, &mut auth, deadline)
        .await
        .map_err(|e| match e {
            TxError::Timeout { .. } | TxError::Unreachable => ProbeError::Broken(
                "it answered the first Allocate but not the one with credentials".into(),
            ),
            TxError::Garbage(why) | TxError::Io(why) | TxError::Build(why) => {
                ProbeError::Broken(why)
            }
        })?;
    note_software(&reply, software);
    let relayed = match reply.outcome {
        Outcome::Error { code, reason } => return Err(ProbeError::Rejected { code, reason }),
        Outcome::Success => reply.relayed.ok_or_else(|| {
            ProbeError::Broken("its Allocate success carries no usable XOR-RELAYED-ADDRESS".into())
        })?,
    };
    let mapped = reply.mapped;

    // 3.-5. Permissions, then release.
    let permission = async |peer: Option<SocketAddr>, conn: &mut Conn, auth: &mut Auth| {
        let peer = peer?;
        let request = Request::new(METHOD_CREATE_PERMISSION).with_peer(peer);
        Some((
            peer,
            answer(conn.transact_authenticated(&request, auth, deadline).await),
        ))
    };
    let allowed = permission(spec.allowed_peer, &mut conn, &mut auth).await;
    let denied = permission(spec.denied_peer, &mut conn, &mut auth).await;
    let release = Request::new(METHOD_REFRESH).with(ATTR_LIFETIME, &0u32.to_be_bytes());
    let released = answer(
        conn.transact_authenticated(&release, &mut auth, deadline)
            .await,
    );
    Ok(Allocated {
        relayed,
        mapped,
        allowed,
        denied,
        released,
    })
}

fn answer(result: Result<Reply, TxError>) -> Answer {
    match result {
        Ok(Reply {
            outcome: Outcome::Success,
            ..
        }) => Answer::Success,
        Ok(Reply {
            outcome: Outcome::Error { code, reason },
            ..
        }) => Answer::Error { code, reason },
        Err(TxError::Timeout { .. } | TxError::Unreachable) => Answer::Failed(format!(
            "no answer within {} s",
            TRANSACTION_TIMEOUT.as_secs_f32()
        )),
        Err(TxError::Garbage(why) | TxError::Io(why) | TxError::Build(why)) => Answer::Failed(why),
    }
}

fn note_software(reply: &Reply, software: &mut Option<String>) {
    if software.is_none() {
        software.clone_from(&reply.software);
    }
}

fn shown_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// The long-term credentials in use, with the server's current nonce.
struct Auth {
    username: String,
    realm: String,
    nonce: String,
    key: [u8; 16],
}

/// A request before its transaction id and credentials are added.
struct Request {
    method: Method,
    attributes: Vec<(AttrType, Vec<u8>)>,
    peer: Option<SocketAddr>,
}

impl Request {
    fn new(method: Method) -> Request {
        Request {
            method,
            attributes: Vec::new(),
            peer: None,
        }
    }

    fn with(mut self, typ: AttrType, value: &[u8]) -> Request {
        self.attributes.push((typ, value.to_vec()));
        self
    }

    fn with_peer(mut self, peer: SocketAddr) -> Request {
        self.peer = Some(peer);
        self
    }

    /// The bytes on the wire: attributes, then USERNAME, REALM, NONCE and MESSAGE-INTEGRITY when
    /// authenticated, then FINGERPRINT.
    fn encode(&self, tid: [u8; 12], auth: Option<&Auth>) -> Result<Vec<u8>, String> {
        let mut message = Message::new();
        message.typ = MessageType::new(self.method, CLASS_REQUEST);
        message.transaction_id = TransactionId(tid);
        message.write_header();
        for (typ, value) in &self.attributes {
            message.add(*typ, value);
        }
        if let Some(peer) = self.peer {
            message.add(ATTR_XOR_PEER_ADDRESS, &xor_address(peer, &tid));
        }
        fn failed(e: impl fmt::Display) -> String {
            format!("the request cannot be built ({e})")
        }
        if let Some(auth) = auth {
            for (typ, text) in [
                (ATTR_USERNAME, &auth.username),
                (ATTR_REALM, &auth.realm),
                (ATTR_NONCE, &auth.nonce),
            ] {
                TextAttribute::new(typ, text.clone())
                    .add_to(&mut message)
                    .map_err(failed)?;
            }
            MessageIntegrity::new_raw_integrity_with_provider(auth.key.to_vec(), &RingCrypto)
                .add_to(&mut message)
                .map_err(failed)?;
        }
        FINGERPRINT.add_to(&mut message).map_err(failed)?;
        Ok(message.raw)
    }
}

/// A decoded answer to one of our requests.
struct Reply {
    outcome: Outcome,
    realm: Option<String>,
    nonce: Option<String>,
    software: Option<String>,
    relayed: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
}

enum Outcome {
    Success,
    Error { code: u16, reason: String },
}

enum TxError {
    /// No answer in time; `refused` when UDP came back "port unreachable".
    Timeout {
        refused: bool,
    },
    /// Only answers that are not STUN, or a stream out of step.
    Garbage(String),
    Io(String),
    Build(String),
    /// UDP came back "port unreachable" (only inside [`Conn::transact`]).
    Unreachable,
}

/// What a server sends, as it arrives.
enum Received {
    Stun(Vec<u8>),
    /// ChannelData and anything else that is no answer to a request.
    Other,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

enum Conn {
    Udp(UdpSocket),
    Stream {
        io: Box<dyn Stream>,
        buffer: Vec<u8>,
    },
}

impl Conn {
    async fn open(spec: &ProbeSpec, deadline: Instant) -> Result<Conn, ProbeError> {
        let target = spec.target;
        let connect_deadline = deadline.min(Instant::now() + TRANSACTION_TIMEOUT);
        match &spec.dial {
            Dial::Udp => {
                let bind: SocketAddr = if target.is_ipv4() {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
                } else {
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
                };
                let socket = UdpSocket::bind(bind).await.map_err(|e| {
                    ProbeError::Connect(format!(
                        "no local UDP socket: {}",
                        crate::net::explain::io_error(&e)
                    ))
                })?;
                // Connected, so ICMP "port unreachable" comes back as an error.
                socket
                    .connect(target)
                    .await
                    .map_err(|e| ProbeError::Connect(crate::net::explain::io_error(&e)))?;
                Ok(Conn::Udp(socket))
            }
            Dial::Tcp => {
                let tcp = connect_tcp(target, connect_deadline).await?;
                Ok(Conn::stream(tcp))
            }
            Dial::Tls {
                connector,
                server_name,
            } => {
                let tcp = connect_tcp(target, connect_deadline).await?;
                let name = rustls::pki_types::ServerName::try_from(server_name.clone())
                    .map_err(|_| ProbeError::Tls(format!("'{server_name}' is not a host name")))?;
                let handshake_deadline = deadline.min(Instant::now() + TRANSACTION_TIMEOUT);
                match tokio::time::timeout_at(handshake_deadline, connector.connect(name, tcp))
                    .await
                {
                    Err(_) => Err(ProbeError::Tls(
                        "no TLS answer in time: the port may serve plain TURN".into(),
                    )),
                    Ok(Err(error)) if unknown_issuer(&error) => Err(ProbeError::Untrusted(
                        "it is self-signed or issued by a private CA, not by a public one such \
                         as Let's Encrypt"
                            .into(),
                    )),
                    Ok(Err(error)) => Err(match tls_error(server_name, error) {
                        FetchError::Certificate { reason, .. } => ProbeError::Untrusted(reason),
                        FetchError::Tls { reason, .. } => ProbeError::Tls(reason),
                        other => ProbeError::Tls(other.to_string()),
                    }),
                    Ok(Ok(tls)) => Ok(Conn::stream(tls)),
                }
            }
        }
    }

    fn stream(io: impl Stream + 'static) -> Conn {
        Conn::Stream {
            io: Box::new(io),
            buffer: Vec::new(),
        }
    }

    /// An authenticated request; on 438 (stale nonce) or a fresh 401 nonce, once more with the
    /// new nonce.
    async fn transact_authenticated(
        &mut self,
        request: &Request,
        auth: &mut Auth,
        deadline: Instant,
    ) -> Result<Reply, TxError> {
        let reply = self.transact(request, Some(auth), deadline).await?;
        let fresh_nonce = match (&reply.outcome, &reply.nonce) {
            (Outcome::Error { code: 438, .. }, Some(nonce)) => Some(nonce.clone()),
            (Outcome::Error { code: 401, .. }, Some(nonce)) if *nonce != auth.nonce => {
                Some(nonce.clone())
            }
            _ => None,
        };
        match fresh_nonce {
            Some(nonce) => {
                auth.nonce = nonce;
                self.transact(request, Some(auth), deadline).await
            }
            None => Ok(reply),
        }
    }

    /// Sends `request` and waits for its answer until `deadline` or [`TRANSACTION_TIMEOUT`].
    async fn transact(
        &mut self,
        request: &Request,
        auth: Option<&Auth>,
        deadline: Instant,
    ) -> Result<Reply, TxError> {
        let tid = new_transaction_id();
        let bytes = request.encode(tid, auth).map_err(TxError::Build)?;
        let deadline = deadline.min(Instant::now() + TRANSACTION_TIMEOUT);
        let key = auth.map(|a| a.key);
        let mut problem: Option<String> = None;
        let mut refused = false;
        let mut next_send = Instant::now();
        let mut interval = FIRST_RETRANSMIT;
        let mut sent_once = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(match problem {
                    Some(why) => TxError::Garbage(why),
                    None => TxError::Timeout { refused },
                });
            }
            let is_udp = matches!(self, Conn::Udp(_));
            if now >= next_send && (is_udp || !sent_once) {
                if let Err(e) = self.send(&bytes).await {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        refused = true;
                    } else if !is_udp {
                        return Err(TxError::Io(format!(
                            "the connection failed ({})",
                            crate::net::explain::io_error(&e)
                        )));
                    }
                }
                sent_once = true;
                next_send = now + interval;
                interval *= 2;
            }
            let wake = if is_udp {
                next_send.min(deadline)
            } else {
                deadline
            };
            let frame = match tokio::time::timeout_at(wake, self.receive()).await {
                Err(_) => continue,
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) if is_udp => {
                    refused |= matches!(e, TxError::Unreachable);
                    // Keep listening: a retransmission may still get through.
                    tokio::time::sleep_until(wake).await;
                    continue;
                }
                Ok(Err(e)) => return Err(e),
            };
            let Received::Stun(bytes) = frame else {
                continue;
            };
            match parse_reply(&bytes, &tid, request.method, key.as_ref()) {
                Parsed::Reply(reply) => return Ok(reply),
                Parsed::NotOurs => {}
                // A stream has no spoofed answers: what comes on it is the server's.
                Parsed::Bad(why) if !is_udp => return Err(TxError::Garbage(why)),
                Parsed::Bad(why) => problem = Some(why),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Udp(socket) => socket.send(bytes).await.map(|_| ()),
            Conn::Stream { io, .. } => {
                io.write_all(bytes).await?;
                io.flush().await
            }
        }
    }

    /// The next datagram, or the next whole frame of the stream.
    async fn receive(&mut self) -> Result<Received, TxError> {
        match self {
            Conn::Udp(socket) => {
                let mut buf = vec![0u8; 2048];
                match socket.recv(&mut buf).await {
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(classify(buf))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Err(TxError::Unreachable)
                    }
                    Err(e) => Err(TxError::Io(crate::net::explain::io_error(&e))),
                }
            }
            Conn::Stream { io, buffer } => loop {
                match frame_length(buffer) {
                    Ok(Some(length)) if buffer.len() >= length => {
                        let rest = buffer.split_off(length);
                        let frame = std::mem::replace(buffer, rest);
                        return Ok(classify(frame));
                    }
                    Ok(_) => {}
                    Err(why) => return Err(TxError::Garbage(why)),
                }
                let mut chunk = [0u8; 4096];
                match io.read(&mut chunk).await {
                    Ok(0) => {
                        return Err(TxError::Io(if buffer.is_empty() {
                            "the server closed the connection".into()
                        } else {
                            "the server closed the connection in the middle of a message".into()
                        }));
                    }
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        return Err(TxError::Io(format!(
                            "the connection failed ({})",
                            crate::net::explain::io_error(&e)
                        )));
                    }
                }
            },
        }
    }
}

fn classify(bytes: Vec<u8>) -> Received {
    match bytes.first() {
        Some(0x00..=0x3F) => Received::Stun(bytes),
        _ => Received::Other,
    }
}

/// How long the frame at the start of `buffer` is, once that is known ([`next_frame`], as the
/// server frames it); an error naming what answers when it is not TURN.
fn frame_length(buffer: &[u8]) -> Result<Option<usize>, String> {
    // "HTTP/…" begins like ChannelData ('H' is 0x48) and a TLS record (type 20-23, version 3.x)
    // like STUN, so both are recognised first.
    if buffer.starts_with(b"HTTP/") || matches!(buffer, [0x14..=0x17, 0x03, ..]) {
        return Err(describe_foreign(buffer));
    }
    match next_frame(buffer) {
        Frame::Incomplete => Ok(None),
        Frame::Complete(length) => Ok(Some(length)),
        Frame::Invalid => Err(describe_foreign(buffer)),
    }
}

/// What a non-STUN answer probably is, for the report.
fn describe_foreign(bytes: &[u8]) -> String {
    if bytes.starts_with(b"HTTP/") {
        "an HTTP server answers on this port".into()
    } else if matches!(bytes, [0x14..=0x17, 0x03, ..]) {
        "a TLS server answers on this port".into()
    } else {
        "the server sent something that is neither STUN nor ChannelData".into()
    }
}

enum Parsed {
    Reply(Reply),
    /// Another transaction's answer, an indication or a request: not for us.
    NotOurs,
    Bad(String),
}

fn parse_reply(bytes: &[u8], tid: &[u8; 12], method: Method, key: Option<&[u8; 16]>) -> Parsed {
    let mut message = match decode(bytes) {
        Ok(message) => message,
        Err(e) => return Parsed::Bad(format!("an unreadable answer: {e}")),
    };
    if message.transaction_id.0 != *tid {
        return Parsed::NotOurs;
    }
    let class = message.typ.class;
    if message.typ.method != method
        || (class != CLASS_SUCCESS_RESPONSE && class != CLASS_ERROR_RESPONSE)
    {
        return Parsed::Bad(format!(
            "an answer of type {:#06x} to a request of another type",
            message.typ.value()
        ));
    }
    let text = |typ| {
        TextAttribute::get_from_as(&message, typ)
            .ok()
            .map(|attr| attr.text)
    };
    let realm = text(ATTR_REALM);
    let nonce = text(ATTR_NONCE);
    let software = text(ATTR_SOFTWARE).map(|s| printable(&s));
    let outcome = if class == CLASS_SUCCESS_RESPONSE {
        Outcome::Success
    } else {
        let mut attribute = ErrorCodeAttribute::default();
        if attribute.get_from(&message).is_err() {
            return Parsed::Bad("an error answer without a readable ERROR-CODE".into());
        }
        Outcome::Error {
            code: attribute.code.0,
            reason: printable(&String::from_utf8_lossy(&attribute.reason)),
        }
    };
    // A success must prove the server knows the password. Error answers may come without
    // MESSAGE-INTEGRITY (401, 438), so they are only checked when they carry it.
    if let Some(key) = key
        && (class == CLASS_SUCCESS_RESPONSE || message.contains(ATTR_MESSAGE_INTEGRITY))
        && !integrity_ok(&mut message, key)
    {
        return Parsed::Bad(
            "the answer's MESSAGE-INTEGRITY does not match these credentials: another server \
             answers, or it uses another secret"
                .into(),
        );
    }
    let address = |typ| {
        message
            .get(typ)
            .ok()
            .and_then(|value| parse_xor_address(&value, tid))
    };
    Parsed::Reply(Reply {
        relayed: address(ATTR_XOR_RELAYED_ADDRESS),
        mapped: address(ATTR_XORMAPPED_ADDRESS),
        outcome,
        realm,
        nonce,
        software,
    })
}

/// MESSAGE-INTEGRITY present, 20 bytes, followed by nothing but FINGERPRINT, and correct.
fn integrity_ok(message: &mut Message, key: &[u8; 16]) -> bool {
    let mut seen = false;
    for attribute in &message.attributes.0 {
        if seen && attribute.typ != ATTR_FINGERPRINT {
            return false;
        }
        if attribute.typ == ATTR_MESSAGE_INTEGRITY {
            if attribute.length != 20 {
                return false;
            }
            seen = true;
        }
    }
    seen && MessageIntegrity::check(message, key, &RingCrypto).is_ok()
}

/// Printable characters only, at most [`MAX_TEXT`] of them.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The XOR-…-ADDRESS value for `address` in transaction `tid` (RFC 8489 §14.2).
fn xor_address(address: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    let pad = xor_pad(tid);
    let port = address.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let (family, octets): (u8, Vec<u8>) = match address.ip().to_canonical() {
        IpAddr::V4(v4) => (0x01, v4.octets().to_vec()),
        IpAddr::V6(v6) => (0x02, v6.octets().to_vec()),
    };
    let mut value = vec![0, family];
    value.extend_from_slice(&port.to_be_bytes());
    value.extend(octets.iter().zip(pad).map(|(o, p)| o ^ p));
    value
}

/// An XOR-…-ADDRESS value; `None` unless it is exactly an IPv4 or IPv6 address.
fn parse_xor_address(value: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let pad = xor_pad(tid);
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let address = value.get(4..)?;
    let mut octets = [0u8; 16];
    for (o, (a, p)) in octets.iter_mut().zip(address.iter().zip(pad)) {
        *o = a ^ p;
    }
    let ip = match (family, address.len()) {
        (0x01, 4) => IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
        (0x02, 16) => IpAddr::V6(Ipv6Addr::from(octets)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn xor_pad(tid: &[u8; 12]) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(tid);
    pad
}

/// A certificate no public CA vouches for. (The HTTP checks' wording suggests adding a CA to
/// rtcbox's trust store, which would not make browsers trust a TURN server.)
fn unknown_issuer(error: &std::io::Error) -> bool {
    matches!(
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    )
}

async fn connect_tcp(target: SocketAddr, deadline: Instant) -> Result<TcpStream, ProbeError> {
    match tokio::time::timeout_at(deadline, TcpStream::connect(target)).await {
        Err(_) => Err(ProbeError::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(ProbeError::Refused),
        Ok(Err(e)) => Err(ProbeError::Connect(crate::net::explain::io_error(&e))),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

#[cfg(test)]
mod tests;
