//! The sans-IO SFU core: rooms, participants (each with a publisher and a subscriber
//! `str0m::Rtc`, LiveKit's v0 dual peer connection), signaling logic and RTP/data forwarding.
//!
//! Inputs: [`Sfu::join`], [`Sfu::handle_signal`], [`Sfu::leave`], [`Sfu::handle_receive`],
//! [`Sfu::handle_timeout`] and the room-service calls. Outputs: [`Sfu::poll_output`]. Every
//! input takes `now`; nothing here reads a clock, touches a socket or takes a lock.
//!
//! Peer input never panics the process: each call into a participant's `Rtc` runs under
//! `catch_unwind`; a panic marks that participant failed and it is removed (its room lives on).

// Several protocol fields are deprecated upstream but still read by released clients (legacy
// `UserPacket` sender fields, `TrackInfo.layers`/`simulcast`, `DataPacket.kind`); we fill them.
#![allow(deprecated)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::{signal_request, signal_response};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};

use super::forward::{Forwarder, Layer, Verdict};
use super::ids;
use super::keyframe::{self, VideoCodec};
use crate::livekit::token::VideoGrant;
use crate::rooms::{CreateOutcome, RoomError, RoomOptions, RoomRegistry};

/// The LiveKit server version we claim. ≥ 1.8.0 enables RPC in the SDKs; ≤ 1.13.6 keeps JS from
/// expecting rid-simulcast for VP9/AV1, which we do not offer (`enabled_publish_codecs`).
pub const SERVER_VERSION: &str = "1.9.0";
/// The signaling protocol level we implement (LiveKit's numbering).
pub const SERVER_PROTOCOL: i32 = 16;
pub const PING_INTERVAL_SECS: i32 = 5;
pub const PING_TIMEOUT_SECS: i32 = 15;
/// Caps that keep one client from growing server state without bound.
const MAX_TRACKS_PER_PARTICIPANT: usize = 32;
const MAX_PARTICIPANTS_PER_ROOM: usize = 500;
/// At most one keyframe request per published layer in this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// A simulcast layer without packets for this long is considered off.
const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);

