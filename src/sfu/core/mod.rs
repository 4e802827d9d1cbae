//! The sans-IO SFU core: rooms, participants (each with a publisher and a subscriber
//! `str0m::Rtc`, LiveKit's v0 dual peer connection), signaling logic and RTP/data forwarding.
//!
//! Inputs: [`Sfu::join`], [`Sfu::handle_signal`], [`Sfu::leave`], [`Sfu::handle_receive`],
//! [`Sfu::handle_timeout`] and the room-service calls. Outputs: [`Sfu::poll_output`]. Every
//! input takes `now`; nothing here reads a clock, touches a socket or takes a lock.
//!
//! Peer input never panics the process: each call into a participant's `Rtc` runs under
//! `catch_unwind`; a panic marks that participant failed and it is removed (its room lives on).
//!
//! This file holds the entry points and the run loop (route a datagram, drain touched peers,
//! dispatch their events); each job lives in a file of its own:
//! - [`rooms`]: rooms and the room-service calls (create, list, delete, mute, remove);
//! - [`session`]: participant sessions: join, leave, removal, participant snapshots;
//! - [`media`]: `Media`, the one type holding a participant's str0m `Rtc`s (uplink/downlink);
//! - [`negotiation`]: publisher offers, subscriber offers/answers, trickle, subscriptions;
//! - [`tracks`]: published tracks: AddTrack, binding negotiated m-lines, mute;
//! - [`forwarding`]: RTP forwarding to subscriptions and keyframe requests;
//! - [`data`]: data channel packets relayed to the room;
//! - [`layers`]: simulcast layer allocation per subscription;
//! - [`speakers`]: active speakers from the audio-level header extension;
//! - [`quality`]: connection quality from each participant's link statistics.

// Several protocol fields are deprecated upstream but still read by released clients (legacy
// `UserPacket` sender fields, `TrackInfo.layers`/`simulcast`, `DataPacket.kind`); we fill them.
#![allow(deprecated)]

mod bandwidth;
mod data;
mod forwarding;
mod layers;
mod media;
mod negotiation;
mod quality;
mod rooms;
mod session;
mod single_pc;
mod speakers;
mod tracks;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::{signal_request, signal_response};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, IceConnectionState, Input};

use self::media::Pc;
use self::rooms::RoomState;
pub use self::session::ParticipantKey;
use self::session::{Link, Participant};
use crate::livekit::token::VideoGrant;
use crate::rooms::RoomRegistry;
use crate::sfu::counters::{RATE_INTERVAL, RateSample, SfuCounters};

/// The LiveKit server version we claim. ≥ 1.8.0 enables RPC in the SDKs; ≤ 1.13.6 keeps JS from
/// expecting rid-simulcast for VP9/AV1, which we do not offer (`enabled_publish_codecs`).
pub const SERVER_VERSION: &str = "1.9.0";
/// The signaling protocol level we implement (LiveKit's numbering).
pub const SERVER_PROTOCOL: i32 = 16;
pub const PING_INTERVAL_SECS: i32 = 5;
pub const PING_TIMEOUT_SECS: i32 = 15;
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// The soonest a peer is woken again after it was just polled.
const MIN_REPOLL: Duration = Duration::from_millis(5);
/// How long a session whose signaling connection was lost waits for the client to resume it
/// before it leaves. Clients notice a dead connection within the ping timeout we announce
/// (15 s) and resume at once; a client that is gone for good is seen by the others this much
/// later than one that said goodbye.
pub const RESUME_WINDOW: Duration = Duration::from_secs(20);

/// A signaling connection, allocated by the driver. A participant session is attached to one
/// ([`ParticipantKey`] is the session's own key); inputs and outputs name connections.
pub type ConnId = u64;

pub struct SfuConfig {
    /// Host candidates advertised for UDP and passive TCP.
    pub udp_candidates: Vec<SocketAddr>,
    pub tcp_candidates: Vec<SocketAddr>,
    pub auto_create_rooms: bool,
    pub node_id: String,
}

/// What a validated token asks for.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub conn: ConnId,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub grant: VideoGrant,
    pub auto_subscribe: bool,
    pub client_protocol: i32,
    /// TURN servers with this participant's credentials, for the JoinResponse.
    pub ice_servers: IceServers,
    /// LiveKit v1 (`/rtc/v1`): one peer connection that the client always offers on.
    pub single_pc: bool,
    /// v1: the client's first offer, carried in its join request (answered after the
    /// JoinResponse). Firefox sends it as a normal `offer` after joining instead.
    pub publisher_offer: Option<proto::SessionDescription>,
    /// v1: tracks the join request announces (handled before its offer is answered).
    pub add_tracks: Vec<proto::AddTrackRequest>,
}

