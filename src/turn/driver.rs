//! The TURN server's I/O: the UDP, TCP and TLS listeners, the relay sockets, and the one task
//! that owns the sans-IO [`Server`] and drives it.
//!
//! - The core task reads the UDP listener and the relay sockets itself ([`RelaySockets`]),
//!   every datagram that is waiting before it waits again, into one buffer, and relays
//!   ChannelData and peer datagrams through the core's fast paths
//!   ([`Server::relay_channel_data`], [`Server::relay_from_peer`]): no task, channel hop, copy
//!   or allocation per datagram, one clock reading per batch. It receives everything else
//!   (stream messages, stream open/close) over one channel, so the core sees events in the
//!   order they happened per source.
//! - TCP and TLS connections each get a task that cuts the byte stream into messages
//!   ([`framing::next_frame`]) and writes what the core sends back; a framing error closes the
//!   connection, and closing a connection ends its allocation.
//! - Relay sockets are bound when the core asks ([`Output::Bind`]), on the listeners' IP with
//!   the port the core chose from the forwarded range; the core task reads them all. The core
//!   advertises the public relay address; the socket binds the local one. Participant relays
//!   ([`Output::BindLocal`]) take a port the OS chooses on the same IP, never one of the range.
//! - The SFU reports sessions that ended through [`TurnHandle::session_ended`]; the core ends
//!   their allocations.
//! - The public HTTPS listener hands TLS connections that open with a STUN message to the same
//!   stream path through [`TlsStreams`]; they count against the same connection caps.
//! - Stream connections are capped in total and per address ([`crate::net::caps`]), and one
//!   that holds no allocation for [`STREAM_UNAUTHENTICATED_TIMEOUT`] (from its start, or from
//!   the end of its allocation) is closed by the core: an unauthenticated client cannot keep a
//!   connection by sending Binding requests.
//! - A listener that cannot be opened (e.g. coturn still holds 3478) is reported in the status
//!   and the rest keeps running; ICE servers only name listeners that run.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::net::caps::{ConnectionCaps, ConnectionPermit, Limits};
use crate::secret::{Secret, random_alphanumeric};
use crate::tls::TlsCertificates;
use crate::turn::framing::{Frame, next_frame};
use crate::turn::handle::{TurnHandle, TurnUrls};
use crate::turn::policy::RelayPolicy;
use crate::turn::relays::{self, RelaySockets};
use crate::turn::server::{Config, FromClient, Output, PEER_HEADROOM, PEER_TAILROOM, Server};
use crate::turn::status::{Client, ListenerStatus, StreamStats, Transport};

