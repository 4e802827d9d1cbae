//! Participant sessions: join (the JoinResponse and the first subscriber offer), leave,
//! removal (the others are told, its subscriptions end) and the snapshots clients see.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response;

use super::bandwidth::Downlink;
use super::data::DataKind;
use super::forwarding::Subscription;
use super::media::{Media, Pc};
use super::negotiation::Negotiation;
use super::quality::LinkStats;
use super::tracks::Track;
use super::{
    ConnId, JoinError, JoinRequest, Output, PING_INTERVAL_SECS, PING_TIMEOUT_SECS, RESUME_WINDOW,
    ResumeError, ResumeRequest, SERVER_PROTOCOL, SERVER_VERSION, Sfu, guard, rooms::enabled_codecs,
};
use crate::livekit::token::VideoGrant;
use crate::rooms::RoomOptions;
use crate::sfu::ids;
use str0m::channel::ChannelId;
use str0m::media::{Mid, Rid};

const MAX_PARTICIPANTS_PER_ROOM: usize = 500;

/// A participant session's own key, allocated by the core when it joins. Rooms, routes,
/// subscriptions and the run loop name participants by it, never by their signaling
/// connection: the connection is one attribute of the session ([`Participant::conn`]), so a
/// session can be re-attached to a new one (resume) without the others noticing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey(u64);

impl ParticipantKey {
    pub(super) fn new(n: u64) -> Self {
        ParticipantKey(n)
    }
}

impl std::fmt::Display for ParticipantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// A session's signaling link: the connection its messages go to, or since when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    Attached(ConnId),
    /// The connection was lost (not closed by a leave): the session waits [`RESUME_WINDOW`]
    /// for the client to resume on a new one; messages for it meanwhile are dropped (a resume
    /// resends the state that matters).
    Detached {
        since: Instant,
    },
}

/// One stream of a participant's: its connection, whether we send it (downlink), its m-line
/// and simulcast layer.
pub(super) type StreamKey = (Pc, bool, Mid, Option<Rid>);

pub(super) struct Participant {
    pub(super) key: ParticipantKey,
    /// Where its signaling messages go now. A session outlives a lost connection: the client
    /// resumes it on a new one ([`Sfu::resume`]) and the others notice nothing.
    pub(super) link: Link,
    pub(super) sid: String,
    pub(super) identity: String,
    pub(super) name: String,
    pub(super) metadata: String,
    pub(super) room: String,
    pub(super) permission: proto::ParticipantPermission,
    pub(super) joined_at_ms: i64,
    pub(super) version: u32,
    pub(super) state: proto::participant_info::State,
    pub(super) client_protocol: i32,
    pub(super) auto_subscribe: bool,
    /// Its peer connections.
    pub(super) media: Media,
    pub(super) tracks: Vec<Track>,
    pub(super) subs: Vec<Subscription>,
    pub(super) negotiation: Negotiation,
    /// Labels of the data channels the client opened on its publisher connection.
    pub(super) pub_channels: HashMap<ChannelId, DataKind>,
    pub(super) sub_reliable: Option<ChannelId>,
    pub(super) sub_lossy: Option<ChannelId>,
    pub(super) last_data_sequence: u32,
    /// Loss and round-trip time of its connections, for its connection quality.
    pub(super) link_stats: LinkStats,
    /// Congestion evidence on its downlink and the layer caps it put on its video.
    pub(super) downlink: Downlink,
    /// Per stream, the NACK and loss totals str0m reported last (its totals are per stream;
    /// the SFU's counters take the growth).
    pub(super) reported: HashMap<StreamKey, (u64, u64)>,
    pub(super) failed: bool,
}