#[cfg(test)]
impl JoinRequest {
    /// For tests: a v0 join of `identity` to `room` whose token grants joining that room.
    pub(crate) fn for_test(conn: ConnId, room: &str, identity: &str, client_protocol: i32) -> Self {
        JoinRequest {
            conn,
            room: room.into(),
            identity: identity.into(),
            name: String::new(),
            metadata: String::new(),
            grant: VideoGrant {
                room_join: true,
                room: room.into(),
                ..Default::default()
            },
            auto_subscribe: true,
            client_protocol,
            ice_servers: IceServers::default(),
            single_pc: false,
            publisher_offer: None,
            add_tracks: Vec::new(),
        }
    }
}

/// A client resuming its session on a new signaling connection (`reconnect=1`).
#[derive(Clone, Debug)]
pub struct ResumeRequest {
    pub conn: ConnId,
    pub room: String,
    pub identity: String,
    /// The participant sid the client resumes (`sid`); empty: whichever session has the
    /// identity.
    pub sid: String,
    /// TURN servers with fresh credentials, for the ReconnectResponse.
    pub ice_servers: IceServers,
}

/// A session's TURN servers, minted once the core knows the session's sid: participant
/// credentials name their session, so the TURN server can end its allocations when the session
/// ends ([`Output::Left`]). The mint is a pure function (credentials are an HMAC); none mints
/// no servers.
#[derive(Clone, Default)]
pub struct IceServers(Option<Arc<MintIceServers>>);

/// Turns a participant sid into that session's ICE servers.
type MintIceServers = dyn Fn(&str) -> Vec<proto::IceServer> + Send + Sync;

impl IceServers {
    pub fn new(mint: impl Fn(&str) -> Vec<proto::IceServer> + Send + Sync + 'static) -> Self {
        IceServers(Some(Arc::new(mint)))
    }

    /// The servers for the session with this participant sid.
    pub fn for_session(&self, sid: &str) -> Vec<proto::IceServer> {
        self.0.as_ref().map(|mint| mint(sid)).unwrap_or_default()
    }
}

impl std::fmt::Debug for IceServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "IceServers(mint)"
        } else {
            "IceServers(none)"
        })
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("no session to resume: it ended or never existed")]
    SessionGone,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("requested room does not exist")]
    RoomNotFound,
    #[error("room is full")]
    RoomFull,
    #[error("too many rooms")]
    TooManyRooms,
}

#[derive(Debug)]
pub enum Output {
    /// A datagram (UDP) or an RFC 4571 frame's payload (TCP) to send.
    Transmit(Transmit),
    /// A signaling message for one connection (boxed: join responses are large).
    Signal(ConnId, Box<signal_response::Message>),
    /// The connection's participant is gone; close the signaling connection after the queued
    /// messages.
    Close(ConnId),
    /// A participant left its room (any reason); published by the driver (`sfu::presence`).
    /// `sid` names the session, whose TURN allocations end with it.
    Left {
        room: String,
        identity: String,
        sid: String,
    },
}

pub struct Sfu {
    config: SfuConfig,
    registry: RoomRegistry,
    rooms: HashMap<String, RoomState>,
    participants: HashMap<ParticipantKey, Participant>,
    /// Which session each signaling connection is attached to.
    connections: HashMap<ConnId, ParticipantKey>,
    next_key: u64,
    /// Demultiplexing: which peer a remote transport address belongs to.
    routes: HashMap<(Protocol, SocketAddr), (ParticipantKey, Pc)>,
    dirty: VecDeque<(ParticipantKey, Pc)>,
    outputs: VecDeque<Output>,
    next_housekeeping: Instant,
    next_speaker_update: Instant,
    next_quality_update: Instant,
    next_quality_refresh: Instant,
    /// `(Instant, unix ms)` pair fixed at start: wall-clock times in protocol messages are derived
    /// from `now` and this anchor, so the core never reads a clock.
    epoch: (Instant, i64),
    /// What `/metrics` and the dashboard read; written only here.
    counters: Arc<SfuCounters>,
    next_rate_update: Instant,
    rate_sample: Option<RateSample>,
    /// The forwarding path's reusable buffers.
    scratch: forwarding::Scratch,
}

