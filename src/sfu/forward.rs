//! One subscriber's view of one published track: which layer it receives and how that layer's
//! RTP sequence numbers and timestamps are rewritten so that the subscriber always sees one
//! continuous stream, across simulcast layer switches.
//!
//! Pure and clock-free; the core decides the target layer, this decides packet by packet.

/// Layer index: 0 for a single-stream track, or the simulcast quality (0 = `q`, 1 = `h`, 2 = `f`).
pub type Layer = u8;

#[derive(Debug, Default)]
pub struct Forwarder {
    current: Option<Layer>,
    target: Layer,
    seq_offset: i64,
    ts_offset: u32,
    last_seq: Option<u64>,
    last_ts: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send with these rewritten numbers.
    Forward { seq: u64, ts: u32 },
    /// Not for this subscriber (another layer, or too old).
    Drop,
    /// A layer the subscriber could move to has packets but it cannot start on them: ask for a
    /// keyframe on that layer.
    NeedKeyframe,
}

/// Timestamp step inserted at a switch: about one video frame or one audio packet.
const VIDEO_STEP: u32 = 3000;
const AUDIO_STEP: u32 = 960;

impl Forwarder {
    pub fn new(target: Layer) -> Self {
        Forwarder {
            target,
            ..Default::default()
        }
    }

    pub fn target(&self) -> Layer {
        self.target
    }

    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The layer the subscriber should move to. Down: at that layer's next keyframe, the old
    /// layer flowing until then. Up: at the next keyframe of any layer between the current one
    /// and the target, so the picture improves as soon as it can.
    pub fn set_target(&mut self, layer: Layer) {
        self.target = layer;
    }

    /// The current layer stopped (its publisher no longer sends it): the subscriber restarts
    /// on the next keyframe of any layer up to the target, numbers continuing where they were.
    pub fn current_lost(&mut self) {
        self.current = None;
    }

    /// Decides about one incoming packet. `seq` is the publisher's extended sequence number.
    /// Video may only start or switch on a keyframe; audio starts anywhere. A subscriber that
    /// receives nothing yet starts on the first keyframe of any layer up to the target (the
    /// best one available) and climbs from there.
    pub fn handle(
        &mut self,
        layer: Layer,
        seq: u64,
        ts: u32,
        keyframe: bool,
        video: bool,
    ) -> Verdict {
        if Some(layer) == self.current {
            // The current layer flows until a keyframe elsewhere moves the subscriber.
            return self.rewrite(seq, ts);
        }
        let may_switch = match self.current {
            None => layer <= self.target,
            Some(current) if current < self.target => current < layer && layer <= self.target,
            Some(_) => layer == self.target,
        };
        if !may_switch {
            return Verdict::Drop;
        }
        if video && !keyframe {
            // Starting: any layer's keyframe will do, so ask each. Climbing: only the target's.
            return if self.current.is_none() || layer == self.target {
                Verdict::NeedKeyframe
            } else {
                Verdict::Drop
            };
        }
        self.switch_to(layer, seq, ts, video);
        self.rewrite(seq, ts)
    }

    fn switch_to(&mut self, layer: Layer, seq: u64, ts: u32, video: bool) {
        self.current = Some(layer);
        match self.last_seq {
            Some(last) => {
                self.seq_offset = (last as i64 + 1) - seq as i64;
                let step = if video { VIDEO_STEP } else { AUDIO_STEP };
                self.ts_offset = self.last_ts.wrapping_add(step).wrapping_sub(ts);
            }
            None => {
                // Start below the first rollover so the receiver's SRTP index starts at zero.
                self.seq_offset = -((seq & !0xffff) as i64);
                self.ts_offset = 0;
            }
        }
    }

