//! Bandwidth-driven layer caps, from evidence of congestion on a subscriber's downlink.
//!
//! A bandwidth estimate of what we send follows what we send (an earlier attempt spent str0m's
//! TWCC estimate and ratcheted subscribers down to the lowest layer), so the caps move only on
//! what the subscriber reports: the loss fraction of its RTCP receiver reports, weighted by
//! packets, over each second. Over [`CONGESTED`] one video subscription steps down a layer
//! (the least important first: cameras before screen shares, the biggest layer first); after
//! [`SETTLE`] for the switch to take effect the evidence counts again. Up is a probe: when the
//! link was clean (under [`CLEAN`]) and the back-off has passed, one capped subscription steps
//! up for a [`PROBE_TRIAL`]; congestion during it reverts the step and doubles the back-off
//! (up to [`MAX_BACKOFF`]), a clean trial keeps it. Loss between the two thresholds (a lossy
//! but not saturated link that NACK/RTX repairs) holds. Audio is never capped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sfu::forward::Layer;

/// A reported loss fraction above this is congestion: step down.
const CONGESTED: f32 = 0.10;
/// Under this the link is clean: a step up may be tried.
const CLEAN: f32 = 0.02;
/// How often the loss reported since the last look is judged.
const PERIOD: Duration = Duration::from_secs(1);
/// Fewer packets than this in a period say nothing.
const MIN_PACKETS: u64 = 10;
/// After a step, time for the layer switch (a keyframe) and the reports to catch up: a
/// receiver reports about once a second on the interval since its last report, and str0m
/// hands the reports on once a second, so evidence lags what is sent by up to 3 s.
const SETTLE: Duration = Duration::from_secs(4);
/// How long a step up must stay clean to be kept: two looks after it settled.
const PROBE_TRIAL: Duration = Duration::from_secs(6);
/// The first wait before a step up, and after a kept one.
const BASE_BACKOFF: Duration = Duration::from_secs(4);
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// One subscriber's downlink: the loss it reported and the caps it put on its video.
#[derive(Debug, Default)]
pub(super) struct Downlink {
    /// Per downlink stream, the loss fraction of the last report and packets sent since.
    lost: f64,
    packets: u64,
    last_packets: HashMap<(str0m::media::Mid, Option<str0m::media::Rid>), u64>,
    next_look: Option<Instant>,
    settled_at: Option<Instant>,
    next_probe: Option<Instant>,
    backoff: Duration,
    /// A step up on trial: since when, which track, its cap before.
    probe: Option<(Instant, String, Option<Layer>)>,
    /// Per track sid, the highest layer the link carries (absent: no cap).
    caps: HashMap<String, Layer>,
}

/// What one look at the evidence decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Hold,
    /// Congested: lower one subscription.
    Down,
    /// Clean long enough: raise one subscription on trial.
    Up,
}

/// A video subscription as the allocation sees it.
pub(super) struct Candidate<'a> {
    pub(super) track_sid: &'a str,
    /// The layer it forwards now (or is moving to).
    pub(super) layer: Layer,
    /// The layer it would get without a cap.
    pub(super) uncapped: Layer,
    pub(super) screen_share: bool,
}

impl Downlink {
    /// One stream's egress statistics (str0m's, every second): the loss fraction the subscriber
    /// reported and the packets sent in total.
    pub(super) fn observe(
        &mut self,
        stream: (str0m::media::Mid, Option<str0m::media::Rid>),
        loss: Option<f32>,
        packets: u64,
    ) {
        let last = self.last_packets.insert(stream, packets).unwrap_or(packets);
        let sent = packets.saturating_sub(last);
        if let Some(loss) = loss.filter(|l| l.is_finite()) {
            self.lost += f64::from(loss.clamp(0.0, 1.0)) * sent as f64;
            self.packets += sent;
        }
    }

    /// The cap on one track's layer, if the link put one.
    pub(super) fn cap(&self, track_sid: &str) -> Option<Layer> {
        self.caps.get(track_sid).copied()
    }

