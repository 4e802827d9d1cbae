//! Connection quality: each participant's link judged from str0m's peer statistics (packet
//! loss each way, round-trip time) and told to its room as `ConnectionQualityUpdate`, which
//! clients show as signal bars.
//!
//! A score from 1 to 5 starts at 5 and loses points for loss (the worse direction counts) and
//! for round-trip time above what conversation tolerates; 4 and up is excellent, 3 and up
//! good, below poor. A participant whose ICE connection went away is lost until it is back.
//! The room is told when anyone's level changes, and at least every [`REFRESH`] while it does
//! not (clients that joined meanwhile learn everyone's).

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_response;
use str0m::stats::PeerStats;

use super::{ParticipantKey, Sfu};

/// How often rooms are evaluated.
pub(super) const INTERVAL: Duration = Duration::from_secs(2);
/// Everyone's quality is sent again this often even when nothing changed.
const REFRESH: Duration = Duration::from_secs(10);
/// Loss, in percent, that costs one point.
const LOSS_PERCENT_PER_POINT: f32 = 2.5;
/// Round-trip time that costs nothing, and how much more costs one point.
const RTT_FREE: Duration = Duration::from_millis(200);
const RTT_PER_POINT: Duration = Duration::from_millis(200);

/// What the statistics said about one participant's link lately.
#[derive(Default)]
pub(super) struct LinkStats {
    /// Worst loss fraction (0..1) seen since the last evaluation, either direction.
    loss: f32,
    rtt: Option<Duration>,
    /// ICE lost the connection; cleared when it connects again.
    pub(super) lost: bool,
    /// The level last told to the room.
    told: Option<proto::ConnectionQuality>,
}

impl LinkStats {
    /// One peer connection's statistics (str0m sends them about every second).
    pub(super) fn observe(&mut self, stats: &PeerStats) {
        for loss in [stats.ingress_loss_fraction, stats.egress_loss_fraction]
            .into_iter()
            .flatten()
            .filter(|l| l.is_finite())
        {
            self.loss = self.loss.max(loss.clamp(0.0, 1.0));
        }
        if let Some(rtt) = stats.rtt {
            self.rtt = Some(self.rtt.map_or(rtt, |r| r.max(rtt)));
        }
    }

    /// The score and level for the statistics since the last call; starts a new period.
    fn take(&mut self) -> (f32, proto::ConnectionQuality) {
        let (loss, rtt) = (std::mem::take(&mut self.loss), self.rtt.take());
        if self.lost {
            return (0.0, proto::ConnectionQuality::Lost);
        }
        score_of(loss, rtt)
    }
}

/// Score (1..5) and level for a loss fraction and a round-trip time.
pub(super) fn score_of(loss: f32, rtt: Option<Duration>) -> (f32, proto::ConnectionQuality) {
    let loss_points = loss * 100.0 / LOSS_PERCENT_PER_POINT;
    let rtt_points = rtt.map_or(0.0, |rtt| {
        rtt.saturating_sub(RTT_FREE).as_secs_f32() / RTT_PER_POINT.as_secs_f32()
    });
    let score = (5.0 - loss_points - rtt_points).clamp(1.0, 5.0);
    let level = if score >= 4.0 {
        proto::ConnectionQuality::Excellent
    } else if score >= 3.0 {
        proto::ConnectionQuality::Good
    } else {
        proto::ConnectionQuality::Poor
    };
    (score, level)
}

impl Sfu {
    /// Evaluates every room's connection qualities at most once per [`INTERVAL`].
    pub(super) fn update_connection_quality(&mut self, now: Instant) {
        if now < self.next_quality_update {
            return;
        }
        self.next_quality_update = now + INTERVAL;
        let refresh = now >= self.next_quality_refresh;
        if refresh {
            self.next_quality_refresh = now + REFRESH;
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let mut updates = Vec::new();
            let mut changed = false;
            for key in self.members(&room) {
                let Some(p) = self.participants.get_mut(&key) else {
                    continue;
                };
                if p.permission.hidden {
                    continue;
                }
                let (score, level) = p.link_stats.take();
                changed |= p.link_stats.told != Some(level);
                p.link_stats.told = Some(level);
                updates.push(proto::ConnectionQualityInfo {
                    participant_sid: p.sid.clone(),
                    quality: level as i32,
                    score,
                });
            }
            if updates.is_empty() || !(changed || refresh) {
                continue;
            }
            self.send_to_room(
                &room,
                None,
                signal_response::Message::ConnectionQuality(proto::ConnectionQualityUpdate {
                    updates,
                }),
            );
        }
    }

    /// ICE of one of the participant's connections went away (`lost`) or came back.
    pub(super) fn set_link_lost(&mut self, key: ParticipantKey, lost: bool) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.link_stats.lost = lost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ConnectionQuality as Q;

    #[test]
    fn loss_and_delay_cost_points() {
        assert_eq!(
            score_of(0.0, Some(Duration::from_millis(20))),
            (5.0, Q::Excellent)
        );
        assert_eq!(
            score_of(0.025, None).1,
            Q::Excellent,
            "2.5 % loss: 4 points"
        );
        assert_eq!(score_of(0.04, None).1, Q::Good);
        assert_eq!(score_of(0.10, None), (1.0, Q::Poor));
        assert_eq!(score_of(0.0, Some(Duration::from_millis(500))).1, Q::Good);
        assert_eq!(score_of(0.0, Some(Duration::from_secs(2))), (1.0, Q::Poor));
    }

    #[test]
    fn a_lost_link_is_lost_whatever_the_numbers_and_a_period_starts_afresh() {
        let mut link = LinkStats {
            loss: 0.5,
            ..Default::default()
        };
        assert_eq!(link.take().1, Q::Poor);
        assert_eq!(
            link.take().1,
            Q::Excellent,
            "a new period forgets the old loss"
        );
        link.lost = true;
        assert_eq!(link.take(), (0.0, Q::Lost));
    }
}