/// Most TCP and TLS connections at once (each costs a task and buffers), and from one address.
/// A browser opens up to two per peer connection and TURN URL and network interface (a
/// participant has two peer connections): 64 serve several participants behind one NAT.
pub const STREAM_LIMITS: Limits = Limits {
    total: 1024,
    per_address: 64,
};
/// A stream connection without an allocation is closed after this: time for Allocate, its
/// 401 challenge and the authenticated retry, even over a slow network.
pub const STREAM_UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A new stream must deliver its first message within this (an HTTP request or a port scan
/// sent to the TURN port can look like the start of a long ChannelData message).
const STREAM_FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream that sends nothing for this long is closed. Longer than the longest allocation
/// lifetime, so a client that only refreshes keeps its connection.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600 + 120);
/// How often the status the admin panel reads is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Allocations one identity (a participant, a Matrix user) may hold, whatever credentials.
const MAX_ALLOCATIONS_PER_USERNAME: usize = 24;
/// Allocations one client address may hold: two participants' worth.
const MAX_ALLOCATIONS_PER_SOURCE: usize = 48;
/// Ports the OS may offer a participant relay before it is refused (508): enough that an even
/// one (EVEN-PORT) comes up whatever the odds.
const LOCAL_BIND_ATTEMPTS: usize = 32;
/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_536;

/// Everything the TURN server needs to start.
pub struct TurnSetup {
    /// The address listeners and relay sockets bind (the public HTTP listener's IP).
    pub bind_ip: IpAddr,
    /// TURN over UDP and TCP; 0 = off.
    pub port: u16,
    /// TURN over TLS; 0 = off.
    pub tls_port: u16,
    pub certificates: Option<TlsCertificates>,
    /// The host clients use in `turn:`/`turns:` URLs (the public URL's host).
    pub public_host: String,
    /// The public port of the HTTPS listener, which carries TURN over TLS too, when it serves
    /// the public URL (see [`TurnUrls::https_port`]).
    pub https_port: Option<u16>,
    pub realm: String,
    /// coturn's REST secret (Synapse); `None` refuses REST usernames.
    pub shared_secret: Option<Secret>,
    /// The relay address advertised to clients (the public IP behind a NAT).
    pub relay_ip: IpAddr,
    /// Relay ports, inclusive.
    pub relay_ports: (u16, u16),
    pub policy: RelayPolicy,
    /// (advertised SFU media address, local address to send to).
    pub sfu_routes: Vec<(SocketAddr, SocketAddr)>,
}

enum Event {
    Stream {
        client: Client,
        bytes: Vec<u8>,
    },
    Opened {
        client: Client,
        to_client: mpsc::Sender<Vec<u8>>,
    },
    Closed(Client),
}

/// Where TLS connections accepted by another listener (the public HTTPS port) join the TURN
/// server, after their handshake: the path the TLS listener's own connections take.
#[derive(Clone)]
pub struct TlsStreams {
    events: mpsc::Sender<Event>,
    caps: ConnectionCaps,
}

impl TlsStreams {
    /// Serves one TLS client until either side ends; refused at once when too many streams are
    /// open, in total or from its address.
    pub async fn serve<S>(&self, stream: S, remote: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let Ok(_permit) = self.caps.try_acquire(remote.ip()) else {
            return;
        };
        let client = Client {
            transport: Transport::Tls,
            addr: remote,
        };
        serve_stream(stream, client, &self.events).await;
    }
}

/// Opens the listeners and starts the server; returns the handle the SFU and the admin panel
/// use, and the entry for TLS streams of the HTTPS listener. Never fails: listeners that cannot
/// open are reported in the status.
pub async fn start(setup: TurnSetup) -> (TurnHandle, TlsStreams) {
    let mut listeners = Vec::new();
    let mut udp = None;
    let mut tcp = None;
    let mut tls = None;
    if setup.port != 0 {
        let addr = SocketAddr::new(setup.bind_ip, setup.port);
        match UdpSocket::bind(addr).await {
            Ok(socket) => {
                udp = Some(Arc::new(socket));
                listeners.push(running(Transport::Udp, addr));
            }
            Err(e) => listeners.push(failed(Transport::Udp, addr, &e)),
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tcp = Some(listener);
                listeners.push(running(Transport::Tcp, addr));
            }
            Err(e) => listeners.push(failed(Transport::Tcp, addr, &e)),
        }
    }
    if setup.tls_port != 0 {
        let addr = SocketAddr::new(setup.bind_ip, setup.tls_port);
        match (&setup.certificates, TcpListener::bind(addr).await) {
            (Some(certificates), Ok(listener)) => {
                tls = Some((listener, certificates.server_config()));
                listeners.push(running(Transport::Tls, addr));
            }
            (None, _) => listeners.push(ListenerStatus {
                transport: Transport::Tls,
                addr,
                https: false,
                error: Some("no TLS certificate".into()),
            }),
            (_, Err(e)) => listeners.push(failed(Transport::Tls, addr, &e)),
        }
    }
    for listener in &listeners {
        match &listener.error {
            None => {
                tracing::info!(transport = %listener.transport, addr = %listener.addr, "TURN listening")
            }
            Some(error) => tracing::error!(
                transport = %listener.transport,
                addr = %listener.addr,
                "TURN listener not running: {error}"
            ),
        }
    }

    // Signs participant credentials; new at every start (they die with the process anyway).
    let participant_secret = Secret::new(random_alphanumeric(48));
    let urls = TurnUrls {
        host: setup.public_host.clone(),
        // One URL port serves both; advertise it when either runs.
        port: (udp.is_some() || tcp.is_some()).then_some(setup.port),
        tls_port: tls.is_some().then_some(setup.tls_port),
        https_port: setup.https_port,
    };
    let handle = TurnHandle::new(participant_secret.clone(), urls, setup.certificates.clone());
    let allow_peers = setup.policy.allow.iter().map(ToString::to_string).collect();
    handle.publish(|status| {
        status.listeners = listeners;
        status.relay_ip = Some(setup.relay_ip);
        status.relay_ports = setup.relay_ports;
        status.legacy_calls = setup.shared_secret.is_some();
        status.allow_peers = allow_peers;
    });

    let mut config = Config::new(
        &setup.realm,
        participant_secret,
        setup.shared_secret,
        setup.relay_ip,
    );
    config.relay_ports = setup.relay_ports.0..setup.relay_ports.1.saturating_add(1);
    // A browser allocates per peer connection (a participant has two), per TURN URL (three) and
    // per local network interface: room for two interfaces.
    config.max_allocations_per_username = MAX_ALLOCATIONS_PER_USERNAME;
    config.max_allocations_per_source = MAX_ALLOCATIONS_PER_SOURCE;
    config.policy = setup.policy;
    config.sfu_routes = setup.sfu_routes;
    let relay_ports = config.relay_ports.clone();

    let (events_tx, events) = mpsc::channel(1024);
    let caps = ConnectionCaps::new("TURN over TCP/TLS", STREAM_LIMITS);
    if let Some(listener) = tcp {
        tokio::spawn(accept_streams(
            listener,
            None,
            events_tx.clone(),
            caps.clone(),
        ));
    }
    let streams = TlsStreams {
        events: events_tx.clone(),
        caps: caps.clone(),
    };
    if let Some((listener, config)) = tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(accept_streams(
            listener,
            Some(acceptor),
            events_tx.clone(),
            caps.clone(),
        ));
    }
    let core = Core {
        server: Server::new(config),
        udp,
        bind_ip: setup.bind_ip,
        relay_ip: setup.relay_ip,
        relay_ports,
        ended_sessions: handle.take_ended_sessions(),
        streams: HashMap::new(),
        relays: RelaySockets::default(),
        _events_tx: events_tx,
        handle: handle.clone(),
        caps,
        closed_unauthenticated: 0,
    };
    tokio::spawn(core.run(events));
    (handle, streams)
}

