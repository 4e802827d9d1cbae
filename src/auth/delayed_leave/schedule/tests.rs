//! The schedule on a virtual clock: a scripted participant and homeserver, and the requests the
//! schedule makes, with their times in milliseconds from the start.

use super::*;
use DelayedEventAction::{Restart, Send};
use DelayedEventAnswer::{Done, Failed, NotFound, RateLimited};

const TEN_S: Duration = Duration::from_secs(10);

enum Event {
    Joined,
    Left,
}

/// Runs `schedule` from `start` until `until_ms`, applying `events` at their times and answering
/// the n-th request (0-based) with `answer(n, action)` at once. Returns the requests made.
fn run(
    mut schedule: Schedule,
    start: Instant,
    events: &[(u64, Event)],
    mut answer: impl FnMut(usize, DelayedEventAction) -> Option<DelayedEventAnswer>,
    until_ms: u64,
) -> (Vec<(u64, DelayedEventAction)>, Option<Outcome>) {
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut requests = Vec::new();
    let mut events = events.iter().peekable();
    let mut now = start;
    loop {
        while let Some(action) = schedule.poll_action(now) {
            let n = requests.len();
            requests.push(((now - start).as_millis() as u64, action));
            schedule.answered(now, action, answer(n, action));
        }
        let next_event = events.peek().map(|(ms, _)| at(*ms));
        let next = match (schedule.poll_timeout(), next_event) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(next) => next,
                None => break,
            },
        };
        if next > at(until_ms) {
            break;
        }
        now = next.max(now);
        if next_event == Some(now) {
            let (_, event) = events.next().unwrap();
            match event {
                Event::Joined => schedule.joined(now),
                Event::Left => schedule.left(now),
            }
        }
    }
    (requests, schedule.outcome())
}

fn ok(_: usize, _: DelayedEventAction) -> Option<DelayedEventAnswer> {
    Some(Done)
}

#[test]
fn intervals() {
    let check = |ms: u64, expected: u64| {
        assert_eq!(
            restart_interval(Duration::from_millis(ms)),
            Duration::from_millis(expected),
            "{ms}"
        )
    };
    check(10_000, 8_000);
    check(5_000, 3_000);
    check(3_000, 1_500);
    check(1, 1);
    check(60_000, 48_000);
    check(86_400_000, 3_600_000);
    assert_eq!(join_wait(Duration::from_secs(1)), TEN_S);
    assert_eq!(join_wait(Duration::from_secs(30)), Duration::from_secs(30));
    assert_eq!(join_wait(Duration::MAX), HOUR);
    assert_eq!(resume_grace(TEN_S), Duration::from_secs(5));
    assert_eq!(
        resume_grace(Duration::from_millis(1)),
        Duration::from_secs(2)
    );
    assert_eq!(resume_grace(Duration::MAX), Duration::from_secs(15));
    let waits: Vec<u64> = (1..=8)
        .map(|n| retry_wait(n, None).as_millis() as u64)
        .collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert_eq!(
        retry_wait(1, Some(Duration::from_secs(3))),
        Duration::from_secs(3)
    );
    assert_eq!(retry_wait(1, Some(Duration::MAX)), MAX_RATE_LIMIT_WAIT);
}

#[test]
fn a_present_participant_is_kept_alive_until_it_leaves() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[(20_000, Event::Left)],
        ok,
        100_000,
    );
    assert_eq!(
        requests,
        [
            (0, Restart),
            (8_000, Restart),
            (16_000, Restart),
            (20_000, Send)
        ]
    );
    assert_eq!(outcome, Some(Outcome::Sent));
}

#[test]
fn restarts_begin_when_the_participant_joins() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, false),
        start,
        &[(3_000, Event::Joined), (12_000, Event::Left)],
        ok,
        100_000,
    );
    assert_eq!(
        requests,
        [(3_000, Restart), (11_000, Restart), (12_000, Send)]
    );
    assert_eq!(outcome, Some(Outcome::Sent));
}

#[test]
fn a_participant_that_never_joins_gets_its_leave_sent() {
    let start = Instant::now();
    let (requests, outcome) = run(Schedule::new(start, TEN_S, false), start, &[], ok, 100_000);
    assert_eq!(requests, [(10_000, Send)]);
    assert_eq!(outcome, Some(Outcome::Sent));
}

