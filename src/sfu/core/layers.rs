//! Layer allocation: which simulcast layer each video subscription forwards, from what the
//! subscriber asked for (UpdateTrackSettings) and which layers are live; the stream state
//! each subscriber is told (`StreamStateUpdate`); and dynacast: which layers each publisher
//! is asked to send at all (`SubscribedQualityUpdate`), the highest any enabled subscription
//! wants, none when nobody watches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_response;
use str0m::media::Rid;

use super::bandwidth::Candidate;
use super::{ParticipantKey, Sfu};
use crate::sfu::forward::Layer;

/// A layer without packets for this long is considered off (the publisher may have paused).
const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);
/// A simulcast layer silent this long while another layer of its track still sends is
/// considered off sooner: the publisher is there and dropped this layer, so its subscribers
/// move down now instead of seeing a frozen picture for [`LAYER_TIMEOUT`]. Longer than the
/// frame interval of anything down to 2 fps.
const LAYER_STOPPED: Duration = Duration::from_millis(500);
/// A publisher is asked for more layers at once, for fewer only after they went unwatched
/// this long (a subscriber resizing a tile back and forth does not toggle encoders).
const DYNACAST_LOWER_AFTER: Duration = Duration::from_secs(3);

impl Sfu {
    /// Simulcast layer choice per subscription: the best live layer not above the wanted one,
    /// else the lowest live one. Subscribers are told when a subscription pauses (they
    /// disabled it, or its publisher stopped sending every layer) or resumes.
    pub(super) fn allocate_layers(&mut self, now: Instant) {
        // Per track: which layers are live, whether any ever was, muted, a screen share.
        let mut layers: HashMap<String, ([bool; 3], bool, bool, bool)> = HashMap::new();
        let mut sids: HashMap<ParticipantKey, String> = HashMap::new();
        for p in self.participants.values() {
            sids.insert(p.key, p.sid.clone());
            for t in &p.tracks {
                let live = live_layers(t.layer_seen, now);
                let ever = t.layer_seen.iter().any(Option::is_some);
                let screen = t.info.source == proto::TrackSource::ScreenShare as i32;
                layers.insert(t.info.sid.clone(), (live, ever, t.info.muted, screen));
            }
        }
        let mut states: Vec<(ParticipantKey, proto::StreamStateInfo)> = Vec::new();
        for p in self.participants.values_mut() {
            // The downlink's evidence of congestion caps its video layers.
            let candidates: Vec<Candidate<'_>> = p
                .subs
                .iter()
                .filter(|s| s.video && !s.disabled)
                .filter_map(|s| {
                    let (live, _, _, screen_share) = layers.get(&s.track_sid)?;
                    let capped = s.wanted.min(p.downlink.cap(&s.track_sid).unwrap_or(2));
                    Some(Candidate {
                        track_sid: &s.track_sid,
                        layer: choose_layer(*live, capped)?,
                        uncapped: choose_layer(*live, s.wanted)?,
                        screen_share: *screen_share,
                    })
                })
                .collect();
            p.downlink.allocate(now, &candidates);
            drop(candidates);
            for sub in p.subs.iter_mut() {
                let Some((live, ever, muted, _)) = layers.get(&sub.track_sid) else {
                    continue;
                };
                let target = if sub.video {
                    let cap = p.downlink.cap(&sub.track_sid).unwrap_or(2);
                    choose_layer(*live, sub.wanted.min(cap))
                } else {
                    Some(0)
                };
                if let Some(target) = target
                    && sub.video
                {
                    if target != sub.forwarder.target() {
                        sub.forwarder.set_target(target);
                    }
                    // A subscriber on a layer that stopped restarts on any live one at once.
                    if let Some(current) = sub.forwarder.current()
                        && current != target
                        && !live[current as usize % 3]
                    {
                        sub.forwarder.current_lost();
                    }
                }
                // A track that never sent yet, or is muted, keeps its state: clients show
                // those on their own.
                let paused = if sub.disabled {
                    true
                } else if target.is_none() && (!*ever || *muted) {
                    sub.paused
                } else {
                    target.is_none()
                };
                if paused != sub.paused {
                    sub.paused = paused;
                    let state = if paused {
                        proto::StreamState::Paused
                    } else {
                        proto::StreamState::Active
                    };
                    states.push((
                        p.key,
                        proto::StreamStateInfo {
                            participant_sid: sids.get(&sub.publisher).cloned().unwrap_or_default(),
                            track_sid: sub.track_sid.clone(),
                            state: state as i32,
                        },
                    ));
                }
            }
        }
        let mut by_subscriber: HashMap<ParticipantKey, Vec<proto::StreamStateInfo>> =
            HashMap::new();
        for (key, info) in states {
            by_subscriber.entry(key).or_default().push(info);
        }
        for (key, stream_states) in by_subscriber {
            self.signal(
                key,
                signal_response::Message::StreamStateUpdate(proto::StreamStateUpdate {
                    stream_states,
                }),
            );
        }
    }