impl Sfu {
    /// Admits a participant whose token was validated. Sends the JoinResponse, then (v0) the
    /// first subscriber offer or (v1) the answer to the offer its join request carried.
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
        let key = self.new_participant_key();
        let mut participant = Participant {
            key,
            link: Link::Attached(request.conn),
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
            media: if request.single_pc {
                Media::single(self.new_rtc(now), now)
            } else {
                Media::dual(self.new_rtc(now), self.new_rtc(now), now)
            },
            tracks: Vec::new(),
            subs: Vec::new(),
            negotiation: Negotiation {
                next_id: 1,
                // v1 without an offer in its join request (Firefox) offers right after.
                offer_awaited: request.single_pc,
                ..Default::default()
            },
            pub_channels: HashMap::new(),
            sub_reliable: None,
            sub_lossy: None,
            last_data_sequence: 0,
            link_stats: LinkStats::default(),
            downlink: Downlink::default(),
            reported: HashMap::new(),
            failed: false,
        };
        tracing::info!(
            room = room_name,
            identity = participant.identity,
            sid = participant.sid,
            signaling = if participant.media.is_single() {
                "v1"
            } else {
                "v0"
            },
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
        room.members.push(key);
        let others: Vec<proto::ParticipantInfo> = room
            .members
            .iter()
            .filter(|c| **c != key)
            .filter_map(|c| self.participants.get(c))
            .filter(|p| !p.permission.hidden)
            .map(Participant::info)
            .collect();
        let join = proto::JoinResponse {
            room: self.room_info(&room_name),
            participant: Some(participant.info()),
            other_participants: others,
            server_version: SERVER_VERSION.into(),
            ice_servers: request.ice_servers.for_session(&participant.sid),
            // v0: the client waits for our subscriber offer; v1: it offers.
            subscriber_primary: !request.single_pc,
            client_configuration: Some(client_configuration()),
            ping_timeout: PING_TIMEOUT_SECS,
            ping_interval: PING_INTERVAL_SECS,
            server_info: Some(self.server_info()),
            enabled_publish_codecs: enabled_codecs(),
            fast_publish: participant.permission.can_publish,
            ..Default::default()
        };
        self.outputs.push_back(Output::Signal(
            request.conn,
            Box::new(signal_response::Message::Join(join)),
        ));
        let hidden = participant.permission.hidden;
        let info = participant.info();
        self.connections.insert(request.conn, key);
        self.participants.insert(key, participant);
        if !hidden {
            self.send_to_room(&room_name, Some(key), update(vec![info]));
        }
        for track in request.add_tracks {
            self.handle_add_track(key, track);
        }
        match request.publisher_offer {
            Some(offer) if request.single_pc => self.handle_publisher_offer(key, offer),
            _ => self.negotiate_subscriber(now, key),
        }
        self.drain(now);
        Ok(())
    }

    /// The signaling connection ended. A client that said goodbye (a close frame, a leave)
    /// leaves; a connection that was lost (socket error, silence, a client too slow to read)
    /// detaches its session, which then waits [`RESUME_WINDOW`] for the client to resume.
    pub fn leave(&mut self, now: Instant, conn: ConnId, reason: proto::DisconnectReason) {
        let Some(key) = self.session_of(conn) else {
            return;
        };
        let lost = matches!(
            reason,
            proto::DisconnectReason::SignalClose | proto::DisconnectReason::ConnectionTimeout
        );
        match self.participants.get_mut(&key) {
            Some(p) if lost => {
                tracing::info!(
                    room = p.room,
                    identity = p.identity,
                    reason = reason.as_str_name(),
                    window_secs = RESUME_WINDOW.as_secs(),
                    "signaling connection lost; holding the session for a resume"
                );
                self.connections.remove(&conn);
                p.link = Link::Detached { since: now };
            }
            _ => {
                self.remove_participant(now, key, reason, false);
                self.drain(now);
            }
        }
    }

    /// Re-attaches a session to a new signaling connection (LiveKit's resume: `reconnect=1`).
    /// The others see nothing; the client gets a ReconnectResponse, everyone's current state
    /// and an ICE restart of the connection we offer, and restarts its own.
    pub fn resume(&mut self, now: Instant, request: ResumeRequest) -> Result<(), ResumeError> {
        let key = self
            .find(&request.room, &request.identity)
            .filter(|key| {
                request.sid.is_empty()
                    || self
                        .participants
                        .get(key)
                        .is_some_and(|p| p.sid == request.sid)
            })
            .ok_or(ResumeError::SessionGone)?;
        let server_info = self.server_info();
        let p = self.participants.get_mut(&key).expect("found above");
        if let Link::Attached(old) = p.link {
            // The client gave up on a connection we still hold: it ends, the session stays.
            self.connections.remove(&old);
            self.outputs.push_back(Output::Close(old));
        }
        p.link = Link::Attached(request.conn);
        self.connections.insert(request.conn, key);
        tracing::info!(
            room = p.room,
            identity = p.identity,
            "participant resumed its session"
        );
        let reconnect = proto::ReconnectResponse {
            ice_servers: request.ice_servers.for_session(&p.sid),
            client_configuration: Some(client_configuration()),
            server_info: Some(server_info),
            // Reliable data it sent after this is resent by the client.
            last_message_seq: p.last_data_sequence,
        };
        let room = p.room.clone();
        self.signal(key, signal_response::Message::Reconnect(reconnect));
        // Whatever changed while it was away: everyone's current state, itself included.
        let mut infos: Vec<proto::ParticipantInfo> = self
            .members(&room)
            .iter()
            .filter_map(|k| self.participants.get(k))
            .filter(|o| o.key == key || !o.permission.hidden)
            .map(Participant::info)
            .collect();
        infos.sort_by_key(|info| info.identity != request.identity);
        self.signal(key, update(infos));
        if let Some(room_info) = self.room_info(&room) {
            self.signal(
                key,
                signal_response::Message::RoomUpdate(proto::RoomUpdate {
                    room: Some(room_info),
                }),
            );
        }
        self.restart_subscriber_ice(key);
        self.negotiate_subscriber(now, key);
        self.drain(now);
        Ok(())
    }

