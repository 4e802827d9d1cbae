//! The SFU's IO: sockets, timers and the channels to signaling sessions. It drives the sans-IO
//! [`Sfu`] and is the only code that does.
//!
//! - UDP: one socket per advertised address, all on the one media port; every peer shares them.
//!   The driver task reads them itself (no reader task, no channel): whatever waits, up to
//!   [`UDP_BATCH`] datagrams, goes to the core from one buffer, one datagram at a time, and
//!   what they caused is sent when the batch is done.
//! - TCP: one passive ICE-TCP listener; each connection carries RFC 4571 frames (2-byte length).
//!   Connections are capped in total and per address ([`crate::net::caps`]), and one must
//!   present an ICE connectivity check that reaches a session (a Binding request whose ufrag a
//!   participant's ICE agent knows) within [`ICE_TCP_CHECK_TIMEOUT`] of opening, else it is
//!   closed; until then only Binding requests reach the core. Sending empty frames keeps nothing.
//! - Everything else reaches the core as a closure run on the driver task ([`SfuHandle::call`]),
//!   so the core has exactly one owner and no lock.
//! - A plain STUN Binding Request (no USERNAME) on either media port is answered right where it
//!   is read, with the sender's address, without reaching the core or creating any state: the
//!   setup checks use it to test port forwards and to learn the public address. ICE checks always
//!   carry USERNAME, so this never takes a datagram a session wants; they still go to str0m.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use proto::signal_response;
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::addresses::Advertised;
use super::core::{
    ConnId, JoinError, JoinRequest, Output, ResumeError, ResumeRequest, Sfu, SfuConfig,
};
use super::counters::SfuCounters;
use super::presence::{PRESENCE_CAPACITY, PresenceEvent};
use crate::net::caps::{ConnectionCaps, Limits};
use crate::net::stun;
use crate::rooms::{CreateOutcome, RoomDirectory, RoomError, RoomFuture, RoomOptions};
use crate::turn::TurnHandle;

/// Most concurrent ICE-TCP connections, and from one address (a participant opens one per
/// peer connection and advertised address; many may share a NAT).
pub const ICE_TCP_LIMITS: Limits = Limits {
    total: 1024,
    per_address: 64,
};
/// A new ICE-TCP connection must deliver an ICE check that reaches a session within this.
pub const ICE_TCP_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// An ICE-TCP connection that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(60);
/// Most datagrams read from one socket before the driver looks at its other inputs again.
const UDP_BATCH: usize = 64;

/// The media sockets, bound before anything starts so a busy port stops start-up with a clear
/// message, and where they are advertised ([`Advertised`]).
pub struct SfuSockets {
    udp: Vec<Arc<UdpSocket>>,
    tcp: TcpListener,
    advertised: Advertised,
}

