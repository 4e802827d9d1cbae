//! When to restart and when to send one delegated delayed leave event: a sans-IO state machine.
//!
//! It reads no clock and does no IO: the task in `super` feeds it the time, the participant's
//! joins and leaves, and the homeserver's answers, and does what [`Schedule::poll_action`] says
//! at [`Schedule::poll_timeout`]. At most one request is in flight per schedule.
//!
//! ```text
//! AwaitingJoin --joined--> Connected --left--> Leaving --sent/404--> Finished
//!      |                      |  restart every restart_interval(delay_timeout)
//!      +--deadline---------------------------> Leaving
//! ```
//! A restart answered 404 (the event was sent or cancelled by someone else) finishes the
//! schedule; so do too many failures in a row (bounded retries with exponential backoff, a 429's
//! requested wait honoured up to a cap).

use std::time::{Duration, Instant};

use crate::matrix::{DelayedEventAction, DelayedEventAnswer};

/// Consecutive failed requests after which a schedule gives up.
pub const MAX_FAILURES: u32 = 6;
/// First retry after a failure; doubled for each further one, up to [`MAX_RETRY_WAIT`].
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The longest a 429's `retry_after` is honoured.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Restarts happen at least this long before the event would fire (when the delay allows).
const RESTART_MARGIN: Duration = Duration::from_secs(2);
const HOUR: Duration = Duration::from_secs(3600);

/// How often a connected participant's event is restarted: 80 % of the delay (lk-jwt-service),
/// but at least [`RESTART_MARGIN`] early, never earlier than half the delay, at most hourly.
pub fn restart_interval(delay_timeout: Duration) -> Duration {
    let eighty = delay_timeout.mul_f64(0.8);
    let with_margin = delay_timeout.saturating_sub(RESTART_MARGIN);
    eighty
        .min(with_margin)
        .max(delay_timeout / 2)
        .min(HOUR)
        .max(Duration::from_millis(1))
}

/// How long a fresh delegation waits for its participant to join the SFU room before it sends
/// the leave: the delay itself (lk-jwt-service), at least 10 s, at most an hour.
pub fn join_wait(delay_timeout: Duration) -> Duration {
    delay_timeout.clamp(Duration::from_secs(10), HOUR)
}

/// After rtcbox restarts (the SFU starts empty), how long a stored delegation waits for its
/// participant to reconnect before it sends the leave: half the delay, 2 to 15 s.
pub fn resume_grace(delay_timeout: Duration) -> Duration {
    (delay_timeout / 2).clamp(Duration::from_secs(2), Duration::from_secs(15))
}

/// The wait before retry number `failures` (1 = after the first failure).
pub fn retry_wait(failures: u32, rate_limited: Option<Duration>) -> Duration {
    if let Some(wait) = rate_limited {
        return wait.min(MAX_RATE_LIMIT_WAIT);
    }
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_WAIT)
}

/// How a schedule ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The leave event was sent by rtcbox.
    Sent,
    /// The homeserver no longer knows the event (sent or cancelled by someone else, or expired).
    Gone,
    /// [`MAX_FAILURES`] requests in a row failed.
    GaveUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitingJoin { deadline: Instant },
    Connected,
    Leaving,
    Finished(Outcome),
}

#[derive(Debug)]
pub struct Schedule {
    delay_timeout: Duration,
    phase: Phase,
    /// When the next request is due (meaningful in `Connected` and `Leaving`).
    due: Instant,
    in_flight: bool,
    failures: u32,
}

impl Schedule {
    /// A new delegation; `present` says whether the participant is in the room already.
    pub fn new(now: Instant, delay_timeout: Duration, present: bool) -> Self {
        let mut schedule = Self::awaiting(now, delay_timeout, join_wait(delay_timeout));
        if present {
            schedule.joined(now);
        }
        schedule
    }

    /// A delegation read back from the database after a restart.
    pub fn resumed(now: Instant, delay_timeout: Duration) -> Self {
        Self::awaiting(now, delay_timeout, resume_grace(delay_timeout))
    }

    fn awaiting(now: Instant, delay_timeout: Duration, wait: Duration) -> Self {
        Schedule {
            delay_timeout,
            phase: Phase::AwaitingJoin {
                deadline: now + wait,
            },
            due: now,
            in_flight: false,
            failures: 0,
        }
    }

    /// The participant is in the room: keep the event from firing, starting now.
    pub fn joined(&mut self, now: Instant) {
        if let Phase::AwaitingJoin { .. } = self.phase {
            self.phase = Phase::Connected;
            self.due = now;
            self.failures = 0;
        }
    }

    /// The participant left the room (or its session timed out): send the event now.
    pub fn left(&mut self, now: Instant) {
        if let Phase::AwaitingJoin { .. } | Phase::Connected = self.phase {
            self.phase = Phase::Leaving;
            self.due = now;
            self.failures = 0;
        }
    }

    /// The request to make now, if one is due; the caller must report its answer with
    /// [`Schedule::answered`] before it gets another.
    pub fn poll_action(&mut self, now: Instant) -> Option<DelayedEventAction> {
        if self.in_flight {
            return None;
        }
        if let Phase::AwaitingJoin { deadline } = self.phase
            && now >= deadline
        {
            self.left(now);
        }
        let action = match self.phase {
            Phase::Connected => DelayedEventAction::Restart,
            Phase::Leaving => DelayedEventAction::Send,
            Phase::AwaitingJoin { .. } | Phase::Finished(_) => return None,
        };
        if now < self.due {
            return None;
        }
        self.in_flight = true;
        Some(action)
    }

    /// When [`Schedule::poll_action`] has something to do next; `None` while a request is in
    /// flight or when finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        match self.phase {
            Phase::AwaitingJoin { deadline } => Some(deadline),
            Phase::Connected | Phase::Leaving => Some(self.due),
            Phase::Finished(_) => None,
        }
    }

    /// The homeserver's answer to the request `action` (`None`: no answer, e.g. unreachable).
    pub fn answered(
        &mut self,
        now: Instant,
        action: DelayedEventAction,
        answer: Option<DelayedEventAnswer>,
    ) {
        self.in_flight = false;
        if let Phase::Finished(_) = self.phase {
            return;
        }
        let rate_limited = match answer {
            Some(DelayedEventAnswer::Done) => {
                self.failures = 0;
                match action {
                    DelayedEventAction::Send => self.phase = Phase::Finished(Outcome::Sent),
                    DelayedEventAction::Restart => {
                        if self.phase == Phase::Connected {
                            self.due = now + restart_interval(self.delay_timeout);
                        }
                    }
                }
                return;
            }
            Some(DelayedEventAnswer::NotFound) => {
                self.phase = Phase::Finished(Outcome::Gone);
                return;
            }
            Some(DelayedEventAnswer::RateLimited(wait)) => wait,
            Some(DelayedEventAnswer::Failed(_)) | None => None,
        };
        // A failed restart answered after the participant left must not delay the send.
        let current = matches!(
            (action, self.phase),
            (DelayedEventAction::Restart, Phase::Connected)
                | (DelayedEventAction::Send, Phase::Leaving)
        );
        if !current {
            return;
        }
        self.failures += 1;
        if self.failures >= MAX_FAILURES {
            self.phase = Phase::Finished(Outcome::GaveUp);
            return;
        }
        self.due = now + retry_wait(self.failures, rate_limited);
    }

    pub fn outcome(&self) -> Option<Outcome> {
        match self.phase {
            Phase::Finished(outcome) => Some(outcome),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