    /// Ends sessions whose signaling was lost longer than [`RESUME_WINDOW`] ago.
    pub(super) fn expire_detached(&mut self, now: Instant) {
        let expired: Vec<ParticipantKey> = self
            .participants
            .values()
            .filter(|p| match p.link {
                Link::Detached { since } => now.saturating_duration_since(since) >= RESUME_WINDOW,
                Link::Attached(_) => false,
            })
            .map(|p| p.key)
            .collect();
        for key in expired {
            self.remove_participant(now, key, proto::DisconnectReason::SignalClose, false);
        }
    }

    pub(super) fn server_info(&self) -> proto::ServerInfo {
        proto::ServerInfo {
            edition: proto::server_info::Edition::Standard as i32,
            version: SERVER_VERSION.into(),
            protocol: SERVER_PROTOCOL,
            node_id: self.config.node_id.clone(),
            ..Default::default()
        }
    }

    pub(super) fn handle_update_metadata(
        &mut self,
        key: ParticipantKey,
        update: proto::UpdateParticipantMetadata,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if !p.permission.can_update_metadata {
            let message = signal_response::Message::RequestResponse(proto::RequestResponse {
                request_id: update.request_id,
                reason: proto::request_response::Reason::NotAllowed as i32,
                message: "does not have permission to update own metadata".into(),
                ..Default::default()
            });
            self.signal(key, message);
            return;
        }
        if !update.name.is_empty() {
            p.name = update.name.chars().take(256).collect();
        }
        if !update.metadata.is_empty() {
            p.metadata = update.metadata.chars().take(64 * 1024).collect();
        }
        self.broadcast_participant(key);
    }

    /// Removes a participant: tells the others, stops its tracks at every subscriber, and (when
    /// `notify`) sends it a leave with `reason` before closing its signaling connection.
    pub(super) fn remove_participant(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        reason: proto::DisconnectReason,
        notify: bool,
    ) {
        let Some(mut p) = self.participants.remove(&key) else {
            return;
        };
        let conn = match p.link {
            Link::Attached(conn) => {
                self.connections.remove(&conn);
                Some(conn)
            }
            Link::Detached { .. } => None,
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
            sid: p.sid.clone(),
        });
        if let Some(conn) = conn.filter(|_| notify) {
            let leave = signal_response::Message::Leave(proto::LeaveRequest {
                reason: reason as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                ..Default::default()
            });
            self.outputs
                .push_back(Output::Signal(conn, Box::new(leave)));
            self.outputs.push_back(Output::Close(conn));
        }
        let _ = guard(|| p.media.disconnect());
        self.routes.retain(|_, (c, _)| *c != key);
        p.state = proto::participant_info::State::Disconnected;
        p.version += 1;
        let mut info = p.info();
        info.disconnect_reason = reason as i32;
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|c| *c != key);
            self.registry.participant_left(&p.room, now);
            let members = room.members.clone();
            for other in members {
                let Some(o) = self.participants.get_mut(&other) else {
                    continue;
                };
                o.negotiation
                    .to_add
                    .retain(|(publisher, _)| *publisher != key);
                o.unsubscribe_where(|s| s.publisher == key);
                if !p.permission.hidden {
                    self.signal(other, update(vec![info.clone()]));
                }
                self.negotiate_subscriber(now, other);
            }
        }
    }

    pub(super) fn broadcast_participant(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.version += 1;
        let info = p.info();
        let room = p.room.clone();
        let hidden = p.permission.hidden;
        // The participant itself gets its own snapshot too: JS compares its local state to it.
        self.signal(key, update(vec![info.clone()]));
        if !hidden {
            self.send_to_room(&room, Some(key), update(vec![info]));
        }
    }
}

impl Participant {
    pub(super) fn is_publisher(&self) -> bool {
        self.tracks.iter().any(|t| t.mid.is_some())
    }

    /// A complete snapshot (every published track), as clients expect in every update.
    pub(super) fn info(&self) -> proto::ParticipantInfo {
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
}

/// What the client should do; resume is on (LiveKit's default), so it is not named.
fn client_configuration() -> proto::ClientConfiguration {
    proto::ClientConfiguration::default()
}

pub(super) fn update(participants: Vec<proto::ParticipantInfo>) -> signal_response::Message {
    signal_response::Message::Update(proto::ParticipantUpdate { participants })
}

pub(super) fn permission_from(grant: &VideoGrant) -> proto::ParticipantPermission {
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