impl Sfu {
    pub fn new(config: SfuConfig, now: Instant, now_unix_ms: i64) -> Self {
        Sfu {
            config,
            registry: RoomRegistry::new(),
            rooms: HashMap::new(),
            participants: HashMap::new(),
            connections: HashMap::new(),
            next_key: 1,
            routes: HashMap::new(),
            dirty: VecDeque::new(),
            outputs: VecDeque::new(),
            next_housekeeping: now,
            next_speaker_update: now,
            next_quality_update: now,
            next_quality_refresh: now,
            epoch: (now, now_unix_ms),
            counters: Arc::default(),
            next_rate_update: now,
            rate_sample: None,
            scratch: Default::default(),
        }
    }

    /// The counters this core keeps (shared: readers need not call into the SFU task).
    pub fn counters(&self) -> Arc<SfuCounters> {
        self.counters.clone()
    }

    /// The session attached to a signaling connection.
    fn session_of(&self, conn: ConnId) -> Option<ParticipantKey> {
        self.connections.get(&conn).copied()
    }

    fn new_participant_key(&mut self) -> ParticipantKey {
        let key = ParticipantKey::new(self.next_key);
        self.next_key += 1;
        key
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as i64
    }

    pub fn handle_signal(&mut self, now: Instant, conn: ConnId, message: signal_request::Message) {
        let Some(key) = self.session_of(conn) else {
            return;
        };
        use signal_request::Message as M;
        match message {
            M::Offer(offer) => self.handle_publisher_offer(key, offer),
            M::Answer(answer) => self.handle_subscriber_answer(now, key, answer),
            M::Trickle(trickle) => self.handle_trickle(key, trickle),
            M::AddTrack(request) => self.handle_add_track(key, request),
            M::Mute(mute) => {
                self.set_muted(key, &mute.sid, mute.muted);
            }
            M::Subscription(update) => self.handle_subscription(now, key, update),
            M::TrackSetting(settings) => self.handle_track_settings(key, settings),
            M::Leave(_) => {
                self.remove_participant(now, key, proto::DisconnectReason::ClientInitiated, false);
                self.outputs.push_back(Output::Close(conn));
            }
            M::UpdateMetadata(update) => self.handle_update_metadata(key, update),
            // Accepted and ignored: pings (the signaling session answers them), subscription
            // permissions, layer hints from old clients, simulation hooks, data tracks, and a
            // resumed client's `sync_state` (the session kept its state: tracks, subscriptions
            // and data channels are what they were; the ICE restarts re-establish media).
            _ => {}
        }
        self.drain(now);
    }