fn running(transport: Transport, addr: SocketAddr) -> ListenerStatus {
    ListenerStatus {
        transport,
        addr,
        https: false,
        error: None,
    }
}

/// A listener that could not open, with what to check (a taken port names coturn).
fn failed(transport: Transport, addr: SocketAddr, error: &std::io::Error) -> ListenerStatus {
    ListenerStatus {
        transport,
        addr,
        https: false,
        error: Some(crate::net::explain::io_error(error)),
    }
}

/// The next change from the handle; pending forever when there is no channel.
async fn next_control(
    rx: &mut Option<mpsc::UnboundedReceiver<crate::turn::handle::Control>>,
) -> Option<crate::turn::handle::Control> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

struct Core {
    server: Server,
    udp: Option<Arc<UdpSocket>>,
    bind_ip: IpAddr,
    /// Where relays are advertised, and the forwarded range participant relays stay out of.
    relay_ip: IpAddr,
    relay_ports: Range<u16>,
    /// [`TurnHandle::session_ended`]'s channel.
    ended_sessions: Option<mpsc::UnboundedReceiver<String>>,
    streams: HashMap<Client, Stream>,
    /// By advertised relay address.
    relays: RelaySockets,
    /// Keeps the event channel open while the core runs, whoever else holds it.
    _events_tx: mpsc::Sender<Event>,
    handle: TurnHandle,
    /// The stream connections' caps, for the status.
    caps: ConnectionCaps,
    closed_unauthenticated: u64,
}

