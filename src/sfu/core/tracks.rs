//! Published tracks: AddTrack (answered at once), binding a negotiated m-line to its track
//! and announcing it, mute, and unpublishing when the client stops sending on the m-line.

use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Rid};

use super::speakers::LevelMeter;
use super::{ParticipantKey, Sfu};
use crate::sfu::forward::Layer;
use crate::sfu::ids;
use crate::sfu::keyframe::VideoCodec;

/// Caps that keep one client from growing server state without bound.
const MAX_TRACKS_PER_PARTICIPANT: usize = 32;

pub(super) struct Track {
    pub(super) info: proto::TrackInfo,
    pub(super) cid: String,
    /// The publisher connection's m-line, once the client negotiated it.
    pub(super) mid: Option<Mid>,
    pub(super) video: bool,
    pub(super) codec: VideoCodec,
    pub(super) layer_seen: [Option<Instant>; 3],
    pub(super) layer_rid: [Option<Rid>; 3],
    pub(super) last_keyframe_request: [Option<Instant>; 3],
    /// Audio: the loud packets of the current speaker window.
    pub(super) meter: LevelMeter,
    /// Video: the highest layer the publisher was told to send (dynacast; `None`: none), and
    /// since when fewer would do.
    pub(super) dynacast: Option<Layer>,
    pub(super) dynacast_lower_since: Option<Instant>,
    /// The codec parameters of the payload type its last packet had, so forwarding does not
    /// scan the publisher's codec list for every packet.
    pub(super) last_params: Option<PayloadParams>,
}

impl Sfu {
    pub(super) fn handle_add_track(
        &mut self,
        key: ParticipantKey,
        request: proto::AddTrackRequest,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
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
            self.signal(key, message);
            return;
        }
        if let Some(existing) = p.tracks.iter().find(|t| t.cid == request.cid) {
            let message = signal_response::Message::TrackPublished(proto::TrackPublishedResponse {
                cid: request.cid.clone(),
                track: Some(existing.info.clone()),
            });
            self.signal(key, message);
            return;
        }
        if p.tracks.len() >= MAX_TRACKS_PER_PARTICIPANT {
            let message = refuse(
                proto::request_response::Reason::LimitExceeded,
                "too many tracks",
            );
            self.signal(key, message);
            return;
        }
        let video = request.r#type == proto::TrackType::Video as i32;
        if !video && request.r#type != proto::TrackType::Audio as i32 {
            let message = refuse(
                proto::request_response::Reason::UnsupportedType,
                "unsupported track type",
            );
            self.signal(key, message);
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
            meter: LevelMeter::default(),
            // Clients start with every layer on.
            dynacast: Some(2),
            dynacast_lower_since: None,
            last_params: None,
        });
        let message = signal_response::Message::TrackPublished(proto::TrackPublishedResponse {
            cid: request.cid,
            track: Some(info),
        });
        self.signal(key, message);
    }

    pub(super) fn set_muted(
        &mut self,
        key: ParticipantKey,
        track_sid: &str,
        muted: bool,
    ) -> Option<proto::TrackInfo> {
        let p = self.participants.get_mut(&key)?;
        let track = p.tracks.iter_mut().find(|t| t.info.sid == track_sid)?;
        track.info.muted = muted;
        let info = track.info.clone();
        self.broadcast_participant(key);
        Some(info)
    }

    pub(super) fn published_track(&self, track_sid: &str) -> Option<&Track> {
        self.participants
            .values()
            .flat_map(|p| p.tracks.iter())
            .find(|t| t.info.sid == track_sid)
    }

    /// The client's publisher connection negotiated a new m-line: bind it to the pending track
    /// (msid track id = the AddTrackRequest cid, else the first pending track of that kind),
    /// announce the track and subscribe everyone who auto-subscribes.
    pub(super) fn publish_media(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        mid: Mid,
        kind: MediaKind,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let msid_track = p
            .media
            .uplink()
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
        if p.tracks.iter().any(|t| t.mid == Some(mid)) {
            // Already bound (a renegotiation that left this m-line as it was).
            return;
        }
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
        self.broadcast_participant(key);
        let members = self.members(&room);
        for other in members.into_iter().filter(|c| *c != key) {
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
}

impl Sfu {
    /// The client stopped sending on `mid` (LiveKit clients unpublish by removing the sender and
    /// renegotiating): the track is gone from its snapshot, which tells everyone, and every
    /// subscription to it ends with its m-line. The participant stays.
    pub(super) fn unpublish_media(&mut self, now: Instant, key: ParticipantKey, mid: Mid) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(index) = p.tracks.iter().position(|t| t.mid == Some(mid)) else {
            return;
        };
        let track = p.tracks.remove(index);
        let sid = track.info.sid;
        let room = p.room.clone();
        tracing::info!(identity = p.identity, track = sid, %mid, "track unpublished");
        self.broadcast_participant(key);
        for other in self.members(&room).into_iter().filter(|c| *c != key) {
            let Some(o) = self.participants.get_mut(&other) else {
                continue;
            };
            o.negotiation.to_add.retain(|(_, s)| *s != sid);
            o.unsubscribe_where(|s| s.track_sid == sid);
            self.negotiate_subscriber(now, other);
        }
    }
}

pub(super) fn mime_for(video: bool, codec: &str) -> String {
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
