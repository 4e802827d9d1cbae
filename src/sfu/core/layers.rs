//! Layer allocation: which simulcast layer each video subscription forwards, from what the
//! subscriber asked for (UpdateTrackSettings) and which layers are live.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use str0m::media::Rid;

use super::{ParticipantKey, Sfu};
use crate::sfu::forward::Layer;

/// A simulcast layer without packets for this long is considered off.
const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);

impl Sfu {
    /// Simulcast layer choice per subscription: the best live layer not above the wanted one,
    /// else the lowest live one.
    pub(super) fn allocate_layers(&mut self, now: Instant) {
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