    /// A datagram (UDP) or a de-framed RFC 4571 packet (TCP) arrived. `destination` is our
    /// advertised address it was sent to. True when it reached a participant's peer connection
    /// (its ICE agent knew the check's ufrag, or the source is a known route); the driver keeps
    /// an ICE-TCP connection only once that happened.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        let Ok(receive) = Receive::new(proto, source, destination, bytes) else {
            return false;
        };
        let input = Input::Receive(now, receive);
        let route = match self.routes.get(&(proto, source)) {
            Some(route) => Some(*route),
            None => self.route_for(&input),
        };
        let Some((key, pc)) = route else {
            tracing::trace!(%source, "datagram for no peer; dropped");
            return false;
        };
        self.routes.insert((proto, source), (key, pc));
        let Some(p) = self.participants.get_mut(&key) else {
            return false;
        };
        let peer = p.media.peer_mut(pc);
        match guard(|| peer.rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(error)) => tracing::debug!(%error, "media input refused"),
            None => self.fail(key, "panic on media input"),
        }
        self.mark(key, pc);
        self.drain(now);
        true
    }

    fn route_for(&self, input: &Input) -> Option<(ParticipantKey, Pc)> {
        for (key, p) in &self.participants {
            if let Some(pc) = p.media.accepting(input) {
                return Some((*key, pc));
            }
        }
        None
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (key, p) in &self.participants {
            for pc in p.media.pcs() {
                if p.media.peer(*pc).timeout <= now {
                    due.push((*key, *pc));
                }
            }
        }
        for (key, pc) in due {
            let Some(p) = self.participants.get_mut(&key) else {
                continue;
            };
            let peer = p.media.peer_mut(pc);
            match guard(|| peer.rtc.handle_input(Input::Timeout(now))) {
                Some(Ok(())) => {}
                Some(Err(error)) => tracing::debug!(%error, "timeout input refused"),
                None => self.fail(key, "panic on timeout"),
            }
            self.mark(key, pc);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now);
        }
        self.drain(now);
    }

    pub fn poll_timeout(&self) -> Instant {
        self.participants
            .values()
            .map(|p| p.media.next_timeout())
            .fold(self.next_housekeeping, Instant::min)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Number of participants across rooms (for status and tests).
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    fn housekeeping(&mut self, now: Instant) {
        for name in self.registry.expire(now) {
            tracing::info!(room = name, "room closed: timed out empty");
        }
        self.forget_expired_rooms();
        self.expire_detached(now);
        // Dead peers (DTLS closed, ICE gone for good) leave.
        let dead: Vec<ParticipantKey> = self
            .participants
            .values()
            .filter(|p| !p.media.is_alive())
            .map(|p| p.key)
            .collect();
        for key in dead {
            self.remove_participant(now, key, proto::DisconnectReason::ConnectionTimeout, true);
        }
        self.allocate_layers(now);
        self.update_dynacast(now);
        self.update_speakers(now);
        self.update_connection_quality(now);
        self.update_counters(now);
    }

    /// The gauges (every housekeeping) and the bitrates (every [`RATE_INTERVAL`]).
    fn update_counters(&mut self, now: Instant) {
        let c = &self.counters;
        c.rooms.set(self.rooms.len() as u64);
        c.participants.set(self.participants.len() as u64);
        let (tracks, subs) = self
            .participants
            .values()
            .fold((0, 0), |(t, s), p| (t + p.tracks.len(), s + p.subs.len()));
        c.tracks.set(tracks as u64);
        c.subscriptions.set(subs as u64);
        if now >= self.next_rate_update {
            self.next_rate_update = now + RATE_INTERVAL;
            self.rate_sample = Some(c.update_rates(now, self.rate_sample));
        }
    }

    fn mark(&mut self, key: ParticipantKey, pc: Pc) {
        if let Some(p) = self.participants.get_mut(&key) {
            let peer = p.media.peer_mut(pc);
            if !peer.queued {
                peer.queued = true;
                self.dirty.push_back((key, pc));
            }
        }
    }

    /// Queues the connection the client's media arrives on to be drained.
    fn mark_uplink(&mut self, key: ParticipantKey) {
        if let Some(pc) = self.participants.get(&key).map(|p| p.media.uplink_pc()) {
            self.mark(key, pc);
        }
    }

    /// Queues the connection we send to the client on to be drained.
    fn mark_downlink(&mut self, key: ParticipantKey) {
        if let Some(pc) = self.participants.get(&key).map(|p| p.media.downlink_pc()) {
            self.mark(key, pc);
        }
    }

    /// Queues a connection something was written to (RTP, a keyframe request) to be drained
    /// with a timeout input first, so what was written leaves in this turn.
    fn mark_written(&mut self, key: ParticipantKey, pc: Pc) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.media.peer_mut(pc).written = true;
        }
        self.mark(key, pc);
    }

    /// [`Sfu::mark_written`] for the connection we send to the client on.
    fn mark_written_downlink(&mut self, key: ParticipantKey) {
        if let Some(pc) = self.participants.get(&key).map(|p| p.media.downlink_pc()) {
            self.mark_written(key, pc);
        }
    }

    /// Polls every touched peer until it is idle, handling its events (which may touch others).
    fn drain(&mut self, now: Instant) {
        while let Some((key, pc)) = self.dirty.pop_front() {
            let mut events = Vec::new();
            let Some(p) = self.participants.get_mut(&key) else {
                continue;
            };
            let peer = p.media.peer_mut(pc);
            peer.queued = false;
            let written = std::mem::take(&mut peer.written);
            let outputs = &mut self.outputs;
            let polled = guard(|| {
                if written {
                    // str0m moves written packets to its pacer's queue on a timeout input
                    // only; without one they would wait for the next wake-up.
                    peer.rtc.handle_input(Input::Timeout(now))?;
                }
                loop {
                    match peer.rtc.poll_output() {
                        Ok(str0m::Output::Timeout(at)) => {
                            // After its output is drained, a timeout at `now` or earlier only
                            // means str0m clamped a deadline it cannot act on yet (its pacer
                            // with the bandwidth estimator on, before the connection is up):
                            // waking for it again at once would spin.
                            peer.timeout = at.max(now + MIN_REPOLL);
                            break Ok(());
                        }
                        Ok(str0m::Output::Transmit(t)) => outputs.push_back(Output::Transmit(t)),
                        Ok(str0m::Output::Event(e)) => events.push(e),
                        Err(error) => break Err(error),
                    }
                }
            });
            match polled {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "peer failed");
                    self.fail(key, "peer connection failed");
                }
                None => self.fail(key, "panic while polling"),
            }
            for event in events {
                self.handle_event(now, key, pc, event);
            }
        }
        let failed: Vec<ParticipantKey> = self
            .participants
            .values()
            .filter(|p| p.failed)
            .map(|p| p.key)
            .collect();
        for key in failed {
            self.remove_participant(now, key, proto::DisconnectReason::StateMismatch, true);
        }
        if !self.dirty.is_empty() {
            self.drain(now);
        }
    }

    fn handle_event(&mut self, now: Instant, key: ParticipantKey, pc: Pc, event: Event) {
        let Some((uplink, downlink)) = self
            .participants
            .get(&key)
            .map(|p| (p.media.is_uplink(pc), p.media.is_downlink(pc)))
        else {
            return;
        };
        match event {
            Event::RtpPacket(packet) if uplink => self.forward_rtp(now, key, packet),
            Event::KeyframeRequest(request) if downlink => {
                self.forward_keyframe_request(now, key, request.mid, request.kind)
            }
            // A v1 client's receive-only m-lines are slots for what we send, not its media.
            Event::MediaAdded(added) if uplink && added.direction.is_receiving() => {
                self.publish_media(now, key, added.mid, added.kind)
            }
            // The client stopped sending on an m-line (unpublished: its offer made it inactive
            // or recvonly), or sends on one again (a new track on a reused transceiver).
            Event::MediaChanged(changed) if uplink => {
                if changed.direction.is_receiving() {
                    let kind = self
                        .participants
                        .get(&key)
                        .and_then(|p| p.media.uplink().media(changed.mid).map(|m| m.kind()));
                    if let Some(kind) = kind {
                        self.publish_media(now, key, changed.mid, kind);
                    }
                } else {
                    self.unpublish_media(now, key, changed.mid);
                }
            }
            Event::ChannelOpen(id, label) => self.channel_opened(key, pc, id, &label),
            Event::ChannelData(data) if uplink => self.channel_data(key, data),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!(participant = %key, ?pc, "ICE disconnected");
                self.set_link_lost(key, true);
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => self.set_link_lost(key, false),
            Event::PeerStats(stats) => {
                if let Some(p) = self.participants.get_mut(&key) {
                    p.link_stats.observe(&stats);
                }
            }
            Event::MediaEgressStats(stats) if downlink => {
                let lost = stats.remote.as_ref().map_or(0, |r| r.packets_lost);
                if let Some(p) = self.participants.get_mut(&key) {
                    p.downlink
                        .observe((stats.mid, stats.rid), stats.loss, stats.packets);
                }
                self.count_stream_stats(key, pc, true, (stats.mid, stats.rid), stats.nacks, lost);
            }
            Event::MediaIngressStats(stats) if uplink => {
                self.count_stream_stats(key, pc, false, (stats.mid, stats.rid), stats.nacks, 0);
            }
            Event::Connected => {
                let Some(p) = self.participants.get_mut(&key) else {
                    return;
                };
                p.media.peer_mut(pc).connected = true;
                if p.state == proto::participant_info::State::Joined {
                    p.state = proto::participant_info::State::Active;
                    self.broadcast_participant(key);
                }
            }
            _ => {}
        }
    }

    /// Queues a message for a participant's current signaling connection (dropped while it
    /// has none: a resume sends the state that matters again).
    fn signal(&mut self, key: ParticipantKey, message: signal_response::Message) {
        let Some(Link::Attached(conn)) = self.participants.get(&key).map(|p| p.link) else {
            return;
        };
        self.outputs
            .push_back(Output::Signal(conn, Box::new(message)));
    }

    fn fail(&mut self, key: ParticipantKey, why: &str) {
        if let Some(p) = self.participants.get_mut(&key) {
            tracing::warn!(identity = p.identity, why, "dropping participant");
            p.failed = true;
        }
    }
}

/// Runs a call into str0m; `None` if it panicked (the caller then drops that participant).
fn guard<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

#[cfg(test)]
mod tests;