/// An open TCP or TLS connection, as the core sees it.
struct Stream {
    /// Dropping it ends the connection's task (its writer stops, then the reader).
    to_client: mpsc::Sender<Vec<u8>>,
    /// Since when it has had no allocation; `None` while it has one.
    unallocated_since: Option<Instant>,
}

impl Core {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut buf = vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM];
        let mut status = tokio::time::interval(STATUS_INTERVAL);
        let udp = self.udp.clone();
        let relays_ready = self.relays.ready();
        let mut control = self.handle.take_control();
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // Relaying (the fast paths) changes no timer; everything else may.
        let mut timers_changed = true;
        loop {
            if timers_changed {
                let deadline = self
                    .server
                    .poll_timeout()
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                timer.as_mut().reset(deadline);
            }
            timers_changed = true;
            tokio::select! {
                readable = readable_udp(udp.as_deref()) => {
                    if let (Ok(()), Some(udp)) = (readable, &udp) {
                        timers_changed = self.read_clients(udp, &mut buf);
                    }
                }
                () = relays_ready.readable() => {
                    self.read_relays(&mut buf);
                    timers_changed = false;
                }
                event = events.recv() => match event {
                    Some(event) => self.handle_event(event),
                    None => return,
                },
                Some(change) = next_control(&mut control) => self.handle_control(change),
                Some(session) = ended_session(self.ended_sessions.as_mut()) => {
                    self.server.handle_session_ended(&session);
                }
                () = &mut timer => {
                    self.server.handle_timeout(Instant::now());
                }
                _ = status.tick() => {
                    let now = Instant::now();
                    self.close_unauthenticated(now);
                    let (stats, allocations) = (self.server.stats(), self.server.allocations(now));
                    let refusals = self.caps.refusals();
                    let streams = StreamStats {
                        open: self.caps.open(),
                        refused_per_address: refusals.per_address,
                        refused_full: refusals.full,
                        closed_unauthenticated: self.closed_unauthenticated,
                    };
                    self.handle.publish(|s| {
                        s.stats = stats;
                        s.allocations = allocations;
                        s.streams = streams;
                    });
                }
            }
            self.drain();
        }
    }

    /// Reads the UDP listener until it would block (or gave [`relays::BATCH`] datagrams):
    /// ChannelData and Send indications are relayed at once, everything else goes through the
    /// core. True when something else came (it may have changed a timer).
    fn read_clients(&mut self, udp: &UdpSocket, buf: &mut [u8]) -> bool {
        let now = Instant::now();
        let mut other = false;
        for _ in 0..relays::BATCH {
            let (n, from) = match udp.try_recv_from(buf) {
                Ok(received) => received,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::trace!(%error, "TURN receive error");
                    continue;
                }
            };
            let client = Client::udp(from);
            let bytes = buf.get(..n).unwrap_or_default();
            match self.server.relay_from_client(now, client, bytes) {
                FromClient::Relay(out) => {
                    if let Some(socket) = self.relays.socket(&out.relay)
                        && let Err(error) = socket.try_send_to(out.bytes, out.to)
                    {
                        tracing::trace!(%error, to = %out.to, "relayed datagram not sent");
                    }
                }
                FromClient::Dropped => {}
                FromClient::Other => {
                    other = true;
                    self.server.handle_client(now, now_unix(), client, bytes);
                    // In order with what is relayed after it.
                    self.drain();
                }
            }
        }
        other
    }

    /// Reads the relay sockets that are readable and relays what peers sent to the clients.
    fn read_relays(&mut self, buf: &mut [u8]) {
        let now = Instant::now();
        let Core {
            server,
            relays,
            udp,
            streams,
            ..
        } = self;
        let into = PEER_HEADROOM..PEER_HEADROOM + MAX_DATAGRAM;
        relays.read_ready(buf, into, |relay, from, n, buf| {
            if let Some((client, message)) = server.relay_from_peer(now, relay, from, buf, n) {
                send_to_client(udp.as_deref(), streams, client, message);
            }
        });
    }

    fn handle_control(&mut self, change: crate::turn::handle::Control) {
        use crate::turn::handle::Control;
        match change {
            Control::Readdress(moved) => {
                tracing::info!(relay_ip = %moved.relay_ip, "TURN relays now advertised on the new public address");
                self.handle.publish(|s| s.relay_ip = Some(moved.relay_ip));
                self.server
                    .readdress(moved.relay_ip, moved.sfu_media, moved.sfu_routes);
            }
            Control::SharedSecret(secret) => {
                let on = secret.is_some();
                tracing::info!(
                    legacy_calls = on,
                    "TURN REST secret changed in the admin panel"
                );
                self.handle.publish(|s| s.legacy_calls = on);
                self.server.set_shared_secret(secret);
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Stream { client, bytes } => {
                self.server
                    .handle_client(Instant::now(), now_unix(), client, &bytes);
            }
            Event::Opened { client, to_client } => {
                let stream = Stream {
                    to_client,
                    unallocated_since: Some(Instant::now()),
                };
                self.streams.insert(client, stream);
            }
            Event::Closed(client) => {
                self.streams.remove(&client);
                self.server.handle_client_closed(client);
            }
        }
    }

    /// Carries out everything the core asked for (run-loop invariant of [`Server`]).
    fn drain(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::ToClient { to, bytes } => {
                    send_to_client(self.udp.as_deref(), &self.streams, to, bytes);
                }
                Output::ToPeer { relay, to, bytes } => {
                    if let Some(socket) = self.relays.socket(&relay)
                        && let Err(error) = socket.try_send_to(&bytes, to)
                    {
                        tracing::trace!(%error, %to, "relayed datagram not sent");
                    }
                }
                Output::BindLocal { client, even } => match self.bind_local(even) {
                    Ok(advertised) => {
                        self.server.handle_bound_local(client, advertised);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "participant relay socket not opened");
                        self.server.handle_bind_local_failed(client);
                    }
                },
                Output::Bind(advertised) => match self.bind_relay(advertised) {
                    Ok(()) => {
                        self.server.handle_bound(advertised);
                    }
                    Err(error) => {
                        tracing::debug!(%error, port = advertised.port(), "relay port not available");
                        self.server.handle_bind_failed(advertised);
                    }
                },
                Output::Unbind(advertised) => self.relays.remove(advertised),
            }
        }
    }

    /// Ends stream connections that have held no allocation for
    /// [`STREAM_UNAUTHENTICATED_TIMEOUT`] (checked every [`STATUS_INTERVAL`]).
    fn close_unauthenticated(&mut self, now: Instant) {
        let server = &self.server;
        let mut closed = 0;
        self.streams.retain(|client, stream| {
            if server.has_allocation(*client) {
                stream.unallocated_since = None;
                return true;
            }
            let since = *stream.unallocated_since.get_or_insert(now);
            let keep = now.saturating_duration_since(since) < STREAM_UNAUTHENTICATED_TIMEOUT;
            if !keep {
                tracing::debug!(%client, "TURN stream without an allocation; closing");
                closed += 1;
            }
            keep
        });
        self.closed_unauthenticated += closed;
    }

    fn bind_relay(&mut self, advertised: SocketAddr) -> std::io::Result<()> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(self.bind_ip, advertised.port()))?;
        socket.set_nonblocking(true)?;
        self.relays.insert(advertised, socket)
    }

    /// A participant relay on a port the OS chooses: not one of the forwarded range, not one
    /// another relay is advertised with, even if asked. Ports the OS offers that do not fit
    /// stay open until it offers one that does, so it never offers them twice.
    fn bind_local(&mut self, even: bool) -> std::io::Result<SocketAddr> {
        let mut unfit = Vec::new();
        for _ in 0..LOCAL_BIND_ATTEMPTS {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(self.bind_ip, 0))?;
            let port = socket.local_addr()?.port();
            let advertised = SocketAddr::new(self.relay_ip, port);
            if self.relay_ports.contains(&port)
                || (even && port % 2 == 1)
                || self.relays.contains(&advertised)
            {
                unfit.push(socket);
                continue;
            }
            socket.set_nonblocking(true)?;
            self.relays.insert(advertised, socket)?;
            return Ok(advertised);
        }
        Err(std::io::Error::other(format!(
            "the system offered {LOCAL_BIND_ATTEMPTS} unfit ports in a row"
        )))
    }
}

