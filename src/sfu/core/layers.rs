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

use str0m::bwe::Bitrate;

use super::{ParticipantKey, Sfu, guard};
use crate::sfu::forward::Layer;

/// A simulcast layer without packets for this long is considered off.
const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);
/// A publisher is asked for more layers at once, for fewer only after they went unwatched
/// this long (a subscriber resizing a tile back and forth does not toggle encoders).
const DYNACAST_LOWER_AFTER: Duration = Duration::from_secs(3);
/// How often layer bitrates are measured.
const RATE_INTERVAL: Duration = Duration::from_millis(500);
/// The share of a downlink estimate media may use (the rest absorbs retransmissions and
/// the estimate's own error).
const BUDGET_PERCENT: u64 = 90;
/// The least the estimator is asked to find, so it keeps probing for a first video layer.
const MIN_DESIRED_BPS: u64 = 300_000;

/// What the allocation needs to know about one published track.
struct TrackState {
    live: [bool; 3],
    ever: bool,
    muted: bool,
    /// Measured bitrate per layer (bit/s).
    rates: [u64; 3],
    /// 0 screen share, 1 a speaker's video, 2 the rest.
    priority: u8,
}

impl Sfu {
    /// Layer choice per subscription and what each subscriber is told about it.
    ///
    /// Every track's per-layer bitrate is measured from what arrives. Each subscriber's
    /// downlink estimate (TWCC) is spent audio first, then screen shares, then the video of
    /// who is speaking, then the rest: each video subscription gets the best live layer not
    /// above the one it wants that still fits, else its lowest live layer (a lower picture,
    /// never a frozen one). Without an estimate yet, every subscription gets what it wants.
    /// Subscribers are told when a subscription pauses (they disabled it, or its publisher
    /// stopped sending every layer) or resumes.
    pub(super) fn allocate_layers(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_rate_update);
        let measure = elapsed >= RATE_INTERVAL;
        if measure {
            self.last_rate_update = now;
        }
        let speaking: Vec<ParticipantKey> = self
            .rooms
            .values()
            .flat_map(|r| r.speakers.keys().copied())
            .collect();
        let mut tracks: HashMap<String, TrackState> = HashMap::new();
        let mut sids: HashMap<ParticipantKey, String> = HashMap::new();
        for p in self.participants.values_mut() {
            sids.insert(p.key, p.sid.clone());
            for t in p.tracks.iter_mut() {
                if measure {
                    for layer in 0..3 {
                        let bits = std::mem::take(&mut t.layer_bytes[layer]) * 8;
                        let rate = (bits as f64 / elapsed.as_secs_f64()) as u64;
                        let old = t.layer_bitrate[layer];
                        t.layer_bitrate[layer] = if old == 0 { rate } else { (old * 3 + rate) / 4 };
                    }
                }
                let live = t.layer_seen.map(|seen| {
                    seen.is_some_and(|s| now.saturating_duration_since(s) < LAYER_TIMEOUT)
                });
                let priority = if t.info.source == proto::TrackSource::ScreenShare as i32 {
                    0
                } else if speaking.contains(&p.key) {
                    1
                } else {
                    2
                };
                tracks.insert(
                    t.info.sid.clone(),
                    TrackState {
                        live,
                        ever: t.layer_seen.iter().any(Option::is_some),
                        muted: t.info.muted,
                        rates: t.layer_bitrate,
                        priority,
                    },
                );
            }
        }
        let mut states: Vec<(ParticipantKey, proto::StreamStateInfo)> = Vec::new();
        let mut estimator: Vec<(ParticipantKey, u64, u64)> = Vec::new();
        for p in self.participants.values_mut() {
            // Audio first: it is small and it is what a call cannot lose.
            let audio: u64 = p
                .subs
                .iter()
                .filter(|s| !s.video && !s.disabled)
                .filter_map(|s| tracks.get(&s.track_sid))
                .map(|t| t.rates[0])
                .sum();
            let mut remaining = p
                .downlink_estimate
                .map(|e| (e * BUDGET_PERCENT / 100).saturating_sub(audio));
            let mut order: Vec<usize> = (0..p.subs.len()).collect();
            order.sort_by_key(|i| {
                tracks
                    .get(&p.subs[*i].track_sid)
                    .map_or(u8::MAX, |t| t.priority)
            });
            let (mut allocated, mut desired) = (audio, audio);
            for i in order {
                let sub = &mut p.subs[i];
                let Some(track) = tracks.get(&sub.track_sid) else {
                    continue;
                };
                let target = if !sub.video {
                    Some(0)
                } else if sub.disabled {
                    None
                } else {
                    let wanted = choose_layer(track.live, sub.wanted);
                    let target = match remaining {
                        Some(budget) => fit_layer(track.live, wanted, track.rates, budget),
                        None => wanted,
                    };
                    if let Some(layer) = target {
                        let rate = track.rates[layer as usize];
                        remaining = remaining.map(|r| r.saturating_sub(rate));
                        allocated += rate;
                        if layer != sub.forwarder.target() {
                            sub.forwarder.set_target(layer);
                        }
                    }
                    if let Some(layer) = wanted {
                        desired += track.rates[layer as usize];
                    }
                    target
                };
                // A track that never sent yet, or is muted, keeps its state: clients show
                // those on their own.
                let paused = if sub.disabled {
                    true
                } else if target.is_none() && (!track.ever || track.muted) {
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
            estimator.push((p.key, allocated, desired));
        }
        // The estimator probes towards what the subscriptions want, so a subscriber held
        // on a low layer moves up when its link allows.
        for (key, allocated, desired) in estimator {
            let Some(p) = self.participants.get_mut(&key) else {
                continue;
            };
            let desired = (desired * 5 / 4).max(MIN_DESIRED_BPS);
            if desired.abs_diff(p.bwe_desired) * 10 > p.bwe_desired {
                p.bwe_desired = desired;
                let rtc = p.media.downlink_mut();
                let minimum = Bitrate::bps(allocated.min(desired));
                if guard(|| rtc.bwe().set_bitrate(minimum, Bitrate::bps(desired))).is_none() {
                    self.fail(key, "panic while setting the bandwidth target");
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

/// The best live layer not above `wanted`, else the lowest live one.
pub(super) fn choose_layer(live: [bool; 3], wanted: Layer) -> Option<Layer> {
    (0..=wanted.min(2))
        .rev()
        .find(|l| live[*l as usize])
        .or_else(|| (0..3).find(|l| live[*l as usize]))
}

/// The best live layer from `wanted` down whose measured rate fits `budget`, else the lowest
/// live one: a subscriber behind a thin link gets a small picture, not a frozen one.
pub(super) fn fit_layer(
    live: [bool; 3],
    wanted: Option<Layer>,
    rates: [u64; 3],
    budget: u64,
) -> Option<Layer> {
    let wanted = wanted?;
    (0..=wanted)
        .rev()
        .find(|l| live[*l as usize] && rates[*l as usize] <= budget)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_layer_that_fits_else_the_lowest_live_one() {
        let rates = [100, 400, 1500];
        let all = [true; 3];
        assert_eq!(fit_layer(all, Some(2), rates, 2000), Some(2));
        assert_eq!(fit_layer(all, Some(2), rates, 1499), Some(1));
        assert_eq!(
            fit_layer(all, Some(1), rates, 5000),
            Some(1),
            "never above the wanted one"
        );
        assert_eq!(
            fit_layer(all, Some(2), rates, 50),
            Some(0),
            "too thin: the lowest"
        );
        assert_eq!(fit_layer([false, true, true], Some(2), rates, 50), Some(1));
        assert_eq!(
            fit_layer([true, false, true], Some(2), rates, 1000),
            Some(0)
        );
        assert_eq!(fit_layer(all, None, rates, 5000), None, "nothing live");
    }
}
