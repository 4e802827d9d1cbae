//! Whether a signaling session is alive, decided from the time its caller passes in (sans-IO:
//! no clock, no socket, no timer here).
//!
//! Two kinds of clients keep a LiveKit session alive. The JS and Rust/Python SDKs send a
//! LiveKit `Ping` every `ping_interval` of the JoinResponse and give up on the server when
//! nothing arrives for `ping_timeout`; the session answers those pings with `Pong`s. The Go SDK
//! (pion) sends no LiveKit ping at all and only answers the WebSocket ping frames that LiveKit's
//! server sends every 10 s. So, like LiveKit, a session sends a ping frame every
//! [`PING_FRAME_INTERVAL`], and **anything** the client sends (a pong frame, a ping frame, a
//! LiveKit ping, any signal message) proves it alive. A session from which nothing at all
//! arrived for [`SILENCE_LIMIT`] is dead.
//!
//! The contract for the driver: after every input (`heard`) or when [`Keepalive::next_due`] has
//! passed, call [`Keepalive::poll`] until it returns `None`; then sleep until `next_due` or the
//! next frame.

use std::time::{Duration, Instant};

/// How often the session sends a WebSocket ping frame (LiveKit's `pingFrequency`).
pub const PING_FRAME_INTERVAL: Duration = Duration::from_secs(10);
/// How long a client may stay completely silent before its session is closed. A client that
/// only answers ping frames is heard every [`PING_FRAME_INTERVAL`]; the other 10 s are the grace
/// its pong may take (a congested uplink, TCP retransmits). A client that sends LiveKit pings
/// (every 5 s) is heard long before; one that answers nothing is dropped after 20 s.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(20);

/// What the session has to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a WebSocket ping frame.
    Ping,
    /// Nothing arrived for [`SILENCE_LIMIT`]: close the session.
    Dead,
}

/// The liveness state of one session.
#[derive(Debug, Clone)]
pub struct Keepalive {
    last_heard: Instant,
    next_ping: Instant,
    dead: bool,
}

impl Keepalive {
    /// A session that has just been opened counts as heard now (its upgrade request).
    pub fn new(now: Instant) -> Self {
        Keepalive {
            last_heard: now,
            next_ping: now + PING_FRAME_INTERVAL,
            dead: false,
        }
    }

    /// Any frame arrived from the client.
    pub fn heard(&mut self, now: Instant) {
        if !self.dead {
            self.last_heard = self.last_heard.max(now);
        }
    }

