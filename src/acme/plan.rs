//! The decisions of the renewal loop, as pure functions of a virtual `now` (unix seconds): when
//! to renew (the CA's ARI window, RFC 9773, else a third of the lifetime), when to ask the CA
//! for its window again, whether a new order replaces the stored certificate, how long to wait
//! after a failure, and what a failure means in plain words.

use std::time::Duration;

/// The first retry after a failure waits this long; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Retries never wait longer than this (Let's Encrypt's failed-validation limit is per hour).
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// The CA's renewal window is asked for again after its Retry-After hint, but never sooner than
/// this (a CA saying "0" does not make rtcbox poll it) ...
pub const ARI_MIN_RECHECK: Duration = Duration::from_secs(3600);
/// ... and never later than this (RFC 9773 §4.3.2 suggests about a day at most).
pub const ARI_MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// When a certificate valid from `not_before` to `not_after` is renewed: when a third of its
/// lifetime is left (day 60 of Let's Encrypt's 90).
pub fn renewal_due(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - lifetime / 3
}

/// The renewal window a CA suggests for a certificate (ARI, RFC 9773), in unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// When to renew a certificate valid from `not_before` to `not_after`. With the CA's `window`:
/// now once the window has started, else the point `pick` (0 to 1, a uniform random number
/// drawn once per answer of the CA) of the way through it, so that not every client of the CA
/// comes at once. Without a window (the CA has no ARI, asking failed, or its window ends before
/// it starts): [`renewal_due`].
pub fn renewal_time(
    now: i64,
    not_before: i64,
    not_after: i64,
    window: Option<Window>,
    pick: f64,
) -> i64 {
    match window {
        Some(Window { start, end }) if start <= end => {
            if start <= now {
                now
            } else {
                let span = (end - start) as f64;
                let offset = (span * pick.clamp(0.0, 1.0)) as i64;
                start + offset.min(end - start)
            }
        }
        _ => renewal_due(not_before, not_after),
    }
}

/// When to ask the CA for its window again after an answer with `retry_after` (its Retry-After
/// hint), capped to [`ARI_MIN_RECHECK`]..[`ARI_MAX_RECHECK`].
pub fn ari_recheck_at(now: i64, retry_after: Duration) -> i64 {
    let wait = retry_after.clamp(ARI_MIN_RECHECK, ARI_MAX_RECHECK);
    now + wait.as_secs() as i64
}

/// What the loop does next, given the ACME certificate now stored (names, validity) and the
/// names wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Order now: there is no ACME certificate, or it is for other names, or it is due.
    OrderNow,
    /// Wait until this unix time, then look again.
    RenewAt(i64),
}

/// `ari`: the CA's window for the stored certificate and the pick drawn for it (see
/// [`renewal_time`]).
pub fn next(
    now: i64,
    stored: Option<(&[String], i64, i64)>,
    wanted: &[String],
    ari: Option<(Window, f64)>,
) -> Next {
    match stored {
        Some((names, not_before, not_after)) if same_names(names, wanted) => {
            let (window, pick) = ari.map_or((None, 0.0), |(w, pick)| (Some(w), pick));
            let due = renewal_time(now, not_before, not_after, window, pick);
            if due <= now {
                Next::OrderNow
            } else {
                Next::RenewAt(due)
            }
        }
        _ => Next::OrderNow,
    }
}

/// Whether a new order tells the CA it replaces the stored ACME certificate (RFC 9773 §5): when
/// that certificate has not expired and shares a name with the order (the CA may then ease its
/// rate limits). A CA that does not know the certificate (another directory) is asked again
/// without it.
pub fn replaces_stored(now: i64, stored: Option<(&[String], i64)>, wanted: &[String]) -> bool {
    match stored {
        Some((names, not_after)) => {
            not_after > now
                && names
                    .iter()
                    .any(|n| wanted.iter().any(|w| w.eq_ignore_ascii_case(n)))
        }
        None => false,
    }
}

fn same_names(a: &[String], b: &[String]) -> bool {
    let norm = |names: &[String]| {
        let mut v: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    };
    norm(a) == norm(b)
}

/// The wait after the `failures`-th failure in a row (1 = the first): 1 min, 2, 4, … capped at
/// [`MAX_RETRY`].
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY)
}