/// The signaling connection a participant belongs to; allocated by the driver.
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
    pub ice_servers: Vec<proto::IceServer>,
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
    Left { room: String, identity: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pc {
    Publisher,
    Subscriber,
}

pub struct Sfu {
    config: SfuConfig,
    registry: RoomRegistry,
    rooms: HashMap<String, RoomState>,
    participants: HashMap<ConnId, Participant>,
    /// Demultiplexing: which peer a remote transport address belongs to.
    routes: HashMap<(Protocol, SocketAddr), (ConnId, Pc)>,
    dirty: VecDeque<(ConnId, Pc)>,
    outputs: VecDeque<Output>,
    next_housekeeping: Instant,
    /// `(Instant, unix ms)` pair fixed at start: wall-clock times in protocol messages are derived
    /// from `now` and this anchor, so the core never reads a clock.
    epoch: (Instant, i64),
}

struct RoomState {
    sid: String,
    options: RoomOptions,
    created_ms: i64,
    metadata: String,
    members: Vec<ConnId>,
}

struct Peer {
    rtc: Rtc,
    timeout: Instant,
    queued: bool,
    connected: bool,
}

struct Participant {
    conn: ConnId,
    sid: String,
    identity: String,
    name: String,
    metadata: String,
    room: String,
    permission: proto::ParticipantPermission,
    joined_at_ms: i64,
    version: u32,
    state: proto::participant_info::State,
    client_protocol: i32,
    auto_subscribe: bool,
    publisher: Peer,
    subscriber: Peer,
    tracks: Vec<Track>,
    subs: Vec<Subscription>,
    negotiation: Negotiation,
    /// Labels of the data channels the client opened on its publisher connection.
    pub_channels: HashMap<ChannelId, DataKind>,
    sub_reliable: Option<ChannelId>,
    sub_lossy: Option<ChannelId>,
    last_data_sequence: u32,
    failed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataKind {
    Reliable,
    Lossy,
    Other,
}

struct Track {
    info: proto::TrackInfo,
    cid: String,
    /// The publisher connection's m-line, once the client negotiated it.
    mid: Option<Mid>,
    video: bool,
    codec: VideoCodec,
    layer_seen: [Option<Instant>; 3],
    layer_rid: [Option<Rid>; 3],
    last_keyframe_request: [Option<Instant>; 3],
}

struct Subscription {
    track_sid: String,
    publisher: ConnId,
    mid: Mid,
    video: bool,
    forwarder: Forwarder,
    wanted: Layer,
    disabled: bool,
    /// Publisher payload type → ours, learned on first use.
    pt_map: Vec<(u8, u8)>,
}

#[derive(Default)]
struct Negotiation {
    pending: Option<(u32, SdpPendingOffer)>,
    next_id: u32,
    channels_created: bool,
    to_add: Vec<(ConnId, String)>,
    to_remove: Vec<Mid>,
}

impl Sfu {
    pub fn new(config: SfuConfig, now: Instant, now_unix_ms: i64) -> Self {
        Sfu {
            config,
            registry: RoomRegistry::new(),
            rooms: HashMap::new(),
            participants: HashMap::new(),
            routes: HashMap::new(),
            dirty: VecDeque::new(),
            outputs: VecDeque::new(),
            next_housekeeping: now,
            epoch: (now, now_unix_ms),
        }
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as i64
    }

    // ---- rooms (auth service and room service) ----

    /// Creates a room or returns the existing one (Twirp `CreateRoom` is idempotent).
    pub fn create_room(
        &mut self,
        now: Instant,
        name: &str,
        options: RoomOptions,
        metadata: Option<String>,
    ) -> Result<(CreateOutcome, proto::Room), RoomError> {
        let outcome = self.registry.create(name, options, now)?;
        self.forget_expired_rooms();
        let created_ms = self.unix_ms(now);
        let room = self
            .rooms
            .entry(name.to_owned())
            .or_insert_with(|| RoomState {
                sid: ids::room_sid(),
                options,
                created_ms,
                metadata: String::new(),
                members: Vec::new(),
            });
        if let Some(metadata) = metadata
            && outcome == CreateOutcome::Created
        {
            room.metadata = metadata;
        }
        Ok((
            outcome,
            self.room_info(name).expect("the room was just created"),
        ))
    }

    pub fn room_exists(&self, name: &str, now: Instant) -> bool {
        self.registry.exists(name, now) && self.rooms.contains_key(name)
    }

    /// Whether a join to `name` would find (or create) its room.
    pub fn can_join(&self, name: &str, now: Instant) -> bool {
        self.config.auto_create_rooms || self.room_exists(name, now)
    }

    pub fn room_info(&self, name: &str) -> Option<proto::Room> {
        let room = self.rooms.get(name)?;
        let members: Vec<&Participant> = room
            .members
            .iter()
            .filter_map(|c| self.participants.get(c))
            .collect();
        Some(proto::Room {
            sid: room.sid.clone(),
            name: name.to_owned(),
            empty_timeout: room.options.empty_timeout.as_secs() as u32,
            departure_timeout: room.options.departure_timeout.as_secs() as u32,
            max_participants: room.options.max_participants,
            creation_time: room.created_ms / 1000,
            creation_time_ms: room.created_ms,
            metadata: room.metadata.clone(),
            num_participants: members.iter().filter(|p| !p.permission.hidden).count() as u32,
            num_publishers: members.iter().filter(|p| p.is_publisher()).count() as u32,
            enabled_codecs: enabled_codecs(),
            ..Default::default()
        })
    }

    pub fn list_rooms(&self, names: &[String]) -> Vec<proto::Room> {
        let mut rooms: Vec<proto::Room> = self
            .rooms
            .keys()
            .filter(|name| names.is_empty() || names.contains(name))
            .filter_map(|name| self.room_info(name))
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// Closes a room: everyone in it gets `leave{ROOM_DELETED}`.
    pub fn delete_room(&mut self, now: Instant, name: &str) -> bool {
        let Some(room) = self.rooms.get(name) else {
            return false;
        };
        for conn in room.members.clone() {
            self.remove_participant(now, conn, proto::DisconnectReason::RoomDeleted, true);
        }
        self.rooms.remove(name);
        self.registry.remove(name);
        self.drain(now);
        true
    }

    pub fn participants_of(&self, room: &str) -> Option<Vec<proto::ParticipantInfo>> {
        let room = self.rooms.get(room)?;
        Some(
            room.members
                .iter()
                .filter_map(|c| self.participants.get(c))
                .filter(|p| !p.permission.hidden)
                .map(Participant::info)
                .collect(),
        )
    }

    pub fn participant(&self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        self.find(room, identity)
            .and_then(|c| self.participants.get(&c))
            .map(Participant::info)
    }

    pub fn remove_by_identity(&mut self, now: Instant, room: &str, identity: &str) -> bool {
        let Some(conn) = self.find(room, identity) else {
            return false;
        };
        self.remove_participant(now, conn, proto::DisconnectReason::ParticipantRemoved, true);
        self.drain(now);
        true
    }

    /// Server-side mute (Twirp `MutePublishedTrack`): the publisher is told, everyone sees it.
    pub fn mute_track(
        &mut self,
        now: Instant,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Option<proto::TrackInfo> {
        let conn = self.find(room, identity)?;
        let info = self.set_muted(conn, track_sid, muted)?;
        let mute = signal_response::Message::Mute(proto::MuteTrackRequest {
            sid: track_sid.to_owned(),
            muted,
        });
        self.signal(conn, mute);
        self.drain(now);
        Some(info)
    }

    fn find(&self, room: &str, identity: &str) -> Option<ConnId> {
        self.rooms.get(room)?.members.iter().copied().find(|c| {
            self.participants
                .get(c)
                .is_some_and(|p| p.identity == identity)
        })
    }

    fn forget_expired_rooms(&mut self) {
        let registry = &self.registry;
        let participants = &self.participants;
        self.rooms.retain(|name, room| {
            registry.contains(name) || room.members.iter().any(|c| participants.contains_key(c))
        });
    }

    // ---- participants ----

    /// Admits a participant whose token was validated. Sends the JoinResponse and the first
    /// subscriber offer.
    pub fn join(&mut self, now: Instant, request: JoinRequest) -> Result<(), JoinError> {
        let room_name = request.room.clone();
        if !self.room_exists(&room_name, now) {
            if !self.config.auto_create_rooms {
                return Err(JoinError::RoomNotFound);
            }
            self.create_room(now, &room_name, RoomOptions::AUTO_CREATED, None)
                .map_err(|_| JoinError::TooManyRooms)?;
        }
        // A second join with the same identity replaces the first (clients rely on this when
        // they reconnect from scratch).
        if let Some(old) = self.find(&room_name, &request.identity) {
            tracing::info!(
                room = room_name,
                identity = request.identity,
                "same identity joined again; replacing the old session"
            );
            self.remove_participant(now, old, proto::DisconnectReason::DuplicateIdentity, true);
        }
        let room = self.rooms.get(&room_name).expect("room exists");
        let limit = match room.options.max_participants {
            0 => MAX_PARTICIPANTS_PER_ROOM,
            n => (n as usize).min(MAX_PARTICIPANTS_PER_ROOM),
        };
        if room.members.len() >= limit {
            return Err(JoinError::RoomFull);
        }
        self.registry
            .participant_joined(&room_name, now)
            .map_err(|_| JoinError::RoomNotFound)?;

        let permission = permission_from(&request.grant);
        let mut participant = Participant {
            conn: request.conn,
            sid: ids::participant_sid(),
            identity: request.identity,
            name: request.name,
            metadata: request.metadata,
            room: room_name.clone(),
            permission,
            joined_at_ms: self.unix_ms(now),
            version: 1,
            state: proto::participant_info::State::Joined,
            client_protocol: request.client_protocol,
            auto_subscribe: request.auto_subscribe,
            publisher: Peer::new(self.new_rtc(now), now),
            subscriber: Peer::new(self.new_rtc(now), now),
            tracks: Vec::new(),
            subs: Vec::new(),
            negotiation: Negotiation {
                next_id: 1,
                ..Default::default()
            },
            pub_channels: HashMap::new(),
            sub_reliable: None,
            sub_lossy: None,
            last_data_sequence: 0,
            failed: false,
        };
        let conn = participant.conn;
        tracing::info!(
            room = room_name,
            identity = participant.identity,
            sid = participant.sid,
            "participant joined"
        );

        // Everything already published in the room goes into the first subscriber offer.
        let room = self.rooms.get_mut(&room_name).expect("room exists");
        if participant.auto_subscribe && participant.permission.can_subscribe {
            for other in &room.members {
                if let Some(publisher) = self.participants.get(other) {
                    for track in publisher.tracks.iter().filter(|t| t.mid.is_some()) {
                        participant
                            .negotiation
                            .to_add
                            .push((*other, track.info.sid.clone()));
                    }
                }
            }
        }
        room.members.push(conn);
        let others: Vec<proto::ParticipantInfo> = room
            .members
            .iter()
            .filter(|c| **c != conn)
            .filter_map(|c| self.participants.get(c))
            .filter(|p| !p.permission.hidden)
            .map(Participant::info)
            .collect();
        let join = proto::JoinResponse {
            room: self.room_info(&room_name),
            participant: Some(participant.info()),
            other_participants: others,
            server_version: SERVER_VERSION.into(),
            ice_servers: request.ice_servers.clone(),
            subscriber_primary: true,
            client_configuration: Some(proto::ClientConfiguration {
                // Resume is answered with leave{RECONNECT}; tell JS to reconnect fully right away.
                resume_connection: proto::ClientConfigSetting::Disabled as i32,
                ..Default::default()
            }),
            ping_timeout: PING_TIMEOUT_SECS,
            ping_interval: PING_INTERVAL_SECS,
            server_info: Some(proto::ServerInfo {
                edition: proto::server_info::Edition::Standard as i32,
                version: SERVER_VERSION.into(),
                protocol: SERVER_PROTOCOL,
                node_id: self.config.node_id.clone(),
                ..Default::default()
            }),
            enabled_publish_codecs: enabled_codecs(),
            fast_publish: participant.permission.can_publish,
            ..Default::default()
        };
        self.outputs.push_back(Output::Signal(
            conn,
            Box::new(signal_response::Message::Join(join)),
        ));
        let hidden = participant.permission.hidden;
        let info = participant.info();
        self.participants.insert(conn, participant);
        if !hidden {
            self.send_to_room(&room_name, Some(conn), update(vec![info]));
        }
        self.negotiate_subscriber(now, conn);
        self.drain(now);
        Ok(())
    }

    /// The signaling connection ended (client leave, socket closed or ping timeout).
    pub fn leave(&mut self, now: Instant, conn: ConnId, reason: proto::DisconnectReason) {
        if self.participants.contains_key(&conn) {
            self.remove_participant(now, conn, reason, false);
            self.drain(now);
        }
    }

    pub fn handle_signal(&mut self, now: Instant, conn: ConnId, message: signal_request::Message) {
        if !self.participants.contains_key(&conn) {
            return;
        }
        use signal_request::Message as M;
        match message {
            M::Offer(offer) => self.handle_publisher_offer(conn, offer),
            M::Answer(answer) => self.handle_subscriber_answer(now, conn, answer),
            M::Trickle(trickle) => self.handle_trickle(conn, trickle),
            M::AddTrack(request) => self.handle_add_track(conn, request),
            M::Mute(mute) => {
                self.set_muted(conn, &mute.sid, mute.muted);
            }
            M::Subscription(update) => self.handle_subscription(now, conn, update),
            M::TrackSetting(settings) => self.handle_track_settings(conn, settings),
            M::Leave(_) => {
                self.remove_participant(now, conn, proto::DisconnectReason::ClientInitiated, false);
                self.outputs.push_back(Output::Close(conn));
            }
            M::UpdateMetadata(update) => self.handle_update_metadata(conn, update),
            // Accepted and ignored: pings (the signaling session answers them), subscription
            // permissions, resume state, layer hints from old clients, simulation hooks, data
            // tracks.
            _ => {}
        }
        self.drain(now);
    }

    fn handle_publisher_offer(&mut self, conn: ConnId, offer: proto::SessionDescription) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        let parsed = match SdpOffer::from_sdp_string(&offer.sdp) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(identity = p.identity, %error, "unparsable publisher offer");
                return self.fail(conn, "unparsable offer");
            }
        };
        let answer = guard(|| p.publisher.rtc.sdp_api().accept_offer(parsed));
        match answer {
            Some(Ok(answer)) => {
                let mid_to_track_id = p.mid_to_track_id();
                let message = signal_response::Message::Answer(proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer.to_sdp_string(),
                    id: offer.id,
                    mid_to_track_id,
                });
                self.outputs
                    .push_back(Output::Signal(conn, Box::new(message)));
                self.mark(conn, Pc::Publisher);
            }
            Some(Err(error)) => {
                tracing::debug!(identity = p.identity, %error, "publisher offer refused");
                self.fail(conn, "offer refused");
            }
            None => self.fail(conn, "panic while accepting an offer"),
        }
    }

    fn handle_subscriber_answer(
        &mut self,
        now: Instant,
        conn: ConnId,
        answer: proto::SessionDescription,
    ) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        let Some((id, pending)) = p.negotiation.pending.take() else {
            tracing::debug!(
                identity = p.identity,
                "subscriber answer without an offer; ignored"
            );
            return;
        };
        if answer.id != 0 && answer.id != id {
            tracing::debug!(
                identity = p.identity,
                got = answer.id,
                want = id,
                "stale subscriber answer; ignored"
            );
            p.negotiation.pending = Some((id, pending));
            return;
        }
        let parsed = match SdpAnswer::from_sdp_string(&answer.sdp) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(identity = p.identity, %error, "unparsable subscriber answer");
                return self.fail(conn, "unparsable answer");
            }
        };
        match guard(|| p.subscriber.rtc.sdp_api().accept_answer(pending, parsed)) {
            Some(Ok(())) => {
                self.mark(conn, Pc::Subscriber);
                // New subscriptions start at a keyframe.
                self.negotiate_subscriber(now, conn);
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "subscriber answer refused");
                self.fail(conn, "answer refused");
            }
            None => self.fail(conn, "panic while accepting an answer"),
        }
    }

    fn handle_trickle(&mut self, conn: ConnId, trickle: proto::TrickleRequest) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        #[derive(serde::Deserialize)]
        struct CandidateInit {
            candidate: String,
        }
        let Ok(init) = serde_json::from_str::<CandidateInit>(&trickle.candidate_init) else {
            return;
        };
        let line = init.candidate.trim();
        if line.is_empty() || line.contains(".local ") {
            // End of candidates, or an mDNS name we cannot resolve (ICE-lite: not needed).
            return;
        }
        let Ok(candidate) = Candidate::from_sdp_string(line) else {
            tracing::debug!(candidate = line, "unparsable remote candidate; ignored");
            return;
        };
        let pc = if trickle.target == proto::SignalTarget::Subscriber as i32 {
            Pc::Subscriber
        } else {
            Pc::Publisher
        };
        let peer = p.peer_mut(pc);
        if guard(|| peer.rtc.add_remote_candidate(candidate)).is_none() {
            return self.fail(conn, "panic on a remote candidate");
        }
        self.mark(conn, pc);
    }

    fn handle_add_track(&mut self, conn: ConnId, request: proto::AddTrackRequest) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        let refuse = |reason: proto::request_response::Reason, message: &str| {
            signal_response::Message::RequestResponse(proto::RequestResponse {
                reason: reason as i32,
                message: message.into(),
                request: Some(proto::request_response::Request::AddTrack(request.clone())),
                ..Default::default()
            })
        };
        if !p.permission.can_publish
            || (!p.permission.can_publish_sources.is_empty()
                && !p.permission.can_publish_sources.contains(&request.source))
        {
            let message = refuse(
                proto::request_response::Reason::NotAllowed,
                "not allowed to publish",
            );
            self.signal(conn, message);
            return;
        }
        if let Some(existing) = p.tracks.iter().find(|t| t.cid == request.cid) {
            let message = signal_response::Message::TrackPublished(proto::TrackPublishedResponse {
                cid: request.cid.clone(),
                track: Some(existing.info.clone()),
            });
            self.signal(conn, message);
            return;
        }
        if p.tracks.len() >= MAX_TRACKS_PER_PARTICIPANT {
            let message = refuse(
                proto::request_response::Reason::LimitExceeded,
                "too many tracks",
            );
            self.signal(conn, message);
            return;
        }
        let video = request.r#type == proto::TrackType::Video as i32;
        if !video && request.r#type != proto::TrackType::Audio as i32 {
            let message = refuse(
                proto::request_response::Reason::UnsupportedType,
                "unsupported track type",
            );
            self.signal(conn, message);
            return;
        }
        let sid = ids::track_sid(video, request.source);
        let mime = request
            .simulcast_codecs
            .iter()
            .find(|c| !c.codec.is_empty())
            .map(|c| mime_for(video, &c.codec))
            .unwrap_or_else(|| {
                if video {
                    "video/VP8".into()
                } else {
                    "audio/opus".into()
                }
            });
        let layers = request.layers.clone();
        let info = proto::TrackInfo {
            sid: sid.clone(),
            r#type: request.r#type,
            name: request.name.clone(),
            muted: request.muted,
            width: request.width,
            height: request.height,
            simulcast: layers.len() > 1,
            disable_dtx: request.disable_dtx,
            source: request.source,
            layers: layers.clone(),
            mime_type: mime.clone(),
            codecs: vec![proto::SimulcastCodecInfo {
                mime_type: mime.clone(),
                cid: request.cid.clone(),
                layers,
                ..Default::default()
            }],
            stereo: request.stereo,
            disable_red: request.disable_red,
            encryption: request.encryption,
            stream: request.stream.clone(),
            audio_features: request.audio_features.clone(),
            backup_codec_policy: request.backup_codec_policy,
            ..Default::default()
        };
        p.tracks.push(Track {
            info: info.clone(),
            cid: request.cid.clone(),
            mid: None,
            video,
            codec: VideoCodec::from_mime(&mime),
            layer_seen: [None; 3],
            layer_rid: [None, None, None],
            last_keyframe_request: [None; 3],
        });
        let message = signal_response::Message::TrackPublished(proto::TrackPublishedResponse {
            cid: request.cid,
            track: Some(info),
        });
        self.outputs
            .push_back(Output::Signal(conn, Box::new(message)));
    }

    fn set_muted(
        &mut self,
        conn: ConnId,
        track_sid: &str,
        muted: bool,
    ) -> Option<proto::TrackInfo> {
        let p = self.participants.get_mut(&conn)?;
        let track = p.tracks.iter_mut().find(|t| t.info.sid == track_sid)?;
        track.info.muted = muted;
        let info = track.info.clone();
        self.broadcast_participant(conn);
        Some(info)
    }

    fn handle_subscription(
        &mut self,
        now: Instant,
        conn: ConnId,
        update: proto::UpdateSubscription,
    ) {
        let mut sids = update.track_sids.clone();
        for pt in &update.participant_tracks {
            sids.extend(pt.track_sids.iter().cloned());
        }
        for sid in sids {
            if update.subscribe {
                self.subscribe(conn, &sid);
            } else {
                self.unsubscribe(conn, &sid);
            }
        }
        self.negotiate_subscriber(now, conn);
    }

    fn handle_track_settings(&mut self, conn: ConnId, settings: proto::UpdateTrackSettings) {
        // The requested size picks the layer: the smallest one at least that big.
        let wanted_by_sid: Vec<(String, Layer)> = settings
            .track_sids
            .iter()
            .map(|sid| {
                let layer = self
                    .published_track(sid)
                    .map(|track| wanted_layer(&track.info, &settings))
                    .unwrap_or(2);
                (sid.clone(), layer)
            })
            .collect();
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        for (sid, layer) in wanted_by_sid {
            for sub in p.subs.iter_mut().filter(|s| s.track_sid == sid) {
                sub.disabled = settings.disabled;
                sub.wanted = layer;
            }
        }
    }

    fn handle_update_metadata(&mut self, conn: ConnId, update: proto::UpdateParticipantMetadata) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        if !p.permission.can_update_metadata {
            let message = signal_response::Message::RequestResponse(proto::RequestResponse {
                request_id: update.request_id,
                reason: proto::request_response::Reason::NotAllowed as i32,
                message: "does not have permission to update own metadata".into(),
                ..Default::default()
            });
            self.signal(conn, message);
            return;
        }
        if !update.name.is_empty() {
            p.name = update.name.chars().take(256).collect();
        }
        if !update.metadata.is_empty() {
            p.metadata = update.metadata.chars().take(64 * 1024).collect();
        }
        self.broadcast_participant(conn);
    }

    fn published_track(&self, track_sid: &str) -> Option<&Track> {
        self.participants
            .values()
            .flat_map(|p| p.tracks.iter())
            .find(|t| t.info.sid == track_sid)
    }

    fn subscribe(&mut self, conn: ConnId, track_sid: &str) {
        let Some(room) = self.participants.get(&conn).map(|p| p.room.clone()) else {
            return;
        };
        let publisher = self.rooms.get(&room).and_then(|r| {
            r.members.iter().copied().find(|c| {
                *c != conn
                    && self.participants.get(c).is_some_and(|p| {
                        p.tracks
                            .iter()
                            .any(|t| t.info.sid == track_sid && t.mid.is_some())
                    })
            })
        });
        let Some(publisher) = publisher else {
            return;
        };
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        if !p.permission.can_subscribe
            || p.subs.iter().any(|s| s.track_sid == track_sid)
            || p.negotiation.to_add.iter().any(|(_, s)| s == track_sid)
        {
            return;
        }
        p.negotiation.to_add.push((publisher, track_sid.to_owned()));
    }

    fn unsubscribe(&mut self, conn: ConnId, track_sid: &str) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        p.negotiation.to_add.retain(|(_, s)| s != track_sid);
        p.unsubscribe_where(|s| s.track_sid == track_sid);
    }

    /// Sends the next subscriber offer if something changed and no offer is outstanding (str0m
    /// allows one pending offer; later changes wait for the answer).
    fn negotiate_subscriber(&mut self, _now: Instant, conn: ConnId) {
        let mut tracks: Vec<(ConnId, String, String, bool, bool)> = Vec::new();
        {
            let Some(p) = self.participants.get(&conn) else {
                return;
            };
            let n = &p.negotiation;
            if n.pending.is_some()
                || (n.channels_created && n.to_add.is_empty() && n.to_remove.is_empty())
            {
                return;
            }
            for (publisher, sid) in &n.to_add {
                let Some(owner) = self.participants.get(publisher) else {
                    continue;
                };
                if let Some(track) = owner.tracks.iter().find(|t| &t.info.sid == sid) {
                    tracks.push((
                        *publisher,
                        owner.sid.clone(),
                        sid.clone(),
                        track.video,
                        track.info.simulcast,
                    ));
                }
            }
        }
        let p = self.participants.get_mut(&conn).expect("checked above");
        p.negotiation.to_add.clear();
        let removed = std::mem::take(&mut p.negotiation.to_remove);
        let create_channels = !p.negotiation.channels_created;
        let mut added: Vec<Subscription> = Vec::new();
        let mut channels: Vec<(DataKind, ChannelId)> = Vec::new();
        let result = guard(|| {
            let mut api = p.subscriber.rtc.sdp_api();
            if create_channels {
                let reliable = api.add_channel_with_config(ChannelConfig {
                    label: "_reliable".into(),
                    ordered: true,
                    reliability: Reliability::Reliable,
                    ..Default::default()
                });
                let lossy = api.add_channel_with_config(ChannelConfig {
                    label: "_lossy".into(),
                    ordered: false,
                    reliability: Reliability::MaxRetransmits { retransmits: 0 },
                    ..Default::default()
                });
                channels.push((DataKind::Reliable, reliable));
                channels.push((DataKind::Lossy, lossy));
            }
            for mid in &removed {
                api.stop_media(*mid);
            }
            for (publisher, publisher_sid, track_sid, video, simulcast) in &tracks {
                let kind = if *video {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                };
                let mid = api.add_media(
                    kind,
                    Direction::SendOnly,
                    Some(format!("{publisher_sid}|{track_sid}")),
                    Some(track_sid.clone()),
                    None,
                );
                added.push(Subscription {
                    track_sid: track_sid.clone(),
                    publisher: *publisher,
                    mid,
                    video: *video,
                    // Simulcast starts on the top layer; housekeeping moves to what is live.
                    forwarder: Forwarder::new(if *simulcast { 2 } else { 0 }),
                    wanted: 2,
                    disabled: false,
                    pt_map: Vec::new(),
                });
            }
            api.apply()
        });
        let Some(applied) = result else {
            return self.fail(conn, "panic while preparing an offer");
        };
        p.negotiation.channels_created = true;
        for (kind, id) in channels {
            match kind {
                DataKind::Reliable => p.sub_reliable = Some(id),
                _ => p.sub_lossy = Some(id),
            }
        }
        p.subs.extend(added);
        if let Some((offer, pending)) = applied {
            let id = p.negotiation.next_id;
            p.negotiation.next_id += 1;
            p.negotiation.pending = Some((id, pending));
            let message = signal_response::Message::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id,
                mid_to_track_id: p
                    .subs
                    .iter()
                    .map(|s| (s.mid.to_string(), s.track_sid.clone()))
                    .collect(),
            });
            self.outputs
                .push_back(Output::Signal(conn, Box::new(message)));
        }
        self.mark(conn, Pc::Subscriber);
    }

    /// Removes a participant: tells the others, stops its tracks at every subscriber, and (when
    /// `notify`) sends it a leave with `reason` before closing its signaling connection.
    fn remove_participant(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: proto::DisconnectReason,
        notify: bool,
    ) {
        let Some(mut p) = self.participants.remove(&conn) else {
            return;
        };
        tracing::info!(
            room = p.room,
            identity = p.identity,
            reason = reason.as_str_name(),
            "participant left"
        );
        self.outputs.push_back(Output::Left {
            room: p.room.clone(),
            identity: p.identity.clone(),
        });
        if notify {
            let leave = signal_response::Message::Leave(proto::LeaveRequest {
                reason: reason as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                ..Default::default()
            });
            self.signal(conn, leave);
            self.outputs.push_back(Output::Close(conn));
        }
        let _ = guard(|| {
            p.publisher.rtc.disconnect();
            p.subscriber.rtc.disconnect();
        });
        self.routes.retain(|_, (c, _)| *c != conn);
        p.state = proto::participant_info::State::Disconnected;
        p.version += 1;
        let mut info = p.info();
        info.disconnect_reason = reason as i32;
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|c| *c != conn);
            self.registry.participant_left(&p.room, now);
            let members = room.members.clone();
            for other in members {
                let Some(o) = self.participants.get_mut(&other) else {
                    continue;
                };
                o.negotiation
                    .to_add
                    .retain(|(publisher, _)| *publisher != conn);
                o.unsubscribe_where(|s| s.publisher == conn);
                if !p.permission.hidden {
                    self.outputs
                        .push_back(Output::Signal(other, Box::new(update(vec![info.clone()]))));
                }
                self.negotiate_subscriber(now, other);
            }
        }
    }

    fn signal(&mut self, conn: ConnId, message: signal_response::Message) {
        self.outputs
            .push_back(Output::Signal(conn, Box::new(message)));
    }

    fn fail(&mut self, conn: ConnId, why: &str) {
        if let Some(p) = self.participants.get_mut(&conn) {
            tracing::warn!(identity = p.identity, why, "dropping participant");
            p.failed = true;
        }
    }

    fn broadcast_participant(&mut self, conn: ConnId) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        p.version += 1;
        let info = p.info();
        let room = p.room.clone();
        let hidden = p.permission.hidden;
        // The participant itself gets its own snapshot too: JS compares its local state to it.
        self.outputs
            .push_back(Output::Signal(conn, Box::new(update(vec![info.clone()]))));
        if !hidden {
            self.send_to_room(&room, Some(conn), update(vec![info]));
        }
    }

    fn send_to_room(
        &mut self,
        room: &str,
        except: Option<ConnId>,
        message: signal_response::Message,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for conn in &room.members {
            if Some(*conn) != except {
                self.outputs
                    .push_back(Output::Signal(*conn, Box::new(message.clone())));
            }
        }
    }

    // ---- media ----

    /// A datagram (UDP) or a de-framed RFC 4571 packet (TCP) arrived. `destination` is our
    /// advertised address it was sent to.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        let Ok(receive) = Receive::new(proto, source, destination, bytes) else {
            return;
        };
        let input = Input::Receive(now, receive);
        let route = match self.routes.get(&(proto, source)) {
            Some(route) => Some(*route),
            None => self.route_for(&input),
        };
        let Some((conn, pc)) = route else {
            tracing::trace!(%source, "datagram for no peer; dropped");
            return;
        };
        self.routes.insert((proto, source), (conn, pc));
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        let peer = p.peer_mut(pc);
        match guard(|| peer.rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(error)) => tracing::debug!(%error, "media input refused"),
            None => self.fail(conn, "panic on media input"),
        }
        self.mark(conn, pc);
        self.drain(now);
    }

    fn route_for(&self, input: &Input) -> Option<(ConnId, Pc)> {
        for (conn, p) in &self.participants {
            for pc in [Pc::Publisher, Pc::Subscriber] {
                let rtc = &p.peer(pc).rtc;
                if guard(|| rtc.accepts(input)).unwrap_or(false) {
                    return Some((*conn, pc));
                }
            }
        }
        None
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (conn, p) in &self.participants {
            for pc in [Pc::Publisher, Pc::Subscriber] {
                if p.peer(pc).timeout <= now {
                    due.push((*conn, pc));
                }
            }
        }
        for (conn, pc) in due {
            let Some(p) = self.participants.get_mut(&conn) else {
                continue;
            };
            let peer = p.peer_mut(pc);
            match guard(|| peer.rtc.handle_input(Input::Timeout(now))) {
                Some(Ok(())) => {}
                Some(Err(error)) => tracing::debug!(%error, "timeout input refused"),
                None => self.fail(conn, "panic on timeout"),
            }
            self.mark(conn, pc);
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
            .flat_map(|p| [p.publisher.timeout, p.subscriber.timeout])
            .fold(self.next_housekeeping, Instant::min)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn housekeeping(&mut self, now: Instant) {
        for name in self.registry.expire(now) {
            tracing::info!(room = name, "room closed: timed out empty");
        }
        self.forget_expired_rooms();
        // Dead peers (DTLS closed, ICE gone for good) leave.
        let dead: Vec<ConnId> = self
            .participants
            .values()
            .filter(|p| !p.publisher.rtc.is_alive() || !p.subscriber.rtc.is_alive())
            .map(|p| p.conn)
            .collect();
        for conn in dead {
            self.remove_participant(now, conn, proto::DisconnectReason::ConnectionTimeout, true);
        }
        // Simulcast layer choice per subscription.
        let mut layers: HashMap<String, [bool; 3]> = HashMap::new();
        for p in self.participants.values() {
            for t in &p.tracks {
                let live = t.layer_seen.map(|seen| {
                    seen.is_some_and(|s| now.saturating_duration_since(s) < LAYER_TIMEOUT)
                });
                layers.insert(t.info.sid.clone(), live);
            }
        }
        for p in self.participants.values_mut() {
            for sub in p.subs.iter_mut().filter(|s| s.video) {
                if let Some(live) = layers.get(&sub.track_sid) {
                    let target = choose_layer(*live, sub.wanted);
                    if let Some(target) = target
                        && target != sub.forwarder.target()
                    {
                        sub.forwarder.set_target(target);
                    }
                }
            }
        }
    }

    fn mark(&mut self, conn: ConnId, pc: Pc) {
        if let Some(p) = self.participants.get_mut(&conn) {
            let peer = p.peer_mut(pc);
            if !peer.queued {
                peer.queued = true;
                self.dirty.push_back((conn, pc));
            }
        }
    }

    /// Polls every touched peer until it is idle, handling its events (which may touch others).
    fn drain(&mut self, now: Instant) {
        while let Some((conn, pc)) = self.dirty.pop_front() {
            let mut events = Vec::new();
            let Some(p) = self.participants.get_mut(&conn) else {
                continue;
            };
            let peer = p.peer_mut(pc);
            peer.queued = false;
            let outputs = &mut self.outputs;
            let polled = guard(|| {
                loop {
                    match peer.rtc.poll_output() {
                        Ok(str0m::Output::Timeout(at)) => {
                            peer.timeout = at;
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
                    self.fail(conn, "peer connection failed");
                }
                None => self.fail(conn, "panic while polling"),
            }
            for event in events {
                self.handle_event(now, conn, pc, event);
            }
        }
        let failed: Vec<ConnId> = self
            .participants
            .values()
            .filter(|p| p.failed)
            .map(|p| p.conn)
            .collect();
        for conn in failed {
            self.remove_participant(now, conn, proto::DisconnectReason::StateMismatch, true);
        }
        if !self.dirty.is_empty() {
            self.drain(now);
        }
    }

    fn handle_event(&mut self, now: Instant, conn: ConnId, pc: Pc, event: Event) {
        match event {
            Event::RtpPacket(packet) if pc == Pc::Publisher => self.forward_rtp(now, conn, packet),
            Event::KeyframeRequest(request) if pc == Pc::Subscriber => {
                self.forward_keyframe_request(now, conn, request.mid, request.kind)
            }
            Event::MediaAdded(added) if pc == Pc::Publisher => {
                self.publish_media(now, conn, added.mid, added.kind)
            }
            Event::ChannelOpen(id, label) => {
                let Some(p) = self.participants.get_mut(&conn) else {
                    return;
                };
                let kind = match label.as_str() {
                    "_reliable" => DataKind::Reliable,
                    "_lossy" => DataKind::Lossy,
                    _ => DataKind::Other,
                };
                if pc == Pc::Publisher {
                    p.pub_channels.insert(id, kind);
                }
            }
            Event::ChannelData(data) if pc == Pc::Publisher => {
                let kind = self
                    .participants
                    .get(&conn)
                    .and_then(|p| p.pub_channels.get(&data.id).copied())
                    .unwrap_or(DataKind::Other);
                if data.binary && kind != DataKind::Other {
                    self.relay_data(conn, kind, &data.data);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::debug!(conn, ?pc, "ICE disconnected");
            }
            Event::Connected => {
                let Some(p) = self.participants.get_mut(&conn) else {
                    return;
                };
                p.peer_mut(pc).connected = true;
                if p.state == proto::participant_info::State::Joined {
                    p.state = proto::participant_info::State::Active;
                    self.broadcast_participant(conn);
                }
            }
            _ => {}
        }
    }

    /// The client's publisher connection negotiated a new m-line: bind it to the pending track
    /// (msid track id = the AddTrackRequest cid, else the first pending track of that kind),
    /// announce the track and subscribe everyone who auto-subscribes.
    fn publish_media(&mut self, now: Instant, conn: ConnId, mid: Mid, kind: MediaKind) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        let msid_track = p
            .publisher
            .rtc
            .media(mid)
            .map(|m| m.track_id().to_owned())
            .unwrap_or_default();
        let video = kind == MediaKind::Video;
        let index = p
            .tracks
            .iter()
            .position(|t| t.mid.is_none() && t.cid == msid_track)
            .or_else(|| {
                p.tracks
                    .iter()
                    .position(|t| t.mid.is_none() && t.video == video)
            });
        let Some(index) = index else {
            tracing::debug!(identity = p.identity, %mid, "media without an AddTrack; ignored");
            return;
        };
        let track = &mut p.tracks[index];
        track.mid = Some(mid);
        track.info.mid = mid.to_string();
        let sid = track.info.sid.clone();
        let room = p.room.clone();
        tracing::info!(identity = p.identity, track = sid, %mid, "track published");
        self.broadcast_participant(conn);
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for other in members.into_iter().filter(|c| *c != conn) {
            if self
                .participants
                .get(&other)
                .is_some_and(|o| o.auto_subscribe)
            {
                self.subscribe(other, &sid);
                self.negotiate_subscriber(now, other);
            }
        }
    }

    fn forward_rtp(&mut self, now: Instant, conn: ConnId, packet: RtpPacket) {
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let Some((mid, rid)) = p
            .publisher
            .rtc
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == Some(mid)) else {
            return;
        };
        let layer = layer_of(rid);
        track.layer_seen[layer as usize] = Some(now);
        track.layer_rid[layer as usize] = rid;
        let video = track.video;
        let keyframe = video && keyframe::is_keyframe(track.codec, &packet.payload);
        let track_sid = track.info.sid.clone();
        let pt = *packet.header.payload_type;
        let params: Option<PayloadParams> = p
            .publisher
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|params| *params.pt() == pt)
            .cloned();
        let Some(params) = params else {
            return;
        };
        let room = p.room.clone();
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        let mut wants_keyframe: Option<Layer> = None;
        let mut ext = packet.header.ext_vals.clone();
        ext.mid = None;
        ext.rid = None;
        ext.rid_repair = None;
        ext.transport_cc = None;
        for other in members.into_iter().filter(|c| *c != conn) {
            let Some(s) = self.participants.get_mut(&other) else {
                continue;
            };
            let Some(sub) = s
                .subs
                .iter_mut()
                .find(|sub| sub.publisher == conn && sub.track_sid == track_sid)
            else {
                continue;
            };
            if sub.disabled {
                continue;
            }
            let (seq, ts) = match sub.forwarder.handle(
                layer,
                *packet.seq_no,
                packet.header.timestamp,
                keyframe,
                video,
            ) {
                Verdict::Forward { seq, ts } => (seq, ts),
                Verdict::NeedKeyframe => {
                    wants_keyframe = Some(sub.forwarder.target());
                    continue;
                }
                Verdict::Drop => continue,
            };
            let out_pt = match sub.pt_map.iter().find(|(from, _)| *from == pt) {
                Some((_, to)) => *to,
                None => {
                    let Some(ours) = s.subscriber.rtc.codec_config().match_params(params) else {
                        continue;
                    };
                    let to = *ours.pt();
                    sub.pt_map.push((pt, to));
                    to
                }
            };
            let mid = sub.mid;
            let write = RtpWrite::new(
                out_pt.into(),
                seq.into(),
                ts,
                packet.timestamp,
                packet.payload.clone(),
            )
            .marker(packet.header.marker)
            .ext_vals(ext.clone())
            .nackable(video);
            let written = guard(|| {
                let mut api = s.subscriber.rtc.direct_api();
                match api.stream_tx_by_mid(mid, None) {
                    Some(stream) => {
                        stream.write_rtp(write);
                        true
                    }
                    None => false,
                }
            });
            match written {
                Some(true) => self.mark(other, Pc::Subscriber),
                Some(false) => {}
                None => self.fail(other, "panic while writing RTP"),
            }
        }
        if let Some(layer) = wants_keyframe {
            self.request_keyframe(now, conn, &track_sid, layer, KeyframeRequestKind::Pli);
        }
    }

    fn forward_keyframe_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let Some(s) = self.participants.get(&conn) else {
            return;
        };
        let Some(sub) = s.subs.iter().find(|sub| sub.mid == mid) else {
            return;
        };
        let (publisher, track_sid) = (sub.publisher, sub.track_sid.clone());
        let layer = sub.forwarder.current().unwrap_or(sub.forwarder.target());
        self.request_keyframe(now, publisher, &track_sid, layer, kind);
    }

    /// Asks the publisher for a keyframe on one layer, at most once per interval per layer.
    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: ConnId,
        track_sid: &str,
        layer: Layer,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = self.participants.get_mut(&publisher) else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.info.sid == track_sid) else {
            return;
        };
        let Some(mid) = track.mid else {
            return;
        };
        let slot = &mut track.last_keyframe_request[layer as usize % 3];
        if slot.is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        *slot = Some(now);
        let rid = track.layer_rid[layer as usize % 3];
        let requested = guard(|| {
            if let Some(stream) = p.publisher.rtc.direct_api().stream_rx_by_mid(mid, rid) {
                stream.request_keyframe(kind);
            }
        });
        if requested.is_none() {
            return self.fail(publisher, "panic while requesting a keyframe");
        }
        self.mark(publisher, Pc::Publisher);
    }

    /// Relays a `DataPacket` from `conn`'s publisher channel to the others' subscriber channels,
    /// with the sender stamped by us (clients trust these fields for attribution and E2EE keys).
    fn relay_data(&mut self, conn: ConnId, kind: DataKind, bytes: &[u8]) {
        use prost::Message as _;
        let Some(p) = self.participants.get_mut(&conn) else {
            return;
        };
        if !p.permission.can_publish_data {
            return;
        }
        let Ok(mut packet) = proto::DataPacket::decode(bytes) else {
            tracing::debug!(identity = p.identity, "undecodable data packet; dropped");
            return;
        };
        if matches!(packet.value, Some(proto::data_packet::Value::Metrics(_))) {
            return;
        }
        if kind == DataKind::Reliable && packet.sequence > 0 {
            if packet.sequence <= p.last_data_sequence {
                return;
            }
            p.last_data_sequence = packet.sequence;
        }
        packet.participant_sid = p.sid.clone();
        packet.participant_identity = if p.permission.hidden {
            String::new()
        } else {
            p.identity.clone()
        };
        packet.kind = match kind {
            DataKind::Lossy => proto::data_packet::Kind::Lossy as i32,
            _ => proto::data_packet::Kind::Reliable as i32,
        };
        if let Some(proto::data_packet::Value::User(user)) = &mut packet.value {
            user.participant_sid = packet.participant_sid.clone();
            user.participant_identity = packet.participant_identity.clone();
            if packet.destination_identities.is_empty() {
                packet.destination_identities = user.destination_identities.clone();
            } else {
                user.destination_identities = packet.destination_identities.clone();
            }
        }
        let destinations = packet.destination_identities.clone();
        let encoded = packet.encode_to_vec();
        let room = p.room.clone();
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for other in members.into_iter().filter(|c| *c != conn) {
            let Some(s) = self.participants.get_mut(&other) else {
                continue;
            };
            if !destinations.is_empty() && !destinations.contains(&s.identity) {
                continue;
            }
            let channel = match kind {
                DataKind::Lossy => s.sub_lossy,
                _ => s.sub_reliable,
            };
            let Some(id) = channel else {
                continue;
            };
            let sent = guard(|| match s.subscriber.rtc.channel(id) {
                Some(mut channel) => channel.write(true, &encoded).is_ok(),
                None => false,
            });
            match sent {
                Some(true) => self.mark(other, Pc::Subscriber),
                Some(false) => tracing::debug!(
                    identity = s.identity,
                    "data channel not open; packet dropped"
                ),
                None => self.fail(other, "panic while writing data"),
            }
        }
    }

    fn new_rtc(&self, now: Instant) -> Rtc {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .build(now);
        for addr in &self.config.udp_candidates {
            if let Ok(candidate) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        for addr in &self.config.tcp_candidates {
            if let Ok(candidate) = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
            {
                rtc.add_local_candidate(candidate);
            }
        }
        rtc
    }

    /// Number of participants across rooms (for status and tests).
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }
}