/// The next ended session, or never when there is no channel (or it closed).
async fn ended_session(rx: Option<&mut mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(session) => Some(session),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Until the UDP listener may be readable; never when there is none.
async fn readable_udp(socket: Option<&UdpSocket>) -> std::io::Result<()> {
    match socket {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

/// Sends a message to a client: over UDP from the listener, over TCP/TLS on its connection's
/// queue (a full queue drops the message whole, so the stream stays framed).
fn send_to_client(
    udp: Option<&UdpSocket>,
    streams: &HashMap<Client, Stream>,
    to: Client,
    bytes: impl AsRef<[u8]> + Into<Vec<u8>>,
) {
    match to.transport {
        Transport::Udp => {
            if let Some(udp) = udp
                && let Err(error) = udp.try_send_to(bytes.as_ref(), to.addr)
            {
                tracing::trace!(%error, client = %to, "TURN message not sent");
            }
        }
        Transport::Tcp | Transport::Tls => {
            if let Some(stream) = streams.get(&to) {
                let _ = stream.to_client.try_send(bytes.into());
            }
        }
    }
}

async fn accept_streams(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: mpsc::Sender<Event>,
    caps: ConnectionCaps,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "TURN {transport} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = caps.try_acquire(remote.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = Client {
            transport,
            addr: remote,
        };
        let events = events.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit: ConnectionPermit = permit;
            match tls {
                None => serve_stream(stream, client, &events).await,
                Some(acceptor) => {
                    if let Some(stream) = tls_handshake(&acceptor, stream, remote).await {
                        serve_stream(stream, client, &events).await;
                    }
                }
            }
        });
    }
}