#[test]
fn after_a_restart_a_participant_that_does_not_return_gets_its_leave_sent() {
    let start = Instant::now();
    let (requests, _) = run(Schedule::resumed(start, TEN_S), start, &[], ok, 100_000);
    assert_eq!(requests, [(5_000, Send)]);
    // One that comes back is kept alive instead.
    let (requests, outcome) = run(
        Schedule::resumed(start, TEN_S),
        start,
        &[(1_000, Event::Joined)],
        ok,
        17_000,
    );
    assert_eq!(
        requests,
        [(1_000, Restart), (9_000, Restart), (17_000, Restart)]
    );
    assert_eq!(outcome, None);
}

#[test]
fn a_restart_answered_404_ends_the_delegation() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[(30_000, Event::Left)],
        |n, _| Some(if n == 1 { NotFound } else { Done }),
        100_000,
    );
    assert_eq!(requests, [(0, Restart), (8_000, Restart)]);
    assert_eq!(outcome, Some(Outcome::Gone));
}

#[test]
fn a_send_answered_404_counts_as_done() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[(1_000, Event::Left)],
        |_, action| Some(if action == Send { NotFound } else { Done }),
        100_000,
    );
    assert_eq!(requests, [(0, Restart), (1_000, Send)]);
    assert_eq!(outcome, Some(Outcome::Gone));
}

#[test]
fn failed_restarts_back_off_and_give_up() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[],
        |n, _| if n == 0 { Some(Done) } else { None },
        1_000_000,
    );
    let times: Vec<u64> = requests.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [0, 8_000, 8_500, 9_500, 11_500, 15_500, 23_500]);
    assert_eq!(outcome, Some(Outcome::GaveUp));
}

#[test]
fn a_success_resets_the_failure_count() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[(30_000, Event::Left)],
        |n, _| Some(if n % 2 == 1 { Failed(502) } else { Done }),
        100_000,
    );
    assert_eq!(
        requests,
        [
            (0, Restart),
            (8_000, Restart),
            (8_500, Restart),
            (16_500, Restart),
            (17_000, Restart),
            (25_000, Restart),
            (25_500, Restart),
            (30_000, Send),
            (30_500, Send),
        ]
    );
    assert_eq!(outcome, Some(Outcome::Sent));
}

#[test]
fn rate_limits_are_honoured() {
    let start = Instant::now();
    let (requests, outcome) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[(5_000, Event::Left)],
        |n, _| match n {
            1 => Some(RateLimited(Some(Duration::from_millis(1_200)))),
            2 => Some(RateLimited(None)),
            _ => Some(Done),
        },
        100_000,
    );
    assert_eq!(
        requests,
        [(0, Restart), (5_000, Send), (6_200, Send), (7_200, Send)]
    );
    assert_eq!(outcome, Some(Outcome::Sent));
}

#[test]
fn a_late_restart_answer_does_not_delay_the_send() {
    let start = Instant::now();
    let mut schedule = Schedule::new(start, TEN_S, true);
    assert_eq!(schedule.poll_action(start), Some(Restart));
    assert_eq!(schedule.poll_timeout(), None, "one request at a time");
    let t1 = start + Duration::from_secs(1);
    schedule.left(t1);
    assert_eq!(
        schedule.poll_action(t1),
        None,
        "the restart is still in flight"
    );
    let t2 = start + Duration::from_secs(2);
    schedule.answered(t2, Restart, Some(Failed(500)));
    assert_eq!(schedule.poll_timeout(), Some(t1));
    assert_eq!(schedule.poll_action(t2), Some(Send));
    schedule.answered(t2, Send, Some(Done));
    assert_eq!(schedule.outcome(), Some(Outcome::Sent));
    assert_eq!(schedule.poll_timeout(), None);
    // Nothing moves a finished schedule.
    schedule.joined(t2);
    schedule.left(t2);
    assert_eq!(schedule.poll_action(t2 + HOUR), None);
}

#[test]
fn repeated_joins_and_leaves_change_nothing() {
    let start = Instant::now();
    let (requests, _) = run(
        Schedule::new(start, TEN_S, true),
        start,
        &[
            (1_000, Event::Joined),
            (2_000, Event::Left),
            (3_000, Event::Left),
            (4_000, Event::Joined),
        ],
        |_, action| Some(if action == Send { Failed(503) } else { Done }),
        4_000,
    );
    // The rejoin does not cancel the leave in progress (its retry at 2.5 s, 3.5 s, ...).
    assert_eq!(
        requests,
        [(0, Restart), (2_000, Send), (2_500, Send), (3_500, Send)]
    );
}