    /// What is due at `now`, if anything. Death wins over a ping and is reported once.
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if self.dead {
            return None;
        }
        if now >= self.last_heard + SILENCE_LIMIT {
            self.dead = true;
            return Some(Due::Dead);
        }
        if now >= self.next_ping {
            // A driver that fell behind sends one ping, not one per missed interval.
            self.next_ping = now + PING_FRAME_INTERVAL;
            return Some(Due::Ping);
        }
        None
    }

    /// When [`Keepalive::poll`] has something to say next.
    pub fn next_due(&self) -> Instant {
        self.next_ping.min(self.last_heard + SILENCE_LIMIT)
    }

    /// How long the client has been silent at `now` (for the log line that closes it).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    /// A session driven the way the signaling loop drives it: it wakes at `next_due` or when a
    /// client frame arrives (times in milliseconds after the start), and drains `poll`. Returns
    /// when ping frames went out, and when the session died if it did within `horizon`.
    fn run(client_frames: &[u64], horizon: u64) -> (Vec<u64>, Option<u64>) {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let ms = |t: Instant| (t - start).as_millis() as u64;
        let mut keepalive = Keepalive::new(start);
        let mut frames = client_frames.iter().copied().peekable();
        let mut pings = Vec::new();
        loop {
            let wake = keepalive.next_due();
            let now = match frames.peek() {
                Some(&frame) if at(frame) <= wake => {
                    frames.next();
                    keepalive.heard(at(frame));
                    at(frame)
                }
                _ => wake,
            };
            if ms(now) > horizon {
                return (pings, None);
            }
            while let Some(due) = keepalive.poll(now) {
                match due {
                    Due::Ping => pings.push(ms(now)),
                    Due::Dead => return (pings, Some(ms(now))),
                }
            }
        }
    }

    /// A client that answers ping frames only, `delay` ms after each.
    fn answering_pings(delay: u64, horizon: u64) -> Vec<u64> {
        let every = PING_FRAME_INTERVAL.as_millis() as u64;
        (1..)
            .map(|i| i * every + delay)
            .take_while(|&t| t <= horizon)
            .collect()
    }

    /// A client sending a LiveKit ping (or any message) every `every` ms and nothing else.
    fn every(every: u64, horizon: u64) -> Vec<u64> {
        (1..)
            .map(|i| i * every)
            .take_while(|&t| t <= horizon)
            .collect()
    }

    #[test]
    fn pings_go_out_every_ten_seconds_whatever_the_client_sends() {
        let expected: Vec<u64> = (1..=6).map(|i| i * 10 * S).collect();
        let (pings, dead) = run(&answering_pings(50, 60 * S), 60 * S);
        assert_eq!((pings, dead), (expected.clone(), None));
        // A chatty client (LiveKit pings every 5 s) gets the same ping frames.
        let (pings, dead) = run(&every(5 * S, 60 * S), 60 * S);
        assert_eq!((pings, dead), (expected, None));
    }

    #[test]
    fn a_client_that_only_answers_ping_frames_stays_alive() {
        // For an hour, with pongs that come back at once or almost 10 s late.
        for delay in [0, 200, 3 * S, 9900] {
            let (_, dead) = run(&answering_pings(delay, 3600 * S), 3600 * S);
            assert_eq!(dead, None, "pongs {delay} ms after each ping");
        }
    }

    #[test]
    fn a_client_that_sends_livekit_pings_only_stays_alive() {
        // Every ping_interval (5 s) of the JoinResponse, and as rarely as every 19.9 s.
        for period in [5 * S, 15 * S, 19900] {
            let (_, dead) = run(&every(period, 3600 * S), 3600 * S);
            assert_eq!(dead, None, "a LiveKit ping every {period} ms");
        }
    }

    #[test]
    fn a_silent_client_dies_at_the_silence_limit_not_before() {
        let limit = SILENCE_LIMIT.as_millis() as u64;
        let (pings, dead) = run(&[], 600 * S);
        assert_eq!((pings, dead), (vec![10 * S], Some(limit)));
        // Silence counts from the last frame, whatever it was.
        let (_, dead) = run(&[3 * S, 7500], 600 * S);
        assert_eq!(dead, Some(7500 + limit));
        // Pongs that stop: dead a silence limit after the last one.
        let (_, dead) = run(&[10100, 20100, 30100], 600 * S);
        assert_eq!(dead, Some(30100 + limit));
        // Pongs later than the grace: each would come after the limit.
        let (_, dead) = run(&answering_pings(10500, 600 * S), 600 * S);
        assert_eq!(dead, Some(limit));
        // A LiveKit ping every 20.5 s is too rare.
        let (_, dead) = run(&every(20500, 600 * S), 600 * S);
        assert_eq!(dead, Some(limit));
    }

    #[test]
    fn poll_reports_death_once_and_nothing_after() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(start);
        let late = start + Duration::from_secs(100);
        // Both a ping and death are overdue: death wins.
        assert_eq!(keepalive.poll(late), Some(Due::Dead));
        assert_eq!(keepalive.poll(late), None);
        keepalive.heard(late);
        assert_eq!(keepalive.poll(late + SILENCE_LIMIT), None);
        assert_eq!(keepalive.silent_for(late), Duration::from_secs(100));
    }

    #[test]
    fn a_driver_that_fell_behind_sends_one_ping() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(start);
        keepalive.heard(start + Duration::from_secs(15));
        let now = start + Duration::from_secs(31);
        assert_eq!(keepalive.poll(now), Some(Due::Ping));
        assert_eq!(keepalive.poll(now), None);
        assert_eq!(keepalive.next_due(), start + Duration::from_secs(35));
        // A frame stamped earlier than one already seen does not move the clock back.
        keepalive.heard(start + Duration::from_secs(1));
        assert_eq!(keepalive.silent_for(now), Duration::from_secs(16));
    }
}
