//! Media forwarding: a publisher's RTP to every subscription of the track (layer choice,
//! seq/timestamp rewriting, payload type mapping) and keyframe requests back to the publisher.

use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, Mid, Rid};
use str0m::rtp::{RtpPacket, RtpWrite};

use super::layers::layer_of;
use super::media::Pc;
use super::{ParticipantKey, Sfu, guard};
use crate::sfu::forward::{Forwarder, Layer, Verdict};
use crate::sfu::keyframe;

/// At most one keyframe request per published layer in this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

pub(super) struct Subscription {
    pub(super) track_sid: String,
    pub(super) publisher: ParticipantKey,
    pub(super) mid: Mid,
    pub(super) video: bool,
    pub(super) forwarder: Forwarder,
    pub(super) wanted: Layer,
    pub(super) disabled: bool,
    /// The stream state last told to the subscriber (`StreamStateUpdate`): paused when it
    /// disabled the track or the publisher stopped sending every layer.
    pub(super) paused: bool,
    /// Publisher payload type → ours, learned on first use.
    pub(super) pt_map: Vec<(u8, u8)>,
}

/// What the forwarding path keeps between packets so that it allocates nothing per packet.
#[derive(Default)]
pub(super) struct Scratch {
    /// The track id of the packet being forwarded (subscriptions name their track by it).
    track_sid: String,
    /// The subscribers written to for the packet being forwarded.
    written: Vec<ParticipantKey>,
}

impl Sfu {
    /// Writes one of `key`'s packets to every subscription of its track. Nothing is allocated
    /// or copied per packet or subscriber: the payload is str0m's shared buffer, the room's
    /// member list is read in place, payload types come from each subscription's map (learned
    /// once) and the publisher's codec from the track's last one, and the rest lives in
    /// [`Scratch`].
    pub(super) fn forward_rtp(&mut self, now: Instant, key: ParticipantKey, packet: RtpPacket) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let payload_bytes = packet.payload.len() as u64;
        self.counters.packets_received.inc();
        self.counters.bytes_received.add(payload_bytes);
        let ssrc = packet.header.ssrc;
        let Some((mid, rid)) = p
            .media
            .uplink_mut()
            .direct_api()
            .stream_rx(&ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        let Some(index) = p.tracks.iter().position(|t| t.mid == Some(mid)) else {
            return;
        };
        let pt = *packet.header.payload_type;
        let last = p.tracks[index].last_params;
        let Some(params) = last.filter(|params| *params.pt() == pt).or_else(|| {
            let known = p.media.uplink().codec_config().params();
            known.iter().find(|params| *params.pt() == pt).copied()
        }) else {
            return;
        };
        let track = &mut p.tracks[index];
        track.last_params = Some(params);
        let layer = layer_of(rid);
        track.layer_seen[layer as usize] = Some(now);
        track.layer_rid[layer as usize] = rid;
        let video = track.video;
        if let Some(level) = packet.header.ext_vals.audio_level.filter(|_| !video) {
            track.meter.observe(level);
        }
        let keyframe = video && keyframe::is_keyframe(track.codec, &packet.payload);
        let scratch = &mut self.scratch;
        scratch.track_sid.clear();
        scratch.track_sid.push_str(&track.info.sid);
        scratch.written.clear();
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let mut wants_keyframe: Option<Layer> = None;
        let mut ext = packet.header.ext_vals.clone();
        ext.mid = None;
        ext.rid = None;
        ext.rid_repair = None;
        ext.transport_cc = None;
        for other in room.members.iter().filter(|c| **c != key) {
            let Some(s) = self.participants.get_mut(other) else {
                continue;
            };
            let Some(sub) = s
                .subs
                .iter_mut()
                .find(|sub| sub.publisher == key && sub.track_sid == scratch.track_sid)
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
                    wants_keyframe = Some(layer);
                    continue;
                }
                Verdict::Drop => continue,
            };
            let out_pt = match sub.pt_map.iter().find(|(from, _)| *from == pt) {
                Some((_, to)) => *to,
                None => {
                    let Some(ours) = s.media.downlink().codec_config().match_params(params) else {
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
                let mut api = s.media.downlink_mut().direct_api();
                match api.stream_tx_by_mid(mid, None) {
                    Some(stream) => {
                        stream.write_rtp(write);
                        true
                    }
                    None => false,
                }
            });
            match written {
                Some(true) => scratch.written.push(*other),
                Some(false) => {}
                None => {
                    tracing::warn!(identity = s.identity, "panic while writing RTP; dropping");
                    s.failed = true;
                }
            }
        }
        let written = std::mem::take(&mut self.scratch.written);
        self.counters.packets_forwarded.add(written.len() as u64);
        self.counters
            .bytes_forwarded
            .add(payload_bytes * written.len() as u64);
        for other in &written {
            self.mark_written_downlink(*other);
        }
        self.scratch.written = written;
        if let Some(layer) = wants_keyframe {
            let track_sid = std::mem::take(&mut self.scratch.track_sid);
            self.request_keyframe(now, key, &track_sid, layer, KeyframeRequestKind::Pli);
            self.scratch.track_sid = track_sid;
        }
    }

    pub(super) fn forward_keyframe_request(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let Some(s) = self.participants.get(&key) else {
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
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: ParticipantKey,
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
            if let Some(stream) = p.media.uplink_mut().direct_api().stream_rx_by_mid(mid, rid) {
                stream.request_keyframe(kind);
            }
        });
        if requested.is_none() {
            return self.fail(publisher, "panic while requesting a keyframe");
        }
        self.counters.keyframe_requests.inc();
        let uplink = p.media.uplink_pc();
        self.mark_written(publisher, uplink);
    }

    /// One stream's statistics from str0m (totals since the stream began): the growth of its
    /// NACKs and lost packets goes to the SFU's counters. On the downlink (a stream we send)
    /// the NACKs and losses are the subscriber's, on the uplink the NACKs are ours.
    pub(super) fn count_stream_stats(
        &mut self,
        key: ParticipantKey,
        pc: Pc,
        downlink: bool,
        (mid, rid): (Mid, Option<Rid>),
        nacks: u64,
        lost: u64,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let last = p.reported.insert((pc, downlink, mid, rid), (nacks, lost));
        let (last_nacks, last_lost) = last.unwrap_or((0, 0));
        let (new_nacks, new_lost) = (
            nacks.saturating_sub(last_nacks),
            lost.saturating_sub(last_lost),
        );
        if downlink {
            self.counters.nacks_from_subscribers.add(new_nacks);
            self.counters.packets_lost_to_subscribers.add(new_lost);
        } else {
            self.counters.nacks_to_publishers.add(new_nacks);
        }
    }
}
