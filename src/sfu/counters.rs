//! What the SFU counts, for `/metrics` and the dashboard. The core owns the counters and is
//! their only writer (atomics, no lock: readers never wait for the SFU task); totals count
//! since start, the gauges are refreshed by the core's housekeeping.

use std::time::{Duration, Instant};

use crate::metrics::{Counter, Gauge};

/// How often the bitrates are computed from the byte counters.
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct SfuCounters {
    pub rooms: Gauge,
    pub participants: Gauge,
    /// Tracks published now.
    pub tracks: Gauge,
    /// Subscriptions now (one per subscriber and track).
    pub subscriptions: Gauge,
    /// RTP packets received from publishers, and their payload bytes.
    pub packets_received: Counter,
    pub bytes_received: Counter,
    /// RTP packets written towards subscribers (one per subscriber), and their payload bytes.
    pub packets_forwarded: Counter,
    pub bytes_forwarded: Counter,
    /// NACKs subscribers sent us (they lost packets on the way to them).
    pub nacks_from_subscribers: Counter,
    /// NACKs we sent publishers (we lost packets on the way from them).
    pub nacks_to_publishers: Counter,
    /// Packets subscribers reported lost (RTCP receiver reports).
    pub packets_lost_to_subscribers: Counter,
    /// Keyframe requests (PLI/FIR) sent to publishers.
    pub keyframe_requests: Counter,
    /// Payload bits per second received and forwarded over the last [`RATE_INTERVAL`].
    pub bitrate_received: Gauge,
    pub bitrate_forwarded: Gauge,
}

/// The byte counters at one point, for the next bitrate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateSample {
    at: Instant,
    received: u64,
    forwarded: u64,
}

impl SfuCounters {
    /// Sets the bitrates from the bytes counted since `last` (none: the first sample) and
    /// returns the sample to pass next time.
    pub(crate) fn update_rates(&self, now: Instant, last: Option<RateSample>) -> RateSample {
        let sample = RateSample {
            at: now,
            received: self.bytes_received.get(),
            forwarded: self.bytes_forwarded.get(),
        };
        if let Some(last) = last {
            let elapsed = now.saturating_duration_since(last.at).as_secs_f64();
            if elapsed > 0.0 {
                let rate =
                    |now: u64, then: u64| (now.saturating_sub(then) as f64 * 8.0 / elapsed) as u64;
                self.bitrate_received
                    .set(rate(sample.received, last.received));
                self.bitrate_forwarded
                    .set(rate(sample.forwarded, last.forwarded));
            }
        }
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_come_from_the_byte_counters() {
        let counters = SfuCounters::default();
        let t0 = Instant::now();
        let first = counters.update_rates(t0, None);
        assert_eq!(counters.bitrate_forwarded.get(), 0);
        counters.bytes_received.add(25_000);
        counters.bytes_forwarded.add(50_000);
        let second = counters.update_rates(t0 + Duration::from_secs(2), Some(first));
        // 50 000 bytes in 2 s = 200 kbit/s.
        assert_eq!(counters.bitrate_forwarded.get(), 200_000);
        assert_eq!(counters.bitrate_received.get(), 100_000);
        // Nothing more: the rate falls to zero, the totals stay.
        counters.update_rates(t0 + Duration::from_secs(4), Some(second));
        assert_eq!(counters.bitrate_forwarded.get(), 0);
        assert_eq!(counters.bytes_forwarded.get(), 50_000);
    }
}