impl SfuSockets {
    /// Binds the UDP and TCP media ports. `bind_ip` is the public listener's address (media
    /// listens where signaling does); `node_ip` is a fixed address to advertise. Without one the
    /// sockets advertise their own addresses and, once [`SfuHandle::set_public_ip`] is told it,
    /// the public IP too.
    pub async fn bind(
        bind_ip: IpAddr,
        node_ip: Option<IpAddr>,
        udp_port: u16,
        tcp_port: u16,
    ) -> anyhow::Result<SfuSockets> {
        let advertised: Vec<IpAddr> = match node_ip {
            Some(ip) => vec![ip],
            None if !bind_ip.is_unspecified() => vec![bind_ip],
            None => crate::net::host_addresses(),
        };
        if advertised.is_empty() {
            anyhow::bail!(
                "no network address to advertise for media; set RTCBOX_NODE_IP to the address clients reach"
            );
        }
        let mut udp = Vec::new();
        let mut udp_advertised = Vec::new();
        for ip in &advertised {
            let advertised_addr = SocketAddr::new(*ip, udp_port);
            // Bind the advertised address itself when it is ours; behind 1:1 NAT (a public
            // RTCBOX_NODE_IP the host does not have) bind the listener's address instead.
            let socket = match UdpSocket::bind(advertised_addr).await {
                Ok(socket) => socket,
                Err(_) if node_ip.is_some() => UdpSocket::bind(SocketAddr::new(bind_ip, udp_port))
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot bind the media UDP port {bind_ip}:{udp_port}: {} (RTCBOX_RTC_UDP_PORT)",
                            crate::net::explain::io_error(&e)
                        )
                    })?,
                Err(e) => {
                    anyhow::bail!(
                        "cannot bind the media UDP port {advertised_addr}: {} (RTCBOX_RTC_UDP_PORT)",
                        crate::net::explain::io_error(&e)
                    );
                }
            };
            let port = socket.local_addr().map(|a| a.port()).unwrap_or(udp_port);
            udp.push(Arc::new(socket));
            udp_advertised.push(SocketAddr::new(*ip, port));
        }
        let tcp_bind = SocketAddr::new(bind_ip, tcp_port);
        let tcp = TcpListener::bind(tcp_bind).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot bind the ICE-TCP port {tcp_bind}: {} (RTCBOX_RTC_TCP_PORT)",
                crate::net::explain::io_error(&e)
            )
        })?;
        let tcp_port = tcp.local_addr().map(|a| a.port()).unwrap_or(tcp_port);
        let tcp_advertised = advertised
            .iter()
            .map(|ip| SocketAddr::new(*ip, tcp_port))
            .collect();
        let automatic = node_ip.is_none();
        let route_source = if automatic {
            default_route_source()
        } else {
            None
        };
        Ok(SfuSockets {
            udp,
            tcp,
            advertised: Advertised::new(udp_advertised, tcp_advertised, automatic, route_source),
        })
    }

    pub fn udp_advertised(&self) -> Vec<SocketAddr> {
        self.advertised.udp_candidates()
    }

    /// For each advertised UDP address that is not this socket's own (a public IP behind a
    /// NAT), where a process on this host reaches the socket instead: the embedded TURN server
    /// relays there rather than counting on the router's hairpin NAT.
    pub fn udp_routes(&self) -> Vec<(SocketAddr, SocketAddr)> {
        udp_routes(&self.advertised, &self.udp)
    }

    pub fn tcp_advertised(&self) -> Vec<SocketAddr> {
        self.advertised.tcp_candidates()
    }
}

/// Where the media is advertised now, for TURN and the admin panel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaCandidates {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    /// (advertised address, local address a process on this host sends to instead).
    pub routes: Vec<(SocketAddr, SocketAddr)>,
}

fn udp_routes(
    advertised: &Advertised,
    sockets: &[Arc<UdpSocket>],
) -> Vec<(SocketAddr, SocketAddr)> {
    advertised
        .udp_candidates()
        .into_iter()
        .filter_map(|candidate| {
            let socket = sockets.get(advertised.socket_for(candidate)?)?;
            let local = socket.local_addr().ok()?;
            let ip = match local.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let local = SocketAddr::new(ip, local.port());
            (local != candidate).then_some((candidate, local))
        })
        .collect()
}

/// The address the host's default route leaves from: the one a router forwards to. Asks the
/// kernel's routing table by connecting a UDP socket to a documentation address (RFC 5737);
/// nothing is sent.
fn default_route_source() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

type Call = Box<dyn FnOnce(&mut Core, Instant) + Send>;

enum Event {
    Call(Call),
    TcpOpened {
        remote: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
        /// Set by the driver task once a frame of this connection reached a session.
        verified: Arc<AtomicBool>,
    },
    TcpFrame {
        remote: SocketAddr,
        local: SocketAddr,
        bytes: Vec<u8>,
    },
    TcpClosed {
        remote: SocketAddr,
    },
}

/// What the driver task owns: the core and the ways out of it.
pub struct Core {
    pub sfu: Sfu,
    signals: HashMap<ConnId, mpsc::Sender<signal_response::Message>>,
    presence: broadcast::Sender<PresenceEvent>,
    udp: Vec<Arc<UdpSocket>>,
    advertised: Advertised,
    /// Told of every session that ends, so its TURN allocations end too.
    turn: Option<TurnHandle>,
}

/// A cloneable handle to the SFU task. Dropping every handle stops the task.
#[derive(Clone)]
pub struct SfuHandle {
    events: mpsc::Sender<Event>,
    next_conn: Arc<AtomicU64>,
    presence: broadcast::Sender<PresenceEvent>,
    ice_tcp_caps: ConnectionCaps,
    counters: Arc<SfuCounters>,
}

#[derive(Debug, thiserror::Error)]
#[error("the SFU has stopped")]
pub struct SfuGone;