    fn rewrite(&mut self, seq: u64, ts: u32) -> Verdict {
        let out = seq as i64 + self.seq_offset;
        if out < 0 {
            return Verdict::Drop;
        }
        let out = out as u64;
        let ts = ts.wrapping_add(self.ts_offset);
        if self.last_seq.is_none_or(|last| out > last) {
            self.last_seq = Some(out);
            self.last_ts = ts;
        }
        Verdict::Forward { seq: out, ts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_passes_through_from_the_first_packet() {
        let mut f = Forwarder::new(0);
        assert_eq!(
            f.handle(0, 70_000, 500, false, false),
            Verdict::Forward {
                seq: 70_000 & 0xffff,
                ts: 500
            }
        );
        assert_eq!(
            f.handle(0, 70_001, 1460, false, false),
            Verdict::Forward {
                seq: (70_000 & 0xffff) + 1,
                ts: 1460
            }
        );
    }

    #[test]
    fn video_starts_on_the_first_keyframe_of_any_layer_then_climbs_to_the_target() {
        let mut f = Forwarder::new(2);
        assert_eq!(f.handle(2, 100, 9000, false, true), Verdict::NeedKeyframe);
        assert_eq!(f.handle(0, 4999, 0, false, true), Verdict::NeedKeyframe);
        // The low layer's keyframe comes first: the subscriber starts there at once.
        assert_eq!(
            f.handle(0, 5000, 1, true, true),
            Verdict::Forward { seq: 5000, ts: 1 }
        );
        assert_eq!(f.current(), Some(0));
        // While climbing, only the target's keyframe is asked for; the middle layer's is taken
        // if it comes.
        assert_eq!(f.handle(2, 101, 12000, false, true), Verdict::NeedKeyframe);
        assert_eq!(f.handle(1, 700, 80, false, true), Verdict::Drop);
        assert_eq!(
            f.handle(1, 701, 3080, true, true),
            Verdict::Forward {
                seq: 5001,
                ts: 3001
            }
        );
        assert_eq!(f.handle(0, 5001, 3001, false, true), Verdict::Drop);
        assert_eq!(
            f.handle(2, 102, 15000, true, true),
            Verdict::Forward {
                seq: 5002,
                ts: 6001
            }
        );
        assert_eq!(f.handle(1, 702, 6080, true, true), Verdict::Drop);
        assert_eq!(f.current(), Some(2));
    }

    #[test]
    fn video_moves_down_at_the_lower_layers_keyframe_without_a_gap_in_numbers() {
        let mut f = Forwarder::new(2);
        assert_eq!(
            f.handle(2, 101, 12000, true, true),
            Verdict::Forward {
                seq: 101,
                ts: 12000
            }
        );
        f.set_target(0);
        // The old layer keeps flowing until the new one has a keyframe.
        assert_eq!(f.handle(0, 5001, 77, false, true), Verdict::NeedKeyframe);
        assert_eq!(f.handle(1, 900, 77, true, true), Verdict::Drop);
        assert_eq!(
            f.handle(2, 102, 15000, false, true),
            Verdict::Forward {
                seq: 102,
                ts: 15000
            }
        );
        // Keyframe on layer 0: continuous numbers from here.
        assert_eq!(
            f.handle(0, 5002, 80, true, true),
            Verdict::Forward {
                seq: 103,
                ts: 18000
            }
        );
        assert_eq!(f.handle(2, 103, 18000, false, true), Verdict::Drop);
        assert_eq!(
            f.handle(0, 5003, 3080, false, true),
            Verdict::Forward {
                seq: 104,
                ts: 21000
            }
        );
        assert_eq!(f.current(), Some(0));
    }

    #[test]
    fn a_lost_layer_restarts_on_any_keyframe_with_continuous_numbers() {
        let mut f = Forwarder::new(2);
        assert!(matches!(
            f.handle(2, 10, 0, true, true),
            Verdict::Forward { seq: 10, .. }
        ));
        f.set_target(1);
        f.current_lost();
        assert_eq!(f.handle(1, 400, 50, false, true), Verdict::NeedKeyframe);
        assert_eq!(
            f.handle(0, 90, 60, true, true),
            Verdict::Forward { seq: 11, ts: 3000 }
        );
    }

    #[test]
    fn late_packets_from_before_a_switch_are_dropped_not_wrapped() {
        let mut f = Forwarder::new(0);
        assert!(matches!(
            f.handle(0, 10, 0, true, true),
            Verdict::Forward { .. }
        ));
        f.set_target(1);
        assert!(matches!(
            f.handle(1, 50_000, 0, true, true),
            Verdict::Forward { seq: 11, .. }
        ));
        assert_eq!(f.handle(1, 49_000, 0, false, true), Verdict::Drop);
    }
}
