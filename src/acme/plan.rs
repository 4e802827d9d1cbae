//! The decisions of the renewal loop, as pure functions of a virtual `now` (unix seconds): when
//! to renew, how long to wait after a failure, and what a failure means in plain words.

use std::time::Duration;

/// The first retry after a failure waits this long; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Retries never wait longer than this (Let's Encrypt's failed-validation limit is per hour).
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);

/// When a certificate valid from `not_before` to `not_after` is renewed: when a third of its
/// lifetime is left (day 60 of Let's Encrypt's 90).
pub fn renewal_due(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - lifetime / 3
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

pub fn next(now: i64, stored: Option<(&[String], i64, i64)>, wanted: &[String]) -> Next {
    match stored {
        Some((names, not_before, not_after)) if same_names(names, wanted) => {
            let due = renewal_due(not_before, not_after);
            if due <= now {
                Next::OrderNow
            } else {
                Next::RenewAt(due)
            }
        }
        _ => Next::OrderNow,
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

/// The same error in plain words, with what to do. `http_port` is rtcbox's public HTTP port,
/// where port 80 must lead for HTTP-01.
pub fn explain(error: &AcmeError, http_port: u16) -> String {
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
            let record = format!("_acme-challenge.{}", name.trim_start_matches("*."));
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
            name, kind, detail, ..
        } => {
            let url = format!("http://{name}/.well-known/acme-challenge/…");
            match kind.as_str() {
                "connection" | "incorrectResponse" | "unauthorized" => format!(
                    "the CA could not reach {url}: forward port 80 to rtcbox's HTTP port \
                     {http_port} and make sure nothing else answers there (the CA said: {detail})"
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
            assert_eq!(next(now, stored, &wanted), expected, "now {now}");
        };
        check(0, None, Next::OrderNow);
        check(DAY, Some((&stored, 0, 90 * DAY)), Next::RenewAt(60 * DAY));
        check(60 * DAY, Some((&stored, 0, 90 * DAY)), Next::OrderNow);
        check(100 * DAY, Some((&stored, 0, 90 * DAY)), Next::OrderNow);
        let other = names(&["old.example.org"]);
        check(DAY, Some((&other, 0, 90 * DAY)), Next::OrderNow);
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
        let check = |error: AcmeError, expected: &str| {
            let text = explain(&error, 8880);
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        };
        check(
            challenge("connection"),
            "the CA could not reach http://rtc.example.org/.well-known/acme-challenge/…: \
             forward port 80 to rtcbox's HTTP port 8880",
        );
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