    /// Judges the evidence gathered since the last look and adjusts the caps of `subs`.
    pub(super) fn allocate(&mut self, now: Instant, subs: &[Candidate<'_>]) {
        match self.look(now, subs.iter().any(|s| s.layer < s.uncapped)) {
            Step::Hold => {}
            Step::Down => {
                tracing::debug!("downlink congested: a video subscription steps down");
                self.step_down(subs)
            }
            Step::Up => {
                tracing::debug!("downlink clean: a video subscription steps up on trial");
                self.step_up(now, subs)
            }
        }
        // Caps of tracks no longer subscribed go.
        self.caps
            .retain(|sid, _| subs.iter().any(|s| s.track_sid == sid));
    }

    fn look(&mut self, now: Instant, can_rise: bool) -> Step {
        if self.next_look.is_some_and(|at| now < at) {
            return Step::Hold;
        }
        self.next_look = Some(now + PERIOD);
        let (lost, packets) = (
            std::mem::take(&mut self.lost),
            std::mem::take(&mut self.packets),
        );
        if packets < MIN_PACKETS {
            return Step::Hold;
        }
        let loss = (lost / packets as f64) as f32;
        if self.backoff.is_zero() {
            self.backoff = BASE_BACKOFF;
        }
        let settled = self.settled_at.is_none_or(|at| now >= at);
        if let Some((since, sid, before)) = self.probe.take() {
            if loss > CONGESTED {
                // The step up did not fit: back, and wait longer before the next. (Evidence
                // from before the step was clean, so congestion now is the step's.)
                tracing::debug!(loss, "downlink congested on trial: the step up is undone");
                self.restore(sid, before);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.settled_at = Some(now + SETTLE);
                self.next_probe = Some(now + self.backoff);
                return Step::Hold;
            }
            if now.saturating_duration_since(since) < PROBE_TRIAL || !settled {
                self.probe = Some((since, sid, before));
                return Step::Hold;
            }
            self.backoff = BASE_BACKOFF;
            self.next_probe = Some(now + self.backoff);
        }
        if !settled {
            return Step::Hold;
        }
        if loss > CONGESTED {
            self.settled_at = Some(now + SETTLE);
            let after = now + self.backoff;
            self.next_probe = Some(self.next_probe.map_or(after, |at| at.max(after)));
            return Step::Down;
        }
        if loss < CLEAN && can_rise && self.next_probe.is_none_or(|at| now >= at) {
            return Step::Up;
        }
        Step::Hold
    }

    fn restore(&mut self, sid: String, before: Option<Layer>) {
        match before {
            Some(cap) => self.caps.insert(sid, cap),
            None => self.caps.remove(&sid),
        };
    }

    /// Lowers the least important subscription that can go lower: cameras before screen
    /// shares, then the biggest layer.
    fn step_down(&mut self, subs: &[Candidate<'_>]) {
        let Some(sub) = subs
            .iter()
            .filter(|s| s.layer > 0)
            .min_by_key(|s| (s.screen_share, std::cmp::Reverse(s.layer)))
        else {
            return;
        };
        self.caps.insert(sub.track_sid.to_owned(), sub.layer - 1);
    }

    /// Raises the most important capped subscription one layer, on trial.
    fn step_up(&mut self, now: Instant, subs: &[Candidate<'_>]) {
        let Some(sub) = subs
            .iter()
            .filter(|s| s.layer < s.uncapped)
            .max_by_key(|s| (s.screen_share, std::cmp::Reverse(s.layer)))
        else {
            return;
        };
        let before = self.cap(sub.track_sid);
        let raised = sub.layer + 1;
        if raised >= sub.uncapped {
            self.caps.remove(sub.track_sid);
        } else {
            self.caps.insert(sub.track_sid.to_owned(), raised);
        }
        self.probe = Some((now, sub.track_sid.to_owned(), before));
        self.settled_at = Some(now + SETTLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Mid;

    /// One second of reports: `packets` sent on one stream with `loss` reported.
    fn second(d: &mut Downlink, sent: &mut u64, loss: f32) {
        *sent += 100;
        d.observe((Mid::from("0"), None), Some(loss), *sent);
    }

    fn sub(layer: Layer) -> Candidate<'static> {
        Candidate {
            track_sid: "TR_cam",
            layer,
            uncapped: 2,
            screen_share: false,
        }
    }

    #[test]
    fn congestion_steps_down_once_per_settle_and_a_failed_probe_backs_off() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let (mut d, mut sent) = (Downlink::default(), 0);
        d.observe((Mid::from("0"), None), Some(0.0), 0);
        second(&mut d, &mut sent, 0.3);
        d.allocate(at(1), &[sub(2)]);
        assert_eq!(d.cap("TR_cam"), Some(1), "congested: down one layer");
        // Reports still congested while the switch settles: no second step.
        for s in 2..5 {
            second(&mut d, &mut sent, 0.3);
            d.allocate(at(s), &[sub(1)]);
        }
        assert_eq!(d.cap("TR_cam"), Some(1));
        // Clean: after the back-off (4 s from the step) a probe up.
        second(&mut d, &mut sent, 0.0);
        d.allocate(at(5), &[sub(1)]);
        assert_eq!(d.cap("TR_cam"), None, "probing the top layer");
        // Congested during the probe: back at once, the next probe only 8 s later.
        second(&mut d, &mut sent, 0.2);
        d.allocate(at(6), &[sub(2)]);
        assert_eq!(d.cap("TR_cam"), Some(1), "the probe reverted");
        for s in 7..14 {
            second(&mut d, &mut sent, 0.0);
            d.allocate(at(s), &[sub(1)]);
            assert_eq!(d.cap("TR_cam"), Some(1), "no probe at {s} s");
        }
        second(&mut d, &mut sent, 0.0);
        d.allocate(at(14), &[sub(1)]);
        assert_eq!(d.cap("TR_cam"), None, "the next probe");
        // Clean through the trial: kept.
        for s in 15..22 {
            second(&mut d, &mut sent, 0.0);
            d.allocate(at(s), &[sub(2)]);
        }
        assert_eq!(d.cap("TR_cam"), None);
    }

    #[test]
    fn moderate_loss_holds_and_cameras_go_down_before_screen_shares() {
        let start = Instant::now();
        let (mut d, mut sent) = (Downlink::default(), 0);
        d.observe((Mid::from("0"), None), Some(0.0), 0);
        second(&mut d, &mut sent, 0.05);
        d.allocate(start + Duration::from_secs(1), &[sub(2)]);
        assert_eq!(
            d.cap("TR_cam"),
            None,
            "5 % loss is for NACK/RTX, not a step"
        );
        let screen = Candidate {
            track_sid: "TR_screen",
            layer: 2,
            uncapped: 2,
            screen_share: true,
        };
        second(&mut d, &mut sent, 0.5);
        d.allocate(start + Duration::from_secs(2), &[screen, sub(1)]);
        assert_eq!(d.cap("TR_cam"), Some(0));
        assert_eq!(d.cap("TR_screen"), None);
    }
}