/// Why an order failed, sorted by what the admin does about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcmeError {
    /// The directory could not be fetched (network, DNS, TLS to the CA).
    #[error("the ACME server {directory} cannot be reached: {reason}")]
    Unreachable { directory: String, reason: String },
    /// The CA tried the challenge for `name` and failed.
    #[error("the {challenge} challenge for {name} failed: {detail} ({kind})")]
    Challenge {
        name: String,
        challenge: &'static str,
        /// The ACME problem type without its `urn:ietf:params:acme:error:` prefix.
        kind: String,
        detail: String,
    },
    /// DNS-01: rtcbox could not publish the TXT `record`, or it never became visible; `detail`
    /// is already in plain words.
    #[error("the DNS record {record}: {detail}")]
    Dns { record: String, detail: String },
    /// The CA refused a request (rate limit, policy, bad names, …).
    #[error("the ACME server refused: {detail} ({kind})")]
    Refused { kind: String, detail: String },
    /// Anything else (storing, a malformed answer, a timeout).
    #[error("{0}")]
    Other(String),
}

/// rtcbox's public ports, where the router's forwards must lead for the challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// The public HTTP listener: port 80 leads here for HTTP-01.
    pub http: u16,
    /// The public HTTPS listener, when it runs: port 443 leads here for TLS-ALPN-01.
    pub https: Option<u16>,
}