impl Peer {
    fn new(rtc: Rtc, now: Instant) -> Self {
        Peer {
            rtc,
            timeout: now,
            queued: false,
            connected: false,
        }
    }
}

impl Participant {
    fn peer(&self, pc: Pc) -> &Peer {
        match pc {
            Pc::Publisher => &self.publisher,
            Pc::Subscriber => &self.subscriber,
        }
    }

    fn peer_mut(&mut self, pc: Pc) -> &mut Peer {
        match pc {
            Pc::Publisher => &mut self.publisher,
            Pc::Subscriber => &mut self.subscriber,
        }
    }

    fn is_publisher(&self) -> bool {
        self.tracks.iter().any(|t| t.mid.is_some())
    }

    /// A complete snapshot (every published track), as clients expect in every update.
    fn info(&self) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            state: self.state as i32,
            tracks: self
                .tracks
                .iter()
                .filter(|t| t.mid.is_some())
                .map(|t| t.info.clone())
                .collect(),
            metadata: self.metadata.clone(),
            joined_at: self.joined_at_ms / 1000,
            joined_at_ms: self.joined_at_ms,
            name: self.name.clone(),
            version: self.version,
            permission: Some(self.permission.clone()),
            is_publisher: self.is_publisher(),
            kind: proto::participant_info::Kind::Standard as i32,
            client_protocol: self.client_protocol,
            ..Default::default()
        }
    }

    /// Drops the subscriptions matching `which`; the next offer stops their m-lines.
    fn unsubscribe_where(&mut self, which: impl Fn(&Subscription) -> bool) {
        let mids: Vec<Mid> = self
            .subs
            .iter()
            .filter(|s| which(s))
            .map(|s| s.mid)
            .collect();
        self.subs.retain(|s| !which(s));
        self.negotiation.to_remove.extend(mids);
    }

    fn mid_to_track_id(&self) -> HashMap<String, String> {
        self.tracks
            .iter()
            .filter_map(|t| t.mid.map(|mid| (mid.to_string(), t.info.sid.clone())))
            .collect()
    }
}

