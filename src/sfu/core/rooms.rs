//! Rooms: the registry's rooms with their members, and the room-service calls on them.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response;

use super::session::{Link, Participant};
use super::{Output, ParticipantKey, Sfu};
use crate::rooms::{CreateOutcome, RoomError, RoomOptions};
use crate::sfu::ids;

pub(super) struct RoomState {
    pub(super) sid: String,
    pub(super) options: RoomOptions,
    pub(super) created_ms: i64,
    pub(super) metadata: String,
    pub(super) members: Vec<ParticipantKey>,
    /// Who is speaking now, and how loud (0..1), as last told to the room.
    pub(super) speakers: HashMap<ParticipantKey, f32>,
}

impl Sfu {
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
                speakers: HashMap::new(),
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
        for key in room.members.clone() {
            self.remove_participant(now, key, proto::DisconnectReason::RoomDeleted, true);
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
        let Some(key) = self.find(room, identity) else {
            return false;
        };
        self.remove_participant(now, key, proto::DisconnectReason::ParticipantRemoved, true);
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
        let key = self.find(room, identity)?;
        let info = self.set_muted(key, track_sid, muted)?;
        let mute = signal_response::Message::Mute(proto::MuteTrackRequest {
            sid: track_sid.to_owned(),
            muted,
        });
        self.signal(key, mute);
        self.drain(now);
        Some(info)
    }

    pub(super) fn find(&self, room: &str, identity: &str) -> Option<ParticipantKey> {
        self.rooms.get(room)?.members.iter().copied().find(|c| {
            self.participants
                .get(c)
                .is_some_and(|p| p.identity == identity)
        })
    }

    /// The participants in a room (none if it does not exist).
    pub(super) fn members(&self, room: &str) -> Vec<ParticipantKey> {
        self.rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    pub(super) fn forget_expired_rooms(&mut self) {
        let registry = &self.registry;
        let participants = &self.participants;
        self.rooms.retain(|name, room| {
            registry.contains(name) || room.members.iter().any(|c| participants.contains_key(c))
        });
    }

    pub(super) fn send_to_room(
        &mut self,
        room: &str,
        except: Option<ParticipantKey>,
        message: signal_response::Message,
    ) {
        let Some(room) = self.rooms.get(room) else {
            return;
        };
        for key in &room.members {
            if Some(*key) != except
                && let Some(Link::Attached(conn)) = self.participants.get(key).map(|p| p.link)
            {
                self.outputs
                    .push_back(Output::Signal(conn, Box::new(message.clone())));
            }
        }
    }
}

/// The codecs clients may publish: what we can forward and detect keyframes in.
pub(super) fn enabled_codecs() -> Vec<proto::Codec> {
    ["audio/opus", "audio/red", "video/VP8", "video/H264"]
        .iter()
        .map(|mime| proto::Codec {
            mime: (*mime).into(),
            fmtp_line: String::new(),
        })
        .collect()
}