/// The server side of a TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`]; `None` (logged at
/// debug) when it fails or takes too long. The HTTPS listener uses it too.
pub async fn tls_handshake<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, %remote, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            None
        }
    }
}

/// One TCP or TLS client: messages in, answers out, until either side ends.
async fn serve_stream<S>(stream: S, client: Client, events: &mpsc::Sender<Event>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (to_client, mut outgoing) = mpsc::channel::<Vec<u8>>(256);
    if events
        .send(Event::Opened { client, to_client })
        .await
        .is_err()
    {
        return;
    }
    let write = async {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        let first_deadline = tokio::time::Instant::now() + STREAM_FIRST_MESSAGE_TIMEOUT;
        let mut seen_message = false;
        loop {
            let deadline = if seen_message {
                tokio::time::Instant::now() + STREAM_IDLE_TIMEOUT
            } else {
                first_deadline
            };
            let n = match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            loop {
                match next_frame(&buf) {
                    Frame::Incomplete => break,
                    Frame::Invalid => {
                        tracing::debug!(%client, "TURN stream is not STUN or ChannelData; closing");
                        return;
                    }
                    Frame::Complete(len) => {
                        seen_message = true;
                        let rest = buf.split_off(len);
                        let bytes = std::mem::replace(&mut buf, rest);
                        if events.send(Event::Stream { client, bytes }).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        () = write => {}
        () = read => {}
    }
    let _ = events.send(Event::Closed(client)).await;
}