/// Runs a call into str0m; `None` if it panicked (the caller then drops that participant).
fn guard<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

fn update(participants: Vec<proto::ParticipantInfo>) -> signal_response::Message {
    signal_response::Message::Update(proto::ParticipantUpdate { participants })
}

fn permission_from(grant: &VideoGrant) -> proto::ParticipantPermission {
    let can_publish = grant.can_publish.unwrap_or(true);
    proto::ParticipantPermission {
        can_subscribe: grant.can_subscribe.unwrap_or(true),
        can_publish,
        can_publish_data: grant.can_publish_data.unwrap_or(can_publish),
        can_publish_sources: Vec::new(),
        hidden: grant.hidden,
        can_update_metadata: grant.can_update_own_metadata.unwrap_or(false),
        ..Default::default()
    }
}

/// The codecs clients may publish: what we can forward and detect keyframes in.
fn enabled_codecs() -> Vec<proto::Codec> {
    ["audio/opus", "audio/red", "video/VP8", "video/H264"]
        .iter()
        .map(|mime| proto::Codec {
            mime: (*mime).into(),
            fmtp_line: String::new(),
        })
        .collect()
}

fn mime_for(video: bool, codec: &str) -> String {
    let codec = codec.rsplit('/').next().unwrap_or(codec);
    let name = match codec.to_ascii_lowercase().as_str() {
        "vp8" => "VP8".to_owned(),
        "vp9" => "VP9".to_owned(),
        "h264" => "H264".to_owned(),
        "h265" => "H265".to_owned(),
        "av1" => "AV1".to_owned(),
        "opus" => "opus".to_owned(),
        other => other.to_owned(),
    };
    format!("{}/{name}", if video { "video" } else { "audio" })
}