impl SfuHandle {
    /// Starts the SFU task on the current runtime.
    /// Starts the SFU task; `turn` (the embedded TURN server, when it runs) hears of every
    /// session that ends.
    pub fn spawn(
        sockets: SfuSockets,
        auto_create_rooms: bool,
        turn: Option<TurnHandle>,
    ) -> SfuHandle {
        let (events, rx) = mpsc::channel(8192);
        let config = SfuConfig {
            udp_candidates: sockets.udp_advertised(),
            tcp_candidates: sockets.tcp_advertised(),
            auto_create_rooms,
            node_id: format!("ND_{}", &super::ids::room_sid()[3..]),
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let (presence, _) = broadcast::channel(PRESENCE_CAPACITY);
        let tcp_local = sockets.advertised.tcp_candidates().first().copied();
        let sfu = Sfu::new(config, Instant::now(), unix_ms);
        let counters = sfu.counters();
        let core = Core {
            sfu,
            signals: HashMap::new(),
            presence: presence.clone(),
            udp: sockets.udp,
            advertised: sockets.advertised,
            turn,
        };
        let ice_tcp_caps = ConnectionCaps::new("ICE-TCP", ICE_TCP_LIMITS);
        tokio::spawn(accept_tcp(
            sockets.tcp,
            tcp_local,
            events.clone(),
            ice_tcp_caps.clone(),
        ));
        tokio::spawn(run(core, rx));
        SfuHandle {
            events,
            next_conn: Arc::new(AtomicU64::new(1)),
            presence,
            ice_tcp_caps,
            counters,
        }
    }

    /// What the SFU counts (rooms, participants, packets, bitrates), for `/metrics` and the
    /// dashboard.
    pub fn counters(&self) -> Arc<SfuCounters> {
        self.counters.clone()
    }

    /// The ICE-TCP listener's connection caps (the dashboard shows their counters).
    pub fn ice_tcp_caps(&self) -> ConnectionCaps {
        self.ice_tcp_caps.clone()
    }

    /// Joins and leaves from now on (`sfu::presence`).
    pub fn subscribe_presence(&self) -> broadcast::Receiver<PresenceEvent> {
        self.presence.subscribe()
    }

    /// The public IP the STUN servers report now (automatic mode): advertised to new peer
    /// connections and sent to every connected client, whose subscriber connection restarts
    /// ICE (only when the candidates change: not for an address the host has itself, nor with
    /// a fixed node IP). Returns where media is advertised from now on.
    pub async fn set_public_ip(&self, ip: IpAddr) -> Result<MediaCandidates, SfuGone> {
        self.call_core(move |core, now| {
            let candidates = core.candidates();
            if core.advertised.set_public(ip) {
                let candidates = core.candidates();
                core.sfu
                    .set_candidates(now, candidates.udp.clone(), candidates.tcp.clone());
                return candidates;
            }
            candidates
        })
        .await
    }

    /// Where media is advertised now.
    pub async fn candidates(&self) -> Result<MediaCandidates, SfuGone> {
        self.call_core(|core, _| core.candidates()).await
    }

    /// Whether `identity` is in `room` right now.
    pub async fn is_present(&self, room: String, identity: String) -> Result<bool, SfuGone> {
        self.call(move |sfu, _| sfu.participant(&room, &identity).is_some())
            .await
    }

    /// Runs `f` on the SFU task with the core and the current time, and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Sfu, Instant) -> R + Send + 'static,
    ) -> Result<R, SfuGone> {
        self.call_core(move |core, now| f(&mut core.sfu, now)).await
    }

