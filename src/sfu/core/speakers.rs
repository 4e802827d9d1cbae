//! Active speakers, from the audio level every published audio packet carries (RFC 6464
//! header extension, `ssrc-audio-level`), told to the room as `SpeakersChanged` deltas
//! (LiveKit's protocol > 2 form: only the speakers whose state or level changed).
//!
//! Every [`WINDOW`] each audio track's loud packets are counted: a participant starts
//! speaking when its loudest track had at least [`START_PACKETS`] loud packets in the window
//! and stops when it had fewer than [`STOP_PACKETS`] (hysteresis, so a breath does not make
//! the indicator flicker). Its level is the mean linear amplitude of those loud packets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_response;

use super::{ParticipantKey, Sfu};

/// How often speakers are evaluated.
pub(super) const WINDOW: Duration = Duration::from_millis(500);
/// A packet at or above this level (−dBov; 0 is full scale) is loud. Speech sits around
/// −20 to −35 dBov, room noise below −50.
const LOUD_DBOV: u8 = 40;
/// Loud packets in a window (of 25 at 20 ms per packet) to start and to keep speaking.
const START_PACKETS: u32 = 8;
const STOP_PACKETS: u32 = 3;
/// A level change smaller than this is not worth a message.
const LEVEL_STEP: f32 = 0.05;

/// One audio track's loud packets in the current window.
#[derive(Default)]
pub(super) struct LevelMeter {
    loud: u32,
    amplitude_sum: f32,
}

impl LevelMeter {
    /// One packet's audio level (`-dBov` as str0m gives it: 0 loudest, −127 silence).
    pub(super) fn observe(&mut self, audio_level: i8) {
        let dbov = audio_level.unsigned_abs().min(127);
        if dbov <= LOUD_DBOV {
            self.loud += 1;
            self.amplitude_sum += 10f32.powf(-f32::from(dbov) / 20.0);
        }
    }

    /// The window's loud packets and their mean amplitude (0..1); starts the next window.
    fn take(&mut self) -> (u32, f32) {
        let taken = std::mem::take(self);
        let level = if taken.loud == 0 {
            0.0
        } else {
            taken.amplitude_sum / taken.loud as f32
        };
        (taken.loud, level)
    }
}

impl Sfu {
    /// Evaluates every room's speakers at most once per [`WINDOW`] and tells each room what
    /// changed.
    pub(super) fn update_speakers(&mut self, now: Instant) {
        if now < self.next_speaker_update {
            return;
        }
        self.next_speaker_update = now + WINDOW;
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let mut heard: HashMap<ParticipantKey, (u32, f32)> = HashMap::new();
            for key in self.members(&room) {
                let Some(p) = self.participants.get_mut(&key) else {
                    continue;
                };
                let loudest = p
                    .tracks
                    .iter_mut()
                    .filter(|t| !t.video && t.mid.is_some())
                    .map(|t| {
                        let taken = t.meter.take();
                        if t.info.muted { (0, 0.0) } else { taken }
                    })
                    .max_by_key(|(loud, _)| *loud)
                    .unwrap_or((0, 0.0));
                if !p.permission.hidden {
                    heard.insert(key, loudest);
                }
            }
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            let mut changed = Vec::new();
            for (key, (loud, level)) in &heard {
                let was = state.speakers.get(key).copied();
                let speaking = match was {
                    Some(_) => *loud >= STOP_PACKETS,
                    None => *loud >= START_PACKETS,
                };
                match (was, speaking) {
                    (None, true) => {
                        state.speakers.insert(*key, *level);
                        changed.push((*key, *level, true));
                    }
                    (Some(old), true) if (old - level).abs() >= LEVEL_STEP => {
                        state.speakers.insert(*key, *level);
                        changed.push((*key, *level, true));
                    }
                    (Some(_), false) => {
                        state.speakers.remove(key);
                        changed.push((*key, 0.0, false));
                    }
                    _ => {}
                }
            }
            // Whoever left the room stops speaking with it (their leave tells clients).
            state.speakers.retain(|key, _| heard.contains_key(key));
            if changed.is_empty() {
                continue;
            }
            changed.sort_by(|a, b| b.1.total_cmp(&a.1));
            let speakers = changed
                .into_iter()
                .filter_map(|(key, level, active)| {
                    let sid = self.participants.get(&key)?.sid.clone();
                    Some(proto::SpeakerInfo { sid, level, active })
                })
                .collect();
            self.send_to_room(
                &room,
                None,
                signal_response::Message::SpeakersChanged(proto::SpeakersChanged { speakers }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loud_packets_count_and_quiet_ones_do_not() {
        let mut meter = LevelMeter::default();
        for level in [-20, -40, -41, -127, 0, i8::MIN] {
            meter.observe(level);
        }
        let (loud, level) = meter.take();
        assert_eq!(loud, 3, "-20, -40 and 0 dBov are loud");
        let want = (0.1 + 0.01 + 1.0) / 3.0;
        assert!((level - want).abs() < 1e-4, "{level} vs {want}");
        assert_eq!(meter.take(), (0, 0.0), "a new window starts empty");
    }
}