/// `q`/`h`/`f` → 0/1/2; a single-stream track is layer 0... unless it is the only one, which
/// [`choose_layer`] handles by picking whatever is live.
fn layer_of(rid: Option<Rid>) -> Layer {
    match rid.as_deref() {
        Some("q") => 0,
        Some("h") => 1,
        Some("f") => 2,
        Some(_) => 0,
        None => 0,
    }
}

/// The best live layer not above `wanted`, else the lowest live one.
fn choose_layer(live: [bool; 3], wanted: Layer) -> Option<Layer> {
    (0..=wanted.min(2))
        .rev()
        .find(|l| live[*l as usize])
        .or_else(|| (0..3).find(|l| live[*l as usize]))
}

/// The layer for a subscriber's requested size: the smallest layer at least as big, else the
/// biggest; an explicit quality when no size is given.
fn wanted_layer(track: &proto::TrackInfo, settings: &proto::UpdateTrackSettings) -> Layer {
    if settings.width == 0 && settings.height == 0 {
        return (settings.quality.clamp(0, 2)) as Layer;
    }
    let mut layers: Vec<&proto::VideoLayer> = track.layers.iter().collect();
    layers.sort_by_key(|l| l.quality);
    layers
        .iter()
        .find(|l| l.width >= settings.width && l.height >= settings.height)
        .or(layers.last())
        .map(|l| l.quality.clamp(0, 2) as Layer)
        .unwrap_or(2)
}

#[cfg(test)]
mod tests;