    /// [`Self::call`] with the whole task state (the signaling channels and presence too).
    async fn call_core<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Instant) -> R + Send + 'static,
    ) -> Result<R, SfuGone> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |core, now| {
            let _ = tx.send(f(core, now));
        });
        self.events
            .send(Event::Call(call))
            .await
            .map_err(|_| SfuGone)?;
        rx.await.map_err(|_| SfuGone)
    }

    /// A fresh id for a signaling connection.
    pub fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits a participant; its signaling messages arrive on `signals`.
    pub async fn join(
        &self,
        request: JoinRequest,
        signals: mpsc::Sender<signal_response::Message>,
    ) -> Result<Result<(), JoinError>, SfuGone> {
        self.call_core(move |core, now| {
            let conn = request.conn;
            let joined = PresenceEvent::Joined {
                room: request.room.clone(),
                identity: request.identity.clone(),
            };
            core.signals.insert(conn, signals);
            let result = core.sfu.join(now, request);
            if result.is_err() {
                core.signals.remove(&conn);
            } else {
                // No subscriber is fine.
                let _ = core.presence.send(joined);
            }
            result
        })
        .await
    }

    /// Re-attaches a session to a new signaling connection; its messages arrive on `signals`.
    pub async fn resume(
        &self,
        request: ResumeRequest,
        signals: mpsc::Sender<signal_response::Message>,
    ) -> Result<Result<(), ResumeError>, SfuGone> {
        self.call_core(move |core, now| {
            let conn = request.conn;
            core.signals.insert(conn, signals);
            let result = core.sfu.resume(now, request);
            if result.is_err() {
                core.signals.remove(&conn);
            }
            result
        })
        .await
    }

    /// A signaling request from `conn` (fire and forget; ordering per connection is kept).
    pub async fn signal(&self, conn: ConnId, message: proto::signal_request::Message) {
        let call: Call = Box::new(move |core, now| core.sfu.handle_signal(now, conn, message));
        let _ = self.events.send(Event::Call(call)).await;
    }

    /// The signaling connection of `conn` ended.
    pub async fn disconnected(&self, conn: ConnId, reason: proto::DisconnectReason) {
        let call: Call = Box::new(move |core, now| {
            core.signals.remove(&conn);
            core.sfu.leave(now, conn, reason);
        });
        let _ = self.events.send(Event::Call(call)).await;
    }
}

impl Core {
    fn candidates(&self) -> MediaCandidates {
        MediaCandidates {
            udp: self.advertised.udp_candidates(),
            tcp: self.advertised.tcp_candidates(),
            routes: udp_routes(&self.advertised, &self.udp),
        }
    }
}

async fn run(mut core: Core, mut rx: mpsc::Receiver<Event>) {
    let mut tcp_writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tcp_verified: HashMap<SocketAddr, Arc<AtomicBool>> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    loop {
        flush(&mut core, &tcp_writers).await;
        let deadline = core.sfu.poll_timeout();
        let event = tokio::select! {
            event = rx.recv() => match event {
                Some(event) => event,
                None => break,
            },
            socket = readable(&core.udp) => {
                receive_udp(&mut core, socket, &mut buf);
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                core.sfu.handle_timeout(Instant::now());
                continue;
            }
        };
        let now = Instant::now();
        match event {
            Event::Call(call) => call(&mut core, now),
            Event::TcpOpened {
                remote,
                writer,
                verified,
            } => {
                tcp_writers.insert(remote, writer);
                tcp_verified.insert(remote, verified);
            }
            Event::TcpFrame {
                remote,
                local,
                bytes,
            } => {
                let local = core.advertised.tcp_destination(local, remote);
                let reached = core
                    .sfu
                    .handle_receive(now, Protocol::Tcp, remote, local, &bytes);
                if reached && let Some(verified) = tcp_verified.remove(&remote) {
                    verified.store(true, Ordering::Relaxed);
                }
            }
            Event::TcpClosed { remote } => {
                tcp_writers.remove(&remote);
                tcp_verified.remove(&remote);
            }
        }
    }
    tracing::debug!("SFU task stopped");
}

/// Sends everything the core produced.
async fn flush(core: &mut Core, tcp_writers: &HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>) {
    let mut stuck = Vec::new();
    while let Some(output) = core.sfu.poll_output() {
        match output {
            Output::Transmit(t) => match t.proto {
                Protocol::Udp => {
                    let index = core.advertised.socket_for(t.source).unwrap_or(0);
                    let socket = core.udp.get(index);
                    if let Some(socket) = socket
                        && let Err(error) = socket.try_send_to(&t.contents, t.destination)
                    {
                        tracing::trace!(%error, destination = %t.destination, "UDP send failed");
                    }
                }
                Protocol::Tcp => {
                    if let Some(writer) = tcp_writers.get(&t.destination) {
                        let _ = writer.try_send(t.contents.into());
                    }
                }
                _ => {}
            },
            Output::Signal(conn, message) => {
                if let Some(tx) = core.signals.get(&conn)
                    && tx.try_send(*message).is_err()
                {
                    stuck.push(conn);
                }
            }
            Output::Close(conn) => {
                // Dropping the sender ends the session's writer after what is queued.
                core.signals.remove(&conn);
            }
            Output::Left {
                room,
                identity,
                sid,
            } => {
                // Its relays go with it (a participant replaced by a new join of its identity
                // too), before anyone can hear of the leave.
                if let Some(turn) = &core.turn {
                    turn.session_ended(&sid);
                }
                // No subscriber is fine.
                let _ = core.presence.send(PresenceEvent::Left { room, identity });
            }
        }
    }
    let now = Instant::now();
    for conn in stuck {
        if core.signals.remove(&conn).is_some() {
            tracing::info!(conn, "signaling client too slow; disconnecting it");
            core.sfu
                .leave(now, conn, proto::DisconnectReason::SignalClose);
        }
    }
}