    /// Dynacast: asks each video publisher for the layers someone watches, no more.
    pub(super) fn update_dynacast(&mut self, now: Instant) {
        let mut watched: HashMap<String, Option<Layer>> = HashMap::new();
        for p in self.participants.values() {
            for sub in p.subs.iter().filter(|s| s.video && !s.disabled) {
                let entry = watched.entry(sub.track_sid.clone()).or_default();
                *entry = (*entry).max(Some(sub.wanted.min(2)));
            }
        }
        let mut updates: Vec<(ParticipantKey, proto::SubscribedQualityUpdate)> = Vec::new();
        for p in self.participants.values_mut() {
            for t in p.tracks.iter_mut().filter(|t| t.video && t.mid.is_some()) {
                let want = watched.get(&t.info.sid).copied().flatten();
                let apply = if want > t.dynacast {
                    true
                } else if want < t.dynacast {
                    let since = *t.dynacast_lower_since.get_or_insert(now);
                    now.saturating_duration_since(since) >= DYNACAST_LOWER_AFTER
                } else {
                    t.dynacast_lower_since = None;
                    false
                };
                if !apply {
                    continue;
                }
                t.dynacast = want;
                t.dynacast_lower_since = None;
                let qualities: Vec<proto::SubscribedQuality> = [
                    proto::VideoQuality::Low,
                    proto::VideoQuality::Medium,
                    proto::VideoQuality::High,
                ]
                .into_iter()
                .map(|q| proto::SubscribedQuality {
                    quality: q as i32,
                    enabled: want.is_some_and(|w| q as i32 <= i32::from(w)),
                })
                .collect();
                // livekit-client reads the per-codec list (codec as it names it: "vp8"); older
                // clients the flat one.
                let codec = t
                    .info
                    .mime_type
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                updates.push((
                    p.key,
                    proto::SubscribedQualityUpdate {
                        track_sid: t.info.sid.clone(),
                        subscribed_qualities: qualities.clone(),
                        subscribed_codecs: vec![proto::SubscribedCodec { codec, qualities }],
                    },
                ));
            }
        }
        for (key, update) in updates {
            self.signal(
                key,
                signal_response::Message::SubscribedQualityUpdate(update),
            );
        }
    }

    pub(super) fn handle_track_settings(
        &mut self,
        key: ParticipantKey,
        settings: proto::UpdateTrackSettings,
    ) {
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
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        for (sid, layer) in wanted_by_sid {
            for sub in p.subs.iter_mut().filter(|s| s.track_sid == sid) {
                sub.disabled = settings.disabled;
                sub.wanted = layer;
            }
        }
    }
}

/// `q`/`h`/`f` → 0/1/2; a single-stream track is layer 0... unless it is the only one, which
/// [`choose_layer`] handles by picking whatever is live.
pub(super) fn layer_of(rid: Option<Rid>) -> Layer {
    match rid.as_deref() {
        Some("q") => 0,
        Some("h") => 1,
        Some("f") => 2,
        Some(_) => 0,
        None => 0,
    }
}

/// Which layers of a track are live: each heard from within [`LAYER_TIMEOUT`], and not
/// [`LAYER_STOPPED`] behind the track's newest packet.
pub(super) fn live_layers(seen: [Option<Instant>; 3], now: Instant) -> [bool; 3] {
    let newest = seen.iter().flatten().max().copied();
    seen.map(|s| {
        s.zip(newest).is_some_and(|(s, newest)| {
            now.saturating_duration_since(s) < LAYER_TIMEOUT
                && newest.saturating_duration_since(s) < LAYER_STOPPED
        })
    })
}

/// The best live layer not above `wanted`, else the lowest live one.
pub(super) fn choose_layer(live: [bool; 3], wanted: Layer) -> Option<Layer> {
    (0..=wanted.min(2))
        .rev()
        .find(|l| live[*l as usize])
        .or_else(|| (0..3).find(|l| live[*l as usize]))
}

/// The layer for a subscriber's requested size: the smallest layer at least as big, else the
/// biggest; an explicit quality when no size is given.
pub(super) fn wanted_layer(
    track: &proto::TrackInfo,
    settings: &proto::UpdateTrackSettings,
) -> Layer {
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