/// The same error in plain words, with what to do.
pub fn explain(error: &AcmeError, ports: Ports) -> String {
    match error {
        AcmeError::Unreachable { directory, reason } => format!(
            "rtcbox cannot reach the ACME server {directory} ({reason}); check this machine's \
             internet access and RTCBOX_ACME_DIRECTORY"
        ),
        AcmeError::Dns { record, detail } => {
            format!("rtcbox could not publish the DNS record {record} TXT: {detail}")
        }
        AcmeError::Challenge {
            name,
            challenge: "dns-01",
            kind,
            detail,
        } => {
            let record = super::dns01::record_name(name);
            match kind.as_str() {
                "unauthorized" | "incorrectResponse" | "dns" | "connection" => format!(
                    "the CA did not find the right TXT record {record}: check that every \
                     public name server of the zone serves it (secondaries updated, no other \
                     zone delegated below it, no stale value) (the CA said: {detail})"
                ),
                "caa" => format!(
                    "a CAA record of {name} forbids this CA from issuing for it (the CA said: \
                     {detail})"
                ),
                _ => format!("the CA could not validate {name} by DNS: {detail}"),
            }
        }
        AcmeError::Challenge {
            name,
            challenge,
            kind,
            detail,
        } => {
            let (url, forward) = match *challenge {
                "tls-alpn-01" => (
                    format!("https://{name}:443 …"),
                    match ports.https {
                        Some(port) => format!("forward port 443 to rtcbox's HTTPS port {port}"),
                        None => "turn on rtcbox's HTTPS listener (RTCBOX_HTTPS_BIND) and forward \
                                 port 443 to it"
                            .to_owned(),
                    },
                ),
                _ => (
                    format!("http://{name}/.well-known/acme-challenge/…"),
                    format!("forward port 80 to rtcbox's HTTP port {}", ports.http),
                ),
            };
            match kind.as_str() {
                "connection" | "incorrectResponse" | "unauthorized" | "tls" => format!(
                    "the CA could not reach {url}: {forward} and make sure nothing else answers \
                     there (the CA said: {detail})"
                ),
                "dns" => format!(
                    "the CA could not look up {name}: create an A/AAAA record for it pointing \
                     at this network's public address (the CA said: {detail})"
                ),
                "caa" => format!(
                    "a CAA record of {name} forbids this CA from issuing for it (the CA said: \
                     {detail})"
                ),
                _ => format!("the CA could not validate {name}: {detail}"),
            }
        }
        AcmeError::Refused { kind, detail } if kind == "rateLimited" => format!(
            "the CA's rate limit was hit; rtcbox retries later by itself (the CA said: {detail})"
        ),
        AcmeError::Refused { kind, detail } if kind == "rejectedIdentifier" => format!(
            "the CA does not issue certificates for these names; check RTCBOX_ACME_DOMAINS (the \
             CA said: {detail})"
        ),
        AcmeError::Refused { detail, .. } => format!("the CA refused the order: {detail}"),
        AcmeError::Other(reason) => reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
        let check = |not_before: i64, not_after: i64, expected: i64| {
            assert_eq!(
                renewal_due(not_before, not_after),
                expected,
                "{not_before}..{not_after}"
            );
        };
        check(0, 90 * DAY, 60 * DAY);
        check(1000, 1000 + 6 * DAY, 1000 + 4 * DAY);
        // Pebble's and short-lived (6-day) certificates follow the same rule; a broken one
        // (ends before it starts) is due at its end.
        check(10 * DAY, 5 * DAY, 5 * DAY);
    }

    #[test]
    fn next_orders_when_nothing_fits_and_waits_otherwise() {
        let wanted = names(&["rtc.example.org"]);
        let stored = names(&["RTC.example.org"]);
        let check = |now: i64, stored: Option<(&[String], i64, i64)>, expected: Next| {
            assert_eq!(next(now, stored, &wanted, None), expected, "now {now}");
        };
        check(0, None, Next::OrderNow);
        check(DAY, Some((&stored, 0, 90 * DAY)), Next::RenewAt(60 * DAY));
        check(60 * DAY, Some((&stored, 0, 90 * DAY)), Next::OrderNow);
        check(100 * DAY, Some((&stored, 0, 90 * DAY)), Next::OrderNow);
        let other = names(&["old.example.org"]);
        check(DAY, Some((&other, 0, 90 * DAY)), Next::OrderNow);

        // The CA's window decides when it offers one, also earlier than day 60 ...
        let window = Window {
            start: 30 * DAY,
            end: 32 * DAY,
        };
        let with_ari = |now: i64, pick: f64| {
            next(
                now,
                Some((&stored, 0, 90 * DAY)),
                &wanted,
                Some((window, pick)),
            )
        };
        assert_eq!(with_ari(DAY, 0.5), Next::RenewAt(31 * DAY));
        assert_eq!(with_ari(30 * DAY, 0.5), Next::OrderNow);
        // ... but names that changed order at once whatever the window says.
        assert_eq!(
            next(
                DAY,
                Some((&other, 0, 90 * DAY)),
                &wanted,
                Some((window, 0.5))
            ),
            Next::OrderNow
        );
    }

    #[test]
    fn the_cas_window_is_followed_when_it_offers_one() {
        let window = |start: i64, end: i64| Some(Window { start, end });
        let check = |now: i64, window: Option<Window>, pick: f64, expected: i64| {
            assert_eq!(
                renewal_time(now, 0, 90 * DAY, window, pick),
                expected,
                "now {now}, {window:?}, pick {pick}"
            );
        };
        // A point in a window still ahead, by the pick.
        check(DAY, window(40 * DAY, 42 * DAY), 0.0, 40 * DAY);
        check(DAY, window(40 * DAY, 42 * DAY), 0.25, 40 * DAY + DAY / 2);
        check(DAY, window(40 * DAY, 42 * DAY), 1.0, 42 * DAY);
        // A pick out of range stays inside the window.
        check(DAY, window(40 * DAY, 42 * DAY), 7.0, 42 * DAY);
        check(DAY, window(40 * DAY, 42 * DAY), -1.0, 40 * DAY);
        // A window that started (or ended: the CA wants it replaced, e.g. a revocation): now.
        check(41 * DAY, window(40 * DAY, 42 * DAY), 0.9, 41 * DAY);
        check(50 * DAY, window(2 * DAY, 3 * DAY), 0.5, 50 * DAY);
        // No window, or a malformed one: a third of the lifetime left.
        check(DAY, None, 0.5, 60 * DAY);
        check(DAY, window(42 * DAY, 40 * DAY), 0.5, 60 * DAY);
    }

    #[test]
    fn the_window_is_asked_again_after_retry_after_within_bounds() {
        let now = 1_000_000;
        let check = |retry_after: u64, expected: u64| {
            assert_eq!(
                ari_recheck_at(now, Duration::from_secs(retry_after)),
                now + expected as i64,
                "Retry-After {retry_after}"
            );
        };
        check(6 * 3600, 6 * 3600);
        check(0, 3600);
        check(30 * 86_400, 86_400);
    }

    #[test]
    fn a_renewal_replaces_the_stored_certificate_when_it_is_alive_and_shares_a_name() {
        let wanted = names(&["rtc.example.org", "turn.example.org"]);
        let check = |stored: Option<(&[&str], i64)>, expected: bool| {
            let stored_names = stored.map(|(n, _)| names(n));
            let stored = stored.map(|(_, not_after)| not_after);
            let arg = stored_names.as_deref().zip(stored);
            assert_eq!(
                replaces_stored(10 * DAY, arg, &wanted),
                expected,
                "{stored_names:?}"
            );
        };
        check(Some((&["RTC.example.org"], 90 * DAY)), true);
        check(
            Some((&["rtc.example.org", "turn.example.org"], 90 * DAY)),
            true,
        );
        check(Some((&["old.example.org"], 90 * DAY)), false);
        check(Some((&["rtc.example.org"], 10 * DAY)), false);
        check(None, false);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let minutes: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360, 360]);
        assert_eq!(retry_delay(0), FIRST_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn errors_are_explained_with_what_to_do() {
        let challenge = |kind: &str| AcmeError::Challenge {
            name: "rtc.example.org".into(),
            challenge: "http-01",
            kind: kind.into(),
            detail: "detail".into(),
        };
        let ports = Ports {
            http: 8880,
            https: Some(8443),
        };
        let check = |error: AcmeError, expected: &str| {
            let text = explain(&error, ports);
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        };
        check(
            challenge("connection"),
            "the CA could not reach http://rtc.example.org/.well-known/acme-challenge/…: \
             forward port 80 to rtcbox's HTTP port 8880",
        );
        let tls_alpn = |kind: &str| AcmeError::Challenge {
            name: "rtc.example.org".into(),
            challenge: "tls-alpn-01",
            kind: kind.into(),
            detail: "detail".into(),
        };
        for kind in ["connection", "tls", "unauthorized"] {
            check(
                tls_alpn(kind),
                "the CA could not reach https://rtc.example.org:443 …: forward port 443 to \
                 rtcbox's HTTPS port 8443 and make sure nothing else answers there (the CA \
                 said: detail)",
            );
        }
        let text = explain(
            &tls_alpn("connection"),
            Ports {
                http: 8880,
                https: None,
            },
        );
        assert!(text.contains("turn on rtcbox's HTTPS listener"), "{text}");
        assert!(!text.contains("port 80 "), "{text}");
        check(challenge("dns"), "create an A/AAAA record");
        check(challenge("caa"), "CAA record");
        check(
            challenge("serverInternal"),
            "could not validate rtc.example.org: detail",
        );
        let dns = |kind: &str| AcmeError::Challenge {
            name: "*.rtc.example.org".into(),
            challenge: "dns-01",
            kind: kind.into(),
            detail: "No TXT record found".into(),
        };
        check(
            dns("unauthorized"),
            "the CA did not find the right TXT record _acme-challenge.rtc.example.org: check \
             that every public name server",
        );
        check(dns("dns"), "(the CA said: No TXT record found)");
        check(dns("caa"), "CAA record of *.rtc.example.org");
        check(
            AcmeError::Dns {
                record: "_acme-challenge.rtc.test".into(),
                detail: "127.0.0.1:53 does not accept the TSIG key k.".into(),
            },
            "rtcbox could not publish the DNS record _acme-challenge.rtc.test TXT: 127.0.0.1:53 \
             does not accept the TSIG key k.",
        );
        check(
            AcmeError::Unreachable {
                directory: "https://ca.example/dir".into(),
                reason: "refused".into(),
            },
            "cannot reach the ACME server https://ca.example/dir (refused)",
        );
        check(
            AcmeError::Refused {
                kind: "rateLimited".into(),
                detail: "too many".into(),
            },
            "rate limit",
        );
        check(
            AcmeError::Refused {
                kind: "rejectedIdentifier".into(),
                detail: "no".into(),
            },
            "RTCBOX_ACME_DOMAINS",
        );
    }
}