/// The index of a UDP socket with datagrams waiting (or an error to read).
async fn readable(sockets: &[Arc<UdpSocket>]) -> usize {
    std::future::poll_fn(|cx| {
        for (index, socket) in sockets.iter().enumerate() {
            if socket.poll_recv_ready(cx).is_ready() {
                return std::task::Poll::Ready(index);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Reads what waits on one UDP socket, up to [`UDP_BATCH`] datagrams, straight into the core
/// (no copy, no task between). Each datagram is handled whole before the next: what it
/// forwards is released from str0m at once (a timeout per connection written to). Deferring
/// that to the batch's end, one timeout per connection per batch, was tried and measured: a
/// subscriber behind a bottleneck then lost enough video to freeze (test_sfu_bottleneck).
fn receive_udp(core: &mut Core, index: usize, buf: &mut [u8]) {
    let Some(socket) = core.udp.get(index) else {
        return;
    };
    for _ in 0..UDP_BATCH {
        let (n, source) = match socket.try_recv_from(buf) {
            Ok(received) => received,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            // ICMP errors from earlier sends surface here on some systems; keep reading.
            Err(error) => {
                tracing::trace!(%error, "UDP receive error");
                continue;
            }
        };
        // The answer is a fixed-size message at most 32 bytes larger than the request (no
        // amplification) and nothing is remembered (see `stun::answer_plain_binding`).
        if let Some(answer) = stun::answer_plain_binding(&buf[..n], source) {
            if let Err(error) = socket.try_send_to(&answer, source) {
                tracing::trace!(%error, %source, "STUN binding answer not sent");
            }
            continue;
        }
        let destination = core.advertised.udp_destination(index, source);
        core.sfu.handle_receive(
            Instant::now(),
            Protocol::Udp,
            source,
            destination,
            &buf[..n],
        );
    }
}

async fn accept_tcp(
    listener: TcpListener,
    local: Option<SocketAddr>,
    events: mpsc::Sender<Event>,
    caps: ConnectionCaps,
) {
    let Some(local) = local else {
        return;
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = caps.try_acquire(remote.ip()) else {
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_tcp(stream, remote, local, &events).await;
            let _ = events.send(Event::TcpClosed { remote }).await;
        });
    }
}

/// One ICE-TCP connection: RFC 4571 frames in both directions.
async fn serve_tcp(
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    events: &mpsc::Sender<Event>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(512);
    let answers = tx.clone();
    let verified = Arc::new(AtomicBool::new(false));
    let opened = Event::TcpOpened {
        remote,
        writer: tx,
        verified: verified.clone(),
    };
    if events.send(opened).await.is_err() {
        return;
    }
    let check_deadline = tokio::time::Instant::now() + ICE_TCP_CHECK_TIMEOUT;
    let write = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(frame.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&frame);
            if writer.write_all(&framed).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut len = [0u8; 2];
        if !read_in_time(&mut reader, &mut len, &verified, check_deadline, TCP_IDLE).await {
            break;
        }
        let len = u16::from_be_bytes(len) as usize;
        if len == 0 {
            continue;
        }
        if !read_in_time(
            &mut reader,
            &mut buf[..len],
            &verified,
            check_deadline,
            TCP_IDLE,
        )
        .await
        {
            break;
        }
        // As on UDP: a plain binding request is answered here (framed by the writer), no state.
        if let Some(answer) = stun::answer_plain_binding(&buf[..len], remote) {
            if answers.try_send(answer).is_err() {
                break;
            }
            continue;
        }
        // Before a check reached a session, nothing but checks goes to the core.
        if !verified.load(Ordering::Relaxed) && !stun::looks_like_binding_request(&buf[..len]) {
            continue;
        }
        let event = Event::TcpFrame {
            remote,
            local,
            bytes: buf[..len].to_vec(),
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
    if !verified.load(Ordering::Relaxed) {
        tracing::debug!(%remote, "ICE-TCP connection without an ICE check for a session; closed");
    }
    write.abort();
}

/// Fills `buf` from an ICE-TCP connection; `false` when it ended or took too long. Until a
/// check reached a session (`verified`, set by the SFU task) the read may last until
/// `check_deadline`; after, up to `idle`. The flag is read again when the check deadline
/// passes: the SFU task may set it after this read began (the check just sent was being
/// handled), and closing a connection whose check was accepted would drop a participant that
/// simply had nothing to send for a few seconds.
async fn read_in_time<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    verified: &AtomicBool,
    check_deadline: tokio::time::Instant,
    idle: std::time::Duration,
) -> bool {
    let read = reader.read_exact(buf);
    tokio::pin!(read);
    loop {
        let was_verified = verified.load(Ordering::Relaxed);
        let deadline = if was_verified {
            tokio::time::Instant::now() + idle
        } else {
            check_deadline
        };
        tokio::select! {
            result = &mut read => return result.is_ok(),
            _ = tokio::time::sleep_until(deadline) => {
                if was_verified || !verified.load(Ordering::Relaxed) {
                    return false;
                }
            }
        }
    }
}

impl RoomDirectory for SfuHandle {
    fn create<'a>(
        &'a self,
        name: &'a str,
        options: RoomOptions,
    ) -> RoomFuture<'a, Result<CreateOutcome, RoomError>> {
        let name = name.to_owned();
        Box::pin(async move {
            self.call(move |sfu, now| sfu.create_room(now, &name, options, None).map(|(o, _)| o))
                .await
                .unwrap_or(Err(RoomError::Unavailable))
        })
    }

    fn exists<'a>(&'a self, name: &'a str) -> RoomFuture<'a, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            self.call(move |sfu, now| sfu.room_exists(&name, now))
                .await
                .unwrap_or(false)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    /// A connection whose check is accepted while its read is already waiting (the SFU task
    /// sets the flag a moment after the frame went to it) is not closed at the check deadline;
    /// one that never had a check accepted is.
    #[tokio::test]
    async fn an_ice_tcp_read_outlives_the_check_deadline_once_verified_meanwhile() {
        use tokio::io::AsyncWriteExt as _;
        for verify in [true, false] {
            let (mut client, mut server) = tokio::io::duplex(64);
            let verified = Arc::new(AtomicBool::new(false));
            let check_deadline = tokio::time::Instant::now() + Duration::from_millis(100);
            let flag = verified.clone();
            let read = tokio::spawn(async move {
                let mut buf = [0u8; 4];
                read_in_time(
                    &mut server,
                    &mut buf,
                    &flag,
                    check_deadline,
                    Duration::from_secs(60),
                )
                .await
            });
            // The read is waiting on the check deadline when the flag changes.
            tokio::time::sleep(Duration::from_millis(20)).await;
            verified.store(verify, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = client.write_all(b"late").await;
            assert_eq!(read.await.unwrap(), verify, "verified meanwhile: {verify}");
        }
    }

    /// Both media ports answer a plain binding request with the sender's address.
    #[tokio::test]
    async fn media_ports_answer_plain_stun_binding() {
        str0m::crypto::from_feature_flags().install_process_default();
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let sockets = SfuSockets::bind(localhost, None, 0, 0).await.unwrap();
        let udp = sockets.udp_advertised()[0];
        let tcp = sockets.tcp_advertised()[0];
        let _sfu = SfuHandle::spawn(sockets, false, None);
        let wait = Duration::from_secs(5);

        let client = UdpSocket::bind((localhost, 0)).await.unwrap();
        let tid = stun::new_transaction_id();
        client
            .send_to(&stun::binding_request(&tid), udp)
            .await
            .unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(wait, client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, udp);
        assert_eq!(
            stun::parse_binding_success(&buf[..n], &tid),
            Ok(client.local_addr().unwrap())
        );

        let mut stream = TcpStream::connect(tcp).await.unwrap();
        let tid = stun::new_transaction_id();
        let request = stun::binding_request(&tid);
        let mut framed = (request.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&request);
        stream.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(wait, stream.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(
            stun::parse_binding_success(&answer, &tid),
            Ok(stream.local_addr().unwrap())
        );
    }
}
